"""Plots of a run's history (one record per epoch): learning curves and CARROT geometry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_history"]


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for rec in history:
        if rec.get(key) is not None:
            xs.append(int(rec["epoch"]))
            ys.append(float(rec[key]))
    return xs, ys


def plot_history(
    history: Sequence[dict[str, Any]],
    out_dir: Path,
    *,
    title: str = "",
    losses: Sequence[str] = ("loss",),
) -> list[Path]:
    """Writes ``curves.png`` (the ``train_<name>`` losses of ``losses``, which the trainer takes
    from its method's ``logs``; accuracy; lr) and ``geometry.png`` (γ and r/m over training)
    into ``out_dir``; returns the files written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    wanted = {f"train_{name}" for name in losses}
    for key in sorted({k for rec in history for k in rec if k in wanted}):
        axes[0].plot(*_series(history, key), marker=".", label=key.removeprefix("train_"))
    axes[0].set(xlabel="epoch", ylabel="loss", title="training loss")
    axes[0].legend(fontsize=8)
    for key, label in (
        ("val_top1", "validation top-1"),
        ("top1", "top-1"),
        ("mean_class_acc", "mean per-class"),
        ("precision_at_1", "P@1"),
        ("map_at_r", "MAP@R"),
        ("top1_ema", "top-1 (EMA)"),
        ("train_top1", "train top-1"),
    ):
        xs, ys = _series(history, key)
        if xs:
            axes[1].plot(xs, ys, marker=".", label=label)
    axes[1].set(xlabel="epoch", ylabel="%", title="accuracy (test unless marked)")
    axes[1].legend(fontsize=8)
    axes[2].plot(*_series(history, "lr"), marker=".")
    axes[2].set(xlabel="epoch", ylabel="learning rate", title="learning rate (end of epoch)")
    fig.suptitle(title)
    fig.tight_layout()
    path = out_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in (("gamma_mean", "mean γ"), ("gamma_max", "max γ")):
        axes[0].plot(*_series(history, key), marker=".", label=label)
    axes[0].set(xlabel="epoch", ylabel="γ", title="expansion γ (batch statistics)", yscale="log")
    axes[0].legend(fontsize=8)
    axes[1].plot(*_series(history, "gamma_frac_gt1"), marker=".")
    axes[1].set(
        xlabel="epoch",
        ylabel="fraction",
        title="fraction of classes with γ > 1",
        ylim=(-0.02, 1.02),
    )
    for key in ("r_over_m_q10", "r_over_m_q50", "r_over_m_q90"):
        axes[2].plot(*_series(history, key), marker=".", label=key.removeprefix("r_over_m_"))
    xs, r = _series(history, "r_mean")
    if xs:
        axes[2].plot(xs, r, marker=".", linestyle="--", label="mean r")
    axes[2].axhline(0.5, color="gray", linewidth=0.8, linestyle=":")
    axes[2].set(
        xlabel="epoch",
        ylabel="r / m",
        title="radius over nearest-centroid distance (γ>1 below 0.5)",
    )
    axes[2].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = out_dir / "geometry.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
