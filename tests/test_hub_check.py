"""timm's ``local-dir:`` path (after ``import carrot.hub``) refuses what carrot.load_model
refuses: the same config check and the same weight check, with the file's own key names."""

from __future__ import annotations

import json
import shutil
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import carrot.hub  # noqa: F401  (registers carrot_fgvc with timm)
from carrot.export import ExportError
from carrot.hub import write_hf_folder
from carrot.train import load_config
from carrot.train.checkpoint import CheckpointError
from carrot.train.model import build_model
from carrot.train.trained import Trained


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hub")
    cfg = load_config(
        None,
        [
            "model.backbone=carrot_cnn",
            "data.image_size=24",
            "model.embedding_dim=6",
            "data.mean=[0.5, 0.5, 0.5]",
            "data.std=[0.5, 0.5, 0.5]",
            "data.interpolation=bilinear",
            "data.crop_pct=0.9",
        ],
    )
    model = build_model(cfg.model, num_classes=4, image_size=24).eval()
    traits = types.SimpleNamespace(photo=True, channels=3, flip_ok=True)
    trained = Trained(model, cfg, list("abcd"), 1, out / "x.pt", 3, False, traits)
    write_hf_folder(trained, out / "hf", {})
    return out / "hf"


def _variant(
    folder: Path,
    tmp_path: Path,
    config: Callable[[dict[str, Any]], Any] | None = None,
    weights: Callable[[dict[str, torch.Tensor]], Any] | None = None,
) -> Path:
    out = tmp_path / "variant"
    shutil.copytree(folder, out)
    if config is not None:
        data = json.loads((out / "config.json").read_text())
        config(data)
        (out / "config.json").write_text(json.dumps(data))
    if weights is not None:
        state = load_file(out / "model.safetensors")
        weights(state)
        save_file(state, out / "model.safetensors")
    return out


def test_a_good_folder_loads_and_can_be_fine_tuned(folder: Path) -> None:
    assert timm.create_model(f"local-dir:{folder}", pretrained=True).num_classes == 4
    assert timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=7).num_classes == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(num_classes=-1), "num_classes must be an integer >= 1, got -1"),
        (lambda c: c.update(label_names=["a", "b"]), "label_names must be a list of num_classes = 4"),
        (lambda c: c["pretrained_cfg"].update(std=[0, 0.5, 0.5]), "pretrained_cfg.std must be a list of numbers > 0"),
        (lambda c: c["pretrained_cfg"].update(mean=[float("nan"), 0.5, 0.5]), "pretrained_cfg.mean must be a list of finite"),
        (lambda c: c["pretrained_cfg"].update(mean=[0.5]), "pretrained_cfg.mean must be a list of in_chans = 3"),
        (lambda c: c["pretrained_cfg"].update(crop_pct=2.0), "pretrained_cfg.crop_pct must be a number in"),
        (lambda c: c["pretrained_cfg"].update(crop_mode="border"), "pretrained_cfg.crop_mode must be"),
        (lambda c: c["pretrained_cfg"].update(interpolation="lanczos"), "pretrained_cfg.interpolation must be"),
        (lambda c: c["model_args"].update(cosine_scale=float("inf")), "model_args.cosine_scale must be"),
        (lambda c: c["model_args"].update(classifier="mlp"), "model_args.classifier must be"),
        (lambda c: c["model_args"].update(embedding_dim=0), "model_args.embedding_dim must be"),
    ],
)  # fmt: skip
def test_a_bad_config_is_refused_as_load_model_refuses_it(
    folder: Path, tmp_path: Path, change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    bad = _variant(folder, tmp_path, config=change)
    with pytest.raises(ExportError, match=rf"variant/config.json: {message}"):
        timm.create_model(f"local-dir:{bad}", pretrained=True)


@pytest.mark.parametrize(("key", "value"), [("head.weight", float("nan")), ("backbone.features.0.weight", float("inf"))])  # fmt: skip
def test_non_finite_weights_are_refused(
    folder: Path, tmp_path: Path, key: str, value: float
) -> None:
    bad = _variant(folder, tmp_path, weights=lambda s: s[key].view(-1)[:1].fill_(value))
    with pytest.raises(CheckpointError, match=rf"the weights in .*variant hold NaN or inf .*{key}"):
        timm.create_model(f"local-dir:{bad}", pretrained=True)


def test_the_same_check_as_load_model(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One validation: the hub path calls carrot.export.check_export_config itself."""
    import carrot.export

    seen: list[Path] = []
    real = carrot.export.check_export_config

    def spy(config: Any, file: Path, **kwargs: Any) -> dict[str, Any]:
        seen.append(file)
        return real(config, file, **kwargs)

    monkeypatch.setattr(carrot.export, "check_export_config", spy)
    timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert seen == [folder / "config.json"]


@pytest.mark.parametrize("text", ['{"a": ' * 100_000 + "1" + "}" * 100_000, '{"a": 1,'])
def test_load_model_reads_a_deep_or_broken_config_json_in_one_line(
    tmp_path: Path, text: str
) -> None:
    """A 100,000-level nested config.json was a RecursionError, not a message."""
    import carrot

    (tmp_path / "config.json").write_text(text)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ExportError, match=r"config.json is not valid JSON"):
        carrot.load_model(tmp_path)
