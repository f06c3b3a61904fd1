"""Runtimes: one interface over .keras, SavedModel, ONNX, LiteRT (and TensorRT); loading errors,
which runtime a path gets, the Keras model in both forms, and the same mask through every backend."""

from __future__ import annotations

import ast
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from keras_unet3plus import runtimes
from keras_unet3plus.metrics import dice

SIZE = 64
PACKAGE = Path(runtimes.__file__).resolve().parents[1]


def test_runtime_kind_per_artefact(tmp_path):
    for name, kind in (
        ("m.keras", "keras"),
        ("m.onnx", "onnxruntime"),
        ("m.tflite", "litert"),
        ("m.engine", "tensorrt"),
        ("m.plan", "tensorrt"),
    ):
        (tmp_path / name).write_bytes(b"")
        assert runtimes.runtime_kind(tmp_path / name) == kind
    sm = tmp_path / "sm"
    sm.mkdir()
    with pytest.raises(ValueError, match="not a SavedModel"):
        runtimes.runtime_kind(sm)
    (sm / "saved_model.pb").write_bytes(b"")
    assert runtimes.runtime_kind(sm) == "savedmodel"
    with pytest.raises(TypeError, match="cannot run inference with a int"):
        runtimes.load_runtime(3)


def test_runtime_loading_errors(tmp_path, trained_tiny):
    with pytest.raises(ValueError, match="unknown model format"):
        runtimes.load_runtime(tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError):
        runtimes.load_runtime(tmp_path / "missing.onnx")
    _, path, _ = trained_tiny
    rt = runtimes.load_runtime(path, require_info=True)
    assert rt.kind == "keras" and rt.info.task == "liver" and rt.input_shape == (None, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match=r"\(B, 64, 64, 3\)"):
        rt.predict(np.zeros((1, 32, 32, 3), np.float32))


def test_keras_runtime_training_and_deploy_form(trained_tiny):
    """`segment` runs the model as given: the training form hands `cls` to the predictor's gate, the
    deploy form carries its gate; `predict` is the deploy form either way."""
    from keras_unet3plus import deploy_model

    model, _, info = trained_tiny
    x = np.random.default_rng(0).random((3, SIZE, SIZE, 3), dtype=np.float32)
    train_rt, deploy_rt = runtimes.load_runtime(model, info), runtimes.load_runtime(deploy_model(model))
    assert train_rt.image_size == SIZE and train_rt.channels == 3 and train_rt.name == model.name
    seg, cls = train_rt.segment(x)
    gated, no_cls = deploy_rt.segment(x)
    assert cls.shape == (3, 2) and no_cls is None
    present = (np.argmax(cls, 1) == 1)[:, None, None, None]
    np.testing.assert_allclose(gated, seg * present, atol=1e-5)
    np.testing.assert_allclose(train_rt.predict(x), deploy_rt.predict(x), atol=1e-5)
    assert runtimes.load_runtime(train_rt) is train_rt


def test_function_runtime():
    rt = runtimes.FunctionRuntime(lambda b: (b[..., :1], np.ones((len(b), 2))), image_size=8, channels=3, name="fake")
    x = np.zeros((2, 8, 8, 3), np.float32)
    seg, cls = rt.segment(x)
    assert seg.shape == (2, 8, 8, 1) and cls.shape == (2, 2) and rt.name == "fake"
    assert rt.predict(x).shape == (2, 8, 8, 1) and rt.image_size == 8 and rt.channels == 3


def _imports(place: Path) -> set[str]:
    """Modules named by the relative imports of a file, or of the ``*.py`` files of a folder."""
    names = set()
    for path in [place] if place.is_file() else place.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                names.add(node.module or "")
    return names


def test_imports_point_down():
    """runtimes never imports export / inference / training; inference never imports training /
    export / evaluation; export never imports inference / training / evaluation; scoring mask
    files (evaluation.py) runs no model; nothing below the workflows imports them (relative
    imports: the package's own modules)."""
    up = {"export", "inference", "training", "evaluation", "workflows"}
    assert not {m.split(".")[0] for m in _imports(PACKAGE / "runtimes")} & up
    assert not {m.split(".")[0] for m in _imports(PACKAGE / "inference")} & (up - {"inference"})
    assert not {m.split(".")[0] for m in _imports(PACKAGE / "evaluation.py")} & (up - {"evaluation"})
    for below in ("training", "export"):
        assert "workflows" not in {m.split(".")[0] for m in _imports(PACKAGE / below)}, below
    assert not {m.split(".")[0] for m in _imports(PACKAGE / "export")} & (up - {"export"})


def test_same_mask_through_every_backend(trained_tiny, phantom_lits, tmp_path):
    """.keras, SavedModel, .onnx and .tflite (fp32) of one model give the same mask.

    The artefacts are made with keras_unet3plus.export (export_savedmodel / export_onnx /
    export_tflite) plus a model-info sidecar each, as `unet3plus export` does.
    """
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    pytest.importorskip("ai_edge_litert")
    from helpers import export_backends

    from keras_unet3plus.inference import predict_file

    model, keras_path, info = trained_tiny
    paths = [keras_path, *export_backends(model, info, tmp_path).values()]

    src = phantom_lits / "volume-1.nii.gz"  # LPS
    # the same scan with its field of view cropped to 64 x 46 (non-square: padded to a square of air)
    full = nib.load(str(src))
    cropped = tmp_path / "cropped.nii.gz"
    nib.save(full.slicer[:, 9:55, :], str(cropped))
    for scan in (src, cropped):
        masks = {p.name: predict_file(p, scan, tmp_path / f"{p.name}.nii.gz") for p in paths}
        ref = masks["model.keras"]
        assert ref.any() and ref.shape == nib.load(str(scan)).shape
        for name, m in masks.items():
            assert m.shape == ref.shape and m.dtype == np.uint8
            assert (m != ref).mean() < 1e-4, (scan.name, name)
            assert dice(m, ref) > 0.999, (scan.name, name)


def test_runtime_like_object_is_wrapped():
    """Any object with `predict(batch)` and `input_shape` runs (a dict of outputs gives `cls` too)."""

    class Custom:
        input_shape = (None, 8, 8, 3)
        info = None

        def predict(self, batch):
            return {"seg": batch[..., 0], "cls": np.zeros((len(batch), 2))}

    rt = runtimes.load_runtime(Custom())
    seg, cls = rt.segment(np.zeros((2, 8, 8, 3), np.float32))
    assert seg.shape == (2, 8, 8, 1) and cls.shape == (2, 2)
    assert rt.image_size == 8 and rt.channels == 3 and rt.name == "Custom"
