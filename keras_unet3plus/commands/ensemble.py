"""`unet3plus ensemble`: masks from saved probabilities averaged (nnU-Net's ``nnUNetv2_ensemble``).

Inputs are what ``unet3plus predict --save-probabilities`` wrote: ``.npz`` files of one case, or
folders of them (one per model; every folder must hold the same cases). The average is the one an
ensemble prediction makes (``predict M1 M2 ... INPUT``): probabilities averaged, the CGM gate from
the averaged per-slice output, then the threshold or argmax. Files of another grid, task or class
count are refused in one line naming them.
"""

from __future__ import annotations

import argparse

from ..inference.options import PredictOptions
from ..options import add_flags, values_from_args

HELP = "average saved probabilities (predict --save-probabilities) of several models into masks"

#: the prediction options that apply to saved probabilities
_OPTIONS = ("gate", "threshold", "largest_component")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="PROBABILITIES",
        help="probability files (.npz) of one case, or folders of them (one per model)",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="mask file (.nii.gz) for files of one case; an output folder for folders"
    )
    skip = tuple(f for f in PredictOptions.__dataclass_fields__ if f not in _OPTIONS)
    add_flags(parser, PredictOptions, skip=skip)


def run(args: argparse.Namespace) -> int:
    from ..inference.probabilities import ensemble_files

    options = {k: v for k, v in values_from_args(PredictOptions, args).items() if k in _OPTIONS}
    # errors (a missing or foreign file, mismatched grids) end in cli.main's one-line boundary
    for path in ensemble_files(args.inputs, args.output, **options):
        print(f"wrote {path}")
    return 0
