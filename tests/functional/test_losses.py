"""CARROT losses against formulas written independently in the tests and against
pytorch-metric-learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot import (
    OperatorOptions,
    carrot_ce_kl_loss,
    carrot_supcon_loss,
    kl_consistency,
    supcon_loss,
)

from oracle import oracle_operator, oracle_supcon


def _batch(p: int = 6, k: int = 4, d: int = 12, spread: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(p, d, generator=g, dtype=torch.float64)
    y = torch.arange(p).repeat_interleave(k)
    z = 3 * (centers[y] + spread * torch.randn(p * k, d, generator=g, dtype=torch.float64))
    return z, y


def _reference_ce_kl(z, y, weight, bias, *, T, lam, direction="plus_z", aux=0.0):
    """The guide's objective, from its formulas: ẑ = z/||z||, ẑ⁺ = T(ẑ)/||T(ẑ)||,
    CE(Wẑ + b) + λ T² KL, where KL sums over classes and averages over the batch."""
    z_hat = z / z.norm(dim=1, keepdim=True)
    z_plus, _ = oracle_operator(z_hat, y)
    z_plus = z_plus / z_plus.norm(dim=1, keepdim=True)
    logits = z_hat @ weight.T + bias
    logits_plus = z_plus @ weight.T + bias
    n = len(y)
    ce = -sum(torch.log_softmax(logits[i], 0)[y[i]] for i in range(n)) / n
    p = torch.softmax(logits / T, 1)
    q = torch.softmax(logits_plus / T, 1)
    kl_qp = (q * (q.log() - p.log())).sum() / n
    kl_pq = (p * (p.log() - q.log())).sum() / n
    kl = {"plus_z": kl_qp, "z_plus": kl_pq, "symmetric": (kl_qp + kl_pq) / 2}[direction]
    loss = ce + lam * T * T * kl
    if aux:
        loss = loss - aux * sum(torch.log_softmax(logits_plus[i], 0)[y[i]] for i in range(n)) / n
    return loss


@pytest.mark.parametrize("direction", ["plus_z", "z_plus", "symmetric"])
@pytest.mark.parametrize(("T", "lam", "aux"), [(1.0, 1.0, 0.0), (2.0, 5.0, 0.0), (0.5, 1.0, 0.3)])
def test_ce_kl_value_and_gradients(direction: str, T: float, lam: float, aux: float) -> None:
    z, y = _batch()
    head = torch.nn.Linear(z.shape[1], 6).double()
    za = z.clone().requires_grad_(True)
    loss, stats = carrot_ce_kl_loss(
        za, y, head, T=T, lam=lam, kl_direction=direction, aux_ce_weight=aux
    )
    assert (stats["gamma"] > 1).any(), "the batch must exercise the expansion"
    loss.backward()
    got_grads = [za.grad, head.weight.grad, head.bias.grad]

    w = head.weight.detach().clone().requires_grad_(True)
    b = head.bias.detach().clone().requires_grad_(True)
    zb = z.clone().requires_grad_(True)
    ref = _reference_ce_kl(zb, y, w, b, T=T, lam=lam, direction=direction, aux=aux)
    ref.backward()
    assert_close(loss.double(), ref, rtol=1e-6, atol=1e-7)
    for got, want in zip(got_grads, [zb.grad, w.grad, b.grad], strict=True):
        assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_ce_kl_parts_in_stats() -> None:
    z, y = _batch()
    head = torch.nn.Linear(z.shape[1], 6).double()
    loss, stats = carrot_ce_kl_loss(z, y, head, lam=2.0)
    assert_close(loss, stats["ce"] + 2.0 * stats["kl"])
    assert stats["kl"] > 0
    assert stats["logits"].shape == (len(y), 6)
    assert not stats["logits"].requires_grad


def test_kl_directions_differ_and_vanish_on_equal_logits() -> None:
    a, b = torch.randn(8, 5), torch.randn(8, 5)
    values = {d: kl_consistency(a, b, direction=d) for d in ("plus_z", "z_plus", "symmetric")}
    assert not torch.isclose(values["plus_z"], values["z_plus"])
    assert_close(values["symmetric"], (values["plus_z"] + values["z_plus"]) / 2)
    assert kl_consistency(a, a.clone()).abs() < 1e-6


def test_stop_grad_plus_detaches_target() -> None:
    a = torch.randn(8, 5, requires_grad=True)
    b = torch.randn(8, 5, requires_grad=True)
    kl_consistency(a, b, stop_grad_plus=True).backward()
    assert b.grad is None
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_ce_kl_max_gamma_reaches_operator() -> None:
    z, y = _batch(spread=0.01)
    head = torch.nn.Linear(z.shape[1], 6).double()
    _, stats = carrot_ce_kl_loss(z, y, head, options=OperatorOptions(max_gamma=1.25))
    assert stats["gamma"].max() == 1.25


def test_ce_kl_half_precision_finite() -> None:
    z, y = _batch()
    head = torch.nn.Linear(z.shape[1], 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = carrot_ce_kl_loss(z.float(), y, head)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)


def test_ce_kl_skipped_batch_is_plain_ce() -> None:
    z = torch.randn(4, 3, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    head = torch.nn.Linear(3, 2).double()
    loss, stats = carrot_ce_kl_loss(z, y, head)
    assert stats["skipped"] is True
    assert_close(loss, F.cross_entropy(head(F.normalize(z, dim=1)), y))


# --- SupCon ---------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_supcon_matches_formula(temperature: float) -> None:
    z, y = _batch(p=4, k=3, d=6, spread=0.5)
    feats = torch.stack([z, z + 0.3 * torch.randn_like(z)], dim=1)
    fa = feats.clone().requires_grad_(True)
    got = supcon_loss(fa, y, temperature=temperature)
    got.backward()
    fb = feats.clone().requires_grad_(True)
    want = oracle_supcon(fb, y, temperature)
    want.backward()
    assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert_close(fa.grad.double(), fb.grad, rtol=1e-4, atol=1e-7)


def test_supcon_matches_pytorch_metric_learning() -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    z, y = _batch(p=8, k=4, d=16, spread=0.5)
    views = torch.stack([z, z + 0.2 * torch.randn_like(z)], dim=1).float()
    for temperature in (0.1, 0.3):
        ours = supcon_loss(views, y, temperature=temperature)
        flat = torch.cat([views[:, 0], views[:, 1]])
        theirs = pml_losses.SupConLoss(temperature=temperature)(flat, torch.cat([y, y]))
        assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_supcon_anchors_without_positives_are_left_out() -> None:
    feats = F.normalize(torch.randn(5, 1, 4, dtype=torch.float64), dim=2)
    y = torch.tensor([0, 0, 1, 2, 2])  # label 1 has no positive
    got = supcon_loss(feats, y, temperature=0.2)
    assert_close(got, oracle_supcon(feats, y, 0.2))
    # All anchors positive-free: zero loss, not NaN.
    lone = supcon_loss(feats, torch.arange(5), temperature=0.2)
    assert lone == 0


def test_carrot_supcon_uses_normalized_views() -> None:
    z, y = _batch(p=4, k=4, d=8, spread=0.05)
    loss, stats = carrot_supcon_loss(z, y, temperature=0.1)
    z_hat = F.normalize(z, dim=1)
    z_plus, _ = oracle_operator(z_hat, y)
    want = oracle_supcon(torch.stack([z_hat, F.normalize(z_plus, dim=1)], 1), y, 0.1)
    assert (stats["gamma"] > 1).any()
    assert_close(loss.double(), want, rtol=1e-5, atol=1e-6)
    assert_close(stats["supcon"], loss.detach())


def test_supcon_gradient_flows() -> None:
    z, y = _batch()
    z = z.float().requires_grad_(True)
    loss, _ = carrot_supcon_loss(z, y)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# --- errors -------------------------------------------------------------------------------------


def test_error_lam() -> None:
    with pytest.raises(ValueError, match=r"lam must be in \[0, 10000\]"):
        carrot_ce_kl_loss(torch.randn(4, 3), torch.arange(4), torch.nn.Linear(3, 4), lam=-1)


def test_error_aux_weight() -> None:
    with pytest.raises(ValueError, match=r"aux_ce_weight must be in \[0, 10000\]"):
        carrot_ce_kl_loss(
            torch.randn(4, 3), torch.arange(4), torch.nn.Linear(3, 4), aux_ce_weight=-1
        )


def test_error_label_smoothing() -> None:
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        carrot_ce_kl_loss(
            torch.randn(4, 3), torch.arange(4), torch.nn.Linear(3, 4), label_smoothing=1
        )


def test_error_temperature_kl() -> None:
    with pytest.raises(ValueError, match="T must be > 0"):
        kl_consistency(torch.randn(2, 3), torch.randn(2, 3), T=0)


def test_error_kl_direction() -> None:
    with pytest.raises(ValueError, match="kl_direction must be one of"):
        kl_consistency(torch.randn(2, 3), torch.randn(2, 3), direction="forward")  # type: ignore[arg-type]


def test_error_supcon_shape() -> None:
    with pytest.raises(
        ValueError, match=r"features must be a floating-point tensor of shape \(B, V, D\)"
    ):
        supcon_loss(torch.randn(4, 3), torch.arange(4))


def test_error_carrot_supcon_shape() -> None:
    with pytest.raises(ValueError, match=r"z must be a floating-point tensor of shape \(B, D\)"):
        carrot_supcon_loss(torch.randn(5), torch.arange(5))


def test_error_supcon_temperature() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        supcon_loss(torch.randn(4, 2, 3), torch.arange(4), temperature=0.0)


def test_losses_accept_the_operator_options() -> None:
    from carrot.memory import ClassMemory

    z, y = _batch()
    head = torch.nn.Linear(z.shape[1], 6).double()
    base, _ = carrot_ce_kl_loss(z, y, head)
    free, _ = carrot_ce_kl_loss(z, y, head, options=OperatorOptions(sync_free=True))
    assert_close(free, base)
    angular, stats = carrot_ce_kl_loss(z, y, head, options=OperatorOptions(space="angular"))
    assert torch.isfinite(angular) and (stats["gamma"] >= 1).all()
    memory = ClassMemory(6, z.shape[1])
    carrot_ce_kl_loss(z, y, head, memory=memory)
    assert memory.seen[:6].all()
    sg, _ = carrot_supcon_loss(z, y, stop_grad_plus=True)
    assert_close(sg, carrot_supcon_loss(z, y)[0])  # same value, different gradient


def test_supcon_stop_grad_changes_only_the_gradient() -> None:
    z, y = _batch(spread=0.02)
    grads = []
    for stop in (False, True):
        x = z.clone().requires_grad_(True)
        carrot_supcon_loss(x, y, stop_grad_plus=stop)[0].backward()
        grads.append(x.grad)
    assert (grads[0] - grads[1]).abs().max() > 1e-3


@pytest.mark.parametrize("sync_free", [False, True])
def test_a_batch_of_one_class_has_exactly_zero_consistency(sync_free: bool) -> None:
    """Fewer than two classes: the operator is the identity, so ẑ⁺ is ẑ itself (not ẑ
    normalized a second time, ~3e-8 off) and the KL term is exactly 0, with no gradient. The
    sync-free path (no host sync, fewest kernels) keeps the second normalization: ~1e-7."""
    from carrot.functional import CEKLOptions, carrot_consistency_loss

    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 5, bias=False)
    options = OperatorOptions(sync_free=sync_free)
    for trial in range(20):
        z = (3 * torch.randn(4, 16, generator=g)).requires_grad_(True)
        y = torch.full((4,), trial % 5)
        loss, stats = carrot_consistency_loss(
            z, y, head, loss_options=CEKLOptions(T=2.0, lam=1.0), options=options
        )
        assert bool(stats["skipped"])
        if sync_free:
            assert abs(float(loss.detach())) < 1e-6
            continue
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert z.grad is not None and (z.grad == 0).all()
        total, _ = carrot_ce_kl_loss(z, y, head, T=2.0, lam=1.0, options=options)
        assert float(total.detach()) == float(F.cross_entropy(head(F.normalize(z, dim=1)), y))


def test_carrots_term_leaves_ignored_rows_out() -> None:
    from carrot.functional import CEKLOptions, carrot_consistency_loss
    from carrot.train.model import CosineClassifier

    g = torch.Generator().manual_seed(2)
    z = torch.randn(16, 8, generator=g) * 3
    y = torch.arange(4).repeat_interleave(4)
    head = CosineClassifier(8, 6, scale=16.0, learn_scale=True)
    y_ignored = y.clone()
    y_ignored[[1, 6, 11]] = -100
    kept = y_ignored != -100
    lo = CEKLOptions(lam=1.5, aux_ce_weight=0.25, T=2.0)
    got, stats = carrot_consistency_loss(z, y_ignored, head, loss_options=lo)
    want, _ = carrot_consistency_loss(z[kept], y[kept], head, loss_options=lo)
    torch.testing.assert_close(got, want)
    assert {"kl", "aux_ce", "gamma"} <= stats.keys()
    zg = z.clone().requires_grad_(True)
    carrot_consistency_loss(zg, y_ignored, head, loss_options=lo)[0].backward()
    assert torch.all(zg.grad[~kept] == 0) and zg.grad[kept].abs().sum() > 0
