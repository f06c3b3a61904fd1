"""The command line's front door (issue 30): `--help` and `--version` load no TensorFlow, the version
is declared once, TensorFlow's start-up noise is dropped while what matters (a GPU TensorFlow cannot
use, a missing extra, any line the filter does not know) is said in one line, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_unet3plus import native_log
from keras_unet3plus.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]

HELP_LOADS_NOTHING = """
import sys
from keras_unet3plus import cli
try:
    cli.main(sys.argv[1:])
except SystemExit as exit:
    assert exit.code == 0, exit.code
# the frameworks, and the readers' libraries (nibabel, pydicom, SimpleITK: a second between them)
heavy = ("tensorflow", "keras", "jax", "torch", "nibabel", "pydicom", "SimpleITK")
heavy = sorted(m for m in heavy if m in sys.modules)
assert not heavy, f"{sys.argv[1:]} imported {heavy}"
"""


@pytest.mark.parametrize(
    "args", [["--help"], ["--version"]] + [[c, "--help"] for c in COMMANDS], ids=lambda a: " ".join(a)
)
def test_help_and_version_import_no_framework_and_no_reader(args):
    """Each in a fresh process, as a person runs it (timings: benchmarks/cli_startup.py)."""
    res = subprocess.run(
        [sys.executable, "-c", HELP_LOADS_NOTHING, *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage: unet3plus" in res.stdout or res.stdout.startswith("unet3plus "), res.stdout[:500]


def test_version_is_declared_once(capsys):
    """`unet3plus --version`, `keras_unet3plus.__version__` and setup.py say the _version.py line."""
    import keras_unet3plus
    from keras_unet3plus import _version, cli

    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"unet3plus {_version.__version__}\n"
    assert keras_unet3plus.__version__ == _version.__version__
    setup = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert setup.stdout.strip().splitlines()[-1] == _version.__version__, setup.stderr[-1000:]
    assert 'version="' not in (REPO / "setup.py").read_text()


def test_package_names_load_on_first_use():
    """The lazy package keeps its public names (import, dir) and refuses unknown ones."""
    import keras_unet3plus
    from keras_unet3plus import Binarize, ClassGate, available_backbones, build, deploy_model  # noqa: F401

    assert set(keras_unet3plus.__all__) <= set(dir(keras_unet3plus))
    assert {"build", "deploy_model", "available_backbones", "ClassGate", "Binarize"} <= set(dir(keras_unet3plus))
    assert callable(keras_unet3plus.build) and "unet" in keras_unet3plus.available_backbones()
    with pytest.raises(AttributeError, match="no_such_name"):
        keras_unet3plus.no_such_name  # noqa: B018


def test_a_model_loads_in_a_fresh_process(tmp_path):
    """The package's loader registers the custom layers itself, and `import keras` before
    `import keras_unet3plus` registers them for a plain `keras.saving.load_model` (the package no
    longer imports Keras on its own)."""
    from keras_unet3plus import build

    path = tmp_path / "tiny.keras"
    build((32, 32, 3), filters=(2, 4, 8, 16, 32), cat_channels=2, deep_supervision=False).save(path)
    script = f"""
import keras
import keras_unet3plus
assert keras.saving.get_registered_object("keras_unet3plus>ClassGate") is not None
from keras_unet3plus.runtimes.keras import load_keras_model
assert load_keras_model({str(path)!r}).get_layer(index=0) is not None
"""
    fresh = f"""
from keras_unet3plus.runtimes.keras import load_keras_model
load_keras_model({str(path)!r})
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    for code in (fresh, script):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-3000:]


# ------------------------------------------------------------------------------------------------
CUINIT = b"E0000 00:00:1796614544.662630    2130 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"


@pytest.fixture()
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(native_log, "_warned", set())


def test_unknown_warning_lines_pass_the_filter():
    """The filter drops only what it knows: TensorFlow's warning that it skips the GPU passes."""
    line = (
        b"W0000 00:00:1796614544.7 2130 gpu_device.cc:2344] Cannot dlopen some GPU libraries. "
        b"Skipping registering GPU devices...\n"
    )
    assert native_log._filtered(line, b"", native_log._on_drop) == (line, b"")


