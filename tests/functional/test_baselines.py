"""The FGVC baselines against float64 loops of their papers' formulas, gradients, properties and
errors: maximum entropy, pairwise confusion, center loss, ISDA (functions and modules)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck
from torch.testing import assert_close

from carrot.baselines import CenterLoss, ISDALoss
from carrot.functional import (
    class_center_loss,
    class_center_update_,
    euclidean_confusion,
    isda_lambda,
    isda_logits,
    isda_loss,
    isda_update_,
    maxent_loss,
    pairwise_confusion_loss,
    prediction_entropy,
)
from oracle_baselines import (
    oracle_ce,
    oracle_center_loss,
    oracle_center_update,
    oracle_class_moments,
    oracle_isda_loss,
    oracle_maxent,
    oracle_pairwise_confusion,
)

LABELS = [
    torch.tensor([0, 0, 1, 1, 2, 2]),
    torch.tensor([3, 1, 3, 0, 1, 3, 2]),  # shuffled, uneven class counts, absent class 4
    torch.tensor([2, 2, 2]),  # one class: no cross-class pair
    torch.tensor([4]),
]


def _logits(y: torch.Tensor, n: int = 5, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(len(y), n, dtype=torch.float64)


# --- maximum entropy ---------------------------------------------------------------------------


@pytest.mark.parametrize("y", LABELS)
@pytest.mark.parametrize("gamma", [0.0, 0.1, 2.0])
def test_maxent_equals_oracle(y: torch.Tensor, gamma: float) -> None:
    logits = _logits(y)
    assert_close(maxent_loss(logits, y, gamma=gamma), oracle_maxent(logits, y, gamma))
    assert_close(maxent_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y))


def test_entropy_bounds_and_gradients() -> None:
    n = 7
    assert_close(prediction_entropy(torch.zeros(3, n)), torch.tensor(float(n)).log())
    peaked = torch.tensor([[200.0, 0.0, 0.0]])
    assert float(prediction_entropy(peaked)) < 1e-6  # no NaN from 0 · log 0
    assert prediction_entropy(torch.zeros(0, n)) == 0
    y = LABELS[1]
    logits = _logits(y).requires_grad_(True)
    assert gradcheck(lambda z: maxent_loss(z, y, gamma=0.3), (logits,))


def test_maxent_computes_in_float32_for_half_inputs() -> None:
    y = LABELS[0]
    logits = _logits(y).to(torch.bfloat16)
    out = maxent_loss(logits, y, gamma=0.1)
    assert out.dtype == torch.float32
    assert_close(out.double(), oracle_maxent(logits.double(), y, 0.1), rtol=1e-5, atol=1e-6)


# --- pairwise confusion ------------------------------------------------------------------------


@pytest.mark.parametrize("y", LABELS)
def test_pairwise_confusion_equals_oracle(y: torch.Tensor) -> None:
    logits = _logits(y)
    assert_close(euclidean_confusion(logits, y), oracle_pairwise_confusion(logits, y))


def test_pairwise_confusion_properties() -> None:
    y = LABELS[1]
    logits = _logits(y)
    perm = torch.randperm(len(y))
    assert_close(euclidean_confusion(logits[perm], y[perm]), euclidean_confusion(logits, y))
    # Same-class pairs do not count: identical predictions within classes change nothing.
    two = torch.tensor([0, 1])
    pair = _logits(two)
    doubled = euclidean_confusion(pair.repeat_interleave(3, 0), two.repeat_interleave(3))
    assert_close(doubled, euclidean_confusion(pair, two))
    assert_close(
        euclidean_confusion(pair, two), ((pair.softmax(1)[0] - pair.softmax(1)[1]) ** 2).sum()
    )
    # Equal predictions for all images: no confusion left to add.
    assert_close(
        euclidean_confusion(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])), torch.tensor(0.0)
    )
    assert euclidean_confusion(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 0


@pytest.mark.parametrize("y", LABELS[:3])
def test_pairwise_confusion_gradients(y: torch.Tensor) -> None:
    logits = _logits(y).requires_grad_(True)
    assert gradcheck(lambda z: pairwise_confusion_loss(z, y, lam=3.0), (logits,))


def test_pairwise_confusion_loss_is_ce_plus_half_lambda_pc() -> None:
    y = LABELS[1]
    logits = _logits(y)
    want = oracle_ce(logits, y) + 0.5 * 20.0 * oracle_pairwise_confusion(logits, y)
    assert_close(pairwise_confusion_loss(logits, y, lam=20.0), want)


# --- center loss -------------------------------------------------------------------------------


@pytest.mark.parametrize("y", LABELS)
def test_center_loss_and_update_equal_oracle(y: torch.Tensor) -> None:
    x = torch.randn(len(y), 3, dtype=torch.float64)
    centers = torch.randn(6, 3, dtype=torch.float64)
    assert_close(class_center_loss(x, y, centers), oracle_center_loss(x, y, centers))
    updated = centers.clone()
    class_center_update_(x, y, updated, alpha=0.5)
    assert_close(updated, oracle_center_update(x, y, centers, 0.5))
    absent = [c for c in range(6) if c not in set(y.tolist())]
    assert torch.equal(updated[absent], centers[absent])


def test_center_loss_gradients() -> None:
    y = LABELS[1]
    x = torch.randn(len(y), 3, dtype=torch.float64, requires_grad=True)
    centers = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, c: class_center_loss(a, y, c), (x, centers))
    class_center_loss(x, y, centers.detach()).backward()
    # ∂L_C/∂x_i = (x_i - c_{y_i}) / B
    assert_close(x.grad, (x - centers[y]).detach() / len(y))


def test_center_module_uses_old_centres_then_updates_only_when_training() -> None:
    y = LABELS[0]
    x = torch.randn(len(y), 3, dtype=torch.float64, requires_grad=True)
    module = CenterLoss(4, 3, alpha=0.5).double()
    module.centers.copy_(torch.randn(4, 3))
    before = module.centers.clone()
    loss = module(x, y)
    assert_close(loss, oracle_center_loss(x, y, before))
    assert_close(module.centers, oracle_center_update(x.detach(), y, before, 0.5))
    loss.backward()
    assert_close(x.grad, (x - before[y]).detach() / len(y))
    module.eval()
    after = module.centers.clone()
    module(x, y)
    assert torch.equal(module.centers, after)
    assert set(module.state_dict()) == {"centers"}


# --- ISDA --------------------------------------------------------------------------------------


def _spd(n: int, d: int) -> torch.Tensor:
    a = torch.randn(n, d, d, dtype=torch.float64)
    return a @ a.transpose(1, 2) / d


@pytest.mark.parametrize("y", LABELS)
@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
def test_isda_loss_equals_oracle(y: torch.Tensor, lam: float) -> None:
    n, d = 5, 3
    logits, weight, cov = _logits(y, n), torch.randn(n, d, dtype=torch.float64), _spd(n, d)
    assert_close(
        isda_loss(logits, y, weight, cov, lam=lam), oracle_isda_loss(logits, y, weight, cov, lam)
    )
    if lam == 0:
        assert_close(isda_loss(logits, y, weight, cov, lam=lam), F.cross_entropy(logits, y))
    augmented = isda_logits(logits, y, weight, cov, lam=lam)
    assert_close(augmented.gather(1, y[:, None]), logits.gather(1, y[:, None]))
    assert (augmented >= logits - 1e-12).all()  # Σ is positive semi-definite


def test_isda_gradients_reach_logits_and_weight_not_covariance() -> None:
    y = LABELS[1]
    n, d = 5, 3
    logits = _logits(y, n).requires_grad_(True)
    weight = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    cov = _spd(n, d).requires_grad_(True)
    assert gradcheck(lambda z, w: isda_loss(z, y, w, cov.detach(), lam=0.7), (logits, weight))
    isda_loss(logits, y, weight, cov, lam=0.7).backward()
    assert cov.grad is None


def test_isda_surrogate_bounds_the_expected_ce_of_sampled_augmentations() -> None:
    """The paper's claim: for a linear head, E_ã CE(W ã + b) <= the surrogate, and the bound is
    close for small λ Σ. Checked by Monte Carlo with 200 000 Gaussian samples per image."""
    torch.manual_seed(1)
    n, d = 4, 3
    y = torch.tensor([0, 1, 2, 3])
    a = torch.randn(4, d, dtype=torch.float64)
    weight, bias = torch.randn(n, d, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    cov = _spd(n, d)
    lam = 0.5
    surrogate = isda_loss(a @ weight.T + bias, y, weight, cov, lam=lam)
    expected = []
    for i in range(4):
        chol = torch.linalg.cholesky(lam * cov[y[i]])
        samples = a[i] + torch.randn(200_000, d, dtype=torch.float64) @ chol.T
        ce = F.cross_entropy(samples @ weight.T + bias, y[i].repeat(200_000), reduction="mean")
        expected.append(ce)
    mc = torch.stack(expected).mean()
    assert float(mc) <= float(surrogate) + 1e-3
    assert float(surrogate - mc) < 0.5 * float(surrogate)


def test_isda_update_merges_batches_into_the_moments_of_all_features_seen() -> None:
    n, d = 5, 3
    mean = torch.zeros(n, d, dtype=torch.float64)
    cov = torch.zeros(n, d, d, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.long)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    for y in LABELS:
        x = torch.randn(len(y), d, dtype=torch.float64) + y[:, None]
        isda_update_(x, y, mean, cov, count)
        seen += list(zip(x, y, strict=True))
        want = oracle_class_moments(seen, n, d)
        assert_close(mean, want[0])
        assert_close(cov, want[1])
        assert torch.equal(count, want[2])


def test_isda_schedule_and_module_state() -> None:
    assert isda_lambda(0.5, 0.0) == 0.0 and isda_lambda(0.5, 0.5) == 0.25
    assert isda_lambda(0.5, 2.0) == 0.5
    n, d = 4, 3
    module = ISDALoss(n, d, lam0=0.5).double()
    y = LABELS[0]
    x = torch.randn(len(y), d, dtype=torch.float64)
    weight = torch.randn(n, d, dtype=torch.float64)
    logits = x @ weight.T
    loss = module(x, logits, y, weight, progress=1.0)
    mean, cov, count = oracle_class_moments(list(zip(x, y, strict=True)), n, d)
    assert_close(module.mean, mean)
    assert_close(module.covariance, cov)
    assert torch.equal(module.count, count)
    # The loss uses the statistics after merging the batch, as the paper's Algorithm 1 does.
    assert_close(loss, oracle_isda_loss(logits, y, weight, cov, 0.5))
    module.eval()
    module(x, logits, y, weight, progress=1.0)
    assert torch.equal(module.count, count)
    assert set(module.state_dict()) == {"mean", "covariance", "count"}


# --- ignored labels and label dtypes -----------------------------------------------------------


def _with_ignored(y: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y`` with three rows labelled -100 put among its rows, the kept rows' positions, and
    inputs of ``width`` columns for the longer batch (its kept rows are ``x[kept]``)."""
    g = torch.Generator().manual_seed(len(y))
    order = torch.randperm(len(y) + 3, generator=g)
    full = torch.full((len(y) + 3,), -100)
    kept = torch.sort(order[: len(y)]).values
    full[kept] = y
    return full, kept, 3 * torch.randn(len(full), width, generator=g, dtype=torch.float64)


