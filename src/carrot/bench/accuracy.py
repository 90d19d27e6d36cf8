"""``carrot bench accuracy``: does CARROT help? Methods × datasets × paired seeds, each cell a full
``carrot train`` run, with paired differences, confidence intervals and p-values.

Pairing: a seed fixes the model initialization, the P×K batch order and every augmentation (and,
in the transfer regime, the pretrained backbone), and all methods share the architecture, so seed s
of two methods differs only in the objective.

The suites are data (:mod:`carrot.bench.suites`); the runs are carried out by
:mod:`carrot.bench.grid`, the backbones of a pretraining by :mod:`carrot.bench.transfer`, and the
tables and plots written by :mod:`carrot.bench.report`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from carrot.bench.grid import (
    Cell,
    Job,
    cell_job,
    cells,
    check_data,
    check_same_settings,
    finished,
    pretrain_job,
    run_jobs,
    weights_path,
)
from carrot.bench.report import analyze, collect, write_report
from carrot.bench.slurm import SlurmOptions, run_slurm
from carrot.bench.stats import EQUIVALENCE_MARGIN, check_margin
from carrot.bench.suites import Suite, config_suite, load_suite
from carrot.bench.transfer import export_backbone
from carrot.counts import check_grid_size
from carrot.paths import inside, plain_name
from carrot.train.progress import Progress

QUEUED = "SLURM jobs are queued;"
"""How :func:`run_suite` begins its answer when it returned without waiting for them."""

__all__ = ["Cell", "Suite", "config_suite", "load_suite", "ran_labels", "run_suite"]


def _check_names(
    suite: Suite, datasets: Iterable[str] | None, methods: Iterable[str] | None
) -> None:
    in_grid_d = {d for d, _ in suite.grid}
    in_grid_m = {m for _, ms in suite.grid for m in ms}
    for given, known, kind in ((datasets, in_grid_d, "dataset"), (methods, in_grid_m, "method")):
        unknown = set(given or ()) - known
        if unknown:
            raise ValueError(
                f"unknown {kind}(s) {sorted(unknown)} for suite {suite.name}; choose from "
                f"{sorted(known)}."
            )


def _check_size(
    suite: Suite,
    seeds: Sequence[int] | None,
    datasets: Iterable[str] | None,
    methods: Iterable[str] | None,
) -> None:
    """The grid's size, counted before it is built (a grid over the cap is one line)."""
    n_seeds = len(seeds if seeds is not None else suite.seeds)
    keep_d, keep_m = set(datasets or ()), set(methods or ())
    pairs = sum(
        sum(1 for m in ms if not keep_m or m in keep_m)
        for d, ms in suite.grid
        if not keep_d or d in keep_d
    )
    check_grid_size(n_seeds * pairs, f"{pairs} dataset × method pairs × {n_seeds} seeds")


RESERVED = ("runs", "pretrain", "slurm")
"""The folders of --out that hold the grid's own runs, pretrainings and SLURM jobs: a report
named so would replace them."""


def _report_name(name: str) -> str:
    """The report's folder name under --out: a plain name, not one of :data:`RESERVED`."""
    plain_name(name, "--report-name")
    if name in RESERVED:
        raise ValueError(
            f"--report-name (or the suite's name) must not be one of {', '.join(RESERVED)}: "
            f"--out/{name} holds the grid's own files; got {name!r}. Choose another --report-name."
        )
    return name


def _pretraining(
    suite: Suite, grid: Sequence[Cell], out: Path, extra: Sequence[str]
) -> list[tuple[str, int, Job]]:
    """The pretraining runs the grid's fine-tuning cells need: (source, seed, job)."""
    needed = dict.fromkeys(
        (source, cell.seed)
        for cell in grid
        if (source := suite.datasets[cell.dataset].pretrained) is not None
    )
    return [
        (source, seed, pretrain_job(suite, source, seed, out, extra)) for source, seed in needed
    ]


