"""The reader registry: every input format in one list, a scan's reader chosen by what it can read.

Why: training, the slice cache, check-data, evaluation and predict all read scans; through this
module they read any registered format the same way, so a format is added in one place (nnU-Net's
``LIST_OF_IO_CLASSES`` idea). A reader (:class:`Reader`) has a ``name``, the file-name
``suffixes`` it reads (none for a folder format), ``can_read(path)`` and ``open(path)``, which reads
the headers and returns a :class:`~keras_unet3plus.data.volume.ScanFile` (grid now, voxels when
asked, a slab at a time where the format streams). Adding a format: one module holding its
``ScanFile`` subclass and a ``READER`` (``data/itk.py`` is the worked example), and one line in
:data:`READERS`. The first reader that can read a path reads it; the file formats come before the
folder one.

Above the readers, what every consumer needs once: :func:`read_volume` / :func:`open_volume` (a
scan as a :class:`~keras_unet3plus.data.volume.Volume`), :func:`load_case` and :func:`open_pair`
(an image and its label on one grid, checked), :func:`check_case`, :func:`voxel_scan`,
:func:`organ_slices`, :func:`paired_slabs`, and the names of scans (:func:`case_name`,
:func:`find_scan_files`, :func:`scan_identity`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from collections.abc import Iterator

import numpy as np

from keras_unet3plus.data import dicom, itk, nifti
from keras_unet3plus.data.tasks import TaskSpec, get_task
from keras_unet3plus.data.volume import (
    SLAB,
    DataError,
    DataFileNotFoundError,
    ScanFile,
    Volume,
    check_same_grid,
    slab_source,
)

if TYPE_CHECKING:  # pragma: no cover

    class Case(Protocol):
        """What the readers use of a case (data.layouts.Case has it; readers know no layouts)."""

        case_id: str
        image_path: Path
        label_path: Path | None


__all__ = [
    "Reader",
    "READERS",
    "reader_for",
    "open_scan",
    "read_volume",
    "open_volume",
    "load_image",
    "load_case",
    "open_pair",
    "check_case",
    "voxel_scan",
    "organ_slices",
    "paired_slabs",
    "case_name",
    "is_scan_name",
    "find_scan_files",
    "scan_identity",
    "file_suffixes",
    "known_formats",
    "SLAB",
]


class Reader(Protocol):
    """One input format: what it is called, which paths it reads, and how it opens one."""

    name: str
    #: file-name endings it reads (``()`` for a folder format such as a DICOM series)
    suffixes: tuple[str, ...]

    def can_read(self, path: Path) -> bool: ...

    def open(self, path: Path) -> ScanFile: ...


#: Every input format, in the order they are asked: file formats first, the folder format last.
READERS: list[Reader] = [
    nifti.READER,  # .nii.gz, .nii (nibabel; streamed a slab at a time)
    itk.READER,  # .nrrd, .nhdr, .mha, .mhd (SimpleITK, the [itk] extra)
    dicom.READER,  # a folder holding one CT series (pydicom, the [dicom] extra)
]


def file_suffixes() -> tuple[str, ...]:
    """Every file-name ending a registered reader reads (asked of :data:`READERS` each time)."""
    return tuple(s for r in READERS for s in r.suffixes)


def known_formats() -> str:
    """The registered formats, for messages: ``NIfTI (.nii.gz, .nii), ..., DICOM series (a folder)``."""
    return ", ".join(f"{r.name} ({', '.join(r.suffixes) or 'a folder'})" for r in READERS)


def reader_for(path: str | os.PathLike) -> Reader:
    """The first registered reader that can read ``path``; a DataError naming it and the known
    formats when none can (DataFileNotFoundError when it does not exist)."""
    path = Path(path)
    if not path.exists():
        raise DataFileNotFoundError(f"{path}: file not found")
    for reader in READERS:
        if reader.can_read(path):
            return reader
    raise DataError(f"{path}: no reader for this file; known formats: {known_formats()}")


def open_scan(path: str | os.PathLike) -> ScanFile:
    """``path`` opened by its reader: the headers read, the grid known, no voxel read yet."""
    return reader_for(path).open(Path(path))


def read_volume(path: str | os.PathLike, case_id: str | None = None) -> Volume:
    """An unlabelled scan of any registered format, its image whole in memory (float32 HU, RAS)."""
    return open_scan(path).volume(case_id)


def open_volume(path: str | os.PathLike, case_id: str | None = None) -> Volume:
    """An unlabelled scan whose image is read a slab at a time where its format streams (NIfTI: what
    ``predict`` streams), else whole."""
    return open_scan(path).volume(case_id, stream=True)


#: the name callers of :mod:`keras_unet3plus.data` know
load_image = read_volume


def open_pair(case: Case) -> tuple[ScanFile, ScanFile | None]:
    """A case's image and label opened (headers only), the label checked to be on the image's grid."""
    image = open_scan(case.image_path)
    if case.label_path is None:
        return image, None
    label = open_scan(case.label_path)
    check_same_grid(image, label)
    return image, label


def load_case(case: Case, task: str | TaskSpec | None) -> Volume:
    """A case's image and (if present) its label mapped for ``task``, both canonical, in memory; the
    label is read first (a wrong label fails before the larger image is read)."""
    image, label = open_pair(case)
    if label is not None and task is None:
        raise ValueError(f"{case.label_path}: a label needs a task to map its values (liver, spleen, ...)")
    labels = None if label is None or task is None else label.label(get_task(task))
    return image.volume(case.case_id, label=labels, label_path=None if label is None else label.path)


def check_case(case: Case) -> None:
    """Cheap header-only checks of a case: files readable, 3-D, the label on the image's grid."""
    open_pair(case)


