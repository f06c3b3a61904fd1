"""UNet 3+ hybrid loss (focal + MS-SSIM + IoU), deep supervision, the CGM loss, and the registries
the trainer picks its loss from (:data:`LOSSES`, the hybrid loss's terms :data:`HYBRID_TERMS`).

Huang et al. (ICASSP 2020) train every output of UNet 3+ with a three-level hybrid loss:

* focal loss (pixel level),
* MS-SSIM loss (patch level),
* IoU loss (map level),

and the classification-guided module (CGM) with binary cross-entropy. This module provides
those losses as serializable `keras.losses.Loss` classes plus two helpers that wire them to a
model built by `keras_unet3plus.build`:

    model.compile(optimizer, **keras_unet3plus.losses.for_model(model))
    ds = ds.map(keras_unet3plus.losses.expand_targets(model))

Conventions (docs/design.md): every output is trained against the *same* mask `(B, H, W, 1)`
(float {0, 1} for binary tasks, int label map for multi-class tasks). `y_pred` holds
probabilities: one sigmoid channel (binary) or K softmax channels with channel 0 = background.
Each loss derives what it needs (one-hot, the CGM's organ-present label) from that mask. A
one-hot mask with K channels is accepted too.

Choices the paper does not fix (documented here once):

* Focal: `gamma=2.0` (Lin et al. 2017, also the Keras default); `alpha=None` means no class
  balancing (Keras' `apply_class_balancing=False`, MONAI's `FocalLoss(alpha=None)`); a float
  `alpha` weights the foreground by `alpha` and background by `1 - alpha` (binary) or scales
  every class (multi-class; a per-class list is accepted there). The paper gives neither value.
  Per-sample focal = mean over pixels of the Keras focal value (binary: over the one channel;
  multi-class: the categorical focal sum over classes).
* IoU: soft Jaccard per sample and channel, `1 - (sum(y p) + s) / (sum(y) + sum(p) - sum(y p) + s)`
  with `smooth=1.0` so that an empty slice predicted empty gives 0 and gradients stay bounded
  (the official code has no smoothing term and divides 0 by 0 on empty slices).
* MS-SSIM: see `ms_ssim` / `ms_ssim_config` for the exact constants and the small-input rule.
* All three terms are computed per class channel (including the background channel of a
  softmax output) and averaged over channels, giving one value per sample; Keras then averages
  over the batch.

Written on `keras.ops`: the same code trains under TensorFlow, JAX and PyTorch, and importing this
module imports no TensorFlow under JAX or PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import keras
from keras import ops

from .output_names import CLS, SEG, SIDE_PREFIX, is_side, side_level

__all__ = [
    "MSSSIM_POWER_FACTORS",
    "ms_ssim_config",
    "ms_ssim",
    "FocalLoss",
    "MSSSIMLoss",
    "IoULoss",
    "DiceLoss",
    "CrossEntropyLoss",
    "HybridLoss",
    "HYBRID_TERMS",
    "register_term",
    "CGMLoss",
    "expand_targets",
    "for_model",
    "LOSSES",
    "register_loss",
    "get_loss",
]

_PACKAGE = "keras_unet3plus"

#: Power factors (exponents) of the five MS-SSIM scales, finest first (Wang et al. 2003;
#: also TF's defaults and the UNet 3+ official code).
MSSSIM_POWER_FACTORS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_EPS = 1e-7  # clip for probabilities inside the focal loss (Keras' backend.epsilon()).


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _as_float32(x: Any) -> Any:
    """Cast to float32: losses are computed in float32 even under mixed precision."""
    x = ops.convert_to_tensor(x)
    return x if keras.backend.standardize_dtype(x.dtype) == "float32" else ops.cast(x, "float32")


def _dense_target(y_true: Any, channels: int) -> Any:
    """Turn the shared mask into a float32 target with `channels` channels.

    binary (channels == 1): mask `(B, H, W, 1)` or `(B, H, W)` in {0, 1} -> `(B, H, W, 1)`;
    multi-class: int label map `(B, H, W, 1)` / `(B, H, W)` -> one-hot `(B, H, W, K)`;
    a target that already has K > 1 channels is taken as one-hot.
    """
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == 3:
        y_true = y_true[..., None]
    elif rank != 4:
        raise ValueError(
            f"keras_unet3plus.losses: y_true must be a mask of shape (B, H, W, 1) or (B, H, W); "
            f"got shape {y_true.shape}"
        )
    last = y_true.shape[-1]
    if channels == 1:
        if last != 1:
            raise ValueError(
                "keras_unet3plus.losses: a 1-channel (sigmoid) output needs a binary mask "
                f"(B, H, W, 1); got y_true of shape {y_true.shape}"
            )
        return _as_float32(y_true)
    if last == channels:
        return _as_float32(y_true)
    if last != 1:
        raise ValueError(
            f"keras_unet3plus.losses: a {channels}-channel (softmax) output needs an int label map "
            f"(B, H, W, 1) or a one-hot mask (B, H, W, {channels}); got y_true of shape {y_true.shape}"
        )
    # Labels may arrive as float (keras.Loss.__call__ casts y_true to the loss dtype): round.
    labels = ops.cast(ops.round(_as_float32(y_true[..., 0])), "int32")
    return ops.one_hot(labels, channels, dtype="float32")


def _check_pred(y_pred: Any, who: str) -> Any:
    y_pred = _as_float32(y_pred)
    if len(y_pred.shape) != 4 or y_pred.shape[-1] is None:
        raise ValueError(
            f"keras_unet3plus.losses.{who}: y_pred must be (B, H, W, C) probabilities with a known C; "
            f"got shape {y_pred.shape}"
        )
    return y_pred


# --------------------------------------------------------------------------------------------
# MS-SSIM on keras.ops
# --------------------------------------------------------------------------------------------
def ms_ssim_config(
    height: int,
    width: int,
    filter_size: int = 11,
    power_factors: Sequence[float] = MSSSIM_POWER_FACTORS,
) -> tuple[int, tuple[float, ...]]:
    """The filter size and power factors that MS-SSIM uses for an `height` x `width` input.

    `tf.image.ssim_multiscale` needs, at every scale, an image at least as large as the filter;
    scale s (0-based) sees ceil(side / 2^s) pixels, so n scales fit iff
    ``(filter_size - 1) * 2 ** (n - 1) + 1 <= min(height, width)`` (161 for filter 11 and
    5 scales). The rule applied here:

    1. keep `filter_size` and drop the *coarsest* scales until the condition holds
       (320x320 keeps all 5 scales: the paper's configuration; 64x64 keeps 3: 64 >= 41);
    2. if not even one scale fits (min side < filter_size), use a single scale and shrink the
       filter to the largest odd size <= min(height, width) (the Gaussian sigma is unchanged;
       the official PyTorch code does the same with ``min(11, H, W)``);
    3. the kept power factors (the finest ones) are rescaled so that they sum to the same total
       as the full set (1.0001 for the defaults), i.e. MS-SSIM stays a weighted geometric mean of
       the per-scale values with the same overall exponent: if every scale has value v, the result
       is v ** sum(power_factors) whatever the number of scales. When nothing is dropped the
       factors are returned unchanged.
    """
    if height < 1 or width < 1:
        raise ValueError(f"ms_ssim_config: image size must be positive, got {height}x{width}")
    if filter_size < 1 or filter_size % 2 == 0:
        raise ValueError(f"ms_ssim_config: filter_size must be a positive odd integer, got {filter_size}")
    factors = tuple(float(f) for f in power_factors)
    if not factors:
        raise ValueError("ms_ssim_config: power_factors must not be empty")
    side = min(int(height), int(width))
    n = len(factors)
    while n > 1 and (filter_size - 1) * 2 ** (n - 1) + 1 > side:
        n -= 1
    if filter_size > side:  # then n == 1
        filter_size = side if side % 2 == 1 else side - 1
    if n == len(factors):
        return filter_size, factors
    kept = factors[:n]
    scale = sum(factors) / sum(kept)
    return filter_size, tuple(f * scale for f in kept)


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is TF's `_fspecial_gauss` 2-D window."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * coords**2 / sigma**2)
    return g / g.sum()


def _halve(x: Any) -> Any:
    """2x2 average pooling like tf.image.ssim_multiscale: odd sides are padded SYMMETRIC at the end
    (one row or column: a copy of the last one, written as a concatenation every backend has)."""
    h, w = x.shape[1], x.shape[2]
    if h % 2:
        x = ops.concatenate([x, x[:, -1:]], axis=1)
    if w % 2:
        x = ops.concatenate([x, x[:, :, -1:]], axis=2)
    return ops.average_pool(x, 2, strides=2, padding="valid")


def ms_ssim(
    img1: Any,
    img2: Any,
    max_val: float = 1.0,
    power_factors: Sequence[float] = MSSSIM_POWER_FACTORS,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    eps: float = 1e-6,
    adapt: bool = True,
) -> Any:
    """Per-channel MS-SSIM of two `(B, H, W, C)` batches -> `(B, C)` float32.

    Same maths as `tf.image.ssim_multiscale` (Gaussian window `filter_size`/`filter_sigma`,
    c1 = (k1 max_val)^2, c2 = (k2 max_val)^2, contrast-structure at every scale but the last,
    full SSIM at the last, 2x2 average pooling with SYMMETRIC padding of odd sides), written on
    `keras.ops` (any backend), with two differences that make it usable as a loss:

    * per-scale values are clamped with ``max(v, eps)`` before ``v ** p`` (TF uses relu, whose
      zero makes ``pow(0, p < 1)`` produce an infinite derivative and NaN gradients, e.g. for an
      anti-correlated pair y = 1 - x). Where no value is below `eps` the result equals TF's.
    * with `adapt=True` the filter size and scale count follow `ms_ssim_config`, so any input
      size works (TF raises InvalidArgumentError below 161x161 with the defaults).

    It does not average over channels (the hybrid loss needs per-class values); TF's
    `ssim_multiscale` equals ``ms_ssim(...).mean(-1)``. H and W must be static.
    """
    x = _as_float32(img1)
    y = _as_float32(img2)
    if len(x.shape) != 4 or len(y.shape) != 4:
        raise ValueError(f"ms_ssim: expected (B, H, W, C) images, got {x.shape} and {y.shape}")
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    if height is None or width is None or channels is None:
        raise ValueError(
            "ms_ssim: height, width and channels must be known statically to choose the scales "
            f"(got {x.shape}); train on fixed-size crops or give the Input layer a fixed size"
        )
    if adapt:
        filter_size, factors = ms_ssim_config(height, width, filter_size, power_factors)
    else:
        factors = tuple(float(f) for f in power_factors)
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2

    g = _gaussian_1d(filter_size, filter_sigma).astype(np.float32)
    # Separable Gaussian: a column pass then a row pass (same window as TF's 2-D kernel).
    k_col = ops.convert_to_tensor(np.tile(g.reshape(filter_size, 1, 1, 1), (1, 1, 4 * channels, 1)))
    k_row = ops.convert_to_tensor(np.tile(g.reshape(1, filter_size, 1, 1), (1, 1, 4 * channels, 1)))

    def reducer(stack: Any) -> Any:
        out = ops.depthwise_conv(stack, k_col, strides=1, padding="valid")
        return ops.depthwise_conv(out, k_row, strides=1, padding="valid")

    values = []
    n_scales = len(factors)
    for scale in range(n_scales):
        if scale > 0:
            x, y = _halve(x), _halve(y)
        # One depthwise pass over [x, y, x*y, x^2 + y^2] (4C channels).
        stats = reducer(ops.concatenate([x, y, x * y, x * x + y * y], axis=-1))
        mu_x, mu_y, e_xy, e_sq = ops.split(stats, 4, axis=-1)
        num0 = 2.0 * mu_x * mu_y
        den0 = ops.square(mu_x) + ops.square(mu_y)
        cs_map = (2.0 * e_xy - num0 + c2) / (e_sq - den0 + c2)
        if scale < n_scales - 1:
            values.append(ops.mean(cs_map, axis=(1, 2)))
        else:
            luminance = (num0 + c1) / (den0 + c1)
            values.append(ops.mean(luminance * cs_map, axis=(1, 2)))
    stacked = ops.stack(values, axis=-1)  # (B, C, n_scales)
    stacked = ops.maximum(stacked, eps)
    return ops.prod(ops.power(stacked, ops.convert_to_tensor(np.asarray(factors, np.float32))), axis=-1)


# --------------------------------------------------------------------------------------------
# Loss classes
# --------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=_PACKAGE)
class FocalLoss(keras.losses.Loss):
    """Pixel-level focal loss on probabilities, one value per sample.

    1 channel: `keras.losses.BinaryFocalCrossentropy`; K channels: one-hot target and
    `keras.losses.CategoricalFocalCrossentropy`. Averaged over pixels. `alpha=None` (default):
    no class balancing; `gamma=2.0`. The paper gives neither (see module docstring).
    """

    def __init__(
        self,
        alpha: float | Sequence[float] | None = None,
        gamma: float = 2.0,
        name: str = "focal",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = list(alpha) if isinstance(alpha, Sequence) else alpha
        self.gamma = float(gamma)
        binary_alpha = None if isinstance(alpha, Sequence) or alpha is None else float(alpha)
        self._binary = keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=binary_alpha is not None,
            alpha=0.25 if binary_alpha is None else binary_alpha,
            gamma=self.gamma,
            reduction=None,
        )
        self._categorical = keras.losses.CategoricalFocalCrossentropy(
            alpha=1.0 if self.alpha is None else self.alpha, gamma=self.gamma, reduction=None
        )

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = _check_pred(y_pred, "FocalLoss")
        channels = y_pred.shape[-1]
        target = _dense_target(y_true, channels)
        y_pred = ops.clip(y_pred, _EPS, 1.0 - _EPS)
        if channels == 1:
            if isinstance(self.alpha, list):
                raise ValueError("FocalLoss: a per-class alpha list needs a multi-class (softmax) output")
            per_pixel = self._binary(target, y_pred)  # (B, H, W)
        else:
            per_pixel = self._categorical(target, y_pred)  # (B, H, W)
        return ops.mean(per_pixel, axis=(1, 2))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(alpha=self.alpha, gamma=self.gamma)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MSSSIMLoss(keras.losses.Loss):
    """Patch-level loss ``1 - MS-SSIM`` averaged over class channels, one value per sample.

    Defaults are the paper's: filter 11, sigma 1.5, k1 = 0.01, k2 = 0.03 (c1 = 0.01^2,
    c2 = 0.03^2 for max_val = 1), 5 scales with `MSSSIM_POWER_FACTORS`; smaller inputs follow
    `ms_ssim_config`. NaN-free gradients thanks to the `eps` clamp (see `ms_ssim`).
    """

    def __init__(
        self,
        max_val: float = 1.0,
        power_factors: Sequence[float] = MSSSIM_POWER_FACTORS,
        filter_size: int = 11,
        filter_sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        eps: float = 1e-6,
        name: str = "ms_ssim",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.max_val = float(max_val)
        self.power_factors = [float(p) for p in power_factors]
        self.filter_size = int(filter_size)
        self.filter_sigma = float(filter_sigma)
        self.k1 = float(k1)
        self.k2 = float(k2)
        self.eps = float(eps)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = _check_pred(y_pred, "MSSSIMLoss")
        target = _dense_target(y_true, y_pred.shape[-1])
        value = ms_ssim(
            target,
            y_pred,
            max_val=self.max_val,
            power_factors=self.power_factors,
            filter_size=self.filter_size,
            filter_sigma=self.filter_sigma,
            k1=self.k1,
            k2=self.k2,
            eps=self.eps,
        )
        return 1.0 - ops.mean(value, axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            max_val=self.max_val,
            power_factors=self.power_factors,
            filter_size=self.filter_size,
            filter_sigma=self.filter_sigma,
            k1=self.k1,
            k2=self.k2,
            eps=self.eps,
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class IoULoss(keras.losses.Loss):
    """Map-level soft Jaccard loss per sample and channel, averaged over channels.

    ``1 - (sum(y p) + smooth) / (sum(y) + sum(p) - sum(y p) + smooth)`` over H, W.
    """

    def __init__(
        self,
        smooth: float = 1.0,
        name: str = "iou",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = float(smooth)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = _check_pred(y_pred, "IoULoss")
        target = _dense_target(y_true, y_pred.shape[-1])
        inter = ops.sum(target * y_pred, axis=(1, 2))
        union = ops.sum(target, axis=(1, 2)) + ops.sum(y_pred, axis=(1, 2)) - inter
        iou = (inter + self.smooth) / (union + self.smooth)
        return 1.0 - ops.mean(iou, axis=-1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(smooth=self.smooth)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceLoss(IoULoss):
    """Soft Dice loss per sample, averaged over channels (the Dice half of nnU-Net's default loss).

    ``1 - (2 sum(y p) + smooth) / (sum(y) + sum(p) + smooth)`` over H, W; with K softmax channels
    the background channel (0) is left out, as nnU-Net does, so a small organ is not drowned by it.
    """

    def __init__(self, smooth: float = 1.0, name: str = "dice", **kwargs: Any) -> None:
        super().__init__(smooth=smooth, name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = _check_pred(y_pred, "DiceLoss")
        target = _dense_target(y_true, y_pred.shape[-1])
        if y_pred.shape[-1] > 1:
            target, y_pred = target[..., 1:], y_pred[..., 1:]
        inter = ops.sum(target * y_pred, axis=(1, 2))
        sizes = ops.sum(target, axis=(1, 2)) + ops.sum(y_pred, axis=(1, 2))
        return 1.0 - ops.mean((2.0 * inter + self.smooth) / (sizes + self.smooth), axis=-1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CrossEntropyLoss(keras.losses.Loss):
    """Pixel-level cross-entropy on probabilities per sample (binary for one sigmoid channel,
    categorical for K softmax channels), averaged over pixels."""

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = _check_pred(y_pred, "CrossEntropyLoss")
        channels = y_pred.shape[-1]
        target = _dense_target(y_true, channels)
        y_pred = ops.clip(y_pred, _EPS, 1.0 - _EPS)
        if channels == 1:
            per_pixel = -(target * ops.log(y_pred) + (1.0 - target) * ops.log(1.0 - y_pred))[..., 0]
        else:
            per_pixel = -ops.sum(target * ops.log(y_pred), axis=-1)
        return ops.mean(per_pixel, axis=(1, 2))


#: The terms a :class:`HybridLoss` can hold: name -> loss class (each one value per sample on
#: ``(mask, probabilities)``, with a ``get_config``). Adding a term is one class plus one line here
#: (or :func:`register_term`); it is then serialised by name like the paper's three.
HYBRID_TERMS: dict[str, type] = {
    "focal": FocalLoss,
    "ms_ssim": MSSSIMLoss,
    "iou": IoULoss,
    "dice": DiceLoss,
    "ce": CrossEntropyLoss,
}
#: the paper's hybrid loss, in the order its terms are summed
PAPER_TERMS = ("focal", "ms_ssim", "iou")

#: Options of the paper terms that may be given to :class:`HybridLoss` directly (the form of older
#: saved files and of ``for_model``): name -> (term, the term's own parameter).
HYBRID_PART_OPTIONS = {
    "alpha": ("focal", "alpha"),
    "gamma": ("focal", "gamma"),
    "power_factors": ("ms_ssim", "power_factors"),
    "filter_size": ("ms_ssim", "filter_size"),
    "filter_sigma": ("ms_ssim", "filter_sigma"),
    "k1": ("ms_ssim", "k1"),
    "k2": ("ms_ssim", "k2"),
    "ms_ssim_eps": ("ms_ssim", "eps"),
    "iou_smooth": ("iou", "smooth"),
}


def register_term(name: str, cls: type) -> type:
    """Make ``cls`` (a ``keras.losses.Loss`` giving one value per sample) a hybrid-loss term."""
    HYBRID_TERMS[name] = cls
    return cls


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HybridLoss(keras.losses.Loss):
    """A weighted sum of terms, one value per sample; by default the UNet 3+ hybrid loss
    ``focal + (1 - MS-SSIM) + IoU`` (the paper sums the three, weights 1/1/1).

    ``terms``: ``(name, weight, loss)`` triples, ``name`` a key of :data:`HYBRID_TERMS` and
    ``loss`` its instance, its config dict or None (defaults); a bare name stands for weight 1 and
    the defaults. Without ``terms``: the paper's, each given by keywords ``<name>_weight=`` and
    ``<name>=`` (instance or config dict), or by the options in :data:`HYBRID_PART_OPTIONS`
    (``alpha=``, ``iou_smooth=``, ...): the forms files saved before this one were written in,
    which keep loading. A term's attributes read as ``loss.focal`` / ``loss.focal_weight``.
    Works for one sigmoid channel and for K softmax channels.
    """

    def __init__(
        self,
        terms: Sequence[str | tuple[str, float, Any]] | None = None,
        name: str = "hybrid",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
        **by_name: Any,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        names = [t if isinstance(t, str) else t[0] for t in (PAPER_TERMS if terms is None else terms)]
        _check_term_names(names)
        options = {k: v for k, v in by_name.items() if k in HYBRID_PART_OPTIONS}
        allowed = {n for n in names} | {f"{n}_weight" for n in names}
        unknown = sorted(set(by_name) - set(options) - allowed)
        if unknown:
            raise TypeError(
                f"HybridLoss got unexpected option(s) {unknown}; the parts' options are "
                f"{sorted(HYBRID_PART_OPTIONS)}, the terms {names}"
            )
        routed: dict[str, dict[str, Any]] = {n: {} for n in names}
        for key, value in options.items():
            term, param = HYBRID_PART_OPTIONS[key]
            if term not in routed:
                raise TypeError(f"HybridLoss: option '{key}' is for the '{term}' term, which is not among {names}")
            routed[term][param] = value
        built = []
        for item in PAPER_TERMS if terms is None else terms:
            if isinstance(item, str):
                term, weight, given = item, by_name.get(f"{item}_weight", 1.0), by_name.get(item)
            else:
                term, weight, given = item
            built.append((term, float(weight), _part(HYBRID_TERMS[term], given, routed[term])))
        self.terms: list[tuple[str, float, keras.losses.Loss]] = built

    def __getattr__(self, attr: str) -> Any:
        # loss.focal, loss.focal_weight: a term and its weight by name (what code and tests before
        # the terms list read)
        if attr != "terms" and "terms" in self.__dict__:
            for term, weight, loss in self.__dict__["terms"]:
                if attr == term:
                    return loss
                if attr == f"{term}_weight":
                    return weight
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = _check_pred(y_pred, "HybridLoss")
        total = ops.zeros_like(y_pred[:, 0, 0, 0])
        for _, weight, term in self.terms:
            if weight:
                total = total + weight * term.call(y_true, y_pred)
        return total

    def get_config(self) -> dict[str, Any]:
        """``terms`` (their names, in order) and ``<name>_weight`` / ``<name>`` for each: for the
        paper's terms this is the form files have been saved in, plus ``terms``."""
        config = super().get_config()
        config["terms"] = [term for term, _, _ in self.terms]
        for term, weight, loss in self.terms:
            config[f"{term}_weight"] = weight
            config[term] = _part_config(loss)
        return config


def _check_term_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in HYBRID_TERMS]
    if unknown:
        raise ValueError(
            f"HybridLoss: unknown term(s) {unknown}; registered terms: {sorted(HYBRID_TERMS)} "
            f"(keras_unet3plus.losses.register_term adds one)"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"HybridLoss: a term appears twice in {list(names)}")


