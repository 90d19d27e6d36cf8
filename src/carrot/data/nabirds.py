"""NABirds in its official layout: the CUB-200-2011 file format plus a class hierarchy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from carrot.data._parse import check_split, find_root, read_rows, reject_unknown
from carrot.data.base import DatasetError, LabeledImages, load_rgb, register
from carrot.data.cub import read_cub_style_index

__all__ = ["NABirds"]


@register("nabirds")
class NABirds(LabeledImages):
    """NABirds: 555 leaf categories of North American birds, 23,929 train / 24,633 test images.

    Expects the official archive extracted as ``nabirds/`` (``images/``, ``images.txt``,
    ``image_class_labels.txt``, ``train_test_split.txt``, ``classes.txt``, ``hierarchy.txt``).
    ``classes.txt`` lists the whole taxonomy (1,011 nodes); the classes here are only the ids that
    label an image, mapped to ``0..N-1`` in ascending id order.

    Args:
        root: ``nabirds/`` or the folder that contains it.
        split: ``"train"`` or ``"test"``.
        **options: None are accepted.

    Attributes:
        classes: Names from ``classes.txt``, by label.
        class_ids: The ``classes.txt`` id of each label. Shape: (N,).
        parents: The ``classes.txt`` id of each label's parent in ``hierarchy.txt``; super-class
            labels are ``np.unique(parents, return_inverse=True)[1]``. Shape: (N,). None without
            ``hierarchy.txt`` (the labels do not need it).
        paths: Image file of each item.
    """

    def __init__(self, root: Path | None, split: str = "train", **options: Any) -> None:
        reject_unknown("nabirds", options, ())
        self.split = check_split(split)
        self.root = find_root(
            root,
            folder="nabirds",
            markers=("images.txt", "hierarchy.txt", "images"),
            dataset="NABirds",
        )
        index = read_cub_style_index(self.root, self.split, integer_ids=False)
        self.class_ids = index.used_class_ids
        self.classes = [index.class_names[int(c)] for c in self.class_ids]
        self.paths = index.paths
        self.labels = np.searchsorted(self.class_ids, index.class_ids).astype(np.int64)
        hierarchy = self.root / "hierarchy.txt"
        self.parents: np.ndarray | None = (
            self._read_parents(hierarchy, index.class_names) if hierarchy.exists() else None
        )

    def _read_parents(self, path: Path, names: dict[int, str]) -> np.ndarray:
        parent_of: dict[int, int] = {}
        for row in read_rows(path, ("child_id", "parent_id")):
            child, parent = row.int_field(0, "child id"), row.int_field(1, "parent id")
            for cid in (child, parent):
                if cid not in names:
                    raise row.error(f"class id {cid} is not in {path.with_name('classes.txt')}")
            if child in parent_of:
                raise row.error(f"class id {child} has a second parent")
            parent_of[child] = parent
        missing = [int(c) for c in self.class_ids if int(c) not in parent_of]
        if missing:
            raise DatasetError(
                f"{path} gives no parent for class id {missing[0]} ({names[missing[0]]!r}), which "
                "labels images; expected a line '<child_id> <parent_id>' for every class; fix the "
                "file or extract the dataset archive again."
            )
        return np.asarray([parent_of[int(c)] for c in self.class_ids], dtype=np.int64)

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])
