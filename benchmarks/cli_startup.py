"""How fast the command line answers `--help` and `--version` (issue 30: under 1 s, no TensorFlow).

Each call is a fresh process, as a person runs `unet3plus`: ``python -c`` with ``sys.argv[0] ==
"unet3plus"`` (what the console script sets), the package taken from the working tree or, with
``--rev``, from a git revision unpacked beside it (the "before"). Wall time per call, the median of
``--runs``, and whether the call imported TensorFlow. Nothing here is asserted by the tests.

    python benchmarks/cli_startup.py                       # this working tree
    python benchmarks/cli_startup.py --rev 47ccb0f --runs 5  # the same calls before, then now
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("demo", "phantom", "check-data", "train", "predict", "evaluate", "export", "params")
CALLS = [["--help"], ["--version"]] + [[c, "--help"] for c in COMMANDS]

CHILD = """
import atexit, json, sys
args, report = json.loads(sys.argv[1]), sys.argv[2]
sys.argv = ["unet3plus"] + args
atexit.register(lambda: open(report, "w").write(json.dumps({
    "tensorflow": "tensorflow" in sys.modules,
    "package": getattr(sys.modules.get("keras_unet3plus"), "__file__", "")})))
from keras_unet3plus.cli import main
sys.exit(main())
"""


def one_call(src: Path, args: list[str]) -> tuple[float, dict]:
    """Wall seconds of one `unet3plus ARGS` process run from the package in ``src``, and its report."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        env = dict(os.environ, PYTHONPATH=str(src))
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(args), report.name],
            cwd=src,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        seconds = time.perf_counter() - t
        text = Path(report.name).read_text()
    return seconds, json.loads(text) if text else {}


def measure(src: Path, runs: int) -> dict[str, tuple[float, bool]]:
    """``{"unet3plus ARGS": (median seconds, TensorFlow imported)}``."""
    out = {}
    for args in CALLS:
        times, info = [], {}
        for _ in range(runs):
            seconds, info = one_call(src, args)
            times.append(seconds)
        if not str(info.get("package", "")).startswith(str(src)):
            raise SystemExit(f"cli_startup: the package ran from {info.get('package')}, not from {src}")
        out["unet3plus " + " ".join(args)] = (statistics.median(times), bool(info.get("tensorflow")))
    return out


def unpack(rev: str, into: Path) -> Path:
    """The package of git revision ``rev``, unpacked into ``into``."""
    archive = subprocess.run(["git", "archive", rev, "keras_unet3plus"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="calls per command line (default 5; the median is shown)")
    p.add_argument("--rev", default=None, help="also measure this git revision (the 'before')")
    a = p.parse_args(argv)
    columns = {}
    with tempfile.TemporaryDirectory() as tmp:
        if a.rev:
            columns[a.rev] = measure(unpack(a.rev, Path(tmp)), a.runs)
        columns["working tree"] = measure(ROOT, a.runs)
    print(f"median wall seconds of {a.runs} fresh processes on {os.cpu_count()} cores (* = imported TensorFlow)")
    print("| command | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for call in next(iter(columns.values())):
        cells = [f"{col[call][0]:.2f}{' *' if col[call][1] else ''}" for col in columns.values()]
        print(f"| `{call}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
