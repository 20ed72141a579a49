"""Tests of iop_research.designs.adjusted: adjusted survival curves.

Point estimates against R written out (``tests/golden/adjusted_uis.json`` from
``tests/r/adjusted_uis.R``): g-computation = ``rowMeans(survfit(coxph_fit, newdata = uis with
TREAT = a)$surv)``; IPTW = ``survfit(Surv(TIME, CENSOR) ~ TREAT, weights = w)`` with stabilised
ATE weights from ``glm(..., binomial)``; RMST as the area under those step curves. Coverage of the
bootstrap intervals against a simulator's counterfactual truth: a small ``slow`` test here, the
full 200-replicate study in ``benchmarks/sim_adjusted.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import load_golden, requires_r, run_r_script
from iop_research.designs.adjusted import adjusted_survival
from iop_research.exceptions import ModelSpecificationError
from iop_research.survival.cox import fit_cox

RTOL_EST = 1e-6
COV = ["AGE", "BECK", "NDT", "IV", "RACE", "SITE"]
KW = dict(exposure_col="TREAT", duration_col="TIME", event_col="CENSOR")


@pytest.fixture(scope="module")
def uis(uis_path) -> pd.DataFrame:
    return pd.read_csv(uis_path)


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("adjusted_uis")


def _surv(res, a):
    return res.tidy.loc[res.tidy["exposure"] == a, "survival"].to_numpy()


def test_gcomputation_matches_r(uis, golden):
    """R: rowMeans(survfit(coxph(Surv(TIME, CENSOR) ~ TREAT + AGE + BECK + NDT + IV + RACE + SITE),
    newdata = uis with TREAT = a)$surv) at times; RMST to tau = 600."""
    res = adjusted_survival(uis, covariates=COV, times=golden["times"], tau=golden["tau"][0], n_boot=0, seed=1, **KW)
    for a in (0, 1):
        np.testing.assert_allclose(_surv(res, a), golden["gcomp"][f"a{a}"]["surv"], rtol=RTOL_EST)
        rm = res.extra["rmst"].set_index("exposure").loc[a, "rmst"]
        np.testing.assert_allclose(rm, golden["gcomp"][f"a{a}"]["rmst"][0], rtol=RTOL_EST)
    con = res.extra["contrasts"]
    diff = con[con["measure"] == "difference"]["estimate"].to_numpy()
    np.testing.assert_allclose(diff, np.subtract(golden["gcomp"]["a1"]["surv"], golden["gcomp"]["a0"]["surv"]),
                               rtol=RTOL_EST)
    ratio = con[con["measure"] == "ratio"]["estimate"].to_numpy()
    np.testing.assert_allclose(ratio, np.divide(golden["gcomp"]["a1"]["surv"], golden["gcomp"]["a0"]["surv"]),
                               rtol=RTOL_EST)


def test_gcomputation_from_a_stratified_fit_matches_r(uis, golden):
    """R: coxph(... + strata(SITE)); survfit per row with newdata, averaged."""
    fit = fit_cox(uis, duration_col="TIME", event_col="CENSOR", covariates=["TREAT"] + COV[:-1], strata_col="SITE")
    res = adjusted_survival(uis, fit=fit, times=golden["times"], n_boot=0, seed=1, **KW)
    for a in (0, 1):
        np.testing.assert_allclose(_surv(res, a), golden["gcomp_strata"][f"a{a}"]["surv"], rtol=RTOL_EST)


def test_iptw_matches_r(uis, golden):
    """R: survfit(Surv(TIME, CENSOR) ~ TREAT, weights = stabilised ATE weights from glm)."""
    res = adjusted_survival(uis, covariates=COV, times=golden["times"], tau=golden["tau"][0], n_boot=0, seed=1,
                            method="iptw", **KW)
    for a in (0, 1):
        np.testing.assert_allclose(_surv(res, a), golden["iptw"][f"a{a}"]["surv"], rtol=RTOL_EST)
        rm = res.extra["rmst"].set_index("exposure").loc[a, "rmst"]
        np.testing.assert_allclose(rm, golden["iptw"][f"a{a}"]["rmst"][0], rtol=RTOL_EST)


@requires_r
def test_r_golden_reproduces_live(tmp_path, golden):
    """Re-run tests/r/adjusted_uis.R and compare with the committed golden file."""
    live = run_r_script("adjusted_uis", tmp_path / "adjusted_uis.json")
    for key in ("gcomp", "iptw"):
        np.testing.assert_allclose(live[key]["a1"]["surv"], golden[key]["a1"]["surv"], rtol=1e-12)


def test_bootstrap_intervals_and_shape(uis):
    res = adjusted_survival(uis, covariates=COV, times=[90, 180], n_boot=15, seed=3, **KW)
    t = res.tidy
    assert list(t.columns) == ["exposure", "time", "survival", "std_error", "conf_low", "conf_high"]
    assert (t["conf_low"] <= t["survival"]).all() and (t["survival"] <= t["conf_high"]).all()
    assert (t["std_error"] > 0).all()
    again = adjusted_survival(uis, covariates=COV, times=[90, 180], n_boot=15, seed=3, **KW)
    pd.testing.assert_frame_equal(res.tidy, again.tidy)
    assert res.glance["n_boot"].iloc[0] == 15
    assert set(res.extra["risk_table"]["group"]) == {0, 1}


def test_errors(uis):
    with pytest.raises(ModelSpecificationError, match="method"):
        adjusted_survival(uis, covariates=COV, times=[90], method="aipw", seed=1, **KW)
    with pytest.raises(ModelSpecificationError, match="not found"):
        adjusted_survival(uis, covariates=["nope"], times=[90], seed=1, **KW)
    with pytest.raises(ModelSpecificationError, match="single level"):
        adjusted_survival(uis.assign(TREAT=1), covariates=COV, times=[90], seed=1, **KW)
    with pytest.raises(ModelSpecificationError, match="0/1"):
        adjusted_survival(uis.assign(TREAT=uis["TREAT"] + 1), covariates=COV, times=[90], method="iptw", seed=1, **KW)
    with pytest.raises(ModelSpecificationError, match="covariates"):
        adjusted_survival(uis, times=[90], seed=1, **KW)


@pytest.mark.slow
def test_small_coverage_simulation():
    """20 replicates of benchmarks/sim_adjusted.py (n=300, 50 bootstrap samples, fixed seed): the 95%
    intervals of S_a(90), S_a(180) and their differences cover the counterfactual truth in at least 80%
    of the 120 interval checks (the 200-replicate study is in benchmarks/README.md)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import sim_adjusted  # noqa: PLC0415

    cov = sim_adjusted.run(n_reps=20, n=300, n_boot=50, seed=7, methods=("g-computation",))
    checked = cov[cov["quantity"].isin(["S0", "S1", "diff"])]
    assert len(checked) == 120
    assert checked["covered"].mean() >= 0.80
    assert abs((checked["estimate"] - checked["truth"]).mean()) < 0.02


def test_adjusted_plot_suppresses_small_counts(uis):
    """The risk table under the adjusted curves is suppressed (<11) and the curves stop there."""
    import matplotlib.pyplot as plt

    from iop_research.present.diagnostics import plot_adjusted_survival

    res = adjusted_survival(uis, covariates=COV, times=[0, 100, 200, 400, 800, 1000], n_boot=5, seed=2, **KW)
    ax = plot_adjusted_survival(res, labels={0: "short", 1: "long"})
    counts = [t.get_text() for t in ax.texts if t.get_gid() == "risk_count"]
    assert len(counts) == 12
    for c in counts:
        assert c == "<11" or int(c) == 0 or int(c) >= 11
    assert "<11" in counts
    assert any(t.get_gid() == "cut_note" for t in ax.texts)
    curves = [ln for ln in ax.get_lines() if ln.get_gid() == "curve"]
    assert len(curves) == 2 and all(max(ln.get_xdata()) < 1000 for ln in curves)
    plt.close(ax.figure)
