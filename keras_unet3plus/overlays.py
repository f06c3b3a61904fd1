"""Prediction-vs-ground-truth overlays in the colours of the UNet 3+ paper's Fig. 4.

True positives pink/purple, false negatives yellow, false positives green, alpha-blended over the
HU-windowed CT slice. :func:`overlay_slice` returns an RGB uint8 image (no plotting library);
:func:`save_case_montage` writes a per-case PNG montage of chosen slices with matplotlib's Agg
canvas (no pyplot, no global backend change), and :func:`choose_slices` picks the slices worth
looking at (most ground-truth or error voxels).

Arrays are canonical RAS slices ``volume[:, :, z]`` (rows = X, columns = Y); :func:`to_display`
turns one into the radiological view (anterior up, the patient's right on the viewer's left).
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from .atomic import atomic_path

__all__ = [
    "TP_COLOUR",
    "FN_COLOUR",
    "FP_COLOUR",
    "DEFAULT_ALPHA",
    "overlay_slice",
    "to_display",
    "choose_slices",
    "save_overlay_png",
    "save_case_montage",
    "blend_colour",
]

#: colours (RGB in [0, 1]) of the paper's overlays
TP_COLOUR = (0.8, 0.3, 0.8)  # pink / purple: organ found
FN_COLOUR = (1.0, 1.0, 0.0)  # yellow: organ missed
FP_COLOUR = (0.0, 1.0, 0.0)  # green: background called organ
DEFAULT_ALPHA = 0.5


def _window_gray(ct_slice_hu: np.ndarray, window: Sequence[float]) -> np.ndarray:
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window must be (low, high) with low < high, got {tuple(window)}")
    return np.clip((np.asarray(ct_slice_hu, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def blend_colour(gray: float, colour: Sequence[float], alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """The uint8 RGB that :func:`overlay_slice` gives a pixel of windowed intensity ``gray`` (0..1)."""
    rgb = (1.0 - alpha) * float(gray) + alpha * np.asarray(colour, dtype=np.float32)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def overlay_slice(
    ct_slice_hu: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    window: Sequence[float] = (-200.0, 250.0),
    alpha: float = DEFAULT_ALPHA,
) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``: the windowed CT in gray with TP / FN / FP pixels alpha-blended in
    :data:`TP_COLOUR` / :data:`FN_COLOUR` / :data:`FP_COLOUR`. Masks: any non-zero is foreground."""
    ct = np.asarray(ct_slice_hu)
    gt = np.asarray(gt) > 0
    pred = np.asarray(pred) > 0
    if ct.ndim != 2 or gt.shape != ct.shape or pred.shape != ct.shape:
        raise ValueError(
            f"overlay_slice needs 2-D arrays of one shape, got ct {ct.shape}, gt {gt.shape}, pred {pred.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    gray = _window_gray(ct, window)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for mask, colour in ((gt & pred, TP_COLOUR), (gt & ~pred, FN_COLOUR), (~gt & pred, FP_COLOUR)):
        if mask.any():
            rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def to_display(slice_2d: np.ndarray) -> np.ndarray:
    """Canonical RAS axial slice (rows X, columns Y) -> radiological view (rows: anterior at the
    top; columns: the patient's right on the left). Works on (H, W) and (H, W, C)."""
    a = np.asarray(slice_2d)
    a = np.swapaxes(a, 0, 1)  # rows = Y, columns = X
    return a[::-1, ::-1]  # anterior up, right (max X) on the left


def choose_slices(gt: np.ndarray, pred: np.ndarray, n: int = 4) -> list[int]:
    """Axial slices (axis 2) worth showing: most ground-truth + error voxels, spread along Z.

    Greedy: highest score first, keeping a minimum spacing so the montage does not show four
    neighbouring slices; falls back to the middle slice when nothing is segmented.
    """
    gt = np.asarray(gt) > 0
    pred = np.asarray(pred) > 0
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"choose_slices needs two 3-D masks of one shape, got {gt.shape} and {pred.shape}")
    z_len = gt.shape[2]
    n = max(1, min(int(n), z_len))
    score = gt.sum(axis=(0, 1)).astype(np.int64) + (gt ^ pred).sum(axis=(0, 1)).astype(np.int64)
    if not score.any():
        return [z_len // 2]
    gap = max(1, z_len // (3 * n))
    chosen: list[int] = []
    for z in np.argsort(-score, kind="stable"):
        if score[z] == 0:
            break
        if all(abs(int(z) - c) >= gap for c in chosen):
            chosen.append(int(z))
        if len(chosen) == n:
            break
    return sorted(chosen)


def _atomic_png(path: Path, writer) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        writer(str(tmp))
    return path


def save_overlay_png(rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an RGB uint8 image as PNG, pixel for pixel (atomically)."""
    from matplotlib.image import imsave

    rgb = np.asarray(rgb, dtype=np.uint8)
    return _atomic_png(Path(path), lambda tmp: imsave(tmp, rgb, format="png"))


def save_case_montage(
    ct_hu: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike,
    slices: Sequence[int] | None = None,
    n_slices: int = 4,
    window: Sequence[float] = (-200.0, 250.0),
    title: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    slice_dir: str | os.PathLike | None = None,
    radiological: bool = True,
    dpi: int = 100,
) -> list[int]:
    """A PNG montage of overlays of ``n_slices`` chosen axial slices of one case (canonical arrays
    ``(X, Y, Z)``); returns the slice indices shown. With ``slice_dir`` every shown slice is also
    written at full resolution as ``slice_ZZZ.png``. A legend names the colours."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ct_hu = np.asarray(ct_hu)
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if ct_hu.ndim != 3 or gt.shape != ct_hu.shape or pred.shape != ct_hu.shape:
        raise ValueError(
            f"save_case_montage needs 3-D arrays of one shape, got ct {ct_hu.shape}, gt {gt.shape}, pred {pred.shape}"
        )
    zs = list(slices) if slices is not None else choose_slices(gt, pred, n_slices)
    view = to_display if radiological else (lambda a: a)
    images = []
    for z in zs:
        rgb = overlay_slice(ct_hu[:, :, z], gt[:, :, z], pred[:, :, z], window, alpha)
        images.append(view(rgb))
        if slice_dir is not None:
            save_overlay_png(view(rgb), Path(slice_dir) / f"slice_{z:03d}.png")

    cols = len(images)
    h, w = images[0].shape[:2]
    panel = 3.0
    fig = Figure(figsize=(panel * cols * w / max(h, w) + 0.2, panel * h / max(h, w) + 0.9), dpi=dpi)
    FigureCanvasAgg(fig)
    for k, (z, img) in enumerate(zip(zs, images)):
        ax = fig.add_subplot(1, cols, k + 1)
        ax.imshow(img, interpolation="nearest")
        g, p = gt[:, :, z] > 0, pred[:, :, z] > 0
        denom = int(g.sum()) + int(p.sum())
        d = 1.0 if denom == 0 else 2.0 * int((g & p).sum()) / denom
        ax.set_title(f"z={z}  Dice {d:.3f}", fontsize=8)
        ax.set_axis_off()
    handles = [
        Patch(color=TP_COLOUR, label="true positive"),
        Patch(color=FN_COLOUR, label="false negative"),
        Patch(color=FP_COLOUR, label="false positive"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.85 if title else 0.9, bottom=0.12, wspace=0.04)
    _atomic_png(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return zs
