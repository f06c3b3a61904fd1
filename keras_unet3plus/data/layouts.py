"""Finding cases on disk: LiTS, Medical Segmentation Decathlon (MSD) and generic folders.

- ``lits``: ``volume-N.nii[.gz]`` with ``segmentation-N.nii[.gz]``, anywhere below the root (the
  official download splits them over "Training Batch 1/2" folders). Case id ``volume-N``.
- ``msd``: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/`` (e.g. Task09_Spleen). The ``training``
  list of dataset.json is authoritative when present; otherwise images and labels are paired by
  file name. Hidden files, among them the macOS ``._spleen_1.nii.gz`` AppleDouble files shipped in
  the MSD tarballs, are ignored.
- ``nnunet``: nnU-Net v2 raw datasets: ``dataset.json`` (``channel_names``, ``labels`` by name,
  ``file_ending``), ``imagesTr/{case}_0000{file_ending}``, ``labelsTr/{case}{file_ending}``. One
  channel (CT) only; the task's organ is found in ``labels`` by name (:func:`task_for_dataset`).
- ``folders``: ``images/`` + ``labels/`` (label file with the same name as its image; an image may
  also be a DICOM series, a sub-folder of ``images/`` named as its label file).
- ``images``: a folder of unlabelled volumes (inference), label_path is None.

Scans are files of any format the reader registry reads (:mod:`.readers`: ``.nii.gz``, ``.nii``,
``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``; LiTS names are NIfTI's), paired by their names without the
format's ending, so an image and its label may differ in format. Nothing is read by discovery.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from keras_unet3plus.data.layout_names import Layout, Unpaired
from keras_unet3plus.data.readers import case_name, file_suffixes, is_scan_name
from keras_unet3plus.data.volume import DataError, DataFileNotFoundError
from keras_unet3plus.data.tasks import TaskSpec, get_task, task_for_label_names

log = logging.getLogger(__name__)


_LITS_RE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")


def is_lits_label(name: str) -> bool:
    """Whether a file name is a LiTS label (``segmentation-N.nii[.gz]``), not a CT to segment."""
    m = _LITS_RE.match(name)
    return m is not None and m.group(1) == "segmentation"


def _endings() -> str:
    """The file endings the readers know, for messages."""
    return " / ".join(file_suffixes())


@dataclass(frozen=True)
class Case:
    """One image file and its label file (None for unlabelled cases)."""

    case_id: str
    image_path: Path
    label_path: Path | None = None


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DataFileNotFoundError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DataError(f"{path}: {what} is not a folder")


def _scan_files(folder: Path, recursive: bool = False, series: bool = False) -> list[Path]:
    """Files the readers read in ``folder``; with ``series``, its visible sub-folders too (each a
    DICOM series)."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in it
        if ((is_scan_name(p.name) and p.is_file()) or (series and p.is_dir() and not p.name.startswith(".")))
        and not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1])
    )


def _resolve_unpaired(
    cases: list[Case], orphans: list[Path], unlabelled: list[Path], unpaired: Unpaired, root: Path
) -> list[Case]:
    """Apply the ``unpaired`` policy to images without labels and labels without images."""
    problems = [f"{p} (image without label)" for p in unlabelled] + [f"{p} (label without image)" for p in orphans]
    if not problems:
        return cases
    if unpaired == "error":
        raise DataError(
            f"{root}: {len(problems)} unpaired file(s): "
            + "; ".join(problems)
            + " (pass unpaired='skip' to ignore them)"
        )
    if unpaired == "keep":
        if orphans:
            warnings.warn(
                f"{root}: skipping labels without an image: " + ", ".join(str(p) for p in orphans), stacklevel=3
            )
        return cases
    warnings.warn(f"{root}: skipping {len(problems)} unpaired file(s): " + "; ".join(problems), stacklevel=3)
    drop = set(unlabelled)
    return [c for c in cases if c.image_path not in drop]


