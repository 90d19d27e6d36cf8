"""carrot.integrations.pml: any pytorch-metric-learning loss on the CARROT view."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from pytorch_metric_learning.losses import (
    ArcFaceLoss,
    CrossBatchMemory,
    NTXentLoss,
    ProxyAnchorLoss,
    SelfSupervisedLoss,
    SupConLoss,
    TripletMarginLoss,
)
from pytorch_metric_learning.miners import MultiSimilarityMiner
from torch import Tensor
from torch.testing import assert_close

from carrot import OperatorOptions, carrot_operator, carrot_supcon_loss
from carrot.functional import safe_normalize
from carrot.integrations.pml import CarrotViewLoss

from dist_workers import free_port
from pml_workers import STAT_KEYS, WORLD, local_slice, scenario, worker

SRC = Path(__file__).resolve().parents[2] / "src"


def _batch(seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Six well-separated classes of four: the operator expands some of them (γ > 1)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(6).repeat_interleave(4)
    centers = 3 * torch.randn(6, 8, generator=g, dtype=dtype)
    return centers[y] + torch.randn(24, 8, generator=g, dtype=dtype), y


class Spy:
    """A loss that records what it was called with and returns a differentiable scalar."""

    def __init__(self) -> None:
        self.calls: list[tuple[Tensor, Tensor, dict[str, Any]]] = []

    def __call__(self, embeddings: Tensor, labels: Tensor, **kwargs: Any) -> Tensor:
        self.calls.append((embeddings, labels, kwargs))
        return embeddings.sum()


# --- the optional dependency ------------------------------------------------------------------


def test_importing_carrot_does_not_import_pml() -> None:
    code = (
        "import sys, carrot, carrot.integrations, carrot.integrations.pml\n"
        "assert 'pytorch_metric_learning' not in sys.modules, 'imported eagerly'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_missing_pml_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("pytorch_metric_learning")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning", None)
    with pytest.raises(ImportError, match=r"pip install 'carrot-fgvc\[pml\]'"):
        CarrotViewLoss(Spy())


# --- what the wrapped loss sees ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_the_loss_sees_both_views_and_repeated_labels(dtype: torch.dtype) -> None:
    z, y = _batch(dtype=dtype)
    spy = Spy()
    CarrotViewLoss(spy)(z, y)
    ((both, labels, kwargs),) = spy.calls
    z_hat = safe_normalize(z.double()).to(dtype)
    z_plus, stats = carrot_operator(z_hat, y)
    assert (stats["gamma"] > 1).any(), "the batch must exercise the expansion"
    want = torch.cat([z_hat, safe_normalize(z_plus.double()).to(dtype)])
    assert both.dtype == dtype and both.shape == (48, 8)
    assert_close(both, want)
    assert torch.equal(labels, torch.cat([y, y])) and kwargs == {}


def test_summary_and_last_stats_are_the_operators() -> None:
    z, y = _batch()
    criterion = CarrotViewLoss(SupConLoss())
    with pytest.raises(RuntimeError, match=r"CarrotViewLoss.summary\(\) needs a forward call"):
        criterion.summary()
    loss = criterion(z, y)
    _, want = carrot_operator(F.normalize(z, dim=1), y)
    assert criterion.last_stats is not None
    for key in STAT_KEYS:
        assert_close(criterion.last_stats[key], want[key], msg=key)
    assert_close(criterion.last_stats["loss"], loss.detach())
    summary = criterion.summary(sync=True)
    assert summary["classes_in_batch"] == 6 and summary["gamma_max"] > 1.0
    assert summary["gamma_mean"] == pytest.approx(want["gamma"].mean().item(), rel=1e-6)


# --- equal to carrot's own SupCon -------------------------------------------------------------


@pytest.mark.parametrize(
    "options, stop_grad_plus",
    [
        (OperatorOptions(), False),
        (OperatorOptions(max_gamma=1.5, detach_stats=False), False),
        (OperatorOptions(), True),
    ],
    ids=["default", "capped_through_stats", "stop_grad_plus"],
)
def test_pml_supcon_equals_carrot_supcon(options: OperatorOptions, stop_grad_plus: bool) -> None:
    z, y = _batch(seed=1)
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    criterion = CarrotViewLoss(SupConLoss(temperature=0.1), options, stop_grad_plus=stop_grad_plus)
    got = criterion(z1, y)
    want, stats = carrot_supcon_loss(
        z2, y, temperature=0.1, options=options, stop_grad_plus=stop_grad_plus
    )
    assert (stats["gamma"] > 1).any()
    got.backward()
    want.backward()
    assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert_close(z1.grad, z2.grad, rtol=1e-5, atol=1e-5)


# --- losses with parameters train with their own optimizer ------------------------------------


@pytest.mark.parametrize(
    "make", [lambda: ProxyAnchorLoss(8, 8), lambda: ArcFaceLoss(8, 8)], ids=["proxy", "arcface"]
)
def test_losses_with_parameters_train(make) -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.arange(8).repeat_interleave(4)
    x = torch.randn(8, 16, generator=g)[y] + 0.5 * torch.randn(32, 16, generator=g)
    net = torch.nn.Linear(16, 8)
    criterion = CarrotViewLoss(make())
    (initial,) = [p.detach().clone() for p in criterion.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    loss_opt = torch.optim.Adam(criterion.parameters(), lr=0.01)  # PML: the loss's own optimizer
    losses, expanded = [], []
    for _ in range(20):
        loss = criterion(net(x), y)
        opt.zero_grad()
        loss_opt.zero_grad()
        loss.backward()
        opt.step()
        loss_opt.step()
        losses.append(loss.item())
        expanded.append(criterion.summary(sync=True)["gamma_frac_gt1"])
    assert losses[-1] < 0.5 * losses[0], losses
    assert max(expanded) > 0, "the CARROT view must differ from the plain one"
    (trained,) = criterion.parameters()
    assert (trained - initial).abs().max() > 1e-3
    criterion.to(torch.float64)
    assert next(criterion.parameters()).dtype == torch.float64
    assert torch.isfinite(criterion(net.double()(x.double()), y))


# --- pass-through: miners, indices, wrappers with fewer arguments, ignored rows ---------------


def test_miner_indices_and_refs_are_passed_through() -> None:
    z, y = _batch()
    spy, mined = Spy(), Spy()

    def miner(emb: Tensor, labels: Tensor, **kwargs: Any) -> tuple[Tensor, ...]:
        mined(emb, labels, **kwargs)
        return (torch.tensor([0]), torch.tensor([24]), torch.tensor([4]))

    ref, ref_y = torch.randn(5, 8), torch.arange(5)
    CarrotViewLoss(spy, miner=miner)(z, y, ref_emb=ref, ref_labels=ref_y)
    ((both, _, kwargs),) = spy.calls
    ((mined_emb, mined_y, mined_kwargs),) = mined.calls
    assert mined_emb is both and torch.equal(mined_y, torch.cat([y, y]))
    assert set(mined_kwargs) == {"ref_emb", "ref_labels"}
    assert set(kwargs) == {"indices_tuple", "ref_emb", "ref_labels"}
    assert kwargs["ref_emb"] is ref and kwargs["indices_tuple"][1].item() == 24
    # A given indices_tuple wins over the miner.
    spy.calls.clear()
    given = (torch.tensor([1]), torch.tensor([2]), torch.tensor([5]))
    CarrotViewLoss(spy, miner=miner)(z, y, given)
    assert spy.calls[0][2] == {"indices_tuple": given} and len(mined.calls) == 1


def test_real_miner_and_cross_batch_memory() -> None:
    z, y = _batch()
    z = z.requires_grad_(True)
    mined = CarrotViewLoss(TripletMarginLoss(margin=0.2), miner=MultiSimilarityMiner(0.1))
    memory = CarrotViewLoss(CrossBatchMemory(NTXentLoss(), embedding_size=8, memory_size=96))
    total = mined(z, y) + memory(z, y) + memory(z.roll(1, 0), y.roll(1))
    total.backward()
    assert torch.isfinite(total) and z.grad is not None and z.grad.abs().sum() > 0
    assert bool(memory.loss.has_been_filled)  # two batches of 2 × 24 rows fill the 96 slots


def test_ignored_rows_are_left_out_of_the_loss() -> None:
    z, y = _batch()
    y = y.clone()
    y[[0, 5]] = -100
    spy = Spy()
    CarrotViewLoss(spy)(z, y)
    ((both, labels, _),) = spy.calls
    assert both.shape == (44, 8) and not (labels == -100).any()
    assert torch.equal(both[:22], F.normalize(z[y != -100], dim=1))
    with pytest.raises(ValueError, match="indices_tuple cannot be combined with labels equal"):
        CarrotViewLoss(spy)(z, y, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    # ignore_index=None: -100 is a class like any other.
    spy.calls.clear()
    CarrotViewLoss(spy, ignore_index=None)(z, y)
    assert spy.calls[0][0].shape == (48, 8)


# --- options and errors -----------------------------------------------------------------------


def test_keyword_options_equal_an_options_object() -> None:
    z, y = _batch()
    by_keyword = CarrotViewLoss(SupConLoss(), max_gamma=1.2, unbiased_radius=True)
    by_object = CarrotViewLoss(SupConLoss(), OperatorOptions(max_gamma=1.2, unbiased_radius=True))
    assert by_keyword.options == by_object.options
    assert_close(by_keyword(z, y), by_object(z, y))
    assert by_keyword.last_stats is not None and by_keyword.last_stats["gamma"].max() <= 1.2


def test_bad_arguments() -> None:
    with pytest.raises(
        ValueError, match=r"either as options=OperatorOptions\(...\) or as keywords"
    ):
        CarrotViewLoss(SupConLoss(), OperatorOptions(), max_gamma=1.5)
    with pytest.raises(ValueError, match=r"unknown operator options \['gamma_cap'\]; valid: "):
        CarrotViewLoss(SupConLoss(), gamma_cap=1.5)
    with pytest.raises(ValueError, match="max_gamma must be >= 1 or None"):
        CarrotViewLoss(SupConLoss(), max_gamma=0.5)
    with pytest.raises(ValueError, match="options must be an OperatorOptions, got dict"):
        CarrotViewLoss(SupConLoss(), {"max_gamma": 1.5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="got a SelfSupervisedLoss"):
        CarrotViewLoss(SelfSupervisedLoss(NTXentLoss()))
    with pytest.raises(ValueError, match="loss must be callable, got str"):
        CarrotViewLoss("supcon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="miner must be callable or None, got int"):
        CarrotViewLoss(SupConLoss(), miner=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stop_grad_plus must be True or False, got 1"):
        CarrotViewLoss(SupConLoss(), stop_grad_plus=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"y must be an integer tensor"):
        CarrotViewLoss(SupConLoss())(torch.randn(4, 3), torch.zeros(4))


# --- two real gloo processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("pml_world2")
    mp.start_processes(worker, args=(free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.distributed
@pytest.mark.parametrize("detach", [True, False])
def test_statistics_are_global_under_two_ranks(ranks, detach: bool) -> None:
    data = scenario()
    z = data["z"].clone().requires_grad_(True)
    y = data["y"]
    # One process, concatenated batch: the statistics of all ranks; each rank's loss on its rows.
    z_hat = safe_normalize(z)
    z_plus, stats = carrot_operator(z_hat, y, options=OperatorOptions(detach_stats=detach))
    view = safe_normalize(z_plus)
    loss = SupConLoss(temperature=0.2)
    total = 0.0
    for rank in range(WORLD):
        sl = local_slice(rank)
        total = total + loss(torch.cat([z_hat[sl], view[sl]]), torch.cat([y[sl], y[sl]]))
    total.backward()
    assert (stats["gamma"] > 1).any(), "the scenario must exercise the expansion"
    assert stats["classes"].numel() == 5
    for rank, res in enumerate(ranks):
        got = res[f"local_{detach}"]
        # Each rank holds 3 or 4 of the 5 classes; its statistics cover all 5.
        assert y[local_slice(rank)].unique().numel() == (3, 4)[rank]
        for key in STAT_KEYS:
            assert_close(got[key], stats[key], rtol=1e-6, atol=1e-9, msg=key)
        assert_close(got["grad"], z.grad[local_slice(rank)], rtol=1e-6, atol=1e-9)
        assert_close(got["summary"]["gamma_mean"], stats["gamma"].mean().float())


@pytest.mark.distributed
def test_distributed_loss_wrapper_inside_contrasts_all_views(ranks) -> None:
    data = scenario()
    z = data["z"].clone().requires_grad_(True)
    want, _ = carrot_supcon_loss(z, data["y"], temperature=0.2)
    want.backward()
    for rank, res in enumerate(ranks):
        # PML's wrapper multiplies by the world size and other ranks' rows carry no gradient, so
        # DDP's average of the ranks' gradients is the single-process gradient.
        assert_close(res["gathered"]["loss"] / WORLD, want.detach(), rtol=1e-6, atol=1e-9)
        assert_close(
            res["gathered"]["grad"] / WORLD, z.grad[local_slice(rank)], rtol=1e-6, atol=1e-9
        )
