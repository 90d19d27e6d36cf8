"""Search spaces: every registered method declares a valid one; --space files and the refusals."""

from __future__ import annotations

import json

import pytest

from carrot.cli import main
from carrot.methods import registered
from carrot.tune.search import check_space, spaces_for
from carrot.tune.space import SHARED_SPACE, Choice, Float, Int, _declared, method_space
from carrot.tune.tuned import tuned_seeds, tuned_suite
from cli_run import carrot_cli, one_line_error


def test_every_registered_method_has_a_valid_search_space() -> None:
    # Iterated from the registry: a new method without a search_space fails here.
    for name, cls in registered().items():
        assert cls.search_space is not None, f"{name} declares no search_space"
        space = method_space(name)
        check_space(name, space)  # every key a setting of the method, every end accepted
        assert set(SHARED_SPACE) <= set(space)


def test_the_issue_s_ranges() -> None:
    carrot = method_space("carrot")
    assert {"carrot.lam", "carrot.T", "carrot.max_gamma", "carrot.radius_factor"} <= set(carrot)
    assert carrot["carrot.lam"].log
    isda = method_space("isda")["isda.lam0"]
    assert isinstance(isda, Choice) and {0.5, 7.5} <= set(isda.choices)
    assert set(method_space("ce")) == set(SHARED_SPACE)
    # X+carrot searches the union of both
    both = method_space("center_loss+carrot")
    assert set(both) == set(method_space("center_loss")) | set(carrot)


def test_a_method_without_a_search_space_is_refused() -> None:
    class Bare:
        name = "bare"
        search_space = None

        @classmethod
        def section_name(cls) -> None:
            return None

    with pytest.raises(ValueError, match="declares no search_space"):
        _declared(Bare)


def test_specs_refuse_empty_ranges() -> None:
    with pytest.raises(ValueError, match="non-empty range"):
        Float(1.0, 1.0).check("x")
    with pytest.raises(ValueError, match="log-scaled"):
        Float(0.0, 1.0, log=True).check("x")
    with pytest.raises(ValueError, match="non-empty range"):
        Int(3, 2).check("x")
    with pytest.raises(ValueError, match="at least one choice"):
        Choice(()).check("x")


def test_space_file_narrows_replaces_and_drops(tmp_path) -> None:
    spaces = spaces_for(
        ["ce", "carrot"],
        {
            "all": {"train.weight_decay": None},
            "carrot": {"carrot.lam": {"low": 0.5, "high": 2}, "carrot.T": [1.0, 2.0]},
        },
    )
    assert "train.weight_decay" not in spaces["ce"] and "train.weight_decay" not in spaces["carrot"]
    assert spaces["carrot"]["carrot.lam"] == Float(0.5, 2.0, log=True)  # keeps its log scale
    assert spaces["carrot"]["carrot.T"] == Choice((1.0, 2.0))
    assert spaces["ce"]["train.lr"] == SHARED_SPACE["train.lr"]


def _one_line(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert needle in err[0], err[0]


def _tune(tmp_path, *extra: str) -> int:
    return main(
        ["tune", "--methods", "ce", "carrot", "--trials", "2", "--out", str(tmp_path / "o"), *extra]
    )


def test_tuning_without_a_validation_split_is_refused(tmp_path, capsys) -> None:
    assert _tune(tmp_path) == 2
    _one_line(capsys, "data.val_split")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("carrot:\n  carrot.nope: {low: 1, high: 2}\n", "nope"),  # unknown key
        ("carrot:\n  isda.lam0: [1.0]\n", "not one of its settings"),  # another method's
        ("carrot:\n  carrot.lam: {low: 2, high: 1}\n", "non-empty range"),  # empty range
        ("carrot:\n  carrot.T: []\n", "at least one choice"),
        ("carrot:\n  carrot.lam: {low: 1}\n", "needs low and high"),
        ("isda:\n  isda.lam0: [1.0]\n", "neither all nor one of the tuned methods"),
        ("carrot:\n  carrot.lam: {low: -1, high: 1, log: false}\n", "carrot.lam"),  # out of range
    ],
)
def test_space_file_errors_are_one_line(tmp_path, capsys, text, needle) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(text)
    assert _tune(tmp_path, "--space", str(space), "data.val_split=fraction") == 2
    _one_line(capsys, needle)


