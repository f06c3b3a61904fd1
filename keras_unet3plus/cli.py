"""`unet3plus` command line: one sub-command per module in `keras_unet3plus.commands`.

Each command module defines `HELP`, `add_arguments(parser)` and `run(args) -> int`; importing it and
adding its flags load no TensorFlow (that happens in `run`), and only the named command's module is
imported, so `--help`, `--version` and a bad flag answer at once. Errors end as one line,
`error: <file>: <problem>`, with exit code 1 (2 for bad flags); `--debug` or `UNET3PLUS_DEBUG=1`
shows the traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
import traceback

COMMANDS = ("demo", "phantom", "check-data", "train", "predict", "ensemble", "evaluate", "export", "params")
#: Commands that train on TensorFlow: they say up front when a GPU is there but TensorFlow cannot use it.
GPU_COMMANDS = ("demo", "train")


def _available() -> list[str]:
    return [c for c in COMMANDS if importlib.util.find_spec(_module(c)) is not None]


def _named(argv: list[str]) -> str | None:
    """The command on the line (the first word that is not a flag), when it is one of ours."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def _module(command: str) -> str:
    return f"keras_unet3plus.commands.{command.replace('-', '_')}"


#: A Python exception re-raised by TensorFlow (tf.data reading a bad file inside a training step)
#: carries the original "ExceptionName: message" in its text; this finds it.
_WRAPPED = re.compile(
    r"(?:DataError|DataFileNotFoundError|ValueError|OSError|FileNotFoundError|"
    r"EOFError|RuntimeError|BadGzipFile|ImageFileError): (.+)"
)


def error_line(exc: BaseException) -> str:
    """The one line a person needs: the problem and the file, without TensorFlow's wrapping."""
    text = str(exc).strip()
    tf = sys.modules.get("tensorflow")  # not loaded: nothing can have wrapped the error
    try:
        wrapped = tf is not None and isinstance(exc, tf.errors.OpError)
    except AttributeError:  # a TensorFlow still loading has no errors module yet
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
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the Python traceback of an error (also UNET3PLUS_DEBUG=1)",
    )


def main(argv: list[str] | None = None) -> int:
    from ._version import __version__
    from .native_log import debug_asked, quiet_start, warn_if_gpu_unusable

    argv = sys.argv[1:] if argv is None else list(argv)
    quiet_start(argv)  # TensorFlow's start-up lines out, before any command loads it
    version = dict(action="version", version=f"unet3plus {__version__}", help="print the version and exit")
    early = argparse.ArgumentParser(prog="unet3plus", add_help=False, allow_abbrev=False)
    early.add_argument("--version", **version)
    early.parse_known_args(argv)  # --version answers here, before any command module is imported
    parser = argparse.ArgumentParser(
        prog="unet3plus", description="UNet 3+ for CT segmentation: train, predict, evaluate, export."
    )
    parser.add_argument("--version", **version)
    _debug_flag(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    named = _named(argv)
    for name in _available():
        if named and name != named:
            sub.add_parser(name)  # a name in the usage line; its module is imported only to list or run it
            continue
        module = importlib.import_module(_module(name))
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        _debug_flag(p, argparse.SUPPRESS)
        modules[name] = module
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or debug_asked(argv)
    try:
        if args.command in GPU_COMMANDS:
            warn_if_gpu_unusable()
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