def _grads_of(fn, x: torch.Tensor, *more: torch.Tensor) -> tuple[torch.Tensor, ...]:
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, *more)]
    value = fn(*leaves)
    return (value.detach(), *torch.autograd.grad(value, leaves))


@pytest.mark.parametrize("y", LABELS[:2])
def test_rows_labelled_minus_100_take_no_part(y: torch.Tensor) -> None:
    """As in cross-entropy: a batch with ignored rows gives the loss of the batch without them,
    their rows get no gradient, and the centres and covariances move as without them."""
    n, d = 5, 3
    full, kept, x = _with_ignored(y, n)
    weight, cov, centers = torch.randn(n, n, dtype=torch.float64), _spd(n, n), torch.randn(n, n)
    losses = {
        "maxent": lambda z, labels: maxent_loss(z, labels, gamma=0.3),
        "confusion": lambda z, labels: euclidean_confusion(z, labels),
        "pairwise": lambda z, labels: pairwise_confusion_loss(z, labels, lam=2.0),
        "center": lambda z, labels: class_center_loss(z, labels, centers.double()),
        "isda": lambda z, labels: isda_loss(z, labels, weight, cov, lam=0.8),
    }
    for name, fn in losses.items():
        value, grad = _grads_of(lambda z, fn=fn: fn(z, full), x)
        want, want_grad = _grads_of(lambda z, fn=fn: fn(z, y), x[kept])
        assert_close(value, want, msg=name)
        assert_close(grad[kept], want_grad, msg=name)
        ignored = torch.ones(len(full), dtype=torch.bool)
        ignored[kept] = False
        assert (grad[ignored] == 0).all(), name
    # The ISDA weight's gradient does not see the ignored rows either.
    _, _, gw = _grads_of(lambda z, w: isda_loss(z, full, w, cov, lam=0.8), x, weight)
    _, _, want_gw = _grads_of(lambda z, w: isda_loss(z, y, w, cov, lam=0.8), x[kept], weight)
    assert_close(gw, want_gw)
    features = x[:, :d]
    a, b = torch.randn(n, d, dtype=torch.float64), None
    b = a.clone()
    class_center_update_(features, full, a, alpha=0.5)
    class_center_update_(features[kept], y, b, alpha=0.5)
    assert_close(a, b)
    states = [
        (torch.randn(n, d, dtype=torch.float64), _spd(n, d), torch.arange(n) + 1) for _ in "ab"
    ]
    states[1] = tuple(t.clone() for t in states[0])
    isda_update_(features, full, *states[0])
    isda_update_(features[kept], y, *states[1])
    for got, want in zip(states[0], states[1], strict=True):
        assert_close(got, want)


