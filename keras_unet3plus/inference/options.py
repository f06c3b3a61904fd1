"""What ``unet3plus predict`` and the one-call helpers take, declared once: :class:`PredictOptions`.

Its own module, importing nothing heavy, so ``unet3plus predict --help`` builds its flags without
loading the readers, the runtimes or TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..options import option

__all__ = ["PredictOptions"]


@dataclass(frozen=True)
class PredictOptions:
    """How to predict, whatever the data: declared once, here. Each field's metadata is its
    ``unet3plus predict`` flag; :func:`keras_unet3plus.inference.predict_volume` and the other
    one-call helpers take these keywords with these defaults.

    ``progress``: tqdm bars (or a caller's bar); off in Python, on at the command line (``--quiet``).
    """

    batch_size: int = option(8, "slices per model call", type=int, min=1)
    gate: bool = option(
        True,
        "zero the slices the CGM calls organ-absent (models whose gate is not in the graph; --no-gate: ignore the CGM)",
        type=bool,
    )
    threshold: float | None = option(
        None,
        "foreground probability threshold (binary models)",
        type=float,
        none="the model's saved one, 0.5 without a model info",
        zero_is_none=False,
    )
    largest_component: bool = option(False, "keep only the largest 3-D connected foreground component", type=bool)
    overlap: bool = option(
        True,
        "read, preprocess and post-process on threads beside the model (--no-overlap: one after another, for timing)",
        type=bool,
    )
    progress: Any = option(False, "no progress bars", type=bool, flag="--quiet", negate=True, cli_default=True)
    formats: tuple[str, ...] = option(
        ("nifti",),
        "output format: NIfTI mask, DICOM SEG (DICOM inputs) or both",
        choices=("nifti", "dicom-seg", "both"),
        flag="--format",
        cli_default="nifti",
        from_flag=lambda v: ("nifti", "dicom-seg") if v == "both" else (v,),
    )
    skip_absent: bool = option(
        False,
        "run the decoder only on slices the CGM calls organ-present (.keras "
        "models with a CGM, and their ONNX exports; same masks as the gate, faster on "
        "scans where the organ fills few slices)",
        type=bool,
    )
    save_probabilities: bool = option(
        False,
        "also write each case's probabilities beside its mask (<name>.npz, "
        "compressed float16, before the CGM gate, with the CGM's per-slice output) "
        "so that ensembles can be formed later (`unet3plus ensemble`)",
        type=bool,
    )

    def __post_init__(self):
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "formats", tuple(self.formats))
