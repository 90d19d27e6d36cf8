"""The ``carrot`` command: ``train``, ``eval``, ``predict``, ``export``, ``convert``, ``bench``.

carrot train [--config FILE] [section.key=value ...]
carrot train --resume RUN_DIR [section.key=value ...]
carrot eval --checkpoint FILE [--tta none|flip] [--report DIR [--force]] [--json FILE] [section.key=value ...]
carrot predict --checkpoint FILE PATH... [--top-k 5] [--out preds.csv] [--tta none|flip]
carrot export --checkpoint FILE --out DIR [--format safetensors|onnx|all|hf]
carrot convert OLD NEW --trust
carrot tune --config FILE --methods ce carrot ... --trials N --out DIR [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from carrot.version import __version__


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
        from carrot.launch import detect, requeued_run

        requeued = requeued_run(cfg.run_dir())
        if requeued is not None:  # this SLURM job was requeued: continue its run exactly
            if detect().rank == 0:
                print(f"requeued SLURM job: resuming {requeued}", flush=True)
            trainer = Trainer.resume(requeued)
        else:
            trainer = Trainer(cfg)
    is_main = trainer.rt.is_main
    summary = trainer.fit()
    if is_main:
        print(format_summary(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from carrot.folders import check_target, staged_folder
    from carrot.train.checkpoint import check_classes, load_checkpoint
    from carrot.train.data import build_test_loader, load_test_split
    from carrot.train.eval_report import build_report, write_report
    from carrot.train.evaluate import evaluate
    from carrot.train.runtime import Runtime
    from carrot.train.trained import load_trained
    from carrot.train.tta import with_tta

    path = Path(args.checkpoint)
    if args.report:  # refused before the model is read or anything is evaluated
        check_target(Path(args.report), force=args.force, flag="--report")
    if args.json and Path(args.json).is_dir():
        raise ValueError(
            f"--json {args.json} is a folder; give the file to write, e.g. "
            f"{Path(args.json) / 'metrics.json'}."
        )
    ckpt = load_checkpoint(path)  # read once for the model and its EMA
    trained = load_trained(path, overrides=args.overrides, checkpoint=ckpt)
    models = [("model", trained.model)]
    if trained.has_ema:
        ema = load_trained(path, ema=True, overrides=args.overrides, checkpoint=ckpt)
        models.append(("ema", ema.model))
    del ckpt  # the optimizer state is not needed
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
        loader = build_test_loader(cfg, base, rank=rt.rank, world_size=rt.world_size)
        results: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        reports: list[tuple[str, Any, str]] = []  # (sub-folder, report, title)
        for name, model in models:
            outputs: dict[str, Any] = {}
            tta_model = with_tta(
                model.to(rt.device), args.tta, traits=trained.dataset_traits, dataset=cfg.data.name
            )
            results[name] = evaluate(
                tta_model,
                loader,
                device=rt.device,
                num_classes=len(trained.classes),
                retrieval=cfg.train.retrieval,
                progress=rt.is_main and cfg.train.progress,
                desc=f"evaluating {name}",
                outputs=outputs,
            )
            if rt.is_main:
                report = build_report(
                    outputs["logits"], outputs["labels"], outputs["embeddings"], trained.classes
                )
                results[name]["ece"] = report.calibration.ece
                extras[name] = {"tta": args.tta, **report.json()}
                if args.report:
                    title = f"{cfg.data.name} · {name} · tta {args.tta}"
                    reports.append((name if len(models) > 1 else "", report, title))
        if rt.is_main and args.report:  # the folder whole (model/ and ema/) or nothing
            with staged_folder(Path(args.report)) as tmp:
                for sub, report, title in reports:
                    write_report(report, tmp / sub, title=title)
        if rt.is_main:
            print(
                f"carrot eval · {path} · {cfg.data.name} test split ({len(base)} images) · "
                f"epoch {trained.epoch} · tta {args.tta}"
            )
            for name, metrics in results.items():
                if cfg.train.retrieval:  # undefined with no two test images of one class
                    metrics = {**metrics}
                    for key in ("precision_at_1", "map_at_r"):
                        metrics.setdefault(key, "n/a")
                shown = " · ".join(
                    f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in metrics.items()
                )
                print(f"{name:>5}: {shown}")
            if args.report:
                print(f"report: {args.report}")
            if args.json:
                from carrot.train.runtime import atomic_write_text

                merged = {name: {**results[name], **extras[name]} for name in results}
                atomic_write_text(
                    Path(args.json), json.dumps(merged, indent=2, allow_nan=False) + "\n"
                )
        rt.barrier()  # ranks leave together
    finally:
        rt.teardown()
    return 0


def _predict(args: argparse.Namespace) -> int:
    from carrot.predict import predict

    result = predict(
        Path(args.checkpoint),
        args.paths,
        out=Path(args.out),
        top_k=args.top_k,
        batch_size=args.batch_size,
        device=args.device,
        ema=args.ema,
        num_workers=args.workers,
        tta=args.tta,
    )
    failed = f" ({result['failed']} unreadable, see the error column)" if result["failed"] else ""
    tta = f" (tta {args.tta})" if args.tta != "none" else ""
    print(f"carrot predict: {result['images']} images{failed}{tta} → {result['out']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.format == "hf":  # a timm / Hugging Face Hub folder
        from carrot.hub import export_hf

        result = export_hf(Path(args.checkpoint), Path(args.out), ema=args.ema, force=args.force)
    else:
        from carrot.export import export_model

        result = export_model(
            Path(args.checkpoint), Path(args.out), fmt=args.format, ema=args.ema, force=args.force
        )
    print(f"carrot export: wrote {', '.join(result['files'])} to {result['folder']}")
    if "onnx_max_abs_diff" in result:
        print(
            f"onnxruntime vs PyTorch logits: max |difference| {result['onnx_max_abs_diff']:.3g} "
            "(tolerance 1e-4)"
        )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from carrot.train.checkpoint import convert_checkpoint

    convert_checkpoint(Path(args.old), Path(args.new), trust=args.trust)
    print(f"carrot convert: {args.old} → {args.new} (format 2: tensors and plain values only)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from carrot.bench.cli import run_bench
    from carrot.bench.grid import CellFailed

    try:
        return run_bench(args)
    except CellFailed as e:  # one line; the cell's log holds the traceback
        if os.environ.get("CARROT_DEBUG"):
            raise
        print(f"carrot {args.command}: error: {e}", file=sys.stderr)
        return 1


def _tune(args: argparse.Namespace) -> int:
    from carrot.tune.cli import run_tune

    return run_tune(args)


def _methods(args: argparse.Namespace) -> int:
    from carrot.methods.catalog import format_catalog, markdown_table

    print(markdown_table() if args.markdown else format_catalog(as_json=args.json))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=__name__.partition(".")[0],  # the package's name: carrot
        description="CARROT for fine-grained visual classification: train, evaluate, predict, "
        "export, tune, benchmark.",
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
    ev.add_argument(
        "--json",
        help="also write the metrics, ECE, per-class figures and top confused pairs to this file",
    )
    ev.add_argument("--tta", default="none", help="test-time augmentation: none (default) or flip")
    ev.add_argument(
        "--report",
        metavar="DIR",
        help="write per_class.csv, confusion.csv, confused_pairs.csv and the confusion, "
        "calibration, geometry and embedding pictures into DIR",
    )
    ev.add_argument(
        "--force", action="store_true", help="replace a non-empty --report DIR as a whole"
    )
    ev.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.root=... train.device=cpu"
    )
    ev.set_defaults(func=_eval)

    pr = sub.add_parser(
        "predict",
        help="predict classes of image files into a CSV",
        description="One CSV row per image (sorted paths): path, label, prob, top2_label, "
        "top2_prob, ... and error (filled for an unreadable image). Uses the checkpoint's own "
        "evaluation transform and class names.",
    )
    pr.add_argument("--checkpoint", required=True, help="a run's checkpoints/best.pt or last.pt")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (recursive)")
    pr.add_argument("--top-k", type=int, default=5, help="classes per row (default 5)")
    pr.add_argument("--out", default="preds.csv", help="CSV file to write (default preds.csv)")
    pr.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    pr.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    pr.add_argument("--ema", action="store_true", help="use the EMA weights")
    pr.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    pr.add_argument("--tta", default="none", help="test-time augmentation: none (default) or flip")
    pr.set_defaults(func=_predict)

    ex = sub.add_parser(
        "export",
        help="export a trained model (safetensors, ONNX) for use elsewhere",
        description="Writes model.safetensors (the classifier), backbone.safetensors (the timm "
        "backbone alone), config.json (classes, preprocessing) and, with --format onnx or all, "
        "model.onnx checked against PyTorch with onnxruntime. Load with carrot.load_model(DIR).",
    )
    ex.add_argument("--checkpoint", required=True, help="a run's checkpoints/best.pt or last.pt")
    ex.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    ex.add_argument(
        "--format",
        default="safetensors",
        help="safetensors (default), onnx, all, or hf: a folder timm.create_model('local-dir:DIR', "
        "pretrained=True) loads after import carrot.hub, with a model card (upload: hf upload)",
    )
    ex.add_argument("--ema", action="store_true", help="export the EMA weights")
    ex.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    ex.set_defaults(func=_export)

    cv = sub.add_parser(
        "convert",
        help="rewrite a carrot 0.1 checkpoint in the safe format",
        description="carrot 0.1 checkpoints hold pickled numpy objects; converting unpickles "
        "them once (only with --trust) and writes tensors and plain values only.",
    )
    cv.add_argument("old", help="the old checkpoint")
    cv.add_argument("new", help="the checkpoint to write")
    cv.add_argument("--trust", action="store_true", help="I trust OLD: unpickle it")
    cv.set_defaults(func=_convert)

    me = sub.add_parser(
        "methods",
        help="list the training methods (method=NAME) with their settings",
        description="Every registered method: description, reference, baseline, what it needs "
        "and its settings (defaults, ranges). method=BASE+ADDED adds an addable method's term.",
    )
    shown = me.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print JSON for scripts")
    shown.add_argument(
        "--markdown", action="store_true", help="print the method table of README.md"
    )
    me.set_defaults(func=_methods)

    from carrot.tune.cli import add_tune_parser

    add_tune_parser(sub, _tune)

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
    from carrot.train.errors import TrainPreempted
    from carrot.train.loop import CollapseDetected, NonFiniteLossError, TrainInterrupted
    from carrot.train.model import PretrainedWeightsError

    try:
        return int(args.func(args))
    except (
        ConfigError,
        DatasetError,
        ValueError,
        OSError,  # a path that is a file, a folder, unwritable...: the message names it
        ImportError,
        PretrainedWeightsError,
    ) as e:
        if os.environ.get("CARROT_DEBUG"):
            raise
        quiet = (ConfigError, DatasetError, PretrainedWeightsError, ImportError)
        kind = "" if isinstance(e, quiet) else f"{type(e).__name__}: "
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
    except TrainPreempted as e:
        from carrot.launch import REQUEUE_EXIT_CODE, detect, requeue

        print(f"carrot {args.command}: {e}", file=sys.stderr, flush=True)
        note = requeue(e.signum, detect().rank)
        if note:
            print(f"carrot {args.command}:{note}", file=sys.stderr, flush=True)
        return REQUEUE_EXIT_CODE
    except TrainInterrupted as e:
        print(f"carrot {args.command}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside training: folders are staged, nothing half-written stays
        if os.environ.get("CARROT_DEBUG"):
            raise
        print(f"carrot {args.command}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
