"""The synthetic CT phantom: determinism, anatomy in RAS, contrast phases, acquisition geometry,
difficulty, files on disk (LiTS, MSD, nnU-Net layouts)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from keras_unet3plus.data import phantom
from keras_unet3plus.data.phantom import anatomy as A

SMALL = (64, 64, 32)


@pytest.fixture(scope="module")
def case():
    return phantom.generate_case(3, shape=(96, 96, 48))


@pytest.fixture(scope="module")
def mm_cases():
    """Cases on one fixed 4 mm grid over the whole upper abdomen (positions in mm are comparable)."""
    return [phantom.generate_case(s, shape=(96, 80, 64), spacing=(4.0, 4.0, 5.0)) for s in range(4)]


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask)
    return (affine @ np.c_[idx.mean(0)[None], [[1.0]]].T)[:3, 0]


def _world_z(affine: np.ndarray, k: np.ndarray) -> np.ndarray:
    return affine[2, 3] + affine[2, 2] * np.asarray(k, dtype=float)


def test_deterministic_by_seed():
    a = phantom.generate_case(7, shape=SMALL)
    b = phantom.generate_case(7, shape=SMALL)
    c = phantom.generate_case(8, shape=SMALL)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.spleen, b.spleen)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert not np.array_equal(a.hu, c.hu)
    assert not np.array_equal(a.label, c.label)


def test_same_patient_on_any_grid():
    """The anatomy is defined in mm: the same seed on two grids gives the same organ positions."""
    a = phantom.generate_case(4, shape=(64, 64, 40), spacing=(5.0, 5.0, 6.0))
    b = phantom.generate_case(4, shape=(96, 96, 60), spacing=(10 / 3, 10 / 3, 4.0))
    for la, lb in ((a.label > 0, b.label > 0), (a.spleen > 0, b.spleen > 0)):
        ca, cb = _centroid_mm(la, a.affine), _centroid_mm(lb, b.affine)
        assert np.abs(ca - cb).max() < 6.0, (ca, cb)
        va, vb = la.sum() * 5 * 5 * 6, lb.sum() * (10 / 3) ** 2 * 4
        assert abs(va - vb) / va < 0.1


def test_types_affine_and_spacing(case):
    assert case.hu.dtype == np.int16 and case.label.dtype == np.uint8 and case.spleen.dtype == np.uint8
    assert case.hu.shape == case.label.shape == case.spleen.shape == (96, 96, 48)
    np.testing.assert_allclose(np.diag(case.affine)[:3], case.spacing)
    assert set(np.unique(case.label)) <= {0, 1, 2}
    assert set(np.unique(case.spleen)) <= {0, 1}
    assert not np.any((case.label > 0) & (case.spleen > 0)), "liver and spleen overlap"
    assert case.phase in ("native", "arterial", "portal", "delayed")


def test_acquisition_variety_and_stated_affines():
    """spacing=None draws a realistic scan: field of view 250-500 mm over the in-plane size
    (0.6-1.0 mm pixels at 512), slice spacing 0.7-5 mm; the affine states exactly that grid."""
    fovs, dzs = [], []
    for s in range(12):
        c = phantom.generate_case(s, shape=(32, 32, 12))
        sx, sy, sz = c.spacing
        assert sx == sy
        fovs.append(sx * 32)
        dzs.append(sz)
        assert 250 <= sx * 32 <= 500 and 0.7 <= sz <= 5.0
        np.testing.assert_allclose(c.affine[:3, :3], np.diag(c.spacing))
        assert c.info["fov_mm"] == pytest.approx((sx * 32, sy * 32))
    assert np.ptp(fovs) > 60 and np.ptp(dzs) > 1.0, (fovs, dzs)
    # a given spacing is used as is, whatever the seed
    c = phantom.generate_case(1, shape=(40, 30, 10), spacing=(0.7, 0.9, 2.0))
    np.testing.assert_allclose(np.diag(c.affine)[:3], (0.7, 0.9, 2.0))
    assert c.spacing == (0.7, 0.9, 2.0)


def test_anatomy_in_ras(mm_cases):
    """Liver on the patient's right (RAS +x), spleen on the left and posterior, the liver's left
    lobe crosses the midline, the liver dome is above the spleen's lower tip, the heart's level
    (above the dome) has no liver, and the kidneys are below the dome."""
    for c in mm_cases:
        liver, spleen = c.label > 0, c.spleen > 0
        assert liver.any() and spleen.any()
        cl, cs = _centroid_mm(liver, c.affine), _centroid_mm(spleen, c.affine)
        assert cl[0] > 30, cl  # right
        assert cs[0] < -50, cs  # left
        assert cs[1] < cl[1] + 10  # spleen is posterior (not in front of the liver)
        # some axial level has liver on both sides of the midline (the left lobe)
        x_mm = c.affine[0, 3] + c.affine[0, 0] * np.arange(c.hu.shape[0])
        left_side = liver[x_mm < -15].any(axis=(0, 1))
        assert left_side.any(), "the left lobe never crosses the midline"
        zl = _world_z(c.affine, np.flatnonzero(liver.any((0, 1))))
        zs = _world_z(c.affine, np.flatnonzero(spleen.any((0, 1))))
        assert zl.max() > zs.min() + 40  # liver dome well above the spleen tip
        assert 100 < zl.max() - zl.min() < 260  # 10-26 cm craniocaudal
        tissue = c.info["tissue"]
        kid = np.isin(tissue, (A.KCORTEX, A.KMEDULLA))
        zk = _world_z(c.affine, np.flatnonzero(kid.any((0, 1))))
        assert zk.max() < zl.max() - 20
        lung = tissue == A.LUNG
        assert lung[:, :, -1].any(), "no lung base at the top of the scan"
        vol_ml = liver.sum() * np.prod(c.spacing) / 1000
        assert 900 < vol_ml < 3500, vol_ml
        sp_ml = spleen.sum() * np.prod(c.spacing) / 1000
        assert 40 < sp_ml < 1300, sp_ml  # splenomegaly included


def test_spine_bulges_into_the_cavity_between_the_gutters(mm_cases):
    """The vertebral body bulges into the back of the abdominal cavity; beside it the cavity reaches
    further back (the paravertebral gutters): the kidneys' posterior surfaces and the spleen's
    posterior pole lie behind the centre of the vertebral body."""
    for c in mm_cases:
        t = c.info["tissue"]
        # y in mm is affine[1, 3] + affine[1, 1] * j (no rotation in an explicit-spacing case)
        y = c.affine[1, 3] + c.affine[1, 1] * np.arange(t.shape[1])
        x = c.affine[0, 3] + c.affine[0, 0] * np.arange(t.shape[0])
        vertebral_body = (t == A.MARROW) & (np.abs(x)[:, None, None] < 12)
        y_vb = np.median(np.broadcast_to(y[None, :, None], t.shape)[vertebral_body])
        kid_y = np.broadcast_to(y[None, :, None], t.shape)[np.isin(t, (A.KCORTEX, A.KMEDULLA))]
        spl_y = np.broadcast_to(y[None, :, None], t.shape)[t == A.SPLEEN]
        assert kid_y.min() < y_vb - 5 and spl_y.min() < y_vb, (kid_y.min(), spl_y.min(), y_vb)


def test_neighbours_touch_the_liver(mm_cases):
    """Organs of liver-like HU (stomach wall, kidney, bowel, heart, spleen, muscle) border the
    liver in most cases: the boundary has to be learnt from shape, not intensity alone."""
    touching = set()
    for c in mm_cases:
        t = c.info["tissue"]
        liver = c.label > 0
        from scipy import ndimage

        ring = ndimage.binary_dilation(liver, iterations=1) & ~liver
        touching |= set(np.unique(t[ring]).tolist())
    assert {A.GIWALL, A.MUSCLE, A.KCORTEX} & touching
    assert A.VFAT in touching and A.LUNG in touching or A.MUSCLE in touching


@pytest.mark.parametrize("phase,lo,hi", [("native", -30, 90), ("portal", 75, 150), ("arterial", 40, 110)])
def test_liver_hu_per_phase(phase, lo, hi):
    """Liver ~55 HU native (fatty livers lower), ~70-80 arterial, ~100-120 portal venous."""
    got = []
    for s in range(60):
        c = phantom.generate_case(s, shape=(48, 48, 12))
        if c.phase != phase or not (c.label == 1).any():
            continue
        tissue = c.info["tissue"]
        got.append(float(np.median(c.hu[tissue == A.LIVER])))
        if len(got) >= 3:
            break
    assert got, f"no {phase} case in 60 seeds"
    assert all(lo < g < hi for g in got), (phase, got)


def test_negative_slices_and_lung_on_top():
    for seed in range(4):
        c = phantom.generate_case(seed, shape=(64, 64, 48), spacing=(6.0, 6.0, 6.5))
        liver = c.label > 0
        zs = np.flatnonzero(liver.any((0, 1)))
        assert zs.min() >= 2 and zs.max() <= 45, "need organ-free slices above and below"
        assert 0.25 < len(zs) / 48 < 0.8
        assert c.hu.min() >= -1024


def test_lesions_are_inside_the_liver_and_optional():
    with_lesions = [phantom.generate_case(s, shape=(48, 48, 24), spacing=(7.0, 7.0, 8.0)) for s in range(10)]
    assert any((c.label == 2).any() for c in with_lesions)
    none = phantom.generate_case(2, shape=(48, 48, 24), spacing=(7.0, 7.0, 8.0), lesions=False)
    assert not (none.label == 2).any() and (none.label == 1).any()
    same = [c for c in with_lesions if c.seed == 2][0]  # lesions do not move the rest of the anatomy
    np.testing.assert_array_equal(none.spleen, same.spleen)


def test_not_trivial_by_intensity():
    """Liver HU overlaps its neighbours' (spleen, bowel and stomach wall, vessels, heart): a
    threshold at the liver's own mean +- 2 sd segments it poorly (real portal-venous CT: ~0.65)."""
    dices = []
    for s in range(6):
        c = phantom.generate_case(s, shape=(64, 64, 32))
        hu, liver = c.hu.astype(float), c.label == 1
        mu, sd = hu[liver].mean(), hu[liver].std()
        assert 0 < mu < 160 and 3 < sd < 80
        guess = np.abs(hu - mu) < 2 * sd
        dices.append(2 * (guess & liver).sum() / (guess.sum() + liver.sum()))
    assert np.median(dices) < 0.75, dices


