"""The GPU check: the paper-size UNet 3+ trained and run under JAX on one GPU, in one table.

The GPU machine this project can sometimes borrow (an H100 or H200) has JAX with CUDA but no
TensorFlow, so the package's model runs there on the JAX backend. Measured, for both decoders
(``decoder="paper"``, ``"efficient"``) in mixed_bfloat16 and float32 at batch 8, 16 and 32:

* training images/s of the paper configuration: plain encoder 64..1024, 320x320x3, deep supervision
  + CGM, the hybrid loss on every output with the weights of ``losses.for_model``, Adam; one jitted
  step (Keras' stateless API: ``model.stateless_call``, ``optimizer.stateless_apply``, as Keras'
  own JAX trainer does) on a device-resident batch, so data loading is not in the figure;
* inference images/s of the deploy form (CGM gate; the paper decoder through its exact fused view,
  as ``predict`` runs it) at the same batch;
* the GPU's peak memory (each (decoder, precision) in a process of its own, batches ascending);
* the share of the GPU's bf16 peak the training reaches: training FLOP per image = 3 x the forward's,
  counted by ``keras_unet3plus.complexity`` (1.85 TFLOP for the paper decoder); peak 790 TFLOP/s on
  an H100 or H200 (the bf16 8192^3 matmul measured on those machines) or ``--peak-tflops``.

XLA compiles about 24 programs (12 training steps, 12 inference forms). They are compiled first, in
parallel processes (``--jobs``; compilation is CPU work, and the GPU machine has 16 cores), into a
JAX compilation cache (``--cache``); the measuring processes then load them from it and run one
after the other, alone on the GPU. Parallel compilation shares the GPU during XLA's autotuning: a
kernel choice may be a little off; ``--jobs 1`` compiles one at a time. A budget (``--budget-s``,
420 s) skips what would not fit, and the table says so. An out-of-memory ends that precision's
larger batches, not the check.

Import path: ``keras_unet3plus`` (model, layers, fused decoder), ``.losses``, ``.complexity``:
Keras, JAX (with SciPy, which Keras' JAX backend imports), NumPy; no TensorFlow, nibabel or
``keras_unet3plus.data``.

CPU smoke test, the same code end to end at tiny sizes (32x32, filters 4..8, batch 2; about a
minute and a half on 2 cores; tests/test_backends.py runs its paper/float32 part, 30 s):

    KERAS_BACKEND=jax python benchmarks/gpu_check.py --cpu-smoke

On the GPU machine (Python 3.12, jax 0.11 + CUDA, numpy, h5py, ml-dtypes, absl-py, rich, packaging;
no keras, namex or optree): download the wheels here once into the git-ignored .whl/ (keras 2.4 MB,
namex, optree, typing_extensions: 2.9 MB; and SciPy, 35 MB, in .whl/if-missing/, installed only
where the machine lacks it), carry .whl with the command, and there install them and run:

    pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --no-deps -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0 typing_extensions==4.16.0
    pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --no-deps -d .whl/if-missing scipy==1.18.1
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && { python3 -c "import scipy" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/if-missing/*.whl; } && export PYTHONPATH=/tmp/site && python3 benchmarks/gpu_check.py --out gpu_check.json

Anchors (issue 27): NVIDIA's TF UNet 3+ (VGG19 backbone, 320x320) trains at 26 img/s on one A100
in FP32 and at 53 img/s per GPU with AMP + XLA on eight; the limit on an H100 is ~425 img/s
(790 / 1.85).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 420.0
#: bf16 dense peak used for the share column (TFLOP/s): the 8192^3 bf16 matmul measured on the
#: machines this project borrows (H100 769-798, H200 ~790); any other GPU needs --peak-tflops.
PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0}
PRECISIONS = ("mixed_bfloat16", "float32")
DECODERS = ("paper", "efficient")

PAPER = dict(
    size=320,
    filters=(64, 128, 256, 512, 1024),
    cat_channels=64,
    batches=(8, 16, 32),
    warmup=2,
    steps=10,
    infer_steps=10,
    jobs=12,
)
SMOKE = dict(size=32, filters=(4, 8, 8, 8, 8), cat_channels=4, batches=(2,), warmup=1, steps=2, infer_steps=2, jobs=2)


# ------------------------------------------------------------------ the programs (in a child process)
def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def _peak_gib(device) -> float | None:
    try:
        stats = device.memory_stats()
    except Exception:  # CPU devices have none
        return None
    peak = (stats or {}).get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def _batch_data(batch: int, size: int, seed: int = 0):
    """Random slices and round masks (a quarter without the organ: the CGM sees both labels)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((batch, size, size, 3), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((batch, size, size, 1), np.float32)
    for i in range(batch):
        if i % 4:
            cy, cx, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.1, 0.25) * size
            mask[i, ..., 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return x, mask


class Programs:
    """One model (decoder, precision, input size) and its two jitted programs: the training step
    and the deploy form's forward pass, both on Keras' stateless API."""

    def __init__(self, decoder: str, precision: str, cfg: dict):
        import jax
        import keras

        import keras_unet3plus as ku
        from keras_unet3plus import losses
        from keras_unet3plus.complexity import count
        from keras_unet3plus.fused_decoder import fuse_upsampled_convs

        keras.backend.clear_session()  # (it also resets the dtype policy: set it after)
        keras.config.set_dtype_policy(precision)
        keras.utils.set_random_seed(0)
        size = cfg["size"]
        model = ku.build(
            (size, size, 3),
            filters=cfg["filters"],
            cat_channels=cfg["cat_channels"],
            decoder=decoder,
            deep_supervision=True,
            cgm=True,
        )
        compute = model.get_layer("dec1_fuse_conv").compute_dtype
        if compute != keras.DTypePolicy(precision).compute_dtype:
            raise RuntimeError(f"{precision}: the decoder computes in {compute}")
        self.train_gflop = 3 * 2 * count(model).macs / 1e9
        deploy = ku.deploy_model(fuse_upsampled_convs(model) if decoder == "paper" else model)
        wiring = losses.for_model(model)
        loss_fns, weights = wiring["loss"], wiring["loss_weights"]
        optimizer = keras.optimizers.Adam(1e-4)
        optimizer.build(model.trainable_variables)

        def compute_loss(trainable, non_trainable, x, mask):
            outputs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            total = sum(weights[name] * loss_fns[name](mask, outputs[name]) for name in loss_fns)
            return total, non_trainable

        grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

        def train_step(state, x, mask):
            trainable, non_trainable, opt_vars = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, mask)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return loss, (trainable, non_trainable, opt_vars)

        def infer(variables, x):
            trainable, non_trainable = variables
            return deploy.stateless_call(trainable, non_trainable, x, training=False)[0]["seg"]

        self.model, self.deploy, self.optimizer, self.size = model, deploy, optimizer, size
        self.train_step = jax.jit(train_step, donate_argnums=0)
        self.infer = jax.jit(infer)

    def state(self):
        return (
            [v.value for v in self.model.trainable_variables],
            [v.value for v in self.model.non_trainable_variables],
            [v.value for v in self.optimizer.variables],
        )

    def deploy_variables(self):
        return (
            [v.value for v in self.deploy.trainable_variables],
            [v.value for v in self.deploy.non_trainable_variables],
        )

    def compile(self, batch: int):
        """Both programs for ``batch``, compiled (from the cache when it has them): (train, infer, s)."""
        import jax

        start = time.perf_counter()
        x, mask = (jax.device_put(a) for a in _batch_data(batch, self.size))
        train = self.train_step.lower(self.state(), x, mask).compile()
        infer = self.infer.lower(self.deploy_variables(), x).compile()
        return train, infer, time.perf_counter() - start


