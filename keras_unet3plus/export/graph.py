"""The exported inference graph: the deploy form of a model as a plain `tf.function`.

Every target (SavedModel, ONNX, LiteRT, TensorRT via ONNX) is made from the same function, so they
all compute the same thing: `seg` gated by the CGM decision, optionally thresholded, and with
`outputs="all"` the side outputs and `cls` beside it.

It traces `deploy_model()` itself (the CGM gate and the binarisation are the package's own layers,
written with ops that tf2onnx and the TFLite converter accept), so every artefact computes exactly
what the Keras deploy form computes; the verification step checks that on phantom slices. The paper
decoder's upsample-then-convolve pairs are traced in their exact cheaper form
(:mod:`keras_unet3plus.fused_decoder`), so the check also holds that rewrite to the Keras model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..output_names import CLS, SEG
from ..runtimes import INPUT_NAME, training_outputs

if TYPE_CHECKING:  # Keras (and TensorFlow) load when a graph is traced, not when a target is listed
    import keras

OUTPUT_FORMS = ("deploy", "all")


@dataclass(frozen=True)
class GraphSpec:
    """What the exported graph computes."""

    outputs: str = "deploy"  # "deploy": `seg` only; "all": `seg` + side outputs + `cls`
    threshold: float | None = None  # None: probabilities; a float: masks (0/1, or argmax labels)
    gate: bool = True  # apply the CGM gate when the model has a `cls` output

    def __post_init__(self):
        if self.outputs not in OUTPUT_FORMS:
            raise ValueError(f"outputs must be one of {OUTPUT_FORMS}, got {self.outputs!r}")
        if self.threshold is not None and not 0.0 < float(self.threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")


def to_mask(seg: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Probabilities (B, H, W, C) -> label map (B, H, W) int: `p > t` for 1 channel, argmax otherwise.

    A map that already holds labels (1 channel, values in {0, 1, 2, ...}) is returned as is.
    """
    seg = np.asarray(seg)
    if seg.shape[-1] == 1:
        return (seg[..., 0] > threshold).astype(np.int32)
    return np.argmax(seg, axis=-1).astype(np.int32)


def input_spec(model: keras.Model, batch: int | None = None):
    """`tf.TensorSpec` named `image` with a dynamic (None) batch axis."""
    import tensorflow as tf

    shape = tuple(model.inputs[0].shape[1:])
    return tf.TensorSpec((batch, *shape), tf.float32, name=INPUT_NAME)


def serving_function(model: keras.Model, spec: GraphSpec):
    """`(tf.function, TensorSpec)`: `image (B, H, W, C) float32 -> {name: tensor}`, inference mode."""
    import tensorflow as tf

    from ..fused_decoder import fuse_upsampled_convs
    from ..model import deploy_model

    base = training_outputs(model)
    sig = input_spec(base)
    deploy = deploy_model(
        fuse_upsampled_convs(base), gate=spec.gate, threshold=spec.threshold, all_outputs=spec.outputs == "all"
    )

    @tf.function(input_signature=[sig])
    def serve(image):
        return dict(deploy(image, training=False))

    return serve, sig, base


def pair_functions(model: keras.Model, spec: GraphSpec):
    """The skip-absent pair of the deploy graph as two `(tf.function, input signature, keras model
    it runs)`:
    ``encode``: ``image -> {feature_0.., cls}`` (everything the CGM needs, split exactly where
    `split_at_classifier` finds the boundary) and ``decode``: ``feature_0.. -> {seg}``, with the
    in-graph threshold of ``spec``. On slices the CGM calls present the gate is 1, so ``seg`` there
    equals the deploy graph's; the runtime fills the other slices with zeros."""
    import keras
    import tensorflow as tf

    from ..fused_decoder import fuse_upsampled_convs
    from ..layers import Binarize
    from ..runtimes.keras import split_at_classifier

    encoder, decoder = split_at_classifier(fuse_upsampled_convs(training_outputs(model)))
    if spec.threshold is not None:
        decoder = keras.Model(decoder.inputs, Binarize(spec.threshold, name="seg_mask")(decoder.output))
    image = input_spec(model)
    features = [
        tf.TensorSpec((None, *tuple(t.shape)[1:]), tf.float32, name=f"feature_{i}")
        for i, t in enumerate(decoder.inputs)
    ]

    @tf.function(input_signature=[image])
    def encode(image):
        *outs, cls = encoder(image, training=False)
        return {**{f"feature_{i}": f for i, f in enumerate(outs)}, CLS: cls}

    @tf.function(input_signature=features)
    def decode(*feature_maps):
        return {"seg": decoder(list(feature_maps), training=False)}

    return (encode, [image], encoder), (decode, features, decoder)


def output_names(model: keras.Model, spec: GraphSpec) -> list[str]:
    """Names of the exported graph's outputs, `seg` first."""
    base = training_outputs(model)
    names = list(base.output.keys()) if isinstance(base.output, dict) else list(base.output_names)
    if spec.outputs == "deploy":
        return [SEG]
    return [SEG] + sorted(n for n in names if n != SEG)
