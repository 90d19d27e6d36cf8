"""``carrot export``: a trained model as safetensors (and ONNX), and :func:`load_model` to use it.

An export folder holds:

- ``model.safetensors``: the whole classifier (backbone, projection, head);
- ``backbone.safetensors``: for timm backbones, the fine-tuned backbone alone, with keys that load
  with ``strict=True`` into ``timm.create_model(architecture, num_classes=0, **timm_kwargs)``;
- ``config.json``: architecture, classes, preprocessing (mean, std, interpolation, input size,
  crop_pct, resize mode), the head and the carrot version;
- ``model.onnx`` with ``--format onnx`` or ``all`` (checked against PyTorch with onnxruntime).

``--format hf`` writes instead a folder that timm loads (``local-dir:`` or, once uploaded with
``hf upload``, ``hf-hub:``): see :mod:`carrot.hub`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from carrot.folders import check_target, staged_folder
from carrot.offline import check_local_timm_kwargs, plain_architecture
from carrot.train.checkpoint import check_weights

__all__ = [
    "FORMATS",
    "ExportError",
    "check_export_config",
    "config_json",
    "export_model",
    "load_model",
]

FORMATS = ("safetensors", "onnx", "all")  # and "hf": carrot.hub.export_hf
ONNX_TOLERANCE = 1e-4


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why and what to do."""


def config_json(trained: Any) -> dict[str, Any]:
    """The export folder's ``config.json`` of a :class:`~carrot.train.trained.Trained` model."""
    from carrot.train.data import eval_resize
    from carrot.train.model import fixed_input_size, timm_name
    from carrot.version import __version__

    cfg = trained.cfg
    d, m = cfg.data, cfg.model
    timm_kwargs: dict[str, Any] = dict(m.timm_kwargs)
    if trained.in_chans != 3:
        timm_kwargs["in_chans"] = trained.in_chans
    if fixed_input_size(timm_name(m.backbone)) and "img_size" not in timm_kwargs:
        timm_kwargs["img_size"] = d.image_size
    head = trained.model.head
    scale = float(head.log_scale.exp()) if hasattr(head, "log_scale") else None
    return {
        "architecture": timm_name(m.backbone),
        "timm_kwargs": timm_kwargs,
        "num_classes": len(trained.classes),
        "label_names": list(trained.classes),
        "in_chans": trained.in_chans,
        "input_size": [trained.in_chans, d.image_size, d.image_size],
        "mean": list(d.mean or []),
        "std": list(d.std or []),
        "interpolation": d.interpolation,
        "crop_pct": d.crop_pct,
        "resize": eval_resize(cfg, trained.dataset_traits),
        "embedding_dim": m.embedding_dim,
        "head": {"type": m.classifier, "scale": scale, "learn_scale": m.learn_scale},
        "method": cfg.method,
        "dataset": d.name,
        "epoch": trained.epoch,
        "carrot_version": __version__,
    }


def _bad(file: Path, key: str, rule: str, value: Any) -> ExportError:
    return ExportError(
        f"{file}: {key} must be {rule}, got {value!r}; it is not a config.json that carrot "
        "export wrote (re-export the checkpoint)."
    )


class _Named:
    """:func:`_bad` with the file's own key names (the timm form of :mod:`carrot.hub` stores
    ``num_classes`` as ``pretrained_cfg.num_classes``...)."""

    def __init__(self, file: Path, keys: dict[str, str]) -> None:
        self.file, self.keys = file, keys

    def __call__(self, file: Path, key: str, rule: str, value: Any) -> ExportError:
        head, dot, rest = key.partition(".")
        name = self.keys.get(key) or (self.keys.get(head, head) + dot + rest)
        return _bad(self.file, name, rule, value)


