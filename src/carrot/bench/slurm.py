"""``carrot bench accuracy --launcher slurm``: each missing or unfinished cell a SLURM job.

Jobs are submitted with submitit (``pip install carrot-fgvc[slurm]``), the launcher of DINO, MAE
and detectron2, as one job array per submission; each array task runs the cell's ``carrot
train`` (``torchrun --nproc-per-node N`` for ``--gpus-per-cell N``) as a child process, so the
trainer is the same program on a laptop and on the cluster. The submitted job ids are kept in
``OUT/slurm/jobs.json``: a rerun waits for the cells whose job is still queued, submits nothing for
finished cells and resubmits exactly the others (failed, cancelled, never submitted), which resume
from their checkpoints. Job states come from ``squeue``: submitit's own ``job.state`` reads
``sacct``, which is often unavailable (no accounting), and then stays UNKNOWN forever.

Time limits: submitit asks SLURM for SIGUSR2 ``--slurm-signal-delay`` seconds before the limit
(or on preemption); SLURM sends it to every process of the job step, so the trainer saves a
checkpoint at the next step boundary and exits (code 75) while submitit requeues the job, which
resumes the cell from that checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carrot.bench.grid import CellFailed, Job, _prepare, cell_lock, command, finished
from carrot.bench.slurm_values import check_slurm_options, sbatch_key

__all__ = ["SlurmOptions", "parse_time", "run_slurm", "slurm_executor"]

_LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
         "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED"}  # fmt: skip


@dataclass(frozen=True)
class SlurmOptions:
    """What each cell's job asks SLURM for."""

    partition: str | None = None
    time: str | None = None
    """SLURM's format (``90``, ``4:00:00``, ``1-12``); default: the partition's limit."""
    account: str | None = None
    cpus_per_cell: int | None = None
    gpus_per_cell: int = 0
    sbatch: tuple[str, ...] = ()
    """Extra sbatch options, ``KEY=VALUE`` or ``KEY`` (``qos=high``, ``exclusive``)."""
    signal_delay_s: int = 120
    wait: bool = True
    poll_s: float = 10.0


def parse_time(text: str) -> int | None:
    """Minutes in a SLURM time (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``); None
    for ``infinite``/``UNLIMITED``."""
    if text.strip().lower() in ("infinite", "unlimited"):
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if m is None:
        raise ValueError(
            f"--slurm-time must be a SLURM time like 90, 4:00:00 or 1-12, got {text!r}."
        )
    days, first, *rest = m.groups()
    parts = [int(first), *(int(x) for x in rest if x is not None)]
    if days is not None:  # D-H[:M[:S]]
        scale: list[float] = [60, 1, 1 / 60]
        minutes = int(days) * 1440 + sum(v * f for v, f in zip(parts, scale, strict=False))
    else:  # M, M:S or H:M:S
        scale = ([1.0], [1, 1 / 60], [60, 1, 1 / 60])[len(parts) - 1]
        minutes = sum(v * f for v, f in zip(parts, scale, strict=False))
    return max(1, math.ceil(minutes))


SINFO_TIMEOUT = 30.0
"""Seconds sinfo may take to answer before the bench gives up (an unreachable controller)."""


def _partition_limit(partition: str | None) -> str:
    """The time limit of ``partition`` (or of the default partition) from sinfo; sinfo missing,
    failing or not answering is one line that says to give --slurm-time."""
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%P %l"],
            capture_output=True,
            text=True,
            timeout=SINFO_TIMEOUT,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        detail = " ".join(str(detail).split())[:200]
        raise ValueError(
            "--launcher slurm without --slurm-time asks sinfo for the partition's time limit, and "
            f"sinfo failed ({detail}); give --slurm-time (e.g. 4:00:00) or check the cluster."
        ) from e
    out = done.stdout.split("\n")
    for line in out:
        parts = line.split()
        if len(parts) == 2 and (
            parts[0].rstrip("*") == partition or (partition is None and parts[0].endswith("*"))
        ):
            return parts[1]
    return "infinite"


