"""Volume <-> 2.5D slice conversion shared by training, evaluation and inference.

A canonical (RAS) HU volume (X, Y, Z) becomes ``(Z, S, S, 2c+1)`` float32 in [0, 1]:

1. HU window: clip to ``hu_window`` and scale to [0, 1] (:func:`window_hu`);
2. context: channel k of slice z is slice ``clip(z - c + k, 0, Z - 1)`` (edges replicate), so with
   the default c = 1 the channels are previous, current, next;
3. in-plane size, by ``resize_mode``:
   - ``"pad"`` (default): keep the aspect ratio. A non-square slice is first padded, centred, to
     a square with the window's floor (air: every abdominal window starts above -1000 HU), then
     resized like ``"resize"``. Square slices are untouched by the pad, so both modes agree on
     them; a 512 x 420 cropped field of view is no longer stretched by 1.2x.
   - ``"resize"``: ``tf.image.resize`` (bilinear, antialiased when shrinking) straight to S x S
     (models trained before ``"pad"`` existed carry it in their info and keep it).
   - ``"crop"``: a centred crop / zero pad to S x S, no resampling.
   Rows of a slice are the X (left->right) axis, columns the Y (posterior->anterior) axis; rotate
   only for display.

Masks use nearest-neighbour resizing. :func:`slices_to_volume` inverts step 3 for probabilities
(for ``"pad"``: resize to the padded square, then cut the pad off: the exact inverse geometry).

Step 3 exists twice on purpose, over one geometry (:func:`square_padding`, :func:`crop_or_pad`):
on TensorFlow tensors (:func:`resize_images` / :func:`resize_masks`) for the tf.data pipeline and
the slice cache, and on arrays with ``keras.ops.image.resize`` (:func:`resize_planes`) for
:func:`volume_to_slices` and the way back, which run on any Keras backend; under TensorFlow
``keras.ops.image.resize`` is ``tf.image.resize``, so the two agree bit for bit (tested), and
training and inference cannot drift apart. Importing this module imports no TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

import numpy as np

from keras_unet3plus.data.tasks import TaskSpec, get_task

CONFIG_VERSION = 1
#: How a slice becomes the model's square input (module doc, step 3); the first is the default.
ResizeMode = Literal["pad", "resize", "crop"]
RESIZE_MODES: tuple[ResizeMode, ...] = get_args(ResizeMode)
_CHUNK = 16  # slices resized at a time: bounds memory for 512 x 512 x 1000 volumes


@dataclass(frozen=True)
class PreprocessConfig:
    """How volumes become model inputs; saved beside a trained model so inference reuses it.

    ``hu_window=None`` means "the task's default" and is filled in by :meth:`for_task`;
    ``image_size`` is the model's square input size (paper: 320); ``resize_mode`` how a slice
    becomes that square (module doc); ``context`` is the number of neighbouring slices on each
    side (1 -> 3 channels, the design's contract).
    """

    hu_window: tuple[float, float] | None = None
    image_size: int = 320
    resize_mode: ResizeMode = "pad"
    context: int = 1
    antialias: bool = True

    def __post_init__(self) -> None:
        if self.hu_window is not None:
            lo, hi = (float(v) for v in self.hu_window)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"hu_window must be (low, high) with low < high, got {self.hu_window}")
            object.__setattr__(self, "hu_window", (lo, hi))
        if int(self.image_size) < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")
        object.__setattr__(self, "image_size", int(self.image_size))
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {self.resize_mode!r}")
        if int(self.context) < 0:
            raise ValueError(f"context must be >= 0, got {self.context}")
        object.__setattr__(self, "context", int(self.context))

    @property
    def channels(self) -> int:
        """Input channels of the model: 2 * context + 1."""
        return 2 * self.context + 1

    def for_task(self, task: str | TaskSpec) -> PreprocessConfig:
        """This config with the task's default HU window filled in (if none was given)."""
        if self.hu_window is not None:
            return self
        low, high = get_task(task).hu_window
        return replace(self, hu_window=(float(low), float(high)))

    def window(self) -> tuple[float, float]:
        if self.hu_window is None:
            raise ValueError("PreprocessConfig.hu_window is None; call cfg.for_task(task) first")
        return self.hu_window

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (includes a format version)."""
        d = asdict(self)
        d["hu_window"] = None if self.hu_window is None else list(self.hu_window)
        d["version"] = CONFIG_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer, incompatible file)."""
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"PreprocessConfig version {version} is not supported (expected {CONFIG_VERSION})")
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown PreprocessConfig keys: {sorted(unknown)}")
        if d.get("hu_window") is not None:
            d["hu_window"] = tuple(d["hu_window"])
        return cls(**d)


