"""CARROT across ranks: real gloo process groups compared with one process on the concatenated
batch (outputs, statistics, gradients, optimizer steps), plus the single-process guarantees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close

from carrot import carrot_operator, carrot_supcon_loss, supcon_loss
from carrot.distributed import all_gather_with_grad, all_reduce_sum, ddp_loss_scale, is_distributed

from dist_workers import (
    MEDIAN_OPTIONS,
    METHODS,
    SIZES,
    Net,
    free_port,
    local_slice,
    nonfinite_z,
    scenario,
    sgd_step,
    worker,
)


@pytest.fixture(scope="module", params=[2, 3], ids=["world2", "world3"])
def ranks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, list[dict[str, Any]]]:
    world = request.param
    out = tmp_path_factory.mktemp(f"world{world}")
    mp.start_processes(
        worker, args=(world, free_port(), str(out)), nprocs=world, start_method="spawn"
    )
    return world, [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.distributed
@pytest.mark.parametrize("detach", [True, False])
def test_operator_equals_single_process_on_concatenated_batch(ranks, detach: bool) -> None:
    world, results = ranks
    data = scenario(world)
    z = data["z"].clone().requires_grad_(True)
    out, stats = carrot_operator(z, data["y"], detach_stats=detach)
    (out * data["w"]).sum().backward()
    assert (stats["gamma"] > 1).any(), "the scenario must exercise the expansion"
    for rank, res in enumerate(results):
        got = res[f"operator_{detach}"]
        sl = local_slice(world, rank)
        assert_close(got["out"], out[sl].detach(), rtol=1e-6, atol=1e-9)
        assert_close(got["grad"], z.grad[sl], rtol=1e-6, atol=1e-9)
        for key in ("classes", "gamma", "r", "m", "counts"):
            assert_close(got[key], stats[key], rtol=1e-6, atol=1e-9, msg=key)


@pytest.mark.distributed
@pytest.mark.parametrize("sync_free", [False, True])
def test_non_finite_rows_across_ranks_equal_one_process(ranks, sync_free: bool) -> None:
    from carrot import OperatorOptions

    world, results = ranks
    data = scenario(world)
    bad = nonfinite_z(data["z"])
    out, stats = carrot_operator(bad, data["y"], options=OperatorOptions(sync_free=sync_free))
    assert int(stats["nonfinite"]) == 2
    counted = 0
    for rank, res in enumerate(results):
        got = res[f"nonfinite_{sync_free}"]
        assert_close(got["out"], out[local_slice(world, rank)], rtol=1e-6, atol=1e-9, equal_nan=True)
        counted += int(got["nonfinite"])
        if not sync_free:
            assert_close(got["gamma"], stats["gamma"][stats["valid"]], rtol=1e-6, atol=1e-9)
    assert counted == 2  # each rank counts its own rows


@pytest.mark.distributed
@pytest.mark.parametrize("key", sorted(MEDIAN_OPTIONS))
def test_the_median_radius_is_over_every_rank(ranks, key: str) -> None:
    """The median is not a sum: the ranks gather their members' distances, and the result and
    its gradient equal one process's on the concatenated batch."""
    world, results = ranks
    data = scenario(world)
    z = data["z"].clone().requires_grad_(True)
    out, stats = carrot_operator(z, data["y"], options=MEDIAN_OPTIONS[key])
    (out * data["w"]).sum().backward()
    assert (stats["gamma"] > 1).any()
    for rank, res in enumerate(results):
        sl = local_slice(world, rank)
        assert_close(res[key]["out"], out[sl].detach(), rtol=1e-6, atol=1e-9)
        assert_close(res[key]["grad"], z.grad[sl], rtol=1e-6, atol=1e-9)
        assert_close(res[key]["gamma"], stats["gamma"], rtol=1e-6, atol=1e-9)


@pytest.mark.distributed
def test_uneven_sizes_single_class_rank_and_local_flag(ranks) -> None:
    world, results = ranks
    data = scenario(world)
    assert len(set(SIZES[world])) == world
    rank0 = data["y"][local_slice(world, 0)]
    assert rank0.unique().numel() == 1
    # Local statistics on the single-class rank: skipped, z unchanged; global ones expand it.
    assert results[0]["local_stats"]["classes"].numel() == 1
    assert torch.equal(results[0]["local_stats"]["out"], data["z"][local_slice(world, 0)])
    assert not torch.equal(results[0]["operator_True"]["out"], data["z"][local_slice(world, 0)])


@pytest.mark.distributed
@pytest.mark.parametrize("method", METHODS)
def test_ddp_step_equals_single_process_step(ranks, method: str) -> None:
    world, results = ranks
    data = scenario(world)
    want = sgd_step(Net(method), data["x"], data["y"])
    initial = Net(method).state_dict()
    assert any((want[k] - initial[k]).abs().max() > 1e-3 for k in want), "the step must move"
    for res in results:
        got = res[f"step_{method}"]
        for key in want:
            assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=f"{method}: {key}")


@pytest.mark.distributed
def test_communication_is_per_class_in_the_global_batch(ranks) -> None:
    world, results = ranks
    data = scenario(world)
    c = data["y"].unique().numel()
    b_max = max(SIZES[world])
    # sizes and scale exponents (W × 2 int64) + padded labels (W × max B int64) + per-class sums
    # (C × D) + squares (C)
    expected = world * 16 + world * b_max * 8 + c * data["z"].shape[1] * 4 + c * 4
    assert all(res["bytes"] == expected for res in results)


@pytest.mark.distributed
def test_sampler_across_real_ranks(ranks) -> None:
    world, results = ranks
    lengths = {res["sampler"]["len"] for res in results}
    assert len(lengths) == 1 and lengths.pop() == len(results[0]["sampler"]["batches"])
    assert [res["sampler"]["rank"] for res in results] == list(range(world))
    labels = torch.arange(40).repeat_interleave(torch.arange(40) % 7 + 1)
    for step in zip(*(res["sampler"]["batches"] for res in results), strict=True):
        classes = [set(labels[b].tolist()) for b in step]
        assert all(len(c) == 4 for c in classes)
        assert len(set().union(*classes)) == 4 * world


# --- single process: no collective unless distributed with more than one rank ----------------


@pytest.fixture
def world_of_one(monkeypatch: pytest.MonkeyPatch):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("no collective may run with world size 1")

    for name in ("all_reduce", "all_gather", "all_gather_object", "broadcast"):
        monkeypatch.setattr(dist, name, forbidden)
    yield
    monkeypatch.undo()
    dist.destroy_process_group()


def test_world_size_one_calls_no_collective(world_of_one) -> None:
    assert dist.is_initialized() and not is_distributed()
    z = torch.randn(8, 4, requires_grad=True)
    y = torch.arange(4).repeat_interleave(2)
    out, _ = carrot_operator(z, y, detach_stats=False)
    loss, _ = carrot_supcon_loss(z, y, gather_global=True)
    (out.sum() + loss).backward()
    assert ddp_loss_scale(8) == 1.0
    assert all_reduce_sum(z) is z
    assert all_gather_with_grad(z) == (z, 0)


def test_not_initialized_is_local() -> None:
    assert not dist.is_initialized()
    views = torch.randn(6, 2, 3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    assert_close(supcon_loss(views, y, gather_global=True), supcon_loss(views, y))


def test_reducer_outside_distributed_is_an_error() -> None:
    from carrot.distributed import DistributedReducer

    with pytest.raises(
        RuntimeError, match=r"DistributedReducer needs torch\.distributed initialized"
    ):
        DistributedReducer()
