"""The tuned study of docs/study_protocol.md: the pieces ``scripts/study_tuned.sh`` needs between
its ``carrot tune`` and ``carrot bench accuracy`` steps.

``python benchmarks/study_tuned.py best-baseline TUNE_DIR`` prints B, the protocol's best tuned
baseline (highest best-trial validation top-1; ties: the first in ``BASELINES``).
``python benchmarks/study_tuned.py suite OUT TUNE_DIR GUIDE_DIR B [PLUS_DIR]`` writes
``OUT/study_tuned.yaml`` (B+carrot's tuning read from PLUS_DIR, default TUNE_DIR),
the confirmation suite: the study's datasets, every method untuned and tuned (its variants: each
method with its best trial's settings, the guide's recipe with its own tuned shared settings).
``python benchmarks/study_tuned.py freeze OUT DEST`` copies the files that
``carrot bench accuracy --tuned`` reads (``tune.json``, ``base.yaml``, ``<method>/best.json`` and
``best.yaml``, ``tune.md``) into the repository, so that the confirmation reruns without tuning.
``python benchmarks/study_tuned.py doc OUT`` prints the results section of docs/results.md from
the reports ``OUT/confirm/confirm_<dataset>/`` and ``confirm_all``, the tuning's ``tune.md`` files
and ``OUT/times.tsv``: the verdict under it is written by hand.
A developer's tool: it lives beside the package, not in the wheel.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from carrot.yamlfile import load_yaml

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


def tuned_variants(
    tune_dir: Path, guide_dir: Path, b: str, plus_dir: Path | None = None
) -> dict[str, Any]:
    """The methods file of the tuned variants; each compared with its tuned baseline. ``B+carrot``
    is read from ``plus_dir`` (default: ``tune_dir``)."""
    out: dict[str, Any] = {}
    plus = f"{b}+carrot"
    for method in (*SINGLE, plus):
        params = _best((plus_dir or tune_dir) if method == plus else tune_dir, method)["params"]
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
    study = load_yaml(text)  # the project's strict reader, as the bench reads its suites
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


def freeze(out: Path, dest: Path) -> None:
    """Copy what ``carrot bench accuracy --tuned`` reads (and the reports) of the three tunings
    of ``out`` (``tune``, ``tune_guide``, ``tune_plus``) into ``dest``."""
    for src, name in (
        (out / "tune", "methods"),
        (out / "tune_guide", "guide"),
        (out / "tune_plus", "plus"),
    ):
        target = dest / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for file in ("tune.json", "base.yaml"):
            shutil.copy2(src / file, target / file)
        # tune.md without its figures (they stay in the study's folder, not in the repository)
        report = (src / "tune.md").read_text().splitlines(keepends=True)
        (target / "tune.md").write_text("".join(x for x in report if not x.startswith("![")))
        tuned = json.loads((src / "tune.json").read_text())["methods"]
        for method_dir in sorted(src / m for m in tuned if (src / m / "best.json").is_file()):
            (target / method_dir.name).mkdir()
            for file in ("best.json", "best.yaml"):
                if (method_dir / file).is_file():
                    shutil.copy2(method_dir / file, target / method_dir.name / file)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _num(x: str, digits: int = 2) -> str:
    try:
        v = float(x)
    except ValueError:
        return x or "n/a"
    if math.isnan(v):
        return "n/a"
    return f"{v:.{digits}f}"


def _p(x: str) -> str:
    try:
        v = float(x)
    except ValueError:
        return "n/a"
    return "n/a" if math.isnan(v) else (f"{v:.3f}" if v >= 0.001 else f"{v:.1e}")


def _comparisons(report: Path, dataset: str) -> list[str]:
    rows = [
        r
        for r in _read(report / "comparisons.csv")
        if r["metric"] == "final_top1" and r["dataset"] == dataset
    ]
    lines = [
        "| dataset | method | baseline | n | method top-1 | Δ [95% CI] | p (Holm) | TOST p (Holm) "
        "| verdict (δ = 1) | seeds to detect / for ±δ |",
        "|---|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for r in rows:
        ci = f"{float(r['diff']):+.2f} [{float(r['ci_low']):+.2f}, {float(r['ci_high']):+.2f}]"
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['baseline']} | {r['n']} "
            f"| {_num(r['method_mean'])} | {ci} | {_p(r['holm_p'])} | {_p(r['tost_holm_p'])} "
            f"| {r['verdict']} | {r['seeds_to_detect'] or 'n/a'} / "
            f"{r['seeds_for_equivalence'] or 'n/a'} |"
        )
    return lines


def _bayes(report: Path) -> list[str]:
    path = report / "bayes.csv"
    rows = [r for r in _read(path) if r["metric"] == "final_top1"] if path.is_file() else []
    if not rows:
        return []
    lines = [
        "| method | baseline | datasets | P(worse) | P(within ±1) | P(better) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['baseline']} | {r['datasets']} | {_num(r['p_worse'], 3)} "
            f"| {_num(r['p_equivalent'], 3)} | {_num(r['p_better'], 3)} |"
        )
    return lines


def _tuned(folder: Path) -> list[str]:
    lines = []
    for best in sorted(folder.glob("*/best.json")):
        data = json.loads(best.read_text())
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in data["params"].items()
        )
        lines.append(f"| {best.parent.name} | {float(data['value']):.2f} | {params} |")
    return lines


def doc(out: Path) -> str:
    """The markdown of the tuned study's results (see the module's doc)."""
    times = {
        line.split("\t")[0]: int(line.split("\t")[1])
        for line in (out / "times.tsv").read_text().splitlines()
        if line.strip()
    }
    parts = [
        "Wall time (2 CPU cores, 2 workers): "
        + ", ".join(f"{k} {v // 60} min {v % 60} s" for k, v in times.items())
        + f"; in all {sum(times.values()) // 60} min.",
        "",
        "#### Tuned settings (best validation top-1 on synth_hard, 8 trials each)",
        "",
        "| method | best validation top-1 | settings |",
        "|---|---:|---|",
    ]
    for folder in ("tune", "tune_guide", "tune_plus"):
        rows = _tuned(out / folder)
        if folder == "tune_guide":
            rows = [r.replace("| carrot |", "| carrot_guide |", 1) for r in rows]
        parts.extend(r for r in rows if "+carrot |" not in r or folder == "tune_plus")
    report = out / "confirm" / "confirm_all"  # Holm over every comparison of every dataset
    for name in ("synth_hard", "digits", "fmnist100"):
        if not (out / "confirm" / f"confirm_{name}" / "comparisons.csv").is_file():
            parts += ["", f"#### {name}: not run (the protocol's cut-off)"]
            continue
        parts += ["", f"#### Confirmation on {name}, seeds 10-14, final-epoch test top-1", ""]
        parts += _comparisons(report, name)
    if (report / "bayes.csv").is_file():
        parts += ["", "#### Bayesian comparison over the datasets (baycomp, ROPE ±1 point)", ""]
        parts += _bayes(report)
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["best-baseline"] and len(args) == 2:
        print(best_baseline(Path(args[1])))
        return 0
    if args[:1] == ["suite"] and len(args) in (5, 6):
        out, tune_dir, guide_dir, b = Path(args[1]), Path(args[2]), Path(args[3]), args[4]
        variants = tuned_variants(tune_dir, guide_dir, b, Path(args[5]) if len(args) == 6 else None)
        suite = confirmation_suite([*_untuned(b), *variants])
        suite["variants"] = variants
        (out / "study_tuned.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
        return 0
    if args[:1] == ["freeze"] and len(args) == 3:
        freeze(Path(args[1]), Path(args[2]))
        return 0
    if args[:1] == ["doc"] and len(args) == 2:
        print(doc(Path(args[1])), end="")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
