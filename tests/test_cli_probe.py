"""The second fault probe's cases (issue 22), run as the probe ran them: the ``carrot`` command in
a subprocess on real files. Each now ends in one line and exit code 2, or in the safe behaviour,
with nothing written outside the intended folder and nothing half-written."""

from __future__ import annotations

import csv
import json
import os
import random
import stat
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cli_run import carrot_cli, one_line_error

pytestmark = pytest.mark.slow
COLORS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}
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


def _images(root: Path, n_train: int = 6, n_test: int = 2) -> Path:
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


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run (checkpoint) on a tiny ImageFolder tree, made by ``carrot train``."""
    base = tmp_path_factory.mktemp("probe")
    data = _images(base / "pets")
    done = carrot_cli("train", *QUICK, f"data.root={data}", f"output_dir={base / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    return base


# --- item 2: output_dir placeholders -----------------------------------------------------------


def test_output_dir_placeholders_cannot_reach_the_environment(tmp_path: Path) -> None:
    for template in (
        "{data.__class__.__init__.__globals__[os].environ[CARROT_PROBE_SECRET]}",
        "{train.__class__.__module__}",
        "{seed!r:>{seed}}",
    ):
        done = carrot_cli(
            "train", "train.device=cpu", f"output_dir={tmp_path}/x/{template}",
            env={"CARROT_PROBE_SECRET": "hunter2"},
        )  # fmt: skip
        one_line_error(done, "output_dir")
        assert "hunter2" not in done.stderr + done.stdout
    assert not (tmp_path / "x").exists()


# --- item 5: non-finite weights, bad export configs ------------------------------------------


def _poisoned(run: Path, tmp_path: Path, value: float) -> Path:
    ckpt = torch.load(run / "run" / "checkpoints" / "last.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and "head" in k)
    ckpt["model"][name].view(-1)[0] = value
    path = tmp_path / "bad.pt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_checkpoints_with_non_finite_weights_are_refused(
    run: Path, tmp_path: Path, value: float
) -> None:
    bad = _poisoned(run, tmp_path, value)
    preds, folder = tmp_path / "preds.csv", tmp_path / "export"
    for args in (
        ("predict", "--checkpoint", bad, run / "pets" / "test", "--out", preds),
        ("export", "--checkpoint", bad, "--out", folder),
        ("eval", "--checkpoint", bad, f"data.root={run / 'pets'}"),
    ):
        one_line_error(carrot_cli(*args), "hold NaN or inf")
    assert not preds.exists() and not folder.exists()


def test_export_config_is_validated(run: Path, tmp_path: Path) -> None:
    import carrot
    from carrot.export import ExportError

    good = tmp_path / "good"
    done = carrot_cli(
        "export", "--checkpoint", run / "run" / "checkpoints" / "last.pt", "--out", good
    )
    assert done.returncode == 0, done.stderr
    config = json.loads((good / "config.json").read_text())
    cases = {
        "missing head": ({k: v for k, v in config.items() if k != "head"}, "no 'head'"),
        "architecture 5": ({**config, "architecture": 5}, "architecture must be"),
        "negative scale": ({**config, "head": {**config["head"], "scale": -1.0}}, "head.scale"),
        "head type": ({**config, "head": {**config["head"], "type": "mlp"}}, "head must be"),
        "label names": ({**config, "label_names": ["a"]}, "label_names must be"),
        "input_size str": ({**config, "input_size": "32"}, "input_size must be"),
        "input_size zero": ({**config, "input_size": [3, 0, 0]}, "input_size must be"),
        "std zero": ({**config, "std": [0.0, 0.2, 0.2]}, "std must be"),
        "std short": ({**config, "std": [0.2]}, "std must be"),
        "mean nan": ({**config, "mean": [float("nan")] * 3}, "mean must be"),
        "classes 0": ({**config, "num_classes": 0}, "num_classes must be"),
        "classes bool": ({**config, "num_classes": True}, "num_classes must be"),
        "interpolation": ({**config, "interpolation": "lanczos9"}, "interpolation must be"),
        "crop_pct": ({**config, "crop_pct": 2}, "crop_pct must be"),
        "embedding_dim": ({**config, "embedding_dim": -3}, "embedding_dim must be"),
        "not a mapping": ([1, 2], "must be a JSON object"),
    }
    for name, (broken, message) in cases.items():
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        (folder / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
        (folder / "config.json").write_text(json.dumps(broken))
        with pytest.raises(ExportError, match=message) as e:
            carrot.load_model(folder)
        assert "\n" not in str(e.value), name
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "model.safetensors").write_bytes(b"")
    (tmp_path / "json" / "config.json").write_text("{not json")
    with pytest.raises(ExportError, match="not valid JSON"):
        carrot.load_model(tmp_path / "json")


# --- item 6: pretrained_path without pretrained ----------------------------------------------


def test_pretrained_path_without_pretrained_is_refused(run: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(1)}, weights)
    out = tmp_path / "r"
    done = carrot_cli(
        "train", *QUICK, f"data.root={run / 'pets'}", f"model.pretrained_path={weights}",
        f"output_dir={out}",
    )  # fmt: skip
    one_line_error(done, "model.pretrained_path is set", "model.pretrained=true")
    assert not out.exists()


# --- item 7: one class per batch --------------------------------------------------------------


@pytest.mark.parametrize("method", ["carrot", "supcon", "supcon_carrot"])
def test_a_batch_of_one_class_is_refused_for_batch_statistics(tmp_path: Path, method: str) -> None:
    done = carrot_cli(
        "train", f"method={method}", "train.batch_size=4", "train.k=4", "train.device=cpu",
        f"output_dir={tmp_path / 'r'}",
    )  # fmt: skip
    one_line_error(done, "at least two classes", "batch_size=4 with k=4")
    assert not (tmp_path / "r").exists()
    ok = carrot_cli("train", "method=ce", "train.batch_size=4", "train.k=4", "--print-config")
    assert ok.returncode == 0, ok.stderr


# --- item 8: 16-bit images, in training and predict alike -------------------------------------


def test_sixteen_bit_images_are_scaled_in_predict_and_training(run: Path, tmp_path: Path) -> None:
    import numpy as np

    from carrot.data.base import load_rgb

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    path = tmp_path / "deep" / "ramp.png"
    path.parent.mkdir()
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(load_rgb(path))
    assert (rgb[..., 0] == 255).mean() < 0.05  # PIL's clipping made 98% of it white
    assert np.array_equal(
        rgb[0, :, 0], np.round(ramp[0].astype(np.int64) * 255 / 65535).astype(np.uint8)
    )
    preds = tmp_path / "p.csv"
    done = carrot_cli("predict", "--checkpoint", run / "run" / "checkpoints" / "last.pt",
                      path.parent, "--out", preds)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = list(csv.DictReader(preds.open()))
    assert row["error"] == "" and row["label"] in COLORS


# --- item 9: changed data on resume, run folder inside the data ------------------------------


def test_resume_refuses_a_changed_dataset(tmp_path: Path) -> None:
    data = _images(tmp_path / "pets")
    out = tmp_path / "r"
    base = [*QUICK, f"data.root={data}", "train.epochs=2"]
    done = carrot_cli("train", *base, f"output_dir={out}", "train.stop_after_steps=1")
    assert done.returncode != 2 and (out / "checkpoints" / "last.pt").is_file(), done.stderr
    before = (out / "checkpoints" / "last.pt").read_bytes()
    extra = data / "train" / "cat" / "new.png"
    Image.new("RGB", (20, 18), (1, 2, 3)).save(extra)
    one_line_error(carrot_cli("train", "--resume", out), "1 file(s) added", "train/cat/new.png")
    extra.unlink()
    (data / "train" / "dog" / "0.png").write_bytes(b"x" * 10)
    one_line_error(carrot_cli("train", "--resume", out), "1 file(s) changed")
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_an_output_folder_inside_the_data_root_is_refused(tmp_path: Path) -> None:
    data = _images(tmp_path / "pets")
    before = _tree(data)
    for inside in (data / "train" / "runs" / "x", data / "r"):
        done = carrot_cli("train", *QUICK, f"data.root={data}", f"output_dir={inside}")
        one_line_error(done, "is inside data.root")
    assert _tree(data) == before


# --- item 10: one line instead of a traceback --------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it(run: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    done = carrot_cli("train", "--config", repo / "configs" / "cub_resnet50.yaml",
                      f"output_dir={tmp_path / 'cub'}")  # fmt: skip
    one_line_error(done, "CUDA is not available")
    assert not (tmp_path / "cub").exists()
    ckpt = run / "run" / "checkpoints" / "last.pt"
    for device, message in (("cuda", "CUDA is not available"), ("gpu0", "must be auto, cpu")):
        done = carrot_cli("predict", "--checkpoint", ckpt, run / "pets" / "test", "--device",
                          device, "--out", tmp_path / "p.csv")  # fmt: skip
        one_line_error(done, "--device", message)
    assert not (tmp_path / "p.csv").exists()
    done = carrot_cli("train", "train.device=cuda:x", "--print-config")
    assert done.returncode == 0  # a device is checked when it is used, not when printed


def test_paths_that_are_folders_or_files_and_odd_checkpoints(run: Path, tmp_path: Path) -> None:
    ckpt = run / "run" / "checkpoints" / "last.pt"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    one_line_error(
        carrot_cli("predict", "--checkpoint", ckpt, run / "pets" / "test", "--out", folder),
        "is a folder",
    )
    one_line_error(
        carrot_cli("eval", "--checkpoint", ckpt, "--json", folder, f"data.root={run / 'pets'}"),
        "is a folder",
    )
    saved = torch.load(ckpt, weights_only=True)
    for key, value in (("model", [1, 2]), ("config", "x"), ("model", {"w": [1.0]})):
        odd = tmp_path / f"odd_{key}.pt"
        torch.save({**saved, key: value}, odd)
        done = carrot_cli("predict", "--checkpoint", odd, run / "pets" / "test",
                          "--out", tmp_path / "p.csv")  # fmt: skip
        one_line_error(done, str(odd))
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    done = carrot_cli("train", *QUICK, f"data.root={run / 'pets'}", f"output_dir={a_file}/sub")
    one_line_error(done, "cannot be created")
    assert a_file.read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == [] and not (tmp_path / "p.csv").exists()


# --- item 11: odd file names, FIFOs, symlinks --------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="bytes file names and FIFOs")
def test_predict_on_odd_files(run: Path, tmp_path: Path) -> None:
    ckpt = run / "run" / "checkpoints" / "last.pt"
    images = tmp_path / "images"
    images.mkdir()
    src = run / "pets" / "test" / "cat" / "0.png"
    odd = os.path.join(os.fsencode(images), b"caf\xe9-\xff.png")
    with open(odd, "wb") as fh:
        fh.write(src.read_bytes())
    os.mkfifo(images / "pipe.png")
    (images / "linked").symlink_to(run / "pets" / "test" / "dog", target_is_directory=True)
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


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs")
def test_training_follows_symlinked_folders_and_skips_fifos(tmp_path: Path) -> None:
    from carrot.data.imagefolder import ImageFolder

    data = _images(tmp_path / "pets", n_train=2)
    elsewhere = _images(tmp_path / "more", n_train=2)
    (data / "train" / "cat" / "more").symlink_to(elsewhere / "train" / "cat")
    os.mkfifo(data / "train" / "dog" / "pipe.png")
    split = ImageFolder(root=data, split="train")
    names = sorted(str(p.relative_to(data / "train")) for p in split.paths)
    assert "cat/more/0.png" in names and "dog/pipe.png" not in names
    assert len(names) == 3 * 2 + 2


# --- item 12: a failed export leaves nothing --------------------------------------------------


def test_a_failed_export_leaves_nothing_and_the_retry_needs_no_force(
    run: Path, tmp_path: Path
) -> None:
    shim = tmp_path / "shim"
    (shim / "onnxruntime").mkdir(parents=True)
    (shim / "onnxruntime" / "__init__.py").write_text("raise ImportError('no onnxruntime')\n")
    ckpt = run / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "export"
    env = {"PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = carrot_cli("export", "--checkpoint", ckpt, "--out", out, "--format", "onnx", env=env)
    one_line_error(done, "carrot-fgvc[export]")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["shim"]
    done = carrot_cli("export", "--checkpoint", ckpt, "--out", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "backbone.safetensors", "config.json", "model.safetensors",
    ]  # fmt: skip


# --- item 14: one file mode for a run's files ---------------------------------------------------


def test_a_runs_files_share_one_mode(run: Path) -> None:
    modes = {
        str(p.relative_to(run / "run")): stat.S_IMODE(p.stat().st_mode)
        for p in (run / "run").rglob("*")
        if p.is_file()
    }
    assert "checkpoints/last.pt" in modes and "metrics.jsonl" in modes
    assert len(set(modes.values())) == 1, modes
