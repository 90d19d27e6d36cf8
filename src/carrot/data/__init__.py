"""Datasets in their official on-disk layouts, and the built-in ones (no download step).

Importing this package registers every dataset; :func:`build_dataset` lives here for that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from carrot.data.base import (
    DATASETS,
    DatasetError,
    LabeledImages,
    load_rgb,
    register,
)

# Official FGVC layouts (each module registers itself)
from carrot.data import aircraft, cars, cub, dogs, flowers102, imagefolder, nabirds  # noqa: F401  # isort: skip

# Built-in datasets (each module registers itself)
from carrot.data import digits, fashion_mnist, synthetic  # noqa: F401  # isort: skip


def build_dataset(
    name: str, *, root: str | Path | None, split: str, **options: Any
) -> LabeledImages:
    """Build one split (``"train"`` or ``"test"``, or ``"val"`` for a dataset with an official
    validation split: see :func:`official_val_datasets`) of a registered dataset.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names).
        DatasetError: the files are missing or malformed.
    """
    if name not in DATASETS:
        raise ValueError(f"data.name must be one of {sorted(DATASETS)}, got {name!r}.")
    if split == "val" and getattr(DATASETS[name], "official_val", None) is None:
        raise ValueError(
            f"{name} has no official validation split; the datasets with one are "
            f"{', '.join(official_val_datasets())}."
        )
    if split not in ("train", "test", "val"):
        raise ValueError(f"split must be 'train', 'test' or 'val', got {split!r}.")
    return DATASETS[name](
        root=None if root is None else Path(root).expanduser(), split=split, **options
    )


def official_val_datasets() -> list[str]:
    """The registered datasets that ship a validation split of their own (``official_val``)."""
    return sorted(n for n, f in DATASETS.items() if getattr(f, "official_val", None) is not None)


__all__ = [
    "DATASETS",
    "DatasetError",
    "LabeledImages",
    "build_dataset",
    "load_rgb",
    "official_val_datasets",
    "register",
]
