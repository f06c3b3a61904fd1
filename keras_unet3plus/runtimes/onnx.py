"""An `.onnx` graph with ONNX Runtime; the graph's metadata carries the ModelInfo when no sidecar does."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._extras import require
from ..modelinfo import ModelInfo
from .base import Runtime, encoder_outputs, no_pair_error, part_paths
from .cpu import cpu_info

#: metadata key of the ModelInfo JSON embedded in exported ONNX graphs
ONNX_METADATA_KEY = "unet3plus_info"
def _session(path, threads: int | None, providers: list[str] | None):
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    # every core this process may use (ORT's default counts physical cores: 1 of 2 vCPUs here)
    opts.intra_op_num_threads = int(threads or cpu_info().cores)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class OnnxRuntime(Runtime):
    """An `.onnx` graph with ONNX Runtime (CUDA/TensorRT providers when installed, else CPU)."""

    kind = "onnxruntime"

    def __init__(self, path, info: ModelInfo | None = None, providers: list[str] | None = None,
                 threads: int | None = None, pair: tuple | None = None):
        super().__init__(path, info)
        self._session_args = (threads, providers)
        self.session = _session(path, threads, providers)
        self._parts = None
        #: the skip-absent pair (default: beside the graph, :func:`part_paths`)
        self.pair = tuple(Path(p) for p in pair) if pair else (part_paths(path) if path is not None else None)
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self._output_names = [o.name for o in self.session.get_outputs()]
        if self.info is None:
            meta = self.session.get_modelmeta().custom_metadata_map
            if ONNX_METADATA_KEY in meta:
                self.info = ModelInfo.from_dict(json.loads(meta[ONNX_METADATA_KEY]), source=f"{path} metadata")

    @property
    def can_skip_absent(self) -> bool:
        """The skip-absent pair `export` wrote beside this graph is there and was made with it (same
        embedded model info: source model, precision); see :func:`part_paths`."""
        if self.pair is None or not all(p.is_file() for p in self.pair):
            return False
        if self._parts is None:
            own = self.session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
            parts = tuple(_session(p, *self._session_args) for p in self.pair)
            if any(s.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY) != own for s in parts):
                return False   # a pair left from another export
            self._parts = parts
        return True

    @property
    def seg_channels(self) -> int:
        dim = self.session.get_outputs()[self.output_names.index("seg")].shape[-1]
        return dim if isinstance(dim, int) else 1

    def _part_sessions(self):
        if not self.can_skip_absent:
            raise no_pair_error(self.path, self.pair, "onnx")
        return self._parts

    def encode(self, batch):
        encoder = self._part_sessions()[0]
        names = [o.name for o in encoder.get_outputs()]
        return encoder_outputs(zip(names, encoder.run(None, {encoder.get_inputs()[0].name: batch})))

    def decode(self, features):
        decoder = self._part_sessions()[1]
        feed = {f"feature_{i}": np.ascontiguousarray(f) for i, f in enumerate(features)}
        return decoder.run(["seg"], feed)[0]

    def _run(self, batch):
        return dict(zip(self.output_names, self.session.run(None, {self._input_name: batch})))
