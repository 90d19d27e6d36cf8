"""Data pipeline of the trainer: datasets, transforms, P×K loaders and evaluation loaders.

Augmentation randomness is seeded per sample slot from (seed, rank, epoch, batch, slot), not drawn
from worker processes' global generators, so a run resumed mid-epoch sees exactly the images and
crops it would have seen, whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import InterpolationMode, v2

from carrot.data import LabeledImages, build_dataset
from carrot.samplers import PKSampler
from carrot.train.config import Config

__all__ = [
    "DataBundle",
    "Splits",
    "TaggedBatches",
    "TransformedDataset",
    "build_data",
    "build_test_loader",
    "build_transforms",
    "eval_resize",
    "load_splits",
    "load_test_split",
    "resolve_data_config",
]


def _item_seed(tag: tuple[int, ...]) -> int:
    # Python hashes tuples of ints deterministically (no hash randomization for ints).
    return hash(tag) & 0x7FFF_FFFF_FFFF


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the generators a transform may draw from (torch's CPU generator, Python's ``random``
    as timm's RandAugment and RandomErasing use, numpy's) and restore them afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator: torch.manual_seed would also queue CUDA seeding (slow).
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


class TransformedDataset(Dataset[tuple[Tensor, int]]):
    """Applies a transform to a :class:`LabeledImages`; ``ds[(i, tag)]`` seeds the transform's
    randomness from ``tag``, ``ds[i]`` runs it unseeded (evaluation transforms are deterministic)."""

    def __init__(self, base: LabeledImages, transform: Callable[[Any], Tensor], seed: int) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, tuple[int, ...]]) -> tuple[Tensor, int]:
        if isinstance(key, tuple):
            index, tag = key
            image, label = self.base[index]
            if isinstance(self.transform, TensorTransform) and isinstance(image, Tensor):
                gen = torch.Generator().manual_seed(_item_seed((self.seed, *tag)))
                return self.transform(image, generator=gen), label
            with _seeded(_item_seed((self.seed, *tag))):
                return self.transform(image), label
        image, label = self.base[key]
        return self.transform(image), label


class TaggedBatches(Sampler[list[tuple[int, tuple[int, ...]]]]):
    """Wraps a :class:`PKSampler`: every index comes with its (rank, epoch, batch, slot) tag."""

    def __init__(self, sampler: PKSampler) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, tuple[int, ...]]]]:
        start = self.sampler.state_dict()["start_batch"]
        epoch, rank = self.sampler.epoch, self.sampler.rank
        for b, batch in enumerate(self.sampler, start=start):
            yield [(i, (rank, epoch, b, j)) for j, i in enumerate(batch)]


class _Subset(LabeledImages):
    def __init__(self, base: LabeledImages, indices: np.ndarray) -> None:
        self.base = base
        self.indices = indices
        self.labels = base.labels[indices]
        self.classes = base.classes
        for attr in ("channels", "flip_ok", "photo", "mean", "std"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    def load(self, index: int) -> Any:
        return self.base.load(int(self.indices[index]))


def subset_per_class(base: LabeledImages, n: int, *, seed: int = 0) -> LabeledImages:
    """At most ``n`` items per class, a fixed seeded choice (the same for every training seed)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(base))
    labels = base.labels[order]
    rank_in_class = np.zeros(len(order), dtype=np.int64)
    sort = np.argsort(labels, kind="stable")
    sorted_labels = labels[sort]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class[sort] = np.arange(len(order)) - starts
    keep = np.sort(order[rank_in_class < n])
    return _Subset(base, keep)


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


@dataclass
class DataBundle:
    train: TransformedDataset
    test: TransformedDataset
    sampler: PKSampler
    train_loader: DataLoader[Any]
    test_loader: DataLoader[Any]
    num_classes: int
    classes: list[str]
    in_chans: int
    val_loader: DataLoader[Any] | None = None
    """This rank's shard of the validation split (``data.val_split``), evaluated like test."""


