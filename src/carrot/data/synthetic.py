"""A seeded synthetic fine-grained dataset: many classes in groups of near look-alikes.

Every image is a smooth colour pattern. A super-class fixes the coarse pattern; its classes differ
only by a finer pattern of amplitude ``separation = 1 - difficulty`` (relative to the super-class
pattern), while every image adds its own fine pattern, a small shift, a contrast change and pixel
noise. At difficulty 0 classes are easy to tell apart; as it approaches 1 the classes of a
super-class become indistinguishable, like species of one genus.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from carrot.data.base import LabeledImages, register

__all__ = ["SyntheticFineGrained", "generate"]

_DEFAULTS: dict[str, Any] = {
    "num_superclasses": 20,
    "classes_per_superclass": 5,
    "train_per_class": 60,
    "test_per_class": 30,
    "difficulty": 0.5,
    "image_size": 32,
    "seed": 0,
}


def _smooth(n: int, grid: int, size: int, gen: torch.Generator) -> Tensor:
    """n random 3-channel fields, smooth at the scale of ``size / grid`` pixels, unit RMS."""
    coarse = torch.randn(n, 3, grid, grid, generator=gen)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return field / field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()


@lru_cache(maxsize=4)
def generate(
    num_superclasses: int,
    classes_per_superclass: int,
    train_per_class: int,
    test_per_class: int,
    difficulty: float,
    image_size: int,
    seed: int,
) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels, superclass_of_class)``; images
    are uint8 (N, 3, S, S). Deterministic in its arguments."""
    gen = torch.Generator().manual_seed(seed)
    s = image_size
    n_classes = num_superclasses * classes_per_superclass
    supers = _smooth(num_superclasses, 4, s, gen)
    details = _smooth(n_classes, 8, s, gen)
    superclass = np.repeat(np.arange(num_superclasses), classes_per_superclass)
    prototypes = supers[torch.from_numpy(superclass)] + (1.0 - difficulty) * details  # (N, 3, S, S)

    def draw(per_class: int) -> tuple[Tensor, np.ndarray]:
        labels = np.repeat(np.arange(n_classes), per_class)
        n = len(labels)
        x = prototypes[torch.from_numpy(labels)]
        shifts = torch.randint(-2, 3, (n, 2), generator=gen)
        x = torch.stack(
            [
                torch.roll(img, (int(a), int(b)), dims=(1, 2))
                for img, (a, b) in zip(x, shifts, strict=True)
            ]
        )
        contrast = 1.0 + 0.15 * torch.randn(n, 1, 1, 1, generator=gen)
        x = (
            contrast * x
            + 0.5 * _smooth(n, 8, s, gen)
            + 0.25 * torch.randn(n, 3, s, s, generator=gen)
        )
        return (x * 40.0 + 128.0).round().clamp(0, 255).to(torch.uint8), labels

    train_x, train_y = draw(train_per_class)
    test_x, test_y = draw(test_per_class)
    return train_x, train_y, test_x, test_y, superclass


_MAX_VALUES = 2**29
"""Values (images × 3 × S²) of the larger split, generated as float32 (2 GiB per tensor, a few
at once): far above the default 100 classes × 60 × 3 × 32² (18 M), bounded before allocation."""


def _check_size(params: dict[str, Any]) -> None:
    """One line, before anything is allocated, when the options imply more than _MAX_VALUES."""
    n_classes = params["num_superclasses"] * params["classes_per_superclass"]
    images = n_classes * max(params["train_per_class"], params["test_per_class"])
    values = images * 3 * params["image_size"] ** 2
    if values > _MAX_VALUES:
        raise ValueError(
            "data.options of the synthetic set must imply at most "
            f"{_MAX_VALUES:,} values per split (classes × images per class × 3 × image_size²), "
            f"got {n_classes} classes × {images // n_classes} images × 3 × "
            f"{params['image_size']}² = {values:,}; lower num_superclasses, "
            "classes_per_superclass, train_per_class, test_per_class or image_size."
        )


@register("synthetic")
class SyntheticFineGrained(LabeledImages):
    """The synthetic fine-grained set; ``data.options`` may set any of: num_superclasses (20),
    classes_per_superclass (5), train_per_class (60), test_per_class (30), difficulty (0.5, in
    [0, 1]), image_size (32), seed (0, the dataset's own seed, independent of the run's).

    Items are uint8 tensors (3, S, S). ``superclass`` gives each class's super-class.
    """

    channels = 3
    flip_ok = True
    photo = False
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, *, root: Path | None = None, split: str, **options: Any) -> None:
        unknown = set(options) - set(_DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown synthetic data.options {sorted(unknown)}; valid: {sorted(_DEFAULTS)}."
            )
        params = {**_DEFAULTS, **options}
        for key in (
            "num_superclasses",
            "classes_per_superclass",
            "train_per_class",
            "test_per_class",
            "image_size",
        ):
            if not isinstance(params[key], int) or params[key] < 1:
                raise ValueError(
                    f"data.options.{key} must be a positive integer, got {params[key]!r}."
                )
        if params["num_superclasses"] * params["classes_per_superclass"] < 2:
            raise ValueError("the synthetic set needs at least two classes.")
        _check_size(params)
        if not 0.0 <= float(params["difficulty"]) <= 1.0:
            raise ValueError(
                f"data.options.difficulty must be in [0, 1], got {params['difficulty']!r}."
            )
        params["difficulty"] = float(params["difficulty"])
        train_x, train_y, test_x, test_y, superclass = generate(**params)
        self.images, self.labels = (train_x, train_y) if split == "train" else (test_x, test_y)
        self.superclass = superclass
        self.classes = [f"s{sc:02d}-c{c:03d}" for c, sc in enumerate(superclass)]

    def load(self, index: int) -> Tensor:
        return self.images[index]
