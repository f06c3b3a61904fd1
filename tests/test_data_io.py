"""Reading real files: layouts, orientation, spacing, and every kind of bad input."""

from __future__ import annotations

import gzip
import json
import shutil
import warnings

import nibabel as nib
import numpy as np
import pytest

from keras_unet3plus.data import (
    Case,
    DataError,
    DataFileNotFoundError,
    detect_layout,
    find_cases,
    get_task,
    load_case,
    load_image,
    phantom,
)
from keras_unet3plus.data.nifti import to_canonical, to_original_orientation

SHAPE = (64, 64, 32)


def _save(path, data, affine=None):
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


# ---------------------------------------------------------------------------------- layouts


def test_lits_layout_nii_and_niigz(phantom_lits):
    cases = find_cases(phantom_lits)
    assert detect_layout(phantom_lits) == "lits"
    assert [c.case_id for c in cases] == ["volume-0", "volume-1", "volume-2", "volume-3"]
    assert cases[3].image_path.name == "volume-3.nii" and cases[3].label_path.name == "segmentation-3.nii"
    assert cases[0].label_path.name == "segmentation-0.nii.gz"


def test_lits_layout_in_batch_subfolders(phantom_lits, tmp_path):
    for i, batch in ((0, "Training Batch 1"), (2, "Training Batch 2"), (10, "Training Batch 2")):
        (tmp_path / batch).mkdir(exist_ok=True)
        n = min(i, 2)
        for kind in ("volume", "segmentation"):
            shutil.copy(phantom_lits / f"{kind}-{n}.nii.gz", tmp_path / batch / f"{kind}-{i}.nii.gz")
    cases = find_cases(tmp_path, layout="lits")
    assert [c.case_id for c in cases] == ["volume-0", "volume-2", "volume-10"]  # numeric order


def test_msd_layout_ignores_appledouble(phantom_msd):
    assert detect_layout(phantom_msd) == "msd"
    cases = find_cases(phantom_msd)
    assert [c.case_id for c in cases] == ["spleen_0", "spleen_1", "spleen_2"]
    assert all(not c.image_path.name.startswith("._") for c in cases)
    # without dataset.json, pairing by file name must skip the ._ files too
    root = phantom_msd.parent / "msd_nojson"
    shutil.copytree(phantom_msd, root)
    (root / "dataset.json").unlink()
    assert [c.case_id for c in find_cases(root, layout="msd")] == ["spleen_0", "spleen_1", "spleen_2"]


def test_generic_folders_and_images(phantom_msd, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(2):
        shutil.copy(phantom_msd / "imagesTr" / f"spleen_{i}.nii.gz", tmp_path / "images" / f"ct{i}.nii.gz")
        shutil.copy(phantom_msd / "labelsTr" / f"spleen_{i}.nii.gz", tmp_path / "labels" / f"ct{i}.nii.gz")
    cases = find_cases(tmp_path)
    assert [(c.case_id, c.label_path.name) for c in cases] == [("ct0", "ct0.nii.gz"), ("ct1", "ct1.nii.gz")]
    unl = find_cases(tmp_path / "images", layout="images")
    assert [c.label_path for c in unl] == [None, None]


# ------------------------------------------------------------------------------ orientation


@pytest.mark.parametrize(
    "index,codes", [(0, ("R", "A", "S")), (1, ("L", "P", "S")), (2, ("P", "L", "S")), (3, ("L", "A", "S"))]
)
def test_canonical_orientation_round_trip_and_spacing(phantom_lits, index, codes):
    case = find_cases(phantom_lits)[index]
    raw = nib.load(case.image_path)
    assert nib.aff2axcodes(raw.affine) == codes
    vol = load_case(case, "liver_tumour")
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.image.dtype == np.float32 and vol.label.dtype == np.uint8
    ras = phantom.generate_case(phantom.case_seed(0, index), shape=SHAPE, organ="liver")
    assert vol.spacing == pytest.approx(ras.spacing)  # the RAS phantom's, whatever axis order the file has
    np.testing.assert_array_equal(vol.image, ras.hu.astype(np.float32))
    np.testing.assert_array_equal(vol.label, ras.label)
    np.testing.assert_array_equal(vol.to_original(vol.image), np.asarray(raw.dataobj))
    probs = np.stack([vol.label == k for k in range(3)], -1).astype(np.float32)  # (X, Y, Z, C)
    back = vol.to_original(probs)
    assert back.shape == tuple(raw.shape) + (3,)
    np.testing.assert_array_equal(back.argmax(-1), np.asarray(nib.load(case.label_path).dataobj))
    out = vol.to_nifti(vol.label)
    np.testing.assert_allclose(out.affine, raw.affine)


def test_spacing_follows_axis_permutation(tmp_path):
    c = phantom.generate_case(1, shape=(32, 40, 16), spacing=(0.6, 0.9, 3.0), orientation="PLS")
    path = phantom.save_nifti_atomic(nib.Nifti1Image(c.hu, c.affine), tmp_path / "x.nii.gz")
    vol = load_image(path)
    assert vol.image.shape == (32, 40, 16)
    assert vol.spacing == pytest.approx((0.6, 0.9, 3.0))
    assert vol.label is None and vol.case_id == "x"


def test_to_canonical_inverse_random_affine():
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(5, 6, 7)).astype(np.float32)
    for codes in (("L", "I", "A"), ("S", "R", "P"), ("R", "A", "S")):
        ornt = nib.orientations.axcodes2ornt(codes)
        aff = nib.orientations.inv_ornt_aff(ornt, arr.shape) @ np.diag([1.0, 2.0, 3.0, 1.0])
        can, can_aff = to_canonical(arr, aff)
        assert nib.aff2axcodes(can_aff) == ("R", "A", "S")
        np.testing.assert_array_equal(to_original_orientation(can, aff), arr)


