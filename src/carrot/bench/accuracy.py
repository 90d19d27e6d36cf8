"""``carrot bench accuracy``: does CARROT help? Methods × datasets × paired seeds, run through the
same trainer as ``carrot train``, with paired differences, confidence intervals and p-values.

Pairing: a seed fixes the model initialization, the P×K batch order and every augmentation, and
all methods share the architecture, so seed s of two methods differs only in the objective.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carrot.bench.stats import PairedComparison, paired_comparison

__all__ = ["DATASETS", "METHODS", "SUITES", "Cell", "analyze", "run_suite"]


@dataclass(frozen=True)
class MethodSpec:
    label: str
    overrides: tuple[str, ...]
    baseline: str | None
    """The method it is compared with (same seeds)."""


@dataclass(frozen=True)
class DatasetSpec:
    label: str
    overrides: tuple[str, ...]


# Every run pins the whole carrot section to the guide's recipe, then changes what its method
# changes: results stay comparable whatever the trainer's defaults become.
GUIDE_PINS = (
    "carrot.guide=false",
    "carrot.lam=1",
    "carrot.T=1",
    "carrot.kl_direction=plus_z",
    "carrot.aux_ce_weight=0",
    "carrot.max_gamma=null",
    "carrot.stop_grad_plus=false",
    "carrot.lam_warmup=0",
    "carrot.space=euclidean",
    "carrot.memory=false",
    "carrot.detach_stats=true",
    "carrot.unbiased_radius=false",
    "carrot.eps=1e-12",
)


def _m(label: str, baseline: str | None, *overrides: str) -> MethodSpec:
    return MethodSpec(label, (*GUIDE_PINS, *overrides), baseline)


_C = "method=carrot"
METHODS: dict[str, MethodSpec] = {
    "ce": _m("CE", None, "method=ce"),
    "label_smoothing": _m("CE + label smoothing 0.1", "ce", "method=label_smoothing"),
    "carrot_l1": _m("CARROT CE+KL, λ=1 (guide)", "ce", _C),
    "carrot_l5": _m("CARROT CE+KL, λ=5", "ce", _C, "carrot.lam=5"),
    "supcon": _m("SupCon", "ce", "method=supcon"),
    "supcon_carrot": _m("SupCon + CARROT view (guide)", "supcon", "method=supcon_carrot"),
    # Guards and variants (docs/stability.md), each one change from the guide's recipe.
    "carrot_cap2": _m("CARROT, max γ 2", "ce", _C, "carrot.max_gamma=2"),
    "carrot_sg": _m("CARROT, stop-grad z⁺", "ce", _C, "carrot.stop_grad_plus=true"),
    "carrot_warm": _m("CARROT, λ warm-up 50%", "ce", _C, "carrot.lam_warmup=0.5"),
    "carrot_sym": _m("CARROT, symmetric KL", "ce", _C, "carrot.kl_direction=symmetric"),
    "carrot_rev": _m("CARROT, KL(p‖p⁺)", "ce", _C, "carrot.kl_direction=z_plus"),
    "carrot_unbiased": _m("CARROT, unbiased r", "ce", _C, "carrot.unbiased_radius=true"),
    "carrot_angular": _m("CARROT, angular", "ce", _C, "carrot.space=angular"),
    "carrot_memory": _m("CARROT, class memory", "ce", _C, "carrot.memory=true"),
    "carrot_aux": _m("CARROT, + CE on z⁺", "ce", _C, "carrot.aux_ce_weight=1"),
    "carrot_sg_l5": _m(
        "CARROT, stop-grad z⁺, λ=5", "ce", _C, "carrot.stop_grad_plus=true", "carrot.lam=5"
    ),
    "carrot_cap15": _m("CARROT, max γ 1.5", "ce", _C, "carrot.max_gamma=1.5"),
    "carrot_cap2_l05": _m(
        "CARROT, max γ 2, λ=0.5", "ce", _C, "carrot.max_gamma=2", "carrot.lam=0.5"
    ),
    "carrot_cap2_sg": _m(
        "CARROT, max γ 2, stop-grad z⁺",
        "ce",
        _C,
        "carrot.max_gamma=2",
        "carrot.stop_grad_plus=true",
    ),
    "supcon_carrot_cap2": _m(
        "SupCon + CARROT view, max γ 2", "supcon", "method=supcon_carrot", "carrot.max_gamma=2"
    ),
    "supcon_carrot_sg": _m(
        "SupCon + CARROT view, stop-grad",
        "supcon",
        "method=supcon_carrot",
        "carrot.stop_grad_plus=true",
    ),
}

# Small CNNs trained from scratch on the data this machine has; sized so that the full suite
# finishes within an hour on 2 CPU cores.
_CNN = ("model.backbone=carrot_cnn", "model.timm_kwargs.widths=[16, 32, 64]", "train.lr=0.05")


def _synthetic(difficulty: float) -> DatasetSpec:
    return DatasetSpec(
        f"synthetic, 100 classes in 20 super-classes, difficulty {difficulty}",
        (
            "data.name=synthetic",
            f"data.options.difficulty={difficulty}",
            "data.options.train_per_class=30",
            "data.options.test_per_class=20",
            "data.options.image_size=16",
            "data.image_size=16",
            "train.batch_size=64",
            "train.epochs=6",
            "train.eval_every=2",
            *_CNN,
        ),
    )


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "sklearn digits (10 classes)",
        ("data.name=digits", "data.image_size=16", "train.batch_size=32", "train.epochs=6", *_CNN),
    ),
    "fmnist": DatasetSpec(
        "Fashion-MNIST, all 60k, 1 epoch",
        (
            "data.name=fashion_mnist",
            "data.image_size=28",
            "train.batch_size=40",
            "train.epochs=1",
            "train.warmup_epochs=0.1",
            *_CNN,
        ),
    ),
    "fmnist100": DatasetSpec(
        "Fashion-MNIST, 100 images/class",
        (
            "data.name=fashion_mnist",
            "data.image_size=28",
            "data.subset_per_class=100",
            "train.batch_size=40",
            "train.epochs=10",
            "train.eval_every=2",
            *_CNN,
        ),
    ),
    "synth_medium": _synthetic(0.5),
    "synth_hard": _synthetic(0.75),
}

_ALL = ("ce", "label_smoothing", "carrot_l1", "carrot_l5", "supcon", "supcon_carrot")
_VARIANTS = (
    "carrot_cap2", "carrot_sg", "carrot_warm", "carrot_sym", "carrot_rev", "carrot_unbiased",
    "carrot_angular", "carrot_memory", "carrot_aux", "carrot_sg_l5",
)  # fmt: skip


@dataclass(frozen=True)
class Suite:
    description: str
    grid: tuple[tuple[str, tuple[str, ...]], ...]
    """(dataset, methods) pairs."""
    seeds: tuple[int, ...]


SUITES: dict[str, Suite] = {
    "quick": Suite(
        "3 seeds: digits and the hard synthetic set with every method; Fashion-MNIST 100/class, CE vs CARROT",
        (("digits", _ALL), ("synth_hard", _ALL), ("fmnist100", ("ce", "carrot_l1"))),
        (0, 1, 2),
    ),
    "full": Suite(
        "5 seeds: every method on digits, Fashion-MNIST 100/class and both synthetic sets; "
        "Fashion-MNIST (all 60k, 1 epoch) CE vs CARROT λ = 1",
        (
            ("digits", _ALL),
            ("fmnist100", _ALL),
            ("synth_medium", _ALL),
            ("synth_hard", _ALL),
            ("fmnist", ("ce", "carrot_l1")),
        ),
        (0, 1, 2, 3, 4),
    ),
    "variants": Suite(
        "5 development seeds: the guards and variants of docs/stability.md against CE and the guide's "
        "recipe on digits and both synthetic sets",
        tuple(
            (
                d,
                (
                    "ce",
                    "carrot_l1",
                    *_VARIANTS,
                    "supcon",
                    "supcon_carrot",
                    "supcon_carrot_cap2",
                    "supcon_carrot_sg",
                ),
            )
            for d in ("digits", "synth_medium", "synth_hard")
        ),
        (0, 1, 2, 3, 4),
    ),
    "variants2": Suite(
        "5 development seeds: capped-γ variants (the best of the first round) on every small suite",
        tuple(
            (
                d,
                (
                    "ce",
                    "carrot_l1",
                    "carrot_cap2",
                    "carrot_cap15",
                    "carrot_cap2_l05",
                    "carrot_cap2_sg",
                ),
            )
            for d in ("digits", "fmnist100", "synth_medium", "synth_hard")
        ),
        (0, 1, 2, 3, 4),
    ),
    "heldout": Suite(
        "5 held-out seeds, never used while choosing: CE, the guide's recipe and the two capped "
        "variants chosen on the development seeds, on every suite",
        (
            *(
                (d, ("ce", "carrot_l1", "carrot_cap15", "carrot_cap2"))
                for d in ("digits", "fmnist100", "synth_medium", "synth_hard")
            ),
            ("fmnist", ("ce", "carrot_cap15")),
        ),
        (5, 6, 7, 8, 9),
    ),
}

COMMON = (
    "train.eval_batch_size=500",
    "train.progress=false",
    "train.retrieval=false",
    "train.plots=false",
    "train.tensorboard=false",
    "data.num_workers=0",
)


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    seed: int

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.dataset / self.method / f"s{self.seed}"


def cells(
    suite: Suite,
    *,
    seeds: Sequence[int] | None = None,
    datasets: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
) -> list[Cell]:
    """The grid of a suite, optionally restricted; seed-major so that partial grids stay paired."""
    keep_d = set(datasets) if datasets else None
    keep_m = set(methods) if methods else None
    out = []
    for seed in seeds if seeds is not None else suite.seeds:
        for dataset, ms in suite.grid:
            if keep_d is not None and dataset not in keep_d:
                continue
            for m in ms:
                if keep_m is None or m in keep_m:
                    out.append(Cell(dataset, m, seed))
    return out


def _finished(run: Path) -> bool:
    summary = run / "summary.json"
    if not summary.is_file():
        return False
    return not json.loads(summary.read_text()).get("stopped_early", False)


def cell_overrides(cell: Cell, out: Path, extra: Sequence[str] = ()) -> list[str]:
    return [
        *COMMON,
        *DATASETS[cell.dataset].overrides,
        *METHODS[cell.method].overrides,
        f"seed={cell.seed}",
        f"output_dir={cell.run_dir(out)}",
        *extra,
    ]


def _check_same_settings(cell: Cell, out: Path, extra: Sequence[str]) -> None:
    """A finished or half-finished run is reused only if it was made with today's settings. A key
    added to the schema after the run counts as its default value (the run had no such option),
    so a cell that sets it to anything else is not paired with that run."""
    import yaml

    from carrot.train.config import (
        RESOLVED_DATA_KEYS,
        Config,
        config_to_dict,
        flatten,
        load_config,
    )

    saved = cell.run_dir(out) / "config.yaml"
    if not saved.is_file():
        return
    old = yaml.safe_load(saved.read_text())
    want = config_to_dict(load_config(None, cell_overrides(cell, out, extra)))
    old_f, want_f, default_f = flatten(old), flatten(want), flatten(config_to_dict(Config()))
    # A key the saved run did not have yet counts as its default: the run had no such option.
    # A data key left null is resolved by the run itself (and saved resolved).
    resolved = {f"data.{k}" for k in RESOLVED_DATA_KEYS}
    changed = [
        k
        for k, v in want_f.items()
        if k != "output_dir"
        and not (k in resolved and v is None)
        and old_f.get(k, default_f.get(k)) != v
    ]
    if changed:
        raise ValueError(
            f"{cell.run_dir(out)} was run with other settings ({', '.join(changed)}); results from "
            "different settings cannot be paired. Use another --out, or delete that run."
        )


def run_cell(cell: Cell, out: Path, *, extra: Sequence[str] = ()) -> Path:
    """Train one cell through the trainer (resuming a checkpoint if an earlier grid was cut off)."""
    from carrot.train import Trainer, load_config

    run = cell.run_dir(out)
    _check_same_settings(cell, out, extra)
    if _finished(run):
        return run
    log = run.parent / f"{run.name}.log"
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh, contextlib.redirect_stdout(fh):
        if (run / "checkpoints" / "last.pt").is_file():
            trainer = Trainer.resume(run)
        else:
            if run.exists():
                shutil.rmtree(run)  # a start that never reached a checkpoint
            trainer = Trainer(load_config(None, cell_overrides(cell, out, extra)))
        trainer.fit()
    return run


def _records(run: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]


def collect(cell: Cell, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One results row and the per-epoch trajectory of a finished cell."""
    run = cell.run_dir(out)
    summary = json.loads((run / "summary.json").read_text())
    records = _records(run)
    evaluated = [r for r in records if "top1" in r]
    best = max(evaluated, key=lambda r: r["top1"])
    last = records[-1]
    row = {
        "dataset": cell.dataset,
        "method": cell.method,
        "seed": cell.seed,
        "epochs": summary["epochs"],
        "final_top1": evaluated[-1]["top1"],
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "final_mean_class_acc": evaluated[-1]["mean_class_acc"],
        "best_mean_class_acc": max(r["mean_class_acc"] for r in evaluated),
        "final_gamma_mean": last.get("gamma_mean", math.nan),
        "max_gamma": max(r.get("gamma_max", math.nan) for r in records),
        "final_r_mean": last.get("r_mean", math.nan),
        "final_gamma_frac_gt1": last.get("gamma_frac_gt1", math.nan),
        "seconds": sum(r["seconds"] for r in records),
    }
    trajectory = [
        {
            "dataset": cell.dataset,
            "method": cell.method,
            "seed": cell.seed,
            "epoch": r["epoch"],
            "gamma_mean": r.get("gamma_mean", math.nan),
            "gamma_max": r.get("gamma_max", math.nan),
            "r_mean": r.get("r_mean", math.nan),
            "m_mean": r.get("m_mean", math.nan),
            "train_loss": r.get("train_loss", math.nan),
            "top1": r.get("top1", math.nan),
        }
        for r in records
    ]
    return row, trajectory


