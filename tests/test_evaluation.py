"""Evaluation (`keras_unet3plus.evaluation`, `unet3plus evaluate`) and overlays on hand-built masks
whose metrics are known."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from keras_unet3plus.evaluation import evaluate_folders, pair_cases
from keras_unet3plus.overlays import (
    FN_COLOUR,
    FP_COLOUR,
    TP_COLOUR,
    blend_colour,
    choose_slices,
    overlay_slice,
    save_case_montage,
    to_display,
)

SHAPE = (24, 20, 16)
SPACING = (0.8, 0.8, 2.5)


def _save(path: Path, data: np.ndarray, spacing=SPACING, axcodes="RAS") -> Path:
    affine = np.diag([*spacing, 1.0])
    if axcodes == "LPS":
        affine[0, 0] *= -1
        affine[1, 1] *= -1
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.uint8), affine), str(path))
    return path


def _cube(lo=(4, 4, 4), hi=(14, 14, 14), shape=SHAPE) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return a


@pytest.fixture()
def folders(tmp_path):
    """LiTS-named ground truth, predictions named after the images (volume-N), known Dice:
    case 0: half the cube predicted -> Dice 2*500/1500; case 1: exact -> 1; case 2: wrong shape."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    full = _cube()
    half = _cube(hi=(14, 14, 9))
    _save(gt / "segmentation-0.nii.gz", full * 2)  # LiTS lesion label 2 counts as liver
    _save(pred / "volume-0.nii.gz", half)
    _save(gt / "segmentation-1.nii.gz", full, axcodes="LPS")
    _save(pred / "volume-1.nii.gz", full, axcodes="LPS")
    _save(gt / "segmentation-2.nii.gz", full)
    _save(pred / "volume-2.nii.gz", np.zeros((24, 20, 15), np.uint8))
    return pred, gt


