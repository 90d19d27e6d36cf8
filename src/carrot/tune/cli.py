"""``carrot tune``: the command line. Building the parser imports no Optuna."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_tune_parser", "run_tune"]


def add_tune_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg, unused-ignore]
    handler: Callable[[argparse.Namespace], int],
) -> None:
    p = sub.add_parser(
        "tune",
        help="equal-budget hyperparameter search of methods on a validation split (Optuna)",
        description="One Optuna study per method, the same TPE seed and the same number of "
        "trials for each; every trial a real training run scored on the validation split "
        "(data.val_split), weak trials pruned per epoch. Writes DIR/<method>/best.yaml, "
        "DIR/tune.md and Optuna's figures; the same command resumes. See docs/tuning.md.",
    )
    p.add_argument("--config", help="the carrot train config every trial starts from")
    p.add_argument("--methods", nargs="+", required=True, help="methods to tune (BASE+ADDED too)")
    p.add_argument("--trials", type=int, required=True, help="trials per method (the budget)")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (resumable)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="wall-time cap per method")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (or SLURM jobs)")
    p.add_argument(
        "--storage",
        help="Optuna storage: a database URL (postgresql://..., sqlite:///FILE), journal:FILE or "
        "a .log file (shared filesystem); default sqlite:///DIR/optuna.db",
    )
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median")
    p.add_argument("--objective", choices=("top1", "mean_class_acc"), default="top1")
    p.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed (default 0)")
    p.add_argument("--space", metavar="FILE", help="YAML replacing, narrowing or dropping ranges")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=10,
        metavar="SECONDS",
        help="database storages: a trial whose worker is silent 3x this long is retried",
    )
    p.add_argument("--launcher", choices=("local", "slurm"), default="local")
    slurm = p.add_argument_group("--launcher slurm (each worker a job; share --storage)")
    slurm.add_argument("--slurm-partition")
    slurm.add_argument("--slurm-time", help="time limit per worker, e.g. 4:00:00")
    slurm.add_argument("--slurm-account")
    slurm.add_argument("--cpus-per-worker", type=int)
    slurm.add_argument("--gpus-per-worker", type=int, default=0)
    slurm.add_argument("--sbatch-option", action="append", default=[], metavar="KEY[=VALUE]")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="applied to the config")
    p.set_defaults(func=handler)


def _slurm_options(args: argparse.Namespace) -> Any:
    from carrot.bench.slurm import SlurmOptions

    return SlurmOptions(
        partition=args.slurm_partition,
        time=args.slurm_time,
        account=args.slurm_account,
        cpus_per_cell=args.cpus_per_worker,
        gpus_per_cell=args.gpus_per_worker,
        sbatch=tuple(args.sbatch_option),
    )


def _check(args: argparse.Namespace) -> None:
    """Every argument, before any folder, storage or worker exists (the bench's bounds)."""
    from carrot.counts import check_count

    check_count(args.trials, "--trials", hi=100_000)
    check_count(args.jobs, "--jobs", hi=1024)  # worker processes (or SLURM jobs) at once
    check_count(args.heartbeat, "--heartbeat", hi=86_400)
    check_count(args.cpus_per_worker, "--cpus-per-worker", hi=4096)
    check_count(args.gpus_per_worker, "--gpus-per-worker", lo=0, hi=1024)
    slurm_only = (args.slurm_partition, args.slurm_time, args.slurm_account, args.cpus_per_worker)
    if args.launcher != "slurm" and (any(slurm_only) or args.gpus_per_worker or args.sbatch_option):
        raise ValueError(
            "the --slurm-*, --*-per-worker and --sbatch-option options need --launcher slurm."
        )
    if args.launcher == "slurm":
        from carrot.bench.slurm import parse_time
        from carrot.bench.slurm_values import check_slurm_options

        check_slurm_options(_slurm_options(args), Path(args.out))  # nothing starts a script line
        if args.slurm_time is not None:
            parse_time(args.slurm_time)
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}.")