def _part(cls, given, options: dict[str, Any]):
    """A hybrid-loss term: the given instance, or one built from a config dict and/or options."""
    if isinstance(given, cls):
        if options:
            given = cls(**{**_part_config(given), **options})
        return given
    if given is not None and not isinstance(given, dict):
        raise TypeError(f"HybridLoss: expected a {cls.__name__} or its config dict, got {type(given).__name__}")
    return cls(**{**(given or {}), **options, "reduction": None})


def _part_config(part) -> dict[str, Any]:
    config = part.get_config()
    for key in ("name", "reduction", "dtype"):
        config.pop(key, None)
    return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CGMLoss(keras.losses.Loss):
    """Binary cross-entropy for the CGM output `cls` = `(B, 2)` [absent, present] probabilities.

    The target is derived from the mask itself: present = the mask has any foreground voxel
    (value > 0.5, so float {0, 1} masks and int label maps with labels >= 1 both work), and the
    target is the one-hot ``[1 - present, present]`` (the official CGM label). y_true of rank >= 3
    is taken as the mask; rank 2 with 2 columns as that one-hot label already; rank 1 or one column
    as the presence flag. One value per sample (mean of the two BCE terms).

    Rank mismatch (y_true `(B, H, W, 1)` vs y_pred `(B, 2)`) is fine in Keras 3.15: the base
    `keras.losses.Loss.__call__` only casts y_true/y_pred to the loss dtype and calls `call()`;
    the squeeze/expand of `squeeze_or_expand_to_same_rank` happens only in Keras' own
    `LossFunctionWrapper` losses, which is why this class subclasses `Loss` directly (checked by
    the end-to-end tests through `model.fit`).
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        name: str = "cgm",
        reduction: str | None = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)

    @staticmethod
    def presence(y_true: Any) -> Any:
        """`(B,)` float32: 1.0 where the mask has a foreground voxel."""
        y_true = _as_float32(y_true)
        axes = tuple(range(1, len(y_true.shape)))
        return ops.cast(ops.any(y_true > 0.5, axis=axes), "float32")

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_pred = _as_float32(y_pred)
        if len(y_pred.shape) != 2 or y_pred.shape[-1] != 2:
            raise ValueError(f"CGMLoss: y_pred must be (B, 2) [absent, present] probabilities, got {y_pred.shape}")
        y_true = _as_float32(y_true)
        rank = len(y_true.shape)
        if rank >= 3:
            present = self.presence(y_true)
            target = ops.stack([1.0 - present, present], axis=-1)
        elif rank == 2 and y_true.shape[-1] == 2:
            target = y_true
        else:
            present = ops.reshape(y_true, (-1,))
            target = ops.stack([1.0 - present, present], axis=-1)
        return keras.losses.binary_crossentropy(target, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing)
        return config


# --------------------------------------------------------------------------------------------
# Wiring helpers
# --------------------------------------------------------------------------------------------
def _output_names(model_or_names: keras.Model | Iterable[str]) -> list[str]:
    if isinstance(model_or_names, keras.Model):
        return list(model_or_names.output_names)
    if isinstance(model_or_names, str):
        return [model_or_names]
    return list(model_or_names)


def expand_targets(model_or_names: keras.Model | Iterable[str]) -> Callable[..., tuple]:
    """A `dataset.map` function: ``(image, mask[, sample_weight]) -> (image, {name: mask, ...}[, sw])``.

    Every output (seg, side_*, cls) is trained against the same mask; the losses derive the rest.
    Pass the model or its output names.
    """
    names = _output_names(model_or_names)
    if not names:
        raise ValueError("expand_targets: no output names given")

    def _expand(image: Any, mask: Any, *rest: Any) -> tuple:
        return (image, {name: mask for name in names}, *rest)

    return _expand


def _side_weight(weights: float | Sequence[float] | Mapping[str, float], name: str, index: int) -> float:
    if isinstance(weights, Mapping):
        if name not in weights:
            raise ValueError(f"for_model: side_weights has no entry for output '{name}'")
        return float(weights[name])
    if isinstance(weights, (list, tuple)):
        if index >= len(weights):
            raise ValueError(f"for_model: side_weights has {len(weights)} entries, need one for '{name}'")
        return float(weights[index])
    if not isinstance(weights, (int, float)):
        raise TypeError(f"for_model: side_weights must be a number, a sequence or a mapping, got {weights!r}")
    return float(weights)


#: Registered model losses: name -> ``builder(model, **weights)`` returning what
#: ``model.compile`` takes, ``{"loss": {output: Loss}, "loss_weights": {output: float}}``. The
#: trainer builds ``LOSSES[TrainConfig.loss]`` (its ``Trainer.build_loss`` hook); adding a loss is
#: one function plus :func:`register_loss`.
LOSSES: dict[str, Callable[..., dict[str, dict[str, Any]]]] = {}


def register_loss(name: str) -> Callable:
    """Decorator: register a model-loss builder under ``name`` (see :data:`LOSSES`)."""

    def add(builder: Callable) -> Callable:
        LOSSES[name] = builder
        return builder

    return add


def get_loss(name: str) -> Callable[..., dict[str, dict[str, Any]]]:
    """The registered model-loss builder ``name``; a ValueError lists the registered ones."""
    if name not in LOSSES:
        raise ValueError(
            f"unknown loss '{name}': registered losses are {', '.join(sorted(LOSSES))} "
            f"(keras_unet3plus.losses.register_loss adds one)"
        )
    return LOSSES[name]


def _model_losses(
    model: keras.Model,
    make_seg_loss: Callable[[str], keras.losses.Loss],
    *,
    seg_weight: float,
    side_weights: float | Sequence[float] | Mapping[str, float],
    cls_weight: float,
    who: str,
) -> dict[str, dict[str, Any]]:
    """``{"loss", "loss_weights"}`` for every output of ``model``: ``make_seg_loss(name)`` on `seg`
    and each `side_*` (deep supervision), :class:`CGMLoss` on `cls`; shapes checked."""
    names = _output_names(model)
    shapes: dict[str, tuple] = {}
    outputs = model.outputs
    for name, tensor in zip(names, outputs if isinstance(outputs, (list, tuple)) else [outputs]):
        shapes[name] = tuple(tensor.shape)
    if SEG not in names:
        raise ValueError(f"{who}: the model has no '{SEG}' output (outputs: {names})")
    seg_channels = shapes.get(SEG, (None,))[-1]
    side_names = sorted((n for n in names if is_side(n)), key=side_level)
    loss: dict[str, keras.losses.Loss] = {}
    loss_weights: dict[str, float] = {}
    for name in names:
        shape = shapes.get(name)
        if name == SEG or is_side(name):
            if shape is not None and (len(shape) != 4 or shape[-1] != seg_channels):
                raise ValueError(
                    f"{who}: output '{name}' has shape {shape}; expected (B, H, W, {seg_channels}) like '{SEG}'"
                )
            loss[name] = make_seg_loss(name)
            loss_weights[name] = (
                float(seg_weight) if name == SEG else _side_weight(side_weights, name, side_names.index(name))
            )
        elif name == CLS:
            if shape is not None and (len(shape) != 2 or shape[-1] != 2):
                raise ValueError(f"{who}: output '{CLS}' has shape {shape}; expected (B, 2)")
            loss[name] = CGMLoss(name=f"{CLS}_cgm")
            loss_weights[name] = float(cls_weight)
        else:
            raise ValueError(
                f"{who}: unknown output '{name}'; expected '{SEG}', '{SIDE_PREFIX}<k>' or '{CLS}' (docs/design.md)"
            )
    return {"loss": loss, "loss_weights": loss_weights}


@register_loss("hybrid")
def for_model(
    model: keras.Model,
    *,
    focal_weight: float = 1.0,
    ms_ssim_weight: float = 1.0,
    iou_weight: float = 1.0,
    alpha: float | Sequence[float] | None = None,
    gamma: float = 2.0,
    iou_smooth: float = 1.0,
    seg_weight: float = 1.0,
    side_weights: float | Sequence[float] | Mapping[str, float] = 1.0,
    cls_weight: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Everything `model.compile` needs: ``model.compile(optimizer, **for_model(model))``.

    Returns ``{"loss": {name: Loss}, "loss_weights": {name: float}}`` for the model's outputs:
    `seg` and every `side_*` get a `HybridLoss` (deep supervision), `cls` gets a `CGMLoss`.
    Hybrid term weights are `focal_weight`/`ms_ssim_weight`/`iou_weight`; output weights are
    `seg_weight`, `side_weights` (one float for all side outputs, a sequence in the order
    side_2, side_3, ..., or a dict by name; default 1.0: the paper sums the losses of all outputs)
    and `cls_weight`. Channel counts are read from `model.outputs` and checked. Registered as the
    ``hybrid`` loss (the trainer's default).
    """
    hybrid_kwargs: dict[str, Any] = dict(
        focal_weight=focal_weight,
        ms_ssim_weight=ms_ssim_weight,
        iou_weight=iou_weight,
        alpha=alpha,
        gamma=gamma,
        iou_smooth=iou_smooth,
    )
    return _model_losses(
        model,
        lambda name: HybridLoss(name=f"{name}_hybrid", **hybrid_kwargs),
        seg_weight=seg_weight,
        side_weights=side_weights,
        cls_weight=cls_weight,
        who="for_model",
    )


