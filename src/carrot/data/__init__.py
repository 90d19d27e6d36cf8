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
    """Build one split (``"train"`` or ``"test"``) of a registered dataset.

    Raises:
        ValueError: ``name`` is not registered (the message lists the registered names).
        DatasetError: the files are missing or malformed.
    """
    if name not in DATASETS:
        raise ValueError(f"data.name must be one of {sorted(DATASETS)}, got {name!r}.")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    return DATASETS[name](
        root=None if root is None else Path(root).expanduser(), split=split, **options
    )


__all__ = ["DATASETS", "DatasetError", "LabeledImages", "build_dataset", "load_rgb", "register"]
