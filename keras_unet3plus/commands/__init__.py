"""Sub-commands of the `unet3plus` CLI (see keras_unet3plus.cli)."""
