"""CUB-200-2011 in its official layout, split by its own ``train_test_split.txt``.

The index-file format read here (``images.txt``, ``image_class_labels.txt``,
``train_test_split.txt``, ``classes.txt``) is shared with NABirds (:mod:`carrot.data.nabirds`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from carrot.data._parse import check_split, find_root, keyed, read_rows, reject_unknown, same_keys
from carrot.data.base import LabeledImages, load_rgb, register

__all__ = ["CUB", "CubStyleIndex", "read_cub_style_index"]


class CubStyleIndex(NamedTuple):
    """One split of a dataset in the CUB-200-2011 file format.

    Attributes:
        paths: Image files of the split, in ``images.txt`` order.
        class_ids: Class id (as in ``classes.txt``) of each image of the split. Shape: (n,).
        used_class_ids: Sorted class ids that label at least one image in either split. Shape: (N,).
        class_names: Every entry of ``classes.txt``, by class id.
        classes_path: ``classes.txt``, for messages.
    """

    paths: list[Path]
    class_ids: np.ndarray
    used_class_ids: np.ndarray
    class_names: dict[int, str]
    classes_path: Path


def read_cub_style_index(top: Path, split: str, *, integer_ids: bool) -> CubStyleIndex:
    """Read and cross-check the four index files of the CUB-200-2011 format.

    Args:
        top: The dataset's top folder (holds ``images/`` and the ``.txt`` files).
        split: ``"train"`` (``is_training_image`` 1) or ``"test"`` (0).
        integer_ids: Image ids must be integers (CUB) rather than any token (NABirds' UUIDs).

    Raises:
        DatasetError: A file is missing, a line is malformed, an image id is in one file but not
            another, or a class id is not in ``classes.txt``.
    """
    images_path = top / "images.txt"
    labels_path = top / "image_class_labels.txt"
    split_path = top / "train_test_split.txt"
    classes_path = top / "classes.txt"

    images = keyed(read_rows(images_path, ("image_id", "image_path"), rest=True), "image id")
    labels = keyed(read_rows(labels_path, ("image_id", "class_id")), "image id")
    is_train = keyed(read_rows(split_path, ("image_id", "is_training_image")), "image id")
    class_names: dict[int, str] = {}
    for row in read_rows(classes_path, ("class_id", "class_name"), rest=True):
        cid = row.int_field(0, "class id")
        if cid in class_names:
            raise row.error(f"class id {cid} appears twice")
        class_names[cid] = row.fields[1]

    if integer_ids:
        for row in images.values():
            row.int_field(0, "image id")
    same_keys(images, images_path, labels, labels_path, "image id")
    same_keys(images, images_path, is_train, split_path, "image id")

    class_of: dict[str, int] = {}
    for key, row in labels.items():
        cid = row.int_field(1, "class id")
        if cid not in class_names:
            raise row.error(
                f"class id {cid} is not in {classes_path} "
                f"(which has ids {min(class_names)}..{max(class_names)})"
            )
        class_of[key] = cid

    want = 1 if split == "train" else 0
    paths: list[Path] = []
    split_ids: list[int] = []
    for key, row in images.items():
        flag_row = is_train[key]
        flag = flag_row.int_field(1, "is_training_image")
        if flag not in (0, 1):
            raise flag_row.error(f"is_training_image must be 1 (train) or 0 (test), got {flag}")
        if flag == want:
            paths.append(top / "images" / row.fields[1])
            split_ids.append(class_of[key])
    return CubStyleIndex(
        paths=paths,
        class_ids=np.asarray(split_ids, dtype=np.int64),
        used_class_ids=np.unique(np.fromiter(class_of.values(), dtype=np.int64)),
        class_names=class_names,
        classes_path=classes_path,
    )


@register("cub")
class CUB(LabeledImages):
    """Caltech-UCSD Birds-200-2011: 200 species, 5,994 train / 5,794 test images.

    Expects the official archive extracted as ``CUB_200_2011/`` (``images/``, ``images.txt``,
    ``image_class_labels.txt``, ``train_test_split.txt``, ``classes.txt``). The split is the
    dataset's own ``train_test_split.txt``, not the metric-learning split by class.

    Args:
        root: ``CUB_200_2011/`` or the folder that contains it.
        split: ``"train"`` or ``"test"``.
        **options: None are accepted.

    Attributes:
        classes: Names from ``classes.txt`` (``"001.Black_footed_Albatross"``), by label; label
            ``i`` is the ``i``-th class id in ascending order.
        paths: Image file of each item.
    """

    def __init__(self, root: Path | None, split: str = "train", **options: Any) -> None:
        reject_unknown("cub", options, ())
        self.split = check_split(split)
        self.root = find_root(
            root,
            folder="CUB_200_2011",
            markers=("images.txt", "classes.txt", "images"),
            dataset="CUB-200-2011",
        )
        index = read_cub_style_index(self.root, self.split, integer_ids=True)
        ids = sorted(index.class_names)
        self.classes = [index.class_names[c] for c in ids]
        self.paths = index.paths
        self.labels = np.searchsorted(np.asarray(ids, dtype=np.int64), index.class_ids).astype(
            np.int64
        )

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])
