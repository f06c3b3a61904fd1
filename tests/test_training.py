"""The distributed trainer on real phantom data with a tiny model (64 x 64, filters 4..64).

Strategy tests run in subprocesses: logical CPU devices must be configured before TensorFlow
initialises, and MultiWorkerMirroredStrategy needs one process per worker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    image_size=64,
    filters=(4, 8, 16, 32, 64),
    cat_channels=4,
    batch_size=4,
    steps_per_epoch=2,
    val_fraction=0.2,
    n_test=1,
    val_batch_size=8,
    augment=False,
    verbose=0,
    keep_checkpoints=2,
    learning_rate=1e-3,
    lr_schedule="constant",
    deep_supervision=False,
    max_val_cases=1,
)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from keras_unet3plus.data.phantom import write_dataset

    root = tmp_path_factory.mktemp("phantom_lits")
    write_dataset(root, 6, layout="lits", task="liver", shape=(64, 64, 16), seed=3)
    return root


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _run(script: Path, *args, env=None, timeout=240) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, f"{script.name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return res


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# ------------------------------------------------------------------------------------------------
def test_cli_train_end_to_end(phantom, tmp_path, capsys):
    """`unet3plus train` on a phantom LiTS folder: every artefact of a run, then a resume."""
    from keras_unet3plus import cli
    from keras_unet3plus.modelinfo import load_info

    out = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "image_size: 64\nfilters: [4, 8, 16, 32, 64]\ncat_channels: 4\nbatch_size: 4\n"
        "steps_per_epoch: 2\nn_test: 1\nval_fraction: 0.2\naugment: false\nverbose: 1\n"
    )
    argv = ["train", "--config", str(cfg), "--data-dir", str(phantom), "--out-dir", str(out), "--epochs", "1"]
    assert cli.main(argv) == 0
    said = capsys.readouterr().out  # not a terminal: the epoch line, no progress bar redrawn per step
    assert "epoch 1/1: loss" in said and "/step" not in said and "\r" not in said
    for name in (
        "config.yaml",
        "log.csv",
        "split.json",
        "best.keras",
        "best.keras.unet3plus.json",
        "model.keras",
        "model.keras.unet3plus.json",
        "training_curve.png",
        "checkpoints/checkpoint",
    ):
        assert (out / name).exists(), name
    assert list((out / "tensorboard" / "train").glob("events.out.tfevents.*"))
    info = load_info(out / "model.keras")
    assert info.task == "liver" and info.preprocess["image_size"] == 64 and info.build["cat_channels"] == 4
    assert 0.0 <= info.extra["val_dice"] <= 1.0
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 2 and "val_dice" in rows[0]
    assert not [
        p for p in out.iterdir() if p.name.startswith(".") and p.name != ".unet3plus.lock"
    ]  # no temporaries left
    # resolved config has the file's and the flags' values
    from keras_unet3plus.training import TrainConfig

    saved = TrainConfig.from_sources(out / "config.yaml")
    assert saved.epochs == 1 and saved.cat_channels == 4 and saved.data_dir == str(phantom)
    # rerun with more epochs: resumes (epoch 2 only)
    assert cli.main(argv[:-1] + ["2"]) == 0
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    # a changed model setting refuses to resume: one error line, exit 1, the run folder untouched
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    assert cli.main(argv[:-1] + ["4", "--cat-channels", "8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "cat_channels" in err[0], err
    assert sorted(p.name for p in out.iterdir()) == before


def test_best_model_written_atomically(tmp_path, monkeypatch):
    import keras

    from keras_unet3plus import build
    from keras_unet3plus.modelinfo import ModelInfo, load_info
    from keras_unet3plus.training.checkpoints import save_model_atomic

    model = build((64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4)
    info = ModelInfo(task="liver", preprocess={"image_size": 64}, extra={"val_dice": 0.5})
    path = save_model_atomic(model, tmp_path / "best.keras", info)
    before = path.read_bytes()
    assert load_info(path).extra["val_dice"] == 0.5

    def broken_save(self, filepath, *a, **k):  # dies half-way through writing
        Path(filepath).write_bytes(b"partial zip")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model_atomic(model, path, ModelInfo(task="liver", preprocess={}, extra={"val_dice": 0.9}))
    assert path.read_bytes() == before  # old best intact
    assert load_info(path).extra["val_dice"] == 0.5  # and its sidecar too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "best.keras.unet3plus.json"]
    monkeypatch.undo()
    keras.saving.load_model(path, compile=False)


# ------------------------------------------------------------------------------------------------
RUN_SCRIPT = """
import os, sys
import numpy as np
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
from keras_unet3plus.training import TrainConfig, Trainer
data, out, kill_at, npz = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if kill_at > 0:   # SIGKILL right after optimizer step `kill_at`, wherever that falls
    step = Trainer.train_step
    def train_step_then_die(self):
        step(self)
        if int(self.optimizer.iterations.numpy()) == kill_at:
            os.kill(os.getpid(), 9)
    Trainer.train_step = train_step_then_die