def test_noise_is_correlated_not_white():
    """CT noise has a band-pass (ramp x Gaussian) spectrum: neighbouring pixels are correlated,
    unlike white noise, and the level follows the drawn noise sd."""
    from keras_unet3plus.data.phantom import acquisition as Q
    from keras_unet3plus.data.phantom import geometry as G

    shape, spacing = (128, 128, 4), (0.7, 0.7, 5.0)
    for seed in range(3):
        body = A.Anatomy(np.random.default_rng(seed))
        acq = Q.sample_acquisition(np.random.default_rng(seed), body, shape, spacing)
        acq.tex_lut[:] = 0
        acq.streaks = []
        g = G.Grid(shape, spacing, (0.0, 0.0, 0.0))
        g.tissue[:] = A.MUSCLE
        n = Q.render(g.tissue, g, acq, np.random.default_rng(seed + 10))
        n = n - n.mean()
        r1 = float((n[:-1] * n[1:]).mean() / n.var())
        assert 0.08 < r1 < 0.95, r1  # white noise: ~0.00
        assert 0.2 * acq.noise_sd < n.std() < 1.6 * acq.noise_sd, (n.std(), acq.noise_sd)


def test_orientation_option_reorders_voxels():
    ras = phantom.generate_case(5, shape=(48, 40, 24))
    lps = phantom.generate_case(5, shape=(48, 40, 24), orientation="LPS")
    pls = phantom.generate_case(5, shape=(48, 40, 24), spacing=(0.7, 0.9, 2.5), orientation="PLS")
    ras2 = phantom.generate_case(5, shape=(48, 40, 24), spacing=(0.7, 0.9, 2.5))
    np.testing.assert_array_equal(lps.hu, ras.hu[::-1, ::-1, :])
    np.testing.assert_array_equal(pls.label, np.transpose(ras2.label, (1, 0, 2))[::-1, ::-1, :])
    assert pls.spacing == (0.9, 0.7, 2.5)
    np.testing.assert_allclose(np.linalg.norm(pls.affine[:3, :3], axis=0), (0.9, 0.7, 2.5))
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    assert nib.aff2axcodes(pls.affine) == ("P", "L", "S")
    for orient in phantom.EXAMPLE_ORIENTATIONS:
        assert phantom.generate_case(5, shape=(48, 40, 24), orientation=orient).hu.shape[2] in (24, 48, 40)
    # the same world point holds the same voxel value
    ijk = np.array([10, 20, 5, 1])
    world = ras.affine @ ijk
    ijk_lps = np.rint(np.linalg.inv(lps.affine) @ world).astype(int)
    assert ras.hu[tuple(ijk[:3])] == lps.hu[tuple(ijk_lps[:3])]


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        phantom.generate_case(0, shape=(4, 64, 32))
    with pytest.raises(ValueError, match="spacing"):
        phantom.generate_case(0, shape=SMALL, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="layout"):
        phantom.write_dataset("/tmp/never", 1, layout="nope")


