"""``carrot export`` as a user runs it: --force replaces the folder whole (no file of the model
exported before, concurrent exports never mix), a link as --out is refused, files are 0644."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from carrot.paths import default_file_mode
from carrot.train import Trainer, load_config
from cli_run import SRC, carrot_cli, one_line_error

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("exp")
    cfg = load_config(
        None,
        [
            "data.name=synthetic",
            "data.options.num_superclasses=2",
            "data.options.classes_per_superclass=2",
            "data.options.train_per_class=4",
            "data.options.test_per_class=2",
            "data.options.image_size=16",
            "data.image_size=16",
            "train.batch_size=8",
            "train.k=2",
            "train.epochs=1",
            "train.device=cpu",
            "train.progress=false",
            "train.plots=false",
            "train.loggers=[]",
            "model.backbone=carrot_cnn",
            f"output_dir={base / 'run'}",
        ],
    )
    Trainer(cfg).fit()
    return base / "run" / "checkpoints" / "last.pt"


def test_force_replaces_the_folder_whole(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = carrot_cli("export", "--checkpoint", ckpt, "--out", out, "--format", "hf")
    assert done.returncode == 0, done.stderr
    assert (out / "README.md").is_file()  # model A's card
    (out / "notes.txt").write_text("left by hand")
    done = carrot_cli("export", "--checkpoint", ckpt, "--out", out, "--force")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "backbone.safetensors", "config.json", "model.safetensors",
    ]  # fmt: skip
    for f in out.iterdir():  # safetensors writes 0600; every file gets open()'s mode
        assert stat.S_IMODE(f.stat().st_mode) == default_file_mode(), f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left


def test_concurrent_force_exports_never_mix_files(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "carrot.cli",
                "export",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
                "--force",
                *(["--format", "hf"] if i % 2 else []),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names in (
        ["backbone.safetensors", "config.json", "model.safetensors"],
        ["README.md", "config.json", "model.safetensors"],
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("fmt", ["safetensors", "hf"])
def test_a_link_as_out_is_refused(ckpt: Path, tmp_path: Path, fmt: str) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    done = carrot_cli("export", "--checkpoint", ckpt, "--out", link, "--force", "--format", fmt)
    one_line_error(done, "--out", "is a symbolic link")
    assert link.is_symlink() and not any(real.iterdir())


INTERRUPTED = """
import os, signal, sys
import carrot.export
real = carrot.export._write
def write(*args, **kwargs):
    written = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C with every file written, before the swap
    return written
carrot.export._write = write
from carrot.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_leaves_the_old_folder_and_no_temporaries(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("model A")
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, "export", "--checkpoint", str(ckpt), "--out", str(out),
         "--force"],
        env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "carrot export: interrupted."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["README.md"]
