"""The interface every runtime keeps, so the predictor and the export check never ask which one runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from ..modelinfo import PART_NAMES, ExportRecord, ModelInfo, PairIdentity
from ..output_names import CLS, SEG

# the skip-absent pair `export` writes beside ``<stem>.onnx`` / ``<stem>.tflite`` of a model with a
# CGM (PART_NAMES): the graph up to the CGM (``image -> feature_0.., cls``) and the decoder
# (``feature_0.. -> seg``); the graph's export record holds their identity (`PairIdentity`)

#: how `describe()` names each runtime kind to a user
RUNTIME_LABELS = {
    "keras": "Keras",
    "onnxruntime": "ONNX Runtime",
    "litert": "LiteRT",
    "savedmodel": "TensorFlow SavedModel",
    "tensorrt": "TensorRT",
}


def part_paths(artefact) -> tuple[Path, Path]:
    """``(<stem>.encoder<suffix>, <stem>.decoder<suffix>)`` beside the exported graph ``artefact``."""
    artefact = Path(artefact)
    return as_pair(artefact.with_name(f"{artefact.stem}.{part}{artefact.suffix}") for part in PART_NAMES)


def as_pair(paths) -> tuple[Path, Path]:
    """A skip-absent pair's two paths (encoder, decoder) as Paths; a ValueError unless there are two."""
    encoder, decoder = (Path(p) for p in paths)
    return encoder, decoder


def no_pair_error(artefact, pair, target: str) -> ValueError:
    """What ``--skip-absent`` says when an export has no current pair beside it."""
    names = ", ".join(Path(p).name for p in pair or ())
    return ValueError(
        f"{artefact}: no current skip-absent pair beside it ({names}); export the model again "
        f"with `unet3plus export MODEL --to {target}` (models with a CGM get one)"
    )


def foreign_pair_error(artefact, part: str, path, target: str) -> ValueError:
    """What a part of another export (or one edited since) gets: one line naming both files."""
    return ValueError(
        f"{path}: not the skip-absent {part} of {artefact} (its SHA-256 differs from the one "
        f"recorded when {Path(artefact).name} was exported); export the model again with "
        f"`unet3plus export MODEL --to {target}`"
    )


def encoder_outputs(outs: dict) -> tuple[list, Any]:
    """The pair's encoder outputs ``{feature_0.., cls}`` as ``([feature_0, feature_1, ..], cls)``."""
    outs = dict(outs)
    cls = outs.pop(CLS)
    return [outs[n] for n in sorted(outs, key=lambda n: int(n.rsplit("_", 1)[1]))], cls


