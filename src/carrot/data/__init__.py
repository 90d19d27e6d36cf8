"""Datasets in their official on-disk layouts, and the built-in ones (no download step)."""

from carrot.data.base import (
    DATASETS,
    DatasetError,
    LabeledImages,
    build_dataset,
    load_rgb,
    register,
)

# Official FGVC layouts (each module registers itself)
from carrot.data import aircraft, cars, cub, dogs, flowers102, imagefolder, nabirds  # noqa: F401  # isort: skip

# Built-in datasets (each module registers itself)
from carrot.data import digits, fashion_mnist, synthetic  # noqa: F401  # isort: skip

__all__ = ["DATASETS", "DatasetError", "LabeledImages", "build_dataset", "load_rgb", "register"]
