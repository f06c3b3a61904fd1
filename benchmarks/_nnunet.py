"""nnU-Net v2 (2d configuration) as a measured peer in the CPU inference benchmark.

The project venv has TensorFlow and no torch, so every nnU-Net step runs as a subprocess of
nnU-Net's own venv (default /work/nnunet-venv, or $UNET3PLUS_NNUNET_VENV). nnU-Net is planned with
its default planner and is not trained properly: inference speed does not depend on the weights,
so fold 0 gets a checkpoint after a token number of training iterations, written by nnU-Net's own
trainer. Prediction is the plain `nnUNetv2_predict -device cpu` a user would run, with and
without `--disable_tta`.

Self-test (run with the project venv):  python benchmarks/_nnunet.py --self-test
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

DEFAULT_VENV = Path("/work/nnunet-venv")
VENV_ENV_VAR = "UNET3PLUS_NNUNET_VENV"
CONFIGURATION = "2d"
TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"
CHECKPOINT = "checkpoint_final.pth"
#: training iterations before the checkpoint is written: enough to run nnU-Net's real training
#: loop end to end (the checkpoint then has every field a trained one has), not to learn anything
TOKEN_ITERATIONS = 2
#: nnUNetv2_predict's default -step_size: tiles overlap by half a patch
TILE_STEP = 0.5
LOG_TAIL_LINES = 25

_absent_reason = "find_nnunet() has not been called"

_VERSIONS_SCRIPT = """
import json, importlib.metadata as md
import torch, nnunetv2
print(json.dumps({"nnunetv2": md.version("nnunetv2"), "torch": torch.__version__}))
"""

# Runs in nnU-Net's venv. get_trainer_from_args is what nnUNetv2_train uses; run_training() with a
# token budget goes through nnU-Net's own start/end hooks, which copy plans.json and dataset.json
# to the model folder and write fold_0/checkpoint_final.pth exactly as a full training does.
_TRAIN_SCRIPT = """
import json, sys
import torch
from nnunetv2.run.run_training import get_trainer_from_args
dataset, configuration, iterations, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
trainer = get_trainer_from_args(dataset, configuration, 0, device=torch.device("cpu"))
trainer.num_epochs = 1
trainer.num_iterations_per_epoch = iterations
trainer.num_val_iterations_per_epoch = 1
trainer.run_training()
network = trainer.network
info = {"network_class": type(network).__module__ + "." + type(network).__name__,
        "parameters": sum(p.numel() for p in network.parameters()),
        "batch_size": trainer.batch_size}
with open(out, "w") as fh:
    json.dump(info, fh)
"""


@dataclass(frozen=True)
class NnunetEnv:
    """An nnU-Net v2 installation in its own venv, with the versions to report."""

    venv: Path
    nnunetv2_version: str
    torch_version: str

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def executable(self, name: str) -> Path:
        return self.venv / "bin" / name

    @property
    def versions(self) -> str:
        return f"nnunetv2 {self.nnunetv2_version}, torch {self.torch_version}"


@dataclass(frozen=True)
class NnunetModel:
    """A fold-0 nnU-Net model of one dataset, with the facts of its 2d plan."""

    env: NnunetEnv
    dataset_id: int
    dataset_name: str
    work_dir: Path
    patch_size: tuple[int, ...]
    batch_size: int
    spacing: tuple[float, ...]
    transpose_forward: tuple[int, ...]
    network_class: str
    parameters: int
    token_iterations: int

    @property
    def raw(self) -> Path:
        return self.work_dir / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        return self.work_dir / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        return self.work_dir / "nnUNet_results"

    @property
    def model_dir(self) -> Path:
        return _model_dir(self.work_dir, self.dataset_name)

    @property
    def checkpoint(self) -> Path:
        return self.model_dir / "fold_0" / CHECKPOINT

    def environ(self) -> dict[str, str]:
        """The caller's environment plus the three folders nnU-Net locates everything by."""
        return _nnunet_environ(self.work_dir)

    def describe(self) -> str:
        """One line for the report: which version and which plan was measured."""
        return (
            f"nnU-Net v2 {self.env.nnunetv2_version} (torch {self.env.torch_version}), default "
            f"{CONFIGURATION} plan: patch {'x'.join(map(str, self.patch_size))}, batch "
            f"{self.batch_size}, spacing {'x'.join(f'{s:g}' for s in self.spacing)} mm, "
            f"{self.network_class.rsplit('.', 1)[-1]} with {self.parameters / 1e6:.1f} M parameters"
        )


