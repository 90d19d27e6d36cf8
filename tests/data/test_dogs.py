"""Stanford Dogs: Images/ plus the lists from lists.tar, breed names, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_trees import H, W, garbage, jpeg, savemat
from PIL import Image

from carrot.data import DATASETS, DatasetError, build_dataset
from carrot.data.dogs import StanfordDogs

FOLDERS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02116738-African_hunting_dog"]
TRAIN = [(1, 5927), (1, 4441), (2, 1), (3, 77), (3, 78)]
TEST = [(1, 3), (2, 2), (3, 9)]


def _list(rows: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Variables of train_list.mat / test_list.mat: (n, 1) cells and a (n, 1) double array."""
    files = [f"{FOLDERS[k - 1]}/{FOLDERS[k - 1][:9]}_{n}.jpg" for k, n in rows]
    return {
        "file_list": np.array(files, dtype=object).reshape(-1, 1),
        "annotation_list": np.array([f[:-4] for f in files], dtype=object).reshape(-1, 1),
        "labels": np.array([float(k) for k, _ in rows]).reshape(-1, 1),
    }


def make_dogs(parent: Path) -> Path:
    top = parent / "stanford_dogs"
    for name, rows in (("train", TRAIN), ("test", TEST)):
        variables = _list(rows)
        savemat(top / f"{name}_list.mat", variables)
        for f in variables["file_list"].ravel():
            jpeg(top / "Images" / f)
    return top


@pytest.fixture
def top(tmp_path: Path) -> Path:
    return make_dogs(tmp_path)


def test_splits_labels_and_breeds(top: Path) -> None:
    train, test = StanfordDogs(top, "train"), StanfordDogs(top, "test")
    breeds = ["Chihuahua", "Japanese_spaniel", "African_hunting_dog"]
    assert train.classes == test.classes == breeds
    assert len(train) == 5 and len(test) == 3
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(test.labels, [0, 1, 2])
    assert train.labels.dtype == np.int64
    assert train.paths[1] == top / "Images" / "n02085620-Chihuahua" / "n02085620_4441.jpg"


def test_load_gives_rgb(top: Path) -> None:
    image, label = StanfordDogs(top, "test")[2]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (W, H)
    assert label == 2


def test_root_may_be_the_parent_folder(top: Path) -> None:
    a, b = StanfordDogs(top, "train"), StanfordDogs(top.parent, "train")
    assert a.root == b.root == top and a.paths == b.paths


def test_registered_as_dogs(top: Path) -> None:
    assert DATASETS["dogs"] is StanfordDogs
    assert build_dataset("dogs", root=top, split="test").num_classes == 3


def test_root_none_says_to_set_data_root() -> None:
    with pytest.raises(DatasetError, match=r"Stanford Dogs needs data\.root.*stanford_dogs/"):
        StanfordDogs(None, "train")


def test_unknown_option(top: Path) -> None:
    with pytest.raises(ValueError, match=r"options of dataset 'dogs' must be none.*\['bbox'\]"):
        StanfordDogs(top, "train", bbox=True)


def test_missing_list(top: Path) -> None:
    (top / "test_list.mat").unlink()
    with pytest.raises(DatasetError, match=r"test_list\.mat does not exist .*lists\.tar"):
        StanfordDogs(top, "test")


def test_label_below_one(top: Path) -> None:
    variables = _list(TEST)
    variables["labels"][1, 0] = 0
    savemat(top / "test_list.mat", variables)
    with pytest.raises(
        DatasetError, match=r"test_list\.mat: entry 2 of 'labels' is 0, expected an integer >= 1"
    ):
        StanfordDogs(top, "test")


@pytest.mark.parametrize("rows", [[(1, 3), (3, 9)], [(1, 3), (2, 2)]], ids=["middle", "last"])
def test_a_split_without_some_breed_has_the_classes_of_both_lists(top: Path, rows) -> None:
    """A small list need not use every label: the breeds come from both lists."""
    savemat(top / "test_list.mat", _list(rows))
    train, test = StanfordDogs(top, "train"), StanfordDogs(top, "test")
    assert test.classes == train.classes == ["Chihuahua", "Japanese_spaniel", "African_hunting_dog"]
    np.testing.assert_array_equal(test.labels, [k - 1 for k, _ in rows])


def test_label_without_files(top: Path) -> None:
    savemat(top / "test_list.mat", _list([(1, 3), (3, 9)]))
    savemat(top / "train_list.mat", _list([(1, 5927), (3, 77)]))
    with pytest.raises(
        DatasetError, match=r"test_list\.mat: no file of test_list\.mat or train_list\.mat has label 2"
    ):
        StanfordDogs(top, "test")


def test_a_label_in_two_folders_across_the_lists(top: Path) -> None:
    variables = _list(TEST)
    variables["labels"][1, 0] = 3  # a Japanese_spaniel test file labelled as the third breed
    savemat(top / "test_list.mat", variables)
    with pytest.raises(
        DatasetError,
        match=r"test_list\.mat: entry 2 has label 3 and folder .*but entry 4 of train_list\.mat",
    ):
        StanfordDogs(top, "train")


def test_lists_may_be_extracted_into_a_lists_folder(top: Path) -> None:
    (top / "lists").mkdir()
    for name in ("train_list.mat", "test_list.mat"):
        (top / name).rename(top / "lists" / name)
    flat = make_dogs(top.parent / "flat")
    for split in ("train", "test"):
        a, b = StanfordDogs(top, split), StanfordDogs(top.parent, split)
        want = StanfordDogs(flat, split)
        assert a.classes == b.classes == want.classes
        np.testing.assert_array_equal(a.labels, want.labels)
        assert [p.relative_to(top) for p in a.paths] == [p.relative_to(flat) for p in want.paths]


def test_two_folders_for_one_label(top: Path) -> None:
    variables = _list(TRAIN)
    variables["labels"][2, 0] = 1  # a Japanese_spaniel file labelled Chihuahua
    savemat(top / "train_list.mat", variables)
    with pytest.raises(
        DatasetError,
        match=r"train_list\.mat: entry 3 has label 1 and folder 'n02085782-Japanese_spaniel', but entry 1",
    ):
        StanfordDogs(top, "train")


def test_lengths_differ(top: Path) -> None:
    variables = _list(TRAIN)
    variables["labels"] = variables["labels"][:-1]
    savemat(top / "train_list.mat", variables)
    with pytest.raises(
        DatasetError, match=r"train_list\.mat: 'file_list' has 5 entries but 'labels' has 4"
    ):
        StanfordDogs(top, "train")


def test_file_outside_a_breed_folder(top: Path) -> None:
    variables = _list(TEST)
    variables["file_list"][0, 0] = "n02085620_3.jpg"
    savemat(top / "test_list.mat", variables)
    with pytest.raises(
        DatasetError, match=r"test_list\.mat: entry 1 of 'file_list' is 'n02085620_3\.jpg'"
    ):
        StanfordDogs(top, "test")


def test_unreadable_image(top: Path) -> None:
    ds = StanfordDogs(top, "train")
    garbage(ds.paths[0])
    with pytest.raises(DatasetError, match=r"cannot read image .*n02085620_5927\.jpg"):
        ds.load(0)
