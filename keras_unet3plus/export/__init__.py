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

@dataclass(frozen=True)
class ExportTarget:
    """One export target in one record: its precisions, the extras each needs, where its artefact
    goes by default and the function that writes (and verifies) it."""

    name: str
    precisions: tuple[str, ...]
    needs: Callable[[str], list[tuple[str, str]]]      # precision -> [(module, extra)] checked up front
    default_name: Callable[[str, str], str]            # (model stem, precision) -> file or folder name
    write: Callable[["_Export"], None]


def _onnx_needs(precision: str) -> list[tuple[str, str]]:
    needs = [("tf2onnx", "onnx"), ("onnx", "onnx"), ("onnxruntime", "onnx")]
    return needs + ([("onnxconverter_common", "tensorrt")] if precision == "fp16" else [])


__all__ = ["TARGETS", "PRECISIONS", "REGISTRY", "ExportTarget", "get_target", "GraphSpec", "ExportResult",
           "ParityError", "export_model", "default_output", "format_table"]


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
    return p.with_name(get_target(target).default_name(stem, precision))


def get_target(name: str) -> ExportTarget:
    """The registry record of an export target; a ValueError lists the targets."""
    if name not in REGISTRY:
        raise ValueError(f"target must be one of {TARGETS}, got {name!r}")
    return REGISTRY[name]


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
        self.items: list[tuple[Path, Path, bool]] = []  # (temp, final, write a sidecar)

    def add(self, final: Path, sidecar: bool = True) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_sibling(final)
        self.items.append((tmp, final, sidecar))
        return tmp

    def discard(self) -> None:
        for tmp, *_ in self.items:
            _remove(tmp)

    def publish(self, info) -> list[Path]:
        from ..modelinfo import SIDECAR_IN_DIR, atomic_write_text, save_info

        out = []
        for tmp, final, sidecar in self.items:
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
                if info is not None and sidecar:
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


