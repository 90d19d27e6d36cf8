"""The methods inside the trainer: each trains and differs from CE, a composed method trains,
a method's own parameters and state resume exactly, and carrot.guide never drops a setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carrot.methods import LossResult, Method, MethodContext, Step, register_method
from carrot.methods.base import _REGISTRY
from carrot.settings import Range, check_ranges, ranged
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


@dataclass
class _CentresSettings:
    weight: float = ranged(0.1, Range(0))
    lr_mult: float = ranged(10.0, Range(0, open_lo=True))

    def validate(self, *, prefix: str = "") -> None:
        check_ranges(self, prefix=prefix)


class _Centres(Method):
    """A test method with learnable parameters (own lr) and state (a running mean, a count)."""

    name = "test_centres"
    description = "CE + weight · ‖ẑ − c_y‖² (test)"
    reference = "a test, 2026"
    settings_type = _CentresSettings

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.centres = nn.Parameter(torch.zeros(context.num_classes, context.embedding_dim))
        self.register_buffer("seen", torch.zeros(()))
        self.register_buffer("mean_norm", torch.zeros(()))

    def param_groups(self) -> list[dict]:
        return [{"params": [self.centres], "weight_decay": 0.0, "lr_mult": self.settings().lr_mult}]

    def loss(self, z: Tensor, logits: Tensor, target: Tensor, head: nn.Module, *, step: Step):
        z_hat = F.normalize(z.float(), dim=1)
        pull = ((z_hat - self.centres[target]) ** 2).sum(1).mean()
        with torch.no_grad():
            self.seen += 1
            self.mean_norm.mul_(0.9).add_(0.1 * z.float().norm(dim=1).mean())
        ce = F.cross_entropy(logits.float(), target)
        return LossResult(ce + self.settings().weight * pull, {"ce": ce.detach()}, {})


@pytest.fixture
def centres():
    register_method(_Centres)
    yield _Centres
    _REGISTRY.pop(_Centres.name)


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


def _carrot(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "carrot.cli", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_guide_with_an_explicit_recipe_key_exits_2_with_one_line(tmp_path) -> None:
    proc = _carrot("method=carrot", "carrot.guide=true", "carrot.max_gamma=1.5")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "carrot.guide=true runs the guide's exact recipe" in lines[0]
    assert "(carrot.max_gamma)" in lines[0] and not (tmp_path / "runs").exists()
    # A file that sets the key is an explicit choice too.
    path = tmp_path / "c.yaml"
    path.write_text("carrot:\n  max_gamma: 1.5\n")
    proc = _carrot("--config", str(path), "carrot.guide=true")
    assert proc.returncode == 2 and "(carrot.max_gamma)" in proc.stderr
    # Unset keys take the guide's values, visibly; a key set to the guide's value is kept.
    proc = _carrot("--print-config", "carrot.guide=true", "carrot.lam=1", "carrot.sync_free=true")
    assert proc.returncode == 0, proc.stderr
    import yaml

    saved = yaml.safe_load(proc.stdout)["carrot"]
    assert saved["guide"] and saved["max_gamma"] is None and saved["sync_free"] is True
