"""FGVC-Aircraft: annotation levels, trainval vs train, the banner crop, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_trees import W, add_line, jpeg, lines, set_line
from PIL import Image

from carrot.data import DATASETS, DatasetError, build_dataset
from carrot.data.aircraft import BANNER_PIXELS, FGVCAircraft

FILE_H = 30  # taller than the banner
VARIANTS = ["707-320", "737-200", "737-300", "Cessna 172"]
FAMILY = {
    "707-320": "Boeing 707",
    "737-200": "Boeing 737",
    "737-300": "Boeing 737",
    "Cessna 172": "Cessna 172",
}
MAKER = {"707-320": "Boeing", "737-200": "Boeing", "737-300": "Boeing", "Cessna 172": "Cessna"}
SPLITS = {
    "train": [("1025794", "707-320"), ("0034309", "Cessna 172"), ("1340192", "737-300")],
    "val": [("0056978", "737-200"), ("2231224", "Cessna 172")],
    "test": [("1514522", "737-200"), ("0062765", "707-320"), ("1907434", "737-300")],
}
SPLITS["trainval"] = SPLITS["train"] + SPLITS["val"]


def make_aircraft(parent: Path) -> Path:
    data = parent / "fgvc-aircraft-2013b" / "data"
    for split in ("train", "val", "test"):
        for image_id, _ in SPLITS[split]:
            jpeg(data / "images" / f"{image_id}.jpg", size=(W, FILE_H))
    lines(data / "variants.txt", VARIANTS)
    lines(data / "families.txt", sorted(set(FAMILY.values())))
    lines(data / "manufacturers.txt", sorted(set(MAKER.values())))
    for split, rows in SPLITS.items():
        lines(data / f"images_variant_{split}.txt", [f"{i} {v}" for i, v in rows])
        lines(data / f"images_family_{split}.txt", [f"{i} {FAMILY[v]}" for i, v in rows])
        lines(data / f"images_manufacturer_{split}.txt", [f"{i} {MAKER[v]}" for i, v in rows])
    return data.parent


@pytest.fixture
def top(tmp_path: Path) -> Path:
    return make_aircraft(tmp_path)


def test_default_is_variant_level_trained_on_trainval(top: Path) -> None:
    train, test = FGVCAircraft(top, "train"), FGVCAircraft(top, "test")
    assert train.classes == test.classes == VARIANTS
    assert len(train) == 5 and len(test) == 3
    np.testing.assert_array_equal(train.labels, [0, 3, 2, 1, 3])
    np.testing.assert_array_equal(test.labels, [1, 0, 2])
    assert train.labels.dtype == np.int64
    assert train.paths[1] == top / "data" / "images" / "0034309.jpg"


def test_train_split_train_leaves_val_out(top: Path) -> None:
    ds = FGVCAircraft(top, "train", train_split="train")
    assert len(ds) == 3
    np.testing.assert_array_equal(ds.labels, [0, 3, 2])


@pytest.mark.parametrize(
    ("level", "classes", "test_labels"),
    [
        ("variant", VARIANTS, [1, 0, 2]),
        ("family", ["Boeing 707", "Boeing 737", "Cessna 172"], [1, 0, 1]),
        ("manufacturer", ["Boeing", "Cessna"], [0, 0, 0]),
    ],
)
def test_annotation_levels(
    top: Path, level: str, classes: list[str], test_labels: list[int]
) -> None:
    ds = FGVCAircraft(top, "test", annotation_level=level)
    assert ds.classes == classes and ds.num_classes == len(classes)
    np.testing.assert_array_equal(ds.labels, test_labels)


def test_banner_is_cropped_by_default(top: Path) -> None:
    image, _ = FGVCAircraft(top, "test")[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert image.size == (W, FILE_H - BANNER_PIXELS) == (W, 10)
    full = FGVCAircraft(top, "test", crop_banner=False).load(0)
    assert full.size == (W, FILE_H)


def test_an_image_no_taller_than_the_banner_is_left_whole(top: Path) -> None:
    """Tiny stand-ins (torchvision's tests use images of 1-10 pixels) load, with a warning."""
    ds = FGVCAircraft(top, "test")
    Image.new("RGB", (7, BANNER_PIXELS), (9, 9, 9)).save(ds.paths[0])
    with pytest.warns(UserWarning, match=rf"{BANNER_PIXELS} pixels tall is not cropped"):
        image = ds.load(0)
    assert image.size == (7, BANNER_PIXELS)


def test_root_may_be_the_parent_folder(top: Path) -> None:
    a, b = FGVCAircraft(top, "train"), FGVCAircraft(top.parent, "train")
    assert a.root == b.root == top and a.paths == b.paths


def test_registered_as_aircraft_with_options(top: Path) -> None:
    assert DATASETS["aircraft"] is FGVCAircraft
    ds = build_dataset("aircraft", root=top, split="train", annotation_level="family")
    assert ds.num_classes == 3


def test_root_none_says_to_set_data_root() -> None:
    with pytest.raises(DatasetError, match=r"needs data\.root.*fgvc-aircraft-2013b/"):
        FGVCAircraft(None, "train")


def test_option_errors(top: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"'aircraft' must be one of \['annotation_level', 'crop_banner', 'train_split'\], got unknown \['level'\]",
    ):
        FGVCAircraft(top, "train", level="family")
    with pytest.raises(ValueError, match=r"annotation_level must be one of .*got 'model'"):
        FGVCAircraft(top, "train", annotation_level="model")
    with pytest.raises(ValueError, match=r"train_split must be one of \['trainval', 'train'\]"):
        FGVCAircraft(top, "train", train_split="val")
    with pytest.raises(ValueError, match=r"crop_banner must be true or false, got 'yes'"):
        FGVCAircraft(top, "train", crop_banner="yes")  # type: ignore[arg-type]


def test_missing_split_file(top: Path) -> None:
    (top / "data" / "images_family_test.txt").unlink()
    with pytest.raises(DatasetError, match=r"images_family_test\.txt does not exist"):
        FGVCAircraft(top, "test", annotation_level="family")


def test_name_not_in_class_list(top: Path) -> None:
    set_line(top / "data" / "images_variant_test.txt", 2, "0062765 707-400")
    with pytest.raises(
        DatasetError,
        match=r"images_variant_test\.txt, line 2: variant '707-400' is not listed in .*variants\.txt",
    ):
        FGVCAircraft(top, "test")


def test_line_without_label(top: Path) -> None:
    set_line(top / "data" / "images_variant_trainval.txt", 4, "0056978")
    with pytest.raises(
        DatasetError, match=r"images_variant_trainval\.txt, line 4: expected 2 fields"
    ):
        FGVCAircraft(top, "train")


def test_non_numeric_image_id(top: Path) -> None:
    set_line(top / "data" / "images_manufacturer_test.txt", 3, "img_07 Boeing")
    with pytest.raises(
        DatasetError, match=r"images_manufacturer_test\.txt, line 3: image id must be digits"
    ):
        FGVCAircraft(top, "test", annotation_level="manufacturer")


def test_duplicate_class_name(top: Path) -> None:
    add_line(top / "data" / "families.txt", "Boeing 737")
    with pytest.raises(
        DatasetError,
        match=r"families\.txt, line 4: family 'Boeing 737' appears twice \(first on line 2\)",
    ):
        FGVCAircraft(top, "test", annotation_level="family")