t = Trainer(TrainConfig(data_dir=data, out_dir=out, **{tiny}))
r = t.fit()
np.savez(npz, *[np.asarray(v.numpy()) for v in t.model.weights])
print("RESULT", r.epochs_done, int(t.optimizer.iterations.numpy()), r.resumed_from)
"""


def test_kill9_at_a_random_step_resumes_to_the_same_weights(phantom, tmp_path):
    """A run SIGKILLed after a random optimizer step (mid-epoch, between checkpoints) and resumed
    ends with exactly the weights of an uninterrupted run: the data order (cases, negatives, slice
    shuffle, augmentation) is a pure function of (seed, epoch), the position inside the epoch and
    the LR schedule are in the checkpoint. CPU with op determinism on: bit-identical."""
    import tensorflow as tf

    tiny = dict(TINY, steps_per_epoch=3, epochs=2, checkpoint_every_steps=2, augment=True, lr_schedule="cosine")
    script = _script(tmp_path, "run.py", RUN_SCRIPT.format(tiny=repr(tiny)))
    kill_at = int(np.random.default_rng().integers(2, 6))  # steps 2..5 of 6: 3 ends an epoch, 2 and 4 checkpoint

    def run(out, kill, npz):
        return subprocess.run(
            [sys.executable, str(script), str(phantom), str(out), str(kill), str(npz)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )

    whole = run(tmp_path / "whole", 0, tmp_path / "whole.npz")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run(tmp_path / "killed", kill_at, tmp_path / "unused.npz")
    assert killed.returncode == -9, (kill_at, killed.stderr[-3000:])
    latest = tf.train.latest_checkpoint(str(tmp_path / "killed" / "checkpoints"))
    assert latest is not None and int(latest.rsplit("-", 1)[1]) <= kill_at
    reader = tf.train.load_checkpoint(latest)  # the index points at a complete, readable checkpoint
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == int(latest.rsplit("-", 1)[1])
    resumed = run(tmp_path / "killed", 0, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "RESULT 2 6" in whole.stdout and "RESULT 2 6" in resumed.stdout, (whole.stdout, resumed.stdout)
    assert resumed.stdout.strip().endswith(latest.rsplit("/", 1)[1]), resumed.stdout
    a, b = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "resumed.npz")
    assert len(a.files) == len(b.files) > 50
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"weight {k} differs after a kill at step {kill_at}")
    log_a = (tmp_path / "whole" / "log.csv").read_text().splitlines()
    log_b = (tmp_path / "killed" / "log.csv").read_text().splitlines()
    cols = log_a[0].split(",")
    same = [i for i, c in enumerate(cols) if c in ("epoch", "steps", "loss", "dice", "lr", "val_dice")]
    assert [[r.split(",")[i] for i in same] for r in log_a] == [[r.split(",")[i] for i in same] for r in log_b]


def test_every_strategy_kind_describes_itself():
    """The run folder's first log line names the strategy; the no-op default strategy has no
    device list of its own (it used to crash ``--strategy default`` before training started)."""
    from keras_unet3plus.training import distribute as dist

    assert "default device" in dist.describe(dist.select_strategy("default"))
    line = dist.describe(dist.select_strategy("mirrored"))
    assert line.startswith("MirroredStrategy with 1 replica(s) on ") and "CPU:0" in line


def test_budget_counts_only_the_validations_inside_it():
    """The schedule ends where the budget will: 600 s left at 1 s a step, 10-step epochs, 20 s per
    validation every epoch, 50 epochs planned -> 20 epochs (each 30 s) = 200 steps; the old estimate
    reserved all 50 validations (1000 s > 600 s) and ended the schedule at once. Capped by the plan."""
    from keras_unet3plus.training.schedule import steps_within_budget

    assert steps_within_budget(600, 1.0, 10, 50, 20.0, 1) == 200
    assert steps_within_budget(600, 1.0, 10, 50, 20.0, 2) == 300  # a validation every second epoch
    assert steps_within_budget(615, 1.0, 10, 50, 20.0, 1) == 205  # a partial last epoch counts
    assert steps_within_budget(600, 1.0, 10, 5, 20.0, 1) == 50  # no more than the epochs left
    assert steps_within_budget(-3, 1.0, 10, 5, 20.0, 1) == 0


def test_time_budget_shortens_the_schedule():
    """With a budget that ends the run early, the cosine ends where the run will end."""
    from keras_unet3plus.training import TrainConfig
    from keras_unet3plus.training.schedule import learning_rate_schedule
    import tensorflow as tf

    cfg = TrainConfig(data_dir="x", epochs=10, learning_rate=1e-3, min_lr_ratio=0.01, lr_schedule="cosine")
    total = tf.Variable(100, dtype=tf.int64)
    schedule = learning_rate_schedule(cfg, 10, total)
    assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(100)) == pytest.approx(1e-5)
    total.assign(40)  # the budget allows 40 steps
    assert float(schedule(40)) == pytest.approx(1e-5) and float(schedule(20)) == pytest.approx(0.505e-3, rel=1e-3)


# ------------------------------------------------------------------------------------------------
MIRRORED_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_unet3plus.training import TrainConfig, Trainer
cfg = TrainConfig(data_dir=sys.argv[1], out_dir=sys.argv[2], epochs=2, strategy="mirrored",
                  devices=("/cpu:0", "/cpu:1"), mixed_precision=True, **{tiny})
t = Trainer(cfg)
r = t.fit()
assert t.strategy.num_replicas_in_sync == 2, t.strategy.num_replicas_in_sync
checked = 0
for v in t.model.trainable_variables:
    values = [np.asarray(x) for x in v.value.values]
    assert len(values) == 2
    np.testing.assert_array_equal(values[0], values[1])
    checked += 1
import keras
assert isinstance(t.optimizer, keras.optimizers.LossScaleOptimizer)
print("SYNCED", checked, r.epochs_done, int(t.optimizer.iterations.numpy()), r.best_val_dice is not None)
"""


