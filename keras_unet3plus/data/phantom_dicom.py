"""Write a HU volume as a CT Image Storage series, to test the DICOM reader and the SEG writer.

The series is what a scanner export looks like: one file per slice, Image Position/Orientation
(Patient) in LPS millimetres, RescaleIntercept -1024 with unsigned (or signed) 16-bit pixels, UIDs
for study, series, frame of reference and every instance, and the patient/study/equipment
attributes highdicom copies into a SEG. Variants that real exports produce (other in-plane
orientations, descending instance numbers, sagittal or coronal stacks, names without extension,
a missing slice, a tilted gantry, compressed pixel data, padding outside the field of view, Type 2
attributes removed by an anonymiser) are options, so readers can be tested against each of them.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np
from nibabel import orientations as ornt_mod

from keras_unet3plus._extras import require
from keras_unet3plus.atomic import atomic_path

#: Named acquisitions -> nibabel axis codes (RAS letters) of the (column, row, slice) axes.
#: The slice axis letter also sets the instance numbering direction (InstanceNumber 1 first).
ORIENTATIONS: dict[str, str] = {
    "axial": "LPS",  # IOP [1,0,0, 0,1,0], the usual head-first supine export
    "axial_descending": "LPI",  # same IOP, instance 1 at the top of the stack (like many scanners)
    "axial_flipped_rows": "LAS",  # IOP [1,0,0, 0,-1,0]: rows run anterior, normal points down
    "axial_feet_first": "RPI",  # IOP [-1,0,0, 0,1,0], feet-first supine
    "sagittal": "PIL",  # IOP [0,1,0, 0,0,-1]
    "coronal": "LIP",  # IOP [1,0,0, 0,0,-1]
}

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: RescaleIntercept of the written slices: stored value 0 is -1024 HU, as most scanners write.
_INTERCEPT = -1024.0

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
#: Transfer syntaxes GDCM (python-gdcm, in the [dicom] extra) encodes -> its name for them. Each is
#: written with lossless coding (the lossy-capable .81 and .91 too), so the HU read back are exact.
_GDCM_SYNTAXES = {
    "1.2.840.10008.1.2.4.70": "JPEGLosslessProcess14_1",  # JPEG Lossless SV1, what most PACS send
    "1.2.840.10008.1.2.4.57": "JPEGLosslessProcess14",  # JPEG Lossless, any predictor
    "1.2.840.10008.1.2.4.80": "JPEGLSLossless",
    "1.2.840.10008.1.2.4.81": "JPEGLSNearLossless",
    "1.2.840.10008.1.2.4.90": "JPEG2000Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG2000",
}
#: Every transfer syntax :func:`write_dicom_series` writes (pydicom itself writes deflate and RLE).
TRANSFER_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS, *_GDCM_SYNTAXES)
#: Type 2 attributes (may be empty, must be present) that anonymisers often remove all the same.
TYPE2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "Manufacturer",
    "SeriesNumber",
    "PatientPosition",
    "InstanceNumber",
    "PositionReferenceIndicator",
    "SliceThickness",
    "KVP",
    "AcquisitionNumber",
)


def _axcodes(orientation: str) -> tuple[str, str, str]:
    codes = ORIENTATIONS.get(orientation.lower(), orientation.upper())
    if len(codes) != 3 or set(codes) - set("LRAPSI"):
        raise ValueError(
            f"orientation must be one of {sorted(ORIENTATIONS)} or 3 axis codes like 'LPS', got {orientation!r}"
        )
    return tuple(codes)  # type: ignore[return-value]


def _ds(values: Sequence[float] | float) -> list[str] | str:
    """DICOM decimal strings (at most 16 characters each)."""
    from pydicom.valuerep import format_number_as_ds

    if np.ndim(values) == 0:
        return format_number_as_ds(float(values))  # type: ignore[arg-type]
    return [format_number_as_ds(float(v)) for v in values]  # type: ignore[union-attr]


def write_dicom_series(
    hu_volume_ras: np.ndarray,
    affine_ras: np.ndarray,
    folder: str | os.PathLike,
    *,
    orientation: str = "axial",
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int | None = 1,
    series_description: str = "Phantom CT",
    patient_id: str = "PHANTOM",
    shuffle_names: bool = True,
    drop_slice: int | None = None,
    gantry_tilt_deg: float = 0.0,
    signed: bool = False,
    transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
    padding_value: int | None = None,
    strip_type2: bool = False,
    seed: int = 0,
) -> list[Path]:
    """Write ``hu_volume_ras`` (any voxel order ``affine_ras`` describes) as a CT series in ``folder``.

    ``orientation``: a name from :data:`ORIENTATIONS` or axis codes of (column, row, slice).
    ``shuffle_names``: random file names without extension (else ``IM00001.dcm`` ...).
    ``drop_slice``: index (in the written slice order) of a slice to leave out, to make a gap.
    ``gantry_tilt_deg``: tilt the column direction about the patient's left-right axis while the
    positions still step along the table, as a tilted-gantry acquisition does.
    ``transfer_syntax``: a UID of :data:`TRANSFER_SYNTAXES` (JPEG Lossless, JPEG-LS, JPEG 2000, RLE,
    deflate; all lossless), as PACS exports compress.
    ``padding_value``: stored value of the voxels where ``hu_volume_ras`` is NaN (outside the field
    of view), written as PixelPaddingValue; it may lie beyond BitsStored (65535), as some scanners do.
    ``strip_type2``: remove :data:`TYPE2_ATTRIBUTES`, as some anonymisers do.
    Returns the written paths in slice order (dropped slice excluded).
    """
    require("pydicom", "dicom")
    from pydicom.uid import generate_uid

    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {', '.join(TRANSFER_SYNTAXES)}, got {transfer_syntax!r}")
    data, affine = _scanner_grid(hu_volume_ras, affine_ras, orientation)
    col_step, row_step, slice_step = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    row_cosine, column_cosine = _cosines(col_step, row_step, gantry_tilt_deg)

    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    stored = _stored_values(data, signed, padding_value)
    template = _series_header(
        study_uid=study_uid,
        series_uid=series_uid,
        frame_of_reference_uid=frame_of_reference_uid,
        series_number=series_number,
        series_description=series_description,
        patient_id=patient_id,
        feet_first=orientation.lower() == "axial_feet_first",
        slice_thickness=float(np.linalg.norm(slice_step)),
        gantry_tilt_deg=gantry_tilt_deg,
        orientation=np.concatenate([row_cosine, column_cosine]),
        pixel_spacing=[float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step))],
        signed=signed,
        intercept=_INTERCEPT,
        padding_value=padding_value,
    )
    normal = np.cross(row_cosine, column_cosine)
    files = _SliceFiles(Path(folder), transfer_syntax, strip_type2, shuffle_names, rng)
    files.folder.mkdir(parents=True, exist_ok=True)
    n_slices = data.shape[2]
    written: list[Path] = []
    for k in range(n_slices):
        if drop_slice is not None and k == drop_slice % n_slices:
            continue
        position = affine[:3, 3] + k * slice_step  # along the table even when the plane is tilted
        written.append(files.write(_slice_dataset(template, k, position, normal, stored[:, :, k], generate_uid()), k))
    return written


@dataclass
class _SliceFiles:
    """How the slices of one series become files: named, stripped and encoded alike."""

    folder: Path
    transfer_syntax: str
    strip_type2: bool
    shuffle_names: bool
    rng: np.random.Generator  # draws the shuffled names, one per slice in slice order

    def write(self, ds, k: int) -> Path:
        """Write slice ``k`` atomically; returns its path."""
        if self.strip_type2:
            for keyword in TYPE2_ATTRIBUTES:
                delattr(ds, keyword)
        path = self.folder / (self.rng.bytes(16).hex() if self.shuffle_names else f"IM{k + 1:05d}.dcm")
        with atomic_path(path) as tmp:
            _write_in(ds, tmp, self.transfer_syntax)
        return path


def _scanner_grid(hu_volume_ras: np.ndarray, affine_ras: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """The volume as the scanner stores it, (column, row, slice) in ``orientation``, and its LPS
    affine: DICOM positions and cosines are LPS, the package's arrays RAS."""
    hu = np.asarray(hu_volume_ras)
    affine_ras = np.asarray(affine_ras, dtype=float)
    if hu.ndim != 3:
        raise ValueError(f"hu_volume_ras must be 3-D, got shape {hu.shape}")
    target = ornt_mod.axcodes2ornt(_axcodes(orientation))
    transform = ornt_mod.ornt_transform(ornt_mod.io_orientation(affine_ras), target)
    data = ornt_mod.apply_orientation(hu, transform)  # (column, row, slice)
    return data, _LPS_FROM_RAS @ affine_ras @ ornt_mod.inv_ornt_aff(transform, hu.shape)


