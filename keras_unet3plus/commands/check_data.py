"""`unet3plus check-data`: read every case of a dataset and report all problems at once."""
from __future__ import annotations

import argparse

HELP = "check a dataset before training: every case read, all problems in one table (exit 1 on errors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="dataset folder (LiTS, MSD, nnU-Net v2, images/ + labels/)")
    parser.add_argument("--layout", choices=("auto", "lits", "msd", "nnunet", "folders"), default="auto")
    parser.add_argument("--task", choices=("liver", "liver_tumour", "spleen"), default="liver")
    parser.add_argument("--workers", type=int, default=4, help="cases read in parallel (default 4)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.checks import check_dataset, format_problems

    problems = check_dataset(args.data_dir, args.layout, args.task, workers=args.workers, progress=not args.quiet)
    errors = [p for p in problems if p.severity == "error"]
    if problems:
        print(format_problems(problems))
    print(f"{args.data_dir}: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    return 1 if errors else 0
