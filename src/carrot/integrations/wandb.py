"""Weights & Biases tracking for ``carrot train``: ``train.loggers=[wandb]``.

W&B is an optional extra: ``pip install 'carrot-fgvc[wandb]'``. The project comes from
``WANDB_PROJECT`` (default ``carrot``), the entity from ``WANDB_ENTITY``; the run's files go to
``run_dir/wandb``. ``WANDB_MODE`` chooses online or offline; unset, the run is offline when the
W&B server cannot be reached (sync it later with ``wandb sync run_dir/wandb/offline-run-*``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from carrot.integrations.artifacts import artifact_files

__all__ = ["INIT_TIMEOUT_S", "WandbLogger", "wandb_mode"]

_PROJECT = __name__.partition(".")[0]  # the package's name, carrot

_EXTRA = "pip install 'carrot-fgvc[wandb]'"
_EXIT_CODES = {"finished": 0, "killed": 255, "failed": 1}


def _import_wandb() -> ModuleType:
    try:
        import wandb
    except ImportError as err:
        raise ImportError(
            f"train.loggers=[wandb] needs wandb, which is not installed; install it with: {_EXTRA}"
        ) from err
    return wandb


def wandb_mode(timeout: float = 2.0) -> str:
    """``WANDB_MODE`` if set; otherwise ``online`` when the W&B server (``WANDB_BASE_URL``,
    default api.wandb.ai) replies to a request within ``timeout`` seconds, else ``offline`` (a
    server that accepts connections and never replies is not reachable either)."""
    from carrot.integrations.probe import http_silence

    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    if urlparse(url).scheme not in ("http", "https"):
        return "offline"
    return "online" if http_silence(url, timeout) is None else "offline"


INIT_TIMEOUT_S = 60.0
"""How long ``wandb.init`` may wait for its server (unless ``WANDB_INIT_TIMEOUT`` is set): a run
never waits indefinitely on W&B."""


class WandbLogger:
    """One W&B run per carrot run: the resolved config (flattened), ``train_step/*`` metrics
    against ``trainer/step`` and ``epoch/*`` metrics against ``epoch``, and the run folder's
    config, summary, metrics and plots as an artifact. ``run_id``: a W&B run to continue."""

    def __init__(self, run_dir: Path, params: dict[str, Any], *, run_id: str | None = None) -> None:
        wandb = _import_wandb()
        mode = wandb_mode()
        if mode == "offline" and not os.environ.get("WANDB_MODE"):
            print(f"carrot train: W&B is not reachable; logging offline to {run_dir / 'wandb'}")
        self.wandb = wandb
        bound = {} if os.environ.get("WANDB_INIT_TIMEOUT") else {"init_timeout": INIT_TIMEOUT_S}
        try:
            self.run: Any = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or _PROJECT,
                dir=str(run_dir),
                id=run_id,
                resume="allow" if run_id else None,
                name=run_dir.name,
                config=params,
                mode=mode,
                settings=wandb.Settings(console="off", silent=True, **bound),
                reinit="create_new",
            )
        except wandb.errors.Error as e:  # CommError after init_timeout, UsageError...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise ValueError(
                f"W&B could not start a run ({first}); check WANDB_BASE_URL and WANDB_API_KEY, "
                "or set WANDB_MODE=offline (see docs/training.md, Trackers)."
            ) from e
        self.run_id: str = self.run.id
        self.run.define_metric("trainer/step")
        self.run.define_metric("train_step/*", step_metric="trainer/step")
        self.run.define_metric("epoch")
        self.run.define_metric("epoch/*", step_metric="epoch")

    def log_metrics(self, metrics: dict[str, float], *, step: int, kind: str) -> None:
        axis = "trainer/step" if kind == "train_step" else "epoch"
        self.run.log({axis: step, **{f"{kind}/{k}": v for k, v in metrics.items()}})

    def log_artifacts(self, run_dir: Path) -> None:
        """One artifact ``run-<id>`` of type ``carrot-run`` (a new version after a resume)."""
        files = artifact_files(run_dir)
        if not files:
            return
        artifact = self.wandb.Artifact(f"run-{self.run_id}", type="carrot-run")
        for f in files:
            artifact.add_file(str(f), name=str(f.relative_to(run_dir)))
        self.run.log_artifact(artifact)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=_EXIT_CODES[status])
