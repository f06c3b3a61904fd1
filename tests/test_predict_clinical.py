"""`unet3plus predict` on clinical inputs: DICOM series in (a study folder with several series),
NIfTI and DICOM SEG out that agree voxel for voxel, nnU-Net v2 `{case}_0000` names, and the shared
real CT series."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from keras_unet3plus import cli
from keras_unet3plus.data import phantom

pytest.importorskip("pydicom")
pytest.importorskip("highdicom")


def _series(folder: Path, seed: int, **kw) -> None:
    from keras_unet3plus.data.phantom_dicom import write_dicom_series

    case = phantom.generate_case(seed, shape=(64, 64, 16))
    write_dicom_series(case.hu, case.affine, folder, seed=seed, **kw)


def _agree(nifti_path: Path, seg_path: Path, series_folder: Path) -> np.ndarray:
    """The SEG placed on the series grid equals the NIfTI mask (both in the source voxel order)."""
    from keras_unet3plus.data.dicom import read_dicom_series
    from keras_unet3plus.data.dicom_seg import read_dicom_seg_labels

    vol = read_dicom_series(series_folder)
    nifti = np.asarray(nib.load(str(nifti_path)).dataobj)
    seg = vol.to_original(read_dicom_seg_labels(seg_path, vol))
    assert nifti.shape == seg.shape
    np.testing.assert_array_equal(nifti, seg)
    return nifti


def test_study_folder_gives_one_output_per_series(trained_tiny, tmp_path, capsys):
    study = tmp_path / "study"
    _series(study / "a", 11, series_number=3, series_description="Abdomen portal")
    _series(study / "a", 12, series_number=4, series_description="Abdomen late", orientation="axial_feet_first")
    _series(study / "b", 13, series_number=5, series_description="Broken", drop_slice=6)
    (study / "README.txt").write_text("exported from PACS")
    out = tmp_path / "out"
    rc = cli.main(["predict", str(trained_tiny.path), str(study), "-o", str(out), "--format", "both", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1  # the broken series failed, the others finished
    assert "FAILED" in captured.err and "Broken" in captured.err and "missing" in captured.err.lower()
    assert "2 of 3 case(s)" in captured.out
    niftis = sorted(out.glob("*.nii.gz"))
    segs = sorted(out.glob("*.seg.dcm"))
    assert len(niftis) == 2 and len(segs) == 2, sorted(p.name for p in out.iterdir())
    assert any("portal" in p.name.lower() for p in niftis) and any("late" in p.name.lower() for p in niftis)
    from keras_unet3plus.data.dicom import find_dicom_series

    for series in find_dicom_series(study / "a"):
        mask = _agree(out / f"{series.name}.nii.gz", out / f"{series.name}.seg.dcm", series)
        assert mask.shape == (64, 64, 16) and mask.any()  # the tiny model finds the phantom liver


def test_seg_only_and_nifti_input_refuses_seg(trained_tiny, phantom_lits, tmp_path, capsys):
    """A SEG needs DICOM sources: for a NIfTI input (single-file mode) with both formats the NIfTI
    is written and the one error line says which output failed and why."""
    _series(tmp_path / "ct", 14)
    out = tmp_path / "out"
    assert (
        cli.main(
            [
                "predict",
                str(trained_tiny.path),
                str(tmp_path / "ct"),
                "-o",
                str(out),
                "--format",
                "dicom-seg",
                "--quiet",
            ]
        )
        == 0
    )
    assert [p.suffixes[-2:] for p in out.iterdir()] == [[".seg", ".dcm"]]
    capsys.readouterr()
    single = tmp_path / "single"
    rc = cli.main(
        [
            "predict",
            str(trained_tiny.path),
            str(phantom_lits / "volume-0.nii.gz"),
            "-o",
            str(single / "x.seg.dcm"),
            "--format",
            "both",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "DICOM SEG not written (a DICOM SEG output needs a DICOM input series" in err
    assert f"NIfTI mask written to {single / 'x.nii.gz'}" in err
    assert sorted(p.name for p in single.iterdir()) == ["x.nii.gz"]  # no SEG, no temporary file


def test_nnunet_names(trained_tiny, phantom_lits, tmp_path, capsys):
    """imagesTs/{case}_0000.nii.gz -> {case}.nii.gz, as nnUNetv2_predict writes; extra channels refused."""
    images = tmp_path / "imagesTs"
    images.mkdir()
    for k, case in enumerate(("liver_007", "liver_012")):
        shutil.copy(phantom_lits / f"volume-{k}.nii.gz", images / f"{case}_0000.nii.gz")
    out = tmp_path / "out"
    assert cli.main(["predict", str(trained_tiny.path), "-i", str(images), "-o", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["liver_007.nii.gz", "liver_012.nii.gz"]
    shutil.copy(phantom_lits / "volume-2.nii.gz", images / "liver_007_0001.nii.gz")
    capsys.readouterr()
    assert cli.main(["predict", str(trained_tiny.path), "-i", str(images), "-o", str(tmp_path / "o2"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "0001" in err and "one CT channel" in err


def test_real_ct_series_nifti_and_seg_agree(trained_tiny, real_ct, tmp_path):
    """The shared real CT (a Siemens series, JPEG 2000): NIfTI and SEG outputs on its grid agree.

    The tiny phantom model is no liver model for real CT, so its mask is only checked for agreement
    between the two formats and for the reference label's grid (no Dice is asserted here)."""
    out = tmp_path / "out"
    assert (
        cli.main(
            [
                "predict",
                str(trained_tiny.path),
                str(real_ct / "series"),
                "-o",
                str(out),
                "--format",
                "both",
                "--quiet",
                "--no-gate",
                "--threshold",
                "0.2",
            ]
        )
        == 0
    )
    niftis, segs = list(out.glob("*.nii.gz")), list(out.glob("*.seg.dcm"))
    assert len(niftis) == 1 and len(segs) == 1
    mask = _agree(niftis[0], segs[0], real_ct / "series")
    # same world coordinates for every voxel as the reference label file (written by dcm2niix, which
    # stores the rows flipped): compare the grids once both are brought to RAS
    ref = nib.as_closest_canonical(nib.load(str(real_ct / "reference_labels.nii.gz")))
    pred = nib.as_closest_canonical(nib.load(str(niftis[0])))
    assert pred.shape == ref.shape and mask.size == int(np.prod(ref.shape))
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-3)


