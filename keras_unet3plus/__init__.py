"""keras-unet3plus: UNet 3+ (Huang et al., ICASSP 2020) for Keras 3 / TensorFlow.

`build()` returns the model; `deploy_model()` its CGM-gated inference form. Losses, metrics, data,
training, inference and export live in their own submodules (imported on demand).
"""
from .encoders import available_backbones
from .layers import Binarize, ClassGate
from .model import build, deploy_model

__version__ = "0.1.0"
__all__ = ["build", "deploy_model", "available_backbones", "ClassGate", "Binarize", "__version__"]
