"""TensorRT engines from the exported ONNX graph, and the static operator check CI runs.

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

`check_operators` needs neither TensorRT nor a GPU: it lists the graph's operators that TensorRT's
ONNX parser does not support, from `tensorrt_onnx_ops.txt` (onnx-tensorrt's operator table).
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

from .._extras import require

OPS_FILE = "tensorrt_onnx_ops.txt"
DEFAULT_DOMAINS = ("", "ai.onnx")


class UnsupportedOperatorError(ValueError):
    """The ONNX graph holds operators TensorRT's ONNX parser cannot import."""


@dataclass(frozen=True)
class OperatorTable:
    """TensorRT's ONNX parser operator table (from the package data file)."""

    supported: frozenset[str]
    unsupported: frozenset[str]
    restrictions: dict
    tensorrt_version: str
    source: str


def operator_table() -> OperatorTable:
    """Read `tensorrt_onnx_ops.txt` (see its header for the source and version)."""
    text = resources.files(__package__).joinpath(OPS_FILE).read_text(encoding="utf-8")
    supported, unsupported, restrictions, meta, source = set(), set(), {}, {}, []
    for line in text.splitlines():
        if line.startswith("#"):
            body = line[1:].strip()
            if ":" in body and body.split(":", 1)[0] in ("tensorrt_version", "opset_range"):
                k, v = body.split(":", 1)
                meta[k] = v.strip()
            elif body.startswith("Source:"):
                source.append(body)
            continue
        if not line.strip():
            continue
        parts = line.split("\t")
        name, flag = parts[0].strip(), parts[1].strip()
        (supported if flag == "Y" else unsupported).add(name)
        if len(parts) > 2 and parts[2].strip():
            restrictions[name] = parts[2].strip()
    return OperatorTable(frozenset(supported), frozenset(unsupported), restrictions,
                         meta.get("tensorrt_version", "?"), " ".join(source))


def _load(model) -> "object":
    if isinstance(model, (str, os.PathLike)):
        onnx = require("onnx", "onnx")
        return onnx.load(str(model), load_external_data=False)
    return model


def graph_operators(model) -> dict[str, int]:
    """`{op_type (domain-qualified when not default): count}` over the graph and its subgraphs."""
    model = _load(model)
    counts: dict[str, int] = {}

    def walk(graph):
        for node in graph.node:
            key = node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return counts


def check_operators(model, raise_error: bool = False) -> list[str]:
    """Operators of `model` (path or ModelProto) that TensorRT's ONNX parser does not support.

    Empty list: every op is in the parser's table. Ops outside the default ONNX domain count as
    unsupported (they would need a TensorRT plugin). Q/DQ zero points must be 0 (parser rule): a
    nonzero one is reported as `QuantizeLinear(zero_point!=0)`.
    """
    table = operator_table()
    model = _load(model)
    bad = sorted(op for op in graph_operators(model) if op not in table.supported)
    bad += _nonzero_zero_points(model)
    if bad and raise_error:
        raise UnsupportedOperatorError(
            f"ONNX graph has operators TensorRT {table.tensorrt_version}'s ONNX parser does not support: "
            f"{', '.join(bad)} (table: keras_unet3plus/export/{OPS_FILE})")
    return bad


def _nonzero_zero_points(model) -> list[str]:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    found = set()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = inits.get(node.input[2])
            if zp is not None and numpy_helper.to_array(zp).any():
                found.add(f"{node.op_type}(zero_point!=0)")
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# engine build
# ---------------------------------------------------------------------------------------------

@dataclass
class EngineBuild:
    """What `build_engine` did."""

    engine_path: Path
    onnx_path: Path
    precision: str
    tensorrt_version: str
    path: str                 # which build path ran, e.g. "TRT 11 strongly typed (fp16 ONNX)"
    trtexec: str              # the equivalent trtexec command
    timing_cache: Path | None = None
    notes: list[str] = field(default_factory=list)


def _shape(batch: int, hwc: Sequence[int]) -> tuple[int, ...]:
    return (int(batch), *(int(d) for d in hwc))


def trtexec_command(onnx_path, engine_path, input_hwc: Sequence[int], batch_range: Sequence[int] = (1, 8, 16),
                    precision: str = "fp32", tensorrt_major: int | None = 11, legacy_flags: bool = False,
                    timing_cache: str | os.PathLike | None = None, input_name: str = "image") -> str:
    """The trtexec command that builds the same engine (TensorRT 10 or 11 syntax)."""
    def dims(b):
        return "x".join(str(d) for d in _shape(b, input_hwc))

    lo, opt, hi = batch_range
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
           f"--minShapes={input_name}:{dims(lo)}", f"--optShapes={input_name}:{dims(opt)}",
           f"--maxShapes={input_name}:{dims(hi)}"]
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


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, input_hwc: Sequence[int],
                 precision: str = "fp32", batch_range: Sequence[int] = (1, 8, 16),
                 timing_cache: str | os.PathLike | None = None, workspace_gib: float = 4.0,
                 legacy_flags: bool = False, fp32_onnx_path: str | os.PathLike | None = None,
                 input_name: str = "image", log=print) -> EngineBuild:
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
    notes = []
    strongly = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if major >= 11:
        flags, path = 0, f"TRT {major} strongly typed network from the {precision} ONNX graph"
    elif legacy_flags or not strongly:
        flags = 0
        path = f"TRT {major} weakly typed network + builder flags ({precision})"
        if not strongly and not legacy_flags:
            notes.append(f"TensorRT {version} has no STRONGLY_TYPED flag; fell back to builder flags")
        legacy_flags = True
        if precision == "fp16" and fp32_onnx_path is not None:
            onnx_path = fp32_onnx_path  # FP16 flag lets TensorRT pick fp16 kernels for an fp32 graph
    else:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        path = f"TRT {major} STRONGLY_TYPED network from the {precision} ONNX graph"
    network = builder.create_network(flags)
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
            config.set_flag(trt.BuilderFlag.INT8)   # explicit quantization: the Q/DQ graph's scales
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
        raise RuntimeError(f"TensorRT {version} could not build an engine from '{onnx_path}' ({path}); "
                           f"see the log above")
    Path(engine_path).write_bytes(bytes(plan))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return EngineBuild(Path(engine_path), Path(onnx_path), precision, version, path,
                       trtexec_command(onnx_path, engine_path, input_hwc, batch_range, precision, major,
                                       legacy_flags, timing_cache, input_name),
                       Path(timing_cache) if timing_cache else None, notes)


def parse_batch_range(text: str | Iterable[int]) -> tuple[int, int, int]:
    """'1,8,16' -> (1, 8, 16)."""
    values = [int(v) for v in (text.split(",") if isinstance(text, str) else text)]
    if len(values) != 3 or not (0 < values[0] <= values[1] <= values[2]):
        raise ValueError(f"--batch-range must be MIN,OPT,MAX with 0 < MIN <= OPT <= MAX, got {text!r}")
    return tuple(values)  # type: ignore[return-value]