def _test_loader(
    cfg: Config, test: TransformedDataset, rank: int, world_size: int, pin_memory: bool
) -> DataLoader[Any]:
    shard = list(range(rank, len(test), world_size))
    return DataLoader(
        torch.utils.data.Subset(test, shard),
        batch_size=cfg.train.eval_batch_size or max(2 * cfg.train.batch_size, 64),
        shuffle=False,
        num_workers=cfg.data.num_workers,
        pin_memory=pin_memory,
        generator=_private_generator(cfg.seed),
    )


def _private_generator(seed: int) -> torch.Generator:
    # Each DataLoader iterator draws a base seed; from the global generator that draw would shift
    # the model's random stream (dropout) between a resumed run and an uninterrupted one.
    return torch.Generator().manual_seed(seed)


def load_test_split(cfg: Config) -> LabeledImages:
    """The test split of the configured dataset (no transform)."""
    return build_dataset(cfg.data.name, root=cfg.data.root, split="test", **dict(cfg.data.options))


def build_test_loader(
    cfg: Config,
    base: LabeledImages,
    *,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader[Any]:
    """This rank's shard of the test split ``base`` (:func:`load_test_split`), through the
    evaluation transform; ``data.*`` resolved."""
    test = TransformedDataset(base, build_transforms(cfg, base, train=False), cfg.seed)
    return _test_loader(cfg, test, rank, world_size, pin_memory)


@dataclass
class Splits:
    """The splits of a dataset, before any transform: train, test and, with ``data.val_split``,
    the validation split (:mod:`carrot.train.holdout`)."""

    train: LabeledImages
    test: LabeledImages
    val: LabeledImages | None = None

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def in_chans(self) -> int:
        return int(getattr(self.train, "channels", 3))


def load_splits(cfg: Config) -> Splits:
    """The splits, with the same classes: the validation split drawn first (``data.val_split``,
    see :mod:`carrot.train.holdout`), then the training images left cut to
    ``data.subset_per_class``."""
    from carrot.train.holdout import split_train_val

    train_base, val = split_train_val(cfg, None)
    if cfg.data.subset_per_class is not None:
        train_base = subset_per_class(train_base, cfg.data.subset_per_class)
    test_base = load_test_split(cfg)
    if test_base.classes != train_base.classes:
        raise ValueError(
            f"the {cfg.data.name} train and test splits have different class lists "
            f"({len(train_base.classes)} vs {len(test_base.classes)} classes)."
        )
    return Splits(train_base, test_base, val)


def build_data(
    cfg: Config,
    splits: Splits,
    *,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataBundle:
    """The P×K training loader and this rank's shard of the test set (``data.*`` resolved)."""
    train_base = splits.train
    test_loader = build_test_loader(
        cfg, splits.test, rank=rank, world_size=world_size, pin_memory=pin_memory
    )
    train = TransformedDataset(train_base, build_transforms(cfg, train_base, train=True), cfg.seed)
    sampler = PKSampler(
        train_base.labels,
        batch_size=cfg.train.batch_size,
        k=cfg.train.k,
        seed=cfg.seed,
        num_replicas=world_size,
        rank=rank,
    )
    workers = cfg.data.num_workers
    train_loader: DataLoader[Any] = DataLoader(
        train,
        batch_sampler=TaggedBatches(sampler),
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        generator=_private_generator(cfg.seed),
    )
    val_loader = None
    if splits.val is not None:
        val_loader = build_test_loader(
            cfg, splits.val, rank=rank, world_size=world_size, pin_memory=pin_memory
        )
    return DataBundle(
        train,
        test_loader.dataset.dataset,  # type: ignore[attr-defined]
        sampler,
        train_loader,
        test_loader,
        splits.num_classes,
        list(train_base.classes),
        splits.in_chans,
        val_loader,
    )
