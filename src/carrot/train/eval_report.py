"""``carrot eval --report DIR``: per-class accuracy and geometry, the confusion matrix, the most
confused pairs and calibration, from the gathered test-set logits and embeddings.

Metrics come from torchmetrics (confusion matrix, calibration error, per-class accuracy); the
class geometry (RMS radius r_c, nearest-centroid distance m_c, expansion γ_c) from
:func:`carrot.functional.class_geometry` on the L2-normalized test embeddings, the space the
CARROT operator acts in. Files written (see docs/training.md, "Evaluation report"):

- ``per_class.csv``: class, support, top1, top5 (percent), r, m, gamma, nearest (class name);
- ``confusion.csv``: true, predicted, count (nonzero cells; counts sum to the test set);
- ``confused_pairs.csv``: class_a, class_b, a_as_b, b_as_a, count, rate (count over the two
  classes' supports), most confused first;
- ``confusion.png``, ``calibration.png``, ``geometry.png``, ``embedding.png``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from carrot.tables import csv_cell

__all__ = [
    "ECE_BINS",
    "Calibration",
    "EvalReport",
    "build_report",
    "calibration",
    "confused_pairs",
    "confusion_order",
    "per_class_accuracy",
    "write_report",
]

ECE_BINS = 15


@dataclass
class Calibration:
    """Reliability bins of the top-1 confidence, torchmetrics' binning: bin i holds confidences in
    [i/n, (i+1)/n); a confidence of exactly 1 has a last bin of its own (index n)."""

    ece: float
    """Expected calibration error Σ_b (n_b / N) |acc_b − conf_b|, in percent."""
    bins: int
    counts: Tensor
    """Samples per bin. Shape: (bins + 1,)."""
    accuracy: Tensor
    """Top-1 accuracy per bin (0 where empty). Shape: (bins + 1,)."""
    confidence: Tensor
    """Mean confidence per bin (0 where empty). Shape: (bins + 1,)."""


def calibration(probs: Tensor, labels: Tensor, *, bins: int = ECE_BINS) -> Calibration:
    """ECE (torchmetrics' ``multiclass_calibration_error``, L1) and the bins behind it.

    Args:
        probs: Softmax probabilities. Shape: (N_test, N).
        labels: Shape: (N_test,).
    """
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, labels = probs.float().cpu(), labels.cpu()
    ece = multiclass_calibration_error(probs, labels, probs.shape[1], n_bins=bins, norm="l1")
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1)
    index = torch.bucketize(conf, edges, right=True) - 1  # (N_test,)
    counts = torch.zeros(bins + 1, dtype=torch.float64).index_add_(
        0, index, torch.ones_like(correct)
    )
    hits = torch.zeros(bins + 1, dtype=torch.float64).index_add_(0, index, correct)
    total = torch.zeros(bins + 1, dtype=torch.float64).index_add_(0, index, conf.double())
    safe = counts.clamp_min(1)
    return Calibration(100.0 * float(ece), bins, counts, hits / safe, total / safe)


def per_class_accuracy(logits: Tensor, labels: Tensor, *, top_k: int) -> Tensor:
    """Top-k accuracy of each class in percent (torchmetrics), NaN for a class without test images.

    Args:
        logits: Shape: (N_test, N).
        labels: Shape: (N_test,).

    Returns:
        Shape: (N,).
    """
    from torchmetrics.functional.classification import multiclass_accuracy

    n = logits.shape[1]
    k = min(top_k, n)
    acc = multiclass_accuracy(logits.float(), labels, n, average="none", top_k=k).double()
    support = torch.bincount(labels, minlength=n)
    return torch.where(support > 0, 100.0 * acc, torch.nan)


def confused_pairs(confusion: Tensor, classes: list[str]) -> list[dict[str, Any]]:
    """Every unordered pair of distinct classes confused at least once, most confused first:
    ``a_as_b`` images of a predicted as b, ``b_as_a`` the converse, ``count`` their sum and
    ``rate`` = count / (support_a + support_b).

    Args:
        confusion: Rows true class, columns predicted class. Shape: (N, N).
    """
    c = confusion.long().cpu()
    support = c.sum(1)
    both = c + c.T
    pairs: list[dict[str, Any]] = []
    a_idx, b_idx = torch.triu_indices(len(classes), len(classes), offset=1)
    counts = both[a_idx, b_idx]
    for j in torch.nonzero(counts).flatten().tolist():
        a, b = int(a_idx[j]), int(b_idx[j])
        total = int(support[a] + support[b])
        pairs.append(
            {
                "class_a": classes[a],
                "class_b": classes[b],
                "a_as_b": int(c[a, b]),
                "b_as_a": int(c[b, a]),
                "count": int(counts[j]),
                "rate": int(counts[j]) / total if total else 0.0,
            }
        )
    pairs.sort(key=lambda p: (-int(p["count"]), -float(p["rate"]), p["class_a"], p["class_b"]))
    return pairs


def confusion_order(confusion: Tensor) -> list[int]:
    """An order of the classes in which the ones confused with each other sit together: the
    leaves of an average-linkage clustering (scipy, optimal leaf order) of the distance
    1 − (c_ab + c_ba) / (support_a + support_b)."""
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    c = confusion.double().cpu()
    n = c.shape[0]
    if n < 3:
        return list(range(n))
    support = c.sum(1)
    rate = (c + c.T) / (support[:, None] + support[None, :]).clamp_min(1)
    dist = (1.0 - rate).clamp(0, 1)
    dist.fill_diagonal_(0)
    condensed = squareform(dist.numpy(), checks=False)
    tree = optimal_leaf_ordering(linkage(condensed, method="average"), condensed)
    return [int(i) for i in leaves_list(tree)]


@dataclass
class EvalReport:
    """Everything ``--report`` writes, and the figures ``--json`` holds."""

    classes: list[str]
    confusion: Tensor
    """Rows true class, columns predicted. Shape: (N, N)."""
    per_class: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    calibration: Calibration
    embeddings: Tensor
    """L2-normalized test embeddings. Shape: (N_test, D)."""
    labels: Tensor

    def json(self, top_pairs: int = 20) -> dict[str, Any]:
        """The JSON part: ECE, its bin count and bins, per-class rows and the top pairs."""
        cal = self.calibration
        rows = [{k: (None if _nan(v) else v) for k, v in r.items()} for r in self.per_class]
        return {
            "ece": cal.ece,
            "ece_bins": cal.bins,
            "calibration_bins": {
                "count": cal.counts.long().tolist(),
                "accuracy": cal.accuracy.tolist(),
                "confidence": cal.confidence.tolist(),
            },
            "per_class": rows,
            "confused_pairs": self.pairs[:top_pairs],
        }


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def build_report(
    logits: Tensor, labels: Tensor, embeddings: Tensor, classes: list[str]
) -> EvalReport:
    """The report of a test set's outputs.

    Args:
        logits: Shape: (N_test, N).
        labels: Shape: (N_test,).
        embeddings: Shape: (N_test, D).
        classes: The N class names.
    """
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    from carrot.functional import class_geometry, expansion_factors

    logits, labels = logits.float().cpu(), labels.long().cpu()
    n = len(classes)
    if logits.ndim != 2 or logits.shape[1] != n:
        raise ValueError(f"logits must have shape (N_test, {n}), got {tuple(logits.shape)}.")
    emb = torch.nn.functional.normalize(embeddings.float().cpu(), dim=1)
    confusion = multiclass_confusion_matrix(logits.argmax(1), labels, n)
    top1 = per_class_accuracy(logits, labels, top_k=1)
    top5 = per_class_accuracy(logits, labels, top_k=5)
    support = torch.bincount(labels, minlength=n)
    r = torch.full((n,), torch.nan, dtype=torch.float64)
    m, gamma = r.clone(), r.clone()
    nearest = [""] * n
    if len(labels):
        geo = class_geometry(emb, labels)
        g = expansion_factors(geo)
        present = geo.classes.tolist()
        r[geo.classes] = geo.unscaled(geo.r).double()
        m[geo.classes] = geo.unscaled(geo.m).double()
        gamma[geo.classes] = g.double()
        for slot, c in enumerate(present):
            if math.isfinite(float(m[c])):
                nearest[c] = classes[present[int(geo.nearest[slot])]]
    m = torch.where(torch.isinf(m), torch.nan, m)  # a single class has no nearest other
    rows = [
        {
            "class": classes[c],
            "support": int(support[c]),
            "top1": float(top1[c]),
            "top5": float(top5[c]),
            "r": float(r[c]),
            "m": float(m[c]),
            "gamma": float(gamma[c]),
            "nearest": nearest[c],
        }
        for c in range(n)
    ]
    probs = torch.softmax(logits, dim=1)
    return EvalReport(
        list(classes),
        confusion,
        rows,
        confused_pairs(confusion, list(classes)),
        calibration(probs, labels),
        emb,
        labels,
    )


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if _nan(v) else csv_cell(v) for k, v in row.items()})


def write_report(report: EvalReport, folder: Path, *, title: str = "") -> list[str]:
    """Write the report's CSV files and pictures into ``folder``; returns the file names."""
    from carrot.train.eval_plots import (
        plot_calibration,
        plot_confusion,
        plot_embedding,
        plot_geometry,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["class", "support", "top1", "top5", "r", "m", "gamma", "nearest"]
    _write_csv(folder / "per_class.csv", report.per_class, columns)
    c = report.confusion.long()
    cells = [
        {"true": report.classes[i], "predicted": report.classes[j], "count": int(c[i, j])}
        for i, j in torch.nonzero(c).tolist()
    ]
    _write_csv(folder / "confusion.csv", cells, ["true", "predicted", "count"])
    pair_columns = ["class_a", "class_b", "a_as_b", "b_as_a", "count", "rate"]
    _write_csv(folder / "confused_pairs.csv", report.pairs, pair_columns)
    order = confusion_order(report.confusion)
    plot_confusion(report.confusion, report.classes, order, folder / "confusion.png", title=title)
    plot_calibration(report.calibration, folder / "calibration.png", title=title)
    confused = {p["class_a"] for p in report.pairs[:5]} | {p["class_b"] for p in report.pairs[:5]}
    plot_geometry(report.per_class, confused, folder / "geometry.png", title=title)
    plot_embedding(report.embeddings, report.labels, folder / "embedding.png", title=title)
    return [
        "per_class.csv",
        "confusion.csv",
        "confused_pairs.csv",
        "confusion.png",
        "calibration.png",
        "geometry.png",
        "embedding.png",
    ]
