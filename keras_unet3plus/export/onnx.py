"""ONNX export with tf2onnx (opset >= 17), plus the reduced-precision graphs TensorRT builds from.

- `export_onnx`: the fp32 deploy graph; input `image` with a dynamic `batch` axis, outputs named
  after the deploy model's dict keys (`seg`, and with all outputs `side_2`.. `cls`); checked with
  `onnx.checker`; the model info is embedded in `metadata_props` (key `unet3plus_info`).
- `to_float16`: float16 weights and activations, float32 input/output (onnxconverter-common).
  TensorRT 11 builds such a graph as a strongly typed FP16 network.
- `quantize_qdq`: INT8 with QuantizeLinear/DequantizeLinear pairs, calibrated on real slices with
  ONNX Runtime's static quantizer, per-channel weights, the first convolution and the output heads
  kept in float. Two forms: TensorRT's (symmetric int8 activations, zero points 0 as its parser
  requires; TensorRT 10/11 builds it as an INT8 network) and ONNX Runtime's for CPUs (asymmetric
  uint8 activations, U8S8). On a trained 16..256 model the float-kept layers and uint8 activations
  take the volume mask's Dice against fp32 from 0.926 to 0.998 (benchmarks/volume_inference.py).

tf2onnx is used through `convert.from_function` on a `tf.function` with an explicit input
signature: tf2onnx's `from_keras` breaks on Keras 3 (onnx/tensorflow-onnx#2329, #2348).

`TARGET` is the ``--to onnx`` record of the export registry; `write_graph` also makes the graph
the ``--to tensorrt`` target builds its engine from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._extras import require
from ..output_names import CLS, SEG
from ..runtimes.onnx import ONNX_METADATA_KEY, part_paths
from .graph import INPUT_NAME, GraphSpec, pair_functions, serving_function
from .target import ExportTarget

if TYPE_CHECKING:
    from .job import ExportJob

DEFAULT_OPSET = 17
BATCH_DIM = "batch"
QDQ_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _stable_io(model_proto) -> None:
    """Name the dynamic batch axis `batch` on every graph input and output."""
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM


def embed_info(model_proto, info) -> None:
    """Store the ModelInfo JSON in the graph's metadata (`unet3plus_info`)."""
    if info is None:
        return
    for prop in list(model_proto.metadata_props):
        if prop.key == ONNX_METADATA_KEY:
            model_proto.metadata_props.remove(prop)
    entry = model_proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, info.to_json()


def _convert(function, signature, opset: int, info, path, outputs: tuple[str, ...] = ()):
    """tf2onnx of a `tf.function`, IO named and checked (``outputs`` must be among the graph's)."""
    onnx = require("onnx", "onnx")
    tf2onnx = require("tf2onnx", "onnx")
    model_proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    names = [o.name for o in model_proto.graph.output]
    wanted_inputs = [spec.name for spec in signature]
    if not set(outputs) <= set(names) or [i.name for i in model_proto.graph.input] != wanted_inputs:
        raise RuntimeError(
            f"tf2onnx produced unexpected graph IO: inputs {[i.name for i in model_proto.graph.input]}, outputs {names}"
        )
    _stable_io(model_proto)
    model_proto.producer_name = "keras-unet3plus (tf2onnx)"
    embed_info(model_proto, info)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(path))
    return model_proto


def export_onnx_pair(
    model,
    graph_path: str | os.PathLike,
    spec: GraphSpec = GraphSpec(),
    opset: int = DEFAULT_OPSET,
    info=None,
    paths=None,
) -> tuple[Path, Path]:
    """The skip-absent pair of `model`'s deploy graph (`graph.pair_functions`) as two ONNX graphs,
    at `runtimes.base.part_paths(graph_path)` or ``paths``."""
    (encode, encode_sig, _), (decode, decode_sig, _) = pair_functions(model, spec)
    encoder_path, decoder_path = paths or part_paths(graph_path)
    _convert(encode, encode_sig, opset, info, encoder_path, outputs=(CLS,))
    _convert(decode, decode_sig, opset, info, decoder_path, outputs=(SEG,))
    return encoder_path, decoder_path


