"""docs/real_ct_seg.png: a DICOM SEG written by keras-unet3plus on the real CT series, read back with highdicom and
placed on the CT (the mask is the TotalSegmentator liver: this shows the SEG geometry, not a model).

    .venv/bin/python benchmarks/real_ct_seg_picture.py
"""

import tempfile
from pathlib import Path

import numpy as np

from keras_unet3plus.data import read_dicom_series
from keras_unet3plus.data.dicom_seg import read_dicom_seg_labels, write_dicom_seg
from keras_unet3plus.data.nifti import load_image
from keras_unet3plus.overlays import save_case_montage

real = Path(__file__).resolve().parents[2] / "shared" / "realct"  # ../shared/realct beside the repo
vol = read_dicom_series(real / "series")
ref = np.rint(load_image(real / "reference_labels.nii.gz").image).astype(np.int16)
mask = (ref == 5).astype(np.uint8)  # TotalSegmentator: liver 5
with tempfile.TemporaryDirectory() as tmp:
    seg = write_dicom_seg(vol, mask, Path(tmp) / "liver.seg.dcm", "liver")
    back = read_dicom_seg_labels(seg, vol)
assert np.array_equal(back > 0, mask > 0)
zs = [int(round(v)) for v in np.linspace(2, vol.image.shape[2] - 3, 4)]
save_case_montage(
    vol.image,
    back > 0,
    back > 0,
    "docs/real_ct_seg.png",
    slices=zs,
    window=(-160, 240),
    title="DICOM SEG written by keras-unet3plus on the real CT series, read back with highdicom "
    "(liver segment; mask: TotalSegmentator reference)",
)
print("ok")
