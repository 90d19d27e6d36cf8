"""A method's baseline chain (method → its baseline → that one's baseline ...) must end."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["check_baseline_chain"]


def check_baseline_chain(name: str, baselines: Mapping[str, str | None], where: str) -> None:
    """Raises a one-line ``ValueError`` when ``name``'s chain of baselines comes back to a
    method already on it: a method that is its own baseline would train and be compared with
    itself, and a cycle (a → b → a) would be walked forever by whatever follows baselines."""
    chain = [name]
    base = baselines.get(name)
    while base is not None:
        if base in chain:
            path = " → ".join([*chain, base])
            what = "itself" if len(chain) == 1 else f"a cycle ({path})"
            raise ValueError(
                f"{where}.baseline must name another method whose baselines end at a baseline "
                f"(e.g. ce), got {baselines.get(name)!r}, which leads back to {what}."
            )
        chain.append(base)
        base = baselines.get(base)