def compile_only(decoder: str, precision: str, batch: int, cfg: dict) -> dict:
    """Phase 1: compile one batch size's two programs into the cache (runs nothing)."""
    programs = Programs(decoder, precision, cfg)
    return {"compile_s": programs.compile(batch)[2]}


def measure(decoder: str, precision: str, cfg: dict, deadline: float) -> dict:
    """Phase 2: train and infer at each batch size, ascending; a dict of what was measured."""
    import jax
    import keras

    device = jax.devices()[0]
    programs = Programs(decoder, precision, cfg)
    rows = []
    for batch in cfg["batches"]:
        row = {"decoder": decoder, "precision": precision, "batch": batch, "train_gflop": programs.train_gflop}
        rows.append(row)
        if time.time() > deadline:
            row["note"] = "skipped: time budget"
            continue
        try:
            train, infer, row["compile_s"] = programs.compile(batch)
            x, mask = (jax.device_put(a) for a in _batch_data(batch, programs.size))
            state = jax.tree.map(jax.numpy.copy, programs.state())  # donated: the model's own stay valid
            for _ in range(cfg["warmup"]):
                loss, state = train(state, x, mask)
            jax.block_until_ready(loss)
            start = time.perf_counter()
            for _ in range(cfg["steps"]):
                loss, state = train(state, x, mask)
            jax.block_until_ready(loss)
            row["train_img_s"] = cfg["steps"] * batch / (time.perf_counter() - start)
            row["loss"] = float(loss)
            variables = programs.deploy_variables()
            jax.block_until_ready(infer(variables, x))
            start = time.perf_counter()
            for _ in range(cfg["infer_steps"]):
                seg = infer(variables, x)
            jax.block_until_ready(seg)
            row["infer_img_s"] = cfg["infer_steps"] * batch / (time.perf_counter() - start)
            row["peak_gib"] = _peak_gib(device)
            del state, seg
        except Exception as exc:  # an OOM ends this precision's larger batches; anything else is a bug
            if not _is_oom(exc):
                raise
            row["note"] = "out of memory"
            break
    return {
        "rows": rows,
        "device": f"{device.platform}:{device.device_kind}",
        "jax": jax.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }


