"""NIfTI reading and validation (the volume type and orientation helpers live in data.volume).

Every volume is brought to RAS (nibabel's closest canonical orientation: axis 0 towards the
patient's right, axis 1 anterior, axis 2 superior, so axial slices are ``array[:, :, z]``).
A :class:`Volume` keeps what it takes to put a prediction back into the source file's voxel order
(:meth:`Volume.to_original`), so predictions can be written with the source affine.

Files are opened lazily with nibabel: a header costs a few bytes of I/O; voxel data is read one
volume at a time and never cached here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from keras_unet3plus.atomic import atomic_path
from keras_unet3plus.data.tasks import TaskSpec, get_task
from keras_unet3plus.data.volume import (AFFINE_ATOL, DataError, DataFileNotFoundError, Volume,  # noqa: F401
                                         orientation_of, spacing_from_affine, to_canonical,
                                         to_original_orientation)

if TYPE_CHECKING:  # pragma: no cover
    from typing import Protocol

    class Case(Protocol):
        """What the loaders read of a case (data.layouts.Case has it; readers know no layouts)."""

        case_id: str
        image_path: Path
        label_path: Path | None

# --------------------------------------------------------------------------------------------
# low-level reading
# --------------------------------------------------------------------------------------------

def open_nifti(path: str | os.PathLike) -> nib.Nifti1Image:
    """Open a NIfTI file (header only) and check it is a 3-D volume; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {tuple(img.shape)}")
    if min(shape) < 1:
        raise DataError(f"{path}: empty volume, shape {shape}")
    orientation_of(img.affine, path)
    return img


