"""DICOM CT series reader: a folder of slices -> a canonical (RAS) :class:`Volume`.

Hospitals export CT as one file per slice, with any file names, in any order, often mixed with
other series (localizers, dose reports, SEG/SR objects) and stray files. This module finds the CT
series by their headers, then builds the volume from the geometry the files state:

- slice order from Image Position (Patient) projected on the slice normal (the cross product of
  the two Image Orientation (Patient) direction cosines), never from file names or InstanceNumber;
- voxel (column i, row j, slice k) sits at ``IPP_0 + i*dc*F[:,0] + j*dr*F[:,1] + k*ds*normal``
  (F = IOP row/column cosines, PixelSpacing = [dr, dc]) in LPS; NIfTI and this package use RAS,
  so x and y change sign. That (column, row, slice) array and affine is what dcm2niix writes and is
  kept as ``original_affine``; the volume itself is brought to RAS canonical;
- HU = stored value * RescaleSlope + RescaleIntercept, slice by slice;
- slice spacing from the positions (SliceThickness is the reconstructed slab, not the step);
- pixels equal to PixelPaddingValue (or within PixelPaddingRangeLimit) are outside the scanned
  field of view: they become air, whatever the rescale would make of them.

What is not a slice of the volume is left out with a note: non-DICOM files, a DICOMDIR index,
other SOP classes (SEG, SR dose reports, secondary captures), localizers, and secondary images
(dose screens) that have no position or sit beside the primary slices of a series.

Series that cannot be read as one regular grid (a missing or duplicated slice, mixed image sizes
or orientations, gantry tilt) raise a :class:`DataError` naming the folder and the problem rather
than returning a distorted volume. pydicom is an optional extra, imported inside the functions.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_unet3plus._extras import require
from keras_unet3plus.data.volume import DataError, DataFileNotFoundError, ScanFile, Volume, to_canonical

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UNSUPPORTED_CT = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
#: Largest in-plane drift of the slice positions (as a fraction of the pixel size) still taken as
#: a straight stack; beyond it the slices are sheared (gantry tilt) and a regular grid would lie.
TILT_TOLERANCE_PIXELS = 0.1
#: Tolerance of the slice step: relative, and absolute in mm (the larger applies).
STEP_RTOL, STEP_ATOL = 0.01, 0.01
#: Image orientation cosines may differ by DS rounding between the files of one series.
IOP_ATOL = 1e-4
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Media Storage Directory Storage: a DICOMDIR, the index of a disc or export folder (no image).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: HU of padded pixels (PixelPaddingValue): air as a 12-bit scanner stores it (stored 0, intercept
#: -1024), what scanners that do not pad show outside the field of view.
PADDING_HU = -1024.0
#: Compressed transfer syntaxes the [dicom] extra decodes: python-gdcm (BSD) all of them, pillow
#: (highdicom's) JPEG baseline/extended and JPEG 2000, pyjpegls (highdicom's) JPEG-LS, pydicom itself
#: RLE (and deflate, which is not a compression of the pixels). JPEG Lossless (process 14, SV1 and
#: other predictors) is decoded by python-gdcm only.
_DECODED_BY_THE_EXTRA = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
}
#: Decoders pydicom names in its notes that are GPL-licensed: never suggested (the package is Apache-2.0).
_GPL_DECODERS = {"pylibjpeg-libjpeg"}
_EXTENSIONS_TRIED_WITHOUT_PREAMBLE = ("", ".dcm", ".dicom", ".ima", ".img")


@dataclass
class DicomSeries:
    """One CT series found in a folder: its files and their headers (no pixel data).

    ``name`` is unique among the series of one search and safe as a file name. After
    :func:`read_dicom_series` (``Volume.source``), ``files``/``headers`` are in slice order, the
    order of the last axis of ``Volume.to_original``'s result.
    """

    uid: str
    name: str
    folder: Path
    files: list[Path] = field(repr=False)
    headers: list[Any] = field(repr=False)
    description: str = ""
    series_number: int | None = None
    notes: list[str] = field(default_factory=list, repr=False)

    @property
    def sop_instance_uids(self) -> list[str]:
        return [str(h.SOPInstanceUID) for h in self.headers]

    def __len__(self) -> int:
        return len(self.files)


class DicomSeriesList(list):
    """The CT series of a folder (a list), with ``skipped``: why other files/series were left out."""

    def __init__(self, series: list[DicomSeries] = (), skipped: list[str] | None = None):  # type: ignore[assignment]
        super().__init__(series)
        self.skipped: list[str] = list(skipped or [])


# --------------------------------------------------------------------------------------------
# finding series
# --------------------------------------------------------------------------------------------


def _read_header(path: Path) -> Dataset | str:
    """The header of a DICOM file, or the reason it is not one (text for the notes)."""
    import pydicom

    try:
        with open(path, "rb") as fh:
            start = fh.read(132)
    except OSError as exc:
        return f"{path}: cannot be opened ({exc.strerror or exc}), ignored"
    has_preamble = len(start) == 132 and start[128:132] == b"DICM"
    if not has_preamble and path.suffix.lower() not in _EXTENSIONS_TRIED_WITHOUT_PREAMBLE:
        return f"{path}: not a DICOM file, ignored"
    try:
        # force only for files without the DICM preamble (old exports); then demand image tags,
        # since force parses almost anything
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=not has_preamble)
        if not has_preamble and not (ds.get("SOPClassUID") or ("Rows" in ds and "ImagePositionPatient" in ds)):
            return f"{path}: not a DICOM file, ignored"
    except Exception as exc:  # pydicom raises many types on garbage
        if not has_preamble:
            return f"{path}: not a DICOM file, ignored"
        return f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc}), ignored"
    return ds


def _sop_class(ds: Dataset) -> str:
    """The SOP class, from the file meta header when an anonymiser emptied the dataset's own."""
    return str(ds.get("SOPClassUID") or _meta(ds, "MediaStorageSOPClassUID"))


