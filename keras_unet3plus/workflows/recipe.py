"""Shared driver of ``recipes/train_liver.py`` and ``recipes/train_spleen.py``.

A recipe is a preset (the paper's setting for one data set) plus this driver: without a data folder
(or with ``--demo``) it runs :func:`keras_unet3plus.workflows.demo.run_demo`; with ``--data-dir`` it
trains with the preset (every ``unet3plus train`` flag and ``--config`` still override it), then
evaluates the best model on the held-out test cases (``metrics.json`` and ``overlay.png`` in the
run folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from collections.abc import Sequence

PAPER_FILTERS = (64, 128, 256, 512, 1024)
ENCODERS = {"plain": "unet", "resnet101": "resnet101"}


def main(preset: dict[str, Any], description: str, argv: Sequence[str] | None = None) -> int:
    from ..training.flags import add_config_flags, config_from_args

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="phantom data, small model, <= 10 minutes on a CPU (default when no --data-dir)",
    )
    parser.add_argument("--demo-out", default=None, help="demo output folder (default ./unet3plus-demo-<task>)")
    parser.add_argument("--minutes", type=float, default=10.0, help="demo wall-clock budget (default 10)")
    parser.add_argument(
        "--encoder",
        choices=sorted(ENCODERS),
        default="plain",
        help="plain: the paper's 64..1024 encoder (default); resnet101: keras.applications "
        "ResNet101 (ImageNet weights only with --weights imagenet from the local Keras cache)",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON settings (flags override it)")
    parser.add_argument(
        "--no-evaluate", dest="evaluate", action="store_false", help="skip the held-out test evaluation after training"
    )
    add_config_flags(parser, skip=("backbone",))
    args = parser.parse_args(argv)
    task = preset["task"]

    if args.demo or not getattr(args, "data_dir", None):
        if not args.demo:
            print(
                f"No --data-dir given: running the demo instead (synthetic phantom {task} data, small model, "
                f"<= {args.minutes:g} minutes). For the paper setting pass --data-dir with a real download."
            )
        from .demo import run_demo

        res = run_demo(args.demo_out or f"unet3plus-demo-{task}", minutes=args.minutes, task=task)
        return 0 if res.mean_dice == res.mean_dice else 1

    base = dict(preset, backbone=ENCODERS[args.encoder])
    try:
        cfg = config_from_args(args, skip=("demo", "demo_out", "minutes", "encoder", "config", "evaluate"), base=base)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..training import train

    if cfg.folds is not None and cfg.fold is None:  # every fold, each in OUT_DIR/fold_K (the table in OUT_DIR)
        from dataclasses import replace
        from pathlib import Path

        for k in range(cfg.folds):
            fold_cfg = replace(cfg, fold=str(k), out_dir=str(Path(cfg.out_dir) / f"fold_{k}"))
            result = train(fold_cfg)
            print(f"fold {k} model: {result.model_path}")
            if args.evaluate and result.model_path is not None:
                evaluate_test_split(fold_cfg, result)
        if args.evaluate:  # the folds' out-of-fold predictions scored together (nnU-Net's CV summary)
            from .evaluate import evaluate_cross_validation

            report = evaluate_cross_validation(
                [Path(cfg.out_dir) / f"fold_{k}" for k in range(cfg.folds)], Path(cfg.out_dir) / "cross_validation"
            )
            print(f"cross-validation ({report.summary['n_ok']} cases): {report.files['markdown']}")
        return 0
    result = train(cfg)
    print(f"model: {result.model_path}")
    if args.evaluate and result.model_path is not None:
        evaluate_test_split(cfg, result)
    return 0


def evaluate_test_split(cfg, result) -> dict:
    """Per-volume metrics of the trained model on the run's held-out test cases."""
    from pathlib import Path

    from ..data import find_cases, get_task
    from ..modelinfo import atomic_write_text
    from .evaluate import evaluate_held_out, json_default

    test_ids = set(result.split.get("test", []))
    cases = [c for c in find_cases(cfg.data_dir, cfg.layout) if c.case_id in test_ids]
    if not cases:
        print("no held-out test cases: skipping the evaluation")
        return {}
    out = Path(cfg.out_dir)
    metrics, overlay = evaluate_held_out(Path(result.model_path), cases, get_task(cfg.task), out)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=json_default))
    print(
        f"held-out test per-volume Dice ({len(cases)} cases): {metrics['mean']['dice']:.4f} "
        f"-> {out / 'metrics.json'}" + (f", overlay {overlay}" if overlay else "")
    )
    return metrics
