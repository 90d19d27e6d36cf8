"""carrot predict, carrot export and carrot.load_model on a trained ImageFolder run."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import carrot
from carrot.cli import main
from carrot.train import Trainer, load_config
from carrot.train.trained import load_trained

pytestmark = pytest.mark.slow
CLASSES = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def _noisy(path: Path, color: tuple[int, int, int], rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (30, 24), color)
    for _ in range(40):
        x, y = rng.randrange(30), rng.randrange(24)
        img.putpixel((x, y), tuple(rng.randrange(256) for _ in range(3)))
    img.save(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pets")
    rng = random.Random(0)
    for split, n in (("train", 8), ("test", 5)):
        for name, color in CLASSES.items():
            for i in range(n):
                _noisy(base / "pets" / split / name / f"{i}.png", color, rng)
    cfg = load_config(
        None,
        [
            "data.name=imagefolder",
            f"data.root={base / 'pets'}",
            "data.image_size=24",
            "train.batch_size=12",
            "train.epochs=2",
            "train.ema_decay=0.5",
            "train.device=cpu",
            "train.progress=false",
            "train.plots=false",
            "train.tensorboard=false",
            "model.embedding_dim=8",
            f"output_dir={base / 'run'}",
        ],
    )
    Trainer(cfg).fit()
    return base


def test_predict_top1_equals_eval_top1(run: Path, tmp_path: Path, capsys) -> None:
    ckpt = run / "run" / "checkpoints" / "last.pt"
    assert main(["eval", "--checkpoint", str(ckpt), "--json", str(tmp_path / "m.json")]) == 0
    eval_top1 = json.loads((tmp_path / "m.json").read_text())["model"]["top1"]
    out = tmp_path / "preds.csv"
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(run / "pets" / "test"), "--out", str(out)])
        == 0
    )
    assert f"15 images → {out}" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows) and len(rows) == 15
    assert list(rows[0]) == [
        "path",
        "label",
        "prob",
        "top2_label",
        "top2_prob",
        "top3_label",
        "top3_prob",
        "error",
    ]
    correct = sum(Path(r["path"]).parent.name == r["label"] for r in rows)
    assert 100.0 * correct / len(rows) == pytest.approx(eval_top1)
    for r in rows:
        probs = [float(r["prob"]), float(r["top2_prob"]), float(r["top3_prob"])]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
        assert {r["label"], r["top2_label"], r["top3_label"]} == set(CLASSES)


def test_predict_reports_unreadable_images_and_skips_hidden_folders(
    run: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "images"
    _noisy(folder / "a.png", CLASSES["dog"], random.Random(1))
    (folder / "b.jpg").write_bytes(b"not an image")
    (folder / "empty.png").write_bytes(b"")
    _noisy(folder / ".ipynb_checkpoints" / "a-checkpoint.png", CLASSES["dog"], random.Random(1))
    (folder / "notes.txt").write_text("not an image either")
    out = tmp_path / "p.csv"
    ckpt = run / "run" / "checkpoints" / "best.pt"
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(folder), "--out", str(out), "--top-k", "1"])
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg", "empty.png"]
    assert rows[0]["error"] == "" and rows[0]["label"] in CLASSES
    assert "cannot identify image file" in rows[1]["error"] and rows[1]["label"] == ""
    assert rows[2]["error"] and list(rows[0]) == ["path", "label", "prob", "error"]


def test_export_and_load_model_give_the_checkpoints_logits(run: Path, tmp_path: Path) -> None:
    ckpt = run / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--format", "all"]) == 0
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "backbone.safetensors",
        "config.json",
        "model.onnx",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["label_names"] == sorted(CLASSES) and config["num_classes"] == 3
    assert config["input_size"] == [3, 24, 24] and config["resize"] == "square"
    assert config["mean"] == [0.5, 0.5, 0.5] and config["interpolation"] == "bilinear"
    assert config["head"]["type"] == "cosine" and config["carrot_version"] == carrot.__version__
    x = torch.randn(4, 3, 24, 24)
    want = load_trained(ckpt).model(x)
    model = carrot.load_model(out)
    assert not model.training
    got = model(x)
    assert torch.equal(got.logits, want.logits) and torch.equal(got.embedding, want.embedding)
    # The fine-tuned backbone alone loads strictly into timm's own model.
    from safetensors.torch import load_file

    backbone = timm.create_model(config["architecture"], num_classes=0, **config["timm_kwargs"])
    backbone.load_state_dict(load_file(str(out / "backbone.safetensors")), strict=True)
    ema = load_trained(ckpt, ema=True).model(x).logits
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e"), "--ema"]) == 0
    assert torch.equal(carrot.load_model(tmp_path / "e")(x).logits, ema)


def test_export_refuses_bad_input_in_one_line(run: Path, tmp_path: Path, capsys) -> None:
    ckpt = run / "run" / "checkpoints" / "last.pt"
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("something")
    nameless = tmp_path / "nameless.pt"
    state = torch.load(ckpt, weights_only=True)
    state["classes"] = None
    torch.save(state, nameless)
    cases = [
        (["--checkpoint", str(ckpt), "--out", str(full)], "exists and is not empty; .* --force"),
        (
            ["--checkpoint", str(ckpt), "--out", str(tmp_path / "a"), "--format", "tflite"],
            "--format must be one of safetensors, onnx, all",
        ),
        (["--checkpoint", str(nameless), "--out", str(tmp_path / "b")], "records no class names"),
    ]
    import re

    for args, message in cases:
        capsys.readouterr()
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(full), "--force"]) == 0


def test_a_fixed_size_backbone_exports_with_its_img_size(tmp_path: Path) -> None:
    """A ViT trained at another size than its name's: config.json says how timm rebuilds it."""
    import types

    from safetensors.torch import load_file, save_file

    from carrot.export import config_json
    from carrot.train.model import build_model
    from carrot.train.trained import Trained

    cfg = load_config(None, ["model.backbone=test_vit", "data.image_size=64"])
    cfg.data = dataclasses.replace(cfg.data, mean=[0.5] * 3, std=[0.5] * 3)
    model = build_model(cfg.model, num_classes=3, image_size=64)
    traits = types.SimpleNamespace(photo=True, channels=3, flip_ok=True)
    trained = Trained(model, cfg, ["a", "b", "c"], 1, tmp_path / "x.pt", 3, False, traits)
    config = config_json(trained)
    assert config["timm_kwargs"] == {"img_size": 64} and config["input_size"] == [3, 64, 64]
    state = {k: v.contiguous() for k, v in model.backbone.state_dict().items()}
    save_file(state, str(tmp_path / "b.safetensors"))
    backbone = timm.create_model("test_vit", num_classes=0, **config["timm_kwargs"])
    backbone.load_state_dict(load_file(str(tmp_path / "b.safetensors")), strict=True)