def test_write_lits_layout(phantom_lits):
    names = sorted(p.name for p in phantom_lits.iterdir() if not p.name.startswith("."))
    assert names == [
        "segmentation-0.nii.gz",
        "segmentation-1.nii.gz",
        "segmentation-2.nii.gz",
        "segmentation-3.nii",
        "volume-0.nii.gz",
        "volume-1.nii.gz",
        "volume-2.nii.gz",
        "volume-3.nii",
    ]
    img = nib.load(phantom_lits / "volume-1.nii.gz")
    seg = nib.load(phantom_lits / "segmentation-1.nii.gz")
    assert img.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
    assert img.header.get_xyzt_units()[0] == "mm"
    expected = phantom.generate_case(phantom.case_seed(0, 1), shape=(64, 64, 32), orientation="LPS", organ="liver")
    np.testing.assert_array_equal(np.asarray(img.dataobj), expected.hu)
    np.testing.assert_allclose(img.affine, expected.affine, atol=1e-4)


def test_write_msd_layout_like_task09(phantom_msd):
    meta = json.loads((phantom_msd / "dataset.json").read_text())
    for key in (
        "name",
        "description",
        "reference",
        "licence",
        "release",
        "tensorImageSize",
        "modality",
        "labels",
        "numTraining",
        "numTest",
        "training",
        "test",
    ):
        assert key in meta
    assert meta["labels"] == {"0": "background", "1": "spleen"}
    assert meta["modality"] == {"0": "CT"} and meta["numTraining"] == 3
    assert meta["training"][0] == {"image": "./imagesTr/spleen_0.nii.gz", "label": "./labelsTr/spleen_0.nii.gz"}
    lab = np.asarray(nib.load(phantom_msd / "labelsTr" / "spleen_2.nii.gz").dataobj)
    assert set(np.unique(lab)) == {0, 1}
    assert not list(phantom_msd.rglob("*.tmp*")), "temporary files left behind"


