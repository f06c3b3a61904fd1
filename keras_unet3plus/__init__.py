"""keras-unet3plus: UNet 3+ (Huang et al., ICASSP 2020) for Keras 3 / TensorFlow.

`build()` returns the model; `deploy_model()` its CGM-gated inference form. Losses, metrics, data,
training, inference and export live in their own submodules (imported on demand).

The names below are loaded on first use (PEP 562), so ``import keras_unet3plus`` (and the CLI's
``--help``) loads neither Keras nor TensorFlow. The custom layers register themselves with Keras
when :mod:`keras_unet3plus.layers` is imported (by ``build``, ``deploy_model`` and every loader of
the package); when Keras is already imported, importing the package registers them at once, so
``keras.models.load_model(path, safe_mode=True)`` keeps working after ``import keras_unet3plus``.
"""

from __future__ import annotations

import importlib
import os as _os
import sys as _sys

from ._lazy import lazy_names
from ._version import __version__

if _os.environ.get("UNET3PLUS_QUIET_START", "") not in ("", "0"):
    # a recipe: TensorFlow's C++ start-up chatter out of its output, before anything loads
    # TensorFlow (the CLI does the same in cli.main); --debug / UNET3PLUS_DEBUG=1 keep it all
    from .native_log import quiet_start

    quiet_start()

#: public name -> the module of this package that defines it
_WHERE = {
    "build": "model",
    "deploy_model": "model",
    "available_backbones": "encoders",
    "ClassGate": "layers",
    "Binarize": "layers",
}

__all__ = sorted(_WHERE) + ["__version__"]

if "keras" in _sys.modules:  # Keras is loaded anyway: register the custom layers for load_model now
    importlib.import_module(f"{__name__}.layers")

__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
