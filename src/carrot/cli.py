"""The ``carrot`` command: ``carrot train``, ``carrot eval``, ``carrot bench``.

carrot train [--config FILE] [section.key=value ...]
carrot train --resume RUN_DIR [section.key=value ...]
carrot eval --checkpoint FILE [section.key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from carrot import __version__


def _train(args: argparse.Namespace) -> int:
    from carrot.train import Trainer, format_summary, load_config

    if args.resume is not None:
        if args.config is not None:
            raise ValueError(
                "--resume takes the run's own config.yaml; drop --config (use key=value overrides)."
            )
        trainer = Trainer.resume(Path(args.resume), args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            import yaml

            from carrot.train.config import config_to_dict

            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
            return 0
        trainer = Trainer(cfg)
    is_main = trainer.rt.is_main
    summary = trainer.fit()
    if is_main:
        print(format_summary(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from carrot.train.checkpoint import check_classes
    from carrot.train.data import build_test_data, load_test_split, resolve_data_config
    from carrot.train.evaluate import evaluate
    from carrot.train.runtime import Runtime
    from carrot.train.trained import load_trained

    path = Path(args.checkpoint)
    trained = load_trained(path, overrides=args.overrides)
    cfg = trained.cfg
    rt = Runtime.setup(cfg.train.device)
    try:
        base = load_test_split(cfg)
        check_classes(
            trained.classes,
            base.classes,
            path,
            f"{cfg.data.name} at {cfg.data.root or 'its default'}",
        )
        resolve_data_config(cfg, trained.model.backbone, base)
        _, loader = build_test_data(cfg, base, rank=rt.rank, world_size=rt.world_size)
        results: dict[str, Any] = {}
        models = [("model", trained.model)]
        if trained.has_ema:
            models.append(("ema", load_trained(path, ema=True, overrides=args.overrides).model))
        for name, model in models:
            results[name] = evaluate(
                model.to(rt.device),
                loader,
                device=rt.device,
                num_classes=len(trained.classes),
                retrieval=cfg.train.retrieval,
                progress=rt.is_main and cfg.train.progress,
                desc=f"evaluating {name}",
            )
        if rt.is_main:
            print(
                f"carrot eval · {path} · {cfg.data.name} test split ({len(base)} images) · "
                f"epoch {trained.epoch}"
            )
            for name, metrics in results.items():
                shown = " · ".join(f"{k} {v:.2f}" for k, v in metrics.items())
                print(f"{name:>5}: {shown}")
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        rt.teardown()
    return 0


def _bench(args: argparse.Namespace) -> int:
    from carrot.bench.cli import run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carrot",
        description="CARROT for fine-grained visual classification: train, evaluate, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"carrot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="run an experiment",
        description="Train a model. Settings: the defaults, then --config FILE (YAML), then "
        "section.key=value overrides (e.g. data.name=cub data.root=/data/CUB_200_2011 train.epochs=50).",
    )
    train.add_argument("--config", help="YAML file with the settings")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    train.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on its dataset's test split")
    ev.add_argument("--checkpoint", required=True, help="a run's checkpoints/best.pt or last.pt")
    ev.add_argument("--json", help="also write the metrics to this JSON file")
    ev.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=... train.device=cpu"
    )
    ev.set_defaults(func=_eval)

    try:
        from carrot.bench.cli import add_bench_parser
    except ImportError:
        pass
    else:
        add_bench_parser(sub, _bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from carrot.data import DatasetError
    from carrot.train.config import ConfigError
    from carrot.train.loop import CollapseDetected, NonFiniteLossError, TrainInterrupted

    try:
        return int(args.func(args))
    except (ConfigError, DatasetError, ValueError, FileNotFoundError, FileExistsError) as e:
        if os.environ.get("CARROT_DEBUG"):
            raise
        kind = "" if isinstance(e, (ConfigError, DatasetError)) else f"{type(e).__name__}: "
        print(
            f"carrot {args.command}: error: {kind}{e} (CARROT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2
    except NonFiniteLossError as e:
        print(f"carrot {args.command}: {e}", file=sys.stderr)
        return 1
    except CollapseDetected as e:
        print(f"carrot {args.command}: {e}", file=sys.stderr)
        return 3
    except TrainInterrupted as e:
        print(f"carrot {args.command}: {e}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
