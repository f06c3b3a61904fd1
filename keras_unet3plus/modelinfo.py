"""The sidecar that travels with every saved or exported model: task, preprocessing, build settings.

Inference must preprocess exactly as training did, whatever the model file's format, so the trainer
writes this JSON next to `model.keras` and every exporter copies it next to its artefact (ONNX also
embeds it in its metadata). Users never re-type the HU window or input size.

Where it lives: `<file>.unet3plus.json` beside a model file, `<dir>/unet3plus.json` inside a
SavedModel folder.

An exported artefact's info also holds what its export recorded, under `extra["export"]`: the
typed :class:`ExportRecord` (graph form, source model, the parity and speed check of each file,
the identity of the skip-absent pair). It is read and written here only, so `export` and the
runtimes (`--runtime auto`, `--skip-absent`) share one contract instead of raw JSON keys.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

__all__ = [
    "ModelInfo",
    "sidecar_path",
    "save_info",
    "load_info",
    "atomic_write_text",
    "ExportRecord",
    "ArtefactCheck",
    "ParityRecord",
    "SpeedRecord",
    "SourceRecord",
    "PartRecord",
    "PairIdentity",
    "PART_NAMES",
    "file_sha256",
    "load_export_record",
]

SIDECAR_SUFFIX = ".unet3plus.json"
SIDECAR_IN_DIR = "unet3plus.json"
FORMAT_VERSION = 1


@dataclass
class ModelInfo:
    """What a model file needs beside its weights to be used correctly."""

    task: str  # "liver", "liver_tumour", "spleen" (keras_unet3plus.data.get_task)
    preprocess: dict[str, Any]  # keras_unet3plus.data.preprocess.PreprocessConfig.to_dict()
    num_classes: int = 1
    threshold: float = 0.5
    build: dict[str, Any] = field(default_factory=dict)  # keyword arguments given to build()
    extra: dict[str, Any] = field(default_factory=dict)  # free-form (metrics, training run), but for
    #                                                    "export": the ExportRecord (export_record())
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ModelInfo:
        missing = {"task", "preprocess"} - set(data)
        if missing:
            raise ValueError(f"{source}: model info lacks {sorted(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def task_default(cls, task: str = "liver", image_size: int = 320, num_classes: int = 1) -> ModelInfo:
        """The info of a model that came without one: the task's default preprocessing."""
        from .data.preprocess import PreprocessConfig

        cfg = PreprocessConfig(image_size=int(image_size)).for_task(task)
        return cls(task=task, preprocess=cfg.to_dict(), num_classes=int(num_classes))

    def export_record(self, source: Any = None) -> ExportRecord | None:
        """What `unet3plus export` recorded about this artefact; None for a model that is no export."""
        data = (self.extra or {}).get(EXPORT_KEY)
        return None if data is None else ExportRecord.from_dict(data, source=str(source or "model info"))

    def set_export_record(self, record: ExportRecord) -> None:
        """Store ``record`` as this info's export record (the only writer of ``extra["export"]``)."""
        self.extra = {**(self.extra or {}), EXPORT_KEY: record.to_dict()}

    def preprocess_config(self, source: Any = None):
        """The `PreprocessConfig` inference must use: the saved record, the task's HU window filled in.

        The one place a config is derived from an info, so training, inference, export
        verification and evaluation cannot preprocess differently. `source` names the model in
        the error raised for an invalid record.
        """
        from .data.preprocess import PreprocessConfig

        try:
            cfg = PreprocessConfig.from_dict(self.preprocess)
            return cfg.for_task(self.task) if cfg.hu_window is None else cfg
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"model info of '{source}': invalid preprocessing record ({exc})") from exc


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """Where the info of `model_path` (file or SavedModel folder) is stored."""
    path = Path(model_path)
    if path.is_dir():
        return path / SIDECAR_IN_DIR
    return path.with_name(path.name + SIDECAR_SUFFIX)


def save_info(model_path: str | os.PathLike, info: ModelInfo) -> Path:
    """Write the sidecar for `model_path`; returns its path."""
    target = sidecar_path(model_path)
    atomic_write_text(target, info.to_json())
    return target


def load_info(model_path: str | os.PathLike) -> ModelInfo:
    """Read the sidecar of `model_path`, with an error that says what is missing and why it matters."""
    target = sidecar_path(model_path)
    if not target.is_file():
        raise FileNotFoundError(
            f"'{model_path}' has no model info file '{target}': it records the preprocessing the model was "
            f"trained with. Models saved by `unet3plus train` / exported by `unet3plus export` have one; "
            f"for another model write it with keras_unet3plus.modelinfo.save_info()."
        )
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"model info file '{target}' is unreadable: {exc}") from exc
    return ModelInfo.from_dict(data, source=str(target))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, in sorted order):
    what ties an export to its source model and a skip-absent part to its graph."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# the export record (extra["export"] of an exported artefact's info)
# ---------------------------------------------------------------------------------------------

EXPORT_KEY = "export"
#: the record's key for the skip-absent pair (the key LiteRT exports wrote first)
PAIR_KEY = "skip_absent_pair"
#: the two parts of the skip-absent pair: the graph up to the CGM, then the decoder
PART_NAMES = ("encoder", "decoder")


def _number(data: dict, key: str, source: str, default: float = math.nan) -> float:
    value = data.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: export record field '{key}' is not a number ({value!r})") from None


