"""``carrot export``: a trained model as safetensors (and ONNX), and :func:`load_model` to use it.

An export folder holds:

- ``model.safetensors``: the whole classifier (backbone, projection, head);
- ``backbone.safetensors``: for timm backbones, the fine-tuned backbone alone, with keys that load
  with ``strict=True`` into ``timm.create_model(architecture, num_classes=0, **timm_kwargs)``;
- ``config.json``: architecture, classes, preprocessing (mean, std, interpolation, input size,
  crop_pct, resize mode), the head and the carrot version;
- ``model.onnx`` with ``--format onnx`` or ``all`` (checked against PyTorch with onnxruntime).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMATS", "ExportError", "export_model", "load_model"]

FORMATS = ("safetensors", "onnx", "all")
ONNX_TOLERANCE = 1e-4


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why and what to do."""


def _config_json(trained: Any) -> dict[str, Any]:
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
    config = json.loads(config_file.read_text())
    model = _model_from_config(config)
    load_weights(model, str(weights), strict=True)
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
    from safetensors.torch import save_file, save_model

    from carrot.train.trained import load_trained

    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty; choose another --out or add --force.")
    trained = load_trained(Path(checkpoint), ema=ema)
    model = trained.model.float().cpu().eval()
    out.mkdir(parents=True, exist_ok=True)
    config = _config_json(trained)
    written: dict[str, Any] = {"folder": str(out), "files": []}
    if fmt in ("safetensors", "all"):
        save_model(model, str(out / "model.safetensors"))
        backbone = {k: v.contiguous() for k, v in model.backbone.state_dict().items()}
        save_file(backbone, str(out / "backbone.safetensors"))
        written["files"] += ["model.safetensors", "backbone.safetensors"]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    written["files"].append("config.json")
    if fmt in ("onnx", "all"):
        g = torch.Generator().manual_seed(0)
        size = config["input_size"]
        sample = torch.randn(2, *size, generator=g)
        diff = _onnx(model, out, sample)
        written["files"].append("model.onnx")
        written["onnx_max_abs_diff"] = diff
        if not diff <= ONNX_TOLERANCE:
            raise ExportError(
                f"onnxruntime's logits differ from PyTorch's by {diff:.3g} (> {ONNX_TOLERANCE}); "
                f"{out / 'model.onnx'} is not faithful. Export with --format safetensors."
            )
    return written
