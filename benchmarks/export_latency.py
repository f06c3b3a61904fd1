"""CPU latency / throughput of every export target next to Keras `predict`, in one run.

Default: the paper-size model (plain encoder 64..1024, 320x320, deep supervision, CGM), deploy
form (one gated `seg` output). That is ~300 GMAC per image: on 2 CPU cores one run takes long;
use `--filters 16,32,64,128,256 --cat-channels 16` for a quick run. `--model PATH.keras` benchmarks
a trained model (Dice vs Keras is only meaningful for a trained model; a random one is gated to
near-empty masks).

Prints a markdown table: runtime, latency at batch 1 (median ms), throughput at batch 8 (img/s),
speed-up of batch-1 latency vs Keras `predict`, and Dice of the runtime's masks vs Keras' masks.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

RUNTIMES = (
    "keras",
    "savedmodel",
    "onnx",
    "tflite-fp32",
    "tflite-fp16",
    "tflite-int8-dynamic",
    "tflite-int8",
    "onnx-int8",
)


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="trained .keras model (default: build a random-init one)")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--filters", default="64,128,256,512,1024")
    p.add_argument("--cat-channels", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per measurement (median)")
    p.add_argument("--batch", type=int, default=8, help="batch for the throughput column")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"subset of {RUNTIMES}")
    p.add_argument("--calib-slices", type=int, default=16)
    p.add_argument("--dice-slices", type=int, default=8)
    args = p.parse_args(argv)

    import keras
    import tensorflow as tf

    import keras_unet3plus as ku
    from keras_unet3plus.export import export_model
    from keras_unet3plus.export.graph import GraphSpec, to_mask
    from keras_unet3plus.export.verify import phantom_slices, preprocess_config
    from keras_unet3plus.metrics import label_dice as dice
    from keras_unet3plus.modelinfo import ModelInfo, load_info
    from keras_unet3plus.runtimes import KerasRuntime, load_runtime

    wanted = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if args.model:
        model = keras.models.load_model(args.model, compile=False)
        info = load_info(args.model)
        size = int(model.inputs[0].shape[1])
        desc = f"{args.model}"
    else:
        filters = tuple(int(f) for f in args.filters.split(","))
        size = args.size
        keras.utils.set_random_seed(0)
        model = ku.build(
            (size, size, 3), filters=filters, cat_channels=args.cat_channels, deep_supervision=True, cgm=True
        )
        cfg, _ = preprocess_config(None, size)
        info = ModelInfo(task="liver", preprocess=cfg.to_dict())
        desc = f"random-init UNet 3+ (DS + CGM), filters {filters}, cat_channels {args.cat_channels}"
    spec = GraphSpec()
    x = phantom_slices(info, n=max(args.batch, args.dice_slices), image_size=size, seed=3)
    calib = phantom_slices(info, n=args.calib_slices, image_size=size, seed=4)
    x1, xb = x[:1], x[: args.batch]

    keras_rt = KerasRuntime(model, info=info, all_outputs=False)
    ref_mask = to_mask(keras_rt.model.predict(x[: args.dice_slices], verbose=0)["seg"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in wanted:
            t0 = time.perf_counter()
            if name == "keras":
                # what a Keras user runs: model.predict on the deploy model
                run1 = lambda: keras_rt.model.predict(x1, verbose=0)  # noqa: E731
                runb = lambda: keras_rt.model.predict(xb, verbose=0)  # noqa: E731
                seg = lambda a: keras_rt.model.predict(a, verbose=0)["seg"]  # noqa: E731
            else:
                target, _, precision = name.partition("-")
                precision = precision or "fp32"
                suffix = {"savedmodel": "", "onnx": ".onnx", "tflite": ".tflite"}[target]
                out = tmp / f"{name}{suffix}"
                export_model(
                    model,
                    target,
                    precision,
                    out=out,
                    spec=spec,
                    info=info,
                    calibration=calib,
                    check=False,
                    log=lambda *_: None,
                )
                rt = load_runtime(out, info=info)
                run1 = lambda rt=rt: rt.predict(x1)  # noqa: E731
                runb = lambda rt=rt: rt.predict(xb)  # noqa: E731
                seg = rt.predict
            export_s = time.perf_counter() - t0
            lat = _median_time(run1, args.repeats)
            thr = args.batch / _median_time(runb, max(1, args.repeats - 1))
            masks = np.concatenate(
                [to_mask(seg(x[i : i + args.batch])) for i in range(0, args.dice_slices, args.batch)]
            )
            rows.append((name, lat * 1000, thr, dice(ref_mask, masks), export_s))
            print(f"  {name}: {lat * 1000:.1f} ms, {thr:.2f} img/s (export {export_s:.0f} s)", flush=True)
    keras_lat = next((r[1] for r in rows if r[0] == "keras"), None)
    print()
    print(f"Model: {desc}; input {size}x{size}x3; deploy form (gated `seg`).")
    print(
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; TF {tf.__version__}, "
        f"Keras {keras.__version__}; median of {args.repeats} runs after a warm-up."
    )
    fg = float((ref_mask > 0).mean())
    print(
        f"Keras mask foreground fraction on the {args.dice_slices} Dice slices: {fg:.4f}"
        + (" (random-init model: Dice is not meaningful)" if not args.model else "")
    )
    print()
    print(
        f"| runtime | latency b=1 (ms) | throughput b={args.batch} (img/s) "
        "| speed-up vs Keras predict (b=1) | Dice vs Keras |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, lat, thr, d, _ in rows:
        ratio = f"{keras_lat / lat:.2f}x" if keras_lat else "-"
        print(f"| {name} | {lat:.1f} | {thr:.2f} | {ratio} | {d:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
