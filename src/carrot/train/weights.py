"""Pretrained weights from a file: read without unpickling code, unwrapped from the usual
checkpoint layouts, checked against the model they should fill, and the preprocessing they
declare (``model.pretrained_path``, see :func:`carrot.train.model.create_backbone`)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor

from carrot.train.config import RESOLVED_DATA_KEYS

__all__ = ["backbone_state", "read_weights", "weights_preprocessing"]


def backbone_state(model_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The backbone's own weights in an :class:`~carrot.train.model.FGVCModel` state dict
    (``backbone.*``, the prefix removed)."""
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
