"""Custom layers of keras-unet3plus.

Only what Keras has no layer for lives here (the CGM gate, the deploy-time binarisation, bilinear
upsampling of unknown sizes and its exact fusion with the next convolution); every
layer is registered serializable so models reload with `safe_mode=True` and no `custom_objects`.

Every layer computes with `keras.ops`, the same code under TensorFlow, JAX and PyTorch. Three spots
keep a TensorFlow-only form, because the exported graphs (SavedModel, ONNX, LiteRT, TensorRT's op
list) are traced from it under the TensorFlow backend: `Binarize`'s argmax, `BilinearUpsample` on
unknown (None) sizes (only a TensorFlow trace has those) and the `UpsampledConv` graph. Under JAX
and PyTorch a layer is always called on concrete sizes, so the `keras.ops` form is enough there.
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "keras_unet3plus"


def _tensorflow() -> bool:
    """True under the TensorFlow backend, the one the exported graphs are traced with."""
    return keras.backend.backend() == "tensorflow"


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
        if seg.shape[-1] == 1:
            return ops.cast(seg > self.threshold, "float32")
        if _tensorflow():
            import tensorflow as tf  # tf.argmax converts to ONNX/TFLite; keras.ops.argmax does not (see ClassGate)

            return tf.cast(tf.expand_dims(tf.argmax(seg, axis=-1), -1), "float32")
        return ops.cast(ops.expand_dims(ops.argmax(seg, axis=-1), -1), "float32")

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
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:  # a TensorFlow trace of a fully convolutional model (exports)
            import tensorflow as tf

            size = tf.shape(x)[1:3] * self.factor
            return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)
        # tf.image.resize returns float32 whatever it is given: cast back (mixed precision)
        return ops.cast(ops.image.resize(x, (h * self.factor, w * self.factor), interpolation="bilinear"), x.dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.factor, None if w is None else w * self.factor, c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class UpsampledConv(keras.layers.Layer):
    """``Conv2D(filters, 3, padding="same")(BilinearUpsample(factor)(x))``, computed at x's resolution.

    Exact, with about ``factor**2`` fewer multiply-adds: a 3x3 convolution is a sum of nine shifted
    1x1 convolutions, and a 1x1 convolution commutes with bilinear upsampling (one mixes channels,
    the other pixels, both linearly). So the nine 1x1 convolutions run on the small map (one
    convolution to ``9 * filters`` channels); the result is upsampled along x, its three x-shifts
    summed (``3 * filters`` channels left), then upsampled along y and its three y-shifts summed
    (zeros shifted in, as ``padding="same"``): bilinear upsampling is separable, and the separable
    order keeps the full-resolution work at a third. The paper decoder spends half its
    multiply-adds convolving upsampled maps; inference graphs use this layer instead (see
    :mod:`keras_unet3plus.fused_decoder`). Weights are the Conv2D's (kernel ``(3, 3, Cin, filters)``, bias).
    ``source``: a built Conv2D whose own variables this layer computes with (a training view: the
    gradients land on the paper model's variables); such a layer is not saved.
    """

    def __init__(self, filters: int, factor: int, use_bias: bool = True, source=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.factor = int(factor)
        self.use_bias = bool(use_bias)
        self.source = source

    def build(self, input_shape):
        if self.source is not None:
            return
        self.kernel = self.add_weight(
            name="kernel", shape=(3, 3, int(input_shape[-1]), self.filters), initializer="he_normal"
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def _weights(self):
        if self.source is not None:
            return self.source.kernel, self.source.bias if self.use_bias else None
        return self.kernel, self.bias

    def call(self, x):
        if not _tensorflow():
            return self._call_ops(x)
        import tensorflow as tf  # the graph every export of a paper-decoder model is traced from

        kernel, bias = self._weights()
        f, cin = self.filters, kernel.shape[2]
        h, w = x.shape[1], x.shape[2]
        if h is not None and w is not None:
            h, w = tf.constant(h), tf.constant(w)
        else:
            h, w = tf.shape(x)[1], tf.shape(x)[2]
        big_h, big_w = h * self.factor, w * self.factor
        # channel block 3 * dx + dy holds the 1x1 convolution of kernel tap (dy, dx)
        taps = tf.reshape(tf.transpose(tf.cast(kernel, x.dtype), (2, 1, 0, 3)), (1, 1, cin, 9 * f))
        small = tf.nn.conv2d(x, taps, strides=1, padding="VALID")
        # bilinear upsampling is separable and a shift along one axis commutes with upsampling along
        # the other: upsample along x, sum the three x-shifts (3f channels left), then along y
        wide = self._shift_sum(self._resize(small, h, big_w), axis=2, size=big_w, blocks=3 * f)
        out = self._shift_sum(self._resize(wide, big_h, big_w), axis=1, size=big_h, blocks=f)
        if bias is not None:
            out = out + tf.cast(bias, x.dtype)
        return out

    def _call_ops(self, x):
        """The same computation in `keras.ops` (JAX, PyTorch: sizes are always known there)."""
        kernel, bias = self._weights()
        f, cin = self.filters, kernel.shape[2]
        h, w = x.shape[1], x.shape[2]
        big_h, big_w = h * self.factor, w * self.factor
        taps = ops.reshape(ops.transpose(ops.cast(kernel, x.dtype), (2, 1, 0, 3)), (1, 1, cin, 9 * f))
        small = ops.conv(x, taps, strides=1, padding="valid")
        wide = ops.cast(ops.image.resize(small, (h, big_w), interpolation="bilinear"), x.dtype)
        wide = self._shift_sum_ops(wide, axis=2, size=big_w, blocks=3 * f)
        out = ops.cast(ops.image.resize(wide, (big_h, big_w), interpolation="bilinear"), x.dtype)
        out = self._shift_sum_ops(out, axis=1, size=big_h, blocks=f)
        if bias is not None:
            out = out + ops.cast(bias, x.dtype)
        return out

    @staticmethod
    def _shift_sum_ops(x, axis: int, size: int, blocks: int):
        """`_shift_sum` in `keras.ops`."""
        pad = [[0, 0]] * 4
        pad[axis] = [1, 1]
        padded = ops.pad(x, pad)
        out = None
        for d in range(3):
            index = [slice(None)] * 4
            index[axis] = slice(d, d + size)
            index[3] = slice(d * blocks, (d + 1) * blocks)
            part = padded[tuple(index)]  # out[p] += x[p + d - 1]
            out = part if out is None else out + part
        return out

    @staticmethod
    def _resize(x, h, w):
        import tensorflow as tf

        return tf.cast(tf.image.resize(x, tf.stack([h, w]), method="bilinear"), x.dtype)

    @staticmethod
    def _shift_sum(x, axis: int, size, blocks: int):
        """``sum_d x[block d]`` shifted by ``d - 1`` pixels along ``axis`` (zeros shifted in), the
        three taps of a 3-wide convolution."""
        import tensorflow as tf

        pad = [[0, 0]] * 4
        pad[axis] = [1, 1]
        padded = tf.pad(x, pad)
        out = None
        for d in range(3):
            begin, length = [0, 0, 0, d * blocks], [-1, -1, -1, blocks]
            begin[axis], length[axis] = d, size
            part = tf.slice(padded, begin, length)  # out[p] += x[p + d - 1]
            out = part if out is None else out + part
        return out

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else h * self.factor, None if w is None else w * self.factor, self.filters)

    def get_config(self):
        if self.source is not None:
            raise TypeError(
                f"{self.name} computes with {self.source.name}'s variables (a training view); "
                "save the model it was made from"
            )
        return {**super().get_config(), "filters": self.filters, "factor": self.factor, "use_bias": self.use_bias}
