"""Command-line flags for every :class:`TrainConfig` field, shared by `unet3plus train` and the
recipes (so the CLI and the recipe scripts cannot drift apart). Each flag's type, help and
default come from the field (:mod:`keras_unet3plus.options`); no TensorFlow is loaded."""

from __future__ import annotations

import argparse

from .. import options


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per :class:`TrainConfig` field; absent flags stay absent (the file / preset decides).
    Choices are checked with the file's values by :meth:`TrainConfig.validate`, so a flag and a file
    fail alike."""
    from .config import TrainConfig

    options.add_flags(parser, TrainConfig, skip=skip, suppress=True, parser_choices=False)


def config_from_args(
    args: argparse.Namespace, skip: tuple[str, ...] = ("command", "config", "func"), base: dict | None = None
):
    """The resolved :class:`TrainConfig`: ``base`` <- ``--config`` file <- explicit flags."""
    from .config import TrainConfig

    overrides = {k: v for k, v in options.values_from_args(TrainConfig, args).items() if k not in skip}
    return TrainConfig.from_sources(getattr(args, "config", None), overrides, base=base)