@register_loss("dice_ce")
def dice_ce_for_model(
    model: keras.Model,
    *,
    focal_weight: float = 1.0,
    ms_ssim_weight: float = 1.0,
    iou_weight: float = 1.0,
    seg_weight: float = 1.0,
    side_weights: float | Sequence[float] | Mapping[str, float] = 1.0,
    cls_weight: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """nnU-Net's default loss, soft Dice + cross-entropy (weights 1/1), on `seg` and every side
    output, the CGM's BCE on `cls`: the field's baseline beside the paper's hybrid loss. The hybrid
    term weights have no meaning here: one other than 1 is refused rather than ignored."""
    given = {"focal_weight": focal_weight, "ms_ssim_weight": ms_ssim_weight, "iou_weight": iou_weight}
    unused = sorted(k for k, v in given.items() if float(v) != 1.0)
    if unused:
        raise ValueError(
            f"the dice_ce loss has no focal / MS-SSIM / IoU term: {', '.join(unused)} would be "
            f"ignored (leave them at 1, or use loss: hybrid)"
        )
    return _model_losses(
        model,
        lambda name: HybridLoss(terms=["dice", "ce"], name=f"{name}_dice_ce"),
        seg_weight=seg_weight,
        side_weights=side_weights,
        cls_weight=cls_weight,
        who="dice_ce_for_model",
    )
