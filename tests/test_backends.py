"""Keras 3 on every backend: no TensorFlow under JAX/PyTorch, `.keras` files that move between
backends, and the backend-independent test modules run again under JAX.

The test process has already imported Keras on its backend (TensorFlow in CI), and Keras cannot
switch backends in a running process, so every other backend runs in a subprocess with
``KERAS_BACKEND`` set (keras-hub runs its whole suite once per backend; here CI runs the README's one
pytest command, so the JAX run is started from inside it: :func:`test_backend_independent_modules_under`).
JAX tests need ``jax`` (in the ``[dev]`` extra); PyTorch tests need ``torch`` (the ``[torch]`` extra,
not in CI: see README "Backends") and skip with that reason where it is missing.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
BACKEND = keras.backend.backend()
OTHER_BACKENDS = ("jax", "torch")

#: A tiny UNet 3+ with deep supervision and the CGM; few distinct kernel shapes, because JAX compiles
#: one initializer per variable shape (a build costs seconds, not tens of seconds).
SMALL = dict(filters=(4, 8, 8, 8, 8), cat_channels=4, deep_supervision=True, cgm=True)
SIZE = 32


def _installed(backend: str) -> bool:
    return backend == "tensorflow" or importlib.util.find_spec(backend) is not None


def _needs(backend: str):
    extra = {"jax": "pip install -e '.[dev]' (jax[cpu])", "torch": "pip install -e '.[torch]'"}.get(backend, "")
    return pytest.mark.skipif(not _installed(backend), reason=f"{backend} is not installed: {extra}")


def backend_env(backend: str) -> dict[str, str]:
    """The environment of a subprocess on ``backend``: this checkout first on the path, TensorFlow
    quiet, JAX on the CPU with its cheapest compile (tests check results, not speed)."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), str(TESTS), os.environ.get("PYTHONPATH")) if p))
    env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0") if f)
    return env


