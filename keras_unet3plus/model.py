"""`build()`: UNet 3+ and its UNet / UNet++ baselines as plain functional Keras models."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from .decoders import DECODER_MODES, full_scale_decoder, nested_decoder, unet_decoder
from .encoders import PLAIN, DEFAULT_FILTERS, available_backbones, backbone_encoder, encoder_stride, plain_encoder
from .heads import cgm_head, segmentation_head
from .layers import Binarize, ClassGate
from .output_names import CLS, SEG

ARCHITECTURES = {
    "unet3plus": "unet3plus",
    "unet3+": "unet3plus",
    "unet_3plus": "unet3plus",
    "unet": "unet",
    "unet++": "unetplusplus",
    "unetplusplus": "unetplusplus",
    "unet2plus": "unetplusplus",
}


def build(
    input_shape: tuple = (320, 320, 3),
    num_classes: int = 1,
    architecture: str = "unet3plus",
    backbone: str = "unet",
    weights: str | None = None,
    filters: Sequence[int] = DEFAULT_FILTERS,
    cat_channels: int = 64,
    deep_supervision: bool = True,
    cgm: bool = True,
    decoder: str = "paper",
    cgm_dropout: float = 0.5,
    freeze_backbone: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Build UNet 3+ (or a UNet / UNet++ baseline) as a functional `keras.Model` with dict outputs.

    Outputs: `seg` (final map), `side_2`..`side_5` when `deep_supervision`, `cls` (CGM, `[absent,
    present]`) when `cgm`. Segmentation outputs are float32 probabilities at input size: one sigmoid
    channel for `num_classes=1`, otherwise `num_classes` softmax channels with background first.
    The training outputs are ungated; `deploy_model()` gives the CGM-gated inference form.

    Args:
        input_shape: (H, W, C); H and W divisible by the encoder stride (16 for "unet"/VGG, 32 for
            ResNet/DenseNet/EfficientNetV2) or None for a fully convolutional model.
        architecture: "unet3plus", "unet" or "unet++".
        backbone: "unet" (the paper's plain encoder) or a keras.applications name, see
            `encoders.available_backbones()`.
        weights: None, "imagenet" (read from the local Keras cache, never downloaded) or a file path.
        filters: the plain encoder's widths E1..E5 (also the UNet/UNet++ decoder widths).
        cat_channels: channels per branch of a full-scale decoder node (paper: 64; node = 5x that).
        decoder: "paper" or "efficient" (convolve deeper maps before upsampling; same parameters).
    """
    arch = _check_architecture(architecture)
    _check_arguments(input_shape, num_classes, backbone, weights, filters, cat_channels, decoder, arch, cgm_dropout)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if backbone == PLAIN:
        features, first_stride = plain_encoder(inputs, filters), 1
    else:
        features = backbone_encoder(inputs, backbone, weights=weights, trainable=not freeze_backbone)
        first_stride = encoder_stride(backbone) // 16

    if arch == "unet3plus":
        sources = full_scale_decoder(features, cat_channels=cat_channels, mode=decoder)
    elif arch == "unet":
        sources = unet_decoder(features, filters)
    else:
        sources = nested_decoder(features, filters)

    head_kernel = 1 if arch == "unetplusplus" else 3  # as in the official code of each network
    outputs = {}
    for out_name, (tensor, stride) in sources.items():
        if out_name != SEG and not deep_supervision:
            continue
        outputs[out_name] = segmentation_head(tensor, num_classes, stride * first_stride, out_name, head_kernel)
    if cgm:
        outputs[CLS] = cgm_head(features[-1], dropout=cgm_dropout)
    return keras.Model(inputs, outputs, name=name or f"{arch}_{backbone}")


def deploy_model(
    model: keras.Model, gate: bool = True, threshold: float | None = None, all_outputs: bool = False
) -> keras.Model:
    """The inference form of a trained model: `seg` gated by the CGM decision (when the model has one).

    `threshold` adds the binarisation (or argmax) to the graph so exports emit masks. With
    `all_outputs=True` the side outputs and `cls` are kept next to the gated `seg`.
    Shares weights with `model` (no copy).
    """
    outs = dict(zip(model.output_names, model.outputs)) if not isinstance(model.output, dict) else dict(model.output)
    if SEG not in outs:
        raise ValueError(
            f"model has no '{SEG}' output (outputs: {sorted(outs)}); build it with keras_unet3plus.build()"
        )
    seg = outs[SEG]
    if gate and CLS in outs:
        seg = ClassGate(name="seg_gated")([seg, outs[CLS]])
    if threshold is not None:
        seg = Binarize(threshold, name="seg_mask")(seg)
    result = {SEG: seg}
    if all_outputs:
        result.update({k: v for k, v in outs.items() if k != SEG})
    return keras.Model(model.inputs, result, name=f"{model.name}_deploy")


def _check_architecture(architecture: str) -> str:
    key = str(architecture).lower()
    if key not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of 'unet3plus', 'unet', 'unet++', got {architecture!r}")
    return ARCHITECTURES[key]


def _check_arguments(input_shape, num_classes, backbone, weights, filters, cat_channels, decoder, arch, cgm_dropout):
    if backbone not in available_backbones():
        raise ValueError(f"backbone must be one of {available_backbones()}, got {backbone!r}")
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    stride = encoder_stride(backbone)
    for axis, size in zip(("height", "width"), input_shape[:2]):
        if size is None:
            continue
        if not isinstance(size, int) or size <= 0 or size % stride:
            raise ValueError(
                f"input {axis} {size!r} must be a positive multiple of {stride} (the '{backbone}' encoder "
                f"downsamples by {stride}), or None for a fully convolutional model"
            )
    channels = input_shape[2]
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"input channels must be a positive int (1 slice or 3 adjacent slices), got {channels!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be an int >= 1 (1: binary sigmoid; K: softmax incl. background), got {num_classes!r}"
        )
    if backbone == PLAIN and weights is not None:
        raise ValueError(
            "the plain 'unet' encoder has no pretrained weights; use weights=None or a keras.applications backbone"
        )
    if len(filters) != 5 or any((not isinstance(f, int)) or f < 1 for f in filters):
        raise ValueError(f"filters must be 5 positive ints (E1..E5), got {tuple(filters)!r}")
    if not isinstance(cat_channels, int) or cat_channels < 1:
        raise ValueError(f"cat_channels must be a positive int, got {cat_channels!r}")
    if decoder not in DECODER_MODES:
        raise ValueError(f"decoder must be one of {DECODER_MODES}, got {decoder!r}")
    if decoder != "paper" and arch != "unet3plus":
        raise ValueError(f"decoder={decoder!r} applies to the full-scale UNet 3+ decoder only, not {arch!r}")
    if not 0.0 <= float(cgm_dropout) < 1.0:
        raise ValueError(f"cgm_dropout must be in [0, 1), got {cgm_dropout!r}")
