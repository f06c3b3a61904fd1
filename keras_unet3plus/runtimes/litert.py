"""A `.tflite` model with LiteRT's interpreter; int8 models are (de)quantized here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._extras import require
from ..modelinfo import ModelInfo
from ..output_names import SEG
from .base import Runtime, as_pair, encoder_outputs, part_paths
from .cpu import cpu_info


class _Signature:
    """One `.tflite` file's serving signature: named float inputs and outputs; int8 tensors are
    quantized / dequantized with each tensor's own scale and zero point, and the batch axis
    follows the incoming batch."""

    def __init__(self, path, threads: int | None):
        interp_mod = require("ai_edge_litert.interpreter", "litert")
        self.interpreter = interp_mod.Interpreter(model_path=str(path), num_threads=threads or cpu_info().cores)
        sigs = self.interpreter.get_signature_list()
        if not sigs:
            raise ValueError(f"LiteRT model '{path}' has no signature; export it with `unet3plus export --to tflite`")
        self.runner = self.interpreter.get_signature_runner(
            "serving_default" if "serving_default" in sigs else next(iter(sigs))
        )
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

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

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        out = self.runner(**{k: self._quantize(np.asarray(v, np.float32), self.inputs[k]) for k, v in inputs.items()})
        return {k: self._dequantize(v, self.outputs[k]) for k, v in out.items()}


class LiteRTRuntime(Runtime):
    """A `.tflite` model with LiteRT's interpreter (`ai_edge_litert`), via its serving signature.

    int8 inputs/outputs (full-integer models) are quantized/dequantized with each tensor's scale
    and zero point; the batch axis is resized to the incoming batch. ``pair``: the skip-absent
    pair (default: beside the model, `part_paths`), used when it is the one the model's export
    recorded (`Runtime.pair_parts`).
    """

    kind = "litert"
    suffixes = (".tflite",)
    pair_target = "tflite"

    def __init__(self, path, info: ModelInfo | None = None, threads: int | None = None, pair: tuple | None = None):
        super().__init__(path, info)
        self._threads = threads
        self.main = _Signature(path, threads)
        self.interpreter = self.main.interpreter
        if len(self.main.inputs) != 1:
            raise ValueError(f"LiteRT model '{path}': expected one input, has {list(self.main.inputs)}")
        ((self._input_name, d),) = self.main.inputs.items()
        sig_shape = d.get("shape_signature", d["shape"])
        self.input_shape = tuple(None if s < 0 else int(s) for s in sig_shape)
        if self.input_shape:
            self.input_shape = (None, *self.input_shape[1:])
        self._output_names = sorted(self.main.outputs, key=lambda n: (n != SEG, n))
        self.input_dtype = np.dtype(d["dtype"])
        self.pair = as_pair(pair) if pair else part_paths(path)

    def _open_part(self, path: Path):
        return _Signature(path, self._threads)

    def encode(self, batch):
        return encoder_outputs(self.pair_parts()[0](image=np.asarray(batch, np.float32)))

    def decode(self, features):
        return self.pair_parts()[1](**{f"feature_{i}": f for i, f in enumerate(features)})[SEG]

    @property
    def seg_channels(self) -> int:
        return int(self.main.outputs[SEG]["shape"][-1])

    def _run(self, batch):
        return self.main(**{self._input_name: batch})
