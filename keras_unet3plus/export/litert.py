"""LiteRT (TFLite) export from the SavedModel: fp32, fp16, dynamic-range int8, full-integer int8.

A model with a CGM also gets its skip-absent pair (`export_tflite_pair`: the graph up to the CGM
and the decoder, at `runtimes.base.part_paths`), as the ONNX export does; `TARGET` is the
``--to tflite`` record of the export registry.

The converter is TensorFlow's `tf.lite.TFLiteConverter.from_saved_model` (the route LiteRT
documents; `ai-edge-litert` ships the interpreter only). Full-integer int8 is calibrated on real
slices (`representative`), keeps only int8 builtins (`TFLITE_BUILTINS_INT8`) and has int8 input and
output; `keras_unet3plus.runtimes.LiteRTRuntime` applies the scale / zero point.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .target import ExportTarget

if TYPE_CHECKING:
    from .job import ExportJob

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")


def convert_tflite(
    savedmodel_dir: str | os.PathLike, precision: str = "fp32", representative: np.ndarray | list[dict] | None = None
) -> bytes:
    """Convert a SavedModel written by `export_savedmodel` to a `.tflite` flatbuffer.

    ``representative``: calibration slices (one input), or one ``{input name: array}`` per sample
    for a signature with several inputs (the decoder of the skip-absent pair)."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"LiteRT precision must be one of {PRECISIONS}, got {precision!r}")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir), signature_keys=["serving_default"])
    if precision != "fp32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    if precision == "int8":
        if representative is None or len(representative) == 0:
            raise ValueError("full-integer int8 needs representative slices (calibration data)")
        if isinstance(representative, list) and isinstance(representative[0], dict):
            conv.representative_dataset = lambda: iter(representative)
        else:
            rep = np.asarray(representative, dtype=np.float32)
            conv.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def export_tflite(
    savedmodel_dir: str | os.PathLike,
    path: str | os.PathLike,
    precision: str = "fp32",
    representative: np.ndarray | None = None,
) -> Path:
    """Convert and write `path`."""
    data = convert_tflite(savedmodel_dir, precision, representative)
    Path(path).write_bytes(data)
    return Path(path)


def export_tflite_pair(
    model,
    paths: tuple[Path, Path],
    work: str | os.PathLike,
    spec=None,
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
) -> tuple[Path, Path]:
    """The skip-absent pair (`graph.pair_functions`) as two `.tflite` files at ``paths``. In int8
    the decoder is calibrated on what the float encoder makes of the calibration slices."""
    import keras

    from .calibration import feature_feeds
    from .graph import GraphSpec, pair_functions

    parts = pair_functions(model, spec or GraphSpec())
    representative = {"encoder": calibration, "decoder": None}
    if precision == "int8":
        representative["decoder"] = feature_feeds(parts[0][0], calibration)
    for (function, _, keras_model), name, path in zip(parts, ("encoder", "decoder"), paths):
        folder = Path(work) / f"{name}_savedmodel"
        archive = keras.export.ExportArchive()
        archive.track(keras_model)
        archive.add_endpoint("serving_default", function)
        archive.write_out(str(folder), verbose=False)
        Path(path).write_bytes(convert_tflite(folder, precision, representative[name]))
    return tuple(Path(p) for p in paths)


def write(job: ExportJob) -> None:
    """The `.tflite` model at ``job.out`` (converted from a SavedModel of the deploy graph) and its
    skip-absent pair, each checked against Keras."""
    from ..runtimes.litert import LiteRTRuntime
    from .savedmodel import export_savedmodel

    sm = job.work / "savedmodel"
    job.log("writing SavedModel ...")
    export_savedmodel(job.model, sm, job.spec)
    tfl = job.add(job.out)
    job.log(f"converting to LiteRT ({job.precision}) ...")
    export_tflite(sm, tfl, job.precision, job.calibration)
    pair = job.write_pair(
        lambda staged: export_tflite_pair(job.model, staged, job.work, job.spec, job.precision, job.calibration)
    )
    job.verify(tfl, job.precision)
    if pair is not None:
        job.verify_pair(LiteRTRuntime(tfl, info=job.artefact_info(), pair=pair))


TARGET = ExportTarget(
    "tflite",
    PRECISIONS,
    suffix=".tflite",
    needs=lambda precision: [("ai_edge_litert.interpreter", "litert")],
    runtime="LiteRTRuntime",
    write=write,
    default_name=lambda stem, precision: f"{stem}_{precision}.tflite",
)
