"""Does the 2.5D tf.data pipeline keep a UNet 3+ training step fed?

Writes LiTS-sized phantom volumes (512 x 512 in-plane, int16 .nii.gz), then measures

1. the pipeline: slices/s delivered at --size (default 320) in training mode (10 % negatives,
   shuffling, optional augmentation), streaming from NIfTI and, with --cache, from the slice
   cache; each run happens in a fresh subprocess so its peak RSS is its own. It is measured for
   two folder sizes (--cases distinct volumes, replicated by hard links to --copies times as many)
   to show that memory does not grow with the number of cases;
2. the consumer: a UNet 3+ train step (``keras_unet3plus.build`` + ``losses.for_model``, deep
   supervision and CGM) at --size with batch --train-batch, on the same machine. ``--model paper``
   is the paper's encoder widths (64..1024); ``--model small`` (16..256, the default because the
   paper model needs tens of seconds per step on a 2-core CPU) is stated in the output.

Usage: python benchmarks/pipeline_throughput.py [--cases 3 --copies 4 --slices 64 --size 320]
Goal (issue 4): pipeline rate >= 5x the consumption rate with 2 cores; bounded memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _rss_mb() -> float:
    """Peak RSS of this process. VmHWM belongs to the process image (ru_maxrss survives exec and
    would report the parent's peak from writing the phantoms)."""
    peak = _status_mb("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    return _status_mb("VmRSS")


def make_data(root: Path, n_distinct: int, copies: int, in_plane: int, slices: int) -> Path:
    """Write n_distinct phantom cases once, then hard-link them into a folder of n*copies cases."""
    from keras_unet3plus.data import phantom

    src = root / f"distinct_{n_distinct}_{in_plane}_{slices}"
    if not (src / f"volume-{n_distinct - 1}.nii.gz").exists():
        t = time.perf_counter()
        phantom.write_dataset(
            src,
            n_distinct,
            layout="lits",
            task="liver",
            shape=(in_plane, in_plane, slices),
            spacing=(0.75, 0.75, 2.5),
            seed=0,
        )
        print(
            f"# wrote {n_distinct} phantom cases {in_plane}x{in_plane}x{slices} in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
    dst = root / f"folder_{n_distinct * copies}"
    if not dst.exists():
        dst.mkdir()
        for k in range(copies):
            for i in range(n_distinct):
                for kind in ("volume", "segmentation"):
                    target = dst / f"{kind}-{k * n_distinct + i}.nii.gz"
                    try:
                        os.link(src / f"{kind}-{i}.nii.gz", target)
                    except OSError:
                        shutil.copy(src / f"{kind}-{i}.nii.gz", target)
    return dst


def pipeline_worker(args: argparse.Namespace) -> dict:
    """Run in a subprocess: time the pipeline over one folder, report rate and peak RSS."""
    import tensorflow as tf  # noqa: F401  (import cost not counted)

    from keras_unet3plus.data import PreprocessConfig, build_dataset, find_cases

    base = _current_rss_mb()
    cases = find_cases(args.folder)
    cfg = PreprocessConfig(image_size=args.size)
    t0 = time.perf_counter()
    ds, info = build_dataset(
        cases,
        "liver",
        cfg,
        batch_size=args.batch,
        training=True,
        negative_fraction=0.1,
        augment=args.augment,
        cache_dir=args.cache_dir,
        cycle_length=args.cycle_length,
    )
    setup = time.perf_counter() - t0
    it = iter(ds.repeat())  # epochs of small phantom folders are short: time across epochs
    next(it)  # warm-up: graph building, first cases opened
    n, t = 0, time.perf_counter()
    deadline = t + args.seconds
    for x, _ in it:
        n += int(x.shape[0])
        if time.perf_counter() > deadline:
            break
    dt = time.perf_counter() - t
    return {
        "cases": len(cases),
        "slices_per_s": n / dt,
        "slices": n,
        "setup_s": setup,
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base,
        "cached": args.cache_dir is not None,
        "epoch_slices": info.n_slices,
    }


def consumer(args: argparse.Namespace) -> dict:
    """Slices/s a UNet 3+ train step consumes at the benchmark size."""
    import numpy as np

    try:
        import keras

        from keras_unet3plus import build
        from keras_unet3plus.losses import expand_targets, for_model
    except ImportError as exc:  # pragma: no cover
        return {"error": f"model not available: {exc}"}
    filters = (64, 128, 256, 512, 1024) if args.model == "paper" else (16, 32, 64, 128, 256)
    cat = 64 if args.model == "paper" else 16
    model = build(
        (args.size, args.size, 3), num_classes=1, filters=filters, cat_channels=cat, deep_supervision=True, cgm=True
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-4), **for_model(model))
    rng = np.random.default_rng(0)
    x = rng.random((args.train_batch, args.size, args.size, 3), dtype=np.float32)
    y = (rng.random((args.train_batch, args.size, args.size, 1)) > 0.7).astype(np.float32)
    _, targets = expand_targets(model)(x, y)
    t = time.perf_counter()
    model.train_on_batch(x, targets)  # trace + first step
    first = time.perf_counter() - t
    times = []
    for _ in range(args.train_steps):
        t = time.perf_counter()
        model.train_on_batch(x, targets)
        times.append(time.perf_counter() - t)
    step = float(np.median(times))
    return {
        "model": args.model,
        "filters": filters,
        "cat_channels": cat,
        "params": model.count_params(),
        "step_s": step,
        "first_step_s": first,
        "slices_per_s": args.train_batch / step,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=3, help="distinct phantom volumes to generate")
    p.add_argument("--copies", type=int, default=4, help="large folder = cases x copies (hard links)")
    p.add_argument("--in-plane", type=int, default=512)
    p.add_argument("--slices", type=int, default=64, help="axial slices per phantom volume")
    p.add_argument("--size", type=int, default=320, help="model input size")
    p.add_argument("--batch", type=int, default=8, help="pipeline batch size")
    p.add_argument("--cycle-length", type=int, default=2, help="cases read in parallel")
    p.add_argument("--seconds", type=float, default=20.0, help="timing window per pipeline run")
    p.add_argument("--augment", action="store_true")
    p.add_argument("--cache", action="store_true", help="also time the slice-cache path")
    p.add_argument("--model", choices=("small", "paper"), default="small")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--workdir", type=Path, default=None, help="keep data here (default: temp dir)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(pipeline_worker(args)), flush=True)
        return

    print(f"# machine: {os.cpu_count()} CPU cores; python {sys.version.split()[0]}", flush=True)
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="unet3p_bench_"))
    tmp.mkdir(parents=True, exist_ok=True)
    small = make_data(tmp, args.cases, 1, args.in_plane, args.slices)
    large = make_data(tmp, args.cases, args.copies, args.in_plane, args.slices)

    runs = [("stream", small, None), ("stream", large, None)]
    if args.cache:
        runs += [("cache", large, str(tmp / "cache")), ("cache", large, str(tmp / "cache"))]
    rows = []
    for kind, folder, cache_dir in runs:
        cmd = (
            [
                sys.executable,
                __file__,
                "--worker",
                "--folder",
                str(folder),
                "--size",
                str(args.size),
                "--batch",
                str(args.batch),
                "--seconds",
                str(args.seconds),
                "--cycle-length",
                str(args.cycle_length),
            ]
            + (["--augment"] if args.augment else [])
            + (["--cache-dir", cache_dir] if cache_dir else [])
        )
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"pipeline worker failed ({kind}, {folder})")
        r = json.loads(line[0][7:])
        r["kind"] = kind
        rows.append(r)
        print(
            f"# {kind:6s} {r['cases']:3d} cases: {r['slices_per_s']:.1f} slices/s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (setup {r['setup_s']:.1f} s)",
            flush=True,
        )

    cons = None
    if not args.skip_train:
        cons = consumer(args)
        if "error" in cons:
            print("# consumer:", cons["error"])
            cons = None

    print()
    print(
        f"| source | cases in folder | slices/s at {args.size}x{args.size} | peak RSS (MB) | "
        f"RSS after TF import (MB) | setup (s) | x consumption |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['slices_per_s'] / cons['slices_per_s']:.1f}x" if cons else "n/a"
        src = "NIfTI stream" if r["kind"] == "stream" else "slice cache"
        print(
            f"| {src} | {r['cases']} | {r['slices_per_s']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['base_rss_mb']:.0f} | {r['setup_s']:.1f} | {ratio} |"
        )
    if cons:
        print(
            f"\nconsumer: UNet 3+ train step ({cons['model']} config: filters {cons['filters']}, "
            f"cat_channels {cons['cat_channels']}, {cons['params'] / 1e6:.1f} M params, deep "
            f"supervision + CGM, hybrid loss) at {args.size}x{args.size}, batch {args.train_batch}: "
            f"{cons['step_s']:.2f} s/step (first step incl. tracing {cons['first_step_s']:.1f} s) = "
            f"{cons['slices_per_s']:.2f} slices/s"
        )
        worst = min(r["slices_per_s"] for r in rows) / cons["slices_per_s"]
        print(f"pipeline / consumption (worst run): {worst:.1f}x  (goal >= 5x)")
    if args.workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