def _meta(ds: Dataset, keyword: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get(keyword, "") or "") if meta is not None else ""


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    if not uid:
        return "no SOP class"
    name = UID(uid).name
    return name if name != uid else f"SOP class {uid}"


def _derived_uid(*parts: str) -> str:
    """A UID that is the same every time the same files are read (for exports stripped of UIDs)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("._-")[:64]


def _series_name(series_number: int | None, description: str, uid: str, taken: set[str]) -> str:
    parts = [f"{series_number:03d}" if series_number is not None else "", _safe_name(description)]
    base = "_".join(p for p in parts if p) or _safe_name(uid) or "series"
    name, n = base, 2
    while name.lower() in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name.lower())
    return name


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def find_dicom_series(folder: str | os.PathLike) -> DicomSeriesList:
    """All CT image series under ``folder`` (recursive, any file names), read from headers only.

    Files that are not DICOM, a DICOMDIR, series that are not CT images (SEG, SR, secondary
    captures, localizers, dose screens, Enhanced CT) are left out; the returned list's ``skipped``
    says which and why, each series' ``notes`` what it left out of itself (also logged at INFO).
    """
    require("pydicom", "dicom")
    folder = Path(folder)
    if not folder.exists():
        raise DataFileNotFoundError(f"{folder}: folder not found")
    if not folder.is_dir():
        hint = "; give the folder it is in" if folder.name.upper() == "DICOMDIR" else ""
        raise DataError(f"{folder}: expected a folder holding a DICOM series, got a file{hint}")

    skipped: list[str] = []
    found: list[DicomSeries] = []
    taken: set[str] = set()
    for key, members in _headers_by_series(folder, skipped).items():
        series = _series_of(key, members, folder, taken, skipped)
        if series is not None:
            found.append(series)
    for message in skipped:
        log.info(message)
    for series in found:
        for message in series.notes:
            log.info(message)
    found.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.name))
    return DicomSeriesList(found, skipped)


def _headers_by_series(folder: Path, skipped: list[str]) -> dict[Any, list[tuple[Path, Any]]]:
    """Every DICOM header under ``folder`` grouped by series (SeriesInstanceUID, or where an export
    dropped it: folder, frame of reference, number and description); what is not DICOM, hidden
    files and DICOMDIR indexes go to ``skipped`` with the reason."""
    groups: dict[Any, list[tuple[Path, Any]]] = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):  # .DS_Store, temporary files of atomic writers
                continue
            path = Path(root) / name
            ds = _read_header(path)
            if isinstance(ds, str):
                skipped.append(ds)
                continue
            if _sop_class(ds) == DICOMDIR_SOP_CLASS:
                skipped.append(
                    f"{path}: a DICOMDIR index (the table of contents of a disc or export), "
                    "skipped; the images it lists are found by searching the folder"
                )
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            key = uid or (
                "<no SeriesInstanceUID>",
                root,
                str(ds.get("FrameOfReferenceUID", "")),
                str(ds.get("SeriesNumber", "")),
                str(ds.get("SeriesDescription", "")),
            )
            groups.setdefault(key, []).append((path, ds))
    return groups


def _series_of(
    key: Any, members: list[tuple[Path, Any]], folder: Path, taken: set[str], skipped: list[str]
) -> DicomSeries | None:
    """One group of headers as a CT series (its localizers, secondary captures and other SOP classes
    left out with a note), or None with the reason in ``skipped`` when nothing of a volume is left."""
    first = members[0][1]
    description = str(first.get("SeriesDescription", "") or "")
    label = key if isinstance(key, str) else f"'{description or 'unnamed'}'"
    classes = {_sop_class(ds) for _, ds in members}
    ct = [(p, ds) for p, ds in members if _sop_class(ds) == CT_IMAGE_STORAGE]
    others = sorted(classes - {CT_IMAGE_STORAGE})
    if not ct:
        what = ", ".join(_sop_class_name(c) for c in others)
        unsupported = [UNSUPPORTED_CT[c] for c in others if c in UNSUPPORTED_CT]
        if unsupported:
            skipped.append(
                f"series {label} ({unsupported[0]}, {len(members)} file(s)): multi-frame "
                "Enhanced CT is not supported; export the series as classic CT Image "
                "Storage (one file per slice), skipped"
            )
        else:
            skipped.append(f"series {label} ({what}): not a CT image series, skipped")
        return None
    notes: list[str] = []
    if others:
        notes.append(
            f"series {label}: {len(members) - len(ct)} file(s) of "
            f"{', '.join(_sop_class_name(c) for c in others)} in the series left out"
        )
    primaries = any(not _is_secondary(ds) and "LOCALIZER" not in _image_type(ds) for _, ds in ct)
    left_out: dict[str, list[Path]] = {}
    slices = []
    for p, ds in ct:
        why = _not_a_slice(ds, primaries)
        if why is None:
            slices.append((p, ds))
        else:
            left_out.setdefault(why, []).append(p)
    if not slices:
        what = "; ".join(f"{len(ps)} {why}" for why, ps in left_out.items())
        skipped.append(f"series {label} ({description or 'CT'}): {what}; no slices of a volume, skipped")
        return None
    for why, ps in left_out.items():
        notes.append(f"series {label}: {len(ps)} {why} left out (e.g. {_shown(ps[0], folder)})")
    ct = slices

    files = [p for p, _ in ct]
    headers = [ds for _, ds in ct]
    series_uid = key if isinstance(key, str) else None
    if series_uid is None:
        sops = sorted(_meta(ds, "MediaStorageSOPInstanceUID") or str(p) for p, ds in ct)
        series_uid = _derived_uid("series", *sops)
        notes.append(
            f"series {label} has no SeriesInstanceUID (an anonymised export?): grouped by "
            f"folder, frame of reference and description; derived UID {series_uid} stands in"
        )
    _fill_missing_uids(headers, files, series_uid, label, notes)
    number = _int_or_none(first.get("SeriesNumber"))
    return DicomSeries(
        uid=series_uid,
        name=_series_name(number, description, series_uid, taken),
        folder=folder,
        files=files,
        headers=headers,
        description=description,
        series_number=number,
        notes=notes,
    )


def _image_type(ds: Dataset) -> list[str]:
    value = ds.get("ImageType") or []
    return [str(v).strip().upper() for v in ([value] if isinstance(value, str) else value)]


def _is_secondary(ds: Dataset) -> bool:
    """ImageType value 2 is SECONDARY: made after the acquisition (a reformat, a screen capture)."""
    kinds = _image_type(ds)
    return len(kinds) > 1 and kinds[1] == "SECONDARY"


def _not_a_slice(ds: Dataset, primaries: bool) -> str | None:
    """Why a CT Image Storage object is no slice of the volume (a scout, a dose screen), else None.

    Scanners put localizers, and some their dose report as a DERIVED\\SECONDARY CT image (often
    of another size and without a position), into or beside the CT series.
    """
    if "LOCALIZER" in _image_type(ds):
        return "localizer (scout) image(s)"
    if _is_secondary(ds):
        if not (ds.get("ImagePositionPatient") and ds.get("ImageOrientationPatient")):
            return "secondary image(s) without a position (a dose report or screen capture)"
        if primaries:
            return "secondary (derived) image(s) beside the primary slices"
    return None


def _shown(path: Path, folder: Path) -> str:
    """A file as the messages show it: relative to the searched folder (series may span sub-folders)."""
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return path.name


def _fill_missing_uids(headers: list, files: list[Path], series_uid: str, label: str, notes: list[str]) -> None:
    """Give stripped headers the UIDs a SEG must reference (in memory only; files are untouched).

    SOP Class/Instance UIDs come from the file meta header, which anonymisers often leave; a
    missing Study UID is derived from the series so every slice agrees.
    """
    study_uids = {str(ds.get("StudyInstanceUID", "") or "") for ds in headers} - {""}
    study_uid = study_uids.pop() if len(study_uids) == 1 else _derived_uid("study", series_uid)
    patched = set()
    for path, ds in zip(files, headers):
        if not ds.get("SOPClassUID"):
            ds.SOPClassUID = CT_IMAGE_STORAGE
            patched.add("SOPClassUID")
        if not ds.get("SOPInstanceUID"):
            ds.SOPInstanceUID = _meta(ds, "MediaStorageSOPInstanceUID") or _derived_uid("instance", str(path))
            patched.add("SOPInstanceUID")
        if not ds.get("SeriesInstanceUID"):
            ds.SeriesInstanceUID = series_uid
            patched.add("SeriesInstanceUID")
        if not ds.get("StudyInstanceUID"):
            ds.StudyInstanceUID = study_uid
            patched.add("StudyInstanceUID")
    if patched:
        notes.append(
            f"series {label}: empty {', '.join(sorted(patched))} filled in (from the file meta "
            "header or derived) so derived objects can reference the slices"
        )


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        arr = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        arr = np.array([])
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise DataError(f"{path}: missing or invalid {keyword} ({value!r}); cannot place the slice in space")
    return arr


@dataclass
class _Geometry:
    order: np.ndarray  # indices of the headers in slice order
    affine_lps: np.ndarray  # (column, row, slice) voxel -> LPS mm
    shape: tuple[int, int, int]


def _check_same(values: list, files: list[Path], what: str, where: str, folder: Path) -> None:
    distinct: dict[Any, list[Path]] = {}
    for v, p in zip(values, files):
        distinct.setdefault(v, []).append(p)
    if len(distinct) > 1:
        parts = [f"{v} in {len(ps)} file(s), e.g. {_shown(ps[0], folder)}" for v, ps in distinct.items()]
        raise DataError(f"{where}: the series mixes {what}: {'; '.join(parts)}")


def _geometry(series: DicomSeries) -> _Geometry:
    """Slice order and affine of a series, after checking it forms one regular grid."""
    where = f"{series.folder} (series {series.name})"
    if len(series.headers) < 2:
        first = _shown(series.files[0], series.folder)
        raise DataError(f"{where}: a single-slice series ({first}); a volume needs at least 2 slices")
    row_cos, col_cos, (row_spacing, col_spacing) = _plane(series, where)
    normal = np.cross(row_cos, col_cos)
    order, along, positions = _slice_positions(series, normal, where)
    _check_drift(positions, normal, min(row_spacing, col_spacing), where)
    affine = np.eye(4)
    affine[:3, 0] = row_cos * col_spacing  # column index i runs along a row
    affine[:3, 1] = col_cos * row_spacing  # row index j runs down a column
    affine[:3, 2] = normal * (along[-1] - along[0]) / (len(along) - 1)
    affine[:3, 3] = positions[0]
    shape = (int(series.headers[0].Columns), int(series.headers[0].Rows), len(series.headers))
    return _Geometry(order=order, affine_lps=affine, shape=shape)


def _plane(series: DicomSeries, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row and column cosines and PixelSpacing every slice shares, checked: one image size,
    one orientation (two orthogonal unit vectors), one positive pixel spacing."""
    files, headers = series.files, series.headers
    _check_same(
        [(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for ds in headers],
        files,
        "image sizes (Rows, Columns)",
        where,
        series.folder,
    )
    iops = [_floats(ds, "ImageOrientationPatient", 6, p) for ds, p in zip(headers, files)]
    iop = iops[0]
    bad = [p for v, p in zip(iops, files) if np.abs(v - iop).max() > IOP_ATOL]
    if bad:
        raise DataError(
            f"{where}: the series mixes image orientations (ImageOrientationPatient "
            f"{np.round(iop, 4).tolist()} in {_shown(files[0], series.folder)}, other values in {len(bad)} "
            f"file(s), e.g. {_shown(bad[0], series.folder)})"
        )
    spacings = [_floats(ds, "PixelSpacing", 2, p) for ds, p in zip(headers, files)]
    bad = [p for v, p in zip(spacings, files) if np.abs(v - spacings[0]).max() > 1e-4]
    if bad:
        raise DataError(
            f"{where}: the series mixes pixel spacings ({spacings[0].tolist()} in {_shown(files[0], series.folder)}, "
            f"other values in {len(bad)} file(s), e.g. {_shown(bad[0], series.folder)})"
        )
    if min(spacings[0]) <= 0:
        raise DataError(f"{files[0]}: PixelSpacing {spacings[0].tolist()} is not positive")
    row_cos, col_cos = iop[:3], iop[3:]
    if (
        abs(np.linalg.norm(row_cos) - 1) > 1e-3
        or abs(np.linalg.norm(col_cos) - 1) > 1e-3
        or abs(row_cos @ col_cos) > 1e-3
    ):
        raise DataError(f"{where}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors")
    return row_cos / np.linalg.norm(row_cos), col_cos / np.linalg.norm(col_cos), spacings[0]


def _slice_positions(series: DicomSeries, normal: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slice order (by position along ``normal``), the sorted distances along it and the sorted
    positions, after checking the slices are evenly spaced: no duplicate, no gap, no irregular step."""
    files = series.files

    def name(path: Path) -> str:
        return _shown(path, series.folder)

    positions = np.stack([_floats(ds, "ImagePositionPatient", 3, p) for ds, p in zip(series.headers, files)])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    steps = np.diff(along)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        a, b = files[order[dup[0]]], files[order[dup[0] + 1]]
        raise DataError(
            f"{where}: duplicate slice position {along[dup[0]]:.3f} mm along the slice normal "
            f"in {name(a)} and {name(b)} ({dup.size} duplicate(s)); the folder may hold two "
            "acquisitions of one series"
        )
    step = float(np.median(steps))
    tol = max(STEP_RTOL * step, STEP_ATOL)
    off = np.flatnonzero(np.abs(steps - step) > tol)
    if off.size:
        k = off[0]
        gap = steps[k]
        missing = round(gap / step) - 1
        if missing >= 1 and abs(gap - (missing + 1) * step) <= tol:
            what, why = f"{missing} missing slice(s): {gap:.3f} mm", "the series is incomplete"
        else:
            what, why = f"non-uniform slice spacing: {gap:.3f} mm", "the slices do not form a regular grid"
        raise DataError(
            f"{where}: {what} between positions {along[k]:.3f} and {along[k + 1]:.3f} mm "
            f"({name(files[order[k]])}, {name(files[order[k + 1]])}) where slices are {step:.3f} mm "
            f"apart ({off.size} irregular step(s)); {why}"
        )
    return order, along, positions


def _check_drift(positions: np.ndarray, normal: np.ndarray, pixel_mm: float, where: str) -> None:
    """Refuse a stack whose positions drift sideways (gantry tilt): a regular grid would misplace it."""
    offsets = positions - positions[0]
    drift = offsets - np.outer(offsets @ normal, normal)
    worst = int(np.argmax(np.linalg.norm(drift, axis=1)))
    drift_mm = float(np.linalg.norm(drift[worst]))
    if drift_mm > TILT_TOLERANCE_PIXELS * pixel_mm:
        angle = np.degrees(np.arctan2(drift_mm, abs(offsets[worst] @ normal)))
        raise DataError(
            f"{where}: slice positions drift {drift_mm:.2f} mm sideways over the series (gantry "
            f"tilt or non-orthogonal geometry, about {angle:.1f} degrees); resample it to an "
            "orthogonal grid first (e.g. dcm2niix corrects gantry tilt)"
        )


# --------------------------------------------------------------------------------------------
# pixels
# --------------------------------------------------------------------------------------------


def _install_hint(missing: list[str]) -> str:
    """'gdcm - requires gdcm>=3.0.10' -> 'pip install python-gdcm' (pydicom's decoder notes), leaving
    out the GPL-licensed decoders pydicom also names."""
    hints = []
    for text in missing:
        packages = text.split("requires", 1)[-1]
        names = [re.split(r"[<>=! ]", p.strip(), maxsplit=1)[0] for p in packages.split(" and ")]
        names = ["python-gdcm" if n == "gdcm" else n for n in names if n and n != "numpy"]
        if names and not _GPL_DECODERS & set(names):
            hints.append("pip install " + " ".join(names))
    return " or ".join(hints) or "install a pydicom pixel data plugin that reads it (e.g. python-gdcm)"


def _check_decoders(series: DicomSeries) -> None:
    """Fail before reading pixels if a compressed transfer syntax has no installed decoder."""
    from pydicom.pixels import get_decoder

    seen: dict[str, Path] = {}
    for path, ds in zip(series.files, series.headers):
        seen.setdefault(_meta(ds, "TransferSyntaxUID"), path)
    for ts, path in seen.items():
        if not ts:
            continue
        from pydicom.uid import UID

        uid = UID(ts)
        if not uid.is_compressed:
            continue
        try:
            decoder = get_decoder(uid)
        except NotImplementedError:
            raise DataError(
                f"{path}: pixel data uses transfer syntax {uid.name}, which pydicom cannot decode"
            ) from None
        if not decoder.is_available:
            if uid in _DECODED_BY_THE_EXTRA:
                hint = 'pip install "keras-unet3plus[dicom]" (its python-gdcm decodes it)'
            else:
                hint = _install_hint(list(decoder.missing_dependencies))
            raise DataError(f"{path}: pixel data is compressed ({uid.name}) and no installed decoder reads it; {hint}")


def _rescale(ds: Dataset, path: Path) -> tuple[float, float]:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    try:
        slope = 1.0 if slope in (None, "") else float(slope)
        intercept = 0.0 if intercept in (None, "") else float(intercept)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable RescaleSlope/RescaleIntercept ({exc})") from exc
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise DataError(
            f"{path}: invalid rescale (RescaleSlope {slope}, RescaleIntercept {intercept}); cannot compute HU"
        )
    return slope, intercept


def _padding_range(ds: Dataset, path: Path) -> tuple[int, int] | None:
    """The stored values PixelPaddingValue (with PixelPaddingRangeLimit) marks as padding, or None."""
    value, limit = ds.get("PixelPaddingValue"), ds.get("PixelPaddingRangeLimit")
    if value is None or value == "":
        return None
    try:
        ends = sorted(int(v) for v in (value, value if limit in (None, "") else limit))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable PixelPaddingValue/PixelPaddingRangeLimit ({exc})") from exc
    return ends[0], ends[1]


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _read_slice_hu(path: Path, rows: int, columns: int) -> np.ndarray:
    """One slice as float32 HU, (rows, columns); padded pixels are air (:data:`PADDING_HU`)."""
    import pydicom
    from pydicom.pixels import pixel_array
    from pydicom.uid import UID

    padding = None
    try:
        ds = pydicom.dcmread(path, force=True)
        stored = marked = ds.pixel_array
        padding = _padding_range(ds, path)
        lo, hi = _stored_range(ds)
        native = not UID(_meta(ds, "TransferSyntaxUID") or "1.2.840.10008.1.2.1").is_compressed
        if padding is not None and native and (padding[0] < lo or padding[1] > hi):
            # a padding value beyond BitsStored (65535 in 12-bit data): pydicom clears the unused
            # bits, which makes it a valid value (4095, bright bone); look at the bits as stored
            marked = pixel_array(ds, correct_unused_bits=False)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: could not read the pixel data ({type(exc).__name__}: {exc})") from exc
    if stored.shape != (rows, columns):
        raise DataError(f"{path}: pixel data of shape {stored.shape}, expected one {rows}x{columns} frame")
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        hu = np.asarray(apply_modality_lut(stored, ds), dtype=np.float32)
    else:
        slope, intercept = _rescale(ds, path)
        hu = stored.astype(np.float32)
        if slope != 1:
            hu *= np.float32(slope)
        if intercept:
            hu += np.float32(intercept)
    if padding is not None:
        hu[(marked >= padding[0]) & (marked <= padding[1])] = PADDING_HU
    return hu


def _one_series(folder_or_series: str | os.PathLike | DicomSeries) -> DicomSeries:
    """The series given, or the one CT series of a folder (a DataError when it holds none or several)."""
    if isinstance(folder_or_series, DicomSeries):
        return folder_or_series
    folder = Path(folder_or_series)
    found = find_dicom_series(folder)
    if not found:
        reasons = "; ".join(found.skipped[:5]) + (
            f"; ... ({len(found.skipped)} in all)" if len(found.skipped) > 5 else ""
        )
        raise DataError(
            f"{folder}: no CT image series found" + (f" ({reasons})" if reasons else " (the folder holds no files)")
        )
    if len(found) > 1:
        listing = ", ".join(f"{s.name} ({len(s)} slices)" for s in found)
        raise DataError(
            f"{folder}: holds {len(found)} CT series ({listing}); read them one at a time "
            "(find_dicom_series lists them)"
        )
    return found[0]


class DicomScan(ScanFile):
    """A CT series opened by the reader registry: headers read and its grid checked; the pixels read
    whole when asked. ``source`` is the series with files and headers in slice order."""

    format = "DICOM series"

    def __init__(self, folder_or_series: str | os.PathLike | DicomSeries):
        require("pydicom", "dicom")
        series = _one_series(folder_or_series)
        geometry = _geometry(series)
        _check_decoders(series)
        for ds, path in zip(series.headers, series.files):
            _rescale(ds, path)
        files = [series.files[i] for i in geometry.order]
        headers = [series.headers[i] for i in geometry.order]
        super().__init__(
            series.folder,
            _RAS_FROM_LPS @ geometry.affine_lps,
            geometry.shape,
            header=headers[0],
            source=replace(series, files=files, headers=headers),
            name=series.name,
        )

    def image(self, stream: bool = False) -> np.ndarray:
        columns, rows, n = self.original_shape
        data = np.empty((columns, rows, n), dtype=np.float32)
        for k, path in enumerate(self.source.files):
            data[:, :, k] = _read_slice_hu(path, rows, columns).T
        return np.ascontiguousarray(to_canonical(data, self.original_affine)[0])

    def label(self, task, stream: bool = False):
        raise DataError(
            f"{self.path}: a DICOM series is read as a CT image, not as labels; give its labels "
            "as a file (NIfTI, NRRD or MetaImage) on the series' grid"
        )


class DicomSeriesReader:
    """The DICOM entry of the reader registry: a folder is read as the one CT series it holds."""

    name = "DICOM series"
    suffixes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return "<reader DICOM series (a folder)>"

    def can_read(self, path: Path) -> bool:
        return Path(path).is_dir()

    def open(self, path: Path | DicomSeries) -> DicomScan:
        """The one CT series of a folder (or a series :func:`find_dicom_series` found), headers read."""
        return DicomScan(path)


#: The DICOM entry of the reader registry (:mod:`keras_unet3plus.data.readers`).
READER = DicomSeriesReader()


def read_dicom_series(folder_or_series: str | os.PathLike | DicomSeries, case_id: str | None = None) -> Volume:
    """Read one CT series (a folder holding exactly one, or a :class:`DicomSeries`) as a RAS Volume.

    ``Volume.source`` is the series with files and headers in slice order (for the SEG writer);
    ``Volume.original_affine`` / ``to_original`` give the (column, row, slice) grid dcm2niix writes.
    """
    return DicomScan(folder_or_series).volume(case_id)
