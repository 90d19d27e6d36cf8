"""The four FGVC baselines through the trainer on a folder of images: each trains with a finite
loss and moves the weights away from CE's run with the same seed (a method silently ignored
would equal CE); center loss's centres and ISDA's covariances resume exactly after a stop; CARROT
adds on top of a baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from carrot.train import Trainer, load_config

pytestmark = pytest.mark.slow
BASELINES = ("maxent", "pairwise_confusion", "center_loss", "isda")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree (train/<class>/*.jpg, test/<class>/*.jpg) of 3 noisy-colour classes."""
    root = tmp_path_factory.mktemp("birds")
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(("finch", "sparrow", "wren")):
        for split, count in (("train", 8), ("test", 3)):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                base = torch.zeros(3, 1, 1)
                base[c] = 0.7
                pixels = (base + 0.3 * torch.rand(3, 18, 20, generator=g)).clamp(0, 1)
                array = (pixels.permute(1, 2, 0) * 255).to(torch.uint8).numpy()
                Image.fromarray(array).save(root / split / name / f"{i}.jpg", format="JPEG")
    return root


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "data.name=imagefolder",
        f"data.root={root}",
        "data.image_size=16",
        "train.batch_size=8",
        "train.k=4",
        "train.epochs=2",
        "train.max_steps_per_epoch=3",
        "train.lr=0.05",
        "train.progress=false",
        "train.device=cpu",
        "train.retrieval=false",
        "train.plots=false",
        "train.tensorboard=false",
        f"output_dir={out}",
        *extra,
    ]


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


@pytest.fixture(scope="module")
def ce_weights(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    run = tmp_path_factory.mktemp("ce") / "run"
    Trainer(load_config(None, _args(folder, run, "method=ce"))).fit()
    return _checkpoint(run)["model"]


@pytest.mark.parametrize("method", BASELINES)
def test_trains_finite_and_differs_from_ce(folder, ce_weights, tmp_path, method: str) -> None:
    run = tmp_path / "run"
    Trainer(load_config(None, _args(folder, run, f"method={method}"))).fit()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    own = {"maxent": "train_entropy", "pairwise_confusion": "train_confusion"}
    own |= {"center_loss": "train_center", "isda": "train_isda"}
    assert own[method] in records[-1] and math.isfinite(records[-1][own[method]])
    weights = _checkpoint(run)["model"]
    assert weights.keys() == ce_weights.keys()
    diff = max((weights[k].double() - ce_weights[k].double()).abs().max().item() for k in weights)
    assert diff > 1e-5, f"{method} trained exactly like ce"


@pytest.mark.parametrize("method", ["center_loss", "isda"])
def test_stop_and_resume_equals_one_go(folder, tmp_path, method: str) -> None:
    extra = (f"method={method}", "train.epochs=3")
    Trainer(load_config(None, _args(folder, tmp_path / "one", *extra))).fit()
    two = _args(folder, tmp_path / "two", *extra, "train.stop_after_steps=4")
    assert Trainer(load_config(None, two)).fit()["stopped_early"]
    stopped = _checkpoint(tmp_path / "two")["method"]
    Trainer.resume(tmp_path / "two").fit()
    one, resumed = _checkpoint(tmp_path / "one"), _checkpoint(tmp_path / "two")
    assert one["method"].keys() == resumed["method"].keys() and one["method"]
    for part in ("model", "method"):
        for key, value in one[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}.{key}"
    # The state the run stopped with was carried on, not rebuilt from zero.
    key = "centers.centers" if method == "center_loss" else "isda.count"
    assert bool(stopped[key].abs().sum() > 0)
    assert not torch.equal(stopped[key], one["method"][key])


def test_carrot_adds_on_top_of_a_baseline(folder, tmp_path) -> None:
    run = tmp_path / "run"
    Trainer(load_config(None, _args(folder, run, "method=center_loss+carrot"))).fit()
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_ce", "train_center", "train_kl"} <= last.keys()
    assert set(_checkpoint(run)["method"]) == {"base.centers.centers"}


def test_the_collective_baselines_train_under_torchrun(tiny, tmp_path) -> None:
    """Two real processes: ISDA's covariance merge, the pairs across ranks and the centre update
    each run collectives inside the loss; one composed run exercises all three in the trainer."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"  # the tiny run's output_dir
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "carrot.cli", "train", *tiny, "train.batch_size=8"]
    cmd += ["train.retrieval=false", "method=isda+pairwise_confusion+center_loss"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_isda", "train_confusion", "train_center"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