def test_only_ignored_rows_give_zero_and_change_nothing() -> None:
    y = torch.full((4,), -100)
    x = torch.randn(4, 5, dtype=torch.float64)
    for value in (
        maxent_loss(x, y, gamma=0.3),
        euclidean_confusion(x, y),
        pairwise_confusion_loss(x, y, lam=2.0),
        class_center_loss(x, y, torch.randn(5, 5, dtype=torch.float64)),
        isda_loss(x, y, torch.randn(5, 3, dtype=torch.float64), _spd(5, 3), lam=0.8),
    ):
        assert torch.isfinite(value) and float(value) == 0.0
    mean, cov, count = torch.randn(5, 3, dtype=torch.float64), _spd(5, 3), torch.ones(5)
    before = (mean.clone(), cov.clone(), count.clone())
    isda_update_(x[:, :3], y, mean, cov, count)
    assert all(torch.equal(a, b) for a, b in zip((mean, cov, count), before, strict=True))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int16])
def test_labels_of_other_integer_types_are_class_indices(dtype: torch.dtype) -> None:
    """uint8 would index as a mask, and cross-entropy refuses int32: both are read as int64."""
    y = torch.tensor([3, 1, 3, 0, 1])
    n, d = 5, 3
    x = torch.randn(len(y), n, dtype=torch.float64)
    weight, cov, centers = torch.randn(n, d, dtype=torch.float64), _spd(n, d), torch.randn(n, n)
    for fn in (
        lambda labels: maxent_loss(x, labels, gamma=0.3),
        lambda labels: pairwise_confusion_loss(x, labels, lam=2.0),
        lambda labels: class_center_loss(x, labels, centers.double()),
        lambda labels: isda_loss(x, labels, weight, cov, lam=0.8),
    ):
        assert_close(fn(y.to(dtype)), fn(y))
    states = [(torch.zeros(n, d, dtype=torch.float64), torch.zeros(n, d, d, dtype=torch.float64),
               torch.zeros(n)) for _ in "ab"]  # fmt: skip
    isda_update_(x[:, :d], y.to(dtype), *states[0])
    isda_update_(x[:, :d], y, *states[1])
    for got, want in zip(states[0], states[1], strict=True):
        assert_close(got, want)