def window_hu(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to the window and scale to [0, 1] (float32)."""
    lo, hi = float(window[0]), float(window[1])
    out = np.asarray(hu, dtype=np.float32)
    out = np.clip(out, lo, hi)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return out


def context_indices(z: np.ndarray | int, n_slices: int, context: int = 1) -> np.ndarray:
    """Slice indices feeding each channel: ``[z - c, ..., z + c]`` clipped to the volume (edges
    replicate). Shape (N, 2c+1) for N slices."""
    z = np.atleast_1d(np.asarray(z, dtype=np.int64))
    offsets = np.arange(-context, context + 1, dtype=np.int64)
    return np.clip(z[:, None] + offsets[None, :], 0, n_slices - 1)


def stack_context(volume: np.ndarray, z: np.ndarray | int, context: int = 1) -> np.ndarray:
    """(X, Y, Z) volume -> (N, X, Y, 2c+1) stacks of neighbouring slices for indices ``z``."""
    idx = context_indices(z, volume.shape[2], context)
    return np.ascontiguousarray(np.moveaxis(volume[:, :, idx], 2, 0))


def square_padding(height: int, width: int) -> tuple[int, int, int]:
    """``(side, top, left)``: the centred square that holds an ``height`` x ``width`` slice (the
    ``"pad"`` mode's geometry)."""
    side = max(height, width)
    return side, (side - height) // 2, (side - width) // 2


def crop_or_pad(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(…, H, W, C) -> (…, height, width, C): centred crop and/or zero pad, as
    ``tf.image.resize_with_crop_or_pad`` (the ``"crop"`` mode, and its inverse)."""
    h, w = planes.shape[-3], planes.shape[-2]
    out = np.zeros(planes.shape[:-3] + (height, width, planes.shape[-1]), planes.dtype)
    sh, sw = min(h, height), min(w, width)
    ti, li = (h - sh) // 2, (w - sw) // 2  # where the kept part starts in the input
    to, lo = (height - sh) // 2, (width - sw) // 2  # and in the output
    out[..., to : to + sh, lo : lo + sw, :] = planes[..., ti : ti + sh, li : li + sw, :]
    return out


def resize_planes(
    planes: np.ndarray, size: tuple[int, int], method: str = "bilinear", antialias: bool = False
) -> np.ndarray:
    """(…, H, W, C) arrays resized on the running Keras backend (``tf.image.resize`` under TensorFlow)."""
    import keras

    if tuple(planes.shape[-3:-1]) == tuple(size):
        return np.asarray(planes)
    out = keras.ops.image.resize(planes, tuple(size), interpolation=method, antialias=antialias)
    return np.asarray(keras.ops.convert_to_numpy(out), dtype=planes.dtype)


def planes_to_model(planes: np.ndarray, cfg: PreprocessConfig, method: str = "bilinear") -> np.ndarray:
    """Step 3 on arrays: (…, H, W, C) -> (…, S, S, C) (``"nearest"`` for labels)."""
    s = cfg.image_size
    if cfg.resize_mode == "crop":
        return crop_or_pad(planes, s, s)
    if cfg.resize_mode == "pad":
        side, top, left = square_padding(planes.shape[-3], planes.shape[-2])
        if side != planes.shape[-3] or side != planes.shape[-2]:
            planes = crop_or_pad(planes, side, side)  # a centred zero pad: the same top / left
    return resize_planes(planes, (s, s), method, antialias=cfg.antialias and method == "bilinear")


def pad_to_square(images):
    """(…, H, W, C) tensor -> (…, L, L, C), L = max(H, W), centred, zeros outside (window floor /
    background): :func:`square_padding` on tensors of any (also unknown) size."""
    import tensorflow as tf

    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    side = tf.maximum(height, width)
    return tf.image.pad_to_bounding_box(images, (side - height) // 2, (side - width) // 2, side, side)


def resize_images(images, cfg: PreprocessConfig):
    """(…, H, W, C) windowed images -> (…, S, S, C) float32 tensor (module doc, step 3; tf.data)."""
    import tensorflow as tf

    s = cfg.image_size
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    if cfg.resize_mode == "crop":
        return tf.image.resize_with_crop_or_pad(images, s, s)
    if cfg.resize_mode == "pad":
        images = pad_to_square(images)
    return tf.image.resize(images, (s, s), method="bilinear", antialias=cfg.antialias)


def resize_masks(masks, cfg: PreprocessConfig):
    """(…, H, W, 1) integer masks -> (…, S, S, 1) tensor, nearest neighbour (labels never blend)."""
    import tensorflow as tf

    s = cfg.image_size
    masks = tf.convert_to_tensor(masks)
    if cfg.resize_mode == "crop":
        return tf.image.resize_with_crop_or_pad(masks, s, s)
    if cfg.resize_mode == "pad":
        masks = pad_to_square(masks)
    return tf.cast(tf.image.resize(masks, (s, s), method="nearest"), masks.dtype)


def unresize(
    slices: np.ndarray, in_plane: tuple[int, int], cfg: PreprocessConfig | None, method: str = "bilinear"
) -> np.ndarray:
    """(…, S, S, C) model-resolution maps -> (…, X, Y, C) on the slice grid: the inverse geometry of
    step 3 (for ``"crop"`` the pad is zeros; callers set what it means)."""
    slices = np.asarray(slices)
    x, y = int(in_plane[0]), int(in_plane[1])
    mode = cfg.resize_mode if cfg is not None else "resize"
    if mode == "crop":
        return crop_or_pad(slices, x, y)
    if mode == "pad":
        side, top, left = square_padding(x, y)
        return resize_planes(slices, (side, side), method)[..., top : top + x, left : left + y, :]
    return resize_planes(slices, (x, y), method)


def volume_to_slices(hu_volume: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Canonical HU volume (X, Y, Z) -> model inputs (Z, S, S, 2c+1) float32 in [0, 1].

    Each axial plane is windowed and resized once, then the 2.5D stacks are gathered from the
    resized planes: resizing works per channel, so this equals resizing every stack (bit for bit)
    at a third of the work for 3-slice context.
    """
    hu_volume = np.asarray(hu_volume)
    if hu_volume.ndim != 3:
        raise ValueError(f"volume_to_slices expects an (X, Y, Z) volume, got shape {hu_volume.shape}")
    window = cfg.window()
    n, c = hu_volume.shape[2], cfg.context
    out = np.empty((n, cfg.image_size, cfg.image_size, cfg.channels), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        lo, hi = max(0, start - c), min(n, stop + c)
        planes = window_hu(np.moveaxis(hu_volume[:, :, lo:hi], 2, 0)[..., None], window)
        planes = planes_to_model(planes, cfg)[..., 0]  # (hi - lo, S, S)
        idx = context_indices(np.arange(start, stop), n, c) - lo  # (k, 2c+1)
        out[start:stop] = np.moveaxis(planes[idx], 1, -1)
    return out


def label_to_slices(label: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Label volume (X, Y, Z) -> (Z, S, S, 1) uint8, nearest neighbour."""
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"label_to_slices expects an (X, Y, Z) volume, got shape {label.shape}")
    n = label.shape[2]
    out = np.empty((n, cfg.image_size, cfg.image_size, 1), dtype=np.uint8)
    for start in range(0, n, _CHUNK * 4):
        stop = min(n, start + _CHUNK * 4)
        chunk = np.moveaxis(label[:, :, start:stop], 2, 0)[..., None].astype(np.uint8)
        out[start:stop] = planes_to_model(chunk, cfg, "nearest")
    return out


def slices_to_volume(
    probabilities: np.ndarray, in_plane_shape: tuple[int, int], cfg: PreprocessConfig | None = None
) -> np.ndarray:
    """Model outputs (Z, S, S, C) -> (X, Y, Z, C) on the volume's in-plane grid.

    Bilinear on probabilities (threshold / argmax afterwards), through :func:`unresize`. With
    ``resize_mode="crop"`` the crop is undone by padding: background gets probability 1 (channel 0
    when C > 1, else 0). ``cfg=None``: a plain resize.
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    if probs.ndim != 4:
        raise ValueError(f"slices_to_volume expects (Z, S, S, C), got shape {probs.shape}")
    x, y = int(in_plane_shape[0]), int(in_plane_shape[1])
    n, c = probs.shape[0], probs.shape[3]
    out = np.empty((x, y, n, c), dtype=np.float32)
    crop = cfg is not None and cfg.resize_mode == "crop"
    for start in range(0, n, _CHUNK):
        chunk = probs[start : start + _CHUNK]
        res = unresize(chunk, (x, y), cfg)
        if crop and c > 1:
            res[..., :1] += 1.0 - unresize(np.ones_like(chunk[..., :1]), (x, y), cfg)
        out[:, :, start : start + len(chunk)] = np.moveaxis(res, 0, 2)
    return out