def source_record(model_path) -> dict:
    """Which model file an artefact was made from (name and SHA-256), so a stale export (the model
    retrained since) is never picked by ``--runtime auto``."""
    if model_path is None or not Path(model_path).is_file():
        return {}
    from ..runtimes.auto import file_sha256

    return {"source": {"name": Path(model_path).name, "sha256": file_sha256(model_path)}}


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
    skip_absent_pair: bool = True,
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
        skip_absent_pair: ONNX / LiteRT of a model with a CGM: also write the skip-absent pair
            (``predict --skip-absent``), checked like the graph.

    Returns an `ExportResult`; raises `ParityError` on a failed check, `MissingExtraError` when the
    target's extra is not installed (before any work is done).
    """
    import keras

    from .._extras import require

    spec_target = get_target(target)
    if precision not in spec_target.precisions:
        raise ValueError(f"--precision {precision!r} is not available for {target}; choose from {spec_target.precisions}")
    for module, extra in spec_target.needs(precision):   # fail fast, before minutes of conversion
        require(module, extra)

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

    from .verify import keras_reference, sample_slices

    size = model.inputs[0].shape[1]
    need_calib = precision == "int8"
    if check and slices is None:
        slices = sample_slices(info, data_dir, verify_slices, size)
    if need_calib and calibration is None:
        calibration = sample_slices(info, data_dir, calib_slices, size, seed=98765)
    reference = keras_reference(model, slices, spec) if check else None
    result = ExportResult(target, precision)
    hwc = tuple(int(d) for d in model.inputs[0].shape[1:])

    with _staged() as stage, tempfile.TemporaryDirectory(prefix="unet3plus-export-", dir=out.parent if out.parent.exists() else None) as work:
        job = _Export(model=model, out=out, precision=precision, spec=spec, info=info, check=check,
                      reference=reference, slices=slices, calibration=calibration, result=result, stage=stage,
                      work=Path(work), log=log, opset=opset, hwc=hwc, batch_range=batch_range,
                      timing_cache=timing_cache, legacy_trt_flags=legacy_trt_flags, pair=skip_absent_pair,
                      info_out=_artefact_info(info, target, precision, spec,
                                              {**({"opset": opset} if target in ("onnx", "tensorrt") else {}),
                                               **source_record(model_path)}))
        spec_target.write(job)
        if check and not result.passed:
            raise ParityError(f"{target} {precision} export failed the parity check against Keras; nothing was written",
                              result.rows)
        result.artefacts = stage.publish(job.info_out)
    return result


@dataclass
class _Export:
    """Everything a target's writer needs for one export, and the verification it runs."""

    model: object
    out: Path
    precision: str
    spec: GraphSpec
    info: object
    check: bool
    reference: object
    slices: object
    calibration: object
    result: ExportResult
    stage: "_Stage"
    work: Path
    log: Callable[[str], None]
    opset: int
    hwc: tuple
    batch_range: Sequence[int]
    timing_cache: object
    legacy_trt_flags: bool
    info_out: object
    pair: bool = True
    finals: dict = field(default_factory=dict)
    keras_speed: float | None = None

    def add(self, final: Path, sidecar: bool = True) -> Path:
        """A staged temporary path that becomes ``final`` once every check has passed."""
        tmp = self.stage.add(final, sidecar)
        self.finals[tmp] = final
        return tmp

    def verify_pair(self, rt, pair: tuple[Path, Path]) -> None:
        """The skip-absent pair, run by ``rt`` (the staged artefact's runtime) as ``predict
        --skip-absent`` runs it, against the Keras deploy graph: the same parity bar as the graph."""
        if not self.check:
            return
        from ..runtimes import FunctionRuntime
        from .verify import verify_runtime

        if not rt.can_skip_absent:
            raise RuntimeError(f"the skip-absent pair {[p.name for p in pair]} was written but is not usable")
        function = FunctionRuntime(lambda batch: rt.segment_present(batch)[0], name="skip-absent pair")
        function.input_shape = rt.input_shape
        name = f"{self.finals[pair[0]].name} + {self.finals[pair[1]].name}"
        reference = {k: v for k, v in self.reference.items() if k in ("seg", "_prob")}   # seg only
        row = verify_runtime(function, reference, self.slices,
                             GraphSpec(threshold=self.spec.threshold), self.precision, artefact=name)
        self.result.rows.append(row)

    def verify(self, path: Path, precision: str) -> None:
        """Parity against Keras, then the speed of both on one batch of the same slices; both go
        into the artefact's info, where ``predict --runtime auto`` reads them."""
        if not self.check:
            return
        from ..runtimes import KerasRuntime, load_runtime
        from ..runtimes.cpu import cpu_info
        from .verify import seconds_per_slice, verify_runtime

        rt = load_runtime(path, info=self.info)
        row = verify_runtime(rt, self.reference, self.slices, self.spec, precision,
                             artefact=str(self.finals.get(path, path)))
        self.result.rows.append(row)
        if self.info_out is None or path not in self.finals:
            return
        if self.keras_speed is None:
            self.keras_speed = seconds_per_slice(KerasRuntime(self.model).segment, self.slices)
        # one record per artefact name: a TensorRT export writes its ONNX graph and engine
        checks = self.info_out.extra["export"].setdefault("checks", {})
        checks[self.finals[path].name] = {
            "runtime": rt.kind, "passed": row.passed, "dice": row.dice, "max_abs_diff": row.max_abs_diff,
            "seconds_per_slice": seconds_per_slice(rt.segment, self.slices),
            "keras_seconds_per_slice": self.keras_speed, "cpu": cpu_info().summary()}


def _write_savedmodel(job: _Export) -> None:
    from .savedmodel import export_savedmodel

    sm = job.add(job.out)
    job.log("writing SavedModel ...")
    export_savedmodel(job.model, sm, job.spec)
    job.verify(sm, "fp32")


