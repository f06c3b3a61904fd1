"""The sidecar that travels with every saved or exported model: task, preprocessing, build settings.

Inference must preprocess exactly as training did, whatever the model file's format, so the trainer
writes this JSON next to `model.keras` and every exporter copies it next to its artefact (ONNX also
embeds it in its metadata). Users never re-type the HU window or input size.

Where it lives: `<file>.unet3plus.json` beside a model file, `<dir>/unet3plus.json` inside a
SavedModel folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

__all__ = ["ModelInfo", "sidecar_path", "save_info", "load_info", "atomic_write_text"]

SIDECAR_SUFFIX = ".unet3plus.json"
SIDECAR_IN_DIR = "unet3plus.json"
FORMAT_VERSION = 1


@dataclass
class ModelInfo:
    """What a model file needs beside its weights to be used correctly."""

    task: str                     # "liver", "liver_tumour", "spleen" (keras_unet3plus.data.get_task)
    preprocess: dict[str, Any]    # keras_unet3plus.data.preprocess.PreprocessConfig.to_dict()
    num_classes: int = 1
    threshold: float = 0.5
    build: dict[str, Any] = field(default_factory=dict)  # keyword arguments given to build()
    extra: dict[str, Any] = field(default_factory=dict)  # free-form: metrics, training run, export notes
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "ModelInfo":
        missing = {"task", "preprocess"} - set(data)
        if missing:
            raise ValueError(f"{source}: model info lacks {sorted(missing)}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def task_default(cls, task: str = "liver", image_size: int = 320, num_classes: int = 1) -> "ModelInfo":
        """The info of a model that came without one: the task's default preprocessing."""
        from .data.preprocess import PreprocessConfig

        cfg = PreprocessConfig(image_size=int(image_size)).for_task(task)
        return cls(task=task, preprocess=cfg.to_dict(), num_classes=int(num_classes))

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
