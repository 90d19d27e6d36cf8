"""``method=center_loss``: CE + λ·½‖ẑ − c_y‖² with the centres moved by the paper's rule after
each loss; the centres are the method's state (checkpointed), not optimizer parameters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from carrot.methods import MethodContext, Step, build_method
from carrot.train import load_config
from carrot.train.config import ConfigError
from oracle_baselines import oracle_ce, oracle_center_loss, oracle_center_update


def _build(spec: str = "center_loss", *overrides: str, n: int = 5, d: int = 4):
    cfg = load_config(None, [f"method={spec}", *overrides])
    return build_method(spec, MethodContext(num_classes=n, embedding_dim=d, settings=cfg.sections))


def test_loss_and_centre_updates_over_two_steps() -> None:
    method = _build("center_loss", "center_loss.lam=0.5")
    assert method.param_groups() == []  # the paper's rule moves the centres, not the optimizer
    assert set(method.state_dict()) == {"centers.centers"}
    centres = torch.zeros(5, 4, dtype=torch.float64)
    for _ in range(2):
        y = torch.tensor([0, 0, 1, 1, 3, 3])
        z, logits = torch.randn(6, 4), torch.randn(6, 5)
        z_hat = F.normalize(z.double(), dim=1)
        result = method.loss(z, logits, y, nn.Identity(), step=Step(progress=0.0, observe=True))
        want = oracle_ce(logits, y) + 0.5 * oracle_center_loss(z_hat, y, centres)
        assert_close(result.loss.double(), want, rtol=1e-5, atol=1e-6)
        centres = oracle_center_update(z_hat, y, centres, 0.5)
        assert_close(method.centers.centers.double(), centres, rtol=1e-5, atol=1e-6)
    assert bool((centres[[2, 4]] == 0).all()) and bool((centres[0] != 0).any())


def test_term_on_top_of_ce() -> None:
    method = _build("ce+center_loss")
    y = torch.tensor([0, 1, 1])
    z, logits = torch.randn(3, 4), torch.randn(3, 5)
    method.loss(z, logits, y, nn.Identity(), step=Step(progress=0.0, observe=False))
    assert set(method.state_dict()) == {"added.0.centers.centers"}
    assert bool((method.state_dict()["added.0.centers.centers"][1] != 0).any())


def test_settings_ranges() -> None:
    with pytest.raises(ConfigError, match=r"center_loss\.alpha must be in \[0, 1\], got 2"):
        load_config(None, ["method=center_loss", "center_loss.alpha=2"])
    with pytest.raises(ConfigError, match=r"center_loss\.lam must be in \[0, 10000\]"):
        load_config(None, ["method=center_loss", "center_loss.lam=-0.1"])
