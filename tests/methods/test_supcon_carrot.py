"""carrot.methods.supcon_carrot: the same losses and gradients as carrot 0.2, to the bit (the reference is
in carrot02.py)."""

from __future__ import annotations

import pytest
from carrot02 import check_same_as_carrot_0_2

CASES = [
    ["method=supcon_carrot"],
    ["method=supcon_carrot", "carrot.max_gamma=null", "carrot.sync_free=true"],
]


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
@pytest.mark.parametrize("progress", [0.1, 0.9])
def test_losses_and_gradients_are_those_of_carrot_0_2_to_the_bit(
    overrides: list[str], progress: float
) -> None:
    check_same_as_carrot_0_2(overrides, progress)
