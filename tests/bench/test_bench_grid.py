"""carrot bench accuracy on tiny grids: runs through the trainer, reports, resumes, refuses mixing,
fans out over processes with the same results, pretrains once per seed, and runs any config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import carrot.bench.accuracy as acc
from carrot.bench.grid import Cell, cell_job, run_in_process
from carrot.bench.suites import Suite, suite_from_dict
from carrot.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

CNN = ["model.backbone=carrot_cnn", "model.timm_kwargs.widths=[8, 16]", "train.device=cpu"]
TINY = [
    "data.name=synthetic",
    "data.options.num_superclasses=3",
    "data.options.classes_per_superclass=3",
    "data.options.train_per_class=8",
    "data.options.test_per_class=4",
    "data.options.image_size=16",
    "data.options.difficulty=0.0",
    "data.image_size=16",
    "train.batch_size=12",
    "train.epochs=2",
    "train.max_steps_per_epoch=3",
]
COMMON = [
    "train.progress=false",
    "train.plots=false",
    "train.tensorboard=false",
    "train.retrieval=false",
]
GUIDE = ["carrot.guide=false", "carrot.max_gamma=null"]


def tiny_suite(**changes: object) -> Suite:
    data: dict = {
        "description": "tiny",
        "seeds": [0, 1],
        "common": [*COMMON, *CNN],
        "pins": GUIDE,
        "variants": {
            "carrot_l1": {"label": "CARROT λ=1", "baseline": "ce", "overrides": ["method=carrot"]}
        },
        "datasets": {"tiny": {"label": "tiny synthetic", "overrides": TINY}},
        "methods": ["ce", "carrot_l1"],
    }
    data.update(changes)
    return suite_from_dict(data, name="test", source="test.yaml")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_grid_reports_and_resumes(tmp_path: Path) -> None:
    suite = tiny_suite()
    table = acc.run_suite(suite, tmp_path, progress=False)
    report = tmp_path / "test"
    for name in (
        "results.csv",
        "trajectories.csv",
        "comparisons.csv",
        "results.md",
        "results.tex",
        "differences.png",
        "geometry.png",
    ):
        assert (report / name).is_file(), name
    assert not (report / "cd_diagram.png").exists()  # one dataset: no ranks across datasets
    assert "CARROT λ=1" in table and "vs ce" in table and "r/m median" in table
    with open(report / "comparisons.csv") as fh:
        header = next(csv.reader(fh))
    assert header[:16] == [
        "dataset", "method", "baseline", "metric", "n", "baseline_mean", "method_mean", "diff",
        "ci_low", "ci_high", "wins", "ties", "p_value", "wilcoxon_p", "boot_low", "boot_high",
    ]  # fmt: skip
    assert {"holm_p", "holm_family", "effect_size", "mdd"} <= set(header)
    assert r"\toprule" in (report / "results.tex").read_text()
    row = _rows(report / "results.csv")[0]
    assert {"first_gamma_mean", "final_gamma_frac_gt1", "first_r_over_m_q50"} <= set(row)
    run = Cell("tiny", "carrot_l1", 1).run_dir(tmp_path)
    stamp = (run / "summary.json").stat().st_mtime_ns
    acc.run_suite(suite, tmp_path, progress=False)  # finished cells are not rerun
    assert (run / "summary.json").stat().st_mtime_ns == stamp
    again = acc.run_suite(suite, tmp_path, progress=False, report_only=True)
    body = lambda text: text.split("\n\n", 2)[2]  # noqa: E731  (after the header with the timing)
    assert body(again) == body(table)


def test_interrupted_cell_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    suite = tiny_suite()
    job = cell_job(suite, Cell("tiny", "ce", 0), tmp_path, ["train.stop_after_steps=2"])
    run_in_process(job)
    assert json.loads((job.run_dir / "summary.json").read_text())["stopped_early"]
    run_in_process(job)
    assert not json.loads((job.run_dir / "summary.json").read_text())["stopped_early"]


def test_runs_with_other_settings_are_not_paired(tmp_path: Path) -> None:
    import yaml

    suite = tiny_suite()
    cell = Cell("tiny", "ce", 0)
    run_in_process(cell_job(suite, cell, tmp_path))
    with pytest.raises(ValueError, match=r"was run with other settings \(train.lr\)"):
        run_in_process(cell_job(suite, cell, tmp_path, ["train.lr=0.5"]))
    with pytest.raises(ValueError, match=r"was run with other settings \(train.lr\)"):
        acc.run_suite(suite, tmp_path, progress=False, extra=["train.lr=0.5"])
    # A run saved before a key existed: the key counts as its default, nothing else.
    saved = cell.run_dir(tmp_path) / "config.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["carrot"]["lam_warmup"]
    saved.write_text(yaml.safe_dump(old))
    run_in_process(cell_job(suite, cell, tmp_path))  # reused
    with pytest.raises(ValueError, match=r"other settings \(carrot.lam_warmup\)"):
        run_in_process(cell_job(suite, cell, tmp_path, ["carrot.lam_warmup=0.5"]))
    # A run saved before the methods' sections: train.label_smoothing is label_smoothing.smoothing.
    old = yaml.safe_load(saved.read_text())
    old["train"]["label_smoothing"] = old.pop("label_smoothing")["smoothing"] + 0.1
    for section in ("mixup", "cutmix"):
        del old[section]
    saved.write_text(yaml.safe_dump(old))
    with pytest.raises(ValueError, match=r"other settings \(label_smoothing.smoothing\)"):
        run_in_process(cell_job(suite, cell, tmp_path))
    smoothing = old["train"]["label_smoothing"]
    run_in_process(cell_job(suite, cell, tmp_path, [f"label_smoothing.smoothing={smoothing}"]))


def test_unknown_names(tmp_path: Path) -> None:
    suite = tiny_suite()
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['arcface'\]"):
        acc.run_suite(suite, tmp_path, methods=["arcface"])
    with pytest.raises(ValueError, match="holds no finished run of this grid"):
        acc.run_suite(suite, tmp_path, report_only=True)


def test_parallel_processes_give_the_serial_results(tmp_path: Path) -> None:
    """--jobs 2 runs each cell in a process of its own; with the same threads per cell (results
    on CPU depend on the thread count), every number and every weight is the serial one."""
    suite = tiny_suite(seeds=[0])  # two cells: both processes run at once
    acc.run_suite(suite, tmp_path / "serial", progress=False, threads=1)
    acc.run_suite(suite, tmp_path / "jobs", progress=False, jobs=2, threads=1)
    assert _rows(tmp_path / "serial/test/results.csv") == _rows(tmp_path / "jobs/test/results.csv")
    for cell in acc.cells(suite):
        a = load_checkpoint(cell.run_dir(tmp_path / "serial") / "checkpoints/last.pt")["model"]
        b = load_checkpoint(cell.run_dir(tmp_path / "jobs") / "checkpoints/last.pt")["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), cell
    log = Cell("tiny", "ce", 0).run_dir(tmp_path / "jobs").with_suffix(".log")
    assert '"OMP_NUM_THREADS": "1"' in log.read_text()


def test_transfer_pretrains_once_per_seed_and_fine_tunes_its_backbone(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    source = [*TINY[:-2], "data.options.seed=7", "method=ce", "train.epochs=1"]
    suite = tiny_suite(
        pins=[],
        variants={
            "scratch": {"baseline": "ce", "overrides": {"method": "ce", "model.pretrained": False}}
        },
        pretrain={"src": {"label": "source", "overrides": source}},
        datasets={
            "tgt": {
                "label": "target",
                "pretrained": "src",
                "overrides": [*TINY, "train.backbone_lr_mult=0.1"],
            }
        },
        methods=["ce", "carrot", "scratch"],
    )
    acc.run_suite(suite, tmp_path, progress=False)
    for seed in (0, 1):
        pre = tmp_path / "pretrain" / "src" / f"s{seed}"
        assert json.loads((pre / "summary.json").read_text())["epochs"] == 1
        weights = load_file(str(pre / "backbone.safetensors"))
        ckpt = load_checkpoint(pre / "checkpoints" / "last.pt")["model"]
        assert weights.keys() == {
            k.removeprefix("backbone.") for k in ckpt if k.startswith("backbone.")
        }
        assert all(torch.equal(v, ckpt[f"backbone.{k}"]) for k, v in weights.items())
        for method in ("ce", "carrot"):
            cfg = (Cell("tgt", method, seed).run_dir(tmp_path) / "config.yaml").read_text()
            assert f"pretrained_path: {pre.resolve() / 'backbone.safetensors'}" in cfg
    # The fine-tuned model started from the seed's backbone: with the backbone's lr × 0.1 and 6
    # steps its first conv stays close to the pretrained one, and far from the scratch run's.
    pre0 = load_file(str(tmp_path / "pretrain/src/s0/backbone.safetensors"))["features.0.weight"]
    tuned = load_checkpoint(Cell("tgt", "ce", 0).run_dir(tmp_path) / "checkpoints/last.pt")
    scratch = load_checkpoint(Cell("tgt", "scratch", 0).run_dir(tmp_path) / "checkpoints/last.pt")
    near = (tuned["model"]["backbone.features.0.weight"] - pre0).norm()
    far = (scratch["model"]["backbone.features.0.weight"] - pre0).norm()
    assert near < 0.2 * far
    # Cached: a second grid trains nothing, not even the pretraining.
    stamp = (tmp_path / "pretrain/src/s0/summary.json").stat().st_mtime_ns
    acc.run_suite(suite, tmp_path, progress=False)
    assert (tmp_path / "pretrain/src/s0/summary.json").stat().st_mtime_ns == stamp


def test_any_config_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from carrot.cli import main

    base = tmp_path / "mine.yaml"
    base.write_text(
        "data:\n  name: synthetic\n  image_size: 16\n  options: {num_superclasses: 3, "
        "classes_per_superclass: 3, train_per_class: 8, test_per_class: 4, image_size: 16}\n"
        "model:\n  backbone: carrot_cnn\n  timm_kwargs: {widths: [8, 16]}\n"
        "train:\n  batch_size: 12\n  epochs: 1\n  max_steps_per_epoch: 2\n  device: cpu\n"
        "  plots: false\n  tensorboard: false\n  retrieval: false\n"
    )
    methods = tmp_path / "methods.yaml"
    methods.write_text("lam2: {baseline: ce, overrides: {method: carrot, carrot.lam: 2}}\n")
    out = tmp_path / "out"
    argv = ["bench", "accuracy", "--config", str(base), "--methods", "lam2", "--seeds", "0-1"]
    argv += ["--methods-file", str(methods), "--out", str(out), "train.lr=0.02"]
    assert main(argv) == 0
    assert "vs ce" in capsys.readouterr().out
    cfg = (Cell("mine", "lam2", 1).run_dir(out) / "config.yaml").read_text()
    assert "lam: 2.0" in cfg and "lr: 0.02" in cfg and "seed: 1" in cfg
    rows = _rows(out / "mine" / "comparisons.csv")
    assert {(r["method"], r["baseline"], r["n"]) for r in rows} == {("lam2", "ce", "2")}


def test_report_of_three_methods_on_two_datasets(tmp_path: Path) -> None:
    # Holm over the report's family, effect sizes, results.tex and the CD diagram, through the grid.
    hard = [*TINY, "data.options.difficulty=0.8", "data.options.test_per_class=12"]  # no ties
    suite = tiny_suite(
        datasets={
            "tiny": {"overrides": hard},
            "tiny5": {"overrides": [*hard, "data.options.seed=5"]},
        },
        methods=["ce", "label_smoothing", "carrot_l1"],
    )
    acc.run_suite(suite, tmp_path, progress=False)
    report = tmp_path / "test"
    with open(report / "comparisons.csv") as fh:
        comps = list(csv.DictReader(fh))
    finals = [c for c in comps if c["metric"] == "final_top1"]
    tested = [c for c in finals if c["p_value"] != "nan"]  # a tie on both seeds has no test
    assert len(finals) == 4 and len(tested) >= 3
    assert {c["holm_family"] for c in finals} == {
        f"final_top1 on all datasets ({len(tested)} tests)"
    }
    from statsmodels.stats.multitest import multipletests

    adjusted = multipletests([float(c["p_value"]) for c in tested], method="holm")[1]
    assert [float(c["holm_p"]) for c in tested] == pytest.approx(list(adjusted))
    for name in ("results.tex", "cd_diagram.png", "friedman.csv"):
        assert (report / name).is_file(), name
    text = (report / "results.md").read_text()
    assert "Holm's step-down" in text and "### Ranks across datasets (Friedman, Nemenyi)" in text


def test_grid_progress_off_a_terminal_is_a_few_plain_lines(tmp_path: Path, capsys) -> None:
    # stderr is not a terminal here (as in `carrot bench accuracy ... 2> log`): no tqdm frames.
    acc.run_suite(tiny_suite(seeds=[0]), tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("bench test:")]
    assert [line.split()[2] for line in lines] == ["1/2", "2/2"]
