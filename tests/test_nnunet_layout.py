"""nnU-Net v2 raw datasets: discovery, labels looked up by name, clear refusals, and training from one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY_RUN

from keras_unet3plus.data import DataError, find_cases, load_case
from keras_unet3plus.data.layouts import detect_layout, task_for_dataset
from keras_unet3plus.data.phantom import write_dataset
from keras_unet3plus.data.tasks import task_for_label_names

SHAPE = (48, 48, 16)


@pytest.fixture(scope="module")
def nnunet_liver(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nnUNet_raw") / "Dataset900_Phantom"
    write_dataset(root, 4, layout="nnunet", task="liver", shape=SHAPE, seed=3)
    return root


def test_phantom_writes_and_finds_the_layout(nnunet_liver):
    meta = json.loads((nnunet_liver / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["file_ending"] == ".nii.gz"
    assert detect_layout(nnunet_liver) == "nnunet"
    cases = find_cases(nnunet_liver)
    assert len(cases) == 4 and all(c.image_path.name == f"{c.case_id}_0000.nii.gz" for c in cases)
    assert all(c.label_path.name == f"{c.case_id}.nii.gz" for c in cases)


def test_labels_by_name_totalsegmentator_style():
    """A dataset where the liver is 5 and the spleen 1 among other organs (TotalSegmentator's map)."""
    labels = {"background": 0, "spleen": 1, "kidney_right": 2, "gallbladder": 4, "liver": 5, "stomach": 6}
    liver = task_for_label_names("liver", labels)
    assert liver.mapping == {0: 0, 1: 0, 2: 0, 4: 0, 5: 1, 6: 0}
    spleen = task_for_label_names("spleen", labels)
    assert spleen.map_label(np.array([0, 1, 5, 6])).tolist() == [0, 1, 0, 0]
    with pytest.raises(ValueError, match="no 'tumour' label"):
        task_for_label_names("liver_tumour", labels)
    regions = task_for_label_names("liver_tumour", {"background": 0, "liver": [1, 2], "tumor": 2})
    assert regions.mapping == {0: 0, 1: 1, 2: 2}
    with pytest.raises(ValueError, match="several labels name the tumour"):
        task_for_label_names("liver", {"background": 0, "liver": 1, "tumor": 2, "lesion": 3})


def test_label_values_remapped_when_loading(nnunet_liver, tmp_path):
    """Relabel the phantom's liver as 5 (spleen 1 convention): loading for 'liver' still finds it."""
    import nibabel as nib

    root = tmp_path / "Dataset901"
    shutil.copytree(nnunet_liver, root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "liver": 5, "tumor": 7}
    (root / "dataset.json").write_text(json.dumps(meta))
    case = max(find_cases(root), key=lambda c: (np.asarray(nib.load(str(c.label_path)).dataobj) > 0).sum())
    img = nib.load(str(case.label_path))
    orig = np.asarray(img.dataobj)
    assert (orig > 0).any()
    nib.save(
        nib.Nifti1Image(np.select([orig == 1, orig == 2], [5, 7], 0).astype(np.uint8), img.affine), str(case.label_path)
    )
    spec = task_for_dataset(root, "liver")
    vol = load_case(case, spec)
    assert vol.label.max() == 1 and (vol.label > 0).sum() == (orig > 0).sum()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(channel_names={"0": "CT", "1": "PET"}), "2 input channels"),
        (lambda m: m.update(channel_names={"0": "T2"}), "not CT"),
        (lambda m: m.update(labels={"background": 0, "kidney": 1}), "no 'liver' label"),
    ],
)
def test_refusals_name_the_file(nnunet_liver, tmp_path, change, message):
    root = tmp_path / "bad"
    shutil.copytree(nnunet_liver, root)
    meta = json.loads((root / "dataset.json").read_text())
    change(meta)
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=message) as exc:
        find_cases(root)
        task_for_dataset(root, "liver")
    assert "dataset.json" in str(exc.value)


def test_second_channel_file_is_refused(nnunet_liver, tmp_path):
    root = tmp_path / "two"
    shutil.copytree(nnunet_liver, root)
    first = sorted((root / "imagesTr").iterdir())[0]
    shutil.copy(first, first.with_name(first.name.replace("_0000", "_0001")))
    with pytest.raises(DataError, match="channel 0001"):
        find_cases(root)


def test_train_cli_on_an_nnunet_dataset(nnunet_liver, tmp_path):
    from keras_unet3plus import cli
    from keras_unet3plus.modelinfo import load_info

    out = tmp_path / "run"
    argv = [
        "train",
        "--data-dir",
        str(nnunet_liver),
        "--out-dir",
        str(out),
        *TINY_RUN,
    ]
    assert cli.main(argv) == 0
    assert load_info(out / "model.keras").task == "liver"
    split = json.loads((out / "split.json").read_text())
    assert sum(len(v) for v in split.values() if isinstance(v, list)) == 4
    # evaluate on a copy whose dataset.json names the liver 5 and the tumour 7 (TotalSegmentator style)
    import nibabel as nib

    other = tmp_path / "Dataset902"
    shutil.copytree(nnunet_liver, other)
    meta = json.loads((other / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "liver": 5, "tumor": 7}
    (other / "dataset.json").write_text(json.dumps(meta))
    for case in find_cases(other):
        img = nib.load(str(case.label_path))
        a = np.asarray(img.dataobj)
        nib.save(
            nib.Nifti1Image(np.select([a == 1, a == 2], [5, 7], 0).astype(np.uint8), img.affine), str(case.label_path)
        )
    report = tmp_path / "eval"
    assert (
        cli.main(
            ["evaluate", "--model", str(out / "model.keras"), "--data-dir", str(other), "--out", str(report), "--quiet"]
        )
        == 0
    )
    summary = json.loads((report / "summary.json").read_text())
    assert summary["n_cases"] == 4 and summary["n_ok"] == 4, summary
