"""The trainer's model: a timm backbone, an optional projection and a classifier on ẑ = z / ||z||.

``FGVCModel.forward(x)`` returns the logits and the raw embedding, so that DDP covers the whole model
in one forward call; the CARROT losses call ``model.head`` once more on the expanded embedding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import Tensor, nn

from carrot.train.config import ModelConfig

__all__ = ["CosineClassifier", "FGVCModel", "ModelOutput", "SmallCNN", "build_model"]


class SmallCNN(nn.Module):
    """A small VGG-style CNN for the built-in low-resolution data (digits, Fashion-MNIST, synthetic).

    Registered in timm as ``carrot_cnn`` with timm's backbone interface (``forward_features``,
    ``forward_head(pre_logits=True)``, ``num_features``), so the trainer treats it like any timm model.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 128),
        drop_rate: float = 0.0,
        **_: Any,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_chans
        for i, c_out in enumerate(widths):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop_rate = drop_rate
        self.num_classes = num_classes
        self.fc: nn.Module = (
            nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        )
        self.pretrained_cfg = self.default_cfg = {
            "input_size": (in_chans, 32, 32),
            "mean": (0.5,) * in_chans,
            "std": (0.5,) * in_chans,
        }

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


@register_model
def carrot_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """timm entry point of :class:`SmallCNN` (no pretrained weights exist)."""
    if pretrained:
        raise ValueError(
            "model.pretrained must be false for carrot_cnn: it has no pretrained weights."
        )
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return SmallCNN(**kwargs)


class CosineClassifier(nn.Module):
    """logits = s · cos(x, w_c); ``s`` fixed or learned (kept positive through its log)."""

    def __init__(
        self, in_features: int, num_classes: int, *, scale: float, learn_scale: bool
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_features))
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, x: Tensor) -> Tensor:
        w = F.normalize(self.weight, dim=1)
        return self.log_scale.exp() * F.normalize(x, dim=1) @ w.T.to(x.dtype)


class ModelOutput(NamedTuple):
    logits: Tensor
    """Classifier logits of ẑ. Shape: (B, N)."""
    embedding: Tensor
    """Raw (un-normalized) embedding z. Shape: (B, D)."""


class FGVCModel(nn.Module):
    """Backbone → pooled features → optional projection → z; ``head`` reads ẑ = z / ||z||."""

    def __init__(self, backbone: nn.Module, head: nn.Module, projection: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection if projection is not None else nn.Identity()
        self.head = head

    def embed(self, x: Tensor) -> Tensor:
        feats = self.backbone.forward_features(x)  # type: ignore[operator]
        return self.projection(self.backbone.forward_head(feats, pre_logits=True))  # type: ignore[operator]

    def classify(self, z: Tensor) -> Tensor:
        """Logits of the normalized embedding."""
        return self.head(F.normalize(z.float(), dim=1).to(z.dtype))

    def forward(self, x: Tensor) -> ModelOutput:
        z = self.embed(x)
        return ModelOutput(self.classify(z), z)


def _load_local_weights(backbone: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained_path {path} does not exist.")
    state: Any
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
                break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    classifier_keys = {
        k for k in unexpected if k.split(".")[0] in ("fc", "head", "classifier", "last_linear")
    }
    if set(unexpected) - classifier_keys or len(missing) > 0:
        raise ValueError(
            f"weights in {path} do not fit the backbone: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(set(unexpected) - classifier_keys)[:5]}; check model.backbone."
        )


def build_model(cfg: ModelConfig, *, num_classes: int, in_chans: int = 3) -> FGVCModel:
    """The model of a config. Pretrained weights come from ``pretrained_path`` (offline) or timm's
    cache/hub; with no network and no cached file timm's download fails with its own message."""
    backbone_kwargs: dict[str, Any] = {
        **cfg.timm_kwargs,
        "num_classes": 0,
        "in_chans": in_chans,
        "drop_rate": cfg.drop_rate,
    }
    if cfg.drop_path_rate:
        backbone_kwargs["drop_path_rate"] = cfg.drop_path_rate
    if not timm.is_model(cfg.backbone):
        close = timm.list_models(f"*{cfg.backbone.split('_')[0]}*")[:8]
        raise ValueError(
            f"model.backbone must be a timm model name, got {cfg.backbone!r}"
            + (f"; similar names: {', '.join(close)}." if close else ".")
        )
    from_hub = cfg.pretrained and cfg.pretrained_path is None
    try:
        backbone = timm.create_model(cfg.backbone, pretrained=from_hub, **backbone_kwargs)
    except Exception as e:
        if not from_hub:
            raise
        raise RuntimeError(
            f"could not load timm's pretrained weights for {cfg.backbone!r} ({type(e).__name__}: {e}). "
            "Without network access, download the weights on another machine and set "
            "model.pretrained_path to the file, or place them in the Hugging Face cache."
        ) from e
    if cfg.pretrained and cfg.pretrained_path is not None:
        _load_local_weights(backbone, Path(cfg.pretrained_path).expanduser())
    features = int(getattr(backbone, "num_features"))  # noqa: B009
    projection = None
    dim = features
    if cfg.embedding_dim is not None:
        projection = nn.Linear(features, cfg.embedding_dim)
        dim = cfg.embedding_dim
    head: nn.Module
    if cfg.classifier == "cosine":
        head = CosineClassifier(
            dim, num_classes, scale=cfg.cosine_scale, learn_scale=cfg.learn_scale
        )
    else:
        head = nn.Linear(dim, num_classes)
    return FGVCModel(backbone, head, projection)
