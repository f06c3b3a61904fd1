"""`unet3plus predict`: segment NIfTI volumes with a trained or exported model.

The preprocessing (HU window, input size, slice context) comes from the model's info file, never
from flags; the mask is written with the input's shape, affine and orientation (uint8).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "segment NIfTI volume(s) with a model (.keras, SavedModel folder, .onnx, .tflite)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file or SavedModel folder (with its .unet3plus.json info)")
    parser.add_argument("input", nargs="?", help="input volume (.nii / .nii.gz)")
    parser.add_argument("-i", "--input-dir", help="folder of input volumes (folder mode)")
    parser.add_argument("-o", "--output", required=True,
                        help="output mask file (single volume) or folder (folder mode)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per model call (default 8)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="foreground probability threshold (binary models; default: the model's saved one)")
    parser.add_argument("--largest-component", action="store_true",
                        help="keep only the largest 3-D connected foreground component")
    parser.add_argument("--no-gate", action="store_true",
                        help="ignore the CGM organ-present decision (Keras training-form models only)")
    parser.add_argument("--no-overlap", action="store_true",
                        help="run reading, preprocessing and inference one after another (for timing)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..inference import load_model, predict_file, predict_folder

    if (args.input is None) == (args.input_dir is None):
        print("unet3plus predict: give either an input file or -i/--input-dir", file=sys.stderr)
        return 2
    # errors end in cli.main's one-line boundary (exit 1, traceback with --debug)
    loaded = load_model(args.model)
    _ = loaded.cfg  # validate the saved preprocessing before any work
    kwargs = dict(batch_size=args.batch_size, gate=not args.no_gate, threshold=args.threshold,
                  largest_component=args.largest_component, overlap=not args.no_overlap)
    if args.input is not None:
        out = Path(args.output)
        if out.is_dir():
            out = out / Path(args.input).name
        predict_file(loaded, args.input, out, progress=not args.quiet, **kwargs)
        print(f"wrote {out}")
        return 0
    results = predict_folder(loaded, args.input_dir, args.output, progress=not args.quiet, **kwargs)
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok:
            print(f"ok     {r.case_id} -> {r.output_path} ({r.seconds:.1f} s)")
        else:
            print(f"FAILED {r.case_id}: {r.error}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} case(s) segmented into {args.output}"
          + (f"; {len(failed)} failed" if failed else ""))
    if not results:
        print(f"error: no .nii / .nii.gz files in {args.input_dir}", file=sys.stderr)
        return 1
    return 1 if failed else 0
