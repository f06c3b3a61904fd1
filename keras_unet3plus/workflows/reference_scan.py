"""A trained model measured on a labelled real scan it never saw (a measuring stick, never training data).

The folder holds the scan (a DICOM series in ``series/``, or ``image.nii.gz``) and
``reference_labels.nii.gz`` on the same grid, with TotalSegmentator's "total" class values (the
labels a reviewer can make for any scan with one public command): liver 5, spleen 1. The demo
prints the organ's Dice on it and draws an overlay, so a user sees at once whether a
phantom-trained model finds the organ on a real scan; and on acquisition variants derived from it
(:mod:`keras_unet3plus.data.variants`: 3 mm voxels, a cropped non-square field of view, more
noise), since one real scan is one acquisition and hospitals send many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.variants import LabelledScan, standard_variants
from ..data.volume import DataError

#: TotalSegmentator v2 "total" task class values of the organs this package segments
TOTALSEGMENTATOR_VALUES = {"liver": 5, "spleen": 1}
LABELS_NAME = "reference_labels.nii.gz"

__all__ = [
    "ReferenceMeasure",
    "find_reference_scan",
    "load_reference_scan",
    "measure_on_reference_scan",
    "measure_acquisition_variants",
    "variants_table",
    "TOTALSEGMENTATOR_VALUES",
]


@dataclass
class ReferenceMeasure:
    """Dice of one organ on the reference scan (or one acquisition variant of it)."""

    scan: Path
    organ: str
    dice: float
    predicted_voxels: int
    reference_voxels: int
    per_slice_dice: list[float]
    overlay: Path | None
    variant: str = "as acquired"
    grid: str = ""

    def line(self) -> str:
        where = "" if self.variant == "as acquired" else f" [{self.variant}: {self.grid}]"
        return (
            f"real scan {self.scan}{where}: {self.organ} Dice {self.dice:.4f} ({self.predicted_voxels} voxels "
            f"predicted, {self.reference_voxels} in the reference)"
        )

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "grid": self.grid,
            "dice": self.dice,
            "predicted_voxels": self.predicted_voxels,
            "reference_voxels": self.reference_voxels,
            "per_slice_dice": self.per_slice_dice,
        }


def find_reference_scan(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(scan, labels)`` in ``folder``: ``series/`` (DICOM) or ``image.nii.gz``, and the label file."""
    folder = Path(folder)
    labels = folder / LABELS_NAME
    scan = folder / "series" if (folder / "series").is_dir() else folder / "image.nii.gz"
    if not folder.is_dir():
        raise DataError(
            f"{folder}: no such folder (a reference scan folder holds series/ or image.nii.gz and {LABELS_NAME})"
        )
    if not scan.exists():
        raise DataError(f"{folder}: no scan in it (expected a DICOM series in series/ or image.nii.gz)")
    if not labels.is_file():
        raise DataError(f"{folder}: no {LABELS_NAME} beside the scan")
    return scan, labels


def read_scan(scan: Path):
    """The scan :func:`find_reference_scan` found (a DICOM series folder or a NIfTI file), read whole
    by its registered reader."""
    from ..data.readers import read_volume

    return read_volume(scan)


def load_reference_scan(folder: str | os.PathLike) -> tuple[Path, LabelledScan]:
    """The scan in ``folder`` and its reference labels, on one canonical grid (checked)."""
    from ..data.readers import read_volume

    scan, labels_path = find_reference_scan(folder)
    volume = read_scan(scan)
    labels = read_volume(labels_path)
    if labels.image.shape != volume.image.shape or not np.allclose(labels.affine, volume.affine, atol=0.05):
        raise DataError(
            f"{labels_path}: grid {labels.image.shape} does not match the scan's {volume.image.shape} "
            f"(or their affines differ)"
        )
    return scan, LabelledScan(
        "as acquired",
        np.asarray(volume.image, np.float32),
        np.rint(labels.image).astype(np.int16),
        tuple(volume.spacing),
    )


