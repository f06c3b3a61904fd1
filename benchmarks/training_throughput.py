"""Training throughput (images/s) of the paper's UNet 3+ vs keras-unet-collection's `unet_3plus_2d`.

Paper configuration: plain encoder, filters 64..1024, 3-slice input, full-scale deep supervision,
CGM, hybrid loss (focal + MS-SSIM + IoU) on all five segmentation outputs (+ BCE on the CGM).
Peer: ``keras_unet_collection.models.unet_3plus_2d`` (PyPI ``keras-unet-collection``, an optional
benchmark dependency) with the matching configuration: filter_num_down [64, 128, 256, 512, 1024],
filter_num_skip 64 (x4), filter_num_aggregate 320, stack_num_down 2, stack_num_up 1, batch norm,
max pooling, bilinear upsampling, deep supervision, no backbone. It has no CGM, so it does less
work per step; it gets the same hybrid loss on each of its five outputs.

Both models are trained by the same step function: ``tf.function`` (``jit_compile`` on or off)
of forward pass, loss, gradients and an Adam update, on the same random batch. Ours runs as the
trainer runs it: the paper decoder through its exact fused view (``TrainConfig.fused_decoder``,
the same model and gradients); ``paper-unfused`` is the graph as built, for comparison. Warm-up steps
(tracing, XLA compilation) are not timed; then timed steps alternate between the two models so
both see the same machine load, and images/s = batch / median step time.

    python benchmarks/training_throughput.py                       # 320 and 160, XLA off / on
    python benchmarks/training_throughput.py --sizes 160 --steps 5 --no-xla

Prints a markdown table (ratio = ours / peer).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

PAPER_FILTERS = [64, 128, 256, 512, 1024]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 160])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per model (tracing / XLA compile)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model")
    ap.add_argument("--xla", choices=("both", "on", "off"), default="both")
    ap.add_argument("--no-xla", dest="xla", action="store_const", const="off")
    ap.add_argument("--no-peer", dest="peer", action="store_false", help="measure ours only")
    ap.add_argument(
        "--decoder",
        choices=("paper", "paper-unfused", "efficient", "all"),
        default="all",
        help="our full-scale decoder: paper (trained fused, as the trainer does), paper-unfused (as "
        "built), efficient (same parameters, convolves deeper maps first) or all (default)",
    )
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "XLA"), help=argparse.SUPPRESS)  # internal: one cell
    return ap.parse_args()


def ours(size: int, decoder: str = "paper") -> tuple[keras.Model, dict]:
    from keras_unet3plus import build
    from keras_unet3plus.losses import for_model

    model = build(
        (size, size, 3), filters=PAPER_FILTERS, cat_channels=64, deep_supervision=True, cgm=True, decoder=decoder
    )
    spec = for_model(model)
    return model, {name: (spec["loss"][name], spec["loss_weights"][name]) for name in model.output_names}


def peer(size: int) -> tuple[keras.Model, dict]:
    from keras_unet_collection import models  # pip install keras-unet-collection
    from keras_unet3plus.losses import HybridLoss

    with contextlib.redirect_stdout(io.StringIO()):  # it prints its output names
        model = models.unet_3plus_2d(
            (size, size, 3),
            n_labels=1,
            filter_num_down=PAPER_FILTERS,
            filter_num_skip=[64, 64, 64, 64],
            filter_num_aggregate=320,
            stack_num_down=2,
            stack_num_up=1,
            activation="ReLU",
            output_activation="Sigmoid",
            batch_norm=True,
            pool="max",
            unpool="bilinear",
            deep_supervision=True,
            backbone=None,
            name="unet3plus",
        )
    return model, {name: (HybridLoss(), 1.0) for name in model.output_names}


def make_step(model: keras.Model, losses: dict, jit: bool, fused: bool = False):
    from keras_unet3plus.fused_decoder import fuse_upsampled_convs

    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    tvars = model.trainable_variables
    names = list(model.output_names)
    forward = fuse_upsampled_convs(model, share_weights=True) if fused else model

    @tf.function(jit_compile=jit)
    def step(x, y):
        with tf.GradientTape() as tape:
            outs = forward(x, training=True)
            if not isinstance(outs, dict):
                outs = dict(zip(names, outs if isinstance(outs, (list, tuple)) else [outs]))
            loss = tf.add_n([w * tf.reduce_mean(fn.call(y, outs[k])) for k, (fn, w) in losses.items()])
        grads = tape.gradient(loss, tvars)
        optimizer.apply(grads, tvars)
        return loss

    return step


def data(size: int, batch: int):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, size, size, 3), dtype=np.float32))
    yy, xx = np.mgrid[:size, :size]
    blob = (((yy - size / 2) ** 2 + (xx - size / 3) ** 2) < (size / 5) ** 2).astype(np.float32)
    y = tf.constant(np.broadcast_to(blob[None, :, :, None], (batch, size, size, 1)).copy())
    return x, y


def measure(size: int, jit: bool, args) -> dict[str, float | str]:
    x, y = data(size, args.batch)
    from keras_unet3plus.complexity import count

    decoders = ["paper", "paper-unfused", "efficient"] if args.decoder == "all" else [args.decoder]
    runs = {f"ours_{d}": (lambda s, d=d: ours(s, d.replace("-unfused", ""))) for d in decoders}
    if args.peer:
        runs["peer"] = peer
    steps, params, gflops, errors = {}, {}, {}, {}
    for name, make in runs.items():
        try:
            model, losses = make(size)
            params[name] = model.count_params()
            gflops[name] = count(model).gflops
            fn = make_step(model, losses, jit, fused=name == "ours_paper")
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                float(fn(x, y))
            print(f"  {name} {size} xla={jit}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
            steps[name] = fn
        except Exception as exc:  # noqa: BLE001 - reported in the table
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            print(f"  {name} {size} xla={jit}: FAILED {errors[name]}", flush=True)
    times = {k: [] for k in steps}
    for _ in range(args.steps):  # alternate: same load for both
        for name, fn in steps.items():
            t0 = time.perf_counter()
            float(fn(x, y))
            times[name].append(time.perf_counter() - t0)
    row: dict[str, float | str] = {}
    for name in runs:
        if name in times:
            row[name] = args.batch / statistics.median(times[name])
            row[f"{name}_params"] = params[name]
            row[f"{name}_gflops"] = gflops[name]
        else:
            row[name] = errors.get(name, "n/a")
    keras.backend.clear_session()
    return row


def run_cell(size: int, jit: bool, args) -> dict:
    import json
    import subprocess

    cmd = [
        sys.executable,
        __file__,
        "--one",
        str(size),
        "1" if jit else "0",
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--decoder",
        args.decoder,
    ] + ([] if args.peer else ["--no-peer"])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
        print(line, flush=True)
    why = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
    msg = f"failed (exit {proc.returncode}: {why})"
    print(f"  {size} xla={jit}: {msg}", flush=True)
    return {"ours": msg, "peer": msg}


def main() -> int:
    args = parse()
    if args.one:  # child process: measure one (size, XLA) cell, print it as JSON
        import json

        row = measure(int(args.one[0]), args.one[1] == "1", args)
        print("RESULT " + json.dumps(row), flush=True)
        return 0
    xla = {"both": [False, True], "on": [True], "off": [False]}[args.xla]
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU threads, GPUs: {len(tf.config.list_physical_devices('GPU'))}; "
        f"batch {args.batch}, {args.warmup} warm-up + {args.steps} timed steps per model",
        flush=True,
    )
    rows = []
    for size in args.sizes:
        for jit in xla:  # one process per cell: memory (XLA compiles of the 320 model) is returned each time
            rows.append((size, jit, run_cell(size, jit, args)))
    print()
    names = [k for k in rows[0][2] if k.startswith("ours_") and not k.endswith(("_params", "_gflops"))] if rows else []
    head = " | ".join(f"ours, {n[5:]} decoder (img/s) | vs peer" for n in names)
    print(f"| Input | XLA | {head} | keras-unet-collection (img/s) |")
    print("|---|---|" + "---:|---:|" * len(names) + "---:|")

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    for size, jit, r in rows:
        p = r.get("peer", "not run")
        cells = []
        for n in names:
            o = r.get(n)
            cells += [fmt(o), f"{o / p:.2f}x" if isinstance(o, float) and isinstance(p, float) else "-"]
        print(f"| {size}x{size} | {'on' if jit else 'off'} | " + " | ".join(cells) + f" | {fmt(p)} |")
    if rows:
        r = rows[0][2]
        for n in names + (["peer"] if "peer_params" in r else []):
            if f"{n}_params" in r:
                print(
                    f"{n}: {r[n + '_params'] / 1e6:.2f} M parameters, {r[n + '_gflops']:.1f} GFLOP per "
                    f"{rows[0][0]}x{rows[0][0]} image (forward)"
                )
        print(
            "The peer's unet_3plus_2d fuses 4 branches per decoder node, not the paper's 5 (it leaves out one "
            "full-scale skip), hence its fewer parameters and FLOPs; ours includes the CGM."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
