"""What ``carrot train`` prints: the run header, one line per epoch, the final result table."""

from __future__ import annotations

from typing import Any

__all__ = [
    "GEOMETRY_KEYS",
    "SUMMARY_KEYS",
    "epoch_line",
    "epoch_record",
    "format_summary",
    "non_finite_message",
    "run_header",
    "run_summary",
]

GEOMETRY_KEYS = (
    "gamma_mean",
    "gamma_max",
    "gamma_frac_gt1",
    "r_mean",
    "m_mean",
    "r_over_m_q10",
    "r_over_m_q50",
    "r_over_m_q90",
)
"""The CARROT statistics of the training batches that every epoch record holds."""


def run_header(
    cfg: Any,
    run_dir: Any,
    *,
    world_size: int,
    device: Any,
    resumed_at: tuple[int, int] | None,
    launcher: str = "single process",
) -> str:
    """The first line of a run: what trains, where, and where its files go. ``resumed_at``:
    (epochs completed, steps into the next one) of the checkpoint a resumed run starts from."""
    epoch, batch = resumed_at if resumed_at is not None else (0, 0)
    if resumed_at is None:
        start = "starting"
    elif batch:  # a checkpoint saved mid-epoch (an interrupt, a SLURM signal)
        start = f"resuming at epoch {epoch + 1}, step {batch}"
    else:
        start = f"resuming after epoch {epoch}"
    return (
        f"carrot train · {cfg.data.name} · {cfg.model.backbone} · method={cfg.method} · "
        f"seed {cfg.seed} · {cfg.train.epochs} epochs · {world_size} process(es) on {device} "
        f"(launcher: {launcher}) · "
        f"{start} · run folder {run_dir}"
    )


def non_finite_message(
    what: str,
    value: float,
    parts: dict[str, float],
    geometry: dict[str, Any],
    *,
    epoch: int,
    batch: int,
    step: int,
    last: Any,
) -> str:
    """Why the run stopped before an optimizer step, and where its last good checkpoint is."""
    described = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
    gamma = geometry.get("gamma_mean", float("nan")), geometry.get("gamma_max", float("nan"))
    return (
        f"non-finite {what} at epoch {epoch}, step {batch} of the epoch (global step {step}): "
        f"{what}={value:.4g} ({described}); mean γ={gamma[0]:.4g}, max γ={gamma[1]:.4g}. The run "
        f"stopped before the optimizer step; the last good checkpoint is {last}"
        f"{' (none yet)' if not last.exists() else ''}. Lower train.lr, set carrot.max_gamma, or "
        "use train.amp=off."
    )


SUMMARY_KEYS = (
    "epoch",
    "top1",
    "mean_class_acc",
    "precision_at_1",
    "map_at_r",
    "top1_ema",
    "val_top1",
    "val_mean_class_acc",
    "val_top1_ema",
)
"""The metrics of the final and the best epoch that summary.json keeps."""


def run_summary(cfg: Any, state: Any, run_dir: Any) -> dict[str, Any]:
    """What summary.json holds: final and best metrics, the last epoch's geometry, and
    ``best_selected_on``: ``"val"`` (best is the epoch of highest validation top-1, its test
    metrics those of that epoch) or ``"test"`` (no validation split: test-set selection)."""
    history = state.history
    evaluated = [r for r in history if "top1" in r]
    final = evaluated[-1] if evaluated else {}
    best = next((r for r in evaluated if r["epoch"] == state.best_epoch), final)
    geometry = GEOMETRY_KEYS
    last = history[-1] if history else {}
    return {
        "run_dir": str(run_dir),
        "dataset": cfg.data.name,
        "method": cfg.method,
        "seed": cfg.seed,
        "epochs": state.epoch,
        "val_split": cfg.data.val_split,
        "best_selected_on": "test" if cfg.data.val_split == "none" else "val",
        "final": {k: final[k] for k in SUMMARY_KEYS if k in final},
        "best": {k: best[k] for k in SUMMARY_KEYS if k in best},
        "carrot_last_epoch": {k: last[k] for k in geometry if k in last},
    }


def epoch_line(rec: dict[str, Any]) -> str:
    parts = [f"epoch {rec['epoch']}", f"loss {rec.get('train_loss', float('nan')):.4f}"]
    if "val_top1" in rec:
        parts.append(f"val top-1 {rec['val_top1']:.2f}")
    if "top1" in rec:
        parts.append(f"test top-1 {rec['top1']:.2f}")
        parts.append(f"mean-class {rec['mean_class_acc']:.2f}")
    if "gamma_mean" in rec:
        parts.append(
            f"γ mean {rec['gamma_mean']:.3g} max {rec.get('gamma_max', float('nan')):.3g} >1 {100 * rec.get('gamma_frac_gt1', 0):.0f}%"
        )
    parts.append(f"{rec['seconds']:.1f}s")
    return " | ".join(parts)


def format_summary(summary: dict[str, Any]) -> str:
    """The result table printed at the end of ``carrot train``: test metrics of the final and
    the best epoch (and validation top-1 with a validation split), the best row named for what
    chose it."""
    cols = [
        ("val_top1", "val top-1 %"),
        ("val_top1_ema", "val top-1 EMA %"),
        ("top1", "test top-1 %"),
        ("mean_class_acc", "mean per-class %"),
        ("precision_at_1", "P@1 %"),
        ("map_at_r", "MAP@R %"),
        ("top1_ema", "top-1 EMA %"),
    ]
    cols = [(k, name) for k, name in cols if k in summary["final"] or k in summary["best"]]
    header = f"| {'':<24} | " + " | ".join(f"{name:>16}" for _, name in cols) + " |"
    rule = "|" + "-" * 26 + "|" + "|".join("-" * 18 for _ in cols) + "|"
    on = summary.get("best_selected_on", "test")
    lines = [
        f"carrot train · {summary['dataset']} · method={summary['method']} · seed {summary['seed']} · "
        f"{summary['epochs']} epochs · {summary['run_dir']}",
        header,
        rule,
    ]
    for label, rec in (("final", summary["final"]), (f"best on {on}", summary["best"])):
        if not rec:
            continue
        name = f"{label} (epoch {rec.get('epoch', '?')})"
        lines.append(
            f"| {name:<24} | "
            + " | ".join(f"{rec[k]:>16.2f}" if k in rec else f"{'n/a':>16}" for k, _ in cols)
            + " |"
        )
    lines.append("")
    if on == "val":
        lines.append(
            "best: the epoch of highest validation top-1 (data.val_split="
            f"{summary.get('val_split', '?')}); its test metrics are reported as they are."
        )
    else:
        lines.append(
            "best: the epoch of highest TEST top-1 (no validation split: test-set selection, an "
            "optimistic figure); set data.val_split=fraction or official to select on validation."
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


def epoch_record(
    epoch: int,
    step: int,
    means: dict[str, float],
    group: dict[str, Any],
    *,
    seconds: float,
    collapse_warnings: int,
) -> dict[str, Any]:
    """An epoch's line of metrics.jsonl: the meter's means (losses as ``train_<name>``, the
    geometry and train_top1 as they are), the base lr (of the first param ``group``)."""
    record: dict[str, Any] = {"epoch": epoch, "step": step}
    for k, v in means.items():
        key = k if k.startswith(("gamma", "r_", "m_")) or k == "train_top1" else f"train_{k}"
        record[key] = v
    record["lr"] = group["lr"] / group["lr_mult"] if group["lr_mult"] else group["lr"]
    record["seconds"] = seconds
    record["collapse_warnings"] = collapse_warnings
    return record
