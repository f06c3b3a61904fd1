"""What to segment: a scan file of any registered format (NIfTI, NRRD, MetaImage), a folder of them
(nnU-Net ``{case}_0000`` names too), or the CT DICOM series under a folder, each with the name its
outputs take. Reading goes through the reader registry (:mod:`keras_unet3plus.data.readers`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.layouts import is_lits_label
from ..data.readers import case_name, find_scan_files, known_formats, open_volume, reader_for
from ..data.volume import DataError, DataFileNotFoundError

__all__ = ["InputScan", "find_inputs", "find_input_files", "nifti_case_name"]

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

#: the name callers of this module know
find_input_files = find_scan_files


def nifti_case_name(path: str | os.PathLike) -> str:
    """The case name of a scan file: its name without its format's ending (``.nii.gz``, ``.mha``, ...)."""
    return case_name(path)


@dataclass
class InputScan:
    """One scan to segment, a file or a DICOM CT series, and the name its outputs take."""

    name: str
    path: Path
    series: Any = None  # the DicomSeries of a DICOM input

    def read(self):
        """The scan as a :class:`~keras_unet3plus.data.volume.Volume` (canonical HU), read by its
        registered reader: a NIfTI file opened to be streamed (its header read now, its voxels a slab
        at a time while predicting), other formats and DICOM series read whole."""
        if self.series is not None:  # one of the series found under a folder: the DICOM reader opens it
            from ..data.dicom import READER

            return READER.open(self.series).volume(self.name)
        return open_volume(self.path, case_id=self.name)


def find_inputs(path: str | os.PathLike, notes: list[str] | None = None) -> list[InputScan]:
    """The scans under ``path``: a scan file; a folder of scan files (nnU-Net's ``{case}_0000`` names
    give ``{case}``; in a LiTS folder the ``segmentation-N`` labels are left out); or, when it holds
    none, every CT DICOM series found in it (recursively, one scan per series; what was skipped and
    why is appended to ``notes``)."""
    path = Path(path)
    if path.is_file():
        if reader_for(path).suffixes == ():
            raise DataError(f"{path}: not a scan file ({known_formats()}); give a DICOM series as its folder")
        return [InputScan(case_name(path), path)]
    if not path.is_dir():
        raise DataFileNotFoundError(f"{path}: input not found")
    files = find_input_files(path)
    labels = [f for f in files if is_lits_label(f.name)]
    if labels and len(labels) < len(files):  # a LiTS folder: its segmentation-N files are labels
        files = [f for f in files if not is_lits_label(f.name)]
        if notes is not None:
            notes.append(
                f"{path}: {len(labels)} LiTS label file(s) (segmentation-N) left out; "
                "their volume-N scans are segmented"
            )
    if files:
        names = [case_name(f) for f in files]
        channels = [_CHANNEL.match(n) for n in names]
        if all(channels):  # nnU-Net raw layout
            extra = sorted({m.group("channel") for m in channels} - {"0000"})
            if extra:
                raise DataError(
                    f"{path}: images have channels {', '.join(['0000'] + extra)} (nnU-Net "
                    f"{{case}}_XXXX names); this model takes one CT channel (_0000)"
                )
            names = [m.group("case") for m in channels]
        return [InputScan(n, f) for n, f in zip(names, files)]
    from ..data.dicom import find_dicom_series

    found = find_dicom_series(path)
    if notes is not None:
        notes.extend(found.skipped)
    if not found:
        reasons = "; ".join(found.skipped[:3])
        raise DataFileNotFoundError(
            f"{path}: no scan file and no CT DICOM series found" + (f" ({reasons})" if reasons else "")
        )
    return [InputScan(series.name, series.folder, series) for series in found]
