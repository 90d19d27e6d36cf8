"""PKSampler invariants, coverage, determinism, ranks, resume and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from carrot import PKSampler


def _imbalanced(n_classes: int = 200, seed: int = 0) -> np.ndarray:
    """Long-tailed class sizes from 1 to ~150 images, shuffled."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(3.0, 1.0, n_classes).astype(int), 1, 150)
    return rng.permutation(np.repeat(np.arange(n_classes) * 3 + 7, sizes))


def _check_batches(labels: np.ndarray, batches: list[list[int]], p: int, k: int) -> None:
    for batch in batches:
        assert len(batch) == p * k
        lab = labels[np.asarray(batch)].reshape(p, k)
        assert (lab == lab[:, :1]).all(), "each group of k must share a class"
        assert len(set(lab[:, 0].tolist())) == p, "classes in a batch must be distinct"


@pytest.mark.parametrize(("batch_size", "k"), [(64, 4), (32, 2), (30, 5), (16, 16)])
def test_every_batch_is_p_by_k(batch_size: int, k: int) -> None:
    labels = _imbalanced()
    sampler = PKSampler(labels, batch_size=batch_size, k=k, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    _check_batches(labels, batches, batch_size // k, k)


def test_coverage_at_least_95_percent_on_imbalanced_labels() -> None:
    labels = _imbalanced()
    sampler = PKSampler(labels, batch_size=64, k=4)
    seen = np.unique(np.concatenate([np.asarray(b) for b in sampler]))
    assert seen.size / labels.size >= 0.95


def test_small_classes_are_filled_with_their_own_images() -> None:
    labels = np.array([0] * 1 + [1] * 2 + [2] * 5 + [3] * 8 + [4] * 4 + [5] * 3)  # 8 groups
    sampler = PKSampler(labels, batch_size=8, k=4)
    batches = list(sampler)
    _check_batches(labels, batches, 2, 4)
    groups = [g for b in batches for g in np.asarray(b).reshape(-1, 4)]
    single = [g for g in groups if labels[g[0]] == 0]
    assert single and all((g == 0).all() for g in single)
    assert np.unique(np.concatenate(groups)).size == labels.size


def test_deterministic_per_seed_and_epoch() -> None:
    labels = _imbalanced()
    a = PKSampler(labels, batch_size=32, k=4, seed=1)
    b = PKSampler(labels, batch_size=32, k=4, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(PKSampler(labels, batch_size=32, k=4, seed=2)) != first
    a.set_epoch(0)
    assert list(a) == first


def test_len_equals_batches_yielded_and_is_epoch_independent() -> None:
    labels = _imbalanced(seed=4)
    sampler = PKSampler(labels, batch_size=48, k=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == len(sampler)


def test_class_with_most_images_is_capped_at_one_group_per_batch() -> None:
    labels = np.array([0] * 400 + [1] * 8 + [2] * 8 + [3] * 8)
    sampler = PKSampler(labels, batch_size=8, k=4)
    batches = list(sampler)
    _check_batches(labels, batches, 2, 4)
    assert len(batches) == 6  # 6 groups of the three small classes + 6 of class 0


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_equal_length_disjoint_classes_and_union_is_single_process(world: int) -> None:
    labels = _imbalanced(seed=5)
    samplers = [
        PKSampler(labels, batch_size=16, k=4, seed=9, num_replicas=world, rank=r)
        for r in range(world)
    ]
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1
    assert all(len(s) == len(per_rank[0]) for s in samplers)
    single = list(PKSampler(labels, batch_size=16 * world, k=4, seed=9))
    for step, combined in enumerate(zip(*per_rank, strict=True)):
        classes = [set(labels[np.asarray(b)].tolist()) for b in combined]
        assert sum(len(c) for c in classes) == len(set().union(*classes)) == 4 * world
        assert [i for batch in combined for i in batch] == single[step]


def test_defaults_to_single_replica_without_torch_distributed() -> None:
    sampler = PKSampler(_imbalanced(), batch_size=16)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)


def test_resume_mid_epoch_gives_the_rest_of_the_epoch() -> None:
    labels = _imbalanced()
    full = PKSampler(labels, batch_size=32, k=4, seed=5)
    full.set_epoch(2)
    expected = list(full)

    first = PKSampler(labels, batch_size=32, k=4, seed=5)
    first.set_epoch(2)
    it = iter(first)
    head = [next(it) for _ in range(7)]
    state = first.state_dict()
    assert state["start_batch"] == 7

    resumed = PKSampler(labels, batch_size=32, k=4, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == len(expected) - 7
    assert head + list(resumed) == expected
    assert len(resumed) == len(expected), "after the resumed epoch the full length is back"


def test_state_dict_with_consumed_count() -> None:
    sampler = PKSampler(_imbalanced(), batch_size=32, k=4)
    assert sampler.state_dict(consumed=3)["start_batch"] == 3


def test_works_as_dataloader_batch_sampler() -> None:
    labels = _imbalanced()
    data = TensorDataset(torch.arange(labels.size), torch.from_numpy(labels))
    sampler = PKSampler(torch.from_numpy(labels), batch_size=24, k=4)
    loader = DataLoader(data, batch_sampler=sampler)
    n = 0
    for idx, y in loader:
        assert idx.shape == (24,)
        assert torch.equal(y, torch.from_numpy(labels)[idx])
        n += 1
    assert n == len(loader) == len(sampler)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=2, max_size=40),
    k=st.integers(1, 5),
    p=st.integers(1, 6),
    world=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_invariants_hold_for_any_label_set(
    sizes: list[int], k: int, p: int, world: int, seed: int
) -> None:
    labels = np.repeat(np.arange(len(sizes)), sizes)
    if len(sizes) < p * world:
        with pytest.raises(ValueError, match="needs P="):
            PKSampler(labels, batch_size=p * k, k=k, num_replicas=world, rank=0)
        return
    for rank in range(world):
        sampler = PKSampler(labels, batch_size=p * k, k=k, seed=seed, num_replicas=world, rank=rank)
        batches = list(sampler)
        assert len(batches) == len(sampler) >= 1
        _check_batches(labels, batches, p, k)


# --- errors -------------------------------------------------------------------------------------


def test_error_batch_size_not_multiple_of_k() -> None:
    with pytest.raises(
        ValueError, match="batch_size must be a positive multiple of k=4, got 30; use 28 or 32"
    ):
        PKSampler(_imbalanced(), batch_size=30, k=4)


def test_error_too_few_classes() -> None:
    with pytest.raises(
        ValueError,
        match=r"needs P=8 classes per batch .* only 5 classes; lower batch_size or raise k",
    ):
        PKSampler(np.repeat(np.arange(5), 10), batch_size=32, k=4)


def test_error_too_few_classes_for_ranks() -> None:
    with pytest.raises(ValueError, match="on each of 2 ranks"):
        PKSampler(np.repeat(np.arange(10), 10), batch_size=24, k=4, num_replicas=2, rank=0)


def test_error_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        PKSampler(_imbalanced(), batch_size=32, k=0)


def test_error_labels_not_integer() -> None:
    with pytest.raises(ValueError, match="labels must be a non-empty 1-D sequence of integer"):
        PKSampler(np.array([0.5, 1.5]), batch_size=2, k=1)


def test_error_rank_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        PKSampler(_imbalanced(), batch_size=16, num_replicas=2, rank=2)


def test_error_num_replicas() -> None:
    with pytest.raises(ValueError, match="num_replicas must be >= 1"):
        PKSampler(_imbalanced(), batch_size=16, num_replicas=0, rank=0)


def test_error_resume_with_other_settings() -> None:
    state = PKSampler(_imbalanced(), batch_size=32, k=4, seed=1).state_dict()
    with pytest.raises(ValueError, match="cannot resume: the saved sampler has seed=1"):
        PKSampler(_imbalanced(), batch_size=32, k=4, seed=2).load_state_dict(state)


def test_error_start_batch() -> None:
    sampler = PKSampler(_imbalanced(), batch_size=32, k=4)
    with pytest.raises(ValueError, match="start_batch must be in"):
        sampler.set_epoch(0, start_batch=10**6)


def test_numpy_and_torch_integers_are_accepted() -> None:
    labels = _imbalanced()
    plain = PKSampler(labels, batch_size=8, k=4, seed=3)
    for batch_size, k in ((np.int64(8), np.int32(4)), (torch.tensor(8), torch.tensor(4))):
        sampler = PKSampler(labels, batch_size=batch_size, k=k, seed=3)
        assert type(sampler.batch_size) is int and type(sampler.k) is int
        assert list(sampler) == list(plain)
    assert len(PKSampler(labels, batch_size=8, k=4, num_replicas=np.int64(2), rank=np.int64(1)))


@pytest.mark.parametrize("bad", [8.0, True, "8", np.float32(8)])
def test_error_non_integer_batch_size(bad) -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer, got"):
        PKSampler(_imbalanced(), batch_size=bad, k=4)
