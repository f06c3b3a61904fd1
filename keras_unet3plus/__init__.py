"""keras-unet3plus: UNet 3+ (Huang et al., ICASSP 2020) for Keras 3 / TensorFlow.

`build()` returns the model; `deploy_model()` its CGM-gated inference form. Losses, metrics, data,
training, inference and export live in their own submodules (imported on demand).
"""
import os as _os
import sys as _sys

if (_sys.argv and _os.path.basename(_sys.argv[0]) == "unet3plus") or \
        _os.environ.get("UNET3PLUS_QUIET_START", "") not in ("", "0"):
    # Run as the CLI (or a recipe): keep TensorFlow's C++ start-up chatter out of the command's
    # output, before anything below loads TensorFlow; --debug / UNET3PLUS_DEBUG=1 keep it all.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "--debug" not in _sys.argv and _os.environ.get("UNET3PLUS_DEBUG", "") in ("", "0"):
        from .native_log import filter_native_startup_lines

        filter_native_startup_lines()

from .encoders import available_backbones  # noqa: E402
from .layers import Binarize, ClassGate  # noqa: E402
from .model import build, deploy_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build", "deploy_model", "available_backbones", "ClassGate", "Binarize", "__version__"]
