"""Which decoder should I use? The paper's full-scale decoder against the efficient one (issue 9).

Speed part: FLOPs per image (counted layer by layer), inference and training throughput for both
decoders at several input sizes, in one run. Accuracy part: per-volume Dice on held-out phantom
liver and spleen cases, same budget and seeds, mean +- std over seeds (see --part accuracy).

    .venv/bin/python benchmarks/decoder_comparison.py --part speed --sizes 160 320 512
    .venv/bin/python benchmarks/decoder_comparison.py --part accuracy --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from _common import machine_line, markdown_table, median, time_calls  # noqa: E402

DECODERS = ("paper", "efficient")


def speed(sizes, batch: int, filters, cat_channels: int, repeats: int, train_sizes) -> str:
    import keras

    import keras_unet3plus as ku
    from keras_unet3plus import losses
    from keras_unet3plus.complexity import count

    rows = []
    results = {}
    for size in sizes:
        for decoder in DECODERS:
            keras.backend.clear_session()
            model = ku.build((size, size, 3), decoder=decoder, filters=tuple(filters), cat_channels=cat_channels)
            c = count(model)
            x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
            t_inf = median(time_calls(lambda model=model, x=x: model.predict_on_batch(x), warmup=1, repeats=repeats))
            t_train = float("nan")
            if size in train_sizes:
                model.compile(optimizer=keras.optimizers.Adam(1e-4), **losses.for_model(model))
                y = (x[..., :1] > 0.5).astype(np.float32)
                targets = {name: y for name in model.output_names}
                t_train = median(
                    time_calls(
                        lambda model=model, x=x, targets=targets: model.train_on_batch(x, targets),
                        warmup=1,
                        repeats=repeats,
                    )
                )
            results[(size, decoder)] = (c, t_inf, t_train)
        for decoder in DECODERS:
            c, t_inf, t_train = results[(size, decoder)]
            base_inf, base_train = results[(size, "paper")][1:]
            rows.append(
                [
                    size,
                    decoder,
                    f"{c.trainable_params / 1e6:.2f}",
                    f"{c.gflops:.1f}",
                    f"{batch / t_inf:.2f}",
                    f"{base_inf / t_inf:.2f}x",
                    "-" if np.isnan(t_train) else f"{batch / t_train:.3f}",
                    "-" if np.isnan(t_train) else f"{base_train / t_train:.2f}x",
                ]
            )
    header = (
        f"Decoder speed, batch {batch}, filters {tuple(filters)}, cat_channels {cat_channels}, "
        f"deep supervision + CGM, hybrid loss for training; median of {repeats}. {machine_line()}\n\n"
    )
    return header + markdown_table(
        ["Size", "Decoder", "Params (M)", "GFLOPs/img", "Inference img/s", "vs paper", "Train img/s", "vs paper"], rows
    )


def accuracy(args) -> str:
    """Per-volume Dice of both decoders on held-out phantom liver and spleen cases, several seeds."""
    from pathlib import Path

    from _accuracy import make_phantom_sets, summarize, train_and_score

    work = Path(args.work_dir)
    sets = make_phantom_sets(work / "data", args.cases)
    results = []
    for organ in ("liver", "spleen"):
        for decoder in DECODERS:
            for seed in args.seeds:
                r = train_and_score(
                    decoder,
                    organ,
                    sets[organ],
                    work / "runs" / f"{organ}_{decoder}_s{seed}",
                    seed,
                    dict(decoder=decoder, image_size=args.acc_size),
                    args.epochs,
                    args.steps_per_epoch,
                    args.n_test,
                )
                print(f"{organ} {decoder} seed {seed}: Dice {r.mean:.4f} ({r.train_seconds:.0f}s)", flush=True)
                results.append(r)
    table = summarize(results)
    rows = []
    for organ in ("liver", "spleen"):
        for decoder in DECODERS:
            e = table[(decoder, organ)]
            rows.append(
                [
                    organ,
                    decoder,
                    f"{e['mean']:.4f} +- {e['std']:.4f}",
                    f"{e['seed_std']:.4f}",
                    f"{e['seconds'] / len(args.seeds):.0f}",
                ]
            )
    return (
        f"Per-volume Dice, {args.n_test} held-out phantom cases per organ, seeds {args.seeds}, "
        f"{args.epochs}x{args.steps_per_epoch} steps, small configuration at {args.acc_size}x{args.acc_size}. "
        f"{machine_line()}\n\n"
        + markdown_table(
            ["Organ", "Decoder", "Dice (mean +- std over cases)", "std of seed means", "train s / run"], rows
        )
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["speed", "accuracy"], default="speed")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 320, 512])
    parser.add_argument(
        "--train-sizes",
        type=int,
        nargs="+",
        default=[160, 320],
        help="sizes at which a training step is timed too (512 takes minutes per step on 2 cores)",
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--filters", type=int, nargs=5, default=[64, 128, 256, 512, 1024])
    parser.add_argument("--cat-channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work-dir", default="benchmarks/results/decoder_accuracy")
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=75)
    parser.add_argument("--acc-size", type=int, default=64, help="input size of the accuracy runs")
    args = parser.parse_args(argv)
    if args.part == "speed":
        print(speed(args.sizes, args.batch, args.filters, args.cat_channels, args.repeats, set(args.train_sizes)))
    else:
        print(accuracy(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
