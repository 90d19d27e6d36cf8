"""No value reaches a generated SLURM job script with a control character in it: a newline in
--sbatch-option, --slurm-partition, --slurm-account, --slurm-time or --out would become a line
of its own in submitit's script (issue 32, item 3). Checked before anything is submitted, so no
cluster is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrot.bench.grid import Job
from carrot.bench.slurm import SlurmOptions, run_slurm
from carrot.bench.slurm_values import check_script_text, sbatch_key
from cli_run import carrot_cli, one_line_error

BASE = "data: {name: digits}\ntrain: {device: cpu, epochs: 1}\n"
INJECT = "\n#SBATCH --wrap=touch /tmp/pwned\ntouch /tmp/pwned"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--sbatch-option", f"qos=high{INJECT}"),
        ("--sbatch-option", "constraint=a100\rtouch x"),
        ("--sbatch-option", "qos\x00=high"),
        ("--slurm-partition", f"gpu{INJECT}"),
        ("--slurm-account", "me\x1b[2J"),
        ("--slurm-time", "90\n"),
        ("--slurm-partition", "gpu\x7f"),
    ],
)
def test_a_control_character_in_a_slurm_option_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    from carrot.cli import main

    base = tmp_path / "base.yaml"
    base.write_text(BASE)
    out = tmp_path / "out"
    argv = ["bench", "accuracy", "--config", str(base), "--out", str(out), "--seeds", "0",
            "--launcher", "slurm", option, value]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{option} must be one line of printable text" in err
    assert not out.exists()


def test_a_control_character_in_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from carrot.cli import main

    base = tmp_path / "base.yaml"
    base.write_text(BASE)
    out = tmp_path / "out\ntouch pwned"
    argv = ["bench", "accuracy", "--config", str(base), "--out", str(out), "--seeds", "0",
            "--launcher", "slurm", "--slurm-time", "10"]  # fmt: skip
    assert main(argv) == 2
    assert "--out must be one line of printable text" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("option", ["q os=high", "=high", "qos;touch x=1", "-"])
def test_an_sbatch_key_is_an_option_name(option: str) -> None:
    with pytest.raises(ValueError, match="--sbatch-option must be KEY=VALUE or KEY"):
        sbatch_key(option)


def test_plain_sbatch_options_pass() -> None:
    assert sbatch_key("qos=high") == ("qos", "high")
    assert sbatch_key("--exclusive") == ("exclusive", True)
    assert sbatch_key("gres=gpu:a100:2,shard:1") == ("gres", "gpu:a100:2,shard:1")
    assert check_script_text("gpu a100", "--slurm-partition") == "gpu a100"


def test_the_api_checks_before_submitting(tmp_path: Path) -> None:
    """run_slurm (without the CLI) refuses before creating the slurm folder or calling sbatch."""
    out = tmp_path / "out"
    job = Job(out / "runs" / "x", None, ())
    with pytest.raises(ValueError, match="--sbatch-option must be one line"):
        run_slurm([job], out, SlurmOptions(time="10", sbatch=(f"qos=high{INJECT}",)))
    assert not (out / "slurm").exists()


@pytest.mark.slow
def test_the_cli_refuses_an_injected_sbatch_option_in_a_subprocess(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(BASE)
    out = tmp_path / "out"
    done = carrot_cli(
        "bench", "accuracy", "--config", base, "--out", out, "--seeds", "0",
        "--launcher", "slurm", "--slurm-time", "10", "--sbatch-option", f"qos=high{INJECT}",
        timeout=120,
    )  # fmt: skip
    one_line_error(done, "--sbatch-option must be one line of printable text", "'\\n'")
    assert not out.exists()
