"""carrot.train.checkpoint: never lose a run, never run a checkpoint's code. Saves are atomic (a
full disk or a killed save keeps the previous checkpoint), a crash between last and best is
repaired on resume, broken, pickled or other-backbone checkpoints are one line, carrot 0.1 ones
convert with trust, and weights that hold NaN or inf are refused by predict, export and eval."""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

import pytest
import torch
from folder_runs import epoch_of

from carrot.cli import main
from carrot.train import Trainer, load_config
from carrot.train.checkpoint import (
    CheckpointError,
    atomic_save,
    convert_checkpoint,
    load_checkpoint,
)
from cli_run import carrot_cli, one_line_error

pytestmark = pytest.mark.slow


def _poisoned(probe_run: Path, tmp_path: Path, value: float) -> Path:
    ckpt = torch.load(probe_run / "run" / "checkpoints" / "last.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and "head" in k)
    ckpt["model"][name].view(-1)[0] = value
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_checkpoints_with_non_finite_weights_are_refused(
    probe_run: Path, tmp_path: Path, value: float
) -> None:
    bad = _poisoned(probe_run, tmp_path, value)
    preds, folder = tmp_path / "preds.csv", tmp_path / "export"
    for args in (
        ("predict", "--checkpoint", bad, probe_run / "pets" / "test", "--out", preds),
        ("export", "--checkpoint", bad, "--out", folder),
        ("eval", "--checkpoint", bad, f"data.root={probe_run / 'pets'}"),
    ):
        one_line_error(carrot_cli(*args), "hold NaN or inf")
    assert not preds.exists() and not folder.exists()


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
    assert epoch_of(run / "checkpoints" / "last.pt") == 2
    assert load_checkpoint(run / "checkpoints" / "last.pt")["state"]["eval_pending"]
    monkeypatch.setattr(loop.Trainer, "_evaluate", real)
    summary = Trainer.resume(run).fit()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and all("top1" in r for r in records)
    best = summary["best"]["epoch"]
    assert epoch_of(run / "checkpoints" / "best.pt") == best
    assert max(records, key=lambda r: r["top1"])["top1"] == summary["best"]["top1"]


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
    assert epoch_of(folder / "last.pt") == 1
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