@pytest.mark.parametrize(
    "task,labels", [("liver", {"background": 0, "liver": 1, "tumor": 2}), ("spleen", {"background": 0, "spleen": 1})]
)
def test_write_nnunet_layout(tmp_path, task, labels):
    root = tmp_path / f"Dataset001_{task}"
    paths = phantom.write_dataset(root, 2, layout="nnunet", task=task, shape=(32, 32, 12), seed=4)
    assert [p.name for p in paths] == ["Phantom_000_0000.nii.gz", "Phantom_001_0000.nii.gz"]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["Phantom_000.nii.gz", "Phantom_001.nii.gz"]
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == labels
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    img = nib.load(root / "imagesTr" / "Phantom_001_0000.nii.gz")
    lab = nib.load(root / "labelsTr" / "Phantom_001.nii.gz")
    np.testing.assert_allclose(img.affine, lab.affine)
    assert set(np.unique(np.asarray(lab.dataobj))) <= set(labels.values())
    expected = phantom.generate_case(phantom.case_seed(4, 1), shape=(32, 32, 12), organ=task)
    np.testing.assert_array_equal(np.asarray(img.dataobj), expected.hu)
    # appending keeps numTraining right
    phantom.write_dataset(root, 1, layout="nnunet", task=task, shape=(32, 32, 12), seed=4, start_index=2)
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 3


