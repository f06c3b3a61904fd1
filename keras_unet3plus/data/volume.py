"""The in-memory volume every reader returns, and the errors every reader raises.

Readers (NIfTI, DICOM) bring a scan to RAS (axis 0 towards the patient's right, axis 1 anterior,
axis 2 superior, so axial slices are ``array[:, :, z]``) and keep, in :class:`Volume`, what it takes
to put a prediction back on the source grid. Nothing here knows about file formats or layouts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nibabel import orientations as ornt_mod

#: Largest difference (mm, or unitless for the rotation part) tolerated between an image's and its
#: label's affine; real exports differ by float32 round-off, real mismatches by far more.
AFFINE_ATOL = 1e-2

_RAS = ornt_mod.axcodes2ornt(("R", "A", "S"))


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A file or folder the data layout needs does not exist."""


def orientation_of(affine: np.ndarray, path: Path | str) -> np.ndarray:
    """nibabel's axis orientation of an affine; a singular affine is a DataError naming ``path``."""
    try:
        return ornt_mod.io_orientation(affine)
    except Exception as exc:  # degenerate (singular) affines
        raise DataError(f"{path}: cannot derive an orientation from its affine ({exc})") from exc


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient the first three axes of ``array`` to RAS; returns (array view, canonical affine)."""
    ornt = orientation_of(affine, "<array>")
    transform = ornt_mod.ornt_transform(ornt, _RAS)
    out = ornt_mod.apply_orientation(array, transform)
    new_affine = affine @ ornt_mod.inv_ornt_aff(transform, array.shape[:3])
    return out, new_affine


def to_original_orientation(array: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_canonical`: RAS-ordered ``array`` (X, Y, Z[, C]) -> source voxel order."""
    ornt = orientation_of(original_affine, "<array>")
    transform = ornt_mod.ornt_transform(_RAS, ornt)
    return np.ascontiguousarray(ornt_mod.apply_orientation(np.asarray(array), transform))


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each array axis: the column norms of the affine's 3x3 part."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


@dataclass
class Volume:
    """One case in canonical (RAS) orientation.

    ``image`` is float32 HU (X, Y, Z); ``label`` is uint8 target classes for the task (or None);
    ``spacing`` is mm per canonical axis (what surface metrics need).
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, ...]
    image_path: Path
    label_path: Path | None = None
    case_id: str = ""
    header: Any = field(default=None, repr=False)
    #: Reader-specific description of the source (e.g. the DICOM series); None for NIfTI.
    source: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Put a canonical (X, Y, Z[, C]) array back into the source file's voxel order."""
        array = np.asarray(array)
        if array.shape[:3] != self.image.shape:
            raise ValueError(
                f"array shape {array.shape} does not match the canonical volume shape {self.image.shape}"
            )
        return to_original_orientation(array, self.original_affine)

    def to_nifti(self, array: np.ndarray, dtype: np.dtype | type = np.uint8):
        """A NIfTI image of ``array`` (canonical order) on the source file's grid and affine."""
        import nibabel as nib

        data = self.to_original(array).astype(dtype)
        img = nib.Nifti1Image(data, self.original_affine)
        img.header.set_xyzt_units("mm")
        return img
