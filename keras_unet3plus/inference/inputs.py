"""What to segment: a NIfTI file, a folder of them (nnU-Net ``{case}_0000`` names too), or the CT
DICOM series under a folder, each with the name its outputs take."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.nifti import find_nifti_files as find_input_files  # the name callers of this module know
from ..data.nifti import is_nifti_name, strip_nii
from ..data.volume import DataError, DataFileNotFoundError

__all__ = ["InputScan", "find_inputs", "find_input_files", "nifti_case_name"]

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def nifti_case_name(path: str | os.PathLike) -> str:
    """The case name of a NIfTI file: its name without ``.nii`` / ``.nii.gz``."""
    return strip_nii(Path(path).name)


@dataclass
class InputScan:
    """One scan to segment, a NIfTI file or a DICOM CT series, and the name its outputs take."""

    name: str
    path: Path
    series: Any = None   # the DicomSeries of a DICOM input

    def read(self):
        """The scan as a :class:`~keras_unet3plus.data.volume.Volume` (canonical HU): a DICOM series
        read whole, a NIfTI file opened to be streamed (its header read now, its voxels a slab at
        a time while predicting)."""
        if self.series is not None:
            from ..data.dicom import read_dicom_series

            return read_dicom_series(self.series, case_id=self.name)
        from ..data.nifti import open_image

        return open_image(self.path, case_id=self.name)


def find_inputs(path: str | os.PathLike, notes: list[str] | None = None) -> list[InputScan]:
    """The scans under ``path``: a NIfTI file; a folder of NIfTI files (nnU-Net's ``{case}_0000``
    names give ``{case}``); or, when it holds no NIfTI file, every CT DICOM series found in it
    (recursively, one scan per series; what was skipped and why is appended to ``notes``)."""
    path = Path(path)
    if path.is_file():
        if not is_nifti_name(path.name):
            raise DataError(f"{path}: not a NIfTI file (.nii / .nii.gz); give a DICOM series as its folder")
        return [InputScan(strip_nii(path.name), path)]
    if not path.is_dir():
        raise DataFileNotFoundError(f"{path}: input not found")
    files = find_input_files(path)
    if files:
        names = [strip_nii(f.name) for f in files]
        channels = [_CHANNEL.match(n) for n in names]
        if all(channels):   # nnU-Net raw layout
            extra = sorted({m.group("channel") for m in channels} - {"0000"})
            if extra:
                raise DataError(f"{path}: images have channels {', '.join(['0000'] + extra)} (nnU-Net "
                                f"{{case}}_XXXX names); this model takes one CT channel (_0000)")
            names = [m.group("case") for m in channels]
        return [InputScan(n, f) for n, f in zip(names, files)]
    from ..data.dicom import find_dicom_series

    found = find_dicom_series(path)
    if notes is not None:
        notes.extend(found.skipped)
    if not found:
        reasons = "; ".join(found.skipped[:3])
        raise DataFileNotFoundError(f"{path}: no NIfTI file and no CT DICOM series found"
                                    + (f" ({reasons})" if reasons else ""))
    return [InputScan(series.name, series.folder, series) for series in found]
