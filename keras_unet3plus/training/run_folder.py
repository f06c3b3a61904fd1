"""The run folder's bookkeeping: the names of what a run writes there, the checks before a run
resumes in it, the model info its saved models carry, and taking back what a failed start added.

Apart from the trainer because none of it trains: it is the contract between a run and the folder
it leaves behind (what a resumed run, ``unet3plus predict`` and a person find there).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import BUILD_FIELDS, CONFIG_NAME, TrainConfig

CHECKPOINT_DIR = "checkpoints"
BEST_MODEL = "best.keras"
FINAL_MODEL = "model.keras"
CSV_LOG = "log.csv"
TENSORBOARD_DIR = "tensorboard"
CURVE_PNG = "training_curve.png"
SPLIT_JSON = "split.json"


def has_checkpoint(ckpt_dir: Path) -> bool:
    """True when ``ckpt_dir`` holds a checkpoint a run can resume from."""
    import tensorflow as tf

    return ckpt_dir.is_dir() and tf.train.latest_checkpoint(str(ckpt_dir)) is not None


def remove_new_entries(out: Path, existed: bool, before: set) -> None:
    """Delete what a failed run added to ``out`` (the whole folder if the run created it)."""
    if not out.exists():
        return
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in set(out.iterdir()) - before:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def check_resume_config(cfg: TrainConfig, out: Path) -> None:
    """Refuse to resume checkpoints made with other model settings than ``cfg``'s (the saved
    ``config.yaml`` of the run folder ``out`` says which)."""
    path = out / CONFIG_NAME
    if not path.exists():
        return
    from .config import load_file

    try:
        old = load_file(path)
    except ValueError:
        return
    cur = cfg.to_dict()
    changed = [k for k in BUILD_FIELDS if k in old and _norm(old[k]) != _norm(cur[k])]
    if old.get("cache_dir") and cur["cache_dir"] and old.get("cache_dtype", "float16") != cur["cache_dtype"]:
        old.setdefault("cache_dtype", "float16")
        changed.append("cache_dtype")  # other training data: the resumed run would not be the same run
    if changed:
        raise ValueError(
            f"{out}: cannot resume, the checkpoints were made with different model settings "
            + ", ".join(f"{k}={old[k]!r} (now {cur[k]!r})" for k in changed)
            + "; use another --out-dir, or --no-resume to start over in this folder"
        )


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def sync_best_from_sidecar(state, best_path: Path) -> None:
    """A crash between saving best.keras and the checkpoint leaves a better best.keras than the
    checkpoint knows about: take its score so a worse model never replaces it."""
    from ..modelinfo import load_info, sidecar_path

    if not sidecar_path(best_path).exists():
        return
    try:
        extra = load_info(best_path).extra
    except (ValueError, FileNotFoundError):
        return
    score = extra.get("val_dice")
    if score is not None and float(score) > float(state.best.numpy()):
        state.best.assign(float(score))
        state.best_epoch.assign(int(extra.get("epoch", 0)))


def model_info(cfg: TrainConfig, spec, pre, build_kwargs: dict, val_dice, epoch, per_case):
    """The :class:`~keras_unet3plus.modelinfo.ModelInfo` a saved model of the run carries: task,
    preprocessing, build settings, and where it came from (epoch, validation Dice)."""
    from ..modelinfo import ModelInfo

    kwargs = dict(build_kwargs)
    kwargs["input_shape"] = list(kwargs["input_shape"])
    kwargs["filters"] = list(kwargs["filters"])
    extra = {
        "trained_by": "keras_unet3plus.training",
        "epoch": epoch,
        "run_dir": str(Path(cfg.out_dir)),
        "mixed_precision": cfg.mixed_precision,
    }
    if val_dice is not None:
        extra["val_dice"] = float(val_dice)
        extra["val_dice_per_case"] = per_case
    return ModelInfo(
        task=spec.name, preprocess=pre.to_dict(), num_classes=spec.num_classes, threshold=0.5, build=kwargs, extra=extra
    )
