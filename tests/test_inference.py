"""Inference: predict_volume / predict_file / predict_folder / `unet3plus predict`, on phantom NIfTI
files with the tiny model trained once per session (conftest.trained_tiny) (so masks mean something)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from keras_unet3plus.data import phantom
from keras_unet3plus.data.nifti import DataError
from keras_unet3plus.data.preprocess import PreprocessConfig, volume_to_slices
from keras_unet3plus.metrics import dice
from keras_unet3plus.modelinfo import ModelInfo, save_info

IMAGE_SIZE = 64


def _cfg() -> PreprocessConfig:
    return PreprocessConfig(image_size=IMAGE_SIZE).for_task("liver")


@pytest.fixture(scope="module")
def test_case():
    return phantom.generate_case(7, shape=(80, 72, 24))


# ------------------------------------------------------------------------------------------------
# predict_volume
# ------------------------------------------------------------------------------------------------


def test_predict_volume_segments_the_liver(trained_tiny, test_case):
    from keras_unet3plus.inference import predict_volume

    model, _, _ = trained_tiny
    labels = predict_volume(model, test_case.hu, _cfg())
    assert labels.shape == test_case.hu.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}
    assert dice(labels, test_case.label_for("liver")) > 0.6


def test_predict_volume_matches_whole_volume_reference(trained_tiny, test_case):
    """Batching (any batch size, with/without the threaded overlap) equals running every slice at
    once: the 2.5D context at batch borders comes from the neighbouring batch, not replicated."""
    from keras_unet3plus.data.preprocess import slices_to_volume
    from keras_unet3plus.inference import predict_volume

    model, _, _ = trained_tiny
    cfg = _cfg()
    x = volume_to_slices(test_case.hu, cfg)
    out = model.predict(x, verbose=0, batch_size=len(x))
    seg = out["seg"] * (np.argmax(out["cls"], 1) == 1)[:, None, None, None]
    ref = (slices_to_volume(seg, test_case.hu.shape[:2], cfg)[..., 0] > 0.5).astype(np.uint8)  # 80 x 72: padded
    timings: dict = {}
    got = [
        predict_volume(model, test_case.hu, cfg, batch_size=b, overlap=o, timings=timings)
        for b, o in ((1, False), (5, True), (8, True), (64, False))
    ]
    for g in got:
        assert (g != ref).mean() < 1e-4
        np.testing.assert_array_equal(g, got[0])
    assert {"preprocess", "model", "postprocess"} <= set(timings)
    labels, probs_vol = predict_volume(model, test_case.hu, cfg, return_probabilities=True)
    assert probs_vol.shape == (*test_case.hu.shape, 1) and probs_vol.dtype == np.float32
    np.testing.assert_array_equal(labels, (probs_vol[..., 0] > 0.5).astype(np.uint8))


def test_gate_zeroes_slices_the_cgm_calls_absent(trained_tiny, test_case):
    from keras_unet3plus import deploy_model
    from keras_unet3plus.inference import predict_volume

    model, _, _ = trained_tiny
    cfg = _cfg()
    # air slices at both ends: no organ there
    hu = np.concatenate(
        [np.full((80, 72, 4), -1000, np.float32), test_case.hu, np.full((80, 72, 4), -1000, np.float32)], axis=2
    )
    cls = model.predict(volume_to_slices(hu, cfg), verbose=0)["cls"]
    absent = np.argmax(cls, 1) == 0
    assert absent.any() and (~absent).any()
    ungated = predict_volume(model, hu, cfg, gate=False)
    gated = predict_volume(model, hu, cfg, gate=True)
    expected = ungated.copy()
    expected[:, :, absent] = 0
    np.testing.assert_array_equal(gated, expected)
    # the deploy form (gated in its graph) gives the same mask
    np.testing.assert_array_equal(predict_volume(deploy_model(model), hu, cfg), gated)


def _fake_predictor(seg_fn, cls_fn=None, size=IMAGE_SIZE):
    from keras_unet3plus.runtimes import FunctionRuntime

    def fn(batch):
        return seg_fn(batch), (None if cls_fn is None else cls_fn(batch))

    return FunctionRuntime(fn, image_size=size, channels=3, name="fake")


def test_gate_with_controlled_cls():
    """cls says 'absent' on slices whose HU is low: exactly those slices come out empty."""
    from keras_unet3plus.inference import predict_volume

    cfg = _cfg()
    hu = np.zeros((40, 40, 10), np.float32)
    hu[:, :, ::2] = 200.0  # even slices bright, odd slices mid gray
    present_fn = lambda b: b[..., 1].mean(axis=(1, 2)) > 0.8  # noqa: E731 - middle channel only
    pred = _fake_predictor(
        lambda b: np.ones((*b.shape[:3], 1), np.float32),
        lambda b: np.stack([~present_fn(b), present_fn(b)], 1).astype(np.float32),
    )
    labels = predict_volume(pred, hu, cfg, batch_size=3)
    assert labels[:, :, ::2].all() and not labels[:, :, 1::2].any()
    assert predict_volume(pred, hu, cfg, gate=False).all()


def test_largest_component_removes_a_spurious_blob():
    from keras_unet3plus.inference import postprocess_labels, predict_volume

    cfg = _cfg()
    hu = np.zeros((64, 64, 12), np.float32)

    def seg(batch):
        out = np.zeros((*batch.shape[:3], 1), np.float32)
        out[:, 10:40, 10:40] = 0.9  # the organ
        out[:, 52:56, 52:56] = 0.9  # a small false blob
        return out

    pred = _fake_predictor(seg)
    raw = predict_volume(pred, hu, cfg)
    clean = predict_volume(pred, hu, cfg, largest_component=True)
    assert raw[53, 53].all() and not clean[53, 53].any()
    assert clean[20:30, 20:30].all()
    np.testing.assert_array_equal(clean, postprocess_labels(raw))
    # multi-class: a tumour inside the organ survives, a detached liver blob does not
    lab = np.zeros((20, 20, 5), np.uint8)
    lab[2:12, 2:12] = 1
    lab[4:6, 4:6] = 2
    lab[16:18, 16:18] = 1
    out = postprocess_labels(lab)
    assert (out[4:6, 4:6] == 2).all() and not out[16:18, 16:18].any()


def test_predict_volume_bad_inputs(trained_tiny):
    from keras_unet3plus.inference import predict_volume

    model, _, _ = trained_tiny
    cfg = _cfg()
    with pytest.raises(ValueError, match="volume"):
        predict_volume(model, np.zeros((64, 64), np.float32), cfg)
    with pytest.raises(ValueError, match="64x64 inputs but its preprocessing makes 32x32"):
        predict_volume(model, np.zeros((40, 40, 4), np.float32), PreprocessConfig(image_size=32).for_task("liver"))
    with pytest.raises(ValueError, match="3-channel inputs .* 5 channels"):
        predict_volume(
            model,
            np.zeros((40, 40, 4), np.float32),
            PreprocessConfig(image_size=IMAGE_SIZE, context=2).for_task("liver"),
        )


# ------------------------------------------------------------------------------------------------
# files, folders, CLI
# ------------------------------------------------------------------------------------------------


def test_predict_file_keeps_grid_and_orientation(trained_tiny, phantom_lits, tmp_path):
    """RAS, LPS, PLS (.nii.gz) and LAS (.nii) inputs: the mask has the input's shape, affine and
    voxel order (a wrong orientation would wreck the Dice against the file's own label)."""
    from keras_unet3plus.data.nifti import load_image
    from keras_unet3plus.inference import predict_file, predict_volume

    model, path, _ = trained_tiny
    for k in range(4):
        ext = ".nii" if k == 3 else ".nii.gz"
        src = phantom_lits / f"volume-{k}{ext}"
        out = tmp_path / f"mask-{k}{ext}"
        arr = predict_file(path, src, out)
        img, ref = nib.load(str(src)), nib.load(str(out))
        gt = np.asarray(nib.load(str(phantom_lits / f"segmentation-{k}{ext}")).dataobj)
        assert ref.shape == img.shape and arr.shape == img.shape
        np.testing.assert_allclose(ref.affine, img.affine)
        assert nib.aff2axcodes(ref.affine) == nib.aff2axcodes(img.affine)
        assert ref.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(ref.dataobj), arr)
        vol = load_image(src)  # the canonical volume, predicted directly, then put back
        np.testing.assert_array_equal(arr, vol.to_original(predict_volume(model, vol.image, _cfg())))
        assert dice(arr, gt) > 0.4, (src.name, nib.aff2axcodes(img.affine))
    assert {nib.aff2axcodes(nib.load(str(p)).affine) for p in phantom_lits.glob("volume-*")} >= {
        ("R", "A", "S"),
        ("L", "P", "S"),
    }


