"""OperatorOptions: the one home of the operator's options, and everything that takes it."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from carrot import (
    CarrotCEKLLoss,
    CarrotSupConLoss,
    CarrotTransform,
    OperatorOptions,
    carrot_ce_kl_loss,
    carrot_operator,
    carrot_supcon_loss,
)
from carrot.integrations.pml import CarrotViewLoss
from carrot.train.config import CarrotConfig, Config, ConfigError, apply_overrides

FIELDS = {f.name for f in dataclasses.fields(OperatorOptions)}
TAKERS = (
    carrot_ce_kl_loss,
    carrot_supcon_loss,
    CarrotTransform.__init__,
    CarrotCEKLLoss.__init__,
    CarrotSupConLoss.__init__,
    CarrotViewLoss.__init__,
)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(6).repeat_interleave(4)
    centers = 3 * torch.randn(6, 8, generator=g)
    return F.normalize(centers[y] + torch.randn(24, 8, generator=g), dim=1), y


@pytest.mark.parametrize("taker", TAKERS, ids=lambda f: f.__qualname__)
def test_no_option_is_forwarded_by_hand(taker) -> None:
    params = set(inspect.signature(taker).parameters)
    assert "options" in params
    assert not params & FIELDS, f"{taker.__qualname__} declares operator options itself"


def test_operator_keeps_only_the_guides_keywords() -> None:
    params = inspect.signature(carrot_operator).parameters
    assert set(params) & FIELDS == {"eps", "detach_stats"}
    # The guide calls carrot_operator(z, y, eps, detach_stats), positionally or by keyword.
    z, y = _batch()
    a, _ = carrot_operator(z, y, 1e-12, True)
    b, _ = carrot_operator(z, y, eps=1e-12, detach_stats=True)
    c, _ = carrot_operator(z, y)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_guide_keywords_override_the_options() -> None:
    z, y = _batch()
    z = z.clone().requires_grad_(True)
    options = OperatorOptions(eps=0.5, detach_stats=True, max_gamma=1.2)
    got, stats = carrot_operator(z, y, eps=1e-12, detach_stats=False, options=options)
    want, want_stats = carrot_operator(
        z, y, options=OperatorOptions(eps=1e-12, detach_stats=False, max_gamma=1.2)
    )
    assert_close(got, want, rtol=0, atol=0)
    assert_close(stats["gamma"], want_stats["gamma"])
    assert stats["gamma"].max() <= 1.2 and got.grad_fn is not None


def test_the_trainer_config_is_built_on_the_options() -> None:
    assert issubclass(CarrotConfig, OperatorOptions)
    assert FIELDS <= {f.name for f in dataclasses.fields(CarrotConfig)}
    cfg = apply_overrides(Config(), ["carrot.ignore_index=7", "carrot.sync_free=true"])
    options = OperatorOptions.of(cfg.carrot)
    assert type(options) is OperatorOptions
    assert options.ignore_index == 7 and options.sync_free and options.max_gamma == 1.5
    with pytest.raises(ConfigError, match="carrot.ignore_index must be int or null"):
        apply_overrides(Config(), ["carrot.ignore_index=[1]"])


def test_module_and_functional_forms_agree_given_the_same_options() -> None:
    z, y = _batch(1)
    head = torch.nn.Linear(8, 6)
    options = OperatorOptions(max_gamma=2.0, unbiased_radius=True)
    t = CarrotTransform(options)
    assert_close(t(z, y), carrot_operator(z, y, options=options)[0])
    loss = CarrotCEKLLoss(lam=0.5, options=options)
    assert_close(loss(z, y, head), carrot_ce_kl_loss(z, y, head, lam=0.5, options=options)[0])
    sc = CarrotSupConLoss(temperature=0.2, options=options)
    assert_close(sc(z, y), carrot_supcon_loss(z, y, temperature=0.2, options=options)[0])
    assert "max_gamma=2.0" in repr(t) and "max_gamma=2.0" in repr(loss)


def test_replace_validates_and_accepts_numpy_integers() -> None:
    base = OperatorOptions()
    assert base.replace(max_gamma=3.0).max_gamma == 3.0 and base.max_gamma is None
    assert OperatorOptions(ignore_index=np.int64(-1)).ignore_index == -1
    with pytest.raises(ValueError, match="max_gamma must be >= 1"):
        base.replace(max_gamma=0.9)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eps": -1.0}, r"eps must be >= 0 and finite, got -1.0"),
        ({"eps": float("inf")}, r"eps must be >= 0 and finite, got inf"),
        ({"eps": "small"}, r"eps must be >= 0 and finite, got 'small'"),
        ({"max_gamma": 0.5}, r"max_gamma must be >= 1 or None \(no cap\), got 0.5"),
        ({"max_gamma": float("nan")}, r"max_gamma must be >= 1 or None \(no cap\), got nan"),
        ({"detach_stats": "yes"}, r"detach_stats must be True or False, got 'yes'"),
        ({"sync_free": 1}, r"sync_free must be True or False, got 1"),
        ({"space": "hyperbolic"}, r"space must be one of \('euclidean', 'angular'\)"),
        ({"ignore_index": 1.5}, r"ignore_index must be an integer or None, got 1.5"),
    ],
)
def test_invalid_options_are_refused_when_built(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorOptions(**changes)


def test_options_are_immutable_and_a_changed_copy_is_checked() -> None:
    import dataclasses

    from carrot.functional import CEKLOptions

    options = OperatorOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_gamma = 0.1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CEKLOptions().lam = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_gamma must be >= 1"):
        options.replace(max_gamma=0.1)
    z, y = _batch()
    # a per-call eps builds one copy, not one per call, and leaves the options as they were
    first = options.with_eps_detach(1e-6, None)
    assert first is options.with_eps_detach(1e-6, None) and first.eps == 1e-6
    assert options.eps == 1e-12 and options.with_eps_detach(None, None) is options
    carrot_operator(z, y, eps=1e-6, options=options)
    from carrot.methods.carrot import CarrotSettings

    with pytest.raises(ValueError, match="eps must be >= 0"):
        carrot_operator(z, y, eps=-1.0, options=CarrotSettings())
    with pytest.raises(ValueError, match="options must be an OperatorOptions, got dict"):
        CarrotTransform({"max_gamma": 2.0})  # type: ignore[arg-type]
