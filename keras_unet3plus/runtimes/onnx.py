"""An `.onnx` graph with ONNX Runtime; the graph's metadata carries the ModelInfo when no sidecar does."""
from __future__ import annotations

import json

from .._extras import require
from ..modelinfo import ModelInfo
from .base import Runtime
from .cpu import cpu_info

#: metadata key of the ModelInfo JSON embedded in exported ONNX graphs
ONNX_METADATA_KEY = "unet3plus_info"


class OnnxRuntime(Runtime):
    """An `.onnx` graph with ONNX Runtime (CUDA/TensorRT providers when installed, else CPU)."""

    kind = "onnxruntime"

    def __init__(self, path, info: ModelInfo | None = None, providers: list[str] | None = None,
                 threads: int | None = None):
        super().__init__(path, info)
        ort = require("onnxruntime", "onnx")
        opts = ort.SessionOptions()
        # every core this process may use (ORT's default counts physical cores: 1 of 2 vCPUs here)
        opts.intra_op_num_threads = int(threads or cpu_info().cores)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self._output_names = [o.name for o in self.session.get_outputs()]
        if self.info is None:
            meta = self.session.get_modelmeta().custom_metadata_map
            if ONNX_METADATA_KEY in meta:
                self.info = ModelInfo.from_dict(json.loads(meta[ONNX_METADATA_KEY]), source=f"{path} metadata")

    def _run(self, batch):
        return dict(zip(self.output_names, self.session.run(None, {self._input_name: batch})))
