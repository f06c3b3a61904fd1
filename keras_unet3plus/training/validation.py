"""Validation during training: mean per-volume Dice over whole validation volumes.

Apart from the trainer because it is the deployment path, not the training one: each volume goes
through :func:`keras_unet3plus.inference.predict_volume` (the same preprocessing, batching and
threshold a saved model gets), so the score that picks ``best.keras`` is the score it will have.
Volumes are read once and kept in memory up to a byte budget (validation runs every epoch).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from . import distribute as dist

#: validation volumes kept in memory between epochs, at most (bytes of image data)
VOLUME_CACHE_BYTES = 1 << 30


class VolumeCache:
    """Validation volumes by case id, loaded on first use and kept while they fit in ``max_bytes``."""

    def __init__(self, max_bytes: int = VOLUME_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.volumes: dict = {}

    def load(self, case, spec):
        """The case's volume (from memory when it was kept)."""
        from ..data import load_case

        cache = self.volumes
        if case.case_id in cache:
            return cache[case.case_id]
        vol = load_case(case, spec)
        used = sum(v.image.nbytes for v in cache.values())
        if used + vol.image.nbytes <= self.max_bytes:
            cache[case.case_id] = vol
        return vol


def worker_share(cases: Sequence, strategy=None) -> list:
    """The validation cases this worker scores (all of them without a multi-worker ``strategy``)."""
    cases = list(cases)
    if strategy is None:
        return cases
    return cases[dist.worker_rank(strategy)::dist.cluster_size()]


def validation_dice(model, val_cases: Sequence, spec, pre, *, batch_size: int, volumes: VolumeCache,
                    strategy=None) -> tuple[float, dict]:
    """Mean per-volume Dice over whole validation volumes, and the Dice per case. With a
    multi-worker ``strategy`` each worker takes a share of the cases and the mean is agreed on."""
    from ..inference import predict_volume
    from ..metrics import dice

    cases = worker_share(val_cases, strategy)
    per_case: dict[str, float] = {}
    for case in cases:
        vol = volumes.load(case, spec)
        labels = predict_volume(model, vol.image, pre, batch_size=batch_size, threshold=0.5)
        per_case[case.case_id] = float(dice(labels > 0, vol.label > 0))
    total = np.array([sum(per_case.values()), len(per_case)], np.float32)
    if strategy is not None:
        total = dist.agree(strategy, total, "sum")
    return (float(total[0] / total[1]) if total[1] else float("nan")), per_case
