"""``carrot bench accuracy`` and ``carrot bench speed``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from carrot.bench.accuracy import DATASETS, METHODS, SUITES


def _seeds(text: str) -> list[int]:
    """``0-4`` or ``0,2,5``."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise argparse.ArgumentTypeError(f"--seeds must look like 0-4 or 0,2,5, got {text!r}")
    return out


def add_bench_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg, unused-ignore]
    handler: Callable[[argparse.Namespace], int],
) -> None:
    bench = sub.add_parser("bench", help="benchmarks: accuracy with paired seeds, speed and memory")
    kinds = bench.add_subparsers(dest="bench", required=True)
    acc = kinds.add_parser(
        "accuracy",
        help="methods × datasets × paired seeds through the trainer",
        description="Suites: "
        + "; ".join(f"{k}: {v.description}" for k, v in SUITES.items())
        + f". Datasets: {', '.join(DATASETS)}. Methods: {', '.join(METHODS)}.",
    )
    acc.add_argument("--suite", default="quick", choices=sorted(SUITES))
    acc.add_argument(
        "--out", help="results folder (default results/<suite>); an interrupted grid resumes"
    )
    acc.add_argument("--seeds", type=_seeds, help="override the suite's seeds, e.g. 5-9")
    acc.add_argument("--datasets", nargs="+", help="restrict to these datasets")
    acc.add_argument("--methods", nargs="+", help="restrict to these methods")
    acc.add_argument(
        "--report-only", action="store_true", help="tables and plots from the finished runs only"
    )
    acc.add_argument(
        "--report-name", help="folder name of the report under --out (default: the suite)"
    )
    acc.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="applied to every run, e.g. train.device=cuda",
    )
    acc.set_defaults(func=handler)
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
    speed.set_defaults(func=handler)


def run_bench(args: argparse.Namespace) -> int:
    if args.bench == "accuracy":
        from carrot.bench.accuracy import run_suite

        out = Path(args.out) if args.out else Path("results") / args.suite
        table = run_suite(
            args.suite,
            out,
            seeds=args.seeds,
            datasets=args.datasets,
            methods=args.methods,
            extra=args.overrides,
            report_only=args.report_only,
            report_name=args.report_name,
        )
        print(table)
        print(
            f"results: {out / (args.report_name or args.suite)}/results.csv, results.md, comparisons.csv, differences.png, geometry.png"
        )
        return 0
    import torch

    from carrot.bench.speed import operator_timings, sampler_timings, step_cost

    sections = set(args.only or ("operator", "sampler", "step", "kernels"))
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
            "\n== training step: timm resnet18 @ 112 px, batch 64 (P=16, K=4), CE vs CARROT CE+KL, interleaved"
        )
        cost = step_cost(repeats=5 if args.quick else 15, device=args.device)
        print(
            f"time/step: ce {1e3 * cost.ce_s:.1f} ms, carrot {1e3 * cost.carrot_s:.1f} ms, ratio {cost.time_ratio:.3f}\n"
            f"peak memory: ce {cost.ce_peak_mb:.0f} MiB, carrot {cost.carrot_peak_mb:.0f} MiB, ratio {cost.memory_ratio:.3f}"
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