def test_evaluate_known_dice_and_reports(folders, tmp_path):
    pred, gt = folders
    out = tmp_path / "eval"
    report = evaluate_folders(pred, gt, "liver", out)
    by_id = {c.case_id: c for c in report.cases}
    assert set(by_id) == {"volume-0", "volume-1", "volume-2"} or set(by_id) == {
        "segmentation-0",
        "segmentation-1",
        "segmentation-2",
    }
    c0, c1, c2 = (report.cases[i] for i in range(3))
    assert c0.metrics["liver"]["dice"] == pytest.approx(1000 / 1500)
    assert c0.metrics["liver"]["voe"] == pytest.approx(0.5)
    assert c0.metrics["liver"]["rvd"] == pytest.approx(-0.5)
    assert c1.metrics["liver"]["dice"] == 1.0 and c1.metrics["liver"]["hd95"] == 0.0
    # the wrong-shape case is a row with an error naming both files; the others still ran
    assert not c2.ok and "volume-2.nii.gz" in c2.error and "segmentation-2.nii.gz" in c2.error
    assert "(24, 20, 15)" in c2.error
    summ = report.summary["structures"]["liver"]
    assert summ["dice"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert summ["dice"]["std"] == pytest.approx(1 / 6)
    assert summ["global_dice"] == pytest.approx(2 * 1500 / (1500 + 2000))
    # surface distances use the ground truth's spacing: half cube along z (2.5 mm slices)
    assert c0.metrics["liver"]["mssd"] == pytest.approx(5 * 2.5)

    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert float(rows[0]["dice"]) == pytest.approx(2 / 3, abs=1e-6)
    assert {"dice", "voe", "rvd", "assd", "hd95", "mssd"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_failed"] == 1 and summary["n_ok"] == 2
    assert summary["structures"]["liver"]["global_dice"] == pytest.approx(6 / 7)
    md = (out / "report.md").read_text()
    assert "| liver | dice | 0.8333 |" in md and "| liver | global dice | 0.8571 |" in md
    assert "0.6667" in md and "## Errors" in md


def test_cli_evaluate_exit_code_and_outputs(folders, tmp_path, capsys):
    from keras_unet3plus.cli import main

    pred, gt = folders
    out = tmp_path / "cli"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "volume-2.nii.gz" in err
    assert {p.name for p in out.iterdir()} >= {"per_case.csv", "summary.json", "report.md"}
    # without the bad case: exit 0
    (pred / "volume-2.nii.gz").unlink()
    (gt / "segmentation-2.nii.gz").unlink()
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--quiet"]) == 0
    assert main(["evaluate", "--pred", str(pred), "--out", str(out)]) == 2


def test_pairing_across_naming_schemes(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i in (1, 3, 12):
        _save(gt / f"spleen_{i}.nii.gz", _cube())
    _save(pred / "spleen_12.nii.gz", _cube())  # same name
    _save(pred / "case-3.nii.gz", _cube())  # case number
    _save(pred / "other_99.nii.gz", _cube())  # no ground truth
    pairs, unmatched = pair_cases(pred, gt)
    got = {cid: (p.name if p else None) for cid, p, _, _ in pairs}
    assert got == {"spleen_1": None, "spleen_3": "case-3.nii.gz", "spleen_12": "spleen_12.nii.gz"}
    assert [p.name for p in unmatched] == ["other_99.nii.gz"]
    report = evaluate_folders(pred, gt, "spleen", tmp_path / "out")
    errors = {c.case_id: c.error for c in report.cases}
    assert "no prediction" in errors["spleen_1"] and errors["spleen_3"] == ""
    assert report.summary["structures"]["spleen"]["dice"]["mean"] == 1.0


def test_liver_tumour_structures(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    g = _cube()
    g[6:8, 6:8, 6:8] = 2
    p = _cube()
    p[6:8, 6:8, 6:7] = 2
    _save(gt / "segmentation-0.nii.gz", g)
    _save(pred / "segmentation-0.nii.gz", p)
    report = evaluate_folders(pred, gt, "liver_tumour", tmp_path / "out")
    m = report.cases[0].metrics
    assert m["liver"]["dice"] == 1.0
    assert m["tumour"]["dice"] == pytest.approx(2 * 4 / (8 + 4))
    header = (tmp_path / "out" / "per_case.csv").read_text().splitlines()[0]
    assert "liver_dice" in header and "tumour_hd95" in header


def test_label_values_outside_the_task_name_the_file(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _save(gt / "spleen_1.nii.gz", _cube())
    _save(pred / "spleen_1.nii.gz", _cube() * 5)
    report = evaluate_folders(pred, gt, "spleen")
    assert not report.cases[0].ok and "spleen_1.nii.gz" in report.cases[0].error


# ------------------------------------------------------------------------------------------------
# overlays
# ------------------------------------------------------------------------------------------------


def test_overlay_colours_at_tp_fn_fp_pixels():
    ct = np.full((6, 6), 25.0, np.float32)  # window (-200, 250): gray 0.5
    gt = np.zeros((6, 6), np.uint8)
    pred = np.zeros((6, 6), np.uint8)
    gt[0, 0] = pred[0, 0] = 1  # TP
    gt[1, 1] = 1  # FN
    pred[2, 2] = 1  # FP
    rgb = overlay_slice(ct, gt, pred, window=(-200, 250), alpha=0.5)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 6, 3)
    np.testing.assert_array_equal(rgb[0, 0], blend_colour(0.5, TP_COLOUR, 0.5))
    np.testing.assert_array_equal(rgb[1, 1], blend_colour(0.5, FN_COLOUR, 0.5))
    np.testing.assert_array_equal(rgb[2, 2], blend_colour(0.5, FP_COLOUR, 0.5))
    np.testing.assert_array_equal(rgb[5, 5], [128, 128, 128])
    # the documented colours: TP pink/purple, FN yellow, FP green
    np.testing.assert_array_equal(rgb[0, 0], np.round((0.25 + 0.5 * np.array([0.8, 0.3, 0.8])) * 255))
    r, g, b = rgb[1, 1].astype(int)
    assert r == g > b  # yellow
    r, g, b = rgb[2, 2].astype(int)
    assert g > r == b  # green
    r, g, b = rgb[0, 0].astype(int)
    assert r == b > g  # pink/purple
    with pytest.raises(ValueError, match="one shape"):
        overlay_slice(ct, gt[:5], pred)


def test_choose_slices_and_display():
    gt = np.zeros((8, 8, 30), np.uint8)
    gt[2:6, 2:6, 10:20] = 1
    pred = gt.copy()
    pred[:, :, 25] = 1  # an error-only slice
    zs = choose_slices(gt, pred, 3)
    assert len(zs) == 3 and 25 in zs and all(10 <= z < 20 for z in zs if z != 25)
    assert choose_slices(np.zeros_like(gt), np.zeros_like(gt), 3) == [15]
    a = np.arange(6).reshape(3, 2)  # rows X (R->), columns Y (A->)
    assert to_display(a).shape == (2, 3)
    assert to_display(a)[0, 0] == a[2, 1]  # top-left: most anterior, patient's right


def test_overlays_written_by_evaluate(phantom_lits, tmp_path):
    """Overlays over the CT of a LiTS folder: montage + per-slice PNGs with the paper's colours."""
    import shutil

    from matplotlib.image import imread

    gt_dir = tmp_path / "lits"
    shutil.copytree(phantom_lits, gt_dir)
    pred = tmp_path / "pred"
    img = nib.load(str(gt_dir / "segmentation-0.nii.gz"))
    lab = (np.asarray(img.dataobj) > 0).astype(np.uint8)
    # a prediction shifted by 2 voxels: TP, FN and FP all present
    _save(pred / "volume-0.nii.gz", np.roll(lab, 2, axis=0))
    nib.save(nib.Nifti1Image(np.roll(lab, 2, axis=0), img.affine), str(pred / "volume-0.nii.gz"))
    for p in list(gt_dir.glob("*-[123].nii*")):
        p.unlink()
    out = tmp_path / "out"
    report = evaluate_folders(pred, gt_dir, "liver", out, overlays=3)
    assert report.cases[0].ok, report.cases[0].error
    montage = out / "overlays" / "volume-0.png"
    assert montage.is_file() and montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    slices = sorted((out / "overlays" / "volume-0").glob("slice_*.png"))
    assert len(slices) == 3
    pix = (imread(str(slices[0]))[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in pix}
    gray_values = {c for c in colours if c[0] == c[1] == c[2]}
    assert len(gray_values) > 10  # the CT is underneath
    assert any(r == b > g for r, g, b in colours - gray_values)  # TP pink/purple
    assert any(r == g > b for r, g, b in colours - gray_values)  # FN yellow
    assert any(g > r == b for r, g, b in colours - gray_values)  # FP green
    assert "overlays/volume-0.png" in (out / "report.md").read_text()


def test_save_case_montage_returns_slices(tmp_path):
    ct = np.random.default_rng(0).normal(50, 30, (32, 32, 10)).astype(np.float32)
    gt = np.zeros(ct.shape, np.uint8)
    gt[8:20, 8:20, 2:8] = 1
    zs = save_case_montage(ct, gt, np.roll(gt, 3, 0), tmp_path / "m.png", n_slices=2, title="demo")
    assert len(zs) == 2 and (tmp_path / "m.png").stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------------------
# predict then evaluate
# ------------------------------------------------------------------------------------------------


def test_evaluate_with_model_and_data_dir(phantom_msd, tmp_path):
    """`unet3plus evaluate --model M --data-dir D` on an MSD spleen folder (untrained tiny model:
    the pipeline is under test here, not the model)."""
    import keras

    from keras_unet3plus import build
    from keras_unet3plus.cli import main
    from keras_unet3plus.data.preprocess import PreprocessConfig
    from keras_unet3plus.modelinfo import ModelInfo, save_info

    keras.utils.set_random_seed(1)
    model = build((64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4, deep_supervision=False, cgm=True)
    path = tmp_path / "spleen.keras"
    model.save(path)
    save_info(path, ModelInfo(task="spleen", preprocess=PreprocessConfig(image_size=64).for_task("spleen").to_dict()))
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "--model",
            str(path),
            "--data-dir",
            str(phantom_msd),
            "--out",
            str(out),
            "--overlays",
            "1",
            "--quiet",
            "--batch-size",
            "16",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert [r["case"] for r in rows] == ["spleen_0", "spleen_1", "spleen_2"]
    assert all(r["status"] == "ok" for r in rows)
    preds = sorted(p.name for p in (out / "predictions").iterdir())
    assert preds == ["spleen_0.nii.gz", "spleen_1.nii.gz", "spleen_2.nii.gz"]
    gt_img = nib.load(str(phantom_msd / "labelsTr" / "spleen_0.nii.gz"))
    pr_img = nib.load(str(out / "predictions" / "spleen_0.nii.gz"))
    assert pr_img.shape == gt_img.shape and np.allclose(pr_img.affine, gt_img.affine)
    assert (out / "overlays" / "spleen_0.png").is_file()


def _reference_folder(root: Path, case, labels=None) -> Path:
    """A reference-scan folder laid out like ../shared/realct, from a phantom case (TotalSegmentator
    values: liver 5, spleen 1)."""
    root.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(case.hu.astype(np.float32), case.affine), root / "image.nii.gz")
    if labels is None:
        labels = 5 * (case.label_for("liver") > 0) + 1 * (case.label_for("spleen") > 0)
    nib.save(nib.Nifti1Image(labels.astype(np.int16), case.affine), root / "reference_labels.nii.gz")
    return root


def test_reference_scan_measure_scores_the_organ_and_names_bad_folders(trained_tiny, tmp_path):
    from keras_unet3plus.data import phantom
    from keras_unet3plus.data.volume import DataError
    from keras_unet3plus.workflows.reference_scan import measure_on_reference_scan

    _, model_path, _ = trained_tiny
    case = phantom.generate_case(77, shape=(64, 64, 32))
    folder = _reference_folder(tmp_path / "ref", case)
    real = measure_on_reference_scan(model_path, folder, overlay=tmp_path / "o.png")
    assert real.organ == "liver" and real.reference_voxels == int((case.label_for("liver") > 0).sum())
    assert real.dice > 0.6 and (tmp_path / "o.png").stat().st_size > 0  # the tiny model finds the liver
    spleen = measure_on_reference_scan(model_path, folder, organ="spleen")  # a liver model scored on spleen
    assert spleen.reference_voxels == int((case.label_for("spleen") > 0).sum()) and spleen.dice < 0.2

    with pytest.raises(DataError, match="reference_labels.nii.gz: grid"):
        measure_on_reference_scan(
            model_path, _reference_folder(tmp_path / "bad", case, labels=np.zeros((64, 64, 31), np.int16))
        )
    with pytest.raises(DataError, match="no scan in it"):
        (tmp_path / "empty").mkdir()
        measure_on_reference_scan(model_path, tmp_path / "empty")


def test_reference_scan_reads_the_real_dicom_series(trained_tiny, real_ct):
    from keras_unet3plus.data.nifti import load_image
    from keras_unet3plus.workflows.reference_scan import measure_on_reference_scan

    _, model_path, _ = trained_tiny
    real = measure_on_reference_scan(model_path, real_ct)
    labels = np.rint(load_image(real_ct / "reference_labels.nii.gz").image)
    assert real.scan.name == "series" and len(real.per_slice_dice) == labels.shape[2] == 20
    assert real.reference_voxels == int((labels == 5).sum()) > 10000


def test_acquisition_variants_of_the_real_ct(trained_tiny, real_ct, tmp_path):
    """The real CT as other protocols would give it: each variant's grid is what it says, its
    reference keeps the liver's volume, and the worst one gets an overlay."""
    from keras_unet3plus.data.variants import STANDARD_VARIANTS
    from keras_unet3plus.workflows.reference_scan import measure_acquisition_variants, variants_table

    _, model_path, _ = trained_tiny
    measures = measure_acquisition_variants(model_path, real_ct, worst_overlay=tmp_path / "worst.png")
    assert [m.variant for m in measures] == [name for name, _ in STANDARD_VARIANTS]
    by_name = {m.variant: m for m in measures}
    assert by_name["as acquired"].grid.startswith("512x512x20")
    assert by_name["3 mm"].grid.startswith("167x167x13, 3.00 x 3.00 x 3.00 mm")
    assert by_name["cropped 360x300 mm"].grid.startswith("369x307x20")
    assert by_name["3 mm, cropped"].grid.startswith("120x100x13")
    fine = by_name["as acquired"].reference_voxels * 0.977**2 * 2.0
    assert abs(by_name["3 mm"].reference_voxels * 27.0 / fine - 1) < 0.1
    assert by_name["low dose"].reference_voxels == by_name["as acquired"].reference_voxels
    worst = min(measures, key=lambda m: m.dice)
    assert worst.overlay == tmp_path / "worst.png" and worst.overlay.stat().st_size > 0
    assert len(variants_table(measures)) == 6


def test_demo_reports_the_reference_scan(tmp_path):
    """The demo end to end in miniature, measured on a labelled scan laid out like ../shared/realct."""
    from keras_unet3plus.data import phantom
    from keras_unet3plus.workflows.demo import run_demo

    folder = _reference_folder(tmp_path / "ref", phantom.generate_case(78, shape=(48, 48, 16)))
    lines = []
    tiny = dict(
        image_size=32, filters=(4, 8, 16, 32, 64), cat_channels=4, epochs=1, steps_per_epoch=4, batch_size=4, verbose=0
    )
    res = run_demo(
        tmp_path / "demo",
        minutes=3,
        n_cases=5,
        n_test=1,
        shape=(48, 48, 16),
        overrides=tiny,
        export=False,
        reference_scan=folder,
        printer=lines.append,
    )
    real = json.loads(res.metrics_path.read_text())["reference_scan"]
    assert real["organ"] == "liver" and 0.0 <= real["dice"] <= 1.0 and len(real["per_slice_dice"]) == 16
    assert [v["variant"] for v in real["variants"]][:2] == ["as acquired", "3 mm"] and len(real["variants"]) == 5
    assert real["variants"][0]["dice"] == real["dice"]
    assert real["worst"]["dice"] == min(v["dice"] for v in real["variants"])
    assert (tmp_path / "demo" / "real_scan_overlay.png").is_file()
    assert (tmp_path / "demo" / "real_scan_worst_overlay.png").is_file()
    assert any(line.startswith("[demo] real scan (never trained on): liver Dice") for line in lines)
    assert any(line.strip().startswith("3 mm, cropped") for line in lines)

    from keras_unet3plus.workflows.demo import measure_reference_scan

    lines.clear()
    assert measure_reference_scan(res.model_path, tmp_path / "absent", tmp_path, lines.append) is None
    assert "no reference scan at" in lines[0]
