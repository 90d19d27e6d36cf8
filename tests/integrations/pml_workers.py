"""Worker side of the multi-process tests of :mod:`carrot.integrations.pml` (real gloo groups).

The global batch is generated from a fixed seed, identically in the workers and in the test
process, which computes the single-process reference on the concatenated batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import SupConLoss
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
from torch import Tensor

from carrot import OperatorOptions
from carrot.integrations.pml import CarrotViewLoss

from dist_workers import gloo_group

WORLD, PER_RANK, DIM = 2, 8, 6
# Classes 1 and 2 are split across the ranks; 0 and 4 live on one rank each.
LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 1, 1, 2, 3, 3, 3, 4, 4]
STAT_KEYS = ("classes", "gamma", "r", "m", "counts")


def scenario() -> dict[str, Tensor]:
    """The global batch: raw embeddings z (B·W, D), float64, and labels y."""
    g = torch.Generator().manual_seed(11)
    y = torch.tensor(LABELS)
    centers = 3.0 * F.normalize(torch.randn(5, DIM, generator=g, dtype=torch.float64), dim=1)
    z = centers[y] + 0.4 * torch.randn(len(y), DIM, generator=g, dtype=torch.float64)
    return {"z": z, "y": y}


def local_slice(rank: int) -> slice:
    return slice(rank * PER_RANK, (rank + 1) * PER_RANK)


def worker(rank: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, WORLD, port):
        data = scenario()
        z_loc, y_loc = data["z"][local_slice(rank)], data["y"][local_slice(rank)]
        results: dict[str, Any] = {}
        for detach in (True, False):
            criterion = CarrotViewLoss(SupConLoss(temperature=0.2), detach_stats=detach)
            z = z_loc.clone().requires_grad_(True)
            loss = criterion(z, y_loc)
            loss.backward()
            assert criterion.last_stats is not None
            results[f"local_{detach}"] = {
                "loss": loss.detach(),
                "grad": z.grad,
                "summary": criterion.summary(),
                **{k: criterion.last_stats[k] for k in STAT_KEYS},
            }
        # Views of all ranks contrasted: PML's wrapper inside the adapter.
        gathered = CarrotViewLoss(
            DistributedLossWrapper(SupConLoss(temperature=0.2)), OperatorOptions()
        )
        z = z_loc.clone().requires_grad_(True)
        loss = gathered(z, y_loc)
        loss.backward()
        results["gathered"] = {"loss": loss.detach(), "grad": z.grad}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
