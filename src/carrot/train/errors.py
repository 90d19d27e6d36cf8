"""How a run stops other than by finishing: each carries the message the CLI prints."""

from __future__ import annotations

__all__ = ["CollapseDetected", "NonFiniteLossError", "TrainInterrupted", "TrainPreempted"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stops before the optimizer step."""


class CollapseDetected(RuntimeError):
    """The collapse monitor fired with ``train.stop_on_collapse``; a checkpoint was saved."""


class TrainInterrupted(RuntimeError):
    """SIGINT/SIGTERM: the run saved a checkpoint at the last completed step and stopped."""


class TrainPreempted(TrainInterrupted):
    """A signal under SLURM (USR1/USR2 before the time limit or on preemption, or SIGTERM): the
    run saved a checkpoint at the last completed step; the CLI requeues the job when it may and
    exits with :data:`carrot.launch.REQUEUE_EXIT_CODE`."""

    def __init__(self, message: str, signum: int | None) -> None:
        super().__init__(message)
        self.signum = signum
