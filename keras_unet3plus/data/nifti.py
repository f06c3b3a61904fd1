"""NIfTI reading and validation (the volume type and orientation helpers live in data.volume).

Every volume is brought to RAS (nibabel's closest canonical orientation: axis 0 towards the
patient's right, axis 1 anterior, axis 2 superior, so axial slices are ``array[:, :, z]``).
A :class:`Volume` keeps what it takes to put a prediction back into the source file's voxel order
(:meth:`Volume.to_original`), so predictions can be written with the source affine.

Files are opened lazily with nibabel: a header costs a few bytes of I/O; voxel data is read one
volume at a time and never cached here. :class:`NiftiSlabs` reads a file a slab of axial slices at
a time (nibabel's ArrayProxy slicing over one open file, in the order the file stores them), so a
987-slice CT (0.5 GB stored, 1 GB as float32) is predicted, cached and checked in a few MB per slab.
This module is the NIfTI entry of the reader registry (:data:`READER`, :class:`NiftiScan`); code above
``data`` reads scans through :mod:`.readers`, whatever their format. :func:`checked_image` and
:func:`checked_label` are the value checks every reader applies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Generator

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt_mod
from nibabel.openers import ImageOpener
from numpy.typing import DTypeLike

from keras_unet3plus.atomic import atomic_path
from keras_unet3plus.data.tasks import TaskSpec, get_task
from keras_unet3plus.data.volume import (
    AFFINE_ATOL,
    SLAB,
    DataError,
    FileReader,
    ScanFile,
    Volume,
    context_windows,
    orientation_of,
    spacing_from_affine,
    to_canonical,
)

# re-exported (``x as x``): callers written before volume.py held them import these from here
from keras_unet3plus.data.volume import DataFileNotFoundError as DataFileNotFoundError
from keras_unet3plus.data.volume import to_original_orientation as to_original_orientation

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
    if not isinstance(img, nib.Nifti1Image):  # NIfTI-2 is a subclass
        raise DataError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {tuple(img.shape)}")
    if min(shape) < 1:
        raise DataError(f"{path}: empty volume, shape {shape}")
    orientation_of(img.affine, path)
    return img


def _read_data(img: nib.Nifti1Image, path: Path, dtype: DTypeLike | None) -> np.ndarray:
    """Read all voxels (scaled), wrapping decoding errors (truncated gzip, short files)."""
    try:
        data = np.asanyarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    except Exception as exc:
        raise DataError(
            f"{path}: could not read the voxel data, the file is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def checked_image(data: np.ndarray, path: Path) -> np.ndarray:
    """Image voxels as read, or a DataError naming ``path`` (NaN/inf, a non-numeric type)."""
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - np.count_nonzero(finite))
            raise DataError(f"{path}: {bad} voxel(s) are NaN or inf")
    elif data.dtype.kind not in "iub":
        raise DataError(f"{path}: unsupported voxel type {data.dtype}")
    return data


def checked_label(data: np.ndarray, path: Path, spec: TaskSpec) -> np.ndarray:
    """Label voxels (any part of a volume) mapped to the task's classes (uint8), or a DataError naming
    ``path``: a value not in ``spec.label_values`` (a spleen task given LiTS files), non-integers."""
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
    present = np.flatnonzero(np.bincount(data.ravel(order="K"), minlength=256))
    unexpected = sorted(set(present.tolist()) - set(spec.label_values))
    if unexpected:
        raise DataError(
            f"{path}: label values {unexpected} are not allowed for task '{spec.name}' "
            f"(allowed: {list(spec.label_values)})"
        )
    return spec.map_label(data)


def read_image_array(
    path: str | os.PathLike, dtype: DTypeLike | None = np.float32, img: nib.Nifti1Image | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical image voxels and canonical affine; NaN/inf rejected.

    ``dtype=None`` keeps the stored type when the file has no scaling (int16 for most CT), which
    halves the memory. The whole volume: :class:`NiftiSlabs` reads it a slab at a time.
    """
    path = Path(path)
    img = open_nifti(path) if img is None else img
    data = checked_image(_read_data(img, path, dtype), path)
    out, affine = to_canonical(data, img.affine)
    return out, affine


