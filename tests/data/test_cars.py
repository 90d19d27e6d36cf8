"""Stanford Cars: torchvision's layout with devkit .mat files, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_trees import H, W, garbage, jpeg, savemat
from PIL import Image

from carrot.data import DATASETS, DatasetError, build_dataset
from carrot.data.cars import StanfordCars

CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Volvo XC90 SUV 2007"]
TRAIN = [("00001.jpg", 3), ("00002.jpg", 1), ("00003.jpg", 1), ("00004.jpg", 2)]
TEST = [("00001.jpg", 2), ("00002.jpg", 3), ("00003.jpg", 1)]
_FIELDS = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]


def car_annotations(rows: list[tuple[str, int]], fields: list[str] = _FIELDS) -> np.ndarray:
    """A MATLAB struct array (1, n) like the devkit's ``annotations``."""
    out = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, (fname, cls) in enumerate(rows):
        box = {"bbox_x1": 1, "bbox_y1": 2, "bbox_x2": 20, "bbox_y2": 18}
        values = {**box, "class": cls, "fname": fname}
        out[0, i] = tuple(values[f] for f in fields)
    return out


def make_cars(parent: Path) -> Path:
    top = parent / "stanford_cars"
    names = np.array(CLASSES, dtype=object).reshape(1, -1)
    savemat(top / "devkit" / "cars_meta.mat", {"class_names": names})
    savemat(top / "devkit" / "cars_train_annos.mat", {"annotations": car_annotations(TRAIN)})
    savemat(top / "cars_test_annos_withlabels.mat", {"annotations": car_annotations(TEST)})
    for fname, _ in TRAIN:
        jpeg(top / "cars_train" / fname)
    for fname, _ in TEST:
        jpeg(top / "cars_test" / fname)
    return top


@pytest.fixture
def top(tmp_path: Path) -> Path:
    return make_cars(tmp_path)


def test_splits_labels_and_classes(top: Path) -> None:
    train, test = StanfordCars(top, "train"), StanfordCars(top, "test")
    assert train.classes == test.classes == CLASSES
    assert len(train) == 4 and len(test) == 3
    np.testing.assert_array_equal(train.labels, [2, 0, 0, 1])
    np.testing.assert_array_equal(test.labels, [1, 2, 0])
    assert train.labels.dtype == np.int64
    assert test.paths[1] == top / "cars_test" / "00002.jpg"


def test_load_gives_rgb(top: Path) -> None:
    image, label = StanfordCars(top, "train")[3]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (W, H)
    assert label == 1


def test_root_may_be_the_parent_folder(top: Path) -> None:
    a, b = StanfordCars(top, "test"), StanfordCars(top.parent, "test")
    assert a.root == b.root == top and a.paths == b.paths


def test_test_labels_are_also_found_in_devkit(top: Path) -> None:
    (top / "cars_test_annos_withlabels.mat").rename(
        top / "devkit" / "cars_test_annos_withlabels.mat"
    )
    np.testing.assert_array_equal(StanfordCars(top, "test").labels, [1, 2, 0])


def test_single_annotation(tmp_path: Path) -> None:
    top = make_cars(tmp_path)
    savemat(top / "devkit" / "cars_train_annos.mat", {"annotations": car_annotations(TRAIN[:1])})
    ds = StanfordCars(top, "train")
    assert len(ds) == 1 and ds.labels.tolist() == [2]


def test_registered_as_cars(top: Path) -> None:
    assert DATASETS["cars"] is StanfordCars
    assert len(build_dataset("cars", root=top.parent, split="train")) == 4


def test_root_none_says_to_set_data_root() -> None:
    with pytest.raises(DatasetError, match=r"Stanford Cars needs data\.root.*stanford_cars/"):
        StanfordCars(None, "train")


def test_unknown_option(top: Path) -> None:
    with pytest.raises(
        ValueError, match=r"options of dataset 'cars' must be none.*\['crop_bbox'\]"
    ):
        StanfordCars(top, "train", crop_bbox=True)


def test_missing_meta(top: Path) -> None:
    (top / "devkit" / "cars_meta.mat").unlink()
    with pytest.raises(DatasetError, match=r"cars_meta\.mat does not exist"):
        StanfordCars(top, "train")


def test_missing_test_labels(top: Path) -> None:
    (top / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetError, match=r"cars_test_annos_withlabels\.mat does not exist"):
        StanfordCars(top, "test")


def test_class_outside_class_names(top: Path) -> None:
    savemat(
        top / "devkit" / "cars_train_annos.mat",
        {"annotations": car_annotations([*TRAIN[:1], ("00002.jpg", 4)])},
    )
    with pytest.raises(
        DatasetError,
        match=r"cars_train_annos\.mat: entry 2 of 'annotations\.class' is 4, expected an integer in \[1, 3\]",
    ):
        StanfordCars(top, "train")


def test_annotations_without_class(top: Path) -> None:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "fname"]
    savemat(
        top / "devkit" / "cars_train_annos.mat", {"annotations": car_annotations(TRAIN, fields)}
    )
    with pytest.raises(
        DatasetError, match=r"cars_train_annos\.mat: 'annotations' has fields .*'fname'\]"
    ):
        StanfordCars(top, "train")


def test_wrong_variable(top: Path) -> None:
    savemat(top / "devkit" / "cars_meta.mat", {"names": np.array(CLASSES, dtype=object)})
    with pytest.raises(
        DatasetError, match=r"cars_meta\.mat has no variable 'class_names' \(it has \['names'\]\)"
    ):
        StanfordCars(top, "train")


def test_corrupt_mat_file(top: Path) -> None:
    garbage(top / "devkit" / "cars_train_annos.mat")
    with pytest.raises(DatasetError, match=r"cannot read MATLAB file .*cars_train_annos\.mat"):
        StanfordCars(top, "train")


def test_unreadable_image(top: Path) -> None:
    ds = StanfordCars(top, "test")
    garbage(ds.paths[2])
    with pytest.raises(DatasetError, match=r"cannot read image .*cars_test/00003\.jpg"):
        ds.load(2)
