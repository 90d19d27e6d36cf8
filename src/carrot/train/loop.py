"""The training loop behind ``carrot train``: AMP, gradient accumulation, DDP, EMA, checkpoints
that resume exactly, metrics, plots and a final result table."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from carrot.functional import summarize_stats
from carrot.memory import ClassMemory
from carrot.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    flatten,
    save_config,
)
from carrot.train.data import DataBundle, build_data
from carrot.train.evaluate import evaluate
from carrot.train.methods import carrot_settings, compute_loss
from carrot.train.model import FGVCModel, build_model
from carrot.train.plots import plot_history
from carrot.train.runtime import (
    Runtime,
    atomic_save,
    atomic_write_text,
    dump_json,
    environment_info,
    rng_state,
    seed_everything,
    set_rng_state,
)

__all__ = [
    "RESUMABLE_KEYS",
    "CollapseDetected",
    "NonFiniteLossError",
    "TrainInterrupted",
    "Trainer",
    "format_summary",
]

CHECKPOINT_FORMAT = 1
# Keys that may change when a run is resumed; anything else would make it a different run.
RESUMABLE_KEYS = (
    "train.epochs",
    "train.eval_every",
    "train.eval_batch_size",
    "train.log_every",
    "train.checkpoint_every",
    "train.stop_after_steps",
    "train.stop_on_collapse",
    "train.collapse_gamma_mean",
    "train.collapse_gamma_max",
    "train.collapse_radius_drop",
    "train.progress",
    "train.plots",
    "train.tensorboard",
    "train.device",
    "data.root",
    "data.num_workers",
    "output_dir",
)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the run stops before the optimizer step."""


class CollapseDetected(RuntimeError):
    """The collapse monitor fired with ``train.stop_on_collapse``; a checkpoint was saved."""


class TrainInterrupted(RuntimeError):
    """SIGINT/SIGTERM: the run saved a checkpoint at the last completed step and stopped."""


class _StopAfterSteps(Exception):
    """train.stop_after_steps was reached (a checkpoint has been saved)."""


class EMA:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_v, v in zip(
            self.module.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.detach(), 1.0 - self.decay)
            else:
                ema_v.copy_(v)


@dataclass
class TrainState:
    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimizer steps completed, over the whole run."""
    batch: int = 0
    """Optimizer steps completed in the current epoch."""
    best_top1: float = -math.inf
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class EpochMeter:
    """Running sums and maxima of the epoch's losses and CARROT statistics, kept on the device so
    that logging needs no host sync until it is read."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.maxima: dict[str, Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, Tensor], maxima: dict[str, Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k].to(v.device) + v if k in self.sums else v.clone()
        for k, v in maxima.items():
            v = v.detach().float()
            self.maxima[k] = (
                torch.maximum(self.maxima[k].to(v.device), v) if k in self.maxima else v.clone()
            )
        self.count += 1

    def state(self) -> dict[str, Any]:
        """Host copy, for checkpoints taken mid-epoch."""
        return {
            "count": self.count,
            "sums": {k: float(v) for k, v in self.sums.items()},
            "maxima": {k: float(v) for k, v in self.maxima.items()},
        }

    def load(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.sums = {k: torch.tensor(v) for k, v in state["sums"].items()}
        self.maxima = {k: torch.tensor(v) for k, v in state["maxima"].items()}

    def means(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {k: float(v) / n for k, v in self.sums.items()}
        out.update({k: float(v) for k, v in self.maxima.items()})
        return out


def _param_groups(model: FGVCModel, cfg: Config) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_backbone = name.startswith("backbone.")
        decay = p.ndim > 1 and not name.endswith("log_scale")
        groups.setdefault((is_backbone, decay), []).append(p)
    out = []
    for (is_backbone, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "weight_decay": cfg.train.weight_decay if decay else 0.0,
                "lr_mult": cfg.train.backbone_lr_mult if is_backbone else 1.0,
            }
        )
    return out


def _build_optimizer(model: FGVCModel, cfg: Config) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg)
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.train.lr, momentum=cfg.train.momentum, nesterov=cfg.train.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=cfg.train.lr)