def test_a_data_set_case_always_shows_its_organ():
    """LiTS and MSD cases all contain the organ: a slab-shaped acquisition drawn for a data set
    goes through it, while a case drawn for no organ may be a slab above or below it."""
    shape = (48, 48, 16)
    seeds = [phantom.case_seed(0, i) for i in range(30)]
    anywhere = [phantom.generate_case(s, shape=shape) for s in seeds]
    assert any(not c.spleen.any() for c in anywhere) and any(not c.label.any() for c in anywhere)
    for s in seeds:
        assert phantom.generate_case(s, shape=shape, organ="spleen").spleen.any(), s
        assert phantom.generate_case(s, shape=shape, organ="liver").label.any(), s


def test_cropped_field_of_view_is_the_same_scan_cut_to_the_patient():
    """crop_fov keeps a centred, non-square part of the same reconstruction: the voxels equal the
    uncropped case's, and the affine puts them at the same place in the patient."""
    cropped = [
        s
        for s in range(12)
        if phantom.generate_case(s, shape=(40, 40, 8), organ="liver", crop_fov=True).hu.shape[:2] != (40, 40)
    ]
    assert 2 <= len(cropped) <= 8, cropped  # about a third of the scans
    seed = cropped[0]
    full = phantom.generate_case(seed, shape=(40, 40, 8), organ="liver")
    cut = phantom.generate_case(seed, shape=(40, 40, 8), organ="liver", crop_fov=True)
    nx, ny = cut.hu.shape[:2]
    assert ny < nx <= 40 and cut.hu.shape[2] == 8  # wider than deep, as the body is
    i0, j0 = np.rint(np.linalg.solve(full.affine, cut.affine @ [0, 0, 0, 1])[:2]).astype(int)
    assert (i0, j0) == ((40 - nx) // 2, (40 - ny) // 2)
    for a, b in ((cut.hu, full.hu), (cut.label, full.label), (cut.spleen, full.spleen)):
        np.testing.assert_array_equal(a, b[i0 : i0 + nx, j0 : j0 + ny])
    assert phantom.generate_case(seed, shape=(40, 40, 8), organ="liver").hu.shape == (40, 40, 8)  # opt-in


def _right_kidney_touches_liver(seed: int) -> bool:
    c = phantom.generate_case(seed, shape=(100, 80, 40), spacing=(3.0, 3.0, 4.0))
    from scipy import ndimage

    tissue = c.info["tissue"]
    kidney = ndimage.binary_dilation(np.isin(tissue, (A.KCORTEX, A.KMEDULLA)), iterations=1)
    return bool((kidney & (c.label > 0))[c.hu.shape[0] // 2 :].any())  # x > 0: the patient's right


def test_kidney_meets_the_liver_without_a_fat_plane_in_thin_patients():
    """Perirenal fat grows with habitus: thin patients' right kidneys touch the liver (the boundary
    a model must learn from enhancement and shape), obese patients keep a fat plane."""
    habitus = {s: A.Anatomy(np.random.default_rng(np.random.SeedSequence(s).spawn(3)[0])).habitus for s in range(40)}
    thin = sorted(habitus, key=habitus.get)[:3]
    obese = sorted(habitus, key=habitus.get)[-3:]
    assert sum(_right_kidney_touches_liver(s) for s in thin) >= 2
    assert sum(_right_kidney_touches_liver(s) for s in obese) <= 1


def test_gallbladder_kinds_vary_and_are_never_liver():
    """Usual, distended and contracted gallbladders (a contracted one: a thick wall around a small
    lumen, enhancing almost like liver); none of it is labelled liver."""
    people = {s: A.Anatomy(np.random.default_rng(np.random.SeedSequence(s).spawn(3)[0])) for s in range(30)}
    assert {"usual", "contracted", "distended"} <= {p.gall_kind for p in people.values()}
    wall_share = {}
    for kind in ("usual", "contracted"):
        seed = next(s for s, p in people.items() if p.gall and p.gall_kind == kind)
        c = phantom.generate_case(seed, shape=(200, 160, 50), spacing=(1.5, 1.5, 3.0))
        tissue = c.info["tissue"]
        bile, wall = tissue == A.BILE, tissue == A.GIWALL
        near = np.abs(np.argwhere(bile).mean(0)[None] - np.argwhere(wall)).max(1) < 30  # the gallbladder's wall
        assert bile.any() and not (bile & (c.label > 0)).any()
        wall_share[kind] = near.sum() / (near.sum() + bile.sum())
    assert wall_share["contracted"] > wall_share["usual"] + 0.1, wall_share
