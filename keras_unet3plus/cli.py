"""`unet3plus` command line: one sub-command per module in `keras_unet3plus.commands`.

Each command module defines `HELP`, `add_arguments(parser)` and `run(args) -> int`. Errors end as one
line, `error: <file>: <problem>`, with exit code 1 (2 for bad flags); `--debug` or
`UNET3PLUS_DEBUG=1` shows the traceback as well.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys
import traceback

COMMANDS = ("demo", "phantom", "check-data", "train", "predict", "evaluate", "export", "params")


def _available() -> list[str]:
    return [c for c in COMMANDS if importlib.util.find_spec(_module(c)) is not None]


def _module(command: str) -> str:
    return f"keras_unet3plus.commands.{command.replace('-', '_')}"


#: A Python exception re-raised by TensorFlow (tf.data reading a bad file inside a training step)
#: carries the original "ExceptionName: message" in its text; this finds it.
_WRAPPED = re.compile(r"(?:DataError|DataFileNotFoundError|ValueError|OSError|FileNotFoundError|"
                      r"EOFError|RuntimeError|BadGzipFile|ImageFileError): (.+)")


def error_line(exc: BaseException) -> str:
    """The one line a person needs: the problem and the file, without TensorFlow's wrapping."""
    text = str(exc).strip()
    try:
        import tensorflow as tf

        wrapped = isinstance(exc, tf.errors.OpError)
    except Exception:  # noqa: BLE001 - TensorFlow not importable: nothing wraps
        wrapped = False
    if wrapped:
        found = [m.group(1).strip() for m in _WRAPPED.finditer(text)]
        if found:
            return found[-1]
        text = next((ln for ln in text.splitlines() if ln.strip() and "Graph execution error" not in ln), text)
    if not text:
        return type(exc).__name__
    return text if "\n" not in text or "|" in text else text.splitlines()[0]


def _debug_flag(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the Python traceback of an error (also UNET3PLUS_DEBUG=1)")


def _debug_asked(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or os.environ.get("UNET3PLUS_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of CLI output
    if not _debug_asked(argv):
        from .native_log import filter_native_startup_lines

        filter_native_startup_lines()  # what TF_CPP_MIN_LOG_LEVEL cannot reach (printed while loading)
    parser = argparse.ArgumentParser(prog="unet3plus", description="UNet 3+ for CT segmentation: train, predict, evaluate, export.")
    _debug_flag(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in _available():
        module = importlib.import_module(_module(name))
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        _debug_flag(p, argparse.SUPPRESS)
        modules[name] = module
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or _debug_asked(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's one error boundary
        if debug:
            traceback.print_exc()
        print(f"error: {error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