def test_hospital_series_gives_one_nifti_and_one_seg(trained_tiny, tmp_path, capsys):
    """As a PACS export arrives: anonymised (Type 2 attributes removed), JPEG Lossless SV1, a
    localizer and a text file beside the CT. One NIfTI, and one SEG highdicom reads that
    references the CT series."""
    import highdicom as hd
    import pydicom

    from keras_unet3plus.data.dicom import find_dicom_series

    folder = tmp_path / "export"
    _series(folder / "ct", 15, strip_type2=True, transfer_syntax="1.2.840.10008.1.2.4.70")
    _series(folder / "scout", 16, series_number=9, series_description="Topogram")
    for path in (folder / "scout").iterdir():
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(path, enforce_file_format=True)
    (folder / "readme.txt").write_text("exported by the PACS, do not edit\n")
    ct = pydicom.dcmread(next((folder / "ct").iterdir()), stop_before_pixels=True)
    ds.SeriesInstanceUID = ct.SeriesInstanceUID  # and one scout filed inside the CT series itself
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "ct" / "scout_in_series", enforce_file_format=True)
    assert "PatientBirthDate" not in ct and ct.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    out = tmp_path / "out"
    rc = cli.main(["predict", str(trained_tiny.path), str(folder), "-o", str(out), "--format", "both", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "1 of 1 case(s) segmented" in captured.out
    assert "skipped: " in captured.out and "Topogram): 16 localizer" in captured.out  # its own series
    assert "readme.txt: not a DICOM file" in captured.out
    assert "note: " in captured.out and "1 localizer (scout) image(s) left out" in captured.out  # in the CT's
    niftis, segs = sorted(out.glob("*.nii.gz")), sorted(out.glob("*.seg.dcm"))
    assert len(niftis) == 1 and len(segs) == 1 and len(list(out.iterdir())) == 2
    seg = hd.seg.segread(segs[0])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == ct.FrameOfReferenceUID and seg.PatientBirthDate == ""
    [series] = find_dicom_series(folder)
    mask = _agree(niftis[0], segs[0], series)
    assert mask.shape == (64, 64, 16) and mask.any()


def test_seg_that_cannot_be_written_keeps_the_nifti_and_says_so(trained_tiny, tmp_path, capsys):
    """A series without FrameOfReferenceUID reads (the volume needs none) but makes no SEG: the
    NIfTI is written whole, the report names what failed and why, nothing half-written, exit 1."""
    import pydicom

    _series(tmp_path / "ct", 17, series_description="No FoR")
    for path in (tmp_path / "ct").iterdir():
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path, enforce_file_format=True)
    out = tmp_path / "out"
    rc = cli.main(
        ["predict", str(trained_tiny.path), str(tmp_path / "ct"), "-o", str(out), "--format", "both", "--quiet"]
    )
    captured = capsys.readouterr()
    assert rc == 1
    assert "DICOM SEG not written" in captured.err and "no FrameOfReferenceUID" in captured.err
    assert "NIfTI mask written to" in captured.err and "Traceback" not in captured.err
    assert "0 of 1 case(s) segmented" in captured.out and "1 of them with some outputs written" in captured.out
    assert [p.name for p in out.iterdir()] == ["001_No_FoR.nii.gz"]  # no SEG, no temporary file
    assert nib.load(str(out / "001_No_FoR.nii.gz")).get_fdata().shape == (64, 64, 16)
