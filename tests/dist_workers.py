"""Worker side of the multi-process tests: real gloo process groups on 127.0.0.1.

Each scenario's data is generated from a fixed seed, identically in the workers and in the test
process, which computes the single-process reference on the concatenated batch.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from carrot import (
    OperatorOptions,
    PKSampler,
    carrot_ce_kl_loss,
    carrot_operator,
    carrot_supcon_loss,
)
from carrot.distributed import ddp_loss_scale

SIZES = {2: [5, 11], 3: [3, 7, 6]}
# Rank 0 holds a single class (3); class 0 lives on one rank only; class 4 includes two copies
# of one image; classes 3 and 1 are split across ranks.
LABELS = {
    2: [3, 3, 3, 3, 3, 0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4],
    3: [3, 3, 3, 0, 0, 0, 1, 1, 2, 2, 2, 3, 4, 4, 1, 5],
}
IN_DIM, EMB_DIM, NUM_CLASSES = 6, 5, 6


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """A rank's gloo group on 127.0.0.1, one thread. On success the ranks leave together; either
    way every dropped DDP reducer (which holds the group, reference cycles included) is collected
    before the group is destroyed, else gloo may abort the process at exit (see carrot's
    Runtime.teardown). A worker must ``del`` the DDP models it still names before leaving."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        yield
        dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scenario(world: int) -> dict[str, Tensor]:
    """The global batch: inputs x, embeddings z, labels y and an upstream gradient w."""
    g = torch.Generator().manual_seed(100 + world)
    y = torch.tensor(LABELS[world])
    centers = F.normalize(
        torch.randn(NUM_CLASSES, EMB_DIM, generator=g, dtype=torch.float64), dim=1
    )
    z = F.normalize(
        centers[y] + 0.05 * torch.randn(len(y), EMB_DIM, generator=g, dtype=torch.float64), dim=1
    )
    copy = (y == 4).nonzero().flatten()
    z[copy] = z[copy[0]].clone()
    x = torch.randn(len(y), IN_DIM, generator=g, dtype=torch.float64)
    w = torch.randn(len(y), EMB_DIM, generator=g, dtype=torch.float64)
    return {"x": x, "z": z, "y": y, "w": w}


def nonfinite_z(z: Tensor) -> Tensor:
    """``z`` with a NaN in the second row and an infinity in the last (different ranks)."""
    bad = z.clone()
    bad[1, 0] = float("nan")
    bad[-1, 2] = float("inf")
    return bad


def local_slice(world: int, rank: int) -> slice:
    start = sum(SIZES[world][:rank])
    return slice(start, start + SIZES[world][rank])


class Net(nn.Module):
    """A tiny embedding model whose forward computes the loss, so DDP sees the whole graph."""

    def __init__(self, method: str) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.backbone = nn.Linear(IN_DIM, EMB_DIM).double()
        self.head = nn.Linear(EMB_DIM, NUM_CLASSES).double()
        self.method = method

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        z = self.backbone(x)
        if self.method == "ce_kl":
            return carrot_ce_kl_loss(
                z, y, self.head, lam=2.0, options=OperatorOptions(detach_stats=True)
            )[0]
        if self.method == "ce_kl_through_stats":
            return carrot_ce_kl_loss(
                z, y, self.head, lam=2.0, options=OperatorOptions(detach_stats=False)
            )[0]
        # SupCon trains the head on detached embeddings (as the trainer does): every parameter
        # gets a gradient, which DDP requires.
        probe = F.cross_entropy(self.head(z.detach()), y)
        if self.method == "supcon_global":
            return carrot_supcon_loss(z, y, temperature=0.5, gather_global=True)[0] + probe
        if self.method == "supcon_global_through_stats":
            loss, _ = carrot_supcon_loss(
                z,
                y,
                temperature=0.5,
                gather_global=True,
                options=OperatorOptions(detach_stats=False),
            )
            return loss + probe
        raise ValueError(self.method)


