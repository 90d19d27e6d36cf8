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
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from carrot.train.config import ModelConfig
from carrot.train.weights import (
    _mismatch,
    _read_file,
    _unwrap,
    backbone_state,
    read_weights,
    weights_preprocessing,
)

__all__ = [
    "CosineClassifier",
    "FGVCModel",
    "ModelOutput",
    "PretrainedWeightsError",
    "SmallCNN",
    "backbone_state",
    "build_model",
    "checked_timm_name",
    "create_backbone",
    "fixed_input_size",
    "read_weights",
    "timm_name",
    "weights_preprocessing",
]


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


# timm's registry reads a model's pretrained config from its module's ``default_cfgs``. carrot_cnn
# has no published weights; a local file comes in through pretrained_cfg_overlay, as for any model.
default_cfgs = generate_default_cfgs(
    {
        "carrot_cnn": {
            "input_size": (3, 32, 32),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bilinear",
            "crop_pct": 0.875,
            "num_classes": 1000,
            "first_conv": "features.0",
            "classifier": "fc",
        }
    }
)


@register_model
def carrot_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """timm entry point of :class:`SmallCNN` (weights only from a local file)."""
    kwargs.pop("cache_dir", None)
    model: SmallCNN = build_model_with_cfg(SmallCNN, "carrot_cnn", pretrained, **kwargs)
    return model


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


class PretrainedWeightsError(RuntimeError):
    """timm's pretrained weights could not be fetched (offline, no cache): the message names
    model.pretrained_path as the offline route."""


def timm_name(name: str) -> str:
    """timm's spelling of a model name. A hub name of timm's own weights (``timm/<name>``, as
    the hub shows it, or ``hf-hub:timm/<name>``) becomes the registry name ``<name>`` when timm
    knows it: the same weights (timm fetches them from that repo), and its pretrained config is
    known offline (input size, classifier, preprocessing). Other repos stay ``hf-hub:<repo>``."""
    for prefix in ("hf-hub:", "hf_hub:"):
        if name.startswith(prefix):
            name = name.removeprefix(prefix)
            break
    else:
        if not name.startswith("timm/"):
            return name
    if name.startswith("timm/") and timm.is_model(name.removeprefix("timm/")):
        return name.removeprefix("timm/")
    return "hf-hub:" + name


def fixed_input_size(name: str) -> bool:
    """Whether the architecture is built for one input size (ViT, DeiT, EVA, Swin...): such a
    model takes ``img_size``, and timm resamples its position embeddings when loading weights."""
    if name.startswith("hf-hub:"):
        return False  # its pretrained config lives on the hub
    cfg = timm.models.get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


def checked_timm_name(backbone: str, key: str = "model.backbone") -> str:
    """:func:`timm_name` of ``backbone``; a one-line ``ValueError`` naming ``key`` (and timm's
    similar names) when timm has no such model. Hub names are not checked offline."""
    name = timm_name(backbone)
    if not name.startswith("hf-hub:") and not timm.is_model(name):
        close = timm.list_models(f"*{backbone.split('_')[0]}*")[:8]
        raise ValueError(
            f"{key} must be a timm model name, got {backbone!r}"
            + (f"; similar names: {', '.join(close)}." if close else ".")
        )
    return name


def create_backbone(
    cfg: ModelConfig, *, in_chans: int = 3, image_size: int | None = None
) -> nn.Module:
    """The timm backbone of a config, without its classifier (``num_classes=0``).

    Models built for a fixed input size get ``img_size=image_size``. Weights come through timm's
    own loader, so its checkpoint filters apply (position embeddings resampled to the new grid,
    input channels adapted): from ``model.pretrained_path`` (read safely, then passed to timm as
    ``pretrained_cfg_overlay``), else from timm's hub cache. Every key must fit: a file for
    another architecture, or with missing or unexpected keys, is refused, naming them.
    """
    name = checked_timm_name(cfg.backbone)
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans, "drop_rate": cfg.drop_rate}
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if image_size is not None and fixed_input_size(name):
        kwargs["img_size"] = image_size
    kwargs.update(cfg.timm_kwargs)
    if not cfg.pretrained and cfg.pretrained_path is not None:
        raise ValueError(
            f"model.pretrained_path is set ({cfg.pretrained_path}) but model.pretrained is false, "
            "so the file would not be read: set model.pretrained=true to start from it, or "
            "model.pretrained_path=null to train from scratch."
        )
    if not cfg.pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if cfg.pretrained_path is None:
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:
            raise PretrainedWeightsError(
                f"could not load timm's pretrained weights for {cfg.backbone!r} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Without network "
                "access, download the weights on another machine and set model.pretrained_path "
                "to the file (.safetensors, .pth or .bin), or place them in the Hugging Face cache."
            ) from e
    path = Path(cfg.pretrained_path).expanduser()
    if name.startswith("hf-hub:"):
        raise ValueError(
            f"model.pretrained_path needs an architecture timm knows by name, got the hub repo "
            f"{cfg.backbone!r}; set model.backbone to its architecture (e.g. vit_base_patch16_224)."
        )
    contents = _read_file(path)
    state = _unwrap(contents, path)
    from carrot.train.checkpoint import check_weights

    check_weights(state, f"the weights in model.pretrained_path {path}")
    preprocessing = weights_preprocessing(path, contents)
    del contents  # a checkpoint's other entries (optimizer state) are not needed
    default = timm.models.get_pretrained_cfg(name)
    classifiers = default.classifier if default is not None else None
    for head in (classifiers,) if isinstance(classifiers, str) else classifiers or ():
        state.pop(f"{head}.weight", None)
        state.pop(f"{head}.bias", None)
    # num_classes=0 in the overlay keeps timm's load strict (it relaxes it when the class counts
    # differ); the classifier is gone from both sides.
    overlay = {"state_dict": state, "num_classes": 0, **preprocessing}
    try:
        backbone = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        )
    except RuntimeError as e:
        detail = _mismatch(path, name, kwargs, state) or str(e).splitlines()[0]
        raise ValueError(
            f"weights in {path} do not fit model.backbone={cfg.backbone}: {detail}. Check that "
            "the file was saved from this architecture."
        ) from e
    # The overlay stays in the model's pretrained config: drop the tensors, keep the metadata.
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg_dict = getattr(backbone, attr, None)
        if isinstance(cfg_dict, dict):
            cfg_dict.pop("state_dict", None)
    return backbone


def build_model(
    cfg: ModelConfig, *, num_classes: int, in_chans: int = 3, image_size: int | None = None
) -> FGVCModel:
    """The model of a config: :func:`create_backbone`, an optional projection, the classifier."""
    backbone = create_backbone(cfg, in_chans=in_chans, image_size=image_size)
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