def _predictor(model):
    from ..inference import Predictor

    return model if isinstance(model, Predictor) else Predictor.from_path(model, batch_size=8)


def _organ(predictor, organ: str | None) -> str:
    from ..data.tasks import get_task

    organ = organ or get_task(predictor.info.task).organ
    if organ not in TOTALSEGMENTATOR_VALUES:
        raise ValueError(f"no reference label value for organ {organ!r} (known: {sorted(TOTALSEGMENTATOR_VALUES)})")
    return organ


def _measure(predictor, path: Path, scan: LabelledScan, organ: str, overlay) -> ReferenceMeasure:
    from ..metrics import dice

    reference = scan.labels == TOTALSEGMENTATOR_VALUES[organ]
    pred = predictor.predict_volume(scan.hu) > 0
    per_slice = [float(dice(pred[:, :, z], reference[:, :, z])) for z in range(pred.shape[2])]
    score = float(dice(pred, reference))
    written = None
    if overlay is not None:
        from ..overlays import save_case_montage

        zs = [int(round(v)) for v in np.linspace(0, pred.shape[2] - 1, 4)]
        what = "real CT" if scan.name == "as acquired" else f"real CT, {scan.name} ({scan.describe()})"
        save_case_montage(
            scan.hu,
            reference,
            pred,
            overlay,
            slices=zs,
            window=predictor.cfg.window(),
            title=f"{what}, {organ} Dice {score:.3f} (pink TP, yellow FN, green FP)",
        )
        written = Path(overlay)
    return ReferenceMeasure(
        path,
        organ,
        score,
        int(pred.sum()),
        int(reference.sum()),
        per_slice,
        written,
        variant=scan.name,
        grid=scan.describe(),
    )


def measure_on_reference_scan(
    model, folder: str | os.PathLike, organ: str | None = None, overlay: str | os.PathLike | None = None
) -> ReferenceMeasure:
    """Predict the scan in ``folder`` with ``model`` (a path or a Predictor; its own preprocessing)
    and score ``organ`` (default: the model's task organ) against the reference labels."""
    predictor = _predictor(model)
    organ = _organ(predictor, organ)
    path, scan = load_reference_scan(folder)
    return _measure(predictor, path, scan, organ, overlay)


def measure_acquisition_variants(
    model,
    folder: str | os.PathLike,
    organ: str | None = None,
    overlay: str | os.PathLike | None = None,
    worst_overlay: str | os.PathLike | None = None,
) -> list[ReferenceMeasure]:
    """:func:`measure_on_reference_scan` on the scan and each of its acquisition variants
    (:data:`~keras_unet3plus.data.variants.STANDARD_VARIANTS`: coarser voxels, a cropped non-square
    field of view, more noise), the scan as acquired first. ``overlay``: a montage of the scan as
    acquired; ``worst_overlay``: one of the variant with the lowest Dice."""
    predictor = _predictor(model)
    organ = _organ(predictor, organ)
    path, scan = load_reference_scan(folder)
    variants = standard_variants(scan)
    measures = [_measure(predictor, path, v, organ, overlay if i == 0 else None) for i, v in enumerate(variants)]
    if worst_overlay is not None:
        worst = min(range(len(measures)), key=lambda i: measures[i].dice)
        measures[worst] = _measure(predictor, path, variants[worst], organ, worst_overlay)
    return measures


def variants_table(measures: list[ReferenceMeasure]) -> list[str]:
    """The measures as aligned text lines (what the demo and the benchmark print)."""
    width = max(len(m.variant) for m in measures)
    lines = [f"  {'acquisition':{width}s}  {'grid':34s}  {measures[0].organ} Dice"]
    lines += [f"  {m.variant:{width}s}  {m.grid:34s}  {m.dice:.4f}" for m in measures]
    return lines
