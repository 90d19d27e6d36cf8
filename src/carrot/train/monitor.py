"""What the trainer watches during an epoch: running means of the losses and CARROT statistics,
and the collapse monitor (docs/stability.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from carrot.functional import summarize_stats
from carrot.train.errors import CollapseDetected, NonFiniteLossError
from carrot.train.report import non_finite_message
from carrot.train.schema import TrainConfig

__all__ = [
    "EpochMeter",
    "agreed",
    "check_finite",
    "collapse_message",
    "collapse_reasons",
    "watch_collapse",
]


class EpochMeter:
    """Running sums and maxima of the epoch's losses and CARROT statistics, kept on the device so
    that logging needs no host sync until it is read."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.maxima: dict[str, Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, Tensor], maxima: dict[str, Tensor]) -> None:
        """One batch's values; a key may be missing from some batches (sampled statistics)."""
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k].to(v.device) + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1
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
            "counts": dict(self.counts),
            "sums": {k: float(v) for k, v in self.sums.items()},
            "maxima": {k: float(v) for k, v in self.maxima.items()},
        }

    def load(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.sums = {k: torch.tensor(v) for k, v in state["sums"].items()}
        self.counts = {k: int(state.get("counts", {}).get(k, self.count)) for k in self.sums}
        self.maxima = {k: torch.tensor(v) for k, v in state["maxima"].items()}

    def means(self) -> dict[str, float]:
        out = {k: float(v) / max(self.counts.get(k, 1), 1) for k, v in self.sums.items()}
        out.update({k: float(v) for k, v in self.maxima.items()})
        return out


def collapse_reasons(
    t: TrainConfig, means: dict[str, float], history: list[dict[str, Any]]
) -> list[str]:
    """Why the collapse monitor fires, if it does: runaway γ, or a within-class radius that fell
    below ``collapse_radius_drop`` of its peak over the finished epochs."""
    reasons = []
    if means.get("gamma_mean", 1.0) > t.collapse_gamma_mean:
        reasons.append(f"mean γ {means['gamma_mean']:.3g} > {t.collapse_gamma_mean:g}")
    if means.get("gamma_max", 1.0) > t.collapse_gamma_max:
        reasons.append(f"max γ {means['gamma_max']:.3g} > {t.collapse_gamma_max:g}")
    r = means.get("r_mean")
    peaks = [h["r_mean"] for h in history if "r_mean" in h]
    if r is not None and peaks and r < t.collapse_radius_drop * max(peaks):
        reasons.append(
            f"within-class radius {r:.3g} fell below {t.collapse_radius_drop:.0%} of its "
            f"peak {max(peaks):.3g}"
        )
    return reasons


def agreed(reasons: list[str], rt: Any) -> list[str]:
    """Under DDP every rank must act on the same decision (stopping saves, a collective): if any
    rank's statistics crossed a threshold, all ranks see a reason."""
    if not rt.distributed:
        return reasons
    import torch.distributed as dist

    flag = torch.tensor([1.0 if reasons else 0.0], device=rt.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and not reasons:
        return ["another rank's statistics crossed a collapse threshold"]
    return reasons


def collapse_message(reasons: list[str], *, epoch: int, step: int) -> str:
    return (
        f"collapse warning at epoch {epoch}, step {step}: {'; '.join(reasons)}. CARROT's feedback "
        "loop may be running away (docs/stability.md): consider carrot.max_gamma, "
        "carrot.stop_grad_plus, a smaller carrot.lam or carrot.lam_warmup."
    )


def check_finite(
    micro: list[tuple[Tensor, dict[str, Tensor], dict[str, Any]]],
    norm: Tensor | None,
    *,
    distributed: bool,
    epoch: int,
    batch: int,
    step: int,
    last: Path,
) -> None:
    """One host sync per optimizer step: every micro-batch's ``(loss, parts, stats)`` loss and
    the gradient norm must be finite, on every rank, or :class:`NonFiniteLossError` stops the
    run before the optimizer step (``epoch``, ``batch``, ``step`` 1-based, for the message)."""
    flags = [torch.isfinite(loss.detach()) for loss, _, _ in micro]
    if norm is not None:
        flags.append(torch.isfinite(norm))
    ok = torch.stack(flags).all().float()
    if distributed:
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if ok.item() == 1.0:
        return
    bad = next(((loss, p, s) for loss, p, s in micro if not torch.isfinite(loss)), None)
    what = "loss"
    if bad is None:  # a finite loss with non-finite gradients, here or on another rank
        stats = micro[-1][2]
        what, value = "gradient norm", norm if norm is not None else torch.tensor(math.nan)
        parts = {"grad_norm": value}
    else:
        value, parts, stats = bad
        value = value.detach()
    raise NonFiniteLossError(
        non_finite_message(
            what,
            float(value),
            {k: float(v) for k, v in parts.items()},
            summarize_stats(stats, sync=True) if stats else {},
            epoch=epoch,
            batch=batch,
            step=step,
            last=last,
        )
    )


def watch_collapse(
    reasons: list[str],
    warnings: list[dict[str, Any]],
    *,
    epoch: int,
    step: int,
    stop: bool,
    save: Callable[[], Path],
    run_dir: Path,
    show: bool,
) -> None:
    """Record a collapse warning (``warnings`` is checkpointed; bounded), then stop with a
    checkpoint (``train.stop_on_collapse``) or print the warning once per epoch."""
    first_this_epoch = not any(w["epoch"] == epoch for w in warnings)
    if len(warnings) < 1000:
        warnings.append({"epoch": epoch, "step": step, "reasons": reasons})
    message = collapse_message(reasons, epoch=epoch, step=step)
    if stop:
        path = save()
        raise CollapseDetected(
            f"{message} Stopped (train.stop_on_collapse); checkpoint {path}; continue with "
            f"carrot train --resume {run_dir} train.stop_on_collapse=false"
        )
    if first_this_epoch and show:
        print(message, flush=True)
