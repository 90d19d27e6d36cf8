"""Any dataset laid out as ``train/<class>/<image>`` and ``test/<class>/<image>``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from carrot.data._parse import check_split, reject_unknown
from carrot.data.base import DatasetError, LabeledImages, load_rgb, register

__all__ = ["ImageFolder"]


@register("imagefolder")
class ImageFolder(LabeledImages):
    """Images sorted into one folder per class, with a train and a test folder.

    Layout: ``root/train/<class>/<image>`` and ``root/test/<class>/<image>`` (``root/val`` is
    used when there is no ``root/test``). With both ``test/`` and ``val/``, ``val/`` is the
    official validation split (``split="val"``, ``data.val_split=official``). Scanning is torchvision's: class folders sorted by name,
    files with an image extension (``.jpg``, ``.png``, ...) sorted within each, subfolders included.
    The classes are the train folders, in both splits; a test class folder that has no train
    folder is an error, a train class missing from test is not.

    Args:
        root: The folder that holds ``train/`` and ``test/`` (or ``val/``).
        split: ``"train"``, ``"test"`` or ``"val"`` (needs both ``test/`` and ``val/``).
        **options: None are accepted.

    Attributes:
        classes: Train class folder names, sorted; label ``i`` is ``classes[i]``.
        paths: Image file of each item.
    """

    official_val = "val/"

    def __init__(self, root: Path | None, split: str = "train", **options: Any) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

        reject_unknown("imagefolder", options, ())
        self.split = check_split(split, ("train", "test", "val"))
        if root is None:
            raise DatasetError(
                "imagefolder needs data.root: set it to the folder that holds train/<class>/ and "
                "test/<class>/; see docs/datasets.md."
            )
        self.root = Path(root).expanduser()
        train_dir = self.root / "train"
        if not train_dir.is_dir():
            raise DatasetError(
                f"folder {train_dir} does not exist; expected {self.root}/train/<class>/<image> "
                "(and test/ or val/ beside it). Set data.root to the folder that holds train/."
            )
        classes, class_to_idx = _find_classes(train_dir)
        split_dir = train_dir
        if self.split == "val" and not (
            (self.root / "val").is_dir() and (self.root / "test").is_dir()
        ):
            raise DatasetError(
                f"{self.root} has no official validation split: that needs both val/ and test/ "
                "beside train/ (a lone val/ is the test split). Use data.val_split=fraction."
            )
        if self.split != "train":
            split_dir = self.root / ("val" if self.split == "val" else "test")
            if not split_dir.is_dir() and (self.root / "val").is_dir():
                split_dir = self.root / "val"
            if not split_dir.is_dir():
                raise DatasetError(
                    f"neither {self.root / 'test'} nor {self.root / 'val'} exists; expected the "
                    "test images as test/<class>/<image> beside train/."
                )
            extra = sorted(set(_find_classes(split_dir)[0]) - set(classes))
            if extra:
                raise DatasetError(
                    f"{split_dir / extra[0]} is a class folder with no counterpart in {train_dir}; "
                    f"every {self.split} class must also be a train class (rename or remove it)."
                )
        try:
            samples = make_dataset(
                split_dir,
                class_to_idx,
                extensions=IMG_EXTENSIONS,
                allow_empty=self.split != "train",
            )
        except FileNotFoundError as e:  # torchvision: "Found no valid file for the classes ..."
            raise DatasetError(
                f"{split_dir}: {str(e).rstrip('.')}. Every train class folder needs at least one "
                "image: add images or remove the folder."
            ) from e
        if not samples:
            raise DatasetError(
                f"{split_dir} holds no images with extensions {list(IMG_EXTENSIONS)}; expected "
                f"{split_dir}/<class>/<image>."
            )
        # Hidden files and folders (.ipynb_checkpoints/, .git/, macOS ._img.jpg) are not data,
        # nor is anything but a regular file (a FIFO would block the loader forever). Symlinked
        # files and folders are followed (torchvision walks with followlinks=True), as predict does.
        samples = [
            (p, label)
            for p, label in samples
            if not any(part.startswith(".") for part in Path(p).relative_to(split_dir).parts)
            and os.path.isfile(p)
        ]
        if not samples:
            raise DatasetError(
                f"{split_dir} holds no images outside hidden folders; expected "
                f"{split_dir}/<class>/<image>."
            )
        self.classes = classes
        self.paths = [Path(p) for p, _ in samples]
        self.labels = np.asarray([label for _, label in samples], dtype=np.int64)

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])


def _find_classes(directory: Path) -> tuple[list[str], dict[str, int]]:
    """Sorted class folders of ``directory`` and their labels (torchvision's ``find_classes``,
    without hidden folders)."""
    from torchvision.datasets.folder import find_classes

    try:
        classes, _ = find_classes(directory)
    except FileNotFoundError:
        classes = []
    # A hidden folder (.ipynb_checkpoints, .git, .DS_Store's kin) is never a class.
    classes = [c for c in classes if not c.startswith(".")]
    if not classes:
        raise DatasetError(
            f"{directory} has no class folders; expected {directory}/<class>/<image>."
        )
    return classes, {c: i for i, c in enumerate(classes)}
