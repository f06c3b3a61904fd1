"""Output heads: segmentation / deep-supervision heads and the Classification-Guided Module (CGM)."""

from __future__ import annotations

from keras import layers

from .blocks import upsample
from .output_names import CLS


def segmentation_head(x, num_classes: int, stride: int, name: str, kernel_size: int = 3):
    """conv -> bilinear upsample to input size -> sigmoid (1 class) / softmax (> 1), always float32.

    float32 activations keep the losses stable under mixed precision.
    """
    x = layers.Conv2D(num_classes, kernel_size, padding="same", name=f"{name}_conv")(x)
    x = upsample(x, stride, name=f"{name}_up")
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return layers.Activation(activation, dtype="float32", name=name)(x)


def cgm_head(deepest, dropout: float = 0.5):
    """CGM: Dropout -> conv1x1 (2) -> global max pool -> sigmoid; `[absent, present]` per image."""
    x = layers.Dropout(dropout, name="cgm_dropout")(deepest)
    x = layers.Conv2D(2, 1, name="cgm_conv")(x)
    x = layers.GlobalMaxPooling2D(name="cgm_pool")(x)
    return layers.Activation("sigmoid", dtype="float32", name=CLS)(x)
