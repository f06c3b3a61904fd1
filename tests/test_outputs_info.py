"""A DICOM SEG asked of a model object without its ModelInfo: refused in one line naming the scan."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from keras_unet3plus.data.dicom import DicomSeries
from keras_unet3plus.inference.outputs import write_outputs


def test_dicom_seg_without_model_info_is_one_clear_error(tmp_path):
    series = DicomSeries(uid="1.2.3", name="ct", folder=tmp_path, files=[], headers=[])
    vol = SimpleNamespace(image_path=Path("scans/ct"), source=series)
    labels = np.zeros((4, 4, 2), np.uint8)
    with pytest.raises(ValueError, match=r"scans/ct: a DICOM SEG output needs the model's ModelInfo"):
        write_outputs(vol, labels, labels, tmp_path / "ct.seg.dcm", ["dicom-seg"], None)
    assert not list(tmp_path.iterdir())  # nothing half-written
