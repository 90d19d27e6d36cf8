"""The runs of a suite as data: its cells (dataset × method × seed) and pretrainings, each a
:class:`Job` (a ``carrot train`` command's config and overrides) with its run folder under --out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from carrot.bench.suites import Suite
from carrot.paths import inside, plain_name

if TYPE_CHECKING:
    from carrot.train.config import Config

__all__ = [
    "Cell",
    "Job",
    "cell_job",
    "cells",
    "pretrain_dir",
    "pretrain_job",
    "weights_path",
]


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    seed: int

    def run_dir(self, out: Path) -> Path:
        """``out/runs/DATASET/METHOD/sSEED``; refused unless the names are plain and the folder
        resolves inside ``out`` (a symlink out is refused too)."""
        run = (
            out
            / "runs"
            / plain_name(self.dataset, "dataset name")
            / plain_name(self.method, "method name")
            / f"s{int(self.seed)}"
        )
        return inside(run, out, "run folder")


@dataclass(frozen=True)
class Job:
    """One ``carrot train`` run: ``carrot train [--config CONFIG] OVERRIDES...`` into ``run_dir``."""

    run_dir: Path
    config: Path | None
    overrides: tuple[str, ...]
    ignore: tuple[str, ...] = ()
    """Keys not compared with a saved run (besides output_dir): what depends only on --out."""

    @property
    def log(self) -> Path:
        return self.run_dir.parent / f"{self.run_dir.name}.log"

    def load(self) -> Config:
        """The run's config, as ``carrot train`` would build it."""
        from carrot.train.config import load_config

        return load_config(self.config, list(self.overrides))


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


def pretrain_dir(out: Path, source: str, seed: int) -> Path:
    """The run folder of a pretraining run (inside ``out``, see :meth:`Cell.run_dir`)."""
    run = out / "pretrain" / plain_name(source, "pretraining name") / f"s{int(seed)}"
    return inside(run, out, "pretraining folder")


def weights_path(out: Path, source: str, seed: int) -> Path:
    """The backbone weights of a pretraining run (written by :func:`export_backbone`)."""
    return pretrain_dir(out.resolve(), source, seed) / "backbone.safetensors"


def _literal(path: Path) -> str:
    """``path`` as an output_dir template: braces in --out are not placeholders."""
    return str(path).replace("{", "{{").replace("}", "}}")


def _sets_scratch(overrides: Sequence[str]) -> bool:
    """Whether the last ``model.pretrained=...`` of ``overrides`` turns pretraining off (a
    variant trained from scratch on a fine-tuning dataset: it gets no weights path)."""
    from carrot.train.config import parse_scalar

    value = None
    for item in overrides:
        key, _, text = item.partition("=")
        if key.strip() == "model.pretrained":
            value = parse_scalar(text)
    return value is False or (isinstance(value, str) and value.lower() in ("false", "no", "off"))


def cell_job(suite: Suite, cell: Cell, out: Path, extra: Sequence[str] = ()) -> Job:
    dataset = suite.datasets[cell.dataset]
    pretrained: tuple[str, ...] = ()
    later = (*suite.pins, *suite.methods[cell.method].overrides, *extra)
    if dataset.pretrained is not None and not _sets_scratch(later):
        pretrained = (
            "model.pretrained=true",
            f"model.pretrained_path={weights_path(out, dataset.pretrained, cell.seed)}",
        )
    run = cell.run_dir(out)
    overrides = (
        *suite.common,
        *dataset.overrides,
        *pretrained,
        *suite.pins,
        *suite.methods[cell.method].overrides,
        f"seed={cell.seed}",
        f"output_dir={_literal(run)}",
        *extra,
    )
    # The weights' path follows --out; the pretraining run they come from is matched on its own.
    ignore = ("model.pretrained_path",) if dataset.pretrained is not None else ()
    return Job(run, dataset.config, overrides, ignore)


def pretrain_job(suite: Suite, source: str, seed: int, out: Path, extra: Sequence[str] = ()) -> Job:
    spec = suite.pretrain[source]
    run = pretrain_dir(out, source, seed)
    overrides = (
        *suite.common, *spec.overrides, f"seed={seed}", f"output_dir={_literal(run)}", *extra
    )  # fmt: skip
    return Job(run, spec.config, overrides)
