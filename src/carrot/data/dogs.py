"""Stanford Dogs in its official layout (``images.tar`` and ``lists.tar`` extracted together)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

__all__ = ["StanfordDogs"]

_FIX = "fix the file or extract lists.tar again"


@register("dogs")
class StanfordDogs(LabeledImages):
    """Stanford Dogs: 120 breeds, 12,000 train / 8,580 test images.

    Expects a folder (conventionally ``stanford_dogs/``) holding ``Images/<wnid>-<breed>/*.jpg``
    and the lists ``train_list.mat`` / ``test_list.mat`` with ``file_list`` (paths relative to
    ``Images/``) and 1-based ``labels``.

    Args:
        root: The folder with ``Images/`` and the lists, or a folder containing it as
            ``stanford_dogs/``.
        split: ``"train"`` or ``"test"``.
        **options: None are accepted.

    Attributes:
        classes: Breed names from the image folders, wnid prefix removed
            (``n02085620-Chihuahua`` -> ``Chihuahua``), by label (``labels - 1``).
        paths: Image file of each item.
    """

    def __init__(self, root: Path | None, split: str = "train", **options: Any) -> None:
        reject_unknown("dogs", options, ())
        self.split = check_split(split)
        self.root = find_root(
            root,
            folder="stanford_dogs",
            markers=("train_list.mat", "test_list.mat", "Images"),
            dataset="Stanford Dogs",
        )
        path = self.root / f"{self.split}_list.mat"
        mat = load_mat(
            path, ["file_list", "labels"], expected="'file_list' and 1-based 'labels' (lists.tar)"
        )
        files = mat_strings(path, "file_list", mat["file_list"])
        labels = mat_ints(path, "labels", mat["labels"], low=1)
        if not files:
            raise DatasetError(
                f"{path}: 'file_list' is empty, expected the {self.split} images; {_FIX}."
            )
        if len(files) != len(labels):
            raise DatasetError(
                f"{path}: 'file_list' has {len(files)} entries but 'labels' has {len(labels)}; "
                f"expected one label per file; {_FIX}."
            )

        # The breed of a label is the folder its files are in; every label must have one folder.
        folder_of: dict[int, tuple[str, int]] = {}
        for i, (file, label) in enumerate(zip(files, labels.tolist(), strict=True)):
            folder, sep, _ = file.replace("\\", "/").partition("/")
            if not (folder and sep):
                raise DatasetError(
                    f"{path}: entry {i + 1} of 'file_list' is {file!r}, expected "
                    f"'<wnid>-<breed>/<image>.jpg'; {_FIX}."
                )
            seen = folder_of.setdefault(label, (folder, i))
            if seen[0] != folder:
                raise DatasetError(
                    f"{path}: entry {i + 1} has label {label} and folder {folder!r}, but entry "
                    f"{seen[1] + 1} has the same label and folder {seen[0]!r}; expected one folder "
                    f"per label; {_FIX}."
                )
        missing = sorted(set(range(1, max(folder_of, default=0) + 1)) - set(folder_of))
        if missing:
            raise DatasetError(
                f"{path}: no file has label {missing[0]}, so its breed is unknown; expected labels "
                f"1..{max(folder_of)} each used at least once; {_FIX}."
            )
        self.classes = [_breed(folder_of[k][0]) for k in range(1, len(folder_of) + 1)]
        self.paths = [self.root / "Images" / f for f in files]
        self.labels = labels - 1

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])


def _breed(folder: str) -> str:
    """``n02085620-Chihuahua`` -> ``Chihuahua``; a folder without a wnid prefix is kept whole."""
    wnid, sep, name = folder.partition("-")
    return name if sep and wnid[:1] == "n" and wnid[1:].isdigit() and name else folder
