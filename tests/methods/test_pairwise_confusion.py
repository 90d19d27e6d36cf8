"""``method=pairwise_confusion``: its loss on a fixed batch is CE + (λ/2)·PC with λ = 0.1·N, and
its settings scale λ with the class count."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from carrot.functional import euclidean_confusion, pairwise_confusion_loss
from carrot.methods import MethodContext, Step, build_method, get_method
from carrot.train import load_config
from carrot.train.config import ConfigError
from oracle_baselines import oracle_ce, oracle_pairwise_confusion


def _build(*overrides: str, n: int = 5):
    cfg = load_config(None, ["method=pairwise_confusion", *overrides])
    context = MethodContext(num_classes=n, embedding_dim=4, settings=cfg.sections)
    return build_method("pairwise_confusion", context)


@pytest.mark.parametrize("n", [5, 40])
def test_loss_is_ce_plus_half_lambda_confusion(n: int) -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 3])
    z, logits = torch.randn(6, 4), 2 * torch.randn(6, n)
    result = _build(n=n).loss(z, logits, y, nn.Identity(), step=Step(progress=0.1, observe=False))
    lam = 0.1 * n
    assert_close(result.loss, pairwise_confusion_loss(logits, y, lam=lam))
    want = oracle_ce(logits, y) + 0.5 * lam * oracle_pairwise_confusion(logits, y)
    assert_close(result.loss.double(), want, rtol=1e-5, atol=1e-6)
    assert_close(result.parts["confusion"], euclidean_confusion(logits, y))
    doubled = _build("pairwise_confusion.lam_per_class=0.2", n=n)
    got = doubled.loss(z, logits, y, nn.Identity(), step=Step(progress=0.1, observe=False)).loss
    assert_close(got, pairwise_confusion_loss(logits, y, lam=2 * lam))


def test_needs_two_classes_per_batch_and_a_valid_weight() -> None:
    assert get_method("pairwise_confusion").min_classes == 2
    assert get_method("ce+pairwise_confusion").min_classes == 2
    with pytest.raises(ConfigError, match=r"pairwise_confusion\.lam_per_class must be in \[0, 10000\]"):
        load_config(None, ["method=pairwise_confusion", "pairwise_confusion.lam_per_class=-1"])