def read_label_array(
    path: str | os.PathLike, task: str | TaskSpec, img: nib.Nifti1Image | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical label voxels mapped to the task's classes (uint8) and the canonical affine.

    Raises DataError when a value is not one of ``task.label_values`` (e.g. a spleen task given
    LiTS files) or is not an integer.
    """
    spec = get_task(task)
    path = Path(path)
    img = open_nifti(path) if img is None else img
    out, affine = to_canonical(checked_label(_read_data(img, path, None), path, spec), img.affine)
    return out, affine


def check_pair(image_img: nib.Nifti1Image, label_img: nib.Nifti1Image, image_path: Path, label_path: Path) -> None:
    """Raise DataError when an image and its label do not share the voxel grid."""
    ishape = open_shape(image_img)
    lshape = open_shape(label_img)
    if ishape != lshape:
        raise DataError(f"{label_path}: label shape {lshape} does not match image {image_path.name} shape {ishape}")
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


# --------------------------------------------------------------------------------------------
# reading a slab of axial slices at a time
# --------------------------------------------------------------------------------------------

_RAS_ORNT = ornt_mod.axcodes2ornt(("R", "A", "S"))


class NiftiSlabs:
    """A NIfTI volume in RAS order, read a slab of axial slices at a time (a
    :class:`~keras_unet3plus.data.volume.SlabSource`), never whole unless asked.

    Why: a LiTS CT of 512 x 512 x 987 is 0.5 GB stored and 1 GB as float32; predicting, caching and
    checking it need one slab at a time. :meth:`slabs` opens the file once and reads it front to
    back (a ``.nii.gz`` is decompressed once, never rewound), yielding the slabs in the order the
    file stores them (descending z for a file stored inferior-first). A file whose axial axis is
    not its last (sagittal or coronal storage) cannot be read by axial slab: it is read whole once,
    in its stored type. ``kind="image"`` rejects NaN/inf; ``kind="label"`` checks and maps the
    values for ``task`` (:func:`checked_label`). Indexing (``src[:, :, a:b]``) and ``np.asarray(src)``
    give float32 HU (labels: uint8), as :func:`load_case` would.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        img: nib.Nifti1Image | None = None,
        kind: str = "image",
        task: str | TaskSpec | None = None,
    ):
        if kind not in ("image", "label"):
            raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
        self.path = Path(path)
        self.img = open_nifti(self.path) if img is None else img
        self.kind = kind
        if kind == "label" and task is None:
            raise ValueError(f"{self.path}: a label needs a task to map its values (liver, spleen, ...)")
        #: the task a label's values are checked and mapped for (None for an image)
        self.spec = get_task(task) if kind == "label" and task is not None else None
        file_shape = open_shape(self.img)
        self._transform = ornt_mod.ornt_transform(orientation_of(self.img.affine, self.path), _RAS_ORNT)
        axes = self._transform[:, 0].astype(int)
        x, y, z = (file_shape[int(np.flatnonzero(axes == j)[0])] for j in range(3))
        self.shape: tuple[int, int, int] = (x, y, z)
        self._z_axis = int(np.flatnonzero(axes == 2)[0])
        self._z_flip = bool(self._transform[self._z_axis, 1] < 0)
        self._extra = (0,) * (len(self.img.shape) - 3)
        self.affine = self.img.affine @ ornt_mod.inv_ornt_aff(self._transform, file_shape)
        self.ndim = 3
        self.dtype = np.dtype(np.uint8 if kind == "label" else np.float32)

    @property
    def streams(self) -> bool:
        """True when the file stores axial slices one after another (read by slab, not whole)."""
        return self._z_axis == 2

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"NiftiSlabs({str(self.path)!r}, {self.kind}, shape={self.shape})"

    # -- reading -------------------------------------------------------------------------------
    def _file_range(self, z0: int, z1: int) -> tuple[int, int]:
        n = self.shape[2]
        return (n - z1, n - z0) if self._z_flip else (z0, z1)

    def _slicer(self, z0: int, z1: int) -> tuple:
        slicer = [slice(None)] * 3
        slicer[self._z_axis] = slice(*self._file_range(z0, z1))
        return tuple(slicer) + self._extra

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        """Checked, canonical (X, Y, k) voxels from a block in file order."""
        raw = np.asarray(raw)
        while raw.ndim > 3:
            raw = raw[..., 0]
        if self.spec is not None:  # a label
            raw = checked_label(raw, self.path, self.spec)
        else:
            raw = checked_image(raw, self.path)
        return ornt_mod.apply_orientation(raw, self._transform)

    def _read(self, proxy, slicer) -> np.ndarray:
        try:
            return proxy[slicer]
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"{self.path}: could not read the voxel data, the file is truncated or corrupt "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Canonical slices ``[z0, z1)`` as stored (scaled where the file says so), checked."""
        if not 0 <= z0 < z1 <= self.shape[2]:
            raise IndexError(f"{self.path}: slices {z0}..{z1 - 1} outside 0..{self.shape[2] - 1}")
        return self._finish(self._read(self.img.dataobj, self._slicer(z0, z1)))

    def slabs(self, chunk: int = SLAB) -> Generator[tuple[int, int, np.ndarray], None, None]:
        """``(z0, z1, canonical slab)`` over the whole volume, in the order the file stores them;
        the file is open for this pass only (closed when it ends or is abandoned)."""
        n, chunk = self.shape[2], max(1, int(chunk))
        starts = list(range(0, n, chunk))
        if self._z_flip:
            starts.reverse()
        if not self.streams:  # axial slices are not contiguous in the file: read it once, whole
            whole = self._finish(self._read(self.img.dataobj, (slice(None),) * 3 + self._extra))
            for z0 in range(0, n, chunk):
                yield z0, min(n, z0 + chunk), whole[:, :, z0 : z0 + chunk]
            return
        klass = type(self.img)
        try:
            opener = ImageOpener(str(self.path), "rb")
        except Exception as exc:
            raise DataError(f"{self.path}: cannot open the file ({type(exc).__name__}: {exc})") from exc
        with opener as fobj:
            try:
                files: dict[str, Any] = {"image": fobj, "header": fobj}  # nibabel reads through the opener
                proxy = klass.from_file_map(klass.make_file_map(files)).dataobj
            except Exception as exc:
                raise DataError(f"{self.path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
            for z0 in starts:
                z1 = min(n, z0 + chunk)
                yield z0, z1, self._finish(self._read(proxy, self._slicer(z0, z1)))

    def windows(self, chunk: int, context: int):
        """:func:`~keras_unet3plus.data.volume.context_windows` of this file."""
        return context_windows(self, chunk, context)

    # -- the array face (what code written for in-memory volumes sees) --------------------------
    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=self.dtype)
        for z0, z1, slab in self.slabs():
            out[:, :, z0:z1] = slab
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if len(key) == 3 and isinstance(key[2], slice) and key[2].step in (None, 1):
            z0, z1, _ = key[2].indices(self.shape[2])
            if z1 <= z0:
                return np.empty(self.shape[:2] + (0,), self.dtype)[key[0], key[1]]
            return np.asarray(self.read(z0, z1), dtype=self.dtype)[key[0], key[1]]
        return np.asarray(self)[key]


# --------------------------------------------------------------------------------------------
# public loaders
# --------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike, case_id: str | None = None) -> Volume:
    """Load an unlabelled volume (inference): canonical float32 HU, spacing, source orientation."""
    from types import SimpleNamespace

    path = Path(path)
    return load_case(
        SimpleNamespace(case_id=case_id or strip_nii(path.name), image_path=path, label_path=None), task=None
    )


def load_case(case: Case, task: str | TaskSpec | None) -> Volume:
    """Load a NIfTI case's image and (if present) its label mapped for ``task``, both canonical (any
    registered format: :func:`keras_unet3plus.data.readers.load_case`)."""
    image_path = Path(case.image_path)
    img = open_nifti(image_path)
    label = None
    if case.label_path is not None:
        label_path = Path(case.label_path)
        if task is None:
            raise ValueError(f"{label_path}: a label needs a task to map its values (liver, spleen, ...)")
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


class NiftiScan(ScanFile):
    """A NIfTI file opened by the reader registry: header read, voxels streamed by :class:`NiftiSlabs`
    (or read whole, as :func:`load_case` reads them)."""

    format = "NIfTI"
    streams = True

    def __init__(self, path: Path):
        img = open_nifti(path)
        super().__init__(path, img.affine, open_shape(img), header=img.header, name=strip_nii(Path(path).name))
        self.img = img

    def image(self, stream: bool = False):
        if stream:
            return NiftiSlabs(self.path, self.img)
        return np.ascontiguousarray(read_image_array(self.path, np.float32, img=self.img)[0])

    def label(self, task, stream: bool = False):
        if stream:
            return NiftiSlabs(self.path, self.img, kind="label", task=task)
        return np.ascontiguousarray(read_label_array(self.path, task, img=self.img)[0])


#: The NIfTI entry of the reader registry (:mod:`keras_unet3plus.data.readers`).
READER = FileReader("NIfTI", (".nii.gz", ".nii"), NiftiScan)


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
