"""Case-level train / validation / test splits (never a slice of one case in two splits)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from keras_unet3plus.data.layouts import Case

#: The UNet 3+ paper's LiTS split: 131 labelled volumes, 103 for training, 28 for testing.
LITS_N_CASES = 131
LITS_N_TEST = 28


@dataclass(frozen=True)
class Split:
    """Disjoint case lists."""

    train: list[Case]
    val: list[Case]
    test: list[Case]

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)

    def to_dict(self) -> dict[str, list[str]]:
        """Case ids per split, for saving next to a run."""
        return {k: [c.case_id for c in getattr(self, k)] for k in ("train", "val", "test")}


def default_test_size(n_cases: int) -> int:
    """28 of 131 for LiTS; otherwise the same share (28/131, about 21 %), rounded, at least 1
    when there are 3 or more cases (so some case always remains for training and validation)."""
    if n_cases == LITS_N_CASES:
        return LITS_N_TEST
    if n_cases < 3:
        return 0
    return max(1, int(round(n_cases * LITS_N_TEST / LITS_N_CASES)))


def split_cases(cases: Sequence[Case], seed: int = 0, n_test: int | None = None,
                val_fraction: float = 0.1) -> Split:
    """Split cases deterministically by ``seed``.

    The test set is drawn first (``n_test`` cases, default :func:`default_test_size`), so it does
    not change with ``val_fraction``. Validation is ``round(val_fraction * rest)`` of the remaining
    cases (at least 1 when val_fraction > 0 and 2 or more remain): with LiTS the paper's 103
    training volumes become 93 train + 10 validation; ``val_fraction=0`` gives exactly 103 / 28.
    The result only depends on the set of case ids, not on the order they are given in.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(cases, key=lambda c: c.case_id)
    ids = [c.case_id for c in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("split_cases: case ids are not unique")
    n = len(ordered)
    n_test = default_test_size(n) if n_test is None else int(n_test)
    if not 0 <= n_test <= n:
        raise ValueError(f"n_test={n_test} is outside [0, {n}]")
    perm = np.random.default_rng(seed).permutation(n)
    test = [ordered[i] for i in sorted(perm[:n_test])]
    rest = [ordered[i] for i in perm[n_test:]]
    n_val = int(round(val_fraction * len(rest)))
    if val_fraction > 0 and n_val == 0 and len(rest) >= 2:
        n_val = 1
    val = sorted(rest[:n_val], key=lambda c: c.case_id)
    train = sorted(rest[n_val:], key=lambda c: c.case_id)
    return Split(train=train, val=val, test=test)
