"""Data for UNet 3+: NIfTI readers (LiTS, MSD, generic folders), task presets, case splits, the
2.5D preprocessing shared by training and inference, the streaming tf.data pipeline with its
slice cache and augmentation, and a synthetic CT phantom (:mod:`keras_unet3plus.data.phantom`)."""
from keras_unet3plus.data.augment import AugmentConfig, augment_sample
from keras_unet3plus.data.cache import CaseIndex, SliceCache, scan_case
from keras_unet3plus.data.dicom import DicomSeries, find_dicom_series, read_dicom_series
from keras_unet3plus.data.layouts import (Case, detect_layout, find_cases, find_folders, find_images,
                                          find_lits, find_msd)
from keras_unet3plus.data.nifti import load_case, load_image
from keras_unet3plus.data.volume import (DataError, DataFileNotFoundError, Volume, to_canonical,
                                         to_original_orientation)
from keras_unet3plus.data.pipeline import DatasetInfo, build_dataset, make_dataset, negatives_per_case
from keras_unet3plus.data.preprocess import (PreprocessConfig, label_to_slices, slices_to_volume,
                                             volume_to_slices)
from keras_unet3plus.data.splits import Split, split_cases
from keras_unet3plus.data.tasks import TASKS, TaskSpec, get_task

__all__ = [
    "AugmentConfig", "augment_sample", "Case", "CaseIndex", "DataError", "DataFileNotFoundError",
    "DicomSeries", "find_dicom_series", "read_dicom_series",
    "DatasetInfo", "PreprocessConfig", "SliceCache", "Split", "TASKS", "TaskSpec", "Volume",
    "build_dataset", "detect_layout", "find_cases", "find_folders", "find_images", "find_lits",
    "find_msd", "get_task", "label_to_slices", "load_case", "load_image", "make_dataset",
    "negatives_per_case", "scan_case", "slices_to_volume", "split_cases", "to_canonical",
    "to_original_orientation", "volume_to_slices",
]
