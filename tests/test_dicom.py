"""DICOM CT series reader: geometry round trips, the errors of broken series, and a real CT."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from keras_unet3plus.data.dicom import DicomSeries, find_dicom_series, read_dicom_series  # noqa: E402
from keras_unet3plus.data.phantom import generate_case  # noqa: E402
from keras_unet3plus.data.phantom_dicom import ORIENTATIONS, write_dicom_series  # noqa: E402
from keras_unet3plus.data.volume import DataError, DataFileNotFoundError  # noqa: E402

REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"
SHAPE = (40, 32, 12)  # non-square in-plane, so a row/column swap cannot go unnoticed


@pytest.fixture(scope="module")
def case():
    """A phantom on an anisotropic, off-centre RAS grid (x 0.7 mm, y 0.9 mm, z 2 mm)."""
    c = generate_case(4, shape=SHAPE)
    affine = np.diag([0.7, 0.9, 2.0, 1.0])
    affine[:3, 3] = [-13.3, 40.2, -512.5]
    return np.asarray(c.hu), affine


def _write(case, folder: Path, **kw) -> list[Path]:
    hu, affine = case
    return write_dicom_series(hu, affine, folder, **kw)


def _world_from_dicom(ds, row: int, col: int) -> np.ndarray:
    """RAS mm of pixel (row, col) by the DICOM definition, independent of the reader's affine."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    lps = ipp + col * col_spacing * iop[:3] + row * row_spacing * iop[3:]
    return lps * np.array([-1.0, -1.0, 1.0])


def _message(exc_info) -> str:
    return str(exc_info.value)


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_round_trip_gives_source_grid_and_hu(case, tmp_path, orientation):
    hu, affine = case
    files = _write(case, tmp_path, orientation=orientation, shuffle_names=True, seed=3)
    assert all(p.suffix == "" for p in files)  # random names without extension
    vol = read_dicom_series(tmp_path)
    assert vol.shape == SHAPE
    np.testing.assert_array_equal(vol.image, hu.astype(np.float32))
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.9, 2.0), atol=1e-6)
    assert vol.image.dtype == np.float32 and vol.label is None
    # the (column, row, slice) grid: to_original gives back the stored slices pixel for pixel
    series: DicomSeries = vol.source
    original = vol.to_original(vol.image)
    assert (
        original.shape
        == vol.original_shape
        == (int(series.headers[0].Columns), int(series.headers[0].Rows), len(series))
    )
    rng = np.random.default_rng(0)
    for _ in range(5):
        k = int(rng.integers(len(series)))
        ds = pydicom.dcmread(series.files[k])
        hu_slice = ds.pixel_array.astype(np.float32) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(original[:, :, k], hu_slice.T)
        # world coordinates of a pixel: DICOM's definition == the reader's original affine
        r, c = int(rng.integers(ds.Rows)), int(rng.integers(ds.Columns))
        np.testing.assert_allclose(vol.original_affine @ [c, r, k, 1], [*_world_from_dicom(ds, r, c), 1], atol=1e-4)


def test_signed_pixels_and_ordered_names(case, tmp_path):
    hu, affine = case
    files = _write(case, tmp_path, signed=True, shuffle_names=False)
    assert files[0].name == "IM00001.dcm"
    vol = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol.image, hu.astype(np.float32))


def test_slice_order_ignores_file_names_and_instance_numbers(case, tmp_path):
    hu, _ = case
    files = _write(case, tmp_path, shuffle_names=False)
    # scramble InstanceNumber and give files names in reverse order of position
    rng = np.random.default_rng(1)
    for path, number in zip(files, rng.permutation(len(files))):
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = int(number) + 1
        ds.save_as(path.parent / f"z{len(files) - int(path.stem[2:]):03d}", enforce_file_format=True)
        path.unlink()
    vol = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol.image, hu.astype(np.float32))


def test_slice_spacing_comes_from_positions_not_thickness(case, tmp_path):
    files = _write(case, tmp_path)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SliceThickness = "5"
        ds.save_as(path, enforce_file_format=True)
    assert read_dicom_series(tmp_path).spacing[2] == pytest.approx(2.0)


def test_stripped_uids_are_filled_in_deterministically(case, tmp_path):
    """Anonymised exports (like the real CT here) empty the dataset's UIDs; the file meta keeps some."""
    files = _write(case, tmp_path)
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            setattr(ds, keyword, "")
        ds.SeriesNumber = None
        ds.save_as(path, enforce_file_format=False)
    first, second = find_dicom_series(tmp_path), find_dicom_series(tmp_path)
    assert len(first) == 1 and first[0].uid == second[0].uid and first[0].uid
    assert any("no SeriesInstanceUID" in note for note in first[0].notes)
    vol = read_dicom_series(first[0])
    metas = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for p in files}
    assert set(vol.source.sop_instance_uids) == metas


