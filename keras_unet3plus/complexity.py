"""Parameter and FLOP counts, layer by layer, for the comparison tables.

FLOPs are counted from each layer's actual input/output shapes: multiply-accumulates (MACs) of
convolutions, transposed convolutions and dense layers, FLOPs = 2 x MACs (the convention of the
papers' tables and of thop/ptflops). Element-wise work (BN, ReLU, pooling, resizing) is left out;
it is well under 1 % of a UNet's compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class Complexity:
    """Counts for one model at one input size (per image)."""

    trainable_params: int
    total_params: int
    macs: int

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9


def _shape(tensor) -> tuple:
    return tuple(int(d) for d in tensor.shape[1:])


def layer_macs(layer: keras.layers.Layer) -> int:
    """MACs of one layer call for a batch of one (0 for layers without multiply-accumulates)."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        h, w, cin = _shape(layer.input)
        kh, kw = layer.kernel_size
        return h * w * cin * kh * kw * layer.filters
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        h, w, _ = _shape(layer.output)
        kh, kw = layer.kernel_size
        return h * w * int(np.prod(layer.depthwise_kernel.shape))
    if isinstance(layer, keras.layers.Conv2D):
        h, w, cout = _shape(layer.output)
        kh, kw = layer.kernel_size
        cin = _shape(layer.input)[-1]
        return h * w * cout * kh * kw * cin // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.kernel.shape)) * int(np.prod(_shape(layer.output)[:-1]) or 1)
    return 0


def count(model: keras.Model) -> Complexity:
    """Parameters (trainable: the count PyTorch's `sum(p.numel())` gives) and MACs per image.

    The model must have a static input size; nested models are walked recursively.
    """

    def walk(m) -> int:
        total = 0
        for layer in m.layers:
            total += walk(layer) if isinstance(layer, keras.Model) else layer_macs(layer)
        return total

    if any(d is None for d in model.inputs[0].shape[1:]):
        raise ValueError("count() needs a model built with a fixed input size, e.g. input_shape=(320, 320, 3)")
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = trainable + sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return Complexity(trainable, total, walk(model))
