"""Equivalence (paired TOST), the verdict, the Bayesian comparison over datasets and seed planning
(issue 31), each checked against the library or the formula it stands for."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import baycomp
import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from carrot.bench.bayes import bayesian_comparisons
from carrot.bench.grid import Cell
from carrot.bench.latex import latex_table
from carrot.bench.plan import (
    find_pilot,
    plan,
    plan_table,
    seeds_for_equivalence,
    seeds_to_detect,
    tost_power,
)
from carrot.bench.report import analyze, comparison_rows, markdown, write_csv, write_report
from carrot.bench.stats import paired_comparison
from carrot.bench.verdict import verdict
from carrot.cli import main

BASE = [50.0, 52.5, 49.0, 51.0, 50.5, 48.0, 53.0, 50.0]
DIFFS = {
    "gain": [2.1, 1.9, 2.3, 2.0, 1.8, 2.2, 2.0, 1.9],  # a clear gain
    "loss": [-1.6, -1.4, -1.5, -1.7, -1.3, -1.5, -1.6, -1.4],  # a clear loss
    "tight": [0.05, -0.04, 0.02, -0.01, 0.03, -0.05, 0.01, 0.0],  # a tight zero
    "noisy": [1.5, -2.0, 0.8, -1.2, 2.2, -0.9, -0.3, 0.1],  # a noisy zero
}


def _row(dataset: str, method: str, seed: int, top1: float) -> dict:
    return {
        "dataset": dataset, "method": method, "seed": seed, "final_top1": top1, "best_top1": top1,
        "final_mean_class_acc": top1, "final_gamma_mean": 1.0, "max_gamma": 1.5, "final_r_mean": 0.2,
    }  # fmt: skip


def _rows(datasets: tuple[str, ...] = ("d",), methods: tuple[str, ...] = tuple(DIFFS)) -> list:
    rows = []
    for i, d in enumerate(datasets):
        for s, b in enumerate(BASE):
            rows.append(_row(d, "ce", s, b + 10 * i))
            rows += [_row(d, m, s, b + 10 * i + DIFFS[m][s]) for m in methods]
    return rows


def _finals(comps: list) -> dict:
    return {(c.dataset, c.method): c for c in comps if c.metric == "final_top1"}


# --- TOST, Holm over its family, the verdict ------------------------------------------------------


@pytest.mark.parametrize("margin", [0.25, 0.5, 1.0])
def test_tost_p_is_statsmodels_ttost_paired_on_the_same_pairs(margin: float) -> None:
    for diffs in DIFFS.values():
        method = [b + d for b, d in zip(BASE, diffs, strict=True)]
        got = paired_comparison(method, BASE, margin=margin).tost_p
        expected = ttost_paired(np.array(method), np.array(BASE), -margin, margin)[0]
        assert got == pytest.approx(float(expected), rel=1e-12)
    assert math.isnan(paired_comparison(method, BASE).tost_p)  # no margin, no TOST


def test_holm_over_the_tost_family_is_multipletests() -> None:
    rows = _rows(("d1", "d2"))
    comps = analyze(rows, dict.fromkeys(DIFFS, "ce"), margin=0.5)
    for metric in ("final_top1", "best_top1"):
        family = [c for c in comps if c.metric == metric]
        assert len(family) == 8
        raw = [c.stats.tost_p for c in family]
        expected = multipletests(raw, method="holm")[1]
        assert [c.tost_holm_p for c in family] == pytest.approx(list(expected))
        assert [c.tost_holm_p for c in family] != pytest.approx(raw)  # the adjustment did act
    per = analyze(rows, dict.fromkeys(DIFFS, "ce"), margin=0.5, family="dataset")
    family = [c for c in per if c.metric == "final_top1" and c.dataset == "d2"]
    expected = multipletests([c.stats.tost_p for c in family], method="holm")[1]
    assert [c.tost_holm_p for c in family] == pytest.approx(list(expected))


def test_verdict_table_on_constructed_differences() -> None:
    comps = analyze(_rows(), dict.fromkeys(DIFFS, "ce"), margin=0.5)
    words = {m: c.verdict for (_, m), c in _finals(comps).items()}
    assert words == {
        "gain": "better",
        "loss": "worse",
        "tight": "equivalent within ±0.5",
        "noisy": "undecided",
    }
    # A wide margin makes the precise gain both real and within it.
    wide = _finals(analyze(_rows(), dict.fromkeys(DIFFS, "ce"), margin=3.0))
    assert wide[("d", "gain")].verdict == "better, within ±3"
    assert wide[("d", "tight")].verdict == "equivalent within ±3"
    tex = {
        line.split(" & ")[0]: line
        for line in latex_table(_rows(), comps).splitlines()
        if line.startswith(r"\texttt")
    }
    assert tex[r"\texttt{gain}"].endswith(r"^{\dagger}$ \\")
    assert tex[r"\texttt{loss}"].endswith(r"^{\dagger}$ \\")
    assert tex[r"\texttt{tight}"].endswith(r"^{\ddagger}$ \\")
    assert tex[r"\texttt{noisy}"].endswith(r"$ \\") and "dagger" not in tex[r"\texttt{noisy}"]
    csv_rows = [r for r in comparison_rows(comps) if r["metric"] == "final_top1"]
    assert [r["verdict"] for r in csv_rows] == list(words.values())
    assert {r["margin"] for r in csv_rows} == {0.5}


def test_verdict_function_is_the_rule() -> None:
    nan = math.nan
    assert verdict(1.0, 0.01, 0.9, margin=0.5) == "better"
    assert verdict(-1.0, 0.01, 0.9, margin=0.5) == "worse"
    assert verdict(0.1, 0.9, 0.01, margin=0.5) == "equivalent within ±0.5"
    assert verdict(0.1, 0.9, 0.2, margin=0.5) == "undecided"
    assert verdict(-0.2, 0.04, 0.01, margin=0.5) == "worse, within ±0.5"
    assert verdict(0.1, 0.05, 0.05, margin=0.5) == "undecided"  # p = α does not reject
    assert verdict(1.0, nan, nan, margin=0.5) == "no test"


def test_edge_cases_one_seed_zero_variance_missing_method() -> None:
    rows = [_row("d", "ce", 0, 50.0), _row("d", "one", 0, 51.0)]  # one seed
    rows += [_row("d", "ce", s, 50.0 + s) for s in (1, 2)]
    rows += [_row("d", "flat", s, 50.3 + s) for s in range(3)]  # same difference on every seed
    rows += [_row("e", "ce", s, 60.0 + s) for s in range(3)]  # "one" and "flat" missing on e
    comps = _finals(analyze(rows, {"one": "ce", "flat": "ce"}, margin=0.5))
    for name in ("one", "flat"):
        c = comps[("d", name)]
        assert c.verdict == "no test" and math.isnan(c.stats.tost_p) and math.isnan(c.tost_holm_p)
        assert c.seeds_to_detect is None and c.seeds_for_equivalence is None
    assert ("e", "one") not in comps  # a method missing on a dataset: no comparison there
    alone = rows + [_row("f", "flat", s, 40.0 + s) for s in range(3)]  # no ce on f
    table = markdown(alone, analyze(alone, {"one": "ce", "flat": "ce"}))
    assert (
        "| flat | 3 | 41.00 ± 1.00 | 41.00 ± 1.00 | 41.00 ± 1.00 | (no paired run of its " in table
    )
    csv_row = next(r for r in comparison_rows(list(comps.values())) if r["method"] == "one")
    assert csv_row["seeds_to_detect"] == "" and csv_row["verdict"] == "no test"
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="margin must be a finite number > 0"):
            analyze(rows, {"one": "ce"}, margin=bad)


# --- Bayesian comparison over datasets -----------------------------------------------------------


def test_bayesian_probabilities_are_baycomps_and_sum_to_one() -> None:
    rows = _rows(("d1", "d2", "d3"))
    shifts = {"d1": 0.0, "d2": 0.7, "d3": -0.4}  # make the datasets differ for "noisy"
    for r in rows:
        if r["method"] == "noisy":
            r["final_top1"] += shifts[r["dataset"]]
    comps = analyze(rows, dict.fromkeys(DIFFS, "ce"), margin=0.5)
    results = {r.method: r for r in bayesian_comparisons(comps, samples=3000, seed=1)}
    for method in DIFFS:
        r = results[method]
        x = np.array([np.mean([b + 10 * i for b in BASE]) for i in range(3)])
        y = np.array(
            [
                np.mean(
                    [b + 10 * i + d + (shifts[k] if method == "noisy" else 0.0)
                     for b, d in zip(BASE, DIFFS[method], strict=True)]
                )
                for i, k in enumerate(("d1", "d2", "d3"))
            ]
        )  # fmt: skip
        expected = baycomp.SignedRankTest(x, y, 0.5, nsamples=3000, random_state=1).probs()
        got = (r.p_worse, r.p_equivalent, r.p_better)
        assert got == pytest.approx(tuple(map(float, expected)))
        assert sum(got) == pytest.approx(1.0) and r.datasets == ("d1", "d2", "d3")
    assert results["gain"].p_better > 0.5 and results["loss"].p_worse > 0.5
    assert results["tight"].p_equivalent > 0.5


def test_bayesian_edge_cases_are_documented_empty_cells(tmp_path: Path) -> None:
    rows = _rows(("d1",), ("gain",))
    (one,) = bayesian_comparisons(analyze(rows, {"gain": "ce"}), samples=500)
    assert math.isnan(one.p_better) and one.note == "needs two or more datasets"
    rows = _rows(("d1", "d2", "d3"), ("gain", "tight"))
    rows = [r for r in rows if not (r["method"] == "tight" and r["dataset"] == "d2")]
    comps = analyze(rows, {"gain": "ce", "tight": "ce"})
    text = write_report(tmp_path / "r", rows, [], comps, header="")
    assert "| tight | ce | 2 |" in text and "not compared on d2" in text
    assert (tmp_path / "r" / "bayes_gain_vs_ce.png").is_file()
    assert "P(\\mathrm{better})" in (tmp_path / "r" / "results.tex").read_text()
    header = (tmp_path / "r" / "bayes.csv").read_text().splitlines()[0]
    assert header.startswith("method,baseline,metric,rope,n_datasets,datasets,p_worse,")
    one_dataset = [r for r in rows if r["dataset"] == "d1"]
    write_report(tmp_path / "r", one_dataset, [], analyze(one_dataset, {"gain": "ce"}), header="")
    assert not list((tmp_path / "r").glob("bayes_*.png"))  # no stale pictures


# --- planning ------------------------------------------------------------------------------------


def _t_power(d: float, n: int, alpha: float = 0.05) -> float:
    """Two-sided paired t-test power from the noncentral t: P(|T| > t_crit), T ~ t'(n − 1, d√n)."""
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = d * math.sqrt(n)
    return float(stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc))


