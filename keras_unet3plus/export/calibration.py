"""int8 calibration data: real (phantom or user) slices for a graph that reads the image, and for
the decoder of the skip-absent pair what the float encoder makes of those slices (the decoder is
calibrated on the features it will be fed, not on images)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..output_names import CLS

#: calibration slices are drawn apart from the verification slices (seed 1234)
CALIBRATION_SEED = 98765


def calibration_slices(info, data_dir: str | os.PathLike | None, n: int, image_size: int) -> np.ndarray:
    """``n`` preprocessed slices to calibrate int8 on: from ``data_dir``, else generated phantoms."""
    from .verify import sample_slices

    return sample_slices(info, data_dir, n, image_size, seed=CALIBRATION_SEED)


def feature_feeds(encode: Callable[[np.ndarray], dict], calibration: np.ndarray) -> list[dict[str, np.ndarray]]:
    """One ``{feature_i: array}`` feed per calibration slice: ``encode(slice)`` without ``cls``."""
    feeds = []
    for i in range(len(calibration)):
        outs = encode(calibration[i : i + 1])
        feeds.append({k: np.asarray(v) for k, v in outs.items() if k != CLS})
    return feeds


def onnx_feature_feeds(encoder_path: str | os.PathLike, calibration: np.ndarray) -> list[dict[str, np.ndarray]]:
    """`feature_feeds` of an fp32 ONNX encoder part, run on the CPU by ONNX Runtime."""
    from ..runtimes.onnx import open_session

    session = open_session(encoder_path, None, ["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed_name = session.get_inputs()[0].name
    return feature_feeds(lambda batch: dict(zip(names, session.run(None, {feed_name: batch}))), calibration)
