"""CUB-200-2011: official layout, its own train/test split, and one error per message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_trees import H, W, add_line, del_line, garbage, jpeg, lines, set_line
from PIL import Image

from carrot.data import DATASETS, DatasetError, build_dataset
from carrot.data.cub import CUB

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
# (class id, is_training_image) of images 1..7: the split is per image, not per class.
IMAGES = [(1, 1), (1, 0), (2, 1), (2, 1), (2, 0), (3, 0), (3, 1)]


def make_cub(parent: Path) -> Path:
    top = parent / "CUB_200_2011"
    paths = []
    for i, (cid, _) in enumerate(IMAGES, start=1):
        rel = f"{CLASSES[cid - 1]}/{CLASSES[cid - 1][4:]}_{i:04d}_{i}.jpg"
        jpeg(top / "images" / rel, color=(40 * cid, 10, 10))
        paths.append(rel)
    lines(top / "classes.txt", [f"{k} {name}" for k, name in enumerate(CLASSES, start=1)])
    lines(top / "images.txt", [f"{i} {p}" for i, p in enumerate(paths, start=1)])
    lines(top / "image_class_labels.txt", [f"{i} {c}" for i, (c, _) in enumerate(IMAGES, start=1)])
    lines(top / "train_test_split.txt", [f"{i} {t}" for i, (_, t) in enumerate(IMAGES, start=1)])
    return top


@pytest.fixture
def top(tmp_path: Path) -> Path:
    return make_cub(tmp_path)


def test_splits_come_from_train_test_split_txt(top: Path) -> None:
    train, test = CUB(top, "train"), CUB(top, "test")
    assert len(train) == 4 and len(test) == 3
    assert train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.labels, [0, 1, 1, 2])
    np.testing.assert_array_equal(test.labels, [0, 1, 2])
    assert train.classes == test.classes == CLASSES
    assert [p.name for p in test.paths] == [
        "Black_footed_Albatross_0002_2.jpg",
        "Laysan_Albatross_0005_5.jpg",
        "Sooty_Albatross_0006_6.jpg",
    ]


def test_load_gives_rgb_image_and_label(top: Path) -> None:
    image, label = CUB(top, "train")[2]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (W, H)
    assert label == 1


def test_root_may_be_the_parent_folder(top: Path) -> None:
    jpeg(top.parent / "images" / "unrelated.jpg")  # the parent's own images/ must not confuse it
    a, b = CUB(top, "test"), CUB(top.parent, "test")
    assert a.root == b.root == top
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.paths == b.paths


def test_registered_as_cub(top: Path) -> None:
    assert DATASETS["cub"] is CUB
    assert len(build_dataset("cub", root=top.parent, split="test")) == 3


def test_root_none_says_to_set_data_root() -> None:
    with pytest.raises(DatasetError, match=r"needs data\.root.*CUB_200_2011/"):
        CUB(None, "train")


def test_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no CUB-200-2011 dataset found .*images\.txt"):
        CUB(tmp_path, "train")


def test_unknown_option_and_bad_split(top: Path) -> None:
    with pytest.raises(ValueError, match=r"options of dataset 'cub' must be none.*\['resize'\]"):
        CUB(top, "train", resize=224)
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'val'"):
        CUB(top, "val")


def test_missing_index_file(top: Path) -> None:
    (top / "image_class_labels.txt").unlink()
    with pytest.raises(DatasetError, match=r"image_class_labels\.txt does not exist"):
        CUB(top, "train")


def test_line_with_wrong_number_of_fields(top: Path) -> None:
    set_line(top / "images.txt", 3, "3")
    with pytest.raises(DatasetError, match=r"images\.txt, line 3: expected 2 fields .* '3'"):
        CUB(top, "train")


def test_non_integer_image_id(top: Path) -> None:
    set_line(top / "images.txt", 2, "two 001.Black_footed_Albatross/x.jpg")
    with pytest.raises(DatasetError, match=r"images\.txt, line 2: image id must be an integer"):
        CUB(top, "train")


def test_non_integer_class_id(top: Path) -> None:
    set_line(top / "image_class_labels.txt", 4, "4 two")
    with pytest.raises(
        DatasetError,
        match=r"image_class_labels\.txt, line 4: class id must be an integer, got 'two'",
    ):
        CUB(top, "train")


def test_image_missing_from_split_file(top: Path) -> None:
    del_line(top / "train_test_split.txt", 5)
    with pytest.raises(
        DatasetError,
        match=r"images\.txt, line 5: image id '5' has no line in .*train_test_split\.txt",
    ):
        CUB(top, "train")


def test_label_for_unknown_image(top: Path) -> None:
    add_line(top / "image_class_labels.txt", "99 1")
    with pytest.raises(
        DatasetError,
        match=r"image_class_labels\.txt, line 8: image id '99' is not listed in .*images\.txt",
    ):
        CUB(top, "train")


def test_duplicate_image_id(top: Path) -> None:
    add_line(top / "images.txt", "2 001.Black_footed_Albatross/again.jpg")
    with pytest.raises(
        DatasetError, match=r"images\.txt, line 8: image id '2' appears twice \(first on line 2\)"
    ):
        CUB(top, "train")


def test_class_outside_classes_txt(top: Path) -> None:
    set_line(top / "image_class_labels.txt", 6, "6 201")
    with pytest.raises(
        DatasetError,
        match=r"image_class_labels\.txt, line 6: class id 201 is not in .*classes\.txt \(which has ids 1\.\.3\)",
    ):
        CUB(top, "train")


def test_duplicate_class_id(top: Path) -> None:
    add_line(top / "classes.txt", "2 002.Laysan_Albatross")
    with pytest.raises(DatasetError, match=r"classes\.txt, line 4: class id 2 appears twice"):
        CUB(top, "train")


def test_split_flag_must_be_0_or_1(top: Path) -> None:
    set_line(top / "train_test_split.txt", 3, "3 2")
    with pytest.raises(
        DatasetError, match=r"train_test_split\.txt, line 3: is_training_image must be 1 .* got 2"
    ):
        CUB(top, "train")


def test_unreadable_and_missing_images(top: Path) -> None:
    ds = CUB(top, "train")
    garbage(ds.paths[0])
    with pytest.raises(
        DatasetError, match=r"cannot read image .*Black_footed_Albatross_0001_1\.jpg"
    ):
        ds.load(0)
    ds.paths[1].unlink()
    with pytest.raises(
        DatasetError, match=r"image file .*Laysan_Albatross_0003_3\.jpg does not exist"
    ):
        ds.load(1)