def _tost_power_nct(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """TOST power at true Δ = 0 from the noncentral t, ignoring the (tiny) chance that both
    one-sided tests fail together: 1 − 2 P(T' ≤ t_c), T' ~ t'(n − 1, δ√n / sd)."""
    crit = stats.t.ppf(1 - alpha, n - 1)
    return 1 - 2 * float(stats.nct.cdf(crit, n - 1, delta * math.sqrt(n) / sd))


@pytest.mark.parametrize(("effect", "sd"), [(0.5, 1.0), (0.5, 0.4), (1.0, 2.5), (0.3, 0.2)])
def test_seed_counts_against_the_noncentral_t(effect: float, sd: float) -> None:
    n = seeds_to_detect(effect, sd)
    assert n is not None and _t_power(effect / sd, n) >= 0.8 > _t_power(effect / sd, n - 1)
    m = seeds_for_equivalence(effect, sd)
    # The closed form is a lower bound of the exact power, close at these n.
    assert m is not None and _tost_power_nct(effect, sd, m) >= 0.8 - 0.01
    assert _tost_power_nct(effect, sd, m - 1) < 0.8
    assert tost_power(effect, sd, m) >= 0.8 > tost_power(effect, sd, m - 1)


def test_tost_power_against_a_simulation() -> None:
    rng = np.random.default_rng(0)
    for n, sd, delta in ((5, 0.4, 0.5), (3, 0.3, 0.5)):
        x = rng.normal(0.0, sd, size=(100_000, n))
        se = x.std(axis=1, ddof=1) / math.sqrt(n)
        crit = stats.t.ppf(0.95, n - 1)
        mean = x.mean(axis=1)
        simulated = np.mean(((mean + delta) / se > crit) & ((mean - delta) / se < -crit))
        assert tost_power(delta, sd, n) == pytest.approx(simulated, abs=0.005)
        assert tost_power(delta, sd, n) >= _tost_power_nct(delta, sd, n)
    assert seeds_to_detect(0.5, 0.0) is None and seeds_to_detect(0.5, math.nan) is None


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A grid folder whose one report folder holds a pilot's comparisons.csv."""
    rows = _rows(("d1", "d2"), ("gain", "noisy"))
    rows += [_row("d1", "single", 0, 51.0)]
    comps = analyze(rows, {"gain": "ce", "noisy": "ce", "single": "ce"})
    folder = tmp_path_factory.mktemp("grid")
    (folder / "pilot").mkdir()
    write_csv(folder / "pilot" / "comparisons.csv", comparison_rows(comps))
    return folder


def test_plan_from_a_pilot(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert find_pilot(grid) == grid / "pilot" / "comparisons.csv"
    rows = {(r.dataset, r.method): r for r in plan(find_pilot(grid), 0.5)}
    noisy = rows[("d1", "noisy")]
    sd = float(np.std(DIFFS["noisy"], ddof=1))
    assert noisy.pilot_n == 8 and noisy.sd_diff == pytest.approx(sd)
    assert noisy.to_detect == seeds_to_detect(0.5, sd) and noisy.to_detect > 8
    assert noisy.for_equivalence == seeds_for_equivalence(0.5, sd)
    assert rows[("d1", "single")].to_detect is None and "one seed" in rows[("d1", "single")].note
    assert main(["bench", "plan", "--pilot", str(grid), "--effect", "0.5"]) == 0
    out = capsys.readouterr().out
    assert (
        f"| d1 | noisy vs ce | 8 | {sd:.3f} | {noisy.to_detect} | {noisy.for_equivalence} |" in out
    )
    assert plan_table(list(rows.values()), 0.5).count("\n| d1 |") == 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--effect", "0"], "--effect must be a finite number > 0"),
        (["--effect", "-1"], "--effect must be a finite number > 0"),
        (["--effect", "0.5", "--power", "1.5"], "--power must be between 0 and 1"),
    ],
)
def test_plan_errors_are_one_line(
    grid: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert main(["bench", "plan", "--pilot", str(grid), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert main(["bench", "plan", "--pilot", str(grid / "nope"), "--effect", "1"]) == 2
    assert "--pilot must be a report folder" in capsys.readouterr().err
    old = grid.parent / f"{grid.name}_old"
    old.mkdir(exist_ok=True)
    (old / "comparisons.csv").write_text("dataset,method,baseline,metric,n\nd,a,ce,final_top1,3\n")
    assert main(["bench", "plan", "--pilot", str(old), "--effect", "1"]) == 2
    assert "has no sd_diff column" in capsys.readouterr().err
    assert main(["bench", "plan", "--pilot", str(grid), "--effect", "1", "--metric", "x"]) == 2
    assert "has no comparison of x" in capsys.readouterr().err


def test_accuracy_margin_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-0.5", "nan"):
        assert main(["bench", "accuracy", "--report-only", "--equivalence-margin", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--equivalence-margin must be a finite number > 0" in err[0]


# --- --report-only recomputes the new columns on an existing grid --------------------------------


def test_report_only_recomputes_with_the_margin(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "seeds: [0, 1, 2, 3, 4, 5, 6, 7]\n"
        "datasets: {d1: {overrides: [data.name=digits]}, d2: {overrides: [data.name=digits]}}\n"
        "methods: [ce, tight]\n"
        "variants: {tight: {baseline: ce, overrides: [method=carrot]}}\n"
    )
    out = tmp_path / "out"
    for i, d in enumerate(("d1", "d2")):
        for s, b in enumerate(BASE):
            for m, top1 in (("ce", b + i), ("tight", b + i + DIFFS["tight"][s])):
                run = Cell(d, m, s).run_dir(out)
                run.mkdir(parents=True)
                (run / "summary.json").write_text(json.dumps({"epochs": 1}))
                record = {"epoch": 1, "top1": top1, "mean_class_acc": top1, "seconds": 1.0}
                (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    base = ["bench", "accuracy", "--suite", str(suite), "--out", str(out), "--report-only"]
    assert main([*base, "--equivalence-margin", "0.5"]) == 0
    text = (out / "s" / "results.md").read_text()
    assert "equivalent within ±0.5" in text and "rope ±δ" in text
    assert main([*base, "--equivalence-margin", "0.01"]) == 0
    again = (out / "s" / "comparisons.csv").read_text()
    assert "equivalent within ±0.01" not in again and ",0.01," in again and "undecided" in again
    assert "P(equivalent)" in (out / "s" / "results.md").read_text()


def test_missing_baycomp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from carrot.integrations import baycomp as adapter

    monkeypatch.setitem(sys.modules, "baycomp", None)
    with pytest.raises(ImportError, match=r"needs baycomp.*pip install 'carrot-fgvc\[bench\]'"):
        adapter.signed_rank_posterior([1.0, 2.0], [1.5, 2.5], rope=0.5, samples=10, seed=0)
    comps = analyze(_rows(("d1", "d2"), ("gain",)), {"gain": "ce"})
    with pytest.raises(ImportError, match="needs baycomp"):
        bayesian_comparisons(comps, samples=10)
