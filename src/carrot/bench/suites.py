"""Suites as data: what ``carrot bench accuracy`` runs, read from YAML.

A suite file (the packaged ones are in ``carrot/bench/suites/``)::

    description: what the suite measures
    seeds: [0, 1, 2, 3, 4]
    common: [train.progress=false]        # every run of the suite, first
    pins: []                              # every method's runs, just before the method's own
    variants:                             # named methods of this suite (the --methods-file schema)
      carrot_l5: {label: "CARROT, λ=5", baseline: ce, overrides: {method: carrot, carrot.lam: 5}}
    pretrain:                             # optional: backbones pretrained once per seed
      source: {label: ..., config: base.yaml, overrides: [method=ce, data.name=synthetic]}
    datasets:
      digits:
        label: sklearn digits
        config: base.yaml                 # optional carrot train config, relative to this file
        pretrained: source                # optional: fine-tune the backbone of that pretraining
        overrides: [data.name=digits, train.epochs=6]
    methods: [ce, carrot]                 # every dataset × these methods, or per dataset:
    grid:
      - {datasets: [digits], methods: [ce, carrot_l5]}

Overrides are ``key=value`` strings (as on the ``carrot train`` command line) or a mapping
``{key: value}``. A run's settings are, in order: the dataset's ``config`` file, ``common``, the
dataset's overrides, the pretrained weights (if ``pretrained``), ``pins``, the method's overrides,
the seed and the run folder.

Methods are the trainer's (:func:`trainer_methods`: every method of :mod:`carrot.methods`, and
any composition ``BASE+ADDED`` named in a suite or ``--methods``), the packaged named variants
(``carrot/bench/methods.yaml``), those of ``--methods-file`` and the suite's ``variants``; each
names the baseline it is compared with on the same seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carrot.bench.suite_yaml import (
    _check_keys,
    _mapping,
    _names,
    _overrides,
    _read_yaml,
    _resources,
    _where,
)
from carrot.bench.variants import (
    TRAINER_METHODS,
    MethodSpec,
    _with_composed,
    load_methods,
    packaged_methods,
    parse_methods,
    trainer_method,
    trainer_methods,
)
from carrot.counts import MAX_SEED, MAX_SEEDS
from carrot.methods import default_method
from carrot.paths import plain_name

__all__ = [
    "TRAINER_METHODS",
    "DatasetSpec",
    "MethodSpec",
    "Suite",
    "config_suite",
    "load_methods",
    "load_suite",
    "packaged_suites",
    "parse_methods",
    "suite_from_dict",
    "trainer_method",
    "trainer_methods",
]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    label: str
    overrides: tuple[str, ...]
    config: Path | None = None
    """A ``carrot train`` config file the overrides apply to (None: the trainer's defaults)."""
    pretrained: str | None = None
    """The suite's pretraining source whose backbone (same seed) this dataset fine-tunes."""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    seeds: tuple[int, ...]
    datasets: Mapping[str, DatasetSpec]
    methods: Mapping[str, MethodSpec]
    """Every method the suite can run (the trainer's, the variants), by name."""
    grid: tuple[tuple[str, tuple[str, ...]], ...]
    """(dataset, methods) pairs, in the order the cells run."""
    common: tuple[str, ...] = ()
    pins: tuple[str, ...] = ()
    pretrain: Mapping[str, DatasetSpec] = field(default_factory=dict)


_SUITE_KEYS = (
    "description", "seeds", "common", "pins", "variants", "pretrain", "datasets", "methods", "grid",
)  # fmt: skip
_DATASET_KEYS = ("label", "config", "pretrained", "overrides")


def packaged_suites() -> list[str]:
    """Names of the suites shipped with carrot (``--suite NAME``)."""
    folder = _resources() / "suites"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def _dataset(name: str, spec: Any, source: str, key: str, base_dir: Path | None) -> DatasetSpec:
    plain_name(name, f"{_where(source, key)}: the name")
    spec = _check_keys(spec, _DATASET_KEYS, source, key)
    config = spec.get("config")
    path = None
    if config is not None:
        path = Path(str(config)).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ValueError(f"{_where(source, key)}.config: {path} does not exist.")
    pretrained = spec.get("pretrained")
    return DatasetSpec(
        name,
        str(spec.get("label", name)),
        _overrides(spec.get("overrides"), source, f"{key}.overrides"),
        config=path,
        pretrained=None if pretrained is None else str(pretrained),
    )


def _seeds(data: Any, source: str) -> tuple[int, ...]:
    if (
        not isinstance(data, list)
        or not 0 < len(data) <= MAX_SEEDS
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in data
        )
        or len(set(data)) != len(data)
    ):
        shown = (
            repr(data) if not isinstance(data, list) or len(data) <= 20 else f"{len(data)} seeds"
        )
        raise ValueError(
            f"{source}: seeds must be a list of 1 to {MAX_SEEDS} distinct integers in "
            f"[0, 2**63 - 1], got {shown}."
        )
    return tuple(data)


