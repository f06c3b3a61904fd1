"""The command line as a person meets it: bad inputs end in one `error:` line naming the file and
the problem, exit code 1 (2 for bad flags), nothing half-made left behind; `--debug` shows the
traceback."""

from __future__ import annotations

import gzip
import os
import sys
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from helpers import TINY_RUN

from keras_unet3plus import cli


def _train(data: Path, out: Path, *extra: str) -> int:
    return cli.main(["train", "--data-dir", str(data), "--out-dir", str(out), *TINY_RUN, *extra])


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    return err[0]


@pytest.fixture()
def lits(phantom_lits, tmp_path) -> Path:
    root = tmp_path / "lits"
    shutil.copytree(phantom_lits, root)
    return root


def _rewrite(path: Path, fn) -> None:
    img = nib.load(str(path))
    data = fn(np.asarray(img.dataobj).copy())
    nib.save(nib.Nifti1Image(data, img.affine), str(path))


@pytest.mark.parametrize("role", ["train", "val"])
def test_train_label_value_outside_the_task(lits, tmp_path, capsys, monkeypatch, role):
    """A bad label in a training or a validation case stops the run before the model is built
    (a validation case used to be read only after the first epoch)."""
    from keras_unet3plus.data import find_cases, split_cases
    from keras_unet3plus.training.trainer import Trainer

    def too_late(self):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(Trainer, "_build_model_and_optimizer", too_late)
    split = split_cases(find_cases(lits), seed=0, n_test=1, val_fraction=0.3)  # what TINY_RUN splits
    name = Path(getattr(split, role)[0].label_path).name
    _rewrite(lits / name, lambda a: np.where(a > 0, 7, 0).astype(a.dtype))
    out = tmp_path / "run"
    assert _train(lits, out) == 1
    line = _one_error_line(capsys)
    assert name in line and "7" in line
    assert not out.exists()


def test_train_nan_voxels(lits, tmp_path, capsys):
    def nan_inside(a):
        a = a.astype(np.float32)
        a[10:20, 10:20, 5] = np.nan
        return a

    for k in range(4):  # every case, so whichever the split puts in training hits it
        name = f"volume-{k}.nii.gz" if (lits / f"volume-{k}.nii.gz").exists() else f"volume-{k}.nii"
        _rewrite(lits / name, nan_inside)
    out = tmp_path / "run"
    assert _train(lits, out) == 1
    line = _one_error_line(capsys)
    assert "volume-" in line and "NaN" in line, line
    assert not out.exists()


