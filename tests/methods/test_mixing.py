"""mixup and cutmix: timm's Mixup as the input transform, checked against the definitions
(a convex combination of the batch and its reverse; a pasted box whose area sets λ)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from carrot.methods import MethodContext, Step, build_method
from carrot.train.config import load_config

N = 5


def _method(name: str, *overrides: str):
    cfg = load_config(None, [f"method={name}", *overrides])
    return build_method(cfg.method, MethodContext(N, 8, cfg.sections))


def _batch(b: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 3, 12, 12, generator=g, dtype=torch.float64)
    y = torch.arange(b // 2).repeat_interleave(2) % N
    return x, y


def test_mixup_is_a_convex_combination_of_the_batch_and_its_reverse() -> None:
    method = _method("mixup", "mixup.alpha=0.4")
    x, y = _batch()
    np.random.seed(3)  # noqa: NPY002 - timm draws λ from NumPy's global RNG (checkpointed)
    mixed, target = method.transform(x.clone(), y)
    one_hot = F.one_hot(y, N).double()
    assert y[0] != y.flip(0)[0]
    lam = float(target[0, y[0]])  # λ read back from the first row's own class
    want_target = lam * one_hot + (1 - lam) * one_hot.flip(0)
    torch.testing.assert_close(target.double(), want_target)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    assert 0.0 < lam < 1.0
    # The same draw again: the same λ (exact resume restores NumPy's state).
    np.random.seed(3)  # noqa: NPY002
    again, _ = method.transform(x.clone(), y)
    assert torch.equal(again, mixed)


def test_cutmix_pastes_one_box_of_the_reversed_batch_with_lambda_its_complement() -> None:
    method = _method("cutmix")
    x, y = _batch()
    np.random.seed(5)  # noqa: NPY002
    mixed, target = method.transform(x.clone(), y)
    pasted = (mixed != x).any(1)  # (B, H, W): pixels taken from the partner
    assert torch.equal(mixed[:, :, pasted[0]], x.flip(0)[:, :, pasted[0]])
    assert torch.equal(pasted, pasted[:1].expand_as(pasted))  # one box for the whole batch
    rows, cols = pasted[0].any(1).nonzero(), pasted[0].any(0).nonzero()
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert int(pasted[0].sum()) == int(box)  # a rectangle
    lam = 1 - float(box) / (12 * 12)
    one_hot = F.one_hot(y, N).double()
    torch.testing.assert_close(target.double(), lam * one_hot + (1 - lam) * one_hot.flip(0))


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_the_loss_is_the_soft_target_cross_entropy(name: str) -> None:
    method = _method(name)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, N, generator=g, requires_grad=True)
    target = torch.softmax(torch.randn(8, N, generator=g), 1)
    got = method.loss(torch.randn(8, 8), logits, target, torch.nn.Identity(), step=Step(0, True))
    want = sum(-(target[i] * torch.log_softmax(logits[i].double(), 0)).sum() for i in range(8)) / 8
    torch.testing.assert_close(got.loss.double(), want)
    assert set(got.parts) == {"soft_ce"} and got.stats == {}