def child_main(spec: str) -> None:
    args = json.loads(spec)
    import jax

    if args["cache"]:
        jax.config.update("jax_compilation_cache_dir", args["cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if args["phase"] == "compile":
        result = compile_only(args["decoder"], args["precision"], args["batch"], args["cfg"])
    else:
        result = measure(args["decoder"], args["precision"], args["cfg"], args["deadline"])
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------ the parent: two phases, one table
def _child(spec: dict, env: dict, timeout: float) -> tuple[dict | None, str]:
    """Run one child; (its RESULT, '') or (None, why it failed)."""
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=max(30.0, timeout),
        )
    except subprocess.TimeoutExpired:
        return None, "timed out"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return None, f"exit {proc.returncode}: {proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT ") :]), ""


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict], peak_tflops: float | None) -> str:
    head = [
        "decoder",
        "precision",
        "batch",
        "train img/s",
        "train TFLOP/s",
        "share of bf16 peak",
        "infer img/s",
        "peak GPU memory GiB",
        "note",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for result in results:
        for row in result["rows"]:
            speed = row.get("train_img_s")
            tflops = None if speed is None else speed * row["train_gflop"] / 1e3
            share = None if tflops is None or not peak_tflops else 100 * tflops / peak_tflops
            cells = [
                row["decoder"],
                row["precision"],
                row["batch"],
                _fmt(speed, ".1f"),
                _fmt(tflops, ".1f"),
                "-" if share is None else f"{share:.1f} %",
                _fmt(row.get("infer_img_s"), ".1f"),
                _fmt(row.get("peak_gib"), ".1f"),
                row.get("note", ""),
            ]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _peak_for(device: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_TFLOPS.items() if k in device), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (the same code path)")
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=DECODERS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes (default 8 16 32)")
    parser.add_argument("--steps", type=int, help="timed training steps per batch size (default 10)")
    parser.add_argument("--jobs", type=int, help="parallel compile processes (default 12; 0: no compile phase)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="wall-clock budget of the whole check")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's bf16 peak (default: H100/H200 790)")
    parser.add_argument("--cache", default="/tmp/gpu_check_jax_cache", help="XLA compilation cache ('' for none)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0

    backend = os.environ.get("KERAS_BACKEND", "jax")
    if backend != "jax":
        parser.error(f"the GPU check runs on the JAX backend; KERAS_BACKEND is {backend!r}")
    cfg = dict(SMOKE if args.cpu_smoke else PAPER)
    if args.batches:
        cfg["batches"] = tuple(sorted(args.batches))
    if args.steps:
        cfg["steps"] = args.steps
    jobs = cfg["jobs"] if args.jobs is None else args.jobs
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    )
    if args.cpu_smoke:
        env["JAX_PLATFORMS"] = "cpu"
        env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")  # compile fast: nothing is timed for real
    else:
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    start = time.time()
    deadline = start + args.budget_s
    configs = [(d, p) for p in args.precisions for d in args.decoders]  # bf16 first: the headline

    # phase 1: every program compiled into the cache, in parallel, nothing measured
    compile_s = None
    if jobs > 0 and args.cache:
        compile_env = dict(env, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        specs = [
            {"phase": "compile", "decoder": d, "precision": p, "batch": b, "cfg": cfg, "cache": args.cache}
            for d, p in configs
            for b in cfg["batches"]
        ]
        print(
            f"[{time.time() - start:5.0f} s] compiling {len(specs)} configurations, {jobs} at a time ...",
            file=sys.stderr,
            flush=True,
        )
        phase_end = start + 0.6 * args.budget_s  # the rest is the measuring's (it compiles what is missing)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            done = list(pool.map(lambda s: _child(s, compile_env, phase_end - time.time()), specs))
        for spec, (_, why) in zip(specs, done):
            if why:  # not fatal: the measuring process compiles it again, or reports why it cannot
                print(f"compile {spec['decoder']} {spec['precision']} {spec['batch']}: {why[-600:]}", file=sys.stderr)
        compile_s = time.time() - start

    # phase 2: one process per (decoder, precision), alone on the device
    results, failures = [], []
    for decoder, precision in configs:

        def rows(note, decoder=decoder, precision=precision):
            return {
                "rows": [{"decoder": decoder, "precision": precision, "batch": b, "note": note} for b in cfg["batches"]]
            }

        if time.time() > deadline:
            results.append(rows("skipped: time budget"))
            continue
        print(f"[{time.time() - start:5.0f} s] measuring {decoder} {precision} ...", file=sys.stderr, flush=True)
        spec = {
            "phase": "measure",
            "decoder": decoder,
            "precision": precision,
            "cfg": cfg,
            "deadline": deadline,
            "cache": args.cache,
        }
        result, why = _child(spec, env, deadline - time.time() + 120.0)
        if result is None:
            failures.append(f"{decoder} {precision}: {why}")
            results.append(rows("failed" if why != "timed out" else "timed out"))
        else:
            results.append(result)

    measured = [r for r in results if "device" in r]
    device = measured[0]["device"] if measured else "unknown device"
    peak = _peak_for(device, args.peak_tflops)
    title = (
        "CPU smoke (tiny sizes: the figures mean nothing)"
        if args.cpu_smoke
        else f"UNet 3+ paper configuration, {cfg['size']}x{cfg['size']}x3, DS + CGM, hybrid loss, Adam"
    )
    print(f"\n{title}")
    if measured:
        m = measured[0]
        print(
            f"{device}, JAX {m['jax']}, Keras {m['keras']}, Python {m['python']}; {cfg['steps']} timed "
            f"training steps after {cfg['warmup']} and {cfg['infer_steps']} inference batches, device-resident; "
            f"bf16 peak {f'{peak:g} TFLOP/s' if peak else 'unknown (--peak-tflops)'}; "
            f"compile phase {_fmt(compile_s, '.0f')} s ({jobs} jobs), {time.time() - start:.0f} s in all"
        )
    print(table(results, peak))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "device": device,
                    "peak_tflops": peak,
                    "cfg": cfg,
                    "results": results,
                    "compile_phase_s": compile_s,
                    "seconds": time.time() - start,
                },
                indent=1,
            )
        )
    for failure in failures:
        print(f"\nFAILED {failure}", file=sys.stderr)
    return 1 if failures or not measured else 0


if __name__ == "__main__":
    sys.exit(main())
