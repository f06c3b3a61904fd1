"""atomic_path: the target is replaced only by a complete file; failures leave no trace."""

import os

import pytest

from keras_unet3plus.atomic import atomic_path, atomic_write_text


def test_success_replaces_target_with_usual_mode(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_failure_keeps_previous_file_and_removes_temporary(tmp_path):
    target = tmp_path / "mask.nii.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, suffix=".nii.gz") as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]
