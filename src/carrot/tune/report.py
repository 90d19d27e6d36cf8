"""What a tuning leaves in ``DIR``: each method's ``best.yaml`` and Optuna figures, and tune.md.

``DIR/<method>/best.yaml`` is the whole config of the best trial made to train on the full
training set (no validation part): ``carrot train --config`` and ``carrot bench accuracy
--config`` take it as it is; ``carrot bench accuracy --tuned DIR`` runs them all.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from carrot.train.runtime import atomic_write_text
from carrot.tune.objective import full_training, trial_config
from carrot.tune.storage import OVER_BUDGET, counted
from carrot.tune.worker import TuneOptions, create_study

__all__ = ["method_report", "write_figures", "write_report"]

BEST = "best.yaml"
MANIFEST = "tune.json"


def _best(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def _wall_s(trials: Sequence[FrozenTrial]) -> float:
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_best(opts: TuneOptions, method: str, trial: FrozenTrial) -> Path:
    """``DIR/<method>/best.yaml``: the base config with the best trial's settings, the
    output folder of the base config, and no validation split."""
    import yaml

    from carrot.train.config import config_to_dict

    cfg = trial_config(opts.base, method, trial.params)
    data = full_training(config_to_dict(cfg))
    path = opts.out / method / BEST
    path.parent.mkdir(parents=True, exist_ok=True)
    note = (
        f"# carrot tune: best trial {trial.number} of {method} ({opts.objective} "
        f"{trial.value:.2f} on the validation split); tuned: {', '.join(trial.params)}\n"
    )
    atomic_write_text(path, note + yaml.safe_dump(data, sort_keys=False))
    best = {"trial": trial.number, "value": trial.value, "params": trial.params}
    atomic_write_text(path.with_name("best.json"), json.dumps(best, indent=1) + "\n")
    return path


def write_figures(study: optuna.Study, folder: Path) -> list[str]:
    """Optuna's matplotlib figures as PNGs: history, slice, and parameter importances (two or
    more parameters, three or more complete trials). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    figures: list[tuple[str, Any]] = [("history.png", vis.plot_optimization_history)]
    if done:
        figures.append(("slice.png", vis.plot_slice))
    if len(done) >= 3 and len(done[0].params) >= 2:
        figures.append(("importances.png", vis.plot_param_importances))
    written = []
    for name, plot in figures:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning on every matplotlib plot
            try:
                ax = plot(study)
            except (ValueError, RuntimeError):  # e.g. importances of a constant parameter
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.savefig(folder / name, dpi=80, bbox_inches="tight")
        plt.close(fig)
        written.append(name)
    return written


def method_report(opts: TuneOptions, method: str) -> list[str]:
    """best.yaml and the figures of one method; its section of tune.md (lines)."""
    study = create_study(opts, method)
    trials = study.get_trials(deepcopy=False)
    shown = [t for t in trials if not t.system_attrs.get(OVER_BUDGET)]
    c = counted(trials)
    best = _best(trials)
    folder = opts.out / method
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"## {method}", ""]
    lines.append(
        f"trials: {c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed"
        + (f", {c['running']} running" if c["running"] else "")
        + f" (budget {opts.trials}) · wall time {_wall_s(shown):.0f} s"
    )
    lines.append("")
    if best is None:
        lines.append("No complete trial: no best.yaml.")
    else:
        write_best(opts, method, best)
        settings = ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())
        lines += [
            f"best validation {opts.objective}: **{best.value:.2f}** (trial {best.number}) · "
            f"{settings} · config: [{method}/{BEST}]({method}/{BEST})",
        ]
    figures = write_figures(study, folder)
    if figures:
        lines += ["", " ".join(f"![{f}]({method}/{f})" for f in figures)]
    lines += ["", "| trial | state | value | settings | note |", "|---:|---|---:|---|---|"]
    for t in shown:
        retried = t.number in {n for u in trials for n in u.system_attrs.get("retry_history", [])}
        state = "stale, retried" if retried else t.state.name.lower().replace("fail", "failed")
        value = f"{t.value:.2f}" if t.value is not None and math.isfinite(t.value) else ""
        note = t.user_attrs.get("fail_reason", "")
        if t.state == TrialState.PRUNED:
            note = f"pruned after epoch {t.user_attrs.get('pruned_at_epoch', '?')}"
        settings = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
        note = note.replace("|", "\\|")
        lines.append(f"| {t.number} | {state} | {value} | {settings} | {note} |")
    return [*lines, ""]


def write_report(opts: TuneOptions) -> Path:
    """tune.md (and every method's best.yaml and figures) from the storage."""
    seeds = sorted({opts.base.seed})
    lines = [
        "# carrot tune",
        "",
        f"{len(opts.methods)} method(s), {opts.trials} trials each, objective: validation "
        f"{opts.objective}, pruner: {opts.pruner}, sampler: TPE (seed {opts.seed}), training "
        f"seed(s) {seeds}. Storage: `{opts.storage}` (watch it live: "
        f"`optuna-dashboard {opts.storage}`).",
        "",
    ]
    for method in opts.methods:
        lines += method_report(opts, method)
    path = opts.out / "tune.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def read_manifest(out: Path) -> dict[str, Any]:
    """``DIR/tune.json``, written when a tuning starts (methods, tuning seeds, config)."""
    path = out / MANIFEST
    if not path.is_file():
        raise ValueError(f"{out} holds no carrot tune results ({MANIFEST} is missing).")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
