"""Export a trained model to SavedModel, ONNX, LiteRT (TFLite) or TensorRT, verified against Keras.

`export_model(model, target, precision, ...)` writes each artefact into a temporary sibling path
(`staging`), runs it on real slices next to the Keras `deploy_model()` (`verify`), and only then
moves it into place (`os.replace`) with its `ModelInfo` sidecar, whose export record
(`modelinfo.ExportRecord`) holds the checks. A failed parity check raises `ParityError` (with the
table rows) and leaves nothing behind. The CLI (`unet3plus export`) and the scripts in the
top-level `export/` folder are thin wrappers around it.

One module per target (`savedmodel`, `onnx`, `litert`, `tensorrt`: its writer and its ``TARGET``
record), listed in `registry`; int8 calibration data in `calibration`. The names below load on
first use (PEP 562), so listing the targets loads no TensorFlow.
"""

from __future__ import annotations

from .._lazy import lazy_names

#: public name -> the module of this package that defines it
_WHERE = {
    "export_model": "exporter",
    "ExportJob": "job",
    "ExportOptions": "job",
    "ExportResult": "job",
    "ExportTarget": "target",
    "GraphSpec": "graph",
    "ParityError": "verify",
    "format_table": "verify",
    "PRECISIONS": "registry",
    "REGISTRY": "registry",
    "TARGETS": "registry",
    "default_output": "registry",
    "get_target": "registry",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
