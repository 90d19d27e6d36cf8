"""The baselines under torch.compile (``train.compile`` compiles the method's loss): one graph
(fullgraph=True) including the in-place centre and covariance updates, eager's numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot.baselines import CenterLoss, ISDALoss
from carrot.functional import maxent_loss, pairwise_confusion_loss

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ignored", [False, True], ids=["labelled", "two_ignored"])
def test_compiled_baselines_equal_eager_without_graph_breaks(ignored: bool) -> None:
    torch._dynamo.reset()
    head = torch.nn.Linear(8, 6)
    y = torch.arange(6).repeat_interleave(2)
    if ignored:  # rows labelled -100 are left out without a host sync
        y[[3, 8]] = -100
    z0 = torch.randn(12, 8, generator=torch.Generator().manual_seed(0))

    def step(z: torch.Tensor, center: CenterLoss, isda: ISDALoss) -> torch.Tensor:
        z_hat = F.normalize(z, dim=1)
        logits = head(z_hat)
        return (
            maxent_loss(logits, y)
            + pairwise_confusion_loss(logits, y, lam=0.6, gather_global=True)
            + 0.1 * center(z_hat, y)
            + isda(z_hat.detach(), logits, y, head.weight, progress=0.5)
        )

    results = []
    for fn in (step, torch.compile(step, fullgraph=True)):  # a graph break would raise here
        center, isda = CenterLoss(6, 8), ISDALoss(6, 8)
        head.zero_grad()
        z = z0.clone().requires_grad_(True)
        for _ in range(2):  # the second step reads the updated centres and covariances
            loss = fn(z, center, isda)
        loss.backward()
        results.append(
            (loss.detach(), z.grad, head.weight.grad, center.centers, isda.covariance, isda.count)
        )
    assert bool(results[0][4].abs().sum() > 0) and bool(results[0][3].abs().sum() > 0)
    for eager, compiled in zip(*results, strict=True):
        assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
