"""LiTS-sized work: what every stage costs as the dataset and the volume grow (issue 28).

Datasets shaped like LiTS (131 volumes of 512 x 512 with 74-987 slices, in-plane 0.55-1.0 mm,
slices 0.7-5 mm: 58,638 slices) at N = 8, 32 and 131 cases, and like MSD Task09 spleen (41 volumes
of 512 x 512 x 31-168). Drawing a 512 x 512 phantom takes ~5-8 s per 100 slices, so a few unique
volumes are drawn once (slice counts at the quantiles of LiTS' distribution, cached under
``--work``) and hard-linked under N case names: every stage treats them as separate cases (own
paths, own cache entries), but the page cache sees the same files, so reading is cheaper than on
131 distinct scans (said in the report).

For each dataset, in one run, each stage in a fresh process (its peak RSS is its own; open files
and threads sampled every 0.2 s):

- discovery + ``check-data``: every voxel read once (4 workers, the command's default);
- the slice cache at 320 x 320 (float16 images, bit-packed masks): build time and disk;
- the NIfTI stream (no cache) at 320 x 320 as the trainer feeds it: slices/s over its whole
  epoch, timed from the iterator's start (``--stream-seconds`` cuts it short);
- training with the demo preset (96 x 96, 16..256, efficient decoder; streamed from the files, as the
  demo trains) and with the paper preset (320 x 320, 64..1024, paper decoder, on the float16 cache):
  two epochs of a fixed number of steps each (``--steps``, ``--paper-steps``): a whole LiTS epoch
  is ~2,300 steps of 8, hours at the demo size and days at the paper's on this CPU, so per-step
  and per-slice times over fixed steps are what is compared; the first epoch includes the index,
  the model build and tracing, the second is steady;

then ``predict`` on the largest volume (512 x 512 x 987) with the paper-size Keras model (random
weights, the CGM set to "present" everywhere, as ``volume_inference.py``) and the fastest CPU export
(LiteRT int8, made and cached as ``volume_inference.py`` makes it), streamed, and the LiteRT run
again through the whole-volume float32 reader (the path before streaming) for its memory.

    python benchmarks/dataset_scale.py                       # everything (~2 h on 2 cores)
    python benchmarks/dataset_scale.py --sizes 8 --no-spleen --no-predict --steps 10   # a quick look

Output: one markdown table (``docs/results/dataset_scale.txt``, with the CPU and the load average
before and after each stage), ``docs/results/dataset_scale.json`` and ``docs/dataset_scale.png``
(per-slice cost and peak memory against N).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: the unique LiTS-shaped volumes: (slices, slice spacing mm, in-plane spacing mm). Slice counts at
#: the 1/16, 3/16, ..., 15/16 quantiles of a distribution over 74..987 with LiTS' mean (58,638 / 131
#: = 448 slices: here 446), each with a spacing that gives a plausible scan length (370-690 mm).
LITS_UNIQUE = (
    (74, 5.0, 0.78),
    (125, 2.5, 0.70),
    (200, 2.0, 0.86),
    (300, 1.5, 0.62),
    (460, 1.0, 0.74),
    (620, 0.8, 0.55),
    (800, 0.7, 0.80),
    (987, 0.7, 0.98),
)
#: MSD Task09 spleen: 41 volumes of 512 x 512 x 31-168 (slices 1.5-8 mm, in-plane 0.61-0.98 mm)
SPLEEN_UNIQUE = ((31, 5.0, 0.79), (75, 5.0, 0.61), (110, 2.0, 0.98), (168, 1.5, 0.70))
IN_PLANE = 512
CACHE_SIZE = 320
PHANTOM_SLAB = 96  # slices drawn at a time (a whole 987-slice volume would need ~12 GB)


# ---------------------------------------------------------------------------------------------
# data: a few unique volumes, drawn slab by slab and cached; N cases hard-linked to them
# ---------------------------------------------------------------------------------------------


def draw_volume(seed: int, n_slices: int, dz: float, dxy: float, task: str):
    """A 512 x 512 x ``n_slices`` phantom CT (int16) and its label, drawn ``PHANTOM_SLAB`` slices at
    a time from one patient and one acquisition (generate_case draws the whole grid at once, ~50
    bytes a voxel). Texture and noise are drawn per slab, so slab borders are seams of noise only."""
    import numpy as np

    from keras_unet3plus.data.phantom import anatomy
    from keras_unet3plus.data.phantom.acquisition import render, sample_acquisition
    from keras_unet3plus.data.phantom.anatomy import Anatomy
    from keras_unet3plus.data.phantom.geometry import Grid

    ss = np.random.SeedSequence(int(seed))
    r_anat, r_acq, r_noise = (np.random.default_rng(s) for s in ss.spawn(3))
    organ = "spleen" if task == "spleen" else "liver"
    body = Anatomy(r_anat, lesions=True)
    shape = (IN_PLANE, IN_PLANE, n_slices)
    acq = sample_acquisition(r_acq, body, shape, (dxy, dxy, dz), organ)
    hu = np.empty(shape, np.int16)
    label = np.empty(shape, np.uint8)
    for z0 in range(0, n_slices, PHANTOM_SLAB):
        k = min(PHANTOM_SLAB, n_slices - z0)
        origin = (acq.origin[0], acq.origin[1], acq.origin[2] + z0 * dz)
        grid = Grid((IN_PLANE, IN_PLANE, k), acq.spacing, origin, acq.angle, acq.pivot)
        body.draw(grid)
        hu[:, :, z0 : z0 + k] = np.clip(np.rint(render(grid.tissue, grid, acq, r_noise)), -1024, 3071)
        if organ == "spleen":
            label[:, :, z0 : z0 + k] = grid.tissue == anatomy.SPLEEN
        else:
            lab = np.isin(grid.tissue, anatomy.LIVER_CODES).astype(np.uint8)
            lab[np.isin(grid.tissue, anatomy.LESION_CODES)] = 2
            label[:, :, z0 : z0 + k] = lab
    affine = np.diag([dxy, dxy, dz, 1.0])
    affine[:3, 3] = acq.origin
    return hu, label, affine


def unique_volumes(work: Path, task: str, log) -> list[tuple[Path, Path, int]]:
    """The unique volumes of a task (drawn once, cached): ``(image, label, slices)``."""
    import nibabel as nib

    from keras_unet3plus.data.nifti import save_nifti_atomic
    from keras_unet3plus.data.phantom import PHANTOM_VERSION

    table = SPLEEN_UNIQUE if task == "spleen" else LITS_UNIQUE
    folder = work / f"unique-{task}-v{PHANTOM_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, (n, dz, dxy) in enumerate(table):
        image, label = folder / f"image-{k}.nii.gz", folder / f"label-{k}.nii.gz"
        if not (image.is_file() and label.is_file()):
            t = time.perf_counter()
            hu, lab, affine = draw_volume(2800 + 17 * k + (500 if task == "spleen" else 0), n, dz, dxy, task)
            save_nifti_atomic(nib.Nifti1Image(lab, affine), label)
            save_nifti_atomic(nib.Nifti1Image(hu, affine), image)  # last: marks the pair complete
            log(f"drew {task} volume {k}: 512x512x{n} ({dz} mm slices) in {time.perf_counter() - t:.0f} s")
        out.append((image, label, n))
    return out


def dataset(work: Path, task: str, n: int, log) -> Path:
    """A LiTS (liver) or MSD (spleen) folder of ``n`` cases, case i a hard link to unique volume
    ``i mod K`` (so every N holds the same mix of lengths)."""
    uniq = unique_volumes(work, task, log)
    name = f"{'msd-spleen' if task == 'spleen' else 'lits'}-{n}"
    root = work / name
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    training = []
    for i in range(n):
        image, label, _ = uniq[i % len(uniq)]
        if task == "spleen":
            dst_i, dst_l = root / "imagesTr" / f"spleen_{i}.nii.gz", root / "labelsTr" / f"spleen_{i}.nii.gz"
            training.append({"image": f"./imagesTr/{dst_i.name}", "label": f"./labelsTr/{dst_l.name}"})
        else:
            dst_i, dst_l = root / f"volume-{i}.nii.gz", root / f"segmentation-{i}.nii.gz"
        dst_i.parent.mkdir(parents=True, exist_ok=True)
        dst_l.parent.mkdir(parents=True, exist_ok=True)
        os.link(image, dst_i)
        os.link(label, dst_l)
    if task == "spleen":
        (root / "dataset.json").write_text(
            json.dumps(
                {
                    "name": "Spleen",
                    "labels": {"0": "background", "1": "spleen"},
                    "modality": {"0": "CT"},
                    "numTraining": n,
                    "training": training,
                },
                indent=2,
            )
        )
    (root / ".complete").write_text("")
    return root


# ---------------------------------------------------------------------------------------------
# measuring one stage in a fresh process
# ---------------------------------------------------------------------------------------------


class Sampler:
    """Open files and threads of this process, sampled every 0.2 s (their peaks), and at the end."""

    def __init__(self):
        self.max_fds = self.max_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> tuple[int, int]:
        return len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task"))

    def _run(self):
        while not self._stop.is_set():
            fds, threads = self.now()
            self.max_fds, self.max_threads = max(self.max_fds, fds), max(self.max_threads, threads)
            self._stop.wait(0.2)

    def result(self) -> dict:
        self._stop.set()
        self._thread.join()
        fds, threads = self.now()
        return {
            "max_fds": self.max_fds,
            "max_threads": self.max_threads,
            "end_fds": fds,
            "end_threads": threads - 1,
            "peak_rss_mb": _status_mb("VmHWM"),
        }


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def stage_check(spec: dict) -> dict:
    from keras_unet3plus.data.cache import plan_cache
    from keras_unet3plus.data.checks import check_dataset
    from keras_unet3plus.data.layouts import find_cases
    from keras_unet3plus.data.preprocess import PreprocessConfig

    t0 = time.perf_counter()
    cases = find_cases(spec["data"])
    t1 = time.perf_counter()
    problems = check_dataset(spec["data"], task=spec["task"], workers=4)
    t2 = time.perf_counter()
    plan = plan_cache(spec["cache"], spec["task"], PreprocessConfig(image_size=CACHE_SIZE), cases)
    return {
        "discovery_s": t1 - t0,
        "check_s": t2 - t1,
        "errors": sum(p.severity == "error" for p in problems),
        "n_cases": len(cases),
        "n_slices": plan.n_slices,
        "plan_bytes": plan.total_bytes,
        "plan_summary": plan.summary(),
    }


def stage_cache(spec: dict) -> dict:
    from keras_unet3plus.data.cache import SliceCache
    from keras_unet3plus.data.layouts import find_cases
    from keras_unet3plus.data.preprocess import PreprocessConfig

    cases = find_cases(spec["data"])
    t0 = time.perf_counter()
    cache = SliceCache(spec["cache"], spec["task"], PreprocessConfig(image_size=CACHE_SIZE), spec["dtype"])
    cache.ensure(cases)
    seconds = time.perf_counter() - t0
    disk = sum(p.stat().st_size for p in cache.dir.iterdir())
    return {"build_s": seconds, "disk_bytes": disk, "dtype": spec["dtype"]}


def stage_stream(spec: dict) -> dict:
    """The trainer's NIfTI stream at 320 x 320 (10 % negatives, batch 8), no model: slices/s."""
    from keras_unet3plus.data import PreprocessConfig, build_dataset, find_cases

    cases = find_cases(spec["data"])
    t0 = time.perf_counter()
    ds, info = build_dataset(
        cases,
        spec["task"],
        PreprocessConfig(image_size=CACHE_SIZE),
        batch_size=8,
        training=True,
        negative_fraction=0.1,
        epoch=0,
    )
    setup = time.perf_counter() - t0
    # timed from the iterator's start, first batch included: the first batch waits for the first
    # cases to be read (7-15 s), work a short epoch would otherwise deliver untimed (lits-8: a
    # quarter of its epoch), which made 8 cases look faster per slice than 131
    t = time.perf_counter()
    n, first = 0, None
    for x, _ in iter(ds):
        n += int(x.shape[0])
        first = first if first is not None else time.perf_counter() - t
        if time.perf_counter() - t > spec["seconds"]:
            break
    dt = time.perf_counter() - t
    return {
        "index_s": setup,
        "slices_per_s": n / dt,
        "first_batch_s": first,
        "slices": n,
        "epoch_slices": info.n_slices,
    }


