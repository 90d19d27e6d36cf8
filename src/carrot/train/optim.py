"""Optimizer, learning-rate schedule and weight EMA of the trainer, built with timm's helpers."""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch import nn

from carrot.train.config import Config, ConfigError

__all__ = ["build_ema", "build_optimizer", "learning_rate", "param_groups"]


def _no_weight_decay(backbone: nn.Module) -> set[str]:
    """The backbone's own list of parameters that take no weight decay (pos_embed, cls_token...)."""
    names = getattr(backbone, "no_weight_decay", None)
    return set(names()) if callable(names) else set()


def param_groups(model: nn.Module, cfg: Config) -> list[dict[str, Any]]:
    """Parameter groups with ``weight_decay`` and ``lr_mult`` (the lr multiplier):

    - no weight decay on norms, biases, 0/1-d tensors and the backbone's ``no_weight_decay()``
      list (timm's ``param_groups_weight_decay``);
    - the backbone's lr × ``train.backbone_lr_mult``, and with ``train.layer_decay`` its block i
      of L also × layer_decay^(L - i) (timm's ``param_groups_layer_decay``, via the model's
      ``group_matcher``);
    - the projection and classifier at the full lr.
    """
    t = cfg.train
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    skip = _no_weight_decay(backbone)
    if t.layer_decay is not None:
        if not hasattr(backbone, "group_matcher"):
            raise ConfigError(
                f"train.layer_decay needs a backbone with timm's group_matcher (ViT, Swin, "
                f"ConvNeXt...); {cfg.model.backbone} has none. Set train.layer_decay=null."
            )
        groups = param_groups_layer_decay(
            backbone,
            weight_decay=t.weight_decay,
            no_weight_decay_list=sorted(skip),
            layer_decay=t.layer_decay,
        )
    else:
        groups = param_groups_weight_decay(
            backbone, weight_decay=t.weight_decay, no_weight_decay_list=sorted(skip)
        )
    # The classifier's groups first, as checkpoints of carrot 0.1 have them.
    head = nn.ModuleDict({"projection": model.projection, "head": model.head})  # type: ignore[dict-item]
    out = [
        {**group, "lr_mult": 1.0}
        for group in param_groups_weight_decay(head, weight_decay=t.weight_decay)
    ]
    for group in groups:
        scale = float(group.pop("lr_scale", 1.0))
        out.append({**group, "lr_mult": t.backbone_lr_mult * scale})
    return [g for g in out if g["params"]]


def build_optimizer(
    model: nn.Module, cfg: Config, *, extra: list[dict[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """SGD or AdamW over :func:`param_groups` and ``extra`` groups (a method's own parameters,
    after the model's, so that the model's groups keep their indices in checkpoints)."""
    groups = param_groups(model, cfg) + list(extra or [])
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.train.lr, momentum=cfg.train.momentum, nesterov=cfg.train.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=cfg.train.lr)


def learning_rate(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from 0, then cosine decay to ``min_lr`` at the last step (or constant)."""
    t = cfg.train
    total = t.epochs * steps_per_epoch
    warmup = round(t.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return t.lr * (step + 1) / warmup
    if t.schedule == "constant":
        return t.lr
    progress = (step - warmup) / max(1, total - warmup)
    return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_ema(model: nn.Module, decay: float) -> ModelEmaV3:
    """timm's EMA of the weights and buffers; its whole state is ``.module``'s state dict, so a
    resumed run continues it exactly."""
    ema = ModelEmaV3(model, decay=decay)
    for p in ema.module.parameters():
        p.requires_grad_(False)
    return ema
