"""NABirds: UUID image ids, non-contiguous leaf class ids, the hierarchy, and errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from fake_trees import H, W, add_line, del_line, jpeg, lines, set_line
from PIL import Image

from carrot.data import DATASETS, DatasetError, build_dataset
from carrot.data.nabirds import NABirds

# The whole taxonomy: internal nodes 0, 1, 2 and leaves 295, 296, 817, 900 (900 labels no image).
TAXONOMY = {
    0: "Birds",
    1: "Ducks, Geese, and Swans",
    2: "Hawks, Kites, Eagles, and Allies",
    295: "Mallard",
    296: "Wood Duck",
    817: "Red-tailed Hawk (Adult)",
    900: "Ferruginous Hawk",
}
HIERARCHY = [(1, 0), (2, 0), (295, 1), (296, 1), (817, 2), (900, 2)]
# (class id, is_training_image); 296 is only in test, yet it is a class of both splits.
IMAGES = [(817, 1), (295, 1), (817, 0), (296, 0), (295, 0), (817, 1)]
IDS = [str(uuid.UUID(int=0x1234_0000 + i)) for i in range(len(IMAGES))]


def make_nabirds(parent: Path) -> Path:
    top = parent / "nabirds"
    rels = []
    for image_id, (cid, _) in zip(IDS, IMAGES, strict=True):
        rel = f"{cid:04d}/{image_id.replace('-', '')}.jpg"
        jpeg(top / "images" / rel)
        rels.append(rel)
    lines(top / "classes.txt", [f"{k} {v}" for k, v in TAXONOMY.items()])
    lines(top / "hierarchy.txt", [f"{c} {p}" for c, p in HIERARCHY])
    lines(top / "images.txt", [f"{i} {r}" for i, r in zip(IDS, rels, strict=True)])
    lines(
        top / "image_class_labels.txt",
        [f"{i} {c}" for i, (c, _) in zip(IDS, IMAGES, strict=True)],
    )
    lines(
        top / "train_test_split.txt",
        [f"{i} {t}" for i, (_, t) in zip(IDS, IMAGES, strict=True)],
    )
    return top


@pytest.fixture
def top(tmp_path: Path) -> Path:
    return make_nabirds(tmp_path)


def test_classes_are_the_labelled_leaves_in_id_order(top: Path) -> None:
    train, test = NABirds(top, "train"), NABirds(top, "test")
    expected = ["Mallard", "Wood Duck", "Red-tailed Hawk (Adult)"]
    assert train.classes == test.classes == expected
    np.testing.assert_array_equal(train.class_ids, [295, 296, 817])
    assert len(train) == 3 and len(test) == 3
    np.testing.assert_array_equal(train.labels, [2, 0, 2])
    np.testing.assert_array_equal(test.labels, [2, 1, 0])
    assert train.labels.dtype == np.int64


def test_parents_come_from_hierarchy(top: Path) -> None:
    ds = NABirds(top, "train")
    np.testing.assert_array_equal(ds.parents, [1, 1, 2])
    np.testing.assert_array_equal(np.unique(ds.parents, return_inverse=True)[1], [0, 0, 1])


def test_load_and_paths(top: Path) -> None:
    ds = NABirds(top, "test")
    assert ds.paths[1] == top / "images" / "0296" / f"{IDS[3].replace('-', '')}.jpg"
    image, label = ds[1]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (W, H)
    assert label == 1


def test_root_may_be_the_parent_folder(top: Path) -> None:
    a, b = NABirds(top, "train"), NABirds(top.parent, "train")
    assert a.root == b.root == top and a.paths == b.paths


def test_registered_as_nabirds(top: Path) -> None:
    assert DATASETS["nabirds"] is NABirds
    assert build_dataset("nabirds", root=top, split="train").num_classes == 3


def test_root_none_says_to_set_data_root() -> None:
    with pytest.raises(DatasetError, match=r"NABirds needs data\.root.*nabirds/"):
        NABirds(None, "test")


def test_unknown_option(top: Path) -> None:
    with pytest.raises(ValueError, match=r"options of dataset 'nabirds' must be none.*\['level'\]"):
        NABirds(top, "train", level=2)


def test_without_hierarchy_the_labels_are_the_same_and_parents_none(top: Path) -> None:
    """hierarchy.txt only gives the parents: without it the dataset still loads."""
    with_it = NABirds(top, "train")
    (top / "hierarchy.txt").unlink()
    without = NABirds(top, "train")
    assert with_it.parents is not None and without.parents is None
    assert without.classes == with_it.classes and without.paths == with_it.paths
    np.testing.assert_array_equal(without.labels, with_it.labels)


def test_leaf_without_parent(top: Path) -> None:
    del_line(top / "hierarchy.txt", 5)  # 817 -> 2
    with pytest.raises(
        DatasetError, match=r"hierarchy\.txt gives no parent for class id 817 \('Red-tailed"
    ):
        NABirds(top, "train")


def test_hierarchy_with_unknown_class(top: Path) -> None:
    add_line(top / "hierarchy.txt", "1234 2")
    with pytest.raises(
        DatasetError, match=r"hierarchy\.txt, line 7: class id 1234 is not in .*classes\.txt"
    ):
        NABirds(top, "train")


def test_hierarchy_non_integer(top: Path) -> None:
    set_line(top / "hierarchy.txt", 2, "2 root")
    with pytest.raises(
        DatasetError, match=r"hierarchy\.txt, line 2: parent id must be an integer, got 'root'"
    ):
        NABirds(top, "train")


def test_class_outside_classes_txt(top: Path) -> None:
    set_line(top / "image_class_labels.txt", 2, f"{IDS[1]} 555")
    with pytest.raises(
        DatasetError,
        match=r"image_class_labels\.txt, line 2: class id 555 is not in .*classes\.txt",
    ):
        NABirds(top, "train")


def test_image_without_label(top: Path) -> None:
    del_line(top / "image_class_labels.txt", 4)
    with pytest.raises(
        DatasetError,
        match=rf"images\.txt, line 4: image id '{IDS[3]}' has no line in .*image_class_labels\.txt",
    ):
        NABirds(top, "train")


def test_split_line_with_extra_field(top: Path) -> None:
    set_line(top / "train_test_split.txt", 6, f"{IDS[5]} 1 0")
    with pytest.raises(DatasetError, match=r"train_test_split\.txt, line 6: expected 2 fields"):
        NABirds(top, "train")
