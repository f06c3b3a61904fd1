"""DICOM as hospitals send it: compressed transfer syntaxes, dose reports and secondary captures
beside the CT, padding outside the field of view, per-slice rescale, a series over two folders,
a DICOMDIR. Each reads to the right HU and grid, or is skipped with a note, or fails naming a file.

Series are tiny (40 x 32 pixels, 5 slices) and made of a synthetic HU volume, not the phantom, so
every stored value, padding and bit depth is under the test's control.
"""

from __future__ import annotations

import runpy
import shutil
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from keras_unet3plus.data.dicom import PADDING_HU, find_dicom_series, read_dicom_series  # noqa: E402
from keras_unet3plus.data.phantom_dicom import TRANSFER_SYNTAXES, write_dicom_series  # noqa: E402
from keras_unet3plus.data.volume import DataError  # noqa: E402

SHAPE = (40, 32, 5)
AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.7, 0, 20.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def hu() -> np.ndarray:
    """HU from -2000 (below what unsigned 12-bit data stores) to 3000, integer, with a smooth part
    (what compresses) and noise (what does not)."""
    rng = np.random.default_rng(7)
    x, y, z = np.indices(SHAPE)
    smooth = 40.0 * x - 30.0 * y + 100.0 * z - 900.0
    return np.clip(np.rint(smooth + rng.normal(0, 150, SHAPE)), -2000, 3000).astype(np.float32)


def _expected(hu: np.ndarray, signed: bool) -> np.ndarray:
    """What the series stores: unsigned 12-bit pixels with intercept -1024 hold -1024..3071 HU."""
    return hu if signed else np.clip(hu, -1024, 3071)


def _edit(path: Path, **attributes) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


# --------------------------------------------------------------------------------------------
# compressed pixel data: every syntax the [dicom] extra promises, unsigned and signed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize(
    "syntax",
    [ts for ts in TRANSFER_SYNTAXES if ts != "1.2.840.10008.1.2.1"],
    ids=lambda ts: pydicom.uid.UID(ts).keyword or ts,
)
def test_compressed_series_reads_the_same_hu(hu, tmp_path, syntax, signed):
    files = write_dicom_series(hu, AFFINE, tmp_path, transfer_syntax=syntax, signed=signed)
    assert pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    vol = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol.image, _expected(hu, signed))
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    if signed:
        assert vol.image.min() < -1024  # negative stored values went through the codec


def test_without_a_decoder_the_error_names_the_extra_and_never_a_gpl_package(hu, tmp_path, monkeypatch):
    """As pydicom reports it where python-gdcm is missing: only pylibjpeg-libjpeg (GPL-3) could
    decode JPEG Lossless; the hint names the extra, which brings python-gdcm."""
    import pydicom.pixels

    files = write_dicom_series(hu, AFFINE, tmp_path, transfer_syntax="1.2.840.10008.1.2.4.70", shuffle_names=False)
    missing = SimpleNamespace(
        is_available=False,
        missing_dependencies=[
            "gdcm - requires gdcm>=3.0.10",
            "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1",
        ],
    )
    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: missing)
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(files[0])) and "JPEG Lossless" in msg
    assert 'pip install "keras-unet3plus[dicom]"' in msg and "python-gdcm" in msg and "libjpeg" not in msg


def test_a_syntax_outside_the_extra_names_its_permissive_decoder(hu, tmp_path):
    """High-Throughput JPEG 2000 has no decoder here; the error names the MIT-licensed one."""
    from pydicom.encaps import encapsulate

    files = write_dicom_series(hu, AFFINE, tmp_path, shuffle_names=False)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51"])  # never decoded: the check comes first
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    msg = str(err.value)
    assert "IM00001.dcm" in msg and "High-Throughput JPEG 2000" in msg
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in msg


def test_the_dicom_extra_brings_permissive_decoders_only(monkeypatch):
    """setup.py: python-gdcm in [dicom] (so in [dev] and [all]); no GPL decoder in any extra."""
    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "setup.py"))
    extras = captured["extras_require"]
    for name in ("dicom", "dev", "all"):
        assert any(r.startswith("python-gdcm") for r in extras[name]), name
    named = " ".join(r for reqs in extras.values() for r in reqs)
    assert "libjpeg" not in named and "gpl" not in named.lower()
    gdcm_licence = metadata.metadata("python-gdcm")
    text = " ".join(
        filter(
            None,
            [
                gdcm_licence.get("License-Expression"),
                gdcm_licence.get("License"),
                *gdcm_licence.get_all("Classifier", []),
            ],
        )
    )
    assert "Apache" in text or "BSD" in text, text
    assert "GPL" not in text


