"""`carrot methods` states the four FGVC baselines' paper defaults, references and needs."""

from __future__ import annotations

import json

from carrot.cli import main


def test_carrot_methods_states_the_papers_defaults(capsys) -> None:
    assert main(["methods", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    defaults = {
        name: {s["key"]: s["default"] for s in rows[name]["settings"]}
        for name in ("maxent", "pairwise_confusion", "center_loss", "isda")
    }
    assert defaults == {
        "maxent": {"maxent.gamma": 0.1},
        "pairwise_confusion": {"pairwise_confusion.lam_per_class": 0.1},
        "center_loss": {"center_loss.lam": 0.003, "center_loss.alpha": 0.5},
        "isda": {"isda.lam0": 0.5},
    }
    assert (
        rows["isda"]["reference"].startswith("Wang et al.") and "2019" in rows["isda"]["reference"]
    )
    assert rows["center_loss"]["addable"] and not rows["isda"]["addable"]
    assert (
        not rows["maxent"]["needs_hard_labels"] and rows["pairwise_confusion"]["needs_hard_labels"]
    )