def organ_slices(label: ScanFile, task: str | TaskSpec, chunk: int = SLAB) -> np.ndarray:
    """Which axial slices of a label hold the organ (bool per canonical slice), values checked, read
    a slab at a time where the format streams."""
    present = np.zeros(label.shape[2], dtype=bool)
    for z0, z1, slab in slab_source(label.label(task, stream=True)).slabs(chunk):
        present[z0:z1] = slab.any(axis=(0, 1))
    return present


def voxel_scan(
    case: Case, task: str | TaskSpec | None, chunk: int = SLAB
) -> tuple[np.ndarray | None, tuple[float, float, float], tuple[int, int, int]]:
    """Every voxel of a case read once, a slab at a time where the format streams: the label's values
    and the image's NaN/inf checked (DataError naming the file; the label first), and for a labelled
    case which axial slices hold the organ. Returns ``(organ slices or None, spacing, shape)``."""
    image, label = open_pair(case)
    if label is not None and task is None:
        raise ValueError(f"{case.label_path}: a label needs a task to map its values (liver, spleen, ...)")
    present = None if label is None or task is None else organ_slices(label, task, chunk)
    for _ in slab_source(image.image(stream=True)).slabs(chunk):
        pass
    return present, image.spacing, image.shape


def paired_slabs(image: Any, label: Any, chunk: int = SLAB) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(z0, z1, image slab, label slab)`` over a case, in the image's reading order. Two files that
    store their slices in the same order are read side by side, a slab at a time; otherwise (an
    inferior-first NIfTI beside a MetaImage label) the label is held whole (uint8, a quarter of the
    float32 image) and cut to the image's slabs."""
    image_slabs, label_slabs = slab_source(image).slabs(chunk), slab_source(label).slabs(chunk)
    held = None
    for z0, z1, slab in image_slabs:
        if held is None:
            got = next(label_slabs, None)
            if got is not None and got[:2] == (z0, z1):
                yield z0, z1, slab, got[2]
                continue
            label_slabs.close()
            held = np.asarray(label)
        yield z0, z1, slab, held[:, :, z0:z1]


# --------------------------------------------------------------------------------------------
# names of scans on disk
# --------------------------------------------------------------------------------------------


def case_name(path: str | os.PathLike) -> str:
    """A scan's name without its format's ending (``spleen_3.nii.gz``, ``spleen_3.mha`` -> ``spleen_3``;
    a DICOM series folder: the folder's name)."""
    name = Path(path).name
    return next((name[: -len(s)] for s in file_suffixes() if name.endswith(s)), name)


def is_scan_name(name: str) -> bool:
    """True for a visible file name a registered reader reads (hidden and AppleDouble ``._x`` files
    excluded)."""
    return not name.startswith(".") and name.endswith(file_suffixes())


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def find_scan_files(folder: str | os.PathLike) -> list[Path]:
    """Files of every registered file format directly in ``folder``, naturally sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFileNotFoundError(f"{folder}: input folder not found")
    return sorted((p for p in folder.iterdir() if is_scan_name(p.name) and p.is_file()), key=_natural)


def scan_identity(path: str | os.PathLike) -> str:
    """What changes when a scan changes (the slice cache's source key): ``path|size|mtime`` of its
    file, and of every file under its folder (a DICOM series) or of the data files beside a detached
    header (``.mhd``/``.nhdr`` + ``.raw``)."""
    path = Path(path)
    files = [path]
    if path.is_dir():
        files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    elif path.name.endswith((".mhd", ".nhdr")):
        files += sorted(p for p in path.parent.glob(f"{case_name(path)}.*") if not is_scan_name(p.name))
    parts = []
    for p in files:
        st = p.stat()
        parts.append(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(parts)
