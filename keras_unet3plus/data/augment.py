"""Training-time augmentation of 2.5D samples (TensorFlow ops, stateless and seeded).

What a phantom (or a small real data set) does not vary enough, the augmentation does, on the
windowed image in [0, 1] (1 window unit = the HU window width, 450 HU for the liver window):

- geometry, identical for image (bilinear) and mask (nearest): small in-plane rotation, isotropic
  scale (patient size / field of view), shift;
- HU calibration and contrast: a shift and a scale of the window values (contrast timing, scanner
  calibration, window differences);
- scanner blur: a Gaussian of random width (soft vs sharp reconstruction kernels, partial volume),
  sometimes a down-and-up resampling (thick / low-resolution acquisitions);
- noise: Gaussian noise smoothed by a small kernel, so it is correlated like CT noise rather
  than white, at a random level.

No left-right flip by default: the liver is on the patient's right and the spleen on the left, so
a flipped abdomen is not a plausible input and would teach the model to ignore position.
(Left-right is the slice row axis, canonical X.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges. Intensities are in window units ([0, 1] = the HU window).

    ``blur_sigma``: largest Gaussian blur (pixels), applied with probability ``blur_prob``;
    ``resample``: (probability, smallest factor) of a down-and-up resampling; ``noise_std``:
    largest noise level (the level is drawn uniformly in [0, noise_std] per sample).
    """

    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.04
    intensity_shift: float = 0.04
    intensity_scale: float = 0.08
    noise_std: float = 0.025
    blur_sigma: float = 0.9
    blur_prob: float = 0.4
    resample: tuple[float, float] = (0.15, 0.6)
    flip_lr: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _transform(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Projective transform (output pixel -> input pixel) for a random rotation/scale/shift."""
    u = tf.random.stateless_uniform([4], seed=seed, minval=-1.0, maxval=1.0)
    angle = u[0] * (cfg.rotation_deg * math.pi / 180.0)
    lo, hi = cfg.scale
    scale = (lo + hi) / 2.0 + u[1] * (hi - lo) / 2.0
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    tx, ty = u[2] * cfg.translate * w, u[3] * cfg.translate * h
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # input = A (output - c - t) + c
    a0, a1 = cos, -sin
    b0, b1 = sin, cos
    a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
    b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
    return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])[None, :]


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian blur of an (H, W, C) image (5-tap kernel, reflect padding)."""
    x = tf.range(-2.0, 3.0)
    k = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    k = k / tf.reduce_sum(k)
    c = tf.shape(image)[-1]
    img = tf.pad(image[None], [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
    kh = tf.tile(tf.reshape(k, [5, 1, 1, 1]), [1, 1, c, 1])
    kw = tf.tile(tf.reshape(k, [1, 5, 1, 1]), [1, 1, c, 1])
    img = tf.nn.depthwise_conv2d(img, kh, [1, 1, 1, 1], "VALID")
    img = tf.nn.depthwise_conv2d(img, kw, [1, 1, 1, 1], "VALID")
    return img[0]


def augment_sample(
    image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, cfg: AugmentConfig = AugmentConfig()
) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment one (H, W, C) float image in [0, 1] and its (H, W, 1) mask with a [2] int seed."""
    seed = tf.cast(seed, tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, 7)
    shape = tf.shape(image)
    transform = _transform(seeds[0], shape[0], shape[1], cfg)
    out_shape = shape[:2]
    image = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=out_shape,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )[0]
    mask_dtype = mask.dtype
    mask = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(mask, tf.float32)[None],
        transforms=transform,
        output_shape=out_shape,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
        fill_value=0.0,
    )[0]
    mask = tf.cast(mask, mask_dtype)
    # scanner resolution: blur, sometimes a down-and-up resampling
    u = tf.random.stateless_uniform([4], seed=seeds[4])
    if cfg.blur_sigma > 0 and cfg.blur_prob > 0:
        sigma = 0.3 + u[0] * (cfg.blur_sigma - 0.3) if cfg.blur_sigma > 0.3 else cfg.blur_sigma * u[0]
        image = tf.cond(u[1] < cfg.blur_prob, lambda: _gaussian_blur(image, sigma), lambda: image)
    p_res, f_min = cfg.resample
    if p_res > 0:
        f = f_min + u[2] * (1.0 - f_min)
        hw = tf.cast(tf.cast(shape[:2], tf.float32) * f, tf.int32)

        def _resample():
            small = tf.image.resize(image, tf.maximum(hw, 8), method="bilinear", antialias=True)
            return tf.image.resize(small, shape[:2], method="bilinear")

        image = tf.cond(u[3] < p_res, _resample, lambda: image)
    # HU calibration / contrast
    jitter = tf.random.stateless_uniform([2], seed=seeds[1], minval=-1.0, maxval=1.0)
    image = image * (1.0 + jitter[0] * cfg.intensity_scale) + jitter[1] * cfg.intensity_shift
    # correlated noise (the same field would be wrong for the 3 slices: draw per channel)
    if cfg.noise_std > 0:
        level = tf.random.stateless_uniform([], seed=seeds[5]) * cfg.noise_std
        white = tf.random.stateless_normal(tf.shape(image), seed=seeds[2])
        smooth = _gaussian_blur(white, tf.constant(0.8))
        smooth = smooth / (tf.math.reduce_std(smooth) + 1e-6)
        image = image + level * smooth
    if cfg.flip_lr:
        flip = tf.random.stateless_uniform([], seed=seeds[3]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [0]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [0]), lambda: mask)
    return tf.clip_by_value(image, 0.0, 1.0), mask