# --- errors ------------------------------------------------------------------------------------


def test_errors() -> None:
    y = torch.tensor([0, 1])
    with pytest.raises(
        ValueError, match=r"logits must be a floating-point tensor of shape \(B, K\)"
    ):
        maxent_loss(torch.zeros(2, dtype=torch.long), y)
    with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(2,\)"):
        euclidean_confusion(torch.zeros(2, 3), y.float())
    with pytest.raises(ValueError, match=r"gamma must be >= 0, got -1.0"):
        maxent_loss(torch.zeros(2, 3), y, gamma=-1.0)
    with pytest.raises(ValueError, match=r"lam must be >= 0, got -1"):
        pairwise_confusion_loss(torch.zeros(2, 3), y, lam=-1)
    with pytest.raises(ValueError, match=r"centers must have shape \(N, 3\)"):
        class_center_loss(torch.zeros(2, 3), y, torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 2"):
        class_center_update_(torch.zeros(2, 3), y, torch.zeros(4, 3), alpha=2)
    with pytest.raises(ValueError, match=r"weight must have shape \(N, D\) with N = 3"):
        isda_loss(torch.zeros(2, 3), y, torch.zeros(4, 2), torch.zeros(4, 2, 2), lam=0.5)
    with pytest.raises(ValueError, match=r"covariance must have shape \(3, 2, 2\)"):
        isda_loss(torch.zeros(2, 3), y, torch.zeros(3, 2), torch.zeros(3, 2), lam=0.5)
    with pytest.raises(ValueError, match=r"mean must have shape \(N, 3\)"):
        isda_update_(torch.zeros(2, 3), y, torch.zeros(4, 2), torch.zeros(4, 2, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"covariance and count must have shapes"):
        isda_update_(torch.zeros(2, 3), y, torch.zeros(4, 3), torch.zeros(4, 3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"lam0 must be >= 0"):
        ISDALoss(3, 2, lam0=-0.5)
    with pytest.raises(ValueError, match=r"num_classes must be >= 1"):
        CenterLoss(0, 2)
