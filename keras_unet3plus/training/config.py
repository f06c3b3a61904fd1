"""The resolved training configuration: every setting of a run in one dataclass.

Sources, weakest first: the dataclass defaults, a config file (``--config run.yaml`` or ``.json``),
then the flags given explicitly on the command line. The result is checked (:meth:`TrainConfig.validate`)
and saved beside the checkpoints as ``config.yaml`` so a run can be resumed or reproduced.
Unknown keys in a file and bad values are errors that name the file / flag and the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NoReturn, get_args
from collections.abc import Mapping

from .. import options
from ..data.layout_names import Layout
from ..data.preprocess import RESIZE_MODES, PreprocessConfig, ResizeMode
from ..data.splits import ALL_FOLDS, SPLITS_FILE
from ..modelinfo import atomic_write_text
from ..options import option

CONFIG_NAME = "config.yaml"
LR_SCHEDULES = ("cosine", "constant", "exponential")
STRATEGY_KINDS = ("auto", "mirrored", "multiworker", "default")
#: the dataset layouts training reads (the readers' own list: ``images`` is unlabelled and refused
#: when the cases are found, naming the folder)
LAYOUTS = get_args(Layout)
CACHE_DTYPES = ("float16", "uint8")
DEFAULT_LOSS = "hybrid"

#: fields that define the network: a resumed run must not change them
BUILD_FIELDS = (
    "task",
    "image_size",
    "context",
    "architecture",
    "backbone",
    "weights",
    "filters",
    "cat_channels",
    "deep_supervision",
    "cgm",
    "decoder",
    "cgm_dropout",
    "freeze_backbone",
    "mixed_precision",
)


def _loss_weight(help: str, arg: str) -> Any:
    return option(1.0, help, type=float, min=0, loss_arg=arg)


@dataclass
class TrainConfig:
    """Every setting of a training run: each field's metadata is its flag (type, choices, help),
    its config-file key and its check (see :mod:`keras_unet3plus.options`)."""

    # data
    data_dir: str | None = option(
        None,
        "dataset folder: LiTS download, MSD task folder (e.g. Task09_Spleen), "
        "nnU-Net v2 raw dataset (e.g. Dataset003_Liver) or images/ + labels/",
        none="none; give it here or in --config",
    )
    layout: Layout = option("auto", "dataset layout", choices=LAYOUTS)
    task: str = option("liver", "liver, liver_tumour or spleen")
    out_dir: str = option("runs/unet3plus", "run folder: checkpoints, best.keras, model.keras, logs, config.yaml")
    image_size: int = option(320, "model input size in pixels (paper: 320)", type=int, min=1)
    context: int = option(1, "neighbouring slices on each side (1 = 3-slice input)", type=int, min=0)
    hu_window: tuple[float, float] | None = option(
        None, "HU window LOW HIGH", type=float, nargs=2, metavar=("LOW", "HIGH"), none="the task's"
    )
    resize_mode: ResizeMode = option(
        RESIZE_MODES[0],
        "how slices become the square input: pad (keep the aspect ratio: "
        "pad to a square with air, then resize), resize (stretch) or crop",
        choices=RESIZE_MODES,
    )
    negative_fraction: float = option(0.1, "share of organ-free slices per epoch (the CGM needs some)", type=float)
    augment: bool = option(True, "random rotation / scale / shift / intensity augmentation", type=bool)
    cache_dir: str | None = option(
        None,
        "cache preprocessed slices here (memory-mapped .npy; faster epochs); its "
        "size is checked against the free disk before anything is built",
        none="no cache",
    )
    cache_dtype: str = option(
        "float16",
        "cached image type: float16, or uint8 (half the disk; the windowed value "
        "in 1/255 steps of the HU window, 1.8 HU for the liver's)",
        choices=CACHE_DTYPES,
    )
    n_test: int | None = option(
        None,
        "held-out test cases",
        type=int,
        min=0,
        zero_is_none=False,
        none="28 of 131 for LiTS, same share otherwise",
    )
    val_fraction: float = option(0.1, "share of the remaining cases used for validation", type=float)
    split_seed: int = option(0, "seed of the case split", type=int)
    folds: int | None = option(
        None,
        "cross-validation folds (nnU-Net: 5): the cases left after the test set are "
        "cut into this many held-out parts, saved once as splits_file and reused by every "
        "fold",
        type=int,
        min=2,
        none="no cross-validation (the val_fraction split)",
    )
    fold: str | None = option(
        None,
        "the fold this run trains: 0..folds-1 (its held-out cases validate), or all "
        "(every case of the folds trains, none held out)",
        none="no cross-validation",
    )
    splits_file: str | None = option(
        None,
        "the folds table, nnU-Net's splits_final.json form (a list of "
        "{train: [ids], val: [ids]}): read if it exists, so a split written by hand "
        "is respected; else made from split_seed and saved there",
        none="splits_final.json in the parent of out_dir",
    )
    max_val_cases: int | None = option(None, "validate on at most this many cases", type=int, min=1, none="all")
    # model (keras_unet3plus.build)
    architecture: str = option("unet3plus", "unet3plus, unet or unet++")
    backbone: str = option("unet", "unet (plain paper encoder), resnet101, vgg16, ...")
    weights: str | None = option(None, "encoder weights: imagenet (local Keras cache) or a file", none="random")
    filters: tuple[int, ...] = option(
        (64, 128, 256, 512, 1024), "encoder widths E1..E5", type=int, nargs=5, metavar="N", min=1
    )
    cat_channels: int = option(64, "channels per full-scale skip branch (paper 64)", type=int, min=1)
    deep_supervision: bool = option(True, "full-scale deep supervision (side outputs)", type=bool)
    cgm: bool = option(True, "classification-guided module", type=bool)
    decoder: str = option("paper", "paper or efficient")
    cgm_dropout: float = option(0.5, "dropout of the CGM head", type=float, min=0)
    freeze_backbone: bool = option(False, "freeze a pretrained encoder", type=bool)
    bn_momentum: float | None = option(
        None, "BatchNorm moving-average momentum (0.9 suits short runs)", type=float, none="the model's 0.99"
    )
    # loss (a registered loss of keras_unet3plus.losses, built by Trainer.build_loss)
    loss: str = option(
        DEFAULT_LOSS,
        "registered loss (keras_unet3plus.losses.LOSSES): hybrid = focal + MS-SSIM "
        "+ IoU on seg and the side outputs (the paper's), dice_ce = soft Dice + cross-entropy "
        "(nnU-Net's); BCE on the CGM output with either",
    )
    focal_weight: float = _loss_weight("hybrid loss: focal term weight", "focal_weight")
    ms_ssim_weight: float = _loss_weight("hybrid loss: MS-SSIM term weight", "ms_ssim_weight")
    iou_weight: float = _loss_weight("hybrid loss: IoU term weight", "iou_weight")
    side_weight: float = _loss_weight("loss weight of each deep-supervision side output", "side_weights")
    cls_weight: float = _loss_weight("loss weight of the CGM output", "cls_weight")
    # optimisation
    epochs: int = option(100, "number of epochs", type=int, min=1)
    batch_size: int = option(8, "global batch size (split over replicas)", type=int, min=1)
    steps_per_epoch: int | None = option(
        None, "steps per epoch", type=int, min=1, none="one pass over the selected slices"
    )
    learning_rate: float = option(1e-3, "Adam peak learning rate", type=float)
    lr_schedule: str = option("cosine", "learning-rate schedule", choices=LR_SCHEDULES)
    warmup_epochs: float = option(0.0, "linear learning-rate warm-up (epochs, may be fractional)", type=float, min=0)
    min_lr_ratio: float = option(0.01, "final learning rate as a fraction of the peak", type=float)
    clipnorm: float | None = option(1.0, "clip gradients by their global norm", type=float, none="no clipping")
    mixed_precision: bool = option(False, "mixed_float16 compute (GPUs with tensor cores)", type=bool)
    jit_compile: bool = option(False, "XLA-compile the forward/backward pass", type=bool)
    fused_decoder: bool = option(
        True,
        "train the paper decoder's upsample-then-convolve pairs in their exact "
        "cheaper form (same model and gradients, about half the step time; "
        "--no-fused-decoder: as built)",
        type=bool,
    )
    seed: int = option(0, "random seed (weights init, data order, augmentation)", type=int)
    # validation, stopping, logging
    val_every: int = option(1, "validate every N epochs", type=int, min=1)
    val_batch_size: int = option(8, "slices per batch during validation", type=int, min=1)
    patience: int | None = option(20, "early stopping: validations without val Dice gain", type=int, min=1, none="off")
    min_delta: float = option(0.0, "early stopping: minimum val Dice gain", type=float)
    max_minutes: float | None = option(
        None, "wall-clock budget: stop (after validating and checkpointing) when spent", type=float, none="no budget"
    )
    keep_checkpoints: int = option(3, "checkpoints kept on disk", type=int, min=1)
    checkpoint_every_steps: int | None = option(
        None,
        "also checkpoint every N optimizer steps inside an epoch (resume is exact either way)",
        type=int,
        min=1,
        none="at epoch ends only",
    )
    resume: bool = option(True, "resume from the run folder's last checkpoint (--no-resume starts over)", type=bool)
    strategy: str = option("auto", "tf.distribute strategy", choices=STRATEGY_KINDS)
    devices: tuple[str, ...] | None = option(
        None, "devices for MirroredStrategy (e.g. /gpu:0 /gpu:1)", nargs="+", metavar="DEVICE", none="all"
    )
    verbose: int = option(1, "0 quiet, 1 progress", type=int, min=0)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_sources(
        cls,
        file: str | os.PathLike | None = None,
        overrides: Mapping[str, Any] | None = None,
        base: Mapping[str, Any] | None = None,
    ) -> TrainConfig:
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

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the setting for any value that cannot work: the choices and
        bounds the fields declare, then the ranges that need more than a bound."""

        def bad(name: str, why: str) -> NoReturn:
            raise ValueError(f"invalid training setting {name}={getattr(self, name)!r}: {why}")

        for name, why in options.check(self):
            bad(name, why)
        from ..data.tasks import TASKS

        if str(self.task).lower() not in TASKS:
            bad("task", f"choose one of {sorted(k for k in TASKS if k != 'liver_tumor')}")
        if not self.learning_rate > 0:
            bad("learning_rate", "must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            bad("min_lr_ratio", "must be in [0, 1]")
        if self.clipnorm is not None and not self.clipnorm > 0:
            bad("clipnorm", "must be > 0 or None (no clipping)")
        for name in ("negative_fraction", "val_fraction"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, "must be in [0, 1)")
        if self.max_minutes is not None and not self.max_minutes > 0:
            bad("max_minutes", "must be > 0 or None")
        if len(self.filters) != 5:
            bad("filters", "must be 5 positive integers (encoder widths E1..E5)")
        if self.bn_momentum is not None and not 0 <= self.bn_momentum < 1:
            bad("bn_momentum", "must be in [0, 1) or None (keep the model's, 0.99)")
        if self.fold is not None:
            if self.folds is None:
                bad("fold", "needs folds (--folds N)")
            if str(self.fold) != ALL_FOLDS and not (str(self.fold).isdigit() and int(self.fold) < self.folds):
                bad("fold", f"must be 0..{self.folds - 1} or {ALL_FOLDS}")
        if self.hu_window is not None and (len(self.hu_window) != 2 or not self.hu_window[0] < self.hu_window[1]):
            bad("hu_window", "must be two numbers LOW HIGH with LOW < HIGH")
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

    def splits_path(self) -> Path:
        """Where the folds table is read or saved: ``splits_file``, else beside the fold runs."""
        return Path(self.splits_file) if self.splits_file else Path(self.out_dir).parent / SPLITS_FILE

    def build_kwargs(self, num_classes: int) -> dict[str, Any]:
        """Keyword arguments for :func:`keras_unet3plus.build` (also stored in the model sidecar)."""
        return dict(
            input_shape=(self.image_size, self.image_size, 2 * self.context + 1),
            num_classes=num_classes,
            architecture=self.architecture,
            backbone=self.backbone,
            weights=self.weights,
            filters=tuple(int(f) for f in self.filters),
            cat_channels=self.cat_channels,
            deep_supervision=self.deep_supervision,
            cgm=self.cgm,
            decoder=self.decoder,
            cgm_dropout=self.cgm_dropout,
            freeze_backbone=self.freeze_backbone,
        )

    def loss_kwargs(self) -> dict[str, float]:
        """Keyword arguments of the registered loss (:func:`keras_unet3plus.losses.for_model` for
        ``hybrid``): the fields that declare a ``loss_arg``."""
        return {f.metadata["loss_arg"]: getattr(self, f.name) for f in fields(self) if "loss_arg" in f.metadata}

    def preprocess(self) -> PreprocessConfig:
        """The :class:`keras_unet3plus.data.PreprocessConfig` of this run (task window filled in)."""
        window = None
        if self.hu_window:  # a list when read from a config file
            low, high = self.hu_window
            window = (low, high)
        cfg = PreprocessConfig(
            hu_window=window,
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            context=self.context,
        )
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
    """A file / flag value in the field's declared type, with an error naming the setting."""
    return options.coerce(TrainConfig, name, value, f"config file '{source}'" if source is not None else "")
