"""What ``carrot train`` prints: the run header, one line per epoch, the final result table."""

from __future__ import annotations

from typing import Any

__all__ = ["epoch_line", "format_summary", "run_header"]


def run_header(cfg: Any, run_dir: Any, *, world_size: int, device: Any, resumed_at: int) -> str:
    """The first line of a run: what trains, where, and where its files go."""
    start = f"resuming after epoch {resumed_at}" if resumed_at else "starting"
    return (
        f"carrot train · {cfg.data.name} · {cfg.model.backbone} · method={cfg.method} · "
        f"seed {cfg.seed} · {cfg.train.epochs} epochs · {world_size} process(es) on {device} · "
        f"{start} · run folder {run_dir}"
    )


def epoch_line(rec: dict[str, Any]) -> str:
    parts = [f"epoch {rec['epoch']}", f"loss {rec.get('train_loss', float('nan')):.4f}"]
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
