"""What happens before the first step of a run: claiming its folder, checking every image once,
and the checks a resumed run must pass."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from carrot.launch import claim_note, detect
from carrot.train.checkpoint import load_checkpoint, remove_stale_temporaries
from carrot.train.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    flatten,
    save_config,
)
from carrot.train.data import Splits, resolve_data_config
from carrot.train.model import FGVCModel, build_model
from carrot.train.progress import Progress
from carrot.train.runtime import Runtime, atomic_write_text, dump_json, environment_info
from carrot.train.schema import resumable_keys

if TYPE_CHECKING:
    from carrot.train.loggers import Trackers

__all__ = [
    "RESUMABLE_KEYS",
    "autocast",
    "build_run_model",
    "channels_last",
    "check_images_once",
    "claim_run_dir",
    "config_diff",
    "open_run_folder",
    "release_run_dir",
    "resume_config",
    "steps_per_epoch",
]

RESUMABLE_KEYS = resumable_keys()
"""Keys that may change when a run is resumed (``setting(resumable=True)`` on their fields);
anything else would make it a different run."""


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two config dicts."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def resume_config(run_dir: Path, overrides: list[str] | None) -> tuple[Config, dict[str, Any]]:
    """The config and checkpoint of ``run_dir/checkpoints/last.pt`` with ``overrides`` applied,
    once they pass every check: only :data:`RESUMABLE_KEYS` change, files stay in ``run_dir``,
    same number of processes, no fewer epochs than done. A killed save's temporary is removed."""
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(
            f"{ckpt_path} does not exist: {run_dir} is not a carrot run folder with a checkpoint."
        )
    remove_stale_temporaries(ckpt_path.parent)
    checkpoint = load_checkpoint(ckpt_path)
    saved = config_from_dict(checkpoint["config"])
    # A stop is for one invocation; set it again to stop again.
    cfg = apply_overrides(saved, ["train.stop_after_steps=null", *(overrides or [])])
    changed = config_diff(config_to_dict(saved), config_to_dict(cfg))
    if "output_dir" in changed:
        raise ConfigError(
            f"--resume continues the run in {run_dir}: output_dir cannot point elsewhere. To "
            "branch a run, copy its folder and resume the copy."
        )
    frozen = [k for k in changed if k not in RESUMABLE_KEYS]
    if frozen:
        raise ConfigError(
            f"cannot change {', '.join(frozen)} when resuming: the continued run would differ from "
            f"the one that was started. On resume you may change {', '.join(RESUMABLE_KEYS)}; "
            "start a new run (another output_dir) for other changes."
        )
    world = detect().world_size
    if checkpoint.get("world_size", 1) != world:
        raise ConfigError(
            f"{run_dir} was trained with {checkpoint.get('world_size', 1)} processes; resume it with "
            f"the same number (this launch has {world}): the P×K batches, steps per epoch and "
            "random streams depend on it."
        )
    done = checkpoint["state"]["epoch"]
    if cfg.train.epochs < done:
        raise ConfigError(
            f"train.epochs={cfg.train.epochs} is below the {done} epochs already completed."
        )
    return cfg, checkpoint


def claim_run_dir(wanted: Path, rt: Runtime) -> Path:
    """``wanted``, or ``wanted-2``, ``wanted-3``... if it already holds a run: never overwrite.

    A folder is claimed by creating ``.carrot-run`` in it with O_EXCL, so two runs started at the
    same moment cannot both take it. Under DDP rank 0 claims and tells the others."""
    chosen = [wanted]
    if rt.is_main:
        n = 1
        candidate = wanted
        while True:
            legacy = (candidate / "checkpoints").exists() or (candidate / "metrics.jsonl").exists()
            if not legacy:
                try:
                    candidate.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise ConfigError(
                        f"output_dir {candidate} cannot be created ({e.strerror or e}: "
                        f"{e.filename or candidate}); choose a folder under a writable directory."
                    ) from e
                try:
                    fd = os.open(
                        candidate / ".carrot-run", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666
                    )
                except FileExistsError:
                    pass
                else:
                    os.write(fd, f"{os.getpid()}\n{claim_note()}".encode())
                    os.close(fd)
                    break
            n += 1
            candidate = wanted.with_name(f"{wanted.name}-{n}")
        chosen[0] = candidate
        if candidate != wanted:
            how = (
                f"continue it with `carrot train --resume {wanted}`"
                if (wanted / "checkpoints" / "last.pt").exists()
                else "it saved no checkpoint: remove the folder to reuse its name"
            )
            print(
                f"{wanted} already holds a run ({how}); this run goes to {candidate}.", flush=True
            )
    if rt.distributed:
        dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


