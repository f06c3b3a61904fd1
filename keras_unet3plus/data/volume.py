"""The in-memory volume every reader returns, the opened scan every reader gives, and the errors
every reader raises.

Readers (NIfTI, NRRD/MetaImage, DICOM; :mod:`.readers` holds their registry) bring a scan to RAS
(axis 0 towards the patient's right, axis 1 anterior, axis 2 superior, so axial slices are
``array[:, :, z]``) and keep, in :class:`Volume`, what it takes to put a prediction back on the
source grid. A reader opens a scan as a :class:`ScanFile` (its grid from the headers, its voxels
read when asked), which every format fills the same way. Nothing here knows about file formats or
layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from collections.abc import Callable, Generator

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
    x, y, z = (float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))
    return x, y, z


def canonical_grid(
    affine: np.ndarray, shape: tuple[int, ...], path: Path | str
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The RAS shape and affine :func:`to_canonical` would give a volume of ``shape`` on ``affine``,
    from the header alone (what a reader knows before reading any voxel)."""
    transform = ornt_mod.ornt_transform(orientation_of(affine, path), _RAS)
    axes = transform[:, 0].astype(int)
    out = tuple(int(shape[int(np.flatnonzero(axes == j)[0])]) for j in range(3))
    return out, np.asarray(affine) @ ornt_mod.inv_ornt_aff(transform, tuple(shape[:3]))  # type: ignore[return-value]


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
        x, y, z = self.image.shape
        return int(x), int(y), int(z)

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Put a canonical (X, Y, Z[, C]) array back into the source file's voxel order."""
        array = np.asarray(array)
        if array.shape[:3] != self.image.shape:
            raise ValueError(f"array shape {array.shape} does not match the canonical volume shape {self.image.shape}")
        return to_original_orientation(array, self.original_affine)

    def to_nifti(self, array: np.ndarray, dtype: np.dtype | type = np.uint8):
        """A NIfTI image of ``array`` (canonical order) on the source file's grid and affine."""
        import nibabel as nib

        data = self.to_original(array).astype(dtype)
        img = nib.Nifti1Image(data, self.original_affine)
        img.header.set_xyzt_units("mm")
        return img


# --------------------------------------------------------------------------------------------
# a scan opened by a reader: the grid from its headers, the voxels when asked
# --------------------------------------------------------------------------------------------


