"""The synthetic CT phantom: determinism, anatomy, difficulty, speed, files on disk."""
from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest

from keras_unet3plus.data import phantom


@pytest.fixture(scope="module")
def case():
    return phantom.generate_case(3, shape=(96, 96, 48))


def test_deterministic_by_seed():
    a = phantom.generate_case(7, shape=(64, 64, 32))
    b = phantom.generate_case(7, shape=(64, 64, 32))
    c = phantom.generate_case(8, shape=(64, 64, 32))
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.spleen, b.spleen)
    assert not np.array_equal(a.hu, c.hu)
    assert not np.array_equal(a.label, c.label)


def test_types_affine_and_spacing(case):
    assert case.hu.dtype == np.int16 and case.label.dtype == np.uint8 and case.spleen.dtype == np.uint8
    assert case.hu.shape == case.label.shape == case.spleen.shape == (96, 96, 48)
    np.testing.assert_allclose(np.diag(case.affine)[:3], (0.8, 0.8, 2.5))
    assert set(np.unique(case.label)) <= {0, 1, 2}
    assert set(np.unique(case.spleen)) <= {0, 1}
    assert not np.any((case.label > 0) & (case.spleen > 0)), "liver and spleen overlap"


def test_anatomy_positions_and_negative_slices():
    for seed in range(4):
        c = phantom.generate_case(seed, shape=(64, 64, 48))
        liver, spleen = c.label > 0, c.spleen > 0
        x = np.arange(64)
        # RAS: axis 0 increases towards the patient's right; the liver is right, the spleen left
        assert (liver.sum((1, 2)) * x).sum() / liver.sum() > 36
        assert (spleen.sum((1, 2)) * x).sum() / spleen.sum() < 28
        zs = np.flatnonzero(liver.any((0, 1)))
        assert zs.min() >= 3 and zs.max() <= 44, "need organ-free slices above and below"
        assert 0.25 < len(zs) / 48 < 0.8
        assert c.hu.min() >= -1024 and (c.hu[:, :, -1] < -500).mean() > 0.3  # lung / air on top


def test_lesions_are_inside_the_liver_and_optional():
    with_lesions = [phantom.generate_case(s, shape=(64, 64, 32)) for s in range(6)]
    assert any((c.label == 2).any() for c in with_lesions)
    none = phantom.generate_case(2, shape=(64, 64, 32), lesions=False)
    assert not (none.label == 2).any() and (none.label == 1).any()


def test_not_trivial_by_intensity(case):
    """Liver HU overlaps spleen / muscle: a threshold alone segments it poorly."""
    hu, liver = case.hu.astype(float), case.label == 1
    mu, sd = hu[liver].mean(), hu[liver].std()
    assert 40 < mu < 120 and 8 < sd < 60
    assert abs(hu[case.spleen > 0].mean() - mu) < 30
    guess = np.abs(hu - mu) < 2 * sd
    dice = 2 * (guess & liver).sum() / (guess.sum() + liver.sum())
    assert dice < 0.75, dice


def test_fast():
    phantom.generate_case(0)  # warm caches
    t = time.perf_counter()
    phantom.generate_case(1, shape=(128, 128, 64))
    assert time.perf_counter() - t < 1.5  # typically ~0.3 s; slack for loaded CI machines


def test_orientation_option_reorders_voxels():
    ras = phantom.generate_case(5, shape=(48, 40, 24))
    lps = phantom.generate_case(5, shape=(48, 40, 24), orientation="LPS")
    pls = phantom.generate_case(5, shape=(48, 40, 24), spacing=(0.7, 0.9, 2.5), orientation="PLS")
    np.testing.assert_array_equal(lps.hu, ras.hu[::-1, ::-1, :])
    np.testing.assert_array_equal(pls.label, np.transpose(ras.label, (1, 0, 2))[::-1, ::-1, :])
    assert pls.spacing == (0.9, 0.7, 2.5)
    np.testing.assert_allclose(np.linalg.norm(pls.affine[:3, :3], axis=0), (0.9, 0.7, 2.5))
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    assert nib.aff2axcodes(pls.affine) == ("P", "L", "S")
    # the same world point holds the same voxel value
    ijk = np.array([10, 20, 5, 1])
    world = ras.affine @ ijk
    ijk_lps = np.rint(np.linalg.inv(lps.affine) @ world).astype(int)
    assert ras.hu[tuple(ijk[:3])] == lps.hu[tuple(ijk_lps[:3])]


def test_write_lits_layout(phantom_lits):
    names = sorted(p.name for p in phantom_lits.iterdir() if not p.name.startswith("."))
    assert names == ["segmentation-0.nii.gz", "segmentation-1.nii.gz", "segmentation-2.nii.gz",
                     "segmentation-3.nii", "volume-0.nii.gz", "volume-1.nii.gz", "volume-2.nii.gz",
                     "volume-3.nii"]
    img = nib.load(phantom_lits / "volume-1.nii.gz")
    seg = nib.load(phantom_lits / "segmentation-1.nii.gz")
    assert img.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
    assert img.header.get_xyzt_units()[0] == "mm"
    expected = phantom.generate_case(phantom.case_seed(0, 1), shape=(64, 64, 32), orientation="LPS")
    np.testing.assert_array_equal(np.asarray(img.dataobj), expected.hu)


def test_write_msd_layout_like_task09(phantom_msd):
    meta = json.loads((phantom_msd / "dataset.json").read_text())
    for key in ("name", "description", "reference", "licence", "release", "tensorImageSize",
                "modality", "labels", "numTraining", "numTest", "training", "test"):
        assert key in meta
    assert meta["labels"] == {"0": "background", "1": "spleen"}
    assert meta["modality"] == {"0": "CT"} and meta["numTraining"] == 3
    assert meta["training"][0] == {"image": "./imagesTr/spleen_0.nii.gz", "label": "./labelsTr/spleen_0.nii.gz"}
    lab = np.asarray(nib.load(phantom_msd / "labelsTr" / "spleen_2.nii.gz").dataobj)
    assert set(np.unique(lab)) == {0, 1}
    assert not list(phantom_msd.rglob("*.tmp*")), "temporary files left behind"
