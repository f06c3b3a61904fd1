"""Small building blocks shared by every encoder and decoder (UNet, UNet++, UNet 3+)."""

from __future__ import annotations

from keras import layers

from .layers import BilinearUpsample


def conv_bn_relu(x, filters: int, name: str, kernel_size: int = 3, batch_norm: bool = True):
    """Conv -> (BN) -> ReLU: the unit of the paper's encoder and of every UNet 3+ decoder branch."""
    x = layers.Conv2D(filters, kernel_size, padding="same", kernel_initializer="he_normal", name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def double_conv(x, filters: int, name: str, batch_norm: bool = True):
    """Two conv3x3 units: one plain-UNet encoder stage (and, without BN, the official decoder stage)."""
    x = conv_bn_relu(x, filters, f"{name}_1", batch_norm=batch_norm)
    return conv_bn_relu(x, filters, f"{name}_2", batch_norm=batch_norm)


def upsample(x, factor: int, name: str):
    """Bilinear upsampling by an integer factor (identity for factor 1)."""
    if factor == 1:
        return x
    return BilinearUpsample(factor, name=name)(x)


def maxpool(x, factor: int, name: str):
    """Max pooling by an integer factor with ceil behaviour (padding='same'), as the official code."""
    if factor == 1:
        return x
    return layers.MaxPooling2D(pool_size=factor, strides=factor, padding="same", name=name)(x)


def transposed_up(x, filters: int, name: str):
    """The official UNet/UNet++ up-sampling: ConvTranspose 4x4, stride 2."""
    return layers.Conv2DTranspose(filters, 4, strides=2, padding="same", kernel_initializer="he_normal", name=name)(x)
