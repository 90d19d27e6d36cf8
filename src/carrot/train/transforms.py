"""Image pipelines of the trainer: the resolved ``data.*`` image settings (size, crop, mean and
std from the backbone), the training augmentations and the evaluation resize."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode, v2

from carrot.data import LabeledImages
from carrot.train.config import Config

__all__ = [
    "TensorTransform",
    "build_transforms",
    "eval_resize",
    "resolve_data_config",
    "train_transform",
]


class TensorTransform:
    """The ``light`` / ``none`` augmentation for the built-in uint8 tensor datasets, written with a
    few tensor ops (torchvision's per-image pipeline costs ~10× more on 28-pixel images).

    Resize (bilinear, antialiased) when the size differs, then for training a random shift of up
    to ``pad`` pixels with zero fill (torchvision's ``RandomCrop(size, padding=pad)``) and a
    horizontal flip with probability 0.5 where allowed; finally scale to [0, 1] and normalize.
    Randomness comes from ``generator`` (the dataset's per-slot generator) or torch's global one.
    """

    def __init__(
        self, size: int, *, train: bool, pad: int, flip: bool, mean: Any, std: Any
    ) -> None:
        self.size, self.train, self.pad, self.flip = size, train, pad, flip
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = image.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x[None],
                size=(self.size, self.size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )[0]
        if self.train and self.pad:
            i, j = torch.randint(0, 2 * self.pad + 1, (2,), generator=generator).tolist()
            x = F.pad(x, (self.pad,) * 4)[:, i : i + self.size, j : j + self.size]
        if self.train and self.flip and torch.rand((), generator=generator) < 0.5:
            x = x.flip(-1)
        return (x / 255.0 - self.mean) / self.std

    def __repr__(self) -> str:
        return f"TensorTransform(size={self.size}, train={self.train}, pad={self.pad}, flip={self.flip})"


def _channels(values: list[float], channels: int, key: str) -> list[float]:
    """A per-channel statistic for ``channels`` channels (RGB statistics averaged for grayscale)."""
    if len(values) == channels:
        return list(values)
    if channels == 1:
        return [sum(values) / len(values)]
    if len(values) == 1:
        return list(values) * channels
    raise ValueError(
        f"data.{key} has {len(values)} values but the images have {channels} channels."
    )


def resolve_data_config(cfg: Config, backbone: nn.Module, dataset: Any) -> None:
    """Fill ``data.mean``, ``data.std``, ``data.interpolation`` and ``data.crop_pct`` where they
    are null (``cfg.data`` becomes the resolved settings), so that the saved config records what
    the run used.

    A pretrained backbone's own preprocessing comes first (timm's ``resolve_model_data_config``:
    e.g. mean = std = 0.5 and bicubic for the augreg ViTs); a model trained from scratch on a
    built-in dataset uses the dataset's statistics. Values set in the config always win.
    ``dataset`` is read for ``channels``, ``mean`` and ``std`` only (a dataset, or the traits a
    checkpoint records).
    """
    import timm.data

    timm_cfg = timm.data.resolve_model_data_config(backbone)
    d = cfg.data
    channels = int(getattr(dataset, "channels", 3))
    own_mean, own_std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    if cfg.model.pretrained or own_mean is None or own_std is None:
        own_mean, own_std = timm_cfg["mean"], timm_cfg["std"]
    mean = d.mean if d.mean is not None else [float(v) for v in own_mean]
    std = d.std if d.std is not None else [float(v) for v in own_std]
    interpolation = d.interpolation
    if interpolation is None:
        mode = str(timm_cfg.get("interpolation", "bilinear"))
        interpolation = mode if mode in ("bilinear", "bicubic", "nearest") else "bilinear"  # type: ignore[assignment]
    cfg.data = replace(
        d,
        mean=_channels(mean, channels, "mean"),
        std=_channels(std, channels, "std"),
        interpolation=interpolation,
        crop_pct=d.crop_pct if d.crop_pct is not None else float(timm_cfg.get("crop_pct", 0.875)),
    )


def _scale_size(cfg: Config) -> int:
    """The short side images are resized to before a crop of ``image_size`` (timm's rule)."""
    crop_pct = cfg.data.crop_pct if cfg.data.crop_pct is not None else 0.875
    # + 1e-3: a crop_pct written with few digits (448 / 0.74666667) must still give 600.
    return math.floor(cfg.data.image_size / crop_pct + 1e-3)


def train_transform(cfg: Config, dataset: Any) -> str:
    """``data.train_transform`` with ``auto`` resolved: fgvc for photographs, else light."""
    mode = cfg.data.train_transform
    if mode == "auto":
        return "fgvc" if bool(getattr(dataset, "photo", True)) else "light"
    return mode


def eval_resize(cfg: Config, dataset: Any) -> str:
    """How the test transform resizes: to a ``square`` or the ``short_side`` of image_size /
    crop_pct then a center crop (fgvc, rrc; ``data.resize_mode``), or ``full``: the whole image to
    image_size², as light and none train."""
    mode = train_transform(cfg, dataset)
    if mode in ("light", "none"):
        return "full"  # what training sees, without a crop
    return cfg.data.resize_mode or ("square" if mode == "fgvc" else "short_side")


def build_transforms(
    cfg: Config, dataset: LabeledImages, *, train: bool
) -> Callable[[Any], Tensor]:
    """The image pipeline of a split (``data.*`` must be resolved, see :func:`resolve_data_config`).

    Training, by ``data.train_transform``: ``fgvc`` (resize to a square of side
    image_size / crop_pct, random crop after ``data.random_crop_padding``, flip: the PMG / TransFG
    recipe), ``rrc`` (RandomResizedCrop(0.08-1) + flip), ``light`` (resize, pad-and-crop shifts,
    flip), ``none`` (resize); ``auto`` is ``fgvc`` for photographs, else ``light``. Test: for fgvc
    and rrc the resize of :func:`eval_resize` and a center crop, for light and none the resize
    alone. Then
    ``data.color_jitter``, ``data.randaugment`` (timm) and, after normalization,
    ``data.random_erasing`` (timm). Flips only where the dataset allows them.
    """
    d = cfg.data
    size = d.image_size
    photo = bool(getattr(dataset, "photo", True))
    mode = train_transform(cfg, dataset)
    mean, std = d.mean or [0.5], d.std or [0.5]
    flip_ok = bool(getattr(dataset, "flip_ok", True))
    extras = d.color_jitter > 0 or d.randaugment is not None or d.random_erasing > 0
    if not photo and mode in ("light", "none") and not (train and extras):
        pad = max(1, size // 8) if mode == "light" else 0
        return TensorTransform(
            size, train=train, pad=pad, flip=flip_ok and mode == "light", mean=mean, std=std
        )
    interpolation = InterpolationMode(d.interpolation or "bilinear")
    flip = [v2.RandomHorizontalFlip()] if flip_ok else []
    scale = _scale_size(cfg)
    # fgvc resizes to a square by default, as PMG and TransFG do (Resize((550, 550))).
    how = eval_resize(cfg, dataset)
    resize = (scale, scale) if how == "square" else scale
    ops: list[Any]
    if not train:
        if how == "full":
            ops = [v2.Resize((size, size), interpolation, antialias=True)]
        else:
            ops = [v2.Resize(resize, interpolation, antialias=True), v2.CenterCrop(size)]
    elif mode == "fgvc":
        crop = v2.RandomCrop(size, padding=d.random_crop_padding or None)
        ops = [v2.Resize(resize, interpolation, antialias=True), crop, *flip]
    elif mode == "rrc":
        ops = [v2.RandomResizedCrop(size, interpolation=interpolation, antialias=True), *flip]
    else:
        ops = [v2.Resize((size, size), interpolation, antialias=True)]
        if mode == "light":
            ops += [v2.RandomCrop(size, padding=max(1, size // 8)), *flip]
    post: list[Any] = []
    if train:
        if d.color_jitter > 0:
            cj = d.color_jitter
            ops.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj))
        if d.randaugment is not None:
            from timm.data.auto_augment import rand_augment_transform
            from timm.data.transforms import str_to_pil_interp

            hparams = {
                "translate_const": int(size * 0.45),
                "img_mean": tuple(round(255 * min(max(m, 0.0), 1.0)) for m in mean),
                "interpolation": str_to_pil_interp(interpolation.value),
            }
            ops += [v2.ToPILImage(), rand_augment_transform(d.randaugment, hparams)]
        if d.random_erasing > 0:
            from timm.data.random_erasing import RandomErasing

            post.append(RandomErasing(d.random_erasing, mode="pixel", device="cpu"))
    return v2.Compose(
        [
            v2.ToImage(),
            *ops,
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
            *post,
        ]
    )
