"""Keras 3 on every backend: no TensorFlow under JAX/PyTorch, `.keras` files that move between
backends, and the backend-independent test modules run again under JAX.

The test process has already imported Keras on its backend (TensorFlow in CI), and Keras cannot
switch backends in a running process, so every other backend runs in a subprocess with
``KERAS_BACKEND`` set (keras-hub runs its whole suite once per backend; here CI runs the README's one
pytest command, so the JAX run is started from inside it: :func:`test_backend_independent_modules_under`).
JAX tests need ``jax`` (in the ``[dev]`` extra); PyTorch tests need ``torch`` (the ``[torch]`` extra,
not in CI: see docs/explanation/backends.md) and skip with that reason where it is missing.
"""

from __future__ import annotations

import importlib.util
import json
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
#: The tests that CI's 15-minute budget has no room for (the Dice comparison trains 3 + 3 times, 5-7 min per backend;
#: the GPU check's smoke run, 30 s) run where this variable is set.
SLOW = "UNET3PLUS_SLOW_BACKEND_TESTS"
slow = pytest.mark.skipif(not os.environ.get(SLOW), reason=f"slow (minutes): set {SLOW}=1 to run it")


def _installed(backend: str) -> bool:
    return backend == "tensorflow" or importlib.util.find_spec(backend) is not None


def _needs(backend: str):
    extra = {"jax": "pip install -e '.[dev]' (jax[cpu])", "torch": "pip install -e '.[torch]'"}.get(backend, "")
    return pytest.mark.skipif(not _installed(backend), reason=f"{backend} is not installed: {extra}")


def backend_env(backend: str) -> dict[str, str]:
    """The environment of a subprocess on ``backend``: this checkout first on the path, TensorFlow
    quiet, JAX on the CPU with its cheapest compile (tests check results, not speed)."""
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), str(TESTS), os.environ.get("PYTHONPATH")) if p),
    )
    env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0") if f)
    return env


