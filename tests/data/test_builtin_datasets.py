"""Built-in datasets: sklearn digits, Fashion-MNIST IDX files, the synthetic fine-grained set."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from carrot.data import DatasetError, build_dataset
from carrot.data.fashion_mnist import files_present, read_idx
from carrot.data.synthetic import generate


def test_digits_split_is_stratified_fixed_and_disjoint() -> None:
    train = build_dataset("digits", root=None, split="train")
    test = build_dataset("digits", root=None, split="test")
    assert len(train) + len(test) == 1797 and train.num_classes == 10
    assert abs(len(test) / 1797 - 0.3) < 0.01
    for c in range(10):
        frac = (test.labels == c).sum() / ((train.labels == c).sum() + (test.labels == c).sum())
        assert abs(frac - 0.3) < 0.03
    img, label = train[0]
    assert img.shape == (1, 8, 8) and img.dtype == torch.uint8 and 0 <= label < 10
    # Disjoint: no test image equals a training image of the same index pattern.
    again = build_dataset("digits", root=None, split="test")
    assert torch.equal(again.images, test.images)
    with pytest.raises(ValueError, match="digits takes no data.options"):
        build_dataset("digits", root=None, split="train", foo=1)


def _idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def fashion_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 20, True), ("t10k", 10, False)):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz=gz)
    return tmp_path


def test_fashion_mnist_files_present(
    fashion_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert files_present(fashion_root)  # gzipped train files, plain test files
    assert not files_present(tmp_path_factory.mktemp("empty"))
    (fashion_root / "t10k-labels-idx1-ubyte").unlink()
    assert not files_present(fashion_root)


def test_fashion_mnist_reads_idx_files(fashion_root: Path) -> None:
    train = build_dataset("fashion_mnist", root=fashion_root, split="train")
    test = build_dataset("fashion_mnist", root=fashion_root, split="test")
    assert (len(train), len(test)) == (20, 10)
    assert train.labels.tolist() == [i % 10 for i in range(20)]
    assert train[3][0].shape == (1, 28, 28) and train.classes[9] == "Ankle boot"


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError,
        match=r"train-images-idx3-ubyte\(\.gz\) does not exist.*apt-get install dataset-fashion-mnist",
    ):
        build_dataset("fashion_mnist", root=tmp_path, split="train")


def test_idx_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    with pytest.raises(
        DatasetError, match=r"bad is not an IDX file of unsigned bytes: its header is 00000d03"
    ):
        read_idx(bad, expected_dims=3)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01" * 4)
    with pytest.raises(
        DatasetError, match=r"short holds 4 bytes of data, but its header announces shape \(10,\)"
    ):
        read_idx(short, expected_dims=1)
    with pytest.raises(DatasetError, match="has 1 dimensions, expected 3"):
        _idx(tmp_path / "one", np.zeros(3), gz=False)
        read_idx(tmp_path / "one", expected_dims=3)


def test_fashion_mnist_label_out_of_range(fashion_root: Path) -> None:
    _idx(fashion_root / "t10k-labels-idx1-ubyte", np.array([0, 1, 12] + [0] * 7), gz=False)
    with pytest.raises(
        DatasetError, match="label 12 of item 2 is outside the 10 Fashion-MNIST classes"
    ):
        build_dataset("fashion_mnist", root=fashion_root, split="test")


def test_fashion_mnist_count_mismatch(fashion_root: Path) -> None:
    _idx(fashion_root / "t10k-labels-idx1-ubyte", np.arange(9) % 10, gz=False)
    with pytest.raises(DatasetError, match="holds 10 images but .* holds 9 labels"):
        build_dataset("fashion_mnist", root=fashion_root, split="test")


SMALL = {
    "num_superclasses": 3,
    "classes_per_superclass": 4,
    "train_per_class": 5,
    "test_per_class": 2,
}


def test_synthetic_is_deterministic_and_sized() -> None:
    train = build_dataset("synthetic", root=None, split="train", **SMALL)
    test = build_dataset("synthetic", root=None, split="test", **SMALL)
    assert (len(train), len(test), train.num_classes) == (60, 24, 12)
    assert train.superclass.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    again = generate(3, 4, 5, 2, 0.5, 32, 0)
    assert torch.equal(again[0], train.images)
    other = build_dataset("synthetic", root=None, split="train", seed=1, **SMALL)
    assert not torch.equal(other.images, train.images)
    assert train[0][0].shape == (3, 32, 32) and train[0][0].dtype == torch.uint8


def test_synthetic_difficulty_brings_sibling_classes_together() -> None:
    def sibling_gap(difficulty: float) -> float:
        x, y, *_ = generate(4, 4, 20, 1, difficulty, 16, 0)
        means = torch.stack([x[torch.from_numpy(y == c)].float().mean(0) for c in range(16)])
        siblings = [(means[i] - means[i + 1]).norm() for i in range(0, 16, 4)]
        return float(torch.stack(siblings).mean())

    assert sibling_gap(0.0) > 2 * sibling_gap(0.8) > 0


def test_synthetic_dataset_seeds_draw_disjoint_classes() -> None:
    """The transfer suite pretrains on one dataset seed and fine-tunes on others: every class of
    another seed is far from every source class, farther than sibling classes are from each
    other, so the target's classes are not the source's."""

    def class_means(seed: int) -> torch.Tensor:
        x, y, *_ = generate(4, 3, 20, 1, 0.75, 16, seed)
        return torch.stack(
            [x[torch.from_numpy(y == c)].float().mean(0).flatten() for c in range(12)]
        )

    source, target = class_means(100), class_means(1)
    across = torch.cdist(target, source).min()  # the target class nearest to any source class
    within = torch.cdist(target, target) + 1e9 * torch.eye(12)
    siblings = within.min(dim=1).values.max()  # the farthest nearest neighbour inside the target
    assert across > 1.5 * siblings


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"difficulty": 1.5}, r"difficulty must be in \[0, 1\]"),
        ({"num_superclasses": 0}, "num_superclasses must be a positive integer"),
        ({"colour": 3}, r"unknown synthetic data.options \['colour'\]"),
    ],
)
def test_synthetic_option_errors(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_dataset("synthetic", root=None, split="train", **options)


def test_unknown_dataset_name() -> None:
    with pytest.raises(ValueError, match=r"data.name must be one of \['aircraft', 'cars', 'cub'"):
        build_dataset("imagenet", root=None, split="train")
