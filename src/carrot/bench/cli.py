"""``carrot bench accuracy`` and ``carrot bench speed``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from carrot.bench.stats import EQUIVALENCE_MARGIN, POWER, check_margin


def _devices(text: str) -> list[str]:
    """``0,1,3``: GPU indices."""
    out = [part.strip() for part in text.split(",") if part.strip()]
    if not out or not all(part.isdigit() for part in out):
        raise argparse.ArgumentTypeError(f"--devices must look like 0,1, got {text!r}")
    return out


def add_bench_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg, unused-ignore]
    handler: Callable[[argparse.Namespace], int],
) -> None:
    bench = sub.add_parser(
        "bench", help="benchmarks: accuracy with paired seeds, seed planning, speed and memory"
    )
    kinds = bench.add_subparsers(dest="bench", required=True)
    acc = kinds.add_parser(
        "accuracy",
        help="methods × datasets × paired seeds through the trainer",
        description="Paired-seed comparison of methods, each cell a full `carrot train` run. "
        "Either --suite (a packaged suite: quick, full, variants, variants2, heldout, transfer, study, "
        "ablation; or "
        "a suite file) or --config BASE.yaml [KEY=VALUE ...] (any carrot train config: every cell "
        "is BASE with the method's overrides and the seed). Methods: the trainer's (ce, "
        "label_smoothing, carrot, supcon, supcon_carrot) and named variants (carrot_guide, "
        "supcon_carrot_guide, those of --methods-file and of the suite). Suites on Fashion-MNIST "
        "need its files: sudo apt-get install dataset-fashion-mnist. See docs/results.md.",
    )
    what = acc.add_mutually_exclusive_group()
    what.add_argument("--suite", help="a packaged suite name or a suite file (default: quick)")
    what.add_argument(
        "--config", help="a carrot train config: run its dataset and model with each method"
    )
    what.add_argument(
        "--tuned",
        metavar="DIR",
        help="a carrot tune folder: each tuned method at its tuned config, full training set, "
        "seeds other than the tuning seed (default: the first 5 such)",
    )
    acc.add_argument(
        "--methods-file", help="YAML of named variants: NAME: {label, baseline, overrides}"
    )
    acc.add_argument(
        "--out",
        help="results folder (default results/<suite or config>); an interrupted grid resumes",
    )
    acc.add_argument("--seeds", help="override the seeds (suite's, or 0-4 with --config), e.g. 5-9")
    acc.add_argument("--datasets", nargs="+", help="restrict to these datasets of the suite")
    acc.add_argument(
        "--methods",
        nargs="+",
        help="restrict to these methods (--suite); the methods to run, with their baselines "
        "added (--config; default: ce carrot)",
    )
    acc.add_argument(
        "--jobs",
        type=int,
        help="run N cells at once, each a process of its own (default: 1, in this process)",
    )
    acc.add_argument(
        "--devices",
        type=_devices,
        help="GPU indices, e.g. 0,1: one cell per GPU at a time (CUDA_VISIBLE_DEVICES)",
    )
    acc.add_argument(
        "--threads",
        type=int,
        help="CPU threads per cell (default: all cores, or cores // jobs); CPU results are "
        "bit-identical for the same number of threads per cell",
    )
    acc.add_argument(
        "--gpus-per-cell",
        type=int,
        help="processes per cell under torchrun, one per GPU (gloo processes with "
        "train.device=cpu); with --devices each cell gets this many of them; with --launcher "
        "slurm each cell's job asks for this many GPUs (default: 1 process, no GPU asked)",
    )
    acc.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: cells on this machine (--jobs, --devices); slurm: each missing or "
        "unfinished cell a SLURM job, submitted with submitit (carrot-fgvc[slurm]); see "
        "docs/distributed.md",
    )
    slurm = acc.add_argument_group("--launcher slurm")
    slurm.add_argument("--slurm-partition", help="partition (default: the cluster's default)")
    slurm.add_argument(
        "--slurm-time", help="time limit per cell, e.g. 4:00:00 (default: the partition's)"
    )
    slurm.add_argument("--slurm-account", help="account to charge")
    slurm.add_argument("--cpus-per-cell", type=int, help="CPUs per cell (sbatch --cpus-per-task)")
    slurm.add_argument(
        "--sbatch-option",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="any other sbatch option, repeatable: --sbatch-option qos=high "
        "--sbatch-option constraint=a100",
    )
    slurm.add_argument(
        "--no-wait",
        action="store_true",
        help="submit and return; a rerun waits for queued cells, --report-only reports",
    )
    acc.add_argument(
        "--report-only", action="store_true", help="tables and plots from the finished runs only"
    )
    acc.add_argument(
        "--equivalence-margin",
        type=float,
        default=EQUIVALENCE_MARGIN,
        metavar="DELTA",
        help="points of accuracy: the TOST's ±DELTA and the Bayesian comparison's rope; a "
        f"comparison's verdict is better, worse, equivalent within ±DELTA or undecided "
        f"(default: {EQUIVALENCE_MARGIN:g})",
    )
    acc.add_argument(
        "--report-name", help="folder name of the report under --out (default: the suite)"
    )
    acc.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="with --suite: applied to every run, last (e.g. train.device=cuda); with --config: "
        "part of BASE, before each method's overrides",
    )
    acc.set_defaults(func=handler)
    plan = kinds.add_parser(
        "plan",
        help="seeds needed to detect, or show equivalence within, ±δ (from a pilot report)",
        description="From a pilot report's paired standard deviations (comparisons.csv of "
        "carrot bench accuracy), the seeds each dataset and method needs for 80% power to detect "
        "a difference of --effect points (paired t-test) and to show equivalence within "
        "±--effect (paired TOST, true difference 0). See docs/results.md.",
    )
    plan.add_argument(
        "--pilot",
        required=True,
        help="a report folder (with comparisons.csv), or a grid's --out folder holding one",
    )
    plan.add_argument(
        "--effect", type=float, required=True, help="δ in points of accuracy, e.g. 0.5"
    )
    plan.add_argument(
        "--metric", default="final_top1", help="the metric of comparisons.csv (default: final_top1)"
    )
    plan.add_argument(
        "--power", type=float, default=POWER, help="the power to reach (default: 0.8)"
    )
    plan.set_defaults(func=handler)
    speed = kinds.add_parser(
        "speed", help="operator, sampler and training-step cost (ratios in one run)"
    )
    speed.add_argument(
        "--quick", action="store_true", help="fewer repeats, no iNaturalist-size sampler case"
    )
    speed.add_argument("--device", default="cpu")
    speed.add_argument(
        "--only",
        nargs="+",
        choices=("operator", "sampler", "step", "kernels"),
        help="run only these sections",
    )
    speed.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="training-step section: these methods, each against its baseline (default: carrot); "
        "any registered method or BASE+ADDED",
    )
    speed.add_argument(
        "--backbone", default="resnet18", help="training-step section: the timm backbone"
    )
    speed.add_argument(
        "--image-size", type=int, default=112, help="training-step section: image side in pixels"
    )
    speed.add_argument(
        "--batch", type=int, default=64, help="training-step section: images per step (K = 4)"
    )
    speed.set_defaults(func=handler)


def run_bench(args: argparse.Namespace) -> int:
    if args.bench == "plan":
        from carrot.bench.plan import find_pilot, plan, plan_table

        check_margin(args.effect, "--effect")
        source = find_pilot(Path(args.pilot))
        rows = plan(source, args.effect, metric=args.metric, power=args.power)
        print(
            plan_table(rows, args.effect, metric=args.metric, power=args.power, source=str(source))
        )
        return 0
    if args.bench == "accuracy":
        check_margin(args.equivalence_margin, "--equivalence-margin")
        from carrot.bench.accuracy import QUEUED, config_suite, load_suite, run_suite
        from carrot.counts import check_count, parse_seeds

        # Counts first: one argument may not imply unbounded work (checked in one line).
        args.seeds = None if args.seeds is None else parse_seeds(args.seeds)
        check_count(args.jobs, "--jobs", hi=1024)
        check_count(args.threads, "--threads", hi=4096)
        check_count(args.gpus_per_cell, "--gpus-per-cell", hi=1024)
        check_count(args.cpus_per_cell, "--cpus-per-cell", hi=4096)
        # KEY=VALUE written after --methods or --datasets (argparse gives them to the list).
        for name in ("methods", "datasets"):
            given = getattr(args, name)
            if given:
                setattr(args, name, [x for x in given if "=" not in x] or None)
                args.overrides = [*args.overrides, *(x for x in given if "=" in x)]

        if args.tuned is not None:
            from carrot.tune.tuned import tuned_suite

            suite = tuned_suite(args.tuned, seeds=args.seeds, methods=args.methods)
            methods, extra = None, list(args.overrides)
            args.seeds = list(suite.seeds)
        elif args.config is not None:
            suite = config_suite(
                args.config,
                args.overrides,
                methods=args.methods,
                seeds=args.seeds or (0, 1, 2, 3, 4),
                methods_file=args.methods_file,
            )
            methods, extra = None, []
        else:
            suite = load_suite(args.suite or "quick", methods_file=args.methods_file)
            methods, extra = args.methods, args.overrides
        out = Path(args.out) if args.out else Path("results") / suite.name
        slurm = None
        if args.launcher == "slurm":
            from carrot.bench.slurm import SlurmOptions, parse_time

            slurm = SlurmOptions(
                partition=args.slurm_partition,
                time=args.slurm_time,
                account=args.slurm_account,
                cpus_per_cell=args.cpus_per_cell,
                gpus_per_cell=args.gpus_per_cell or 0,
                sbatch=tuple(args.sbatch_option),
                wait=not args.no_wait,
                poll_s=float(os.environ.get("CARROT_SLURM_POLL_S", "10")),
            )
            from carrot.bench.slurm_values import check_slurm_options

            check_slurm_options(slurm, out)  # before any folder or job exists
            if args.slurm_time is not None:
                parse_time(args.slurm_time)  # a bad time fails before anything is submitted
        elif args.no_wait or args.slurm_partition or args.slurm_time or args.sbatch_option:
            raise ValueError("--no-wait and the --slurm-* options need --launcher slurm.")
        table = run_suite(
            suite,
            out,
            seeds=args.seeds,
            datasets=args.datasets,
            methods=methods,
            extra=extra,
            report_only=args.report_only,
            report_name=args.report_name,
            jobs=args.jobs,
            devices=args.devices,
            threads=args.threads,
            gpus_per_cell=args.gpus_per_cell or 1,
            slurm=slurm,
            margin=args.equivalence_margin,
        )
        print(table)
        if table.startswith(QUEUED):  # --no-wait: no report yet
            return 0
        report = out / (args.report_name or suite.name)
        print(
            f"results: {report}/results.csv, results.md, results.tex, comparisons.csv, bayes.csv, "
            "differences.png, geometry.png, cd_diagram.png and bayes_*.png (two or more datasets)"
        )
        return 0
    import torch

    from carrot.bench.speed import (
        check_step_arguments,
        operator_timings,
        sampler_timings,
        step_cost,
    )
    from carrot.counts import check_count
    from carrot.methods import default_method

    check_count(args.image_size, "--image-size", hi=4096)
    check_count(args.batch, "--batch", hi=65_536)
    sections = set(args.only or ("operator", "sampler", "step", "kernels"))
    methods = args.methods or [default_method()]
    if "step" in sections:  # refused before any section runs, not after minutes of them
        check_step_arguments(methods, args.backbone, args.image_size, args.batch)
    torch.set_num_threads(1)
    repeats = 5 if args.quick else 20
    if "operator" in sections:
        print(
            f"== operator: forward+backward, carrot vs the guide's formulas, one thread, {args.device}"
        )
        print(f"{'B':>5} {'D':>5} {'detach':>6} {'guide ms':>9} {'carrot ms':>9} {'ratio':>6}")
        for t in operator_timings(repeats=repeats, device=args.device):
            print(
                f"{t.batch:>5} {t.dim:>5} {t.detach_stats!s:>6} {1e3 * t.guide_s:>9.3f} {1e3 * t.carrot_s:>9.3f} {t.ratio:>6.2f}"
            )
    if "sampler" in sections:
        cases = (
            (("NABirds-size", 48_562, 555),)
            if args.quick
            else (("NABirds-size", 48_562, 555), ("iNat-size", 2_700_000, 10_000))
        )
        print("\n== sampler: one epoch, batch 64 (P=16, K=4)")
        for s in sampler_timings(cases):
            print(
                f"{s.name:<13} {s.sampler:<17} init {s.init_s:7.3f} s  epoch {s.epoch_s:7.3f} s  coverage {s.coverage:6.1%}"
            )
    torch.set_num_threads(torch.get_num_threads() if args.device != "cpu" else 2)
    if "step" in sections:
        print(
            f"\n== training step: timm {args.backbone} @ {args.image_size} px, batch {args.batch} "
            f"(P={args.batch // 4}, K=4), each method vs its baseline, interleaved"
        )
        for method in methods:
            cost = step_cost(
                method,
                backbone=args.backbone,
                image_size=args.image_size,
                batch=args.batch,
                repeats=5 if args.quick else 15,
                memory_repeats=1 if args.quick else 2,
                device=args.device,
            )
            a, b = cost.method, cost.baseline
            print(
                f"time/step: {b} {1e3 * cost.baseline_s:.1f} ms, {a} {1e3 * cost.method_s:.1f} ms, ratio {cost.time_ratio:.3f}\n"
                f"peak memory: {b} {cost.baseline_peak_mb:.0f} MiB, {a} {cost.method_peak_mb:.0f} MiB, ratio {cost.memory_ratio:.3f}"
            )
    if "kernels" in sections:
        from carrot.bench.kernels import kernel_counts

        print(
            "\n== kernels per step: loss forward + backward on given embeddings, B = 64 (P=16, K=4), "
            f"D = 512, cosine head, {args.device}"
        )
        print(f"{'step':<24} {'eager aten ops':>15} {'compiled kernels':>17}")
        for c in kernel_counts(device=args.device):
            compiled = "n/a" if c.compiled_kernels is None else str(c.compiled_kernels)
            print(f"{c.step:<24} {c.eager_ops:>15} {compiled:>17}")
    return 0