def why_absent() -> str:
    """Why the last find_nnunet() returned None."""
    return _absent_reason


def find_nnunet(python: str | None = None) -> NnunetEnv | None:
    """The nnU-Net installation to benchmark, or None (reason in `why_absent()`).

    `python` is a venv folder or its python executable; default $UNET3PLUS_NNUNET_VENV, else
    /work/nnunet-venv.
    """
    global _absent_reason
    given = Path(python or os.environ.get(VENV_ENV_VAR) or DEFAULT_VENV).expanduser()
    venv = given.parent.parent if given.is_file() else given
    missing = [
        name
        for name in ("python", "nnUNetv2_plan_and_preprocess", "nnUNetv2_predict")
        if not (venv / "bin" / name).exists()
    ]
    if missing:
        _absent_reason = f"no nnU-Net venv at {venv}: missing bin/{', bin/'.join(missing)}"
        return None
    try:
        out = subprocess.run(
            [str(venv / "bin" / "python"), "-c", _VERSIONS_SCRIPT], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        _absent_reason = f"{venv}/bin/python did not import nnunetv2 and torch within 300 s"
        return None
    if out.returncode != 0:
        _absent_reason = f"{venv}/bin/python cannot import nnunetv2 and torch: {_tail(out.stderr, 3)}"
        return None
    versions = json.loads(out.stdout.strip().splitlines()[-1])
    _absent_reason = ""
    return NnunetEnv(venv=venv, nnunetv2_version=versions["nnunetv2"], torch_version=versions["torch"])


def prepare_model(
    env: NnunetEnv, work_dir: Path, training_cases: Sequence[tuple[Path, Path]], dataset_id: int = 990
) -> NnunetModel:
    """Plan, preprocess and checkpoint nnU-Net's default 2d model for these cases (cached).

    Labels are written as liver = label > 0 (LiTS convention: lesion voxels are liver), because the
    dataset declares background and liver only. Reuses the model when `work_dir` already holds one
    made from the same case files, dataset id and nnU-Net version.
    """
    import nibabel as nib
    import numpy as np

    if not training_cases:
        raise ValueError("prepare_model needs at least one (image, label) training case")
    work_dir = Path(work_dir).resolve()
    dataset_name = f"Dataset{dataset_id:03d}_Phantom"
    record = work_dir / "nnunet_model.json"
    key = _cache_key(env, dataset_id, training_cases)
    if record.exists():
        cached = json.loads(record.read_text())
        if cached["key"] == key and not _missing_model_files(work_dir, dataset_name):
            return _model_from_record(env, work_dir, cached)

    record.unlink(missing_ok=True)
    for root in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        shutil.rmtree(work_dir / root / dataset_name, ignore_errors=True)
    raw = work_dir / "nnUNet_raw" / dataset_name
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    names = [f"case_{i:03d}" for i in range(len(training_cases))]
    for name, (image, label) in zip(names, training_cases):
        shutil.copyfile(image, raw / "imagesTr" / f"{name}_0000.nii.gz")
        lab = nib.load(str(label))
        liver = nib.Nifti1Image((np.asanyarray(lab.dataobj) > 0).astype(np.uint8), lab.affine, lab.header)
        liver.set_data_dtype(np.uint8)
        nib.save(liver, str(raw / "labelsTr" / f"{name}.nii.gz"))
    (raw / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "liver": 1},
                "numTraining": len(names),
                "file_ending": ".nii.gz",
            },
            indent=2,
        )
    )

    environ = _nnunet_environ(work_dir)
    logs = work_dir / "logs"
    # -npfp / -np: the defaults (8 processes each) oversubscribe a small shared CPU; planning and
    # preprocessing are not measured and their result does not depend on the process count
    n_proc = str(os.cpu_count() or 1)
    _run(
        [
            str(env.executable("nnUNetv2_plan_and_preprocess")),
            "-d",
            str(dataset_id),
            "-c",
            CONFIGURATION,
            "--verify_dataset_integrity",
            "-npfp",
            n_proc,
            "-np",
            n_proc,
            "--no_pbar",
        ],
        environ,
        "nnUNetv2_plan_and_preprocess",
        logs / "plan_and_preprocess",
    )

    # nnU-Net's default split is 5-fold CV, which needs >= 5 cases: give fold 0 an explicit split
    split = {"train": names[:-1] or names, "val": names[-1:]}
    (work_dir / "nnUNet_preprocessed" / dataset_name / "splits_final.json").write_text(json.dumps([split], indent=2))

    network_json = logs / "network.json"
    # nnUNet_n_proc_DA=0: a token training needs no data-augmentation worker processes
    _run(
        [
            str(env.python),
            "-c",
            _TRAIN_SCRIPT,
            str(dataset_id),
            CONFIGURATION,
            str(TOKEN_ITERATIONS),
            str(network_json),
        ],
        {**environ, "nnUNet_n_proc_DA": "0"},
        "nnU-Net token training",
        logs / "token_training",
    )

    cached = {
        "key": key,
        "dataset_id": dataset_id,
        "dataset_name": dataset_name,
        "token_iterations": TOKEN_ITERATIONS,
        **json.loads(network_json.read_text()),
    }
    absent = _missing_model_files(work_dir, dataset_name)
    if absent:
        raise RuntimeError(
            f"nnU-Net token training finished but did not write {', '.join(absent)}; "
            f"see {logs / 'token_training'}.stdout"
        )
    record.write_text(json.dumps(cached, indent=2))
    return _model_from_record(env, work_dir, cached)


