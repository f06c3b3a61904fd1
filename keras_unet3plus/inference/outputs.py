"""Writing predictions: a uint8 NIfTI on the source file's grid and header, and a DICOM SEG that
references the source series; each file appears whole or not at all, and each format on its own:
a SEG the source headers cannot make still leaves the complete NIfTI, and says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from collections.abc import Iterable

import numpy as np

from ..data.nifti import save_nifti_atomic
from ..data.readers import case_name
from ..modelinfo import ModelInfo

__all__ = [
    "OUTPUT_FORMATS",
    "FORMAT_NAMES",
    "OutputError",
    "mask_image",
    "output_paths",
    "probabilities_path",
    "write_outputs",
]

OUTPUT_FORMATS = ("nifti", "dicom-seg")
FORMAT_NAMES = {"nifti": "NIfTI mask", "dicom-seg": "DICOM SEG"}


class OutputError(ValueError):
    """Some outputs of one prediction failed: ``failed`` (format -> why) were not written (no file,
    not even a partial one), ``written`` (format -> path) were, whole; the message says both."""

    def __init__(self, source: Any, written: dict[str, Path], failed: dict[str, str]):
        self.written, self.failed = dict(written), dict(failed)
        parts = [f"{FORMAT_NAMES[f]} not written ({why})" for f, why in failed.items()]
        parts += [f"{FORMAT_NAMES[f]} written to {path}" for f, path in written.items()]
        super().__init__(f"{source}: {'; '.join(parts)}")


def mask_image(labels_original: np.ndarray, volume) -> Any:
    """A uint8 NIfTI of a mask already in the source file's voxel order, with its header and affine.

    The source header is copied (qform/sform codes, pixdim, units), its data type set to uint8 and
    its scaling removed; a source with trailing singleton dimensions gets them back.
    """
    import nibabel as nib

    data = np.asarray(labels_original, dtype=np.uint8)
    header = volume.header.copy() if isinstance(volume.header, nib.Nifti1Header) else None  # DICOM: none
    if header is not None:
        file_shape = tuple(int(s) for s in header.get_data_shape())
        if int(np.prod(file_shape)) == data.size and file_shape[:3] == data.shape[:3]:
            data = data.reshape(file_shape)
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(data, volume.original_affine, header=header)
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, max(1, int(data.max()) if data.size else 1)
    return img


def output_paths(base: Path, formats: Iterable[str]) -> dict[str, Path]:
    """Where each format of one prediction goes: ``base`` for the first, ``.seg.dcm`` for a SEG."""
    formats = list(formats)
    bad = [f for f in formats if f not in OUTPUT_FORMATS]
    if bad or not formats:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {bad or formats}")
    stem = _stem(base)
    paths = {}
    if "nifti" in formats:
        paths["nifti"] = base if base.name.endswith((".nii", ".nii.gz")) else base.with_name(stem + ".nii.gz")
    if "dicom-seg" in formats:
        paths["dicom-seg"] = (
            base if (base.suffix == ".dcm" and "nifti" not in formats) else base.with_name(stem + ".seg.dcm")
        )
    return paths


def probabilities_path(base: Path) -> Path:
    """Where ``--save-probabilities`` writes one prediction's probabilities: ``<case>.npz`` beside it."""
    return base.with_name(_stem(base) + ".npz")


def _stem(base: Path) -> str:
    """The case's name in an output path: x.nii.gz, x.mha, x.seg.dcm, x.dcm -> x."""
    stem = case_name(base)
    stem = stem[: -len(".seg.dcm")] if stem.endswith(".seg.dcm") else stem
    return stem[: -len(".dcm")] if stem.endswith(".dcm") else stem


def _is_dicom(vol) -> bool:
    from ..data.dicom import DicomSeries

    return isinstance(getattr(vol, "source", None), DicomSeries)


def _write_seg(vol, labels: np.ndarray, path: Path, info: ModelInfo | None) -> None:
    if not _is_dicom(vol):
        raise ValueError(
            f"{vol.image_path}: a DICOM SEG output needs a DICOM input series (it references "
            "the source images); use --format nifti for NIfTI inputs"
        )
    if info is None:
        raise ValueError(
            f"{vol.image_path}: a DICOM SEG output needs the model's ModelInfo (its task names the segments)"
        )
    from ..data.dicom_seg import write_dicom_seg

    write_dicom_seg(vol, labels, path, info.task)


def _reason(exc: BaseException, source: Any) -> str:
    """Why one output failed, without the source's name (the OutputError's message starts with it)."""
    text = str(exc).strip()
    text = text[len(f"{source}: ") :] if text.startswith(f"{source}: ") else text
    return text if text and isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {text}"


def write_outputs(
    vol, labels: np.ndarray, original: np.ndarray, base: Path, formats: Iterable[str], info: ModelInfo | None
) -> dict[str, Path]:
    """Write one prediction in every asked format (each atomically, each whatever the others do);
    returns format -> path. When some were written and others failed, raises :class:`OutputError`
    saying which and why; when none was written, the first failure itself (a disk-full OSError
    stays one).

    ``labels``: the canonical (RAS) mask, which the SEG needs; ``original``: the same mask in the
    source's voxel order, which the NIfTI keeps.
    """
    paths = output_paths(base, formats)
    written: dict[str, Path] = {}
    failed: dict[str, str] = {}
    first_error = None
    for fmt, path in paths.items():
        try:
            if fmt == "nifti":
                save_nifti_atomic(mask_image(original, vol), path)
            else:
                _write_seg(vol, labels, path, info)
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - one format failing must not cost the others
            failed[fmt] = _reason(exc, vol.image_path)
            first_error = first_error or exc
            continue
        written[fmt] = path
    if first_error is not None and not written:
        raise first_error
    if failed:
        raise OutputError(vol.image_path, written, failed) from first_error
    return paths
