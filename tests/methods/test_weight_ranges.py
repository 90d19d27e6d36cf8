"""Loss weights and temperatures that would overflow the loss at step 1 are refused in one line
naming the key, before training (issue 32: ``isda.lam0=1e300``, ``maxent.gamma=1e10``,
``carrot.T=1e-300``)."""

from __future__ import annotations

import pytest

from carrot.functional import CEKLOptions
from carrot.train.config import ConfigError, load_config
from cli_run import carrot_cli, one_line_error


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=isda", "isda.lam0=1e300"],
        ["method=maxent", "maxent.gamma=1e10"],
        ["method=center_loss", "center_loss.lam=1e9"],
        ["method=pairwise_confusion", "pairwise_confusion.lam_per_class=1e20"],
        ["method=supcon", "supcon.temperature=1e-300"],
        ["method=supcon", "supcon.probe_weight=1e300"],
        ["carrot.T=1e-300"],
        ["carrot.T=1e200"],
        ["carrot.lam=1e300"],
        ["carrot.aux_ce_weight=1e300"],
    ],
)
def test_an_overflowing_weight_is_refused(overrides: list[str]) -> None:
    key = overrides[-1].split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key} must be in \["):
        load_config(None, overrides)


def test_useful_values_still_pass() -> None:
    load_config(None, ["method=isda", "isda.lam0=7.5"])
    load_config(None, ["method=supcon", "supcon.temperature=0.05"])
    load_config(None, ["carrot.T=4", "carrot.lam=50"])


def test_the_library_options_refuse_them_too() -> None:
    with pytest.raises(ValueError, match=r"T must be in \[0.001, 1000\]"):
        CEKLOptions(T=1e-300)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 10000\]"):
        CEKLOptions(lam=float("1e300"))


@pytest.mark.slow
def test_the_cli_refuses_before_training(tmp_path) -> None:
    done = carrot_cli(
        "train", "method=maxent", "maxent.gamma=1e10", "train.device=cpu",
        f"output_dir={tmp_path / 'run'}",
    )  # fmt: skip
    one_line_error(done, "maxent.gamma must be in [0, 10000]")
    assert not (tmp_path / "run").exists()
