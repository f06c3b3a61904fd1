"""Helpers shared by test modules (not fixtures: those live in conftest.py)."""
from __future__ import annotations

from pathlib import Path


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
