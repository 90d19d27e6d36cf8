"""Data pipeline of the trainer: datasets, transforms, P×K loaders and evaluation loaders.

Augmentation randomness is seeded per sample slot from (seed, rank, epoch, batch, slot), not drawn
from worker processes' global generators, so a run resumed mid-epoch sees exactly the images and
crops it would have seen, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from carrot.data import LabeledImages, build_dataset
from carrot.samplers import PKSampler
from carrot.train.config import Config

__all__ = [
    "DataBundle",
    "TaggedBatches",
    "TransformedDataset",
    "build_data",
    "build_test_data",
    "build_transforms",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _item_seed(tag: tuple[int, ...]) -> int:
    # Python hashes tuples of ints deterministically (no hash randomization for ints).
    return hash(tag) & 0x7FFF_FFFF_FFFF


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
            with torch.random.fork_rng(devices=[]):
                # Only the CPU generator: torch.manual_seed would also queue CUDA seeding (slow).
                torch.default_generator.manual_seed(_item_seed((self.seed, *tag)))
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


def build_transforms(
    cfg: Config, dataset: LabeledImages, *, train: bool
) -> Callable[[Any], Tensor]:
    """``fgvc``: resize the short side to ``data.resize`` (default size/0.875), random crop
    (center crop at test), flip; ``light``: resize and pad-and-crop shifts (flips only where the
    dataset allows them); ``none``: resize only. ``auto`` is ``fgvc`` for photographs, else
    ``light``."""
    size = cfg.data.image_size
    photo = bool(getattr(dataset, "photo", True))
    mode = cfg.data.augment
    if mode == "auto":
        mode = "fgvc" if photo else "light"
    mean = getattr(dataset, "mean", IMAGENET_MEAN)
    std = getattr(dataset, "std", IMAGENET_STD)
    flip_ok = bool(getattr(dataset, "flip_ok", True))
    if not photo and mode != "fgvc":
        pad = max(1, size // 8) if mode == "light" else 0
        return TensorTransform(
            size, train=train, pad=pad, flip=flip_ok and mode == "light", mean=mean, std=std
        )
    flip = [v2.RandomHorizontalFlip()] if flip_ok else []
    if mode == "fgvc":
        resize = cfg.data.resize or round(size / 0.875)
        if train:
            ops: list[Any] = [v2.Resize(resize, antialias=True), v2.RandomCrop(size), *flip]
        else:
            ops = [v2.Resize(resize, antialias=True), v2.CenterCrop(size)]
    else:
        ops = [v2.Resize((size, size), antialias=True)]
        if train and mode == "light":
            ops += [v2.RandomCrop(size, padding=max(1, size // 8)), *flip]
    return v2.Compose(
        [v2.ToImage(), *ops, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
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


def build_test_data(
    cfg: Config, *, rank: int = 0, world_size: int = 1, pin_memory: bool = False
) -> tuple[LabeledImages, DataLoader[Any]]:
    """The test split and this rank's shard of it (for ``carrot eval``)."""
    base = build_dataset(cfg.data.name, root=cfg.data.root, split="test", **dict(cfg.data.options))
    test = TransformedDataset(base, build_transforms(cfg, base, train=False), cfg.seed)
    return base, _test_loader(cfg, test, rank, world_size, pin_memory)


def build_data(
    cfg: Config, *, rank: int = 0, world_size: int = 1, pin_memory: bool = False
) -> DataBundle:
    """Datasets, the P×K training loader and this rank's shard of the test set."""
    train_base = build_dataset(
        cfg.data.name, root=cfg.data.root, split="train", **dict(cfg.data.options)
    )
    if cfg.data.subset_per_class is not None:
        train_base = subset_per_class(train_base, cfg.data.subset_per_class)
    test_base, test_loader = build_test_data(
        cfg, rank=rank, world_size=world_size, pin_memory=pin_memory
    )
    if test_base.classes != train_base.classes:
        raise ValueError(
            f"the {cfg.data.name} train and test splits have different class lists "
            f"({len(train_base.classes)} vs {len(test_base.classes)} classes)."
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
    return DataBundle(
        train,
        test_loader.dataset.dataset,  # type: ignore[attr-defined]
        sampler,
        train_loader,
        test_loader,
        train_base.num_classes,
        list(train_base.classes),
        int(getattr(train_base, "channels", 3)),
    )
