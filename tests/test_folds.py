"""Cross-validation folds: one seeded case table per data set (nnU-Net's splits_final.json), made
once and reused by every fold, a table written by hand respected, and a fold run on the phantom."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keras_unet3plus.data.layouts import Case
from keras_unet3plus.data.splits import SPLITS_FILE, cross_validation_split, fold_split, make_folds, read_folds
from keras_unet3plus.training.config import TrainConfig


def _cases(n: int) -> list[Case]:
    return [Case(f"case_{i:02d}", Path(f"/d/{i}.nii.gz"), Path(f"/d/{i}_seg.nii.gz")) for i in range(n)]


@pytest.mark.parametrize("n, k", [(10, 5), (11, 5), (7, 3), (2, 2)])
def test_folds_are_disjoint_and_hold_out_every_case_once(n, k):
    ids = [c.case_id for c in _cases(n)]
    folds = make_folds(ids, k, seed=3)
    assert len(folds) == k
    held_out = [i for f in folds for i in f["val"]]
    assert sorted(held_out) == sorted(ids)  # every case exactly once
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        assert sorted(f["train"] + f["val"]) == sorted(ids)
        assert len(f["val"]) in (n // k, n // k + 1)
    assert make_folds(list(reversed(ids)), k, seed=3) == folds  # the set of ids decides, not their order
    if n > 2:
        assert make_folds(ids, k, seed=4) != folds  # the seed decides
    with pytest.raises(ValueError, match="folds"):
        make_folds(ids, n + 1)


def test_the_table_is_made_once_and_reused(tmp_path):
    cases, path = _cases(9), tmp_path / SPLITS_FILE
    s0 = cross_validation_split(cases, 3, 0, path, seed=1, n_test=0)
    table = json.loads(path.read_text())
    assert [sorted(f["val"]) for f in table] == [sorted(f["val"]) for f in read_folds(path)]
    assert [c.case_id for c in s0.val] == table[0]["val"] and not s0.test
    # another seed later (or another worker): the saved table decides
    s1 = cross_validation_split(cases, 3, 1, path, seed=99, n_test=0)
    assert json.loads(path.read_text()) == table
    assert [c.case_id for c in s1.val] == table[1]["val"]
    every = cross_validation_split(cases, 3, "all", path)
    assert len(every.train) == 9 and not every.val
    with pytest.raises(ValueError, match="3 folds, not the 5"):
        cross_validation_split(cases, 5, 0, path)


def test_a_test_set_stays_out_of_every_fold(tmp_path):
    cases = _cases(12)
    split = cross_validation_split(cases, 3, 2, tmp_path / SPLITS_FILE, n_test=3)
    table = read_folds(tmp_path / SPLITS_FILE)
    folded = {i for f in table for i in f["val"]}
    assert len(folded) == 9 and len(split.test) == 3 and not folded & {c.case_id for c in split.test}


def test_a_split_written_by_hand_is_respected(tmp_path):
    cases, path = _cases(6), tmp_path / "mine.json"
    mine = [
        {"train": ["case_00", "case_01", "case_02"], "val": ["case_03"]},
        {"train": ["case_03", "case_01", "case_02"], "val": ["case_00", "case_05"]},
    ]
    path.write_text(json.dumps(mine))
    split = cross_validation_split(cases, 2, 1, path, seed=0)
    assert [c.case_id for c in split.val] == ["case_00", "case_05"]
    assert [c.case_id for c in split.train] == ["case_01", "case_02", "case_03"]
    assert [c.case_id for c in split.test] == ["case_04"]  # named by no fold
    assert json.loads(path.read_text()) == mine  # never rewritten
    path.write_text(json.dumps([{"train": ["case_00"], "val": ["case_77"]}]))
    with pytest.raises(ValueError, match=r"mine.json.*case_77"):
        fold_split(cases, read_folds(path), 0, source=str(path))
    path.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match="mine.json"):
        read_folds(path)
    path.write_text(json.dumps([{"train": ["case_00"], "val": ["case_00"]}]))
    with pytest.raises(ValueError, match="both train and val"):
        read_folds(path)


def test_fold_settings_are_checked():
    TrainConfig(folds=5, fold="4").validate()
    TrainConfig(folds=5, fold="all").validate()
    for bad in (dict(fold="0"), dict(folds=5, fold="5"), dict(folds=5, fold="-1"), dict(folds=1)):
        with pytest.raises(ValueError, match="fold"):
            TrainConfig(**bad).validate()
    assert TrainConfig(out_dir="runs/liver/fold_0").splits_path() == Path("runs/liver") / SPLITS_FILE
    assert TrainConfig(splits_file="/x/s.json").splits_path() == Path("/x/s.json")


@pytest.fixture(scope="module")
def cv_runs(tmp_path_factory):
    """`recipes/train_liver.py --folds 2` on four phantom cases (every fold, then the CV report in
    runs/cross_validation): (data folder, runs folder)."""
    from keras_unet3plus.data.phantom import write_dataset
    from keras_unet3plus.workflows.recipe import main

    root = tmp_path_factory.mktemp("cv")
    data, out = root / "lits", root / "runs"
    write_dataset(data, 4, layout="lits", task="liver", shape=(32, 32, 8), seed=6)
    preset = dict(
        task="liver",
        layout="lits",
        image_size=32,
        filters=(4, 8, 16, 32, 64),
        cat_channels=4,
        deep_supervision=False,
        batch_size=2,
        steps_per_epoch=1,
        epochs=1,
        augment=False,
        verbose=0,
    )
    assert main(preset, "test", ["--data-dir", str(data), "--out-dir", str(out), "--folds", "2", "--n-test", "0"]) == 0
    return data, out


def test_the_recipe_trains_every_fold_on_its_cases(cv_runs):
    """One run folder per fold, one table beside them; a fold's held-out cases validate."""
    data, out = cv_runs
    table = read_folds(out / SPLITS_FILE)
    assert sorted(table[0]["val"] + table[1]["val"]) == sorted(f"volume-{i}" for i in range(4))
    for k in range(2):
        split = json.loads((out / f"fold_{k}" / "split.json").read_text())
        assert split["val"] == table[k]["val"] and split["train"] == table[k]["train"] and not split["test"]
        assert (out / f"fold_{k}" / "model.keras").is_file()


