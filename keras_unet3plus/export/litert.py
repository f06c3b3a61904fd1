"""LiteRT (TFLite) export from the SavedModel: fp32, fp16, dynamic-range int8, full-integer int8.

The converter is TensorFlow's `tf.lite.TFLiteConverter.from_saved_model` (the route LiteRT
documents; `ai-edge-litert` ships the interpreter only). Full-integer int8 is calibrated on real
slices (`representative`), keeps only int8 builtins (`TFLITE_BUILTINS_INT8`) and has int8 input and
output; `keras_unet3plus.runtimes.LiteRTRuntime` applies the scale / zero point.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8")


def convert_tflite(savedmodel_dir: str | os.PathLike, precision: str = "fp32",
                   representative: np.ndarray | None = None) -> bytes:
    """Convert a SavedModel written by `export_savedmodel` to a `.tflite` flatbuffer."""
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
        rep = np.asarray(representative, dtype=np.float32)
        conv.representative_dataset = lambda: ([rep[i:i + 1]] for i in range(len(rep)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def export_tflite(savedmodel_dir: str | os.PathLike, path: str | os.PathLike, precision: str = "fp32",
                  representative: np.ndarray | None = None) -> Path:
    """Convert and write `path`."""
    data = convert_tflite(savedmodel_dir, precision, representative)
    Path(path).write_bytes(data)
    return Path(path)
