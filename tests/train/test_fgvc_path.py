"""The real FGVC path, at CPU scale: pretrained timm backbones at 448 px through timm's loader,
preprocessing from the backbone's pretrained config, compile, timm's param groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import yaml
from PIL import Image
from timm.layers import resample_abs_pos_embed
from torch.testing import assert_close

from carrot.train import Trainer, load_config
from carrot.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def _birds(root: Path) -> Path:
    colors = {"heron": (200, 60, 60), "wren": (60, 200, 60)}
    for split, n in (("train", 4), ("test", 2)):
        for name, color in colors.items():
            for i in range(n):
                path = root / split / name / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (60 + 10 * i, 50), color).save(path)
    return root


def _args(root: Path, out: Path, backbone: str, weights: Path) -> list[str]:
    return [
        "data.name=imagefolder",
        f"data.root={root}",
        "data.image_size=448",
        f"model.backbone={backbone}",
        "model.pretrained=true",
        f"model.pretrained_path={weights}",
        "train.batch_size=4",
        "train.k=2",
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "train.eval_batch_size=4",
        "train.device=cpu",
        "train.progress=false",
        "train.plots=false",
        "train.tensorboard=false",
        f"output_dir={out}",
    ]


def test_a_vit_pretrained_at_224_trains_at_448(tmp_path: Path) -> None:
    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
    weights = tmp_path / "vit_tiny_224.pth"
    torch.save(source.state_dict(), weights)  # with its 1000-class head, as published
    cfg = load_config(
        None, _args(_birds(tmp_path / "birds"), tmp_path / "run", "vit_tiny_patch16_224", weights)
    )
    trainer = Trainer(cfg)
    backbone = trainer.model.backbone
    # timm's loader resampled the 14×14 position grid to 28×28 (plus the class token).
    assert backbone.pos_embed.shape == (1, 1 + 28 * 28, 192)
    want = resample_abs_pos_embed(source.pos_embed.detach(), new_size=(28, 28), num_prefix_tokens=1)
    assert_close(backbone.pos_embed.detach(), want)
    assert torch.equal(
        backbone.blocks[0].attn.qkv.weight.detach(), source.blocks[0].attn.qkv.weight.detach()
    )
    trainer.fit()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert saved["mean"] == [0.5, 0.5, 0.5] and saved["std"] == [0.5, 0.5, 0.5]
    assert saved["interpolation"] == "bicubic" and saved["crop_pct"] == 0.9
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["state"]["step"] == 2 and ckpt["model"]["backbone.pos_embed"].shape[1] == 785


def test_a_resnet_at_448_uses_imagenet_statistics(tmp_path: Path) -> None:
    weights = tmp_path / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(weights))
    cfg = load_config(
        None, _args(_birds(tmp_path / "birds"), tmp_path / "run", "resnet18", weights)
    )
    Trainer(cfg).fit()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert saved["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert saved["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert saved["interpolation"] == "bicubic" and saved["crop_pct"] == 0.95
    # A resume takes every weight from its checkpoint: the pretrained file is not read again.
    weights.unlink()
    summary = Trainer.resume(tmp_path / "run", ["train.epochs=2"]).fit()
    assert summary["epochs"] == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["state"]["step"] == 4


def test_config_values_override_the_backbones(tmp_path: Path) -> None:
    weights = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), weights)
    args = _args(_birds(tmp_path / "birds"), tmp_path / "run", "vit_tiny_patch16_224", weights)
    cfg = load_config(None, [*args, "data.mean=[0.4, 0.4, 0.4]", "data.interpolation=bilinear"])
    trainer = Trainer(cfg)
    assert trainer.cfg.data.mean == [0.4, 0.4, 0.4] and trainer.cfg.data.std == [0.5, 0.5, 0.5]
    assert trainer.cfg.data.interpolation == "bilinear" and trainer.cfg.data.crop_pct == 0.9
    trainer.rt.teardown()


def test_compiled_training_equals_eager(tiny, tmp_path: Path) -> None:
    base = [
        *tiny,
        "train.epochs=1",
        "train.max_steps_per_epoch=3",
        "train.retrieval=false",
        "carrot.sync_free=true",
    ]
    Trainer(load_config(None, [*base, f"output_dir={tmp_path / 'eager'}"])).fit()
    Trainer(
        load_config(None, [*base, "train.compile=true", f"output_dir={tmp_path / 'compiled'}"])
    ).fit()
    a = load_checkpoint(tmp_path / "eager" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")
    for key, value in a["model"].items():
        if value.is_floating_point():
            assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    ha, hb = a["history"][0], b["history"][0]
    assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4)
    assert hb["gamma_mean"] == pytest.approx(ha["gamma_mean"], rel=1e-4)


def test_a_carrot_backbone_keeps_the_preprocessing_it_was_trained_with(
    tiny, tmp_path: Path
) -> None:
    from carrot.cli import main

    base = [a for a in tiny if not a.startswith("output_dir=")] + [
        "train.epochs=1",
        "train.retrieval=false",
    ]
    Trainer(load_config(None, [*base, f"output_dir={tmp_path / 'pre'}"])).fit()
    ckpt = tmp_path / "pre" / "checkpoints" / "last.pt"
    pre = yaml.safe_load((tmp_path / "pre" / "config.yaml").read_text())["data"]
    assert pre["std"] == [0.25, 0.25, 0.25]  # the synthetic set's own statistics
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    for i, weights in enumerate((ckpt, tmp_path / "exp" / "backbone.safetensors")):
        out = tmp_path / f"fine{i}"
        cfg = load_config(
            None,
            [
                *base,
                "model.pretrained=true",
                f"model.pretrained_path={weights}",
                f"output_dir={out}",
            ],
        )
        trainer = Trainer(cfg)
        assert trainer.cfg.data.mean == pre["mean"] and trainer.cfg.data.std == pre["std"]
        assert torch.equal(
            trainer.model.backbone.features[0].weight,
            load_checkpoint(ckpt)["model"]["backbone.features.0.weight"],
        )
        trainer.rt.teardown()
