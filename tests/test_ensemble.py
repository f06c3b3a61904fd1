"""Ensembles (nnU-Net's -f 0 1 2 3 4): models' probabilities averaged per slice through the one
predictor path, mismatched models refused, probabilities saved and averaged later (`ensemble`).

Tiny untrained models (32 x 32, filters 4..64, different seeds) are enough: what is tested is the
arithmetic of the average and that the ensemble is the same path as one model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keras_unet3plus.data.phantom import generate_case

SIZE = 32
TINY = dict(filters=(4, 8, 16, 32, 64), cat_channels=4, deep_supervision=False, cgm=True)


def _model(folder: Path, seed: int, size: int = SIZE, num_classes: int = 1, task: str = "liver") -> Path:
    import keras

    from keras_unet3plus import build
    from keras_unet3plus.data.preprocess import PreprocessConfig
    from keras_unet3plus.modelinfo import ModelInfo, save_info

    keras.utils.set_random_seed(seed)
    model = build((size, size, 3), num_classes=num_classes, **TINY)
    path = folder / f"m{seed}_{size}_{num_classes}.keras"
    model.save(path)
    save_info(
        path,
        ModelInfo(
            task=task,
            preprocess=PreprocessConfig(image_size=size).for_task(task).to_dict(),
            num_classes=num_classes,
            build=dict(TINY, input_shape=[size, size, 3]),
        ),
    )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ensemble_models")
    return [_model(folder, seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A small phantom CT (canonical array) and the same scan as a NIfTI file (LPS on disk)."""
    import nibabel as nib

    case = generate_case(7, shape=(48, 40, 10))
    path = tmp_path_factory.mktemp("scan") / "ct.nii.gz"
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # stored LPS: the canonical grid differs from the file's
    nib.save(nib.Nifti1Image(case.hu[::-1, ::-1].astype(np.int16), flip @ case.affine), path)
    return case.hu, path


def test_an_ensemble_of_one_model_is_that_model(models, scan):
    from keras_unet3plus.inference import Predictor, open_runtime

    hu, _ = scan
    rt = open_runtime(models[0])
    for opts in (dict(), dict(gate=False), dict(skip_absent=True), dict(threshold=0.3)):
        single = Predictor(rt, **opts).predict_volume(hu)
        np.testing.assert_array_equal(Predictor([rt], **opts).predict_volume(hu), single, err_msg=str(opts))
    ens = Predictor.from_paths([models[0]])
    assert ens.runtime.kind == "ensemble"
    np.testing.assert_array_equal(ens.predict_volume(hu), Predictor(rt).predict_volume(hu))
    lab, one = Predictor(rt, gate=False).predict_volume(hu, probability_map=True)
    assert 0 < lab.sum() < lab.size  # a mask with both classes: the equality means something
    _, ens_map = Predictor([rt], gate=False).predict_volume(hu, probability_map=True)
    np.testing.assert_array_equal(ens_map.probabilities, one.probabilities)
    np.testing.assert_array_equal(ens_map.cls, one.cls)


def test_an_ensemble_averages_probabilities_and_cls(models, scan):
    from keras_unet3plus.inference import Predictor
    from keras_unet3plus.inference.ensemble import EnsembleRuntime
    from keras_unet3plus.inference.probabilities import ProbabilityMap
    from keras_unet3plus.runtimes import load_runtime

    hu, _ = scan
    r1, r2 = (load_runtime(m, require_info=True) for m in models)
    batch = np.random.default_rng(0).random((3, SIZE, SIZE, 3), dtype=np.float32)
    (s1, c1), (s2, c2) = r1.segment(batch), r2.segment(batch)
    seg, cls = EnsembleRuntime([r1, r2]).segment(batch)
    np.testing.assert_array_equal(seg, (s1 + s2) / np.float32(2))
    np.testing.assert_array_equal(cls, (c1 + c2) / np.float32(2))
    assert not np.allclose(s1, s2)  # two different models

    maps = [Predictor(r).predict_volume(hu, probability_map=True)[1] for r in (r1, r2)]
    labels, ens = Predictor([r1, r2]).predict_volume(hu, probability_map=True)
    np.testing.assert_allclose(ens.probabilities, (maps[0].probabilities + maps[1].probabilities) / 2, atol=1e-6)
    np.testing.assert_allclose(ens.cls, (maps[0].cls + maps[1].cls) / 2, atol=1e-7)
    mean = ProbabilityMap((maps[0].probabilities + maps[1].probabilities) / 2, (maps[0].cls + maps[1].cls) / 2)
    assert (mean.labels() != labels).mean() < 1e-3  # gated by the averaged cls, then thresholded
    np.testing.assert_array_equal(Predictor([r1, r2], skip_absent=True).predict_volume(hu), labels)


