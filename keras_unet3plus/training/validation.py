"""Validation during training: mean per-volume Dice over whole validation volumes.

Apart from the trainer because it is the deployment path, not the training one: each volume goes
through :func:`keras_unet3plus.inference.predict_volume` (the same preprocessing, batching and
threshold a saved model gets), so the score that picks ``best.keras`` is the score it will have.
Volumes are streamed from their files every time, a slab of slices at a time (image and label),
never kept: memory does not grow with the number or the length of validation volumes (a LiTS
validation split holds 987-slice scans, 1 GB each as float32), and re-reading costs seconds per
volume against the minutes its prediction takes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import distribute as dist


def check_cases(cases: Sequence, spec) -> None:
    """Read every voxel of ``cases`` once (a slab at a time): a bad validation case (label values,
    NaN voxels, a truncated file) stops the run before any training time is spent."""
    from ..data.readers import voxel_scan

    for case in cases:
        voxel_scan(case, spec)


def worker_share(cases: Sequence, strategy=None) -> list:
    """The validation cases this worker scores (all of them without a multi-worker ``strategy``)."""
    cases = list(cases)
    if strategy is None:
        return cases
    return cases[dist.worker_rank(strategy) :: dist.cluster_size()]


def case_dice(model, case, spec, pre, *, batch_size: int) -> float:
    """Dice of one whole volume: predicted from its file slab by slab, scored against its label
    read slab by slab (the same Dice as :func:`keras_unet3plus.metrics.dice` on whole arrays)."""
    from ..data.readers import open_pair
    from ..data.volume import slab_source
    from ..inference import predict_volume

    image, label = open_pair(case)  # any registered format, a NIfTI streamed
    if label is None:
        raise ValueError(f"{case.image_path}: a validation case needs a label file")
    image = image.image(stream=True)
    labels = predict_volume(model, image, pre, batch_size=batch_size)  # a trained model thresholds at 0.5
    truth = slab_source(label.label(spec, stream=True))
    both = pred = true = 0
    for z0, z1, slab in truth.slabs():
        t, p = slab > 0, labels[:, :, z0:z1] > 0
        both += int(np.count_nonzero(t & p))
        pred += int(np.count_nonzero(p))
        true += int(np.count_nonzero(t))
    return 1.0 if pred + true == 0 else 2.0 * both / (pred + true)


def validation_dice(model, val_cases: Sequence, spec, pre, *, batch_size: int, strategy=None) -> tuple[float, dict]:
    """Mean per-volume Dice over whole validation volumes, and the Dice per case. With a
    multi-worker ``strategy`` each worker takes a share of the cases and the mean is agreed on."""
    cases = worker_share(val_cases, strategy)
    per_case = {case.case_id: case_dice(model, case, spec, pre, batch_size=batch_size) for case in cases}
    total = np.array([sum(per_case.values()), len(per_case)], np.float32)
    if strategy is not None:
        total = dist.agree(strategy, total, "sum")
    return (float(total[0] / total[1]) if total[1] else float("nan")), per_case