def test_cuda_probe_failure_is_dropped_without_a_gpu(monkeypatch, fresh_warnings):
    monkeypatch.setattr(native_log, "nvidia_device", lambda: None)
    assert native_log._filtered(CUINIT + b"next\n", b"", native_log._on_drop) == (b"next\n", b"")


def test_cuda_probe_failure_on_a_gpu_machine_is_one_warning_once(monkeypatch, fresh_warnings):
    """Where a GPU device exists, the failed probe becomes one warning line, the first time only."""
    monkeypatch.setattr(native_log, "nvidia_device", lambda: "/dev/nvidia0")
    out, held = native_log._filtered(CUINIT + b"next\n" + CUINIT, b"", native_log._on_drop)
    lines = out.decode().splitlines()
    assert held == b"" and len(lines) == 2 and lines[1] == "next", lines
    assert lines[0].startswith(
        "warning: /dev/nvidia0 is an NVIDIA GPU, but TensorFlow cannot use it "
        "(failed call to cuInit: INTERNAL: CUDA error)"
    ), lines[0]
    assert native_log._filtered(CUINIT, b"", native_log._on_drop) == (b"", b"")


def test_gpu_device_nodes_and_cuda_visible_devices(monkeypatch):
    """/dev/nvidia<N> is a GPU this process could use, unless CUDA_VISIBLE_DEVICES hides them all."""
    monkeypatch.setattr(native_log.os, "listdir", lambda _p: ["nvidiactl", "nvidia1", "nvidia0", "null"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert native_log.nvidia_device() == "/dev/nvidia0"
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert native_log.nvidia_device() is None
    monkeypatch.setattr(native_log.os, "listdir", lambda _p: ["nvidiactl", "null"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert native_log.nvidia_device() is None


def test_gpu_that_tensorflow_cannot_use_is_said_once(monkeypatch, capsys, fresh_warnings):
    """On this CPU machine TensorFlow registers no GPU: with a (pretended) device node, one line."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow uses a GPU here: nothing to warn about")
    monkeypatch.setattr(native_log, "nvidia_device", lambda: "/dev/nvidia0")
    native_log.warn_if_gpu_unusable()
    native_log.warn_if_gpu_unusable()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: /dev/nvidia0 is an NVIDIA GPU, but TensorFlow cannot"), err
    monkeypatch.setattr(native_log, "nvidia_device", lambda: None)
    monkeypatch.setattr(native_log, "_warned", set())
    native_log.warn_if_gpu_unusable()
    assert capsys.readouterr().err == ""


def test_quiet_start_leaves_stderr_alone_when_asked(monkeypatch):
    """--debug, UNET3PLUS_DEBUG=1 or the user's own TF_CPP_MIN_LOG_LEVEL=0 keep TensorFlow's lines."""
    installed = []
    monkeypatch.setattr(native_log, "filter_native_startup_lines", lambda: installed.append(1))
    monkeypatch.delenv("UNET3PLUS_DEBUG", raising=False)
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    native_log.quiet_start(["train"])
    assert installed == [1] and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    native_log.quiet_start(["train", "--debug"])
    monkeypatch.setenv("UNET3PLUS_DEBUG", "1")
    native_log.quiet_start(["train"])
    monkeypatch.delenv("UNET3PLUS_DEBUG")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    native_log.quiet_start(["train"])
    assert installed == [1] and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_missing_extra_is_one_line():
    """A missing extra ends as one error line that names its pip install."""
    from keras_unet3plus._extras import MissingExtraError, require
    from keras_unet3plus.cli import error_line

    with pytest.raises(MissingExtraError) as exc:
        require("no_such_module_for_the_test", "onnx")
    line = error_line(exc.value)
    assert "\n" not in line and line == str(exc.value) and "pip install 'keras-unet3plus[onnx]'" in line
