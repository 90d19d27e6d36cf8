"""The reference for the bit-identity tests of the five methods carrot 0.2 had (ce, label_smoothing,
carrot, supcon, supcon_carrot): what ``compute_loss`` of carrot 0.2 computed, written out with the
functional API, and the check that a method of carrot.methods gives the same losses to the last bit
on a fixed batch, and the same gradients. Each method's test file runs it on its own cases."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from carrot.functional import (
    OperatorOptions,
    carrot_ce_kl_loss,
    carrot_supcon_loss,
    supcon_loss,
)
from carrot.methods import MethodContext, Step, build_method
from carrot.train.config import load_config
from carrot.train.model import CosineClassifier


def batch(seed: int = 0, b: int = 16, d: int = 8, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, d, generator=g) * 3
    y = torch.arange(b // 4).repeat_interleave(4) % n
    head = CosineClassifier(d, n, scale=16.0, learn_scale=True)
    return z, y, head


def method_of(overrides: list[str], n: int = 6, d: int = 8):
    cfg = load_config(None, overrides)
    return cfg, build_method(cfg.method, MethodContext(n, d, cfg.sections))


def old_compute_loss(cfg, z, y, head, lam):
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


def check_same_as_carrot_0_2(overrides: list[str], progress: float) -> None:
    """The loss and the gradients of ``build_method`` equal carrot 0.2's to the bit."""
    cfg, method = method_of(overrides)
    c = cfg.carrot
    lam = c.lam * min(1.0, progress / c.lam_warmup) if c.lam_warmup > 0 else c.lam
    z, y, head = batch()
    z_old = z.clone().requires_grad_(True)
    old = old_compute_loss(cfg, z_old, y, head, lam)
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