@dataclass
class Comparison:
    dataset: str
    method: str
    baseline: str
    metric: str
    stats: PairedComparison
    seeds: list[int] = field(default_factory=list)


def analyze(
    rows: Sequence[dict[str, Any]],
    *,
    metrics: Sequence[str] = ("final_top1", "best_top1", "final_mean_class_acc"),
) -> list[Comparison]:
    """Every method against its baseline on every dataset, over the seeds both have."""
    by_key = {(r["dataset"], r["method"], r["seed"]): r for r in rows}
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset):
            base = METHODS[method].baseline if method in METHODS else None
            if base is None:
                continue
            seeds = sorted(
                s
                for (d, m, s) in by_key
                if d == dataset and m == method and (dataset, base, s) in by_key
            )
            if not seeds:
                continue
            for metric in metrics:
                a = [float(by_key[(dataset, method, s)][metric]) for s in seeds]
                b = [float(by_key[(dataset, base, s)][metric]) for s in seeds]
                out.append(
                    Comparison(dataset, method, base, metric, paired_comparison(a, b), seeds)
                )
    return out


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def markdown(rows: Sequence[dict[str, Any]], comparisons: Sequence[Comparison]) -> str:
    """Per dataset: every method's accuracies and geometry, and its paired difference to its baseline."""
    import statistics

    lines = []
    comp = {(c.dataset, c.method, c.metric): c for c in comparisons}
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        label = DATASETS[dataset].label if dataset in DATASETS else dataset
        lines.append(f"### {label} (`{dataset}`)\n")
        lines.append(
            "| method | n | final top-1 | best top-1 | final mean-class | Δ final top-1 vs baseline [95% CI] "
            "| wins | p | Δ best top-1 [95% CI] | p | final mean γ | max γ | final r |"
        )
        lines.append("|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|")
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset):
            rs = [r for r in rows if r["dataset"] == dataset and r["method"] == method]

            def ms(key: str, rs: list[dict[str, Any]] = rs) -> str:
                vals = [float(r[key]) for r in rs]
                sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
                return f"{statistics.mean(vals):.2f} ± {_fmt(sd)}"

            c = comp.get((dataset, method, "final_top1"))
            cb = comp.get((dataset, method, "best_top1"))
            if c is not None and cb is not None:
                s, sb = c.stats, cb.stats
                delta = f"{s.diff:+.2f} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}] vs {c.baseline}"
                wins = f"{s.wins}/{s.n}"
                p = _p(s.p_value)
                delta_b = f"{sb.diff:+.2f} [{_fmt(sb.ci_low)}, {_fmt(sb.ci_high)}]"
                pb = _p(sb.p_value)
            else:
                delta, wins, p, delta_b, pb = "(baseline)", "", "", "", ""
            gm = statistics.mean(float(r["final_gamma_mean"]) for r in rs)
            gmax = max(float(r["max_gamma"]) for r in rs)
            rr = statistics.mean(float(r["final_r_mean"]) for r in rs)
            name = METHODS[method].label if method in METHODS else method
            lines.append(
                f"| {name} | {len(rs)} | {ms('final_top1')} | {ms('best_top1')} | {ms('final_mean_class_acc')} "
                f"| {delta} | {wins} | {p} | {delta_b} | {pb} | {gm:.2f} | {gmax:.1f} | {rr:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(
    rows: Sequence[dict[str, Any]],
    trajectories: Sequence[dict[str, Any]],
    comparisons: Sequence[Comparison],
    out: Path,
) -> list[Path]:
    """``differences.png`` (Δ top-1 with 95% CI per dataset) and ``geometry.png`` (mean γ, max γ,
    within-class radius, nearest-centroid distance and test accuracy over training per method,
    mean over seeds)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    written = []
    finals = [c for c in comparisons if c.metric == "final_top1"]
    most = max((sum(c.dataset == d for c in finals) for d in datasets), default=1)
    height = max(3.6, 0.42 * most + 1.2)
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), height), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        cs = [c for c in finals if c.dataset == dataset]
        ys = list(range(len(cs)))
        for y, c in zip(ys, cs, strict=True):
            s = c.stats
            color = (
                "tab:red"
                if s.significant() and s.diff < 0
                else "tab:green"
                if s.significant()
                else "tab:gray"
            )
            lo = 0.0 if math.isnan(s.ci_low) else s.diff - s.ci_low
            hi = 0.0 if math.isnan(s.ci_high) else s.ci_high - s.diff
            ax.errorbar([s.diff], [y], xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [f"{c.method} vs {c.baseline}" for c in cs], fontsize=7)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("Δ final top-1 (points), 95% CI")
    fig.suptitle("Paired differences over seeds (red/green: p < 0.05)", fontsize=10)
    fig.tight_layout()
    path = out / "differences.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    keys = (
        ("gamma_mean", "mean γ", True),
        ("gamma_max", "max γ", True),
        ("r_mean", "within-class RMS radius r", False),
        ("m_mean", "nearest-centroid distance m", False),
        ("top1", "test top-1 %", False),
    )
    fig, axes = plt.subplots(
        len(datasets), len(keys), figsize=(4.0 * len(keys), 3.0 * len(datasets)), squeeze=False
    )
    for row_axes, dataset in zip(axes, datasets, strict=True):
        methods = list(dict.fromkeys(t["method"] for t in trajectories if t["dataset"] == dataset))
        for ax, (key, label, log) in zip(row_axes, keys, strict=True):
            for method in methods:
                ts = [t for t in trajectories if t["dataset"] == dataset and t["method"] == method]
                points = []
                for e in sorted({t["epoch"] for t in ts}):
                    vals = [t[key] for t in ts if t["epoch"] == e and not math.isnan(t[key])]
                    if vals:
                        points.append((e, sum(vals) / len(vals)))
                if points:
                    ax.plot(
                        [p[0] for p in points], [p[1] for p in points], marker=".", label=method
                    )
            ax.set_title(f"{dataset}: {label}", fontsize=9)
            ax.set_xlabel("epoch")
            if log:
                ax.set_yscale("log")
        row_axes[0].legend(fontsize=6)
    fig.tight_layout()
    path = out / "geometry.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_suite(
    suite_name: str,
    out: Path,
    *,
    seeds: Sequence[int] | None = None,
    datasets: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
    extra: Sequence[str] = (),
    progress: bool = True,
    report_only: bool = False,
    report_name: str | None = None,
) -> str:
    """Run (or finish) a suite's grid into ``out/runs``, then write results.csv,
    trajectories.csv, comparisons.csv, results.md and the plots into ``out/<suite>``; returns the
    markdown table."""
    if suite_name not in SUITES:
        raise ValueError(f"--suite must be one of {sorted(SUITES)}, got {suite_name!r}.")
    for name, known, kind in ((datasets, DATASETS, "dataset"), (methods, METHODS, "method")):
        unknown = set(name or ()) - set(known)
        if unknown:
            raise ValueError(f"unknown {kind}(s) {sorted(unknown)}; choose from {sorted(known)}.")
    suite = SUITES[suite_name]
    grid = cells(suite, seeds=seeds, datasets=datasets, methods=methods)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    from tqdm.auto import tqdm

    if report_only:
        grid = [cell for cell in grid if _finished(cell.run_dir(out))]
        if not grid:
            raise ValueError(
                f"{out} holds no finished run of this grid; run it without --report-only."
            )
    bar = tqdm(
        grid, desc=f"bench {suite_name}", disable=not progress or report_only, dynamic_ncols=True
    )
    for cell in bar:
        bar.set_postfix_str(f"{cell.dataset}/{cell.method}/s{cell.seed}")
        run_cell(cell, out, extra=extra)
    rows, trajectories = [], []
    for cell in grid:
        row, traj = collect(cell, out)
        rows.append(row)
        trajectories.extend(traj)
    comparisons = analyze(rows)
    report = out / (report_name or suite_name)  # several suites may share one folder of runs
    report.mkdir(exist_ok=True)
    _write_csv(report / "results.csv", rows)
    _write_csv(report / "trajectories.csv", trajectories)
    _write_csv(
        report / "comparisons.csv",
        [
            {
                "dataset": c.dataset,
                "method": c.method,
                "baseline": c.baseline,
                "metric": c.metric,
                "seeds": " ".join(map(str, c.seeds)),
                **vars(c.stats),
            }
            for c in comparisons
        ],
    )
    table = markdown(rows, comparisons)
    elapsed = time.perf_counter() - start
    header = (
        f"## carrot bench accuracy --suite {suite_name}\n\n{suite.description}. "
        f"Seeds {sorted({c.seed for c in grid})}. Grid time {elapsed / 60:.1f} min "
        f"(runs' own training time {sum(r['seconds'] for r in rows) / 60:.1f} min).\n\n"
    )
    (report / "results.md").write_text(header + table)
    plot(rows, trajectories, comparisons, report)
    return header + table