def _write_tflite(job: _Export) -> None:
    from .litert import export_tflite
    from .savedmodel import export_savedmodel

    sm = job.work / "savedmodel"
    job.log("writing SavedModel ...")
    export_savedmodel(job.model, sm, job.spec)
    tfl = job.add(job.out)
    job.log(f"converting to LiteRT ({job.precision}) ...")
    export_tflite(sm, tfl, job.precision, job.calibration)
    pair = _write_tflite_pair(job)
    job.verify(tfl, job.precision)
    if pair is not None:
        from ..runtimes.litert import LiteRTRuntime

        job.verify_pair(LiteRTRuntime(tfl, info=job.info_out, pair=pair), pair)


def _has_pair(job: _Export) -> bool:
    """Models with a CGM, exported gated, get the skip-absent pair."""
    from ..runtimes.keras import output_tensors, training_outputs

    return job.pair and job.spec.gate and "cls" in output_tensors(training_outputs(job.model))


def _write_tflite_pair(job: _Export) -> tuple[Path, Path] | None:
    """The skip-absent pair beside a LiteRT model (same precision), staged; its names and SHA-256
    go into the model's info, which is how the runtime knows the pair is this export's."""
    from ..runtimes.auto import file_sha256
    from ..runtimes.base import PART_NAMES, part_paths
    from ..runtimes.litert import PAIR_RECORD
    from .litert import export_tflite_pair

    if not _has_pair(job):
        return None
    job.log("writing the skip-absent pair (graph up to the CGM, decoder) ...")
    finals = part_paths(job.out)
    staged = export_tflite_pair(job.model, tuple(job.add(f, sidecar=False) for f in finals), job.work, job.spec,
                                job.precision, job.calibration)
    if job.info_out is not None:
        job.info_out.extra["export"][PAIR_RECORD] = {
            part: {"name": final.name, "sha256": file_sha256(path)}
            for part, final, path in zip(PART_NAMES, finals, staged)}
    return staged


def _write_onnx_graph(job: _Export, graph_final: Path) -> tuple[Path, Path]:
    """The ONNX graph at ``job.precision`` (fp32, float16 weights, or Q/DQ int8), verified and checked
    against TensorRT's parser; returns (staged graph, fp32 graph)."""
    from .onnx import export_onnx
    from .tensorrt import UnsupportedOperatorError, check_operators

    fp32_path = job.work / "model_fp32.onnx"
    job.log(f"converting to ONNX with tf2onnx (opset {job.opset}) ...")
    export_onnx(job.model, fp32_path, job.spec, job.opset, info=job.info_out)
    graph = job.add(graph_final)
    _convert_precision(job, fp32_path, graph, job.calibration)
    pair = _write_onnx_pair(job, graph_final) if job.out.suffix == ".onnx" else None
    job.verify(graph, job.precision)
    if pair is not None:
        from ..runtimes.onnx import OnnxRuntime

        job.verify_pair(OnnxRuntime(graph, info=job.info, pair=pair), pair)   # staged names
    if job.precision == "int8" and job.out.suffix == ".onnx":
        job.result.notes.append("int8 in ONNX Runtime's CPU form (uint8 activations); for TensorRT use "
                                "`--to tensorrt`, which writes the symmetric int8 graph its parser takes")
        return graph, fp32_path
    bad = check_operators(graph)
    if bad:
        msg = f"operators TensorRT's ONNX parser does not support: {', '.join(bad)}"
        if job.out.suffix == ".engine":
            raise UnsupportedOperatorError(msg)
        job.result.notes.append(f"warning: {msg}")
    else:
        job.result.notes.append("static check: every operator is supported by TensorRT's ONNX parser")
    return graph, fp32_path


def _convert_precision(job: _Export, fp32_path: Path, dst: Path, calibration) -> None:
    """``dst``: the fp32 ONNX graph at ``job.precision`` (a copy, float16 weights, or Q/DQ int8)."""
    from .onnx import quantize_qdq, to_float16

    if job.precision == "fp32":
        shutil.copyfile(fp32_path, dst)
    elif job.precision == "fp16":
        job.log(f"converting {dst.name} to float16 ...")
        to_float16(fp32_path, dst, info=job.info_out)
    else:
        # ONNX Runtime on CPUs: uint8 asymmetric activations (U8S8); TensorRT: symmetric int8. Both
        # keep the first convolution and the output heads in float (see onnx.float_kept_convs)
        for_tensorrt = job.out.suffix != ".onnx"
        job.log(f"quantizing {dst.name} to int8 Q/DQ ({'TensorRT' if for_tensorrt else 'ONNX Runtime'} form) "
                f"on {len(calibration)} calibration slices ...")
        quantize_qdq(fp32_path, dst, calibration, info=job.info_out, for_tensorrt=for_tensorrt, keep_float=True)


