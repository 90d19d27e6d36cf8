"""The baselines across ranks: real gloo process groups compared with one process on the
concatenated batch. Pairwise confusion pairs images across ranks (values and gradients); the
centres of center loss and the covariances of ISDA are updated from the global batch, so every
rank holds the single-process state without any broadcast; DDP steps equal one process's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch.testing import assert_close

from carrot.functional import euclidean_confusion
from dist_baselines_workers import METHODS, STEPS, BaselineNet, train, worker

from dist_workers import free_port, local_slice, scenario

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module", params=[2, 3], ids=["world2", "world3"])
def ranks(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, list[dict[str, Any]]]:
    world = request.param
    out = tmp_path_factory.mktemp(f"baselines{world}")
    mp.start_processes(
        worker, args=(world, free_port(), str(out)), nprocs=world, start_method="spawn"
    )
    return world, [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def test_pairwise_confusion_pairs_across_ranks(ranks) -> None:
    world, results = ranks
    data = scenario(world)
    logits = (data["w"] * 3).requires_grad_(True)
    pc = euclidean_confusion(logits, data["y"])
    pc.backward()
    for rank, res in enumerate(results):
        sl = local_slice(world, rank)
        assert_close(res["pc"]["value"], pc.detach(), rtol=1e-9, atol=1e-12)
        # Every rank's loss is the global mean, so the gradient a rank's rows receive is the sum
        # over the W identical losses: W times one process's.
        assert_close(res["pc"]["grad"], world * logits.grad[sl], rtol=1e-9, atol=1e-12)
    # Rank 0 holds a single class: on its own it has no pair to confuse.
    assert float(results[0]["pc_local"]) == 0.0 and float(pc.detach()) > 0


@pytest.mark.parametrize("method", METHODS)
def test_ddp_steps_and_state_equal_single_process(ranks, method: str) -> None:
    world, results = ranks
    data = scenario(world)
    want = train(BaselineNet(method), data["x"], data["y"])
    initial = BaselineNet(method).state_dict()
    assert any((want[k] - initial[k]).abs().max() > 1e-3 for k in want), "the steps must move"
    if method == "center_loss":
        assert want["center.centers"].abs().max() > 0
    if method == "isda":
        assert want["isda.covariance"].abs().max() > 0
        assert int(want["isda.count"].sum()) == STEPS * len(data["y"])
    for res in results:
        got = res[method]
        for key in want:
            assert_close(got[key], want[key], rtol=0, atol=1e-9, msg=f"{method}: {key}")
