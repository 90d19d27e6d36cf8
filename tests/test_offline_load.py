"""Loading a local folder never goes to the network, nor to another file: ``carrot.load_model``
and ``timm.create_model("local-dir:DIR")`` (with carrot.hub) accept only plain registered
architecture names and no loading arguments in config.json (issue 32, item 4)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import timm
from safetensors.torch import save_model

import carrot
import carrot.hub  # registers carrot_fgvc with timm
from carrot.export import ExportError, _model_from_config
from carrot.hub import CarrotTimmModel

BAD_NAMES = [
    "hf-hub:evil/repo",
    "hf_hub:evil/repo",
    "timm/resnet18",
    "local-dir:/tmp/elsewhere",
    "resnet18/../x",
    "no_such_model_anywhere",
    "",
    42,
]


class NetworkUsed(Exception):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way to the hub fails loudly: a socket connection, huggingface_hub's downloads and
    timm's hub config loader."""
    import huggingface_hub
    import timm.models._factory as factory
    import timm.models._hub as hub

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NetworkUsed(f"network reached: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    for module in (factory, hub):
        if hasattr(module, "load_model_config_from_hf"):
            monkeypatch.setattr(module, "load_model_config_from_hf", refuse)
    if hasattr(hub, "hf_hub_download"):
        monkeypatch.setattr(hub, "hf_hub_download", refuse)


def _export(folder: Path, **changes: Any) -> Path:
    """A small, valid carrot export folder (carrot_cnn), then ``changes`` to its config.json."""
    config: dict[str, Any] = {
        "architecture": "carrot_cnn",
        "num_classes": 2,
        "label_names": ["a", "b"],
        "in_chans": 3,
        "input_size": [3, 16, 16],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "head": {"type": "cosine", "scale": 16.0, "learn_scale": False},
        "timm_kwargs": {"widths": [4, 8]},
    }
    folder.mkdir()
    save_model(_model_from_config(config), str(folder / "model.safetensors"))
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_plain_export_loads_without_the_network(tmp_path: Path) -> None:
    model = carrot.load_model(_export(tmp_path / "ok"))
    assert model.carrot_config["architecture"] == "carrot_cnn"


@pytest.mark.parametrize("name", BAD_NAMES)
def test_load_model_refuses_an_architecture_that_is_not_a_plain_name(
    tmp_path: Path, name: Any
) -> None:
    folder = _export(tmp_path / "x", architecture=name)
    with pytest.raises(ExportError, match="architecture must be a plain model name") as e:
        carrot.load_model(folder)
    assert "\n" not in str(e.value) and str(folder / "config.json") in str(e.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"widths": [4, 8], "checkpoint_path": "/etc/passwd"},
        {"widths": [4, 8], "pretrained_cfg_overlay": {"hf_hub_id": "evil/repo"}},
        {"widths": [4, 8], "pretrained_cfg": "evil"},
    ],
)
def test_load_model_refuses_timm_arguments_that_load(tmp_path: Path, kwargs: dict) -> None:
    folder = _export(tmp_path / "x", timm_kwargs=kwargs)
    with pytest.raises(ExportError, match="timm_kwargs must not set"):
        carrot.load_model(folder)


def _hf_folder(folder: Path, backbone: Any, backbone_args: dict[str, Any]) -> Path:
    """A local-dir: folder as carrot export --format hf writes it, with a chosen backbone."""
    model = CarrotTimmModel("carrot_cnn", num_classes=2, backbone_args={"widths": [4, 8]})
    folder.mkdir()
    save_model(model, str(folder / "model.safetensors"))
    config = {
        "architecture": "carrot_fgvc",
        "num_classes": 2,
        "num_features": model.num_features,
        "model_args": {
            "backbone": backbone,
            "in_chans": 3,
            "classifier": "cosine",
            "backbone_args": backbone_args,
        },
        "pretrained_cfg": {
            "input_size": [3, 16, 16],
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "num_classes": 2,
            "classifier": "head",
        },
        "label_names": ["a", "b"],
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_plain_hf_folder_loads_in_timm_without_the_network(tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "hf", "carrot_cnn", {"widths": [4, 8]})
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert model.num_classes == 2


@pytest.mark.parametrize("name", BAD_NAMES[:5])
def test_timm_local_dir_refuses_a_backbone_that_is_not_a_plain_name(
    tmp_path: Path, name: str
) -> None:
    folder = _hf_folder(tmp_path / "hf", name, {"widths": [4, 8]})
    with pytest.raises(ValueError, match="must be a plain model name"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)


def test_timm_local_dir_refuses_backbone_args_that_load(tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path / "hf", "carrot_cnn", {"checkpoint_path": "/etc/passwd"})
    with pytest.raises(ValueError, match="must not set checkpoint_path"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)
