"""carrot bench accuracy never deletes or writes outside --out, and two benches on one --out
leave each other's live cells alone (issue 22, items 1 and 3)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from carrot.bench.grid import Cell, Job, _prepare, cell_lock
from carrot.bench.suites import suite_from_dict
from cli_run import SRC, carrot_cli, one_line_error


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("mine")
    return victim


def _intact(victim: Path) -> None:
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert (victim / "precious.txt").read_text() == "mine"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["../../../../victim", "/tmp/victim", ".."])
def test_a_method_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    victim = _victim(tmp_path)
    methods = tmp_path / "methods.yaml"
    methods.write_text(f'"{name}": {{baseline: ce, overrides: {{method: carrot}}}}\n')
    out = tmp_path / "work" / "out"
    base = tmp_path / "base.yaml"
    base.write_text("data: {name: digits}\ntrain: {device: cpu}\n")
    done = carrot_cli(
        "bench", "accuracy", "--config", base,
        "--methods-file", methods, "--methods", name, "--out", out, "--seeds", "0",
    )  # fmt: skip
    one_line_error(done, "must be a plain name", repr(name))
    _intact(victim)
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["../../x", "/abs"])
def test_a_report_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "results.md").write_text("mine")
    done = carrot_cli("bench", "accuracy", "--out", out, "--report-only", "--report-name", name)
    one_line_error(done, "--report-name must be a plain name")
    assert (tmp_path / "results.md").read_text() == "mine"


@pytest.mark.slow
def test_suite_names_of_datasets_variants_and_pretrainings_are_plain(tmp_path: Path) -> None:
    base = {
        "seeds": [0],
        "datasets": {"d": {"overrides": ["data.name=digits"]}},
        "methods": ["ce"],
    }
    bad = [
        {**base, "datasets": {"../d": {"overrides": ["data.name=digits"]}}},
        {**base, "variants": {"../v": {"baseline": "ce", "overrides": ["method=carrot"]}}},
        {**base, "pretrain": {"/p": {"overrides": ["method=ce"]}}},
    ]
    for data in bad:
        with pytest.raises(ValueError, match="must be a plain name"):
            suite_from_dict(data, name="s", source="s.yaml")
    suite_file = tmp_path / "a..b.yaml"
    suite_file.write_text("seeds: [0]\ndatasets: {d: {}}\nmethods: [ce]\n")
    done = carrot_cli("bench", "accuracy", "--suite", suite_file, "--out", tmp_path / "o")
    one_line_error(done, "must be a plain name")


def test_a_symlinked_cell_folder_is_not_followed(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    (out / "runs" / "d").mkdir(parents=True)
    (out / "runs" / "d" / "ce").symlink_to(victim, target_is_directory=True)
    with pytest.raises(ValueError, match="is not inside"):
        Cell("d", "ce", 0).run_dir(out)
    (out / "runs" / "d" / "ce").unlink()
    (out / "runs" / "d" / "ce").mkdir()
    (out / "runs" / "d" / "ce" / "s0").symlink_to(victim, target_is_directory=True)
    with pytest.raises(ValueError, match="is not inside"):
        Cell("d", "ce", 0).run_dir(out)
    _intact(victim)


HOLDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from carrot.bench.grid import Job, cell_lock
    run = Path(sys.argv[1])
    with cell_lock(Job(run, None, ())):
        run.mkdir(parents=True)
        (run / "live.txt").write_text("training")
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
        (run / "summary.json").write_text(json.dumps({"stopped_early": False}))
    """
)


def test_a_second_bench_waits_for_a_cell_another_one_is_training(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "out" / "runs" / "d" / "ce" / "s0"
    env = {"PYTHONPATH": str(SRC)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run), "2"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    job = Job(run, None, ())
    start = time.monotonic()
    with cell_lock(job):
        waited = time.monotonic() - start
        action = _prepare(job)  # the other process finished the cell meanwhile
    holder.wait(timeout=30)
    assert waited > 1.0 and action is None
    assert (run / "live.txt").read_text() == "training"  # nothing deleted
    assert "is being trained by another process" in capfd.readouterr().err


def test_a_dead_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    run = tmp_path / "out" / "runs" / "d" / "ce" / "s0"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run), "60"],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(SRC)},
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=30)
    job = Job(run, None, ())
    start = time.monotonic()
    with cell_lock(job):
        assert _prepare(job) == "start"  # a start without checkpoint, and no one holds it
    assert time.monotonic() - start < 5 and not run.exists()
