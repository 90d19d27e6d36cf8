"""FGVC-Aircraft (2013b) in its official layout, with the copyright banner cropped off."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from carrot.data._parse import (
    check_choice,
    check_split,
    find_root,
    keyed,
    read_lines,
    read_rows,
    reject_unknown,
)
from carrot.data.base import DatasetError, LabeledImages, load_rgb, register

__all__ = ["BANNER_PIXELS", "FGVCAircraft"]

BANNER_PIXELS = 20
"""Height of the copyright banner at the bottom of every FGVC-Aircraft image."""

_CLASS_FILES = {
    "variant": "variants.txt",
    "family": "families.txt",
    "manufacturer": "manufacturers.txt",
}
_TRAIN_SPLITS = ("trainval", "train")


@register("aircraft")
class FGVCAircraft(LabeledImages):
    """FGVC-Aircraft: 10,000 images of 100 variants / 70 families / 30 manufacturers.

    Its official validation split is ``val`` (3,333 images): ``split="val"`` reads it, and
    ``data.val_split=official`` trains on ``train`` (3,334) and validates on ``val``.

    Expects the official archive extracted as ``fgvc-aircraft-2013b/`` with everything under
    ``data/``: ``images/<image id>.jpg``, the class lists ``variants.txt``, ``families.txt``,
    ``manufacturers.txt`` (one name per line, names may contain spaces) and the split files
    ``images_<level>_<split>.txt`` (lines ``<image id> <class name>``).

    Args:
        root: ``fgvc-aircraft-2013b/`` or the folder that contains it.
        split: ``"train"``, ``"val"`` or ``"test"``.
        annotation_level: ``"variant"`` (100 classes), ``"family"`` (70) or ``"manufacturer"`` (30).
        train_split: Which official file ``split="train"`` reads: ``"trainval"`` (6,667 images,
            the standard FGVC protocol) or ``"train"`` (3,334; ``val`` is then held out).
        crop_banner: Cut the bottom 20-pixel copyright banner off every image (torchvision keeps
            it). Labels are unaffected.
        **unknown: Rejected with a ``ValueError`` listing the options above.

    Attributes:
        classes: Names from the level's class list, by label.
        paths: Image file of each item.
    """

    official_train_options: ClassVar[dict[str, Any]] = {"train_split": "train"}
    official_val = "val"

    def __init__(
        self,
        root: Path | None,
        split: str = "train",
        *,
        annotation_level: str = "variant",
        train_split: str = "trainval",
        crop_banner: bool = True,
        **unknown: Any,
    ) -> None:
        reject_unknown("aircraft", unknown, ("annotation_level", "train_split", "crop_banner"))
        self.split = check_split(split, ("train", "val", "test"))
        self.annotation_level = check_choice(
            "annotation_level", annotation_level, tuple(_CLASS_FILES)
        )
        self.train_split = check_choice("train_split", train_split, _TRAIN_SPLITS)
        if not isinstance(crop_banner, bool):
            raise ValueError(f"crop_banner must be true or false, got {crop_banner!r}.")
        self.crop_bottom = BANNER_PIXELS if crop_banner else 0
        self.root = find_root(
            root,
            folder="fgvc-aircraft-2013b",
            markers=("data/variants.txt", "data/images"),
            dataset="FGVC-Aircraft",
        )
        data = self.root / "data"

        classes_path = data / _CLASS_FILES[self.annotation_level]
        self.classes = []
        class_to_idx: dict[str, int] = {}
        first_line: dict[str, int] = {}
        for n, name in read_lines(
            classes_path, expected=f"one {self.annotation_level} name per line"
        ):
            name = " ".join(name.split())  # tolerate tabs or doubled spaces
            if name in class_to_idx:
                raise DatasetError(
                    f"{classes_path}, line {n}: {self.annotation_level} {name!r} appears twice "
                    f"(first on line {first_line[name]}); fix the file or extract the "
                    "dataset archive again."
                )
            class_to_idx[name], first_line[name] = len(self.classes), n
            self.classes.append(name)

        which = self.train_split if self.split == "train" else self.split
        list_path = data / f"images_{self.annotation_level}_{which}.txt"
        rows = keyed(
            read_rows(list_path, ("image_id", self.annotation_level), rest=True), "image id"
        ).values()
        self.paths = []
        labels = []
        for row in rows:
            image_id, name = row.fields[0], " ".join(row.fields[1].split())
            if not image_id.isdigit():
                raise row.error(f"image id must be digits (like 1025794), got {image_id!r}")
            if name not in class_to_idx:
                raise row.error(f"{self.annotation_level} {name!r} is not listed in {classes_path}")
            self.paths.append(data / "images" / f"{image_id}.jpg")
            labels.append(class_to_idx[name])
        self.labels = np.asarray(labels, dtype=np.int64)

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index], crop_bottom=self.crop_bottom)