def suite_from_dict(
    data: Any,
    *,
    name: str,
    source: str,
    base_dir: Path | None = None,
    methods: Mapping[str, MethodSpec] | None = None,
) -> Suite:
    """A suite from its YAML mapping; ``methods`` are the ones it may name besides its own
    ``variants`` (default: the packaged ones)."""
    data = _check_keys(data, _SUITE_KEYS, source, "")
    for required in ("seeds", "datasets"):
        if required not in data:
            raise ValueError(f"{source} needs {required!r}.")
    if ("methods" in data) == ("grid" in data):
        raise ValueError(
            f"{source} needs exactly one of 'methods' (every dataset × these methods) and 'grid' "
            "(a list of {datasets: [...], methods: [...]})."
        )
    known = dict(packaged_methods() if methods is None else methods)
    known.update(parse_methods(data.get("variants"), source, known=known, key="variants"))
    datasets = {
        k: _dataset(k, v, source, f"datasets.{k}", base_dir)
        for k, v in _mapping(data["datasets"], source, "datasets").items()
    }
    if not datasets:
        raise ValueError(f"{source}: datasets must define at least one dataset.")
    pretrain = {
        k: _dataset(k, v, source, f"pretrain.{k}", base_dir)
        for k, v in _mapping(data.get("pretrain"), source, "pretrain").items()
    }
    for spec in pretrain.values():  # ignored otherwise; and `pretrained: itself` is a cycle
        if spec.pretrained is not None:
            raise ValueError(
                f"{source}: pretrain.{spec.name}.pretrained must be absent (a pretraining starts "
                f"from its own config, not another pretraining), got {spec.pretrained!r}."
            )
    for spec in datasets.values():
        if spec.pretrained is not None and spec.pretrained not in pretrain:
            raise ValueError(
                f"{source}: datasets.{spec.name}.pretrained names {spec.pretrained!r}, which is "
                f"not in pretrain ({', '.join(pretrain) or 'none defined'})."
            )
    if "methods" in data:
        entries = [{"datasets": list(datasets), "methods": data["methods"]}]
    else:
        entries = data["grid"]
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{source}: grid must be a non-empty list.")
    grid: list[tuple[str, tuple[str, ...]]] = []
    for i, entry in enumerate(entries):
        where = "methods" if "methods" in data else f"grid[{i}]"
        entry = _check_keys(entry, ("datasets", "methods"), source, where)
        ms = _names(entry.get("methods"), source, f"{where}.methods")
        for m in ms:
            if not _with_composed(known, m):
                raise ValueError(
                    f"{source}: {where} names method {m!r}, which is not defined; known methods: "
                    f"{', '.join(known)}. Define it under variants or in a --methods-file."
                )
        for dataset in _names(entry.get("datasets"), source, f"{where}.datasets"):
            if dataset not in datasets:
                raise ValueError(
                    f"{source}: {where} names dataset {dataset!r}, which is not under datasets "
                    f"({', '.join(datasets)})."
                )
            grid.append((dataset, ms))
    return Suite(
        name=name,
        description=str(data.get("description", name)).strip(),
        seeds=_seeds(data["seeds"], source),
        datasets=datasets,
        methods=known,
        grid=tuple(grid),
        common=_overrides(data.get("common"), source, "common"),
        pins=_overrides(data.get("pins"), source, "pins"),
        pretrain=pretrain,
    )


def load_suite(suite: str | Path, *, methods_file: str | Path | None = None) -> Suite:
    """A packaged suite by name (``quick``, ``transfer``...) or a suite file."""
    methods = load_methods(methods_file)
    names = packaged_suites()
    if str(suite) in names:
        text = (_resources() / "suites" / f"{suite}.yaml").read_text(encoding="utf-8")
        return suite_from_dict(
            _read_yaml(text, f"{suite}.yaml"),
            name=str(suite),
            source=f"suite {suite}",
            methods=methods,
        )
    path = Path(suite).expanduser()
    if not path.is_file():
        raise ValueError(
            f"--suite must be one of {names} or a suite file (.yaml), got {str(suite)!r}."
        )
    return suite_from_dict(
        _read_yaml(path.read_text(), str(path)),
        name=plain_name(path.stem, f"the suite file name {path.name!r} (without .yaml)"),
        source=str(path),
        base_dir=path.parent,
        methods=methods,
    )


CONFIG_COMMON = ("train.progress=false",)
"""What ``--config`` mode adds to every run: the progress goes to each run's log file."""


def config_suite(
    config: str | Path,
    overrides: Sequence[str] = (),
    *,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    methods_file: str | Path | None = None,
) -> Suite:
    """``carrot bench accuracy --config BASE.yaml KEY=VALUE ...``: one dataset, BASE with the
    overrides; ``methods`` (default: the registry's ``default`` methods, i.e. carrot) plus
    the baselines they name (``A+B``'s baseline is A)."""
    from carrot.train.config import load_config

    path = Path(config).expanduser()
    cfg = load_config(path, list(overrides))  # fails early on a bad file or override
    known = load_methods(methods_file)
    wanted: list[str] = []

    def add(m: str) -> None:
        if not _with_composed(known, m):
            raise ValueError(f"unknown method {m!r}; known methods: {', '.join(known)}.")
        base = known[m].baseline
        if base is not None and base not in wanted:
            add(base)
        if m not in wanted:
            wanted.append(m)

    for m in methods or [default_method()]:
        add(m)
    name = plain_name(path.stem, f"the config file name {path.name!r} (without .yaml)")
    dataset = DatasetSpec(
        name,
        f"{path}: {cfg.data.name}, {cfg.model.backbone}",
        tuple(overrides),
        config=path,
    )
    return Suite(
        name=name,
        description=f"{path} {' '.join(overrides)}".strip(),
        seeds=tuple(seeds),
        datasets={name: dataset},
        methods=known,
        grid=((name, tuple(wanted)),),
        common=CONFIG_COMMON,
    )
