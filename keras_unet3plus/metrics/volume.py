"""Per-volume segmentation metrics (numpy/scipy, voxel-spacing aware): the LiTS evaluation set.

All functions take two binary masks of the same shape (any non-zero voxel is foreground; pass
``pred >= 1`` for liver, ``pred == 2`` for lesion on LiTS label maps) and, for distances, the
voxel `spacing` (one value per axis, e.g. mm; default 1.0 per axis).

Definitions
-----------
* Dice = 2|P & G| / (|P| + |G|) (the paper's per-case metric); Jaccard = |P & G| / |P | G|;
  VOE = 1 - Jaccard.
* RVD = (|P| - |G|) / |G|, signed: positive = over-segmentation. This is medpy's
  ``ravd(result=P, reference=G)``. Note: the LiTS notebook calls ``metric.ravd(label, pred)``,
  i.e. with the arguments swapped, which computes (|G| - |P|) / |P|; its values are not
  comparable to ours in sign or normaliser.
* Surfaces: the foreground voxels that ``scipy.ndimage.binary_erosion`` removes with the full
  connectivity structure ``generate_binary_structure(ndim, ndim)`` (26-neighbourhood in 3-D),
  i.e. a voxel is on the surface if any of its 26 neighbours is background; voxels on the array
  border count as surface (erosion's ``border_value=0``). `connectivity` changes the structure
  (1 = 6-neighbourhood like medpy, 2 = 18-neighbourhood like the LiTS ``Surface`` class).
* Distances from each surface voxel of one mask to the nearest surface voxel of the other,
  in spacing units, from ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``.
  ASSD = mean of both directed distance sets pooled together (LiTS' ``Surface`` definition;
  medpy's ``assd`` averages the two directed means instead). MSSD = the maximum of both sets
  (= Hausdorff distance, LiTS "MSD"). HD95 = the 95th percentile of the pooled set (medpy's
  ``hd95``).

Empty masks (never a crash; no NaN)
-----------------------------------
* both empty: Dice 1, Jaccard 1, VOE 0, RVD 0, ASSD/MSSD/HD95 0 (a perfect "no organ" answer).
* G empty, P not: Dice 0, Jaccard 0, VOE 1, RVD +inf (|G| = 0 in the denominator).
* P empty, G not: Dice 0, Jaccard 0, VOE 1, RVD -1.
* exactly one empty: ASSD/MSSD/HD95 = `empty_distance`, default +inf. A surface distance to
  nothing is undefined; +inf keeps such cases from looking good in a mean (LiTS set them to 0,
  which rewards predicting nothing). Pass ``empty_distance=0.0`` to reproduce LiTS.
`summarize` reports means over finite values and counts the non-finite ones separately.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "dice",
    "label_dice",
    "jaccard",
    "voe",
    "rvd",
    "surface_distances",
    "assd",
    "mssd",
    "hd95",
    "evaluate_case",
    "GlobalDice",
    "global_dice",
    "summarize",
]

DISTANCE_KEYS = ("assd", "mssd", "hd95")


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"volume metrics: pred shape {pred.shape} != gt shape {gt.shape}")
    if pred.ndim == 0:
        raise ValueError("volume metrics: masks must have at least one axis")
    return pred != 0, gt != 0


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, (int, float, np.number)):
        spacing = (float(spacing),) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim:
        raise ValueError(f"volume metrics: spacing {spacing} has {len(spacing)} values, masks have {ndim} axes")
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"volume metrics: spacing values must be positive and finite, got {spacing}")
    return spacing


def dice(pred: Any, gt: Any) -> float:
    """Dice = 2|P & G| / (|P| + |G|); 1.0 when both are empty."""
    p, g = _pair(pred, gt)
    denom = int(p.sum()) + int(g.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, g).sum()) / denom


def label_dice(pred: Any, gt: Any) -> float:
    """Mean :func:`dice` over the foreground labels (> 0) found in either label map; 1.0 when both
    are empty. One number for binary and multi-class masks (the export parity check)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    labels = sorted((set(np.unique(pred).tolist()) | set(np.unique(gt).tolist())) - {0})
    if not labels:
        return 1.0
    return float(np.mean([dice(pred == k, gt == k) for k in labels]))


def jaccard(pred: Any, gt: Any) -> float:
    """Jaccard = |P & G| / |P | G|; 1.0 when both are empty."""
    p, g = _pair(pred, gt)
    union = int(np.logical_or(p, g).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, g).sum()) / union


def voe(pred: Any, gt: Any) -> float:
    """Volumetric overlap error = 1 - Jaccard; 0.0 when both are empty."""
    return 1.0 - jaccard(pred, gt)


def rvd(pred: Any, gt: Any) -> float:
    """Relative volume difference (|P| - |G|) / |G| (signed, > 0 = over-segmentation).

    Both empty: 0.0; G empty and P not: +inf. See the module docstring for the LiTS
    notebook's swapped-argument variant.
    """
    p, g = _pair(pred, gt)
    n_p, n_g = int(p.sum()), int(g.sum())
    if n_g == 0:
        return 0.0 if n_p == 0 else float("inf")
    return (n_p - n_g) / n_g


