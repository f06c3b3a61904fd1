"""What an export target declares: the one record a target module adds to the registry.

Each target module (`savedmodel.py`, `onnx.py`, `litert.py`, `tensorrt.py`) ends with its
``TARGET = ExportTarget(...)``; `registry.py` lists the modules. Nothing here imports the
converters, so listing the targets (the CLI's ``--to`` choices) loads no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from collections.abc import Callable

if TYPE_CHECKING:
    from .job import ExportJob


@dataclass(frozen=True)
class ExportTarget:
    """One export target: the ``--to`` name, its precisions, the suffix of its artefact, the
    modules (and the setup.py extra of each) it needs, the runtime class that runs its artefact,
    where the artefact goes by default and the function that writes (and verifies) it."""

    name: str
    precisions: tuple[str, ...]
    suffix: str  # "" for a folder artefact
    needs: Callable[[str], list[tuple[str, str]]]  # precision -> [(module, extra)], checked up front
    runtime: str  # class name in keras_unet3plus.runtimes
    write: Callable[[ExportJob], None]
    default_name: Callable[[str, str], str]  # (model stem, precision) -> file or folder name

    def check(self, precision: str) -> None:
        """Refuse a precision the target does not have, and a missing extra, before any work."""
        from .._extras import require

        if precision not in self.precisions:
            raise ValueError(
                f"--precision {precision!r} is not available for {self.name}; choose from {self.precisions}"
            )
        for module, extra in self.needs(precision):  # fail fast, before minutes of conversion
            require(module, extra)