def export_onnx(model, path: str | os.PathLike, spec: GraphSpec = GraphSpec(), opset: int = DEFAULT_OPSET, info=None):
    """Convert the deploy graph of `model` to ONNX at `path`; returns the `onnx.ModelProto`."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    serve, sig, _ = serving_function(model, spec)
    return _convert(serve, [sig], opset, info, path, outputs=(SEG,))


def _detach_outputs(model_proto) -> None:
    """Give every graph output its own Identity node, so no output tensor also feeds other nodes
    (onnxconverter-common's keep_io_types mistypes such tensors)."""
    from onnx import helper

    outs = {o.name for o in model_proto.graph.output}
    consumers = [n for n in model_proto.graph.node]
    new_nodes = []
    for node in consumers:
        for i, name in enumerate(node.output):
            if name in outs:
                inner = f"{name}__internal"
                node.output[i] = inner
                for other in consumers:
                    for j, inp in enumerate(other.input):
                        if inp == name:
                            other.input[j] = inner
                new_nodes.append(helper.make_node("Identity", [inner], [name], name=f"{name}__output"))
    model_proto.graph.node.extend(new_nodes)


def to_float16(src: str | os.PathLike, dst: str | os.PathLike, info=None):
    """fp16 copy of an fp32 ONNX graph (float32 IO kept); returns the ModelProto."""
    onnx = require("onnx", "onnx")
    float16 = require("onnxconverter_common.float16", "tensorrt")
    model_proto = onnx.load(str(src))
    del model_proto.graph.value_info[:]  # tf2onnx's fp32 shape annotations would contradict fp16 types
    _detach_outputs(model_proto)
    # Cast nodes carry their target type as an attribute; keep them (bool -> float32 masks) in fp32
    block = [n.name for n in model_proto.graph.node if n.op_type == "Cast"]
    m16 = float16.convert_float_to_float16(model_proto, keep_io_types=True, node_block_list=block)
    _stable_io(m16)
    embed_info(m16, info)
    onnx.checker.check_model(m16)
    onnx.save(m16, str(dst))
    return m16


def float_kept_convs(model_proto) -> list[str]:
    """The convolutions int8 hurts most in a segmentation network: the first one (it reads the
    HU-windowed image) and the last one before each output (the logits the threshold cuts)."""
    convs = [n for n in model_proto.graph.node if n.op_type == "Conv"]  # nodes are in topological order
    keep = {convs[0].name} if convs else set()
    producer = {out: n for n in model_proto.graph.node for out in n.output}
    for output in model_proto.graph.output:
        stack, seen = [output.name], set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                keep.add(node.name)
            else:
                stack.extend(node.input)
    return sorted(keep)


def quantize_qdq(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: np.ndarray,
    info=None,
    per_channel: bool = True,
    method: str = "minmax",
    op_types=QDQ_OP_TYPES,
    for_tensorrt: bool = True,
    keep_float: bool = False,
):
    """INT8 Q/DQ copy of an fp32 ONNX graph, calibrated on `calibration` slices `(N, H, W, C)` (or
    on a list of feed dicts ``{input name: (1, ...) array}`` for a graph with other inputs).

    Per-channel symmetric int8 weights, Q/DQ around `op_types` only. ``for_tensorrt``: symmetric
    int8 activations (zero points 0: TensorRT's parser rejects others); otherwise asymmetric uint8
    activations, ONNX Runtime's recommended CPU form (U8S8; post-ReLU activations use all 256
    levels). ``keep_float``: leave :func:`float_kept_convs` in float. `method`: "minmax",
    "entropy" or "percentile".
    """
    onnx = require("onnx", "onnx")
    q = require("onnxruntime.quantization", "onnx")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    if isinstance(calibration, np.ndarray):
        calibration = np.asarray(calibration, dtype=np.float32)
        feeds = [{INPUT_NAME: calibration[i : i + 1]} for i in range(len(calibration))]
    else:  # feed dicts, one per calibration slice (a graph with other inputs: the decoder part)
        feeds = list(calibration)

    class _Reader(q.CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(dir=Path(dst).parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        excluded = float_kept_convs(onnx.load(str(pre))) if keep_float else []
        q.quantize_static(
            str(pre),
            str(Path(tmp) / "q.onnx"),
            _Reader(),
            quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QInt8 if for_tensorrt else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=list(op_types),
            calibrate_method=methods[method],
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": for_tensorrt, "WeightSymmetric": True},
        )
        model_proto = onnx.load(str(Path(tmp) / "q.onnx"))
    _stable_io(model_proto)
    embed_info(model_proto, info)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(dst))
    return model_proto


def read_info_json(model_proto) -> dict | None:
    """The embedded ModelInfo dict of an ONNX model, or None."""
    for prop in model_proto.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            return json.loads(prop.value)
    return None


# ---------------------------------------------------------------------------------------------
# the `--to onnx` target
# ---------------------------------------------------------------------------------------------

PRECISIONS = ("fp32", "fp16", "int8")


def onnx_needs(precision: str) -> list[tuple[str, str]]:
    """The modules an ONNX graph of ``precision`` is made with, and their extras."""
    needs = [("tf2onnx", "onnx"), ("onnx", "onnx"), ("onnxruntime", "onnx")]
    return needs + ([("onnxconverter_common", "tensorrt")] if precision == "fp16" else [])


def write_graph(job: ExportJob, graph_final: Path) -> tuple[Path, Path]:
    """The ONNX graph at ``job.precision`` (fp32, float16 weights, or Q/DQ int8) and, for ``--to
    onnx``, its skip-absent pair; each verified, the graph checked against TensorRT's parser.
    Returns (staged graph, fp32 graph)."""
    from ..runtimes.onnx import OnnxRuntime
    from .operators import UnsupportedOperatorError, check_operators

    job.record.opset = job.options.opset
    graph = job.add(graph_final)
    # the pair first, so the graph's embedded info carries the pair's identity
    pair = job.write_pair(lambda staged: _write_pair_parts(job, staged)) if job.out.suffix == ".onnx" else None
    fp32_path = job.work / "model_fp32.onnx"
    job.log(f"converting to ONNX with tf2onnx (opset {job.options.opset}) ...")
    export_onnx(job.model, fp32_path, job.spec, job.options.opset, info=job.artefact_info())
    _convert_precision(job, fp32_path, graph, job.calibration)
    job.verify(graph, job.precision)
    if pair is not None:
        job.verify_pair(OnnxRuntime(graph, info=job.artefact_info(), pair=pair))  # staged names
    if job.precision == "int8" and job.out.suffix == ".onnx":
        job.result.notes.append(
            "int8 in ONNX Runtime's CPU form (uint8 activations); for TensorRT use "
            "`--to tensorrt`, which writes the symmetric int8 graph its parser takes"
        )
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


def _convert_precision(job: ExportJob, fp32_path: Path, dst: Path, calibration) -> None:
    """``dst``: the fp32 ONNX graph at ``job.precision`` (a copy, float16 weights, or Q/DQ int8)."""
    if job.precision == "fp32":
        shutil.copyfile(fp32_path, dst)
    elif job.precision == "fp16":
        job.log(f"converting {dst.name} to float16 ...")
        to_float16(fp32_path, dst, info=job.artefact_info())
    else:
        # ONNX Runtime on CPUs: uint8 asymmetric activations (U8S8); TensorRT: symmetric int8. Both
        # keep the first convolution and the output heads in float (see float_kept_convs)
        for_tensorrt = job.out.suffix != ".onnx"
        job.log(
            f"quantizing {dst.name} to int8 Q/DQ ({'TensorRT' if for_tensorrt else 'ONNX Runtime'} form) "
            f"on {len(calibration)} calibration slices ..."
        )
        quantize_qdq(fp32_path, dst, calibration, info=job.artefact_info(), for_tensorrt=for_tensorrt, keep_float=True)


def _write_pair_parts(job: ExportJob, staged: tuple[Path, Path]) -> None:
    """The two parts at ``job.precision``; in int8 the decoder is calibrated on what the fp32
    encoder makes of the calibration slices."""
    from .calibration import onnx_feature_feeds

    fp32 = (job.work / "encoder_fp32.onnx", job.work / "decoder_fp32.onnx")
    export_onnx_pair(job.model, job.out, job.spec, job.options.opset, info=job.artefact_info(), paths=fp32)
    _convert_precision(job, fp32[0], staged[0], job.calibration)
    decoder_calibration = onnx_feature_feeds(fp32[0], job.calibration) if job.precision == "int8" else None
    _convert_precision(job, fp32[1], staged[1], decoder_calibration)


def write(job: ExportJob) -> None:
    write_graph(job, job.out)


TARGET = ExportTarget(
    "onnx",
    PRECISIONS,
    suffix=".onnx",
    needs=onnx_needs,
    runtime="OnnxRuntime",
    write=write,
    default_name=lambda stem, p: f"{stem}.onnx" if p == "fp32" else f"{stem}_{p}.onnx",
)
