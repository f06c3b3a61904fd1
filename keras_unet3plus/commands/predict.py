"""`unet3plus predict`: segment CT scans (NIfTI files, DICOM series) with a trained or exported model.

The preprocessing (HU window, input size, slice context) comes from the model's info file, never
from flags. A NIfTI mask has the input's shape, affine and orientation (uint8); a DICOM SEG
references the source series, so PACS viewers overlay it on the CT. Each output format is written
on its own: when one fails (a SEG the source headers cannot make), the report says which files
were written, which was not and why, and the exit code is 1.

Several models (``predict M1 M2 ... INPUT``) form an ensemble: their probabilities averaged per
slice, the CGM decision from the averaged ``cls`` (nnU-Net's ``-f 0 1 2 3 4``); they must share task,
classes and preprocessing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inference.options import PredictOptions
from ..options import add_flags, values_from_args

HELP = "segment CT scans (NIfTI files, folders, DICOM series) with a model (.keras, SavedModel, .onnx, .tflite)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="+",
        metavar="MODEL",
        help="model file or SavedModel folder (with its .unet3plus.json info); several: an "
        "ensemble averaging their probabilities (the last one is INPUT unless -i is given)",
    )
    parser.add_argument(
        "input",
        nargs="?",
        metavar="INPUT",
        help="a volume (.nii / .nii.gz), or a folder: NIfTI files (nnU-Net {case}_0000 names "
        "too) or DICOM (one output per CT series, searched recursively)",
    )
    parser.add_argument("-i", "--input-dir", help="folder of inputs (folder mode; same as a folder as INPUT)")
    parser.add_argument(
        "-o", "--output", required=True, help="output mask file (single volume) or folder (folder mode)"
    )
    add_flags(parser, PredictOptions)  # --batch-size, --threshold, --no-gate, --format, --quiet, ...
    parser.add_argument(
        "--runtime",
        choices=("model", "auto"),
        default="model",
        help="'model': run MODEL as given (default); 'auto': for a .keras MODEL, the fastest "
        "export beside it whose parity check passed (recorded by `unet3plus export`)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="compute precision of a .keras MODEL (bf16 is fast only on CPUs with "
        "AVX512_BF16/AMX; elsewhere it is emulated and slower)",
    )


def run(args: argparse.Namespace) -> int:
    from ..inference import Predictor

    models = list(args.model) + ([args.input] if args.input is not None else [])
    args.input = None if args.input_dir is not None or len(models) < 2 else models.pop()
    if (args.input is None) == (args.input_dir is None):
        print("unet3plus predict: give either an input file or folder, or -i/--input-dir", file=sys.stderr)
        return 2
    options = values_from_args(PredictOptions, args)
    # errors end in cli.main's one-line boundary (exit 1, traceback with --debug)
    from ..runtimes.cpu import cpu_info, precision_note

    choice: list[str] = []
    open_models = Predictor.from_path if len(models) == 1 else Predictor.from_paths
    predictor = open_models(
        models[0] if len(models) == 1 else models,
        runtime=args.runtime,
        precision=args.precision,
        notes=choice,
        **options,
    )
    _ = predictor.cfg  # validate the saved preprocessing before any work
    for line in choice:
        print(line)
    runtime = predictor.runtime
    print(
        f"running: {runtime.describe()}{', skip-absent' if predictor.options.skip_absent else ''} "
        f"on {cpu_info().summary()}"
    )
    note = precision_note(runtime.compute_precision)
    if note:
        print(f"note: {note}")
    source = args.input_dir or args.input
    if args.input is not None and not Path(args.input).is_dir():
        out = Path(args.output)
        if out.is_dir():
            out = out / Path(args.input).name
        predictor.predict_file(args.input, out)  # an output that fails ends in cli.main, naming the others
        for path in predictor.output_files(out).values():
            print(f"wrote {path}")
        return 0
    notes: list[str] = []
    results = predictor.predict_folder(source, args.output, notes=notes)
    for note in notes:
        print(f"skipped: {note}")
    failed = [r for r in results if not r.ok]
    partial = [r for r in failed if r.outputs]
    for r in results:
        for note in r.notes:
            print(f"note: {r.case_id}: {note}")
        if r.ok:
            written = " + ".join(str(p) for p in r.outputs.values()) or str(r.output_path)
            print(f"ok     {r.case_id} -> {written} ({r.seconds:.1f} s)")
        else:
            print(f"FAILED {r.case_id}: {r.error}", file=sys.stderr)
    print(
        f"{len(results) - len(failed)} of {len(results)} case(s) segmented into {args.output}"
        + (f"; {len(failed)} failed" if failed else "")
        + (f" ({len(partial)} of them with some outputs written, see above)" if partial else "")
    )
    return 1 if failed else 0
