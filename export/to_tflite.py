#!/usr/bin/env python
"""Export a trained model to tflite (verified against Keras). Same code and options as
`unet3plus export MODEL --to tflite`; run with --help for the options."""

import sys

from keras_unet3plus.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(
        main(
            ["export", *argv[:1], "--to", "tflite", *argv[1:]]
            if argv and not argv[0].startswith("-")
            else ["export", "--to", "tflite", *argv]
        )
    )