def test_predict_file_bad_inputs(trained_tiny, tmp_path):
    from keras_unet3plus.inference import load_model, predict_file

    _, path, info = trained_tiny
    with pytest.raises(FileNotFoundError, match="nothere.nii.gz"):
        predict_file(path, tmp_path / "nothere.nii.gz", tmp_path / "o.nii.gz")
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16), np.int16), np.eye(4)), flat)
    with pytest.raises(DataError, match="flat.nii.gz.*3-D"):
        predict_file(path, flat)
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8, 2), np.int16), np.eye(4)), four)
    with pytest.raises(DataError, match="four.nii.gz.*3-D"):
        predict_file(path, four)
    # a model whose input size does not fit its info file: the error names the model
    bad = tmp_path / "bad.keras"
    shutil.copy(path, bad)
    save_info(bad, ModelInfo(task="liver", preprocess=PreprocessConfig(image_size=96).to_dict()))
    vol = phantom.generate_case(3, shape=(32, 32, 8))
    src = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol.hu, vol.affine), src)
    with pytest.raises(ValueError, match=r"v.nii.gz.*model 'unet3plus_unet' takes 64x64 inputs"):
        predict_file(bad, src)
    with pytest.raises(FileNotFoundError, match="model info"):
        nosidecar = tmp_path / "nosidecar.keras"
        shutil.copy(path, nosidecar)
        load_model(nosidecar)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_model(tmp_path / "missing.keras")


