"""What every dataset in carrot provides, and the registry the trainer builds them from."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DATASETS",
    "DatasetError",
    "LabeledImages",
    "convert_image",
    "load_rgb",
    "register",
]


class DatasetError(ValueError):
    """A dataset on disk is missing, malformed or inconsistent. The message names the file (and
    line, where there is one) and says what was expected."""


class LabeledImages(Dataset[tuple[Any, int]]):
    """A split of a classification dataset: ``dataset[i] -> (image, label)``.

    Subclasses set ``labels`` (int64, contiguous 0..num_classes-1, one per item, known without
    reading any image: the P×K sampler needs them) and ``classes`` (class name per label), and
    implement ``load(i)``. Transforms are applied by the trainer, not here.
    """

    labels: np.ndarray
    classes: list[str]
    official_val: str | None = None
    """The dataset's own validation split, as its files name it (``split="val"`` reads it), or
    None: ``data.val_split=official`` needs one."""
    official_train_options: ClassVar[dict[str, Any]] = {}
    """Options that make ``split="train"`` leave the official validation images out."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, index: int) -> Image.Image | Tensor:
        """The item's image: an RGB PIL image (files on disk) or a uint8 (C, H, W) tensor (built-ins)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Image.Image | Tensor, int]:
        return self.load(index), int(self.labels[index])


_16_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _to_8_bit(values: np.ndarray, mode: str) -> Image.Image:
    """One channel of integer or float pixel values as an 8-bit image (see
    :func:`convert_image`); values no rule reads are a ``ValueError``."""
    if not np.isfinite(values).all():
        raise ValueError(
            f"the image (mode {mode}) holds NaN or infinite pixel values; convert it to 8 or "
            "16 bits"
        )
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo < 0 or hi > 65535:
        raise ValueError(
            f"the image (mode {mode}) has pixel values in [{lo:g}, {hi:g}], outside the 8- or "
            "16-bit range; convert it to 8 or 16 bits"
        )
    if mode == "F" and hi <= 1.0:
        scale = 255.0  # a float image in [0, 1]
    elif mode in _16_BIT_MODES or hi > 255:
        scale = 255.0 / 65535.0
    else:
        scale = 1.0  # 8-bit data stored in 32 bits (mode I) or as floats (mode F)
    return Image.fromarray(np.rint(values.astype(np.float64) * scale).astype(np.uint8), mode="L")


def convert_image(img: Image.Image, mode: str) -> Image.Image:
    """``img`` in ``mode`` ("RGB" or "L"), as training and ``carrot predict`` both read images.

    PIL's own conversion clips wider pixels at 255 (a full-range 16-bit image turns white, a
    float image in [0, 1] black), so one-channel images of other depths are scaled to 8 bits
    first: 16-bit modes (``I;16*``) by v · 255 / 65535; 32-bit integers (``I``) and floats
    (``F``, a float TIFF) by their range: 8-bit data as it is, larger values as 16-bit, floats
    in [0, 1] by 255. NaN, infinite, negative or larger-than-16-bit values are a ``ValueError``.
    """
    if img.mode in (*_16_BIT_MODES, "I", "F"):
        img = _to_8_bit(np.asarray(img), img.mode)
    return img.convert(mode)  # a loaded copy, also in the same mode (the file is closed next)


def load_rgb(path: Path, *, crop_bottom: int = 0) -> Image.Image:
    """Open an image as RGB; an unreadable file is a :class:`DatasetError` naming it.

    Args:
        path: Image file.
        crop_bottom: Pixels to cut off the bottom (FGVC-Aircraft's copyright banner).
    """
    try:
        with Image.open(path) as img:
            img = convert_image(img, "RGB")
    except FileNotFoundError as e:
        raise DatasetError(f"image file {path} does not exist; check data.root.") from e
    except Exception as e:  # PIL raises several types for corrupt files
        raise DatasetError(f"cannot read image {path}: {e}; re-download or remove it.") from e
    if crop_bottom:
        w, h = img.size
        if h <= crop_bottom:  # no banner to cut (real FGVC-Aircraft images are ~700 px tall)
            warnings.warn(
                f"an image {h} pixels tall is not cropped: the {crop_bottom}-pixel banner would "
                "leave nothing of it.",
                stacklevel=2,
            )
            return img
        img = img.crop((0, 0, w, h - crop_bottom))
    return img


DatasetFactory = Callable[..., LabeledImages]
DATASETS: dict[str, DatasetFactory] = {}


def register(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Class decorator: make a dataset available as ``data.name = name``."""

    def wrap(factory: DatasetFactory) -> DatasetFactory:
        DATASETS[name] = factory
        return factory

    return wrap