# The median radius (issue 25) under DDP: every rank's distances are gathered.
MEDIAN_OPTIONS = {
    "median": OperatorOptions(radius_stat="median", radius_factor=1.0, detach_stats=False),
    "median_sync_free": OperatorOptions(radius_stat="median", radius_factor=1.0, sync_free=True),
}

METHODS = ("ce_kl", "ce_kl_through_stats", "supcon_global", "supcon_global_through_stats")


def sgd_step(model: nn.Module, x: Tensor, y: Tensor, scale: float = 1.0) -> dict[str, Tensor]:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(x, y) * scale
    loss.backward()
    opt.step()
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {k: v.detach().clone() for k, v in inner.state_dict().items()}


class ByteCounter:
    """Counts the bytes passed to the collectives carrot uses."""

    def __init__(self) -> None:
        self.bytes = 0
        self._reduce, self._gather = dist.all_reduce, dist.all_gather

    def __enter__(self) -> ByteCounter:
        def all_reduce(t: Tensor, *a: Any, **kw: Any) -> Any:
            self.bytes += t.numel() * t.element_size()
            return self._reduce(t, *a, **kw)

        def all_gather(out: list[Tensor], t: Tensor, *a: Any, **kw: Any) -> Any:
            self.bytes += len(out) * t.numel() * t.element_size()
            return self._gather(out, t, *a, **kw)

        dist.all_reduce, dist.all_gather = all_reduce, all_gather  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        dist.all_reduce, dist.all_gather = self._reduce, self._gather  # type: ignore[assignment]


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, world, port):
        results: dict[str, Any] = {}
        data = scenario(world)
        sl = local_slice(world, rank)
        z_loc, y_loc, w_loc, x_loc = data["z"][sl], data["y"][sl], data["w"][sl], data["x"][sl]

        for detach in (True, False):
            z = z_loc.clone().requires_grad_(True)
            out, stats = carrot_operator(z, y_loc, detach_stats=detach)
            (out * w_loc).sum().backward()
            results[f"operator_{detach}"] = {
                "out": out.detach(),
                "grad": z.grad,
                **{k: stats[k] for k in ("classes", "gamma", "r", "m", "counts")},
            }
        for sync_free in (False, True):  # non-finite rows on some ranks (issue 22, item 4)
            bad = nonfinite_z(data["z"])[sl]
            out, stats = carrot_operator(bad, y_loc, options=OperatorOptions(sync_free=sync_free))
            results[f"nonfinite_{sync_free}"] = {
                "out": out,
                "nonfinite": stats["nonfinite"],
                "gamma": stats["gamma"][stats["valid"]],
                "classes": stats["classes"][stats["valid"]],
            }
        for key, options in MEDIAN_OPTIONS.items():
            z = z_loc.clone().requires_grad_(True)
            out, stats = carrot_operator(z, y_loc, options=options)
            (out * w_loc).sum().backward()
            results[key] = {"out": out.detach(), "grad": z.grad, "gamma": stats["gamma"]}
        local_out, local_stats = carrot_operator(
            z_loc, y_loc, options=OperatorOptions(global_stats=False)
        )
        results["local_stats"] = {"out": local_out, "classes": local_stats["classes"]}

        for method in METHODS:
            model = nn.parallel.DistributedDataParallel(Net(method))
            results[f"step_{method}"] = sgd_step(model, x_loc, y_loc, ddp_loss_scale(len(y_loc)))
            del model  # DDP's reducer holds the group: none may outlive it

        with ByteCounter() as counter:
            carrot_operator(z_loc.float(), y_loc)
        results["bytes"] = counter.bytes

        labels = torch.arange(40).repeat_interleave(torch.arange(40) % 7 + 1)
        sampler = PKSampler(labels, batch_size=8, k=2, seed=3)
        sampler.set_epoch(1)
        results["sampler"] = {"batches": list(sampler), "len": len(sampler), "rank": sampler.rank}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
