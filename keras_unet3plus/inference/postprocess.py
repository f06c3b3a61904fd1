"""From model outputs to the label volume: the CGM gate, labels back on the volume's in-plane grid,
and the optional largest-connected-component clean-up."""

from __future__ import annotations

import numpy as np

from ..data.preprocess import PreprocessConfig, unresize

__all__ = [
    "cgm_present",
    "apply_gate",
    "labels_from_probabilities",
    "resize_labels",
    "largest_component",
    "postprocess_labels",
]


def cgm_present(cls: np.ndarray) -> np.ndarray:
    """``(B,)`` bool: the slices the CGM calls organ-present (argmax of ``[absent, present]``)."""
    return np.argmax(cls, axis=-1) == 1


def apply_gate(seg: np.ndarray, cls: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(seg with absent slices zeroed, present (B,) bool)``: the CGM's argmax decides per slice."""
    if cls is None:
        return seg, np.ones(seg.shape[0], dtype=bool)
    present = cgm_present(cls)
    return seg * present[:, None, None, None].astype(np.float32), present


def labels_from_probabilities(probs: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 labels of ``(..., C)`` probabilities: ``> threshold`` for one channel, else argmax."""
    if probs.shape[-1] == 1:
        return (probs[..., 0] > threshold).astype(np.uint8)
    return np.argmax(probs, axis=-1).astype(np.uint8)


def resize_labels(label_slices: np.ndarray, in_plane: tuple[int, int], cfg: PreprocessConfig) -> np.ndarray:
    """(b, S, S) label maps -> (X, Y, b) uint8, nearest neighbour (or un-crop): labels never blend."""
    x = np.rint(label_slices).astype(np.int32)[..., None]
    res = unresize(x, in_plane, cfg, method="nearest")
    return np.moveaxis(res[..., 0], 0, 2).astype(np.uint8)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 3-D connected component (6-connectivity) of a boolean mask."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def postprocess_labels(labels: np.ndarray, largest: bool = True) -> np.ndarray:
    """Largest-connected-component clean-up of a label volume.

    The organ is one connected object, so the largest component of the *foreground union* (all
    labels > 0) is kept and everything outside it becomes background. Applied to the union rather
    than per class so multi-focal lesions inside the organ (LiTS tumours) survive.
    """
    labels = np.asarray(labels)
    if not largest:
        return labels
    keep = largest_component(labels > 0)
    out = labels.copy()
    out[~keep] = 0
    return out
