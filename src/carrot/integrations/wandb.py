"""Weights & Biases tracking for ``carrot train``: ``train.loggers=[wandb]``.

W&B is an optional extra: ``pip install 'carrot-fgvc[wandb]'``. The project comes from
``WANDB_PROJECT`` (default ``carrot``), the entity from ``WANDB_ENTITY``; the run's files go to
``run_dir/wandb``. ``WANDB_MODE`` chooses online or offline; unset, the run is offline when the
W&B server cannot be reached or no API key is set (``WANDB_API_KEY`` or ``wandb login``), or
when W&B refuses to start online (sync it later with ``wandb sync run_dir/wandb/offline-run-*``).
With ``WANDB_MODE=online`` set, a W&B that cannot start is one line before training.
"""

from __future__ import annotations

import netrc
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


def _has_key(host: str) -> bool:
    """Whether an API key is set for ``host`` without asking anyone: ``WANDB_API_KEY`` or the
    netrc entry ``wandb login`` writes. Without one, an online ``wandb.init`` fails (or, on a
    terminal, waits for a key to be typed)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(timeout: float = 2.0) -> str:
    """``WANDB_MODE`` if set; otherwise ``online`` when an API key is set and the W&B server
    (``WANDB_BASE_URL``, default api.wandb.ai) replies to a request within ``timeout`` seconds,
    else ``offline`` (a server that accepts connections and never replies is not reachable
    either)."""
    from carrot.integrations.probe import http_silence

    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode
    url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    if not _has_key(urlparse(url).hostname or "api.wandb.ai"):
        return "offline"
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
        chosen = not os.environ.get("WANDB_MODE")  # carrot picks the mode, so it may change it
        mode = wandb_mode()
        offline = f"logging offline to {run_dir / 'wandb'} (WANDB_MODE=online to insist)"
        if mode == "offline" and chosen:
            print(f"carrot train: W&B is not reachable or has no API key; {offline}")
        self.wandb = wandb
        bound = {} if os.environ.get("WANDB_INIT_TIMEOUT") else {"init_timeout": INIT_TIMEOUT_S}

        def init(mode: str) -> Any:
            return wandb.init(
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

        try:
            self.run: Any = init(mode)
        except Exception as e:  # W&B raises several types (UsageError, CommError after init_timeout...)
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            if not chosen or mode == "offline":
                raise ValueError(
                    f"train.loggers=[wandb]: W&B did not start in {mode} mode ({reason}); check "
                    "WANDB_BASE_URL and WANDB_API_KEY (or run wandb login), or set "
                    "WANDB_MODE=offline (see docs/training.md, Trackers)."
                ) from e
            print(f"carrot train: W&B did not start online ({reason}); {offline}")
            self.run = init("offline")
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