# ------------------------------------------------------------------------------- bad input


@pytest.fixture()
def lits_copy(phantom_lits, tmp_path):
    root = tmp_path / "lits"
    root.mkdir()
    for name in ("volume-0.nii.gz", "segmentation-0.nii.gz"):
        shutil.copy(phantom_lits / name, root / name)
    return root


def _case(root, n=0):
    return Case(f"volume-{n}", root / f"volume-{n}.nii.gz", root / f"segmentation-{n}.nii.gz")


def test_shape_mismatch(lits_copy):
    _save(
        lits_copy / "segmentation-0.nii.gz",
        np.zeros((64, 64, 30), np.uint8),
        nib.load(lits_copy / "volume-0.nii.gz").affine,
    )
    with pytest.raises(DataError, match=r"segmentation-0\.nii\.gz.*shape"):
        load_case(_case(lits_copy), "liver")


def test_affine_mismatch(lits_copy):
    img = nib.load(lits_copy / "volume-0.nii.gz")
    aff = img.affine.copy()
    aff[0, 3] += 5.0
    _save(lits_copy / "segmentation-0.nii.gz", np.zeros(img.shape, np.uint8), aff)
    with pytest.raises(DataError, match=r"segmentation-0\.nii\.gz.*affine"):
        load_case(_case(lits_copy), "liver")


