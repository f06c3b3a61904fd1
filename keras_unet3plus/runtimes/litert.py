"""A `.tflite` model with LiteRT's interpreter; int8 models are (de)quantized here."""
from __future__ import annotations

import numpy as np

from .._extras import require
from ..modelinfo import ModelInfo
from .base import Runtime
from .cpu import cpu_info


class LiteRTRuntime(Runtime):
    """A `.tflite` model with LiteRT's interpreter (`ai_edge_litert`), via its serving signature.

    int8 inputs/outputs (full-integer models) are quantized/dequantized with each tensor's scale
    and zero point; the batch axis is resized to the incoming batch.
    """

    kind = "litert"

    def __init__(self, path, info: ModelInfo | None = None, threads: int | None = None):
        super().__init__(path, info)
        interp_mod = require("ai_edge_litert.interpreter", "litert")
        self.interpreter = interp_mod.Interpreter(model_path=str(path), num_threads=threads or cpu_info().cores)
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
        self._output_names = sorted(self._out, key=lambda n: (n != "seg", n))
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
