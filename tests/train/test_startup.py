"""carrot.train.startup: a run's start claims its own folder, checks its data (every bad image at
once, renamed classes), refuses a resume elsewhere, and a failed start leaves the folder free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from folder_runs import epoch_of, folder_args, pets

from carrot.cli import main
from carrot.data import DatasetError
from carrot.train import Trainer, load_config
from carrot.train.checkpoint import (
    CheckpointError,
)
from carrot.train.config import ConfigError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


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
    root = pets(tmp_path / "pets")
    run = tmp_path / "run"
    Trainer(load_config(None, folder_args(root, run))).fit()
    # Renaming changes the sorted order: label 0 would become another class.
    (root / "train" / "cat").rename(root / "train" / "zebra")
    (root / "test" / "cat").rename(root / "test" / "zebra")
    ckpt = run / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match=r"label 0: checkpoint 'cat' vs data 'dog'"):
        Trainer.resume(run, ["train.epochs=3"])
    assert main(["eval", "--checkpoint", str(ckpt)]) == 2


def test_bad_images_are_all_reported_before_training(tmp_path) -> None:
    root = pets(tmp_path / "pets")
    (root / "test" / "dog" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    (root / "train" / "fox" / "2.jpg").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        Trainer(load_config(None, folder_args(root, tmp_path / "run")))
    message = str(err.value)
    assert "fox/2.jpg (empty file (0 bytes))" in message
    assert "dog/1.jpg" in message and "cannot be read" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_corrupt_test_image_never_costs_an_epoch(tmp_path, monkeypatch) -> None:
    """Even past the up-front check (an image that breaks later), the epoch is saved first."""
    import carrot.data.check as check

    root = pets(tmp_path / "pets")
    monkeypatch.setattr(check, "decode_error", lambda path: None)  # the check misses it
    (root / "test" / "fox" / "0.jpg").write_bytes(b"garbage")
    trainer = Trainer(load_config(None, folder_args(root, tmp_path / "run")))
    with pytest.raises(DatasetError, match="cannot read image"):
        trainer.fit()
    assert epoch_of(tmp_path / "run" / "checkpoints" / "last.pt") == 1


def test_resume_into_another_folder_is_refused(tiny, tmp_path) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    with pytest.raises(ConfigError, match="output_dir cannot point elsewhere"):
        Trainer.resume(tmp_path / "run", [f"output_dir={tmp_path / 'other'}"])


def test_a_start_that_fails_leaves_the_folder_free(tmp_path) -> None:
    run = tmp_path / "run"
    args = folder_args(tmp_path / "missing", run)
    with pytest.raises(DatasetError):
        Trainer(load_config(None, args))
    assert not run.exists()
    (run).mkdir()
    (run / "notes.txt").write_text("mine")  # a folder the user made is kept, with its files
    with pytest.raises(DatasetError):
        Trainer(load_config(None, args))
    assert (run / "notes.txt").exists() and not (run / ".carrot-run").exists()
