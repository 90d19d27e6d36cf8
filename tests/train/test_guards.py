"""The trainer's guards from the second fault probe (issue 22): a NaN embedding stops the run at
its step, a one-class batch and a contradictory pretrained_path are refused before training, the
run records its data and refuses to resume on other data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from carrot.train import Trainer, load_config
from carrot.train.config import ConfigError
from carrot.train.guards import FINGERPRINT_FILE
from carrot.train.loop import NonFiniteLossError
from cli_run import QUICK, carrot_cli, file_tree, one_line_error, tiny_images

pytestmark = pytest.mark.slow


def test_a_nan_embedding_stops_the_run_at_its_step(tiny, tmp_path: Path) -> None:
    trainer = Trainer(load_config(None, [*tiny, "train.retrieval=false", "method=carrot"]))
    calls = {"n": 0}

    def poison(module: torch.nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3 and module.training:  # epoch 1, step 3
            output = output.clone()
            output[0] = float("nan")
        return output

    trainer.model.projection.register_forward_hook(poison)  # z, before the loss
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite loss at epoch 1, step 3 of the epoch"
    ):
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_resume_refuses_other_builtin_data_and_records_the_fingerprint(
    tiny, tmp_path: Path
) -> None:
    Trainer(load_config(None, [*tiny, "train.stop_after_steps=2"])).fit()
    run = tmp_path / "run"
    recorded = json.loads((run / FINGERPRINT_FILE).read_text())
    assert recorded["dataset"] == "synthetic" and len(recorded["train"]["labels_sha256"]) == 64
    recorded["train"]["labels_sha256"] = "0" * 64
    (run / FINGERPRINT_FILE).write_text(json.dumps(recorded))
    with pytest.raises(ConfigError, match=r"the dataset changed since .*train: the images changed"):
        Trainer.resume(run)
    (run / FINGERPRINT_FILE).unlink()  # a run from before fingerprints resumes, and records one
    Trainer.resume(run).fit()
    assert (run / FINGERPRINT_FILE).is_file()


def test_one_class_datasets_are_refused_for_batch_statistics(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "one" / split / "only").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "one" / split / "only" / f"{i}.png")
    cfg = load_config(
        None,
        [
            "data.name=imagefolder", f"data.root={tmp_path / 'one'}", "train.device=cpu",
            "train.batch_size=4", "train.k=2", f"output_dir={tmp_path / 'run'}",
        ],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="needs at least two classes in every batch"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()


def test_pretrained_weights_and_their_preprocessing_are_checked(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    from carrot.train.checkpoint import CheckpointError
    from carrot.train.config import ModelConfig
    from carrot.train.model import create_backbone

    state = timm.create_model("carrot_cnn", num_classes=0, widths=[4, 8]).state_dict()
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    cfg = ModelConfig(
        backbone="carrot_cnn",
        pretrained=True,
        pretrained_path=str(weights),
        timm_kwargs={"widths": [4, 8]},
    )
    create_backbone(cfg)  # loads
    for bad, message in (
        ({"std": [0.0, 0.2, 0.2]}, "std must be"),
        ({"mean": [float("nan")] * 3}, "mean must be"),
        ({"interpolation": "lanczos9"}, "interpolation must be"),
        ({"crop_pct": 3}, "crop_pct must be"),
    ):
        (tmp_path / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            create_backbone(cfg)
    (tmp_path / "config.json").unlink()
    first = next(iter(state))
    state[first] = state[first].clone().fill_(float("inf"))
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    with pytest.raises(CheckpointError, match="hold NaN or inf"):
        create_backbone(cfg)
    cfg = dataclasses.replace(cfg, pretrained=False)
    with pytest.raises(ValueError, match="model.pretrained_path is set .* but model.pretrained"):
        create_backbone(cfg)


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


def test_resume_refuses_a_changed_dataset(tmp_path: Path) -> None:
    data = tiny_images(tmp_path / "pets")
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
    data = tiny_images(tmp_path / "pets")
    before = file_tree(data)
    for inside in (data / "train" / "runs" / "x", data / "r"):
        done = carrot_cli("train", *QUICK, f"data.root={data}", f"output_dir={inside}")
        one_line_error(done, "is inside data.root")
    assert file_tree(data) == before
