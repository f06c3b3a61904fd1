"""Inference: a CT volume (array, NIfTI file, DICOM series, or a folder of them) in, a uint8 label
volume out.

The same 2.5D preprocessing as training (:mod:`keras_unet3plus.data.preprocess`, configured by the
:class:`~keras_unet3plus.modelinfo.ModelInfo` saved with the model, never by user flags), slice
batches through the model, the CGM gate, threshold / argmax, optional largest-connected-component
post-processing, and the mask put back on the input's grid (shape, affine, orientation).

:class:`Predictor` does the work (``predictor.py``); around it, ``stages.py`` (the threaded
read / preprocess / infer pipeline), ``postprocess.py``, ``inputs.py`` (what to segment) and
``outputs.py`` (NIfTI and DICOM SEG writing), ``options.py`` (:class:`PredictOptions`) and
``calls.py`` (the one-call forms ``predict_volume``, ``predict_file``, ``predict_folder``,
``load_model``). The names below load on first use (PEP 562), so a command builds its flags from
:class:`PredictOptions` without loading the readers, the runtimes or TensorFlow.
"""

from __future__ import annotations

from .._lazy import lazy_names

#: public name -> the module of this package that defines it
_WHERE = {
    "Predictor": "predictor",
    "CaseResult": "predictor",
    "open_runtime": "predictor",
    "PredictOptions": "options",
    "InputScan": "inputs",
    "find_inputs": "inputs",
    "find_input_files": "inputs",
    "nifti_case_name": "inputs",
    "predict_volume": "calls",
    "predict_file": "calls",
    "predict_folder": "calls",
    "load_model": "calls",
    "postprocess_labels": "postprocess",
    "largest_component": "postprocess",
    "mask_image": "outputs",
    "write_outputs": "outputs",
    "output_paths": "outputs",
    "OUTPUT_FORMATS": "outputs",
    "STAGES": "stages",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
