"""Export a trained model to SavedModel, ONNX, LiteRT (TFLite) or TensorRT, verified against Keras.

`export_model(model, target, precision, ...)` writes each artefact into a temporary sibling path,
runs it on real slices next to the Keras `deploy_model()` (see `verify`), and only then moves it
into place (`os.replace`) with its `ModelInfo` sidecar. A failed parity check raises `ParityError`
(with the table rows) and leaves nothing behind. The CLI (`unet3plus export`) and the scripts in
the top-level `export/` folder are thin wrappers around it.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .graph import GraphSpec
from .verify import ParityError, ParityRow, format_table

TARGETS = ("savedmodel", "onnx", "tflite", "tensorrt")
PRECISIONS = {
    "savedmodel": ("fp32",),
    "onnx": ("fp32", "fp16", "int8"),
    "tflite": ("fp32", "fp16", "int8-dynamic", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
}

__all__ = ["TARGETS", "PRECISIONS", "GraphSpec", "ExportResult", "ParityError", "export_model",
           "default_output", "format_table"]


@dataclass
class ExportResult:
    """Artefacts written (final paths), the verification rows and notes (TensorRT build path...)."""

    target: str
    precision: str
    artefacts: list[Path] = field(default_factory=list)
    rows: list[ParityRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    def table(self) -> str:
        return format_table(self.rows)


def default_output(model_path: str | os.PathLike, target: str, precision: str = "fp32") -> Path:
    """Where an export goes when no `-o` is given: beside the model, named after target/precision."""
    p = Path(model_path)
    stem = p.name[: -len(".keras")] if p.name.endswith(".keras") else p.stem
    if target == "savedmodel":
        return p.with_name(f"{stem}_savedmodel")
    if target == "onnx":
        return p.with_name(f"{stem}.onnx" if precision == "fp32" else f"{stem}_{precision}.onnx")
    if target == "tflite":
        return p.with_name(f"{stem}_{precision}.tflite")
    if target == "tensorrt":
        return p.with_name(f"{stem}_{precision}.engine")
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def _temp_sibling(final: Path) -> Path:
    """A hidden path in the same folder with the same suffix (runtimes dispatch on it)."""
    return final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class _Stage:
    """Temporary artefacts of one export; `publish` moves them into place, `discard` removes them."""

    def __init__(self):
        self.items: list[tuple[Path, Path]] = []  # (temp, final)

    def add(self, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_sibling(final)
        self.items.append((tmp, final))
        return tmp

    def discard(self) -> None:
        for tmp, _ in self.items:
            _remove(tmp)

    def publish(self, info) -> list[Path]:
        from ..modelinfo import SIDECAR_IN_DIR, atomic_write_text, save_info

        out = []
        for tmp, final in self.items:
            if tmp.is_dir():
                if info is not None:
                    atomic_write_text(tmp / SIDECAR_IN_DIR, info.to_json())
                backup = None
                if final.exists():
                    backup = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                    os.replace(final, backup)
                os.replace(tmp, final)
                if backup is not None:
                    _remove(backup)
            else:
                if info is not None:
                    save_info(final, info)
                os.replace(tmp, final)
            out.append(final)
        return out


@contextmanager
def _staged():
    stage = _Stage()
    try:
        yield stage
    except BaseException:
        stage.discard()
        raise


def _artefact_info(info, target: str, precision: str, spec: GraphSpec, extra: dict | None = None):
    if info is None:
        return None
    new = copy.deepcopy(info)
    if spec.threshold is not None:
        new.threshold = float(spec.threshold)
    new.extra = dict(new.extra or {})
    new.extra["export"] = {"target": target, "precision": precision, "outputs": spec.outputs,
                           "threshold_in_graph": spec.threshold, "gated": spec.gate, **(extra or {})}
    return new


def _default_info(model, task: str = "liver"):
    """ModelInfo for a model that came without a sidecar: the task's default preprocessing."""
    from ..modelinfo import ModelInfo

    return ModelInfo.task_default(task, model.inputs[0].shape[1] or 320, model.outputs[0].shape[-1])


