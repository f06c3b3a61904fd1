#!/usr/bin/env python
"""UNet 3+ spleen segmentation on the Medical Segmentation Decathlon Task09_Spleen.

    python recipes/train_spleen.py --data-dir /data/Task09_Spleen   # paper-style setting
    python recipes/train_spleen.py                                   # no data: the <= 10 min demo (spleen phantom)

Same setting as the paper's liver experiment, applied to Task09 (41 labelled CT volumes,
imagesTr / labelsTr / dataset.json; the macOS ._ files of the tarball are ignored): 3-slice input,
320 x 320, hybrid loss, full-scale deep supervision, CGM; the test share follows the paper's
28/131 (9 of 41 volumes), 10 % of the rest validate. Any `unet3plus train` flag overrides the preset.
"""

import os
import sys

os.environ.setdefault("UNET3PLUS_QUIET_START", "1")  # TensorFlow's start-up lines out (before it loads)

from keras_unet3plus.workflows.recipe import PAPER_FILTERS, main

PRESET = dict(
    task="spleen",
    layout="msd",
    out_dir="runs/spleen",
    image_size=320,
    context=1,
    architecture="unet3plus",
    filters=PAPER_FILTERS,
    cat_channels=64,
    deep_supervision=True,
    cgm=True,
    focal_weight=1.0,
    ms_ssim_weight=1.0,
    iou_weight=1.0,
    n_test=None,
    val_fraction=0.1,
    split_seed=0,
    batch_size=8,
    epochs=100,
    learning_rate=1e-3,
    lr_schedule="cosine",
    warmup_epochs=1.0,
    clipnorm=1.0,
    negative_fraction=0.1,
    augment=True,
    patience=20,
)

if __name__ == "__main__":
    sys.exit(main(PRESET, __doc__.split("\n\n")[0]))
