"""The pictures of ``carrot eval --report``: confusion matrix, reliability diagram, class geometry
(r_c against m_c) and a 2-D map of the test embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["plot_calibration", "plot_confusion", "plot_embedding", "plot_geometry"]

# Class names on the confusion matrix's axes up to this many classes (smaller font above 30).
_NAMED_CLASSES = 60
# Points in the embedding map: t-SNE is quadratic-ish on 2 cores, so larger test sets are sampled.
_MAP_POINTS = 3000


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    confusion: Tensor, classes: list[str], order: list[int], path: Path, *, title: str = ""
) -> None:
    """Row-normalized confusion matrix (rows: true class), classes in ``order`` so that the
    confused ones sit together; a square-root colour scale keeps rare confusions visible."""
    plt = _pyplot()
    from matplotlib.colors import PowerNorm

    n = len(classes)
    c = confusion.double().cpu()
    rate = c / c.sum(1, keepdim=True).clamp_min(1)
    rate = rate[order][:, order]
    side = min(12.0, max(5.0, 0.12 * n + 3))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(rate.numpy(), cmap="magma_r", norm=PowerNorm(0.5, vmin=0, vmax=1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class")
    if n <= _NAMED_CLASSES:
        size = 8 if n <= 30 else 5
        names = [classes[i] for i in order]
        ax.set_xticks(range(n), names, rotation=90, fontsize=size)
        ax.set_yticks(range(n), names, fontsize=size)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(
            0.0, -0.02, f"{n} classes, ordered by confusion (names in confusion.csv)",
            transform=ax.transAxes, va="top", fontsize=8,
        )  # fmt: skip
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion{' · ' + title if title else ''}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_calibration(cal: Any, path: Path, *, title: str = "") -> None:
    """Reliability diagram: accuracy against confidence per bin (the gap to the diagonal shaded),
    with the bins' sample counts below and the ECE in the title."""
    plt = _pyplot()
    n = cal.bins
    counts = cal.counts.clone()
    acc, conf = cal.accuracy.clone(), cal.confidence.clone()
    # confidences of exactly 1 (torchmetrics' extra bin) are drawn in the last bin
    if counts[n] > 0:
        total = counts[n - 1] + counts[n]
        acc[n - 1] = (acc[n - 1] * counts[n - 1] + acc[n] * counts[n]) / total
        conf[n - 1] = (conf[n - 1] * counts[n - 1] + conf[n] * counts[n]) / total
        counts[n - 1] = total
    counts, acc, conf = counts[:n].numpy(), acc[:n].numpy(), conf[:n].numpy()
    width = 1.0 / n
    centers = (torch.arange(n, dtype=torch.float64).numpy() + 0.5) * width
    used = counts > 0
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(4.6, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(centers[used], acc[used], width=width, edgecolor="black", color="#4c72b0",
            label="accuracy")  # fmt: skip
    top.bar(centers[used], (conf - acc)[used], bottom=acc[used], width=width, color="#dd8452",
            alpha=0.5, edgecolor="#dd8452", hatch="//", label="gap to confidence")  # fmt: skip
    top.plot([0, 1], [0, 1], "--", color="gray", lw=1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(
        f"reliability · ECE {cal.ece:.2f}% ({n} bins){' · ' + title if title else ''}", fontsize=9
    )
    bottom.bar(centers, counts, width=width, color="gray", edgecolor="black")
    bottom.set_yscale("symlog")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_geometry(
    per_class: list[dict[str, Any]], confused: set[str], path: Path, *, title: str = ""
) -> None:
    """Each class's RMS radius r_c against the distance m_c to its nearest other centroid (test
    embeddings, L2-normalized), with m = 2r: classes above it get γ = m / 2r > 1 from CARROT,
    those below are left alone. The classes of the most confused pairs are marked and named."""
    plt = _pyplot()
    rows = [r for r in per_class if r["r"] == r["r"] and r["m"] == r["m"]]  # not NaN
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    if rows:
        r = [row["r"] for row in rows]
        m = [row["m"] for row in rows]
        for hot in (False, True):
            pts = [(row["r"], row["m"]) for row in rows if (row["class"] in confused) == hot]
            if not pts:
                continue
            style: dict[str, Any] = (
                {"s": 30, "color": "#c44e52", "marker": "D", "label": "in a most-confused pair"}
                if hot
                else {"s": 14, "color": "#4c72b0", "alpha": 0.7, "label": "class"}
            )
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], **style)
        for row in rows:
            if row["class"] in confused:
                ax.annotate(
                    row["class"], (row["r"], row["m"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points",
                )  # fmt: skip
        hi = max(max(r), max(m) / 2) * 1.1
        ax.plot([0, hi], [0, 2 * hi], "--", color="gray", lw=1, label="m = 2r (γ = 1 below)")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, max(max(m) * 1.1, 1e-6))
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("r_c: RMS radius of the class")
    ax.set_ylabel("m_c: distance to the nearest other centroid")
    ax.set_title(f"class geometry (test){' · ' + title if title else ''}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_embedding(
    embeddings: Tensor, labels: Tensor, path: Path, *, title: str = "", seed: int = 0
) -> str:
    """A 2-D map of the embeddings coloured by class: UMAP when umap-learn is installed, else
    scikit-learn's t-SNE; at most 3000 points (a fixed random sample). Returns the method."""
    plt = _pyplot()
    x, y = embeddings.float().cpu(), labels.cpu()
    if len(x) > _MAP_POINTS:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:_MAP_POINTS]
        x, y = x[keep], y[keep]
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    method = "t-SNE"
    if len(x) >= 5:
        try:
            import umap

            xy = umap.UMAP(random_state=seed).fit_transform(x.numpy())
            method = "UMAP"
        except ImportError:
            from sklearn.manifold import TSNE

            perplexity = min(30.0, (len(x) - 1) / 3)
            xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
                x.numpy()
            )
        cmap = plt.get_cmap("tab20")
        ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(int(c) % 20) for c in y], s=4, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"test embeddings ({method}){' · ' + title if title else ''}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return method
