"""Worker side of the validation-split gloo test: each rank evaluates its shards of the
validation and test splits through the trainer's own evaluation path."""

from __future__ import annotations

from pathlib import Path

import torch

from dist_workers import gloo_group

VAL_RUN = [
    "data.name=synthetic",
    "data.options.num_superclasses=1",
    "data.options.classes_per_superclass=5",
    "data.options.train_per_class=10",
    "data.options.test_per_class=3",
    "data.options.image_size=8",
    "data.image_size=8",
    "data.val_split=fraction",
    "data.val_fraction=0.3",  # 15 validation images: shards of 8 and 7
    "train.device=cpu",
    "train.eval_batch_size=4",
    "train.batch_size=4",
    "train.k=2",
    "train.ema_decay=0.9",
]


def split_metrics(rank: int = 0, world: int = 1) -> dict[str, float]:
    """The trainer's evaluation of a seeded model (and a perturbed copy as its EMA) on this rank's
    shards of the validation and test splits of :data:`VAL_RUN`."""
    from carrot.train import load_config
    from carrot.train.data import build_data, load_splits
    from carrot.train.evaluate import evaluate_splits
    from carrot.train.startup import build_run_model

    cfg = load_config(None, VAL_RUN)
    splits = load_splits(cfg)
    torch.manual_seed(0)
    model, _ = build_run_model(cfg, splits, torch.device("cpu"), None)
    ema, _ = build_run_model(cfg, splits, torch.device("cpu"), None)  # other weights
    data = build_data(cfg, splits, rank=rank, world_size=world)
    assert data.val_loader is not None
    return evaluate_splits(
        model,
        ema,
        data.test_loader,
        data.val_loader,
        device=torch.device("cpu"),
        num_classes=data.num_classes,
        retrieval=True,
    )


def val_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, world, port):
        torch.save(split_metrics(rank, world), Path(out_dir) / f"rank{rank}.pt")
