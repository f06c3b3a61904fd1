"""Dice of a phantom-trained model on a real abdominal CT (the measuring stick of issue 14).

Reads the scan in ``../shared/realct`` (or ``--realct DIR``: ``series/`` DICOM or ``image.nii.gz``,
and ``reference_labels.nii.gz`` with TotalSegmentator values, liver 5, spleen 1) with the package's
readers, predicts with the model's own preprocessing (its sidecar) and prints the Dice of the
organ, per slice too. The demo does the same with ``--reference-scan``. Never train on this scan,
never tune on its pixels: it only measures.

    .venv/bin/python benchmarks/real_ct_dice.py --model RUN/model.keras [--task liver|spleen]
        [--overlay out.png] [--json results.jsonl]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"   # ../shared/realct beside the repo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model.keras with its .unet3plus.json sidecar")
    ap.add_argument("--task", choices=("liver", "spleen"), default=None,
                    help="organ to score (default: the model's task)")
    ap.add_argument("--realct", default=str(DEFAULT_REALCT))
    ap.add_argument("--overlay", default=None, help="write a TP/FN/FP montage PNG here")
    ap.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = ap.parse_args(argv)

    from keras_unet3plus.workflows.reference_scan import measure_on_reference_scan

    if not Path(args.realct).is_dir():
        print(f"no real CT at {args.realct} (need series/ and reference_labels.nii.gz)", file=sys.stderr)
        return 2
    real = measure_on_reference_scan(args.model, args.realct, organ=args.task, overlay=args.overlay)
    print(real.line())
    print("per-slice Dice (inferior -> superior): " + " ".join(f"{v:.2f}" for v in real.per_slice_dice))
    if real.overlay:
        print(f"overlay: {real.overlay}")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"model": args.model, "task": real.organ, "dice": real.dice}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
