"""`unet3plus` command line: one sub-command per module in `keras_unet3plus.commands`.

Each command module defines `HELP`, `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

COMMANDS = ("demo", "phantom", "train", "predict", "evaluate", "export", "params")


def _available() -> list[str]:
    return [c for c in COMMANDS if importlib.util.find_spec(f"keras_unet3plus.commands.{c}") is not None]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of CLI output
    parser = argparse.ArgumentParser(prog="unet3plus", description="UNet 3+ for CT segmentation: train, predict, evaluate, export.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in _available():
        module = importlib.import_module(f"keras_unet3plus.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        modules[name] = module
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
