"""Dice of a phantom-trained model on a real abdominal CT (the measuring stick of issue 14).

Reads the DICOM series in ``../shared/realct/series`` (or ``--realct DIR``) with the package's reader,
checks its grid against ``reference_labels.nii.gz`` (TotalSegmentator, liver 5, spleen 1), predicts
with the model's own preprocessing (its sidecar) and prints the Dice of the task's organ. Never
train on this scan, never tune on its pixels: it only measures.

    .venv/bin/python benchmarks/real_ct_dice.py --model RUN/model.keras [--task liver|spleen]
        [--overlay out.png] [--slices-png DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REFERENCE_VALUES = {"liver": 5, "spleen": 1}
DEFAULT_REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"   # ../shared/realct beside the repo


def read_series_ras(series_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """DICOM series -> (HU volume in RAS voxel order (X, Y, Z) float32, RAS affine)."""
    from keras_unet3plus.data import read_dicom_series

    vol = read_dicom_series(series_dir)
    return np.asarray(vol.image, dtype=np.float32), np.asarray(vol.affine)


def load_real(realct: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(hu RAS, reference label map RAS, affine, spacing); raises if the grids disagree."""
    from keras_unet3plus.data.nifti import load_image

    hu, aff = read_series_ras(realct / "series")
    ref = load_image(realct / "reference_labels.nii.gz")
    lab = np.rint(ref.image).astype(np.int16)
    if lab.shape != hu.shape or not np.allclose(ref.affine, aff, atol=0.05):
        raise SystemExit(f"DICOM grid {hu.shape} / affine\n{aff}\n does not match the reference labels "
                         f"{lab.shape} / affine\n{ref.affine}")
    return hu, lab, aff, ref.spacing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model.keras with its .unet3plus.json sidecar")
    ap.add_argument("--task", choices=("liver", "spleen"), default=None,
                    help="organ to score (default: the model's task)")
    ap.add_argument("--realct", default=str(DEFAULT_REALCT))
    ap.add_argument("--overlay", default=None, help="write a TP/FN/FP montage PNG here")
    ap.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = ap.parse_args(argv)

    from keras_unet3plus.inference import load_model
    from keras_unet3plus.metrics import dice

    realct = Path(args.realct)
    if not (realct / "series").is_dir():
        print(f"no real CT at {realct} (need series/ and reference_labels.nii.gz)", file=sys.stderr)
        return 2
    hu, lab, _, spacing = load_real(realct)
    loaded = load_model(args.model)
    task = args.task or ("spleen" if "spleen" in str(loaded.info.task) else "liver")
    ref = lab == REFERENCE_VALUES[task]
    pred = loaded.predict_volume(hu) > 0
    d = dice(pred, ref)
    per_slice = [dice(pred[:, :, z], ref[:, :, z]) for z in range(hu.shape[2])]
    print(f"real CT {realct.name}: {task} Dice {d:.4f} (pred {int(pred.sum())} vox, ref {int(ref.sum())} vox, "
          f"spacing {tuple(round(s, 3) for s in spacing)})")
    print("per-slice Dice (inferior -> superior): " + " ".join(f"{v:.2f}" for v in per_slice))
    if args.overlay:
        from keras_unet3plus.overlays import save_case_montage

        zs = [int(round(v)) for v in np.linspace(0, hu.shape[2] - 1, 4)]
        save_case_montage(hu, ref, pred, args.overlay, slices=zs,
                          window=loaded.cfg.window(), title=f"real CT, {task} Dice {d:.3f} "
                          "(pink TP, yellow FN, green FP)")
        print(f"overlay: {args.overlay}")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"model": args.model, "task": task, "dice": d}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
