"""The speed benchmarks run and report ratios (timings themselves are not asserted)."""

from __future__ import annotations

import pytest
import torch

from carrot.bench.speed import operator_timings, sampler_timings, straightforward_operator
from carrot.functional import carrot_operator


def test_straightforward_operator_is_the_guide_formula() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat_interleave(4)
    z = torch.nn.functional.normalize(
        torch.randn(6, 8, generator=g, dtype=torch.float64)[y]
        + 0.1 * torch.randn(24, 8, generator=g, dtype=torch.float64),
        dim=1,
    )
    ours, stats = carrot_operator(z, y)
    assert (stats["gamma"] > 1).any()
    torch.testing.assert_close(
        straightforward_operator(z, y, detach_stats=True), ours, rtol=1e-6, atol=1e-8
    )


def test_operator_and_sampler_timings_produce_ratios() -> None:
    rows = list(operator_timings(batches=(16,), dims=(8,), repeats=1))
    assert len(rows) == 2 and all(r.ratio > 0 for r in rows)
    samplers = list(sampler_timings((("tiny", 400, 20),), batch_size=16, k=4))
    pk = next(s for s in samplers if s.sampler == "PKSampler")
    assert pk.coverage > 0.95 and pk.epoch_s >= 0


@pytest.mark.slow
def test_the_compiled_carrot_step_adds_at_most_ten_kernels_to_ce() -> None:
    from carrot.bench.kernels import kernel_counts

    counts = {c.step: c for c in kernel_counts(batch=32, dim=64, classes=20)}
    ce, carrot = counts["CE alone"], counts["carrot, sync_free"]
    assert ce.eager_ops > 0 and carrot.eager_ops > ce.eager_ops
    assert counts["guide's code"].eager_ops > ce.eager_ops
    assert ce.compiled_kernels is not None and carrot.compiled_kernels is not None
    assert ce.compiled_kernels < carrot.compiled_kernels <= ce.compiled_kernels + 10
    assert counts["carrot (torch.unique)"].compiled_kernels is None


@pytest.mark.slow
def test_the_gpu_check_script_runs_its_parts_on_the_cpu(tmp_path) -> None:
    """The GPU minutes go to measuring: every part of benchmarks/gpu_check.py runs here first."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=600,
    )
    report = json.loads(out.read_text())
    for part in ("correctness", "operator_speed", "step_overhead", "trainer_vs_minimal"):
        assert part in report and "error" not in report[part], (part, report.get(part))
    assert report["correctness"]["sync_free_vs_compact_max_abs"] < 1e-6
    row = next(iter(report["step_overhead"].values()))
    assert {"eager: carrot sync_free / CE", "compiled: carrot sync_free / CE"} <= row.keys()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--only", "step", "--methods", "nosuch"], "got 'nosuch'"),
        (["--methods", "ce", "--batch", "6"], "--batch must be a multiple of K = 4"),
        (["--only", "step", "operator", "--backbone", "resnet_nope"], "got 'resnet_nope'"),
    ],
)
def test_bad_step_arguments_are_refused_before_any_section_runs(args, needle, capsys) -> None:
    from cli_run import carrot_main, one_line_error

    done = carrot_main(capsys, "bench", "speed", "--quick", *args)
    one_line_error(done, needle)
    assert done.stdout == "", done.stdout  # not even the operator section's header


@pytest.mark.slow
def test_the_step_section_times_each_method_against_its_baseline() -> None:
    import math
    import re

    from cli_run import carrot_cli

    done = carrot_cli(
        "bench", "speed", "--quick", "--only", "step", "--methods", "center_loss",
        "maxent+carrot", "--image-size", "32", "--batch", "16", timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "timm resnet18 @ 32 px, batch 16 (P=4, K=4)" in done.stdout
    pattern = r"time/step: (\S+) [\d.]+ ms, (\S+) [\d.]+ ms, ratio ([\d.]+)"
    rows = re.findall(pattern, done.stdout)
    assert [(base, method) for base, method, _ in rows] == [
        ("ce", "center_loss"),
        ("maxent", "maxent+carrot"),
    ]
    assert all(0 < float(ratio) < math.inf for *_, ratio in rows)
    assert len(re.findall(r"peak memory: \S+ \d+ MiB, \S+ \d+ MiB, ratio [\d.]+", done.stdout)) == 2