_TRACKER_FILES = ("trackers.json", "metrics.csv", "metrics_steps.csv")


def release_run_dir(run_dir: Path) -> None:
    """Undo :func:`claim_run_dir` for a start that failed before any checkpoint: remove what the
    start wrote (the claim, config.yaml, environment.json, metrics.jsonl, TensorBoard events) and
    the folder if nothing else is in it."""
    import shutil

    if (run_dir / "checkpoints").exists():
        return
    for name in (
        ".carrot-run",
        "config.yaml",
        "environment.json",
        "metrics.jsonl",
        "data.json",
        "val_split.json",
        *_TRACKER_FILES,
    ):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    shutil.rmtree(run_dir / "wandb", ignore_errors=True)  # the failed start's W&B files
    try:
        run_dir.rmdir()
    except OSError:
        pass  # the user's own files are in it


def check_images_once(splits: Splits, cfg: Config, rt: Runtime) -> None:
    """Decode every image file of the splits (cached by path, size and mtime) before any
    training, and report all unreadable files of all of them at once. Rank 0 checks; all ranks
    raise."""
    from carrot.data import DatasetError
    from carrot.data.check import check_images

    problem: list[Any] = [None]
    if rt.is_main:
        named = [("train", splits.train), ("validation", splits.val), ("test", splits.test)]
        for name, split in named:
            paths = getattr(split, "paths", None)
            if not paths:
                continue
            bar = Progress(
                total=len(paths),
                desc=f"checking {len(paths)} {name} images",
                enabled=cfg.train.progress and len(paths) > 2000,
            )
            try:
                check_images(paths, what=f"{cfg.data.name} ({name} split)", progress=bar.update)
            except ValueError as e:  # keep going: report every split at once
                problem[0] = f"{problem[0]}\n{e}" if problem[0] else str(e)
            finally:
                bar.close()
    if rt.distributed:
        dist.broadcast_object_list(problem, src=0)
    if problem[0] is not None:
        raise DatasetError(problem[0])


def steps_per_epoch(cfg: Config, sampler: Any) -> int:
    """Optimizer steps in an epoch: P×K batches / accumulation, capped by max_steps_per_epoch."""
    micro = len(sampler) + sampler.state_dict()["start_batch"]
    steps = micro // cfg.train.accum_steps
    if cfg.train.max_steps_per_epoch is not None:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    if steps < 1:
        raise ValueError(
            f"an epoch of {micro} P×K batches makes no optimizer step with train.accum_steps="
            f"{cfg.train.accum_steps}; lower train.accum_steps or train.batch_size."
        )
    return steps


def channels_last(cfg: Config, model: nn.Module, device: torch.device) -> bool:
    """train.channels_last, or by default: on for convolutional backbones on CUDA (a patch
    embedding alone does not make a CNN)."""
    if cfg.train.channels_last is not None:
        return cfg.train.channels_last
    convs = sum(isinstance(m, nn.Conv2d) for m in model.backbone.modules())  # type: ignore[union-attr]
    return device.type == "cuda" and convs > 1


def open_run_folder(cfg: Config, run_dir: Path, rt: Runtime, resumed: Any = None) -> Trackers:
    """Write config.yaml (data preprocessing resolved) and environment.json; return the run's
    trackers (``train.loggers``, see :func:`carrot.train.loggers.open_trackers`). ``resumed``:
    the restored training state (its ``history`` and ``step``) of a resumed run, else None."""
    from carrot.train.loggers import open_trackers

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_text(
        run_dir / "environment.json", dump_json(environment_info(rt.world_size, rt.device))
    )
    if resumed is None:
        return open_trackers(cfg, run_dir, resumed=False)
    return open_trackers(cfg, run_dir, resumed=True, history=resumed.history, step=resumed.step)


def build_run_model(
    cfg: Config, splits: Splits, device: torch.device, checkpoint: dict[str, Any] | None
) -> tuple[FGVCModel, bool]:
    """The run's model on ``device`` (channels-last where :func:`channels_last` says so, which
    it returns too), with the data's preprocessing resolved from its backbone. A resumed run
    takes every weight from its checkpoint: none is downloaded or read."""
    model_cfg = (
        cfg.model
        if checkpoint is None
        else replace(cfg.model, pretrained=False, pretrained_path=None)
    )
    model = build_model(
        model_cfg,
        num_classes=splits.num_classes,
        in_chans=splits.in_chans,
        image_size=cfg.data.image_size,
    ).to(device)
    resolve_data_config(cfg, model.backbone, splits.train)
    last = channels_last(cfg, model, device)
    return (model.to(memory_format=torch.channels_last) if last else model), last


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``train.amp`` (off: none)."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
