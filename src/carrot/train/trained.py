"""A trained model back from its checkpoint, for ``carrot eval``, ``predict`` and ``export``."""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from carrot.train.checkpoint import CheckpointError, check_weights, load_checkpoint
from carrot.train.config import Config, apply_overrides, config_from_dict
from carrot.train.data import resolve_data_config
from carrot.train.model import FGVCModel, build_model

__all__ = ["Trained", "load_trained"]


@dataclass
class Trained:
    """A model rebuilt from a checkpoint, in eval mode, with what it needs to be used."""

    model: FGVCModel
    cfg: Config
    """The run's config (data preprocessing resolved, see ``resolve_data_config``)."""
    classes: list[str]
    """Class name of each label."""
    epoch: int
    path: Path
    in_chans: int
    has_ema: bool
    """The checkpoint also holds EMA weights (``load_trained(..., ema=True)``)."""
    dataset_traits: Any
    """What the transforms need to know of the training dataset without its files: ``photo``,
    ``channels``, ``flip_ok``, and its own ``mean`` / ``std`` if it has them."""


def load_trained(
    path: Path,
    *,
    ema: bool = False,
    overrides: list[str] | None = None,
    device: torch.device | str = "cpu",
    checkpoint: dict[str, Any] | None = None,
) -> Trained:
    """The model of ``path`` (its EMA weights with ``ema=True``), read without unpickling.

    The architecture comes from the checkpoint's config; no pretrained weights are downloaded
    or read (the checkpoint has them all). ``overrides`` change the config, e.g.
    ``data.root=...`` for evaluation elsewhere. ``checkpoint``: the contents of ``path`` if the
    caller has read them already (:func:`~carrot.train.checkpoint.load_checkpoint`).
    """
    path = Path(path)
    ckpt = checkpoint if checkpoint is not None else load_checkpoint(path)
    for key in ("config", "model", "state"):
        if not isinstance(ckpt.get(key, {} if key == "state" else None), dict):
            raise CheckpointError(
                f"{path}: the checkpoint's {key!r} entry must be a mapping, got "
                f"{type(ckpt.get(key)).__name__}; it was not written by carrot train."
            )
    cfg = apply_overrides(config_from_dict(ckpt["config"]), overrides or [])
    # every weight comes from the checkpoint
    cfg.model = dataclasses.replace(cfg.model, pretrained=False, pretrained_path=None)
    classes = ckpt.get("classes")
    if not classes:
        raise CheckpointError(
            f"{path} records no class names; it cannot label predictions. Use a checkpoint "
            "written by carrot train."
        )
    state = ckpt["model"]
    if ema:
        if ckpt.get("ema") is None:
            raise CheckpointError(
                f"{path} has no EMA weights (the run had train.ema_decay=null); drop --ema."
            )
        state = ckpt["ema"]
    check_weights(state, f"the {'EMA ' if ema else ''}weights in {path}")
    in_chans = int(ckpt.get("in_chans", 3))
    model = build_model(
        cfg.model, num_classes=len(classes), in_chans=in_chans, image_size=cfg.data.image_size
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise CheckpointError(
            f"the weights in {path} do not fit model.backbone={cfg.model.backbone} "
            f"({first[:300]}); do not override model.* when loading a checkpoint."
        ) from e
    model.eval().to(device)
    epoch = int(ckpt.get("state", {}).get("epoch", 0))
    from carrot.data import DATASETS

    kind = DATASETS.get(cfg.data.name)
    traits = types.SimpleNamespace(
        photo=bool(getattr(kind, "photo", True)),
        channels=in_chans,
        flip_ok=bool(getattr(kind, "flip_ok", True)),
        mean=getattr(kind, "mean", None),
        std=getattr(kind, "std", None),
    )
    # A trained run's config is resolved already; this fills whatever a hand-edited one left null.
    resolve_data_config(cfg, model.backbone, traits)
    return Trained(
        model, cfg, list(classes), epoch, path, in_chans, ckpt.get("ema") is not None, traits
    )
