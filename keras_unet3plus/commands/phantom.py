"""`unet3plus phantom OUT`: write a synthetic CT data set (LiTS, MSD or nnU-Net v2 layout) for trying the tools."""

from __future__ import annotations

import argparse

HELP = "write synthetic abdominal CT cases (NIfTI; LiTS, MSD Task09 or nnU-Net v2 layout) with liver / spleen labels"


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape must look like 128x128x64, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 8:
        raise argparse.ArgumentTypeError(f"--shape needs three sizes >= 8, got {text!r}")
    return shape  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder")
    parser.add_argument(
        "--layout",
        choices=("lits", "msd", "nnunet"),
        default="lits",
        help="lits: volume-N / segmentation-N; msd: imagesTr / labelsTr / dataset.json; "
        "nnunet: nnU-Net v2 raw (imagesTr/{case}_0000.nii.gz, labelsTr/{case}.nii.gz)",
    )
    parser.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument(
        "--task",
        choices=("liver", "spleen"),
        default=None,
        help="label content (default: liver for lits and nnunet, spleen for msd)",
    )
    parser.add_argument("--shape", type=_shape, default=(128, 128, 64), help="X x Y x Z voxels (default 128x128x64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-lesions", dest="lesions", action="store_false", help="no liver lesions")
    parser.add_argument(
        "--square-fov",
        dest="crop_fov",
        action="store_false",
        help="every case on the full square grid (default: about a third cropped to the "
        "patient, non-square, as real exports are)",
    )


def run(args: argparse.Namespace) -> int:
    from ..data.phantom import write_dataset

    if args.cases < 1:
        raise SystemExit("unet3plus phantom: error: --cases must be >= 1")
    task = args.task or ("spleen" if args.layout == "msd" else "liver")
    paths = write_dataset(
        args.out,
        args.cases,
        layout=args.layout,
        task=task,
        shape=args.shape,
        seed=args.seed,
        lesions=args.lesions,
        crop_fov=args.crop_fov,
    )
    print(f"wrote {len(paths)} {task} cases ({args.layout} layout, {'x'.join(map(str, args.shape))}) to {args.out}")
    return 0
