"""Every export target, in one registry line (nnU-Net's reader/writer registry, segmentation_models'
backbone factory): each module below declares its ``TARGET`` (`target.ExportTarget`).

Adding a target: a module in this package with a writer and its ``TARGET``, a `Runtime` class in
`keras_unet3plus.runtimes` (one module, listed in its ``RUNTIMES``), and the module's name here.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import litert, onnx, savedmodel, tensorrt
from .target import ExportTarget

REGISTRY: dict[str, ExportTarget] = {m.TARGET.name: m.TARGET for m in (savedmodel, onnx, litert, tensorrt)}
TARGETS = tuple(REGISTRY)
PRECISIONS = {name: t.precisions for name, t in REGISTRY.items()}


def get_target(name: str) -> ExportTarget:
    """The registry record of an export target; a ValueError lists the targets."""
    if name not in REGISTRY:
        raise ValueError(f"target must be one of {TARGETS}, got {name!r}")
    return REGISTRY[name]


def default_output(model_path: str | os.PathLike, target: str, precision: str = "fp32") -> Path:
    """Where an export goes when no `-o` is given: beside the model, named after target/precision."""
    p = Path(model_path)
    stem = p.name[: -len(".keras")] if p.name.endswith(".keras") else p.stem
    return p.with_name(get_target(target).default_name(stem, precision))