class CellRun:
    """The function a cell's job runs: its ``carrot train`` (resumed if it has a checkpoint)."""

    def __init__(self, job: Job, nproc: int) -> None:
        self.job, self.nproc = job, nproc
        self._proc: subprocess.Popen[bytes] | None = None

    def __call__(self) -> str:
        with cell_lock(self.job):  # a local bench on the same --out never trains it at once
            return self._run()

    def _run(self) -> str:
        action = _prepare(self.job)
        if action is None:
            return "finished"
        cmd = command(self.job, action, nproc=self.nproc)
        env = {**os.environ, "CARROT_REQUEUE": "0"}  # submitit requeues the job, not the trainer
        with open(self.job.log, "a") as fh:
            fh.write(f"$ {' '.join(cmd)}  # SLURM job {_job_id()}\n")
            fh.flush()
            self._proc = subprocess.Popen(
                cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=_quiet_launcher
            )
            # poll, not wait(): submitit's signal handler calls checkpoint(), which waits too
            while (rc := self._proc.poll()) is None:
                time.sleep(0.5)
        if rc != 0:
            raise CellFailed(f"{self.job.run_dir} failed (exit code {rc}); its log: {self.job.log}")
        return "finished"

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on SIGUSR2 (time limit or preemption). The trainer got the same
        signal from SLURM and saves at its next step: wait for it, then let submitit requeue."""
        import submitit

        deadline = time.monotonic() + 600
        while self._proc is not None and time.monotonic() < deadline:
            if self._proc.poll() is not None or _exited(self._proc.pid):
                break
            time.sleep(0.5)
        return submitit.helpers.DelayedSubmission(CellRun(self.job, self.nproc))


def _job_id() -> str | None:
    """This job's id as squeue shows it (``ARRAY_TASK`` for a task of a job array)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (a zombie; Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _quiet_launcher() -> None:
    # torchrun's agent would die of SLURM's USR signals (their default action); its workers
    # install the trainer's handlers over this and checkpoint.
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def slurm_executor(folder: Path, opts: SlurmOptions) -> Any:
    """submitit's executor for ``opts``, its logs in ``folder``: every caller's job script goes
    through here, so the values that reach it are checked here too (the callers also check
    earlier, before any folder exists)."""
    check_slurm_options(opts, folder)
    try:
        import submitit
    except ImportError as e:
        raise ImportError(
            "--launcher slurm needs submitit: pip install 'carrot-fgvc[slurm]'."
        ) from e
    limit = opts.time if opts.time is not None else _partition_limit(opts.partition)
    minutes = parse_time(limit)
    extra: dict[str, Any] = {"requeue": True}
    if minutes is None:
        extra["time"] = "UNLIMITED"
    for option in opts.sbatch:
        key, value = sbatch_key(option)
        extra[key] = value
    ex = submitit.SlurmExecutor(folder=folder / "%j")
    params: dict[str, Any] = {
        "time": minutes if minutes is not None else 60 * 24 * 365,
        "ntasks_per_node": 1,
        "signal_delay_s": opts.signal_delay_s,
        "additional_parameters": extra,
        "job_name": "carrot-bench",
    }
    if opts.partition:
        params["partition"] = opts.partition
    if opts.account:
        params["account"] = opts.account
    if opts.cpus_per_cell:
        params["cpus_per_task"] = opts.cpus_per_cell
    if opts.gpus_per_cell:
        params["gpus_per_node"] = opts.gpus_per_cell
    ex.update_parameters(**params)
    return ex


def _queued(ids: Sequence[str]) -> dict[str, str]:
    """State of each of ``ids`` still in the queue (one line per array task)."""
    if not ids:
        return {}
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout  # fmt: skip
    states = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    return {i: states[i].strip() for i in ids if states.get(i, "").strip() in _LIVE}


def _load(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_slurm(jobs: Sequence[Job], out: Path, opts: SlurmOptions) -> bool:
    """Submit every job that is neither finished nor queued, then (``opts.wait``) wait for all;
    returns whether all are finished. Raises :class:`CellFailed` listing the failed cells and
    their logs."""
    if not jobs:
        return True
    check_slurm_options(opts, out)  # nothing reaches a job script that could start a line
    folder = out / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    registry = folder / "jobs.json"
    ids = _load(registry)
    live = _queued([ids[str(j.run_dir)] for j in jobs if str(j.run_dir) in ids])
    todo = [
        j for j in jobs
        if not finished(j.run_dir) and ids.get(str(j.run_dir)) not in live
    ]  # fmt: skip
    if todo:
        ex = slurm_executor(folder, opts)
        nproc = max(1, opts.gpus_per_cell)
        import submitit

        try:
            with ex.batch():
                submitted = [ex.submit(CellRun(j, nproc)) for j in todo]
        except submitit.core.utils.FailedJobError as e:
            why = " ".join(str(e).split())
            raise ValueError(f"sbatch refused the cells' job array: {why}") from e
        for j, s in zip(todo, submitted, strict=True):
            ids[str(j.run_dir)] = str(s.job_id)
        registry.write_text(json.dumps(ids, indent=1))
    print(f"slurm: submitted {len(todo)} job(s), {len(live)} still queued; ids in {registry}")
    if not opts.wait:
        return all(finished(j.run_dir) for j in jobs)
    line = ""
    while True:
        live = _queued([ids[str(j.run_dir)] for j in jobs if str(j.run_dir) in ids])
        counts = {"pending": 0, "running": 0, "done": 0, "failed": 0}
        failed = []
        for j in jobs:
            state = live.get(ids.get(str(j.run_dir), ""))
            if finished(j.run_dir):
                counts["done"] += 1
            elif state is None:
                counts["failed"] += 1
                failed.append(j)
            elif state == "PENDING":
                counts["pending"] += 1
            else:
                counts["running"] += 1
        now = "slurm: " + ", ".join(f"{v} {k}" for k, v in counts.items())
        if now != line:
            print(now, file=sys.stderr, flush=True)
            line = now
        if counts["pending"] + counts["running"] == 0:
            break
        time.sleep(opts.poll_s)
    if failed:
        listing = "; ".join(
            f"{j.run_dir} (job {ids.get(str(j.run_dir))}, log {j.log}, "
            f"submitit log {folder / ids.get(str(j.run_dir), '?')})"
            for j in failed
        )
        raise CellFailed(
            f"{len(failed)} cell(s) did not finish: {listing}. Rerun the same command to "
            "resubmit exactly these (they resume from their checkpoints)."
        )
    return True