# --------------------------------------------------------------------------------------------
# messy folders
# --------------------------------------------------------------------------------------------


def _dose_report_sr(path: Path) -> None:
    """An X-Ray Radiation Dose SR, as CT scanners send beside the images (no pixel data)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.67"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "SR", generate_uid(), 997
    ds.SeriesDescription = "Dose Report"
    ds.save_as(path, enforce_file_format=True)


def test_dose_reports_and_secondary_captures_beside_the_ct_are_left_out(hu, tmp_path):
    ct = write_dicom_series(hu, AFFINE, tmp_path / "ct", series_number=2)
    # a dose screen as a Secondary Capture series
    for path in write_dicom_series(hu[:, :, :1], AFFINE, tmp_path / "sc", series_number=998, seed=1):
        _edit(path, SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    # an X-Ray Radiation Dose SR
    _dose_report_sr(tmp_path / "sr.dcm")
    # a CT-class "patient protocol" series: DERIVED\SECONDARY, another size, no position
    protocol = write_dicom_series(np.zeros((24, 16, 2)), AFFINE, tmp_path / "protocol", series_number=999, seed=2)
    for path in protocol:
        _edit(
            path, ImageType=["DERIVED", "SECONDARY", "OTHER"], ImagePositionPatient=None, ImageOrientationPatient=None
        )
    # a dose screen inside the CT series itself: same series UID, DERIVED\SECONDARY, another size
    uid = pydicom.dcmread(ct[0]).SeriesInstanceUID
    extra = write_dicom_series(np.zeros((24, 16, 2)), AFFINE, tmp_path / "ct_extra", series_uid=uid, seed=3)
    _edit(extra[0], ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"])
    extra[1].unlink()

    found = find_dicom_series(tmp_path)
    assert [len(s) for s in found] == [SHAPE[2]]
    skipped = " | ".join(found.skipped)
    assert "Secondary Capture Image Storage" in skipped and "Radiation Dose" in skipped
    assert "2 secondary image(s) without a position" in skipped
    assert any("1 secondary (derived) image(s) beside the primary slices" in n for n in found[0].notes)
    vol = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(vol.image, _expected(hu, False))


def test_a_reformatted_secondary_series_is_still_a_volume(hu, tmp_path):
    """DERIVED\\SECONDARY alone does not make a dose screen: an MPR series with positions reads."""
    for path in write_dicom_series(hu, AFFINE, tmp_path):
        _edit(path, ImageType=["DERIVED", "SECONDARY", "MPR"])
    np.testing.assert_array_equal(read_dicom_series(tmp_path).image, _expected(hu, False))


def test_localizer_in_the_ct_series_is_left_out_with_a_note(hu, tmp_path):
    ct = write_dicom_series(hu, AFFINE, tmp_path / "ct")
    uid = pydicom.dcmread(ct[0]).SeriesInstanceUID
    # a coronal topogram of another size in the same series, as some scanners file it
    scout = write_dicom_series(
        np.zeros((64, 1, 48)),
        np.diag([2.0, 2.0, 2.0, 1]),
        tmp_path / "scout",
        series_uid=uid,
        orientation="coronal",
        seed=4,
    )
    assert len(scout) == 1
    _edit(scout[0], ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    found = find_dicom_series(tmp_path)
    assert len(found) == 1 and len(found[0]) == SHAPE[2]
    assert any("1 localizer (scout) image(s) left out" in n for n in found[0].notes)
    np.testing.assert_array_equal(read_dicom_series(tmp_path).image, _expected(hu, False))


def test_missing_slice_thickness_reads_with_the_spacing_of_the_positions(hu, tmp_path):
    for path in write_dicom_series(hu, AFFINE, tmp_path):
        _edit(path, SliceThickness=None)
    vol = read_dicom_series(tmp_path)
    np.testing.assert_allclose(vol.spacing, (0.8, 0.7, 2.5), atol=1e-6)
    np.testing.assert_array_equal(vol.image, _expected(hu, False))


@pytest.mark.parametrize(
    "signed, padding, range_limit",
    [
        (False, 65535, None),  # beyond 12 BitsStored: pydicom would make it 4095 = 3071 HU, bright bone
        (False, 4095, None),  # the top of the 12-bit range
        (True, -2000, None),  # GE style: -2000 + intercept = -3024 HU
        (True, -2500, (-3000, -2000)),  # PixelPaddingValue .. PixelPaddingRangeLimit
    ],
    ids=["unsigned_65535", "unsigned_4095", "signed_-2000", "signed_range"],
)
def test_padded_pixels_become_air(hu, tmp_path, signed, padding, range_limit):
    outside = np.zeros(SHAPE, dtype=bool)
    outside[:6], outside[:, -5:] = True, True  # the corners of a round field of view, roughly
    data = np.where(outside, np.nan, np.clip(hu, -1000, 3000))  # no real voxel is a padding value
    files = write_dicom_series(data, AFFINE, tmp_path, signed=signed, padding_value=padding)
    if range_limit is not None:
        for path in files:
            ds = pydicom.dcmread(path)
            ds.add_new("PixelPaddingValue", "SS", range_limit[0])
            ds.add_new("PixelPaddingRangeLimit", "SS", range_limit[1])
            ds.save_as(path, enforce_file_format=True)
    vol = read_dicom_series(tmp_path)
    assert (vol.image[outside] == PADDING_HU).all()
    np.testing.assert_array_equal(vol.image[~outside], data[~outside])
    assert vol.image.max() <= 3000


def test_rescale_intercept_that_changes_from_slice_to_slice(hu, tmp_path):
    files = write_dicom_series(hu, AFFINE, tmp_path, signed=True, shuffle_names=False)
    for k in (1, 3):  # these slices store HU - (-1000) instead of HU - (-1024)
        ds = pydicom.dcmread(files[k])
        ds.PixelData = (ds.pixel_array.astype(np.int16) - 24).tobytes()
        ds.RescaleIntercept = "-1000"
        ds.save_as(files[k], enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom_series(tmp_path).image, hu)


def test_series_split_over_two_folders(hu, tmp_path):
    files = write_dicom_series(hu, AFFINE, tmp_path / "export" / "part1", shuffle_names=False)
    (tmp_path / "export" / "part2").mkdir()
    for path in files[1::2]:
        shutil.move(path, tmp_path / "export" / "part2" / path.name)
    vol = read_dicom_series(tmp_path / "export")
    np.testing.assert_array_equal(vol.image, _expected(hu, False))
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    assert {p.parent.name for p in vol.source.files} == {"part1", "part2"}


def test_series_split_over_two_folders_names_the_sub_folder_in_errors(hu, tmp_path):
    files = write_dicom_series(hu, AFFINE, tmp_path / "a", shuffle_names=False)
    shutil.copy(files[2], tmp_path / "b.dcm")  # a second copy: the same position twice
    _edit(tmp_path / "b.dcm", SOPInstanceUID=pydicom.uid.generate_uid())
    with pytest.raises(DataError) as err:
        read_dicom_series(tmp_path)
    msg = str(err.value)
    assert "duplicate slice position" in msg and "a/IM00003.dcm" in msg and "b.dcm" in msg


def test_dicomdir_at_the_root_is_skipped_with_a_note(hu, tmp_path):
    from pydicom.fileset import FileSet

    fileset = FileSet()
    for path in write_dicom_series(hu, AFFINE, tmp_path / "src", transfer_syntax="1.2.840.10008.1.2.4.70"):
        fileset.add(path)
    fileset.write(tmp_path / "cd")  # DICOMDIR + PT000000/ST000000/SE000000/IM00000n, as on a disc
    found = find_dicom_series(tmp_path / "cd")
    assert len(found) == 1 and len(found[0]) == SHAPE[2]
    assert found.skipped == [
        f"{tmp_path / 'cd' / 'DICOMDIR'}: a DICOMDIR index (the table of contents of a "
        "disc or export), skipped; the images it lists are found by searching the folder"
    ]
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "cd").image, _expected(hu, False))
    with pytest.raises(DataError, match="got a file; give the folder it is in"):
        read_dicom_series(tmp_path / "cd" / "DICOMDIR")
