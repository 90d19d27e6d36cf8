"""imagefolder: train/<class>/ and test/<class>/ (or val/), classes from train, and errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_trees import H, W, garbage, jpeg, lines
from PIL import Image

from carrot.data import DATASETS, DatasetError, build_dataset
from carrot.data.imagefolder import ImageFolder
from cli_run import tiny_images

TRAIN = {"fox": 2, "cat": 3, "dog": 1}
TEST = {"cat": 1, "fox": 2}  # no dog in test: allowed


def make_folder(root: Path, test_name: str = "test") -> Path:
    for split, counts in (("train", TRAIN), (test_name, TEST)):
        for name, n in counts.items():
            for i in range(n):
                jpeg(root / split / name / f"{name}_{i}.jpg")
    lines(root / "train" / "cat" / "notes.txt", ["not an image"])
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "pets")


def test_classes_from_train_folders(root: Path) -> None:
    train, test = ImageFolder(root, "train"), ImageFolder(root, "test")
    assert train.classes == test.classes == ["cat", "dog", "fox"]
    assert len(train) == 6 and len(test) == 3
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(test.labels, [0, 2, 2])
    assert train.labels.dtype == np.int64
    assert test.paths[0] == root / "test" / "cat" / "cat_0.jpg"


def test_val_when_there_is_no_test(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", test_name="val")
    ds = ImageFolder(root, "test")
    assert ds.paths[0] == root / "val" / "cat" / "cat_0.jpg"
    np.testing.assert_array_equal(ds.labels, [0, 2, 2])


def test_load_gives_rgb(root: Path) -> None:
    image, label = ImageFolder(root, "train")[3]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (W, H)
    assert label == 1


def test_registered_as_imagefolder(root: Path) -> None:
    assert DATASETS["imagefolder"] is ImageFolder
    assert len(build_dataset("imagefolder", root=root, split="test")) == 3


def test_root_none_says_to_set_data_root() -> None:
    with pytest.raises(DatasetError, match=r"imagefolder needs data\.root.*train/<class>/"):
        ImageFolder(None, "train")


def test_unknown_option(root: Path) -> None:
    with pytest.raises(ValueError, match=r"'imagefolder' must be none.*\['extensions'\]"):
        ImageFolder(root, "train", extensions=(".jpg",))


def test_no_train_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"folder .*/train does not exist"):
        ImageFolder(tmp_path, "test")


def test_no_test_folder(root: Path) -> None:
    (root / "test").rename(root / "testing")
    with pytest.raises(DatasetError, match=r"neither .*/test nor .*/val exists"):
        ImageFolder(root, "test")


def test_test_class_not_in_train(root: Path) -> None:
    jpeg(root / "test" / "owl" / "owl_0.jpg")
    with pytest.raises(DatasetError, match=r"test/owl is a class folder with no counterpart"):
        ImageFolder(root, "test")


def test_train_class_without_images(root: Path) -> None:
    (root / "train" / "eel").mkdir()
    with pytest.raises(
        DatasetError,
        match=r"/train: Found no valid file for the classes eel.*needs at least one image",
    ):
        ImageFolder(root, "train")


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match=r"/train has no class folders"):
        ImageFolder(tmp_path, "train")


def test_test_without_images(root: Path) -> None:
    for p in (root / "test").rglob("*.jpg"):
        p.unlink()
    with pytest.raises(DatasetError, match=r"/test holds no images with extensions"):
        ImageFolder(root, "test")


def test_unreadable_image(root: Path) -> None:
    ds = ImageFolder(root, "train")
    garbage(ds.paths[4])
    with pytest.raises(DatasetError, match=r"cannot read image .*fox_0\.jpg"):
        ds.load(4)


def test_hidden_folders_and_files_are_not_data(root: Path) -> None:
    for hidden in (".ipynb_checkpoints", ".git"):
        jpeg(root / "train" / hidden / "stray.jpg")
        jpeg(root / "test" / hidden / "stray.jpg")
    jpeg(root / "train" / "cat" / ".ipynb_checkpoints" / "cat_0-checkpoint.jpg")
    jpeg(root / "train" / "fox" / "._fox_0.jpg")  # a macOS resource fork
    train, test = ImageFolder(root, "train"), ImageFolder(root, "test")
    assert train.classes == test.classes == ["cat", "dog", "fox"]
    assert len(train) == 6 and len(test) == 3
    assert not any(part.startswith(".") for p in train.paths for part in p.relative_to(root).parts)


def test_only_hidden_folders_is_no_classes(tmp_path: Path) -> None:
    jpeg(tmp_path / "train" / ".ipynb_checkpoints" / "a.jpg")
    with pytest.raises(DatasetError, match="has no class folders"):
        ImageFolder(tmp_path, "train")


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs")
def test_training_follows_symlinked_folders_and_skips_fifos(tmp_path: Path) -> None:
    from carrot.data.imagefolder import ImageFolder

    data = tiny_images(tmp_path / "pets", n_train=2)
    elsewhere = tiny_images(tmp_path / "more", n_train=2)
    (data / "train" / "cat" / "more").symlink_to(elsewhere / "train" / "cat")
    os.mkfifo(data / "train" / "dog" / "pipe.png")
    split = ImageFolder(root=data, split="train")
    names = sorted(str(p.relative_to(data / "train")) for p in split.paths)
    assert "cat/more/0.png" in names and "dog/pipe.png" not in names
    assert len(names) == 3 * 2 + 2
