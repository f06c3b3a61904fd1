"""Load any model artefact for inference behind one interface (:class:`Runtime`).

`load_runtime(path_or_model)` picks the runtime from the artefact:

| artefact                         | runtime                                   | extra       |
|----------------------------------|-------------------------------------------|-------------|
| `*.keras` / a `keras.Model`      | Keras (`keras.py`)                        | -           |
| SavedModel folder                | `tf.saved_model.load`, serving signature  | -           |
| `*.onnx`                         | ONNX Runtime (CUDA when present, else CPU)| `[onnx]`    |
| `*.tflite`                       | LiteRT `ai_edge_litert` interpreter       | `[litert]`  |
| `*.engine` / `*.plan`            | TensorRT (NVIDIA GPU)                     | `[tensorrt]`|

Every runtime has `.predict(batch) -> seg` (float32 `(B, H, W, C)`, or `(B, H, W, 1)` labels for
thresholded exports), `.predict_all(batch) -> {name: array}`, `.segment(batch) -> (seg, cls or
None)` (what inference runs), `.input_shape` (`(None, H, W, C)`, Keras convention),
`.image_size`, `.channels`, `.output_names`, `.kind`, `.name`, `.path` and `.info` (the
`ModelInfo` sidecar; for ONNX also read from the graph's metadata). Input: float32 `(B, H, W, C)`
preprocessed slices; int8 LiteRT models are quantized/dequantized with the tensors' own scale and
zero point, and the batch size may change from call to call. :class:`FunctionRuntime` wraps a
plain function.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..modelinfo import ModelInfo, load_info, sidecar_path
from .base import FunctionRuntime, Runtime
from .keras import KerasRuntime, training_outputs
from .litert import LiteRTRuntime
from .onnx import ONNX_METADATA_KEY, OnnxRuntime
from .savedmodel import SavedModelRuntime
from .tensorrt import TensorRTRuntime

__all__ = [
    "Runtime",
    "FunctionRuntime",
    "KerasRuntime",
    "SavedModelRuntime",
    "OnnxRuntime",
    "LiteRTRuntime",
    "TensorRTRuntime",
    "load_runtime",
    "runtime_kind",
    "read_info",
    "training_outputs",
    "ONNX_METADATA_KEY",
    "INPUT_NAME",
    "RUNTIMES",
]

INPUT_NAME = "image"
#: runtime classes by kind: the registry line a new runtime module adds its class to (each class
#: names its `kind` and the file `suffixes` it opens)
RUNTIMES = {c.kind: c for c in (KerasRuntime, SavedModelRuntime, OnnxRuntime, LiteRTRuntime, TensorRTRuntime)}
_SUFFIXES = {suffix: kind for kind, c in RUNTIMES.items() for suffix in c.suffixes}


def read_info(path: str | os.PathLike, required: bool = True) -> ModelInfo | None:
    """The artefact's `ModelInfo` sidecar; None when absent and not `required`."""
    if sidecar_path(path).is_file() or required:
        try:
            return load_info(path)
        except FileNotFoundError:
            if required:
                raise
    return None


def runtime_kind(path: str | os.PathLike) -> str:
    """Which runtime loads `path`: keras, savedmodel, onnxruntime, litert or tensorrt."""
    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return SavedModelRuntime.kind
        raise ValueError(f"'{path}' is a folder without saved_model.pb: not a SavedModel")
    suffix = p.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(
            f"'{path}': unknown model format '{suffix}' (expected a SavedModel folder or {', '.join(_SUFFIXES)})"
        )
    if not p.exists():
        raise FileNotFoundError(f"model file '{path}' does not exist")
    return _SUFFIXES[suffix]


def _is_keras_model(obj) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, keras.Model)


def load_runtime(path_or_model, info: ModelInfo | None = None, require_info: bool = False, **kwargs) -> Runtime:
    """Open a model for inference: an artefact path (see the module docstring for the formats), a
    `keras.Model` (training or deploy form), a Runtime (returned as is), or an object with a
    `predict(batch)` method (wrapped by :meth:`FunctionRuntime.wrap`).

    `info`: use this ModelInfo instead of the sidecar. `require_info=True` raises when neither a
    sidecar nor (ONNX) embedded metadata is found. Extra kwargs go to the runtime class
    (e.g. `threads=` for ONNX Runtime / LiteRT, `providers=` for ONNX Runtime).
    """
    if isinstance(path_or_model, Runtime):
        return path_or_model
    if _is_keras_model(path_or_model):
        return KerasRuntime(path_or_model, info=info, **kwargs)
    if hasattr(path_or_model, "predict"):
        return FunctionRuntime.wrap(path_or_model, info)
    if not isinstance(path_or_model, (str, os.PathLike)):
        raise TypeError(
            f"cannot run inference with a {type(path_or_model).__name__}: expected a keras.Model, "
            f"a runtime from keras_unet3plus.runtimes.load_runtime(), or a model path"
        )
    path = path_or_model
    kind = runtime_kind(path)
    if info is None:
        # a missing sidecar fails before a slow load; ONNX graphs may carry the info themselves
        info = read_info(path, required=require_info and kind != OnnxRuntime.kind)
    rt = RUNTIMES[kind](path, info=info, **kwargs)
    if require_info and rt.info is None:
        load_info(path)  # raises the explanatory FileNotFoundError
    return rt
