"""An `.onnx` graph with ONNX Runtime; the graph's metadata carries the ModelInfo when no sidecar does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._extras import require
from ..modelinfo import ModelInfo, PairIdentity
from ..output_names import SEG
from .base import Runtime, as_pair, encoder_outputs, part_paths
from .cpu import cpu_info

__all__ = ["OnnxRuntime", "open_session", "embedded_info_json", "ONNX_METADATA_KEY", "part_paths"]

#: metadata key of the ModelInfo JSON embedded in exported ONNX graphs
ONNX_METADATA_KEY = "unet3plus_info"


def open_session(path, threads: int | None = None, providers: list[str] | None = None):
    """An ONNX Runtime session on every core this process may use (ORT's default counts physical
    cores: 1 of 2 vCPUs here), CUDA first when present; export calibrates with it too."""
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or cpu_info().cores)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    available = ort.get_available_providers()
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def embedded_info_json(session) -> str | None:
    """The ModelInfo JSON an exported graph carries in its metadata, or None."""
    return session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)


class OnnxRuntime(Runtime):
    """An `.onnx` graph with ONNX Runtime (CUDA/TensorRT providers when installed, else CPU)."""

    kind = "onnxruntime"
    suffixes = (".onnx",)
    pair_target = "onnx"

    def __init__(
        self,
        path,
        info: ModelInfo | None = None,
        providers: list[str] | None = None,
        threads: int | None = None,
        pair: tuple | None = None,
    ):
        super().__init__(path, info)
        self._session_args = (threads, providers)
        self.session = open_session(path, threads, providers)
        #: the skip-absent pair (default: beside the graph, :func:`part_paths`)
        self.pair = as_pair(pair) if pair else (part_paths(path) if path is not None else None)
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._embedded = embedded_info_json(self.session)
        if self.info is None and self._embedded is not None:
            self.info = ModelInfo.from_dict(json.loads(self._embedded), source=f"{path} metadata")

    def pair_identity(self) -> PairIdentity | None:
        """The recorded identity (the info given, else the graph's own metadata). ONNX exports made
        before the record tied their parts by embedding the graph's own info: such a pair is taken
        as it is when every part's embedded info equals the graph's."""
        identity = super().pair_identity()
        if identity is None and self._embedded is not None:
            source = f"{self.path} metadata"
            record = ModelInfo.from_dict(json.loads(self._embedded), source=source).export_record(source)
            identity = record.pair if record is not None else None
            if (
                identity is None
                and self.pair is not None
                and all(embedded_info_json(self._open_part(p)) == self._embedded for p in self.pair)
            ):
                identity = PairIdentity.of(self.pair)
        return identity

    def _open_part(self, path: Path):
        return open_session(path, *self._session_args)

    @property
    def seg_channels(self) -> int:
        dim = self.session.get_outputs()[self.output_names.index(SEG)].shape[-1]
        return dim if isinstance(dim, int) else 1

    def encode(self, batch):
        encoder = self.pair_parts()[0]
        names = [o.name for o in encoder.get_outputs()]
        return encoder_outputs(zip(names, encoder.run(None, {encoder.get_inputs()[0].name: batch})))

    def decode(self, features):
        decoder = self.pair_parts()[1]
        feed = {f"feature_{i}": np.ascontiguousarray(f) for i, f in enumerate(features)}
        return decoder.run([SEG], feed)[0]

    def _run(self, batch):
        return dict(zip(self.output_names, self.session.run(None, {self._input_name: batch})))
