"""`unet3plus params`: parameters and FLOPs of UNet, UNet++ and UNet 3+ next to the paper's Table 1."""

from __future__ import annotations

import argparse

HELP = "print parameters and FLOPs of UNet / UNet++ / UNet 3+ next to the paper's Table 1"

# Paper, Table 1 (parameters, millions). The "VGG-16" column is reproduced exactly by the official
# code's plain 64..1024 encoder (see docs/explanation/architecture.md); the ResNet-101 column could not be verified.
PAPER_PARAMS_M = {
    ("unet", "plain"): 39.39,
    ("unetplusplus", "plain"): 47.18,
    ("unet3plus-nods", "plain"): 26.97,
    ("unet3plus", "plain"): 26.97,
    ("unet", "resnet101"): 55.90,
    ("unetplusplus", "resnet101"): 63.67,
    ("unet3plus-nods", "resnet101"): 43.55,
    ("unet3plus", "resnet101"): 43.55,
}
ROWS = (
    ("UNet", "unet", dict(architecture="unet", deep_supervision=False, cgm=False)),
    ("UNet++ (DS)", "unetplusplus", dict(architecture="unet++", deep_supervision=True, cgm=False)),
    ("UNet 3+ w/o DS", "unet3plus-nods", dict(architecture="unet3plus", deep_supervision=False, cgm=False)),
    ("UNet 3+ (DS)", "unet3plus", dict(architecture="unet3plus", deep_supervision=True, cgm=False)),
    ("UNet 3+ (DS + CGM)", None, dict(architecture="unet3plus", deep_supervision=True, cgm=True)),
    (
        "UNet 3+ (DS + CGM), efficient decoder",
        None,
        dict(architecture="unet3plus", deep_supervision=True, cgm=True, decoder="efficient"),
    ),
)
ENCODERS = {"plain": "unet", "vgg16": "vgg16", "resnet101": "resnet101"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=320, help="input height and width (default 320, the paper's)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))


def table(size: int = 320, channels: int = 3, encoders=tuple(ENCODERS)) -> str:
    """The comparison as a markdown table (builds every model once; ~1 minute on 2 CPU cores)."""
    import keras

    from ..complexity import count
    from ..model import build

    lines = [
        f"Parameters and compute at {size}x{size}x{channels}, 1 class. Params: trainable (as PyTorch counts).",
        "",
        "| Model | Encoder | Params (M) | Paper (M) | Diff | GFLOPs / image |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for encoder in encoders:
        for label, key, kwargs in ROWS:
            model = build((size, size, channels), backbone=ENCODERS[encoder], **kwargs)
            c = count(model)
            paper = (
                PAPER_PARAMS_M.get((key, "resnet101" if encoder == "resnet101" else "plain"))
                if key and encoder != "vgg16"
                else None
            )
            ours = c.trainable_params / 1e6
            diff = f"{100 * (ours - paper) / paper:+.1f} %" if paper else ""
            lines.append(f"| {label} | {encoder} | {ours:.2f} | {paper if paper else '-'} | {diff} | {c.gflops:.1f} |")
            keras.backend.clear_session()
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    print(table(args.size, args.channels, args.encoders))
    return 0