def predict_command(model: NnunetModel, input_dir: Path, output_dir: Path, tta: bool) -> list[str]:
    """The `nnUNetv2_predict` call a user would type, with nnU-Net's defaults otherwise."""
    cmd = [
        str(model.env.executable("nnUNetv2_predict")),
        "-i",
        str(input_dir),
        "-o",
        str(output_dir),
        "-d",
        str(model.dataset_id),
        "-c",
        CONFIGURATION,
        "-f",
        "0",
        "-device",
        "cpu",
        "-chk",
        CHECKPOINT,
    ]
    return cmd if tta else cmd + ["--disable_tta"]


def run_predict(model: NnunetModel, input_dir: Path, output_dir: Path, tta: bool) -> dict:
    """Run `nnUNetv2_predict` on every {case}_0000.nii.gz in `input_dir`, timed end to end.

    Returns `seconds` (wall, including nnU-Net's start-up as a user pays it), `peak_pss_mib` (PSS
    summed over its process tree, as it preprocesses and exports in worker processes; sampled every
    0.2 s), `peak_rss_one_process_mib` (largest single process, exact from the kernel), `masks`
    (one output path per input, same order) and `command`.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    images = sorted(input_dir.glob("*.nii.gz"))
    if not images:
        raise FileNotFoundError(f"no .nii.gz images in {input_dir}")
    misnamed = [p.name for p in images if not p.name.endswith("_0000.nii.gz")]
    if misnamed:
        raise ValueError(f"nnU-Net inputs must be named {{case}}_0000.nii.gz; got {', '.join(misnamed)}")
    masks = [output_dir / p.name.replace("_0000.nii.gz", ".nii.gz") for p in images]
    for mask in masks:
        mask.unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    cmd = predict_command(model, input_dir, output_dir, tta)
    log = output_dir.parent / f"{output_dir.name}.nnunet_predict"
    seconds, tree_peak, one_peak = _run(cmd, model.environ(), "nnUNetv2_predict", log, measure=True)
    absent = [str(m) for m in masks if not m.exists()]
    if absent:
        raise RuntimeError(f"nnUNetv2_predict exited 0 but wrote no {', '.join(absent)}; see {log}.stderr")
    return {
        "seconds": seconds,
        "peak_pss_mib": tree_peak,
        "peak_rss_one_process_mib": one_peak,
        "masks": masks,
        "command": cmd,
    }


def tiles_per_slice(model: NnunetModel, image: Path) -> int:
    """How many network passes nnU-Net's sliding window makes per slice of `image`, without TTA.

    nnU-Net resamples each slice to the plan's spacing, then tiles it with overlapping patches, so
    a volume with larger pixels than the plan's costs several passes per slice (TTA: x4, mirroring
    both in-plane axes). Axis order: SimpleITK's array is nibabel's reversed, then the plan's
    transpose_forward puts the slice axis first.
    """
    import math

    import nibabel as nib

    img = nib.load(str(image))
    sitk_shape, sitk_zooms = img.shape[:3][::-1], img.header.get_zooms()[:3][::-1]
    tiles = 1
    for axis, patch, target in zip(model.transpose_forward[1:], model.patch_size, model.spacing):
        size = round(sitk_shape[axis] * float(sitk_zooms[axis]) / target)
        tiles *= 1 if size <= patch else math.ceil((size - patch) / (patch * TILE_STEP)) + 1
    return tiles


def _nnunet_environ(work_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "nnUNet_raw": str(work_dir / "nnUNet_raw"),
        "nnUNet_preprocessed": str(work_dir / "nnUNet_preprocessed"),
        "nnUNet_results": str(work_dir / "nnUNet_results"),
    }


def _model_dir(work_dir: Path, dataset_name: str) -> Path:
    return work_dir / "nnUNet_results" / dataset_name / f"{TRAINER}__{PLANS}__{CONFIGURATION}"


def _missing_model_files(work_dir: Path, dataset_name: str) -> list[str]:
    """What nnUNetPredictor.initialize_from_trained_model_folder reads, if absent."""
    model_dir = _model_dir(work_dir, dataset_name)
    needed = [model_dir / "fold_0" / CHECKPOINT, model_dir / "plans.json", model_dir / "dataset.json"]
    return [str(p) for p in needed if not p.exists()]


def _model_from_record(env: NnunetEnv, work_dir: Path, record: dict) -> NnunetModel:
    plans_file = _model_dir(work_dir, record["dataset_name"]) / "plans.json"  # the plan predict uses
    plans = json.loads(plans_file.read_text())
    plan = plans["configurations"][CONFIGURATION]
    return NnunetModel(
        env=env,
        dataset_id=record["dataset_id"],
        dataset_name=record["dataset_name"],
        work_dir=work_dir,
        patch_size=tuple(plan["patch_size"]),
        batch_size=record["batch_size"],
        spacing=tuple(plan["spacing"]),
        transpose_forward=tuple(plans["transpose_forward"]),
        network_class=record["network_class"],
        parameters=record["parameters"],
        token_iterations=record["token_iterations"],
    )


def _cache_key(env: NnunetEnv, dataset_id: int, cases: Sequence[tuple[Path, Path]]) -> str:
    digest = hashlib.sha256(f"{env.nnunetv2_version}|{dataset_id}|{TOKEN_ITERATIONS}".encode())
    for image, label in cases:
        for path in (image, label):
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _tail(text: str, n: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _run(
    cmd: list[str], environ: dict[str, str], what: str, log: Path, measure: bool = False
) -> tuple[float, float, float]:
    """Run `cmd` with stdout/stderr in `log`.stdout/.stderr; raise with the stderr tail on failure.

    Returns (wall seconds, peak PSS summed over the process tree, peak RSS of its largest single
    process), memory in MiB; the tree is only sampled when `measure`. The child gets its own process
    group so its workers can be found and, if we are interrupted, stopped with it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{log}.stdout", "w") as out, open(f"{log}.stderr", "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=environ, stdout=out, stderr=err, start_new_session=True)
        sampler = _TreePss(proc.pid) if measure else None
        try:
            # wait4 rather than proc.wait(): its rusage has the exact peak RSS of the child and its
            # reaped descendants (the largest single process, not their sum)
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        tree_peak = sampler.stop() if sampler else 0.0
    if proc.returncode != 0:
        stderr = Path(f"{log}.stderr").read_text(errors="replace")
        raise RuntimeError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- last lines of {log}.stderr ---\n{_tail(stderr)}"
        )
    return seconds, tree_peak, usage.ru_maxrss / 1024.0


