"""Runs on a tiny ImageFolder tree of JPEGs, shared by the trainer's start and checkpoint tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from carrot.train.checkpoint import load_checkpoint


def jpeg(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")


def pets(root: Path, classes=("cat", "dog", "fox"), n_train: int = 6, n_test: int = 3) -> Path:
    colors = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    for c, name in enumerate(classes):
        for i in range(n_train):
            jpeg(root / "train" / name / f"{i}.jpg", (20, 16), colors[c % 4])
        for i in range(n_test):
            jpeg(root / "test" / name / f"{i}.jpg", (20, 16), colors[c % 4])
    return root


def folder_args(root: Path, out: Path) -> list[str]:
    return [
        "data.name=imagefolder",
        f"data.root={root}",
        "data.image_size=16",
        "train.batch_size=8",
        "train.k=4",
        "train.epochs=2",
        "train.max_steps_per_epoch=2",
        "train.progress=false",
        "train.device=cpu",
        "train.retrieval=false",
        "train.plots=false",
        "train.tensorboard=false",
        f"output_dir={out}",
    ]


def epoch_of(path: Path) -> int:
    return int(load_checkpoint(path)["state"]["epoch"])