def test_the_commands_as_a_user_runs_them(run: Path, tmp_path: Path) -> None:
    """The installed ``carrot`` command in a subprocess: --help, predict, export, and the
    one-line errors of export and convert (nothing written)."""
    exe = Path(sys.executable).parent / "carrot"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "carrot.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def carrot_(*args: object) -> subprocess.CompletedProcess[str]:
        argv = [*cmd, *map(str, args)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)

    for sub, option in (("predict", "--top-k"), ("export", "--format"), ("convert", "--trust")):
        shown = carrot_(sub, "--help")
        assert shown.returncode == 0 and f"usage: carrot {sub}" in shown.stdout
        assert option in shown.stdout
    ckpt = run / "run" / "checkpoints" / "last.pt"
    preds = tmp_path / "preds.csv"
    done = carrot_(
        "predict", "--checkpoint", ckpt, run / "pets" / "test", "--out", preds, "--top-k", 2
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 15 and list(rows[0]) == [
        "path", "label", "prob", "top2_label", "top2_prob", "error",
    ]  # fmt: skip
    assert {r["label"] for r in rows} <= set(CLASSES) and not any(r["error"] for r in rows)
    folder = tmp_path / "exported"
    done = carrot_("export", "--checkpoint", ckpt, "--out", folder)
    assert done.returncode == 0, done.stderr
    model = carrot.load_model(folder)
    assert model.carrot_config["label_names"] == sorted(CLASSES)
    again = carrot_("export", "--checkpoint", ckpt, "--out", folder)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "add --force" in again.stderr
    refused = carrot_("convert", ckpt, tmp_path / "new.pt")
    assert refused.returncode == 2 and "--trust" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "new.pt").exists()
