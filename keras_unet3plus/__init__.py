"""keras-unet3plus: UNet 3+ (Huang et al., ICASSP 2020) for Keras 3 / TensorFlow.

`build()` returns the model; `deploy_model()` its CGM-gated inference form. Losses, metrics, data,
training, inference and export live in their own submodules (imported on demand).
"""
import os as _os
import sys as _sys

if _sys.argv and _os.path.basename(_sys.argv[0]) == "unet3plus":
    # Run as the CLI: keep TensorFlow's C++ start-up chatter out of the command's output.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .encoders import available_backbones  # noqa: E402
from .layers import Binarize, ClassGate  # noqa: E402
from .model import build, deploy_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build", "deploy_model", "available_backbones", "ClassGate", "Binarize", "__version__"]
