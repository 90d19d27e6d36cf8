"""The five methods of before, moved into carrot.methods, give the same losses to the last bit
on a fixed batch, and the same gradients: the reference here is what ``compute_loss`` of
carrot 0.2 computed, written out with the functional API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from carrot.functional import (
    OperatorOptions,
    carrot_ce_kl_loss,
    carrot_consistency_loss,
    carrot_operator,
    carrot_supcon_loss,
    kl_consistency,
    supcon_loss,
)
from carrot.methods import MethodContext, Step, build_method
from carrot.train.config import load_config
from carrot.train.model import CosineClassifier


def _batch(seed: int = 0, b: int = 16, d: int = 8, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, d, generator=g) * 3
    y = torch.arange(b // 4).repeat_interleave(4) % n
    head = CosineClassifier(d, n, scale=16.0, learn_scale=True)
    return z, y, head


def _method(overrides: list[str], n: int = 6, d: int = 8):
    cfg = load_config(None, overrides)
    return cfg, build_method(cfg.method, MethodContext(n, d, cfg.sections))


def _old_compute_loss(cfg, z, y, head, lam):
    """carrot 0.2's train/methods.py::compute_loss, written with the functional API."""
    logits = head(F.normalize(z, dim=1))
    c, s = cfg.carrot, cfg.supcon
    options = OperatorOptions(**{f: getattr(c, f) for f in OperatorOptions.__dataclass_fields__})
    if cfg.method in ("ce", "label_smoothing"):
        smoothing = cfg.label_smoothing.smoothing if cfg.method == "label_smoothing" else 0.0
        return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
    if cfg.method == "carrot":
        return carrot_ce_kl_loss(
            z, y, head, logits=logits, T=c.T, lam=lam, kl_direction=c.kl_direction,
            aux_ce_weight=c.aux_ce_weight, stop_grad_plus=c.stop_grad_plus, options=options,
        )[0]  # fmt: skip
    probe = F.cross_entropy(head(F.normalize(z.detach().float(), dim=1).to(z.dtype)).float(), y)
    if cfg.method == "supcon":
        z_hat = F.normalize(z.float(), dim=1)
        contrastive = supcon_loss(
            z_hat[:, None], y, temperature=s.temperature, gather_global=s.gather_global
        )
    else:
        contrastive, _ = carrot_supcon_loss(
            z, y, temperature=s.temperature, gather_global=s.gather_global,
            stop_grad_plus=c.stop_grad_plus, options=options,
        )  # fmt: skip
    return contrastive + s.probe_weight * probe


CASES = [
    ["method=ce"],
    ["method=label_smoothing"],
    ["method=label_smoothing", "train.label_smoothing=0.3"],
    ["method=carrot"],
    ["method=carrot", "carrot.guide=true"],
    ["method=carrot", "carrot.aux_ce_weight=0.5", "carrot.kl_direction=symmetric", "carrot.T=2"],
    ["method=carrot", "carrot.stop_grad_plus=true", "carrot.space=angular", "carrot.lam=3"],
    ["method=carrot", "carrot.lam=2", "carrot.lam_warmup=0.5"],
    ["method=supcon"],
    ["method=supcon", "supcon.temperature=0.5", "supcon.probe_weight=0.3"],
    ["method=supcon_carrot"],
    ["method=supcon_carrot", "carrot.max_gamma=null", "carrot.sync_free=true"],
]


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
@pytest.mark.parametrize("progress", [0.1, 0.9])
def test_losses_and_gradients_are_those_of_before_to_the_bit(overrides, progress) -> None:
    cfg, method = _method(overrides)
    c = cfg.carrot
    lam = c.lam * min(1.0, progress / c.lam_warmup) if c.lam_warmup > 0 else c.lam
    z, y, head = _batch()
    z_old = z.clone().requires_grad_(True)
    old = _old_compute_loss(cfg, z_old, y, head, lam)
    old.backward()
    old_head = head.weight.grad.clone()
    head.zero_grad()
    z_new = z.clone().requires_grad_(True)
    logits = head(F.normalize(z_new, dim=1))
    result = method.loss(z_new, logits, y, head, step=Step(progress=progress, observe=True))
    result.loss.backward()
    assert torch.equal(result.loss, old)
    assert torch.equal(z_new.grad, z_old.grad) and torch.equal(head.weight.grad, old_head)
    assert all(v.grad_fn is None for v in result.parts.values())
    assert set(result.parts) <= set(method.logs)
    assert "gamma" in result.stats  # every one of the five records the class geometry


def test_logging_statistics_are_skipped_when_not_observed() -> None:
    _, method = _method(["method=ce"])
    z, y, head = _batch()
    result = method.loss(z, head(F.normalize(z, dim=1)), y, head, step=Step(0.0, observe=False))
    assert result.stats == {}
    observed = method.loss(z, head(F.normalize(z, dim=1)), y, head, step=Step(0.0, observe=True))
    want = carrot_operator(F.normalize(z, dim=1), y)[1]["gamma"]
    assert torch.equal(observed.stats["gamma"], want)


def test_carrot_on_top_of_another_method_adds_exactly_carrots_term() -> None:
    z, y, head = _batch(1)
    for base in ("ce", "label_smoothing", "supcon"):
        cfg, composed = _method(
            [f"method={base}+carrot", "carrot.lam=2", "carrot.aux_ce_weight=0.5"]
        )
        _, alone = _method([f"method={base}"])
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


def test_carrots_term_leaves_ignored_rows_out() -> None:
    from carrot.functional import CEKLOptions

    z, y, head = _batch(2)
    y_ignored = y.clone()
    y_ignored[[1, 6, 11]] = -100
    kept = y_ignored != -100
    lo = CEKLOptions(lam=1.5, aux_ce_weight=0.25, T=2.0)
    got, stats = carrot_consistency_loss(z, y_ignored, head, loss_options=lo)
    want, _ = carrot_consistency_loss(z[kept], y[kept], head, loss_options=lo)
    torch.testing.assert_close(got, want)
    assert {"kl", "aux_ce", "gamma"} <= stats.keys()
    zg = z.clone().requires_grad_(True)
    carrot_consistency_loss(zg, y_ignored, head, loss_options=lo)[0].backward()
    assert torch.all(zg.grad[~kept] == 0) and zg.grad[kept].abs().sum() > 0
