"""carrot.predict: ``carrot predict`` on odd paths, checkpoints and files, as a user runs it (subprocesses)."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest
import torch

from cli_run import COLORS, QUICK, carrot_cli, one_line_error

pytestmark = pytest.mark.slow


def test_paths_that_are_folders_or_files_and_odd_checkpoints(
    probe_run: Path, tmp_path: Path
) -> None:
    ckpt = probe_run / "run" / "checkpoints" / "last.pt"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    one_line_error(
        carrot_cli("predict", "--checkpoint", ckpt, probe_run / "pets" / "test", "--out", folder),
        "is a folder",
    )
    one_line_error(
        carrot_cli(
            "eval", "--checkpoint", ckpt, "--json", folder, f"data.root={probe_run / 'pets'}"
        ),
        "is a folder",
    )
    saved = torch.load(ckpt, weights_only=True)
    for key, value in (("model", [1, 2]), ("config", "x"), ("model", {"w": [1.0]})):
        odd = tmp_path / f"odd_{key}.pt"
        torch.save({**saved, key: value}, odd)
        done = carrot_cli("predict", "--checkpoint", odd, probe_run / "pets" / "test",
                          "--out", tmp_path / "p.csv")  # fmt: skip
        one_line_error(done, str(odd))
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    done = carrot_cli(
        "train", *QUICK, f"data.root={probe_run / 'pets'}", f"output_dir={a_file}/sub"
    )
    one_line_error(done, "cannot be created")
    assert a_file.read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == [] and not (tmp_path / "p.csv").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="bytes file names and FIFOs")
def test_predict_on_odd_files(probe_run: Path, tmp_path: Path) -> None:
    ckpt = probe_run / "run" / "checkpoints" / "last.pt"
    images = tmp_path / "images"
    images.mkdir()
    src = probe_run / "pets" / "test" / "cat" / "0.png"
    odd = os.path.join(os.fsencode(images), b"caf\xe9-\xff.png")
    with open(odd, "wb") as fh:
        fh.write(src.read_bytes())
    os.mkfifo(images / "pipe.png")
    (images / "linked").symlink_to(probe_run / "pets" / "test" / "dog", target_is_directory=True)
    preds = tmp_path / "preds.csv"
    done = carrot_cli("predict", "--checkpoint", ckpt, images, images / "pipe.png",
                      "--out", preds, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(preds.open(encoding="utf-8")))
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["caf\\xe9-\\xff.png"]["label"] in COLORS
    assert by_name["pipe.png"]["error"].startswith("skipped: not a regular file (a FIFO)")
    linked = [r for r in rows if "/linked/" in r["path"]]
    assert len(linked) == 2 and all(r["error"] == "" for r in linked)
    assert "1 unreadable" in done.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
