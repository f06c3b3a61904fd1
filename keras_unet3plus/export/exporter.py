"""`export_model`: load the model and its info, draw the verification and calibration slices, let
the target's writer stage and check its files, then publish them all or none."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from ..modelinfo import ExportRecord, ModelInfo, SourceRecord
from .graph import GraphSpec
from .job import ExportJob, ExportOptions, ExportResult
from .registry import default_output, get_target
from .staging import staged
from .verify import ParityError


def export_model(
    model,
    target: str,
    precision: str = "fp32",
    out: str | os.PathLike | None = None,
    options: ExportOptions | GraphSpec | None = None,
    *,
    info: ModelInfo | None = None,
    model_path: str | os.PathLike | None = None,
    slices: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
    log: Callable[[str], None] = print,
    **overrides: Any,
) -> ExportResult:
    """Export `model` (a `keras.Model`, or a path to a `.keras` file) and verify it.

    Args:
        target: "savedmodel", "onnx", "tflite" or "tensorrt" (`registry.TARGETS`).
        precision: see `PRECISIONS[target]`; "int8" is calibrated on real slices (full-integer for
            LiteRT, Q/DQ for ONNX/TensorRT), "int8-dynamic" is LiteRT's dynamic-range int8.
        out: artefact path (default: `default_output(model_path, target, precision)`).
        options: an `ExportOptions`; its fields may also be given as keywords (``spec=``,
            ``data_dir=``, ``check=``, ``skip_absent_pair=``...), as before it existed.
        info: the model's `ModelInfo` (default: the sidecar of `model_path`, else task defaults).
        slices / calibration: verification / calibration arrays instead of drawing them.

    Returns an `ExportResult`; raises `ParityError` on a failed check (nothing written),
    `MissingExtraError` when the target's extra is not installed (before any work is done).
    """
    entry = get_target(target)
    entry.check(precision)
    opts = ExportOptions.of(options, **overrides)
    model, model_path, info = _model_and_info(model, model_path, info, log)
    if out is None and model_path is None:
        raise ValueError("give `out` (or `model_path` to derive it)")
    out = Path(out) if out is not None else default_output(model_path, target, precision)
    slices, calibration, reference = _slices(model, info, opts, precision, slices, calibration)
    spec = opts.spec
    record = ExportRecord(
        target,
        precision,
        spec.outputs,
        spec.threshold,
        spec.gate,
        source=SourceRecord.of(model_path) if model_path and Path(model_path).is_file() else None,
    )
    result = ExportResult(target, precision)
    work_parent = out.parent if out.parent.exists() else None
    with staged() as stage, tempfile.TemporaryDirectory(prefix="unet3plus-export-", dir=work_parent) as work:
        job = ExportJob(
            model=model,
            out=out,
            precision=precision,
            options=opts,
            info=info,
            record=record,
            reference=reference,
            slices=slices,
            calibration=calibration,
            result=result,
            stage=stage,
            work=Path(work),
            log=log,
        )
        entry.write(job)
        if opts.check and not result.passed:
            raise ParityError(
                f"{target} {precision} export failed the parity check against Keras; nothing was written", result.rows
            )
        result.artefacts = stage.publish(job.artefact_info())
    return result


def _model_and_info(model, model_path, info: ModelInfo | None, log: Callable[[str], None]):
    """The `keras.Model` (loaded when a path is given), its path, and its info: the sidecar, else
    the task defaults (said in the log: calibration and verification slices depend on it)."""
    if isinstance(model, (str, os.PathLike)):
        import keras

        model_path = model_path or model
        model = keras.models.load_model(model, compile=False)
    if info is None and model_path is not None:
        from ..runtimes import read_info

        info = read_info(model_path, required=False)
    if info is None:
        info = ModelInfo.task_default("liver", model.inputs[0].shape[1] or 320, model.outputs[0].shape[-1])
        log(
            f"note: no model info sidecar found; using the '{info.task}' defaults (HU window "
            f"{info.preprocess.get('hu_window')}) for calibration/verification slices"
        )
    return model, model_path, info


def _slices(model, info: ModelInfo, opts: ExportOptions, precision: str, slices, calibration):
    """(verification slices, calibration slices, Keras reference outputs), drawn when not given and
    needed: slices for the check, calibration for int8."""
    from .calibration import calibration_slices
    from .verify import keras_reference, sample_slices

    size = model.inputs[0].shape[1]
    if opts.check and slices is None:
        slices = sample_slices(info, opts.data_dir, opts.verify_slices, size)
    if precision == "int8" and calibration is None:
        calibration = calibration_slices(info, opts.data_dir, opts.calib_slices, size)
    reference = keras_reference(model, slices, opts.spec) if opts.check else None
    return slices, calibration, reference
