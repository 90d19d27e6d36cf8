"""carrot.methods.carrot: the same losses and gradients as carrot 0.2, to the bit (the reference is
in carrot02.py), and CARROT on top of another method adds exactly its own term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from carrot02 import batch, check_same_as_carrot_0_2, method_of

from carrot.functional import (
    OperatorOptions,
    carrot_consistency_loss,
    carrot_operator,
    kl_consistency,
)
from carrot.methods import Step

CASES = [
    ["method=carrot"],
    ["method=carrot", "carrot.guide=true"],
    ["method=carrot", "carrot.aux_ce_weight=0.5", "carrot.kl_direction=symmetric", "carrot.T=2"],
    ["method=carrot", "carrot.stop_grad_plus=true", "carrot.space=angular", "carrot.lam=3"],
    ["method=carrot", "carrot.lam=2", "carrot.lam_warmup=0.5"],
]


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
@pytest.mark.parametrize("progress", [0.1, 0.9])
def test_losses_and_gradients_are_those_of_carrot_0_2_to_the_bit(
    overrides: list[str], progress: float
) -> None:
    check_same_as_carrot_0_2(overrides, progress)


def test_carrot_on_top_of_another_method_adds_exactly_carrots_term() -> None:
    z, y, head = batch(1)
    for base in ("ce", "label_smoothing", "supcon"):
        cfg, composed = method_of(
            [f"method={base}+carrot", "carrot.lam=2", "carrot.aux_ce_weight=0.5"]
        )
        _, alone = method_of([f"method={base}"])
        zc = z.clone().requires_grad_(True)
        logits = head(F.normalize(zc, dim=1))
        step = Step(0.5, observe=False)
        got = composed.loss(zc, logits, y, head, step=step)
        base_part = alone.loss(zc, logits, y, head, step=step).loss
        options = OperatorOptions.of(cfg.carrot)
        # The term from the formula: λ·T²·KL(p⁺‖p) + w·CE(head(ẑ⁺), y), in float64.
        z_hat = F.normalize(zc.double(), dim=1)
        z_plus = F.normalize(carrot_operator(z_hat, y, options=options)[0], dim=1)
        head64 = head.double()
        lp, lq = head64(z_hat), head64(z_plus)
        kl = kl_consistency(lp, lq)
        term = 2.0 * kl + 0.5 * F.cross_entropy(lq, y)
        head.float()
        torch.testing.assert_close(
            got.loss.double(), base_part.double() + term, rtol=1e-5, atol=1e-6
        )
        assert {"kl", "aux_ce"} <= set(got.parts) and "gamma" in got.stats
        alone_term = carrot_consistency_loss(zc, y, head, logits=logits, options=options)[0]
        assert alone_term.requires_grad