def test_a_resumed_fold_refuses_another_split(cv_runs, capsys):
    """`unet3plus train --folds 2 --fold 1` into fold 0's folder: one error line, the folder untouched."""
    from keras_unet3plus import cli

    data, out = cv_runs
    run = out / "fold_0"
    base = [
        "train",
        "--data-dir",
        str(data),
        "--layout",
        "lits",
        "--image-size",
        "32",
        "--filters",
        "4",
        "8",
        "16",
        "32",
        "64",
        "--cat-channels",
        "4",
        "--batch-size",
        "2",
        "--steps-per-epoch",
        "1",
        "--no-augment",
        "--no-deep-supervision",
        "--verbose",
        "0",
        "--folds",
        "2",
        "--n-test",
        "0",
        "--out-dir",
        str(run),
    ]
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert cli.main(base + ["--fold", "1", "--epochs", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "another split" in err[0], err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert cli.main(base + ["--epochs", "2"]) == 1  # folds without a fold
    assert "without fold" in capsys.readouterr().err


def test_evaluate_cv_scores_every_fold_out_of_fold(cv_runs, tmp_path, capsys):
    """`evaluate --cv fold_0 fold_1` (the recipe ran it): every case once, by the fold that held it
    out; the per-fold rows are the means of their cases; a case held out twice is refused."""
    import csv

    import numpy as np

    from keras_unet3plus import cli

    data, out = cv_runs
    runs = [str(out / f"fold_{k}") for k in range(2)]
    table = read_folds(out / SPLITS_FILE)
    cv = out / "cross_validation"
    rows = list(csv.DictReader((cv / "per_case.csv").open()))
    assert sorted(r["case"] for r in rows) == sorted(f"volume-{i}" for i in range(4))
    for r in rows:
        assert r["case"] in table[int(r["fold"])]["val"] and r["status"] == "ok"
    summary = json.loads((cv / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == ["0", "1"]
    for f in summary["folds"]:
        dice = [float(r["dice"]) for r in rows if r["fold"] == f["fold"]]
        assert f["n_ok"] == len(dice) and f["run"] == runs[int(f["fold"])]
        assert abs(f["structures"]["liver"]["dice"]["mean"] - np.mean(dice)) < 1e-5
    mean = summary["structures"]["liver"]["dice"]["mean"]
    assert abs(mean - np.mean([float(r["dice"]) for r in rows])) < 1e-5
    assert "## Per fold" in (cv / "report.md").read_text()
    capsys.readouterr()
    assert cli.main(["evaluate", "--cv", runs[0], runs[0], "--out", str(tmp_path / "twice")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "also held out" in err[0], err
