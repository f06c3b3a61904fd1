"""Cost of the UNet 3+ hybrid loss (+ deep supervision + CGM) per training step vs plain focal loss.

Two identical UNet 3+ models (same weights, deep supervision and CGM heads present in both) are
compiled once with ``keras_unet3plus.losses.for_model(model)`` (hybrid loss on `seg` and every
`side_*`, BCE on `cls`) and once with a plain focal loss on `seg` only. Their training steps are
timed alternately in the same process (warm-up steps first, then the median of `--steps` timed
steps each), so both see the same machine load. The script also times the loss alone (forward +
gradient w.r.t. fixed predictions of the same shapes) to isolate its cost from the network.

Paper configuration (the default; several seconds per step on a 2-core CPU):

    python benchmarks/loss_overhead.py --size 320 --batch 2 --steps 5

Quick run:

    python benchmarks/loss_overhead.py --size 128 --filters 16,32,64,128,256 --cat-channels 16

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import keras_unet3plus  # noqa: E402
from keras_unet3plus import losses as L  # noqa: E402


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=320, help="input height = width (paper: 320)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--filters", default="64,128,256,512,1024", help="encoder filters (paper: 64..1024)")
    ap.add_argument("--cat-channels", type=int, default=64, help="decoder cat channels (paper: 64)")
    ap.add_argument("--num-classes", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--loss-steps", type=int, default=20, help="timed loss-only evaluations per variant")
    return ap.parse_args()


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, args.size, args.size, 3)).astype("float32")
    yy, xx = np.mgrid[: args.size, : args.size]
    blob = ((yy - args.size / 2) ** 2 + (xx - args.size / 3) ** 2) < (args.size / 5) ** 2
    if args.num_classes == 1:
        mask = np.repeat(blob[None, ..., None], args.batch, 0).astype("float32")
    else:
        mask = np.repeat(blob[None, ..., None], args.batch, 0).astype("int32")
    mask[0] = 0  # one empty slice, as in real CT batches
    return x, mask


def _build(args: argparse.Namespace) -> keras.Model:
    return keras_unet3plus.build(
        input_shape=(args.size, args.size, 3),
        num_classes=args.num_classes,
        filters=tuple(int(f) for f in args.filters.split(",")),
        cat_channels=args.cat_channels,
        deep_supervision=True,
        cgm=True,
    )


def _time_steps(models: dict[str, keras.Model], x: np.ndarray, targets: dict, args: argparse.Namespace) -> dict:
    times: dict[str, list[float]] = {k: [] for k in models}
    for model in models.values():
        for _ in range(args.warmup):
            model.train_on_batch(x, targets)
    for _ in range(args.steps):  # alternate to share machine-load drift
        for name, model in models.items():
            t0 = time.perf_counter()
            model.train_on_batch(x, targets)
            times[name].append(time.perf_counter() - t0)
    return times


def _time_losses(model: keras.Model, mask: np.ndarray, args: argparse.Namespace) -> dict:
    """Loss alone: forward + gradient w.r.t. predictions of the model's output shapes."""
    rng = np.random.default_rng(1)
    preds = {}
    for name, t in zip(model.output_names, model.outputs):
        shape = (args.batch,) + tuple(t.shape[1:])
        p = rng.uniform(0.05, 0.95, shape).astype("float32")
        if name != "cls" and shape[-1] > 1:
            p = p / p.sum(-1, keepdims=True)
        preds[name] = tf.Variable(p)
    y = tf.constant(mask)
    cfg = L.for_model(model)
    focal = L.FocalLoss()

    @tf.function
    def full():
        with tf.GradientTape() as tape:
            total = tf.add_n([cfg["loss_weights"][k] * cfg["loss"][k](y, preds[k]) for k in preds])
        return tape.gradient(total, list(preds.values()))

    @tf.function
    def plain():
        with tf.GradientTape() as tape:
            total = focal(y, preds["seg"])
        return tape.gradient(total, [preds["seg"]])

    out = {}
    for name, fn in (("hybrid+DS+CGM", full), ("focal(seg)", plain)):
        for _ in range(3):
            fn()
        ts = []
        for _ in range(args.loss_steps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = statistics.median(ts)
    return out


def main() -> None:
    args = _parse()
    # Expected: the focal-only baseline leaves the side/CGM heads without gradients.
    warnings.filterwarnings("ignore", message="Gradients do not exist for variables")
    x, mask = _data(args)
    keras.utils.set_random_seed(0)
    hybrid_model = _build(args)
    focal_model = _build(args)
    focal_model.set_weights(hybrid_model.get_weights())
    names = list(hybrid_model.output_names)
    hybrid_model.compile(keras.optimizers.Adam(1e-4), **L.for_model(hybrid_model))
    focal_model.compile(
        keras.optimizers.Adam(1e-4),
        loss={n: (L.FocalLoss() if n == "seg" else None) for n in names},
    )
    targets = {n: mask for n in names}
    models = {"hybrid+DS+CGM": hybrid_model, "focal(seg)": focal_model}

    t_build = time.perf_counter()
    step_times = _time_steps(models, x, targets, args)
    wall = time.perf_counter() - t_build
    loss_times = _time_losses(hybrid_model, mask, args)

    med = {k: statistics.median(v) for k, v in step_times.items()}
    base = med["focal(seg)"]
    n_params = hybrid_model.count_params()
    print(
        f"\nUNet 3+ {args.size}x{args.size}, batch {args.batch}, filters {args.filters}, cat {args.cat_channels}, "
        f"{args.num_classes} class(es), {n_params / 1e6:.1f} M params; TF {tf.__version__}, Keras {keras.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads; "
        f"{args.warmup} warm-up + {args.steps} timed steps per variant (alternating), median; {wall:.0f} s\n"
    )
    print("| loss | train step (s) | step overhead vs focal | loss fwd+grad alone (ms) |")
    print("|---|---:|---:|---:|")
    for k in ("focal(seg)", "hybrid+DS+CGM"):
        overhead = "-" if k == "focal(seg)" else f"{100 * (med[k] - base) / base:+.1f} %"
        print(f"| {k} | {med[k]:.3f} | {overhead} | {1000 * loss_times[k]:.1f} |")
    share = (loss_times["hybrid+DS+CGM"] - loss_times["focal(seg)"]) / med["hybrid+DS+CGM"]
    print(
        f"\nLoss-only extra cost (hybrid+DS+CGM minus focal) = {100 * share:.1f} % of a hybrid training step. "
        f"All step times (s): " + "; ".join(f"{k}: " + ", ".join(f"{t:.3f}" for t in v) for k, v in step_times.items())
    )


if __name__ == "__main__":
    main()
