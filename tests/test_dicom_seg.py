"""DICOM SEG writer: references to the source series, coded segments, voxel-exact read back."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from keras_unet3plus.data.dicom import read_dicom_series  # noqa: E402
from keras_unet3plus.data.dicom_seg import read_dicom_seg_labels, write_dicom_seg  # noqa: E402
from keras_unet3plus.data.nifti import load_image  # noqa: E402
from keras_unet3plus.data.phantom import generate_case  # noqa: E402
from keras_unet3plus.data.phantom_dicom import write_dicom_series  # noqa: E402
from keras_unet3plus.data.volume import DataError  # noqa: E402

REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"
SHAPE = (64, 56, 20)


@pytest.fixture(scope="module")
def phantom():
    """A phantom with liver and spleen, and a liver + tumour label map (0/1/2).

    Only ``.hu``, ``.affine`` and ``.label_for`` of the phantom are relied on: the first seed whose
    liver and spleen are both visible is used, and a tumour is carved into the liver if the case
    has none, so the test does not depend on the phantom's anatomy details.
    """
    for seed in range(20):
        case = generate_case(seed, shape=SHAPE)
        liver = np.asarray(case.label_for("liver")) > 0
        if liver.sum() > 500 and np.asarray(case.label_for("spleen")).sum() > 50:
            break
    else:
        pytest.fail("no phantom seed in 0..19 shows both liver and spleen")
    labels = liver.astype(np.uint8)
    labels[np.asarray(case.label_for("liver_tumour")) == 2] = 2
    if not (labels == 2).any():
        centre = np.argwhere(liver)[liver.sum() // 2]
        ball = (np.indices(SHAPE) - centre[:, None, None, None]) ** 2
        labels[(ball.sum(axis=0) <= 4) & liver] = 2
    assert set(np.unique(labels)) == {0, 1, 2}
    return case, labels


@pytest.fixture(scope="module", params=["axial", "axial_flipped_rows", "sagittal"])
def series(request, phantom, tmp_path_factory):
    """A phantom written as a DICOM series in one orientation, and its Volume."""
    case, _ = phantom
    folder = tmp_path_factory.mktemp(f"ct_{request.param}")
    write_dicom_series(case.hu, case.affine, folder, orientation=request.param)
    return read_dicom_series(folder)


def _code(item) -> tuple[str, str]:
    return str(item.CodeValue), str(item.CodingSchemeDesignator)


def test_liver_seg_references_the_source_and_reads_back(series, phantom, tmp_path):
    _, labels = phantom
    liver = (labels > 0).astype(np.uint8)
    path = write_dicom_seg(series, liver, tmp_path / "liver.dcm", "liver", algorithm_version="9.9")
    assert [p.name for p in tmp_path.iterdir()] == ["liver.dcm"]  # atomic: no temporary left
    np.testing.assert_array_equal(read_dicom_seg_labels(path, series), liver)

    ds = pydicom.dcmread(path)
    source = series.source.headers[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series.source.uid
    referenced = {item.ReferencedSOPInstanceUID for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= set(series.source.sop_instance_uids)
    # empty frames are left out: one frame per source slice that holds liver
    assert ds.NumberOfFrames == int(series.to_original(liver).any(axis=(0, 1)).sum())
    segment = ds.SegmentSequence[0]
    assert segment.SegmentLabel == "Liver" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert _code(segment.SegmentedPropertyTypeCodeSequence[0]) == ("10200004", "SCT")
    assert _code(segment.SegmentedPropertyCategoryCodeSequence[0]) == ("91723000", "SCT")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "keras-unet3plus" and algorithm.AlgorithmVersion == "9.9"
    assert _code(algorithm.AlgorithmFamilyCodeSequence[0]) == ("123110", "DCM")  # Artificial Intelligence
    # each frame is tied to the source slice it was derived from
    frame = ds.PerFrameFunctionalGroupsSequence[0]
    derived = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    assert derived in series.source.sop_instance_uids


def test_liver_and_tumour_seg(series, phantom, tmp_path):
    _, labels = phantom
    path = write_dicom_seg(series, labels, tmp_path / "lt.dcm", "liver_tumour")
    np.testing.assert_array_equal(read_dicom_seg_labels(path, series), labels)
    tumour = pydicom.dcmread(path).SegmentSequence[1]
    assert tumour.SegmentNumber == 2 and tumour.SegmentLabel == "Liver tumour"
    assert _code(tumour.SegmentedPropertyCategoryCodeSequence[0]) == ("49755003", "SCT")
    assert _code(tumour.SegmentedPropertyTypeCodeSequence[0]) == ("108369006", "SCT")
    assert _code(tumour.AnatomicRegionSequence[0]) == ("10200004", "SCT")


def test_absent_class_and_empty_mask_give_valid_segs(series, phantom, tmp_path):
    _, labels = phantom
    no_tumour = np.where(labels == 2, 1, labels).astype(np.uint8)
    path = write_dicom_seg(series, no_tumour, tmp_path / "no_tumour.dcm", "liver_tumour")
    np.testing.assert_array_equal(read_dicom_seg_labels(path, series), no_tumour)
    assert len(pydicom.dcmread(path).SegmentSequence) == 2  # the absent tumour is still described

    empty = np.zeros(series.shape, dtype=np.uint8)
    path = write_dicom_seg(series, empty, tmp_path / "empty.dcm", "liver")
    ds = pydicom.dcmread(path)
    assert ds.NumberOfFrames >= 1 and len(ds.SegmentSequence) == 1
    back = read_dicom_seg_labels(path, series)
    assert back.shape == series.shape and not back.any()


def test_spleen_task_and_explicit_label_values(series, phantom, tmp_path):
    case, labels = phantom
    spleen = np.asarray(case.label_for("spleen"), dtype=np.uint8)
    path = write_dicom_seg(series, spleen, tmp_path / "spleen.dcm", "spleen")
    np.testing.assert_array_equal(read_dicom_seg_labels(path, series), spleen)
    assert _code(pydicom.dcmread(path).SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]) == ("78961009", "SCT")
    # label values need not be 1..K: segment numbers follow the sorted values
    tagged = np.where(labels > 0, 5, 0).astype(np.uint8)
    path = write_dicom_seg(series, tagged, tmp_path / "tagged.dcm", [(5, "liver")])
    np.testing.assert_array_equal(read_dicom_seg_labels(path, series), (tagged == 5).astype(np.uint8))


def test_fractional_seg(series, phantom, tmp_path):
    _, labels = phantom
    rng = np.random.default_rng(0)
    probs = np.clip((labels > 0) * 0.8 + rng.uniform(0, 0.2, labels.shape), 0, 1).astype(np.float32)
    path = write_dicom_seg(series, probs, tmp_path / "prob.dcm", "liver", fractional=True)
    assert pydicom.dcmread(path).SegmentationType == "FRACTIONAL"
    back = read_dicom_seg_labels(path, series)
    assert back.shape == (*series.shape, 1)
    np.testing.assert_allclose(back[..., 0], probs, atol=1 / 255 + 1e-6)


def test_bad_arguments(series, phantom, tmp_path):
    _, labels = phantom
    with pytest.raises(ValueError, match="no coded concept"):
        write_dicom_seg(series, labels, tmp_path / "x.dcm", [(1, "gizzard")])
    with pytest.raises(ValueError, match=r"values \[2\] that no segment describes"):
        write_dicom_seg(series, labels, tmp_path / "x.dcm", "liver")
    with pytest.raises(ValueError, match="do not match the volume"):
        write_dicom_seg(series, labels[:-1], tmp_path / "x.dcm", "liver_tumour")
    nifti_like = series.__class__(**{**series.__dict__, "source": None})
    with pytest.raises(ValueError, match="not read by read_dicom_series"):
        write_dicom_seg(nifti_like, labels, tmp_path / "x.dcm", "liver_tumour")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_seg_of_another_series_is_refused(series, phantom, tmp_path):
    case, labels = phantom
    other_folder = tmp_path / "other"
    write_dicom_series(case.hu, case.affine, other_folder)
    other = read_dicom_series(other_folder)
    path = write_dicom_seg(other, (labels > 0).astype(np.uint8), tmp_path / "other.dcm", "liver")
    with pytest.raises(ValueError, match="references none of"):
        read_dicom_seg_labels(path, series)


def test_real_ct_seg_with_the_reference_liver(tmp_path):
    if not (REALCT / "series").is_dir() or not (REALCT / "reference_labels.nii.gz").is_file():
        pytest.skip(f"real CT not found at {REALCT} (only in checkouts beside ../shared)")
    start = time.perf_counter()
    volume = read_dicom_series(REALCT / "series")
    read_seconds = time.perf_counter() - start
    liver = (load_image(REALCT / "reference_labels.nii.gz").image == 5).astype(np.uint8)
    start = time.perf_counter()
    path = write_dicom_seg(volume, liver, tmp_path / "liver.dcm", "liver")
    write_seconds = time.perf_counter() - start
    print(
        f"\nreal CT: series read {read_seconds:.2f} s, SEG write {write_seconds:.2f} s "
        f"({path.stat().st_size / 1e6:.2f} MB, {int(pydicom.dcmread(path).NumberOfFrames)} frames)"
    )
    np.testing.assert_array_equal(read_dicom_seg_labels(path, volume), liver)
    ds = pydicom.dcmread(path)
    assert ds.FrameOfReferenceUID == volume.source.headers[0].FrameOfReferenceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.source.uid


# --------------------------------------------------------------------------------------------
# series as hospitals send them: headers stripped or odd
# --------------------------------------------------------------------------------------------


def _small_series(folder: Path, **kw):
    """A 40 x 32 x 5 series with a box of 'organ' in it, and that box as labels on its grid."""
    hu = np.full((40, 32, 5), -100.0, dtype=np.float32)
    hu[10:30, 8:20, 1:4] = 60.0
    write_dicom_series(hu, np.diag([0.8, 0.7, 2.5, 1.0]), folder, **kw)
    volume = read_dicom_series(folder)
    return volume, (volume.image > 0).astype(np.uint8)


def _digest(folder: Path) -> dict:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_seg_from_a_series_without_type2_attributes(tmp_path):
    """Anonymisers remove Type 2 attributes (birth date, sex, study date, ...) that highdicom copies:
    the SEG gets them empty, as the standard allows, and neither the files nor the headers change."""
    from keras_unet3plus.data.phantom_dicom import TYPE2_ATTRIBUTES

    volume, labels = _small_series(tmp_path / "ct", strip_type2=True)
    before = _digest(tmp_path / "ct")
    first = volume.source.headers[0]
    assert "PatientBirthDate" not in first and "SliceThickness" not in first
    path = write_dicom_seg(volume, labels, tmp_path / "seg.dcm", "liver")
    np.testing.assert_array_equal(read_dicom_seg_labels(path, volume), labels)
    seg = hd.seg.segread(path)
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "AccessionNumber",
        "StudyID",
    ):
        assert keyword in TYPE2_ATTRIBUTES and keyword in seg and str(seg.get(keyword)) == "", keyword
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(2.5)  # the slice spacing stands in
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.source.uid
    assert "PatientBirthDate" not in first and "SliceThickness" not in first  # headers untouched
    assert _digest(tmp_path / "ct") == before  # files untouched


def test_seg_from_headers_with_values_highdicom_refuses(tmp_path):
    """PatientSex 'U', a time 'ANON' and a misspelt character set: emptied, or UTF-8, with the
    patient's name kept as the source spells it."""
    volume, labels = _small_series(tmp_path / "ct", shuffle_names=False)
    for path in sorted((tmp_path / "ct").iterdir()):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO IR 100"  # should be ISO_IR 100; pydicom reads it as Latin-1
        ds.PatientName = "Müller^Jörg"
        ds.PatientSex, ds.StudyTime = "U", "ANON"
        ds.save_as(path, enforce_file_format=True)
    volume = read_dicom_series(tmp_path / "ct")
    path = write_dicom_seg(volume, labels, tmp_path / "seg.dcm", "liver")
    seg = pydicom.dcmread(path)
    assert str(seg.PatientName) == "Müller^Jörg" and seg.SpecificCharacterSet == "ISO_IR 192"
    assert seg.PatientSex == "" and seg.StudyTime == ""
    np.testing.assert_array_equal(read_dicom_seg_labels(path, volume), labels)


@pytest.mark.parametrize(
    "damage, problem",
    [
        ({"FrameOfReferenceUID": None}, "no FrameOfReferenceUID, which a DICOM SEG needs"),
        ({"FrameOfReferenceUID": "1.2.3.4"}, "the slices disagree on FrameOfReferenceUID"),
    ],
    ids=["missing_frame_of_reference", "mixed_frames_of_reference"],
)
def test_seg_needs_type1_attributes_and_names_the_file(tmp_path, damage, problem):
    volume, labels = _small_series(tmp_path / "ct", shuffle_names=False)
    ds = pydicom.dcmread(tmp_path / "ct" / "IM00003.dcm")
    for keyword, value in damage.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(tmp_path / "ct" / "IM00003.dcm", enforce_file_format=True)
    volume = read_dicom_series(tmp_path / "ct")  # the reader needs no frame of reference
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError) as err:
        write_dicom_seg(volume, labels, tmp_path / "out" / "seg.dcm", "liver")
    assert problem in str(err.value) and "IM00003.dcm" in str(err.value)
    assert not list((tmp_path / "out").iterdir())  # nothing half-written
