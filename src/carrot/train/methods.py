"""The training objectives of ``method=``: ce, label_smoothing, carrot, supcon, supcon_carrot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carrot.functional import carrot_ce_kl_loss, carrot_operator, carrot_supcon_loss, supcon_loss
from carrot.train.config import Config
from carrot.train.model import ModelOutput

__all__ = ["LossResult", "compute_loss"]


@dataclass
class LossResult:
    loss: Tensor
    """The objective (0-d, float32)."""
    parts: dict[str, Tensor]
    """Detached 0-d loss terms for logging."""
    stats: dict[str, Any]
    """CARROT operator statistics of the batch (observed even when the method does not use it)."""


def _carrot_options(cfg: Config) -> dict[str, Any]:
    c = cfg.carrot
    return {
        "max_gamma": c.max_gamma,
        "eps": c.eps,
        "detach_stats": c.detach_stats,
        "unbiased_radius": c.unbiased_radius,
        "global_stats": c.global_stats,
    }


def _observe(cfg: Config, z: Tensor, y: Tensor) -> dict[str, Any]:
    """The class geometry of the batch for logging only: the guide's formulas, no gradient."""
    with torch.no_grad():
        _, stats = carrot_operator(
            F.normalize(z.detach().float(), dim=1), y, **_carrot_options(cfg)
        )
    return stats


def compute_loss(cfg: Config, out: ModelOutput, y: Tensor, head: nn.Module) -> LossResult:
    """The loss of ``cfg.method`` on one P×K batch.

    - ``ce``: cross-entropy on the logits of ẑ.
    - ``label_smoothing``: the same with ``train.label_smoothing``.
    - ``carrot``: CE + λ·T²·KL(ẑ, ẑ⁺) (+ aux CE), options from the ``carrot`` section.
    - ``supcon``: SupCon over the batch's ẑ (positives: the other K−1 images of the class).
    - ``supcon_carrot``: SupCon with ẑ and normalize(T(ẑ)) as two views.

    The SupCon methods train the classifier on detached embeddings (weight ``supcon.probe_weight``)
    so that accuracy can be reported without the classifier shaping the embedding.
    """
    method = cfg.method
    logits, z = out.logits, out.embedding
    if method in ("ce", "label_smoothing"):
        smoothing = cfg.train.label_smoothing if method == "label_smoothing" else 0.0
        ce = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        return LossResult(ce, {"ce": ce.detach()}, _observe(cfg, z, y))
    if method == "carrot":
        c = cfg.carrot
        loss, stats = carrot_ce_kl_loss(
            z,
            y,
            head,
            logits=logits,
            T=c.T,
            lam=c.lam,
            kl_direction=c.kl_direction,
            aux_ce_weight=c.aux_ce_weight,
            stop_grad_plus=c.stop_grad_plus,
            **_carrot_options(cfg),
        )
        parts = {"ce": stats["ce"], "kl": stats["kl"]}
        if c.aux_ce_weight > 0:
            parts["aux_ce"] = stats["aux_ce"]
        return LossResult(loss, parts, stats)
    if method in ("supcon", "supcon_carrot"):
        s = cfg.supcon
        probe = F.cross_entropy(head(F.normalize(z.detach().float(), dim=1).to(z.dtype)).float(), y)
        if method == "supcon":
            z_hat = F.normalize(z.float(), dim=1)
            contrastive = supcon_loss(
                z_hat[:, None], y, temperature=s.temperature, gather_global=s.gather_global
            )
            stats = _observe(cfg, z, y)
        else:
            contrastive, stats = carrot_supcon_loss(
                z,
                y,
                temperature=s.temperature,
                gather_global=s.gather_global,
                **_carrot_options(cfg),
            )
        loss = contrastive + s.probe_weight * probe
        return LossResult(loss, {"supcon": contrastive.detach(), "probe_ce": probe.detach()}, stats)
    raise ValueError(
        f"method must be one of ce, label_smoothing, carrot, supcon, supcon_carrot, got {method!r}."
    )