def run_on(backend: str, code: str, timeout: int = 300, env: dict | None = None) -> str:
    """Run ``code`` (Python) on ``backend`` in a subprocess; its stdout, or a failure with its output."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env or backend_env(backend),
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{backend} subprocess failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    return proc.stdout


# ------------------------------------------------------------------ 1. no TensorFlow under JAX / PyTorch
_NO_TF = """
import sys
import keras, keras_unet3plus, keras_unet3plus.losses, keras_unet3plus.metrics
import keras_unet3plus.data.preprocess, keras_unet3plus.data.pydataset, keras_unet3plus.data.nifti
assert "tensorflow" not in sys.modules, "importing the package imported TensorFlow"
import numpy as np
hu = np.random.default_rng(0).normal(0, 300, (40, 30, 5)).astype(np.int16)
x, y = keras_unet3plus.data.pydataset.volume_slices(hu, (hu > 0).astype(np.uint8), (-200, 250), 32)
assert x.shape == (5, 32, 32, 3) and y.shape == (5, 32, 32, 1)
assert "tensorflow" not in sys.modules, "the preprocessing imported TensorFlow"
print("NO_TF_OK", keras.backend.backend())
"""


@pytest.mark.parametrize("backend", [pytest.param(b, marks=_needs(b)) for b in OTHER_BACKENDS])
def test_no_tensorflow_under_other_backends(backend):
    """Importing the package, its losses and metrics, the readers and the preprocessing (and running
    the PyDataset's slicing) imports no TensorFlow (the GPU machine has none).
    Running them imports none either: checked where a `.keras` file is loaded, run, deployed, fused
    and evaluated with its compiled losses and Dice under JAX / PyTorch (below)."""
    assert f"NO_TF_OK {backend}" in run_on(backend, _NO_TF)


# ------------------------------------------------------------------ 3. .keras files across backends
def _gate_first_of_two(model, x) -> None:
    """Set the CGM so that it says "present" for ``x[0]`` and "absent" for ``x[1]`` (an all-zero
    image, whose deepest features are all zero) with a margin far above float noise: an untrained
    gate sits near 0.5 and would flip between backends."""
    conv = model.get_layer("cgm_conv")
    kernel, bias = conv.get_weights()
    kernel[..., 0] = 0.0  # "absent" logit: 0
    kernel[..., 1] = np.abs(kernel[..., 1])  # "present" logit: max over pixels of E5 . |k| >= 0
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
            ku.deploy_model(model, threshold=0.5)(x, training=False)["seg"]
        )
        out[f"{name}/fused"] = keras.ops.convert_to_numpy(fuse_upsampled_convs(model)(x, training=False)["seg"])
        y = np.load(folder / f"{name}_y.npy")
        logs = model.evaluate(x, {k: y for k in model.output_names}, batch_size=len(x), verbose=0, return_dict=True)
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
    x[1] = 0.0  # the image the CGM calls absent
    keras.utils.set_random_seed(1)
    model = ku.build((SIZE, SIZE, 3), num_classes=3, decoder="paper", **SMALL)
    _gate_first_of_two(model, x)
    model.compile(
        keras.optimizers.Adam(1e-3), **losses.for_model(model), metrics={"seg": [metrics.DiceScore(num_classes=3)]}
    )
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
            clear |= probs.max(axis=-1) == 0  # gated off: label 0 on every backend
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
_CHECK = (
    "import sys, numpy as np, test_backends as t; r = t.reference_outputs({folder!r}); "
    "np.savez({out!r}, **r); assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; "
    "print('CHECKED')"
)

PAIRS = [("tensorflow", "jax"), ("jax", "tensorflow"), ("tensorflow", "torch"), ("torch", "tensorflow")]


@pytest.mark.parametrize(
    "source,target", [pytest.param(s, t, marks=[_needs(s), _needs(t)], id=f"{s}-to-{t}") for s, t in PAIRS]
)
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
    **{
        f"tests/test_model.py::test_output_names_and_shapes_every_architecture_and_backbone[{a}-{b}]": (
            "keras.applications backbone"
        )
        for a, b in (
            ("unet3plus", "vgg19"),
            ("unet3plus", "resnet50"),
            ("unet3plus", "resnet101"),
            ("unet3plus", "resnet152"),
            ("unet3plus", "densenet121"),
            ("unet3plus", "efficientnetv2b0"),
            ("unet3plus", "efficientnetv2s"),
            ("unet", "efficientnetv2b0"),
            ("unet++", "efficientnetv2b0"),
        )
    },
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
    args = [
        sys.executable,
        "-m",
        "pytest",
        *MODULES,
        "-q",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::DeprecationWarning",
        *[f"--deselect={t}" for t in DESELECT],
    ]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=backend_env(backend), timeout=900)
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"the {backend} run failed:\n{tail}"
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", proc.stdout)}
    assert counts.get("passed", 0) >= MIN_PASSED and not counts.get("failed"), tail
    assert counts.get("deselected", 0) == len(DESELECT), f"a deselected test was renamed:\n{tail}"


# ------------------------------------------------------------------ 6. the GPU check runs end to end on a CPU
@slow
@_needs("jax")
def test_gpu_check_cpu_smoke(tmp_path):
    """benchmarks/gpu_check.py --cpu-smoke (paper decoder, float32 here: ~30 s; the whole smoke,
    both decoders and precisions, is a minute more): the compile phase fills a cache, the measuring
    process loads from it, trains, infers and prints the table."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_check.py",
            "--cpu-smoke",
            "--decoders",
            "paper",
            "--precisions",
            "float32",
            "--jobs",
            "1",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=backend_env("jax"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "| paper | float32 | 2 |" in proc.stdout
    row = json.loads(out.read_text())["results"][0]["rows"][0]
    assert row["train_img_s"] > 0 and row["infer_img_s"] > 0 and np.isfinite(row["loss"])
    assert 0 < row["train_gflop"] < 1  # 3 x 2 x the forward's MACs of the tiny model


# ------------------------------------------------------------------ 4. fit on a PyDataset, DataParallel
PHANTOM_SHAPE = (64, 64, 24)
FIT = dict(filters=(4, 8, 16, 32, 64), cat_channels=4, deep_supervision=True, cgm=True, cgm_dropout=0.0)
FIT_EPOCHS = 12
#: The Dice comparison's training cases and held-out phantom seeds
FIT_CASES = 6
HELD_OUT = (5, 6, 7, 8)


def write_phantom(folder: str, cases: int = 3) -> None:
    """Phantom cases as a LiTS folder (NIfTI), for the readers to read."""
    from keras_unet3plus.data import phantom

    phantom.write_dataset(Path(folder) / "data", cases, layout="lits", task="liver", shape=PHANTOM_SHAPE, seed=0)


def slice_dataset(folder: str, outputs, batch_size: int = 8, shuffle: bool = True, seed: int = 0):
    from keras_unet3plus.data.layouts import find_cases
    from keras_unet3plus.data.pydataset import SliceDataset
    from keras_unet3plus.data.tasks import get_task

    return SliceDataset(
        find_cases(Path(folder) / "data"),
        task="liver",
        hu_window=get_task("liver").hu_window,
        image_size=PHANTOM_SHAPE[0],
        outputs=outputs,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
    )


def fit_on_phantom(folder: str, seed: int = 0) -> dict:
    """Train the tiny model with ``compile(**losses.for_model(model))`` + ``fit`` on the phantom
    through :class:`SliceDataset` (no tf.data), from the initial weights in ``folder`` (written by
    the first caller, so every backend starts from the same ones), slices in the order of ``seed``;
    held-out phantom Dice."""
    import keras_unet3plus as ku
    from keras_unet3plus import losses
    from keras_unet3plus.data import phantom
    from keras_unet3plus.data.pydataset import volume_slices
    from keras_unet3plus.data.tasks import get_task
    from keras_unet3plus.metrics import dice

    folder = Path(folder)
    keras.utils.set_random_seed(0)
    model = ku.build((PHANTOM_SHAPE[0], PHANTOM_SHAPE[1], 3), **FIT)
    init = folder / "init.weights.h5"
    if init.is_file():
        model.load_weights(init)
    else:
        model.save_weights(init)
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bn:
        layer.momentum = 0.9
    data = slice_dataset(str(folder), model.output_names, seed=seed)
    # cosine decay to 0, as the trainer's schedule: a constant 3e-3 ends some runs on a loss spike,
    # and a Dice measured on a spike says nothing about the backend
    lr = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=FIT_EPOCHS * len(data))
    model.compile(keras.optimizers.Adam(lr), **losses.for_model(model))
    # shuffle=False: the SliceDataset orders its slices by (seed, epoch) itself; fit's own shuffle of the
    # batch indices draws from a generator each backend seeds differently (another batch order per backend)
    history = model.fit(data, epochs=FIT_EPOCHS, verbose=0, shuffle=False)
    # "precise BN", as tests/conftest.py's fixture: moving statistics = the training set's under the
    # final weights (after a short run they are still near their start, and predictions with them)
    for layer in bn:
        layer.momentum = 0.0
    model(data.images, training=True)
    window = get_task("liver").hu_window
    scores = []
    for held_out in HELD_OUT:
        case = phantom.generate_case(held_out, shape=PHANTOM_SHAPE)
        x, y = volume_slices(case.hu, case.label_for("liver"), window, PHANTOM_SHAPE[0])
        seg = model.predict(x, verbose=0)["seg"][..., 0]
        scores.append(dice(seg > 0.5, y[..., 0] > 0))
    return {"dice": float(np.mean(scores)), "loss": [float(v) for v in history.history["loss"]]}


#: Slice orders the Dice comparison averages over: short runs of a tiny network are chaotic (one order's
#: Dice moved by up to 0.04 between backends whose every op agrees to 1e-6; the mean does not).
FIT_SEEDS = (0, 1, 2)
_FIT = (
    "import json, test_backends as t; print('FIT', json.dumps([t.fit_on_phantom({folder!r}, s) for s in t.FIT_SEEDS]))"
)


def test_slice_dataset_equals_preprocess():
    """The PyDataset's NumPy slices are the tf.data pipeline's preprocessing (window, context, pad /
    resize / crop, nearest for labels) on a non-square phantom."""
    from keras_unet3plus.data import phantom
    from keras_unet3plus.data.preprocess import PreprocessConfig, label_to_slices, volume_to_slices
    from keras_unet3plus.data.pydataset import SliceDataset, volume_slices

    case = phantom.generate_case(100, shape=(64, 56, 12))
    for size, mode in ((64, "pad"), (48, "pad"), (48, "resize"), (40, "crop")):
        cfg = PreprocessConfig(image_size=size, resize_mode=mode).for_task("liver")
        x, y = volume_slices(case.hu, case.label_for("liver"), cfg.window(), size, cfg.context, mode)
        np.testing.assert_allclose(x, volume_to_slices(case.hu, cfg), atol=1e-6, err_msg=mode)
        np.testing.assert_array_equal(y, label_to_slices(case.label_for("liver"), cfg), err_msg=mode)
    data = SliceDataset(
        [(case.hu, case.label_for("liver"))],
        hu_window=cfg.window(),
        image_size=32,
        outputs=["seg", "cls"],
        batch_size=5,
        seed=3,
    )
    assert len(data) == 2  # 12 slices, the last partial batch dropped
    image, targets = data[0]
    assert image.shape == (5, 32, 32, 3) and targets["seg"] is targets["cls"] and targets["seg"].dtype == np.float32
    first = data._order.copy()
    data.on_epoch_end()
    again = SliceDataset(
        [(case.hu, case.label_for("liver"))],
        hu_window=cfg.window(),
        image_size=32,
        outputs=["seg"],
        batch_size=5,
        seed=3,
    )
    assert np.array_equal(again._order, first) and not np.array_equal(data._order, first)  # f(seed, epoch)


@slow
@pytest.mark.parametrize("backend", [pytest.param(b, marks=_needs(b)) for b in OTHER_BACKENDS])
def test_fit_on_pydataset_matches_tensorflow(tmp_path, backend):
    """Under JAX (PyTorch where installed), compile(**for_model) + fit on phantom slices read by the
    package's readers through the PyDataset trains to the held-out Dice TensorFlow's fit reaches
    from the same initial weights and batches, within 0.02 (mean over three slice orders)."""
    if BACKEND != "tensorflow":
        pytest.skip("the reference run needs this process on TensorFlow")
    folder = str(tmp_path)
    write_phantom(folder, FIT_CASES)
    ours = [fit_on_phantom(folder, seed)["dice"] for seed in FIT_SEEDS]
    line = [ln for ln in run_on(backend, _FIT.format(folder=folder), timeout=900).splitlines() if ln.startswith("FIT")]
    theirs = [run["dice"] for run in json.loads(line[0][4:])]
    assert min(ours) > 0.6, f"TensorFlow's runs did not learn: {ours}"
    assert abs(np.mean(theirs) - np.mean(ours)) <= 0.02, f"{backend} {theirs} vs tensorflow {ours}"


class _Reversed(keras.utils.PyDataset):
    """``base``'s batches with their samples in reverse order: the same sums in another order."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        x, y = self.base[index]
        return x[::-1].copy(), {k: v[::-1].copy() for k, v in y.items()}


def data_parallel_weights(folder: str, mode: str) -> dict[str, np.ndarray]:
    """The tiny model's weights after 2 SGD steps at global batch 8 from the initial weights in
    ``folder``: ``mode`` "one" (one device), "reversed" (one device, each batch's samples in reverse
    order) or "data_parallel" (``keras.distribution.DataParallel`` over every device). Also "init"."""
    import keras_unet3plus as ku
    from keras_unet3plus import losses

    keras.utils.set_random_seed(0)
    if mode == "data_parallel":
        import jax

        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    try:
        model = ku.build((PHANTOM_SHAPE[0], PHANTOM_SHAPE[1], 3), **FIT)
        init = Path(folder) / "init.weights.h5"
        if init.is_file():
            model.load_weights(init)
        else:
            model.save_weights(init)
        if mode != "init":
            model.compile(keras.optimizers.SGD(0.05), **losses.for_model(model))
            data = slice_dataset(folder, model.output_names, batch_size=8, shuffle=False)
            model.fit(_Reversed(data) if mode == "reversed" else data, epochs=1, steps_per_epoch=2, verbose=0)
        if mode == "data_parallel":
            kernel = model.get_layer("enc1_1_conv").kernel.value
            assert len(kernel.sharding.device_set) == 2, kernel.sharding  # replicated on both devices
        return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    finally:
        keras.distribution.set_distribution(None)


_DATA_PARALLEL = """
import json, numpy as np, jax, test_backends as t
assert len(jax.devices()) == 2, jax.devices()
w = {{mode: t.data_parallel_weights({folder!r}, mode) for mode in ("init", "one", "reversed", "data_parallel")}}
norm = lambda a, b: float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in a)))
step = norm(w["one"], w["init"])
print("DP", json.dumps({{"data_parallel": norm(w["data_parallel"], w["one"]) / step,
                         "reordered": norm(w["reversed"], w["one"]) / step}}))
