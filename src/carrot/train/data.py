"""Data pipeline of the trainer: datasets, P×K loaders and evaluation loaders (the transforms are
in :mod:`carrot.train.transforms`).

Augmentation randomness is seeded per sample slot from (seed, rank, epoch, batch, slot), not drawn
from worker processes' global generators, so a run resumed mid-epoch sees exactly the images and
crops it would have seen, whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from carrot.data import LabeledImages, build_dataset
from carrot.samplers import PKSampler
from carrot.train.config import Config
from carrot.train.transforms import (
    TensorTransform,
    build_transforms,
    eval_resize,
    resolve_data_config,
)

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
