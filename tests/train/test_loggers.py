"""train.loggers: CSV files, MLflow (read back with MlflowClient) and W&B offline (its run file
read back), each on its own and through a resumed training run."""

from __future__ import annotations

import csv
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from carrot.train import Trainer, load_config
from carrot.train.config import ConfigError, config_to_dict, flatten
from carrot.train.loggers import CsvLogger, Trackers, open_trackers


def _wandb_records(run_dir: Path) -> list[Any]:
    """The protobuf records of every offline W&B run file under ``run_dir`` (LevelDB log
    format: a 7-byte header, then 32 KiB blocks of crc32, length, type and data)."""
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb

    wandb.teardown()  # W&B's service process writes the files: wait until it has flushed them

    records = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B"
        pos, block, pending = 7, 32768, b""
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if length == 0 and kind == 0:
                pos += left
                continue
            pending += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a full record, or the last piece of one
                record = pb.Record()
                record.ParseFromString(pending)
                records.append(record)
                pending = b""
    return records


def _wandb_artifacts(records: list[Any]) -> list[tuple[str, str, list[str]]]:
    """(name, type, file paths) of each artifact logged."""
    return [
        (r.artifact.name, r.artifact.type, sorted(c.path for c in r.artifact.manifest.contents))
        for r in records
        if r.WhichOneof("record_type") == "artifact"
    ]


def _wandb_history(records: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {
                "/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item
            }
            rows.append({k: v for k, v in row.items() if not k.startswith("_")})
    return rows


def test_csv_logger_writes_epochs_and_steps_and_drops_steps_after_a_resume(tmp_path) -> None:
    log = CsvLogger(tmp_path, [], 0)
    for step in (1, 2, 3):
        log.log_metrics({"loss": 1.0 / step, "lr": 0.1}, step=step, kind="train_step")
    log.log_metrics({"train_loss": 0.5}, step=1, kind="epoch")
    log.log_metrics({"train_loss": 0.25, "top1": 50.0}, step=2, kind="epoch")
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows == [
        {"epoch": "1", "train_loss": "0.5", "top1": ""},
        {"epoch": "2", "train_loss": "0.25", "top1": "50.0"},
    ]
    steps = list(csv.DictReader((tmp_path / "metrics_steps.csv").open()))
    assert len(steps) == 6 and float(steps[4]["value"]) == pytest.approx(1 / 3)
    # resumed from a checkpoint at step 2, after epoch 1: step 3 and epoch 2 are redone
    log = CsvLogger(tmp_path, [{"epoch": 1, "train_loss": 0.5, "is_best": True}], 2)
    steps = list(csv.DictReader((tmp_path / "metrics_steps.csv").open()))
    assert [int(s["step"]) for s in steps] == [1, 1, 2, 2]
    assert list(csv.DictReader((tmp_path / "metrics.csv").open())) == [
        {"epoch": "1", "train_loss": "0.5"}
    ]


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_missing_tracker_names_its_extra(tmp_path, monkeypatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    cfg = load_config(None, [f"train.loggers=[{name}]", "train.tensorboard=false"])
    with pytest.raises(ImportError, match=rf"pip install 'carrot-fgvc\[{name}\]'"):
        open_trackers(cfg, tmp_path, resumed=False)


def test_loggers_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="train.loggers"):
        load_config(None, ["train.loggers=[neptune]"])
    assert load_config(None, []).train.loggers == ["tensorboard"]


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # unset, as a user with MLflow 3 and a file:// URI has it: carrot allows the folder store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # restored (removed) after the test
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "carrot-test")
    return uri