def _int(value: Any, lo: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def check_export_config(
    config: Any, file: Path, *, keys: dict[str, str] | None = None
) -> dict[str, Any]:
    """``config`` (read from ``file``) if it is a complete, consistent export config; else an
    :class:`ExportError` naming the first key that is missing or wrong. :func:`load_model` and
    the timm path of :mod:`carrot.hub` both check with it.

    Args:
        config: The export config (carrot's form, as :func:`config_json` writes it).
        file: The file it was read from, for the messages.
        keys: The names the file itself gives to some keys (for the messages), e.g.
            ``{"num_classes": "pretrained_cfg.num_classes"}``.
    """
    bad = _Named(file, keys or {})
    if not isinstance(config, dict):
        raise bad(file, "the file", "a JSON object", type(config).__name__)
    required = ("architecture", "num_classes", "label_names", "input_size", "head")
    for key in required:
        if key not in config:
            raise ExportError(
                f"{file} has no {(keys or {}).get(key, key)!r}; an export config needs "
                f"{', '.join((keys or {}).get(k, k) for k in required)}. "
                "Re-export the checkpoint."
            )
    arch = config["architecture"]
    try:  # a local load never reaches the network (hf-hub:, timm/, local-dir: names)
        plain_architecture(arch, f"{file}: architecture")
        check_local_timm_kwargs(config.get("timm_kwargs"), f"{file}: timm_kwargs")
    except ValueError as e:
        raise ExportError(str(e)) from None
    if not isinstance(arch, str) or not arch:
        raise bad(file, "architecture", "a timm model name", arch)
    n = config["num_classes"]
    if not _int(n):
        raise bad(file, "num_classes", "an integer >= 1", n)
    names = config["label_names"]
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise bad(file, "label_names", "a list of class names", names)
    if len(names) != n:
        raise bad(file, "label_names", f"a list of num_classes = {n} names", f"{len(names)} names")
    in_chans = config.get("in_chans", 3)
    if not _int(in_chans):
        raise bad(file, "in_chans", "an integer >= 1", in_chans)
    size = config["input_size"]
    if (
        not isinstance(size, list)
        or len(size) != 3
        or not all(_int(v) for v in size)
        or size[0] != in_chans
    ):
        raise bad(file, "input_size", f"[in_chans = {in_chans}, height >= 1, width >= 1]", size)
    for key in ("mean", "std"):
        values = config.get(key, [])
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise bad(file, key, "a list of finite numbers", values)
        if values and len(values) != in_chans:
            raise bad(file, key, f"a list of in_chans = {in_chans} numbers", values)
        if key == "std" and not all(v > 0 for v in values):
            raise bad(file, "std", "a list of numbers > 0", values)
    interpolation = config.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        raise bad(file, "interpolation", "'bilinear', 'bicubic' or 'nearest'", interpolation)
    crop = config.get("crop_pct", 1.0)
    if crop is not None and not (_positive(crop) and crop <= 1.0):
        raise bad(file, "crop_pct", "a number in (0, 1]", crop)
    resize = config.get("resize", "full")
    if resize not in ("square", "short_side", "full"):
        raise bad(file, "resize", "'square', 'short_side' or 'full'", resize)
    dim = config.get("embedding_dim")
    if dim is not None and not _int(dim):
        raise bad(file, "embedding_dim", "null or an integer >= 1", dim)
    if not isinstance(config.get("timm_kwargs", {}), dict):
        raise bad(file, "timm_kwargs", "a mapping", config.get("timm_kwargs"))
    head = config["head"]
    if not isinstance(head, dict) or head.get("type") not in ("cosine", "linear"):
        raise bad(file, "head", "{type: 'cosine' or 'linear', scale, learn_scale}", head)
    scale = head.get("scale")
    if scale is not None and not _positive(scale):
        raise bad(file, "head.scale", "null or a finite number > 0", scale)
    if not isinstance(head.get("learn_scale", False), bool):
        raise bad(file, "head.learn_scale", "true or false", head.get("learn_scale"))
    return config


def _model_from_config(config: dict[str, Any]) -> nn.Module:
    from carrot.train.config import ModelConfig
    from carrot.train.model import build_model

    head = config["head"]
    timm_kwargs = dict(config.get("timm_kwargs", {}))
    timm_kwargs.pop("in_chans", None)
    timm_kwargs.pop("img_size", None)  # build_model sets it from image_size for such models
    model_cfg = ModelConfig(
        backbone=config["architecture"],
        pretrained=False,
        embedding_dim=config.get("embedding_dim"),
        classifier=head["type"],
        cosine_scale=head["scale"] if head.get("scale") else 16.0,
        learn_scale=bool(head.get("learn_scale", False)),
        timm_kwargs=timm_kwargs,
    )
    return build_model(
        model_cfg,
        num_classes=int(config["num_classes"]),
        in_chans=int(config.get("in_chans", 3)),
        image_size=int(config["input_size"][-1]),
    )


def load_model(path: str | Path) -> nn.Module:
    """The classifier of an export folder, in eval mode, its logits identical to the checkpoint's.

    ``model(images)`` returns ``(logits, embedding)``; ``model.carrot_config`` holds
    ``config.json`` (class names in ``label_names``, preprocessing in ``mean``, ``std``,
    ``interpolation``, ``input_size``, ``crop_pct``).
    """
    from safetensors.torch import load_model as load_weights

    folder = Path(path)
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    for f in (config_file, weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f} does not exist; {folder} is not a carrot export folder.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ExportError(
            f"{config_file} is not valid JSON ({str(e)[:200]}); re-export the checkpoint."
        ) from e
    model = _model_from_config(check_export_config(config, config_file))
    try:
        load_weights(model, str(weights), strict=True)
    except Exception as e:  # safetensors raises several types for a wrong or corrupt file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ExportError(
            f"{weights} does not fit the model of {config_file} ({first}); re-export the checkpoint."
        ) from e
    check_weights(model.state_dict(), f"the weights in {weights}")
    model.carrot_config = config
    return model.eval()


