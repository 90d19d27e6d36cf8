"""The methods inside the trainer: each trains and differs from CE, a composed method trains,
a method's own parameters and state resume exactly, and carrot.guide never drops a setting."""

from __future__ import annotations

import json
from pathlib import Path

import method_workers
import pytest
import torch
from torch import Tensor

from carrot.train import Trainer, load_config

SRC = Path(__file__).resolve().parents[2] / "src"


def _weights(run: Path) -> dict[str, Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _differ(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mixup", "cutmix", "ce+carrot", "supcon+carrot"])
def test_method_trains_finite_and_differs_from_ce(tiny, tmp_path, method: str) -> None:
    base = [*tiny, "train.epochs=1", "train.retrieval=false"]
    Trainer(load_config(None, [*base, "method=ce", f"output_dir={tmp_path / 'ce'}"])).fit()
    Trainer(load_config(None, [*base, f"method={method}", f"output_dir={tmp_path / 'm'}"])).fit()
    records = [json.loads(x) for x in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in records)
    assert _differ(_weights(tmp_path / "ce"), _weights(tmp_path / "m"))
    parts = {"mixup": "train_soft_ce", "cutmix": "train_soft_ce"}.get(method, "train_kl")
    assert parts in records[-1]
    if "+" in method:
        assert records[-1]["train_kl"] > 0 and "gamma_mean" in records[-1]


@pytest.fixture
def centres():
    method_workers.register()
    yield method_workers.Centres
    method_workers.unregister()


@pytest.mark.slow
def test_method_parameters_and_state_resume_exactly(tiny, tmp_path, centres) -> None:
    extra = ["method=test_centres", "train.epochs=3", "train.retrieval=false"]
    one = Trainer(load_config(None, [*tiny, *extra, f"output_dir={tmp_path / 'one'}"]))
    lrs = {g["lr_mult"] for g in one.optimizer.param_groups}
    assert 10.0 in lrs and one.optimizer.param_groups[-1]["params"][0] is one.method.centres
    one.fit()
    Trainer(
        load_config(
            None, [*tiny, *extra, f"output_dir={tmp_path / 'two'}", "train.stop_after_steps=7"]
        )
    ).fit()
    resumed = Trainer.resume(tmp_path / "two")
    assert float(resumed.method.seen) == 7  # the state came back from the checkpoint
    resumed.fit()
    a = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["method"].keys() == {"centres", "seen", "mean_norm"}
    for k in a["method"]:
        assert torch.equal(a["method"][k], b["method"][k]), k
    assert a["method"]["centres"].abs().sum() > 0 and float(a["method"]["seen"]) == 15


@pytest.mark.slow
def test_mixup_resumes_exactly(tiny, tmp_path) -> None:
    extra = ["method=mixup", "train.epochs=3", "train.retrieval=false"]
    Trainer(load_config(None, [*tiny, *extra, f"output_dir={tmp_path / 'one'}"])).fit()
    Trainer(
        load_config(
            None, [*tiny, *extra, f"output_dir={tmp_path / 'two'}", "train.stop_after_steps=7"]
        )
    ).fit()
    Trainer.resume(tmp_path / "two").fit()
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert not _differ(a, b)


def _carrot(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``carrot train ARGS`` in-process (an argument error needs no fresh process)."""
    from carrot.cli import main

    code = main(["train", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_guide_with_an_explicit_recipe_key_exits_2_with_one_line(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _carrot(capsys, "method=carrot", "carrot.guide=true", "carrot.max_gamma=1.5")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "carrot.guide=true runs the guide's exact recipe" in lines[0]
    assert "(carrot.max_gamma)" in lines[0] and not (tmp_path / "runs").exists()
    # A file that sets the key is an explicit choice too.
    path = tmp_path / "c.yaml"
    path.write_text("carrot:\n  max_gamma: 1.5\n")
    code, _, err = _carrot(capsys, "--config", str(path), "carrot.guide=true")
    assert code == 2 and "(carrot.max_gamma)" in err
    # Unset keys take the guide's values, visibly; a key set to the guide's value is kept.
    code, out, err = _carrot(
        capsys, "--print-config", "carrot.guide=true", "carrot.lam=1", "carrot.sync_free=true"
    )
    assert code == 0, err
    import yaml

    saved = yaml.safe_load(out)["carrot"]
    assert saved["guide"] and saved["max_gamma"] is None and saved["sync_free"] is True
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_checkpoint_of_before_the_registry_resumes(tiny, tmp_path) -> None:
    """carrot 0.2 saved CARROT's class memory under ``memory`` and the label smoothing, mixup and
    cutmix keys under ``train``: such a checkpoint resumes, exactly."""
    extra = ["train.epochs=3", "carrot.memory=true", "train.retrieval=false"]
    Trainer(load_config(None, [*tiny, *extra, f"output_dir={tmp_path / 'one'}"])).fit()
    Trainer(
        load_config(
            None, [*tiny, *extra, f"output_dir={tmp_path / 'two'}", "train.stop_after_steps=7"]
        )
    ).fit()
    path = tmp_path / "two" / "checkpoints" / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    method = ckpt.pop("method")
    ckpt["memory"] = {k.removeprefix("memory."): v for k, v in method.items()}
    config = ckpt["config"]
    smoothing = config.pop("label_smoothing")["smoothing"]
    for section in ("mixup", "cutmix"):
        config.pop(section)
    config["train"].update(label_smoothing=smoothing, mixup=0.0, cutmix=0.0)
    config["carrot"].pop("label_smoothing")  # a key that did not exist then
    torch.save(ckpt, path)
    resumed = Trainer.resume(tmp_path / "two")
    assert resumed.memory is not None and bool(resumed.memory.seen[:9].all())
    resumed.fit()
    assert not _differ(_weights(tmp_path / "one"), _weights(tmp_path / "two"))


def test_the_bench_pairs_a_composed_method_with_its_base(tmp_path) -> None:
    from carrot.bench.grid import cell_job, cells
    from carrot.bench.suites import config_suite

    base = tmp_path / "base.yaml"
    base.write_text("data:\n  name: digits\n")
    suite = config_suite(base, [], methods=["mixup", "label_smoothing+carrot"], seeds=(0, 1))
    assert suite.grid[0][1] == ("ce", "mixup", "label_smoothing", "label_smoothing+carrot")
    assert suite.methods["label_smoothing+carrot"].baseline == "label_smoothing"
    assert suite.methods["mixup"].baseline == "ce"
    job = cell_job(suite, cells(suite)[-1], tmp_path / "out")
    assert "method=label_smoothing+carrot" in job.overrides
    assert job.load().method == "label_smoothing+carrot"
    with pytest.raises(ValueError, match=r"method 'mixup\+carrot' cannot be defined"):
        config_suite(base, [], methods=["mixup+carrot"])
    default = config_suite(base, [])
    assert default.grid[0][1] == ("ce", "carrot")


@pytest.mark.distributed
def test_a_methods_parameters_are_averaged_over_ranks(tiny, tmp_path) -> None:
    """Each rank sees other batches: without the trainer averaging the method's gradients (they
    live outside DDP), the centres would drift apart between ranks."""
    import torch.multiprocessing as mp

    from dist_workers import free_port

    overrides = [*tiny, "method=test_centres", "train.batch_size=8", "train.retrieval=false"]
    mp.start_processes(
        method_workers.ddp_worker,
        args=(2, free_port(), overrides, str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert a["centres"].abs().sum() > 0
    assert int(a["ddp_alive"]) == int(b["ddp_alive"]) == 0
    assert torch.equal(a["centres"], b["centres"])


def _image_folder(root: Path, classes: int = 4, per_class: int = 6) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", per_class), ("test", 2)):
        for c in range(classes):
            for i in range(n):
                pixels = (torch.rand(20, 20, 3, generator=g) * 64 + 48 * c).clamp(0, 255)
                path = root / split / f"class{c}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.to(torch.uint8).numpy()).save(path)
    return root


@pytest.mark.slow
def test_every_registered_method_trains_on_an_image_folder(tmp_path) -> None:
    """Each method of the registry (and a composition), on a user's own images: a finite loss and
    weights that differ from CE's after a few steps with the same seed (a method silently
    ignored would equal CE)."""
    from carrot.methods import method_names

    root = _image_folder(tmp_path / "images")
    base = [
        "data.name=imagefolder", f"data.root={root}", "data.image_size=16", "train.batch_size=8",
        "train.k=2", "train.epochs=1", "train.max_steps_per_epoch=3", "train.progress=false",
        "train.retrieval=false", "train.plots=false", "train.tensorboard=false",
        "train.device=cpu",
    ]  # fmt: skip
    runs = {}
    for method in [*method_names(), "label_smoothing+carrot"]:
        out = tmp_path / method
        summary = Trainer(load_config(None, [*base, f"method={method}", f"output_dir={out}"])).fit()
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        assert torch.isfinite(torch.tensor(record["train_loss"])), method
        assert summary["final"]["epoch"] == 1
        runs[method] = _weights(out)
    for method, weights in runs.items():
        if method != "ce":
            assert _differ(runs["ce"], weights), f"{method} trained exactly as CE"
