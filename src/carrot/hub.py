"""carrot models as timm models: the ``carrot_fgvc`` architecture and ``carrot export --format hf``.

A carrot classifier is a timm backbone, an optional projection and a head on the L2-normalized
embedding; the normalization has no counterpart in timm's own classifiers, so the export names its
own timm architecture, ``carrot_fgvc``, which this module registers with timm. With it imported::

    import timm
    import carrot.hub  # registers carrot_fgvc with timm

    model = timm.create_model("local-dir:DIR", pretrained=True)  # or "hf-hub:USER/REPO"
    logits = model(images)                                        # as carrot.load_model(DIR)
    embedding = model.forward_head(model.forward_features(images), pre_logits=True)

The folder (written by :func:`export_hf`) holds ``config.json`` in timm's pretrained-config form
(architecture, ``model_args`` rebuilding the backbone, projection and head, ``label_names``, and
the preprocessing: input size, mean, std, interpolation, crop_pct, crop_mode),
``model.safetensors`` and a model card ``README.md`` (``library_name: timm``). Uploading is the
user's ``hf upload USER/REPO DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from carrot.offline import check_local_timm_kwargs, plain_architecture
from carrot.train.config import ModelConfig
from carrot.train.model import FGVCModel, build_model, timm_name

__all__ = ["CarrotTimmModel", "carrot_fgvc", "export_hf", "write_hf_folder"]

_PROJECT = __name__.partition(".")[0]  # the package's name, carrot

_EXTRA = "pip install 'carrot-fgvc[hf]'"
# carrot's test resize (carrot.train.data.eval_resize) as timm's eval crop_mode
_CROP_MODES = {"square": "squash", "short_side": "center", "full": "squash"}


class CarrotTimmModel(FGVCModel):
    """:class:`~carrot.train.model.FGVCModel` with timm's model interface: ``forward`` returns the
    logits, ``forward_head(x, pre_logits=True)`` the raw embedding z, ``num_features`` its size.

    Args:
        backbone: A timm architecture name.
        num_classes: Classes of the head.
        in_chans: Input channels.
        img_size: Input size of architectures built for one size (ViT...), else None.
        embedding_dim: Size of the projection after the backbone, None for none.
        classifier: ``cosine`` or ``linear``.
        cosine_scale: Scale of the cosine head.
        learn_scale: Whether the cosine head's scale is a parameter.
        backbone_args: More keyword arguments of the timm backbone (``model.timm_kwargs``).
        **kwargs: Passed to the backbone too (timm's ``drop_rate``, ``drop_path_rate``...).

    Shape:
        x: (B, C, H, W); logits (B, N).
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | None = None,
        embedding_dim: int | None = None,
        classifier: str = "cosine",
        cosine_scale: float = 16.0,
        learn_scale: bool = False,
        backbone_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # config.json of a local-dir: folder names these: never a hub repo, never another file
        plain_architecture(backbone, "model_args.backbone")
        check_local_timm_kwargs({**(backbone_args or {}), **kwargs}, "model_args.backbone_args")
        drop_rate = float(kwargs.pop("drop_rate", 0.0))
        drop_path_rate = float(kwargs.pop("drop_path_rate", 0.0))
        cfg = ModelConfig(
            backbone=backbone,
            pretrained=False,
            embedding_dim=embedding_dim,
            classifier=classifier,  # type: ignore[arg-type]
            cosine_scale=cosine_scale,
            learn_scale=learn_scale,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            timm_kwargs={**(backbone_args or {}), **kwargs},
        )
        built = build_model(cfg, num_classes=num_classes, in_chans=in_chans, image_size=img_size)
        super().__init__(built.backbone, built.head, built.projection)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = _num_features(built)
        self._head_args: tuple[str, float, bool] = (classifier, cosine_scale, learn_scale)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(x)  # type: ignore[operator]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        z = self.projection(self.backbone.forward_head(x, pre_logits=True))  # type: ignore[operator]
        return z if pre_logits else self.classify(z)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head (of the same kind) for ``num_classes`` classes, for fine-tuning."""
        from carrot.train.model import CosineClassifier

        kind, scale, learn = self._head_args
        self.num_classes = num_classes
        if kind == "cosine":
            self.head = CosineClassifier(
                self.num_features, num_classes, scale=scale, learn_scale=learn
            )
        else:
            self.head = nn.Linear(self.num_features, num_classes)


# timm's registry reads the pretrained config of a registered name from its module's default_cfgs;
# an export folder's config.json overrides it.
default_cfgs = generate_default_cfgs(
    {
        "carrot_fgvc": {
            "input_size": (3, 224, 224),
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "num_classes": 1000,
            "classifier": "head",
        }
    }
)


@register_model
def carrot_fgvc(pretrained: bool = False, **kwargs: Any) -> CarrotTimmModel:
    """timm entry point of :class:`CarrotTimmModel` (weights from an export folder or hub repo)."""
    from carrot.hub_check import check_timm_folder, check_timm_weights

    kwargs.pop("cache_dir", None)
    # A folder's config.json and weights pass the checks of carrot.load_model.
    where = check_timm_folder(
        kwargs.get("pretrained_cfg"), kwargs.get("pretrained_model_args") or kwargs
    )
    model: CarrotTimmModel = build_model_with_cfg(
        CarrotTimmModel, "carrot_fgvc", pretrained, **kwargs
    )
    if pretrained and where is not None:
        check_timm_weights(model, where)
    return model


def _num_features(model: nn.Module) -> int:
    """Size of the embedding the head reads."""
    return int(model.head.weight.shape[1])  # type: ignore[union-attr, index]


def _hf_config(config: dict[str, Any], num_features: int) -> dict[str, Any]:
    """timm's config.json (pretrained-config form) from carrot's export config.json."""
    arch = config["architecture"]
    first_conv = None
    default = timm.models.get_pretrained_cfg(arch)
    if default is not None and isinstance(default.first_conv, str):
        first_conv = f"backbone.{default.first_conv}"
    model_args: dict[str, Any] = {
        "backbone": arch,
        "in_chans": config["in_chans"],
        "embedding_dim": config.get("embedding_dim"),
        "classifier": config["head"]["type"],
        "cosine_scale": config["head"]["scale"] or 16.0,
        "learn_scale": bool(config["head"].get("learn_scale")),
        "backbone_args": {k: v for k, v in config["timm_kwargs"].items() if k != "in_chans"},
    }
    img_size = model_args["backbone_args"].pop("img_size", None)
    if img_size is not None:
        model_args["img_size"] = img_size
    pretrained_cfg: dict[str, Any] = {
        "input_size": config["input_size"],
        "mean": config["mean"],
        "std": config["std"],
        "interpolation": config["interpolation"],
        "crop_pct": 1.0 if config["resize"] == "full" else config["crop_pct"],
        "crop_mode": _CROP_MODES[config["resize"]],
        "num_classes": config["num_classes"],
        "classifier": "head",
    }
    if first_conv:
        pretrained_cfg["first_conv"] = first_conv
    return {
        "architecture": "carrot_fgvc",
        "num_classes": config["num_classes"],
        "num_features": num_features,
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
        "label_names": config["label_names"],
        _PROJECT: {k: config[k] for k in ("method", "dataset", "epoch", "carrot_version")},
    }


def _card(config: dict[str, Any], metrics: dict[str, float], name: str) -> str:
    """The model card: YAML metadata (library_name timm, tags, dataset, metrics) and usage."""
    try:
        from huggingface_hub import EvalResult, ModelCardData
    except ImportError as e:
        raise ImportError(
            f"carrot export --format hf needs huggingface_hub for the model card: {_EXTRA}"
        ) from e
    dataset = config["dataset"]
    results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="test",
            metric_type="accuracy" if key == "top1" else key,
            metric_name=label,
            metric_value=round(metrics[key], 3),
        )
        for key, label in (
            ("top1", "top-1 accuracy (%)"),
            ("mean_class_acc", "mean per-class accuracy (%)"),
        )
        if key in metrics
    ]
    data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", _PROJECT, "fine-grained", config["method"]],
        datasets=[dataset],
        metrics=["accuracy"],
        model_name=name,
        eval_results=results or None,
    )
    shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()) or "not evaluated"
    return (
        f"---\n{data.to_yaml()}\n---\n\n# {name}\n\n"
        f"A {config['architecture']} fine-tuned with carrot (method `{config['method']}`) on "
        f"`{dataset}` for {config['epoch']} epochs: {len(config['label_names'])} classes. "
        f"Test figures from the run: {shown}.\n\n"
        "## Use\n\n```python\nimport timm\nimport carrot.hub  # registers the carrot_fgvc "
        'architecture with timm\n\nmodel = timm.create_model("hf-hub:USER/REPO", '
        'pretrained=True).eval()  # or "local-dir:DIR"\n'
        "cfg = timm.data.resolve_data_config({}, model=model)\n"
        "transform = timm.data.create_transform(**cfg)\n"
        "logits = model(transform(image).unsqueeze(0))\n"
        'label = model.pretrained_cfg["label_names"][logits.argmax(1).item()]\n```\n\n'
        "`carrot.load_model(DIR)` gives the same logits with the embedding. Uploaded with "
        "`hf upload USER/REPO DIR`.\n"
    )


def export_hf(
    checkpoint: Path, out: Path, *, ema: bool = False, force: bool = False
) -> dict[str, Any]:
    """Write a folder that ``timm.create_model("local-dir:OUT", pretrained=True)`` loads (with
    :mod:`carrot.hub` imported): config.json, model.safetensors, README.md."""
    from carrot.export import ExportError
    from carrot.folders import check_target, staged_folder
    from carrot.train.checkpoint import load_checkpoint
    from carrot.train.trained import load_trained

    out = Path(out)
    check_target(out, force=force, error=ExportError)
    ckpt = load_checkpoint(Path(checkpoint))
    trained = load_trained(Path(checkpoint), ema=ema, checkpoint=ckpt)
    backbone = trained.cfg.model.backbone
    if timm_name(backbone).startswith("hf-hub:"):
        raise ExportError(
            f"--format hf needs a backbone timm knows by name, got {backbone!r}; export with "
            "--format safetensors."
        )
    evaluated = [r for r in ckpt.get("history", []) if "top1" in r]
    metrics = {
        k: float(evaluated[-1][k])
        for k in ("top1", "mean_class_acc")
        if evaluated and k in evaluated[-1]
    }
    if ema and evaluated and "top1_ema" in evaluated[-1]:
        metrics = {"top1": float(evaluated[-1]["top1_ema"])}
    del ckpt
    # Written to a temporary folder beside ``out`` that replaces it whole, as every export is.
    with staged_folder(out) as tmp:
        written = write_hf_folder(trained, tmp, metrics)
    written["folder"] = str(out)
    return written


def write_hf_folder(trained: Any, out: Path, metrics: dict[str, float]) -> dict[str, Any]:
    """The files of :func:`export_hf` for a :class:`~carrot.train.trained.Trained` model, with the
    run's test ``metrics`` (``top1``, ``mean_class_acc``) for the card."""
    from safetensors.torch import save_model

    from carrot.export import config_json

    model = trained.model.float().cpu().eval()
    config = config_json(trained)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / "model.safetensors"))
    hf_config = _hf_config(config, _num_features(model))
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    name = f"carrot-{config['dataset']}-{config['architecture']}".replace("/", "-")
    (out / "README.md").write_text(_card(config, metrics, name))
    return {"folder": str(out), "files": ["model.safetensors", "config.json", "README.md"]}
