"""Dice of a phantom-trained model on a real abdominal CT (the measuring stick of issue 14).

Reads the scan in ``../shared/realct`` (or ``--realct DIR``: ``series/`` DICOM or ``image.nii.gz``,
and ``reference_labels.nii.gz`` with TotalSegmentator values, liver 5, spleen 1) with the package's
readers, predicts with the model's own preprocessing (its sidecar) and prints the Dice of the
organ, per slice too, then the same on acquisition variants derived from the scan (3 mm voxels, a
cropped non-square field of view, more noise, both; :mod:`keras_unet3plus.data.variants`). The demo
does the same with ``--reference-scan``. Never train on this scan, never tune on its pixels: it
only measures.

    .venv/bin/python benchmarks/real_ct_dice.py --model RUN/model.keras [--task liver|spleen]
        [--overlay out.png] [--worst-overlay worst.png] [--json results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"  # ../shared/realct beside the repo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model.keras with its .unet3plus.json sidecar")
    ap.add_argument(
        "--task", choices=("liver", "spleen"), default=None, help="organ to score (default: the model's task)"
    )
    ap.add_argument("--realct", default=str(DEFAULT_REALCT))
    ap.add_argument("--overlay", default=None, help="write a TP/FN/FP montage PNG of the scan here")
    ap.add_argument("--worst-overlay", default=None, help="write the montage of the worst variant here")
    ap.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = ap.parse_args(argv)

    from keras_unet3plus.workflows.reference_scan import measure_acquisition_variants, variants_table

    if not Path(args.realct).is_dir():
        print(f"no real CT at {args.realct} (need series/ and reference_labels.nii.gz)", file=sys.stderr)
        return 2
    measures = measure_acquisition_variants(
        args.model, args.realct, organ=args.task, overlay=args.overlay, worst_overlay=args.worst_overlay
    )
    for m in measures:
        print(m.line())
        print("  per-slice Dice (inferior -> superior): " + " ".join(f"{v:.2f}" for v in m.per_slice_dice))
    print("\n".join(variants_table(measures)))
    for m in measures:
        if m.overlay:
            print(f"overlay ({m.variant}): {m.overlay}")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {"model": args.model, "task": measures[0].organ, "dice": {m.variant: m.dice for m in measures}}
                )
                + "\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
