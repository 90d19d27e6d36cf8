"""Plain float64 loops of the baselines' formulas, written from the papers for use as test oracles.
Deliberately naive: one Python loop per image, per pair and per class, no batching tricks."""

from __future__ import annotations

import torch
from torch import Tensor


def _softmax_row(z: Tensor) -> Tensor:
    top = max(float(v) for v in z)
    e = [torch.exp(z[j] - top) for j in range(len(z))]
    total = sum(e)
    return torch.stack([v / total for v in e])


def oracle_ce(logits: Tensor, y: Tensor) -> Tensor:
    z = logits.double()
    terms = []
    for i in range(len(y)):
        p = _softmax_row(z[i])
        terms.append(-torch.log(p[int(y[i])]))
    return torch.stack(terms).mean()


def oracle_maxent(logits: Tensor, y: Tensor, gamma: float) -> Tensor:
    """Dubey et al. 2018: mean over images of CE_i - γ H(p_i), H = -Σ_j p_j log p_j."""
    z = logits.double()
    terms = []
    for i in range(len(y)):
        p = _softmax_row(z[i])
        entropy = -sum(p[j] * torch.log(p[j]) for j in range(len(p)))
        terms.append(-torch.log(p[int(y[i])]) - gamma * entropy)
    return torch.stack(terms).mean()


def oracle_pairwise_confusion(logits: Tensor, y: Tensor) -> Tensor:
    """Dubey et al. 2018: ||p_i - p_j||² averaged over every ordered pair with y_i != y_j."""
    z = logits.double()
    probs = [_softmax_row(z[i]) for i in range(len(y))]
    terms = []
    for i in range(len(y)):
        for j in range(len(y)):
            if int(y[i]) != int(y[j]):
                terms.append(sum((probs[i][k] - probs[j][k]) ** 2 for k in range(z.shape[1])))
    if not terms:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(terms).mean()


def oracle_center_loss(x: Tensor, y: Tensor, centers: Tensor) -> Tensor:
    """Wen et al. 2016: ½ ||x_i - c_{y_i}||², averaged over the batch."""
    x = x.double()
    terms = []
    for i in range(len(y)):
        c = centers[int(y[i])].double()
        terms.append(0.5 * sum((x[i][k] - c[k]) ** 2 for k in range(x.shape[1])))
    return torch.stack(terms).mean()


def oracle_center_update(x: Tensor, y: Tensor, centers: Tensor, alpha: float) -> Tensor:
    """Wen et al. 2016, Eq. 4: Δc_j = Σ_{y_i = j} (c_j - x_i) / (1 + #{y_i = j}); c_j -= α Δc_j."""
    x, out = x.double(), centers.double().clone()
    for j in range(centers.shape[0]):
        rows = [i for i in range(len(y)) if int(y[i]) == j]
        delta = sum((centers[j].double() - x[i] for i in rows), torch.zeros_like(out[j]))
        out[j] = centers[j].double() - alpha * delta / (1 + len(rows))
    return out


def oracle_isda_loss(
    logits: Tensor, y: Tensor, weight: Tensor, covariance: Tensor, lam: float
) -> Tensor:
    """Wang et al. 2019, Eq. for L̄: -log( e^{z_y} / Σ_j e^{z_j + λ/2 v_jᵀ Σ_y v_j} ),
    v_j = w_j - w_y, averaged over the batch."""
    z, w, cov = logits.double(), weight.double(), covariance.double()
    terms = []
    for i in range(len(y)):
        c = int(y[i])
        aug = []
        for j in range(z.shape[1]):
            v = w[j] - w[c]
            quad = sum(
                v[a] * cov[c][a, b] * v[b] for a in range(w.shape[1]) for b in range(w.shape[1])
            )
            aug.append(z[i, j] + 0.5 * lam * quad)
        aug_t = torch.stack(aug)
        terms.append(-(aug_t[c] - torch.logsumexp(aug_t, 0)))
    return torch.stack(terms).mean()


def oracle_class_moments(
    seen: list[tuple[Tensor, Tensor]], num_classes: int, dim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, biased covariance and count of every feature ever seen per class, directly from the
    list of all of them (the quantity the paper's online merge must reproduce)."""
    mean = torch.zeros(num_classes, dim, dtype=torch.float64)
    cov = torch.zeros(num_classes, dim, dim, dtype=torch.float64)
    count = torch.zeros(num_classes, dtype=torch.long)
    for c in range(num_classes):
        rows = [f.double() for f, label in seen if int(label) == c]
        if not rows:
            continue
        mu = sum(rows) / len(rows)
        sigma = sum(torch.outer(r - mu, r - mu) for r in rows) / len(rows)
        mean[c], cov[c], count[c] = mu, sigma, len(rows)
    return mean, cov, count