def _write_onnx_pair(job: _Export, graph_final: Path) -> tuple[Path, Path] | None:
    """The skip-absent pair beside an ONNX graph of a model with a CGM (same precision), staged."""
    from ..runtimes.base import part_paths
    from .onnx import export_onnx_pair

    if not _has_pair(job):
        return None
    job.log("writing the skip-absent pair (graph up to the CGM, decoder) ...")
    fp32 = (job.work / "encoder_fp32.onnx", job.work / "decoder_fp32.onnx")
    export_onnx_pair(job.model, graph_final, job.spec, job.opset, info=job.info_out, paths=fp32)
    staged = tuple(job.add(final, sidecar=False) for final in part_paths(graph_final))
    _convert_precision(job, fp32[0], staged[0], job.calibration)
    decoder_calibration = None
    if job.precision == "int8":   # the decoder calibrates on what the fp32 encoder makes of the slices
        from ..runtimes.onnx import _session

        session = _session(fp32[0], None, ["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        decoder_calibration = []
        for i in range(len(job.calibration)):
            outs = dict(zip(names, session.run(None, {session.get_inputs()[0].name: job.calibration[i:i + 1]})))
            decoder_calibration.append({k: v for k, v in outs.items() if k != "cls"})
    _convert_precision(job, fp32[1], staged[1], decoder_calibration)
    return staged


def _write_onnx(job: _Export) -> None:
    _write_onnx_graph(job, job.out)


def _write_tensorrt(job: _Export) -> None:
    from .tensorrt import build_engine

    graph_final = job.out.with_name(f"{job.out.stem}.onnx")
    graph, fp32_path = _write_onnx_graph(job, graph_final)
    engine = job.add(job.out)
    build = build_engine(graph, engine, job.hwc, job.precision, job.batch_range,
                         timing_cache=job.timing_cache or job.out.with_name(f"{job.out.stem}.timing.cache"),
                         legacy_flags=job.legacy_trt_flags, fp32_onnx_path=fp32_path, log=job.log)
    job.result.notes.append(f"TensorRT build path: {build.path}")
    job.result.notes.append("equivalent trtexec command: "
                            + build.trtexec.replace(str(graph), str(graph_final)).replace(str(engine), str(job.out)))
    job.result.notes.extend(build.notes)
    job.verify(engine, job.precision)


#: Every export target, in one registry (nnU-Net's reader/writer registry, segmentation_models'
#: backbone factory): adding a target is one record and one writer.
REGISTRY: dict[str, ExportTarget] = {t.name: t for t in (
    ExportTarget("savedmodel", ("fp32",), lambda p: [], lambda stem, p: f"{stem}_savedmodel", _write_savedmodel),
    ExportTarget("onnx", ("fp32", "fp16", "int8"), _onnx_needs,
                 lambda stem, p: f"{stem}.onnx" if p == "fp32" else f"{stem}_{p}.onnx", _write_onnx),
    ExportTarget("tflite", ("fp32", "fp16", "int8-dynamic", "int8"),
                 lambda p: [("ai_edge_litert.interpreter", "litert")], lambda stem, p: f"{stem}_{p}.tflite",
                 _write_tflite),
    ExportTarget("tensorrt", ("fp32", "fp16", "int8"),
                 lambda p: [("tensorrt", "tensorrt")] + _onnx_needs(p),
                 lambda stem, p: f"{stem}_{p}.engine", _write_tensorrt),
)}
TARGETS = tuple(REGISTRY)
PRECISIONS = {name: t.precisions for name, t in REGISTRY.items()}
