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
    ``Images/``) and 1-based ``labels``, beside ``Images/`` (``lists.tar`` extracted there) or in
    ``lists/``. The breeds are read from both lists, so both splits have the same classes.

    Args:
        root: The folder with ``Images/`` and the lists, or a folder containing it as
            ``stanford_dogs/``.
        split: ``"train"`` or ``"test"``.
        **options: None are accepted.

    Attributes:
        classes: Breed names from the image folders of both lists, wnid prefix removed
            (``n02085620-Chihuahua`` -> ``Chihuahua``), by label (``labels - 1``).
        paths: Image file of each item.
    """

    def __init__(self, root: Path | None, split: str = "train", **options: Any) -> None:
        reject_unknown("dogs", options, ())
        self.split = check_split(split)
        self.root = find_root(
            root,
            folder="stanford_dogs",
            markers=("train_list.mat", "test_list.mat", "Images", "lists"),
            dataset="Stanford Dogs",
        )
        own_path = _list_path(self.root, self.split)
        files, labels = _read_list(own_path, self.split)
        # The breed of a label is the folder its files are in, in either list (a small list may
        # not use every label); every label must have one folder.
        folder_of: dict[int, tuple[str, Path, int]] = {}
        other = "test" if self.split == "train" else "train"
        lists = [(own_path, files, labels.tolist())]
        if (other_path := _list_path(self.root, other)).is_file():
            other_files, other_labels = _read_list(other_path, other)
            lists.append((other_path, other_files, other_labels.tolist()))
        for path, names, ids in lists:
            for i, (file, label) in enumerate(zip(names, ids, strict=True)):
                folder, sep, _ = file.replace("\\", "/").partition("/")
                if not (folder and sep):
                    raise DatasetError(
                        f"{path}: entry {i + 1} of 'file_list' is {file!r}, expected "
                        f"'<wnid>-<breed>/<image>.jpg'; {_FIX}."
                    )
                seen = folder_of.setdefault(label, (folder, path, i))
                if seen[0] != folder:
                    raise DatasetError(
                        f"{path}: entry {i + 1} has label {label} and folder {folder!r}, but entry "
                        f"{seen[2] + 1} of {seen[1].name} has the same label and folder "
                        f"{seen[0]!r}; expected one folder per label; {_FIX}."
                    )
        missing = sorted(set(range(1, max(folder_of, default=0) + 1)) - set(folder_of))
        if missing:
            raise DatasetError(
                f"{own_path}: no file of {' or '.join(p.name for p, _, _ in lists)} has label "
                f"{missing[0]}, so its breed is unknown; expected labels 1..{max(folder_of)} each "
                f"used at least once; {_FIX}."
            )
        self.classes = [_breed(folder_of[k][0]) for k in range(1, len(folder_of) + 1)]
        self.paths = [self.root / "Images" / f for f in files]
        self.labels = labels - 1

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index])


def _list_path(root: Path, split: str) -> Path:
    """``<split>_list.mat`` beside ``Images/`` or in ``lists/`` (the former when neither is)."""
    flat = root / f"{split}_list.mat"
    nested = root / "lists" / f"{split}_list.mat"
    return nested if not flat.is_file() and nested.is_file() else flat


def _read_list(path: Path, split: str) -> tuple[list[str], Any]:
    """``file_list`` and 1-based ``labels`` of a split's list, checked."""
    mat = load_mat(
        path, ["file_list", "labels"], expected="'file_list' and 1-based 'labels' (lists.tar)"
    )
    files = mat_strings(path, "file_list", mat["file_list"])
    labels = mat_ints(path, "labels", mat["labels"], low=1)
    if not files:
        raise DatasetError(f"{path}: 'file_list' is empty, expected the {split} images; {_FIX}.")
    if len(files) != len(labels):
        raise DatasetError(
            f"{path}: 'file_list' has {len(files)} entries but 'labels' has {len(labels)}; "
            f"expected one label per file; {_FIX}."
        )
    return files, labels


def _breed(folder: str) -> str:
    """``n02085620-Chihuahua`` -> ``Chihuahua``; a folder without a wnid prefix is kept whole."""
    wnid, sep, name = folder.partition("-")
    return name if sep and wnid[:1] == "n" and wnid[1:].isdigit() and name else folder