def test_mlflow_logger_logs_params_metrics_artifacts_and_continues_a_run(
    tmp_path, mlflow_store
) -> None:
    from mlflow.tracking import MlflowClient

    from carrot.integrations.mlflow import MlflowLogger

    run_dir = tmp_path / "run"
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 0\n")
    (run_dir / "plots" / "curves.png").write_bytes(b"png")
    params = {"train.lr": 0.05, "method": "carrot", "data.mean": [0.5, 0.5], "x": "y" * 900}
    log = MlflowLogger(run_dir, params)
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"  # carrot allowed the file:// store
    log.log_metrics({"loss": 2.0}, step=1, kind="train_step")
    log.log_metrics({"loss": 1.5}, step=2, kind="train_step")
    log.log_metrics({"top1": 40.0}, step=1, kind="epoch")
    log.close("killed")
    client = MlflowClient(mlflow_store)
    run = client.get_run(log.run_id)
    assert run.info.status == "KILLED"
    assert run.data.params["train.lr"] == "0.05" and run.data.params["data.mean"] == "[0.5, 0.5]"
    assert len(run.data.params["x"]) == 500  # MLflow's value limit
    assert client.get_experiment(run.info.experiment_id).name == "carrot-test"
    again = MlflowLogger(run_dir, {**params, "train.epochs": 3}, run_id=log.run_id)
    assert client.get_run(log.run_id).info.status == "RUNNING"
    again.log_metrics({"top1": 55.0}, step=2, kind="epoch")
    again.log_artifacts(run_dir)
    again.close("finished")
    run = client.get_run(log.run_id)
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "3"
    history = client.get_metric_history(log.run_id, "train_step/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.5)]
    epochs = client.get_metric_history(log.run_id, "epoch/top1")
    assert sorted((m.step, m.value) for m in epochs) == [(1, 40.0), (2, 55.0)]
    names = {a.path for a in client.list_artifacts(log.run_id)}
    assert names == {"config.yaml", "plots"}
    assert [a.path for a in client.list_artifacts(log.run_id, "plots")] == ["plots/curves.png"]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_wandb_logger_writes_an_offline_run_that_reads_back(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    from carrot.integrations.wandb import WandbLogger, wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: offline
    assert wandb_mode(timeout=0.5) == "offline"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging
    run_dir = tmp_path / "run"
    (run_dir / "plots").mkdir(parents=True)
    (run_dir / "summary.json").write_text("{}")
    (run_dir / "plots" / "curves.png").write_bytes(b"png")
    log = WandbLogger(run_dir, {"train.lr": 0.05, "method": "carrot"})
    log.log_metrics({"loss": 2.0}, step=1, kind="train_step")
    log.log_metrics({"top1": 40.0}, step=1, kind="epoch")
    log.close("finished")
    again = WandbLogger(run_dir, {"train.lr": 0.05, "method": "carrot"}, run_id=log.run_id)
    assert again.run_id == log.run_id
    again.log_metrics({"top1": 55.0}, step=2, kind="epoch")
    again.log_artifacts(run_dir)
    again.close("finished")
    records = _wandb_records(run_dir)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert {r.run_id for r in runs} == {log.run_id} and len(runs) == 2
    config = {u.key: json.loads(u.value_json) for u in runs[0].config.update}
    assert config["train.lr"] == 0.05 and config["method"] == "carrot"
    assert _wandb_history(records) == [
        {"trainer/step": 1, "train_step/loss": 2.0},
        {"epoch": 1, "epoch/top1": 40.0},
        {"epoch": 2, "epoch/top1": 55.0},
    ]
    name = f"run-{log.run_id}"
    assert _wandb_artifacts(records) == [(name, "carrot-run", ["plots/curves.png", "summary.json"])]


@pytest.mark.slow
def test_a_resumed_training_run_continues_its_tracker_runs(
    tiny, tmp_path, mlflow_store, monkeypatch
) -> None:
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    overrides = [*tiny, "train.loggers=[csv, mlflow, wandb]", "train.log_every=2"]
    cfg = load_config(None, [*overrides, "train.stop_after_steps=7"])
    Trainer(cfg).fit()  # stops in epoch 2
    run_dir = tmp_path / "run"
    run_id = json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(mlflow_store)
    assert [m.step for m in client.get_metric_history(run_id, "epoch/top1")] == [1]
    Trainer.resume(run_dir, ["train.stop_after_steps=null"]).fit()
    ids = json.loads((run_dir / "trackers.json").read_text())
    assert ids["mlflow"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = flatten(config_to_dict(cfg))
    assert run.data.params["train.loggers"] == "['csv', 'mlflow', 'wandb']"
    assert run.data.params["method"] == str(params["method"])
    records_jsonl = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    top1 = client.get_metric_history(run_id, "epoch/top1")
    assert sorted((m.step, m.value) for m in top1) == [
        (r["epoch"], r["top1"]) for r in records_jsonl
    ]
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train_step/loss"))
    assert steps[-1] == 10 and 2 in steps
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [float(r["top1"]) for r in rows] == [r["top1"] for r in records_jsonl]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "summary.json", "metrics.jsonl", "plots"} <= artifacts
    # W&B: two offline run folders (start, resume) of one run id, with every epoch's top-1
    records = _wandb_records(run_dir)
    assert {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"} == {ids["wandb"]}
    epochs = [h for h in _wandb_history(records) if "epoch/top1" in h]
    assert [(h["epoch"], h["epoch/top1"]) for h in epochs] == [
        (r["epoch"], pytest.approx(r["top1"])) for r in records_jsonl
    ]
    # both segments end with the run's files (a stopped run writes its summary and plots too)
    artifacts = _wandb_artifacts(records)
    assert len(artifacts) == 2 and {a[0] for a in artifacts} == {f"run-{ids['wandb']}"}
    assert {"config.yaml", "summary.json", "metrics.jsonl", "plots/curves.png"} <= set(
        artifacts[1][2]
    )


def test_trackers_close_marks_a_failed_run(tmp_path) -> None:
    seen: list[str] = []

    class Probe:
        def log_metrics(self, metrics: dict[str, float], *, step: int, kind: str) -> None:
            seen.append(f"{kind}:{step}:{sorted(metrics)}")

        def log_artifacts(self, run_dir: Path) -> None:
            pass

        def close(self, status: str) -> None:
            seen.append(status)

    trackers = Trackers({"probe": Probe()})
    trackers.log_epoch({"epoch": 3, "top1": 1.0, "is_best": True, "loss": float("nan")})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        trackers.close()
    assert seen == ["epoch:3:['top1']", "failed"]


def test_a_missing_tracker_is_one_line_from_the_cli(tmp_path, monkeypatch, capsys) -> None:
    from carrot.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    args = ["data.name=synthetic", f"output_dir={tmp_path / 'run'}", "train.loggers=[csv, wandb]"]
    assert main(["train", *args, "train.device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'carrot-fgvc[wandb]'" in err
    assert not (tmp_path / "run").exists()  # the failed start left no folder


@pytest.mark.distributed
def test_only_rank_0_logs_under_torchrun(tiny, tmp_path, mlflow_store, monkeypatch) -> None:
    pytest.importorskip("wandb")
    import subprocess

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "carrot.cli", "train", *tiny, "train.batch_size=8", "train.retrieval=false",
           "train.loggers=[mlflow, wandb]"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("MLflow folder store") == 1  # rank 0 alone opened it
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # to read it back here
    client = MlflowClient(mlflow_store)
    (exp,) = [e for e in client.search_experiments() if e.name == "carrot-test"]
    (run,) = client.search_runs([exp.experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/top1")] == [1, 2]
    assert run.data.params["train.batch_size"] == "8"
    run_dir = tmp_path / "run"
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
    epochs = [h for h in _wandb_history(_wandb_records(run_dir)) if "epoch/top1" in h]
    assert [h["epoch"] for h in epochs] == [1, 2]
