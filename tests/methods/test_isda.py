"""``method=isda``: the loss on a fixed batch is the ISDA surrogate with the covariances of ẑ
merged from the batch first, λ = λ₀·progress, under the head taken as a linear map of ẑ."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from carrot.methods import MethodContext, Step, build_method
from carrot.methods.isda import linear_map
from carrot.train import load_config
from carrot.train.model import CosineClassifier
from oracle_baselines import oracle_class_moments, oracle_isda_loss


def _build(*overrides: str, n: int = 5, d: int = 4):
    cfg = load_config(None, ["method=isda", *overrides])
    return build_method(
        "isda", MethodContext(num_classes=n, embedding_dim=d, settings=cfg.sections)
    )


@pytest.mark.parametrize("head_kind", ["cosine", "linear"])
def test_loss_is_the_surrogate_with_the_merged_covariances(head_kind: str) -> None:
    torch.manual_seed(3)
    n, d = 5, 4
    head: nn.Module = (
        CosineClassifier(d, n, scale=16.0, learn_scale=False)
        if head_kind == "cosine"
        else nn.Linear(d, n)
    )
    method = _build(n=n, d=d)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    for progress in (0.5, 1.0):
        y = torch.tensor([0, 0, 0, 2, 2, 4])
        z = torch.randn(6, d)
        z_hat = F.normalize(z, dim=1)
        logits = head(z_hat)
        w = linear_map(head)
        assert_close(logits, z_hat @ w.T + (head.bias if head_kind == "linear" else 0))
        result = method.loss(z, logits, y, head, step=Step(progress=progress, observe=False))
        seen += list(zip(z_hat, y, strict=True))
        _, cov, count = oracle_class_moments(seen, n, d)
        assert torch.equal(method.isda.count, count)
        assert_close(method.isda.covariance.double(), cov, rtol=1e-5, atol=1e-6)
        want = oracle_isda_loss(logits.detach(), y, w.detach(), cov, 0.5 * progress)
        assert_close(result.loss.double(), want, rtol=1e-5, atol=1e-6)
    result.loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_unsupported_head_is_refused() -> None:
    with pytest.raises(ValueError, match=r"method=isda needs a linear or cosine classifier head"):
        linear_map(nn.Sequential(nn.Linear(4, 5)))
