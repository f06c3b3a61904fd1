"""`unet3plus evaluate`: LiTS metrics (Dice, VOE, RVD, ASSD, HD95, MSSD) per case and summarised,
as CSV, JSON and markdown, with the paper's TP / FN / FP overlays.

Three forms: ``--pred DIR --gt DIR`` (masks already predicted), ``--model M --data-dir D``
(predict every labelled case of a dataset folder, then evaluate), or ``--cv RUN_0 ... RUN_4``
(cross-validation: each fold's model on the cases its fold held out, scored together and per fold).
"""

from __future__ import annotations

import argparse
import sys

HELP = "evaluate predicted masks against ground truth (per-case table, summary, overlays)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", help="folder of predicted masks")
    parser.add_argument("--gt", help="ground truth: a LiTS / MSD dataset folder or a folder of label files")
    parser.add_argument("--images", help="folder of CT volumes for the overlays (when --gt holds labels only)")
    parser.add_argument("--model", help="model to predict with (with --data-dir)")
    parser.add_argument(
        "--data-dir", help="labelled dataset folder (LiTS, MSD, nnU-Net v2, images/+labels/) for --model"
    )
    parser.add_argument(
        "--cv",
        nargs="+",
        metavar="RUN",
        help="run folders of the cross-validation folds (train --folds N --fold K): each predicts "
        "its held-out cases, all scored together, with per-fold rows",
    )
    parser.add_argument(
        "--task", default=None, help="liver, liver_tumour or spleen (default: liver, or the model's task with --model)"
    )
    parser.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    parser.add_argument(
        "--overlays",
        type=int,
        default=0,
        metavar="N",
        help="write an overlay montage of N slices per case (default 0: none)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--largest-component", action="store_true", help="(with --model) keep the largest component")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_folders
    from ..workflows.evaluate import evaluate_cross_validation, evaluate_model

    folder_form = args.pred is not None or args.gt is not None
    model_form = args.model is not None or args.data_dir is not None
    cv_form = args.cv is not None
    if (
        folder_form + model_form + cv_form != 1
        or (folder_form and not (args.pred and args.gt))
        or (model_form and not (args.model and args.data_dir))
    ):
        print(
            "unet3plus evaluate: give either --pred DIR --gt DIR, --model M --data-dir D, or --cv RUN ...",
            file=sys.stderr,
        )
        return 2
    # errors (a missing folder, an unreadable file) end in cli.main's one-line boundary
    if cv_form:
        report = evaluate_cross_validation(
            args.cv,
            args.out,
            overlays=args.overlays,
            batch_size=args.batch_size,
            largest_component=args.largest_component,
            progress=not args.quiet,
        )
    elif folder_form:
        report = evaluate_folders(
            args.pred,
            args.gt,
            args.task or "liver",
            args.out,
            images_dir=args.images,
            overlays=args.overlays,
            progress=not args.quiet,
        )
    else:
        report = evaluate_model(
            args.model,
            args.data_dir,
            args.out,
            task=args.task,
            overlays=args.overlays,
            batch_size=args.batch_size,
            largest_component=args.largest_component,
            progress=not args.quiet,
        )
    print(report.files["markdown"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in report.files.values()))
    for c in report.failed:
        print(f"FAILED {c.case_id}: {c.error}", file=sys.stderr)
    if not report.cases:
        return 1
    return 1 if report.failed else 0
