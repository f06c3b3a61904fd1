"""Training-time augmentation of 2.5D samples (TensorFlow ops, stateless and seeded).

Small in-plane rotation / scaling / shift applied identically to image (bilinear) and mask
(nearest), plus intensity jitter on the windowed image. No left-right flip by default: the liver is
on the patient's right and the spleen on the left, so a flipped abdomen is not a plausible input
and would teach the model to ignore position. (Left-right is the slice row axis, canonical X.)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges. Intensities are in window units ([0, 1] = the HU window)."""

    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.04
    intensity_shift: float = 0.04
    intensity_scale: float = 0.08
    noise_std: float = 0.0
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


def augment_sample(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
                   cfg: AugmentConfig = AugmentConfig()) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment one (H, W, C) float image in [0, 1] and its (H, W, 1) mask with a [2] int seed."""
    seed = tf.cast(seed, tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    shape = tf.shape(image)
    transform = _transform(seeds[0], shape[0], shape[1], cfg)
    out_shape = shape[:2]
    image = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=out_shape,
        interpolation="BILINEAR", fill_mode="CONSTANT", fill_value=0.0)[0]
    mask_dtype = mask.dtype
    mask = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(mask, tf.float32)[None], transforms=transform, output_shape=out_shape,
        interpolation="NEAREST", fill_mode="CONSTANT", fill_value=0.0)[0]
    mask = tf.cast(mask, mask_dtype)
    jitter = tf.random.stateless_uniform([2], seed=seeds[1], minval=-1.0, maxval=1.0)
    image = image * (1.0 + jitter[0] * cfg.intensity_scale) + jitter[1] * cfg.intensity_shift
    if cfg.noise_std > 0:
        image = image + tf.random.stateless_normal(tf.shape(image), seed=seeds[2], stddev=cfg.noise_std)
    if cfg.flip_lr:
        flip = tf.random.stateless_uniform([], seed=seeds[3]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [0]), lambda: image)
        mask = tf.cond(flip, lambda: tf.reverse(mask, [0]), lambda: mask)
    return tf.clip_by_value(image, 0.0, 1.0), mask
