"""The paper decoder, computed exactly with half its multiply-adds: an inference-only rewrite.

UNet 3+'s paper decoder upsamples every deeper map bilinearly (by 2..16) and then convolves it
(3x3, 64 channels) at the target resolution: 137 of the paper-size model's 309 GMAC at 320x320.
:class:`~keras_unet3plus.layers.UpsampledConv` computes the same convolution at the deeper map's own
resolution and upsamples its result, exactly (see its docstring for why). :func:`fuse_upsampled_convs`
swaps every ``BilinearUpsample -> Conv2D(3x3, same)`` pair of a built model for that layer; the
weights, the outputs (up to float rounding) and the training graph stay as they are.

Applied in exports (:mod:`keras_unet3plus.export.graph`), in Keras models loaded from a file for
inference (:class:`~keras_unet3plus.runtimes.keras.KerasRuntime`), and in training
(``share_weights=True``: the view computes with the paper model's own variables, so the gradients,
the optimizer and the saved model are the paper model's; a train step costs about half). Not to be
confused with ``decoder="efficient"``, another network (convolve first, upsample after, not exact
for a 3x3 kernel); this is the paper network, computed cheaper.
"""

from __future__ import annotations

import keras

from .layers import BilinearUpsample, UpsampledConv


def fusible_pairs(model) -> dict[str, int]:
    """``{conv layer name: upsampling factor}`` for every Conv2D (3x3, stride 1, same padding, no
    dilation, no activation) that reads a BilinearUpsample no other layer reads."""
    pairs: dict[str, int] = {}
    for layer in model.layers:
        if not isinstance(layer, BilinearUpsample):
            continue
        readers = [node.operation for node in layer._outbound_nodes]  # Keras' graph, read only
        if len(readers) == 1 and _fusible(readers[0]):
            pairs[readers[0].name] = layer.factor
    return pairs


def _fusible(layer) -> bool:
    # the layer's attributes, not get_config(): Keras' serialisation imports TensorFlow when it is
    # installed, whatever the backend
    if type(layer) is not keras.layers.Conv2D:
        return False
    return (
        tuple(layer.kernel_size) == (3, 3)
        and tuple(layer.strides) == (1, 1)
        and layer.padding == "same"
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
        and layer.activation is keras.activations.linear
        and layer.data_format == "channels_last"
    )


def fuse_upsampled_convs(model, share_weights: bool = False):
    """``model`` with every fusible ``BilinearUpsample -> Conv2D`` pair computed by one
    :class:`UpsampledConv`; ``model`` itself when there is none (UNet, UNet++, the efficient
    decoder). The other layers are shared with ``model``. The fused layers get copies of the
    kernels and biases (an inference view: fuse again after further training), or with
    ``share_weights`` compute with the Conv2D layers' own variables (a training view; not saved)."""
    pairs = fusible_pairs(model)
    if not pairs:
        return model
    fused: dict[str, UpsampledConv] = {}

    def clone(layer):
        if layer.name in pairs:
            fused[layer.name] = UpsampledConv(
                layer.filters,
                pairs[layer.name],
                use_bias=layer.use_bias,
                source=layer if share_weights else None,
                dtype=layer.dtype_policy,
                name=layer.name,
            )
            return fused[layer.name]
        return layer

    def call(layer, *args, **kwargs):
        if isinstance(layer, BilinearUpsample) and any(n.operation.name in pairs for n in layer._outbound_nodes):
            return args[0]  # the UpsampledConv reading it upsamples
        return layer(*args, **kwargs)

    view = keras.Model(model.inputs, model.output, name=model.name)  # uncompiled: clone_model recompiles
    out = keras.models.clone_model(view, clone_function=clone, call_function=call)
    if not share_weights:
        for name, layer in fused.items():
            layer.set_weights(model.get_layer(name).get_weights())
    return out
