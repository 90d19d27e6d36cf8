"""The runs of a suite and how they are carried out: one ``carrot train`` run per cell (and per
pretraining), reused when finished, resumed when cut off, refused when made with other settings,
run in this process or fanned out over processes (``--jobs``) and GPUs (``--devices``). The
cells and jobs themselves are built in :mod:`carrot.bench.jobs`."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from carrot.bench.jobs import Cell, Job, cell_job, cells, pretrain_job, weights_path
from carrot.bench.runfiles import read_saved_config, read_summary

__all__ = [
    "Cell",
    "CellFailed",
    "Job",
    "cell_job",
    "cells",
    "check_data",
    "check_same_settings",
    "finished",
    "pretrain_job",
    "run_jobs",
    "slot_envs",
    "weights_path",
]


def finished(run: Path) -> bool:
    summary = run / "summary.json"
    if not summary.is_file():
        return False
    return not read_summary(run).get("stopped_early", False)


def check_same_settings(job: Job) -> None:
    """A finished or half-finished run is reused only if it was made with today's settings. A key
    added to the schema after the run counts as its default value (the run had no such option),
    so a cell that sets it to anything else is not paired with that run."""

    from carrot.train.config import MOVED_KEYS, RESOLVED_DATA_KEYS, Config, config_to_dict, flatten

    saved = job.run_dir / "config.yaml"
    if not saved.is_file():
        return
    old = read_saved_config(saved)
    want = config_to_dict(job.load())
    old_f = {MOVED_KEYS.get(k, k): v for k, v in flatten(old).items()}  # keys of before
    want_f, default_f = flatten(want), flatten(config_to_dict(Config()))
    # A data key left null is resolved by the run itself (and saved resolved).
    resolved = {f"data.{k}" for k in RESOLVED_DATA_KEYS}
    skip = {"output_dir", *job.ignore}
    changed = [
        k
        for k, v in want_f.items()
        if k not in skip
        and not (k in resolved and v is None)
        and old_f.get(k, default_f.get(k)) != v
    ]
    if changed:
        raise ValueError(
            f"{job.run_dir} was run with other settings ({', '.join(changed)}); results from "
            "different settings cannot be paired. Use another --out, or delete that run."
        )


def check_data(named_jobs: Iterable[tuple[str, Job]]) -> None:
    """Fail before training when a run needs Fashion-MNIST and its files are missing."""
    from carrot.data.fashion_mnist import DEFAULT_ROOT, files_present

    missing: dict[Path, list[str]] = {}
    for name, job in named_jobs:
        cfg = job.load()
        if cfg.data.name != "fashion_mnist":
            continue
        root = Path(cfg.data.root).expanduser() if cfg.data.root else DEFAULT_ROOT
        if not files_present(root) and name not in missing.setdefault(root, []):
            missing[root].append(name)
    if missing:
        where = "; ".join(
            f"{', '.join(names)} read it from {root}" for root, names in missing.items()
        )
        raise ValueError(
            f"Fashion-MNIST is missing ({where}). Install it with `sudo apt-get install "
            "dataset-fashion-mnist` (Debian/Ubuntu: it puts the IDX files in "
            f"{DEFAULT_ROOT}), set data.root to a folder holding them, or leave those datasets "
            "out with --datasets."
        )


@contextlib.contextmanager
def cell_lock(job: Job) -> Iterator[None]:
    """Hold ``RUN.lock`` (beside the run folder) while this process prepares and trains a cell,
    so that a second bench on the same --out never deletes or resumes a cell another one is
    training: it waits for that cell (and says so), then finds it finished. The lock is an
    ``flock``, released by the OS when its holder dies (a killed bench leaves no stale lock)."""
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = job.run_dir.parent / f"{job.run_dir.name}.lock"
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process guard
        yield
        return
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            print(
                f"carrot bench: {job.run_dir} is being trained by another process (pid {holder}); "
                "waiting for it to finish.",
                file=sys.stderr,
                flush=True,
            )
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare(job: Job) -> str | None:
    """What a job needs: None (finished), "resume" (checkpoint) or "start" (a fresh folder).
    Called with the cell's :func:`cell_lock` held."""
    check_same_settings(job)
    if finished(job.run_dir):
        return None
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    if (job.run_dir / "checkpoints" / "last.pt").is_file():
        return "resume"
    if job.run_dir.is_symlink():
        raise ValueError(f"run folder {job.run_dir} is a symlink; refusing to delete or write it.")
    if job.run_dir.exists():
        shutil.rmtree(job.run_dir)  # a start that never reached a checkpoint (no one holds it)
    return "start"


def run_in_process(job: Job) -> None:
    """Train ``job`` here (resuming a checkpoint if an earlier grid was cut off); stdout to its log."""
    from carrot.train import Trainer

    with cell_lock(job):
        action = _prepare(job)
        if action is None:
            return
        with open(job.log, "a") as fh, contextlib.redirect_stdout(fh):
            trainer = Trainer.resume(job.run_dir) if action == "resume" else Trainer(job.load())
            trainer.fit()


