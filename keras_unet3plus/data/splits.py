"""Case-level train / validation / test splits (never a slice of one case in two splits)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path
from collections.abc import Sequence

import numpy as np

if TYPE_CHECKING:  # annotations only: the folds' constants load without the readers
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


def split_cases(cases: Sequence[Case], seed: int = 0, n_test: int | None = None, val_fraction: float = 0.1) -> Split:
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


# ----------------------------------------------------------------------------------------------
# cross-validation folds (nnU-Net's splits_final.json)
# ----------------------------------------------------------------------------------------------
#: the folds table's file name (nnU-Net's), saved beside the fold runs: the parent of each --out-dir
SPLITS_FILE = "splits_final.json"
#: the --fold value that trains on every case of the table, none held out
ALL_FOLDS = "all"

Folds = list  # list[dict[str, list[str]]]: per fold {"train": [case ids], "val": [case ids]}


def make_folds(case_ids: Sequence[str], n_folds: int, seed: int = 0) -> Folds:
    """``n_folds`` disjoint validation sets covering every case once (a seeded shuffle cut into
    near-equal parts), each fold training on the rest. Depends only on the set of ids."""
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("make_folds: case ids are not unique")
    if not 2 <= n_folds <= len(ids):
        raise ValueError(f"{n_folds} folds need between 2 and {len(ids)} (the number of cases) folds")
    perm = np.random.default_rng(seed).permutation(len(ids))
    vals = [sorted(ids[i] for i in part) for part in np.array_split(perm, n_folds)]
    return [{"train": sorted(set(ids) - set(val)), "val": val} for val in vals]


def read_folds(path: str | Path) -> Folds:
    """A folds table as nnU-Net writes it (a JSON list of ``{"train": [...], "val": [...]}``); a
    file in any other shape is refused naming it and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"splits file '{path}' not found") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"splits file '{path}' cannot be read: {exc}") from None
    ok = (
        isinstance(data, list)
        and data
        and all(
            isinstance(f, dict)
            and all(isinstance(f.get(k), list) and all(isinstance(i, str) for i in f[k]) for k in ("train", "val"))
            for f in data
        )
    )
    if not ok:
        raise ValueError(
            f'splits file \'{path}\' must be a JSON list of {{"train": [case ids], "val": '
            f"[case ids]}} per fold (nnU-Net's splits_final.json)"
        )
    for k, f in enumerate(data):
        both = set(f["train"]) & set(f["val"])
        if both:
            raise ValueError(
                f"splits file '{path}': fold {k} has case(s) in both train and val: {', '.join(sorted(both)[:5])}"
            )
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in data]


def fold_split(cases: Sequence[Case], folds: Folds, fold: str | int, source: str = "folds") -> Split:
    """The :class:`Split` of one fold (``val`` = its held-out cases; ``all``: every case of the
    table trains, none held out). Cases of the data set that no fold names are ``test``; a case the
    table names that the data set lacks is refused."""
    by_id = {c.case_id: c for c in cases}
    named = {i for f in folds for k in ("train", "val") for i in f[k]}
    missing = sorted(named - set(by_id))
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} case(s) not in the data set (first: "
            f"{', '.join(missing[:5])}); delete the file to make a new split, or fix it"
        )
    if str(fold) == ALL_FOLDS:
        train, val = sorted(named), []
    else:
        k = int(fold)
        if not 0 <= k < len(folds):
            raise ValueError(f"{source}: fold {k} does not exist (the table has folds 0..{len(folds) - 1})")
        train, val = folds[k]["train"], folds[k]["val"]
    test = sorted(set(by_id) - named)
    return Split(
        train=[by_id[i] for i in sorted(train)], val=[by_id[i] for i in sorted(val)], test=[by_id[i] for i in test]
    )


def cross_validation_split(
    cases: Sequence[Case],
    n_folds: int,
    fold: str | int,
    path: str | Path,
    seed: int = 0,
    n_test: int | None = None,
    write: bool = True,
) -> Split:
    """Fold ``fold`` of the data set's folds table at ``path``: read when it exists (every fold, and
    a table a person wrote, reuse it), else made from ``seed`` and saved there (``write``) first.
    A new table folds the cases :func:`split_cases` leaves after its test set (``n_test``; 0 folds
    every case, as nnU-Net does); cases no fold names stay the test set."""
    path = Path(path)
    if path.exists():
        folds = read_folds(path)
        if len(folds) != n_folds:
            raise ValueError(
                f"splits file '{path}' has {len(folds)} folds, not the {n_folds} asked for; "
                f"use --folds {len(folds)}, or another --splits-file"
            )
    else:
        test = {c.case_id for c in split_cases(cases, seed=seed, n_test=n_test, val_fraction=0.0).test}
        folds = make_folds([c.case_id for c in cases if c.case_id not in test], n_folds, seed)
        if write:
            from ..atomic import atomic_path

            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(folds, indent=2), encoding="utf-8")
    return fold_split(cases, folds, fold, source=f"splits file '{path}'")