# --------------------------------------------------------------------------------------------
# finding series
# --------------------------------------------------------------------------------------------


def test_two_series_in_one_folder(case, tmp_path):
    _write(case, tmp_path, series_number=2, series_description="Abdomen 2.0 / venous*")
    _write(
        case,
        tmp_path,
        series_number=3,
        series_description="Abdomen 2.0 / venous*",
        orientation="axial_flipped_rows",
        seed=1,
    )
    found = find_dicom_series(tmp_path)
    assert [s.name for s in found] == ["002_Abdomen_2.0_venous", "003_Abdomen_2.0_venous"]
    assert all(len(s) == SHAPE[2] for s in found)
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    assert str(tmp_path) in _message(err) and "2 CT series" in _message(err)
    assert "002_Abdomen_2.0_venous" in _message(err) and "003_Abdomen_2.0_venous" in _message(err)
    for series in found:  # each reads on its own
        assert read_dicom_series(series).shape == SHAPE


def test_series_names_are_unique_and_fall_back_to_the_uid(case, tmp_path):
    _write(case, tmp_path / "a", series_number=1, series_description="CT")
    _write(case, tmp_path / "b", series_number=1, series_description="CT", seed=2)
    _write(case, tmp_path / "c", series_number=None, series_description="", seed=3, series_uid="1.2.3.4")
    names = sorted(s.name for s in find_dicom_series(tmp_path))  # recursive
    assert names == ["001_CT", "001_CT_2", "1.2.3.4"]


def test_non_dicom_files_are_ignored_with_a_note(case, tmp_path):
    hu, _ = case
    _write(case, tmp_path)
    (tmp_path / "README.txt").write_text("exported by the PACS\n")
    (tmp_path / "NOTES").write_text("no extension, not DICOM either\n" * 20)
    (tmp_path / "fake.dcm").write_bytes(b"\x00" * 50)
    (tmp_path / "thumb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "DICOMDIR.txt").write_text("x")
    found = find_dicom_series(tmp_path)
    assert len(found) == 1
    for name in ("README.txt", "NOTES", "fake.dcm", "thumb.png", "DICOMDIR.txt"):
        assert any(name in note and "not a DICOM file" in note for note in found.skipped), name
    np.testing.assert_array_equal(read_dicom_series(tmp_path).image, hu.astype(np.float32))


def test_localizer_series_is_skipped(case, tmp_path):
    _write(case, tmp_path, series_number=1)
    scout = _write(case, tmp_path / "scout", series_number=9, series_description="Topogram", seed=5)
    for path in scout:
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(path, enforce_file_format=True)
    found = find_dicom_series(tmp_path)
    assert [s.series_number for s in found] == [1]
    assert any("localizer" in note for note in found.skipped)


def test_enhanced_ct_is_reported_as_not_supported(case, tmp_path):
    files = _write(case, tmp_path)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
        ds.save_as(path, enforce_file_format=True)
    found = find_dicom_series(tmp_path)
    assert not found and "Enhanced CT" in found.skipped[0] and "not supported" in found.skipped[0]
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    assert str(tmp_path) in _message(err) and "Enhanced CT" in _message(err)


def test_folder_with_only_a_seg_is_not_a_ct_series(case, tmp_path):
    pytest.importorskip("highdicom")
    from keras_unet3plus.data.dicom_seg import write_dicom_seg

    _write(case, tmp_path / "ct")
    vol = read_dicom_series(tmp_path / "ct")
    write_dicom_seg(vol, (vol.image > 0).astype(np.uint8), tmp_path / "seg" / "liver.dcm", "liver")
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path / "seg")
    msg = _message(err)
    assert str(tmp_path / "seg") in msg and "no CT image series" in msg
    assert "Segmentation Storage" in msg and "not a CT image series" in msg


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    assert str(tmp_path) in _message(err) and "no CT image series found" in _message(err)
    with pytest.raises(DataFileNotFoundError):
        read_dicom_series(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="not a DICOM file"):
        read_dicom_series(tmp_path)
    with pytest.raises(DataError, match="expected a folder"):
        read_dicom_series(tmp_path / "a.txt")


# --------------------------------------------------------------------------------------------
# broken series
# --------------------------------------------------------------------------------------------


def _edit(path: Path, **attributes) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def test_missing_slice(case, tmp_path):
    _write(case, tmp_path, drop_slice=5)
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    msg = _message(err)
    assert str(tmp_path) in msg and "missing slice" in msg and "4.000 mm" in msg and "2.000 mm" in msg


