"""carrot.train.optim: the optimizer's parameter groups (weight decay, layer decay)."""

from __future__ import annotations

import pytest
import torch

from carrot.train.config import Config, ConfigError, apply_overrides
from carrot.train.model import build_model
from carrot.train.optim import param_groups


def _cfg(*overrides: str) -> Config:
    return apply_overrides(Config(), list(overrides))


# --- optimizer groups ----------------------------------------------------------------------------


def _group_of(groups: list[dict], param: torch.Tensor) -> dict:
    return next(g for g in groups if any(p is param for p in g["params"]))


def test_no_weight_decay_on_norms_biases_and_the_models_own_list() -> None:
    cfg = _cfg("model.backbone=test_vit", "train.weight_decay=0.05", "train.backbone_lr_mult=0.1")
    model = build_model(cfg.model, num_classes=4, image_size=32)
    groups = param_groups(model, cfg)
    vit = model.backbone
    assert {"pos_embed", "cls_token"} <= set(vit.no_weight_decay())
    for p in (vit.pos_embed, vit.cls_token, vit.norm.weight, vit.blocks[0].attn.qkv.bias):
        assert _group_of(groups, p)["weight_decay"] == 0.0
    assert _group_of(groups, vit.blocks[0].attn.qkv.weight)["weight_decay"] == 0.05
    assert _group_of(groups, vit.blocks[0].attn.qkv.weight)["lr_mult"] == pytest.approx(0.1)
    assert _group_of(groups, model.head.weight)["lr_mult"] == 1.0
    assert _group_of(groups, model.head.weight)["weight_decay"] == 0.05
    assert groups[0]["lr_mult"] == 1.0  # the classifier's groups come first
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_layer_decay_scales_the_lr_of_earlier_blocks() -> None:
    cfg = _cfg("model.backbone=test_vit", "train.layer_decay=0.5", "train.backbone_lr_mult=0.2")
    model = build_model(cfg.model, num_classes=4, image_size=32)
    groups = param_groups(model, cfg)
    vit = model.backbone
    depth = len(vit.blocks)
    first = _group_of(groups, vit.blocks[0].attn.qkv.weight)["lr_mult"]
    last = _group_of(groups, vit.blocks[-1].attn.qkv.weight)["lr_mult"]
    assert last / first == pytest.approx(0.5 ** -(depth - 1))
    assert _group_of(groups, vit.patch_embed.proj.weight)["lr_mult"] < first
    assert _group_of(groups, model.head.weight)["lr_mult"] == 1.0
    with pytest.raises(
        ConfigError, match="train.layer_decay needs a backbone with timm's group_matcher"
    ):
        param_groups(build_model(_cfg().model, num_classes=4), _cfg("train.layer_decay=0.5"))
