"""Training slices as a `keras.utils.PyDataset`: `model.fit` on any Keras backend, without tf.data.

The streaming pipeline (:mod:`keras_unet3plus.data.pipeline`) is tf.data, TensorFlow's. Under JAX or
PyTorch, `model.fit` takes a `keras.utils.PyDataset`; :class:`SliceDataset` is one over the
package's readers: cases found by :func:`keras_unet3plus.data.layouts.find_cases` are read with
:func:`keras_unet3plus.data.nifti.load_case` (or `Volume`s / ``(hu, label)`` arrays are given
directly), each volume becomes the model's 2.5D slices once, and batches ``(image, {output: mask})``
are served (every output trained against the same mask, docs/design.md), in an order that is a pure
function of ``(seed, epoch)``.

The slices are :mod:`~keras_unet3plus.data.preprocess`'s (HU window scaled to [0, 1], neighbouring
slices as channels, the in-plane ``resize_mode``), computed here with NumPy, plus ``keras.ops.image.resize``
(bilinear, antialiased; nearest for masks) on the running backend where a slice must be resampled:
this module imports no TensorFlow. (Importing it through the ``keras_unet3plus.data`` package still
does: the package's ``__init__`` imports the tf.data pipeline.) Masks follow the task: ``{0, 1}``
float32 for a binary task (``num_classes=1``), the int label map otherwise.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["SliceDataset", "volume_slices"]


def _window(hu: np.ndarray, window: Sequence[float]) -> np.ndarray:
    lo, hi = float(window[0]), float(window[1])
    return ((np.clip(np.asarray(hu, np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _in_plane(planes: np.ndarray, size: int, mode: str, method: str, antialias: bool) -> np.ndarray:
    """(N, H, W, C) -> (N, size, size, C): ``preprocess``'s step 3 on the running Keras backend."""
    n, h, w, c = planes.shape
    if (h, w) == (size, size):
        return planes
    if mode == "crop":
        out = np.zeros((n, size, size, c), planes.dtype)
        sh, sw = min(h, size), min(w, size)
        top_in, left_in = (h - sh) // 2, (w - sw) // 2
        top_out, left_out = (size - sh) // 2, (size - sw) // 2
        out[:, top_out:top_out + sh, left_out:left_out + sw] = planes[:, top_in:top_in + sh, left_in:left_in + sw]
        return out
    if mode == "pad" and h != w:
        side = max(h, w)
        square = np.zeros((n, side, side, c), planes.dtype)
        top, left = (side - h) // 2, (side - w) // 2
        square[:, top:top + h, left:left + w] = planes
        planes = square
    resized = keras.ops.image.resize(planes.astype(np.float32), (size, size), interpolation=method,
                                     antialias=antialias and method == "bilinear")
    return keras.ops.convert_to_numpy(resized).astype(planes.dtype)


def volume_slices(hu: np.ndarray, label: np.ndarray | None, hu_window: Sequence[float], image_size: int,
                  context: int = 1, resize_mode: str = "pad", antialias: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """A canonical (X, Y, Z) HU volume (and label) -> ``(Z, S, S, 2c+1)`` float32 images in [0, 1]
    (and ``(Z, S, S, 1)`` uint8 labels): ``preprocess.volume_to_slices`` / ``label_to_slices``."""
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"volume_slices expects an (X, Y, Z) volume, got shape {hu.shape}")
    n = hu.shape[2]
    planes = _in_plane(_window(np.moveaxis(hu, 2, 0)[..., None], hu_window), image_size, resize_mode,
                       "bilinear", antialias)[..., 0]                                  # (Z, S, S)
    idx = np.clip(np.arange(n)[:, None] + np.arange(-context, context + 1)[None, :], 0, n - 1)
    images = np.ascontiguousarray(np.moveaxis(planes[idx], 1, -1))                      # (Z, S, S, 2c+1)
    if label is None:
        return images, None
    label = np.asarray(label)
    if label.shape != hu.shape:
        raise ValueError(f"volume_slices: label shape {label.shape} differs from the image's {hu.shape}")
    labels = _in_plane(np.moveaxis(label, 2, 0)[..., None].astype(np.uint8), image_size, resize_mode,
                       "nearest", False)
    return images, np.ascontiguousarray(labels)


class SliceDataset(keras.utils.PyDataset):
    """Shuffled batches of 2.5D slices and their masks, for ``model.fit`` on any backend.

    ``volumes``: `Volume`s (``.image``, ``.label``), ``(hu, label)`` pairs, or `Case`s (read with
    ``nifti.load_case(case, task)``); every volume must carry a label. ``hu_window``, ``image_size``,
    ``context``, ``resize_mode``: as in ``PreprocessConfig`` (pass ``cfg.window()`` etc.).
    ``outputs``: the model's output names (``model.output_names``), each given the same mask.
    ``num_classes``: 1 makes the mask ``label > 0`` as float32 (the binary tasks), K > 1 keeps the
    label map. ``shuffle``: slice order per epoch from ``(seed, epoch)``; the last partial batch is
    dropped when ``drop_remainder``. Extra keyword arguments go to ``PyDataset`` (``workers``, ...).
    """

    def __init__(self, volumes: Iterable[Any], *, hu_window: Sequence[float], image_size: int,
                 outputs: Sequence[str], batch_size: int, task: str | None = None, num_classes: int = 1,
                 context: int = 1, resize_mode: str = "pad", antialias: bool = True, shuffle: bool = True,
                 seed: int = 0, drop_remainder: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not outputs:
            raise ValueError("SliceDataset: outputs must name the model's outputs (model.output_names)")
        images, masks = [], []
        for item in volumes:
            hu, label, name = self._read(item, task)
            if label is None:
                raise ValueError(f"SliceDataset: {name} has no label; training needs one")
            x, y = volume_slices(hu, label, hu_window, image_size, context, resize_mode, antialias)
            images.append(x)
            masks.append((y > 0).astype(np.float32) if num_classes == 1 else y.astype(np.int32))
        if not images:
            raise ValueError("SliceDataset: no volumes given")
        self.images = np.concatenate(images)
        self.masks = np.concatenate(masks)
        self.outputs = list(outputs)
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_remainder = bool(shuffle), int(seed), bool(drop_remainder)
        self.epoch = 0
        self._order = self._epoch_order(0)

    @staticmethod
    def _read(item: Any, task: str | None) -> tuple[np.ndarray, np.ndarray | None, str]:
        if hasattr(item, "image_path") and hasattr(item, "case_id") and not hasattr(item, "image"):
            from .nifti import load_case   # a Case: the package's NIfTI reader

            volume = load_case(item, task)
            return volume.image, volume.label, f"case '{item.case_id}'"
        if hasattr(item, "image"):
            return item.image, item.label, f"volume '{getattr(item, 'case_id', '?')}'"
        hu, label = item
        return hu, label, "an (hu, label) pair"

    def _epoch_order(self, epoch: int) -> np.ndarray:
        n = len(self.images)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    @property
    def num_batches(self) -> int:
        n = len(self.images) / self.batch_size
        return int(n) if self.drop_remainder else math.ceil(n)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} of {self.num_batches}")
        take = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        mask = self.masks[take]
        return self.images[take], {name: mask for name in self.outputs}

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._epoch_order(self.epoch)
