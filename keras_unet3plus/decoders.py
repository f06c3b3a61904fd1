"""Decoders: UNet 3+'s full-scale decoder and the UNet / UNet++ baselines it is compared with.

Every decoder takes the encoder maps E1..E5 (each half the resolution of the previous) and returns the
maps the heads read, as `{output_name: (tensor, stride_relative_to_E1)}`:
`seg` (the finest decoder node) and the deep-supervision sources `side_2`..`side_5`.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import layers

from .blocks import conv_bn_relu, double_conv, maxpool, transposed_up, upsample
from .output_names import SEG, side

DECODER_MODES = ("paper", "efficient")


def full_scale_decoder(features: Sequence, cat_channels: int = 64, mode: str = "paper") -> dict:
    """UNet 3+ decoder: each node De_i fuses all five scales (Huang et al. 2020, Fig. 2).

    For De_i (i = 4..1): shallower E_j (j < i) max-pooled by 2^(i-j), the same-scale E_i, deeper
    De_k / E5 (k > i) bilinearly upsampled by 2^(k-i); each branch conv3x3 -> `cat_channels` + BN +
    ReLU; concatenated (5 x cat_channels) and fused by conv3x3 + BN + ReLU.

    `mode="paper"` upsamples deeper maps before their conv, as the paper and official code do.
    `mode="efficient"` convolves deeper maps at their own resolution and upsamples the 64-channel
    result: the same weights (same parameter count), a fraction of the FLOPs.
    """
    if mode not in DECODER_MODES:
        raise ValueError(f"decoder must be one of {DECODER_MODES}, got {mode!r}")
    depth = len(features)
    fuse_channels = depth * cat_channels
    nodes = {depth: features[-1]}  # De5 is E5
    for i in range(depth - 1, 0, -1):
        branches = []
        for j in range(1, i + 1):  # shallower and same-scale encoder maps
            src = maxpool(features[j - 1], 2 ** (i - j), name=f"dec{i}_from_enc{j}_pool")
            branches.append(conv_bn_relu(src, cat_channels, name=f"dec{i}_from_enc{j}"))
        for k in range(i + 1, depth + 1):  # deeper decoder nodes (and E5)
            factor = 2 ** (k - i)
            name = f"dec{i}_from_dec{k}"
            if mode == "paper":
                branches.append(conv_bn_relu(upsample(nodes[k], factor, name=f"{name}_up"), cat_channels, name=name))
            else:
                branches.append(upsample(conv_bn_relu(nodes[k], cat_channels, name=name), factor, name=f"{name}_up"))
        x = layers.Concatenate(name=f"dec{i}_concat")(branches)
        nodes[i] = conv_bn_relu(x, fuse_channels, name=f"dec{i}_fuse")
    return _outputs_from_levels(nodes, depth)


def unet_decoder(features: Sequence, filters: Sequence[int]) -> dict:
    """The official UNet decoder: ConvTranspose(4, stride 2) -> concat skip -> 2 x (conv3x3 + ReLU)."""
    depth = len(features)
    nodes = {depth: features[-1]}
    for i in range(depth - 1, 0, -1):
        up = transposed_up(nodes[i + 1], filters[i - 1], name=f"dec{i}_up")
        x = layers.Concatenate(name=f"dec{i}_concat")([up, features[i - 1]])
        nodes[i] = double_conv(x, filters[i - 1], name=f"dec{i}", batch_norm=False)
    return _outputs_from_levels(nodes, depth)


def nested_decoder(features: Sequence, filters: Sequence[int]) -> dict:
    """UNet++ (Zhou et al. 2018) nested dense skips, as in the official UNet_2Plus code.

    X(i, j) = conv(concat[up(X(i+1, j-1)), X(i, 0), ..., X(i, j-1)]); `seg` is X(0, 4) and the deep
    supervision sources are X(0, 3), X(0, 2), X(0, 1) (all at E1 resolution).
    """
    depth = len(features)
    grid = {(i, 0): features[i] for i in range(depth)}
    for j in range(1, depth):
        for i in range(0, depth - j):
            up = transposed_up(grid[(i + 1, j - 1)], filters[i], name=f"x{i}{j}_up")
            x = layers.Concatenate(name=f"x{i}{j}_concat")([up] + [grid[(i, k)] for k in range(j)])
            grid[(i, j)] = double_conv(x, filters[i], name=f"x{i}{j}", batch_norm=False)
    outputs = {SEG: (grid[(0, depth - 1)], 1)}
    for n, j in enumerate(range(depth - 2, 0, -1), start=2):
        outputs[side(n)] = (grid[(0, j)], 1)
    return outputs


def _outputs_from_levels(nodes: dict, depth: int) -> dict:
    outputs = {SEG: (nodes[1], 1)}
    for i in range(2, depth + 1):
        outputs[side(i)] = (nodes[i], 2 ** (i - 1))
    return outputs
