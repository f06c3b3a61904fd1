"""TensorRT engines from the exported ONNX graph (the static operator check is `operators.py`).

Precision comes from the ONNX graph itself (explicit precision), which is the only way TensorRT 11
works: it builds strongly typed networks only (its FP16/INT8 builder flags and INT8 calibrators are
gone). So the tensorrt target first writes a graph per precision:

- fp32: the tf2onnx graph;
- fp16: the float16 graph (`onnx.to_float16`, float32 IO);
- int8: the Q/DQ graph (`onnx.quantize_qdq`, calibrated on real slices, symmetric, zero points 0).

Then `build_engine` parses it and builds, choosing the network creation by TensorRT version:

- TensorRT >= 11: `create_network(0)`, strongly typed by construction ("TRT 11 strongly typed").
- TensorRT 10: `NetworkDefinitionCreationFlag.STRONGLY_TYPED` with the same explicit-precision graph
  ("TRT 10 strongly typed"); with `legacy_flags=True` (or a 10.x without that flag) a weakly typed
  network from the fp32 graph plus `BuilderFlag.FP16`, or the Q/DQ graph plus `BuilderFlag.INT8`
  ("TRT 10 builder flags").

Both use one optimization profile over the batch range (min/opt/max) and a timing cache file that
makes later builds fast. `trtexec_command` prints the equivalent command line. TF-TRT is not an
option: TensorFlow 2.18+ wheels are built without TensorRT.

`check_operators` (in `operators.py`, named here too) needs neither TensorRT nor a GPU: it lists the
graph's operators that TensorRT's ONNX parser does not support, from `tensorrt_onnx_ops.txt`
(onnx-tensorrt's operator table).

`TARGET` is the ``--to tensorrt`` record of the export registry: the ONNX graph (`onnx.write_graph`)
beside the engine, then the engine.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Iterable, Sequence

from .._extras import require
from .onnx import PRECISIONS as ONNX_PRECISIONS
from .onnx import onnx_needs, write_graph

# the operator check lives in operators.py; its names stay importable from here, where they were
from .operators import OPS_FILE, OperatorTable, UnsupportedOperatorError, check_operators  # noqa: F401
from .operators import graph_operators, operator_table  # noqa: F401
from .target import ExportTarget

if TYPE_CHECKING:
    from .job import ExportJob


@dataclass
class EngineBuild:
    """What `build_engine` did."""

    engine_path: Path
    onnx_path: Path
    precision: str
    tensorrt_version: str
    path: str  # which build path ran, e.g. "TRT 11 strongly typed (fp16 ONNX)"
    trtexec: str  # the equivalent trtexec command
    timing_cache: Path | None = None
    notes: list[str] = field(default_factory=list)


def _shape(batch: int, hwc: Sequence[int]) -> tuple[int, ...]:
    return (int(batch), *(int(d) for d in hwc))


def trtexec_command(
    onnx_path,
    engine_path,
    input_hwc: Sequence[int],
    batch_range: Sequence[int] = (1, 8, 16),
    precision: str = "fp32",
    tensorrt_major: int | None = 11,
    legacy_flags: bool = False,
    timing_cache: str | os.PathLike | None = None,
    input_name: str = "image",
) -> str:
    """The trtexec command that builds the same engine (TensorRT 10 or 11 syntax)."""

    def dims(b):
        return "x".join(str(d) for d in _shape(b, input_hwc))

    lo, opt, hi = batch_range
    cmd = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={input_name}:{dims(lo)}",
        f"--optShapes={input_name}:{dims(opt)}",
        f"--maxShapes={input_name}:{dims(hi)}",
    ]
    if timing_cache:
        cmd.append(f"--timingCacheFile={timing_cache}")
    if tensorrt_major is not None and tensorrt_major < 11:
        if legacy_flags:
            cmd += {"fp16": ["--fp16"], "int8": ["--int8"]}.get(precision, [])
        elif precision != "fp32":
            cmd.append("--stronglyTyped")
    return " ".join(shlex.quote(c) for c in cmd)


def tensorrt_version() -> tuple[str, int]:
    """(`tensorrt.__version__`, major) — raises MissingExtraError naming the pip install."""
    trt = require("tensorrt", "tensorrt")
    version = str(trt.__version__)
    return version, int(version.split(".")[0])


@dataclass
class NetworkMode:
    """How a TensorRT version builds the network: its creation flags, whether builder precision
    flags are used (weakly typed), whether fp16 builds from the fp32 graph, and what to say."""

    flags: int
    legacy_flags: bool
    from_fp32_graph: bool
    description: str
    notes: list[str] = field(default_factory=list)


def network_mode(trt, major: int, version: str, precision: str, legacy_flags: bool = False) -> NetworkMode:
    """TensorRT 11: strongly typed always; TensorRT 10: STRONGLY_TYPED unless ``legacy_flags`` or
    the build lacks the flag (then builder flags, fp16 picked by TensorRT from the fp32 graph)."""
    strongly = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if major >= 11:
        # (``legacy_flags`` passed on as given: TensorRT 11 ignores it, trtexec_command reads it)
        return NetworkMode(
            0, legacy_flags, False, f"TRT {major} strongly typed network from the {precision} ONNX graph"
        )
    if legacy_flags or not strongly:
        notes = [] if legacy_flags else [f"TensorRT {version} has no STRONGLY_TYPED flag; fell back to builder flags"]
        description = f"TRT {major} weakly typed network + builder flags ({precision})"
        return NetworkMode(0, True, precision == "fp16", description, notes)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return NetworkMode(flags, False, False, f"TRT {major} STRONGLY_TYPED network from the {precision} ONNX graph")


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    input_hwc: Sequence[int],
    precision: str = "fp32",
    batch_range: Sequence[int] = (1, 8, 16),
    timing_cache: str | os.PathLike | None = None,
    workspace_gib: float = 4.0,
    legacy_flags: bool = False,
    fp32_onnx_path: str | os.PathLike | None = None,
    input_name: str = "image",
    log=print,
) -> EngineBuild:
    """Build a serialized engine from `onnx_path` (the graph of `precision`) and write `engine_path`.

    `batch_range`: (min, opt, max) batch of the optimization profile. `timing_cache`: read if it
    exists, written back after the build. `legacy_flags` (TensorRT 10 only): weakly typed network with
    builder flags; fp16 then builds from `fp32_onnx_path`.
    """
    trt = require("tensorrt", "tensorrt")
    version, major = tensorrt_version()
    if len(batch_range) != 3 or not (0 < batch_range[0] <= batch_range[1] <= batch_range[2]):
        raise ValueError(f"batch range must be min <= opt <= max (>0), got {tuple(batch_range)}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    mode = network_mode(trt, major, version, precision, legacy_flags)
    notes, legacy_flags, path = mode.notes, mode.legacy_flags, mode.description
    if mode.from_fp32_graph and fp32_onnx_path is not None:
        onnx_path = fp32_onnx_path  # FP16 flag lets TensorRT pick fp16 kernels for an fp32 graph
    network = builder.create_network(mode.flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected '{onnx_path}':\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if legacy_flags and major < 11:
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ graph's scales
            config.set_flag(trt.BuilderFlag.FP16)
    lo, opt, hi = batch_range
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, _shape(lo, input_hwc), _shape(opt, input_hwc), _shape(hi, input_hwc))
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    log(f"TensorRT {version}: {path}; profile batch {lo}/{opt}/{hi}")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(
            f"TensorRT {version} could not build an engine from '{onnx_path}' ({path}); see the log above"
        )
    Path(engine_path).write_bytes(bytes(plan))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return EngineBuild(
        Path(engine_path),
        Path(onnx_path),
        precision,
        version,
        path,
        trtexec_command(
            onnx_path, engine_path, input_hwc, batch_range, precision, major, legacy_flags, timing_cache, input_name
        ),
        Path(timing_cache) if timing_cache else None,
        notes,
    )


def parse_batch_range(text: str | Iterable[int]) -> tuple[int, int, int]:
    """'1,8,16' -> (1, 8, 16)."""
    values = [int(v) for v in (text.split(",") if isinstance(text, str) else text)]
    if len(values) != 3 or not (0 < values[0] <= values[1] <= values[2]):
        raise ValueError(f"--batch-range must be MIN,OPT,MAX with 0 < MIN <= OPT <= MAX, got {text!r}")
    return tuple(values)  # type: ignore[return-value]


def write(job: ExportJob) -> None:
    """The ONNX graph of ``job.precision`` beside the engine (`<stem>.onnx`), then the engine built
    from it, each checked against Keras (the engine on the GPU)."""
    graph_final = job.out.with_name(f"{job.out.stem}.onnx")
    graph, fp32_path = write_graph(job, graph_final)
    engine = job.add(job.out)
    opts = job.options
    build = build_engine(
        graph,
        engine,
        job.hwc,
        job.precision,
        opts.batch_range,
        timing_cache=opts.timing_cache or job.out.with_name(f"{job.out.stem}.timing.cache"),
        legacy_flags=opts.legacy_trt_flags,
        fp32_onnx_path=fp32_path,
        log=job.log,
    )
    job.result.notes.append(f"TensorRT build path: {build.path}")
    job.result.notes.append(
        "equivalent trtexec command: "
        + build.trtexec.replace(str(graph), str(graph_final)).replace(str(engine), str(job.out))
    )
    job.result.notes.extend(build.notes)
    job.verify(engine, job.precision)


TARGET = ExportTarget(
    "tensorrt",
    ONNX_PRECISIONS,
    suffix=".engine",  # built from the ONNX graph of each
    needs=lambda precision: [("tensorrt", "tensorrt")] + onnx_needs(precision),
    runtime="TensorRTRuntime",
    write=write,
    default_name=lambda stem, precision: f"{stem}_{precision}.engine",
)
