"""Never lose a run, never run a checkpoint's code: the failures an adversarial probe found."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from carrot.cli import main
from carrot.data import DatasetError
from carrot.train import Trainer, load_config
from carrot.train.checkpoint import (
    CheckpointError,
    atomic_save,
    convert_checkpoint,
    load_checkpoint,
)
from carrot.train.config import ConfigError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def jpeg(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")


def _pets(root: Path, classes=("cat", "dog", "fox"), n_train: int = 6, n_test: int = 3) -> Path:
    colors = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    for c, name in enumerate(classes):
        for i in range(n_train):
            jpeg(root / "train" / name / f"{i}.jpg", (20, 16), colors[c % 4])
        for i in range(n_test):
            jpeg(root / "test" / name / f"{i}.jpg", (20, 16), colors[c % 4])
    return root


def _folder_args(root: Path, out: Path) -> list[str]:
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


def _epoch_of(path: Path) -> int:
    return int(load_checkpoint(path)["state"]["epoch"])


# --- lost or wrong results ---------------------------------------------------------------------


def test_two_runs_started_together_get_two_folders(tiny, tmp_path) -> None:
    out = tmp_path / "shared"
    args = [a for a in tiny if not a.startswith("output_dir=")] + [
        f"output_dir={out}",
        "train.epochs=1",
        "train.retrieval=false",
        "train.plots=false",
        "train.tensorboard=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "carrot.cli", "train", *args]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = sorted({out, out.with_name("shared-2")})
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["run_dir"] == str(folder) and summary["epochs"] == 1
        assert (folder / "checkpoints" / "last.pt").is_file()


def test_a_claimed_folder_is_never_shared(tiny, tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".carrot-run").write_text("another process\n")  # claimed, nothing yet
    trainer = Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"]))
    assert trainer.run_dir == tmp_path / "run-2"
    trainer.rt.teardown()


def test_renamed_class_folders_are_refused_on_eval_and_resume(tmp_path) -> None:
    root = _pets(tmp_path / "pets")
    run = tmp_path / "run"
    Trainer(load_config(None, _folder_args(root, run))).fit()
    # Renaming changes the sorted order: label 0 would become another class.
    (root / "train" / "cat").rename(root / "train" / "zebra")
    (root / "test" / "cat").rename(root / "test" / "zebra")
    ckpt = run / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match=r"label 0: checkpoint 'cat' vs data 'dog'"):
        Trainer.resume(run, ["train.epochs=3"])
    assert main(["eval", "--checkpoint", str(ckpt)]) == 2


def test_a_crash_between_last_and_best_is_repaired_on_resume(tiny, tmp_path, monkeypatch) -> None:
    import carrot.train.loop as loop

    trainer = Trainer(load_config(None, [*tiny, "train.epochs=3", "train.retrieval=false"]))
    real = loop.Trainer._evaluate
    calls = {"n": 0}

    def crash_in_second_evaluation(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed during evaluation")
        return real(self)

    monkeypatch.setattr(loop.Trainer, "_evaluate", crash_in_second_evaluation)
    with pytest.raises(RuntimeError, match="killed during evaluation"):
        trainer.fit()
    run = tmp_path / "run"
    # The epoch's training was saved before its evaluation.
    assert _epoch_of(run / "checkpoints" / "last.pt") == 2
    assert load_checkpoint(run / "checkpoints" / "last.pt")["state"]["eval_pending"]
    monkeypatch.setattr(loop.Trainer, "_evaluate", real)
    summary = Trainer.resume(run).fit()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and all("top1" in r for r in records)
    best = summary["best"]["epoch"]
    assert _epoch_of(run / "checkpoints" / "best.pt") == best
    assert max(records, key=lambda r: r["top1"])["top1"] == summary["best"]["top1"]


def test_bad_images_are_all_reported_before_training(tmp_path) -> None:
    root = _pets(tmp_path / "pets")
    (root / "test" / "dog" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    (root / "train" / "fox" / "2.jpg").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        Trainer(load_config(None, _folder_args(root, tmp_path / "run")))
    message = str(err.value)
    assert "fox/2.jpg (empty file (0 bytes))" in message
    assert "dog/1.jpg" in message and "cannot be read" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_corrupt_test_image_never_costs_an_epoch(tmp_path, monkeypatch) -> None:
    """Even past the up-front check (an image that breaks later), the epoch is saved first."""
    import carrot.data.check as check

    root = _pets(tmp_path / "pets")
    monkeypatch.setattr(check, "decode_error", lambda path: None)  # the check misses it
    (root / "test" / "fox" / "0.jpg").write_bytes(b"garbage")
    trainer = Trainer(load_config(None, _folder_args(root, tmp_path / "run")))
    with pytest.raises(DatasetError, match="cannot read image"):
        trainer.fit()
    assert _epoch_of(tmp_path / "run" / "checkpoints" / "last.pt") == 1


def test_resume_into_another_folder_is_refused(tiny, tmp_path) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    with pytest.raises(ConfigError, match="output_dir cannot point elsewhere"):
        Trainer.resume(tmp_path / "run", [f"output_dir={tmp_path / 'other'}"])


# --- checkpoints: clean errors, intact files, no code --------------------------------------------


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tiny, tmp_path, monkeypatch) -> None:
    trainer = Trainer(load_config(None, [*tiny, "train.epochs=3", "train.retrieval=false"]))
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the epoch-1 checkpoints (pre- and post-evaluation) succeed
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*the disk is full"):
        trainer.fit()
    folder = tmp_path / "run" / "checkpoints"
    assert _epoch_of(folder / "last.pt") == 1
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(0 bytes\)"),
        (os.urandom(4096), "is not readable"),
        (None, "is not readable"),  # truncated: the first half of a real checkpoint
    ],
)
def test_broken_checkpoints_give_one_line(tiny, tmp_path, capsys, content, message) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    good = tmp_path / "run" / "checkpoints" / "last.pt"
    bad = tmp_path / "bad.pt"
    data = good.read_bytes()
    bad.write_bytes(content if content is not None else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err


def test_a_checkpoint_of_another_backbone_gives_one_line(tiny, tmp_path, capsys) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert main(["eval", "--checkpoint", str(ckpt), "model.backbone=test_resnet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "do not fit model.backbone=test_resnet" in err and len(err.splitlines()) == 1


def test_a_killed_save_leaves_a_temporary_that_resume_removes(tiny, tmp_path) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    folder = tmp_path / "run" / "checkpoints"
    stale = folder / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    trainer = Trainer.resume(tmp_path / "run", ["train.epochs=2"])
    assert not stale.exists()
    trainer.rt.teardown()


class _Booby:
    """Unpickling this creates a file: proof that a loader ran the checkpoint's code."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_booby_trapped_checkpoint_runs_nothing(tiny, tmp_path, capsys) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["trap"] = _Booby(str(marker))
    trapped = tmp_path / "trapped.pt"
    torch.save(ckpt, trapped)
    with pytest.raises(CheckpointError, match="holds pickled Python objects"):
        load_checkpoint(trapped)
    assert main(["eval", "--checkpoint", str(trapped)]) == 2
    assert "carrot convert" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="only do this for a file you trust"):
        convert_checkpoint(trapped, tmp_path / "new.pt", trust=False)
    # The weights loader of model.pretrained_path refuses it too.
    from carrot.train.model import read_weights

    with pytest.raises(ValueError, match="holds pickled Python objects"):
        read_weights(trapped)
    assert not marker.exists()


