"""DICOM SEG output: a prediction as a Segmentation object that references its source CT series.

A PACS or viewer (OHIF, 3D Slicer, Horos) shows a SEG over the CT it was derived from because the
SEG shares the source's Frame of Reference, names the source series, and refers every frame to the
source slice it covers. highdicom builds all of that from the source headers; this module maps
the package's canonical (RAS) label maps onto the source slices and describes each segment with
the standard coded concepts (SNOMED CT), so receiving systems know what was segmented and that an
algorithm (not a person) did it.

Series as hospitals send them often lack attributes highdicom copies: anonymisers remove Type 2
patient/study attributes (birth date, sex, accession number...), which the standard lets be empty.
The SEG gets them empty, through a copy of the first source header (files and the volume's headers
are never changed). Type 1 attributes a SEG cannot do without (the frame of reference, the UIDs
it references, the geometry of the slices) fail with the attribute and the file named.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Sequence

import numpy as np

from keras_unet3plus._extras import require
from keras_unet3plus.atomic import atomic_path
from keras_unet3plus.data.tasks import TaskSpec, get_task
from keras_unet3plus.data.volume import DataError, Volume

log = logging.getLogger(__name__)

ALGORITHM_NAME = "keras-unet3plus"

#: Type 2 attributes (present, may be empty) that highdicom 0.28 reads from the first source image
#: as plain attributes (``Segmentation.__init__`` in highdicom/seg/sop.py): missing, they are an
#: AttributeError there; with a value it cannot parse (PatientSex "U", a date "ANON"), a ValueError.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)
#: Type 1 attributes highdicom reads from every source image (the series check, the references, the
#: plane positions, the pixel measures): without them a SEG can neither reference nor place a frame.
_TYPE1_NEEDED = {
    "SOPClassUID": "reference the slice",
    "SOPInstanceUID": "reference the slice",
    "StudyInstanceUID": "belong to the CT's study",
    "SeriesInstanceUID": "reference the CT series",
    "FrameOfReferenceUID": "share the CT's frame of reference",
    "Rows": "size its frames",
    "Columns": "size its frames",
    "PixelSpacing": "place its frames",
    "ImageOrientationPatient": "place its frames",
    "ImagePositionPatient": "place its frames",
}
#: Attributes every slice of one series must share; highdicom refuses a mix without naming a file.
_SHARED = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")

#: Segment names the writer knows -> (segment label, category, type, anatomic region), as keyword
#: names in pydicom's code dictionary (codes.SCT.<name>): liver SCT 10200004, spleen 78961009,
#: Anatomical Structure 91723000, Morphologically Abnormal Structure 49755003, Neoplasm 108369006.
_KNOWN_SEGMENTS: dict[str, tuple[str, str, str, str | None]] = {
    "liver": ("Liver", "AnatomicalStructure", "Liver", None),
    "spleen": ("Spleen", "AnatomicalStructure", "Spleen", None),
    "tumour": ("Liver tumour", "MorphologicallyAbnormalStructure", "Neoplasm", "Liver"),
}
for _alias in (
    "tumor",
    "cancer",
    "lesion",
    "liver tumour",
    "liver tumor",
    "liver_tumour",
    "liver_tumor",
    "liver lesion",
):
    _KNOWN_SEGMENTS[_alias] = _KNOWN_SEGMENTS["tumour"]

#: Display colours (RGB) viewers use unless they choose their own: 3D Slicer's anatomy colours.
_COLOURS = {"Liver": (221, 130, 101), "Spleen": (157, 108, 162), "Liver tumour": (255, 245, 10)}

#: A segment: (label value, name) for a known name, or (label value, name, category, type) with
#: pydicom ``Code`` / highdicom ``CodedConcept`` objects for anything else.
SegmentSpec = tuple


def package_version() -> str:
    try:
        return metadata.version("keras-unet3plus")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        from .._version import __version__

        return __version__


def _segment_list(segments: str | TaskSpec | Sequence[SegmentSpec]) -> list[tuple]:
    """Normalise ``segments`` to [(value, name, category, type, region)] sorted by value."""
    from pydicom.sr.codedict import codes

    if isinstance(segments, (str, TaskSpec)):
        spec = get_task(segments)
        segments = [(1, spec.class_names[1])] if spec.binary else list(enumerate(spec.class_names))[1:]
    out = []
    for item in segments:
        if len(item) == 2:
            value, name = item
            key = str(name).strip().lower()
            if key not in _KNOWN_SEGMENTS:
                raise ValueError(
                    f"segment {name!r}: no coded concept known for it (known: "
                    f"{sorted(_KNOWN_SEGMENTS)}); pass (value, name, category Code, type Code)"
                )
            label, category, kind, region = _KNOWN_SEGMENTS[key]
            out.append(
                (
                    int(value),
                    label,
                    getattr(codes.SCT, category),
                    getattr(codes.SCT, kind),
                    getattr(codes.SCT, region) if region else None,
                )
            )
        elif len(item) == 4:
            value, name, category, kind = item
            out.append((int(value), str(name), category, kind, None))
        else:
            raise ValueError(f"segment {item!r}: expected (value, name) or (value, name, category, type)")
    values = [s[0] for s in out]
    if not out or len(set(values)) != len(values) or min(values) < 1:
        raise ValueError(f"segments need distinct label values >= 1, got {values}")
    return sorted(out, key=lambda s: s[0])


def _source_series(volume: Volume):
    from keras_unet3plus.data.dicom import DicomSeries

    series = volume.source
    if not isinstance(series, DicomSeries):
        raise ValueError(
            f"{volume.image_path}: the volume was not read by read_dicom_series; a DICOM SEG "
            "must reference DICOM source images"
        )
    if len(series.headers) != volume.original_shape[2]:
        raise ValueError(
            f"{volume.image_path}: {len(series.headers)} source slices for a volume of "
            f"{volume.original_shape[2]} slices"
        )
    return series


def _type2_value_ok(keyword: str, value: Any) -> bool:
    """Whether highdicom takes ``value`` for ``keyword`` (empty always is)."""
    from pydicom.valuerep import DA, TM

    text = str(value).strip()
    if not text:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if keyword == "PatientSex":
                return text in ("M", "F", "O")
            if keyword in ("PatientBirthDate", "StudyDate"):
                return DA(text) is not None
            if keyword == "StudyTime":
                return TM(text) is not None
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _source_images(series, slice_spacing: float) -> tuple[list, dict]:
    """The series' headers as highdicom gets them, and extra arguments for it.

    Type 1 attributes are checked on every slice (missing or empty: a DataError naming the
    attribute and the file); Type 2 ones highdicom copies are set empty (SliceThickness: the slice
    spacing) on a copy of the first header where they are missing or unparseable.
    """
    import highdicom as hd

    for path, ds in zip(series.files, series.headers):
        for keyword, why in _TYPE1_NEEDED.items():
            value = ds.get(keyword)
            if (
                value is None
                or (isinstance(value, str) and not value.strip())
                or (not isinstance(value, (str, int, float)) and len(value) == 0)
            ):
                raise DataError(
                    f"{path}: no {keyword}, which a DICOM SEG needs to {why}; an anonymiser may have removed it"
                )
    for keyword in _SHARED:
        values = {}
        for path, ds in zip(series.files, series.headers):
            values.setdefault(str(ds.get(keyword)), path)
        if len(values) > 1:
            (v1, p1), (v2, p2) = list(values.items())[:2]
            raise DataError(
                f"{series.folder}: the slices disagree on {keyword} ({v1} in {p1.name}, {v2} in "
                f"{p2.name}); a DICOM SEG references one study, series and frame of reference"
            )

    first = copy.deepcopy(series.headers[0])
    emptied = [k for k in _TYPE2_COPIED if k not in first or not _type2_value_ok(k, first.get(k))]
    for keyword in emptied:
        if keyword in first:
            delattr(first, keyword)
        setattr(first, keyword, "")
    thickness = str(first.get("SliceThickness", "") or "").strip()
    if not thickness:
        from pydicom.valuerep import format_number_as_ds

        first.SliceThickness = format_number_as_ds(float(slice_spacing))
    extra: dict = {}
    charset = first.get("SpecificCharacterSet")
    if charset is not None:
        names = [charset] if isinstance(charset, str) else list(charset)
        known = {v.value for v in hd.enum.SpecificCharacterSetValues}
        if not any(str(n).strip() for n in names):
            del first.SpecificCharacterSet  # empty: the default repertoire
        elif not all(str(n) in known for n in names):
            extra["specific_character_set"] = "ISO_IR 192"  # pydicom decoded the text; UTF-8 holds any
    changed = (
        emptied
        + (["SliceThickness (the slice spacing)"] if not thickness else [])
        + (["SpecificCharacterSet (ISO_IR 192)"] if extra else [])
    )
    if changed:
        log.info(
            "%s: written into the SEG as %s: %s", series.files[0], "empty where Type 2 allows it", ", ".join(changed)
        )
    return [first, *series.headers[1:]], extra


def _frames(volume: Volume, array: np.ndarray) -> np.ndarray:
    """Canonical (X, Y, Z[, C]) -> source frames (slice, row, column[, C])."""
    original = volume.to_original(array)  # (column, row, slice[, C])
    axes = (2, 1, 0) + tuple(range(3, original.ndim))
    return np.ascontiguousarray(original.transpose(axes))


def _seg_frames(volume: Volume, labels: np.ndarray, specs: list, fractional: bool) -> tuple[np.ndarray, bool]:
    """The SEG's frames in source-slice order (:func:`_frames`) from ``labels`` (a label map checked
    against the segments, or probabilities in [0, 1]), and whether any is non-empty."""
    labels = np.asarray(labels)
    if labels.shape[:3] != volume.shape:
        raise ValueError(f"labels of shape {labels.shape} do not match the volume {volume.shape} ({volume.image_path})")
    if fractional:
        if labels.ndim == 3:
            labels = labels[..., None]
        if labels.shape[3] != len(specs):
            raise ValueError(f"fractional labels have {labels.shape[3]} channel(s) for {len(specs)} segment(s)")
        probs = labels.astype(np.float32)
        if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
            raise ValueError("fractional labels must be probabilities in [0, 1]")
        pixels = _frames(volume, probs)
        non_empty = bool((pixels > 0).any())
    else:
        if labels.ndim != 3 or labels.dtype.kind not in "uib":
            raise ValueError(f"labels must be an integer label map (X, Y, Z), got {labels.dtype} {labels.shape}")
        if labels.dtype == bool:
            labels = labels.view(np.uint8)
        if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:  # far faster than np.unique
            values = np.flatnonzero(np.bincount(labels.ravel()))
        else:
            values = np.unique(labels)
        known = {s[0] for s in specs} | {0}
        unknown = sorted(int(v) for v in values if int(v) not in known)
        if unknown:
            raise ValueError(
                f"labels hold values {unknown} that no segment describes (segments: {[(s[0], s[1]) for s in specs]})"
            )
        lut = np.zeros(max(known) + 1, dtype=np.uint8)
        for number, spec in enumerate(specs, start=1):
            lut[spec[0]] = number
        pixels = _frames(volume, lut[labels])  # values are checked: no negative or out-of-range index
        non_empty = bool(pixels.any())
    return pixels, non_empty


def write_dicom_seg(
    volume: Volume,
    labels: np.ndarray,
    path: str | os.PathLike,
    segments: str | TaskSpec | Sequence[SegmentSpec],
    *,
    algorithm_version: str | None = None,
    series_description: str = "UNet 3+ segmentation",
    series_number: int | None = None,
    fractional: bool = False,
    content_qualification: str = "RESEARCH",
) -> Path:
    """Write ``labels`` (canonical grid of ``volume``, read by read_dicom_series) as a DICOM SEG.

    ``segments``: a task name ("liver", "liver_tumour", "spleen") or [(label value, name), ...];
    segment numbers follow the sorted label values (1, 2, ... for a task's classes).
    ``fractional=False``: ``labels`` is an integer label map, written as a BINARY SEG.
    ``fractional=True``: ``labels`` holds probabilities in [0, 1], (X, Y, Z) for one segment or
    (X, Y, Z, S) in segment order, written as a FRACTIONAL (probability) SEG.
    Empty segments and an entirely empty mask give valid SEGs. Written atomically.
    """
    hd = require("highdicom", "dicom")
    from pydicom.uid import generate_uid

    series = _source_series(volume)
    specs = _segment_list(segments)
    pixels, non_empty = _seg_frames(volume, labels, specs, fractional)
    seg_type = hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY

    version = algorithm_version or package_version()
    descriptions = _segment_descriptions(specs, version)
    source_number = series.series_number if series.series_number is not None else 0
    source_images, extra = _source_images(series, float(np.linalg.norm(volume.original_affine[:3, 2])))
    with _refused_by_highdicom(series):
        seg = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=pixels,
            segmentation_type=seg_type,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=int(series_number if series_number is not None else 1000 + source_number),
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=ALGORITHM_NAME,
            manufacturer_model_name="UNet 3+",
            software_versions=version,
            device_serial_number="none",
            content_description=f"{ALGORITHM_NAME} {version} automatic segmentation"[:64],
            content_label="SEGMENTATION",
            series_description=series_description[:64],
            content_qualification=content_qualification,
            omit_empty_frames=non_empty,  # an all-empty SEG keeps its frames: it must hold at least one
            **extra,
        )
    path = Path(path)
    with atomic_path(path, suffix=".dcm") as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return path


def _segment_descriptions(specs: list, version: str) -> list:
    """highdicom's description of each segment: its coded concepts, colour, and the algorithm
    (this package) that segmented it automatically, as receiving systems expect."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.DCM.ArtificialIntelligence, version=version
    )
    descriptions = []
    for number, (_, name, category, kind, region) in enumerate(specs, start=1):
        colour = _COLOURS.get(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                anatomic_regions=[region] if region is not None else None,
                display_color=hd.color.CIELabColor.from_rgb(*colour) if colour else None,
            )
        )
    return descriptions


