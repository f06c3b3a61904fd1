"""The static operator check CI runs: which operators of an ONNX graph TensorRT's ONNX parser
cannot import, from `tensorrt_onnx_ops.txt` (onnx-tensorrt's operator table). Needs neither
TensorRT nor a GPU; the ONNX writer runs it on every graph it makes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources

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
    return OperatorTable(
        frozenset(supported), frozenset(unsupported), restrictions, meta.get("tensorrt_version", "?"), " ".join(source)
    )


def _load(model) -> object:
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
            f"{', '.join(bad)} (table: keras_unet3plus/export/{OPS_FILE})"
        )
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