def test_carrot_0_1_checkpoints_convert_with_trust(tiny, tmp_path) -> None:
    import numpy as np

    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    # What carrot 0.1 wrote: format 1, numpy RNG state, the old data keys.
    old = dict(ckpt, format=1)
    old["rng"] = [
        {
            "python": random.getstate(),
            "numpy": np.random.get_state(),  # noqa: NPY002
            "torch": torch.get_rng_state(),
        }
    ]
    old["config"] = json.loads(json.dumps(ckpt["config"]))
    data = old["config"]["data"]
    data["augment"] = data.pop("train_transform")
    data["resize"] = 20
    del data["crop_pct"]
    legacy = tmp_path / "legacy.pt"
    torch.save(old, legacy)
    with pytest.raises(CheckpointError, match="holds pickled Python objects"):
        load_checkpoint(legacy)
    new = tmp_path / "new.pt"
    assert main(["convert", str(legacy), str(new), "--trust"]) == 0
    converted = load_checkpoint(new)
    assert converted["config"]["data"]["crop_pct"] == pytest.approx(16 / 20)
    assert (
        converted["config"]["data"]["train_transform"] == ckpt["config"]["data"]["train_transform"]
    )
    for k, v in ckpt["model"].items():
        assert torch.equal(converted["model"][k], v)
    assert main(["eval", "--checkpoint", str(new)]) == 0


def test_atomic_save_survives_a_failure_mid_write(tmp_path, monkeypatch) -> None:
    path = tmp_path / "c.pt"
    atomic_save({"format": 2, "x": torch.ones(3)}, path)
    before = path.read_bytes()

    def broken(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*iostream error"):
        atomic_save({"x": torch.zeros(3)}, path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_start_that_fails_leaves_the_folder_free(tmp_path) -> None:
    run = tmp_path / "run"
    args = _folder_args(tmp_path / "missing", run)
    with pytest.raises(DatasetError):
        Trainer(load_config(None, args))
    assert not run.exists()
    (run).mkdir()
    (run / "notes.txt").write_text("mine")  # a folder the user made is kept, with its files
    with pytest.raises(DatasetError):
        Trainer(load_config(None, args))
    assert (run / "notes.txt").exists() and not (run / ".carrot-run").exists()