def test_mirrored_strategy_two_logical_cpus(phantom, tmp_path):
    """2 logical CPU replicas, mixed precision (loss-scale optimizer): replicas stay identical."""
    script = _script(tmp_path, "mirrored.py", MIRRORED_SCRIPT.format(tiny=repr(TINY)))
    res = _run(script, phantom, tmp_path / "run")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("SYNCED")][-1].split()
    # mixed precision: the loss-scale optimizer skips (does not count) steps whose scaled gradients overflow
    assert int(line[1]) > 50 and line[2] == "2" and 0 <= int(line[3]) <= 4 and line[4] == "True"
    assert (tmp_path / "run" / "model.keras").exists()


# ------------------------------------------------------------------------------------------------
MWMS_SCRIPT = """
import sys
import numpy as np
from keras_unet3plus.training import TrainConfig, Trainer
data, out, weights_out = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = TrainConfig(data_dir=data, out_dir=out, epochs=2, **{tiny})
t = Trainer(cfg)
r = t.fit()
assert t.strategy.num_replicas_in_sync == 2
np.savez(weights_out, *[np.asarray(w) for w in t.model.get_weights()])
print("DONE", r.epochs_done, int(t.optimizer.iterations.numpy()), r.best_val_dice)
"""


def test_multi_worker_two_processes(phantom, tmp_path):
    """MultiWorkerMirroredStrategy chosen from TF_CONFIG, two workers on 127.0.0.1: both end with
    the same weights; only the chief writes the run folder."""
    script = _script(tmp_path, "mwms.py", MWMS_SCRIPT.format(tiny=repr(TINY)))
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "run"
    procs = []
    for i in range(2):
        env = _env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(phantom), str(out), str(tmp_path / f"w{i}.npz")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=300)
            outs.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rc, o, e in outs:
        assert rc == 0, f"worker failed:\n{o[-2000:]}\n{e[-5000:]}"
    done = [[ln for ln in o.splitlines() if ln.startswith("DONE")][-1].split() for _, o, _ in outs]
    assert done[0] == done[1]  # same epochs, iterations and validation Dice
    assert done[0][1] == "2" and done[0][2] == "4"
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(w0.files) == len(w1.files) > 50
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k])
    assert (out / "model.keras").exists() and (out / "checkpoints" / "checkpoint").exists()
    assert not list(Path("/tmp").glob("unet3plus_worker1_*/checkpoint"))  # the worker's temp dir is gone


