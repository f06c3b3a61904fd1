"""Measure one configuration in a fresh process (so peak memory is its own) and print JSON.

python benchmarks/_measure_one.py --size 320 --batch 2 --mode train --decoder paper
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _common import median, peak_rss_mib, time_calls  # noqa: E402


def measure(size: int, batch: int, mode: str, decoder: str, filters, cat_channels: int, repeats: int) -> dict:
    import keras

    import keras_unet3plus as ku
    from keras_unet3plus import losses
    from keras_unet3plus.complexity import count

    model = ku.build((size, size, 3), decoder=decoder, filters=tuple(filters), cat_channels=cat_channels)
    macs = count(model).macs
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    if mode == "infer":
        seconds = median(time_calls(lambda: model.predict_on_batch(x), warmup=1, repeats=repeats))
        flops = 2 * macs * batch
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-4), **losses.for_model(model))
        y = (x[..., :1] > 0.5).astype(np.float32)
        targets = {name: y for name in model.output_names}
        seconds = median(time_calls(lambda: model.train_on_batch(x, targets), warmup=1, repeats=repeats))
        flops = 3 * 2 * macs * batch  # forward + backward (~2x forward), the usual estimate
    return {
        "size": size,
        "batch": batch,
        "mode": mode,
        "decoder": decoder,
        "seconds": seconds,
        "images_per_s": batch / seconds,
        "flops": flops,
        "achieved_gflops": flops / seconds / 1e9,
        "peak_rss_mib": peak_rss_mib(),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--decoder", default="paper")
    p.add_argument("--filters", type=int, nargs=5, default=[64, 128, 256, 512, 1024])
    p.add_argument("--cat-channels", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    print("RESULT " + json.dumps(measure(a.size, a.batch, a.mode, a.decoder, a.filters, a.cat_channels, a.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
