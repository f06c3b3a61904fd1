"""Packages that load their public names on first use (PEP 562), so importing one light module of
a package (a reader, a configuration) does not load TensorFlow through its heavier siblings."""

from __future__ import annotations

import importlib
from typing import Any
from collections.abc import Callable, Mapping


def lazy_names(package: str, where: Mapping[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: a name of ``where`` (name -> module of the
    package) is imported from its module when first asked for, then kept in ``namespace``."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
