"""Acquisition variants of a labelled scan (3 mm voxels, a cropped field of view, more noise)."""

from __future__ import annotations

import numpy as np
import pytest

from keras_unet3plus.data.phantom import generate_case
from keras_unet3plus.data.variants import (
    STANDARD_VARIANTS,
    LabelledScan,
    add_noise,
    crop_fov,
    resample,
    standard_variants,
)


@pytest.fixture(scope="module")
def scan():
    c = generate_case(5, shape=(160, 160, 20), spacing=(1.0, 1.0, 2.0), organ="liver")
    labels = 5 * (c.label > 0) + 1 * (c.spleen > 0)
    return LabelledScan("as acquired", c.hu.astype(np.float32), labels.astype(np.int16), c.spacing)


def test_resample_to_coarse_voxels_keeps_the_organs_in_place(scan):
    coarse = resample(scan, (3.0, 3.0, 3.0))
    assert coarse.hu.shape == (54, 54, 13) and coarse.spacing == (3.0, 3.0, 3.0)
    for value in (5, 1):
        fine, low = scan.labels == value, coarse.labels == value
        v_fine, v_low = fine.sum() * 1 * 1 * 2, low.sum() * 27
        assert abs(v_low - v_fine) / v_fine < 0.08, (value, v_fine, v_low)
        # centroid in mm (the first voxel stays where it was)
        c_fine = np.argwhere(fine).mean(0) * scan.spacing
        c_low = np.argwhere(low).mean(0) * coarse.spacing
        assert np.abs(c_fine - c_low).max() < 1.5, (c_fine, c_low)
    # blurred to the new resolution: the noise inside the liver (away from its edge) drops
    from scipy import ndimage

    inside = [ndimage.binary_erosion(s.labels == 5, iterations=k) for s, k in ((scan, 6), (coarse, 2))]
    assert coarse.hu[inside[1]].std() < 0.7 * scan.hu[inside[0]].std()
    with pytest.raises(ValueError, match="spacing"):
        resample(scan, (3.0, 0.0, 3.0))


def test_crop_is_centred_on_the_body_and_sized_in_mm(scan):
    cut = crop_fov(scan, (120.0, 90.0))
    assert cut.hu.shape == (120, 90, 20) and cut.spacing == scan.spacing
    body = scan.hu > -500
    xs, ys = np.flatnonzero(body.any((1, 2))), np.flatnonzero(body.any((0, 2)))
    # the cut is the centre of the body's box: find it in the original by its position
    i0 = int(round((xs[0] + xs[-1]) / 2 - 60))
    j0 = int(round((ys[0] + ys[-1]) / 2 - 45))
    np.testing.assert_array_equal(cut.hu, scan.hu[i0 : i0 + 120, j0 : j0 + 90])
    np.testing.assert_array_equal(cut.labels, scan.labels[i0 : i0 + 120, j0 : j0 + 90])
    assert crop_fov(scan, (400.0, 400.0)).hu.shape == scan.hu.shape  # larger than the scan: unchanged


def test_noise_has_the_asked_standard_deviation_and_is_seeded(scan):
    noisy = add_noise(scan, 25.0, seed=1)
    diff = noisy.hu - scan.hu
    assert abs(diff.std() - 25.0) < 0.5 and abs(diff.mean()) < 1.0
    np.testing.assert_array_equal(noisy.hu, add_noise(scan, 25.0, seed=1).hu)
    np.testing.assert_array_equal(noisy.labels, scan.labels)


def test_standard_variants_are_named_and_described(scan):
    variants = standard_variants(scan)
    assert [v.name for v in variants] == [name for name, _ in STANDARD_VARIANTS]
    assert variants[0] is not None and variants[0].hu is scan.hu
    last = variants[-1]
    assert last.spacing == (3.0, 3.0, 3.0) and last.hu.shape[:2] == (54, 54)  # 160 mm: smaller than the crop
    assert "3.00 x 3.00 x 3.00 mm" in last.describe()
    with pytest.raises(ValueError, match="same 3-D grid"):
        LabelledScan("x", scan.hu, scan.labels[:-1], scan.spacing)
