"""Stanford Cars in torchvision's layout (the original devkit plus the test labels file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from carrot.data._parse import (
    check_split,
    find_root,
    load_mat,
    mat_ints,
    mat_strings,
    reject_unknown,
)
from carrot.data.base import DatasetError, LabeledImages, load_rgb, register

__all__ = ["StanfordCars"]

_TEST_ANNOS = "cars_test_annos_withlabels.mat"


@register("cars")
class StanfordCars(LabeledImages):
    """Stanford Cars: 196 make/model/year classes, 8,144 train / 8,041 test images.

    Expects ``stanford_cars/`` holding ``devkit/cars_meta.mat`` (``class_names``),
    ``devkit/cars_train_annos.mat``, ``cars_test_annos_withlabels.mat`` (also accepted under
    ``devkit/``), ``cars_train/`` and ``cars_test/``. Each annotation file holds a struct array
    ``annotations`` whose entries have ``fname`` and a 1-based ``class`` (the bounding box fields are
    ignored).

    Args:
        root: ``stanford_cars/`` or the folder that contains it.
        split: ``"train"`` or ``"test"``.
        **options: None are accepted.

    Attributes:
        classes: ``class_names`` from ``cars_meta.mat``, by label (``class - 1``).
        paths: Image file of each item.
    """

    def __init__(self, root: Path | None, split: str = "train", **options: Any) -> None:
        reject_unknown("cars", options, ())
        self.split = check_split(split)
        self.root = find_root(
            root,
            folder="stanford_cars",
            markers=("devkit", "cars_train", "cars_test"),
            dataset="Stanford Cars",
        )
        devkit = self.root / "devkit"
        meta_path = devkit / "cars_meta.mat"
        meta = load_mat(meta_path, ["class_names"], expected="the 196 class names in 'class_names'")
        self.classes = mat_strings(meta_path, "class_names", meta["class_names"])

        if self.split == "train":
            annos_path, images = devkit / "cars_train_annos.mat", self.root / "cars_train"
        else:
            annos_path, images = self.root / _TEST_ANNOS, self.root / "cars_test"
            if not annos_path.is_file() and (devkit / _TEST_ANNOS).is_file():
                annos_path = devkit / _TEST_ANNOS
        expected = "a struct array 'annotations' with fields 'fname' and 'class'"
        annos = np.atleast_1d(
            load_mat(annos_path, ["annotations"], expected=expected)["annotations"]
        )
        names = annos.dtype.names or ()
        if "fname" not in names or "class" not in names:
            raise DatasetError(
                f"{annos_path}: 'annotations' has fields {list(names)}, expected {expected}; fix "
                "the file or extract the dataset archive again."
            )
        fnames = mat_strings(annos_path, "annotations.fname", annos["fname"])
        cls = mat_ints(
            annos_path, "annotations.class", annos["class"], low=1, high=len(self.classes)
        )
        self.paths = [images / f for f in fnames]
        self.labels = cls - 1

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])
