"""Shared fixtures: small phantom datasets and one tiny trained model, made once per test session.

The trained model must mean the same thing on every x86-64 CPU (Intel with AVX-512, AMD without,
oneDNN on or off, one core or two): its recipe learns with a wide margin (a held-out phantom Dice
of 0.8-0.9 where the tests ask for 0.6), BatchNorm statistics are recomputed on the whole training
set after training (short runs otherwise leave the moving averages near their initial values, which
is what made the old fixture CPU-dependent), and the fixture itself fails, with the Dice it reached,
if the model did not learn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from keras_unet3plus.data import phantom

SMALL_SHAPE = (64, 64, 32)

#: The tiny model every test that needs trained weights shares (64x64 input, 4..64 filters).
TINY_SIZE = 64
TINY = dict(filters=(4, 8, 16, 32, 64), cat_channels=4, deep_supervision=True, cgm=True, cgm_dropout=0.1)
#: Held-out per-volume Dice the fixture must reach; it ends at 0.8-0.9 on any CPU (tests ask for 0.6).
TINY_MIN_DICE = 0.7

REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "realct"


@pytest.fixture(scope="session")
def phantom_lits(tmp_path_factory) -> Path:
    """A LiTS-layout folder with 4 small phantom cases: 3 .nii.gz (RAS, LPS, PLS) and 1 .nii (LAS).

    Read-only for tests: copy it (shutil.copytree) before changing anything.
    """
    root = tmp_path_factory.mktemp("lits")
    phantom.write_dataset(
        root, 3, layout="lits", task="liver", shape=SMALL_SHAPE, seed=0, orientations=["RAS", "LPS", "PLS"]
    )
    phantom.write_dataset(
        root,
        1,
        layout="lits",
        task="liver",
        shape=SMALL_SHAPE,
        seed=0,
        orientations=["LAS"],
        compress=False,
        start_index=3,
    )
    return root


@pytest.fixture(scope="session")
def phantom_msd(tmp_path_factory) -> Path:
    """An MSD Task09_Spleen-like folder with 3 small phantom cases and macOS ``._`` junk files."""
    root = tmp_path_factory.mktemp("Task09_Spleen")
    phantom.write_dataset(root, 3, layout="msd", task="spleen", shape=SMALL_SHAPE, seed=1)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub / "._spleen_0.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")
    return root


@pytest.fixture(scope="session")
def real_ct() -> Path:
    """The shared real CT (a DICOM series + TotalSegmentator labels); skips where ../shared is absent."""
    if not (REAL_CT / "series").is_dir():
        pytest.skip(f"real CT not available: {REAL_CT} is absent (it sits beside the repo in CI)")
    return REAL_CT


@dataclass
class TrainedModel:
    model: object
    path: Path
    info: object
    heldout_dice: float

    def __iter__(self):  # model, path, info = trained
        return iter((self.model, self.path, self.info))


def tiny_preprocess():
    from keras_unet3plus.data.preprocess import PreprocessConfig

    return PreprocessConfig(image_size=TINY_SIZE).for_task("liver")


def _set_bn_momentum(model, momentum: float) -> None:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def _train_tiny(folder: Path) -> TrainedModel:
    import keras

    from keras_unet3plus import build
    from keras_unet3plus.data.preprocess import label_to_slices, volume_to_slices
    from keras_unet3plus.inference import predict_volume
    from keras_unet3plus.metrics import dice
    from keras_unet3plus.modelinfo import ModelInfo, save_info

    cfg = tiny_preprocess()
    cases = [phantom.generate_case(100 + s, shape=SMALL_SHAPE) for s in range(6)]
    x = np.concatenate([volume_to_slices(c.hu, cfg) for c in cases])
    y = (np.concatenate([label_to_slices(c.label_for("liver"), cfg) for c in cases]) > 0).astype("float32")
    present = (y.reshape(len(y), -1).max(axis=1) > 0).astype("float32")

    keras.utils.set_random_seed(0)
    model = build((TINY_SIZE, TINY_SIZE, 3), **TINY)
    _set_bn_momentum(model, 0.9)

    def bce_dice(yt, yp):
        inter, den = keras.ops.sum(yt * yp), keras.ops.sum(yt) + keras.ops.sum(yp)
        return keras.ops.mean(keras.losses.binary_crossentropy(yt, yp)) + 1 - (2 * inter + 1) / (den + 1)

    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        jit_compile=False,
        loss={k: ("binary_crossentropy" if k == "cls" else bce_dice) for k in model.output},
    )
    targets = {k: y for k in model.output if k != "cls"}
    targets["cls"] = np.stack([1 - present, present], axis=1)
    model.fit(x, targets, batch_size=16, epochs=12, verbose=0, shuffle=True)
    # Moving statistics = the training set's statistics under the final weights ("precise BN").
    _set_bn_momentum(model, 0.0)
    model(x, training=True)
    _set_bn_momentum(model, 0.99)

    checks = [phantom.generate_case(s, shape=(64, 64, 24)) for s in (5, 6)]
    heldout = float(np.mean([dice(predict_volume(model, c.hu, cfg), c.label_for("liver")) for c in checks]))
    if heldout < TINY_MIN_DICE:
        pytest.fail(
            f"the tiny model fixture did not learn: held-out phantom Dice {heldout:.3f} "
            f"< {TINY_MIN_DICE} (tests/conftest.py::_train_tiny)",
            pytrace=False,
        )

    path = folder / "model.keras"
    model.save(path)
    info = ModelInfo(
        task="liver",
        preprocess=cfg.to_dict(),
        num_classes=1,
        threshold=0.5,
        build={
            "input_shape": [TINY_SIZE, TINY_SIZE, 3],
            **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
        },
    )
    save_info(path, info)
    return TrainedModel(model, path, info, heldout)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the marks
def pytest_collection_modifyitems(items) -> None:
    """Every test that uses the trained model runs on one pytest-xdist worker (``--dist loadgroup``
    in pytest.ini): that worker trains it once while the other runs the rest of the suite, instead
    of idling until the model exists."""
    for item in items:
        if "trained_tiny" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("trained_tiny"))
            _group_suffix(item, "trained_tiny")


def _group_suffix(item, group: str) -> None:
    """pytest-xdist's loadgroup schedules by a ``@group`` suffix of the node id, which xdist 3.8
    writes to ``item._nodeid``; pytest >= 9.2 keeps the id in ``item._id``, so the suffix is lost
    and every worker trains (or waits for) the model. Write it where this pytest reads it; if
    that ever fails the suite only runs slower (the lock in :func:`trained_tiny` still holds)."""
    if not getattr(item.config.option, "loadgroup", False) or item.nodeid.endswith(f"@{group}"):
        return
    try:
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{group}")
    except (ImportError, AttributeError, TypeError, ValueError):
        pass


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory) -> TrainedModel:
    """The tiny UNet 3+ (DS + CGM) trained on phantom slices, saved as .keras + sidecar; ~60 s.

    Under pytest-xdist its tests share one worker (see :func:`pytest_collection_modifyitems`);
    should another worker need it, the first one trains it and the others load the same file (a
    lock in the run's shared temp folder), so the suite trains it once however many workers run.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _train_tiny(tmp_path_factory.mktemp("model"))
    import fcntl
    import json

    import keras

    shared = tmp_path_factory.getbasetemp().parent / "trained_tiny"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "done.json"
        if not done.is_file():
            shared.mkdir(exist_ok=True)
            trained = _train_tiny(shared)
            done.write_text(json.dumps({"heldout_dice": trained.heldout_dice}))
            return trained
    from keras_unet3plus.modelinfo import load_info

    path = shared / "model.keras"
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return TrainedModel(model, path, load_info(path), json.loads(done.read_text())["heldout_dice"])
