"""Writes tests/data/hybrid_loss_v0.{keras,npz,json}: a compiled model saved by the loss code of
commit 47ccb0f (HybridLoss with focal / ms_ssim / iou keywords, before the weighted terms), and the
loss values that code gave, so that test_losses checks the files still load with the same values.

Run once from a checkout of that commit (it is not run by the tests):
    git worktree add /tmp/legacy 47ccb0f
    PYTHONPATH=/tmp/legacy python tests/data/make_hybrid_loss_v0.py tests/data
"""

import json
import sys
from pathlib import Path

import numpy as np
import keras

from keras_unet3plus import build, losses

out = Path(sys.argv[1])
keras.utils.set_random_seed(0)
model = build((64, 64, 3), filters=(4, 8, 16, 32, 64), cat_channels=4)
model.compile(
    optimizer="adam",
    **losses.for_model(model, side_weights=0.5, focal_weight=0.7, iou_smooth=2.0, alpha=0.25, cls_weight=0.3),
)
rng = np.random.default_rng(0)
x = rng.normal(size=(2, 64, 64, 3)).astype("float32")
mask = np.zeros((2, 64, 64, 1), "float32")
mask[0, 16:40, 20:44] = 1.0
pred = model.predict(x, verbose=0)
values = {name: float(model.loss[name](mask, pred[name])) for name in pred}
targets = {name: mask for name in pred}
total = float(model.evaluate(x, targets, verbose=0, return_dict=True)["loss"])
model.save(out / "hybrid_loss_v0.keras")
np.savez_compressed(out / "hybrid_loss_v0.npz", x=x, mask=mask)
(out / "hybrid_loss_v0.json").write_text(json.dumps({"loss": values, "total": total}, indent=1))
print(values, total)
