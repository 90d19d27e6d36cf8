"""CARROT in PyTorch Lightning: a timm backbone trained with ``carrot_ce_kl_loss`` on P×K batches.

Runs on the CPU with built-in synthetic fine-grained data; ``--data-root`` trains on an ImageFolder
instead (one folder per class)::

    python examples/lightning_carrot.py --fast-dev-run
    python examples/lightning_carrot.py --max-epochs 5
    python examples/lightning_carrot.py --devices 2 --max-epochs 5       # DDP, gloo, 2 CPU processes
    python examples/lightning_carrot.py --accelerator gpu --devices 4 --model resnet50 \\
        --data-root /data/CUB/train --image-size 224 --batch-size 64

What CARROT needs from Lightning, and where it is in this file:

- P×K batches: ``PKSampler`` as the DataLoader's ``batch_sampler``, built in ``train_dataloader``
  with the trainer's world size and rank; ``use_distributed_sampler=False`` keeps Lightning from
  replacing it. Lightning calls ``set_epoch`` on a loader's ``sampler``, not on its
  ``batch_sampler``, so ``on_train_epoch_start`` calls it (otherwise every epoch repeats epoch 0).
- Global statistics: under DDP, ``carrot_ce_kl_loss`` computes the class statistics over all ranks
  by itself; its γ summaries are the same on every rank and are logged without ``sync_dist``.

Needs ``pip install 'carrot-fgvc[train,lightning]'``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import carrot.train.model  # noqa: F401  (registers the small CPU backbone "carrot_cnn" in timm)
from carrot import OperatorOptions, PKSampler, carrot_ce_kl_loss, summarize_stats
from carrot.data.synthetic import generate


class CarrotClassifier(L.LightningModule):
    """A timm backbone, a linear head on ẑ = z / ||z||, and the CARROT CE + λ·KL loss.

    Args:
        num_classes: Classes in the dataset (N).
        model: Any timm model name; its pooled features are the embedding z.
        lr: AdamW learning rate.
        lam: λ, the weight of the KL term.
        T: Temperature of the KL term.
        options: The CARROT operator's options (default: γ capped at 1.5, the recommended
            configuration of docs/stability.md).
        dump_dir: Save every step's embeddings, labels and statistics here (used by the tests).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        model: str = "carrot_cnn",
        lr: float = 1e-3,
        lam: float = 1.0,
        T: float = 1.0,
        options: OperatorOptions | None = None,
        dump_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["options", "dump_dir"])
        self.backbone = timm.create_model(model, pretrained=False, num_classes=0)  # (B, D) output
        self.head = nn.Linear(self.backbone.num_features, num_classes)
        self.options = options if options is not None else OperatorOptions(max_gamma=1.5)
        self.dump_dir = Path(dump_dir) if dump_dir else None

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        z = self.backbone(x)
        loss, stats = carrot_ce_kl_loss(
            z, y, self.head, lam=self.hparams.lam, T=self.hparams.T, options=self.options
        )
        self.log("train/loss", loss, sync_dist=True, prog_bar=True)
        self.log("train/kl", stats["kl"], sync_dist=True)
        # The statistics are computed over all ranks already: every rank logs the same values.
        summary = summarize_stats(stats)
        self.log_dict({f"carrot/{k}": v.float() for k, v in summary.items()})
        if self.dump_dir is not None:
            self._dump(self.dump_dir, z, y, stats)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.head(F.normalize(self.backbone(x), dim=1))
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), sync_dist=True, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)

    def on_train_epoch_start(self) -> None:
        self.trainer.train_dataloader.batch_sampler.set_epoch(self.current_epoch)

    def _dump(self, directory: Path, z: Tensor, y: Tensor, stats: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        record = {
            "step": self.global_step,
            "epoch": self.current_epoch,
            "sampler_epoch": self.trainer.train_dataloader.batch_sampler.epoch,
            "options": dataclasses.asdict(self.options),
            "z": z.detach().cpu(),
            "y": y.cpu(),
            **{k: stats[k].cpu() for k in ("classes", "gamma", "r", "m", "counts")},
        }
        torch.save(record, directory / f"rank{self.global_rank}_step{self.global_step}.pt")


class PKDataModule(L.LightningDataModule):
    """P×K training batches from ``PKSampler`` (rank-aware), plain batches for validation.

    Args:
        train: Training set, items ``(image, label)``.
        train_labels: The label of every training item. Shape: (N,).
        val: Validation set, or None.
        batch_size: Images per batch on each rank (P·K).
        k: Images per class in a batch (K).
        seed: Seed of the sampler's shuffles (the same on every rank).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        train: Dataset,
        train_labels: list[int],
        val: Dataset | None = None,
        *,
        batch_size: int = 32,
        k: int = 4,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train, self.train_labels, self.val = train, train_labels, val
        self.batch_size, self.k, self.seed, self.num_workers = batch_size, k, seed, num_workers

    def train_dataloader(self) -> DataLoader:
        sampler = PKSampler(
            self.train_labels,
            batch_size=self.batch_size,
            k=self.k,
            seed=self.seed,
            num_replicas=self.trainer.world_size,
            rank=self.trainer.global_rank,
        )
        # Lightning creates the first epoch's iterator before on_train_epoch_start (and after
        # restoring current_epoch when resuming).
        sampler.set_epoch(self.trainer.current_epoch)
        return DataLoader(self.train, batch_sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        if self.val is None:
            return []  # type: ignore[return-value]
        return DataLoader(self.val, batch_size=256, num_workers=self.num_workers)


def synthetic(
    *, classes: int, per_class: int, image_size: int
) -> tuple[TensorDataset, list[int], TensorDataset]:
    """carrot's synthetic fine-grained images (groups of 4 look-alike classes), as float tensors."""
    groups, per_group = (classes // 4, 4) if classes % 4 == 0 else (classes, 1)
    train_x, train_y, val_x, val_y, _ = generate(
        groups, per_group, per_class, max(1, per_class // 4), 0.3, image_size, 0
    )

    def to_float(x: Tensor) -> Tensor:
        return (x.float() / 255 - 0.5) / 0.25

    train = TensorDataset(to_float(train_x), torch.as_tensor(train_y))
    val = TensorDataset(to_float(val_x), torch.as_tensor(val_y))
    return train, [int(c) for c in train_y], val


def image_folder(root: str, image_size: int) -> tuple[Dataset, list[int], int]:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    dataset = ImageFolder(root, transform=transform)
    return dataset, list(dataset.targets), len(dataset.classes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", help="ImageFolder root (one folder per class); default synthetic")
    p.add_argument("--classes", type=int, default=16, help="synthetic data: number of classes")
    p.add_argument("--per-class", type=int, default=32, help="synthetic data: images per class")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--model", default="carrot_cnn", help="timm model name")
    p.add_argument("--batch-size", type=int, default=32, help="per rank, a multiple of --k")
    p.add_argument("--k", type=int, default=4, help="images per class in a batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--T", type=float, default=1.0)
    p.add_argument("--max-gamma", type=float, default=1.5, help="cap on γ; 0 for none")
    p.add_argument("--max-epochs", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", default="lightning_logs")
    p.add_argument("--log-every-n-steps", type=int, default=10)
    p.add_argument("--fast-dev-run", action="store_true", help="one training and validation batch")
    p.add_argument("--no-progress-bar", action="store_true")
    p.add_argument("--dump-stats", metavar="DIR", help="save every step's embeddings and stats")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    L.seed_everything(args.seed, workers=True)
    val: Dataset | None
    if args.data_root:
        train, labels, num_classes = image_folder(args.data_root, args.image_size)
        val = None
    else:
        train, labels, val = synthetic(
            classes=args.classes, per_class=args.per_class, image_size=args.image_size
        )
        num_classes = args.classes
    data = PKDataModule(
        train,
        labels,
        val,
        batch_size=args.batch_size,
        k=args.k,
        seed=args.seed,
        num_workers=args.num_workers,
    )
    model = CarrotClassifier(
        num_classes=num_classes,
        model=args.model,
        lr=args.lr,
        lam=args.lam,
        T=args.T,
        options=OperatorOptions(max_gamma=args.max_gamma or None),
        dump_dir=args.dump_stats,
    )
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        use_distributed_sampler=False,  # keep the PKSampler (it is rank-aware itself)
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        limit_val_batches=None if val is not None else 0,
        fast_dev_run=args.fast_dev_run,
        logger=CSVLogger(args.log_dir, name="carrot"),
        log_every_n_steps=args.log_every_n_steps,
        enable_progress_bar=not args.no_progress_bar,
        enable_model_summary=not args.no_progress_bar,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=data)


if __name__ == "__main__":
    main()