def _onnx(model: nn.Module, out: Path, sample: torch.Tensor) -> float:
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "ONNX export needs onnx, onnxscript and onnxruntime: pip install 'carrot-fgvc[export]'"
        ) from e
    path = out / "model.onnx"
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        input_names=["image"],
        output_names=["logits", "embedding"],
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": sample.numpy()})
    with torch.no_grad():
        want = model(sample).logits
    return float((torch.from_numpy(logits) - want).abs().max())


def export_model(
    checkpoint: Path, out: Path, *, fmt: str = "safetensors", ema: bool = False, force: bool = False
) -> dict[str, Any]:
    """Write the export folder ``out`` from ``checkpoint``; returns what was written, with the
    ONNX-vs-PyTorch logit difference when ONNX was exported (an error above 1e-4)."""
    from carrot.train.trained import load_trained

    if fmt == "hf":
        raise ExportError(
            "--format hf is written by carrot.hub.export_hf (carrot export --format hf)."
        )
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, hf, got {fmt!r}.")
    out = Path(out)
    check_target(out, force=force, error=ExportError)
    trained = load_trained(Path(checkpoint), ema=ema)
    model = trained.model.float().cpu().eval()
    config = config_json(trained)
    # Everything goes to a temporary folder beside ``out`` that replaces it whole at the end: a
    # failed export (a missing extra, an unfaithful ONNX file) leaves nothing behind, and
    # --force leaves no file of the model exported before.
    with staged_folder(out) as tmp:
        written = _write(model, config, tmp, fmt)
    written["folder"] = str(out)
    return written


def _write(model: Any, config: dict[str, Any], folder: Path, fmt: str) -> dict[str, Any]:
    from safetensors.torch import save_file, save_model

    written: dict[str, Any] = {"files": []}
    if fmt in ("safetensors", "all"):
        save_model(model, str(folder / "model.safetensors"))
        backbone = {k: v.contiguous() for k, v in model.backbone.state_dict().items()}
        save_file(backbone, str(folder / "backbone.safetensors"))
        written["files"] += ["model.safetensors", "backbone.safetensors"]
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    written["files"].append("config.json")
    if fmt in ("onnx", "all"):
        g = torch.Generator().manual_seed(0)
        size = config["input_size"]
        sample = torch.randn(2, *size, generator=g)
        diff = _onnx(model, folder, sample)
        written["files"].append("model.onnx")
        written["onnx_max_abs_diff"] = diff
        if not diff <= ONNX_TOLERANCE:
            raise ExportError(
                f"onnxruntime's logits differ from PyTorch's by {diff:.3g} (> {ONNX_TOLERANCE}); "
                "the ONNX file is not faithful and nothing was written. Export with --format "
                "safetensors."
            )
    return written
