"""`unet3plus check-data`: read every case of a dataset and report all problems at once, and what
the slice cache of `train --cache-dir` will take on disk (refused up front when it does not fit)."""

from __future__ import annotations

import argparse

HELP = "check a dataset before training: every case read, all problems in one table (exit 1 on errors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, help="dataset folder (LiTS, MSD, nnU-Net v2, images/ + labels/)")
    parser.add_argument("--layout", choices=("auto", "lits", "msd", "nnunet", "folders"), default="auto")
    parser.add_argument("--task", choices=("liver", "liver_tumour", "spleen"), default="liver")
    parser.add_argument("--workers", type=int, default=4, help="cases read in parallel (default 4)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=320,
        help="model input size, for the slice cache's size (default 320, the paper's)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="the folder `train --cache-dir` will use: exit 1 when its disk cannot hold the cache",
    )
    parser.add_argument(
        "--cache-dtype",
        choices=("float16", "uint8"),
        default="float16",
        help="cached image type (uint8: half the disk, quantised to 1/255 of the HU window)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.checks import check_dataset, format_problems

    problems = check_dataset(args.data_dir, args.layout, args.task, workers=args.workers, progress=not args.quiet)
    errors = [p for p in problems if p.severity == "error"]
    if problems:
        print(format_problems(problems))
    print(f"{args.data_dir}: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    plan = _cache_plan(args)
    if plan is not None:
        print(plan.summary())
        plan.require_space()  # the disk cannot hold it: one line, exit 1 (the CLI's error boundary)
    return 1 if errors else 0


def _cache_plan(args: argparse.Namespace):
    """What the slice cache of every case would take (headers only); None when discovery failed
    (the problems table says why)."""
    import warnings

    from ..data.cache import plan_cache
    from ..data.layouts import find_cases, task_for_dataset
    from ..data.preprocess import PreprocessConfig
    from ..data.volume import DataError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = [c for c in find_cases(args.data_dir, args.layout, unpaired="skip") if c.label_path is not None]
        spec = task_for_dataset(args.data_dir, args.task, args.layout)
        return plan_cache(args.cache_dir, spec, PreprocessConfig(image_size=args.image_size), cases, args.cache_dtype)
    except DataError:
        return None
