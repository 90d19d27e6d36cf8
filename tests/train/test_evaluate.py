"""carrot.train.evaluate: retrieval metrics against pytorch-metric-learning and on edge cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from carrot.train.evaluate import retrieval_metrics

# --- retrieval metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_elements", [1 << 26, 97])
def test_retrieval_metrics_match_pytorch_metric_learning(max_elements: int) -> None:
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 9, (120,), generator=g)
    labels[0] = 50  # a class seen once: left out, as PML does
    centers = torch.randn(60, 16, generator=g)
    emb = centers[labels] + 1.5 * torch.randn(120, 16, generator=g)
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity(), batch_size=1024),
    )
    want = calc.get_accuracy(F.normalize(emb, dim=1), labels)
    got = retrieval_metrics(emb, labels, max_elements=max_elements)
    assert got["precision_at_1"] == pytest.approx(100 * want["precision_at_1"], abs=1e-4)
    assert got["map_at_r"] == pytest.approx(100 * want["mean_average_precision_at_r"], abs=1e-4)
    assert 0 < got["map_at_r"] < 100


def test_retrieval_metrics_of_perfect_and_degenerate_sets() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    emb = F.one_hot(labels, 3).float() + 0.01 * torch.arange(6.0)[:, None]
    assert retrieval_metrics(emb, labels) == {"precision_at_1": 100.0, "map_at_r": 100.0}
    # undefined (no query has another item of its class): left out, shown n/a, never 0.00
    assert retrieval_metrics(emb[:1], labels[:1]) == {}
    assert retrieval_metrics(emb[::2], labels[::2]) == {}  # every class seen once
    assert retrieval_metrics(emb[1:3], labels[1:3]) == {}  # two images, two classes
    assert retrieval_metrics(emb[:0], labels[:0]) == {}