def _surface(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    return np.logical_and(mask, ~ndimage.binary_erosion(mask, structure=structure, border_value=0))


def surface_distances(
    pred: Any,
    gt: Any,
    spacing: float | Sequence[float] | None = None,
    connectivity: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(pred -> gt, gt -> pred)`` in spacing units.

    Both masks must be non-empty (ValueError otherwise; `evaluate_case` handles empty masks).
    `connectivity` (1..ndim, default ndim = full) selects the erosion structure that defines the
    surface.
    """
    p, g = _pair(pred, gt)
    if not p.any() or not g.any():
        raise ValueError("surface_distances: both masks must be non-empty (see evaluate_case for empty masks)")
    sampling = _spacing(spacing, p.ndim)
    conn = p.ndim if connectivity is None else int(connectivity)
    if not 1 <= conn <= p.ndim:
        raise ValueError(f"surface_distances: connectivity must be in 1..{p.ndim}, got {connectivity}")
    structure = ndimage.generate_binary_structure(p.ndim, conn)
    sp, sg = _surface(p, structure), _surface(g, structure)
    dist_to_g = ndimage.distance_transform_edt(~sg, sampling=sampling)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)
    return dist_to_g[sp], dist_to_p[sg]


def _distance_metrics(
    pred: Any,
    gt: Any,
    spacing: float | Sequence[float] | None,
    connectivity: int | None,
    empty_distance: float,
) -> dict[str, float]:
    p, g = _pair(pred, gt)
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return {k: 0.0 for k in DISTANCE_KEYS}
    if not has_p or not has_g:
        return {k: float(empty_distance) for k in DISTANCE_KEYS}
    d_pg, d_gp = surface_distances(p, g, spacing, connectivity)
    pooled = np.concatenate([d_pg, d_gp])
    return {
        "assd": float(pooled.mean()),
        "mssd": float(pooled.max()),
        "hd95": float(np.percentile(pooled, 95)),
    }


def assd(
    pred: Any, gt: Any, spacing: Any = None, connectivity: int | None = None, empty_distance: float = float("inf")
) -> float:
    """Average symmetric surface distance (pooled mean over both surfaces)."""
    return _distance_metrics(pred, gt, spacing, connectivity, empty_distance)["assd"]


def mssd(
    pred: Any, gt: Any, spacing: Any = None, connectivity: int | None = None, empty_distance: float = float("inf")
) -> float:
    """Maximum symmetric surface distance (= Hausdorff distance)."""
    return _distance_metrics(pred, gt, spacing, connectivity, empty_distance)["mssd"]


def hd95(
    pred: Any, gt: Any, spacing: Any = None, connectivity: int | None = None, empty_distance: float = float("inf")
) -> float:
    """95th percentile of the pooled symmetric surface distances."""
    return _distance_metrics(pred, gt, spacing, connectivity, empty_distance)["hd95"]


def evaluate_case(
    pred: Any,
    gt: Any,
    spacing: float | Sequence[float] | None = None,
    *,
    connectivity: int | None = None,
    empty_distance: float = float("inf"),
) -> dict[str, float]:
    """All metrics of one case as a dict.

    Keys: dice, jaccard, voe, rvd, assd, mssd, hd95 and the voxel counts tp, fp, fn, n_pred,
    n_gt (so that `summarize` / `GlobalDice` can pool them into the global Dice).
    """
    p, g = _pair(pred, gt)
    tp = int(np.logical_and(p, g).sum())
    n_p, n_g = int(p.sum()), int(g.sum())
    row: dict[str, float] = {
        "dice": dice(p, g),
        "jaccard": jaccard(p, g),
        "voe": voe(p, g),
        "rvd": rvd(p, g),
    }
    row.update(_distance_metrics(p, g, spacing, connectivity, empty_distance))
    row.update(tp=tp, fp=n_p - tp, fn=n_g - tp, n_pred=n_p, n_gt=n_g)
    return row


class GlobalDice:
    """Accumulates TP/FP/FN over cases: global Dice = 2 sum TP / (2 sum TP + sum FP + sum FN).

    This is the LiTS "Dice global" (one Dice over all voxels of all volumes); 1.0 if no voxel of
    any case was foreground in either mask.
    """

    def __init__(self) -> None:
        self.tp = 0
        self.fp = 0
        self.fn = 0

    def update(self, pred: Any, gt: Any) -> GlobalDice:
        p, g = _pair(pred, gt)
        tp = int(np.logical_and(p, g).sum())
        self.tp += tp
        self.fp += int(p.sum()) - tp
        self.fn += int(g.sum()) - tp
        return self

    def result(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else 2.0 * self.tp / denom


def global_dice(pairs: Iterable[tuple[Any, Any]]) -> float:
    """Global Dice over an iterable of ``(pred, gt)`` pairs (see `GlobalDice`)."""
    acc = GlobalDice()
    for pred, gt in pairs:
        acc.update(pred, gt)
    return acc.result()


def summarize(rows: Iterable[Mapping[str, float]]) -> dict[str, Any]:
    """Mean/std of each metric over cases, plus the global Dice.

    Returns ``{metric: {"mean", "std", "n", "n_nonfinite"}, ..., "global_dice": float}``. Mean
    and std (population, ddof=0) are over the finite values; `n_nonfinite` counts the inf values
    (one-empty cases, see module docstring) that were left out; a metric with no finite value has
    mean and std = nan. `global_dice` is present when the rows carry tp/fp/fn (`evaluate_case` rows do).
    """
    rows = list(rows)
    if not rows:
        raise ValueError("summarize: no rows")
    out: dict[str, Any] = {}
    count_keys = {"tp", "fp", "fn", "n_pred", "n_gt"}
    keys = [k for k in rows[0] if k not in count_keys]
    for key in keys:
        values = np.asarray([float(r[key]) for r in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[key] = {
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "std": float(finite.std()) if finite.size else float("nan"),
            "n": int(finite.size),
            "n_nonfinite": int(values.size - finite.size),
        }
    if all({"tp", "fp", "fn"} <= set(r) for r in rows):
        tp = sum(int(r["tp"]) for r in rows)
        fp = sum(int(r["fp"]) for r in rows)
        fn = sum(int(r["fn"]) for r in rows)
        denom = 2 * tp + fp + fn
        out["global_dice"] = 1.0 if denom == 0 else 2.0 * tp / denom
    return out