def test_non_3d_image(tmp_path):
    p = _save(tmp_path / "volume-0.nii.gz", np.zeros((8, 8, 4, 2), np.int16))
    with pytest.raises(DataError, match=r"volume-0\.nii\.gz.*3-D"):
        load_image(p)
    p2 = _save(tmp_path / "flat.nii.gz", np.zeros((8, 8), np.int16))
    with pytest.raises(DataError, match=r"flat\.nii\.gz.*3-D"):
        load_image(p2)
    # a trailing singleton dimension is fine
    assert load_image(_save(tmp_path / "ok.nii.gz", np.zeros((8, 8, 4, 1), np.int16))).image.shape == (8, 8, 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_voxels(tmp_path, bad):
    data = np.zeros((8, 8, 4), np.float32)
    data[1, 2, 3] = bad
    p = _save(tmp_path / "ct.nii.gz", data)
    with pytest.raises(DataError, match=r"ct\.nii\.gz.*NaN or inf"):
        load_image(p)


def test_label_values_outside_task(lits_copy, phantom_msd):
    img = nib.load(lits_copy / "volume-0.nii.gz")
    lab = np.asarray(nib.load(lits_copy / "segmentation-0.nii.gz").dataobj).copy()
    lab[0, 0, 0] = 5
    _save(lits_copy / "segmentation-0.nii.gz", lab, img.affine)
    with pytest.raises(DataError, match=r"segmentation-0\.nii\.gz.*\[5\]"):
        load_case(_case(lits_copy), "liver")
    # LiTS labels (0/1/2) given to the spleen task
    lits_case = Case("x", lits_copy / "volume-0.nii.gz", lits_copy / "segmentation-0.nii.gz")
    lab[0, 0, 0] = 2
    _save(lits_copy / "segmentation-0.nii.gz", lab, img.affine)
    with pytest.raises(DataError, match=r"segmentation-0\.nii\.gz.*\[2\].*spleen"):
        load_case(lits_case, "spleen")
    neg = lab.astype(np.int16)
    neg[0, 0, 0] = -1
    _save(lits_copy / "segmentation-0.nii.gz", neg, img.affine)
    with pytest.raises(DataError, match=r"segmentation-0\.nii\.gz"):
        load_case(_case(lits_copy), "liver")


def test_volume_without_label_and_vice_versa(lits_copy, phantom_lits):
    shutil.copy(phantom_lits / "volume-1.nii.gz", lits_copy / "volume-1.nii.gz")
    shutil.copy(phantom_lits / "segmentation-2.nii.gz", lits_copy / "segmentation-2.nii.gz")
    with pytest.raises(DataError, match=r"volume-1\.nii\.gz \(image without label\).*segmentation-2"):
        find_cases(lits_copy)
    with pytest.warns(UserWarning, match=r"volume-1\.nii\.gz.*segmentation-2\.nii\.gz"):
        cases = find_cases(lits_copy, unpaired="skip")
    assert [c.case_id for c in cases] == ["volume-0"]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        kept = find_cases(lits_copy, unpaired="keep")
    assert [(c.case_id, c.label_path is None) for c in kept] == [("volume-0", False), ("volume-1", True)]


def test_msd_missing_label(phantom_msd, tmp_path):
    root = tmp_path / "msd"
    shutil.copytree(phantom_msd, root)
    (root / "labelsTr" / "spleen_1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"spleen_1\.nii\.gz"):
        find_cases(root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/spleen_9.nii.gz", "label": "./labelsTr/spleen_9.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataFileNotFoundError, match=r"spleen_9\.nii\.gz"):
        find_cases(root, unpaired="skip")


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="does_not_exist"):
        find_cases(tmp_path / "does_not_exist")
    with pytest.raises(FileNotFoundError):
        find_cases(tmp_path / "does_not_exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no cases found"):
        find_cases(tmp_path / "empty")
    (tmp_path / "msd" / "imagesTr").mkdir(parents=True)
    (tmp_path / "msd" / "labelsTr").mkdir()
    with pytest.raises(DataError, match="no .nii"):
        find_cases(tmp_path / "msd")
    with pytest.raises(DataFileNotFoundError, match="nope.nii.gz"):
        load_image(tmp_path / "nope.nii.gz")


def test_unreadable_and_truncated_files(lits_copy):
    junk = lits_copy / "junk.nii.gz"
    junk.write_bytes(b"this is not a nifti file at all")
    with pytest.raises(DataError, match=r"junk\.nii\.gz.*not a readable NIfTI"):
        load_image(junk)
    data = (lits_copy / "volume-0.nii.gz").read_bytes()
    (lits_copy / "volume-0.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"volume-0\.nii\.gz.*truncated"):
        load_case(_case(lits_copy), "liver")
    raw = gzip.decompress(data)
    (lits_copy / "short.nii").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"short\.nii"):
        load_image(lits_copy / "short.nii")


def test_task_presets():
    liver, tumour, spleen = get_task("liver"), get_task("liver_tumour"), get_task("spleen")
    assert liver.num_classes == 1 and tumour.num_classes == 3 and spleen.num_classes == 1
    np.testing.assert_array_equal(liver.map_label(np.array([0, 1, 2])), [0, 1, 1])
    np.testing.assert_array_equal(tumour.map_label(np.array([0, 1, 2])), [0, 1, 2])
    assert liver.hu_window == (-200.0, 250.0) and spleen.hu_window == (-160.0, 240.0)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("kidney")