def test_train_truncated_gzip(lits, tmp_path, capsys):
    data = (lits / "volume-1.nii.gz").read_bytes()
    (lits / "volume-1.nii.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(data[: len(data) // 3])
    out = tmp_path / "run"
    assert _train(lits, out) == 1
    line = _one_error_line(capsys)
    assert "volume-1.nii.gz" in line, line
    assert not out.exists()


def test_train_header_problems_are_reported_together(lits, tmp_path, capsys):
    """Two broken cases: both appear in one table, before anything is written."""
    (lits / "segmentation-2.nii.gz").write_bytes(b"not a nifti")
    img = nib.load(str(lits / "segmentation-0.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-4], img.affine), str(lits / "segmentation-0.nii.gz"))
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _train(lits, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "2 problem(s)" in err
    assert "segmentation-2.nii.gz" in err and "segmentation-0.nii.gz" in err and "| what to do |" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only what it had before


def test_train_empty_folder_and_missing_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _train(empty, tmp_path / "run") == 1
    assert str(empty) in _one_error_line(capsys)
    assert _train(tmp_path / "nowhere", tmp_path / "run") == 1
    assert "nowhere" in _one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_bad_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--epochs", "many"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", "--no-such-flag"])
    assert exc.value.code == 2


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere"
    assert _train(missing, tmp_path / "run", "--debug") == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: ")
    monkeypatch.setenv("UNET3PLUS_DEBUG", "1")
    assert _train(missing, tmp_path / "run") == 1
    assert "Traceback" in capsys.readouterr().err


def test_predict_and_evaluate_bad_inputs(tmp_path, capsys):
    assert (
        cli.main(
            [
                "predict",
                str(tmp_path / "no_model.keras"),
                str(tmp_path / "x.nii.gz"),
                "-o",
                str(tmp_path / "out.nii.gz"),
            ]
        )
        == 1
    )
    assert "no_model.keras" in _one_error_line(capsys)
    assert cli.main(["evaluate", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")]) == 1
    assert str(tmp_path / "p") in _one_error_line(capsys) or str(tmp_path / "g") in capsys.readouterr().err
    assert not (tmp_path / "out.nii.gz").exists()


def test_check_data_reports_every_problem_at_once(lits, tmp_path, capsys):
    """check-data: a clean folder passes; a damaged one lists each problem once, with its file."""
    assert cli.main(["check-data", "--data-dir", str(lits), "--quiet"]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    _rewrite(lits / "segmentation-0.nii.gz", lambda a: np.where(a > 0, 7, 0).astype(a.dtype))

    def nan_inside(a):
        a = a.astype(np.float32)
        a[1, 1, 1] = np.nan
        return a

    _rewrite(lits / "volume-1.nii.gz", nan_inside)
    data = (lits / "volume-2.nii.gz").read_bytes()
    (lits / "volume-2.nii.gz").write_bytes(data[: len(data) // 2])
    _rewrite(lits / "segmentation-3.nii", lambda a: np.zeros_like(a))
    (lits / "segmentation-9.nii.gz").write_bytes((lits / "segmentation-3.nii").read_bytes()[:10])
    assert cli.main(["check-data", "--data-dir", str(lits), "--quiet"]) == 1
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "what to do" not in ln]
    text = "\n".join(rows)
    assert "segmentation-0.nii.gz" in text and "[7]" in text
    assert "volume-1.nii.gz" in text and "NaN" in text
    assert "volume-2.nii.gz" in text and "truncated" in text
    assert "segmentation-3.nii" in text and "no organ voxel" in text and "warning" in text
    assert "segmentation-9.nii.gz" in text and "unpaired" in text
    assert "4 error(s), 1 warning(s)" in out, out


def test_native_startup_lines_are_filtered_and_everything_else_passes():
    """TensorFlow's pre-logging lines are dropped; other lines, partial lines (progress bars) and
    real errors pass, in order."""
    from keras_unet3plus.native_log import _filtered

    noise = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796618532.382577   18576 port.cc:153] oneDNN custom operations are on.\n"
        b"E0000 00:00:1796614544.662630    2130 cuda_platform.cc:52] failed call to cuInit: INTERNAL: x\n"
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
        b"the appropriate compiler flags.\n"
    )
    out, held = _filtered(noise + b"error: a.nii.gz: truncated\n\r 40%|####  | 4/10", b"")
    assert out == b"error: a.nii.gz: truncated\n\r 40%|####  | 4/10" and held == b""
    out, held = _filtered(b"I0000 00:00:17 1 port.cc:1", b"")  # a noise line cut in two
    assert out == b"" and held
    out, held = _filtered(b"53] oneDNN\nE0000 00:00:1 2 other.cc:9] a real native error\n", held)
    assert out == b"E0000 00:00:1 2 other.cc:9] a real native error\n" and held == b""


def test_cli_prints_no_tensorflow_startup_noise(tmp_path):
    """A command's stderr holds its own line only (no oneDNN / CUDA / absl banner); --debug keeps all."""
    import subprocess

    exe = Path(sys.executable).with_name("unet3plus")
    cmd = [str(exe), "predict", str(tmp_path / "missing.keras"), str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "y")]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "UNET3PLUS_DEBUG")}
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 1
    assert quiet.stderr.strip() == f"error: {tmp_path / 'missing.keras'}: model file not found", quiet.stderr
    loud = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def test_train_errors_end_in_the_one_boundary(lits, tmp_path, capsys):
    """`unet3plus train` lets its errors reach cli.main like every command: one `error:` line and
    exit 1 (a missing folder, a bad setting, a folder without labels), the traceback with --debug;
    nothing is left in the run folder."""
    out = tmp_path / "run"
    assert _train(tmp_path / "no-such-folder", out) == 1
    assert "no-such-folder" in _one_error_line(capsys) and not out.exists()
    assert _train(lits, out, "--learning-rate", "-1") == 1
    assert "learning_rate" in _one_error_line(capsys)
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(lits / "volume-0.nii.gz", images / "case_0.nii.gz")
    assert _train(images, out, "--layout", "images") == 1
    line = _one_error_line(capsys)
    assert str(images) in line and "without a label" in line and not out.exists()
    assert (
        cli.main(["--debug", "train", "--data-dir", str(tmp_path / "no-such-folder"), "--out-dir", str(out), *TINY_RUN])
        == 1
    )
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")