def _manifest(out: Path, data: dict[str, Any]) -> None:
    """tune.json: what this folder tunes; a rerun must tune the same config."""
    from carrot.train.runtime import atomic_write_text

    path = out / "tune.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("base") != data["base"] or old.get("objective") != data["objective"]:
            raise ValueError(
                f"{out} holds a tuning of another config or objective (see {path}); use "
                "another --out, or the same config and overrides to resume."
            )
        data["methods"] = list(dict.fromkeys([*old.get("methods", []), *data["methods"]]))
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _launch(opts: Any, args: argparse.Namespace) -> None:
    from carrot.tune.objective import TuneStopped
    from carrot.tune.worker import TuneWorker, create_study, run_worker

    if args.jobs > 1 or args.launcher == "slurm":
        # The storage's tables and the studies are made once, here: workers that all start on
        # a new database race to create them (SQLite: UNIQUE constraint on alembic_version).
        import logging

        import optuna

        optuna.logging.set_verbosity(logging.ERROR)  # the workers print one line per trial
        for method in opts.methods:
            create_study(opts, method)
    if args.launcher == "slurm":
        from carrot.bench.slurm import slurm_executor

        ex = slurm_executor(opts.out / "slurm", _slurm_options(args))
        ex.update_parameters(job_name="carrot-tune")
        with ex.batch():
            jobs = [ex.submit(TuneWorker(opts, i)) for i in range(args.jobs)]
        print(f"tune: {len(jobs)} SLURM worker job(s): {', '.join(j.job_id for j in jobs)}")
        for job in jobs:
            job.result()  # raises with the job's error
        return
    if args.jobs == 1:
        run_worker(opts, 0)
        return
    ctx = multiprocessing.get_context("spawn")  # no forked torch state
    procs = [ctx.Process(target=run_worker, args=(opts, i)) for i in range(args.jobs)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    bad = [f"worker {i} (exit code {p.exitcode})" for i, p in enumerate(procs) if p.exitcode]
    if bad:
        raise TuneStopped(f"{', '.join(bad)} stopped (its error is above)")


def run_tune(args: argparse.Namespace) -> int:
    from carrot.methods import get_method
    from carrot.train.config import config_to_dict, load_config
    from carrot.tune.objective import TuneStopped, full_training, require_validation
    from carrot.tune.search import load_space_file, spaces_for

    _check(args)
    methods = list(dict.fromkeys(m for m in args.methods if "=" not in m))
    overrides = [*args.overrides, *(m for m in args.methods if "=" in m)]
    for m in methods:
        get_method(m)
    base = load_config(args.config, overrides)
    require_validation(base)
    changes = load_space_file(args.space, methods) if args.space else None
    where = f"--space {args.space}" if args.space else "search space"
    spaces = spaces_for(methods, changes, base, where=where)
    try:
        import optuna  # noqa: F401
    except ImportError as e:
        raise ImportError("carrot tune needs Optuna: pip install 'carrot-fgvc[tune]'.") from e
    from carrot.train.runtime import atomic_write_text
    from carrot.tune.report import write_report
    from carrot.tune.storage import storage_url
    from carrot.tune.worker import TuneOptions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage_url(args.storage, out)
    import yaml

    base_dict = config_to_dict(base)
    _manifest(
        out,
        {
            "config": args.config,
            "overrides": overrides,
            "base": json.loads(json.dumps(base_dict)),
            "seeds": [base.seed],
            "objective": args.objective,
            "trials": args.trials,
            "methods": methods,
            "storage": storage,
        },
    )
    atomic_write_text(out / "base.yaml", yaml.safe_dump(full_training(base_dict), sort_keys=False))
    opts = TuneOptions(
        base=base,
        methods=tuple(methods),
        spaces=spaces,
        trials=args.trials,
        out=out,
        storage=storage,
        objective=args.objective,
        pruner=args.pruner,
        seed=args.seed,
        timeout_s=args.timeout,
        heartbeat_s=args.heartbeat,
        jobs=args.jobs,
    )
    try:
        _launch(opts, args)
    except (TuneStopped, KeyboardInterrupt) as e:
        why = str(e) or "interrupted"
        print(f"carrot tune: {why}; rerun the same command to continue.", file=sys.stderr)
        return 130
    report = write_report(opts)
    best = [str(out / m / "best.yaml") for m in methods if (out / m / "best.yaml").is_file()]
    print(f"tune: {report}; best configs: {', '.join(best) or 'none (no complete trial)'}")
    return 0