def stage_train(spec: dict) -> dict:
    """Two epochs of ``steps`` steps with a preset; seconds per epoch from the trainer's hooks."""
    import runpy

    from keras_unet3plus.training.config import TrainConfig
    from keras_unet3plus.training.trainer import Trainer
    from keras_unet3plus.workflows.demo import DEMO_PRESET

    if spec["preset"] == "demo":
        base = dict(DEMO_PRESET)
    else:
        base = dict(
            runpy.run_path(
                str(ROOT / "recipes" / ("train_spleen.py" if spec["task"] == "spleen" else "train_liver.py")),
                run_name="preset",
            )["PRESET"]
        )
    layout = "msd" if spec["task"] == "spleen" else "lits"
    overrides = dict(
        data_dir=spec["data"],
        layout=layout,
        task=spec["task"],
        out_dir=spec["out"],
        cache_dir=spec.get("cache"),
        epochs=2,
        steps_per_epoch=spec["steps"],
        n_test=0,
        val_fraction=0.0,
        patience=None,
        max_minutes=None,
        resume=False,
        verbose=0,
        checkpoint_every_steps=None,
    )
    if spec.get("batch"):
        overrides["batch_size"] = spec["batch"]
    cfg = TrainConfig.from_sources(None, overrides, base=base)
    marks: dict = {"step_s": [[], []]}

    class Timed(Trainer):
        def on_train_start(self):
            t = time.perf_counter()
            super().on_train_start()
            marks["setup_s"] = time.perf_counter() - t

        def on_epoch_start(self, epoch):
            marks[f"t{epoch}"] = time.perf_counter()
            super().on_epoch_start(epoch)

        def train_step(self):
            t = time.perf_counter()
            super().train_step()
            marks["step_s"][self.epoch].append(time.perf_counter() - t)

        def on_epoch_end(self, epoch):
            marks[f"epoch{epoch}_s"] = time.perf_counter() - marks.pop(f"t{epoch}")
            super().on_epoch_end(epoch)

    Timed(cfg, printer=lambda _m: None).fit()
    second = marks["step_s"][1]
    # steady: the second epoch past its first quarter (an epoch starts by refilling the shuffle buffer
    # from cycle_length freshly opened cases: seconds that a real, 2,000-step epoch spreads thin)
    tail = second[len(second) // 4 :] or second
    return {
        "preset": spec["preset"],
        "batch": cfg.batch_size,
        "steps": spec["steps"],
        "image_size": cfg.image_size,
        "steady_step_s": sum(tail) / len(tail),
        **marks,
    }


def stage_predict(spec: dict) -> dict:
    """`unet3plus predict` on one volume (streamed, or ``whole``: read into a float32 volume first)."""
    from volume_inference import open_predictor

    t0 = time.perf_counter()
    predictor = open_predictor(spec["model"], spec["kind"], "fp32", batch_size=4)
    load = time.perf_counter() - t0
    timings: dict = {}
    t1 = time.perf_counter()
    volume = None
    if spec["whole"]:
        from keras_unet3plus.data.nifti import load_image

        volume = load_image(spec["input"])
    predictor.predict_file(spec["input"], spec["output"], volume=volume, timings=timings)
    return {"load_s": load, "predict_s": time.perf_counter() - t1, "timings": timings}


STAGES = {
    "check": stage_check,
    "cache": stage_cache,
    "stream": stage_stream,
    "train": stage_train,
    "predict": stage_predict,
}


def worker(name: str, spec: dict) -> None:
    sampler = Sampler()
    out = STAGES[name](spec)
    out.update(sampler.result())
    print("RESULT " + json.dumps(out), flush=True)
    os._exit(0)  # tf.data iterators and runtime threads can hold interpreter shutdown


def load_average() -> float:
    return os.getloadavg()[0]


def run_stage(name: str, spec: dict, log, timeout: float = 6 * 3600) -> dict:
    load0 = load_average()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--spec", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        log(f"{name} failed (exit {proc.returncode}):\n{tail}")
        return {"error": tail.splitlines()[-1] if tail else f"exit {proc.returncode}", "wall_s": wall}
    out = json.loads(line[len("RESULT ") :])
    out.update(wall_s=wall, load_before=load0, load_after=load_average())
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None or v != v else fmt.format(v)


def table(results: dict, names: list[str]) -> str:
    """One markdown table: a row per measure, a column per dataset, and 131 / 8 per slice."""
    from _common import markdown_table

    def get(name, stage, key):
        return results.get(name, {}).get(stage, {}).get(key)

    def per_slice_ms(name, stage, key, slices):
        v, n = get(name, stage, key), slices(name)
        return None if v is None or not n else 1000.0 * v / n

    n_slices = lambda name: get(name, "check", "n_slices")  # noqa: E731
    demo_batch = lambda name: get(name, "demo", "batch")  # noqa: E731
    paper_batch = lambda name: get(name, "paper", "batch")  # noqa: E731
    rows_spec = [
        ("cases / slices", lambda n: f"{get(n, 'check', 'n_cases')} / {n_slices(n):,}" if n_slices(n) else "-", None),
        ("discovery (s)", lambda n: _f(get(n, "check", "discovery_s"), "{:.2f}"), None),
        ("check-data, every voxel (s)", lambda n: _f(get(n, "check", "check_s")), None),
        (
            "  per slice (ms)",
            lambda n: _f(per_slice_ms(n, "check", "check_s", n_slices), "{:.2f}"),
            ("check", "check_s", n_slices),
        ),
        ("  peak RSS (MB)", lambda n: _f(get(n, "check", "peak_rss_mb"), "{:.0f}"), ("check", "peak_rss_mb", None)),
        ("cache build, 320x320 float16 (s)", lambda n: _f(get(n, "cache", "build_s")), None),
        (
            "  per slice (ms)",
            lambda n: _f(per_slice_ms(n, "cache", "build_s", n_slices), "{:.2f}"),
            ("cache", "build_s", n_slices),
        ),
        ("  disk (GB)", lambda n: _f((get(n, "cache", "disk_bytes") or float("nan")) / 1e9, "{:.2f}"), None),
        (
            "  disk per slice (kB)",
            lambda n: _f(
                (get(n, "cache", "disk_bytes") or float("nan")) / 1e3 / (n_slices(n) or float("nan")), "{:.1f}"
            ),
            ("cache", "disk_bytes", n_slices),
        ),
        ("  peak RSS (MB)", lambda n: _f(get(n, "cache", "peak_rss_mb"), "{:.0f}"), ("cache", "peak_rss_mb", None)),
        ("NIfTI stream at 320: index (s)", lambda n: _f(get(n, "stream", "index_s")), None),
        (
            "  index per slice (ms)",
            lambda n: _f(per_slice_ms(n, "stream", "index_s", n_slices), "{:.2f}"),
            ("stream", "index_s", n_slices),
        ),
        ("  slices/s", lambda n: _f(get(n, "stream", "slices_per_s")), ("stream", "slices_per_s", None)),
        ("  peak RSS (MB)", lambda n: _f(get(n, "stream", "peak_rss_mb"), "{:.0f}"), ("stream", "peak_rss_mb", None)),
        ("demo preset, streamed: setup (s)", lambda n: _f(get(n, "demo", "setup_s")), None),
        ("  first epoch (s)", lambda n: _f(get(n, "demo", "epoch0_s")), None),
        ("  steady epoch (s)", lambda n: _f(get(n, "demo", "epoch1_s")), None),
        (
            "  steady step, 2nd epoch past its first quarter (s)",
            lambda n: _f(get(n, "demo", "steady_step_s"), "{:.2f}"),
            None,
        ),
        (
            "  steady per slice (ms)",
            lambda n: _f(per_slice_ms(n, "demo", "steady_step_s", demo_batch), "{:.1f}"),
            ("demo", "steady_step_s", demo_batch),
        ),
        ("  peak RSS (MB)", lambda n: _f(get(n, "demo", "peak_rss_mb"), "{:.0f}"), ("demo", "peak_rss_mb", None)),
        (
            "  open files / threads, peak",
            lambda n: f"{get(n, 'demo', 'max_fds')} / {get(n, 'demo', 'max_threads')}",
            None,
        ),
        ("paper preset, cached (batch as stated): setup (s)", lambda n: _f(get(n, "paper", "setup_s")), None),
        ("  first epoch (s)", lambda n: _f(get(n, "paper", "epoch0_s")), None),
        ("  steady epoch (s)", lambda n: _f(get(n, "paper", "epoch1_s")), None),
        ("  steady step (s)", lambda n: _f(get(n, "paper", "steady_step_s"), "{:.1f}"), None),
        (
            "  steady per slice (s)",
            lambda n: _f((per_slice_ms(n, "paper", "steady_step_s", paper_batch) or float("nan")) / 1000, "{:.2f}"),
            ("paper", "steady_step_s", paper_batch),
        ),
        ("  peak RSS (MB)", lambda n: _f(get(n, "paper", "peak_rss_mb"), "{:.0f}"), ("paper", "peak_rss_mb", None)),
        (
            "  open files / threads, peak",
            lambda n: f"{get(n, 'paper', 'max_fds')} / {get(n, 'paper', 'max_threads')}",
            None,
        ),
    ]
    lits = [n for n in names if n.startswith("lits-")]
    first, last = (lits[0], lits[-1]) if len(lits) >= 2 else (None, None)
    headers = ["measure"] + names + ([f"{last} / {first}"] if first else [])
    rows = []
    for label, fn, ratio in rows_spec:
        row = [label] + [fn(n) for n in names]
        if first:
            cell = ""
            if ratio is not None:
                stage, key, per = ratio
                a, b = get(first, stage, key), get(last, stage, key)
                if a and b and per is not None:
                    a, b = a / (per(first) or 1), b / (per(last) or 1)
                cell = f"{b / a:.2f}" if a and b else "-"
            row.append(cell)
        rows.append(row)
    return markdown_table(headers, rows)


def projection(results: dict, names: list[str]) -> str:
    """The paper preset at its own batch 8, and one LiTS epoch at the paper settings on this CPU."""
    lines = []
    lits = [n for n in names if n.startswith("lits-")]
    p8 = next((results[n]["paper8"] for n in names if "paper8" in results.get(n, {})), None)
    if p8 and "steady_step_s" in p8:
        lines.append(
            f"- Paper preset at its own batch 8 ({names[0]}): first epoch {p8['epoch0_s']:.0f} s "
            f"({p8['steps']} step(s) with tracing), steady step {p8['steady_step_s']:.0f} s = "
            f"{p8['steady_step_s'] / 8:.1f} s per slice, peak RSS {p8['peak_rss_mb']:.0f} MB, "
            f"open files / threads {p8['max_fds']} / {p8['max_threads']}."
        )
    big = results.get(lits[-1], {}) if lits else {}
    slices = big.get("stream", {}).get("epoch_slices")
    if slices and (p8 or big.get("paper")):
        train = slices * 93 / big["check"]["n_cases"]
        per_slice = (
            (p8["steady_step_s"] / 8)
            if p8 and "steady_step_s" in p8
            else big["paper"]["steady_step_s"] / big["paper"]["batch"]
        )
        lines.append(
            f"- One LiTS epoch at the paper settings on this CPU: the {lits[-1]} dataset's epoch is "
            f"{slices:,} slices (organ slices + 10 % negatives); the paper split trains on 93 of 131 "
            f"volumes, ~{train:,.0f} slices = {train / 8:,.0f} steps of 8, at {per_slice:.1f} s per "
            f"slice: ~{train * per_slice / 3600:.0f} hours per epoch, ~{train * per_slice / 86400 * 100:.0f} "
            f"days for the preset's 100 epochs. On one GPU: not measured (no GPU machine in this run)."
        )
    return "\n".join(lines) + ("\n" if lines else "")


def predict_table(results: dict) -> str:
    from _common import markdown_table

    rows = []
    for name, label in (
        ("litert", "LiteRT int8, streamed"),
        ("litert-whole", "LiteRT int8, whole-volume float32 reader (before)"),
        ("keras", "Keras fp32, paper decoder (fused), streamed"),
    ):
        r = results.get(name)
        if not r:
            continue
        label = f"{label}, 512x512x{r['slices']}"
        if "error" in r:
            rows.append([label, "-", "-", "-", "-", r["error"][:100]])
            continue
        t = r.get("timings", {})
        per_slice = r["wall_s"] / r["slices"]
        rows.append(
            [
                label,
                f"{r['wall_s']:.0f}",
                f"{1 / per_slice:.2f}",
                f"{per_slice * 987 / 60:.0f}",
                f"{r['peak_rss_mb']:.0f}",
                " / ".join(f"{t.get(s, 0.0):.0f}" for s in ("read", "preprocess", "model", "postprocess", "write"))
                + f" (load {r['load_before']:.2f} -> {r['load_after']:.2f})",
            ]
        )
    return markdown_table(
        [
            "predict (.nii.gz, one process each)",
            "wall s",
            "slices/s",
            "987 slices at that rate (min)",
            "peak RSS MB",
            "read / preprocess / model / post / write s (load avg)",
        ],
        rows,
    )


def plot(results: dict, names: list[str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lits = [n for n in names if n.startswith("lits-") and "check" in results.get(n, {})]
    if not lits:
        return
    xs = [results[n]["check"]["n_cases"] for n in lits]
    slices = [results[n]["check"]["n_slices"] for n in lits]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    series = [
        ("check-data", "check", "check_s", None),
        ("cache build", "cache", "build_s", None),
        ("stream index", "stream", "index_s", None),
        ("demo step / slice", "demo", "epoch1_s", "demo"),
        ("paper step / slice", "paper", "epoch1_s", "paper"),
    ]
    for label, stage, key, per in series:
        ys = []
        for n, s in zip(lits, slices):
            r = results[n].get(stage, {})
            if key not in r:
                ys.append(float("nan"))
                continue
            ys.append(1000.0 * (r["steady_step_s"] / r["batch"] if per else r[key] / s))
        a1.plot(xs, ys, "o-", label=label)
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xticks(xs, [str(x) for x in xs])
    a1.set_xlabel("cases (LiTS-shaped)")
    a1.set_ylabel("ms per slice")
    a1.set_title("time per slice: flat in N", fontsize=10)
    a1.legend(fontsize=8)
    for label, stage in (
        ("check-data", "check"),
        ("cache build", "cache"),
        ("stream", "stream"),
        ("demo training", "demo"),
        ("paper training", "paper"),
    ):
        ys = [results[n].get(stage, {}).get("peak_rss_mb", float("nan")) for n in lits]
        a2.plot(xs, ys, "o-", label=label)
    a2.set_xscale("log")
    a2.set_xticks(xs, [str(x) for x in xs])
    a2.set_xlabel("cases (LiTS-shaped)")
    a2.set_ylabel("peak RSS (MB)")
    a2.set_ylim(bottom=0)
    a2.set_title("peak memory of each stage's process: flat in N", fontsize=10)
    a2.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="8,32,131", help="LiTS-shaped dataset sizes (cases)")
    p.add_argument("--no-spleen", dest="spleen", action="store_false", help="leave out the 41-case MSD spleen")
    p.add_argument("--no-predict", dest="predict", action="store_false", help="leave out predict on 512x512x987")
    p.add_argument("--steps", type=int, default=40, help="demo-preset steps per epoch (batch 8)")
    p.add_argument("--paper-steps", type=int, default=3, help="paper-preset steps per epoch")
    p.add_argument(
        "--paper-batch",
        type=int,
        default=2,
        help="paper-preset batch for the comparison over N (default 2: batch 8 needs ~17 GB here)",
    )
    p.add_argument(
        "--paper8-steps",
        type=int,
        default=1,
        help="steps per epoch of one paper run at its own batch 8, on the first dataset (0: none)",
    )
    p.add_argument(
        "--stream-seconds",
        type=float,
        default=float("inf"),
        help="cut the NIfTI stream's timing after this many seconds (default: its whole epoch; the stream "
        "delivers a case at a time, so only whole epochs compare across N)",
    )
    p.add_argument("--stages", default="check,cache,stream,demo,paper", help="which per-dataset stages")
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "keras-unet3plus" / "dataset-scale")
    p.add_argument(
        "--models",
        type=Path,
        default=Path.home() / ".cache" / "keras-unet3plus" / "volume-inference",
        help="the speed model and its exports (shared with volume_inference.py)",
    )
    p.add_argument("--keep-cache", action="store_true", help="keep each dataset's slice cache (GBs) afterwards")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "dataset_scale")
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "dataset_scale.png")
    p.add_argument(
        "--keras-slices",
        type=int,
        default=160,
        help="slices of the largest volume that the Keras path predicts (0: none; 987: all, ~80 min)",
    )
    p.add_argument("--report", action="store_true", help="only redraw the table and plot from --out's JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(args.spec))
        return 0

    from _common import machine_line

    from keras_unet3plus.runtimes.cpu import cpu_info

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    sets = [("liver", int(n)) for n in args.sizes.split(",") if n.strip()] + ([("spleen", 41)] if args.spleen else [])
    results: dict = {}
    names: list[str] = []
    cpu = cpu_info()
    json_path = args.out.with_suffix(".json")

    def save() -> None:
        """The results so far (a long run that stops keeps what it measured; ``--report`` redraws)."""
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(
                {
                    "machine": machine_line(),
                    "cpu": cpu.summary(),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "names": names,
                    "minutes": (time.perf_counter() - t_start) / 60,
                    "results": results,
                },
                indent=1,
                default=str,
            )
        )

    if args.report:
        saved = json.loads(json_path.read_text())
        results, names = saved["results"], saved["names"]
        write_report(args, results, names, saved["machine"], saved["cpu"], saved["minutes"], log)
        return 0
    for task, n in sets:
        data = dataset(args.work, task, n, log)
        name = data.name
        names.append(name)
        res = results.setdefault(name, {})
        scratch = Path(tempfile.mkdtemp(prefix=f"scale-{name}-", dir=args.work))
        cache = scratch / "cache"
        common = {"data": str(data), "task": task, "cache": str(cache)}
        log(f"{name}: load {load_average():.2f}")
        if "check" in stages:
            res["check"] = run_stage("check", common, log)
            save()
            log(
                f"{name} check: {res['check'].get('check_s', float('nan')):.0f} s, "
                f"{res['check'].get('plan_summary', '')}"
            )
        if "cache" in stages or "paper" in stages:
            res["cache"] = run_stage("cache", {**common, "dtype": "float16"}, log)
            save()
            log(
                f"{name} cache: {res['cache'].get('build_s', float('nan')):.0f} s, "
                f"{res['cache'].get('disk_bytes', 0) / 1e9:.2f} GB"
            )
        if "stream" in stages:
            res["stream"] = run_stage("stream", {**common, "seconds": args.stream_seconds}, log)
            save()
            log(
                f"{name} stream: {res['stream'].get('slices_per_s', float('nan')):.1f} slices/s, "
                f"peak {res['stream'].get('peak_rss_mb', float('nan')):.0f} MB"
            )
        if "demo" in stages:
            res["demo"] = run_stage(
                "train",
                {**common, "cache": None, "preset": "demo", "steps": args.steps, "out": str(scratch / "run-demo")},
                log,
            )
            save()
            log(f"{name} demo: {res['demo']}")
        if "paper" in stages:
            res["paper"] = run_stage(
                "train",
                {
                    **common,
                    "preset": "paper",
                    "steps": args.paper_steps,
                    "batch": args.paper_batch,
                    "out": str(scratch / "run-paper"),
                },
                log,
            )
            save()
            log(f"{name} paper: {res['paper']}")
            if args.paper8_steps and len(names) == 1:
                res["paper8"] = run_stage(
                    "train",
                    {**common, "preset": "paper", "steps": args.paper8_steps, "out": str(scratch / "run-paper8")},
                    log,
                )
                save()
                log(f"{name} paper at batch 8: {res['paper8']}")
        if not args.keep_cache:
            shutil.rmtree(scratch, ignore_errors=True)

    if args.predict:
        predict_runs(args, log, save, results.setdefault("predict", {}))
    save()
    write_report(args, results, names, machine_line(), cpu.summary(), (time.perf_counter() - t_start) / 60, log)
    return 0


