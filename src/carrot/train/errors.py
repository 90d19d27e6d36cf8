"""How a run stops other than by finishing: each carries the message the CLI prints."""

from __future__ import annotations

__all__ = ["CollapseDetected", "NonFiniteLossError", "TrainInterrupted"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stops before the optimizer step."""


class CollapseDetected(RuntimeError):
    """The collapse monitor fired with ``train.stop_on_collapse``; a checkpoint was saved."""


class TrainInterrupted(RuntimeError):
    """SIGINT/SIGTERM: the run saved a checkpoint at the last completed step and stopped."""
