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
    assert _code(pydicom.dcmread(path).SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]) == \
        ("78961009", "SCT")
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
    print(f"\nreal CT: series read {read_seconds:.2f} s, SEG write {write_seconds:.2f} s "
          f"({path.stat().st_size / 1e6:.2f} MB, {int(pydicom.dcmread(path).NumberOfFrames)} frames)")
    np.testing.assert_array_equal(read_dicom_seg_labels(path, volume), liver)
    ds = pydicom.dcmread(path)
    assert ds.FrameOfReferenceUID == volume.source.headers[0].FrameOfReferenceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.source.uid
