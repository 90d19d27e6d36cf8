"""Oxford Flowers-102 in torchvision's layout (the official files in ``flowers-102/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from carrot.data._parse import (
    check_choice,
    check_split,
    find_root,
    load_mat,
    mat_ints,
    reject_unknown,
)
from carrot.data.base import LabeledImages, load_rgb, register

__all__ = ["Flowers102"]

NUM_CLASSES = 102
_TRAIN_SPLITS = ("trainval", "train")


def _class_names() -> list[str]:
    """The 102 flower names in label order, as torchvision lists them."""
    from torchvision.datasets import Flowers102 as TorchvisionFlowers102

    names = [str(n) for n in TorchvisionFlowers102.classes]
    if len(names) != NUM_CLASSES:
        raise RuntimeError(
            f"torchvision.datasets.Flowers102.classes has {len(names)} names, expected "
            f"{NUM_CLASSES}; install a torchvision version that lists all of them."
        )
    return names


@register("flowers102")
class Flowers102(LabeledImages):
    """Oxford 102 Category Flowers: 1,020 train + 1,020 val / 6,149 test images.

    Expects ``flowers-102/`` holding ``jpg/image_00001.jpg`` ..., ``imagelabels.mat``
    (``labels``, 1-based, one per image number) and ``setid.mat`` (``trnid``, ``valid``,
    ``tstid``: 1-based image numbers). Its official validation split is ``valid``:
    ``split="val"`` reads it, and ``data.val_split=official`` trains on ``trnid`` and validates
    on ``valid``.

    Args:
        root: ``flowers-102/`` or the folder that contains it.
        split: ``"train"``, ``"val"`` (``valid``) or ``"test"``.
        train_split: What ``split="train"`` reads: ``"trainval"`` (``trnid`` then ``valid``,
            2,040 images, the usual FGVC protocol) or ``"train"`` (``trnid`` only).
        **unknown: Rejected with a ``ValueError`` listing the options above.

    Attributes:
        classes: The 102 flower names (torchvision's list), by label (``labels - 1``).
        paths: Image file of each item.
    """

    official_train_options: ClassVar[dict[str, Any]] = {"train_split": "train"}
    official_val = "valid"

    def __init__(
        self,
        root: Path | None,
        split: str = "train",
        *,
        train_split: str = "trainval",
        **unknown: Any,
    ) -> None:
        reject_unknown("flowers102", unknown, ("train_split",))
        self.split = check_split(split, ("train", "val", "test"))
        self.train_split = check_choice("train_split", train_split, _TRAIN_SPLITS)
        self.root = find_root(
            root,
            folder="flowers-102",
            markers=("imagelabels.mat", "setid.mat", "jpg"),
            dataset="Flowers-102",
        )
        labels_path = self.root / "imagelabels.mat"
        all_labels = mat_ints(
            labels_path,
            "labels",
            load_mat(labels_path, ["labels"], expected="1-based 'labels', one per image")["labels"],
            low=1,
            high=NUM_CLASSES,
        )
        setid_path = self.root / "setid.mat"
        keys = {
            "train": ["trnid"],
            "trainval": ["trnid", "valid"],
            "val": ["valid"],
            "test": ["tstid"],
        }[self.train_split if self.split == "train" else self.split]
        setid = load_mat(setid_path, keys, expected="'trnid', 'valid' and 'tstid' image numbers")
        ids = np.concatenate(
            [mat_ints(setid_path, k, setid[k], low=1, high=len(all_labels)) for k in keys]
        )
        self.classes = _class_names()
        self.paths = [self.root / "jpg" / f"image_{i:05d}.jpg" for i in ids.tolist()]
        self.labels = all_labels[ids - 1] - 1

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])
