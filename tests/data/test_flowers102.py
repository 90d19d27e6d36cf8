"""Flowers-102: torchvision's layout, trainval vs train, flower names, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_trees import H, W, garbage, jpeg, savemat
from PIL import Image

from carrot.data import DATASETS, DatasetError, build_dataset
from carrot.data.flowers102 import Flowers102

LABELS = [77, 77, 1, 102, 1, 77, 102, 1, 77, 102]  # 1-based, of image_00001 .. image_00010
SETID = {"trnid": [3, 1], "valid": [4, 2], "tstid": [5, 6, 7, 8, 9, 10]}


def make_flowers(parent: Path) -> Path:
    top = parent / "flowers-102"
    for i in range(1, len(LABELS) + 1):
        jpeg(top / "jpg" / f"image_{i:05d}.jpg")
    savemat(top / "imagelabels.mat", {"labels": np.array([LABELS], dtype=np.uint8)})
    savemat(top / "setid.mat", {k: np.array([v], dtype=np.uint16) for k, v in SETID.items()})
    return top


@pytest.fixture
def top(tmp_path: Path) -> Path:
    return make_flowers(tmp_path)


def test_default_trains_on_train_and_val(top: Path) -> None:
    train, test = Flowers102(top, "train"), Flowers102(top, "test")
    assert len(train) == 4 and len(test) == 6
    assert [p.name for p in train.paths] == [
        "image_00003.jpg",
        "image_00001.jpg",
        "image_00004.jpg",
        "image_00002.jpg",
    ]
    np.testing.assert_array_equal(train.labels, [0, 76, 101, 76])
    np.testing.assert_array_equal(test.labels, [0, 76, 101, 0, 76, 101])
    assert train.labels.dtype == np.int64


def test_train_split_train_is_trnid_only(top: Path) -> None:
    ds = Flowers102(top, "train", train_split="train")
    assert [p.name for p in ds.paths] == ["image_00003.jpg", "image_00001.jpg"]


def test_classes_are_the_102_flower_names(top: Path) -> None:
    ds = Flowers102(top, "test")
    assert ds.num_classes == 102
    assert ds.classes[0] == "pink primrose" and ds.classes[76] == "passion flower"


def test_load_gives_rgb(top: Path) -> None:
    image, label = Flowers102(top, "test")[2]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (W, H)
    assert label == 101


def test_root_may_be_the_parent_folder(top: Path) -> None:
    a, b = Flowers102(top, "train"), Flowers102(top.parent, "train")
    assert a.root == b.root == top and a.paths == b.paths


def test_registered_as_flowers102(top: Path) -> None:
    assert DATASETS["flowers102"] is Flowers102
    assert len(build_dataset("flowers102", root=top, split="train", train_split="train")) == 2


def test_root_none_says_to_set_data_root() -> None:
    with pytest.raises(DatasetError, match=r"Flowers-102 needs data\.root.*flowers-102/"):
        Flowers102(None, "train")


def test_option_errors(top: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"'flowers102' must be one of \['train_split'\], got unknown \['split_ratio'\]",
    ):
        Flowers102(top, "train", split_ratio=0.5)
    with pytest.raises(
        ValueError, match=r"train_split must be one of \['trainval', 'train'\], got 'val'"
    ):
        Flowers102(top, "train", train_split="val")


def test_missing_setid(top: Path) -> None:
    (top / "setid.mat").unlink()
    with pytest.raises(DatasetError, match=r"setid\.mat does not exist"):
        Flowers102(top, "test")


def test_setid_without_valid(top: Path) -> None:
    savemat(top / "setid.mat", {"trnid": np.array([[1]]), "tstid": np.array([[2]])})
    with pytest.raises(DatasetError, match=r"setid\.mat has no variable 'valid'"):
        Flowers102(top, "train")


def test_label_outside_102(top: Path) -> None:
    savemat(top / "imagelabels.mat", {"labels": np.array([[1, 2, 3, 103, 1, 1, 1, 1, 1, 1]])})
    with pytest.raises(
        DatasetError,
        match=r"imagelabels\.mat: entry 4 of 'labels' is 103, expected an integer in \[1, 102\]",
    ):
        Flowers102(top, "test")


def test_image_number_without_label(top: Path) -> None:
    savemat(top / "setid.mat", {**{k: np.array([v]) for k, v in SETID.items()}, "tstid": [[5, 11]]})
    with pytest.raises(
        DatasetError,
        match=r"setid\.mat: entry 2 of 'tstid' is 11, expected an integer in \[1, 10\]",
    ):
        Flowers102(top, "test")


def test_unreadable_image(top: Path) -> None:
    ds = Flowers102(top, "test")
    garbage(ds.paths[0])
    with pytest.raises(DatasetError, match=r"cannot read image .*image_00005\.jpg"):
        ds.load(0)
