"""`unet3plus export`: SavedModel / ONNX / LiteRT / TensorRT, verified against the Keras model."""

from __future__ import annotations

import argparse

HELP = "export a trained model to SavedModel, ONNX, LiteRT (TFLite) or TensorRT, verified against Keras"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export import PRECISIONS, TARGETS

    parser.add_argument("model", help="trained model (.keras) with its .unet3plus.json model info beside it")
    parser.add_argument("--to", required=True, choices=TARGETS, help="export target")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=sorted({p for v in PRECISIONS.values() for p in v}),
        help="fp32 (all); fp16 (onnx, tflite, tensorrt); int8 = calibrated on real slices "
        "(tflite: full-integer; onnx/tensorrt: Q/DQ graph); int8-dynamic (tflite: dynamic range)",
    )
    parser.add_argument(
        "--outputs",
        default="deploy",
        choices=("deploy", "all"),
        help="deploy: one CGM-gated `seg` output (default); all: also side_2.. and cls",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="put the binarisation in the graph: outputs masks instead of probabilities",
    )
    parser.add_argument("--no-gate", action="store_true", help="do not apply the CGM gate to `seg`")
    parser.add_argument(
        "-o", "--out", default=None, help="artefact path (default: beside MODEL, named after target/precision)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="NIfTI cases for calibration and verification slices (default: generated phantom cases)",
    )
    parser.add_argument("--verify-slices", type=int, default=16, help="slices for the parity check (default 16)")
    parser.add_argument("--calib-slices", type=int, default=32, help="calibration slices for int8 (default 32)")
    parser.add_argument(
        "--batch-range", default="1,8,16", type=_batch_range, help="TensorRT optimization profile MIN,OPT,MAX batch"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    parser.add_argument("--timing-cache", default=None, help="TensorRT timing cache file (default: beside the engine)")
    parser.add_argument(
        "--trt-builder-flags",
        action="store_true",
        help="TensorRT 10 only: weakly typed network with FP16/INT8 builder flags instead of strong typing",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check (not recommended)")
    parser.add_argument(
        "--no-skip-absent-pair",
        dest="pair",
        action="store_false",
        help="ONNX / LiteRT: do not write the skip-absent pair beside the graph",
    )


def _batch_range(text: str) -> tuple[int, int, int]:
    """A bad --batch-range is a bad flag: argparse's exit 2 with its usage line."""
    from ..export.tensorrt import parse_batch_range

    try:
        return parse_batch_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from .._extras import MissingExtraError
    from ..export import ExportOptions, GraphSpec, ParityError, export_model, format_table

    # errors end in cli.main's one-line boundary (exit 1, traceback with --debug)
    options = ExportOptions(
        spec=GraphSpec(outputs=args.outputs, threshold=args.threshold, gate=not args.no_gate),
        data_dir=args.data_dir,
        verify_slices=args.verify_slices,
        calib_slices=args.calib_slices,
        batch_range=args.batch_range,
        opset=args.opset,
        timing_cache=args.timing_cache,
        legacy_trt_flags=args.trt_builder_flags,
        check=not args.no_verify,
        skip_absent_pair=args.pair,
    )
    try:
        result = export_model(args.model, args.to, args.precision, out=args.out, options=options)
    except MissingExtraError as exc:
        if args.to != "tensorrt":
            raise
        raise MissingExtraError(
            f"{exc}; the TensorRT-ready graphs need no GPU: unet3plus export MODEL --to onnx --precision fp16|int8"
        ) from exc
    except ParityError as exc:
        print(format_table(exc.rows))  # the table says which check failed; the error line follows
        raise
    if result.rows:
        print(result.table())
    for note in result.notes:
        print(note)
    for path in result.artefacts:
        print(f"wrote {path}")
    return 0
