"""Fashion-MNIST from its original IDX files (what Debian's ``dataset-fashion-mnist`` installs)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from carrot.data.base import DatasetError, LabeledImages, register

__all__ = ["DEFAULT_ROOT", "FashionMNIST", "files_present", "read_idx"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"{root / stem}(.gz) does not exist. Fashion-MNIST is read from the original IDX files; "
        "on Debian/Ubuntu `apt-get install dataset-fashion-mnist` puts them in "
        f"{DEFAULT_ROOT}, or set data.root to a folder holding them."
    )


def files_present(root: Path | None = None) -> bool:
    """Whether ``root`` (default: Debian's folder) holds the four IDX files, gzipped or not."""
    root = DEFAULT_ROOT if root is None else root
    stems = [stem for pair in _FILES.values() for stem in pair]
    return all((root / s).is_file() or (root / f"{s}.gz").is_file() for s in stems)


def read_idx(path: Path, *, expected_dims: int) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 08 <dims>, big-endian sizes, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}.") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(
            f"{path} is not an IDX file of unsigned bytes: its header is {data[:4].hex()}, "
            "expected 000008 followed by the number of dimensions."
        )
    dims = data[3]
    if dims != expected_dims:
        raise DatasetError(f"{path} has {dims} dimensions, expected {expected_dims}.")
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    if len(data) != header + size:
        raise DatasetError(
            f"{path} holds {len(data) - header} bytes of data, but its header announces shape "
            f"{shape} ({size} bytes); the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@register("fashion_mnist")
class FashionMNIST(LabeledImages):
    """Fashion-MNIST (60,000 train / 10,000 test images of 28×28 pixels, 10 classes).

    ``data.root`` defaults to Debian's install folder. Items are uint8 tensors (1, 28, 28).
    """

    channels = 1
    flip_ok = True
    photo = False
    mean = (0.286,)
    std = (0.353,)

    def __init__(self, *, root: Path | None = None, split: str, **options: Any) -> None:
        if options:
            raise ValueError(f"fashion_mnist takes no data.options, got {sorted(options)}.")
        root = DEFAULT_ROOT if root is None else root
        image_file, label_file = (_find(root, stem) for stem in _FILES[split])
        images = read_idx(image_file, expected_dims=3)
        labels = read_idx(label_file, expected_dims=1).astype(np.int64)
        if len(images) != len(labels):
            raise DatasetError(
                f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels."
            )
        if labels.size and labels.max() >= len(CLASSES):
            bad = int(np.flatnonzero(labels >= len(CLASSES))[0])
            raise DatasetError(
                f"{label_file}: label {labels[bad]} of item {bad} is outside the 10 Fashion-MNIST classes."
            )
        self.images = torch.from_numpy(images.copy())[:, None]
        self.labels = labels
        self.classes = list(CLASSES)

    def load(self, index: int) -> Tensor:
        return self.images[index]
