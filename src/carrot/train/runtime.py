"""Process-level plumbing of the trainer: torchrun/DDP setup, devices, seeding, atomic files."""

from __future__ import annotations

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

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def setup(cls, device: str) -> Runtime:
        """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = check_device(device, "train.device")
        if dev.type == "cuda":
            if device == "cuda" or world > 1:
                dev = check_device(f"cuda:{local_rank}", "train.device (this rank's LOCAL_RANK)")
            torch.cuda.set_device(dev)
        owns = False
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            owns = True
        return cls(rank, world, local_rank, dev, owns)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def teardown(self) -> None:
        if self.owns_group and dist.is_initialized():
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


def install_stop_handlers(on_signal: Callable[[], None]) -> dict[int, Any]:
    """Call ``on_signal`` on SIGINT and SIGTERM (from the main thread only); returns the previous
    handlers, to restore with ``signal.signal``."""
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: on_signal())
        except ValueError:  # not in the main thread
            pass
    return previous


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
