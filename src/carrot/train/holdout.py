"""The validation split (``data.val_split``): what chooses ``best.pt`` without looking at test.

``fraction`` holds out a stratified ``data.val_fraction`` of every class of the training split,
drawn with a generator of its own seeded by ``data.val_seed`` (never the run seed), so every
method and seed of a comparison validates on the same images. ``official`` reads the dataset's
own validation split (:func:`carrot.data.official_val_datasets`) and trains on its train split
alone. The split is drawn before ``data.subset_per_class``, which then cuts the remaining
training images: the validation images do not depend on the subset size.

The run folder records the split (:data:`VAL_SPLIT_FILE`: the validation image ids and their
hash), the checkpoints its hash, and a resumed run refuses a split that changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from carrot.data import DATASETS, LabeledImages, build_dataset, official_val_datasets
from carrot.train.schema import Config, ConfigError

__all__ = [
    "VAL_SPLIT_FILE",
    "HeldOut",
    "check_val_split",
    "checkpoint_entry",
    "holdout_per_class",
    "record_val_split",
    "split_train_val",
    "val_record",
    "write_val_split",
]

VAL_SPLIT_FILE = "val_split.json"
"""Run folder file: the validation split's settings, image ids and their sha256."""


class HeldOut(LabeledImages):
    """Items ``indices`` of ``base`` (a part of the training split), with its traits and, for
    files on disk, its ``paths`` (so that they are checked and fingerprinted like a split)."""

    def __init__(self, base: LabeledImages, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = base.labels[self.indices]
        self.classes = base.classes
        for attr in ("channels", "flip_ok", "photo", "mean", "std", "root"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))
        paths = getattr(base, "paths", None)
        if paths:
            self.paths = [paths[int(i)] for i in self.indices]

    def load(self, index: int) -> Any:
        return self.base.load(int(self.indices[index]))


