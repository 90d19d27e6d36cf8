"""Evaluation: top-1, mean per-class accuracy and the retrieval metrics precision@1 and MAP@R of
the L2-normalized test embeddings, all computed on the training device."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

__all__ = [
    "classification_metrics",
    "evaluate",
    "evaluate_splits",
    "evaluate_with_ema",
    "predict_batches",
    "retrieval_metrics",
    "selection_score",
]

# Rows of the (query × gallery) similarity matrix held at once: ~256 MiB of float32.
_KNN_ELEMENTS = 1 << 26


def classification_metrics(preds: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """Top-1 accuracy and the mean over classes of per-class accuracy, both in percent."""
    preds, labels = preds.cpu(), labels.cpu()
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


@torch.no_grad()
def retrieval_metrics(
    embeddings: Tensor, labels: Tensor, *, max_elements: int = _KNN_ELEMENTS
) -> dict[str, float]:
    """Precision@1 and MAP@R (percent) of every embedding as a query against all the others, by
    cosine similarity, on the embeddings' device, in chunks of queries so that at most
    ``max_elements`` similarities exist at once (NABirds' 24.6k test images: 2.7k queries a chunk).

    MAP@R (Musgrave et al., 2020): with R the number of other items of the query's class,
    (1/R) Σ_{i ≤ R} P(i)·rel(i) over the R nearest neighbours. Queries whose class has no other
    item are left out of both metrics, as pytorch-metric-learning's ``AccuracyCalculator`` does;
    with none left (one image, or one image per class) the metrics are undefined and the result
    is empty (shown as n/a), not 0.

    Args:
        embeddings: Shape: (N, D).
        labels: Shape: (N,).
    """
    n = embeddings.shape[0]
    if n < 2:
        return {}
    emb = F.normalize(embeddings.float(), dim=1)
    labels = labels.to(emb.device)
    r = torch.bincount(labels)[labels] - 1  # (N,) relevant items per query
    k = max(int(r.max()), 1)
    steps = torch.arange(1, k + 1, device=emb.device, dtype=torch.float32)
    chunk = max(1, max_elements // n)
    p1_sum = torch.zeros((), dtype=torch.float64, device=emb.device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=emb.device)
    for start in range(0, n, chunk):
        q = slice(start, min(start + chunk, n))
        sims = emb[q] @ emb.T  # (chunk, N)
        rows = torch.arange(sims.shape[0], device=emb.device)
        sims[rows, rows + start] = float("-inf")  # not its own neighbour
        top = sims.topk(k, dim=1).indices  # (chunk, k)
        rel = (labels[top] == labels[q, None]).float()
        r_q = r[q]
        within = (steps[None, :] <= r_q[:, None]).float()
        precision = torch.cumsum(rel * within, 1) / steps
        ap = (precision * rel * within).sum(1) / r_q.clamp_min(1)
        keep = r_q > 0
        p1_sum += (rel[:, 0] * keep).sum()
        ap_sum += (ap * keep).sum()
    counted = int((r > 0).sum())
    if counted == 0:
        return {}
    return {
        "precision_at_1": 100.0 * float(p1_sum) / counted,
        "map_at_r": 100.0 * float(ap_sum) / counted,
    }


def _gather(x: Tensor) -> Tensor:
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x
    from carrot.distributed import all_gather_with_grad

    return all_gather_with_grad(x)[0]


def predict_batches(
    model: nn.Module,
    loader: DataLoader[Any],
    *,
    device: torch.device,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    channels_last: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, labels and L2-normalized embeddings of a loader, kept on ``device``."""
    was_training = model.training
    model.eval()
    logits, labels, embeddings = [], [], []
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast if autocast is not None else contextlib.nullcontext():
                out = model(x)
            logits.append(out.logits.float())
            labels.append(torch.as_tensor(y).to(device, non_blocking=True))
            embeddings.append(F.normalize(out.embedding.float(), dim=1))
            if progress is not None:
                progress(int(x.shape[0]))
    model.train(was_training)
    if not logits:  # a rank whose shard is empty (fewer test images than ranks)
        dim = int(model.head.weight.shape[1])  # type: ignore[union-attr, index]
        classes = int(model.head.weight.shape[0])  # type: ignore[union-attr, index]
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return torch.zeros(0, classes, device=device), empty, torch.zeros(0, dim, device=device)
    return torch.cat(logits), torch.cat(labels), torch.cat(embeddings)


def evaluate(
    model: nn.Module,
    loader: DataLoader[Any],
    *,
    device: torch.device,
    num_classes: int,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
    channels_last: bool = False,
    retrieval: bool = True,
    progress: bool = False,
    desc: str = "test",
    outputs: dict[str, Tensor] | None = None,
) -> dict[str, float]:
    """Metrics over the whole test set, on ``device``; each rank evaluates its shard and the
    predictions and embeddings are gathered (the k-NN then runs on every rank's device, so all
    ranks agree without another message). ``progress`` shows a bar (or log lines off a terminal).
    ``outputs``, if given, receives the gathered ``logits``, ``labels`` and ``embeddings``."""
    from carrot.train.progress import Progress

    bar = Progress(total=len(loader.dataset), desc=desc, enabled=progress)  # type: ignore[arg-type]
    try:
        logits, labels, embeddings = predict_batches(
            model,
            loader,
            device=device,
            autocast=autocast,
            channels_last=channels_last,
            progress=bar.update,
        )
    finally:
        bar.close()
    pred = _gather(logits.argmax(1))
    label = _gather(labels)
    metrics = classification_metrics(pred, label, num_classes)
    gathered = _gather(embeddings) if retrieval or outputs is not None else embeddings
    if retrieval:
        metrics.update(retrieval_metrics(gathered, label))
    if outputs is not None:
        outputs.update(logits=_gather(logits), labels=label, embeddings=gathered)
    return metrics


def evaluate_with_ema(
    model: nn.Module,
    ema: nn.Module | None,
    loader: DataLoader[Any],
    *,
    split: str = "test",
    **kwargs: Any,
) -> dict[str, float]:
    """:func:`evaluate` of the model and, if given, of its EMA (keys suffixed ``_ema``)."""
    metrics = evaluate(model, loader, desc=split, **kwargs)
    if ema is not None:
        ema_metrics = evaluate(ema, loader, desc=f"{split} (EMA)", **kwargs)
        metrics.update({f"{k}_ema": v for k, v in ema_metrics.items()})
    return metrics


def evaluate_splits(
    model: nn.Module,
    ema: nn.Module | None,
    test: DataLoader[Any],
    val: DataLoader[Any] | None,
    **kwargs: Any,
) -> dict[str, float]:
    """:func:`evaluate_with_ema` on the test loader and, if given, on the validation loader
    (keys prefixed ``val_``: ``val_top1``, ``val_mean_class_acc``, ``val_top1_ema``...), through
    the same path: each rank evaluates its shard, the metrics are exact over ranks."""
    metrics: dict[str, float] = {}
    if val is not None:
        found = evaluate_with_ema(model, ema, val, split="validation", **kwargs)
        metrics.update({f"val_{k}": v for k, v in found.items()})
    metrics.update(evaluate_with_ema(model, ema, test, split="test", **kwargs))
    return metrics


def selection_score(record: dict[str, Any]) -> float:
    """What ``best.pt`` maximizes: validation top-1 where the record has it, else test top-1;
    of the EMA model where there is one."""
    prefix = "val_" if "val_top1" in record else ""
    return float(record.get(f"{prefix}top1_ema", record[f"{prefix}top1"]))
