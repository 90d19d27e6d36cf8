"""The radius options of issue 25: the factor f in γ = max(1, m / (f r + ε)) and the median
radius, against the float64 loop oracle (values, gradients, every class-list path)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot import OperatorOptions, carrot_ce_kl_loss, carrot_operator, class_geometry

from oracle import oracle_operator


def _batch(seed: int = 0, sizes: tuple[int, ...] = (4, 4, 3, 5, 2, 1)):
    """Classes of odd and even sizes (and a singleton), unsorted labels, float64."""
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(len(sizes), 6, generator=g, dtype=torch.float64), dim=1)
    y = torch.cat([torch.full((n,), 3 * c + 1) for c, n in enumerate(sizes)])
    z = centers[torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])]
    z = z + 0.4 * torch.randn(len(y), 6, generator=g, dtype=torch.float64)
    perm = torch.randperm(len(y), generator=g)
    return z[perm], y[perm]


@pytest.mark.parametrize("sync_free", [False, True])
@pytest.mark.parametrize("radius_stat", ["rms", "median"])
@pytest.mark.parametrize("radius_factor", [2.0, 1.0, 0.5, 3.25])
def test_the_operator_matches_the_oracle(radius_factor, radius_stat, sync_free) -> None:
    z, y = _batch()
    options = OperatorOptions(
        radius_factor=radius_factor, radius_stat=radius_stat, sync_free=sync_free
    )
    got, stats = carrot_operator(z, y, options=options)
    want, oracle = oracle_operator(z, y, radius_factor=radius_factor, radius_stat=radius_stat)
    assert_close(got, want, rtol=1e-10, atol=1e-12)
    valid = stats["valid"]
    order = torch.argsort(stats["classes"][valid])
    assert_close(stats["r"][valid][order], oracle["r"], rtol=1e-10, atol=1e-12)
    assert_close(stats["gamma"][valid][order], oracle["gamma"], rtol=1e-10, atol=1e-12)
    # A smaller factor expands more: the factor is really used.
    if radius_factor < 2.0:
        base = oracle_operator(z, y, radius_stat=radius_stat)[1]["gamma"]
        assert (oracle["gamma"] >= base).all() and (oracle["gamma"] > base).any()


def test_the_median_is_the_middle_distance() -> None:
    """Hand-made: an outlier in class 0 (four rows, even: the two middle distances averaged) and
    three rows in class 1 (odd: the middle one)."""
    z = torch.tensor(
        [[1.0, 0], [-1, 0], [0, 1], [0, -5], [10, 0], [12, 0], [17, 0]], dtype=torch.float64
    )
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    mu0 = z[:4].mean(0)
    d0 = sorted(float((row - mu0).norm()) for row in z[:4])
    geo = class_geometry(z, y, radius_stat="median")
    assert_close(geo.r[0], torch.tensor((d0[1] + d0[2]) / 2, dtype=torch.float64))
    assert_close(geo.r[1], torch.tensor(3.0, dtype=torch.float64))  # 3, 1 and 4 from 13
    rms = class_geometry(z, y)
    assert rms.r[0] > geo.r[0]  # the outlier pulls the RMS radius, not the median


@pytest.mark.parametrize("radius_stat", ["rms", "median"])
def test_gradients_through_the_statistics_match_the_oracle(radius_stat) -> None:
    z, y = _batch(seed=3)
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    options = OperatorOptions(detach_stats=False, radius_factor=1.0, radius_stat=radius_stat)
    (carrot_operator(a, y, options=options)[0] * w).sum().backward()
    want, _ = oracle_operator(
        b, y, detach_stats=False, radius_factor=1.0, radius_stat=radius_stat
    )
    (want * w).sum().backward()
    assert torch.isfinite(a.grad).all()
    assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_and_ignored_rows(dtype) -> None:
    z, y = _batch(seed=4)
    yy = y.clone()
    yy[:3] = -100
    options = OperatorOptions(radius_stat="median", radius_factor=1.0)
    got, stats = carrot_operator(z.to(dtype), yy, options=options)
    want, oracle = oracle_operator(
        z.to(dtype).double()[3:], y[3:], radius_factor=1.0, radius_stat="median"
    )
    assert got.dtype == dtype
    assert torch.equal(got[:3], z.to(dtype)[:3])  # ignored rows come back unchanged
    valid = stats["valid"]
    assert_close(stats["gamma"][valid].double(), oracle["gamma"], rtol=1e-5, atol=1e-6)
    assert_close(got[3:].double(), want, rtol=1e-2, atol=1e-2)


def test_huge_embeddings_keep_the_median_exact() -> None:
    z, y = _batch(seed=6)
    options = OperatorOptions(radius_stat="median", eps=0.0)
    base, base_stats = carrot_operator(z.float(), y, options=options)
    got, stats = carrot_operator(z.float() * 2.0**100, y, options=options)
    assert torch.isfinite(got).all()
    assert_close(stats["gamma"], base_stats["gamma"], rtol=1e-6, atol=0)
    assert_close(got, base * 2.0**100, rtol=1e-6, atol=0)


def test_the_loss_takes_the_options() -> None:
    z, y = _batch(seed=7)
    head = torch.nn.Linear(6, 20).double()
    a, sa = carrot_ce_kl_loss(z, y, head, options=OperatorOptions(radius_factor=0.5))
    b, sb = carrot_ce_kl_loss(z, y, head)
    assert (sa["gamma"] >= sb["gamma"]).all() and (sa["gamma"] > sb["gamma"]).any()
    assert not torch.equal(a, b)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"radius_factor": 0.0}, r"radius_factor must be > 0 and finite, got 0.0\."),
        ({"radius_factor": float("inf")}, r"radius_factor must be > 0 and finite, got inf\."),
        ({"radius_factor": True}, r"radius_factor must be > 0 and finite, got True\."),
        ({"radius_stat": "mean"}, r"radius_stat must be one of \('rms', 'median'\), got 'mean'\."),
        (
            {"radius_stat": "median", "unbiased_radius": True},
            r"unbiased_radius must be False with radius_stat='median'",
        ),
    ],
)
def test_bad_options_are_one_line_errors(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorOptions(**changes)
