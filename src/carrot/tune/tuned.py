"""``carrot bench accuracy --tuned DIR``: every tuned method at its tuned configuration, on the
full training set, on seeds other than the tuning seeds, compared as usual (no Optuna needed).

Each method is its base config (``DIR/base.yaml``, no validation split) with the best trial's
settings (``DIR/<method>/best.json``) as its overrides; a method is compared with its baseline
when the baseline was tuned too (an untuned baseline would not be an equal-budget comparison).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from carrot.bench.suites import CONFIG_COMMON, DatasetSpec, MethodSpec, Suite, trainer_method
from carrot.paths import plain_name

__all__ = ["tuned_seeds", "tuned_suite"]


def tuned_seeds(tuning: Sequence[int], seeds: Sequence[int] | None, count: int = 5) -> list[int]:
    """``seeds`` if none of them was a tuning seed (else ``ValueError``); default: the first
    ``count`` non-negative seeds that were not."""
    if seeds is not None:
        overlap = sorted(set(seeds) & set(tuning))
        if overlap:
            raise ValueError(
                f"--seeds must not include the tuning seed(s) {sorted(set(tuning))} (a tuned "
                f"configuration is judged on seeds it was not chosen on), got {overlap}."
            )
        return list(seeds)
    out: list[int] = []
    seed = 0
    while len(out) < count:
        if seed not in tuning:
            out.append(seed)
        seed += 1
    return out


def tuned_suite(
    out: str | Path, *, seeds: Sequence[int] | None = None, methods: Sequence[str] | None = None
) -> Suite:
    """The suite of a tuning folder ``out`` (see the module's doc)."""
    folder = Path(out)
    manifest_path = folder / "tune.json"
    if not manifest_path.is_file():
        raise ValueError(f"--tuned {folder} holds no carrot tune results (tune.json is missing).")
    manifest = json.loads(manifest_path.read_text())
    tuned = list(manifest["methods"])
    unknown = sorted(set(methods or ()) - set(tuned))
    if unknown:
        raise ValueError(f"--methods {unknown} were not tuned in {folder}; tuned: {tuned}.")
    wanted = [m for m in tuned if not methods or m in methods]
    specs: dict[str, MethodSpec] = {}
    for m in wanted:
        best = folder / m / "best.json"
        if not best.is_file():
            raise ValueError(
                f"{m} has no tuned configuration in {folder} ({best} is missing: no complete "
                "trial yet; rerun carrot tune)."
            )
        params = json.loads(best.read_text())["params"]
        plain = trainer_method(m)
        specs[m] = MethodSpec(
            m,
            f"{m} (tuned)",
            plain.baseline if plain.baseline in wanted else None,
            (f"method={m}", *(f"{k}={json.dumps(v)}" for k, v in params.items())),
        )
    name = plain_name(f"tuned-{folder.resolve().name}", "the --tuned folder's name")
    base = folder / "base.yaml"
    dataset = DatasetSpec(name, f"{folder}: tuned ({manifest['objective']})", (), config=base)
    return Suite(
        name=name,
        description=f"methods tuned in {folder}",
        seeds=tuple(tuned_seeds(manifest["seeds"], seeds)),
        datasets={name: dataset},
        methods=specs,
        grid=((name, tuple(wanted)),),
        common=CONFIG_COMMON,
    )