def test_an_export_gated_in_its_graph_is_averaged_after_its_own_gate():
    """A member without `cls` (an export: the gate is in its graph): the others are gated by their
    own CGM first, and the ensemble passes no `cls` on."""
    from keras_unet3plus.inference.ensemble import EnsembleRuntime
    from keras_unet3plus.modelinfo import ModelInfo
    from keras_unet3plus.runtimes import FunctionRuntime

    info = ModelInfo.task_default("liver", image_size=8)
    rng = np.random.default_rng(1)
    s1, s2 = rng.random((2, 4, 8, 8, 1), dtype=np.float32)
    c1 = np.array([[0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.7, 0.3]], np.float32)
    keras_like = FunctionRuntime(lambda b: (s1, c1), 8, 3, "a", info)
    export_like = FunctionRuntime(lambda b: s2, 8, 3, "b", info)
    seg, cls = EnsembleRuntime([keras_like, export_like]).segment(np.zeros((4, 8, 8, 3), np.float32))
    gated = s1 * np.array([0, 1, 1, 0], np.float32)[:, None, None, None]
    assert cls is None
    np.testing.assert_array_equal(seg, (gated + s2) / np.float32(2))


def test_mismatched_models_are_refused(models, scan, tmp_path, capsys):
    from keras_unet3plus import cli
    from keras_unet3plus.inference import Predictor

    hu, path = scan
    other_size = _model(tmp_path, 3, size=SIZE * 2)
    two_classes = _model(tmp_path, 4, num_classes=3)
    spleen = _model(tmp_path, 5, task="spleen")
    for other, what in ((other_size, "preprocessing"), (two_classes, "classes"), (spleen, "task")):
        with pytest.raises(ValueError, match=f"{models[0].name}.*{other.name}.*different {what}"):
            Predictor.from_paths([models[0], other])
    capsys.readouterr()
    out = tmp_path / "mask.nii.gz"
    assert cli.main(["predict", str(models[0]), str(other_size), str(path), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "image_size" in err[0], err
    assert not out.exists()


def test_probabilities_round_trip_and_ensemble_later(models, scan, tmp_path, capsys):
    """`predict --save-probabilities` per model, then `unet3plus ensemble`: the mask the ensemble
    prediction writes (up to the float16 rounding of the saved probabilities)."""
    import nibabel as nib

    from keras_unet3plus import cli
    from keras_unet3plus.inference import Predictor
    from keras_unet3plus.inference.probabilities import ProbabilityMap

    _, ct = scan
    folders = [tmp_path / f"fold_{k}" for k in range(2)]
    for model, folder in zip(models, folders):
        folder.mkdir()
        assert (
            cli.main(
                ["predict", str(model), str(ct), "-o", str(folder / "ct.nii.gz"), "--quiet", "--save-probabilities"]
            )
            == 0
        )
    assert "ct.npz" in capsys.readouterr().out
    saved = ProbabilityMap.load(folders[0] / "ct.npz")
    assert saved.probabilities.dtype == np.float16 and saved.cls.shape == (10, 2)
    _, fresh = Predictor.from_path(models[0]).predict_volume(
        np.asarray(nib.load(ct).dataobj)[::-1, ::-1], probability_map=True
    )
    np.testing.assert_allclose(saved.probabilities.astype(np.float32), fresh.probabilities, atol=1e-3)
    np.testing.assert_array_equal(saved.cls, fresh.cls)
    assert saved.threshold == 0.5 and saved.task == "liver" and saved.models == [str(models[0])]
    # one saved map -> the model's own mask; folders of two -> the ensemble prediction's mask
    assert cli.main(["ensemble", str(folders[0] / "ct.npz"), "-o", str(tmp_path / "one.nii.gz")]) == 0
    own = nib.load(folders[0] / "ct.nii.gz")
    one = nib.load(tmp_path / "one.nii.gz")
    np.testing.assert_allclose(one.affine, own.affine)
    assert (np.asarray(one.dataobj) != np.asarray(own.dataobj)).mean() < 1e-3
    assert cli.main(["predict", *map(str, models), str(ct), "-o", str(tmp_path / "ens.nii.gz"), "--quiet"]) == 0
    assert cli.main(["ensemble", *map(str, folders), "-o", str(tmp_path / "later")]) == 0
    later = np.asarray(nib.load(tmp_path / "later" / "ct.nii.gz").dataobj)
    online = np.asarray(nib.load(tmp_path / "ens.nii.gz").dataobj)
    assert later.shape == online.shape and (later != online).mean() < 1e-3 and online.any()
    # foreign and damaged files: one line naming them
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    capsys.readouterr()
    assert (
        cli.main(["ensemble", str(folders[0] / "ct.npz"), str(tmp_path / "bad.npz"), "-o", str(tmp_path / "x.nii.gz")])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.npz" in err[0], err


def test_an_ensemble_reads_a_dicom_series_and_writes_a_seg(models, tmp_path):
    pytest.importorskip("highdicom")
    from keras_unet3plus import cli
    from keras_unet3plus.data.dicom import read_dicom_series
    from keras_unet3plus.data.dicom_seg import read_dicom_seg_labels
    from keras_unet3plus.data.phantom_dicom import write_dicom_series

    case = generate_case(7, shape=(48, 40, 10))
    series = tmp_path / "series"
    write_dicom_series(case.hu, case.affine, series)
    assert (
        cli.main(
            [
                "predict",
                *map(str, models),
                str(series),
                "-o",
                str(tmp_path / "out"),
                "--format",
                "both",
                "--no-gate",
                "--quiet",
                "--save-probabilities",
            ]
        )
        == 0
    )
    out = next((tmp_path / "out").glob("*.nii.gz"))
    import nibabel as nib

    mask = np.asarray(nib.load(out).dataobj)
    volume = read_dicom_series(series)
    case = out.name[: -len(".nii.gz")]
    seg = volume.to_original(read_dicom_seg_labels(out.with_name(case + ".seg.dcm"), volume))
    assert mask.any() and out.with_name(case + ".npz").is_file()
    np.testing.assert_array_equal(seg > 0, mask > 0)


def _export_onnx(model, path, info):
    pytest.importorskip("onnxruntime")
    from keras_unet3plus.export.graph import GraphSpec
    from keras_unet3plus.export.onnx import export_onnx

    export_onnx(model, path, GraphSpec(), info=info)


def _export_savedmodel(model, path, info):
    from keras_unet3plus.export.graph import GraphSpec
    from keras_unet3plus.export.savedmodel import export_savedmodel

    export_savedmodel(model, path, GraphSpec())


@pytest.mark.parametrize(
    "export, suffix", [(_export_onnx, ".onnx"), (_export_savedmodel, "")], ids=["onnx", "savedmodel"]
)
def test_an_export_joins_an_ensemble(models, scan, tmp_path, export, suffix):
    """An export (gate in its graph, no `cls` out): an ensemble of it alone is its own mask, and
    beside a .keras model the online average is the one `unet3plus ensemble` forms from saved maps."""
    import keras

    from keras_unet3plus.inference import Predictor, open_runtime
    from keras_unet3plus.inference.probabilities import ensemble_maps
    from keras_unet3plus.modelinfo import load_info, save_info

    hu, _ = scan
    path = tmp_path / f"m{suffix}"
    info = load_info(models[0])
    export(keras.saving.load_model(models[0], compile=False), path, info)
    save_info(path, info)
    exported, other = open_runtime(path), open_runtime(models[1])
    np.testing.assert_array_equal(Predictor([exported]).predict_volume(hu), Predictor(exported).predict_volume(hu))
    labels = Predictor([exported, other], threshold=0.3).predict_volume(hu)
    maps = [Predictor(r).predict_volume(hu, probability_map=True)[1] for r in (exported, other)]
    assert maps[0].cls is None and maps[1].cls is not None
    later = ensemble_maps(maps).labels(threshold=0.3)
    assert labels.any() and (later != labels).mean() < 1e-3
