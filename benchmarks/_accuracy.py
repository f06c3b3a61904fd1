"""Train model variants on the phantom with one budget and one seed set, score them per volume.

Shared by `paper_tables.py` (the paper's Tables 1-2 on the phantom, issue 8) and
`decoder_comparison.py --part accuracy` (paper vs efficient decoder, issue 9).

Every variant trains the same number of steps on the same cases (same split seed), then every
held-out test volume is segmented whole (2.5D, the package's own `predict_volume`) and scored with
per-volume Dice. False positives on organ-free slices are counted with and without the CGM gate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: the small configuration that fits many runs into an hour on 2 CPU cores
SMALL = dict(
    image_size=64, filters=(8, 16, 32, 64, 128), cat_channels=8, batch_size=8, bn_momentum=0.9
)  # short runs: BN moving averages must keep up (see TrainConfig.bn_momentum)
PHANTOM_SHAPE = (96, 96, 48)


@dataclass
class VariantResult:
    name: str
    organ: str
    seed: int
    params: int
    dice: list[float]
    fp_slices_gated: int
    fp_slices_ungated: int
    fp_voxels_gated: int
    fp_voxels_ungated: int
    empty_slices: int
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.dice))

    @property
    def std(self) -> float:
        return float(np.std(self.dice))


def phantom_fingerprint() -> str:
    """Hash of the phantom's source: cached phantom data sets (and results on them) from an older
    phantom are not reused."""
    from keras_unet3plus.data import phantom

    digest = hashlib.sha1()
    for source in sorted(Path(phantom.__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def make_phantom_sets(root: Path, n_cases: int, seed: int = 1000, shape=PHANTOM_SHAPE) -> dict[str, Path]:
    """Liver cases in the LiTS layout and spleen cases in the MSD layout (written once, reused while
    the phantom's code is unchanged)."""
    from keras_unet3plus.data import phantom

    sets = {"liver": root / "liver_lits", "spleen": root / "spleen_msd"}
    want = {"n": n_cases, "seed": seed, "shape": list(shape), "phantom": phantom_fingerprint()}
    for organ, folder in sets.items():
        marker = folder / ".complete"
        if marker.exists() and json.loads(marker.read_text()) == want:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        layout = "lits" if organ == "liver" else "msd"
        phantom.write_dataset(folder, n_cases, layout=layout, task=organ, shape=shape, seed=seed)
        marker.write_text(json.dumps(want))
    return sets


def train_and_score(
    name: str,
    organ: str,
    data_dir: Path,
    out_dir: Path,
    seed: int,
    overrides: dict[str, Any],
    epochs: int,
    steps_per_epoch: int,
    n_test: int,
    verbose: int = 0,
) -> VariantResult:
    """Train one variant with a fixed step budget and score it on the held-out test cases.

    The result is kept in ``out_dir/result.json`` with everything it depends on (the data set's
    marker, the settings), so a long harness run interrupted between runs resumes where it stopped.
    """
    marker = Path(data_dir) / ".complete"  # a phantom set's marker; a real folder is known by its path
    key = {
        "name": name,
        "organ": organ,
        "seed": seed,
        "overrides": overrides,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "n_test": n_test,
        "data": json.loads(marker.read_text()) if marker.exists() else str(data_dir),
    }
    key = json.loads(json.dumps(key, default=list))
    saved = Path(out_dir) / "result.json"
    if saved.exists():
        stored = json.loads(saved.read_text())
        if stored.get("key") == key:
            return VariantResult(**stored["result"])
    result = _train_and_score(name, organ, data_dir, out_dir, seed, overrides, epochs, steps_per_epoch, n_test, verbose)
    saved.write_text(json.dumps({"key": key, "result": dataclasses.asdict(result)}, default=float))
    return result


def _train_and_score(name, organ, data_dir, out_dir, seed, overrides, epochs, steps_per_epoch, n_test, verbose):
    import keras

    from keras_unet3plus.complexity import count
    from keras_unet3plus.data import find_cases, load_case
    from keras_unet3plus.inference import predict_volume
    from keras_unet3plus.metrics.volume import dice
    from keras_unet3plus.training import TrainConfig, train

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    settings = dict(SMALL)
    settings.update(
        data_dir=str(data_dir),
        task=organ,
        out_dir=str(out_dir),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        n_test=n_test,
        split_seed=0,
        seed=seed,
        patience=None,
        resume=False,
        verbose=verbose,
        learning_rate=2e-3,
        augment=False,
        negative_fraction=0.2,
        max_val_cases=3,
    )
    settings.update(overrides)
    cfg = TrainConfig.from_sources(overrides=settings)
    start = time.time()
    result = train(cfg)
    seconds = time.time() - start
    model = keras.models.load_model(result.best_path or result.model_path, safe_mode=True)
    cases = {c.case_id: c for c in find_cases(data_dir)}
    pre = cfg.preprocess()
    scores, fp = [], dict(sg=0, su=0, vg=0, vu=0, empty=0)
    for case_id in result.split["test"]:
        volume = load_case(cases[case_id], organ)
        gated = predict_volume(model, volume.image, pre, gate=True)
        ungated = predict_volume(model, volume.image, pre, gate=False) if cfg.cgm else gated
        scores.append(dice(gated, volume.label))
        empty = volume.label.reshape(-1, volume.label.shape[2]).max(axis=0) == 0  # organ-free axial slices
        fp["empty"] += int(empty.sum())
        for mask, s_key, v_key in ((gated, "sg", "vg"), (ungated, "su", "vu")):
            per_slice = (mask > 0).reshape(-1, mask.shape[2]).sum(axis=0)[empty]
            fp[s_key] += int((per_slice > 0).sum())
            fp[v_key] += int(per_slice.sum())
    return VariantResult(
        name,
        organ,
        seed,
        count(model).trainable_params,
        scores,
        fp["sg"],
        fp["su"],
        fp["vg"],
        fp["vu"],
        fp["empty"],
        seconds,
        {"best_epoch": result.best_epoch, "epochs_done": result.epochs_done},
    )


def summarize(results: list[VariantResult]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (variant, organ): mean +- std of per-volume Dice over all test cases and seeds."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        entry = table.setdefault(
            (r.name, r.organ),
            {
                "dice": [],
                "seed_means": [],
                "params": r.params,
                "fp_sg": 0,
                "fp_su": 0,
                "fp_vg": 0,
                "fp_vu": 0,
                "empty": 0,
                "seconds": 0.0,
            },
        )
        entry["dice"] += r.dice
        entry["seed_means"].append(r.mean)
        for key, value in (
            ("fp_sg", r.fp_slices_gated),
            ("fp_su", r.fp_slices_ungated),
            ("fp_vg", r.fp_voxels_gated),
            ("fp_vu", r.fp_voxels_ungated),
            ("empty", r.empty_slices),
            ("seconds", r.train_seconds),
        ):
            entry[key] += value
    for entry in table.values():
        entry["mean"] = float(np.mean(entry["dice"]))
        entry["std"] = float(np.std(entry["dice"]))
        entry["seed_std"] = float(statistics.pstdev(entry["seed_means"])) if len(entry["seed_means"]) > 1 else 0.0
    return table