def write_report(args, results: dict, names: list[str], machine: str, cpu: str, minutes: float, log) -> None:
    header = (
        f"# LiTS-sized work: cost of every stage against the number of cases (issue 28)\n\n"
        f"Machine: {machine}; {cpu}. Load average (1 min) at the start of each stage "
        f"in the JSON beside this file; the run took {minutes:.0f} min.\n"
        f"Datasets: LiTS-shaped phantoms, 512x512, {len(LITS_UNIQUE)} unique volumes of "
        f"{', '.join(str(u[0]) for u in LITS_UNIQUE)} slices hard-linked under N case names "
        f"(case i = volume i mod {len(LITS_UNIQUE)}); MSD spleen-shaped: {len(SPLEEN_UNIQUE)} unique "
        f"volumes of {', '.join(str(u[0]) for u in SPLEEN_UNIQUE)} slices. Demo preset: 96x96, 16..256, "
        f"efficient decoder, batch 8, {args.steps} steps per epoch, streamed from the files; paper preset: "
        f"320x320, 64..1024, paper decoder (trained fused), batch {args.paper_batch}, "
        f"{args.paper_steps} steps per epoch, on the float16 cache (and once, on the first dataset, at the "
        f"preset's batch 8). A whole epoch is not run (see the docstring): per-step and per-slice times "
        f"over these fixed steps are compared.\n"
    )
    text = header + "\n" + table(results, names) + "\n" + projection(results, names) + "\n"
    if "predict" in results:
        text += "\n" + predict_table(results["predict"]) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".txt").write_text(text)
    plot(results, names, args.png)
    log(f"done in {minutes:.0f} min; {args.out.with_suffix('.txt')}, {args.png}")


