"""Writing phantom data sets in the LiTS, MSD (Task03/Task09) and nnU-Net v2 raw layouts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from keras_unet3plus.atomic import atomic_write_text
from keras_unet3plus.data.nifti import save_nifti_atomic
from keras_unet3plus.data.tasks import get_task

LAYOUTS = ("lits", "msd", "nnunet")


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset generated with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def write_dataset(
    root: str | os.PathLike,
    n_cases: int,
    layout: str = "lits",
    task: str = "liver",
    shape: tuple[int, int, int] = (128, 128, 64),
    spacing: tuple[float, float, float] | None = None,
    seed: int = 0,
    compress: bool = True,
    lesions: bool = True,
    orientations: Sequence[str] | None = None,
    start_index: int = 0,
    crop_fov: bool = False,
) -> list[Path]:
    """Write ``n_cases`` phantom cases under ``root``; returns the image paths.

    ``layout="lits"``: ``volume-N`` / ``segmentation-N`` with labels 0/1/2 (spleen task: 0/1).
    ``layout="msd"``: ``imagesTr/``, ``labelsTr/`` and a ``dataset.json`` shaped like the real
    Task09_Spleen one (Task03_Liver style for liver tasks).
    ``layout="nnunet"``: nnU-Net v2 raw layout: ``imagesTr/Phantom_000_0000.nii.gz``,
    ``labelsTr/Phantom_000.nii.gz`` and a ``dataset.json`` with ``channel_names``, ``labels``
    (name -> value), ``numTraining`` and ``file_ending``.
    ``spacing=None`` draws a realistic acquisition per case (see :func:`generate_case`);
    ``orientations`` is cycled over the cases (e.g. ``["RAS", "LPS"]``) to produce files that need
    reorienting. ``crop_fov``: about a third of the cases are cropped to the patient (non-square,
    smaller than ``shape``; see :func:`generate_case`).
    """
    from . import generate_case

    spec = get_task(task)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".nii.gz" if compress else ".nii"
    if layout == "nnunet":
        ext = ".nii.gz"
    orientations = list(orientations or ["RAS"])
    prefix = "spleen" if spec.organ == "spleen" else "liver"
    images: list[Path] = []
    training = []
    for k in range(n_cases):
        i = start_index + k
        case = generate_case(
            case_seed(seed, i),
            shape=shape,
            spacing=spacing,
            lesions=lesions,
            orientation=orientations[k % len(orientations)],
            organ=spec.organ,
            crop_fov=crop_fov,
        )
        lab = case.label_for(spec.name)
        if layout == "lits":
            img_path = root / f"volume-{i}{ext}"
            lab_path = root / f"segmentation-{i}{ext}"
        elif layout == "msd":
            img_path = root / "imagesTr" / f"{prefix}_{i}{ext}"
            lab_path = root / "labelsTr" / f"{prefix}_{i}{ext}"
            training.append({"image": f"./imagesTr/{img_path.name}", "label": f"./labelsTr/{lab_path.name}"})
        else:
            name = f"Phantom_{i:03d}"
            img_path = root / "imagesTr" / f"{name}_0000{ext}"
            lab_path = root / "labelsTr" / f"{name}{ext}"
        img_path.parent.mkdir(parents=True, exist_ok=True)
        save_nifti_atomic(_nifti(case.hu, case.affine), img_path)
        save_nifti_atomic(_nifti(lab, case.affine), lab_path)
        images.append(img_path)
    if layout == "msd":
        _write_msd_json(root, prefix, spec, training, start_index)
    elif layout == "nnunet":
        _write_nnunet_json(root, prefix, ext)
    return images


def _write_msd_json(root: Path, prefix: str, spec, training: list[dict], start_index: int) -> None:
    """The MSD ``dataset.json`` (shaped like Task09_Spleen's / Task03_Liver's); appending cases
    (``start_index > 0``) keeps the entries already listed."""
    (root / "imagesTs").mkdir(exist_ok=True)
    meta = {
        "name": "Spleen" if prefix == "spleen" else "Liver",
        "description": f"{'Spleen' if prefix == 'spleen' else 'Liver and tumour'} segmentation "
        "(keras-unet3plus synthetic phantom)",
        "reference": "keras-unet3plus phantom generator (synthetic, no patient data)",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 phantom",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": dict(spec.msd_labels),
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    meta_path = root / "dataset.json"
    if meta_path.exists() and start_index > 0:  # appending: keep the earlier entries
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        names = {e["image"] for e in training}
        meta["training"] = [e for e in old.get("training", []) if e["image"] not in names] + training
        meta["numTraining"] = len(meta["training"])
    atomic_write_text(meta_path, json.dumps(meta, indent=4))


def _write_nnunet_json(root: Path, prefix: str, ext: str) -> None:
    """nnU-Net v2's ``dataset.json`` (channel names, labels by name, the count of training cases)."""
    labels = {"background": 0, "spleen": 1} if prefix == "spleen" else {"background": 0, "liver": 1, "tumor": 2}
    n_total = len(list((root / "labelsTr").glob(f"Phantom_*{ext}")))
    meta = {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": n_total,
        "file_ending": ext,
        "name": f"Phantom{'Spleen' if prefix == 'spleen' else 'Liver'}",
        "description": "keras-unet3plus synthetic CT phantom (no patient data)",
    }
    atomic_write_text(root / "dataset.json", json.dumps(meta, indent=4))