class _TreePss:
    """Peak of the summed PSS of every process in a process group, sampled from /proc.

    PSS, not RSS: nnU-Net's workers each load torch, and RSS would count those shared pages once
    per process. 5 samples/s cost ~1% of a core here, so the measured run is not slowed.
    """

    PERIOD_S = 0.2

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.peak_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _group_pss_kib(self) -> int:
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()  # after "(comm)": state ppid pgrp ...
                if int(fields[2]) != self.pgid:
                    continue
                with open(f"/proc/{entry.name}/smaps_rollup") as fh:
                    total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
            except (OSError, IndexError, ValueError, StopIteration):  # it ended while being read
                continue
        return total

    def _poll(self) -> None:
        while not self._done.wait(self.PERIOD_S):
            self.peak_kib = max(self.peak_kib, self._group_pss_kib())

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak_kib / 1024.0


def _write_nifti(path: Path, data, affine) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def _self_test(work_dir: Path, venv: str | None, slices: int, n_cases: int) -> None:
    """Phantom cases -> default 2d plan -> token checkpoint -> one volume predicted with/without TTA."""
    import nibabel as nib
    import numpy as np

    from keras_unet3plus.data import phantom

    env = find_nnunet(venv)
    if env is None:
        raise SystemExit(f"nnU-Net not available: {why_absent()}")
    print(f"nnU-Net: {env.versions} ({env.venv})")

    shape = (512, 512, slices)
    cases_dir, input_dir = work_dir / "cases", work_dir / "input"
    cases_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(input_dir, ignore_errors=True)
    input_dir.mkdir()
    start = time.perf_counter()
    training = []
    size = "x".join(map(str, shape))
    for seed in range(n_cases):
        image, label = cases_dir / f"train_{seed}_{size}.nii.gz", cases_dir / f"train_{seed}_{size}_label.nii.gz"
        if not (image.exists() and label.exists()):  # deterministic from the seed: reuse keeps the cache valid
            case = phantom.generate_case(seed, shape=shape)
            _write_nifti(image, case.hu, case.affine)
            _write_nifti(label, case.label_for("liver"), case.affine)
        training.append((image, label))
    test = phantom.generate_case(1000, shape=shape)
    test_image = input_dir / "test_000_0000.nii.gz"
    _write_nifti(test_image, test.hu, test.affine)
    print(f"phantom: {n_cases} training cases + 1 test volume, {size}, {time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    model = prepare_model(env, work_dir / "model", training)
    print(f"prepare_model: {time.perf_counter() - start:.1f} s ({model.token_iterations} token iterations)")
    print(f"plan: {model.describe()}")
    print(f"checkpoint: {model.checkpoint}")

    tiles = tiles_per_slice(model, test_image)
    for tta in (False, True):
        result = run_predict(model, input_dir, work_dir / f"output_tta{int(tta)}", tta=tta)
        mask = np.asanyarray(nib.load(str(result["masks"][0])).dataobj)
        if mask.shape != test.hu.shape:
            raise RuntimeError(f"mask shape {mask.shape} != image shape {test.hu.shape}")
        passes = tiles * (4 if tta else 1)
        print(
            f"predict TTA {'on ' if tta else 'off'} ({passes} passes/slice): {result['seconds']:.1f} s "
            f"({result['seconds'] / slices:.2f} s/slice), peak memory {result['peak_pss_mib']:.0f} MiB "
            f"(PSS, all processes), {result['peak_rss_one_process_mib']:.0f} MiB (RSS, largest process); "
            f"mask labels {sorted(np.unique(mask).tolist())}"
        )
    print("command:", " ".join(predict_command(model, input_dir, work_dir / "output", tta=True)))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--self-test",
        action="store_true",
        required=True,
        help="phantom cases -> plan -> token checkpoint -> predict one volume with/without TTA",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/nnunet_work/self_test"))
    parser.add_argument("--venv", default=None, help=f"nnU-Net venv (default ${VENV_ENV_VAR} or {DEFAULT_VENV})")
    parser.add_argument("--slices", type=int, default=8, help="slices per volume (the phantom needs >= 8)")
    parser.add_argument("--cases", type=int, default=3, help="training cases")
    args = parser.parse_args()
    _self_test(args.work_dir.resolve(), args.venv, args.slices, args.cases)