# ------------------------------------------------------------------------------------------------
# a damaged run folder is not a dead run (issue: reliability, part 4)
# ------------------------------------------------------------------------------------------------


def _tiny_cfg(phantom, out, **kw):
    from keras_unet3plus.training import TrainConfig

    base = dict(
        data_dir=str(phantom),
        out_dir=str(out),
        image_size=32,
        filters=(2, 4, 8, 16, 32),
        cat_channels=2,
        batch_size=2,
        steps_per_epoch=1,
        epochs=1,
        n_test=1,
        val_fraction=0.3,
        augment=False,
        verbose=1,
        max_val_cases=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_truncated_newest_checkpoint_falls_back(phantom, tmp_path, capsys):
    from keras_unet3plus.training import train

    out = tmp_path / "run"
    train(_tiny_cfg(phantom, out, epochs=2))
    ckpts = out / "checkpoints"
    newest = sorted(ckpts.glob("ckpt-2.data-*"))[0]
    newest.write_bytes(newest.read_bytes()[:100])  # a copy killed half-way, a full disk
    capsys.readouterr()
    r = train(_tiny_cfg(phantom, out, epochs=3))
    said = capsys.readouterr().out
    assert "ckpt-2 is unreadable" in said and "falling back to the previous one" in said
    assert r.resumed_from.endswith("ckpt-1")
    assert r.epochs_done == 3
    assert (ckpts / "ckpt-1.index").exists()  # the good one was never deleted


def test_checkpoint_write_error_names_the_folder(phantom, tmp_path, monkeypatch):
    import errno

    import tensorflow as tf

    from keras_unet3plus.training import train

    out = tmp_path / "run"
    train(_tiny_cfg(phantom, out, epochs=1))

    def full_disk(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk)
    with pytest.raises(OSError) as exc:
        train(_tiny_cfg(phantom, out, epochs=2))
    assert "checkpoints: could not write checkpoint 2" in str(exc.value) and "No space left" in str(exc.value)
    # the folder is left resumable: the newest checkpoint is the intact one of epoch 1 (resuming
    # from it is what test_truncated_newest_checkpoint_falls_back runs)
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert latest is not None and latest.endswith("ckpt-1")
    assert tf.train.load_checkpoint(latest).get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 1


def test_best_model_enospc_names_the_file(tmp_path, monkeypatch):
    import errno

    import keras

    from keras_unet3plus import build
    from keras_unet3plus.training.checkpoints import save_model_atomic

    model = build((32, 32, 3), filters=(2, 4, 8, 16, 32), cat_channels=2)
    path = save_model_atomic(model, tmp_path / "best.keras")
    before = path.read_bytes()

    def full_disk(self, filepath, *a, **k):
        Path(filepath).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", full_disk)
    with pytest.raises(OSError) as exc:
        save_model_atomic(model, path)
    assert str(exc.value).startswith(f"{path}: could not write it (no space left on the device)")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["best.keras"]


def test_second_trainer_on_the_same_folder_refuses(phantom, tmp_path, capsys):
    from keras_unet3plus import cli
    from keras_unet3plus.training.runlock import RunLock

    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = [
        "train",
        "--data-dir",
        str(phantom),
        "--out-dir",
        str(out),
        "--image-size",
        "32",
        "--filters",
        "2",
        "4",
        "8",
        "16",
        "32",
        "--cat-channels",
        "2",
        "--batch-size",
        "2",
        "--steps-per-epoch",
        "1",
        "--epochs",
        "1",
        "--n-test",
        "1",
        "--no-augment",
        "--verbose",
        "0",
    ]
    with RunLock(out):  # a live trainer
        assert cli.main(argv) == 1
        err = capsys.readouterr().err
        assert "another trainer is using this run folder" in err and str(out) in err and f"pid {os.getpid()}" in err
    assert (out / "keep.txt").exists()
    # a trainer killed with -9 does not hold the folder: the kernel released its lock
    code = (
        "from keras_unet3plus.training.runlock import RunLock; import os; "
        f"RunLock({str(out)!r}).acquire(); os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    assert cli.main(argv) == 0


# ------------------------------------------------------------------------------------------------
def test_trainer_state_is_declared_in_init():
    """Every attribute a Trainer hook sets is declared in ``__init__`` (one list of its state)."""
    import ast
    import inspect
    import textwrap

    from keras_unet3plus.training.trainer import Trainer

    tree = ast.parse(textwrap.dedent(inspect.getsource(Trainer)))
    declared, set_later = set(), {}
    for fn in tree.body[0].body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        (declared.add(t.attr) if fn.name == "__init__" else set_later.setdefault(t.attr, fn.name))
    assert len(declared) > 40
    assert not {a: f for a, f in set_later.items() if a not in declared}, "declare these in Trainer.__init__"


def test_build_loss_hook_is_what_the_step_trains_with(phantom, tmp_path):
    """A subclass's ``build_loss`` is the loss of the train step: all output weights 0 -> the
    logged training loss is exactly 0 while each output's own loss is not; an unknown loss name
    fails when the Trainer is made, naming the setting."""
    from keras_unet3plus.training import TrainConfig, Trainer

    calls = []

    class Weightless(Trainer):
        def build_loss(self, model):
            losses = super().build_loss(model)
            calls.append(sorted(losses["loss"]))
            return dict(losses, loss_weights={k: 0.0 for k in losses["loss_weights"]})

    cfg = TrainConfig(data_dir=str(phantom), out_dir=str(tmp_path / "run"), **dict(TINY, steps_per_epoch=1, epochs=1))
    result = Weightless(cfg).fit()
    assert calls == [["cls", "seg"]]
    row = result.history[0]
    assert row["loss"] == 0.0 and row["loss_seg"] > 0 and row["loss_cls"] > 0
    with pytest.raises(ValueError, match="loss='dice'.*registered losses are"):
        Trainer(TrainConfig(loss="dice"))
    # the config names another registered loss: nnU-Net's Dice + CE trains through the same hook
    trainer = Trainer(
        TrainConfig(
            data_dir=str(phantom),
            out_dir=str(tmp_path / "dice_ce"),
            loss="dice_ce",
            **dict(TINY, steps_per_epoch=1, epochs=1),
        )
    )
    row = trainer.fit().history[0]
    assert [t for t, _, _ in trainer.loss["loss"]["seg"].terms] == ["dice", "ce"]
    assert 0 < row["loss_seg"] < 3 and row["loss_cls"] > 0
