"""Module forms: same results as the functions, statistics summary, validation in __init__."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot import (
    CarrotCEKLLoss,
    CarrotSupConLoss,
    CarrotTransform,
    OperatorOptions,
    SupConLoss,
    carrot_ce_kl_loss,
    carrot_operator,
    carrot_supcon_loss,
    summarize_stats,
    supcon_loss,
)


def _batch(p: int = 5, k: int = 4, d: int = 8, spread: float = 0.05):
    centers = torch.randn(p, d)
    y = torch.arange(p).repeat_interleave(k)
    return F.normalize(centers[y] + spread * torch.randn(p * k, d), dim=1), y


def test_transform_equals_operator_and_keeps_stats() -> None:
    z, y = _batch()
    t = CarrotTransform(options=OperatorOptions(max_gamma=3.0))
    out = t(z, y)
    want, stats = carrot_operator(z, y, options=OperatorOptions(max_gamma=3.0))
    assert torch.equal(out, want)
    assert torch.equal(t.last_stats["gamma"], stats["gamma"])


def test_summary_values() -> None:
    z, y = _batch()
    t = CarrotTransform()
    t(z, y)
    s = t.summary()
    assert all(isinstance(v, torch.Tensor) for v in s.values())
    stats = t.last_stats
    assert_close(s["gamma_mean"], stats["gamma"].mean())
    assert_close(s["gamma_max"], stats["gamma"].max())
    assert_close(s["gamma_frac_gt1"], (stats["gamma"] > 1).float().mean())
    ratio = stats["r"] / stats["m"]
    assert_close(s["r_over_m_q50"], ratio.quantile(0.5))
    assert_close(s["r_over_m_q90"], ratio.quantile(0.9))
    assert int(s["classes_in_batch"]) == 5
    synced = t.summary(sync=True, quantiles=(0.25,))
    assert isinstance(synced["gamma_mean"], float) and synced["classes_in_batch"] == 5
    assert set(synced) >= {"gamma_mean", "gamma_frac_gt1", "r_over_m_q25"}


def test_summary_of_sync_free_stats_ignores_unused_slots() -> None:
    z, y = _batch()
    _, compact = carrot_operator(z, y)
    _, free = carrot_operator(z, y, options=OperatorOptions(sync_free=True))
    a, b = summarize_stats(compact, sync=True), summarize_stats(free, sync=True)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5), key


def test_summary_of_one_class_batch_is_finite() -> None:
    t = CarrotTransform()
    t(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    s = t.summary(sync=True)
    assert s["gamma_mean"] == 1.0 and s["r_over_m_q50"] == 0.0


def test_summary_before_forward() -> None:
    with pytest.raises(RuntimeError, match=r"summary\(\) needs a forward call first"):
        CarrotTransform().summary()


def test_summary_bad_quantile() -> None:
    t = CarrotTransform()
    t(*_batch())
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\]"):
        t.summary(quantiles=(1.5,))


def test_loss_modules_equal_functions() -> None:
    z, y = _batch()
    head = torch.nn.Linear(8, 5)
    module = CarrotCEKLLoss(lam=2.0, T=2.0, kl_direction="symmetric")
    assert_close(
        module(z, y, head),
        carrot_ce_kl_loss(z, y, head, lam=2.0, T=2.0, kl_direction="symmetric")[0],
    )
    assert module.summary(sync=True)["classes_in_batch"] == 5
    cs = CarrotSupConLoss(temperature=0.2)
    assert_close(cs(z, y), carrot_supcon_loss(z, y, temperature=0.2)[0])
    views = torch.stack([z, z.flip(0)], 1)
    assert_close(SupConLoss(temperature=0.3)(views, y), supcon_loss(views, y, temperature=0.3))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            lambda: CarrotTransform(options=OperatorOptions(max_gamma=0.0)),
            "max_gamma must be >= 1 or None",
        ),
        (lambda: CarrotTransform(options=OperatorOptions(eps=-1.0)), "eps must be >= 0"),
        (lambda: CarrotCEKLLoss(T=0.0), r"T must be in \[0.001, 1000\]"),
        (lambda: CarrotCEKLLoss(lam=-0.1), r"lam must be in \[0, 10000\]"),
        (lambda: CarrotCEKLLoss(aux_ce_weight=-1.0), r"aux_ce_weight must be in \[0, 10000\]"),
        (lambda: CarrotCEKLLoss(kl_direction="both"), "kl_direction must be one of"),
        (lambda: CarrotCEKLLoss(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
        (lambda: SupConLoss(temperature=-1.0), "temperature must be > 0"),
        (lambda: CarrotSupConLoss(temperature=0.0), "temperature must be > 0"),
    ],
)
def test_hyperparameters_validated_at_construction(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()
