"""Process-level plumbing of the trainer: torchrun/DDP setup, devices, seeding, atomic files."""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from carrot.paths import make_readable

__all__ = [
    "Runtime",
    "StopSignal",
    "atomic_write_text",
    "broadcast_buffers",
    "check_device",
    "environment_info",
    "install_stop_handlers",
    "seed_everything",
]


@dataclass
class Runtime:
    """Where this process runs: rank, world size and device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool
    launcher: str = "single process"
    """How the process was started, for the run's header (:meth:`carrot.launch.Launch.describe`)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def setup(cls, device: str) -> Runtime:
        """Join the process group when launched by torchrun or srun (gloo on CPU, nccl on GPU);
        see :mod:`carrot.launch`."""
        from carrot.launch import detect

        launch = detect()
        world, rank, local_rank = launch.world_size, launch.rank, launch.local_rank
        dev = check_device(device, "train.device")
        if dev.type == "cuda":
            if device == "cuda" or world > 1:
                # srun may bind one GPU per task (then each task sees one device)
                index = local_rank % max(1, torch.cuda.device_count())
                dev = check_device(f"cuda:{index}", "train.device (this rank's local rank)")
            torch.cuda.set_device(dev)
        owns = False
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if launch.master_addr is not None:  # srun: no torchrun rendezvous in the environment
                dist.init_process_group(
                    backend,
                    init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
                    rank=rank,
                    world_size=world,
                )
            else:
                dist.init_process_group(backend)
            owns = True
        return cls(rank, world, local_rank, dev, owns, launch.describe())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def teardown(self) -> None:
        """Destroy the group this runtime set up. Drop every DDP wrapper first: a reducer still
        alive keeps the gloo group alive past ``destroy_process_group``, to be freed at exit,
        where it aborts the process now and then ("terminate called without an active
        exception": 7 of 20 three-rank test runs; none with the wrappers collected first)."""
        if self.owns_group and dist.is_initialized():
            gc.collect()  # wrappers dropped but held in reference cycles
            dist.destroy_process_group()


def check_device(device: str, key: str) -> torch.device:
    """The device of ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine:
    a one-line ``ValueError`` (naming ``key``) for another spelling, CUDA on a machine without
    it, or a GPU index it does not have."""
    import re

    text = str(device).strip()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"{key} must be auto, cpu, cuda or cuda:N, got {device!r}.")
    if not torch.cuda.is_available():
        raise ValueError(
            f"{key} is {device!r} but CUDA is not available on this machine (torch "
            f"{torch.__version__}); use {key.split(' ')[0]}=cpu, or auto to take a GPU when "
            "there is one."
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"{key} is {device!r} but this machine has {torch.cuda.device_count()} GPU(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})."
        )
    return torch.device(text)


def broadcast_buffers(modules: list[torch.nn.Module], rt: Runtime) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics: DDP only broadcasts them at the
    start of a training forward)."""
    if not rt.distributed:
        return
    for module in modules:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def install_stop_handlers(on_signal: Callable[[int], None]) -> dict[int, Any]:
    """Call ``on_signal(signum)`` on SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 (SLURM's warning before
    the time limit; from the main thread only); returns the previous handlers, to restore with
    ``signal.signal``."""
    from carrot.launch import REQUEUE_SIGNALS

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, *REQUEUE_SIGNALS):
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: on_signal(signum))
        except ValueError:  # not in the main thread
            pass
    return previous


class StopSignal:
    """A stop asked for by a signal (see :func:`install_stop_handlers`), agreed over ranks."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def request(self, signum: int) -> None:
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def agreed(self, rt: Runtime) -> bool:
        """Whether any rank was signalled (a collective under DDP: call it on every rank at the
        same step); a requeue signal on any rank counts as one on all."""
        if not rt.distributed:
            return self.signum is not None
        from carrot.launch import REQUEUE_SIGNALS

        kind = 0.0 if self.signum is None else 2.0 if self.signum in REQUEUE_SIGNALS else 1.0
        flag = torch.tensor([kind], device=rt.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        agreed = flag.item()
        if agreed == 2.0 and self.signum not in REQUEUE_SIGNALS:
            self.signum = REQUEUE_SIGNALS[0]
        elif agreed == 1.0 and self.signum is None:
            self.signum = signal.SIGTERM
        return agreed > 0

    def error(self, message: str) -> Exception:
        """What the trainer raises once its checkpoint is saved: under SLURM a
        :class:`TrainPreempted` (the CLI requeues the job), else a :class:`TrainInterrupted`."""
        from carrot.train.errors import TrainInterrupted, TrainPreempted

        if os.environ.get("SLURM_JOB_ID"):
            return TrainPreempted(message, self.signum)
        return TrainInterrupted(message)


def seed_everything(seed: int, *, deterministic: bool, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (user code and libraries may use the global RNG)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    make_readable(fd)  # the mode of the run's other files (mkstemp's is 0600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def environment_info(world_size: int, device: torch.device) -> dict[str, Any]:
    import timm
    import torchvision

    from carrot.version import __version__

    info: dict[str, Any] = {
        __name__.partition(".")[0]: __version__,  # the package: carrot
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "world_size": world_size,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "argv": sys.argv,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
