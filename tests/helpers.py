"""Helpers shared by test modules (not fixtures: those live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

#: the smallest `unet3plus train` a test runs: a 2..32 model at 32 x 32, one step of one epoch
TINY_RUN = (
    "--image-size 32 --filters 2 4 8 16 32 --cat-channels 2 --batch-size 2 --steps-per-epoch 1 --epochs 1 "
    "--n-test 1 --val-fraction 0.3 --no-augment --verbose 0"
).split()


def export_backends(model, info, folder: Path) -> dict[str, Path]:
    """The fp32 deploy graph of ``model`` as SavedModel, ONNX and LiteRT, each with its model-info
    sidecar, as `unet3plus export` writes them (without its parity check): name -> path."""
    from keras_unet3plus.export.graph import GraphSpec
    from keras_unet3plus.export.litert import export_tflite
    from keras_unet3plus.export.onnx import export_onnx
    from keras_unet3plus.export.savedmodel import export_savedmodel
    from keras_unet3plus.modelinfo import save_info

    sm = export_savedmodel(model, folder / "model_savedmodel", GraphSpec())
    save_info(sm, info)
    onnx_path = folder / "model.onnx"
    export_onnx(model, onnx_path, GraphSpec(), info=info)
    save_info(onnx_path, info)
    tfl = export_tflite(sm, folder / "model.tflite", "fp32")
    save_info(tfl, info)
    return {"savedmodel": sm, "onnx": onnx_path, "tflite": tfl}


def assert_save_reload_same(model, x, path: Path, compile: bool = False):
    """Save ``model`` as ``.keras``, load it back in safe mode (no Lambda layers, registered classes
    only), check every output is bit-identical on ``x``; returns the reloaded model. The one
    save/reload check of the suite (keras-hub's ``run_model_saving_test`` idea)."""
    import keras
    import numpy as np

    model.save(path)
    loaded = keras.saving.load_model(path, compile=compile, safe_mode=True)
    expected, got = model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    if not isinstance(expected, dict):
        expected, got = {"output": expected}, {"output": got}
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=f"output '{name}' after reload")
    return loaded
