"""scikit-learn's bundled handwritten digits (1,797 images of 8×8 pixels, 10 classes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from carrot.data.base import LabeledImages, register

__all__ = ["Digits"]


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of the test items: a fixed, seeded ``test_fraction`` of every class."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test[idx[: round(test_fraction * len(idx))]] = True
    return test


@register("digits")
class Digits(LabeledImages):
    """sklearn's ``load_digits``: 8×8 grayscale images, values 0–16 scaled to 0–255.

    It has no official split; a fixed stratified 30% of each class (seed 0) is the test split.
    Items are uint8 tensors of shape (1, 8, 8); the trainer resizes them to ``data.image_size``.
    """

    channels = 1
    flip_ok = False  # a mirrored digit is another glyph
    photo = False
    mean = (0.5,)
    std = (0.5,)

    def __init__(self, *, root: Path | None = None, split: str, **options: Any) -> None:
        if options:
            raise ValueError(f"digits takes no data.options, got {sorted(options)}.")
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)
        labels = np.asarray(bunch.target, dtype=np.int64)
        test = stratified_split(labels, test_fraction=0.3)
        keep = test if split == "test" else ~test
        self.images = torch.from_numpy(np.round(images[keep]).astype(np.uint8))[:, None]
        self.labels = labels[keep]
        self.classes = [str(d) for d in range(10)]

    def load(self, index: int) -> Tensor:
        return self.images[index]
