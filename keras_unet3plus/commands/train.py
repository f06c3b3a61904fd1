"""`unet3plus train`: train UNet 3+ on a LiTS / MSD / images+labels folder (multi-GPU, multi-worker).

Settings come from the defaults, then ``--config run.yaml|json``, then the flags given explicitly;
the resolved configuration is saved as ``OUT_DIR/config.yaml``. Rerunning the same command resumes
from the last checkpoint. Beyond one machine: start the same command on every machine with its
``TF_CONFIG`` (MultiWorkerMirroredStrategy is chosen automatically).

Errors (a bad setting, a bad data folder) end in ``cli.main``'s one line, exit 1 (``--debug``: the
traceback); importing this module loads no TensorFlow (the flags come from the dataclass).
"""

from __future__ import annotations

import argparse
import sys

from ..training.flags import add_config_flags, config_from_args

HELP = "train UNet 3+ (resumable, multi-GPU / multi-worker via tf.distribute)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings (flags override it)")
    add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not cfg.data_dir:  # a usage error, like a missing flag: exit 2
        print(
            "unet3plus train: error: --data-dir is required (or data_dir in --config); "
            "for a quick try without data run `unet3plus demo`",
            file=sys.stderr,
        )
        return 2
    from ..training import train

    result = train(cfg)
    print(f"model: {result.model_path}")
    if result.best_val_dice is not None:
        print(f"best validation per-volume Dice: {result.best_val_dice:.4f} (epoch {result.best_epoch})")
    return 0
