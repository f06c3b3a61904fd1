"""Command-line flags for every :class:`TrainConfig` field, shared by `unet3plus train` and the
recipes (so the CLI and the recipe scripts cannot drift apart)."""
from __future__ import annotations

import argparse

# flag -> (help, argparse extras). Every TrainConfig field has a flag; boolean fields get --x / --no-x.
FLAG_HELP = {
    "data_dir": "dataset folder: LiTS download, MSD task folder (e.g. Task09_Spleen), nnU-Net v2 raw dataset "
                "(e.g. Dataset003_Liver) or images/ + labels/",
    "layout": "dataset layout (auto, lits, msd, nnunet, folders)",
    "task": "liver, liver_tumour or spleen",
    "out_dir": "run folder: checkpoints, best.keras, model.keras, logs, config.yaml",
    "image_size": "model input size in pixels (paper: 320)",
    "context": "neighbouring slices on each side (1 = 3-slice input)",
    "hu_window": "HU window LOW HIGH (default: the task's)",
    "resize_mode": "how slices become the square input: pad (keep the aspect ratio: pad to a square with air, "
                   "then resize; default), resize (stretch) or crop",
    "negative_fraction": "share of organ-free slices per epoch (the CGM needs some)",
    "augment": "random rotation / scale / shift / intensity augmentation",
    "cache_dir": "cache preprocessed slices here (memory-mapped .npy; faster epochs); its size is checked "
                 "against the free disk before anything is built",
    "cache_dtype": "cached image type: float16 (default) or uint8 (half the disk; the windowed value in 1/255 "
                   "steps of the HU window, 1.8 HU for the liver's)",
    "n_test": "held-out test cases (default: 28 of 131 for LiTS, same share otherwise)",
    "val_fraction": "share of the remaining cases used for validation",
    "split_seed": "seed of the case split",
    "max_val_cases": "validate on at most this many cases",
    "architecture": "unet3plus, unet or unet++",
    "backbone": "unet (plain paper encoder), resnet101, vgg16, ...",
    "weights": "encoder weights: imagenet (local Keras cache) or a file",
    "filters": "encoder widths E1..E5",
    "cat_channels": "channels per full-scale skip branch (paper 64)",
    "deep_supervision": "full-scale deep supervision (side outputs)",
    "cgm": "classification-guided module",
    "decoder": "paper or efficient",
    "cgm_dropout": "dropout of the CGM head",
    "freeze_backbone": "freeze a pretrained encoder",
    "bn_momentum": "BatchNorm moving-average momentum (default: the model's 0.99; 0.9 suits short runs)",
    "focal_weight": "hybrid loss: focal term weight",
    "ms_ssim_weight": "hybrid loss: MS-SSIM term weight",
    "iou_weight": "hybrid loss: IoU term weight",
    "side_weight": "loss weight of each deep-supervision side output",
    "cls_weight": "loss weight of the CGM output",
    "epochs": "number of epochs",
    "batch_size": "global batch size (split over replicas)",
    "steps_per_epoch": "steps per epoch (default: one pass over the selected slices)",
    "learning_rate": "Adam peak learning rate",
    "lr_schedule": "cosine, constant or exponential",
    "warmup_epochs": "linear learning-rate warm-up (epochs, may be fractional)",
    "min_lr_ratio": "final learning rate as a fraction of the peak",
    "clipnorm": "clip gradients by their global norm (0 or none: no clipping)",
    "mixed_precision": "mixed_float16 compute (GPUs with tensor cores)",
    "jit_compile": "XLA-compile the forward/backward pass",
    "fused_decoder": "train the paper decoder's upsample-then-convolve pairs in their exact cheaper form "
                     "(same model and gradients, about half the step time; --no-fused-decoder: as built)",
    "seed": "random seed (weights init, data order, augmentation)",
    "val_every": "validate every N epochs",
    "val_batch_size": "slices per batch during validation",
    "patience": "early stopping: validations without val Dice gain (0 or none: off)",
    "min_delta": "early stopping: minimum val Dice gain",
    "max_minutes": "wall-clock budget: stop (after validating and checkpointing) when spent",
    "keep_checkpoints": "checkpoints kept on disk",
    "checkpoint_every_steps": "also checkpoint every N optimizer steps inside an epoch (resume is exact either way)",
    "resume": "resume from the run folder's last checkpoint (--no-resume starts over)",
    "strategy": "auto, mirrored, multiworker or default",
    "devices": "devices for MirroredStrategy (e.g. /gpu:0 /gpu:1)",
    "verbose": "0 quiet, 1 progress",
}


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per :class:`TrainConfig` field; absent flags stay absent (the file / preset decides)."""
    from .config import TrainConfig

    for f in TrainConfig.__dataclass_fields__.values():
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = FLAG_HELP.get(f.name, "")
        default = f.default
        kw = dict(dest=f.name, default=argparse.SUPPRESS)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=f"{help_text} (default {default})", **kw)
        elif f.name in ("filters",):
            parser.add_argument(flag, type=int, nargs=5, metavar="N", help=f"{help_text} (default {' '.join(map(str, default))})", **kw)
        elif f.name == "hu_window":
            parser.add_argument(flag, type=float, nargs=2, metavar=("LOW", "HIGH"), help=help_text, **kw)
        elif f.name == "devices":
            parser.add_argument(flag, nargs="+", metavar="DEVICE", help=help_text, **kw)
        else:
            typ = _type_of(f.name, default)
            parser.add_argument(flag, type=typ, metavar=f.name.upper(), help=f"{help_text} (default {default})", **kw)


def _type_of(name: str, default):
    if name in ("n_test", "max_val_cases", "steps_per_epoch", "patience", "checkpoint_every_steps"):
        return _optional(int)
    if name in ("clipnorm", "max_minutes", "bn_momentum"):
        return _optional(float)
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return str


def _optional(typ):
    def parse(text: str):
        if text.lower() in ("none", "off", "0") and typ is not str:
            return None
        return typ(text)
    parse.__name__ = typ.__name__
    return parse


def config_from_args(args: argparse.Namespace, skip: tuple[str, ...] = ("command", "config", "func"),
                     base: dict | None = None):
    """The resolved :class:`TrainConfig`: ``base`` <- ``--config`` file <- explicit flags."""
    from .config import TrainConfig

    overrides = {k: v for k, v in vars(args).items() if k not in skip and k in TrainConfig.__dataclass_fields__}
    return TrainConfig.from_sources(getattr(args, "config", None), overrides, base=base)