def run_suite(
    suite: Suite,
    out: Path,
    *,
    seeds: Sequence[int] | None = None,
    datasets: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
    extra: Sequence[str] = (),
    progress: bool = True,
    report_only: bool = False,
    report_name: str | None = None,
    jobs: int | None = None,
    devices: Sequence[str] | None = None,
    threads: int | None = None,
    gpus_per_cell: int = 1,
    slurm: SlurmOptions | None = None,
    margin: float = EQUIVALENCE_MARGIN,
) -> str:
    """Run (or finish) a suite's grid into ``out/runs`` (pretrainings into ``out/pretrain``), then
    write results.csv, trajectories.csv, comparisons.csv, bayes.csv, results.md, results.tex and
    the plots into
    ``out/<report_name or suite>``; returns the markdown report.

    ``extra`` overrides are applied to every run, last. ``jobs`` > 1 runs that many cells at once
    as processes of their own, ``devices`` one per GPU (see :func:`carrot.bench.grid.run_jobs`);
    ``threads`` fixes the CPU threads of each run (results on CPU are bit-identical for the same
    thread count, whichever way the cells are scheduled). ``gpus_per_cell`` > 1 runs each cell
    under torchrun with that many processes. With ``slurm``, each missing or unfinished cell is a
    SLURM job (:mod:`carrot.bench.slurm`); when it does not wait, the report is left for a rerun.
    ``margin`` is the equivalence margin δ of the TOST and of the Bayesian rope (points).
    """
    check_margin(margin, "--equivalence-margin")  # before any run, not after hours of them
    _check_names(suite, datasets, methods)
    _report_name(report_name or suite.name)
    _check_size(suite, seeds, datasets, methods)
    grid = cells(suite, seeds=seeds, datasets=datasets, methods=methods)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if report_only:
        grid = [cell for cell in grid if finished(cell.run_dir(out))]
        if not grid:
            raise ValueError(
                f"{out} holds no finished run of this grid; run it without --report-only."
            )
    else:
        pre = _pretraining(suite, grid, out, extra)
        jobs_of = {cell: cell_job(suite, cell, out, extra) for cell in grid}
        named = [(f"pretrain {s}", job) for s, _, job in pre]
        named += [(cell.dataset, job) for cell, job in jobs_of.items()]
        check_data(named)
        for _, job in named:  # refuse a mismatched run before training anything
            check_same_settings(job)
        # A live tqdm bar on a terminal, a line per tenth of the cells in a log file.
        bar = Progress(
            total=len(pre) + len(grid),
            desc=f"bench {suite.name}",
            enabled=progress and slurm is None,
        )
        fan = {"parallel": jobs, "devices": devices, "threads": threads, "nproc": gpus_per_cell}

        def execute(batch: list[Job]) -> bool:
            if slurm is not None:
                return run_slurm(batch, out, slurm)
            run_jobs(batch, done=lambda job: bar.update(), **fan)  # type: ignore[arg-type]
            return True

        waiting = f"{QUEUED} rerun the same command to wait for them ({out})."
        if not execute([job for _, _, job in pre]):
            bar.close()
            return f"{waiting} (pretraining)"
        for source, seed, job in pre:
            export_backbone(job.run_dir, weights_path(out, source, seed))
        if not execute(list(jobs_of.values())):
            bar.close()
            return waiting
        bar.close()
    rows, trajectories = [], []
    for cell in grid:
        row, traj = collect(cell, out)
        rows.append(row)
        trajectories.extend(traj)
    comparisons = analyze(rows, {k: m.baseline for k, m in suite.methods.items()}, margin=margin)
    # Several suites may share one folder of runs.
    report = inside(out / _report_name(report_name or suite.name), out, "report")
    elapsed = time.perf_counter() - start
    header = (
        f"## carrot bench accuracy: {suite.name}\n\n{suite.description}. "
        f"Seeds {sorted({c.seed for c in grid})}. Grid time {elapsed / 60:.1f} min "
        f"(runs' own training time {sum(r['seconds'] for r in rows) / 60:.1f} min).\n\n"
    )
    return write_report(
        report,
        rows,
        trajectories,
        comparisons,
        header=header,
        dataset_labels={k: d.label for k, d in suite.datasets.items()},
        method_labels={
            **{k: m.label for k, m in suite.methods.items()},
            **ran_labels(suite, grid, out, extra),
        },
    )


def ran_labels(
    suite: Suite, grid: Sequence[Cell], out: Path, extra: Sequence[str] = ()
) -> dict[str, str]:
    """The trainer methods' labels from the settings their cells ran with (label smoothing's
    names its ε), never their defaults: one label, or the distinct ones of the datasets joined by
    " / ". A named variant keeps its own label."""
    from carrot.methods import get_method

    seen: dict[str, dict[str, None]] = {}
    if not grid:
        return {}
    for cell in {Cell(c.dataset, c.method, grid[0].seed): None for c in grid}:
        if suite.methods[cell.method].overrides != (f"method={cell.method}",):
            continue
        cfg = cell_job(suite, cell, out, extra).load()
        seen.setdefault(cell.method, {})[get_method(cfg.method).label_for(cfg.sections)] = None
    return {name: " / ".join(labels) for name, labels in seen.items()}