def holdout_per_class(
    labels: np.ndarray, classes: list[str], *, fraction: float, seed: int
) -> np.ndarray:
    """Sorted indices of the validation items: of every class with n items,
    min(max(1, round(fraction · n)), n - 1) drawn at random, so that each class has at least
    one validation image and keeps at least one training image.

    Args:
        labels: Label of each training item. Shape: (n,).
        classes: Class name of each label (named in the error).
        fraction: Share of every class held out, in (0, 1).
        seed: Seed of the split's own generator (``data.val_seed``).

    Raises:
        ConfigError: a class has fewer than two items (it cannot give one and keep one).
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in range(len(classes)):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            continue  # a class absent from training (possible in an image folder's test split)
        if len(idx) < 2:
            raise ConfigError(
                f"data.val_split=fraction needs at least 2 training images of every class, but "
                f"class {classes[c]!r} has {len(idx)}: it cannot give a validation image and "
                "keep one for training. Add images or use data.val_split=none."
            )
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        held.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)


def _official(cfg: Config) -> tuple[LabeledImages, LabeledImages]:
    name, options = cfg.data.name, dict(cfg.data.options)
    if getattr(DATASETS.get(name), "official_val", None) is None:
        raise ConfigError(
            f"data.val_split=official needs a dataset with its own validation split "
            f"({', '.join(official_val_datasets())}), got data.name={name}; use "
            "data.val_split=fraction."
        )
    for key, value in getattr(DATASETS[name], "official_train_options", {}).items():
        if options.get(key, value) != value:
            raise ConfigError(
                f"data.options.{key} must be {value} with data.val_split=official (else the "
                f"official validation images would be trained on), got {options[key]!r}."
            )
        options[key] = value
    train = build_dataset(name, root=cfg.data.root, split="train", **options)
    val = build_dataset(name, root=cfg.data.root, split="val", **options)
    if val.classes != train.classes:
        raise ValueError(
            f"the {name} train and validation splits have different class lists "
            f"({len(train.classes)} vs {len(val.classes)} classes)."
        )
    return train, val


def split_train_val(
    cfg: Config, train: LabeledImages | None
) -> tuple[LabeledImages, LabeledImages | None]:
    """The training split and the validation split of ``data.val_split`` (None for ``none``).

    ``train``: the configured training split (read for ``none`` and ``fraction``; ``official``
    reads the dataset's own train and validation files and may be given None).
    """
    mode = cfg.data.val_split
    if mode == "official":
        return _official(cfg)
    if train is None:
        train = build_dataset(
            cfg.data.name, root=cfg.data.root, split="train", **dict(cfg.data.options)
        )
    if mode == "none":
        return train, None
    val = holdout_per_class(
        train.labels, list(train.classes), fraction=cfg.data.val_fraction, seed=cfg.data.val_seed
    )
    rest = np.setdiff1d(np.arange(len(train)), val, assume_unique=True)
    return HeldOut(train, rest), HeldOut(train, val)


def _ids(split: LabeledImages, root: Path | None) -> list[str]:
    """Each item's identity: its file (relative to data.root where it can be) or, for built-in
    data, its index in the training split."""
    paths = getattr(split, "paths", None)
    if paths:
        out = []
        for p in paths:
            try:
                out.append(str(Path(p).resolve().relative_to(root)) if root else str(p))
            except ValueError:
                out.append(str(p))
        return out
    indices = getattr(split, "indices", None)
    if indices is None:
        indices = np.arange(len(split))
    return [f"train[{int(i)}]" for i in indices]


def val_record(cfg: Config, val: LabeledImages | None) -> dict[str, Any] | None:
    """What identifies the validation split: its settings, the ids of its images, their count
    and sha256 (None without a split)."""
    if val is None:
        return None
    root = Path(cfg.data.root).expanduser().resolve() if cfg.data.root else None
    ids = _ids(val, root)
    return {
        "val_split": cfg.data.val_split,
        "val_fraction": cfg.data.val_fraction if cfg.data.val_split == "fraction" else None,
        "val_seed": cfg.data.val_seed if cfg.data.val_split == "fraction" else None,
        "count": len(ids),
        "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "ids": ids,
    }


def _short(record: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if record is None else {"count": record["count"], "sha256": record["sha256"]}


def checkpoint_entry(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of :func:`val_record` a checkpoint keeps: the count and the hash."""
    return _short(record)


def check_val_split(saved: Any, record: dict[str, Any] | None, run_dir: Path) -> None:
    """Refuse to resume a run whose validation split is not the one it started with (``saved``:
    the checkpoint's entry; a checkpoint from before validation splits has none)."""
    current = _short(record)
    if saved == current:
        return

    def said(r: Any) -> str:
        return "none" if r is None else f"{r['count']} images, sha256 {str(r['sha256'])[:12]}"

    raise ConfigError(
        f"the validation split differs from the one {run_dir} started with ({said(saved)} → "
        f"{said(current)}); a resumed run must select its best epoch on the same images: restore "
        "the data and data.val_*, or start a new run (another output_dir)."
    )


def write_val_split(run_dir: Path, record: dict[str, Any] | None) -> None:
    """Write :data:`VAL_SPLIT_FILE` (nothing without a split)."""
    from carrot.train.runtime import atomic_write_text

    if record is not None:
        atomic_write_text(Path(run_dir) / VAL_SPLIT_FILE, json.dumps(record, indent=1) + "\n")


def record_val_split(
    cfg: Config, splits: Any, run_dir: Path, checkpoint: dict[str, Any] | None, *, write: bool
) -> dict[str, Any] | None:
    """The run's :func:`val_record`: checked against a resumed run's ``checkpoint`` (refused if
    it changed) and written to the run folder (``write``: rank 0)."""
    record = val_record(cfg, splits.val)
    if checkpoint is not None:
        check_val_split(checkpoint.get("val_split"), record, run_dir)
    if write:
        write_val_split(run_dir, record)
    return record
