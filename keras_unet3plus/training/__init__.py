"""Training UNet 3+: the resolved configuration, strategy selection, the distributed custom loop,
crash-safe checkpoints and run logs.

    from keras_unet3plus.training import TrainConfig, train
    result = train(TrainConfig(data_dir="LiTS", out_dir="runs/liver", image_size=320))

CLI: ``unet3plus train --data-dir DIR --out-dir RUN [--config run.yaml] ...``.
"""
from .config import TrainConfig, load_file
from .distribute import is_chief, select_strategy
from .trainer import FitResult, Trainer, learning_rate_schedule, train

__all__ = ["TrainConfig", "load_file", "select_strategy", "is_chief", "Trainer", "FitResult", "train",
           "learning_rate_schedule"]