def _cosines(col_step: np.ndarray, row_step: np.ndarray, gantry_tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """ImageOrientationPatient's row and column cosines, tilted about the left-right axis for a
    tilted gantry (the positions are not: they keep stepping along the table)."""
    row_cosine = col_step / np.linalg.norm(col_step)  # direction of increasing column index
    column_cosine = row_step / np.linalg.norm(row_step)  # direction of increasing row index
    if gantry_tilt_deg:
        t = np.deg2rad(gantry_tilt_deg)
        rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
        column_cosine = rot @ column_cosine
        row_cosine = rot @ row_cosine
    return row_cosine, column_cosine


def _stored_values(data: np.ndarray, signed: bool, padding_value: int | None) -> np.ndarray:
    """HU as a scanner stores them (HU - :data:`_INTERCEPT`, 12-bit unsigned or 16-bit signed); NaN
    (outside the field of view) as ``padding_value``, which a volume holding NaN must give."""
    outside = np.isnan(data)
    stored = np.rint(np.where(outside, 0.0, data.astype(np.float64)) - _INTERCEPT)
    if signed:
        stored = np.clip(stored, -32768, 32767).astype(np.int16)
    else:
        stored = np.clip(stored, 0, 4095).astype(np.uint16)
    if outside.any():
        if padding_value is None:
            raise ValueError("hu_volume_ras holds NaN (outside the field of view): give padding_value")
        stored[outside] = padding_value
    return stored


def _slice_dataset(template, k: int, position: np.ndarray, normal: np.ndarray, stored: np.ndarray, sop_uid: str):
    """Slice ``k``: a copy of the series header with its own SOP instance, position and pixels
    (``stored``: (column, row), as the volume holds them)."""
    ds = copy.deepcopy(template)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = _ds(position)
    ds.SliceLocation = _ds(float(position @ normal))
    pixels = np.ascontiguousarray(stored.T)  # (rows, columns)
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.PixelData = pixels.tobytes()
    return ds


def _series_header(
    *,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    series_number: int | None,
    series_description: str,
    patient_id: str,
    feet_first: bool,
    slice_thickness: float,
    gantry_tilt_deg: float,
    orientation: np.ndarray,
    pixel_spacing: list[float],
    signed: bool,
    intercept: float,
    padding_value: int | None,
):
    """What every slice of the phantom's CT series shares (patient, study, series, geometry, pixel
    format): each slice is a copy with its own SOP instance, position and pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "keras-unet3plus phantom"
    ds.ManufacturerModelName = "phantom"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = "Phantom^CT"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientPosition = "FFS" if feet_first else "HFS"
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = _ds(slice_thickness)
    ds.KVP = "120"
    ds.GantryDetectorTilt = _ds(gantry_tilt_deg)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = None if series_number is None else int(series_number)
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = _ds(orientation)
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = _ds(pixel_spacing)
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    if padding_value is not None:
        ds.add_new("PixelPaddingValue", "SS" if signed else "US", int(padding_value))
    return ds


def _write_in(ds, path: Path, transfer_syntax: str) -> None:
    """Write an uncompressed slice dataset to ``path`` in ``transfer_syntax``."""
    import pydicom

    if transfer_syntax == RLE_LOSSLESS:
        ds.compress(RLE_LOSSLESS, encoding_plugin="pydicom")
    elif transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        ds.file_meta.TransferSyntaxUID = transfer_syntax  # pydicom deflates the dataset as it writes
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    if transfer_syntax in _GDCM_SYNTAXES:
        _transcode_with_gdcm(path, transfer_syntax)
        # GDCM's writer adds the Type 2 attributes it finds missing (StudyDate: today); a stripped
        # export must stay stripped
        compressed = pydicom.dcmread(path)
        added = [tag for tag in compressed.keys() if tag not in ds]
        if added:
            for tag in added:
                del compressed[tag]
            compressed.save_as(path, enforce_file_format=True)


def _transcode_with_gdcm(path: Path, transfer_syntax: str) -> None:
    """Rewrite a DICOM file in place in a JPEG-family transfer syntax (pydicom encodes none of
    JPEG Lossless or JPEG 2000 without GPL or extra plugins; GDCM does, BSD-licensed)."""
    gdcm = require("gdcm", "dicom")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise ValueError(f"{path}: GDCM cannot read the slice it is to compress")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, _GDCM_SYNTAXES[transfer_syntax])))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise ValueError(f"{path}: GDCM cannot compress the slice to {_GDCM_SYNTAXES[transfer_syntax]}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise OSError(f"{path}: GDCM could not write the compressed slice")