def export_model(
    model,
    target: str,
    precision: str = "fp32",
    out: str | os.PathLike | None = None,
    spec: GraphSpec = GraphSpec(),
    info=None,
    model_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    verify_slices: int = 16,
    calib_slices: int = 32,
    slices: np.ndarray | None = None,
    calibration: np.ndarray | None = None,
    batch_range: Sequence[int] = (1, 8, 16),
    opset: int = 17,
    timing_cache: str | os.PathLike | None = None,
    legacy_trt_flags: bool = False,
    check: bool = True,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export `model` (a `keras.Model`, or a path to a `.keras` file) and verify it.

    Args:
        target: "savedmodel", "onnx", "tflite" or "tensorrt".
        precision: see `PRECISIONS[target]`; "int8" is calibrated on real slices (full-integer for
            LiteRT, Q/DQ for ONNX/TensorRT), "int8-dynamic" is LiteRT's dynamic-range int8.
        out: artefact path (default: `default_output(model_path, target, precision)`).
        spec: deploy form (gated `seg` vs all outputs, in-graph threshold).
        info: the model's `ModelInfo` (default: the sidecar of `model_path`, else task defaults).
        data_dir: NIfTI cases for verification/calibration slices (default: generated phantoms).
        slices / calibration: give the arrays directly instead (tests, benchmarks).
        check: run the parity check (raise `ParityError` and write nothing when it fails).

    Returns an `ExportResult`; raises `ParityError` on a failed check, `MissingExtraError` when the
    target's extra is not installed (before any work is done).
    """
    import keras

    from .._extras import require

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if precision not in PRECISIONS[target]:
        raise ValueError(f"--precision {precision!r} is not available for {target}; choose from {PRECISIONS[target]}")
    # fail fast on missing extras, before minutes of conversion
    if target == "tensorrt":
        require("tensorrt", "tensorrt")
        if precision == "fp16":
            require("onnxconverter_common", "tensorrt")
    if target in ("onnx", "tensorrt"):
        require("tf2onnx", "onnx"), require("onnx", "onnx"), require("onnxruntime", "onnx")
    if target == "tflite":
        require("ai_edge_litert.interpreter", "litert")
    if target == "onnx" and precision == "fp16":
        require("onnxconverter_common", "tensorrt")

    if isinstance(model, (str, os.PathLike)):
        model_path = model_path or model
        model = keras.models.load_model(model, compile=False)
    if info is None and model_path is not None:
        from ..runtimes import read_info
        info = read_info(model_path, required=False)
    if info is None:
        info = _default_info(model)
        log(f"note: no model info sidecar found; using the '{info.task}' defaults (HU window "
            f"{info.preprocess.get('hu_window')}) for calibration/verification slices")
    if out is None:
        if model_path is None:
            raise ValueError("give `out` (or `model_path` to derive it)")
        out = default_output(model_path, target, precision)
    out = Path(out)

    from .verify import keras_reference, sample_slices, verify_runtime

    size = model.inputs[0].shape[1]
    need_calib = precision == "int8"
    if check and slices is None:
        slices = sample_slices(info, data_dir, verify_slices, size)
    if need_calib and calibration is None:
        calibration = sample_slices(info, data_dir, calib_slices, size, seed=98765)
    reference = keras_reference(model, slices, spec) if check else None
    result = ExportResult(target, precision)
    hwc = tuple(int(d) for d in model.inputs[0].shape[1:])

    def verify(path: Path, prec: str, runtime_kwargs=None) -> None:
        if not check:
            return
        from ..runtimes import load_runtime
        rt = load_runtime(path, info=info, **(runtime_kwargs or {}))
        result.rows.append(verify_runtime(rt, reference, slices, spec, prec, artefact=str(finals.get(path, path))))

    finals: dict[Path, Path] = {}

    with _staged() as stage, tempfile.TemporaryDirectory(prefix="unet3plus-export-", dir=out.parent if out.parent.exists() else None) as work:
        work = Path(work)
        ainfo = _artefact_info(info, target, precision, spec, {"opset": opset} if target in ("onnx", "tensorrt") else None)
        if target in ("savedmodel", "tflite"):
            from .savedmodel import export_savedmodel
            sm = stage.add(out) if target == "savedmodel" else work / "savedmodel"
            finals[sm] = out
            log("writing SavedModel ...")
            export_savedmodel(model, sm, spec)
            if target == "savedmodel":
                verify(sm, "fp32")
            else:
                from .litert import export_tflite
                tfl = stage.add(out)
                finals[tfl] = out
                log(f"converting to LiteRT ({precision}) ...")
                export_tflite(sm, tfl, precision, calibration)
                verify(tfl, precision)
        else:
            from .onnx import export_onnx, quantize_qdq, to_float16
            from .tensorrt import check_operators
            fp32_path = work / "model_fp32.onnx"
            log(f"converting to ONNX with tf2onnx (opset {opset}) ...")
            export_onnx(model, fp32_path, spec, opset, info=ainfo)
            if target == "onnx":
                graph_final = out
            else:
                graph_final = out.with_name(f"{out.stem}.onnx")
            graph = stage.add(graph_final)
            finals[graph] = graph_final
            if precision == "fp32":
                shutil.copyfile(fp32_path, graph)
            elif precision == "fp16":
                log("converting the ONNX graph to float16 ...")
                to_float16(fp32_path, graph, info=ainfo)
            else:
                log(f"quantizing the ONNX graph to int8 Q/DQ on {len(calibration)} calibration slices ...")
                quantize_qdq(fp32_path, graph, calibration, info=ainfo)
            verify(graph, precision)
            bad = check_operators(graph)
            if bad:
                msg = f"operators TensorRT's ONNX parser does not support: {', '.join(bad)}"
                if target == "tensorrt":
                    from .tensorrt import UnsupportedOperatorError
                    raise UnsupportedOperatorError(msg)
                result.notes.append(f"warning: {msg}")
            else:
                result.notes.append("static check: every operator is supported by TensorRT's ONNX parser")
            if target == "tensorrt":
                from .tensorrt import build_engine
                engine = stage.add(out)
                finals[engine] = out
                build = build_engine(graph, engine, hwc, precision, batch_range,
                                     timing_cache=timing_cache or out.with_name(f"{out.stem}.timing.cache"),
                                     legacy_flags=legacy_trt_flags, fp32_onnx_path=fp32_path, log=log)
                result.notes.append(f"TensorRT build path: {build.path}")
                result.notes.append(f"equivalent trtexec command: {build.trtexec.replace(str(graph), str(graph_final)).replace(str(engine), str(out))}")
                result.notes.extend(build.notes)
                verify(engine, precision)
        if check and not result.passed:
            raise ParityError(f"{target} {precision} export failed the parity check against Keras; nothing was written",
                              result.rows)
        result.artefacts = stage.publish(ainfo)
    return result
