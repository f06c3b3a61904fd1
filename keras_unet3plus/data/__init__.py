"""Data for UNet 3+: NIfTI readers (LiTS, MSD, generic folders), task presets, case splits, the
2.5D preprocessing shared by training and inference, the streaming tf.data pipeline with its
slice cache and augmentation, and a synthetic CT phantom (:mod:`keras_unet3plus.data.phantom`).

The names below are loaded on first use (PEP 562), so importing one module of this package (the
readers, the preprocessing, :mod:`.pydataset`) does not load TensorFlow with the tf.data pipeline:
under JAX or PyTorch, only the pipeline, the cache and the augmentation need it.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of this package that defines it
_WHERE = {
    "AugmentConfig": "augment", "augment_sample": "augment",
    "CaseIndex": "cache", "SliceCache": "cache", "scan_case": "cache",
    "DicomSeries": "dicom", "find_dicom_series": "dicom", "read_dicom_series": "dicom",
    "Case": "layouts", "detect_layout": "layouts", "find_cases": "layouts", "find_folders": "layouts",
    "find_images": "layouts", "find_lits": "layouts", "find_msd": "layouts",
    "load_case": "nifti", "load_image": "nifti",
    "DataError": "volume", "DataFileNotFoundError": "volume", "Volume": "volume", "to_canonical": "volume",
    "to_original_orientation": "volume",
    "DatasetInfo": "pipeline", "build_dataset": "pipeline", "make_dataset": "pipeline",
    "negatives_per_case": "pipeline",
    "PreprocessConfig": "preprocess", "label_to_slices": "preprocess", "slices_to_volume": "preprocess",
    "volume_to_slices": "preprocess",
    "Split": "splits", "split_cases": "splits",
    "TASKS": "tasks", "TaskSpec": "tasks", "get_task": "tasks",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
