"""Tensors at the edges: empty batches, ignored labels, magnitudes near float32's limits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot import OperatorOptions, carrot_ce_kl_loss, carrot_operator, carrot_supcon_loss
from carrot.memory import ClassMemory

from oracle import oracle_operator

MODES = [False, True]


def _batch(p: int = 5, k: int = 4, d: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(p).repeat_interleave(k)
    centers = 2 * torch.randn(p, d, generator=g, dtype=torch.float64)
    z = F.normalize(centers[y] + 0.4 * torch.randn(p * k, d, generator=g, dtype=torch.float64))
    return z, y


# --- empty batches ---------------------------------------------------------------------------


@pytest.mark.parametrize("sync_free", MODES)
def test_operator_returns_an_empty_batch_unchanged(sync_free: bool) -> None:
    z = torch.zeros(0, 8)
    out, stats = carrot_operator(
        z, torch.zeros(0, dtype=torch.long), options=OperatorOptions(sync_free=sync_free)
    )
    assert out.shape == (0, 8)
    assert bool(stats["skipped"]) and int(stats["classes_in_batch"]) == 0


@pytest.mark.parametrize("sync_free", MODES)
def test_losses_of_an_empty_batch_are_zero_with_zero_gradient(sync_free: bool) -> None:
    head = torch.nn.Linear(8, 3)
    z = torch.zeros(0, 8, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long)
    options = OperatorOptions(sync_free=sync_free)
    for direction in ("plus_z", "symmetric"):
        loss, stats = carrot_ce_kl_loss(
            z, y, head, kl_direction=direction, aux_ce_weight=1.0, options=options
        )
        assert loss.item() == 0.0 and stats["ce"].item() == 0.0 and stats["kl"].item() == 0.0
        loss.backward()
        assert z.grad is not None and z.grad.shape == (0, 8)
        assert all(p.grad is None or not p.grad.any() for p in head.parameters())
    loss, _ = carrot_supcon_loss(z, y, options=options)
    assert loss.item() == 0.0
    loss.backward()


# --- ignore_index ----------------------------------------------------------------------------


def _with_ignored(z: torch.Tensor, y: torch.Tensor, n: int = 3, seed: int = 5):
    """The batch with ``n`` rows labelled -100 mixed in; also returns where the real rows went."""
    g = torch.Generator().manual_seed(seed)
    extra = F.normalize(torch.randn(n, z.shape[1], generator=g, dtype=z.dtype))
    zz = torch.cat([z, extra])
    yy = torch.cat([y, torch.full((n,), -100)])
    order = torch.randperm(len(yy), generator=g)
    real = torch.argsort(order)[: len(y)]  # positions of the original rows
    return zz[order], yy[order], real


@pytest.mark.parametrize("sync_free", MODES)
def test_ignored_rows_are_left_out_of_the_statistics_and_returned_unchanged(sync_free) -> None:
    z, y = _batch()
    zz, yy, real = _with_ignored(z, y)
    options = OperatorOptions(sync_free=sync_free)
    want, want_stats = carrot_operator(z, y, options=options)
    got, stats = carrot_operator(zz, yy, options=options)
    assert_close(got[real], want)
    ignored = yy == -100
    assert torch.equal(got[ignored], zz[ignored])
    assert int(stats["classes_in_batch"]) == 5
    valid = stats["valid"]
    assert -100 not in stats["classes"][valid].tolist()
    wv = want_stats["valid"]
    # Compare class by class (sync-free slots follow first occurrence in the batch).
    got_order = torch.argsort(stats["classes"][valid])
    want_order = torch.argsort(want_stats["classes"][wv])
    assert_close(stats["gamma"][valid][got_order], want_stats["gamma"][wv][want_order])
    assert_close(stats["m"][valid][got_order], want_stats["m"][wv][want_order])


def test_ignore_index_none_counts_every_label() -> None:
    z, y = _batch()
    zz, yy, _ = _with_ignored(z, y)
    _, stats = carrot_operator(zz, yy, options=OperatorOptions(ignore_index=None))
    assert stats["classes_in_batch"] == 6
    _, stats = carrot_operator(zz, yy, options=OperatorOptions(ignore_index=0))
    assert stats["classes_in_batch"] == 5  # class 0 is ignored now, -100 is a class


@pytest.mark.parametrize("sync_free", MODES)
def test_a_batch_of_only_ignored_rows_is_skipped_and_its_loss_is_zero(sync_free) -> None:
    z, _ = _batch()
    y = torch.full((len(z),), -100)
    options = OperatorOptions(sync_free=sync_free)
    out, stats = carrot_operator(z, y, options=options)
    assert torch.equal(out, z) and bool(stats["skipped"])
    head = torch.nn.Linear(z.shape[1], 5).double()
    zr = z.clone().requires_grad_(True)
    loss, _ = carrot_ce_kl_loss(zr, y, head, options=options)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(zr.grad).all() and not zr.grad.any()


@pytest.mark.parametrize("sync_free", MODES)
def test_ce_kl_loss_with_ignored_rows_equals_the_loss_without_them(sync_free) -> None:
    z, y = _batch(seed=3)
    zz, yy, real = _with_ignored(z, y)
    head = torch.nn.Linear(z.shape[1], 5).double()
    options = OperatorOptions(sync_free=sync_free)
    for kwargs in ({}, {"aux_ce_weight": 0.5, "label_smoothing": 0.1, "kl_direction": "symmetric"}):
        a = z.clone().requires_grad_(True)
        b = zz.clone().requires_grad_(True)
        want, _ = carrot_ce_kl_loss(a, y, head, options=options, **kwargs)
        got, _ = carrot_ce_kl_loss(b, yy, head, options=options, **kwargs)
        assert_close(got, want)
        want.backward()
        got.backward()
        assert_close(b.grad[real], a.grad)
        assert not b.grad[yy == -100].any()


def test_memory_sees_no_ignored_class() -> None:
    z, y = _batch()
    zz, yy, _ = _with_ignored(z, y)
    mem = ClassMemory(5, z.shape[1]).double()
    for sync_free in MODES:
        carrot_operator(zz, yy, memory=mem, options=OperatorOptions(sync_free=sync_free))
    assert mem.seen[:5].all() and not mem.seen[5]


# --- magnitudes near float32's limits --------------------------------------------------------


@pytest.mark.parametrize("sync_free", MODES)
@pytest.mark.parametrize("exponent", [-100, -40, 40, 64, 100])
def test_operator_is_exact_under_power_of_two_scaling(exponent: int, sync_free: bool) -> None:
    z64, y = _batch()
    z = z64.float()
    s = 2.0**exponent
    options = OperatorOptions(sync_free=sync_free, eps=0.0)  # ε is the formula's one scale
    base, base_stats = carrot_operator(z, y, options=options)
    got, stats = carrot_operator(z * s, y, options=options)
    assert torch.isfinite(got).all()
    assert_close(got, base * s, rtol=1e-6, atol=0)
    assert_close(stats["gamma"], base_stats["gamma"], rtol=1e-6, atol=0)
    v = stats["valid"]
    assert_close(stats["r"][v], base_stats["r"][v] * s, rtol=1e-6, atol=0)
    assert_close(stats["m"][v], base_stats["m"][v] * s, rtol=1e-6, atol=0)
    assert (stats["gamma"][v] > 1).any()


@pytest.mark.parametrize("scale", [1.8e19, 3e25, 1e37])
def test_operator_matches_the_oracle_on_huge_embeddings(scale: float) -> None:
    z64, y = _batch(seed=7)
    z = (z64 * scale).float()
    got, stats = carrot_operator(z, y)
    want, oracle = oracle_operator(z.double(), y)
    assert torch.isfinite(got).all() and torch.isfinite(stats["r"]).all()
    assert_close(got.double(), want, rtol=2e-5, atol=0)
    assert_close(stats["gamma"].double(), oracle["gamma"], rtol=2e-5, atol=0)
    assert_close(stats["r"].double(), oracle["r"], rtol=2e-5, atol=0)


def test_values_near_float32_max_give_finite_output() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(4)
    z = (torch.rand(16, 6, generator=g) * 2 - 1) * 3.0e38
    out, stats = carrot_operator(z, y)
    assert torch.isfinite(out).all() and torch.isfinite(stats["gamma"]).all()
    want, oracle = oracle_operator(z.double(), y)
    assert_close(stats["gamma"].double(), oracle["gamma"], rtol=1e-5, atol=0)
    inside = want.abs() < torch.finfo(torch.float32).max  # the rest saturates
    assert_close(out.double()[inside], want[inside], rtol=1e-5, atol=0)
    assert (out.double()[~inside].abs() == torch.finfo(torch.float32).max).all()


@pytest.mark.parametrize("scale", [1e20, 3e30, 2e38, 1e-30])
def test_losses_are_scale_invariant_at_any_finite_magnitude(scale: float) -> None:
    z64, y = _batch(seed=2)
    z = z64.float()
    head = torch.nn.Linear(z.shape[1], 5)
    a = z.clone().requires_grad_(True)
    b = (z * scale).requires_grad_(True)
    want, _ = carrot_ce_kl_loss(a, y, head)
    got, _ = carrot_ce_kl_loss(b, y, head)
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    want.backward()
    got.backward()
    assert b.grad.abs().sum() > 0 and torch.isfinite(b.grad).all()
    assert_close(b.grad.double() * scale, a.grad.double(), rtol=1e-3, atol=1e-6)
    sc, _ = carrot_supcon_loss(z * scale, y)
    assert_close(sc, carrot_supcon_loss(z, y)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sync_free", MODES)
def test_supcon_losses_leave_ignored_rows_out(sync_free: bool) -> None:
    from carrot import supcon_loss

    z, y = _batch(seed=4)
    zz, yy, real = _with_ignored(z, y)
    options = OperatorOptions(sync_free=sync_free)
    a = z.clone().requires_grad_(True)
    b = zz.clone().requires_grad_(True)
    want, _ = carrot_supcon_loss(a, y, options=options)
    got, _ = carrot_supcon_loss(b, yy, options=options)
    assert_close(got, want)
    want.backward()
    got.backward()
    assert_close(b.grad[real], a.grad)
    assert not b.grad[yy == -100].any()
    views = torch.stack([zz, zz.flip(1)], dim=1)
    plain = supcon_loss(views, yy, ignore_index=-100)
    assert_close(plain, supcon_loss(views[real], y))
    # Every row ignored: 0, with a zero (not NaN) gradient.
    c = zz.clone().requires_grad_(True)
    loss, _ = carrot_supcon_loss(c, torch.full_like(yy, -100), options=options)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(c.grad).all() and not c.grad.any()


@pytest.mark.parametrize("scale", [1e250, 1e-300, 1e-318])
def test_float64_at_its_extremes(scale: float) -> None:
    from carrot.functional import safe_normalize

    z64, y = _batch(seed=6)
    z = z64 * scale
    got, stats = carrot_operator(z, y, eps=0.0)
    want, want_stats = carrot_operator(z64, y, eps=0.0)
    assert torch.isfinite(got).all() and torch.isfinite(stats["gamma"]).all()
    rtol = 1e-6 if scale > 1e-308 else 1e-3  # subnormal inputs carry fewer bits
    assert_close(stats["gamma"], want_stats["gamma"], rtol=rtol, atol=0)
    if scale > 1e-308:
        assert_close(got, want * scale, rtol=rtol, atol=0)
    assert_close(safe_normalize(z).norm(dim=1), torch.ones(len(z), dtype=torch.float64))


def test_an_empty_rank_does_not_outvote_tiny_embeddings() -> None:
    """The scale exponent of no data is below any real one (a rank with an empty batch reports it)."""
    from carrot.functional.numerics import _NO_DATA, _exponent

    assert int(_exponent(torch.zeros(0, 4))) == _NO_DATA == int(_exponent(torch.zeros(3, 4)))
    assert int(_exponent(torch.full((2, 2), 1e-25))) < 0
