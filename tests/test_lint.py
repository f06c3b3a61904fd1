"""The repository's lint and type check (ruff.toml, mypy.ini) run as tests, so CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_tool_is_installed_with_the_dev_extra(tool):
    # the checks below must not pass by being skipped: [dev] installs both (setup.py)
    assert _run(tool, "--version").returncode == 0, f"{tool} is missing: pip install -e '.[dev]'"


def test_ruff_finds_nothing():
    proc = _run("ruff", "check", ".", "--output-format", "concise", "--no-cache")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_code_is_formatted():
    proc = _run("ruff", "format", "--check", ".", "--no-cache")
    assert proc.returncode == 0, "run `ruff format .`:\n" + proc.stdout[-4000:] + proc.stderr[-2000:]


def test_mypy_on_the_public_modules(tmp_path):
    proc = _run("mypy", "--config-file", "mypy.ini", "--cache-dir", str(tmp_path / "mypy"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