def command(job: Job, action: str, *, nproc: int = 1) -> list[str]:
    """The ``carrot train`` command line of a job; with ``nproc`` > 1, under torchrun (one
    process per GPU of the cell, or gloo processes on the CPU)."""
    cmd = [sys.executable, "-m", "carrot.cli", "train"]
    if nproc > 1:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*run, "--nproc-per-node", str(nproc), "-m", "carrot.cli", "train"]
    if action == "resume":
        return [*cmd, "--resume", str(job.run_dir)]
    if job.config is not None:
        cmd += ["--config", str(job.config)]
    return [*cmd, *job.overrides]


def run_subprocess(job: Job, env: dict[str, str], *, nproc: int = 1) -> None:
    """Train ``job`` in a process of its own (``nproc`` under torchrun) with ``env`` (threads,
    GPUs); output to its log."""
    with cell_lock(job):
        _run_subprocess(job, env, nproc)


def _run_subprocess(job: Job, env: dict[str, str], nproc: int) -> None:
    action = _prepare(job)
    if action is None:
        return
    full = {**os.environ, **env}
    # The child imports the same carrot as this process, installed or not.
    import carrot

    src = str(Path(carrot.__file__).resolve().parent.parent)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    with open(job.log, "a") as fh:
        fh.write(f"$ {' '.join(command(job, action, nproc=nproc))}\n{json.dumps(env)}\n")
        fh.flush()
        rc = subprocess.run(
            command(job, action, nproc=nproc),
            env=full,
            stdout=fh,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    if rc != 0:
        tail = "\n".join(job.log.read_text(errors="replace").splitlines()[-15:])
        raise CellFailed(f"{job.run_dir} failed (exit code {rc}); its log {job.log} ends:\n{tail}")


class CellFailed(RuntimeError):
    """A grid cell's training process failed; the message ends with its log's last lines."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def slot_envs(
    *,
    jobs: int | None,
    devices: Sequence[str] | None,
    threads: int | None,
    cores: int,
    per_slot: int = 1,
) -> list[dict[str, str]]:
    """The environment of each of the parallel slots a grid runs in: with ``devices``, slot i
    sees only its ``per_slot`` GPUs (CUDA_VISIBLE_DEVICES; ``jobs`` defaults to one slot per
    ``per_slot`` GPUs); every slot gets ``threads`` CPU threads (default: cores // slots, at
    least 1)."""
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}.")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}.")
    if devices is not None and not devices:
        raise ValueError("--devices must list at least one GPU index, e.g. 0,1.")
    if devices and len(devices) < per_slot:
        raise ValueError(
            f"--devices must list at least --gpus-per-cell={per_slot} GPUs, got {list(devices)}."
        )
    gpus = list(devices or ())
    groups = [gpus[i : i + per_slot] for i in range(0, len(gpus) - per_slot + 1, per_slot)]
    n = jobs if jobs is not None else len(groups) if devices else 1
    t = str(threads if threads is not None else max(1, cores // (n * per_slot)))
    envs = []
    for i in range(n):
        env = {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t}
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(groups[i % len(groups)])
        envs.append(env)
    return envs


def run_parallel(
    items: Sequence[Any],
    slots: Sequence[dict[str, str]],
    run_one: Callable[[Any, dict[str, str]], None],
    *,
    done: Callable[[Any], None] = lambda item: None,
) -> None:
    """Run ``run_one(item, slot)`` for every item, each slot used by one item at a time. After a
    failure no new item starts; the running ones finish, then the first error is raised."""
    free: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)
    errors: list[BaseException] = []
    stop = threading.Event()

    def work(item: Any) -> None:
        if stop.is_set():
            return
        slot = free.get()
        try:
            run_one(item, slot)
        except BaseException as e:
            stop.set()
            errors.append(e)
        else:
            done(item)
        finally:
            free.put(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        list(pool.map(work, items))
    if errors:
        raise errors[0]


def run_jobs(
    jobs: Sequence[Job],
    *,
    parallel: int | None = None,
    devices: Sequence[str] | None = None,
    threads: int | None = None,
    nproc: int = 1,
    done: Callable[[Job], None] = lambda job: None,
) -> None:
    """Every job: one after another in this process (``parallel`` None or 1, no ``devices`` and
    ``nproc`` 1; with ``threads`` torch threads if given), else in ``parallel`` processes at a
    time (one per GPU of ``devices`` by default), each under torchrun with ``nproc`` processes
    when > 1, see :func:`slot_envs`."""
    if (parallel is None or parallel == 1) and not devices and nproc == 1:
        import torch

        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            for job in jobs:
                run_in_process(job)
                done(job)
        finally:
            torch.set_num_threads(before)
        return
    slots = slot_envs(
        jobs=parallel, devices=devices, threads=threads, cores=cpu_count(), per_slot=nproc
    )
    run_parallel(jobs, slots, lambda job, env: run_subprocess(job, env, nproc=nproc), done=done)
