"""Worker side of the baselines' multi-process tests: real gloo groups on 127.0.0.1, the global
batch of :mod:`dist_workers` (uneven sizes, a single-class rank) split over the ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carrot.baselines import CenterLoss, ISDALoss
from carrot.distributed import ddp_loss_scale
from carrot.functional import euclidean_confusion, maxent_loss, pairwise_confusion_loss

from dist_workers import EMB_DIM, IN_DIM, NUM_CLASSES, gloo_group, local_slice, scenario

METHODS = ("maxent", "pairwise_confusion", "center_loss", "isda")
STEPS = 2


class BaselineNet(nn.Module):
    """A linear embedding and a linear classifier; forward computes the method's loss, so the
    centres and covariances are updated where the trainer would update them."""

    def __init__(self, method: str) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.backbone = nn.Linear(IN_DIM, EMB_DIM).double()
        self.head = nn.Linear(EMB_DIM, NUM_CLASSES).double()
        self.center = CenterLoss(NUM_CLASSES, EMB_DIM, alpha=0.5).double()
        self.isda = ISDALoss(NUM_CLASSES, EMB_DIM, lam0=2.0).double()
        self.method = method

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        a = self.backbone(x)
        logits = self.head(a)
        if self.method == "maxent":
            return maxent_loss(logits, y, gamma=0.5)
        if self.method == "pairwise_confusion":
            return pairwise_confusion_loss(logits, y, lam=4.0, gather_global=True)
        if self.method == "center_loss":
            return F.cross_entropy(logits, y) + 0.5 * self.center(a, y)
        if self.method == "isda":
            return self.isda(a, logits, y, self.head.weight, progress=1.0)
        raise ValueError(self.method)


def train(model: nn.Module, x: Tensor, y: Tensor, scale: float = 1.0) -> dict[str, Tensor]:
    """STEPS plain SGD steps; the state dict after them (parameters and buffers)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(STEPS):
        opt.zero_grad()
        (model(x, y) * scale).backward()
        opt.step()
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {k: v.detach().clone() for k, v in inner.state_dict().items()}


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, world, port):
        results: dict[str, Any] = {}
        data = scenario(world)
        sl = local_slice(world, rank)
        x, y = data["x"][sl], data["y"][sl]
        logits = (data["w"][sl] * 3).requires_grad_(True)  # (B, EMB_DIM) read as logits
        pc = euclidean_confusion(logits, y, gather_global=True)
        pc.backward()
        results["pc"] = {"value": pc.detach(), "grad": logits.grad}
        results["pc_local"] = euclidean_confusion(logits.detach(), y)
        for method in METHODS:
            # Buffers are not broadcast: each rank's centres and covariances must agree by
            # themselves, from the global batch.
            model = nn.parallel.DistributedDataParallel(
                BaselineNet(method), broadcast_buffers=False
            )
            results[method] = train(model, x, y, ddp_loss_scale(len(y)))
            del model  # DDP's reducer holds the group: none may outlive it
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
