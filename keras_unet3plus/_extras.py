"""Import helpers for optional extras: a missing extra names the pip command that fixes it."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """Raised when an optional dependency (a setup.py extra) is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError saying which `pip install` provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by tests via monkeypatch
        raise MissingExtraError(
            f"'{module}' is not installed; it comes with the [{extra}] extra: "
            f"pip install 'keras-unet3plus[{extra}]'  (or: pip install -e '.[{extra}]' in a checkout)"
        ) from exc
