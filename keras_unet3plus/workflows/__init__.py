"""Workflows: code that drives several stages (data, training, inference, metrics, export) one
after the other, and nothing below it imports.

- :mod:`.demo`: phantom data -> training -> held-out evaluation -> export, in minutes on a CPU
  (``unet3plus demo``).
- :mod:`.recipe`: the shared driver of ``recipes/train_*.py`` (a paper preset, then training and
  the held-out evaluation; the demo without data).
- :mod:`.evaluate`: held-out evaluation of a model: predict every labelled case, then score the
  masks (``unet3plus evaluate --model M --data-dir D``). Scoring masks that already exist is
  :mod:`keras_unet3plus.evaluation`, a layer below.

Each module is imported on its own (``from keras_unet3plus.workflows.demo import run_demo``).
"""
