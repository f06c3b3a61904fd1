"""`unet3plus demo`: phantom data -> train -> evaluate on held-out cases -> export, in <= 10 minutes on a CPU."""

from __future__ import annotations

import argparse

HELP = "end-to-end demo on synthetic CT: generate, train, evaluate (per-volume Dice), export (<= 10 min on 2 CPU cores)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="unet3plus-demo", help="output folder (default ./unet3plus-demo)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="wall-clock budget for the whole demo, generation to export (default 10)",
    )
    parser.add_argument(
        "--task",
        default="liver",
        choices=("liver", "spleen"),
        help="liver (LiTS layout, default) or spleen (MSD Task09 layout)",
    )
    parser.add_argument("--cases", type=int, default=None, help="phantom cases to generate (default 60)")
    parser.add_argument("--no-export", dest="export", action="store_false", help="skip the ONNX / SavedModel export")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom data, split and training")
    parser.add_argument(
        "--reference-scan",
        default=None,
        metavar="DIR",
        help="also measure the model on a labelled real scan it never saw: DIR holds series/ "
        "(DICOM) or image.nii.gz and reference_labels.nii.gz (TotalSegmentator values: "
        "liver 5, spleen 1); skipped with a note when DIR is absent",
    )


def run(args: argparse.Namespace) -> int:
    from ..workflows.demo import DEMO_CASES, run_demo

    if args.minutes <= 1:
        raise SystemExit("unet3plus demo: error: --minutes must be > 1")
    res = run_demo(
        args.out,
        minutes=args.minutes,
        task=args.task,
        n_cases=args.cases or DEMO_CASES,
        export=args.export,
        seed=args.seed,
        reference_scan=args.reference_scan,
    )
    return 0 if res.mean_dice == res.mean_dice else 1
