"""One command, one run, one machine: the performance report (issue 8).

Prints, in order:
1. training throughput of ours vs keras-unet-collection's unet_3plus_2d (benchmarks/training_throughput.py);
2. FLOPs per image (counted layer by layer) and the achieved FLOP/s as a share of this CPU's peak;
3. inference latency per runtime (benchmarks/export_latency.py);
4. how time and memory grow with input size and batch size (each point in a fresh process, so
   its peak memory is its own), with PNG plots.

    .venv/bin/python benchmarks/performance_report.py     # paper configuration; ~30 min on 2 CPU cores
    .venv/bin/python benchmarks/performance_report.py --quick --sizes 64 128 --train-sizes 64 --peer-sizes 64

The runtime section uses a small model (filters 16..256) at 320x320 unless --runtime-model names a
trained one: eight runtimes at the paper's 600 GFLOP per image would take an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine_line, markdown_table  # noqa: E402

PAPER_FILTERS = [64, 128, 256, 512, 1024]
QUICK_FILTERS = [16, 32, 64, 128, 256]


def cpu_peak_gflops() -> tuple[float, str]:
    """Theoretical fp32 peak from /proc/cpuinfo: cores x clock x SIMD lanes x 2 (FMA) x FMA units."""
    flags, mhz = set(), None
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    cores = os.cpu_count() or 1
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    units = 2 if "avx512f" in flags else 2 if "fma" in flags else 1
    ghz = (mhz or 2000.0) / 1000
    peak = cores * ghz * lanes * 2 * units
    how = (
        f"{cores} cores x {ghz:.2f} GHz (cpuinfo) x {lanes} fp32 lanes ({'AVX-512' if lanes == 16 else 'AVX2'}) "
        f"x 2 (FMA) x {units} FMA units per core (assumed for this server part) = {peak:.0f} GFLOP/s"
    )
    return peak, how


def measured_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """What the best-tuned kernel on this machine reaches: a large fp32 matmul through TF/oneDNN."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        tf.linalg.matmul(a, b).numpy()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def measure(size: int, batch: int, mode: str, filters, cat_channels: int, repeats: int) -> dict:
    cmd = [
        sys.executable,
        str(HERE / "_measure_one.py"),
        "--size",
        str(size),
        "--batch",
        str(batch),
        "--mode",
        mode,
        "--filters",
        *map(str, filters),
        "--cat-channels",
        str(cat_channels),
        "--repeats",
        str(repeats),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def run_script(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if proc.returncode:
        return f"(failed: {' '.join(args)}: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode})"
    return proc.stdout.strip()


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for mode, marker in (("infer", "o"), ("train", "s")):
        for batch in sorted({p["batch"] for p in points if p["mode"] == mode}):
            sel = sorted((p for p in points if p["mode"] == mode and p["batch"] == batch), key=lambda p: p["size"])
            if len(sel) < 2:
                continue
            label = f"{mode}, batch {batch}"
            axes[0].plot([p["size"] for p in sel], [p["seconds"] / batch for p in sel], marker=marker, label=label)
            axes[1].plot([p["size"] for p in sel], [p["peak_rss_mib"] for p in sel], marker=marker, label=label)
        for size in sorted({p["size"] for p in points if p["mode"] == mode}):
            sel = sorted((p for p in points if p["mode"] == mode and p["size"] == size), key=lambda p: p["batch"])
            if len(sel) >= 2:
                axes[2].plot(
                    [p["batch"] for p in sel],
                    [p["images_per_s"] for p in sel],
                    marker=marker,
                    label=f"{mode}, {size}x{size}",
                )
    for ax, title, ylabel, xlabel in (
        (axes[0], "time per image", "seconds", "input size"),
        (axes[1], "peak memory (process RSS)", "MiB", "input size"),
        (axes[2], "throughput vs batch", "images / s", "batch size"),
    ):
        ax.set_title(title), ax.set_ylabel(ylabel), ax.set_xlabel(xlabel), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small filters: the whole report in a few minutes")
    p.add_argument("--sizes", type=int, nargs="+", default=[160, 320, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--train-sizes", type=int, nargs="+", default=[160, 320])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--peer-sizes", type=int, nargs="+", default=[160], help="sizes of the ours-vs-peer training run")
    p.add_argument("--runtime-model", help="trained .keras model for the runtime section (default: small random model)")
    p.add_argument("--runtime-size", type=int, default=320)
    p.add_argument("--plots", default="docs/performance.png")
    p.add_argument("--skip", nargs="*", default=[], choices=["peer", "runtimes", "scaling"])
    a = p.parse_args(argv)
    filters = QUICK_FILTERS if a.quick else PAPER_FILTERS
    cat = 16 if a.quick else 64
    t0 = time.time()
    print(
        f"# Performance report\n\n{machine_line()}; UNet 3+ plain encoder, filters {tuple(filters)}, "
        f"cat_channels {cat}, deep supervision + CGM.\n"
    )

    if "peer" not in a.skip:
        print("## 1. Training throughput: ours vs keras-unet-collection\n")
        print(
            run_script(
                [
                    str(HERE / "training_throughput.py"),
                    "--sizes",
                    *map(str, a.peer_sizes),
                    "--xla",
                    "off",
                    "--warmup",
                    "1",
                    "--steps",
                    "2",
                ]
            )
            + "\n",
            flush=True,
        )

    points = []
    if "scaling" not in a.skip:
        for size in a.sizes:
            for batch in a.batches:
                points.append(measure(size, batch, "infer", filters, cat, a.repeats))
        for size in a.train_sizes:
            for batch in a.batches[:2]:
                points.append(measure(size, batch, "train", filters, cat, a.repeats))
    peak, how = cpu_peak_gflops()
    matmul = measured_matmul_gflops()
    print("## 2. FLOPs and achieved FLOP/s\n")
    print(
        f"Peak: {how}. A 2048x2048 fp32 matmul through TF/oneDNN reaches {matmul:.0f} GFLOP/s "
        f"({100 * matmul / peak:.0f} % of peak) on this machine. Training FLOPs = 3 x forward (the usual estimate).\n"
    )
    rows = [
        [
            p_["mode"],
            p_["size"],
            p_["batch"],
            f"{p_['flops'] / p_['batch'] / 1e9:.1f}",
            f"{p_['seconds']:.2f}",
            f"{p_['images_per_s']:.2f}",
            f"{p_['achieved_gflops']:.1f}",
            f"{100 * p_['achieved_gflops'] / peak:.1f} %",
            f"{p_['peak_rss_mib']:.0f}",
        ]
        for p_ in points
    ]
    print(
        markdown_table(
            [
                "Mode",
                "Size",
                "Batch",
                "GFLOP / image",
                "s / batch",
                "images / s",
                "GFLOP/s",
                "share of peak",
                "peak RSS (MiB)",
            ],
            rows,
        )
        + "\n",
        flush=True,
    )
    if points:
        plot(points, Path(a.plots))
        print(f"Plots: {a.plots}\n")

    if "runtimes" not in a.skip:
        print("## 3. Inference latency per runtime\n")
        extra = (
            ["--model", a.runtime_model]
            if a.runtime_model
            else ["--filters", "16,32,64,128,256", "--cat-channels", "16"]
        )
        print(
            run_script([str(HERE / "export_latency.py"), "--size", str(a.runtime_size), "--repeats", "3", *extra])
            + "\n"
        )
    print(f"(report took {time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
