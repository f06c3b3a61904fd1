"""5-fold cross-validation of the demo preset on the phantom, and the 5-fold ensemble against each fold (issue 31).

The field reports 5-fold cross-validation and submits the folds' ensemble (nnU-Net's protocol). This
runs it end to end through the CLI, on the demo's data set (60 phantom liver cases, 128x128x32) and
preset (``workflows/demo.py`` ``DEMO_PRESET``) under a per-fold time budget:

1. ``unet3plus phantom``, then ``unet3plus train --folds 5 --fold K`` for every fold (one process
   each; the 6 ``--n-test`` cases belong to no fold, so every model and the ensemble are scored on
   cases none of them saw);
2. ``unet3plus evaluate --cv`` (each fold predicts the cases it held out: the cross-validation Dice);
3. each fold's ``best.keras`` alone, and the five as one ensemble (``Predictor.from_paths``,
   probabilities averaged per slice), each in a fresh process (so its peak RSS is its own): Dice on
   the held-out phantom cases and on the real CT in ``../shared/realct`` (liver, TotalSegmentator
   value 5; never trained or tuned on), seconds per volume (read excluded; the first volume is
   predicted once untimed, so graph tracing is not counted), model load seconds and peak RSS.

Results are written after every stage (``--out``: ``cross_validation.json`` and ``.txt``), so a run
cut short still leaves its numbers; ``--results`` names the copies kept in git.

    .venv/bin/python benchmarks/cross_validation.py --max-minutes 3.5      # ~30 min on 2 cores
    .venv/bin/python benchmarks/cross_validation.py --smoke                # tiny model, 2 folds: checks the script
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("UNET3PLUS_QUIET_START", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import markdown_table, median, peak_rss_mib  # noqa: E402
from real_ct_dice import DEFAULT_REALCT  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "keras_unet3plus.cli"]
#: the smoke setting: a model of a few thousand weights, a few steps, tiny volumes (checks the script, not Dice)
SMOKE = dict(image_size=32, filters=(4, 8, 16, 32, 64), cat_channels=4, batch_size=4, val_batch_size=8)


# -- the child: one predictor (one model or the ensemble) in a fresh process -------------------------------
def child(spec: dict) -> dict:
    """Dice, seconds per volume and peak RSS of one predictor on the held-out phantom cases and the real CT."""
    import numpy as np

    from keras_unet3plus.data import get_task
    from keras_unet3plus.data.readers import read_volume
    from keras_unet3plus.inference import Predictor
    from keras_unet3plus.metrics import dice
    from keras_unet3plus.workflows.reference_scan import TOTALSEGMENTATOR_VALUES, load_reference_scan

    t0 = time.perf_counter()
    models = spec["models"]
    predictor = Predictor.from_path(models[0]) if len(models) == 1 else Predictor.from_paths(models)
    load_s = time.perf_counter() - t0
    task = get_task(spec["task"])
    scans = []  # (name, HU volume, reference mask)
    for name, image, label in spec["phantom"]:
        truth = task.map_label(np.rint(read_volume(label).image).astype(np.int16)) == 1
        scans.append(("phantom", name, np.asarray(read_volume(image).image, np.float32), truth))
    if spec.get("realct"):
        _, real = load_reference_scan(spec["realct"])
        scans.append(("realct", "realct", real.hu, real.labels == TOTALSEGMENTATOR_VALUES[task.organ]))
    predictor.predict_volume(scans[0][2])  # untimed: graph tracing
    rows = []
    for kind, name, hu, truth in scans:
        start = time.perf_counter()
        pred = predictor.predict_volume(hu) > 0
        seconds = time.perf_counter() - start
        rows.append(dict(kind=kind, case=name, dice=float(dice(pred, truth)), seconds=seconds, slices=hu.shape[2]))
    return dict(load_s=load_s, rows=rows, peak_rss_mib=peak_rss_mib())


def run_child(spec: dict) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"predict child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["process_wall_s"] = wall
    return result


# -- the parent -------------------------------------------------------------------------------------------
def cli(args: list[str], log: Path) -> float:
    """Run one ``unet3plus`` command (output to ``log``); its wall seconds. A failure stops the benchmark."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(CLI + args, stdout=fh, stderr=subprocess.STDOUT, cwd=log.parent)
    if proc.returncode:
        raise RuntimeError(f"unet3plus {args[0]} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - start


def best_val_dice(run: Path) -> float | None:
    """The best per-volume validation Dice in a run's log.csv (on the cases its fold held out)."""
    with open(run / "log.csv", encoding="utf-8") as fh:
        values = [float(r["val_dice"]) for r in csv.DictReader(fh) if r.get("val_dice") not in (None, "", "nan")]
    return max(values) if values else None


def cv_dice(summary: dict) -> dict:
    """Per-case Dice of ``evaluate --cv``'s summary.json: count, mean and (population) std."""
    import statistics

    values = [c["metrics"][next(iter(c["metrics"]))]["dice"] for c in summary["cases"] if c["status"] == "ok"]
    return dict(cases=len(values), dice_mean=statistics.fmean(values), dice_std=statistics.pstdev(values))


def summarise(pred: dict) -> dict:
    phantom = [r for r in pred["rows"] if r["kind"] == "phantom"]
    real = [r for r in pred["rows"] if r["kind"] == "realct"]
    return dict(
        phantom_dice_mean=sum(r["dice"] for r in phantom) / len(phantom),
        phantom_dice_min=min(r["dice"] for r in phantom),
        phantom_s_per_volume=median([r["seconds"] for r in phantom]),
        realct_dice=real[0]["dice"] if real else None,
        realct_s=real[0]["seconds"] if real else None,
        load_s=pred["load_s"],
        process_wall_s=pred["process_wall_s"],
        peak_rss_mib=pred["peak_rss_mib"],
    )


def _f(value, fmt: str = "{:.4f}") -> str:
    return "-" if value is None else fmt.format(value)


def report(res: dict) -> str:
    """The markdown table and the verdict lines."""
    rows, singles = [], []
    for name, r in res["predict"].items():
        s = summarise(r)
        oof = res["folds"].get(name, {}).get("val_dice") if name != "ensemble" else None
        if name != "ensemble":
            singles.append(s)
        rows.append(
            [
                name,
                _f(oof),
                _f(s["phantom_dice_mean"]),
                _f(s["phantom_dice_min"]),
                _f(s["realct_dice"]),
                _f(s["phantom_s_per_volume"], "{:.2f}"),
                _f(s["realct_s"], "{:.2f}"),
                _f(s["load_s"], "{:.1f}"),
                _f(s["peak_rss_mib"], "{:.0f}"),
            ]
        )
    headers = [
        "model",
        "val Dice (own held-out fold)",
        "held-out phantom Dice mean",
        "min",
        "real CT liver Dice",
        "s / phantom volume",
        "s / real CT",
        "load s",
        "peak RSS MiB",
    ]
    p = res["params"]
    lines = [
        f"# {p['folds']}-fold cross-validation of the demo preset on the phantom, and the ensemble",
        "",
        f"machine: {res['machine']}; date {res['date']}; commit {res['commit']}",
        f"command: {res['command']}",
        f"data: {p['cases']} phantom liver cases {p['shape']}, {p['n_test']} held out of every fold "
        f"({', '.join(res.get('test_cases', []))}); per fold at most {p['max_minutes']} min of training "
        f"({p['steps_per_epoch']} steps per epoch)",
        "",
    ]
    for name, f in res["folds"].items():
        lines.append(
            f"{name}: {f['train_cases']} train / {f['val_cases']} val cases, {f['epochs']} epochs, "
            f"train wall {f['train_s']:.0f} s, best val Dice {_f(f['val_dice'])}"
        )
    if "cv" in res:
        cv = res["cv"]
        lines.append(
            f"evaluate --cv (each fold predicts the cases it held out, {cv['cases']} cases): "
            f"Dice mean {_f(cv['dice_mean'])} +- {_f(cv['dice_std'])} ({cv['wall_s']:.0f} s)"
        )
    real = [r for pred in res["predict"].values() for r in pred["rows"] if r["kind"] == "realct"][:1]
    if real:
        lines.append(f"real CT: {real[0]['slices']} axial slices, never trained or tuned on")
    if rows:
        lines += ["", markdown_table(headers, rows)]
    if singles and "ensemble" in res["predict"]:
        e = summarise(res["predict"]["ensemble"])
        for key, what in (("phantom_dice_mean", "held-out phantom"), ("realct_dice", "real CT")):
            vals = [s[key] for s in singles if s[key] is not None]
            if vals and e[key] is not None:
                lines.append(
                    f"{what}: ensemble {e[key]:.4f} vs single folds mean {sum(vals) / len(vals):.4f}, "
                    f"best {max(vals):.4f}, worst {min(vals):.4f} "
                    f"({e[key] - sum(vals) / len(vals):+.4f} vs the mean fold)"
                )
        one = singles[0]
        lines.append(
            f"cost: ensemble {e['phantom_s_per_volume']:.2f} s per phantom volume vs {one['phantom_s_per_volume']:.2f} "
            f"(fold_0), peak RSS {e['peak_rss_mib']:.0f} vs {one['peak_rss_mib']:.0f} MiB"
        )
    return "\n".join(lines) + "\n"


def save(res: dict, out: Path, results: Path | None) -> None:
    text = report(res)
    for folder in filter(None, (out, results)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cross_validation.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        (folder / "cross_validation.txt").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="cv-benchmark", help="working folder (data, runs, logs, results)")
    ap.add_argument("--results", default=None, help="also write the results here (e.g. docs/results)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cases", type=int, default=None, help="phantom cases (default: the demo's 60)")
    ap.add_argument("--n-test", type=int, default=None, help="cases in no fold (default: the demo's 6)")
    ap.add_argument("--max-minutes", type=float, default=3.5, help="training budget per fold")
    ap.add_argument("--steps-per-epoch", type=int, default=40, help="short epochs, so the schedule fits the budget")
    ap.add_argument("--realct", default=str(DEFAULT_REALCT))
    ap.add_argument("--smoke", action="store_true", help="tiny model, volumes and steps: checks the script")
    ap.add_argument(
        "--reuse-folds",
        action="store_true",
        help="keep the fold runs (and their training figures) already in --out: measure predict again",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0

    from _common import machine_line

    from keras_unet3plus.data import find_cases
    from keras_unet3plus.training.config import TrainConfig
    from keras_unet3plus.workflows.demo import DEMO_CASES, DEMO_PRESET, DEMO_SHAPE, DEMO_TEST

    out = Path(args.out).resolve()
    results = Path(args.results).resolve() if args.results else None
    (out / "logs").mkdir(parents=True, exist_ok=True)
    cases = args.cases or (12 if args.smoke else DEMO_CASES)
    n_test = args.n_test if args.n_test is not None else (2 if args.smoke else DEMO_TEST)
    shape = (64, 64, 8) if args.smoke else DEMO_SHAPE
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    res: dict = dict(
        machine=machine_line(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        commit=commit.stdout.strip() or "unknown",
        command="python " + " ".join([Path(__file__).relative_to(ROOT).as_posix(), *(argv or sys.argv[1:])]),
        params=dict(
            folds=args.folds,
            cases=cases,
            n_test=n_test,
            shape="x".join(map(str, shape)),
            max_minutes=args.max_minutes,
            steps_per_epoch=args.steps_per_epoch,
            smoke=args.smoke,
        ),
        folds={},
        predict={},
    )

    # 1. data and the folds' configuration (the demo preset; flags pick the fold)
    data = out / "data"
    if not (data / "done").exists():
        shape_flag = "x".join(map(str, shape))
        cli(
            ["phantom", str(data), "--layout", "lits", "--cases", str(cases), "--shape", shape_flag],
            out / "logs/phantom.log",
        )
        (data / "done").write_text("", encoding="utf-8")
    cv = out / "cv"
    cv.mkdir(exist_ok=True)
    preset = dict(DEMO_PRESET, **(SMOKE if args.smoke else {}))
    cfg = TrainConfig.from_sources(
        None,
        dict(
            task="liver",
            layout="lits",
            data_dir=str(data),
            n_test=n_test,
            split_seed=0,
            folds=args.folds,
            max_minutes=args.max_minutes,
            steps_per_epoch=args.steps_per_epoch,
            verbose=0,
        ),
        base=preset,
    )
    config = cfg.save(cv, "cv_config.yaml")

    # 2. every fold, then its out-of-fold score
    runs = []
    before = out / "cross_validation.json"
    trained = json.loads(before.read_text(encoding="utf-8"))["folds"] if before.exists() else {}
    for k in range(args.folds):
        run = cv / f"fold_{k}"
        if args.reuse_folds and (run / "best.keras").exists() and f"fold_{k}" in trained:
            seconds = trained[f"fold_{k}"]["train_s"]
        else:
            seconds = cli(
                ["train", "--config", str(config), "--out-dir", str(run), "--fold", str(k)],
                out / f"logs/train_fold_{k}.log",
            )
        split = json.loads((run / "split.json").read_text(encoding="utf-8"))
        with open(run / "log.csv", encoding="utf-8") as fh:
            epochs = len(list(csv.DictReader(fh)))
        res["folds"][f"fold_{k}"] = dict(
            train_s=seconds,
            val_dice=best_val_dice(run),
            epochs=epochs,
            train_cases=len(split["train"]),
            val_cases=len(split["val"]),
        )
        runs.append(run)
        print(f"fold {k}: {seconds:.0f} s, best val Dice {res['folds'][f'fold_{k}']['val_dice']}", flush=True)
        save(res, out, results)
    folds = json.loads((cv / "splits_final.json").read_text(encoding="utf-8"))
    named = {i for f in folds for i in f["val"]}
    test = [c for c in find_cases(data, "lits") if c.case_id not in named]
    res["test_cases"] = [c.case_id for c in test]

    # 3. each fold alone and the ensemble, on cases no fold saw and on the real CT
    spec = dict(
        task="liver",
        phantom=[[c.case_id, str(c.image_path), str(c.label_path)] for c in test],
        realct=args.realct if Path(args.realct).is_dir() else None,
    )
    models = [str(run / "best.keras") for run in runs]
    for name, members in [*((f"fold_{k}", [m]) for k, m in enumerate(models)), ("ensemble", models)]:
        res["predict"][name] = run_child(dict(spec, models=members))
        s = summarise(res["predict"][name])
        print(f"{name}: phantom Dice {s['phantom_dice_mean']:.4f}, real CT {_f(s['realct_dice'])}", flush=True)
        save(res, out, results)

    # 4. the cross-validation figure: every fold predicts the cases it held out
    seconds = cli(
        ["evaluate", "--cv", *map(str, runs), "--out", str(cv / "evaluation"), "--quiet"], out / "logs/cv.log"
    )
    summary = json.loads((cv / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    res["cv"] = dict(wall_s=seconds, summary={k: v for k, v in summary.items() if k != "cases"}, **cv_dice(summary))
    save(res, out, results)
    print(report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
