#!/usr/bin/env python
"""UNet 3+ liver segmentation on LiTS, the paper's setting (Huang et al., ICASSP 2020, Sec. 3).

    python recipes/train_liver.py --data-dir /data/LiTS            # paper setting, plain encoder
    python recipes/train_liver.py --data-dir /data/LiTS --encoder resnet101 --weights imagenet
    python recipes/train_liver.py                                   # no data: the <= 10 min demo

Setting: LiTS 2017 training volumes (volume-N / segmentation-N; liver = label >= 1), 3 adjacent
axial slices as input channels, 320 x 320, hybrid loss (focal + MS-SSIM + IoU) on every output,
full-scale deep supervision, classification-guided module, 131 volumes split 103 / 28
(train / test; 10 of the 103 are held back for validation-based model selection, --val-fraction 0
trains on all 103 without a best-model choice). Any `unet3plus train` flag (or --config) overrides
the preset, e.g. --batch-size, --epochs, --mixed-precision, --cache-dir.
"""

import os
import sys

os.environ.setdefault("UNET3PLUS_QUIET_START", "1")  # TensorFlow's start-up lines out (before it loads)

from keras_unet3plus.workflows.recipe import PAPER_FILTERS, main

PRESET = dict(
    task="liver",
    layout="lits",
    out_dir="runs/liver",
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
    n_test=28,
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
