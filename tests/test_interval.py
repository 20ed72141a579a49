"""Interval-censored retention (iop_research.survival.interval) against R survival 3.5.

Golden values: ``Rscript --vanilla tests/r/interval_aft.R <datasets_dir> tests/golden/interval_aft.json``
on tests/golden/data/interval_teds.csv (IOP LOS of a TEDS-format file) and
interval_visits.csv (relapse seen at urine screens), both written by
tests/r/make_interval_data.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from hypothesis import given, settings
from hypothesis import strategies as st

from iop_research.survival.km import fit_km
from iop_research.exceptions import ModelSpecificationError
from iop_research.survival.interval import (
    _bounds,
    _innermost,
    compare_midpoint,
    fit_interval_aft,
    fit_turnbull,
    midpoint_imputation,
    turnbull_survival_at,
)


@pytest.fixture(scope="module")
def golden():
    return load_golden("interval_aft")


def _data(name):
    if name == "teds_cat":
        # as tests/r/interval_aft.R: discharge reason as a string column (R: factor, reference
        # "completed"), MAT as a bool column (R: logical)
        d = _data("teds")
        reason = np.where(d["completed"] == 1, "completed", np.where(d["dropped_out"] == 1, "dropped_out", "other"))
        return d.assign(reason=reason, mat_b=d["mat"] == 1)
    return pd.read_csv(GOLDEN_DIR / "data" / f"interval_{name}.csv")


# R's coefficient names of factor / logical terms -> the package's one convention (iop_research._design)
R_TERMS = {"reasondropped_out": "reason[T.dropped_out]", "reasonother": "reason[T.other]", "mat_bTRUE": "mat_b[T.True]"}


def _aft(case):
    covs = [c.strip() for c in case["rhs"].split("+")]
    return fit_interval_aft(_data(case["data"]), lower_col="lower", upper_col="upper", covariates=covs,
                            distribution=case["dist"])


@pytest.mark.parametrize("i", range(7))
def test_aft_matches_survreg(golden, i):
    """survreg(Surv(lower, upper, type = "interval2") ~ ..., dist = "weibull"|"loglogistic"|"lognormal");
    cases 5 and 6 with a factor (reason) and a logical (mat_b) covariate, dummy-coded by the package."""
    case = golden["aft"][i]
    fit = _aft(case)
    assert fit.tidy["term"].tolist() == [R_TERMS.get(t, t) for t in case["terms"]]
    np.testing.assert_allclose(fit.tidy["estimate"], case["estimate"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.tidy["std_error"], case["std_error"], rtol=1e-4)
    np.testing.assert_allclose(fit.glance["loglik"].iloc[0], case["loglik"], rtol=1e-9)
    np.testing.assert_allclose(fit.glance["scale"].iloc[0], case["scale"], rtol=1e-6)
    assert fit.glance["n"].iloc[0] == case["n"] and bool(fit.glance["converged"].iloc[0])


def test_turnbull_teds_matches_survfit_exactly(golden):
    """survfit(Surv(lower, upper, type = "interval2") ~ 1 and ~ mat) on TEDS LOS: disjoint bins, exact NPMLE."""
    d = _data("teds")
    for case in golden["turnbull"][:2]:
        fit = fit_turnbull(d, lower_col="lower", upper_col="upper", group_col=case["group"])
        times = list(dict.fromkeys(case["time"]))
        got = turnbull_survival_at(fit, times)
        assert got["identified"].all()
        np.testing.assert_allclose(got["survival"], case["surv"], rtol=1e-6, atol=1e-12)


def test_turnbull_visits_agrees_with_survfit_to_its_stopping_rule(golden):
    """survfit(Surv(lower, upper, type = "interval2") ~ 1 and ~ treat) on screen-visit intervals.

    R's survfitTurnbull stops when no mass changes by more than 5e-5 per step, short of the
    NPMLE on these overlapping intervals; ours satisfies the NPMLE's KKT conditions
    (test below), so agreement is to 5e-3.
    """
    d = _data("visits")
    for case in golden["turnbull"][2:]:
        fit = fit_turnbull(d, lower_col="lower", upper_col="upper", group_col=case["group"])
        got = turnbull_survival_at(fit, list(dict.fromkeys(case["time"])))
        np.testing.assert_allclose(got["survival"], case["surv"], atol=5e-3)


def test_turnbull_is_the_npmle():
    """KKT conditions of the NPMLE: sum_i a_ij / (a_i.p) <= n, with equality where p_j > 0."""
    d = _data("visits")
    fit = fit_turnbull(d, lower_col="lower", upper_col="upper")
    lo, hi = _bounds(d, "lower", "upper", "t")
    q_lo, _, q_hi, alpha = _innermost(lo, hi)
    p = np.zeros(len(q_lo))
    key = {(a, b): k for k, (a, b) in enumerate(zip(q_lo, q_hi))}
    for row in fit.tidy.itertuples():
        p[key[(row.interval_lower, row.interval_upper)]] = row.probability
    grad = (alpha / (alpha @ p)[:, None]).sum(axis=0) / len(d)
    assert grad.max() < 1 + 1e-6
    np.testing.assert_allclose(grad[p > 1e-6], 1.0, atol=1e-6)
    assert fit.tidy["probability"].sum() == pytest.approx(1.0)


def test_turnbull_hand_example():
    """Worked example: innermost intervals (1,2], [3,3], (5,6], (7,8] (Turnbull 1976 construction)."""
    d = pd.DataFrame({"lo": [0, 2, 5, 3, 3, 1, 7, 4], "hi": [3, 6, np.inf, 3, 8, 2, np.nan, 9]})
    fit = fit_turnbull(d, lower_col="lo", upper_col="hi")
    assert fit.tidy[["interval_lower", "interval_upper"]].to_numpy().tolist() == [[1, 2], [3, 3], [5, 6], [7, 8]]
    assert fit.glance[["n_exact", "n_interval", "n_right_censored"]].iloc[0].tolist() == [1, 5, 2]
    at = turnbull_survival_at(fit, [1.5, 2, 8])
    assert at["identified"].tolist() == [False, True, True]
    assert at["survival"].iloc[-1] == 0.0


def test_turnbull_equals_km_without_intervals():
    rng = np.random.default_rng(3)
    t = rng.integers(1, 60, 200).astype(float)
    event = rng.random(200) < 0.7
    d = pd.DataFrame({"lo": t, "hi": np.where(event, t, np.inf), "time": t, "event": event.astype(int)})
    tb = turnbull_survival_at(fit_turnbull(d, lower_col="lo", upper_col="hi"), [5, 10, 20, 40])
    km = fit_km(d, duration_col="time", event_col="event", times=[5, 10, 20, 40]).extra["at_times"]
    np.testing.assert_allclose(tb["survival"], km["survival"], rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 10), st.booleans()), min_size=1, max_size=40))
def test_turnbull_survival_is_a_survival_curve(rows):
    lo = np.array([r[0] for r in rows], float)
    hi = np.where([r[2] for r in rows], np.inf, lo + np.array([r[1] for r in rows]))
    fit = fit_turnbull(pd.DataFrame({"lo": lo, "hi": hi}), lower_col="lo", upper_col="hi")
    s = fit.tidy["survival"].to_numpy()
    assert ((s >= 0) & (s <= 1)).all() and (np.diff(s) <= 1e-12).all()
    assert (fit.tidy["interval_lower"] <= fit.tidy["interval_upper"]).all()
    # Kuhn-Tucker conditions of the NPMLE (Gentleman & Geyer 1994)
    q_lo, _, q_hi, alpha = _innermost(lo, hi)
    p = np.zeros(len(q_lo))
    key = {(a, b): k for k, (a, b) in enumerate(zip(q_lo, q_hi))}
    for row in fit.tidy.itertuples():
        p[key[(row.interval_lower, row.interval_upper)]] = row.probability
    d = (alpha / (alpha @ p)[:, None]).sum(axis=0) / len(lo)
    assert d.max() < 1 + 1e-8 and np.allclose(d[p > 0], 1.0, atol=1e-8)


def test_groups_and_errors():
    d = pd.DataFrame({"lo": [1, 2, 30, 45], "hi": [1, 2, 45, np.inf], "g": ["b", "a", "a", "b"]})
    fit = fit_turnbull(d, lower_col="lo", upper_col="hi", group_col="g")
    assert fit.glance["group"].tolist() == ["a", "b"]
    with pytest.raises(ModelSpecificationError, match="hi < lo"):
        fit_turnbull(d.assign(hi=[0, 2, 45, 50]), lower_col="lo", upper_col="hi")
    with pytest.raises(ModelSpecificationError, match="not found"):
        fit_turnbull(d, lower_col="lower", upper_col="hi")
    with pytest.raises(ModelSpecificationError, match=r"column 'g' \(group\) has 1 missing value"):
        fit_turnbull(d.assign(g=["a", None, "a", "b"]), lower_col="lo", upper_col="hi", group_col="g")
    with pytest.raises(ModelSpecificationError, match="distribution"):
        fit_interval_aft(d, lower_col="lo", upper_col="hi", distribution="gamma")
    with pytest.raises(ModelSpecificationError, match="constant"):
        fit_interval_aft(d.assign(x=1.0), lower_col="lo", upper_col="hi", covariates=["x"])
    with pytest.raises(ModelSpecificationError, match="missing"):
        fit_interval_aft(d.assign(x=[1.0, np.nan, 0, 1]), lower_col="lo", upper_col="hi", covariates=["x"])


def test_aft_recovers_simulated_time_ratio():
    """Simulation: weekly-screened Weibull times with time ratio exp(0.4); the CI covers 0.4."""
    rng = np.random.default_rng(2026)
    n = 3000
    x = rng.integers(0, 2, n)
    t = np.exp(3.5 + 0.4 * x + 0.8 * np.log(rng.exponential(size=n)))
    lo = np.floor(t / 7) * 7
    d = pd.DataFrame({"lo": lo, "hi": lo + 7, "x": x})
    row = fit_interval_aft(d, lower_col="lo", upper_col="hi", covariates=["x"]).tidy.set_index("term").loc["x"]
    assert row["conf_low"] < 0.4 < row["conf_high"]


def test_midpoint_imputation_and_its_bias():
    d = _data("teds")
    mid = midpoint_imputation(d, lower_col="lower", upper_col="upper")
    assert list(d.columns) == ["lower", "upper", "completed", "dropped_out", "mat"]  # input untouched
    assert mid.loc[mid["upper"].isna(), "event"].eq(0).all()
    assert mid.loc[(mid["lower"] == 30) & (mid["upper"] == 45), "duration"].eq(37.5).all()
    km = fit_km(mid, duration_col="duration", event_col="event", times=[40]).extra["at_times"]
    tb = turnbull_survival_at(fit_turnbull(d, lower_col="lower", upper_col="upper"), [40])
    # at 40 days (inside the 31-45 range) the midpoint curve has already dropped; S(45) does not
    assert km["survival"].iloc[0] < turnbull_survival_at(
        fit_turnbull(d, lower_col="lower", upper_col="upper"), [30])["survival"].iloc[0]
    assert not tb["identified"].iloc[0]
    with pytest.raises(ModelSpecificationError, match="already exist"):
        midpoint_imputation(mid, lower_col="lower", upper_col="upper")


@requires_r
def test_r_script_reproduces_golden(tmp_path):
    """Rscript --vanilla tests/r/interval_aft.R <datasets_dir> <out_json> gives the committed JSON."""
    live = run_r_script("interval_aft", tmp_path / "interval_aft.json")
    committed = load_golden("interval_aft")
    for a, b in zip(live["aft"], committed["aft"]):
        np.testing.assert_allclose(a["estimate"], b["estimate"], rtol=1e-6)
        np.testing.assert_allclose(a["std_error"], b["std_error"], rtol=1e-4)
    for a, b in zip(live["turnbull"], committed["turnbull"]):
        np.testing.assert_allclose(a["surv"], b["surv"], rtol=1e-6)


def test_compare_midpoint_by_group():
    d = _data("teds")
    cmp = compare_midpoint(d, lower_col="lower", upper_col="upper", times=[30, 40, 45, 90], group_col="mat")
    assert cmp["group"].tolist() == [0] * 4 + [1] * 4
    assert cmp["midpoint_km"].notna().all()
    ident = cmp[cmp["identified"]]
    # at range ends (30, 45, 90) the two agree; inside a range (40) the midpoint curve is lower
    np.testing.assert_allclose(ident["midpoint_km"], ident["turnbull"], atol=1e-12)
    inside = cmp[~cmp["identified"]]
    assert (inside["time"] == 40).all() and (inside["difference"] < 0).all()
