"""Shared fixtures: small phantom datasets written once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from keras_unet3plus.data import phantom

SMALL_SHAPE = (64, 64, 32)


@pytest.fixture(scope="session")
def phantom_lits(tmp_path_factory) -> Path:
    """A LiTS-layout folder with 4 small phantom cases: 3 .nii.gz (RAS, LPS, PLS) and 1 .nii (LAS).

    Read-only for tests: copy it (shutil.copytree) before changing anything.
    """
    root = tmp_path_factory.mktemp("lits")
    phantom.write_dataset(root, 3, layout="lits", task="liver", shape=SMALL_SHAPE, seed=0,
                          orientations=["RAS", "LPS", "PLS"])
    phantom.write_dataset(root, 1, layout="lits", task="liver", shape=SMALL_SHAPE, seed=0,
                          orientations=["LAS"], compress=False, start_index=3)
    return root


@pytest.fixture(scope="session")
def phantom_msd(tmp_path_factory) -> Path:
    """An MSD Task09_Spleen-like folder with 3 small phantom cases and macOS ``._`` junk files."""
    root = tmp_path_factory.mktemp("Task09_Spleen")
    phantom.write_dataset(root, 3, layout="msd", task="spleen", shape=SMALL_SHAPE, seed=1)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub / "._spleen_0.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")
    return root