@contextmanager
def _refused_by_highdicom(series) -> Iterator[None]:
    """highdicom's checks name no file: its refusal becomes a DataError naming the series."""
    try:
        yield
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise DataError(
            f"{series.folder} (series {series.name}): highdicom cannot make a DICOM SEG from its "
            f"headers ({type(exc).__name__}: {exc})"
        ) from exc


def read_dicom_seg_labels(seg_path: str | os.PathLike, volume: Volume) -> np.ndarray:
    """A SEG's segments on ``volume``'s canonical grid: uint8 map of segment numbers (BINARY SEG),
    or float32 (X, Y, Z, S) probabilities (FRACTIONAL SEG). Frames are matched to the source slices
    by SOP Instance UID, so the SEG must reference this series."""
    hd = require("highdicom", "dicom")
    series = _source_series(volume)
    seg_path = Path(seg_path)
    try:
        seg = hd.seg.segread(seg_path)
    except Exception as exc:
        raise ValueError(f"{seg_path}: not a readable DICOM SEG ({type(exc).__name__}: {exc})") from exc
    source_uids = series.sop_instance_uids
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    if not referenced & set(source_uids):
        raise ValueError(f"{seg_path}: the SEG references none of the {len(source_uids)} slices of {volume.image_path}")
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids,
        combine_segments=not fractional,
        assert_missing_frames_are_empty=True,  # empty frames are omitted when written
        dtype=np.float32 if fractional else np.uint8,
    )
    original = frames.transpose((2, 1, 0) + tuple(range(3, frames.ndim)))  # (column, row, slice[, S])
    from keras_unet3plus.data.volume import to_canonical

    canonical, _ = to_canonical(original, volume.original_affine)
    return np.ascontiguousarray(canonical)