def cut_volume(image: Path, n: int) -> Path:
    """The first ``n`` slices of ``image``, written once beside it (the Keras path's input: 987
    slices of the paper model in Keras are ~80 min on 2 cores, the streamed memory does not depend
    on the length, and the LiteRT runs measure the whole 987)."""
    import nibabel as nib
    import numpy as np

    from keras_unet3plus.data.nifti import save_nifti_atomic

    out = image.with_name(image.name.replace(".nii.gz", f"-first{n}.nii.gz"))
    if not out.is_file():
        img = nib.load(str(image))
        save_nifti_atomic(nib.Nifti1Image(np.asarray(img.dataobj[:, :, :n]), img.affine), out)
    return out


def predict_runs(args, log, save, out: dict) -> None:
    """Predict the largest LiTS-shaped volume with LiteRT int8 (streamed, and through the
    whole-volume reader) and its first ``--keras-slices`` with the Keras paper model."""
    import volume_inference as vi

    image, _, n = unique_volumes(args.work, "liver", log)[-1]
    models = vi.speed_models(args.models, log)
    scratch = Path(tempfile.mkdtemp(prefix="scale-predict-", dir=args.work))
    try:
        litert = vi.artefact(models, vi.PATHS["litert-int8"], log, 32)
        runs = [
            ("litert", str(litert), "tflite", False, image, n),
            ("litert-whole", str(litert), "tflite", True, image, n),
        ]
        if args.keras_slices:
            k = min(args.keras_slices, n)
            runs.append(("keras", str(models["paper"]), "keras", False, cut_volume(image, k) if k < n else image, k))
        for name, model, kind, whole, path, slices in runs:
            log(f"predict {name} on 512x512x{slices} (load {load_average():.2f}) ...")
            r = run_stage(
                "predict",
                {
                    "model": model,
                    "kind": kind,
                    "whole": whole,
                    "input": str(path),
                    "output": str(scratch / f"{name}.nii.gz"),
                },
                log,
            )
            r["slices"] = slices
            out[name] = r
            save()
            log(
                f"predict {name}: {r.get('wall_s', float('nan')):.0f} s, "
                f"peak {r.get('peak_rss_mb', float('nan')):.0f} MB"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
