"""The training loop behind ``carrot train``: AMP, gradient accumulation, DDP, EMA, compile,
checkpoints that resume exactly and cannot run code, metrics, plots and a final result table."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from carrot.methods import MethodContext, build_method
from carrot.train.checkpoint import (
    TrainState,
    atomic_save,
    check_classes,
    method_state,
    restore_rng_state,
    training_checkpoint,
)
from carrot.train.config import Config, config_to_dict
from carrot.train.data import DataBundle, build_data, load_splits
from carrot.train.errors import CollapseDetected, NonFiniteLossError, TrainInterrupted
from carrot.train.evaluate import evaluate_splits, selection_score
from carrot.train.guards import (
    check_fingerprint,
    check_outside_data,
    check_two_classes,
    data_fingerprint,
)
from carrot.train.holdout import checkpoint_entry, record_val_split
from carrot.train.loggers import check_trackers
from carrot.train.monitor import EpochMeter
from carrot.train.optim import build_ema, build_optimizer
from carrot.train.plots import plot_history
from carrot.train.report import epoch_line, epoch_record, format_summary, run_header, run_summary
from carrot.train.runtime import (
    Runtime,
    atomic_write_text,
    broadcast_buffers,
    dump_json,
    seed_everything,
)
from carrot.train.startup import (
    RESUMABLE_KEYS,
    autocast,
    build_run_model,
    check_images_once,
    claim_run_dir,
    open_run_folder,
    release_run_dir,
    resume_config,
    steps_per_epoch,
)
from carrot.train.steps import _StopAfterSteps, _TrainingSteps

__all__ = [
    "RESUMABLE_KEYS",
    "CollapseDetected",
    "NonFiniteLossError",
    "TrainInterrupted",
    "Trainer",
    "format_summary",
]


class Trainer(_TrainingSteps):
    """One experiment: ``Trainer(cfg).fit()`` or ``Trainer.resume(run_dir, overrides).fit()``."""

    def __init__(
        self,
        cfg: Config,
        *,
        run_dir: Path | None = None,
        checkpoint: dict[str, Any] | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_epoch_end = on_epoch_end
        """Called with each epoch's record once its checkpoint is saved (``carrot tune``'s
        pruner); an exception it raises ends the run there, checkpoint kept."""
        self.rt = Runtime.setup(cfg.train.device)
        self.run_dir = run_dir if run_dir is not None else cfg.run_dir()
        self._claimed: Path | None = None
        try:
            self._setup(checkpoint)
        except BaseException:
            if self._claimed is not None and self.rt.is_main:
                release_run_dir(self._claimed)  # a start that failed leaves the name free
            self._teardown()
            raise

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: Path, overrides: list[str] | None = None) -> Trainer:
        """Continue a run from ``run_dir/checkpoints/last.pt``; only :data:`RESUMABLE_KEYS` may change."""
        cfg, checkpoint = resume_config(Path(run_dir), overrides)
        return cls(cfg, run_dir=Path(run_dir), checkpoint=checkpoint)

    def _setup(self, checkpoint: dict[str, Any] | None) -> None:
        cfg, rt = self.cfg, self.rt
        cuda = rt.device.type == "cuda"
        check_outside_data(self.run_dir, cfg)  # before anything is created there
        if rt.is_main:  # a tracker that does not answer fails here, before the folder is claimed
            check_trackers(cfg)
        if checkpoint is None:
            self.run_dir = self._claimed = claim_run_dir(self.run_dir, rt)
        deterministic = cfg.train.deterministic
        seed_everything(
            cfg.seed,
            deterministic=not cuda if deterministic is None else deterministic,
            device=rt.device,
        )
        splits = load_splits(cfg)
        check_two_classes(cfg, splits.num_classes)
        if checkpoint is not None:
            check_classes(
                checkpoint.get("classes"),
                splits.train.classes,
                self.run_dir / "checkpoints" / "last.pt",
                f"{cfg.data.name} at {cfg.data.root or 'its default location'}",
            )
        if rt.is_main or checkpoint is not None:  # every rank refuses changed data alike
            check_fingerprint(self.run_dir, data_fingerprint(splits, cfg), write=rt.is_main)
        self.val_split = record_val_split(cfg, splits, self.run_dir, checkpoint, write=rt.is_main)
        self.model, self.channels_last = build_run_model(cfg, splits, rt.device, checkpoint)
        if rt.is_main:
            state = checkpoint["state"] if checkpoint is not None else None
            at = (state["epoch"], state["batch"]) if state is not None else None
            print(
                run_header(
                    cfg,
                    self.run_dir,
                    world_size=rt.world_size,
                    device=rt.device,
                    resumed_at=at,
                    launcher=rt.launcher,
                ),
                flush=True,
            )
        check_images_once(splits, cfg, rt)
        self.data: DataBundle = build_data(
            cfg, splits, rank=rt.rank, world_size=rt.world_size, pin_memory=cuda
        )
        torch.manual_seed(cfg.seed + 1_000_003 * rt.rank)  # per-rank randomness after a common init
        dim = int(self.model.head.weight.shape[1])  # type: ignore[index]
        context = MethodContext(splits.num_classes, dim, settings=cfg.sections)
        self.method = build_method(cfg.method, context).to(rt.device)
        method_groups = self.method.param_groups()
        self.has_method_params = bool(method_groups)
        self.optimizer = build_optimizer(self.model, cfg, extra=method_groups)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=cfg.train.amp == "fp16")
        self.ema = build_ema(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.collapse_warnings: list[dict[str, Any]] = []
        self.steps_per_epoch = steps_per_epoch(cfg, self.data.sampler)
        self.state = TrainState()
        self.meter = EpochMeter()
        self._micro: list[tuple[Tensor, dict[str, Tensor], dict[str, Any]]] = []
        if checkpoint is not None:
            self._load(checkpoint)
        self.ddp: nn.Module = self.model
        if rt.distributed:
            self.ddp = DistributedDataParallel(self.model, device_ids=[rt.device] if cuda else None)
        self.forward: Any = self.ddp
        self.loss_fn: Any = self.method.loss
        if cfg.train.compile:
            mode = None if cfg.train.compile is True else cfg.train.compile
            self.forward = torch.compile(self.ddp, mode=mode)
            self.loss_fn = torch.compile(self.method.loss, mode=mode)
        resumed = self.state if checkpoint is not None else None  # its trackers continue
        self.trackers = open_run_folder(cfg, self.run_dir, rt, resumed) if rt.is_main else None
        if rt.is_main:
            self._rewrite_metrics()

    def _teardown(self) -> None:
        if hasattr(self, "ddp"):  # its reducer holds the group: drop it first (Runtime.teardown)
            self.ddp = self.forward = self.model
        self.rt.teardown()

    @property
    def memory(self) -> nn.Module | None:
        """The method's class memory, if it keeps one (``carrot.memory``)."""
        memory = getattr(self.method, "memory", None)
        return memory if isinstance(memory, nn.Module) else None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.cfg.train.amp, self.rt.device)

    def _checkpoint(self) -> dict[str, Any]:
        return {
            **training_checkpoint(self.state, self.rt.world_size, self.rt.distributed),
            "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "method": self.method.state_dict(),
            "collapse_warnings": self.collapse_warnings,
            "meter": self.meter.state(),
            "classes": self.data.classes,
            "num_classes": self.data.num_classes,
            "in_chans": self.data.in_chans,
            "val_split": checkpoint_entry(self.val_split),
            "best_selected_on": "test" if self.val_split is None else "val",
        }

    def save(self, name: str = "last.pt") -> Path:
        ckpt = self._checkpoint()  # a collective under DDP: every rank builds it
        path = self.run_dir / "checkpoints" / name
        if self.rt.is_main:
            atomic_save(ckpt, path)
        return path

    def _load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.method.load_state_dict(method_state(ckpt))
        self.collapse_warnings = list(ckpt.get("collapse_warnings", []))
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.state = TrainState(**ckpt["state"], history=list(ckpt["history"]))
        self.meter.load(ckpt["meter"])
        rngs = ckpt["rng"]
        restore_rng_state(rngs[self.rt.rank] if self.rt.rank < len(rngs) else rngs[0])

    def _rewrite_metrics(self) -> None:
        lines = "".join(json.dumps(rec) + "\n" for rec in self.state.history)
        atomic_write_text(self.run_dir / "metrics.jsonl", lines)

    # --- epochs ---------------------------------------------------------------------------------

    def _evaluate(self) -> dict[str, float]:
        # Every rank evaluates rank 0's BatchNorm statistics, the model that is saved.
        ema = self.ema.module if self.ema is not None else None
        broadcast_buffers([self.model] + ([ema] if ema is not None else []), self.rt)
        return evaluate_splits(
            self.model,
            ema,
            self.data.test_loader,
            self.data.val_loader,
            device=self.rt.device,
            num_classes=self.data.num_classes,
            autocast=self._autocast(),
            channels_last=self.channels_last,
            retrieval=self.cfg.train.retrieval,
            progress=self.rt.is_main and self.cfg.train.progress,
        )

    def _finish_training_epoch(self, epoch: int, seconds: float) -> None:
        """The epoch's training record; the checkpoint is saved before evaluating, so a failure
        in evaluation never costs the epoch's training."""
        record = epoch_record(
            epoch + 1,
            self.state.step,
            self.meter.means(),
            self.optimizer.param_groups[0],
            seconds=seconds,
            collapse_warnings=sum(w["epoch"] == epoch + 1 for w in self.collapse_warnings),
        )
        self.meter = EpochMeter()
        self.state.history.append(record)
        self.state.epoch = epoch + 1
        self.state.batch = 0
        self.state.eval_pending = self._evaluates(epoch + 1)
        self.save("last.pt")

    def _evaluates(self, epoch: int) -> bool:
        return epoch % self.cfg.train.eval_every == 0 or epoch == self.cfg.train.epochs

    def _finish_evaluation(self) -> dict[str, Any]:
        """Evaluate the last completed epoch; write best.pt (if best) before last.pt, so that the
        pair is always consistent (a crash between them re-evaluates on resume)."""
        record = self.state.history[-1]
        if self.state.eval_pending:
            record.update(self._evaluate())
            score = selection_score(record)  # validation where there is a split, else test
            self.state.eval_pending = False
            if score > self.state.best_top1:
                self.state.best_top1 = score
                self.state.best_epoch = self.state.epoch
                record["is_best"] = True
                self.save("best.pt")
            self.save("last.pt")
        if self.rt.is_main:
            self._rewrite_metrics()
            if self.trackers is not None:
                self.trackers.log_epoch(record)
        return record

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``; returns the summary (also written to summary.json)."""
        cfg, rt = self.cfg, self.rt
        previous = self._install_signal_handlers()
        stopped = False
        try:
            if self.state.eval_pending:  # saved before its evaluation: finish that first
                record = self._finish_evaluation()
                if rt.is_main:
                    print(epoch_line(record), flush=True)
            for epoch in range(self.state.epoch, cfg.train.epochs):
                if stopped:
                    break
                start = time.perf_counter()
                try:
                    self._train_epoch(epoch)
                except _StopAfterSteps:
                    stopped = True
                    if self.state.batch < self.steps_per_epoch:
                        break
                    # the epoch is complete: finish its bookkeeping first
                self._finish_training_epoch(epoch, time.perf_counter() - start)
                record = self._finish_evaluation()
                if rt.is_main:
                    print(epoch_line(record), flush=True)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(record)
            summary = self.summary()
            summary["stopped_early"] = self.state.epoch < cfg.train.epochs
            if rt.is_main:
                atomic_write_text(self.run_dir / "summary.json", dump_json(summary))
                if cfg.train.plots:
                    title = f"{cfg.data.name} · {cfg.method} · seed {cfg.seed}"
                    plot_history(
                        self.state.history,
                        self.run_dir / "plots",
                        title=title,
                        losses=("loss", *self.method.logs),
                    )
                if self.trackers is not None:
                    self.trackers.log_artifacts(self.run_dir)
            rt.barrier()  # ranks leave together
            return summary
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.trackers is not None:
                self.trackers.close()
            self._teardown()

    def summary(self) -> dict[str, Any]:
        return run_summary(self.cfg, self.state, self.run_dir)
