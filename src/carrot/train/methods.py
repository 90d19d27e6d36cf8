"""The training objectives of ``method=``: ce, label_smoothing, carrot, supcon, supcon_carrot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carrot.functional import OperatorOptions, carrot_operator, supcon_loss
from carrot.memory import ClassMemory, carrot_ce_kl_loss, carrot_supcon_loss
from carrot.train.config import CarrotConfig, Config
from carrot.train.model import ModelOutput

__all__ = ["LossResult", "carrot_settings", "compute_loss", "lam_at"]


@dataclass
class LossResult:
    loss: Tensor
    """The objective (0-d, float32)."""
    parts: dict[str, Tensor]
    """Detached 0-d loss terms for logging."""
    stats: dict[str, Any]
    """CARROT operator statistics of the batch (observed even when the method does not use it)."""


def carrot_settings(cfg: Config) -> CarrotConfig:
    """The ``carrot`` section in force (``carrot.guide`` is resolved when the config is validated)."""
    return cfg.carrot


def lam_at(c: CarrotConfig, progress: float) -> float:
    """λ after the linear warm-up over the first ``lam_warmup`` of training (progress in [0, 1])."""
    if c.lam_warmup <= 0:
        return c.lam
    return c.lam * min(1.0, progress / c.lam_warmup)


def _observe(cfg: Config, z: Tensor, y: Tensor) -> dict[str, Any]:
    """The class geometry of the batch for logging only: the guide's formulas, no gradient."""
    with torch.no_grad():
        _, stats = carrot_operator(
            F.normalize(z.detach().float(), dim=1),
            y,
            options=OperatorOptions(eps=cfg.carrot.eps, global_stats=cfg.carrot.global_stats),
        )
    return stats


def compute_loss(
    cfg: Config,
    out: ModelOutput,
    y: Tensor,
    head: nn.Module,
    *,
    lam: float | None = None,
    memory: ClassMemory | None = None,
    observe: bool = True,
) -> LossResult:
    """The loss of ``cfg.method`` on one P×K batch.

    - ``ce``: cross-entropy on the logits of ẑ.
    - ``label_smoothing``: the same with ``train.label_smoothing``.
    - ``carrot``: CE + λ·T²·KL(ẑ, ẑ⁺) (+ aux CE), options from the ``carrot`` section.
    - ``supcon``: SupCon over the batch's ẑ (positives: the other K−1 images of the class).
    - ``supcon_carrot``: SupCon with ẑ and normalize(T(ẑ)) as two views.

    The SupCon methods train the classifier on detached embeddings (weight ``supcon.probe_weight``)
    so that accuracy can be reported without the classifier shaping the embedding. ``lam``
    overrides ``carrot.lam`` (the trainer passes :func:`lam_at` for ``carrot.lam_warmup``);
    ``memory`` is the class memory of ``carrot.memory``. For the methods that do not use the
    operator, ``observe=False`` skips computing the batch's class geometry for logging (the
    trainer observes at its logging steps only, so that a CE step costs what a plain loop's does).
    """
    method = cfg.method
    logits, z = out.logits, out.embedding
    if method in ("ce", "label_smoothing"):
        smoothing = cfg.train.label_smoothing if method == "label_smoothing" else 0.0
        ce = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        return LossResult(ce, {"ce": ce.detach()}, _observe(cfg, z, y) if observe else {})
    if method == "carrot":
        c = carrot_settings(cfg)
        loss, stats = carrot_ce_kl_loss(
            z,
            y,
            head,
            logits=logits,
            T=c.T,
            lam=c.lam if lam is None else lam,
            kl_direction=c.kl_direction,
            aux_ce_weight=c.aux_ce_weight,
            stop_grad_plus=c.stop_grad_plus,
            options=OperatorOptions.of(c),
            memory=memory,
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
            stats = _observe(cfg, z, y) if observe else {}
        else:
            c = carrot_settings(cfg)
            contrastive, stats = carrot_supcon_loss(
                z,
                y,
                temperature=s.temperature,
                gather_global=s.gather_global,
                stop_grad_plus=c.stop_grad_plus,
                options=OperatorOptions.of(c),
                memory=memory,
            )
        loss = contrastive + s.probe_weight * probe
        return LossResult(loss, {"supcon": contrastive.detach(), "probe_ce": probe.detach()}, stats)
    raise ValueError(
        f"method must be one of ce, label_smoothing, carrot, supcon, supcon_carrot, got {method!r}."
    )