def _copy_of_slice_4(case, folder: Path) -> None:
    """A second file at slice 4's position (a new SOP instance), named ``copy_of_slice_4``."""
    files = _write(case, folder)
    ds = pydicom.dcmread(files[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "copy_of_slice_4", enforce_file_format=True)


def _slice_3_two_rows_short(case, folder: Path) -> None:
    """Slice 3 (``IM00003.dcm``) two rows shorter than the others."""
    files = _write(case, folder, shuffle_names=False)
    ds = pydicom.dcmread(files[2])
    small = ds.pixel_array[:-2]
    ds.Rows = small.shape[0]
    ds.PixelData = small.tobytes()
    ds.save_as(files[2], enforce_file_format=True)


@pytest.mark.parametrize(
    "damage, problem, culprit",
    [
        (_copy_of_slice_4, "duplicate slice position", "copy_of_slice_4"),
        (_slice_3_two_rows_short, "mixes image sizes", "IM00003.dcm"),
    ],
    ids=["duplicate_position", "mixed_image_sizes"],
)
def test_damaged_slice_is_named(case, tmp_path, damage, problem, culprit):
    """One bad file in a series: the error names the folder, the problem and the file."""
    damage(case, tmp_path)
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    msg = _message(err)
    assert str(tmp_path) in msg and problem in msg and culprit in msg


def test_non_uniform_spacing(case, tmp_path):
    files = _write(case, tmp_path, shuffle_names=False)
    ds = pydicom.dcmread(files[4])
    ipp = [float(v) for v in ds.ImagePositionPatient]
    _edit(files[4], ImagePositionPatient=[ipp[0], ipp[1], ipp[2] + 0.7])
    with pytest.raises(DataError, match="non-uniform slice spacing"):
        read_dicom_series(tmp_path)


def test_mixed_orientations(case, tmp_path):
    files = _write(case, tmp_path, shuffle_names=False)
    _edit(files[6], ImageOrientationPatient=[1, 0, 0, 0, 0.9950042, -0.0998334])
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    assert "mixes image orientations" in _message(err) and "IM00007.dcm" in _message(err)


def test_gantry_tilt(case, tmp_path):
    _write(case, tmp_path, gantry_tilt_deg=12.0)
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    msg = _message(err)
    assert str(tmp_path) in msg and "gantry tilt" in msg and "12.0 degrees" in msg


def test_single_slice(case, tmp_path):
    files = _write(case, tmp_path)
    for path in files[1:]:
        path.unlink()
    with pytest.raises(DataError, match="single-slice series"):
        read_dicom_series(tmp_path)


def test_invalid_rescale_slope(case, tmp_path):
    files = _write(case, tmp_path, shuffle_names=False)
    _edit(files[0], RescaleSlope="0")
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    assert "IM00001.dcm" in _message(err) and "RescaleSlope" in _message(err)


def test_missing_position(case, tmp_path):
    files = _write(case, tmp_path, shuffle_names=False)
    ds = pydicom.dcmread(files[1])
    del ds.ImagePositionPatient
    ds.save_as(files[1], enforce_file_format=True)
    with pytest.raises(DataError, match=r"IM00002\.dcm: missing or invalid ImagePositionPatient"):
        read_dicom_series(tmp_path)


def test_without_the_extra_the_package_imports_and_the_error_names_pip_install(tmp_path):
    # (nibabel imports pydicom itself when it is installed, so block it rather than look for it)
    code = (
        "import sys; sys.modules['pydicom'] = sys.modules['highdicom'] = None\n"
        "import keras_unet3plus.data as d\n"
        "from keras_unet3plus.data import dicom_seg, phantom_dicom\n"
        "try:\n    d.read_dicom_series(sys.argv[1])\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'keras-unet3plus[dicom]'" in out.stdout


# --------------------------------------------------------------------------------------------
# the real CT
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_ct():
    if not (REALCT / "series").is_dir() or not (REALCT / "reference_labels.nii.gz").is_file():
        pytest.skip(f"real CT not found at {REALCT} (only in checkouts beside ../shared)")
    start = time.perf_counter()
    vol = read_dicom_series(REALCT / "series")
    seconds = time.perf_counter() - start
    print(f"\nreal CT series read: {seconds:.2f} s for {vol.shape}")
    return vol


def test_real_ct_matches_the_dcm2niix_grid_and_has_plausible_hu(real_ct):
    from keras_unet3plus.data.nifti import load_image

    reference = load_image(REALCT / "reference_labels.nii.gz")
    assert real_ct.shape == reference.shape == (512, 512, 20)
    np.testing.assert_allclose(real_ct.affine, reference.affine, atol=1e-3)  # same world coordinates
    np.testing.assert_allclose(real_ct.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-6)
    corners = real_ct.image[[0, 0, -1, -1], [0, -1, 0, -1], :]
    assert np.median(corners) < -900  # air outside the body
    liver = reference.image == 5
    assert liver.sum() > 1000
    assert 40 < float(np.median(real_ct.image[liver])) < 150
    assert real_ct.source.description == "CT Body 3.0" and len(real_ct.source) == 20