@dataclass(frozen=True)
class SourceRecord:
    """Which model file an artefact was made from, so a stale export (the model retrained since)
    is never picked by ``--runtime auto``."""

    name: str
    sha256: str

    @classmethod
    def of(cls, model_path: str | os.PathLike) -> SourceRecord:
        return cls(Path(model_path).name, file_sha256(model_path))


@dataclass(frozen=True)
class ParityRecord:
    """How one artefact compared with the Keras model at export (its row of the parity table)."""

    runtime: str
    passed: bool
    dice: float
    max_abs_diff: float


@dataclass(frozen=True)
class SpeedRecord:
    """Seconds per slice of the artefact and of the Keras model, timed side by side at export: a
    ratio that holds on the machine however loaded it was."""

    seconds_per_slice: float
    keras_seconds_per_slice: float
    cpu: str

    @property
    def speedup(self) -> float:
        return self.keras_seconds_per_slice / max(self.seconds_per_slice, 1e-9)


@dataclass(frozen=True)
class ArtefactCheck:
    """The parity and speed records of one exported file (one JSON object: the keys of both)."""

    parity: ParityRecord
    speed: SpeedRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.parity), **(asdict(self.speed) if self.speed is not None else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ArtefactCheck:
        parity = ParityRecord(
            str(data.get("runtime", "?")),
            bool(data.get("passed", False)),
            _number(data, "dice", source),
            _number(data, "max_abs_diff", source),
        )
        speed = None
        if "seconds_per_slice" in data and "keras_seconds_per_slice" in data:
            speed = SpeedRecord(
                _number(data, "seconds_per_slice", source),
                _number(data, "keras_seconds_per_slice", source),
                str(data.get("cpu", "?")),
            )
        return cls(parity, speed)


@dataclass(frozen=True)
class PartRecord:
    """One part of the skip-absent pair: its file name and SHA-256."""

    name: str
    sha256: str


@dataclass(frozen=True)
class PairIdentity:
    """What ties the skip-absent pair to the graph it was exported with, for every target: the
    SHA-256 of each part, recorded in the graph's info, so a part left from another export (or
    edited since) is never run with this graph."""

    encoder: PartRecord
    decoder: PartRecord

    @classmethod
    def of(
        cls, paths: tuple[str | os.PathLike, str | os.PathLike], names: tuple[str, str] | None = None
    ) -> PairIdentity:
        """The identity of the files at ``paths`` (recorded under ``names``, default their own)."""
        encoder, decoder = paths
        first, second = names or (Path(encoder).name, Path(decoder).name)
        return cls(PartRecord(first, file_sha256(encoder)), PartRecord(second, file_sha256(decoder)))

    def mismatch(self, paths: tuple[str | os.PathLike, str | os.PathLike]) -> tuple[str, Path] | None:
        """``(part name, path)`` of the first file that is not the recorded part, else None."""
        for part, path in zip(PART_NAMES, paths):
            if file_sha256(path) != getattr(self, part).sha256:
                return part, Path(path)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {part: asdict(getattr(self, part)) for part in PART_NAMES}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> PairIdentity:
        try:
            return cls(*(PartRecord(str(data[p]["name"]), str(data[p]["sha256"])) for p in PART_NAMES))
        except (KeyError, TypeError):
            raise ValueError(f"{source}: the skip-absent pair record lacks a part's name or SHA-256") from None


@dataclass
class ExportRecord:
    """What `unet3plus export` records about an artefact (JSON keys as written since the first
    exports, so older sidecars read the same)."""

    target: str = "?"
    precision: str = "fp32"
    outputs: str = "deploy"
    threshold_in_graph: float | None = None
    gated: bool = True
    opset: int | None = None  # the ONNX opset (targets made through ONNX)
    source: SourceRecord | None = None
    checks: dict[str, ArtefactCheck] = field(default_factory=dict)  # by artefact file name
    pair: PairIdentity | None = None  # the skip-absent pair written beside the graph

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "target": self.target,
            "precision": self.precision,
            "outputs": self.outputs,
            "threshold_in_graph": self.threshold_in_graph,
            "gated": self.gated,
        }
        if self.opset is not None:
            data["opset"] = self.opset
        if self.source is not None:
            data["source"] = asdict(self.source)
        if self.checks:
            data["checks"] = {name: check.to_dict() for name, check in self.checks.items()}
        if self.pair is not None:
            data[PAIR_KEY] = self.pair.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ExportRecord:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: the export record is not a JSON object")
        src = data.get("source") or None
        return cls(
            target=str(data.get("target", "?")),
            precision=str(data.get("precision", "fp32")),
            outputs=str(data.get("outputs", "deploy")),
            threshold_in_graph=data.get("threshold_in_graph"),
            gated=bool(data.get("gated", True)),
            opset=data.get("opset"),
            source=SourceRecord(str(src.get("name", "?")), str(src.get("sha256", ""))) if src else None,
            checks={str(k): ArtefactCheck.from_dict(v, source) for k, v in (data.get("checks") or {}).items()},
            pair=PairIdentity.from_dict(data[PAIR_KEY], source) if data.get(PAIR_KEY) else None,
        )


def load_export_record(artefact: str | os.PathLike) -> ExportRecord | None:
    """The export record in the sidecar of ``artefact`` (None: no sidecar, or not an export); a
    ValueError naming the sidecar when it cannot be read."""
    target = sidecar_path(artefact)
    if not target.is_file():
        return None
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"model info file '{target}' is unreadable: {exc}") from exc
    export = (data.get("extra") or {}).get(EXPORT_KEY) if isinstance(data, dict) else None
    return None if export is None else ExportRecord.from_dict(export, source=str(target))
