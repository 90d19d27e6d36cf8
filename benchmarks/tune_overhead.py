"""The tuner's own cost per trial: ``carrot tune`` of one configuration against plain
``carrot train`` runs of the same configuration (both as a user runs them: real processes).

Every trial trains the same settings (``--space`` pins train.lr and train.weight_decay to one
value each), so the difference is the tuner's: the storage (SQLite), sampling, the pruner's
per-epoch report and check, the report and figures at the end, and the command's start spread
over the trials; a plain run pays its own process start every time.

  A: plain ``carrot train``, wall seconds per run (process start included)
  S: the process start alone (``carrot train --print-config``: imports, no training)
  B: ``carrot tune --trials K``, wall seconds per trial
  overhead per trial = B - (A - S), as a % of the training it wraps and of a 30-second trial

Run: PYTHONPATH=src python benchmarks/tune_overhead.py [--trials 6] [--runs 3] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = [  # ~10 s of training per run on one CPU core
    "data.name=digits",
    "method=ce",
    "train.epochs=3",
    "train.max_steps_per_epoch=20",
    "train.device=cpu",
    "train.plots=false",
    "train.loggers=[]",
    "train.progress=false",
    "train.lr=0.05",
    "train.weight_decay=0.0005",
]
SPACE = "all:\n  train.lr: [0.05]\n  train.weight_decay: [0.0005]\n"


def _child_tune(argv: list[str]) -> int:
    """``carrot tune`` in this process."""
    from carrot.cli import main

    return main(argv)


def _timed(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    if sys.argv[1:2] == ["--child-tune"]:
        sys.exit(_child_tune(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = [*CONFIG, *args.overrides]
    val = ["data.val_split=fraction"]
    py = [sys.executable]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = min(
            _timed([*py, "-m", "carrot.cli", "train", "--print-config", *config]) for _ in range(2)
        )
        plain = [
            _timed([*py, "-m", "carrot.cli", "train", *config, f"output_dir={root / f'plain{i}'}"])
            for i in range(args.runs)
        ]
        (root / "space.yaml").write_text(SPACE)
        tune = _timed([
            *py, __file__, "--child-tune", "tune", "--methods", "ce", "--trials", str(args.trials),
            "--out", str(root / "tune"), "--space", str(root / "space.yaml"), *config, *val,
        ])  # fmt: skip
    a = sorted(plain)[len(plain) // 2]
    b = tune / args.trials
    overhead = b - (a - start)
    print(f"config: {' '.join(config)}")
    print(f"A  plain carrot train, median of {args.runs}: {a:.2f} s per run")
    print(f"S  process start (--print-config), best of 2: {start:.2f} s")
    print(f"B  carrot tune, {args.trials} trials: {tune:.2f} s, {b:.2f} s per trial")
    print(f"ratio B / A: {b / a:.3f}")
    print(
        f"tuner overhead per trial B - (A - S): {overhead:+.2f} s = "
        f"{100 * overhead / (a - start):+.1f}% of this training, "
        f"{100 * overhead / 30:+.1f}% of a 30-second trial"
    )


if __name__ == "__main__":
    main()
