"""The resolved training configuration: every setting of a run in one dataclass.

Sources, weakest first: the dataclass defaults, a config file (``--config run.yaml`` or ``.json``),
then the flags given explicitly on the command line. The result is checked (:meth:`TrainConfig.validate`)
and saved beside the checkpoints as ``config.yaml`` so a run can be resumed or reproduced.
Unknown keys in a file and bad values are errors that name the file / flag and the problem.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..data.preprocess import RESIZE_MODES
from ..modelinfo import atomic_write_text

CONFIG_NAME = "config.yaml"
LR_SCHEDULES = ("cosine", "constant", "exponential")
STRATEGY_KINDS = ("auto", "mirrored", "multiworker", "default")

#: fields that define the network: a resumed run must not change them
BUILD_FIELDS = ("task", "image_size", "context", "architecture", "backbone", "weights", "filters",
                "cat_channels", "deep_supervision", "cgm", "decoder", "cgm_dropout", "freeze_backbone",
                "mixed_precision")


@dataclass
class TrainConfig:
    """Every setting of a training run (see ``unet3plus train --help`` for each flag)."""

    # data
    data_dir: str | None = None
    layout: str = "auto"
    task: str = "liver"
    out_dir: str = "runs/unet3plus"
    image_size: int = 320
    context: int = 1
    hu_window: tuple[float, float] | None = None
    resize_mode: str = RESIZE_MODES[0]
    negative_fraction: float = 0.1
    augment: bool = True
    cache_dir: str | None = None
    cache_dtype: str = "float16"
    n_test: int | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    max_val_cases: int | None = None
    # model (keras_unet3plus.build)
    architecture: str = "unet3plus"
    backbone: str = "unet"
    weights: str | None = None
    filters: tuple[int, ...] = (64, 128, 256, 512, 1024)
    cat_channels: int = 64
    deep_supervision: bool = True
    cgm: bool = True
    decoder: str = "paper"
    cgm_dropout: float = 0.5
    freeze_backbone: bool = False
    bn_momentum: float | None = None
    # loss (keras_unet3plus.losses.for_model)
    focal_weight: float = 1.0
    ms_ssim_weight: float = 1.0
    iou_weight: float = 1.0
    side_weight: float = 1.0
    cls_weight: float = 1.0
    # optimisation
    epochs: int = 100
    batch_size: int = 8
    steps_per_epoch: int | None = None
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.01
    clipnorm: float | None = 1.0
    mixed_precision: bool = False
    jit_compile: bool = False
    fused_decoder: bool = True
    seed: int = 0
    # validation, stopping, logging
    val_every: int = 1
    val_batch_size: int = 8
    patience: int | None = 20
    min_delta: float = 0.0
    max_minutes: float | None = None
    keep_checkpoints: int = 3
    checkpoint_every_steps: int | None = None
    resume: bool = True
    strategy: str = "auto"
    devices: tuple[str, ...] | None = None
    verbose: int = 1

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_sources(cls, file: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None,
                     base: Mapping[str, Any] | None = None) -> "TrainConfig":
        """Defaults <- ``base`` (e.g. a recipe's preset) <- ``file`` <- ``overrides`` (explicit flags)."""
        values: dict[str, Any] = {}
        if base:
            values.update(_check_keys(base, "<preset>"))
        if file is not None:
            values.update(load_file(file))
        if overrides:
            values.update(_check_keys(overrides, "<flags>"))
        cfg = cls(**{k: _coerce(k, v, file) for k, v in values.items()})
        cfg.validate()
        return cfg

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the setting for any value that cannot work."""
        def bad(name: str, why: str) -> None:
            raise ValueError(f"invalid training setting {name}={getattr(self, name)!r}: {why}")

        from ..data.tasks import TASKS
        if str(self.task).lower() not in TASKS:
            bad("task", f"choose one of {sorted(k for k in TASKS if k != 'liver_tumor')}")
        if self.layout not in ("auto", "lits", "msd", "nnunet", "folders"):
            bad("layout", "choose auto, lits, msd, nnunet or folders")
        for name in ("image_size", "epochs", "batch_size", "val_every", "val_batch_size", "keep_checkpoints",
                     "cat_channels"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        if self.context < 0:
            bad("context", "must be >= 0 (1 = previous, current and next slice)")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            bad("checkpoint_every_steps", "must be a positive integer or None (checkpoint at epoch ends only)")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            bad("steps_per_epoch", "must be a positive integer or None (= one pass over the data)")
        if not self.learning_rate > 0:
            bad("learning_rate", "must be > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            bad("lr_schedule", f"choose one of {LR_SCHEDULES}")
        if not 0 <= self.min_lr_ratio <= 1:
            bad("min_lr_ratio", "must be in [0, 1]")
        if self.warmup_epochs < 0:
            bad("warmup_epochs", "must be >= 0")
        if self.clipnorm is not None and not self.clipnorm > 0:
            bad("clipnorm", "must be > 0 or None (no clipping)")
        if not 0 <= self.negative_fraction < 1:
            bad("negative_fraction", "must be in [0, 1)")
        if not 0 <= self.val_fraction < 1:
            bad("val_fraction", "must be in [0, 1)")
        if self.patience is not None and self.patience < 1:
            bad("patience", "must be >= 1 or None (no early stopping)")
        if self.max_minutes is not None and not self.max_minutes > 0:
            bad("max_minutes", "must be > 0 or None")
        if self.strategy not in STRATEGY_KINDS:
            bad("strategy", f"choose one of {STRATEGY_KINDS}")
        if len(self.filters) != 5 or any(int(f) < 1 for f in self.filters):
            bad("filters", "must be 5 positive integers (encoder widths E1..E5)")
        if self.bn_momentum is not None and not 0 <= self.bn_momentum < 1:
            bad("bn_momentum", "must be in [0, 1) or None (keep the model's, 0.99)")
        if self.cache_dtype not in ("float16", "uint8"):
            bad("cache_dtype", "choose float16 (within 2.5e-4) or uint8 (half the disk, 1/255 of the HU window)")
        if self.resize_mode not in RESIZE_MODES:
            bad("resize_mode", f"choose one of {', '.join(RESIZE_MODES)}")
        if self.hu_window is not None and (len(self.hu_window) != 2 or not self.hu_window[0] < self.hu_window[1]):
            bad("hu_window", "must be two numbers LOW HIGH with LOW < HIGH")
        for name in ("focal_weight", "ms_ssim_weight", "iou_weight", "side_weight", "cls_weight"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        return self

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def save(self, folder: str | os.PathLike, name: str = CONFIG_NAME) -> Path:
        """Write the resolved configuration (YAML, or JSON for a ``.json`` name) atomically."""
        path = Path(folder) / name
        data = self.to_dict()
        if path.suffix == ".json":
            text = json.dumps(data, indent=2)
        else:
            import yaml
            text = "# resolved keras-unet3plus training configuration (defaults <- config file <- flags)\n"
            text += yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        atomic_write_text(path, text)
        return path

    def build_kwargs(self, num_classes: int) -> dict[str, Any]:
        """Keyword arguments for :func:`keras_unet3plus.build` (also stored in the model sidecar)."""
        return dict(input_shape=(self.image_size, self.image_size, 2 * self.context + 1), num_classes=num_classes,
                    architecture=self.architecture, backbone=self.backbone, weights=self.weights,
                    filters=tuple(int(f) for f in self.filters), cat_channels=self.cat_channels,
                    deep_supervision=self.deep_supervision, cgm=self.cgm, decoder=self.decoder,
                    cgm_dropout=self.cgm_dropout, freeze_backbone=self.freeze_backbone)

    def loss_kwargs(self) -> dict[str, float]:
        """Keyword arguments for :func:`keras_unet3plus.losses.for_model`."""
        return dict(focal_weight=self.focal_weight, ms_ssim_weight=self.ms_ssim_weight,
                    iou_weight=self.iou_weight, side_weights=self.side_weight, cls_weight=self.cls_weight)

    def preprocess(self):
        """The :class:`keras_unet3plus.data.PreprocessConfig` of this run (task window filled in)."""
        from ..data.preprocess import PreprocessConfig
        cfg = PreprocessConfig(hu_window=tuple(self.hu_window) if self.hu_window else None,
                               image_size=self.image_size, resize_mode=self.resize_mode, context=self.context)
        return cfg.for_task(self.task)


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON config file; unknown keys are an error naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file '{path}' not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError
        raise ValueError(f"config file '{path}' cannot be parsed: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file '{path}' must hold a mapping of setting: value, got {type(data).__name__}")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    return _check_keys(data, str(path))


def _check_keys(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    known = set(TrainConfig.field_names())
    for key in values:
        if key not in known:
            import difflib
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"{source}: unknown setting '{key}'{hint}; known settings: {', '.join(sorted(known))}")
    return dict(values)



def _coerce(name: str, value: Any, source: Any) -> Any:
    """Turn file / flag values into the field's type, with an error naming the setting."""
    if value is None:
        return None
    default = TrainConfig.__dataclass_fields__[name].default
    where = f" in config file '{source}'" if source is not None else ""
    try:
        if name in ("filters",):
            return tuple(int(v) for v in value)
        if name in ("hu_window",):
            return tuple(float(v) for v in value)
        if name == "devices":
            return tuple(str(v) for v in ([value] if isinstance(value, str) else value))
        if isinstance(default, bool):
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int) or name in ("n_test", "max_val_cases", "steps_per_epoch", "patience",
                                                 "checkpoint_every_steps"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float) or name in ("clipnorm", "max_minutes", "bn_momentum"):
            return float(value)
        if isinstance(default, str) or name in ("data_dir", "cache_dir", "weights"):
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"setting '{name}'{where}: cannot use {value!r} "
                         f"(expected {type(default).__name__ if default is not None else 'a value'})") from None
    return value
