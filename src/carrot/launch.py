"""Which launcher started this process, and what SLURM needs from a run that must stop early.

Three launchers are recognised, in this order:

* **torchrun** (``torch.distributed.run``, also inside an sbatch script): ``WORLD_SIZE`` (and
  ``RANK``, ``LOCAL_RANK``) are set; its environment wins over SLURM's.
* **srun**: a SLURM job step (``SLURM_STEP_ID`` is set) with ``SLURM_STEP_NUM_TASKS`` tasks;
  rank ``SLURM_PROCID``, local rank ``SLURM_LOCALID``, the master address is the first host of
  ``scontrol show hostnames $SLURM_STEP_NODELIST`` and the port is derived from the job and step
  ids (``MASTER_ADDR`` / ``MASTER_PORT`` win when set). The batch script itself (no step) is one
  process, whatever ``--ntasks`` says.
* otherwise a single process.

Under SLURM, SIGUSR1 or SIGUSR2 (``sbatch --signal=USR1@120``: the warning before the time limit,
or a preemption notice) makes the trainer save a checkpoint at the next step boundary and exit
with :data:`REQUEUE_EXIT_CODE`; rank 0 then requeues the job (``scontrol requeue``) when it is
requeueable, and the requeued ``carrot train`` finds its run folder by the job id and resumes it
exactly. SIGTERM (scancel, or the end of the time limit) saves and exits the same way but never
requeues: a cancelled job stays cancelled, and SLURM requeues preempted jobs itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REQUEUE_EXIT_CODE",
    "REQUEUE_SIGNALS",
    "Launch",
    "claim_note",
    "detect",
    "master_port",
    "requeue",
    "requeued_run",
]

REQUEUE_EXIT_CODE = 75
"""Exit code of a run stopped by a SLURM signal after saving its checkpoint (``EX_TEMPFAIL``: try
again); the bench resubmits such a cell, a requeued job resumes it."""

REQUEUE_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)
"""The signals that ask a run to checkpoint and come back (SLURM's ``--signal``)."""


@dataclass(frozen=True)
class Launch:
    """How this process was started."""

    launcher: str
    """``"torchrun"``, ``"srun"`` or ``"single process"``."""
    rank: int
    world_size: int
    local_rank: int
    master_addr: str | None = None
    master_port: int | None = None

    def describe(self) -> str:
        """For the run's header, e.g. ``srun (job 12, 2 tasks)``."""
        if self.launcher == "srun":
            job = os.environ.get("SLURM_JOB_ID", "?")
            return f"srun (job {job}, {self.world_size} task(s))"
        return self.launcher


def master_port(job_id: int, step_id: int) -> int:
    """A port in [20000, 60000) from the job and step ids: the same on every task of a step,
    different for steps of the same job (two ``srun`` in one script may run at once)."""
    return 20000 + (job_id * 97 + step_id) % 40000


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[01-04]``), expanded by scontrol itself."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(
            f"cannot expand the SLURM node list {nodelist!r} with `scontrol show hostnames` ({e}); "
            "set MASTER_ADDR to the first node's address."
        ) from e
    if not out:
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` printed no host.")
    return out[0]


def detect(environ: Mapping[str, str] | None = None) -> Launch:
    """The launcher of this process from its environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env:
        return Launch(
            "torchrun",
            int(env.get("RANK", "0")),
            int(env["WORLD_SIZE"]),
            int(env.get("LOCAL_RANK", "0")),
        )
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        world = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
        rank, local = int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0"))
        if world == 1:
            return Launch("srun", rank, world, local)
        addr = env.get("MASTER_ADDR") or _first_host(
            env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"]
        )
        port = int(env.get("MASTER_PORT") or 0) or master_port(
            int(env.get("SLURM_JOB_ID", "0")), int(env.get("SLURM_STEP_ID", "0"))
        )
        return Launch("srun", rank, world, local, addr, port)
    return Launch("single process", 0, 1, 0)


def requeue(signum: int | None, rank: int) -> str:
    """After a run saved its checkpoint on ``signum``: requeue the SLURM job when this is rank 0,
    the signal asks for it (USR1/USR2), the job is requeueable and ``CARROT_REQUEUE`` is not 0
    (the bench sets that: it resubmits cells itself). Returns what happened, for the message."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is None:
        return ""
    if signum not in REQUEUE_SIGNALS:
        return f" SLURM job {job} is not requeued ({_name(signum)})."
    if rank != 0:
        return ""
    if os.environ.get("CARROT_REQUEUE") == "0":
        return f" SLURM job {job}: exit code {REQUEUE_EXIT_CODE}, for the launcher to resubmit."
    try:
        show = subprocess.run(
            ["scontrol", "show", "job", "-o", job],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        if "Requeue=1" not in show.split():
            return f" SLURM job {job} is not requeueable (sbatch --requeue); resubmit it."
        subprocess.run(["scontrol", "requeue", job], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        return f" Requeuing SLURM job {job} failed ({e}); resubmit it."
    return f" SLURM job {job} requeued: it resumes from this checkpoint."


def _name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum is not None else "no signal"


def claim_note() -> str:
    """What a run folder's claim file records besides the pid: the SLURM job, to find the
    folder again when the job is requeued."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm_job={job}\n" if job else ""


def requeued_run(wanted: Path) -> Path | None:
    """In a requeued SLURM job (``SLURM_RESTART_COUNT`` > 0): the run folder this job claimed
    before (``wanted`` or ``wanted-N``), if it holds a checkpoint; else None."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return None
    candidates = [wanted, *sorted(wanted.parent.glob(f"{wanted.name}-*"))]
    for run in candidates:
        claim = run / ".carrot-run"
        if claim.is_file() and f"slurm_job={job}" in claim.read_text().split():
            return run if (run / "checkpoints" / "last.pt").is_file() else None
    return None
