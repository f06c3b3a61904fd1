"""The names of the dataset layouts, declared once and light to import: settings that offer them as
choices (``TrainConfig.layout``, ``--layout``) read them here without loading the readers.
:mod:`keras_unet3plus.data.layouts` finds the cases of each."""

from __future__ import annotations

from typing import Literal

Layout = Literal["auto", "lits", "msd", "nnunet", "folders", "images"]
Unpaired = Literal["error", "skip", "keep"]
