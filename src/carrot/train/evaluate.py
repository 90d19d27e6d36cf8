"""Evaluation: top-1, mean per-class accuracy and, when pytorch-metric-learning is installed,
retrieval metrics (precision@1, MAP@R) of the L2-normalized test embeddings."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

__all__ = ["classification_metrics", "evaluate", "retrieval_metrics"]


def classification_metrics(preds: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """Top-1 accuracy and the mean over classes of per-class accuracy, both in percent."""
    correct = (preds == labels).double()
    per_class = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, correct)
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    return {
        "top1": 100.0 * float(correct.mean()) if len(labels) else 0.0,
        "mean_class_acc": 100.0 * float((per_class[present] / counts[present]).mean())
        if present.any()
        else 0.0,
    }


def retrieval_metrics(embeddings: Tensor, labels: Tensor) -> dict[str, float]:
    """Precision@1 and MAP@R (percent) of every test image against the others, by cosine
    similarity, via pytorch-metric-learning's AccuracyCalculator; {} when it is not installed."""
    try:
        from pytorch_metric_learning.distances import CosineSimilarity
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
        from pytorch_metric_learning.utils.inference import CustomKNN
    except ImportError:
        return {}
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity(), batch_size=1024),
        device=embeddings.device,
    )
    result = calc.get_accuracy(embeddings.float(), labels)
    return {
        "precision_at_1": 100.0 * float(result["precision_at_1"]),
        "map_at_r": 100.0 * float(result["mean_average_precision_at_r"]),
    }


def _gather(x: Tensor) -> Tensor:
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x
    from carrot.distributed import all_gather_with_grad

    return all_gather_with_grad(x)[0]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader[Any],
    *,
    device: torch.device,
    num_classes: int,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    channels_last: bool = False,
    retrieval: bool = True,
) -> dict[str, float]:
    """Metrics over the whole test set; each rank evaluates its shard and the results are gathered."""
    was_training = model.training
    model.eval()
    preds, labels, embeddings = [], [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast if autocast is not None else contextlib.nullcontext():
            out = model(x)
        preds.append(out.logits.argmax(1).cpu())
        labels.append(y)
        embeddings.append(F.normalize(out.embedding.float(), dim=1).cpu())
    model.train(was_training)
    if not preds:  # a rank whose shard is empty (fewer test images than ranks)
        dim = int(model.head.weight.shape[1])  # type: ignore[union-attr, index]
        preds, labels = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
        embeddings = [torch.zeros(0, dim)]
    # Collectives run on the device (NCCL cannot move CPU tensors); metrics are computed on CPU.
    pred = _gather(torch.cat(preds).to(device)).cpu()
    label = _gather(torch.cat(labels).to(device)).cpu()
    emb = _gather(torch.cat(embeddings).to(device)).cpu()
    metrics = classification_metrics(pred, label, num_classes)
    if retrieval:
        # k-NN over the whole test set once, on rank 0, then shared.
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        shared: list[Any] = [None]
        if not distributed or dist.get_rank() == 0:
            shared[0] = retrieval_metrics(emb, label)
        if distributed:
            dist.broadcast_object_list(shared, src=0)
        metrics.update(shared[0])
    return metrics