"""


@_needs("jax")
def test_data_parallel_on_two_devices_equals_one(tmp_path):
    """keras.distribution.DataParallel over two (CPU) devices ends with the weights one device
    reaches at the same global batch, from the same initial weights, to float tolerance: the
    tolerance is what summing the same batch in another order does on one device (reversing each
    batch moves the untrained, badly conditioned network's 2-step update by ~0.7 %; a data-parallel
    bug, local batch statistics or gradients of half the batch, moves it by tens of %). SGD: Adam
    turns the float noise of a near-zero gradient into a full step of either sign."""
    folder = str(tmp_path)
    write_phantom(folder)
    env = backend_env("jax")
    env["XLA_FLAGS"] += " --xla_force_host_platform_device_count=2"
    out = run_on("jax", _DATA_PARALLEL.format(folder=folder), timeout=600, env=env)
    rel = json.loads([ln for ln in out.splitlines() if ln.startswith("DP")][0][3:])
    assert rel["data_parallel"] <= max(3 * rel["reordered"], 1e-5), rel


def test_data_parallel_has_no_torch_form():
    """PyTorch: Keras 3.15 has no keras.distribution for torch (nor a DataParallel test here)."""
    pytest.skip("keras.distribution.DataParallel exists for JAX only in Keras 3.15 (TF: a prototype; torch: none)")
