"""The tuned study of docs/study_protocol.md: the pieces ``scripts/study_tuned.sh`` needs between
its ``carrot tune`` and ``carrot bench accuracy`` steps.

``python benchmarks/study_tuned.py best-baseline TUNE_DIR`` prints B, the protocol's best tuned
baseline (highest best-trial validation top-1; ties: the first in ``BASELINES``).
``python benchmarks/study_tuned.py suite OUT TUNE_DIR GUIDE_DIR B`` writes ``OUT/study_tuned.yaml``,
the confirmation suite: the study's datasets, every method untuned and tuned (its variants: each
method with its best trial's settings, the guide's recipe with its own tuned shared settings).
``python benchmarks/study_tuned.py freeze TUNE_DIR GUIDE_DIR DEST`` copies the files that
``carrot bench accuracy --tuned`` reads (``tune.json``, ``base.yaml``, ``<method>/best.json`` and
``best.yaml``, ``tune.md``) into the repository, so that the confirmation reruns without tuning.
A developer's tool: it lives beside the package, not in the wheel.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BASELINES", "best_baseline", "confirmation_suite", "tuned_variants"]

SINGLE = ("ce", "carrot", "label_smoothing", "maxent", "pairwise_confusion", "center_loss", "isda")
"""The methods tuned by one ``carrot tune`` call (the protocol's table, but the guide and B+carrot)."""
BASELINES = ("label_smoothing", "maxent", "pairwise_confusion", "center_loss", "isda")
"""The candidates for B, in the protocol's tie-breaking order."""
DATASETS = ("synth_hard", "digits", "fmnist100")
"""The confirmation datasets, in the protocol's order (synth_hard is the tuning dataset)."""


def _best(folder: Path, method: str) -> dict[str, Any]:
    path = folder / method / "best.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: {method} has no complete trial in {folder}.")
    best: dict[str, Any] = json.loads(path.read_text())
    return best


def best_baseline(tune_dir: Path) -> str:
    """B: the baseline with the highest best-trial validation score (first in BASELINES on ties)."""
    scores = {m: float(_best(tune_dir, m)["value"]) for m in BASELINES}
    top = max(scores.values())
    return next(m for m in BASELINES if scores[m] == top)


def _variant_name(method: str) -> str:
    return method.replace("+", "_") + "_tuned"


def tuned_variants(tune_dir: Path, guide_dir: Path, b: str) -> dict[str, Any]:
    """The methods file of the tuned variants; each compared with its tuned baseline."""
    out: dict[str, Any] = {}
    plus = f"{b}+carrot"
    for method in (*SINGLE, plus):
        params = _best(tune_dir, method)["params"]
        baseline = {"ce": None, plus: _variant_name(b)}.get(method, "ce_tuned")
        out[_variant_name(method)] = {
            "label": f"{method}, tuned",
            "baseline": baseline,
            "overrides": {"method": method, **params},
        }
    guide = _best(guide_dir, "carrot")["params"]
    out["carrot_guide_tuned"] = {
        "label": "CARROT, the guide's recipe (λ=1, T=1, γ uncapped), shared settings tuned",
        "baseline": "ce_tuned",
        "overrides": {"method": "carrot", "carrot.guide": True, **guide},
    }
    return out


def confirmation_suite(methods: Sequence[str]) -> dict[str, Any]:
    """The packaged study suite's common settings and datasets (no pretraining regime), with
    ``methods`` and the protocol's confirmation seeds."""
    text = resources.files("carrot.bench").joinpath("suites/study.yaml").read_text()
    study = yaml.safe_load(text)
    return {
        "description": (
            "The tuned study's confirmation (docs/study_protocol.md): every method tuned on "
            "synth_hard's validation split and untuned, on it and two datasets the tuning never saw"
        ),
        "seeds": [10, 11, 12, 13, 14],
        "common": study["common"],
        "datasets": {d: study["datasets"][d] for d in DATASETS},
        "methods": list(methods),
    }


def _untuned(b: str) -> list[str]:
    return ["ce", "carrot", "carrot_guide", *BASELINES, f"{b}+carrot"]


def freeze(tune_dir: Path, guide_dir: Path, dest: Path) -> None:
    """Copy what ``carrot bench accuracy --tuned`` reads (and the reports) into ``dest``."""
    for src, name in ((tune_dir, "methods"), (guide_dir, "guide")):
        target = dest / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for file in ("tune.json", "base.yaml", "tune.md"):
            if (src / file).is_file():
                shutil.copy2(src / file, target / file)
        for method_dir in sorted(p for p in src.iterdir() if (p / "best.json").is_file()):
            (target / method_dir.name).mkdir()
            for file in ("best.json", "best.yaml"):
                if (method_dir / file).is_file():
                    shutil.copy2(method_dir / file, target / method_dir.name / file)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["best-baseline"] and len(args) == 2:
        print(best_baseline(Path(args[1])))
        return 0
    if args[:1] == ["suite"] and len(args) == 5:
        out, tune_dir, guide_dir, b = Path(args[1]), Path(args[2]), Path(args[3]), args[4]
        variants = tuned_variants(tune_dir, guide_dir, b)
        suite = confirmation_suite([*_untuned(b), *variants])
        suite["variants"] = variants
        (out / "study_tuned.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
        return 0
    if args[:1] == ["freeze"] and len(args) == 4:
        freeze(Path(args[1]), Path(args[2]), Path(args[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
