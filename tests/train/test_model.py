"""The trainer's model: timm backbones, carrot_cnn, classifiers, offline pretrained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot.train.config import ModelConfig
from carrot.train.model import CosineClassifier, build_model
from cli_run import QUICK, carrot_cli, one_line_error


def test_carrot_cnn_is_a_timm_model_with_the_backbone_interface() -> None:
    assert timm.is_model("carrot_cnn")
    m = timm.create_model("carrot_cnn", num_classes=0, in_chans=1)
    x = torch.randn(2, 1, 32, 32)
    feats = m.forward_features(x)
    assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
    with pytest.raises(RuntimeError, match="No pretrained weights exist for carrot_cnn"):
        timm.create_model("carrot_cnn", pretrained=True)


@pytest.mark.parametrize("classifier", ["cosine", "linear"])
def test_forward_returns_logits_of_the_normalized_embedding(classifier: str) -> None:
    model = build_model(
        ModelConfig(classifier=classifier, embedding_dim=12), num_classes=5, in_chans=3
    ).eval()
    x = torch.randn(3, 3, 16, 16)
    out = model(x)
    assert out.logits.shape == (3, 5) and out.embedding.shape == (3, 12)
    assert_close(out.logits, model.head(F.normalize(out.embedding, dim=1)))
    # Scaling the embedding does not change the logits: the head reads ẑ.
    assert_close(model.classify(out.embedding * 7.0), out.logits)


def test_cosine_classifier_is_scaled_cosine() -> None:
    head = CosineClassifier(4, 3, scale=10.0, learn_scale=True)
    x = torch.randn(5, 4)
    want = 10.0 * F.normalize(x, dim=1) @ F.normalize(head.weight, dim=1).T
    assert_close(head(x), want)
    assert head.log_scale.requires_grad
    assert not CosineClassifier(4, 3, scale=10.0, learn_scale=False).log_scale.requires_grad


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_from_a_local_file(tmp_path: Path, suffix: str) -> None:
    source = timm.create_model("test_resnet", num_classes=0)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = build_model(
        ModelConfig(backbone="test_resnet", pretrained=True, pretrained_path=str(path)),
        num_classes=4,
    )
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_pretrained_file_that_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("test_vit", num_classes=0).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit model.backbone=test_resnet: .* missing"):
        build_model(
            ModelConfig(backbone="test_resnet", pretrained=True, pretrained_path=str(path)),
            num_classes=4,
        )
    with pytest.raises(FileNotFoundError, match="model.pretrained_path .* does not exist"):
        build_model(
            ModelConfig(
                backbone="test_resnet", pretrained=True, pretrained_path=str(tmp_path / "none.pth")
            ),
            num_classes=4,
        )


def test_hub_weights_offline_give_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    with pytest.raises(RuntimeError, match="set model.pretrained_path"):
        build_model(ModelConfig(backbone="test_resnet", pretrained=True), num_classes=4)
    # A hub name, from the command line: one line, exit code 2 (in this process: the hub's
    # constants are patched above; the end-to-end one-line contract of train has its own tests).
    from cli_run import carrot_main, one_line_error

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    done = carrot_main(
        capsys, "train", "model.backbone=timm/vit_tiny_patch16_224.augreg_in21k",
        "model.pretrained=true", "data.image_size=32", "train.device=cpu",
        f"output_dir={tmp_path / 'run'}",
    )  # fmt: skip
    one_line_error(done, "set model.pretrained_path")


def test_unknown_backbone() -> None:
    with pytest.raises(
        ValueError, match="model.backbone must be a timm model name, got 'resnet5O'"
    ):
        build_model(ModelConfig(backbone="resnet5O"), num_classes=4)


def test_timm_kwargs_reach_timm() -> None:
    model = build_model(
        ModelConfig(backbone="test_vit", timm_kwargs={"img_size": 64}), num_classes=3
    )
    assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1, 3)


def test_hub_names_of_timm_weights_work_offline_with_a_local_file(tmp_path: Path) -> None:
    from carrot.train.model import timm_name

    path = tmp_path / "vit.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0).state_dict(), path)
    for name in (
        "timm/vit_tiny_patch16_224.augreg_in21k",
        "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k",
    ):
        assert timm_name(name) == "vit_tiny_patch16_224.augreg_in21k"
        model = build_model(
            ModelConfig(backbone=name, pretrained=True, pretrained_path=str(path)),
            num_classes=3,
            image_size=64,
        )
        assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1, 3)  # img_size set, resampled
    with pytest.raises(ValueError, match="model.pretrained_path needs an architecture timm knows"):
        build_model(
            ModelConfig(
                backbone="hf-hub:someone/custom", pretrained=True, pretrained_path=str(path)
            ),
            num_classes=3,
        )


@pytest.mark.slow
def test_pretrained_path_without_pretrained_is_refused(probe_run: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(1)}, weights)
    out = tmp_path / "r"
    done = carrot_cli(
        "train", *QUICK, f"data.root={probe_run / 'pets'}", f"model.pretrained_path={weights}",
        f"output_dir={out}",
    )  # fmt: skip
    one_line_error(done, "model.pretrained_path is set", "model.pretrained=true")
    assert not out.exists()
