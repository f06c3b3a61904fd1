"""A trained model measured on a labelled real scan it never saw (a measuring stick, never training data).

The folder holds the scan (a DICOM series in ``series/``, or ``image.nii.gz``) and
``reference_labels.nii.gz`` on the same grid, with TotalSegmentator's "total" class values (the
labels a reviewer can make for any scan with one public command): liver 5, spleen 1. The demo
prints the organ's Dice on it and draws an overlay, so a user sees at once whether a
phantom-trained model finds the organ on a real scan.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.volume import DataError

#: TotalSegmentator v2 "total" task class values of the organs this package segments
TOTALSEGMENTATOR_VALUES = {"liver": 5, "spleen": 1}
LABELS_NAME = "reference_labels.nii.gz"

__all__ = ["ReferenceMeasure", "find_reference_scan", "measure_on_reference_scan", "TOTALSEGMENTATOR_VALUES"]


@dataclass
class ReferenceMeasure:
    """Dice of one organ on the reference scan, with what it was measured on."""

    scan: Path
    organ: str
    dice: float
    predicted_voxels: int
    reference_voxels: int
    per_slice_dice: list[float]
    overlay: Path | None

    def line(self) -> str:
        return (f"real scan {self.scan}: {self.organ} Dice {self.dice:.4f} ({self.predicted_voxels} voxels "
                f"predicted, {self.reference_voxels} in the reference)")


def find_reference_scan(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(scan, labels)`` in ``folder``: ``series/`` (DICOM) or ``image.nii.gz``, and the label file."""
    folder = Path(folder)
    labels = folder / LABELS_NAME
    scan = folder / "series" if (folder / "series").is_dir() else folder / "image.nii.gz"
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (a reference scan folder holds series/ or image.nii.gz "
                        f"and {LABELS_NAME})")
    if not scan.exists():
        raise DataError(f"{folder}: no scan in it (expected a DICOM series in series/ or image.nii.gz)")
    if not labels.is_file():
        raise DataError(f"{folder}: no {LABELS_NAME} beside the scan")
    return scan, labels


def read_scan(scan: Path):
    """The scan :func:`find_reference_scan` found: a DICOM series folder or a NIfTI file."""
    if scan.is_dir():
        from ..data import read_dicom_series

        return read_dicom_series(scan)
    from ..data.nifti import load_image

    return load_image(scan)


def measure_on_reference_scan(model, folder: str | os.PathLike, organ: str | None = None,
                              overlay: str | os.PathLike | None = None) -> ReferenceMeasure:
    """Predict the scan in ``folder`` with ``model`` (a path or a Predictor; its own preprocessing)
    and score ``organ`` (default: the model's task organ) against the reference labels."""
    from ..data.nifti import load_image
    from ..data.tasks import get_task
    from ..inference import Predictor
    from ..metrics import dice

    scan, labels_path = find_reference_scan(folder)
    predictor = model if isinstance(model, Predictor) else Predictor.from_path(model, batch_size=8)
    organ = organ or get_task(predictor.info.task).organ
    if organ not in TOTALSEGMENTATOR_VALUES:
        raise ValueError(f"no reference label value for organ {organ!r} (known: {sorted(TOTALSEGMENTATOR_VALUES)})")
    volume = read_scan(scan)
    labels = load_image(labels_path)
    if labels.image.shape != volume.image.shape or not np.allclose(labels.affine, volume.affine, atol=0.05):
        raise DataError(f"{labels_path}: grid {labels.image.shape} does not match the scan's {volume.image.shape} "
                        f"(or their affines differ)")
    reference = np.rint(labels.image) == TOTALSEGMENTATOR_VALUES[organ]
    pred = predictor.predict_volume(np.asarray(volume.image, np.float32)) > 0
    per_slice = [float(dice(pred[:, :, z], reference[:, :, z])) for z in range(pred.shape[2])]
    score = float(dice(pred, reference))
    written = None
    if overlay is not None:
        from ..overlays import save_case_montage

        zs = [int(round(v)) for v in np.linspace(0, pred.shape[2] - 1, 4)]
        save_case_montage(volume.image, reference, pred, overlay, slices=zs, window=predictor.cfg.window(),
                          title=f"real CT, {organ} Dice {score:.3f} (pink TP, yellow FN, green FP)")
        written = Path(overlay)
    return ReferenceMeasure(scan, organ, score, int(pred.sum()), int(reference.sum()), per_slice, written)