def test_atomic_write_leaves_no_partial_file(trained_tiny, phantom_lits, tmp_path, monkeypatch):
    from keras_unet3plus import inference

    _, path, _ = trained_tiny
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"previous result")

    def broken_save(img, filename):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        inference.predict_file(path, phantom_lits / "volume-0.nii.gz", out)
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


def test_cli_folder_mode_reports_bad_case_and_finishes_others(trained_tiny, phantom_lits, tmp_path, capsys):
    from keras_unet3plus.cli import main

    _, path, _ = trained_tiny
    src = tmp_path / "in"
    src.mkdir()
    for k in (0, 1):
        shutil.copy(phantom_lits / f"volume-{k}.nii.gz", src)
    data = (phantom_lits / "volume-2.nii.gz").read_bytes()
    (src / "volume-2.nii.gz").write_bytes(data[: len(data) // 2])  # truncated download
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc = main(["predict", str(path), "-i", str(src), "-o", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "volume-2.nii.gz" in captured.err and "FAILED" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["volume-0.nii.gz", "volume-1.nii.gz"]
    assert "2 of 3 case(s)" in captured.out
    # a gzip that is truncated is not a readable volume, and no half-written mask appears
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(data[: len(data) // 2])


def test_cli_single_file(trained_tiny, phantom_lits, tmp_path, capsys):
    from keras_unet3plus.cli import main

    _, path, _ = trained_tiny
    out = tmp_path / "seg.nii.gz"
    assert (
        main(
            [
                "predict",
                str(path),
                str(phantom_lits / "volume-1.nii.gz"),
                "-o",
                str(out),
                "--quiet",
                "--largest-component",
            ]
        )
        == 0
    )
    assert nib.load(str(out)).shape == nib.load(str(phantom_lits / "volume-1.nii.gz")).shape
    assert main(["predict", str(path), str(tmp_path / "missing.nii.gz"), "-o", str(out), "--quiet"]) == 1
    assert "missing.nii.gz" in capsys.readouterr().err


def test_a_lits_folder_segments_its_volumes_not_its_labels(tmp_path):
    """predict -i <LiTS folder>: the segmentation-N files are labels, left out with a note (they
    were segmented as if they were CTs); a folder of labels alone is still what the user gave."""
    from keras_unet3plus.inference.inputs import find_inputs

    for i in (0, 1, 10):
        (tmp_path / f"volume-{i}.nii.gz").touch()
        (tmp_path / f"segmentation-{i}.nii.gz").touch()
    notes: list[str] = []
    scans = find_inputs(tmp_path, notes)
    assert [s.name for s in scans] == ["volume-0", "volume-1", "volume-10"]
    assert len(notes) == 1 and "3 LiTS label file(s)" in notes[0]
    only = tmp_path / "labels"
    only.mkdir()
    (only / "segmentation-3.nii.gz").touch()
    assert [s.name for s in find_inputs(only)] == ["segmentation-3"]