def _read_data(img: nib.Nifti1Image, path: Path, dtype: np.dtype | None) -> np.ndarray:
    """Read all voxels (scaled), wrapping decoding errors (truncated gzip, short files)."""
    try:
        data = np.asanyarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    except Exception as exc:
        raise DataError(
            f"{path}: could not read the voxel data, the file is truncated or corrupt "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def read_image_array(path: str | os.PathLike, dtype: np.dtype | None = np.float32,
                     img: nib.Nifti1Image | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Canonical image voxels and canonical affine; NaN/inf rejected.

    ``dtype=None`` keeps the stored type when the file has no scaling (int16 for most CT), which
    halves the memory of the streaming pipeline.
    """
    path = Path(path)
    img = open_nifti(path) if img is None else img
    data = _read_data(img, path, dtype)
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - np.count_nonzero(finite))
            raise DataError(f"{path}: {bad} voxel(s) are NaN or inf")
    elif data.dtype.kind not in "iub":
        raise DataError(f"{path}: unsupported voxel type {data.dtype}")
    out, affine = to_canonical(data, img.affine)
    return out, affine


def read_label_array(path: str | os.PathLike, task: str | TaskSpec,
                     img: nib.Nifti1Image | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Canonical label voxels mapped to the task's classes (uint8) and the canonical affine.

    Raises DataError when a value is not one of ``task.label_values`` (e.g. a spleen task given
    LiTS files) or is not an integer.
    """
    spec = get_task(task)
    path = Path(path)
    img = open_nifti(path) if img is None else img
    data = _read_data(img, path, None)
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise DataError(f"{path}: label volume contains NaN or inf")
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise DataError(f"{path}: label volume holds non-integer values")
        data = rounded
    elif data.dtype.kind not in "iub":
        raise DataError(f"{path}: unsupported label voxel type {data.dtype}")
    lo, hi = (data.min(), data.max()) if data.size else (0, 0)
    if lo < 0 or hi > 255:
        raise DataError(
            f"{path}: label values range over [{lo}, {hi}], but task '{spec.name}' allows "
            f"only {list(spec.label_values)}"
        )
    data = data.astype(np.uint8, copy=False)
    present = np.flatnonzero(np.bincount(data.ravel(), minlength=256))
    unexpected = sorted(set(present.tolist()) - set(spec.label_values))
    if unexpected:
        raise DataError(
            f"{path}: label values {unexpected} are not allowed for task '{spec.name}' "
            f"(allowed: {list(spec.label_values)})"
        )
    out, affine = to_canonical(spec.map_label(data), img.affine)
    return out, affine


def check_pair(image_img: nib.Nifti1Image, label_img: nib.Nifti1Image,
               image_path: Path, label_path: Path) -> None:
    """Raise DataError when an image and its label do not share the voxel grid."""
    ishape = open_shape(image_img)
    lshape = open_shape(label_img)
    if ishape != lshape:
        raise DataError(
            f"{label_path}: label shape {lshape} does not match image {image_path.name} shape {ishape}"
        )
    if not np.allclose(image_img.affine, label_img.affine, rtol=0, atol=AFFINE_ATOL):
        diff = float(np.abs(image_img.affine - label_img.affine).max())
        raise DataError(
            f"{label_path}: label affine differs from image {image_path.name} affine "
            f"(max difference {diff:.4g}); they are not on the same voxel grid"
        )


def open_shape(img: nib.Nifti1Image) -> tuple[int, int, int]:
    """The 3-D shape of an opened image (trailing singleton dims dropped)."""
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape  # type: ignore[return-value]


def check_case_headers(case: "Case") -> None:
    """Cheap header-only checks for a case: files exist, 3-D, label on the image's grid."""
    image_img = open_nifti(case.image_path)
    if case.label_path is not None:
        check_pair(image_img, open_nifti(case.label_path), Path(case.image_path), Path(case.label_path))


# --------------------------------------------------------------------------------------------
# public loaders
# --------------------------------------------------------------------------------------------

def load_image(path: str | os.PathLike, case_id: str | None = None) -> Volume:
    """Load an unlabelled volume (inference): canonical float32 HU, spacing, source orientation."""
    from types import SimpleNamespace

    path = Path(path)
    return load_case(SimpleNamespace(case_id=case_id or strip_nii(path.name), image_path=path, label_path=None),
                     task=None)


def load_case(case: "Case", task: str | TaskSpec | None) -> Volume:
    """Load a case's image and (if present) its label mapped for ``task``, both canonical."""
    image_path = Path(case.image_path)
    img = open_nifti(image_path)
    label = None
    if case.label_path is not None:
        label_path = Path(case.label_path)
        limg = open_nifti(label_path)
        check_pair(img, limg, image_path, label_path)
        label, _ = read_label_array(label_path, task, img=limg)
        label = np.ascontiguousarray(label)
    data, affine = read_image_array(image_path, np.float32, img=img)
    return Volume(
        image=np.ascontiguousarray(data),
        label=label,
        spacing=spacing_from_affine(affine),
        affine=affine,
        original_affine=np.array(img.affine),
        original_shape=open_shape(img),
        image_path=image_path,
        label_path=None if case.label_path is None else Path(case.label_path),
        case_id=case.case_id,
        header=img.header,
    )


def save_nifti_atomic(img: nib.Nifti1Image, path: str | os.PathLike) -> Path:
    """Save a NIfTI image atomically (see keras_unet3plus.atomic); the name must end in .nii or .nii.gz."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: a NIfTI file name must end in .nii.gz or .nii")
    with atomic_path(path, suffix=".nii.gz" if path.name.endswith(".nii.gz") else ".nii") as tmp:
        nib.save(img, str(tmp))
    return path


def strip_nii(name: str) -> str:
    """File name without its .nii / .nii.gz extension."""
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def is_nifti_name(name: str) -> bool:
    """True for visible .nii / .nii.gz files (hidden and AppleDouble ``._x`` files excluded)."""
    return not name.startswith(".") and (name.endswith(".nii") or name.endswith(".nii.gz"))


def find_nifti_files(folder: str | os.PathLike) -> list[Path]:
    """NIfTI files directly in ``folder`` (hidden / AppleDouble files skipped), naturally sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileNotFoundError(f"{folder}: input folder not found")

    def key(p: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]

    return sorted((p for p in folder.iterdir() if is_nifti_name(p.name) and p.is_file()), key=key)