def test_bad_budget_is_one_line(tmp_path, capsys) -> None:
    assert main(["tune", "--methods", "ce", "--trials", "0", "--out", str(tmp_path)]) == 2
    _one_line(capsys, "--trials must be an integer in [1, 100000], got 0")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--jobs", "100000"], "--jobs must be an integer in [1, 1024], got 100000"),
        (["--trials", "10000000"], "--trials must be an integer in [1, 100000]"),
        (["--heartbeat", "0"], "--heartbeat must be an integer in [1, 86400]"),
    ],
)
def test_counts_are_bounded_before_anything_starts(tmp_path, capsys, args, needle) -> None:
    out = tmp_path / "o"
    assert main(["tune", "--methods", "ce", "--out", str(out), "--trials", "2", *args]) == 2
    _one_line(capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--slurm-partition", "gpu\n#SBATCH --wrap=id"],
        ["--sbatch-option", "qos=high\nrm -rf /"],
        ["--slurm-account", "a\rb"],
    ],
)
def test_a_control_character_for_the_job_script_is_refused_before_anything(
    tmp_path, capsys, args
) -> None:
    out = tmp_path / "o"
    argv = ["tune", "--methods", "ce", "--trials", "2", "--out", str(out), "--launcher", "slurm"]
    assert main([*argv, *args, "data.val_split=fraction"]) == 2
    _one_line(capsys, "control character")
    assert not out.exists()


def _tuned_folder(tmp_path, seeds=(0,)) -> None:
    (tmp_path / "ce").mkdir(parents=True)
    (tmp_path / "carrot").mkdir()
    (tmp_path / "tune.json").write_text(
        json.dumps({"methods": ["ce", "carrot"], "seeds": list(seeds), "objective": "top1"})
    )
    (tmp_path / "base.yaml").write_text("data:\n  name: digits\n")
    (tmp_path / "ce" / "best.json").write_text(json.dumps({"params": {"train.lr": 0.02}}))
    (tmp_path / "carrot" / "best.json").write_text(
        json.dumps({"params": {"train.lr": 0.03, "carrot.lam": 2.5}})
    )


def test_tuned_suite_runs_each_method_at_its_tuned_settings(tmp_path) -> None:
    _tuned_folder(tmp_path, seeds=(0, 2))
    suite = tuned_suite(tmp_path)
    assert suite.seeds == (1, 3, 4, 5, 6)  # the first five that were not tuning seeds
    assert suite.methods["carrot"].overrides == ("method=carrot", "train.lr=0.03", "carrot.lam=2.5")
    assert suite.methods["carrot"].baseline == "ce"  # tuned too: compared with it
    assert suite.datasets[suite.name].config == tmp_path / "base.yaml"
    only = tuned_suite(tmp_path, methods=["carrot"])
    assert only.methods["carrot"].baseline is None  # its baseline was not in the run


def test_tuned_seeds_refuse_overlap() -> None:
    assert tuned_seeds([0], [5, 6]) == [5, 6]
    with pytest.raises(ValueError, match="tuning seed"):
        tuned_seeds([0], [0, 1])


def test_bench_tuned_with_a_tuning_seed_is_one_line(tmp_path, capsys) -> None:
    _tuned_folder(tmp_path)
    code = main(
        [
            "bench",
            "accuracy",
            "--tuned",
            str(tmp_path),
            "--seeds",
            "0-2",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    _one_line(capsys, "--seeds must not include the tuning seed")


def test_slurm_options_need_the_slurm_launcher(tmp_path, capsys) -> None:
    argv = [
        "tune",
        "--methods",
        "ce",
        "--trials",
        "1",
        "--out",
        str(tmp_path),
        "--slurm-time",
        "1:00:00",
    ]
    assert main(argv) == 2
    _one_line(capsys, "need --launcher slurm")


@pytest.mark.slow
def test_the_job_script_check_as_a_user_runs_it(tmp_path) -> None:
    out = tmp_path / "o"
    done = carrot_cli(
        "tune", "--methods", "ce", "--trials", "2", "--out", out, "--launcher", "slurm",
        "--slurm-partition", "gpu\nid", "data.val_split=fraction",
    )  # fmt: skip
    one_line_error(done, "--slurm-partition", "control character")
    assert not out.exists()
