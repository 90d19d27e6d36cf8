"""Official validation splits (data.val_split=official) on fake trees in the official layouts:
FGVC-Aircraft's val, Flowers-102's valid, an image folder's val/; refused elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_trees import jpeg
from test_aircraft import SPLITS, make_aircraft
from test_flowers102 import make_flowers

from carrot.data import DatasetError, build_dataset, official_val_datasets
from carrot.train import load_config
from carrot.train.config import ConfigError
from carrot.train.data import load_splits
from carrot.train.holdout import val_record


def _names(split: object) -> list[str]:
    return [Path(p).name for p in split.paths]  # type: ignore[attr-defined]


def test_the_datasets_with_an_official_split() -> None:
    assert official_val_datasets() == ["aircraft", "flowers102", "imagefolder"]
    with pytest.raises(ValueError, match=r"cub has no official validation split; the datasets "):
        build_dataset("cub", root=None, split="val")


def test_aircraft_official_trains_on_train_and_validates_on_val(tmp_path: Path) -> None:
    top = make_aircraft(tmp_path)
    cfg = load_config(None, ["data.name=aircraft", f"data.root={top}", "data.val_split=official"])
    splits = load_splits(cfg)
    assert _names(splits.train) == [f"{i}.jpg" for i, _ in SPLITS["train"]]
    assert splits.val is not None
    assert _names(splits.val) == [f"{i}.jpg" for i, _ in SPLITS["val"]]
    assert _names(splits.test) == [f"{i}.jpg" for i, _ in SPLITS["test"]]
    np.testing.assert_array_equal(splits.val.labels, [1, 3])  # 737-200, Cessna 172
    assert splits.val.classes == splits.train.classes == splits.test.classes
    record = val_record(cfg, splits.val)
    assert record is not None
    assert record["ids"] == [f"data/images/{i}.jpg" for i, _ in SPLITS["val"]]
    # trainval would train on the validation images
    bad = load_config(
        None,
        ["data.name=aircraft", f"data.root={top}", "data.val_split=official",
         "data.options.train_split=trainval"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.options.train_split must be train with data"):
        load_splits(bad)


def test_aircraft_fraction_holds_out_of_trainval(tmp_path: Path) -> None:
    top = make_aircraft(tmp_path)
    cfg = load_config(None, ["data.name=aircraft", f"data.root={top}", "data.val_split=fraction"])
    # trainval has 1, 1, 1 and 2 images of the four variants: one class cannot give one.
    with pytest.raises(ConfigError, match=r"class '707-320' has 1: it cannot give"):
        load_splits(cfg)


def test_flowers_official_is_trnid_and_valid(tmp_path: Path) -> None:
    top = make_flowers(tmp_path)
    cfg = load_config(None, ["data.name=flowers102", f"data.root={top}", "data.val_split=official"])
    splits = load_splits(cfg)
    assert splits.val is not None
    assert _names(splits.train) == ["image_00003.jpg", "image_00001.jpg"]  # trnid
    assert _names(splits.val) == ["image_00004.jpg", "image_00002.jpg"]  # valid
    np.testing.assert_array_equal(splits.val.labels, [101, 76])
    assert not set(_names(splits.val)) & set(_names(splits.test))


def _folder(root: Path, splits: tuple[str, ...]) -> Path:
    colors = {"a": (200, 0, 0), "b": (0, 200, 0)}
    for split in splits:
        for c, color in colors.items():
            for i in range(3):
                jpeg(root / split / c / f"{split}{i}.jpg", color=color)
    return root


def test_imagefolder_val_folder_is_official_beside_test(tmp_path: Path) -> None:
    root = _folder(tmp_path / "both", ("train", "val", "test"))
    cfg = load_config(
        None, ["data.name=imagefolder", f"data.root={root}", "data.val_split=official"]
    )
    splits = load_splits(cfg)
    assert splits.val is not None
    assert {Path(p).parent.parent.name for p in splits.val.paths} == {"val"}  # type: ignore[attr-defined]
    assert {Path(p).parent.parent.name for p in splits.test.paths} == {"test"}  # type: ignore[attr-defined]
    np.testing.assert_array_equal(splits.val.labels, [0, 0, 0, 1, 1, 1])


def test_imagefolder_without_test_has_no_official_split(tmp_path: Path) -> None:
    root = _folder(tmp_path / "lone", ("train", "val"))
    cfg = load_config(
        None, ["data.name=imagefolder", f"data.root={root}", "data.val_split=official"]
    )
    with pytest.raises(DatasetError, match=r"has no official validation split: that needs both"):
        load_splits(cfg)
    # fraction works with or without val/: drawn from train/, never from the test folder
    cfg = load_config(
        None,
        ["data.name=imagefolder", f"data.root={root}", "data.val_split=fraction",
         "data.val_fraction=0.4"],
    )  # fmt: skip
    splits = load_splits(cfg)
    assert splits.val is not None
    names = [Path(p).name for p in splits.val.paths]  # type: ignore[attr-defined]
    assert len(names) == 2 and all(n.startswith("train") for n in names)
    assert not set(splits.val.paths) & set(splits.train.paths)  # type: ignore[attr-defined]
