"""The reader registry: every format gives the same Volume of one phantom (HU, spacing, orientation,
the way back to the file's grid), the registry picks a reader by what it can read and refuses what
none can in one line, and a NRRD/MetaImage dataset or a DICOM series is a training case, a predict
input and an evaluation target like a NIfTI one."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers import TINY_RUN
from nibabel import orientations as ornt

from keras_unet3plus.data import phantom, readers
from keras_unet3plus.data.layouts import Case, find_cases
from keras_unet3plus.data.volume import DataError, DataFileNotFoundError, FileReader, ScanFile

sitk = pytest.importorskip("SimpleITK")

ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
SHAPE = (40, 36, 12)


def _stored(case, codes: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The phantom as a file stores it in ``codes`` order: (HU int16, label uint8, affine)."""
    t = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt(codes))
    affine = case.affine @ ornt.inv_ornt_aff(t, case.hu.shape)
    return (
        ornt.apply_orientation(case.hu, t).astype(np.int16),
        ornt.apply_orientation(case.label_for("liver"), t).astype(np.uint8),
        affine,
    )


def write_itk(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """``array`` (i, j, k) on the RAS ``affine`` as ITK stores it: LPS origin and direction, (k, j, i) data."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def _itk_dataset(nifti_root: Path, root: Path, image_suffix=".mha", label_suffix=".mha") -> Path:
    """The cases of a NIfTI dataset as ``images/`` + ``labels/`` of another format (same grids)."""
    for case in find_cases(nifti_root):
        for src, sub, suffix in ((case.image_path, "images", image_suffix), (case.label_path, "labels", label_suffix)):
            img = nib.load(str(src))
            write_itk(root / sub / f"{case.case_id}{suffix}", np.asanyarray(img.dataobj), img.affine)
    return root


# ------------------------------------------------------------------------------------------------
# every reader gives the same volume
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codes", ["LPS", "PLS", "SAR"])
@pytest.mark.parametrize("suffix", ITK_SUFFIXES)
def test_itk_formats_read_as_the_nifti_of_the_same_grid(tmp_path, suffix, codes):
    case = phantom.generate_case(3, shape=SHAPE)
    hu, label, affine = _stored(case, codes)
    nii = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), str(nii))
    path = write_itk(tmp_path / f"ct{suffix}", hu, affine)
    lab = write_itk(tmp_path / f"seg{suffix}", label, affine)
    ref, vol = readers.read_volume(nii), readers.read_volume(path)
    assert readers.reader_for(path).name == "NRRD/MetaImage" and vol.case_id == "ct"
    np.testing.assert_array_equal(vol.image, ref.image)  # HU, canonical RAS
    np.testing.assert_array_equal(vol.image, case.hu)
    np.testing.assert_allclose(vol.spacing, ref.spacing, rtol=1e-6)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(vol.original_affine, affine, atol=1e-5)
    assert nib.aff2axcodes(vol.original_affine) == tuple(codes) and vol.original_shape == hu.shape
    np.testing.assert_array_equal(vol.to_original(vol.image), hu)  # exactly back to the file's grid
    both = readers.load_case(Case("ct", path, lab), "liver")
    assert both.label.dtype == np.uint8
    np.testing.assert_array_equal(both.label, case.label_for("liver") > 0)  # lesion (2) is liver
    np.testing.assert_array_equal(both.to_original(both.label), label > 0)


def test_itk_reads_what_itk_wrote_from_the_nifti(tmp_path):
    """ITK's own NIfTI -> LPS conversion and this reader's LPS -> RAS one agree (no shared helper)."""
    case = phantom.generate_case(4, shape=SHAPE)
    hu, _, affine = _stored(case, "PLS")
    nii = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), str(nii))
    image = sitk.ReadImage(str(nii))
    for key in image.GetMetaDataKeys():  # NIfTI header items MetaImage cannot store (and warns about)
        image.EraseMetaData(key)
    for suffix in (".mha", ".nrrd"):
        sitk.WriteImage(image, str(tmp_path / f"ct{suffix}"))
        vol, ref = readers.read_volume(tmp_path / f"ct{suffix}"), readers.read_volume(nii)
        np.testing.assert_array_equal(vol.image, ref.image)
        np.testing.assert_allclose(vol.original_affine, ref.original_affine, atol=1e-4)


def test_dicom_series_reads_through_the_registry(tmp_path):
    pytest.importorskip("pydicom")
    from keras_unet3plus.data.phantom_dicom import write_dicom_series

    case = phantom.generate_case(5, shape=(48, 48, 10))
    write_dicom_series(case.hu, case.affine, tmp_path / "series", seed=5)
    assert readers.reader_for(tmp_path / "series").name == "DICOM series"
    vol = readers.read_volume(tmp_path / "series")
    assert type(vol.source).__name__ == "DicomSeries" and vol.image.shape == case.hu.shape
    assert np.abs(vol.image - case.hu).max() <= 1.0  # stored as integers
    streamed = readers.open_volume(tmp_path / "series")  # DICOM does not stream: whole, the same
    np.testing.assert_array_equal(streamed.image, vol.image)
    with pytest.raises(DataError, match="series.*not as labels"):
        readers.open_scan(tmp_path / "series").label("liver")


# ------------------------------------------------------------------------------------------------
# choosing a reader
# ------------------------------------------------------------------------------------------------


def test_the_registry_picks_by_what_it_can_read_and_refuses_the_rest(tmp_path):
    nii = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), str(nii))
    mha = write_itk(tmp_path / "b.mha", np.zeros((4, 4, 3), np.int16), np.eye(4))
    (tmp_path / "series").mkdir()
    assert [readers.reader_for(p).name for p in (nii, mha, tmp_path / "series")] == [
        "NIfTI",
        "NRRD/MetaImage",
        "DICOM series",
    ]
    assert readers.open_scan(nii).streams and not readers.open_scan(mha).streams
    notes = tmp_path / "notes.txt"
    notes.write_text("not a scan")
    with pytest.raises(DataError) as exc:
        readers.read_volume(notes)
    line = str(exc.value)
    assert "\n" not in line and line.startswith(f"{notes}: no reader")
    assert all(k in line for k in ("NIfTI", ".nii.gz", ".mha", ".nrrd", "DICOM series"))
    with pytest.raises(DataFileNotFoundError, match="nope.mha"):
        readers.read_volume(tmp_path / "nope.mha")
    assert readers.find_scan_files(tmp_path) == [nii, mha]
    assert [readers.case_name(p) for p in (nii, mha, tmp_path / "x.nhdr", tmp_path / "series")] == [
        "a",
        "b",
        "x",
        "series",
    ]


def _truncated(path: Path) -> None:
    noise = np.random.default_rng(0).integers(-1000, 1000, (16, 16, 8)).astype(np.int16)
    write_itk(path, noise, np.eye(4))
    path.write_bytes(path.read_bytes()[:-500])


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: p.write_bytes(b"ObjectType = Image\nNDims = 3\nthis is no MetaImage"),
            "not a readable NRRD/MetaImage",
        ),
        (_truncated, "truncated or corrupt"),
        (lambda p: sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.int16)), str(p)), "3-D"),
        (lambda p: write_itk(p, np.full((4, 4, 3), np.nan, np.float32), np.eye(4)), "NaN or inf"),
    ],
)
def test_bad_itk_files_are_one_line_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.mha"
    make(path)
    with pytest.raises(DataError) as exc:
        readers.read_volume(path)
    assert str(exc.value).startswith(str(path)) and message in str(exc.value) and "\n" not in str(exc.value)


def test_a_label_with_values_outside_the_task_names_its_file(tmp_path):
    image = write_itk(tmp_path / "ct.mha", np.zeros((6, 6, 4), np.int16), np.eye(4))
    label = write_itk(tmp_path / "seg.nrrd", np.full((6, 6, 4), 5, np.uint8), np.eye(4))
    with pytest.raises(DataError, match=r"seg\.nrrd.*\[5\]"):
        readers.load_case(Case("x", image, label), "liver")
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    write_itk(tmp_path / "seg.nrrd", np.zeros((6, 6, 4), np.uint8), shifted)
    with pytest.raises(DataError, match=r"seg\.nrrd.*affine"):
        readers.load_case(Case("x", image, label), "liver")


class _NpyScan(ScanFile):
    """A toy format (an .npy array, 1 mm voxels): what a new reader module holds."""

    format = "NumPy"

    def __init__(self, path: Path):
        self.array = np.load(path)
        super().__init__(path, np.eye(4), self.array.shape, name=path.name[:-4])

    def image(self, stream=False):
        return self.array.astype(np.float32)

    def label(self, task, stream=False):
        return self.array.astype(np.uint8)


def test_one_registry_line_adds_a_format(tmp_path, monkeypatch):
    monkeypatch.setattr(
        readers, "READERS", readers.READERS[:-1] + [FileReader("NumPy", (".npy",), _NpyScan)] + readers.READERS[-1:]
    )
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "c1.npy", np.ones((4, 5, 3), np.int16))
    cases = find_cases(tmp_path)
    assert [(c.case_id, c.image_path.name) for c in cases] == [("c1", "c1.npy")]
    vol = readers.load_case(cases[0], "liver")
    assert vol.image.shape == (4, 5, 3) and vol.label.sum() == 60


def test_paired_slabs_follow_the_image_whatever_order_the_label_is_stored_in(tmp_path):
    """An inferior-first NIfTI (read by descending slab) beside a MetaImage label (read whole)."""
    case = phantom.generate_case(6, shape=SHAPE)
    hu, label, affine = _stored(case, "RAI")
    nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / "ct.nii.gz"))
    write_itk(tmp_path / "seg.mha", label, affine)
    image, lab = readers.open_pair(Case("x", tmp_path / "ct.nii.gz", tmp_path / "seg.mha"))
    seen = []
    for z0, z1, a, b in readers.paired_slabs(image.image(stream=True), lab.label("liver", stream=True), 5):
        seen.append(z0)
        np.testing.assert_array_equal(a, case.hu[:, :, z0:z1])
        np.testing.assert_array_equal(b, case.label_for("liver")[:, :, z0:z1] > 0)
    assert seen == [10, 5, 0]  # the NIfTI's own (descending) order


def test_scan_identity_changes_with_any_file_of_the_scan(tmp_path):
    import os

    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "a.dcm").write_bytes(b"x")
    mhd = write_itk(tmp_path / "ct.mhd", np.zeros((4, 4, 3), np.int16), np.eye(4))
    before = [readers.scan_identity(tmp_path / "series"), readers.scan_identity(mhd)]
    for data in (tmp_path / "series" / "a.dcm", next(tmp_path.glob("ct.*raw"))):
        st = os.stat(data)
        os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = [readers.scan_identity(tmp_path / "series"), readers.scan_identity(mhd)]
    assert before[0] != after[0] and before[1] != after[1]


# ------------------------------------------------------------------------------------------------
# an .mha dataset through the cache, the pipeline, the trainer, predict and evaluation
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mha_lits(phantom_lits, tmp_path_factory) -> Path:
    """The LiTS phantom (RAS, LPS, PLS, LAS) as images/*.mha + labels/*.nrrd."""
    return _itk_dataset(phantom_lits, tmp_path_factory.mktemp("mha"), ".mha", ".nrrd")


def test_cache_and_stream_of_an_mha_dataset_equal_the_nifti_ones(phantom_lits, mha_lits, tmp_path):
    from keras_unet3plus.data import PreprocessConfig, build_dataset
    from keras_unet3plus.data.cache import SliceCache

    cfg = PreprocessConfig(image_size=32)
    nifti, mha = find_cases(phantom_lits), find_cases(mha_lits)
    assert [c.case_id for c in mha] == [c.case_id for c in nifti] and mha[0].image_path.suffix == ".mha"
    for a, b in zip(nifti, mha):
        ea = SliceCache(tmp_path / "a", "liver", cfg).build(a)
        eb = SliceCache(tmp_path / "b", "liver", cfg).build(b)
        assert ea.index.positives == eb.index.positives and ea.index.positives
        for x, y in zip(ea.load(), eb.load()):
            np.testing.assert_array_equal(x, y)
    # streamed (no cache): the same batches
    batches = [
        list(build_dataset(cases, "liver", cfg, batch_size=4, training=False, negative_fraction=0.2)[0])
        for cases in (nifti[:2], mha[:2])
    ]
    assert len(batches[0]) == len(batches[1]) > 0
    for (xa, ya), (xb, yb) in zip(*batches):
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())


def test_check_data_reads_an_mha_dataset_and_names_a_bad_file(mha_lits, tmp_path):
    from keras_unet3plus.data.checks import check_dataset

    assert [p for p in check_dataset(mha_lits, task="liver", workers=2) if p.severity == "error"] == []
    root = tmp_path / "bad"
    shutil.copytree(mha_lits, root)
    (root / "labels" / "volume-1.nrrd").write_bytes(b"NRRD0004\nbroken")
    problems = check_dataset(root, task="liver", workers=2)
    assert [Path(p.file).name for p in problems] == ["volume-1.nrrd"], problems
    assert "not a readable NRRD/MetaImage" in problems[0].problem


def test_train_and_predict_on_an_mha_dataset(mha_lits, tmp_path, capsys):
    from keras_unet3plus import cli
    from keras_unet3plus.modelinfo import load_info

    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(mha_lits), "--out-dir", str(out), *TINY_RUN]) == 0
    assert load_info(out / "model.keras").task == "liver"
    split = json.loads((out / "split.json").read_text())
    assert sum(len(v) for v in split.values() if isinstance(v, list)) == 4 and split["val"]  # validated on .mha
    scan = mha_lits / "images" / "volume-2.mha"  # stored PLS
    mask = tmp_path / "mask.nii.gz"
    assert cli.main(["predict", str(out / "model.keras"), str(scan), "-o", str(mask), "--quiet"]) == 0
    written, source = nib.load(str(mask)), readers.open_scan(scan)
    assert written.shape == source.original_shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, source.original_affine, atol=1e-4)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}


def test_evaluation_scores_mha_predictions_against_nrrd_labels(tmp_path):
    from keras_unet3plus.evaluation import evaluate_folders

    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    cube = np.zeros((24, 20, 16), np.uint8)
    cube[4:14, 4:14, 4:14] = 1
    half = cube.copy()
    half[:, :, 9:] = 0
    write_itk(tmp_path / "gt" / "spleen_1.nrrd", cube, affine)
    write_itk(tmp_path / "pred" / "spleen_1.mha", half, affine)
    write_itk(tmp_path / "gt" / "spleen_2.nrrd", cube, affine)
    write_itk(tmp_path / "pred" / "spleen_2.mha", cube[:, :, :15], affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", "spleen", tmp_path / "eval")
    ok, bad = report.cases
    assert ok.metrics["spleen"]["dice"] == pytest.approx(1000 / 1500)
    assert ok.metrics["spleen"]["mssd"] == pytest.approx(5 * 2.5)  # the label's spacing
    assert not bad.ok and "spleen_2.mha" in bad.error and "(24, 20, 15)" in bad.error


# ------------------------------------------------------------------------------------------------
# a DICOM series as a training and evaluation case
# ------------------------------------------------------------------------------------------------


def test_a_dicom_series_with_a_nifti_label_is_a_training_case(tmp_path):
    pytest.importorskip("pydicom")
    from keras_unet3plus.data import PreprocessConfig, build_dataset
    from keras_unet3plus.data.checks import check_dataset
    from keras_unet3plus.data.phantom_dicom import write_dicom_series
    from keras_unet3plus.evaluation import evaluate_pair

    root = tmp_path / "data"
    (root / "labels").mkdir(parents=True)
    for seed in (1, 2):
        case = phantom.generate_case(seed, shape=(48, 48, 10))
        write_dicom_series(case.hu, case.affine, root / "images" / f"ct{seed}", seed=seed)
        series = readers.read_volume(root / "images" / f"ct{seed}")
        nib.save(series.to_nifti(case.label_for("liver")), str(root / "labels" / f"ct{seed}.nii.gz"))
    cases = find_cases(root)
    assert [(c.case_id, c.image_path.is_dir(), c.label_path.name) for c in cases] == [
        ("ct1", True, "ct1.nii.gz"),
        ("ct2", True, "ct2.nii.gz"),
    ]
    assert check_dataset(root, task="liver", workers=1) == []
    vol = readers.load_case(cases[0], "liver")
    np.testing.assert_array_equal(vol.label, phantom.generate_case(1, shape=(48, 48, 10)).label_for("liver") > 0)
    ds, info = build_dataset(
        cases, "liver", PreprocessConfig(image_size=32), batch_size=2, training=False, negative_fraction=None
    )
    assert info.n_positive > 0 and sum(int(x.shape[0]) for x, _ in ds) == 20
    # and an evaluation target: the label scored against itself, the series as the overlay's CT
    result = evaluate_pair(
        cases[0].label_path,
        cases[0].label_path,
        "liver",
        image_path=cases[0].image_path,
        overlay_dir=tmp_path / "ov",
        overlay_slices=2,
    )
    assert result.metrics["liver"]["dice"] == 1.0 and result.overlay.is_file()
