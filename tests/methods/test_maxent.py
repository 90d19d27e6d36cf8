"""``method=maxent``: its loss on a fixed batch is the functional maximum-entropy loss, its term
adds −γ·H on top of another method, and it composes even with mixing methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from carrot.functional import maxent_loss, prediction_entropy
from carrot.methods import MethodContext, Step, build_method, get_method
from carrot.train import load_config
from oracle_baselines import oracle_maxent


def _build(spec: str, *overrides: str, n: int = 5, d: int = 4):
    cfg = load_config(None, [f"method={spec}", *overrides])
    return build_method(spec, MethodContext(num_classes=n, embedding_dim=d, settings=cfg.sections))


def test_loss_is_ce_minus_gamma_entropy() -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 4])
    z, logits = torch.randn(6, 4), 3 * torch.randn(6, 5)
    method = _build("maxent")
    result = method.loss(z, logits, y, nn.Identity(), step=Step(progress=0.5, observe=True))
    assert_close(result.loss, maxent_loss(logits, y, gamma=0.1))
    assert_close(result.loss.double(), oracle_maxent(logits, y, 0.1), rtol=1e-5, atol=1e-6)
    assert_close(result.parts["entropy"], prediction_entropy(logits))
    assert set(result.parts) == set(method.logs) and "gamma" in result.stats
    strong = _build("maxent", "maxent.gamma=2")
    got = strong.loss(z, logits, y, nn.Identity(), step=Step(progress=0.5, observe=False)).loss
    assert_close(got, maxent_loss(logits, y, gamma=2.0))


def test_added_on_top_of_ce_and_of_mixup() -> None:
    y = torch.tensor([0, 1, 2, 3])
    z, logits = torch.randn(4, 4), torch.randn(4, 5)
    composed = _build("ce+maxent")
    got = composed.loss(z, logits, y, nn.Identity(), step=Step(progress=0.0, observe=False))
    assert_close(got.loss, F.cross_entropy(logits, y) - 0.1 * prediction_entropy(logits))
    assert get_method("mixup+maxent").baseline == "mixup"  # reads the predictions only


def test_rows_labelled_minus_100_are_left_out_as_the_function_leaves_them() -> None:
    y = torch.tensor([0, -100, 1, 1, -100, 4])
    z, logits = torch.randn(6, 4), 3 * torch.randn(6, 5)
    step = Step(progress=0.5, observe=False)
    got = _build("maxent").loss(z, logits, y, nn.Identity(), step=step)
    assert_close(got.loss, maxent_loss(logits, y, gamma=0.1))
    kept = y != -100
    assert_close(got.parts["entropy"], prediction_entropy(logits[kept]))
    assert_close(got.loss.double(), oracle_maxent(logits[kept], y[kept], 0.1), rtol=1e-5, atol=1e-6)
    added = _build("ce+maxent").loss(z, logits, y, nn.Identity(), step=step)
    assert_close(added.loss, maxent_loss(logits, y, gamma=0.1))