class Runtime:
    """A model ready to run: `.info` (its ModelInfo, or None), `.path`, `.name`, `.input_shape`.

    Subclasses implement `_run(batch) -> {name: array}` and set `input_shape` / `_output_names`.

    - `predict(batch) -> seg` and `predict_all(batch) -> {name: array}`: the artefact's outputs
      (deploy form: `seg` gated in the graph); what the export check compares.
    - `segment(batch) -> (seg, cls or None)`: what the inference predictor runs. `cls` is returned
      only when the gate is not in the graph (a Keras model in training form), so the predictor
      applies it (or not, `gate=False`).
    """

    kind = "base"
    #: the file suffixes `load_runtime` opens with this class (a folder format has none)
    suffixes: tuple[str, ...] = ()
    #: `seg` is already a label map (argmax in the graph): resized nearest-neighbour, not bilinearly
    labels_output = False

    def __init__(self, path: str | os.PathLike | None, info: ModelInfo | None):
        self.path = Path(path) if path is not None else None
        self.info = info
        self.input_shape: tuple = ()
        self._output_names: list[str] = []

    @property
    def output_names(self) -> list[str]:
        """The artefact's output names, `seg` first where the format orders them."""
        return self._output_names

    @property
    def name(self) -> str:
        """How errors name the model."""
        return str(self.path) if self.path is not None else type(self).__name__

    @property
    def image_size(self) -> int | None:
        """The square input size, or None when the graph does not fix it."""
        shape = tuple(self.input_shape)
        if len(shape) == 4 and isinstance(shape[1], int) and shape[1] == shape[2]:
            return shape[1]
        return None

    @property
    def channels(self) -> int | None:
        shape = tuple(self.input_shape)
        return shape[3] if len(shape) == 4 and isinstance(shape[3], int) else None

    @property
    def num_classes(self) -> int:
        return int(self.info.num_classes) if self.info is not None else 1

    @property
    def export_record(self) -> ExportRecord | None:
        """What `unet3plus export` recorded about this artefact in its info (None for a model file)."""
        return self.info.export_record(self.name) if self.info is not None else None

    @property
    def compute_precision(self) -> str:
        """What the artefact computes in: the one its export recorded in the info (an export's
        precision is fixed when it is made; a Keras runtime returns the precision it was opened with)."""
        record = self.export_record
        return record.precision if record is not None else "fp32"

    def describe(self) -> str:
        """One line for the user: which runtime, in which precision, on which file."""
        label = RUNTIME_LABELS.get(self.kind, self.kind)
        return f"{label} {self.compute_precision} ({self.path.name if self.path is not None else self.name})"

    def seg_is_labels(self, seg_channels: int) -> bool:
        """True when `seg` holds labels rather than probabilities (a thresholded multi-class graph)."""
        return self.labels_output or (self.num_classes > 1 and seg_channels == 1)

    def _check(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4:
            raise ValueError(f"{self.kind} runtime '{self.path}': input must be (B, H, W, C), got shape {batch.shape}")
        want = tuple(self.input_shape[1:])
        if want and any(w is not None and w != g for w, g in zip(want, batch.shape[1:])):
            raise ValueError(
                f"{self.kind} runtime '{self.path}': input must be (B, {', '.join(map(str, want))}), "
                f"got {batch.shape}; preprocess with the model's PreprocessConfig"
            )
        return np.ascontiguousarray(batch, dtype=np.float32)

    def predict_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the artefact, as float32 numpy arrays."""
        out = self._run(self._check(batch))
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The (gated) segmentation output `seg`."""
        return self.predict_all(batch)[SEG]

    def segment(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`(seg (B, H, W, C) float32, None)`: exported graphs carry their gate."""
        seg = np.asarray(self.predict(batch), dtype=np.float32)
        return (seg[..., None] if seg.ndim == 3 else seg), None

    #: the skip-absent pair beside the artefact (None: its format has none); `--to` names the
    #: export target that writes it (what the error says to run)
    pair: tuple[Path, Path] | None = None
    pair_target = ""
    _opened_pair: tuple | None = None

    @property
    def can_skip_absent(self) -> bool:
        """True when the runtime can run the part up to the CGM and the decoder separately
        (:meth:`encode` / :meth:`decode`), so ``--skip-absent`` can skip the decoder."""
        try:
            self.pair_parts()
        except ValueError:
            return False
        return True

    def pair_parts(self) -> tuple:
        """The opened parts of the skip-absent pair, once they are checked to be this export's (the
        `PairIdentity` its export recorded: one check for every target); else a ValueError in one
        line naming the artefact and the part that is missing or foreign."""
        if self._opened_pair is not None:
            return self._opened_pair
        if self.pair is None or not all(Path(p).is_file() for p in self.pair):
            raise no_pair_error(self.path, self.pair, self.pair_target)
        identity = self.pair_identity()
        if identity is None:
            raise no_pair_error(self.path, self.pair, self.pair_target)
        foreign = identity.mismatch(self.pair)
        if foreign is not None:
            raise foreign_pair_error(self.path, *foreign, self.pair_target)
        self._opened_pair = tuple(self._open_part(Path(p)) for p in self.pair)
        return self._opened_pair

    def pair_identity(self) -> PairIdentity | None:
        """The pair's identity as the artefact's export recorded it."""
        record = self.export_record
        return record.pair if record is not None else None

    def _open_part(self, path: Path):  # pragma: no cover - formats with a pair override it
        raise NotImplementedError(f"{self.kind} runtime '{self.name}' has no skip-absent pair")

    def encode(self, batch: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:  # pragma: no cover
        """``(features, cls)``: everything the CGM needs, and what the decoder reads from it."""
        raise NotImplementedError(f"{self.kind} runtime '{self.name}' cannot run its decoder on its own")

    def decode(self, features: list[np.ndarray]) -> np.ndarray:  # pragma: no cover
        """``seg`` of the slices whose ``features`` are given."""
        raise NotImplementedError(f"{self.kind} runtime '{self.name}' cannot run its decoder on its own")

    def segment_present(self, batch: np.ndarray, present: np.ndarray | None = None):
        """``(seg, cls)`` like :meth:`segment`, but the decoder runs only on the slices the CGM calls
        present (``cls[:, 1] > cls[:, 0]``, the in-graph gate's rule) or on the rows ``present``
        selects; the others get an all-zero ``seg``. The masks equal the gated ones: the work
        ``--skip-absent`` saves is the decoder of organ-free slices."""
        batch = self._check(batch)
        features, cls = self.encode(batch)
        cls = np.asarray(cls, dtype=np.float32)
        rows = np.flatnonzero(cls[:, 1] > cls[:, 0] if present is None else present)
        seg = None
        if len(rows):
            decoded = np.asarray(self.decode([np.asarray(f)[rows] for f in features]), dtype=np.float32)
            decoded = decoded[..., None] if decoded.ndim == 3 else decoded
            seg = np.zeros((len(batch), *decoded.shape[1:]), np.float32)
            seg[rows] = decoded
        else:
            seg = np.zeros((len(batch), *batch.shape[1:3], self.seg_channels), np.float32)
        return seg, cls

    @property
    def seg_channels(self) -> int:
        """Channels of ``seg`` (what an all-absent batch is filled with)."""
        return 1

    def _run(self, batch: np.ndarray) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.path} input={self.input_shape} outputs={self.output_names}>"


class FunctionRuntime(Runtime):
    """A plain function as a runtime: `fn(batch) -> seg` or `-> (seg, cls or None)`.

    For models that are not artefacts (tests with controlled outputs, objects with a `predict`
    method): the predictor gates with `cls` when the function returns one.
    """

    kind = "function"

    def __init__(
        self,
        fn: Callable[[np.ndarray], Any],
        image_size: int | None = None,
        channels: int | None = None,
        name: str = "function",
        info: ModelInfo | None = None,
    ):
        super().__init__(None, info)
        self.fn = fn
        self._name = name
        self.input_shape = (None, image_size, image_size, channels)
        self._output_names = [SEG]

    @classmethod
    def wrap(cls, obj, info: ModelInfo | None = None) -> FunctionRuntime:
        """A runtime-like object (``predict``, ``input_shape``, maybe ``info`` / ``path``) as a Runtime."""
        name = str(getattr(obj, "path", None) or getattr(obj, "name", None) or type(obj).__name__)
        rt = cls(obj.predict, name=name, info=info or getattr(obj, "info", None))
        rt.input_shape = tuple(getattr(obj, "input_shape", ()) or ())
        return rt

    @property
    def name(self) -> str:
        return self._name

    def segment(self, batch):
        out = self.fn(batch)
        seg, cls = out if isinstance(out, tuple) else (out, None)
        if isinstance(seg, dict):  # a runtime-like object's dict of outputs
            seg, cls = seg[SEG], seg.get(CLS)
        seg = np.asarray(seg, dtype=np.float32)
        return (seg[..., None] if seg.ndim == 3 else seg), (None if cls is None else np.asarray(cls))

    def _run(self, batch):
        return {"seg": self.segment(batch)[0]}
