"""NRRD and MetaImage scans (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), read through SimpleITK as
nnU-Net reads them; what 3D Slicer saves and many challenge datasets ship.

ITK states a grid as origin, spacing and direction cosines in LPS for the voxel index (i, j, k), and
SimpleITK's arrays are ordered (k, j, i). This reader puts both into this package's conventions:
the voxels in (i, j, k) order with the RAS affine a NIfTI of the same grid carries (what
``original_affine`` and ``Volume.to_original`` give back), then canonical RAS like every reader.
The header is read first (a few bytes); the voxels when asked, whole (ITK streams neither NRRD nor
compressed files by slab). SimpleITK (Apache-2.0) comes with the ``[itk]`` extra.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from keras_unet3plus._extras import require
from keras_unet3plus.data.nifti import checked_image, checked_label
from keras_unet3plus.data.tasks import get_task
from keras_unet3plus.data.volume import DataError, DataFileNotFoundError, FileReader, ScanFile, to_canonical

SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _why(exc: Exception, path: Path) -> str:
    """ITK's reason on one short line: its messages span lines, start with a source location, repeat
    the path and may end in a stale errno ("Reason: No such file or directory" for a file that exists)."""
    text = " ".join(str(exc).split()).rsplit("ERROR:", 1)[-1]
    text = re.sub(r"\(0x[0-9a-fA-F]+\)", "", text.split(str(path))[0]).strip(" :")
    return text[:200] or type(exc).__name__


def _name(path: Path) -> str:
    return next((path.name[: -len(s)] for s in SUFFIXES if path.name.endswith(s)), path.name)


class ItkScan(ScanFile):
    """An NRRD or MetaImage file opened by the reader registry (header only; voxels on request)."""

    format = "NRRD/MetaImage"

    def __init__(self, path: Path):
        sitk = require("SimpleITK", "itk")
        path = Path(path)
        if not path.exists():
            raise DataFileNotFoundError(f"{path}: file not found")
        if not path.is_file():
            raise DataError(f"{path}: not a regular file")
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise DataError(f"{path}: not a readable NRRD/MetaImage file ({_why(exc, path)})") from exc
        dim, size = reader.GetDimension(), tuple(int(s) for s in reader.GetSize())
        shape = size
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) != 3:
            raise DataError(f"{path}: expected a 3-D volume, got size {size}")
        if min(shape) < 1:
            raise DataError(f"{path}: empty volume, size {size}")
        if reader.GetNumberOfComponents() != 1:
            raise DataError(
                f"{path}: {reader.GetNumberOfComponents()} values per voxel; expected one "
                "scalar volume (a CT or a label map)"
            )
        direction = np.array(reader.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
        lps = np.eye(4)
        lps[:3, :3] = direction * np.array(reader.GetSpacing(), dtype=float)[:3]  # column j scaled by spacing j
        lps[:3, 3] = np.array(reader.GetOrigin(), dtype=float)[:3]
        super().__init__(path, _RAS_FROM_LPS @ lps, shape, name=_name(path))

    def _voxels(self) -> np.ndarray:
        """The voxels in the file's (i, j, k) order, as stored."""
        sitk = require("SimpleITK", "itk")
        try:
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(self.path)))
        except RuntimeError as exc:
            raise DataError(
                f"{self.path}: could not read the voxel data, the file is truncated or corrupt ({_why(exc, self.path)})"
            ) from exc
        return array.reshape(self.original_shape[::-1]).transpose(2, 1, 0)

    def image(self, stream: bool = False) -> np.ndarray:
        data = checked_image(self._voxels(), self.path)
        return np.ascontiguousarray(to_canonical(data, self.original_affine)[0], dtype=np.float32)

    def label(self, task, stream: bool = False) -> np.ndarray:
        data = checked_label(self._voxels(), self.path, get_task(task))
        return np.ascontiguousarray(to_canonical(data, self.original_affine)[0])


#: The NRRD/MetaImage entry of the reader registry (:mod:`keras_unet3plus.data.readers`).
READER = FileReader("NRRD/MetaImage", SUFFIXES, ItkScan)
