"""The sync-free CARROT step under torch.compile: one graph (fullgraph=True), eager's numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot import OperatorOptions, carrot_ce_kl_loss, carrot_operator, carrot_supcon_loss

pytestmark = pytest.mark.slow


def test_compiled_carrot_step_equals_eager_without_graph_breaks() -> None:
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(32, 12)
    y = torch.arange(12).repeat_interleave(4)
    centers = torch.randn(12, 32, generator=g)
    z0 = F.normalize(centers[y] + 0.3 * torch.randn(48, 32, generator=g), dim=1)
    options = OperatorOptions(sync_free=True, max_gamma=2.0)

    def step(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, stats = carrot_ce_kl_loss(z, y, head, aux_ce_weight=0.5, options=options)
        contrastive, _ = carrot_supcon_loss(z, y, options=options)
        return loss + contrastive, stats["gamma"], stats["valid"]

    compiled = torch.compile(step, fullgraph=True)  # a graph break would raise here
    results = []
    for fn in (step, compiled):
        z = z0.clone().requires_grad_(True)
        head.zero_grad()
        loss, gamma, valid = fn(z, y)
        loss.backward()
        results.append((loss.detach(), gamma[valid], z.grad.clone(), head.weight.grad.clone()))
    (le, ge, gze, ghe), (lc, gc, gzc, ghc) = results
    assert (ge > 1).any(), "the batch must expand some class"
    assert_close(lc, le, rtol=1e-5, atol=1e-6)
    assert_close(gc, ge, rtol=1e-5, atol=1e-6)
    assert_close(gzc, gze, rtol=1e-4, atol=1e-6)
    assert_close(ghc, ghe, rtol=1e-4, atol=1e-6)


def test_the_operator_alone_compiles_as_one_graph() -> None:
    """On raw embeddings (the magnitude check included) as the losses' unit rows."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(1)
    y = torch.arange(6).repeat_interleave(4)
    z = torch.randn(6, 16, generator=g)[y] * 3 + torch.randn(24, 16, generator=g)
    options = OperatorOptions(sync_free=True)
    compiled = torch.compile(lambda z, y: carrot_operator(z, y, options=options), fullgraph=True)
    got, stats = compiled(z, y)
    want, want_stats = carrot_operator(z, y, options=options)
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert_close(stats["gamma"], want_stats["gamma"], rtol=1e-5, atol=1e-6)
