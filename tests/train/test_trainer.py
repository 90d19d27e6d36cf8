"""End-to-end runs of the trainer on tiny data: every method, outputs, resume, failures, CLI."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from carrot.cli import main
from carrot.train import Trainer, format_summary, load_config
from carrot.train.config import ConfigError
from carrot.train.loop import CollapseDetected, NonFiniteLossError, TrainInterrupted

pytestmark = pytest.mark.slow


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("method", ["ce", "label_smoothing", "carrot", "supcon", "supcon_carrot"])
def test_every_method_runs_on_a_tiny_timm_model(tiny, tmp_path, method: str) -> None:
    cfg = load_config(
        None, [*tiny, f"method={method}", "model.backbone=test_resnet", "model.embedding_dim=16"]
    )
    summary = Trainer(cfg).fit()
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert 0.0 <= r["top1"] <= 100.0 and 0.0 <= r["mean_class_acc"] <= 100.0
        assert r["gamma_mean"] >= 1.0 and 0.0 <= r["gamma_frac_gt1"] <= 1.0
        assert {"r_over_m_q10", "r_over_m_q50", "r_over_m_q90", "lr", "train_loss"} <= r.keys()
        assert all(isinstance(v, (int, float, bool)) for v in r.values())
    expected_parts = {
        "ce": {"train_ce"},
        "label_smoothing": {"train_ce"},
        "carrot": {"train_ce", "train_kl"},
        "supcon": {"train_supcon", "train_probe_ce"},
        "supcon_carrot": {"train_supcon", "train_probe_ce"},
    }[method]
    assert expected_parts <= records[-1].keys()
    assert summary["final"]["epoch"] == 2 and summary["best"]["epoch"] in (1, 2)


def test_outputs_of_a_run(tiny, tmp_path) -> None:
    cfg = load_config(None, [*tiny, "train.ema_decay=0.5"])
    summary = Trainer(cfg).fit()
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "environment.json",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "plots/curves.png",
        "plots/geometry.png",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["ema_decay"] == 0.5 and saved["data"]["name"] == "synthetic"
    env = json.loads((run / "environment.json").read_text())
    assert env["world_size"] == 1 and env["torch"] == torch.__version__
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"top1_ema", "precision_at_1", "map_at_r"} <= last.keys()
    table = format_summary(summary)
    assert "final (epoch 2)" in table and "best on test (epoch" in table
    assert "mean γ" in table and "r/m quantiles" in table


def test_resume_mid_epoch_equals_one_go(tiny, tmp_path) -> None:
    extra = [
        "train.epochs=4",
        "model.drop_rate=0.1",
        "train.ema_decay=0.9",
        "train.retrieval=false",
    ]
    one = load_config(None, [*tiny, *extra, f"output_dir={tmp_path / 'one'}"])
    Trainer(one).fit()
    two = load_config(
        None, [*tiny, *extra, f"output_dir={tmp_path / 'two'}", "train.stop_after_steps=7"]
    )
    first = Trainer(two).fit()
    assert first["stopped_early"] and first["epochs"] == 1  # stopped in epoch 2, step 2
    assert not Trainer.resume(tmp_path / "two").fit()[
        "stopped_early"
    ]  # the stop does not carry over
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "two")) <= 1e-6
    a = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["gamma_frac_gt1"] for r in a) > 0 and max(r["train_kl"] for r in a) > 0, (
        "CARROT must act"
    )
    assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], abs=1e-6)


def test_resume_mid_epoch_restores_the_class_memory(tiny, tmp_path) -> None:
    """With the memory, γ stays 1 here (section 3 of docs/stability.md); a memory lost on resume
    would fall back to in-batch margins, which do expand in this setting, and change the weights."""
    extra = ["train.epochs=4", "carrot.memory=true", "train.retrieval=false"]
    Trainer(load_config(None, [*tiny, *extra, f"output_dir={tmp_path / 'one'}"])).fit()
    Trainer(
        load_config(
            None, [*tiny, *extra, f"output_dir={tmp_path / 'two'}", "train.stop_after_steps=7"]
        )
    ).fit()
    resumed = Trainer.resume(tmp_path / "two")
    assert bool(resumed.memory.seen[:9].all())
    resumed.fit()
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "two")) <= 1e-6


def test_raising_epochs_on_resume_extends_the_run(tiny, tmp_path) -> None:
    base = [*tiny, "train.schedule=constant", "train.retrieval=false"]
    Trainer(load_config(None, [*base, "train.epochs=4", f"output_dir={tmp_path / 'one'}"])).fit()
    Trainer(load_config(None, [*base, "train.epochs=2", f"output_dir={tmp_path / 'two'}"])).fit()
    summary = Trainer.resume(tmp_path / "two", ["train.epochs=4"]).fit()
    assert summary["epochs"] == 4
    assert _max_diff(_weights(tmp_path / "one"), _weights(tmp_path / "two")) <= 1e-6


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny, tmp_path, monkeypatch
) -> None:
    calls = {"n": 0}
    trainer = Trainer(load_config(None, [*tiny, "train.retrieval=false"]))
    real = trainer.loss_fn  # the method's loss hook

    def poisoned(*args, **kwargs):
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 7:  # epoch 2, step 2
            result.loss = result.loss * float("nan")
        return result

    monkeypatch.setattr(trainer, "loss_fn", poisoned)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    with pytest.raises(
        NonFiniteLossError,
        match=r"non-finite loss at epoch 2, step 2 of the epoch \(global step 7\): loss=nan \(ce=.*, kl=.*\)",
    ):
        trainer.fit()
    saved = torch.load(last, weights_only=True)
    assert saved["state"]["epoch"] == 1 and saved["state"]["step"] == 5
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_non_finite_gradient_with_finite_loss_stops(tiny, tmp_path) -> None:
    trainer = Trainer(load_config(None, [*tiny, "train.retrieval=false"]))
    calls = {"n": 0}

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 3 else grad

    trainer.model.head.weight.register_hook(poison)
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite gradient norm at epoch 1, step 3 of the epoch"
    ):
        trainer.fit()


def test_resume_with_another_world_size_is_refused(tiny, tmp_path, monkeypatch) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(
        ConfigError, match="was trained with 1 processes; resume it with the same number"
    ):
        Trainer.resume(tmp_path / "run")


def test_interrupt_saves_and_resumes(tiny, tmp_path, monkeypatch) -> None:
    trainer = Trainer(load_config(None, [*tiny, "train.retrieval=false"]))
    real = trainer.loss_fn  # the method's loss hook
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            trainer._stop.request(signal.SIGTERM)  # what the signal handler does
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "loss_fn", interrupting)
    with pytest.raises(TrainInterrupted, match="carrot train --resume"):
        trainer.fit()
    assert (
        torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["state"][
            "step"
        ]
        == 2
    )
    assert Trainer.resume(tmp_path / "run").fit()["epochs"] == 2


def test_existing_run_is_never_overwritten(tiny, tmp_path, capsys) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    second = Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"]))
    assert second.run_dir == tmp_path / "run-2"
    assert "already holds a run (continue it with `carrot train --resume" in capsys.readouterr().out
    second.fit()
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before
    assert (tmp_path / "run-2" / "checkpoints" / "last.pt").is_file()


def test_resume_refuses_changes_that_alter_the_run(tiny, tmp_path) -> None:
    Trainer(load_config(None, [*tiny, "train.epochs=1", "train.retrieval=false"])).fit()
    with pytest.raises(ConfigError, match=r"cannot change train.lr when resuming"):
        Trainer.resume(tmp_path / "run", ["train.lr=0.5"])
    with pytest.raises(FileNotFoundError, match="is not a carrot run folder"):
        Trainer.resume(tmp_path / "nowhere")


def test_bf16_autocast_and_accumulation(tiny, tmp_path) -> None:
    cfg = load_config(
        None,
        [
            *tiny,
            "train.amp=bf16",
            "train.accum_steps=2",
            "train.max_steps_per_epoch=4",
            "train.epochs=3",
            "train.grad_clip=10",
            "train.channels_last=true",
            "train.retrieval=false",
        ],
    )
    trainer = Trainer(cfg)
    summary = trainer.fit()
    assert trainer.state.step == 12 and summary["epochs"] == 3
    history = trainer.state.history
    assert max(r["gamma_frac_gt1"] for r in history) > 0 and max(r["train_kl"] for r in history) > 0
    assert all(v == v for r in history for v in r.values() if isinstance(v, float))  # no NaN


def test_cli_train_eval_and_errors(tiny, tmp_path, capsys) -> None:
    assert main(["train", *tiny, "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "final (epoch 1)" in out and "CARROT statistics" in out
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "run" / "checkpoints" / "best.pt"),
                "--json",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    assert "top1" in capsys.readouterr().out
    assert "top1" in json.loads((tmp_path / "eval.json").read_text())["model"]
    assert main(["train", *tiny, "train.lrr=1"]) == 2
    assert "unknown config key 'lrr' in train" in capsys.readouterr().err
    assert main(["train", "--print-config", "method=ce"]) == 0
    assert "method: ce" in capsys.readouterr().out


@pytest.mark.distributed
def test_torchrun_two_processes(tiny, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "carrot.cli",
        "train",
        *tiny,
        "train.batch_size=8",
        "train.epochs=3",
        "train.lr=0.02",
        "train.retrieval=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert max(r["gamma_frac_gt1"] for r in records) > 0 and max(r["train_kl"] for r in records) > 0
    assert proc.stdout.count("final (epoch 3)") == 1  # the table comes from rank 0 only


def test_collapse_monitor_warns_and_can_stop(tiny, tmp_path, capsys) -> None:
    # Thresholds at their floor: any expansion counts as runaway (the setting expands by epoch 2).
    watch = ["train.collapse_gamma_mean=1", "train.retrieval=false"]
    trainer = Trainer(load_config(None, [*tiny, *watch]))
    trainer.fit()
    assert "collapse warning at epoch" in capsys.readouterr().out
    assert sum(r["collapse_warnings"] for r in trainer.state.history) > 0
    stopper = Trainer(
        load_config(
            None, [*tiny, *watch, "train.stop_on_collapse=true", f"output_dir={tmp_path / 'stop'}"]
        )
    )
    with pytest.raises(
        CollapseDetected, match=r"mean γ .* > 1.*Stopped \(train.stop_on_collapse\)"
    ):
        stopper.fit()
    assert (tmp_path / "stop" / "checkpoints" / "last.pt").is_file()


def test_collapse_monitor_watches_carrot_methods_only(tiny, tmp_path, capsys) -> None:
    floor = ["train.collapse_gamma_mean=1", "train.retrieval=false"]
    trainer = Trainer(load_config(None, [*tiny, *floor, "method=ce"]))
    trainer.fit()
    assert max(r["gamma_frac_gt1"] for r in trainer.state.history) > 0  # CE's batches expand too
    assert "collapse warning" not in capsys.readouterr().out
    assert all(r["collapse_warnings"] == 0 for r in trainer.state.history)


def test_collapse_stop_exits_with_code_3(tiny, tmp_path, capsys) -> None:
    args = [
        "train",
        *tiny,
        "train.collapse_gamma_mean=1",
        "train.stop_on_collapse=true",
        "train.retrieval=false",
    ]
    assert main(args) == 3
    assert "Stopped (train.stop_on_collapse)" in capsys.readouterr().err


def test_lam_warmup_rises_over_training(tiny, tmp_path, monkeypatch) -> None:
    import carrot.methods.carrot as method

    seen: list[float] = []
    real = method.carrot_ce_kl_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["lam"])
        return real(*args, **kwargs)

    monkeypatch.setattr(method, "carrot_ce_kl_loss", spy)
    Trainer(
        load_config(None, [*tiny, "carrot.lam=2", "carrot.lam_warmup=0.5", "train.retrieval=false"])
    ).fit()
    assert seen[0] == 0.0 and seen[-1] == 2.0
    assert all(a <= b for a, b in itertools.pairwise(seen)) and 0 < seen[2] < 2


def test_guide_flag_class_memory_and_warmup_run(tiny, tmp_path) -> None:
    from carrot.methods.carrot import guide_recipe, lam_at

    cfg = load_config(None, [*tiny, "carrot.guide=true"])
    guide = guide_recipe()
    assert all(getattr(cfg.carrot, k) == v for k, v in guide.items())
    assert cfg.carrot.max_gamma is None and cfg.carrot.guide
    fast = load_config(None, ["carrot.guide=true", "carrot.sync_free=true"]).carrot
    assert fast.sync_free and fast.lam == guide["lam"]
    assert lam_at(load_config(None, ["carrot.lam=2", "carrot.lam_warmup=0.5"]).carrot, 0.25) == 1.0
    trainer = Trainer(
        load_config(
            None, [*tiny, "carrot.memory=true", "carrot.lam_warmup=0.5", "train.retrieval=false"]
        )
    )
    trainer.fit()
    assert trainer.memory is not None and bool(trainer.memory.seen[:9].all())
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(saved["method"]["memory.centers"], trainer.memory.centers.cpu())
