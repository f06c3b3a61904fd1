"""Load any model artefact for inference behind one interface.

`load_runtime(path)` picks the runtime from the artefact:

| artefact                         | runtime                                   | extra       |
|----------------------------------|-------------------------------------------|-------------|
| `*.keras`                        | Keras (`deploy_model()` of the model)     | -           |
| SavedModel folder                | `tf.saved_model.load`, serving signature  | -           |
| `*.onnx`                         | ONNX Runtime (CUDA when present, else CPU)| `[onnx]`    |
| `*.tflite`                       | LiteRT `ai_edge_litert` interpreter       | `[litert]`  |
| `*.engine` / `*.plan`            | TensorRT (NVIDIA GPU)                     | `[tensorrt]`|

Every runtime has `.predict(batch) -> seg` (float32 `(B, H, W, C)`, or `(B, H, W, 1)` labels for
thresholded exports), `.predict_all(batch) -> {name: array}`, `.input_shape` (`(None, H, W, C)`,
Keras convention), `.output_names`, `.kind` and `.info` (the `ModelInfo` sidecar; for ONNX also read
from the graph's metadata). Input: float32 `(B, H, W, C)` preprocessed slices; int8 LiteRT models
are quantized/dequantized here with the tensors' own scale and zero point, and the batch size may
change from call to call (inputs are resized as needed).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._extras import require
from .modelinfo import ModelInfo, load_info, sidecar_path

ONNX_METADATA_KEY = "unet3plus_info"
INPUT_NAME = "image"


class Runtime:
    """Common interface; subclasses implement `_run(batch) -> dict` and set the attributes."""

    kind = "base"

    def __init__(self, path: str | os.PathLike | None, info: ModelInfo | None):
        self.path = Path(path) if path is not None else None
        self.info = info
        self.input_shape: tuple = ()
        self.output_names: list[str] = []

    def _check(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4:
            raise ValueError(f"{self.kind} runtime '{self.path}': input must be (B, H, W, C), got shape {batch.shape}")
        want = tuple(self.input_shape[1:])
        if want and any(w is not None and w != g for w, g in zip(want, batch.shape[1:])):
            raise ValueError(f"{self.kind} runtime '{self.path}': input must be (B, {', '.join(map(str, want))}), "
                             f"got {batch.shape}; preprocess with the model's PreprocessConfig")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def predict_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the artefact, as float32 numpy arrays."""
        out = self._run(self._check(batch))
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The (gated) segmentation output `seg`."""
        return self.predict_all(batch)["seg"]

    def _run(self, batch: np.ndarray) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.path} input={self.input_shape} outputs={self.output_names}>"


class KerasRuntime(Runtime):
    """A `.keras` file (or an in-memory model): runs `deploy_model()` of it, so `seg` is gated."""

    kind = "keras"

    def __init__(self, model, path=None, info: ModelInfo | None = None, threshold: float | None = None,
                 all_outputs: bool = True):
        super().__init__(path, info)
        import keras

        from .export.graph import training_outputs
        from .model import deploy_model

        if isinstance(model, (str, os.PathLike)):
            model = keras.models.load_model(model, compile=False)
        base = training_outputs(model)
        self.model = deploy_model(base, threshold=threshold, all_outputs=all_outputs)
        self.input_shape = tuple(self.model.inputs[0].shape)
        self.output_names = list(self.model.output.keys())

    def _run(self, batch):
        return self.model.predict_on_batch(batch)


class SavedModelRuntime(Runtime):
    """A SavedModel folder, through its `serving_default` signature."""

    kind = "savedmodel"

    def __init__(self, path, info: ModelInfo | None = None, signature: str = "serving_default"):
        super().__init__(path, info)
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(path))
        if signature not in self._loaded.signatures:
            raise ValueError(f"SavedModel '{path}' has no '{signature}' signature (has {list(self._loaded.signatures)})")
        self._fn = self._loaded.signatures[signature]
        inputs = self._fn.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"SavedModel '{path}': expected one input, signature has {list(inputs)}")
        (self._input_name, spec), = inputs.items()
        self.input_shape = tuple(spec.shape.as_list())
        self.output_names = list(self._fn.structured_outputs.keys())

    def _run(self, batch):
        import tensorflow as tf

        out = self._fn(**{self._input_name: tf.constant(batch)})
        return {k: v.numpy() for k, v in out.items()}


class OnnxRuntime(Runtime):
    """An `.onnx` graph with ONNX Runtime (CUDA/TensorRT providers when installed, else CPU)."""

    kind = "onnxruntime"

    def __init__(self, path, info: ModelInfo | None = None, providers: list[str] | None = None,
                 threads: int | None = None):
        super().__init__(path, info)
        ort = require("onnxruntime", "onnx")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.info is None:
            meta = self.session.get_modelmeta().custom_metadata_map
            if ONNX_METADATA_KEY in meta:
                self.info = ModelInfo.from_dict(json.loads(meta[ONNX_METADATA_KEY]), source=f"{path} metadata")

    def _run(self, batch):
        return dict(zip(self.output_names, self.session.run(None, {self._input_name: batch})))


class LiteRTRuntime(Runtime):
    """A `.tflite` model with LiteRT's interpreter (`ai_edge_litert`), via its serving signature.

    int8 inputs/outputs (full-integer models) are quantized/dequantized with each tensor's scale
    and zero point; the batch axis is resized to the incoming batch.
    """

    kind = "litert"

    def __init__(self, path, info: ModelInfo | None = None, threads: int | None = None):
        super().__init__(path, info)
        interp_mod = require("ai_edge_litert.interpreter", "litert")
        self.interpreter = interp_mod.Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
        sigs = self.interpreter.get_signature_list()
        if not sigs:
            raise ValueError(f"LiteRT model '{path}' has no signature; export it with `unet3plus export --to tflite`")
        self._sig = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        self.runner = self.interpreter.get_signature_runner(self._sig)
        self._in = self.runner.get_input_details()
        self._out = self.runner.get_output_details()
        if len(self._in) != 1:
            raise ValueError(f"LiteRT model '{path}': expected one input, has {list(self._in)}")
        (self._input_name, d), = self._in.items()
        sig_shape = d.get("shape_signature", d["shape"])
        self.input_shape = tuple(None if s < 0 else int(s) for s in sig_shape)
        if self.input_shape:
            self.input_shape = (None, *self.input_shape[1:])
        self.output_names = sorted(self._out, key=lambda n: (n != "seg", n))
        self.input_dtype = np.dtype(d["dtype"])

    @staticmethod
    def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
        dtype = np.dtype(detail["dtype"])
        if dtype == np.float32:
            return x
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    @staticmethod
    def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
        if np.dtype(detail["dtype"]) == np.float32:
            return y
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * np.float32(scale)

    def _run(self, batch):
        out = self.runner(**{self._input_name: self._quantize(batch, self._in[self._input_name])})
        return {k: self._dequantize(v, self._out[k]) for k, v in out.items()}


class TensorRTRuntime(Runtime):
    """A serialized TensorRT engine (`.engine` / `.plan`), TensorRT 10 or 11, on the GPU.

    Device memory and copies go through CUDA Python (`cuda-python`, in the `[tensorrt]` extra).
    """

    kind = "tensorrt"

    def __init__(self, path, info: ModelInfo | None = None):
        super().__init__(path, info)
        trt = require("tensorrt", "tensorrt")
        self._cudart = _cudart()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ValueError(f"TensorRT engine '{path}' could not be deserialized (built with another TensorRT "
                             f"version or GPU? this is TensorRT {trt.__version__})")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        shape = tuple(self.engine.get_tensor_shape(self._input_name))
        self.input_shape = (None, *shape[1:])
        _min, _opt, max_shape = self.engine.get_tensor_profile_shape(self._input_name, 0)
        self._max_shape = tuple(max_shape)
        err, self._stream = self._cudart.cudaStreamCreate()
        _check_cuda(err, "cudaStreamCreate")

    def _run(self, batch):
        trt, cudart = self.trt, self._cudart
        if batch.shape[0] > self._max_shape[0]:
            out: dict[str, list] = {}
            step = self._max_shape[0]
            for i in range(0, batch.shape[0], step):
                for k, v in self._run(batch[i:i + step]).items():
                    out.setdefault(k, []).append(v)
            return {k: np.concatenate(v) for k, v in out.items()}
        self.context.set_input_shape(self._input_name, tuple(batch.shape))
        buffers, host_out = [], {}
        try:
            for name in [self._input_name, *self.output_names]:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                nbytes = int(np.prod(shape)) * dtype.itemsize
                err, ptr = cudart.cudaMalloc(max(nbytes, 1))
                _check_cuda(err, "cudaMalloc")
                buffers.append(ptr)
                self.context.set_tensor_address(name, int(ptr))
                if name == self._input_name:
                    host = np.ascontiguousarray(batch.astype(dtype, copy=False))
                    _check_cuda(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, nbytes,
                                                       cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream)[0], "cudaMemcpy")
                else:
                    host_out[name] = (np.empty(shape, dtype), ptr, nbytes)
            if not self.context.execute_async_v3(self._stream):
                raise RuntimeError(f"TensorRT engine '{self.path}': execute_async_v3 failed")
            for name, (host, ptr, nbytes) in host_out.items():
                _check_cuda(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, nbytes,
                                                   cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream)[0], "cudaMemcpy")
            _check_cuda(cudart.cudaStreamSynchronize(self._stream)[0], "cudaStreamSynchronize")
            return {name: host for name, (host, _, _) in host_out.items()}
        finally:
            for ptr in buffers:
                cudart.cudaFree(ptr)


def _cudart():
    """CUDA runtime bindings of cuda-python (12.x+: `cuda.bindings.runtime`; older: `cuda.cudart`)."""
    try:
        from cuda.bindings import runtime as cudart  # type: ignore
        return cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore
            return cudart
        except ImportError:
            require("cuda_python_missing_for_tensorrt_runtime", "tensorrt")  # raises with the pip hint


def _check_cuda(err, what: str) -> None:
    code = getattr(err, "value", err)
    if code not in (0, None):
        raise RuntimeError(f"CUDA call {what} failed: {err}")


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
    kinds = {".keras": KerasRuntime.kind, ".onnx": OnnxRuntime.kind, ".tflite": LiteRTRuntime.kind,
             ".engine": TensorRTRuntime.kind, ".plan": TensorRTRuntime.kind, ".trt": TensorRTRuntime.kind}
    if suffix not in kinds:
        raise ValueError(f"'{path}': unknown model format '{suffix}' (expected .keras, a SavedModel folder, "
                         f".onnx, .tflite, .engine or .plan)")
    if not p.exists():
        raise FileNotFoundError(f"model file '{path}' does not exist")
    return kinds[suffix]


def load_runtime(path: str | os.PathLike, info: ModelInfo | None = None, require_info: bool = False,
                 **kwargs) -> Runtime:
    """Open a model artefact for inference (see the module docstring for the formats).

    `info`: use this ModelInfo instead of the sidecar. `require_info=True` raises when neither a
    sidecar nor (ONNX) embedded metadata is found. Extra kwargs go to the runtime class
    (e.g. `threads=` for ONNX Runtime / LiteRT, `providers=` for ONNX Runtime).
    """
    kind = runtime_kind(path)
    if info is None:
        info = read_info(path, required=False)
    cls = {c.kind: c for c in (KerasRuntime, SavedModelRuntime, OnnxRuntime, LiteRTRuntime, TensorRTRuntime)}[kind]
    rt = cls(path, info=info, **kwargs) if kind != "keras" else KerasRuntime(path, path=path, info=info, **kwargs)
    if require_info and rt.info is None:
        load_info(path)  # raises the explanatory FileNotFoundError
    return rt