def _unique_by_id(paths: list[Path], key, root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in paths:
        k = key(p)
        if k in out:
            raise DataError(f"{p}: duplicate of {out[k]} (same case id '{k}' under {root})")
        out[k] = p
    return out


def find_lits(root: str | os.PathLike, unpaired: Unpaired = "error") -> list[Case]:
    """LiTS cases below ``root``, sorted by case number."""
    root = Path(root)
    _require_dir(root, "LiTS folder")
    vols: list[Path] = []
    segs: list[Path] = []
    number: dict[Path, int] = {}
    for p in _scan_files(root, recursive=True):
        m = _LITS_RE.match(p.name)
        if m:
            (vols if m.group(1) == "volume" else segs).append(p)
            number[p] = int(m.group(2))
    if not vols and not segs:
        raise DataError(f"{root}: no LiTS files (volume-N.nii[.gz] / segmentation-N.nii[.gz]) found")
    num = number.__getitem__
    vmap = _unique_by_id(vols, num, root)
    smap = _unique_by_id(segs, num, root)
    cases = [Case(f"volume-{n}", vmap[n], smap.get(n)) for n in sorted(vmap)]
    unlabelled = [vmap[n] for n in sorted(vmap) if n not in smap]
    orphans = [smap[n] for n in sorted(smap) if n not in vmap]
    return _resolve_unpaired(cases, orphans, unlabelled, unpaired, root)


def _pair_folders(
    images_dir: Path, labels_dir: Path | None, unpaired: Unpaired, root: Path, series: bool = False
) -> list[Case]:
    images = _unique_by_id(_scan_files(images_dir, series=series), case_name, images_dir)
    if labels_dir is None:
        if not images:
            raise DataError(f"{images_dir}: no {_endings()} files found")
        return [Case(k, images[k], None) for k in sorted(images)]
    labels = _unique_by_id(_scan_files(labels_dir), case_name, labels_dir)
    if not images and not labels:
        raise DataError(
            f"{root}: {images_dir.name}/ and {labels_dir.name}/ hold no {_endings()} files"
            + (" or DICOM series folders" if series else "")
        )
    cases = [Case(k, images[k], labels.get(k)) for k in sorted(images)]
    unlabelled = [images[k] for k in sorted(images) if k not in labels]
    orphans = [labels[k] for k in sorted(labels) if k not in images]
    return _resolve_unpaired(cases, orphans, unlabelled, unpaired, root)


def find_msd(root: str | os.PathLike, unpaired: Unpaired = "error") -> list[Case]:
    """MSD task folder cases (imagesTr/labelsTr, dataset.json "training" list when present)."""
    root = Path(root)
    _require_dir(root, "MSD task folder")
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    meta_path = root / "dataset.json"
    if not meta_path.exists():
        _require_dir(images_dir, "imagesTr folder")
        _require_dir(labels_dir, "labelsTr folder")
        return _pair_folders(images_dir, labels_dir, unpaired, root)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        training = meta["training"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_path}: not a valid MSD dataset.json ({type(exc).__name__}: {exc})") from exc
    if not training:
        raise DataError(f"{meta_path}: the 'training' list is empty")
    cases, unlabelled, orphans = [], [], []
    for entry in training:
        try:
            image = (root / entry["image"]).resolve()
            label = (root / entry["label"]).resolve()
        except (KeyError, TypeError) as exc:
            raise DataError(f"{meta_path}: malformed training entry {entry!r}") from exc
        if not image.exists() and not label.exists():
            raise DataFileNotFoundError(f"{image}: listed in {meta_path} but neither it nor its label exists")
        if not image.exists():
            orphans.append(label)
            continue
        if not label.exists():
            unlabelled.append(image)
            cases.append(Case(case_name(image), image, None))
            continue
        cases.append(Case(case_name(image), image, label))
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise DataError(f"{meta_path}: the training list names a case twice")
    cases.sort(key=lambda c: _natural_key(c.case_id))
    return _resolve_unpaired(cases, orphans, unlabelled, unpaired, root)


def read_nnunet_json(root: str | os.PathLike) -> dict:
    """An nnU-Net v2 ``dataset.json``, checked: one CT channel, a label list, a file ending."""
    meta_path = Path(root) / "dataset.json"
    if not meta_path.is_file():
        raise DataFileNotFoundError(f"{meta_path}: not found (an nnU-Net v2 dataset folder has one)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        channels = dict(meta["channel_names"])
        labels = dict(meta["labels"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_path}: not a valid nnU-Net v2 dataset.json ({type(exc).__name__}: {exc})") from exc
    if len(channels) != 1:
        raise DataError(
            f"{meta_path}: {len(channels)} input channels ({', '.join(map(str, channels.values()))}); "
            "this model takes one CT channel"
        )
    name = str(next(iter(channels.values())))
    if name.strip().lower() != "ct":
        raise DataError(
            f"{meta_path}: the input channel is {name!r}, not CT; the HU windowing of this "
            "package only makes sense for CT"
        )
    meta["labels"] = labels
    meta.setdefault("file_ending", ".nii.gz")
    if meta["file_ending"] not in file_suffixes():
        raise DataError(
            f"{meta_path}: file_ending {meta['file_ending']!r} is not read here (the readers "
            f"know {', '.join(file_suffixes())})"
        )
    return meta


def find_nnunet(root: str | os.PathLike, unpaired: Unpaired = "error") -> list[Case]:
    """nnU-Net v2 raw dataset cases: ``imagesTr/{case}_0000{ending}`` with ``labelsTr/{case}{ending}``."""
    root = Path(root)
    _require_dir(root, "nnU-Net dataset folder")
    meta = read_nnunet_json(root)
    ending = meta["file_ending"]
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    _require_dir(images_dir, "imagesTr folder")
    _require_dir(labels_dir, "labelsTr folder")
    images: dict[str, Path] = {}
    for p in sorted(images_dir.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(ending):
            continue
        stem = p.name[: -len(ending)]
        if not re.fullmatch(r".+_\d{4}", stem):
            raise DataError(f"{p}: not an nnU-Net image name ({{case}}_0000{ending})")
        if not stem.endswith("_0000"):
            raise DataError(f"{p}: channel {stem[-4:]} found; this model takes one CT channel (_0000)")
        images[stem[:-5]] = p
    labels = {
        p.name[: -len(ending)]: p
        for p in sorted(labels_dir.iterdir())
        if not p.name.startswith(".") and p.name.endswith(ending)
    }
    cases = [Case(k, images[k], labels.get(k)) for k in sorted(images, key=_natural_key)]
    unlabelled = [images[k] for k in sorted(images) if k not in labels]
    orphans = [labels[k] for k in sorted(labels) if k not in images]
    n_declared = meta.get("numTraining")
    if isinstance(n_declared, int) and n_declared != len(images):
        log.warning("%s: dataset.json says numTraining %d, imagesTr holds %d cases", root, n_declared, len(images))
    return _resolve_unpaired(cases, orphans, unlabelled, unpaired, root)


def task_for_dataset(root: str | os.PathLike, task: str | TaskSpec, layout: Layout = "auto") -> TaskSpec:
    """The task as this dataset stores it: the preset, or for nnU-Net datasets the preset with its
    label values looked up by name in dataset.json (other structures become background)."""
    if layout == "auto":
        layout = detect_layout(root)  # type: ignore[assignment]
    if layout != "nnunet":
        return get_task(task)
    meta = read_nnunet_json(root)
    try:
        return task_for_label_names(task, meta["labels"], source=str(Path(root) / "dataset.json"))
    except ValueError as exc:
        raise DataError(str(exc)) from exc


def find_folders(
    root: str | os.PathLike, images: str = "images", labels: str | None = "labels", unpaired: Unpaired = "error"
) -> list[Case]:
    """Generic pairing: ``root/images/x.nii.gz`` (or ``x.mha``, ..., or a DICOM series folder ``x/``)
    with ``root/labels/x.nii.gz`` (or ``x.nrrd``, ...)."""
    root = Path(root)
    _require_dir(root, "data folder")
    images_dir = root / images
    _require_dir(images_dir, f"'{images}' folder")
    labels_dir = None
    if labels is not None:
        labels_dir = root / labels
        _require_dir(labels_dir, f"'{labels}' folder")
    cases = _pair_folders(images_dir, labels_dir, unpaired, root, series=labels_dir is not None)
    cases.sort(key=lambda c: _natural_key(c.case_id))
    return cases


def find_images(folder: str | os.PathLike) -> list[Case]:
    """Every visible scan file in ``folder`` as an unlabelled case (inference input)."""
    folder = Path(folder)
    _require_dir(folder, "image folder")
    cases = _pair_folders(folder, None, "keep", folder)
    cases.sort(key=lambda c: _natural_key(c.case_id))
    return cases


def detect_layout(root: str | os.PathLike) -> str:
    """Guess the layout of ``root``: nnunet, msd, lits, folders or images."""
    root = Path(root)
    _require_dir(root, "data folder")
    meta = root / "dataset.json"
    if meta.is_file():
        try:
            if "channel_names" in json.loads(meta.read_text(encoding="utf-8")):
                return "nnunet"
        except (OSError, ValueError):
            pass  # reported by the reader of the layout it turns out to be
    if meta.exists() or (root / "imagesTr").is_dir():
        return "msd"
    if (root / "images").is_dir():
        return "folders"
    top = [p for p in root.iterdir() if not p.name.startswith(".")]
    if any(_LITS_RE.match(p.name) for p in root.rglob("*") if not p.name.startswith(".")):
        return "lits"
    if any(is_scan_name(p.name) for p in top):
        return "images"
    raise DataError(
        f"{root}: no cases found: expected LiTS files (volume-N.nii[.gz]), an MSD task folder or an "
        f"nnU-Net v2 dataset (dataset.json, imagesTr/, labelsTr/), images/ + labels/ folders, or scan files "
        f"({_endings()})"
    )


def find_cases(root: str | os.PathLike, layout: Layout = "auto", unpaired: Unpaired = "error") -> list[Case]:
    """Discover the cases under ``root``.

    ``unpaired`` decides what an image without a label (or a label without an image) does:
    ``"error"`` (default) raises a DataError listing them, ``"skip"`` drops them with a warning,
    ``"keep"`` keeps unlabelled images (label_path None) and warns about orphan labels.
    """
    if unpaired not in ("error", "skip", "keep"):
        raise ValueError(f"unpaired must be 'error', 'skip' or 'keep', got {unpaired!r}")
    if layout == "auto":
        layout = detect_layout(root)  # type: ignore[assignment]
    if layout == "lits":
        cases = find_lits(root, unpaired)
    elif layout == "msd":
        cases = find_msd(root, unpaired)
    elif layout == "nnunet":
        cases = find_nnunet(root, unpaired)
    elif layout == "folders":
        cases = find_folders(root, unpaired=unpaired)
    elif layout == "images":
        cases = find_images(root)
    else:
        raise ValueError(f"unknown layout {layout!r}; choose auto, lits, msd, nnunet, folders or images")
    if not cases:
        raise DataError(f"{root}: no usable cases found (layout {layout})")
    log.info("found %d %s cases under %s", len(cases), layout, root)
    return cases


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
