"""The training steps of :class:`carrot.train.loop.Trainer`: batches, micro-steps under gradient
accumulation, the optimizer step with its finiteness checks, step logging and the stop signal."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from carrot.functional import summarize_stats
from carrot.methods import Method, Step
from carrot.train.checkpoint import TrainState
from carrot.train.config import Config
from carrot.train.data import DataBundle
from carrot.train.loggers import Trackers
from carrot.train.model import FGVCModel
from carrot.train.monitor import EpochMeter, agreed, check_finite, collapse_reasons, watch_collapse
from carrot.train.optim import learning_rate
from carrot.train.progress import Progress
from carrot.train.runtime import Runtime, StopSignal, install_stop_handlers

if TYPE_CHECKING:
    from timm.utils import ModelEmaV3


class _StopAfterSteps(Exception):
    """train.stop_after_steps was reached (a checkpoint has been saved)."""


class _TrainingSteps:
    """The step half of the trainer; :class:`~carrot.train.loop.Trainer` sets these attributes
    (in its ``_setup``) and provides :meth:`save` and :meth:`_autocast`."""

    cfg: Config
    rt: Runtime
    run_dir: Path
    model: FGVCModel
    channels_last: bool
    data: DataBundle
    method: Method
    has_method_params: bool
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    collapse_warnings: list[dict[str, Any]]
    steps_per_epoch: int
    state: TrainState
    meter: EpochMeter
    ddp: nn.Module
    forward: Any
    loss_fn: Any
    trackers: Trackers | None
    _micro: list[tuple[Tensor, dict[str, Tensor], dict[str, Any]]]
    _stop: StopSignal

    def save(self, name: str = "last.pt") -> Path:
        raise NotImplementedError

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        accum = self.cfg.train.accum_steps
        self.data.sampler.set_epoch(epoch, start_batch=self.state.batch * accum)
        for x, y in self.data.train_loader:
            yield x.to(self.rt.device, non_blocking=True), y.to(self.rt.device, non_blocking=True)

    def _micro_step(self, x: Tensor, y: Tensor, accum: int, sync: bool) -> None:
        cfg = self.cfg
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()  # type: ignore[operator]
        x, target = self.method.transform(x, y)
        step = Step(
            progress=self.state.step / (cfg.train.epochs * self.steps_per_epoch),
            observe=self.state.step % cfg.train.log_every == 0
            or self.state.batch + 1 == self.steps_per_epoch,
        )
        with ctx:
            with self._autocast():
                out = self.forward(x)
                result = self.loss_fn(out.embedding, out.logits, target, self.model.head, step=step)
            self.scaler.scale(result.loss / accum).backward()
        self._micro.append((result.loss, result.parts, result.stats))
        summary = summarize_stats(result.stats) if result.stats else {}
        values = {"loss": result.loss, **dict(result.parts)}
        values["train_top1"] = (out.logits.detach().argmax(1) == y).float().mean() * 100
        values.update(
            {k: v for k, v in summary.items() if k not in ("gamma_max", "classes_in_batch")}
        )
        maxima = {"gamma_max": summary["gamma_max"]} if "gamma_max" in summary else {}
        self.meter.add(values, maxima)

    def _optimizer_step(self, epoch: int) -> None:
        cfg = self.cfg
        norm = None
        if self.rt.distributed and self.has_method_params:
            self.method.average_gradients()  # its parameters live outside DDP
        if cfg.train.grad_clip is not None or not self.scaler.is_enabled():
            # fp16's scaler skips steps with inf gradients itself; otherwise a finite loss
            # with non-finite gradients must stop the run before the weights are spoilt.
            self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]]
                if self.has_method_params
                else self.model.parameters(),
                cfg.train.grad_clip or math.inf,
            )
        check_finite(
            self._micro,
            norm if not self.scaler.is_enabled() else None,
            distributed=self.rt.distributed,
            epoch=epoch + 1,
            batch=self.state.batch + 1,
            step=self.state.step + 1,
            last=self.run_dir / "checkpoints" / "last.pt",
        )
        self._micro = []
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.state.step += 1
        self.state.batch += 1

    def _train_epoch(self, epoch: int) -> None:
        cfg, rt = self.cfg, self.rt
        accum = cfg.train.accum_steps
        self.model.train()
        batches = self._batches(epoch)
        progress = Progress(
            total=self.steps_per_epoch,
            initial=self.state.batch,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            enabled=rt.is_main and cfg.train.progress,
            every=cfg.train.log_every,
        )
        try:
            while self.state.batch < self.steps_per_epoch:
                lr = learning_rate(cfg, self.state.step, self.steps_per_epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group["lr_mult"]
                self._micro = []
                for micro in range(accum):
                    x, y = next(batches)
                    sync = micro == accum - 1 or not rt.distributed
                    self._micro_step(x, y, accum, sync)
                self._optimizer_step(epoch)
                if (
                    self.state.step % cfg.train.log_every == 0
                    or self.state.batch == self.steps_per_epoch
                ):
                    self._log_step(progress, lr)
                progress.update(1)
                if cfg.train.checkpoint_every and self.state.step % cfg.train.checkpoint_every == 0:
                    self.save()
                if (
                    cfg.train.stop_after_steps is not None
                    and self.state.step >= cfg.train.stop_after_steps
                ):
                    self.save()
                    raise _StopAfterSteps
                if self._stop_requested():
                    path = self.save()
                    raise self._stop.error(
                        f"stopped at epoch {epoch + 1}, step {self.state.batch}; checkpoint {path}. "
                        f"Continue with: carrot train --resume {self.run_dir}"
                    )
        finally:
            progress.close()

    def _log_step(self, progress: Progress, lr: float) -> None:
        means = self.meter.means()
        shown = {"loss": means.get("loss", float("nan"))}
        if "gamma_mean" in means:
            shown["γ"] = means["gamma_mean"]
            shown["γmax"] = means.get("gamma_max", float("nan"))
        progress.set_postfix(shown)
        if self.method.expands:  # the loop it watches for needs the expansion in the loss
            reasons = agreed(collapse_reasons(self.cfg.train, means, self.state.history), self.rt)
            if reasons:
                progress.set_postfix({**progress.postfix, "COLLAPSE?": "yes"})
                watch_collapse(
                    reasons,
                    self.collapse_warnings,
                    epoch=self.state.epoch + 1,
                    step=self.state.step,
                    stop=self.cfg.train.stop_on_collapse,
                    save=self.save,
                    run_dir=self.run_dir,
                    show=self.rt.is_main,
                )
        if self.trackers is not None:
            self.trackers.log_step({**means, "lr": lr}, self.state.step)

    def _stop_requested(self) -> bool:
        if self.rt.distributed and self.state.step % self.cfg.train.log_every:
            return False  # under DDP, ranks agree (a collective) every log_every steps
        return self._stop.agreed(self.rt)

    def _install_signal_handlers(self) -> dict[int, Any]:
        self._stop = StopSignal()
        return install_stop_handlers(self._stop.request)
