"""Data for UNet 3+: the reader registry (NIfTI, NRRD/MetaImage, DICOM series; :mod:`.readers`), case
discovery (LiTS, MSD, nnU-Net, generic folders), task presets, case splits, the
2.5D preprocessing shared by training and inference, the streaming tf.data pipeline with its
slice cache and augmentation, and a synthetic CT phantom (:mod:`keras_unet3plus.data.phantom`).

The names below are loaded on first use (PEP 562), so importing one module of this package (the
readers, the preprocessing, :mod:`.pydataset`) does not load TensorFlow with the tf.data pipeline:
under JAX or PyTorch, only the pipeline, the cache and the augmentation need it.
"""

from __future__ import annotations

from .._lazy import lazy_names

#: public name -> the module of this package that defines it
_WHERE = {
    "AugmentConfig": "augment",
    "augment_sample": "augment",
    "CaseIndex": "cache",
    "SliceCache": "cache",
    "scan_case": "cache",
    "DicomSeries": "dicom",
    "find_dicom_series": "dicom",
    "read_dicom_series": "dicom",
    "Case": "layouts",
    "detect_layout": "layouts",
    "find_cases": "layouts",
    "find_folders": "layouts",
    "find_images": "layouts",
    "find_lits": "layouts",
    "find_msd": "layouts",
    "READERS": "readers",
    "Reader": "readers",
    "load_case": "readers",
    "load_image": "readers",
    "open_scan": "readers",
    "open_volume": "readers",
    "read_volume": "readers",
    "reader_for": "readers",
    "ScanFile": "volume",
    "DataError": "volume",
    "DataFileNotFoundError": "volume",
    "Volume": "volume",
    "to_canonical": "volume",
    "to_original_orientation": "volume",
    "DatasetInfo": "pipeline",
    "build_dataset": "pipeline",
    "make_dataset": "pipeline",
    "negatives_per_case": "pipeline",
    "PreprocessConfig": "preprocess",
    "label_to_slices": "preprocess",
    "slices_to_volume": "preprocess",
    "volume_to_slices": "preprocess",
    "Split": "splits",
    "split_cases": "splits",
    "TASKS": "tasks",
    "TaskSpec": "tasks",
    "get_task": "tasks",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
