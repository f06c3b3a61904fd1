"""Custom layers of keras-unet3plus.

Only what Keras has no layer for lives here (the CGM gate and the deploy-time binarisation); every
layer is registered serializable so models reload with `safe_mode=True` and no `custom_objects`.
"""
from __future__ import annotations

import keras
from keras import ops

PACKAGE = "keras_unet3plus"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassGate(keras.layers.Layer):
    """Multiply a segmentation map by the CGM decision (argmax of the 2-way `cls` output).

    The official UNet 3+ code multiplies the *logits* by the decision, which leaves sigmoid(0) = 0.5
    where the organ is absent; gating the probabilities gives 0 there, which is what a user expects.
    Inputs: `[seg (B, H, W, C), cls (B, 2)]`; output: `seg` where cls says present, zeros elsewhere.
    """

    def call(self, inputs):
        seg, cls = inputs
        # argmax over 2 classes, written as a comparison (ties -> absent, as argmax): keras.ops.argmax
        # adds Bitcast/BitwiseAnd ops on TF that neither tf2onnx nor the TFLite converter accept.
        present = ops.cast(cls[:, 1] > cls[:, 0], seg.dtype)
        return seg * ops.reshape(present, (-1, 1, 1, 1))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package=PACKAGE)
class Binarize(keras.layers.Layer):
    """Turn probabilities into a label map inside the graph, so exported models emit masks.

    One channel: `prob > threshold` as 0/1. Several channels (softmax): argmax label.
    Output is float32 `(B, H, W, 1)`, which every export target supports.
    """

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, seg):
        import tensorflow as tf  # tf.argmax converts to ONNX/TFLite; keras.ops.argmax does not (see ClassGate)

        if seg.shape[-1] == 1:
            return tf.cast(seg > self.threshold, "float32")
        return tf.cast(tf.expand_dims(tf.argmax(seg, axis=-1), -1), "float32")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BilinearUpsample(keras.layers.Layer):
    """Bilinear upsampling by an integer factor that also works on unknown (None) spatial sizes.

    `keras.layers.UpSampling2D(interpolation="bilinear")` fails on `(None, None, C)` inputs in Keras
    3.15; this computes the target size from the static shape when known (clean exported graphs) and
    from the dynamic shape otherwise. Same sampling as UpSampling2D (half-pixel centres, no antialias).
    """

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        import tensorflow as tf

        h, w = x.shape[1], x.shape[2]
        if h is not None and w is not None:
            size = (h * self.factor, w * self.factor)
        else:
            size = tf.shape(x)[1:3] * self.factor
        return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.factor, None if w is None else w * self.factor, c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
