"""The one-call forms of inference: each builds a :class:`~keras_unet3plus.inference.predictor.Predictor`
from ``model`` (a path, a ``keras.Model``, a :class:`~keras_unet3plus.runtimes.Runtime` or a
Predictor) and the options (:class:`~keras_unet3plus.inference.options.PredictOptions`' fields),
and runs it once."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from ..data.preprocess import PreprocessConfig
from ..modelinfo import ModelInfo
from .predictor import CaseResult, Predictor

__all__ = ["load_model", "predict_volume", "predict_file", "predict_folder"]


def load_model(path: str | os.PathLike) -> Predictor:
    """Load a model file (.keras, SavedModel folder, .onnx, .tflite, engine) with its model info,
    as a :class:`Predictor` with the default options (``.info``, ``.cfg``, ``.path``, ``.runtime``)."""
    return Predictor.from_path(path)


def predict_volume(
    model,
    hu_volume: np.ndarray,
    cfg: PreprocessConfig,
    *,
    return_probabilities: bool = False,
    timings: dict | None = None,
    **options,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Segment a canonical (RAS) HU volume ``(X, Y, Z)`` with ``cfg`` (the model's saved
    preprocessing); see :meth:`Predictor.predict_volume`. ``options``: :class:`PredictOptions`'
    fields, with its defaults (``threshold`` None: the model's saved one, 0.5 without an info).

    ``model``: a keras.Model (training form: ``seg`` gated here by argmax of ``cls`` per slice when
    ``gate``; or the deploy form, gated in its graph), a runtime, or a :class:`Predictor`.
    """
    if not isinstance(cfg, PreprocessConfig):
        raise TypeError(f"cfg must be a PreprocessConfig, got {type(cfg).__name__}")
    predictor = Predictor(model, cfg=cfg, **options)
    return predictor.predict_volume(hu_volume, return_probabilities=return_probabilities, timings=timings)


def predict_file(
    model,
    image_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    info: ModelInfo | None = None,
    timings: dict | None = None,
    volume=None,
    **options,
) -> np.ndarray:
    """Segment one NIfTI file (or an already read ``volume``); returns the mask in the source's
    voxel order (see :meth:`Predictor.predict_file`). ``model``: a path, or a model object (then
    ``info`` is needed unless it carries one). ``options``: as :func:`predict_volume`.
    """
    return Predictor(model, info, **options).predict_file(image_path, output_path, volume=volume, timings=timings)


def predict_folder(
    model,
    input_dir: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    info: ModelInfo | None = None,
    output_suffix: str | None = None,
    output_name=None,
    notes: list[str] | None = None,
    **options,
) -> list[CaseResult]:
    """Segment every scan of a folder (or a list of files) into ``output_dir``; one bad case is
    recorded in its :class:`CaseResult` and the others still run (see
    :meth:`Predictor.predict_folder`). ``options``: as :func:`predict_file`."""
    return Predictor(model, info, **options).predict_folder(
        input_dir, output_dir, output_suffix=output_suffix, output_name=output_name, notes=notes
    )
