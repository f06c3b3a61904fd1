"""`evaluate --cv`'s refusals, each one line naming the run, before any model runs (run folders
written by hand: a config, a split and a stand-in model file; no training)."""

from __future__ import annotations

import json

import pytest

from keras_unet3plus.data.volume import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from keras_unet3plus.data.phantom import write_dataset

    root = tmp_path_factory.mktemp("cv_refusals")
    write_dataset(root / "d1", 2, layout="lits", task="liver", shape=(16, 16, 8), seed=1)
    return root


def _run(root, name, held_out, fold, data="d1", task="liver", model=True):
    """A run folder as `train --folds 3 --fold K` leaves it (`fold=None`: a run of all cases)."""
    from keras_unet3plus.training.config import TrainConfig

    run = root / name
    run.mkdir()
    folds = 3 if fold is not None else None
    TrainConfig(data_dir=str(root / data), task=task, fold=fold, folds=folds, layout="lits").save(run)
    (run / "split.json").write_text(json.dumps({"train": [], "val": held_out}))
    if model:
        (run / "model.keras").write_bytes(b"never loaded")
    return run


def test_cross_validation_refuses_bad_runs_in_the_order_given(root):
    from keras_unet3plus.workflows.evaluate import evaluate_cross_validation

    def refusal(*runs):
        with pytest.raises((ValueError, DataError)) as exc:
            evaluate_cross_validation(list(runs), root / "out")
        return str(exc.value).replace(str(root), "R")

    a = _run(root, "a", ["volume-0", "volume-1"], 0)
    everything = _run(root, "all", [], None)
    other_data = _run(root, "other", ["volume-2"], 1, data="d2")
    twice = _run(root, "twice", ["volume-1"], 1)
    absent = _run(root, "absent", ["volume-9"], 1)
    unfinished = _run(root, "unfinished", ["volume-3"], 1, model=False)
    spleen = _run(root, "spleen", ["volume-5"], 2, task="spleen")
    assert refusal() == "--cv needs the run folders of the folds"
    assert refusal(root / "nope") == "R/nope: not a finished training run (config.yaml missing)"
    assert refusal(unfinished) == "R/unfinished: not a finished training run (model.keras missing)"
    assert refusal(a, everything).startswith("R/all: holds no cases out (fold None)")
    assert refusal(a, other_data) == "R/other and R/a are runs of different data (R/d2, liver vs R/d1, liver)"
    assert refusal(a, spleen) == "R/spleen and R/a are runs of different data (R/d1, spleen vs R/d1, liver)"
    assert (
        refusal(a, twice) == "R/twice: case volume-1 is also held out by the run of fold 0; give each fold's run once"
    )
    assert refusal(a, absent) == "R/d1: held-out case(s) not found (first: volume-9)"
    # the runs are read in the order given: the first bad one is the one named
    assert refusal(a, other_data, unfinished).startswith("R/other and R/a")
    assert refusal(a, unfinished, other_data).startswith("R/unfinished: not a finished")
