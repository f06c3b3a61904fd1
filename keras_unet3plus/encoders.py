"""Encoders: the paper's plain UNet encoder and keras.applications backbones tapped at 5 scales.

Every encoder returns five feature maps E1..E5, each half the resolution of the one before, plus the
stride of E1 relative to the input (1 for the plain encoder and VGG, 2 for ResNet/DenseNet/EfficientNet,
whose first feature map is already downsampled). Decoders only rely on that contract.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence

import keras
from keras import layers

from .blocks import double_conv, maxpool


@dataclass(frozen=True)
class BackboneSpec:
    """How to build and tap one keras.applications network."""

    constructor: Callable[..., keras.Model]
    taps: tuple[str, str, str, str, str]
    first_stride: int
    preprocessing: str  # "caffe" (mean-subtracted 0..255), "torch" (ImageNet mean/std), "raw255" (0..255)
    weights_file: str  # the file keras.applications caches ImageNet weights under (no top)


_CAFFE_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_TORCH_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        keras.applications.VGG16,
        ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"),
        1,
        "caffe",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg19": BackboneSpec(
        keras.applications.VGG19,
        ("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4"),
        1,
        "caffe",
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet50": BackboneSpec(
        keras.applications.ResNet50,
        ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        2,
        "caffe",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet101": BackboneSpec(
        keras.applications.ResNet101,
        ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
        2,
        "caffe",
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet152": BackboneSpec(
        keras.applications.ResNet152,
        ("conv1_relu", "conv2_block3_out", "conv3_block8_out", "conv4_block36_out", "conv5_block3_out"),
        2,
        "caffe",
        "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "densenet121": BackboneSpec(
        keras.applications.DenseNet121,
        ("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu"),
        2,
        "torch",
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "efficientnetv2b0": BackboneSpec(
        keras.applications.EfficientNetV2B0,
        ("block1a_project_activation", "block2b_add", "block3b_add", "block5e_add", "top_activation"),
        2,
        "raw255",
        "efficientnetv2-b0_notop.h5",
    ),
    "efficientnetv2s": BackboneSpec(
        keras.applications.EfficientNetV2S,
        ("block1b_add", "block2d_add", "block3d_add", "block5i_add", "top_activation"),
        2,
        "raw255",
        "efficientnetv2-s_notop.h5",
    ),
}

PLAIN = "unet"
DEFAULT_FILTERS = (64, 128, 256, 512, 1024)


def available_backbones() -> list[str]:
    """Names accepted by `build(backbone=...)`."""
    return [PLAIN, *BACKBONES]


def encoder_stride(backbone: str) -> int:
    """Total downsampling from the input to E5: input H and W must be divisible by it."""
    if backbone == PLAIN:
        return 16
    return BACKBONES[backbone].first_stride * 16


def plain_encoder(x, filters: Sequence[int] = DEFAULT_FILTERS) -> list:
    """The paper's encoder: 5 stages of 2 x (conv3x3 + BN + ReLU), max pool 2 between stages."""
    features = []
    for i, f in enumerate(filters, start=1):
        if i > 1:
            x = maxpool(x, 2, name=f"enc{i}_pool")
        x = double_conv(x, f, name=f"enc{i}")
        features.append(x)
    return features


def _keras_cache_dir() -> Path:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def resolve_weights(backbone: str, weights: str | os.PathLike | None) -> str | None:
    """Map `weights` to a local file, never to a download.

    `None` -> random init. `"imagenet"` -> the file keras.applications would cache, which must already
    be on disk (this package runs without network). Any other value is a path to an .h5/.weights.h5 file.
    """
    if weights is None:
        return None
    spec = BACKBONES[backbone]
    if str(weights) == "imagenet":
        path = _keras_cache_dir() / spec.weights_file
        if not path.is_file():
            raise FileNotFoundError(
                f"ImageNet weights for backbone '{backbone}' are read from disk only (no download): "
                f"put '{spec.weights_file}' (keras.applications, include_top=False) at '{path}', "
                f"or pass weights='/path/to/{spec.weights_file}'."
            )
        return str(path)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file '{path}' for backbone '{backbone}' does not exist")
    return str(path)


def _backbone_input(x, spec: BackboneSpec):
    """Map the package's [0, 1] input to what the backbone's ImageNet weights expect."""
    if int(x.shape[-1]) == 1:
        x = layers.Concatenate(name="backbone_gray_to_rgb")([x, x, x])
    if spec.preprocessing == "raw255":  # EfficientNetV2 normalises inside the network
        return layers.Rescaling(255.0, name="backbone_rescale")(x)
    if spec.preprocessing == "caffe":
        mean, var = _CAFFE_MEAN, (1.0, 1.0, 1.0)
    else:
        mean, var = _TORCH_MEAN, (_TORCH_STD[0] ** 2, _TORCH_STD[1] ** 2, _TORCH_STD[2] ** 2)
    x = layers.Rescaling(255.0, name="backbone_rescale")(x)
    return layers.Normalization(mean=list(mean), variance=list(var), name="backbone_normalize")(x)


def backbone_encoder(x, backbone: str, weights=None, trainable: bool = True) -> list:
    """Build a keras.applications network on `x` and return its outputs at the five tap layers."""
    spec = BACKBONES[backbone]
    channels = int(x.shape[-1])
    if weights is not None and channels not in (1, 3):
        raise ValueError(f"pretrained backbone '{backbone}' needs 1 or 3 input channels, got {channels}")
    weights_path = resolve_weights(backbone, weights)
    x = _backbone_input(x, spec)
    # Built on our tensor, so its layers sit flat in the UNet graph (no nested model to unwrap).
    base = spec.constructor(include_top=False, weights=None, input_tensor=x)
    if weights_path is not None:
        _copy_pretrained(spec, weights_path, base)
    for layer in base.layers:
        if layer.name in {"backbone_gray_to_rgb", "backbone_rescale", "backbone_normalize"}:
            continue
        layer.trainable = trainable
    return [base.get_layer(name).output for name in spec.taps]


def _copy_pretrained(spec: BackboneSpec, weights_path: str, target: keras.Model) -> None:
    """Load the weights file into a stand-alone copy of the backbone, then copy them layer by layer."""
    reference = spec.constructor(include_top=False, weights=None, input_shape=(None, None, 3))
    try:
        reference.load_weights(weights_path)
    except Exception as exc:  # h5py/keras raise many types; name the file in every case
        raise ValueError(f"could not load backbone weights from '{weights_path}': {exc}") from exc
    for layer in reference.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
