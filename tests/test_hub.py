"""carrot export --format hf: a folder timm loads from local-dir: with carrot's logits, its
preprocessing and class names in timm's pretrained config, and a model card that parses."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import carrot
import carrot.hub  # registers carrot_fgvc with timm
from carrot.cli import main
from carrot.train import Trainer, load_config
from carrot.train.data import build_transforms
from carrot.train.trained import load_trained

pytestmark = pytest.mark.slow
COLORS = {"gull": (220, 220, 220), "tern": (60, 60, 60), "wren": (150, 90, 30)}


def _images(root: Path) -> None:
    rng = random.Random(0)
    for split, n in (("train", 4), ("test", 2)):
        for name, color in COLORS.items():
            for i in range(n):
                img = Image.new("RGB", (26, 20), color)
                for _ in range(30):
                    img.putpixel((rng.randrange(26), rng.randrange(20)), (0, 0, 255))
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                img.save(path)


@pytest.mark.parametrize(
    ("backbone", "extra"),
    [
        ("carrot_cnn", ["model.embedding_dim=8", "model.learn_scale=true"]),
        ("test_resnet", ["model.classifier=linear"]),
    ],
)
def test_hf_export_loads_in_timm_with_the_same_logits(
    tmp_path: Path, backbone: str, extra: list[str]
) -> None:
    _images(tmp_path / "birds")
    cfg = load_config(
        None,
        [
            "data.name=imagefolder",
            f"data.root={tmp_path / 'birds'}",
            "data.image_size=24",
            "train.batch_size=6",
            "train.k=2",
            "train.epochs=1",
            "train.device=cpu",
            "train.progress=false",
            "train.plots=false",
            "train.loggers=[]",
            f"model.backbone={backbone}",
            *extra,
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    Trainer(cfg).fit()
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    hf, plain = tmp_path / "hf", tmp_path / "plain"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(hf), "--format", "hf"]) == 0
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(plain)]) == 0
    assert {p.name for p in hf.iterdir()} == {"config.json", "model.safetensors", "README.md"}

    model = timm.create_model(f"local-dir:{hf}", pretrained=True).eval()
    x = torch.randn(3, 3, 24, 24)
    want = carrot.load_model(plain)(x)
    with torch.no_grad():
        logits = model(x)
        z = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(logits, want.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(z, want.embedding, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, load_trained(ckpt).model(x).logits, rtol=0, atol=1e-6)

    pcfg = model.pretrained_cfg
    assert pcfg["label_names"] == sorted(COLORS) and model.num_classes == 3
    data = timm.data.resolve_data_config({}, model=model)
    trained = load_trained(ckpt)
    d = trained.cfg.data
    assert data["input_size"] == (3, 24, 24) and data["interpolation"] == d.interpolation
    assert data["mean"] == pytest.approx(d.mean) and data["std"] == pytest.approx(d.std)
    # timm's eval transform from the folder's config gives carrot's test pipeline's tensor
    img = Image.open(tmp_path / "birds" / "test" / "gull" / "0.png").convert("RGB")
    ours = build_transforms(trained.cfg, trained.dataset_traits, train=False)(img)
    theirs = timm.data.create_transform(**data)(img)
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, rtol=0, atol=0.05)

    from huggingface_hub import ModelCard

    card = ModelCard.load(hf / "README.md")
    assert card.data.library_name == "timm" and card.data.datasets == ["imagefolder"]
    assert "carrot" in card.data.tags and "hf upload" in card.text
    top1 = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]["top1"]
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results["top-1 accuracy (%)"] == pytest.approx(top1, abs=1e-3)

    # fine-tuning from the folder: timm drops the head for another class count
    five = timm.create_model(f"local-dir:{hf}", pretrained=True, num_classes=5)
    assert five(x).shape == (3, 5)


def test_export_format_names_hf(tmp_path: Path, capsys) -> None:
    assert main(["export", "--checkpoint", "x.pt", "--out", str(tmp_path), "--format", "tf"]) == 2
    assert "--format must be one of safetensors, onnx, all, hf" in capsys.readouterr().err


def test_a_fixed_size_backbone_loads_from_its_hf_folder(tmp_path: Path) -> None:
    """A ViT trained at another size than its name's: timm rebuilds it at that size."""
    import types

    from carrot.hub import write_hf_folder
    from carrot.train.model import build_model
    from carrot.train.trained import Trained

    cfg = load_config(
        None, ["model.backbone=test_vit", "data.image_size=64", "model.embedding_dim=6"]
    )
    cfg.data = dataclasses.replace(
        cfg.data, mean=[0.5] * 3, std=[0.5] * 3, interpolation="bicubic", crop_pct=0.9
    )
    model = build_model(cfg.model, num_classes=4, image_size=64).eval()
    traits = types.SimpleNamespace(photo=True, channels=3, flip_ok=True)
    trained = Trained(model, cfg, list("abcd"), 1, tmp_path / "x.pt", 3, False, traits)
    write_hf_folder(trained, tmp_path / "hf", {})
    loaded = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x).logits, rtol=0, atol=1e-6)
    data = timm.data.resolve_data_config({}, model=loaded)
    assert data["input_size"] == (3, 64, 64) and data["crop_pct"] == 0.9
    assert data["interpolation"] == "bicubic"