def run_on(backend: str, code: str, timeout: int = 300, env: dict | None = None) -> str:
    """Run ``code`` (Python) on ``backend`` in a subprocess; its stdout, or a failure with its output."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=env or backend_env(backend), timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{backend} subprocess failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-6000:]}", pytrace=False)
    return proc.stdout


# ------------------------------------------------------------------ 1. no TensorFlow under JAX / PyTorch
_NO_TF = """
import sys
import keras_unet3plus, keras_unet3plus.losses, keras_unet3plus.metrics
assert "tensorflow" not in sys.modules, "importing the package imported TensorFlow"
import numpy as np, keras
from keras_unet3plus import build, deploy_model, losses, metrics
from keras_unet3plus.fused_decoder import fuse_upsampled_convs
model = build((32, 32, 3), num_classes=3, filters=(4, 8, 8, 8, 8), cat_channels=4)
x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
y = np.random.default_rng(1).integers(0, 3, (2, 32, 32, 1)).astype("int32")
out = model(x)
deploy_model(fuse_upsampled_convs(model), threshold=0.5)(x)
cfg = losses.for_model(model)
total = sum(float(cfg["loss"][k](y, out[k])) for k in out)
dice = metrics.DiceScore(num_classes=3)
dice.update_state(y, out["seg"])
float(dice.result()), metrics.dice(y[..., 0] > 0, y[..., 0] > 1)
assert "tensorflow" not in sys.modules, "running the model, its losses or metrics imported TensorFlow"
print("NO_TF_OK", keras.backend.backend(), total)
"""


@pytest.mark.parametrize("backend", [pytest.param(b, marks=_needs(b)) for b in OTHER_BACKENDS])
def test_no_tensorflow_under_other_backends(backend):
    """Importing the package, its losses and metrics, and running a model, its deploy and fused
    forms, the hybrid/CGM losses and the metrics import no TensorFlow (the GPU machine has none)."""
    assert f"NO_TF_OK {backend}" in run_on(backend, _NO_TF)


# ------------------------------------------------------------------ 3. .keras files across backends
def _gate_first_of_two(model, x) -> None:
    """Set the CGM so that it says "present" for ``x[0]`` and "absent" for ``x[1]`` (an all-zero
    image, whose deepest features are all zero) with a margin far above float noise: an untrained
    gate sits near 0.5 and would flip between backends."""
    conv = model.get_layer("cgm_conv")
    kernel, bias = conv.get_weights()
    kernel[..., 0] = 0.0                       # "absent" logit: 0
    kernel[..., 1] = np.abs(kernel[..., 1])    # "present" logit: max over pixels of E5 . |k| >= 0
    conv.set_weights([kernel, np.zeros_like(bias)])
    p = keras.ops.convert_to_numpy(model(x, training=False)["cls"])[:, 1]
    present = np.log(p / (1 - p))
    assert present[1] == 0.0 and present[0] > 0.05, f"the CGM's present logits: {present}"
    conv.set_weights([kernel, np.array([0.0, -0.5 * present[0]], np.float32)])


def reference_outputs(folder: str) -> dict[str, np.ndarray]:
    """What the file in ``folder`` computes on its input, on this process's backend: every training
    output, the CGM-gated deploy form (probabilities, and argmax labels), the fused decoder view,
    and the compiled losses and metric."""
    import keras_unet3plus as ku
    import keras_unet3plus.losses  # noqa: F401  (registers the compiled losses and metrics)
    import keras_unet3plus.metrics  # noqa: F401
    from keras_unet3plus.fused_decoder import fuse_upsampled_convs

    folder = Path(folder)
    x = np.load(folder / "x.npy")
    out: dict[str, np.ndarray] = {}
    for name in ("model",):
        model = keras.saving.load_model(folder / f"{name}.keras", safe_mode=True)
        for key, value in model(x, training=False).items():
            out[f"{name}/{key}"] = keras.ops.convert_to_numpy(value)
        out[f"{name}/deploy"] = keras.ops.convert_to_numpy(ku.deploy_model(model)(x, training=False)["seg"])
        out[f"{name}/mask"] = keras.ops.convert_to_numpy(
            ku.deploy_model(model, threshold=0.5)(x, training=False)["seg"])
        out[f"{name}/fused"] = keras.ops.convert_to_numpy(fuse_upsampled_convs(model)(x, training=False)["seg"])
        y = np.load(folder / f"{name}_y.npy")
        logs = model.evaluate(x, {k: y for k in model.output_names}, batch_size=len(x), verbose=0,
                              return_dict=True)
        for key, value in logs.items():
            out[f"{name}/logs/{key}"] = np.asarray(value, np.float64)
    return out


def save_models(folder: str) -> None:
    """A tiny 3-class UNet 3+ (paper decoder, deep supervision, CGM), compiled with the package's
    losses and Dice, saved as ``.keras`` with its input, targets and outputs, on this process's
    backend. Three classes: the deploy form's labels are the argmax (``Binarize``'s TensorFlow-only
    branch); the one-channel threshold is a plain comparison on every backend."""
    import keras_unet3plus as ku
    from keras_unet3plus import losses, metrics

    folder = Path(folder)
    rng = np.random.default_rng(0)
    x = rng.random((2, SIZE, SIZE, 3), dtype=np.float32)
    x[1] = 0.0                                         # the image the CGM calls absent
    keras.utils.set_random_seed(1)
    model = ku.build((SIZE, SIZE, 3), num_classes=3, decoder="paper", **SMALL)
    _gate_first_of_two(model, x)
    model.compile(keras.optimizers.Adam(1e-3), **losses.for_model(model),
                  metrics={"seg": [metrics.DiceScore(num_classes=3)]})
    model.save(folder / "model.keras")
    np.save(folder / "model_y.npy", rng.integers(0, 3, (2, SIZE, SIZE, 1)).astype("float32"))
    np.save(folder / "x.npy", x)
    np.savez(folder / f"outputs_{keras.backend.backend()}.npz", **reference_outputs(str(folder)))


def assert_same_outputs(expected: dict, got: dict, what: str) -> None:
    assert sorted(got) == sorted(expected), what
    for key, want in expected.items():
        have = got[key]
        if key.endswith("/mask"):
            # labels are equal wherever the probabilities are not within float noise of a decision
            probs = expected[key.replace("/mask", "/deploy")]
            if probs.shape[-1] == 1:
                clear = np.abs(probs[..., 0] - 0.5) > 1e-4
            else:
                top2 = np.sort(probs, axis=-1)[..., -2:]
                clear = top2[..., 1] - top2[..., 0] > 1e-4
            clear |= probs.max(axis=-1) == 0          # gated off: label 0 on every backend
            assert clear.mean() > 0.9, f"{what} {key}: too few clear decisions to compare"
            np.testing.assert_array_equal(have[..., 0][clear], want[..., 0][clear], err_msg=f"{what} {key}")
        elif "/logs/" in key and "dice" in key:
            # a Dice of thresholded (argmax) untrained probabilities: a pixel within float noise
            # of the decision may flip (1/1000 of the score each)
            np.testing.assert_allclose(have, want, atol=5e-3, err_msg=f"{what} {key}")
        else:
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=2e-5, err_msg=f"{what} {key}")
    # the gate did its job on both sides: the first image kept, the second zeroed
    for side in (expected, got):
        gated = side["model/deploy"]
        assert gated[0].max() > 0 and np.all(gated[1] == 0), f"{what}: the CGM gate"


_SAVE = "import test_backends as t; t.save_models({folder!r}); print('SAVED')"
_CHECK = ("import numpy as np, test_backends as t; r = t.reference_outputs({folder!r}); "
          "np.savez({out!r}, **r); print('CHECKED')")

PAIRS = [("tensorflow", "jax"), ("jax", "tensorflow"), ("tensorflow", "torch"), ("torch", "tensorflow")]


@pytest.mark.parametrize("source,target", [
    pytest.param(s, t, marks=[_needs(s), _needs(t)], id=f"{s}-to-{t}") for s, t in PAIRS])
def test_keras_file_moves_between_backends(tmp_path, source, target):
    """A `.keras` file saved under one backend loads under another (safe mode) and computes the same
    outputs, deploy form (CGM gate, masks), fused decoder view and compiled losses/metrics."""
    folder = str(tmp_path)
    if source == BACKEND:
        save_models(folder)
    else:
        assert "SAVED" in run_on(source, _SAVE.format(folder=folder))
    out = str(tmp_path / "got.npz")
    if target == BACKEND:
        got = reference_outputs(folder)
    else:
        assert "CHECKED" in run_on(target, _CHECK.format(folder=folder, out=out))
        got = dict(np.load(out))
    expected = dict(np.load(tmp_path / f"outputs_{source}.npz"))
    assert_same_outputs(expected, got, f"{source} -> {target}")


# ------------------------------------------------------------------ 5. the backend-independent tests, under JAX
#: The modules whose tests hold on every backend (those that do not are marked `tensorflow_only`
#: inside them): the model, the losses and the metrics.
MODULES = ("tests/test_model.py", "tests/test_losses.py", "tests/test_metrics.py")
#: Left out of the other backends' runs, each with why: none tests backend-dependent code of this
#: package, and together they would double the JAX run's time.
DESELECT = {
    # keras.applications backbones are Keras' own code (its CI runs them on every backend); the
    # plain encoder and VGG16 stay in, where the package's own decoders and taps are exercised
    **{f"tests/test_model.py::test_output_names_and_shapes_every_architecture_and_backbone[{a}-{b}]":
       "keras.applications backbone" for a, b in (
           ("unet3plus", "vgg19"), ("unet3plus", "resnet50"), ("unet3plus", "resnet101"),
           ("unet3plus", "resnet152"), ("unet3plus", "densenet121"), ("unet3plus", "efficientnetv2b0"),
           ("unet3plus", "efficientnetv2s"), ("unet", "efficientnetv2b0"), ("unet++", "efficientnetv2b0"))},
    # five full-size builds (27-47 M parameters initialised op by op: ~40 s under JAX); the count is
    # Keras' graph construction, and test_efficient_decoder_same_parameters_fewer_flops builds the
    # paper-size model under JAX all the same
    "tests/test_model.py::test_paper_parameter_counts": "Keras graph construction, 40 s",
    # jit_compile=False is TensorFlow's non-XLA graph; under JAX it means op-by-op dispatch (~45 s of
    # per-op compiles); fit under JAX is test_losses.py::test_build_end_to_end_two_steps
    "tests/test_model.py::test_trains_with_fit": "TensorFlow's jit_compile=False mode",
}
#: At least this many tests must pass (a guard against a run that silently selects nothing).
MIN_PASSED = 100


@pytest.mark.parametrize("backend", [pytest.param(b, marks=_needs(b)) for b in OTHER_BACKENDS])
def test_backend_independent_modules_under(backend):
    """The model, loss and metric test modules pass under KERAS_BACKEND=jax (CI's second backend;
    ~150 s on 2 cores) and, where PyTorch is installed, under torch (~170 s; not in CI)."""
    args = [sys.executable, "-m", "pytest", *MODULES, "-q", "-o", "addopts=", "-p", "no:cacheprovider",
            "-W", "ignore::DeprecationWarning", *[f"--deselect={t}" for t in DESELECT]]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=backend_env(backend), timeout=900)
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"the {backend} run failed:\n{tail}"
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", proc.stdout)}
    assert counts.get("passed", 0) >= MIN_PASSED and not counts.get("failed"), tail
    assert counts.get("deselected", 0) == len(DESELECT), f"a deselected test was renamed:\n{tail}"


# ------------------------------------------------------------------ 6. the GPU check runs end to end on a CPU
@_needs("jax")
def test_gpu_check_cpu_smoke(tmp_path):
    """benchmarks/gpu_check.py --cpu-smoke (paper decoder, float32 here: ~30 s; the whole smoke,
    both decoders and precisions, is a minute more): the compile phase fills a cache, the measuring
    process loads from it, trains, infers and prints the table."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--decoders", "paper",
                           "--precisions", "float32", "--jobs", "1", "--cache", str(tmp_path / "cache"),
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          env=backend_env("jax"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "| paper | float32 | 2 |" in proc.stdout
    import json

    row = json.loads(out.read_text())["results"][0]["rows"][0]
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and np.isfinite(row["loss"])
    assert 0 < row["train_gflop"] < 1   # 3 x 2 x the forward's MACs of the tiny model
