"""Inference speed of `keras_unet3plus.inference` on a CT volume: NIfTI in, NIfTI out.

A phantom CT (default 512 x 512 x 200, as a LiTS volume) is written as .nii.gz, then segmented with
`predict_file` by the default model (paper configuration: plain encoder 64..1024, full-scale
decoder, deep supervision, CGM, 320 x 320 x 3 input; random weights: speed does not depend on them),
twice: stages one after another (`overlap off`) and with reading / preprocessing / resampling
overlapped with the model (`overlap on`). Prints a markdown table with total seconds, slices/s and
the time spent in each stage (read, preprocess, model, postprocess = resample to 512 x 512 +
threshold, write). With overlap the stage times run concurrently and add up to more than the total.

The full-size run needs ~20-40 min on a 2-core CPU (about 0.3 TMAC per slice); `--slices` runs a
shorter volume and extrapolates to `--extrapolate` slices (clearly labelled):

    python benchmarks/inference_speed.py --slices 16            # ~5 min on 2 cores
    python benchmarks/inference_speed.py --slices 200           # the real thing
    python benchmarks/inference_speed.py --size 128 --filters 16,32,64,128,256 --cat-channels 16
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=200, help="axial slices of the volume (default 200)")
    p.add_argument("--in-plane", type=int, default=512, help="in-plane size of the volume (default 512)")
    p.add_argument("--size", type=int, default=320, help="model input size (default 320, the paper's)")
    p.add_argument("--filters", default="64,128,256,512,1024")
    p.add_argument("--cat-channels", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--modes", default="off,on", help="overlap modes to run, in order (default off,on)")
    p.add_argument(
        "--gate",
        action="store_true",
        help="apply the CGM gate (off by default: with random weights it may call every slice "
        "empty, which would skip the resampling and understate the post-processing)",
    )
    p.add_argument(
        "--extrapolate", type=int, default=200, help="also show the time extrapolated to this many slices (default 200)"
    )
    args = p.parse_args(argv)

    import nibabel as nib
    import numpy as np
    import tensorflow as tf

    from keras_unet3plus import build
    from keras_unet3plus.complexity import count
    from keras_unet3plus.data import phantom
    from keras_unet3plus.data.preprocess import PreprocessConfig
    from keras_unet3plus.inference import Predictor as LoadedModel, predict_file, predict_volume
    from keras_unet3plus.modelinfo import ModelInfo

    filters = tuple(int(f) for f in args.filters.split(","))
    t0 = time.perf_counter()
    case = phantom.generate_case(0, shape=(args.in_plane, args.in_plane, args.slices))
    t_gen = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="unet3plus-bench-"))
    src = tmp / "volume-0.nii.gz"
    nib.save(nib.Nifti1Image(case.hu, case.affine), src)
    del case

    model = build(
        (args.size, args.size, 3), filters=filters, cat_channels=args.cat_channels, deep_supervision=True, cgm=True
    )
    gmac = count(model).gflops / 2
    cfg = PreprocessConfig(image_size=args.size).for_task("liver")
    info = ModelInfo(
        task="liver",
        preprocess=cfg.to_dict(),
        num_classes=1,
        threshold=0.5,
        build={"input_shape": [args.size, args.size, 3], "filters": list(filters), "cat_channels": args.cat_channels},
    )
    loaded = LoadedModel(model, info)
    # warm-up: trace the inference function for the full batch and a remainder batch
    warm = np.zeros((args.in_plane, args.in_plane, args.batch_size + 1), np.float32)
    predict_volume(model, warm, cfg, batch_size=args.batch_size)

    print(
        f"# Inference speed: {args.in_plane}x{args.in_plane}x{args.slices} phantom (.nii.gz) -> mask, "
        f"model {args.size}x{args.size}x3"
    )
    print()
    print(
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"TensorFlow {tf.__version__}, Python {platform.python_version()}"
    )
    print(
        f"- model: UNet 3+ plain encoder filters {filters}, cat_channels {args.cat_channels}, deep supervision "
        f"+ CGM; {model.count_params() / 1e6:.2f} M params, {gmac:.2f} GMAC per slice (training graph; "
        f"inference skips the side heads)"
    )
    print(
        f"- batch size {args.batch_size}; CGM gate {'on' if args.gate else 'off (every slice resampled)'}; "
        f"phantom generation {t_gen:.1f} s (not counted); "
        f"input file {src.stat().st_size / 2**20:.1f} MiB"
    )
    print()
    print(
        "| overlap | slices | total (s) | slices/s | read | preprocess | model | postprocess | write |"
        + (f" extrapolated to {args.extrapolate} slices (s) |" if args.extrapolate != args.slices else "")
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.extrapolate != args.slices else ""))
    for mode in args.modes.split(","):
        overlap = mode.strip() == "on"
        timings: dict = {}
        out = tmp / f"mask-{mode}.nii.gz"
        t0 = time.perf_counter()
        predict_file(loaded, src, out, batch_size=args.batch_size, overlap=overlap, timings=timings, gate=args.gate)
        total = time.perf_counter() - t0
        row = (
            f"| {mode} | {args.slices} | {total:.1f} | {args.slices / total:.3f} | "
            + " | ".join(f"{timings.get(k, 0.0):.1f}" for k in ("read", "preprocess", "model", "postprocess", "write"))
            + " |"
        )
        if args.extrapolate != args.slices:
            row += f" {total * args.extrapolate / args.slices:.0f} (estimate: linear in slices) |"
        print(row, flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
