"""Run the ``carrot`` command as a user does: a real subprocess on real files, with this
checkout's sources first on the path (:func:`carrot_cli`), or in this process for the argument
errors that need no process of their own (:func:`carrot_main`, seconds faster per call)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
COLORS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}
# Overrides for a one-epoch CPU run of a few seconds on :func:`tiny_images`.
QUICK = [
    "data.name=imagefolder",
    "data.image_size=16",
    "train.batch_size=6",
    "train.k=2",
    "train.epochs=1",
    "train.device=cpu",
    "train.progress=false",
    "train.plots=false",
    "train.tensorboard=false",
    "train.retrieval=false",
    "model.backbone=carrot_cnn",
    "model.timm_kwargs.widths=[4, 8]",
    "model.embedding_dim=8",
]


def carrot_cli(
    *args: object, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m carrot.cli ARGS`` with stdout and stderr captured as text."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full.pop("CARROT_DEBUG", None)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), full.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "carrot.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def carrot_main(
    capsys: pytest.CaptureFixture[str], *args: object
) -> subprocess.CompletedProcess[str]:
    """``carrot.cli.main(ARGS)`` in this process, read back as :func:`carrot_cli`'s result: the exit
    code (``SystemExit`` from argparse included), stdout and stderr as the user would see them."""
    from carrot.cli import main

    capsys.readouterr()  # what earlier code printed is not this command's output
    debug = os.environ.pop("CARROT_DEBUG", None)
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    finally:
        if debug is not None:
            os.environ["CARROT_DEBUG"] = debug
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["carrot", *map(str, args)], code, out.out, out.err)


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2 with one line on stderr, no traceback, holding every needle."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def tiny_images(root: Path, n_train: int = 6, n_test: int = 2) -> Path:
    """An ImageFolder tree (train/ and test/, one folder per colour) of small noisy PNGs."""
    rng = random.Random(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for name, color in COLORS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = Image.new("RGB", (20, 18), color)
                for _ in range(30):
                    img.putpixel((rng.randrange(20), rng.randrange(18)), (rng.randrange(256),) * 3)
                img.save(root / split / name / f"{i}.png")
    return root


def file_tree(folder: Path) -> dict[str, bytes]:
    """Every path under ``folder`` with its bytes, to check that nothing changed."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }
