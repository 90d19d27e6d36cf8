"""Plain float64 loop implementations of the CARROT formulas, written from the design document's
equations for use as test oracles. Deliberately naive: one Python loop per class and per pair."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _median(values: list[Tensor]) -> Tensor:
    """The middle value, or the mean of the two middle ones for an even count."""
    ordered = sorted(values, key=lambda v: float(v.detach()))
    n = len(ordered)
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2


def oracle_geometry(
    z: Tensor, y: Tensor, *, unbiased: bool = False, radius_stat: str = "rms"
) -> dict[str, Tensor]:
    """μ_c, r_c, m_c per class (classes ascending), in float64, differentiable in ``z``.
    r_c is the RMS distance of the members to μ_c, or with ``radius_stat="median"`` their median
    distance to it."""
    z = z.double()
    labels = sorted(set(y.tolist()))
    mus, rs, counts, flat = [], [], [], []
    for c in labels:
        rows = [z[i] for i in range(len(y)) if int(y[i]) == c]
        n = len(rows)
        mu = sum(rows) / n
        identical = all(torch.equal(row, rows[0]) for row in rows)
        if identical:
            r = torch.zeros((), dtype=torch.float64)
        elif radius_stat == "median":
            r = _median([torch.sqrt(((row - mu) ** 2).sum()) for row in rows])
        else:
            total = sum(((row - mu) ** 2).sum() for row in rows)
            var = total / n
            if unbiased and n > 1:
                var = var * n / (n - 1)
            r = torch.sqrt(var)
        mus.append(mu)
        rs.append(r)
        counts.append(n)
        flat.append(identical)
    ms = []
    for a in range(len(labels)):
        dists = [torch.sqrt(((mus[a] - mus[b]) ** 2).sum()) for b in range(len(labels)) if b != a]
        ms.append(
            torch.stack(dists).min() if dists else torch.tensor(math.inf, dtype=torch.float64)
        )
    return {
        "classes": torch.tensor(labels),
        "mu": torch.stack(mus),
        "r": torch.stack(rs),
        "m": torch.stack(ms),
        "counts": torch.tensor(counts, dtype=torch.float64),
        "flat": torch.tensor(flat),
    }


def oracle_operator(
    z: Tensor,
    y: Tensor,
    *,
    eps: float = 1e-12,
    detach_stats: bool = True,
    unbiased: bool = False,
    max_gamma: float | None = None,
    radius_factor: float = 2.0,
    radius_stat: str = "rms",
) -> tuple[Tensor, dict[str, Tensor]]:
    """T_c(z) = μ_c + γ_c (z - μ_c), γ_c = max(1, m_c / (f r_c + ε)) with f = ``radius_factor``
    (the guide's 2); γ = 1 for a class without spread or without another class; identity for
    fewer than two classes."""
    z = z.double()
    g = oracle_geometry(z, y, unbiased=unbiased, radius_stat=radius_stat)
    gammas = []
    for c in range(len(g["classes"])):
        if bool(g["flat"][c]) or not math.isfinite(float(g["m"][c].detach())):
            gamma = torch.ones((), dtype=torch.float64)
        else:
            gamma = torch.clamp(g["m"][c] / (radius_factor * g["r"][c] + eps), min=1.0)
        if max_gamma is not None:
            gamma = torch.clamp(gamma, max=max_gamma)
        gammas.append(gamma)
    g["gamma"] = torch.stack(gammas)
    if len(g["classes"]) < 2:
        return z.clone(), g
    rows = []
    for i in range(len(y)):
        c = g["classes"].tolist().index(int(y[i]))
        mu, gamma = g["mu"][c], g["gamma"][c]
        if detach_stats:
            mu, gamma = mu.detach(), gamma.detach()
        rows.append(mu + gamma * (z[i] - mu))
    return torch.stack(rows), g


def oracle_supcon(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Khosla et al.'s L_out written per anchor; anchors without a positive are left out."""
    b, v, _ = features.shape
    f = torch.nn.functional.normalize(features.double(), dim=2)
    views = [(f[i, a], int(labels[i])) for a in range(v) for i in range(b)]
    losses = []
    for ai, (anchor, label) in enumerate(views):
        others = [j for j in range(len(views)) if j != ai]
        denom = torch.logsumexp(
            torch.stack([anchor @ views[j][0] / temperature for j in others]), 0
        )
        positives = [j for j in others if views[j][1] == label]
        if not positives:
            continue
        terms = [anchor @ views[p][0] / temperature - denom for p in positives]
        losses.append(-torch.stack(terms).mean())
    if not losses:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(losses).mean()


def oracle_angular(z: Tensor, y: Tensor, *, eps: float = 1e-12) -> tuple[Tensor, dict[str, Tensor]]:
    """The CARROT formulas on the unit sphere, in float64 loops: u_c = normalize(mean ẑ), θ_i the
    angle to u_c, r_c = RMS θ, m_c = smallest angle between mean directions, γ as usual, and
    ẑ⁺ on the great circle through u_c and ẑ at angle min(γθ, π)."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    labels = sorted(set(y.tolist()))
    us, rs, thetas = [], [], {}
    for c in labels:
        idx = [i for i in range(len(y)) if int(y[i]) == c]
        u = torch.nn.functional.normalize(sum(z[i] for i in idx), dim=0)
        for i in idx:
            cos = torch.dot(z[i], u)
            sin = torch.linalg.vector_norm(z[i] - cos * u)
            thetas[i] = torch.atan2(sin, cos)
        us.append(u)
        rs.append(torch.sqrt(sum(thetas[i] ** 2 for i in idx) / len(idx)))
    ms = []
    for a in range(len(labels)):
        angles = [
            2 * torch.asin(torch.linalg.vector_norm(us[a] - us[b]) / 2)
            for b in range(len(labels))
            if b != a
        ]
        ms.append(
            torch.stack(angles).min() if angles else torch.tensor(math.inf, dtype=torch.float64)
        )
    gammas = []
    for c in range(len(labels)):
        if float(rs[c]) == 0 or not math.isfinite(float(ms[c])):
            gammas.append(torch.ones((), dtype=torch.float64))
        else:
            gammas.append(torch.clamp(ms[c] / (2 * rs[c] + eps), min=1.0))
    rows = []
    for i in range(len(y)):
        c = labels.index(int(y[i]))
        u, g, theta = us[c], gammas[c], thetas[i]
        if float(g) == 1.0 or float(theta) == 0.0:
            rows.append(z[i])
            continue
        direction = torch.nn.functional.normalize(z[i] - torch.dot(z[i], u) * u, dim=0)
        phi = torch.clamp(g * theta, max=math.pi)
        rows.append(torch.cos(phi) * u + torch.sin(phi) * direction)
    stats = {
        "u": torch.stack(us),
        "r": torch.stack(rs),
        "m": torch.stack(ms),
        "gamma": torch.stack(gammas),
    }
    return torch.stack(rows), stats
