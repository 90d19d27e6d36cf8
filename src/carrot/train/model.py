"""The trainer's model: a timm backbone, an optional projection and a classifier on ẑ = z / ||z||.

``FGVCModel.forward(x)`` returns the logits and the raw embedding, so that DDP covers the whole model
in one forward call; the CARROT losses call ``model.head`` once more on the expanded embedding.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import timm
import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from carrot.train.config import RESOLVED_DATA_KEYS, ModelConfig

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


def backbone_state(model_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The backbone's own weights in an :class:`FGVCModel` state dict (``backbone.*``, the
    prefix removed)."""
    prefix = "backbone."
    return {k.removeprefix(prefix): v for k, v in model_state.items() if k.startswith(prefix)}


def _unwrap(state: Any, path: Path) -> dict[str, Tensor]:
    """The tensors of a weights file: a plain state dict, a training checkpoint's ``state_dict`` /
    ``model`` entry (timm, torchvision, DeiT...) or a carrot checkpoint's backbone."""
    if isinstance(state, dict) and "format" in state and isinstance(state.get("model"), dict):
        state = backbone_state(state["model"])  # a carrot checkpoint
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{path} is not a state dict of tensors (found {type(state).__name__}); "
            "model.pretrained_path must be a weights file (.safetensors, .pth, .bin)."
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


def weights_preprocessing(path: Path, contents: Any) -> dict[str, Any]:
    """The preprocessing the weights in ``path`` were trained with, when carrot knows it: from a
    carrot checkpoint's config, or from the ``config.json`` beside a ``carrot export`` file. A
    backbone fine-tuned further should see its inputs as it was trained on them. ``contents`` is
    what :func:`_read_file` returned for ``path``."""
    config: dict[str, Any] | None = None
    sidecar = path.parent / "config.json"
    if path.suffix == ".safetensors" and sidecar.is_file():
        import json

        try:
            config = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            config = None
    elif path.suffix in (".pt", ".pth"):
        if (
            isinstance(contents, dict)
            and "format" in contents
            and isinstance(contents.get("config"), dict)
        ):
            config = contents["config"].get("data")
    if not isinstance(config, dict):
        return {}
    out = {k: config[k] for k in RESOLVED_DATA_KEYS if config.get(k) is not None}
    _check_preprocessing(out, sidecar if path.suffix == ".safetensors" else path)
    for k in ("mean", "std"):
        if k in out:
            out[k] = tuple(float(v) for v in out[k])
    return out


def _check_preprocessing(values: dict[str, Any], source: Path) -> None:
    """The preprocessing read beside (or inside) a weights file must be usable: mean and std
    lists of finite numbers (std > 0), a known interpolation, crop_pct in (0, 1]."""
    import math

    def bad(key: str, rule: str) -> ValueError:
        return ValueError(
            f"{source}: {key} must be {rule}, got {values[key]!r}; fix or remove that file, or set "
            f"data.{key} yourself."
        )

    for key in ("mean", "std"):
        if key in values:
            v = values[key]
            ok = (
                isinstance(v, (list, tuple))
                and len(v) in (1, 3)
                and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    for x in v
                )
            )
            if not ok or (key == "std" and not all(x > 0 for x in v)):
                raise bad(key, "a list of 1 or 3 finite numbers" + (" > 0" if key == "std" else ""))
    if "interpolation" in values and values["interpolation"] not in (
        "bilinear",
        "bicubic",
        "nearest",
    ):
        raise bad("interpolation", "bilinear, bicubic or nearest")
    crop = values.get("crop_pct")
    if crop is not None and not (
        isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop <= 1
    ):
        raise bad("crop_pct", "a number in (0, 1]")


def _read_file(path: Path) -> Any:
    """What a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file holds, read without running
    any pickled code (``torch.load(weights_only=True)``); one clear error otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained_path {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e}).") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise ValueError(f"{path} is not a readable weights file ({e}).") from e
        raise ValueError(
            f"{path} holds pickled Python objects, not only tensors; carrot does not unpickle "
            "them (that could run code). Save the weights with torch.save(model.state_dict(), "
            "...) or as .safetensors."
        ) from e
    except (RuntimeError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable weights file ({e}).") from e


def read_weights(path: Path) -> dict[str, Tensor]:
    """A state dict from a weights file (see :func:`_read_file` and :func:`_unwrap`)."""
    return _unwrap(_read_file(path), path)


def _mismatch(path: Path, name: str, kwargs: dict[str, Any], state: dict[str, Tensor]) -> str:
    """The first keys that differ between a weights file and the model it should fill."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in want if k not in have and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {have[k]} vs {want[k]}" for k in want if k in have and have[k] != want[k]]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if keys:
            parts.append(f"{len(keys)} {label} (first: {', '.join(keys[:4])})")
    return "; ".join(parts)


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