class ScanFile:
    """A scan a reader has opened (:mod:`.readers`): its canonical grid known from the headers, its
    voxels read when asked, a slab at a time where the format allows it.

    Why one class for every format: the pair checks, the slice cache, the pipeline, check-data,
    evaluation and predict need the same few things of any scan, so a new format only says how to
    read its own headers and voxels. A format sets the attributes and implements :meth:`image` and
    :meth:`label`; ``streams`` says whether they read a slab at a time (else whole, once).
    """

    format: str = ""
    streams: bool = False

    def __init__(
        self,
        path: Path,
        original_affine: np.ndarray,
        original_shape: tuple[int, ...],
        header: Any = None,
        source: Any = None,
        name: str = "",
    ):
        self.path = Path(path)
        self.original_affine = np.asarray(original_affine, dtype=float)
        self.original_shape = tuple(int(s) for s in original_shape)
        self.shape, self.affine = canonical_grid(self.original_affine, self.original_shape, self.path)
        self.header, self.source, self.name = header, source, name or self.path.name

    @property
    def spacing(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {str(self.path)!r} {self.format} shape={self.shape}>"

    def image(self, stream: bool = False) -> Any:
        """Canonical float32 HU (X, Y, Z), NaN/inf refused: an array, or with ``stream`` (where the
        format streams) a :class:`SlabSource` read a slab at a time that also indexes like one."""
        raise NotImplementedError

    def label(self, task: Any, stream: bool = False) -> Any:
        """Canonical label voxels mapped to ``task``'s classes (uint8), values checked (DataError
        naming the file): an array, or with ``stream`` a :class:`SlabSource`."""
        raise NotImplementedError

    def volume(
        self, case_id: str | None = None, *, stream: bool = False, label: Any = None, label_path: Path | None = None
    ) -> Volume:
        """This scan as a :class:`Volume` (its image whole, or streamed where the format streams)."""
        return Volume(
            image=self.image(stream),
            label=label,
            spacing=self.spacing,
            affine=self.affine,
            original_affine=self.original_affine,
            original_shape=self.original_shape,
            image_path=self.path,
            label_path=label_path,
            case_id=case_id or self.name,
            header=self.header,
            source=self.source,
        )


def check_same_grid(image: ScanFile, other: ScanFile, what: str = "label", of: str = "image") -> None:
    """Raise DataError naming ``other`` when it is not on ``image``'s voxel grid (canonical shape and
    affine: two files storing one grid in different axis orders agree)."""
    if other.shape != image.shape:
        raise DataError(
            f"{other.path}: {what} shape {other.shape} does not match {of} {image.path.name} shape {image.shape}"
        )
    if not np.allclose(image.affine, other.affine, rtol=0, atol=AFFINE_ATOL):
        diff = float(np.abs(image.affine - other.affine).max())
        raise DataError(
            f"{other.path}: {what} affine differs from {of} {image.path.name} affine "
            f"(max difference {diff:.4g}); they are not on the same voxel grid"
        )


class FileReader:
    """A reader of one file format, known by the endings of its file names (see :mod:`.readers`)."""

    def __init__(self, name: str, suffixes: tuple[str, ...], opener: Callable[[Path], ScanFile]):
        self.name, self.suffixes, self._opener = name, tuple(suffixes), opener

    def __repr__(self) -> str:
        return f"<reader {self.name} ({', '.join(self.suffixes)})>"

    def can_read(self, path: Path) -> bool:
        return Path(path).name.endswith(self.suffixes) and not Path(path).is_dir()

    def open(self, path: Path) -> ScanFile:
        """Its headers read (DataError naming the file when they are not this format's)."""
        return self._opener(Path(path))


# --------------------------------------------------------------------------------------------
# volumes read a slab of axial slices at a time
# --------------------------------------------------------------------------------------------

#: axial slices read at a time by default (16 MB of int16 at 512 x 512)
SLAB = 32


class SlabSource(Protocol):
    """A canonical (X, Y, Z) volume that can be read in axial slabs (a file read lazily, or an array).

    ``slabs(chunk)`` yields ``(z0, z1, array (X, Y, z1 - z0))`` covering ``[0, Z)`` once, in the
    order that is cheapest to read (for a file: the order it stores them, ascending or descending).
    """

    shape: tuple[int, int, int]

    def slabs(self, chunk: int = SLAB) -> Generator[tuple[int, int, np.ndarray], None, None]: ...


class ArraySlabs:
    """An in-memory (X, Y, Z) array as a :class:`SlabSource` (views, ascending)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        x, y, z = array.shape
        self.shape = (int(x), int(y), int(z))

    def slabs(self, chunk: int = SLAB) -> Generator[tuple[int, int, np.ndarray], None, None]:
        n = self.shape[2]
        for z0 in range(0, n, chunk):
            z1 = min(n, z0 + chunk)
            yield z0, z1, self.array[:, :, z0:z1]


def slab_source(volume: Any) -> SlabSource:
    """``volume`` as a :class:`SlabSource`: itself when it is one (a lazily read file), else the array."""
    if hasattr(volume, "slabs") and hasattr(volume, "shape"):
        return volume
    array = np.asarray(volume)
    if array.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) volume, got shape {array.shape}")
    return ArraySlabs(array)


def context_windows(
    source: SlabSource, chunk: int, context: int
) -> Generator[tuple[int, int, int, np.ndarray], None, None]:
    """``(z0, z1, lo, window)`` for every chunk ``[z0, z1)`` of ``source``, in its reading order:
    ``window`` is ``volume[:, :, lo:hi]`` with ``lo = max(0, z0 - context)``, ``hi = min(Z, z1 +
    context)`` (the 2.5D neighbours), cut from the chunk before, the chunk itself and the one after
    (``chunk >= context``), so each slice is read once and at most three chunks are held."""
    if chunk < max(1, context):
        raise ValueError(f"chunk ({chunk}) must be at least the context ({context}) and >= 1")
    n = source.shape[2]
    it = iter(source.slabs(chunk))
    prev, cur, nxt = None, next(it, None), None
    while cur is not None:
        nxt = next(it, None)
        z0, z1, _ = cur
        lo, hi = max(0, z0 - context), min(n, z1 + context)
        parts = sorted((p for p in (prev, cur, nxt) if p is not None and p[0] < hi and p[1] > lo), key=lambda p: p[0])
        pieces = [a[:, :, max(lo, s) - s : min(hi, e) - s] for s, e, a in parts]
        if sum(p.shape[2] for p in pieces) != hi - lo:
            raise ValueError(f"the slabs of {source!r} are not in reading order around slices {lo}..{hi - 1}")
        window = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=2)
        yield z0, z1, lo, window
        prev, cur = cur, nxt
