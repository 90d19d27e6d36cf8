"""Suites as data: the packaged YAML suites, the schema's errors, --config mode, the fan-out's
slot assignment and the Fashion-MNIST check (no training here)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from carrot.bench.grid import (
    Cell,
    cell_job,
    cells,
    check_data,
    pretrain_job,
    run_parallel,
    slot_envs,
)
from carrot.bench.suites import (
    TRAINER_METHODS,
    config_suite,
    load_methods,
    load_suite,
    packaged_suites,
    suite_from_dict,
)
from carrot.train.config import load_config

# sha256 over every cell's (dataset, method, seed, overrides) with --out results/x and the extra
# override train.device=cpu, computed from the Python suites of carrot 0.1 when they became YAML:
# the YAML suites run exactly the settings of before, so earlier result folders are still matched.
LEGACY = {
    "quick": (42, "f5a64189bcb3f786ca421308131e02af65ba3635df874bbfd8ec9fa252a092d0"),
    "full": (130, "2beeb114b01fe632e7b37b6aea608f559ca0b4a76a3009c130e5a2423ee51dbc"),
    "variants": (240, "65a5817e17daed65f09a2e85d5c74bf05914147b9fb2b85748a63ad97d3aa080"),
    "variants2": (120, "bc25b3bb66bc29115dea308d2632101f08285ad5f5beaedff1ecd1260a6323c8"),
    "heldout": (90, "520c45a9468ca2dbc7937354561c42f5ed7cd58e74882ace5a35325d470ce35b"),
}

GUIDE_PINS = [
    "carrot.guide=false", "carrot.lam=1", "carrot.T=1", "carrot.kl_direction=plus_z",
    "carrot.aux_ce_weight=0", "carrot.max_gamma=null", "carrot.stop_grad_plus=false",
    "carrot.lam_warmup=0", "carrot.space=euclidean", "carrot.memory=false",
    "carrot.detach_stats=true", "carrot.unbiased_radius=false", "carrot.eps=1e-12",
]  # fmt: skip


def test_packaged_suites() -> None:
    assert packaged_suites() == [
        "ablation", "full", "heldout", "quick", "study", "transfer", "variants", "variants2",
    ]  # fmt: skip
    for name in packaged_suites():
        suite = load_suite(name)
        for dataset, methods in suite.grid:
            assert dataset in suite.datasets and all(m in suite.methods for m in methods)


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_suites_run_the_settings_of_before(name: str) -> None:
    suite = load_suite(name)
    grid = cells(suite)
    digest = hashlib.sha256()
    for cell in grid:
        job = cell_job(suite, cell, Path("results/x"), ["train.device=cpu"])
        digest.update(json.dumps([*vars(cell).values(), list(job.overrides)]).encode())
    assert (len(grid), digest.hexdigest()) == LEGACY[name]


def test_quick_suite_cell_spelled_out() -> None:
    suite = load_suite("quick")
    job = cell_job(suite, Cell("digits", "carrot_l1", 2), Path("out"))
    assert list(job.overrides) == [
        "train.eval_batch_size=500", "train.progress=false", "train.retrieval=false",
        "train.plots=false", "train.tensorboard=false", "data.num_workers=0",
        "data.name=digits", "data.image_size=16", "train.batch_size=32", "train.epochs=6",
        "model.backbone=carrot_cnn", "model.timm_kwargs.widths=[16, 32, 64]", "train.lr=0.05",
        *GUIDE_PINS, "method=carrot", "seed=2", "output_dir=out/runs/digits/carrot_l1/s2",
    ]  # fmt: skip
    assert suite.methods["carrot_l1"].label == "CARROT CE+KL, λ=1 (guide)"
    assert [c.seed for c in cells(suite)][::14] == [0, 1, 2]


def test_method_names_and_what_they_run() -> None:
    methods = load_methods(None)
    old = ("ce", "label_smoothing", "carrot", "supcon", "supcon_carrot")
    assert set(old) <= set(TRAINER_METHODS) and all(m in methods for m in TRAINER_METHODS)
    assert {m: methods[m].baseline for m in old} == {
        "ce": None, "label_smoothing": "ce", "carrot": "ce", "supcon": "ce", "supcon_carrot": "supcon",
    }  # fmt: skip
    # carrot: the trainer's defaults, the recommended configuration; carrot_guide: the guide's.
    carrot = load_config(None, list(methods["carrot"].overrides)).carrot
    guide = load_config(None, list(methods["carrot_guide"].overrides)).carrot
    assert (carrot.max_gamma, carrot.guide) == (1.5, False)
    assert (guide.max_gamma, guide.guide, guide.lam) == (None, True, 1.0)
    assert methods["carrot_guide"].baseline == "ce"
    assert methods["supcon_carrot_guide"].baseline == "supcon"


def test_transfer_suite_fine_tunes_the_pretrained_backbone_of_the_same_seed() -> None:
    suite = load_suite("transfer")
    out = Path("/tmp/bench-out")
    job = cell_job(suite, Cell("synth_hard", "carrot", 3), out)
    cfg = job.load()
    assert cfg.model.pretrained and cfg.train.backbone_lr_mult == 0.1
    assert cfg.model.pretrained_path == str(out / "pretrain/synth200/s3/backbone.safetensors")
    assert job.ignore == ("model.pretrained_path",)
    scratch = cell_job(suite, Cell("synth_hard", "ce_scratch", 3), out).load()
    assert (scratch.method, scratch.model.pretrained, scratch.train.backbone_lr_mult) == (
        "ce",
        False,
        1,
    )
    source = pretrain_job(suite, "synth200", 3, out).load()
    assert (source.method, source.seed, source.model.pretrained) == ("ce", 3, False)
    # Disjoint classes: the source's synthetic set is drawn with another dataset seed.
    for name, _ in suite.grid:
        data = cell_job(suite, Cell(name, "ce", 0), out).load().data
        assert data.name == "fashion_mnist" or data.options["seed"] != source.data.options["seed"]
    methods = dict(suite.grid)["synth_hard"]
    assert {"ce", "label_smoothing", "carrot_guide", "carrot", "supcon", "supcon_carrot"} <= set(
        methods
    )


def _suite(**changes: object) -> dict:
    data: dict = {
        "seeds": [0, 1],
        "datasets": {"d": {"label": "D", "overrides": ["data.name=digits"]}},
        "methods": ["ce", "carrot"],
    }
    data.update(changes)
    return data


def test_suite_schema_overrides_as_mapping_and_variants() -> None:
    suite = suite_from_dict(
        _suite(
            variants={
                "lam5": {"baseline": "ce", "overrides": {"method": "carrot", "carrot.lam": 5}}
            },
            datasets={
                "d": {"overrides": {"model.timm_kwargs.widths": [8, 16], "carrot.max_gamma": None}}
            },
            methods=["ce", "lam5"],
            common={"train.amp": "off", "train.plots": False},
        ),
        name="mine",
        source="mine.yaml",
    )
    assert suite.datasets["d"].overrides == (
        "model.timm_kwargs.widths=[8, 16]",
        "carrot.max_gamma=null",
    )
    assert suite.common == ("train.amp=off", "train.plots=false")
    assert suite.grid == (("d", ("ce", "lam5")),)
    cfg = cell_job(suite, Cell("d", "lam5", 1), Path("o")).load()
    assert (cfg.method, cfg.carrot.lam, cfg.model.timm_kwargs, cfg.train.plots) == (
        "carrot", 5.0, {"widths": [8, 16]}, False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": 1}, r"mine.yaml has unknown key\(s\) \['colour'\]; valid keys: description"),
        ({"grid": []}, "needs exactly one of 'methods'"),
        ({"methods": ["ce", "arcface"]}, "names method 'arcface', which is not defined"),
        ({"seeds": [0, -1]}, "seeds must be a list of 1 to 10000 distinct integers"),
        ({"datasets": {"d": {"overrides": ["lr"]}}}, "datasets.d.overrides must be a list of key=value"),
        ({"datasets": {"d": {"pretrained": "src"}}}, "datasets.d.pretrained names 'src'"),
        ({"datasets": {"d": {"config": "nope.yaml"}}}, r"datasets.d.config: .*nope.yaml does not exist"),
        ({"variants": {"ce": {"overrides": ["method=ce"]}}}, "'ce' is already defined \\(by the trainer\\)"),
        ({"variants": {"x": {"baseline": "y", "overrides": ["method=ce"]}}}, "baseline 'y' is not a method"),
        ({"variants": {"x": {"baseline": "ce"}}}, r"variants.x needs overrides"),
        ({"variants": {"x": {"overrides": {"carrot.lam": 2}}}}, r"variants.x.overrides must set method"),
        ({"methods": None, "grid": [{"datasets": ["e"], "methods": ["ce"]}]}, "names dataset 'e'"),
    ],
)  # fmt: skip
def test_suite_schema_errors(changes: dict, message: str) -> None:
    data = _suite(**changes)
    if data.get("methods") is None:
        data.pop("methods")
    with pytest.raises(ValueError, match=message):
        suite_from_dict(data, name="mine", source="mine.yaml", base_dir=Path("/nonexistent"))


def test_suite_files_and_methods_files(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("data:\n  name: digits\ntrain:\n  epochs: 2\n")
    methods = tmp_path / "methods.yaml"
    methods.write_text(
        "lam2: {label: 'λ=2', baseline: ce, overrides: {method: carrot, carrot.lam: 2}}\n"
    )
    suite_file = tmp_path / "mine.yaml"
    suite_file.write_text(
        yaml.safe_dump(
            {"seeds": [3], "datasets": {"d": {"config": "base.yaml"}}, "methods": ["ce", "lam2"]}
        )
    )
    suite = load_suite(suite_file, methods_file=methods)
    assert suite.name == "mine" and suite.datasets["d"].config == base
    cfg = cell_job(suite, Cell("d", "lam2", 3), tmp_path).load()
    assert (cfg.train.epochs, cfg.carrot.lam, cfg.seed) == (2, 2.0, 3)
    with pytest.raises(ValueError, match=r"--suite must be one of \['ablation', 'full'"):
        load_suite(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="--methods-file .* does not exist"):
        load_methods(tmp_path / "missing.yaml")
    methods.write_text("lam2: {label: [unclosed\n")
    with pytest.raises(ValueError, match=r"methods.yaml is not valid YAML: .*\(line 2, column 1\)\.$"):
        load_methods(methods)
    methods.write_text("carrot_guide: {baseline: ce, overrides: [method=ce]}\n")
    with pytest.raises(ValueError, match="'carrot_guide' is already defined \\(elsewhere\\)"):
        load_methods(methods)


def test_config_mode_adds_baselines(tmp_path: Path) -> None:
    base = tmp_path / "cub_r50.yaml"
    base.write_text("data:\n  name: digits\n")
    suite = config_suite(base, ["train.epochs=3"], methods=["supcon_carrot", "carrot"], seeds=[5])
    assert suite.grid == (("cub_r50", ("ce", "supcon", "supcon_carrot", "carrot")),)
    job = cell_job(suite, Cell("cub_r50", "carrot", 5), tmp_path)
    assert job.config == base
    assert job.overrides[:3] == ("train.progress=false", "train.epochs=3", "method=carrot")
    assert config_suite(base).grid == (("cub_r50", ("ce", "carrot")),)
    with pytest.raises(ValueError, match="unknown method 'arcface'"):
        config_suite(base, methods=["arcface"])


def test_slot_envs() -> None:
    assert slot_envs(jobs=None, devices=None, threads=None, cores=2) == [
        {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    ]
    two = slot_envs(jobs=2, devices=None, threads=None, cores=2)
    assert two == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 2
    gpus = slot_envs(jobs=None, devices=["0", "3"], threads=None, cores=16)
    assert [g["CUDA_VISIBLE_DEVICES"] for g in gpus] == ["0", "3"]
    assert {g["OMP_NUM_THREADS"] for g in gpus} == {"8"}
    four = slot_envs(jobs=4, devices=["0", "1"], threads=3, cores=16)
    assert [g["CUDA_VISIBLE_DEVICES"] for g in four] == ["0", "1", "0", "1"]
    assert {g["OMP_NUM_THREADS"] for g in four} == {"3"}
    with pytest.raises(ValueError, match="--jobs must be >= 1, got 0"):
        slot_envs(jobs=0, devices=None, threads=None, cores=2)
    with pytest.raises(ValueError, match="--devices must list at least one GPU"):
        slot_envs(jobs=None, devices=[], threads=None, cores=2)


def test_run_parallel_gives_each_slot_to_one_cell_at_a_time() -> None:
    slots = slot_envs(jobs=None, devices=["0", "1"], threads=None, cores=4)
    busy: set[str] = set()
    lock = threading.Lock()
    seen: list[tuple[int, str]] = []

    def run_one(item: int, slot: dict[str, str]) -> None:
        device = slot["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert device not in busy, f"GPU {device} given to two cells at once"
            busy.add(device)
            seen.append((item, device))
        time.sleep(0.01)
        with lock:
            busy.discard(device)

    done: list[int] = []
    run_parallel(list(range(8)), slots, run_one, done=done.append)
    assert sorted(done) == list(range(8)) and {d for _, d in seen} == {"0", "1"}

    def failing(item: int, slot: dict[str, str]) -> None:
        if item == 0:
            raise RuntimeError("cell 0 failed")
        time.sleep(0.01)

    done.clear()
    with pytest.raises(RuntimeError, match="cell 0 failed"):
        run_parallel(list(range(20)), slots, failing, done=done.append)
    assert len(done) < 19  # no new cell starts after a failure


def test_missing_fashion_mnist_is_one_clear_error(tmp_path: Path) -> None:
    suite = suite_from_dict(
        _suite(
            datasets={
                "fm": {"overrides": ["data.name=fashion_mnist", f"data.root={tmp_path}"]},
                "d": {"overrides": ["data.name=digits"]},
            }
        ),
        name="s",
        source="s.yaml",
    )
    named = [(c.dataset, cell_job(suite, c, tmp_path)) for c in cells(suite)]
    with pytest.raises(
        ValueError,
        match=r"Fashion-MNIST is missing \(fm read it from .*sudo apt-get install dataset-fashion-mnist",
    ):
        check_data(named)
    check_data([(d, j) for d, j in named if d == "d"])


def test_cli_flags() -> None:
    from carrot.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        "bench accuracy --config base.yaml --methods ce carrot --seeds 0-4 --jobs 2 --devices 0,1 "
        "--threads 3 --methods-file m.yaml --out o train.epochs=2".split()
    )
    assert (args.config, args.methods, args.seeds, args.jobs, args.devices, args.threads) == (
        "base.yaml", ["ce", "carrot"], "0-4", 2, ["0", "1"], 3,
    )  # fmt: skip  (--seeds is parsed, counted first, by run_bench: carrot.counts.parse_seeds)
    assert (args.methods_file, args.out, args.overrides) == ("m.yaml", "o", ["train.epochs=2"])
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "accuracy", "--config", "a.yaml", "--suite", "quick"])
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "accuracy", "--devices", "cuda:0"])


def test_overrides_after_the_method_list_are_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    import carrot.bench.accuracy as acc
    from carrot.cli import main

    seen = {}
    monkeypatch.setattr(acc, "run_suite", lambda suite, out, **kw: seen.update(kw) or "")
    argv = (
        "bench accuracy --suite quick --methods ce carrot_l1 train.lr=0.1 --datasets digits x.y=1"
    )
    assert main(argv.split()) == 0
    assert (seen["methods"], seen["datasets"]) == (["ce", "carrot_l1"], ["digits"])
    assert seen["extra"] == ["train.lr=0.1", "x.y=1"]


def test_a_failed_cell_is_one_line_and_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import carrot.bench.accuracy as acc
    from carrot.bench.grid import CellFailed
    from carrot.cli import main

    def fail(suite, out, **kw):
        raise CellFailed("runs/ce/digits/s0 failed (exit code 1); its log runs/x.log ends:\nboom")

    monkeypatch.setattr(acc, "run_suite", fail)
    monkeypatch.delenv("CARROT_DEBUG", raising=False)
    assert main("bench accuracy --suite quick --methods ce --datasets digits".split()) == 1
    err = capsys.readouterr().err
    assert err.startswith("carrot bench: error: runs/ce/digits/s0 failed (exit code 1)")
    assert "Traceback" not in err
    monkeypatch.setenv("CARROT_DEBUG", "1")
    with pytest.raises(CellFailed):
        main("bench accuracy --suite quick --methods ce --datasets digits".split())


def test_a_methods_file_reads_yaml_as_a_config_does(tmp_path: Path) -> None:
    """One YAML reader for configs, suites and methods files: ``off`` stays a string (YAML 1.2),
    ``1e-3`` is a float, and aliases are refused, in a methods file as in a config."""
    from carrot.train.config import load_config

    methods = tmp_path / "methods.yaml"
    methods.write_text(
        "amp_off: {baseline: ce, overrides: {method: ce, train.amp: off, train.lr: 1e-3}}\n"
    )
    spec = load_methods(methods)["amp_off"]
    assert "train.amp=off" in spec.overrides and "train.lr=0.001" in spec.overrides
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  amp: off\n  lr: 1e-3\n")
    a, b = load_config(config).train, load_config(None, list(spec.overrides)).train
    assert (a.amp, a.lr) == (b.amp, b.lr) == ("off", 0.001)
    methods.write_text("a: &x {baseline: ce, overrides: [method=ce]}\nb: *x\n")
    with pytest.raises(ValueError, match="does not accept YAML aliases|alias"):
        load_methods(methods)


def test_a_variant_extends_another(tmp_path: Path) -> None:
    methods = tmp_path / "methods.yaml"
    methods.write_text(
        "base: {baseline: ce, overrides: {method: carrot, carrot.lam: 2, carrot.T: 2}}\n"
        "more: {baseline: base, extends: base, overrides: {carrot.lam: 3}}\n"
    )
    more = load_methods(methods)["more"]
    assert more.overrides == ("method=carrot", "carrot.lam=3", "carrot.T=2")
    methods.write_text("more: {baseline: ce, extends: nowhere, overrides: {carrot.lam: 3}}\n")
    with pytest.raises(ValueError, match=r"more.extends must name a variant defined above"):
        load_methods(methods)
