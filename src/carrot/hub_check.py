"""The checks of :func:`carrot.load_model` on a folder timm loads through :mod:`carrot.hub`.

``timm.create_model("local-dir:DIR")`` (or ``"hf-hub:USER/REPO"``) reads the folder's config.json
itself and hands its pieces (``pretrained_cfg``, the saved ``model_args``) to carrot's entry point;
here they are put back in the form of carrot's own export config and checked by the same
:func:`carrot.export.check_export_config`, and the loaded weights by the same
:func:`carrot.train.checkpoint.check_weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["check_timm_folder", "check_timm_weights"]

# carrot's export-config keys → their names in the timm config.json, for the messages
_KEYS = {
    "architecture": "model_args.backbone",
    "timm_kwargs": "model_args.backbone_args",
    "in_chans": "model_args.in_chans",
    "embedding_dim": "model_args.embedding_dim",
    "head": "model_args.classifier",
    "head.scale": "model_args.cosine_scale",
    "head.learn_scale": "model_args.learn_scale",
    "input_size": "pretrained_cfg.input_size",
    "mean": "pretrained_cfg.mean",
    "std": "pretrained_cfg.std",
    "interpolation": "pretrained_cfg.interpolation",
    "crop_pct": "pretrained_cfg.crop_pct",
}
_RESIZE = {"squash": "square", "center": "short_side"}  # carrot.hub._CROP_MODES read back


def _source(pretrained_cfg: dict[str, Any]) -> str:
    if pretrained_cfg.get("source") == "local-dir":
        return str(Path(str(pretrained_cfg.get("file"))))
    return f"hf-hub:{pretrained_cfg.get('hf_hub_id')}"


def check_timm_folder(pretrained_cfg: Any, model_args: dict[str, Any]) -> str | None:
    """Check the config.json timm read for ``carrot_fgvc`` as :func:`carrot.load_model` checks an
    export's; returns the folder (or hub id) it came from, None when timm read no folder.

    Args:
        pretrained_cfg: What timm passes to the entry point (a dict with ``source`` for a folder).
        model_args: The file's saved ``model_args`` (timm's ``pretrained_model_args``).
    """
    from carrot.export import ExportError, check_export_config

    if not isinstance(pretrained_cfg, dict) or pretrained_cfg.get("source") not in (
        "local-dir",
        "hf-hub",
    ):
        return None  # carrot_fgvc built from arguments, not from a folder
    where = _source(pretrained_cfg)
    file = Path(where) / "config.json"
    crop_mode = pretrained_cfg.get("crop_mode", "squash")
    if crop_mode not in _RESIZE:
        raise ExportError(
            f"{file}: pretrained_cfg.crop_mode must be 'squash' or 'center', got {crop_mode!r}; "
            "it is not a config.json that carrot export wrote (re-export the checkpoint)."
        )
    size = pretrained_cfg.get("input_size")
    config: dict[str, Any] = {
        "architecture": model_args.get("backbone"),
        "timm_kwargs": model_args.get("backbone_args", {}),
        "num_classes": pretrained_cfg.get("num_classes"),
        "in_chans": model_args.get("in_chans", 3),
        "input_size": list(size) if isinstance(size, (list, tuple)) else size,
        "mean": pretrained_cfg.get("mean", []),
        "std": pretrained_cfg.get("std", []),
        "crop_pct": pretrained_cfg.get("crop_pct"),
        "resize": _RESIZE[crop_mode],
        "embedding_dim": model_args.get("embedding_dim"),
        "head": {
            "type": model_args.get("classifier"),
            "scale": model_args.get("cosine_scale"),
            "learn_scale": model_args.get("learn_scale", False),
        },
    }
    for key in ("mean", "std"):  # timm keeps them as the file's lists or as tuples
        if isinstance(config[key], tuple):
            config[key] = list(config[key])
    if "label_names" in pretrained_cfg:
        config["label_names"] = pretrained_cfg["label_names"]
    if pretrained_cfg.get("interpolation") is not None:  # null: timm's default
        config["interpolation"] = pretrained_cfg["interpolation"]
    check_export_config(config, file, keys=_KEYS)
    return where


def check_timm_weights(model: nn.Module, where: str) -> None:
    """The weights timm loaded from ``where`` (a folder or hub id): finite, as
    :func:`carrot.load_model` requires."""
    from carrot.train.checkpoint import check_weights

    check_weights(model.state_dict(), f"the weights in {where}")