def learning_rate(cfg: Config, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up from 0, then cosine decay to ``min_lr`` at the last step."""
    t = cfg.train
    total = t.epochs * steps_per_epoch
    warmup = round(t.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return t.lr * (step + 1) / warmup
    if t.schedule == "constant":
        return t.lr
    progress = (step - warmup) / max(1, total - warmup)
    return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """One experiment: ``Trainer(cfg).fit()`` or ``Trainer.resume(run_dir, overrides).fit()``."""

    def __init__(
        self, cfg: Config, *, run_dir: Path | None = None, checkpoint: dict[str, Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.rt = Runtime.setup(cfg.train.device)
        self.run_dir = run_dir if run_dir is not None else cfg.run_dir()
        self.log_lines: list[str] = []
        try:
            self._setup(checkpoint)
        except BaseException:
            self.rt.teardown()
            raise

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: Path, overrides: list[str] | None = None) -> Trainer:
        """Continue a run from ``run_dir/checkpoints/last.pt``; only :data:`RESUMABLE_KEYS` may change."""
        ckpt_path = Path(run_dir) / "checkpoints" / "last.pt"
        if not ckpt_path.is_file():
            raise FileNotFoundError(
                f"{ckpt_path} does not exist: {run_dir} is not a carrot run folder with a checkpoint."
            )
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{ckpt_path} has checkpoint format {checkpoint.get('format')}, expected {CHECKPOINT_FORMAT}."
            )
        saved = config_from_dict(checkpoint["config"])
        cfg = config_from_dict(checkpoint["config"])
        cfg.train.stop_after_steps = (
            None  # a stop is for one invocation; set it again to stop again
        )
        apply_overrides(cfg, overrides or [])
        changed = _diff(config_to_dict(saved), config_to_dict(cfg))
        frozen = [k for k in changed if k not in RESUMABLE_KEYS]
        if frozen:
            raise ConfigError(
                f"cannot change {', '.join(frozen)} when resuming: the continued run would differ from "
                f"the one that was started. On resume you may change {', '.join(RESUMABLE_KEYS)}; "
                "start a new run (another output_dir) for other changes."
            )
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if checkpoint.get("world_size", 1) != world:
            raise ConfigError(
                f"{run_dir} was trained with {checkpoint.get('world_size', 1)} processes; resume it with the "
                f"same number (this launch has {world}): the P×K batches, steps per epoch and random "
                "streams depend on it."
            )
        done = checkpoint["state"]["epoch"]
        if cfg.train.epochs < done:
            raise ConfigError(
                f"train.epochs={cfg.train.epochs} is below the {done} epochs already completed."
            )
        return cls(cfg, run_dir=Path(run_dir), checkpoint=checkpoint)

    def _setup(self, checkpoint: dict[str, Any] | None) -> None:
        cfg, rt = self.cfg, self.rt
        if checkpoint is None:
            self.run_dir = self._fresh_run_dir(self.run_dir)
        seed_everything(cfg.seed, deterministic=cfg.train.deterministic, device=rt.device)
        self.data: DataBundle = build_data(
            cfg, rank=rt.rank, world_size=rt.world_size, pin_memory=rt.device.type == "cuda"
        )
        self.model = build_model(
            cfg.model, num_classes=self.data.num_classes, in_chans=self.data.in_chans
        ).to(rt.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        torch.manual_seed(cfg.seed + 1_000_003 * rt.rank)  # per-rank randomness after a common init
        self.optimizer = _build_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=cfg.train.amp == "fp16")
        self.ema = EMA(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.memory: ClassMemory | None = None
        settings = carrot_settings(cfg)
        if cfg.method in ("carrot", "supcon_carrot") and settings.memory:
            dim = int(self.model.head.weight.shape[1])  # type: ignore[index]
            self.memory = ClassMemory(
                self.data.num_classes, dim, momentum=settings.memory_momentum
            ).to(rt.device)
        self.collapse_warnings: list[dict[str, Any]] = []
        micro = len(self.data.sampler) + self.data.sampler.state_dict()["start_batch"]
        self.steps_per_epoch = micro // cfg.train.accum_steps
        if cfg.train.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"an epoch of {micro} P×K batches makes no optimizer step with train.accum_steps="
                f"{cfg.train.accum_steps}; lower train.accum_steps or train.batch_size."
            )
        self.state = TrainState()
        self.meter = EpochMeter()
        if checkpoint is not None:
            self._load(checkpoint)
        self.ddp: nn.Module = self.model
        if rt.distributed:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[rt.device] if rt.device.type == "cuda" else None
            )
        self.writer = None
        if rt.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            atomic_write_text(
                self.run_dir / "environment.json",
                dump_json(environment_info(rt.world_size, rt.device)),
            )
            self._rewrite_metrics()
            if cfg.train.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
                except ImportError:
                    self.writer = None

    def _fresh_run_dir(self, wanted: Path) -> Path:
        """``wanted``, or ``wanted-2``, ``wanted-3``... if it already holds a run: never overwrite."""
        chosen = [wanted]
        if self.rt.is_main:
            n = 1
            while (chosen[0] / "checkpoints").exists() or (chosen[0] / "metrics.jsonl").exists():
                n += 1
                chosen[0] = wanted.with_name(f"{wanted.name}-{n}")
            if chosen[0] != wanted:
                print(
                    f"{wanted} already holds a run (continue it with `carrot train --resume {wanted}`); "
                    f"this run goes to {chosen[0]}.",
                    flush=True,
                )
        if self.rt.distributed:
            dist.broadcast_object_list(chosen, src=0)
        return chosen[0]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        amp = self.cfg.train.amp
        if amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(self.rt.device.type, dtype=dtype)

    # --- checkpoints ----------------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        rngs: list[Any] = [rng_state()]
        if self.rt.distributed:
            rngs = [None] * self.rt.world_size
            dist.all_gather_object(rngs, rng_state())
        return {
            "format": CHECKPOINT_FORMAT,
            "world_size": self.rt.world_size,
            "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "memory": self.memory.state_dict() if self.memory is not None else None,
            "collapse_warnings": self.collapse_warnings,
            "state": {k: v for k, v in asdict(self.state).items() if k != "history"},
            "history": self.state.history,
            "meter": self.meter.state(),
            "rng": rngs,
            "classes": self.data.classes,
            "num_classes": self.data.num_classes,
            "in_chans": self.data.in_chans,
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
        if self.memory is not None and ckpt.get("memory") is not None:
            self.memory.load_state_dict(ckpt["memory"])
        self.collapse_warnings = list(ckpt.get("collapse_warnings", []))
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        history = ckpt["history"]
        self.state = TrainState(**ckpt["state"], history=history)
        self.meter.load(ckpt["meter"])
        rngs = ckpt["rng"]
        set_rng_state(rngs[self.rt.rank] if self.rt.rank < len(rngs) else rngs[0])

    def _rewrite_metrics(self) -> None:
        lines = "".join(json.dumps(rec) + "\n" for rec in self.state.history)
        atomic_write_text(self.run_dir / "metrics.jsonl", lines)

    # --- training -------------------------------------------------------------------------------

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        accum = self.cfg.train.accum_steps
        self.data.sampler.set_epoch(epoch, start_batch=self.state.batch * accum)
        for x, y in self.data.train_loader:
            yield x.to(self.rt.device, non_blocking=True), y.to(self.rt.device, non_blocking=True)

    def _check_finite(
        self,
        loss: Tensor,
        parts: dict[str, Tensor],
        stats: dict[str, Any],
        epoch: int,
        *,
        what: str = "loss",
    ) -> None:
        ok = torch.isfinite(loss.detach()).float()
        if self.rt.distributed:
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() == 1.0:
            return
        summary = summarize_stats(stats, sync=True) if stats else {}
        described = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
        last = self.run_dir / "checkpoints" / "last.pt"
        raise NonFiniteLossError(
            f"non-finite {what} at epoch {epoch + 1}, step {self.state.batch + 1} of the epoch "
            f"(global step {self.state.step + 1}): {what}={float(loss.detach()):.4g} ({described}); "
            f"mean γ={summary.get('gamma_mean', float('nan')):.4g}, max γ={summary.get('gamma_max', float('nan')):.4g}. "
            f"The run stopped before the optimizer step; the last good checkpoint is {last}"
            f"{' (none yet)' if not last.exists() else ''}. Lower train.lr, set carrot.max_gamma, "
            "or use train.amp=off."
        )

    def _train_epoch(self, epoch: int) -> None:
        cfg, rt = self.cfg, self.rt
        accum = cfg.train.accum_steps
        self.model.train()
        batches = self._batches(epoch)
        progress = None
        if rt.is_main and cfg.train.progress:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=self.steps_per_epoch,
                initial=self.state.batch,
                desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                leave=False,
                dynamic_ncols=True,
            )
        try:
            while self.state.batch < self.steps_per_epoch:
                lr = learning_rate(cfg, self.state.step, self.steps_per_epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group["lr_mult"]
                for micro in range(accum):
                    x, y = next(batches)
                    if cfg.train.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    sync = micro == accum - 1 or not rt.distributed
                    ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()  # type: ignore[operator]
                    with ctx:
                        with self._autocast():
                            out = self.ddp(x)
                            result = compute_loss(
                                cfg,
                                out,
                                y,
                                self.model.head,
                                progress=self.state.step
                                / (cfg.train.epochs * self.steps_per_epoch),
                                memory=self.memory,
                            )
                        self._check_finite(result.loss, result.parts, result.stats, epoch)
                        self.scaler.scale(result.loss / accum).backward()
                    summary = summarize_stats(result.stats) if result.stats else {}
                    values = {"loss": result.loss, **{f"{k}": v for k, v in result.parts.items()}}
                    values["train_top1"] = (out.logits.detach().argmax(1) == y).float().mean() * 100
                    values.update(
                        {
                            k: v
                            for k, v in summary.items()
                            if k not in ("gamma_max", "classes_in_batch")
                        }
                    )
                    maxima = {"gamma_max": summary["gamma_max"]} if "gamma_max" in summary else {}
                    self.meter.add(values, maxima)
                if cfg.train.grad_clip is not None or not self.scaler.is_enabled():
                    # fp16's scaler skips steps with inf gradients itself; otherwise a finite loss
                    # with non-finite gradients must stop the run before the weights are spoilt.
                    self.scaler.unscale_(self.optimizer)
                    norm = nn.utils.clip_grad_norm_(
                        self.model.parameters(), cfg.train.grad_clip or math.inf
                    )
                    if not self.scaler.is_enabled():
                        self._check_finite(
                            norm, {"grad_norm": norm}, result.stats, epoch, what="gradient norm"
                        )
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.model)
                self.state.step += 1
                self.state.batch += 1
                if (
                    self.state.step % cfg.train.log_every == 0
                    or self.state.batch == self.steps_per_epoch
                ):
                    self._log_step(progress, lr)
                if progress is not None:
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
                    raise TrainInterrupted(
                        f"stopped at epoch {epoch + 1}, step {self.state.batch}; checkpoint {path}. "
                        f"Continue with: carrot train --resume {self.run_dir}"
                    )
        finally:
            if progress is not None:
                progress.close()

    def _collapse_reasons(self, means: dict[str, float]) -> list[str]:
        """The collapse monitor: runaway γ or a shrinking within-class radius (docs/stability.md)."""
        t = self.cfg.train
        reasons = []
        if means.get("gamma_mean", 1.0) > t.collapse_gamma_mean:
            reasons.append(f"mean γ {means['gamma_mean']:.3g} > {t.collapse_gamma_mean:g}")
        if means.get("gamma_max", 1.0) > t.collapse_gamma_max:
            reasons.append(f"max γ {means['gamma_max']:.3g} > {t.collapse_gamma_max:g}")
        r = means.get("r_mean")
        peaks = [h["r_mean"] for h in self.state.history if "r_mean" in h]
        if r is not None and peaks and r < t.collapse_radius_drop * max(peaks):
            reasons.append(
                f"within-class radius {r:.3g} fell below {t.collapse_radius_drop:.0%} of its "
                f"peak {max(peaks):.3g}"
            )
        return reasons

    def _watch_collapse(self, means: dict[str, float], progress: Any) -> None:
        if self.cfg.method not in ("carrot", "supcon_carrot"):
            return  # the loop it watches for needs the expansion in the loss
        reasons = self._collapse_reasons(means)
        if self.rt.distributed:  # every rank acts on the same decision (saving is a collective)
            flag = torch.tensor([1.0 if reasons else 0.0], device=self.rt.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and not reasons:
                reasons = ["another rank's statistics crossed a collapse threshold"]
        if not reasons:
            return
        epoch = self.state.epoch + 1
        first_this_epoch = not any(w["epoch"] == epoch for w in self.collapse_warnings)
        if (
            len(self.collapse_warnings) < 1000
        ):  # the checkpoint keeps them; a runaway must not bloat it
            self.collapse_warnings.append(
                {"epoch": epoch, "step": self.state.step, "reasons": reasons}
            )
        if progress is not None:
            progress.set_postfix_str(
                f"{progress.postfix}, COLLAPSE?" if progress.postfix else "COLLAPSE?"
            )
        message = (
            f"collapse warning at epoch {epoch}, step {self.state.step}: {'; '.join(reasons)}. "
            "CARROT's feedback loop may be running away (docs/stability.md): consider "
            "carrot.max_gamma, carrot.stop_grad_plus, a smaller carrot.lam or carrot.lam_warmup."
        )
        if self.cfg.train.stop_on_collapse:
            path = self.save()
            raise CollapseDetected(
                f"{message} Stopped (train.stop_on_collapse); checkpoint {path}; continue with "
                f"carrot train --resume {self.run_dir} train.stop_on_collapse=false"
            )
        if first_this_epoch and self.rt.is_main:
            print(message, flush=True)

    def _log_step(self, progress: Any, lr: float) -> None:
        means = self.meter.means()
        if progress is not None:
            shown = {"loss": means.get("loss", float("nan"))}
            if "gamma_mean" in means:
                shown["γ"] = means["gamma_mean"]
                shown["γmax"] = means.get("gamma_max", float("nan"))
            progress.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})
        self._watch_collapse(means, progress)
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f"train_step/{k}", v, self.state.step)
            self.writer.add_scalar("train_step/lr", lr, self.state.step)

    # --- interruption ---------------------------------------------------------------------------

    def _stop_requested(self) -> bool:
        flag = torch.tensor([1.0 if self._stop else 0.0], device=self.rt.device)
        if self.rt.distributed:
            if self.state.step % self.cfg.train.log_every:
                return False
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _install_signal_handlers(self) -> dict[int, Any]:
        self._stop = False
        previous: dict[int, Any] = {}

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop:  # a second signal: stop now
                raise KeyboardInterrupt
            self._stop = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not in the main thread
                pass
        return previous

    # --- epochs ---------------------------------------------------------------------------------

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics (DDP only broadcasts them at the start
        of a training forward), so that evaluation uses the model that is saved."""
        if not self.rt.distributed:
            return
        modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
        for module in modules:
            for buf in module.buffers():
                dist.broadcast(buf, src=0)

    def _evaluate(self) -> dict[str, float]:
        self._sync_buffers()
        kwargs = dict(
            device=self.rt.device,
            num_classes=self.data.num_classes,
            autocast=self._autocast(),
            channels_last=self.cfg.train.channels_last,
            retrieval=self.cfg.train.retrieval,
        )
        metrics = evaluate(self.model, self.data.test_loader, **kwargs)  # type: ignore[arg-type]
        if self.ema is not None:
            ema = evaluate(self.ema.module, self.data.test_loader, **kwargs)  # type: ignore[arg-type]
            metrics.update({f"{k}_ema": v for k, v in ema.items()})
        return metrics

    def _end_epoch(self, epoch: int, seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        record: dict[str, Any] = {"epoch": epoch + 1, "step": self.state.step}
        for k, v in self.meter.means().items():
            key = k if k.startswith(("gamma", "r_", "m_")) or k == "train_top1" else f"train_{k}"
            record[key] = v
        record["lr"] = (
            self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0]["lr_mult"]
        )
        record["seconds"] = seconds
        record["collapse_warnings"] = sum(w["epoch"] == epoch + 1 for w in self.collapse_warnings)
        last = epoch + 1 == cfg.train.epochs
        if (epoch + 1) % cfg.train.eval_every == 0 or last:
            record.update(self._evaluate())
            score = record.get("top1_ema", record["top1"])
            if score > self.state.best_top1:
                self.state.best_top1 = score
                self.state.best_epoch = epoch + 1
                record["is_best"] = True
        self.meter = EpochMeter()
        self.state.history.append(record)
        self.state.epoch = epoch + 1
        self.state.batch = 0
        return record

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs``; returns the summary (also written to summary.json)."""
        cfg, rt = self.cfg, self.rt
        previous = self._install_signal_handlers()
        stopped = False
        try:
            for epoch in range(self.state.epoch, cfg.train.epochs):
                if stopped:
                    break
                start = time.perf_counter()
                try:
                    self._train_epoch(epoch)
                except _StopAfterSteps:
                    if self.state.batch < self.steps_per_epoch:
                        stopped = True
                        break
                    stopped = True  # the epoch is complete: finish its bookkeeping first
                record = self._end_epoch(epoch, time.perf_counter() - start)
                if rt.is_main:
                    self._rewrite_metrics()
                    if self.writer is not None:
                        for k, v in record.items():
                            if isinstance(v, (int, float)) and k != "epoch":
                                self.writer.add_scalar(f"epoch/{k}", v, epoch + 1)
                        self.writer.flush()
                self.save("last.pt")
                if record.get("is_best"):
                    self.save("best.pt")
                if rt.is_main:
                    print(_epoch_line(record), flush=True)
            summary = self.summary()
            summary["stopped_early"] = self.state.epoch < cfg.train.epochs
            if rt.is_main:
                atomic_write_text(self.run_dir / "summary.json", dump_json(summary))
                if cfg.train.plots:
                    title = f"{cfg.data.name} · {cfg.method} · seed {cfg.seed}"
                    plot_history(self.state.history, self.run_dir / "plots", title=title)
            return summary
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.writer is not None:
                self.writer.close()
            rt.teardown()

    def summary(self) -> dict[str, Any]:
        history = self.state.history
        evaluated = [r for r in history if "top1" in r]
        final = evaluated[-1] if evaluated else {}
        best = next((r for r in evaluated if r["epoch"] == self.state.best_epoch), final)
        keys = ("epoch", "top1", "mean_class_acc", "precision_at_1", "map_at_r", "top1_ema")
        geometry = (
            "gamma_mean",
            "gamma_max",
            "gamma_frac_gt1",
            "r_mean",
            "m_mean",
            "r_over_m_q10",
            "r_over_m_q50",
            "r_over_m_q90",
        )
        last = history[-1] if history else {}
        return {
            "run_dir": str(self.run_dir),
            "dataset": self.cfg.data.name,
            "method": self.cfg.method,
            "seed": self.cfg.seed,
            "epochs": self.state.epoch,
            "final": {k: final[k] for k in keys if k in final},
            "best": {k: best[k] for k in keys if k in best},
            "carrot_last_epoch": {k: last[k] for k in geometry if k in last},
        }


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two config dicts."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def _epoch_line(rec: dict[str, Any]) -> str:
    parts = [f"epoch {rec['epoch']}", f"loss {rec.get('train_loss', float('nan')):.4f}"]
    if "top1" in rec:
        parts.append(f"top1 {rec['top1']:.2f}")
        parts.append(f"mean-class {rec['mean_class_acc']:.2f}")
    if "gamma_mean" in rec:
        parts.append(
            f"γ mean {rec['gamma_mean']:.3g} max {rec.get('gamma_max', float('nan')):.3g} >1 {100 * rec.get('gamma_frac_gt1', 0):.0f}%"
        )
    parts.append(f"{rec['seconds']:.1f}s")
    return " | ".join(parts)


def format_summary(summary: dict[str, Any]) -> str:
    """The result table printed at the end of ``carrot train``."""
    cols = [
        ("top1", "top-1 %"),
        ("mean_class_acc", "mean per-class %"),
        ("precision_at_1", "P@1 %"),
        ("map_at_r", "MAP@R %"),
        ("top1_ema", "top-1 EMA %"),
    ]
    cols = [(k, name) for k, name in cols if k in summary["final"] or k in summary["best"]]
    header = f"| {'':<22} | " + " | ".join(f"{name:>16}" for _, name in cols) + " |"
    rule = "|" + "-" * 24 + "|" + "|".join("-" * 18 for _ in cols) + "|"
    lines = [
        f"carrot train · {summary['dataset']} · method={summary['method']} · seed {summary['seed']} · "
        f"{summary['epochs']} epochs · {summary['run_dir']}",
        header,
        rule,
    ]
    for label, rec in (("final", summary["final"]), ("best", summary["best"])):
        if not rec:
            continue
        name = f"{label} (epoch {rec.get('epoch', '?')})"
        lines.append(
            f"| {name:<22} | "
            + " | ".join(f"{rec[k]:>16.2f}" if k in rec else f"{'':>16}" for k, _ in cols)
            + " |"
        )
    if summary.get("stopped_early"):
        lines.append("")
        lines.append(
            f"stopped after {summary['epochs']} complete epochs (train.stop_after_steps); continue with: "
            f"carrot train --resume {summary['run_dir']}"
        )
    geo = summary.get("carrot_last_epoch", {})
    if geo:
        lines.append("")
        lines.append(
            "CARROT statistics, last epoch (mean over batches): "
            f"mean γ {geo.get('gamma_mean', float('nan')):.3f} · γ > 1 for {100 * geo.get('gamma_frac_gt1', 0.0):.1f}% of classes · "
            f"max γ {geo.get('gamma_max', float('nan')):.3f} · r/m quantiles 10/50/90%: "
            f"{geo.get('r_over_m_q10', float('nan')):.3f} / {geo.get('r_over_m_q50', float('nan')):.3f} / {geo.get('r_over_m_q90', float('nan')):.3f}"
        )
    return "\n".join(lines)
