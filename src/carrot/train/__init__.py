"""The trainer behind ``carrot train``: config schema, model, methods, loop."""

from carrot.train.config import Config, ConfigError, load_config
from carrot.train.loop import NonFiniteLossError, Trainer, TrainInterrupted, format_summary

__all__ = [
    "Config",
    "ConfigError",
    "NonFiniteLossError",
    "TrainInterrupted",
    "Trainer",
    "format_summary",
    "load_config",
]
