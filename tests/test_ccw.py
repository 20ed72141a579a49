"""Tests of iop_research.designs.ccw: clone_censor_weight and sustained_treatment (target trial emulation by
clone-censor-weight).

Golden values: tests/golden/ccw.json from tests/r/ccw.R, written out with base R and survival only::

    fit <- glm(started ~ age + sex + day, family = binomial, data = dev)      # deviation model
    w   <- 1 / S_dev(start) ("no_start"), 1 or 1 / (1 - S_dev(21)) ("start")  # IPCW
    survfit(Surv(start, stop, event) ~ strategy, data = clones, weights = w)
    glm(event ~ is_start + t + I(t^2), family = quasibinomial, weights = w)   # person-days

on the persons, deviation person-days and clones written by tests/r/make_ccw_data.py (grace
period 21 days, horizon 120 days), whose plain per-person loops spell the conventions out
independently of the package. Case "sustained" (sustained_treatment: stop within 14 days vs sustain 30 days)
runs the same R code on the ccw_sustained_* files with a window per arm. Cases "tv" and
"sustained_tv" add the time-varying covariates of ccw_tv.csv / ccw_sustained_tv.csv (counting-process
rows), merged onto the person-days in R (row with start < max(day, 1) <= stop)::

    glm(started ~ age + sex + uds_pos + craving + day, family = binomial, data = dev_in_force)

Case "regime" (``grace_weights="regime"``): the "start" clone rows rebuilt in R person by person (daily
until the start day or G, then (T, end]) with the regime's likelihood-ratio weights
(pi - F(d-1)) / (pi (1 - F(d-1))) while not yet started and 1 / pi after the start, from the same glm fit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.designs.ccw import (
    CCW_GLANCE_COLUMNS,
    CCW_TIDY_COLUMNS,
    SUSTAINED_GLANCE_COLUMNS,
    CcwResult,
    _deviation_rows,
    _estimate,
    _replicate,
    clone_censor_weight,
    sustained_treatment,
)
from iop_research.exceptions import (
    EstimatorInputError,
    IopError,
    ModelSpecificationError,
    ReadOnlyResultError,
)

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script

RTOL_EST = 1e-6
RTOL_SE = 1e-4
GRACE, HORIZON = 21, 120
ARGS = dict(id_col="id", time_col="days", event_col="relapse", treatment_time_col="moud_day",
            grace_days=GRACE, covariates=["age", "sex"], horizon_days=HORIZON)
R_TERMS = {"sexm": "sex[T.m]", "I(day^2)": "I(day ** 2)"}


@pytest.fixture(scope="module")
def persons() -> pd.DataFrame:
    return pd.read_csv(GOLDEN_DIR / "data" / "ccw_persons.csv")


@pytest.fixture(scope="module")
def fits(persons) -> dict:
    return {case: clone_censor_weight(persons, **ARGS, n_bootstrap=0, deviation_time=case)
            for case in ("linear", "quadratic")}


# --------------------------------------------------------------------------- clones (conventions)


def test_clones_equal_the_scripts_plain_loops(fits):
    """Clone rows (start, stop, event per strategy) equal tests/r/make_ccw_data.py's loops exactly."""
    want = pd.read_csv(GOLDEN_DIR / "data" / "ccw_clones.csv")
    got = fits["linear"].clones
    assert len(got) == len(want)
    np.testing.assert_array_equal(got["id"].to_numpy(), want["id"].to_numpy())
    np.testing.assert_array_equal(got["strategy"].astype(str).to_numpy(), want["strategy"].to_numpy())
    np.testing.assert_array_equal(got[["start", "stop", "event"]].to_numpy(float),
                                  want[["start", "stop", "event"]].to_numpy(float))


def test_deviation_person_days_equal_the_script(persons):
    want = pd.read_csv(GOLDEN_DIR / "data" / "ccw_deviation.csv")
    person, day, started = _deviation_rows(persons["days"].to_numpy(float), persons["moud_day"].to_numpy(float), GRACE)
    np.testing.assert_array_equal(persons["id"].to_numpy()[person], want["id"].to_numpy())
    np.testing.assert_array_equal(day, want["day"].to_numpy())
    np.testing.assert_array_equal(started, want["started"].to_numpy(float))


def test_edge_case_conventions(fits):
    """Hand-made people of make_ccw_data.py: what each arm does with them."""
    c = pd.DataFrame(fits["linear"].clones)
    c["strategy"] = c["strategy"].astype(str)

    def rows(pid, arm):
        return c[(c["id"] == pid) & (c["strategy"] == arm)][["start", "stop", "event"]].to_numpy(float).tolist()

    assert rows(9001, "no_start") == []  # start on day 0: no_start clone censored at time 0
    assert rows(9001, "start") == [[0, 21, 0], [21, 50, 1]]
    assert rows(9002, "start") == [[0, 5, 1]]  # event on the start day counts in both arms
    assert rows(9002, "no_start")[-1] == [4, 5, 1]
    assert rows(9003, "start") == [[0, 10, 0]]  # follow-up ends in the grace period: natural censoring
    assert rows(9003, "no_start")[-1] == [9, 10, 0]
    assert rows(9004, "start") == [[0, 21, 0], [21, 100, 1]]  # start on day G complies
    assert len(rows(9004, "no_start")) == 21 and rows(9004, "no_start")[-1] == [20, 21, 0]
    assert rows(9005, "start") == [[0, 21, 0]]  # start after G: deviates from 'start' at G
    assert rows(9005, "no_start")[-1] == [21, 120, 0]  # ... complies with 'no_start' (to the horizon)
    assert rows(9007, "start") == [[0, 21, 1]]  # event on day G before deviating: counted
    assert rows(9008, "start")[-1] == [21, 120, 0]  # event after the horizon: censored there
    assert rows(9009, "start") == [[0, 1, 1]] and rows(9009, "no_start") == [[0, 1, 1]]
    arms = fits["linear"].arms.set_index("strategy")
    assert arms.loc["no_start", "n_with_person_time"] == arms.loc["no_start", "n_clones"] - (
        (pd.read_csv(GOLDEN_DIR / "data" / "ccw_persons.csv")["moud_day"] == 0).sum())


# --------------------------------------------------------------------------- against R


@pytest.mark.parametrize("case", ["linear", "quadratic"])
def test_matches_r_glm_and_weighted_survfit(fits, case):
    """R (tests/r/ccw.R): glm deviation model, IPC weights, survfit(Surv(start, stop, event) ~ strategy,
    weights = w) at days 0..120, risks, difference, ratio; pooled logistic log HR."""
    g = load_golden("ccw")[case]
    res = fits[case]
    dm = res.deviation_model.set_index("term")
    for r_name, est, se in zip(g["dev_terms"], g["dev_coef"], g["dev_se"]):
        ours = R_TERMS.get(r_name, r_name)
        assert dm.loc[ours, "estimate"] == pytest.approx(est, rel=RTOL_EST)
        assert dm.loc[ours, "std_error"] == pytest.approx(se, rel=RTOL_SE)
    np.testing.assert_allclose(res.clones["weight"], g["weights"], rtol=RTOL_EST)
    tidy = res.tidy
    for arm, key in (("start", "surv_first"), ("no_start", "surv_second")):
        part = tidy[tidy["strategy"] == arm]
        np.testing.assert_array_equal(part["time"], np.arange(HORIZON + 1))
        np.testing.assert_allclose(part["survival"], g[key], rtol=RTOL_EST, atol=1e-12)
    gl = res.glance.iloc[0]
    for col, key in (("risk_start", "risk_first"), ("risk_no_start", "risk_second"),
                     ("risk_difference", "risk_difference"), ("risk_ratio", "risk_ratio")):
        assert gl[col] == pytest.approx(g[key], rel=RTOL_EST)
    assert res.hazard_ratio["estimate"].iloc[0] == pytest.approx(g["log_hr"], rel=RTOL_EST)
    assert res.hazard_ratio["hazard_ratio"].iloc[0] == pytest.approx(np.exp(g["log_hr"]), rel=RTOL_EST)


@pytest.mark.parametrize("g_event, g_free", [(GRACE, GRACE), (14, 30)])
def test_bootstrap_path_equals_full_fit(persons, g_event, g_free):
    """Replicates use Newton fits and curves from (arm, day) totals; on the original sample they equal the
    statsmodels fits and fit_km curves."""
    time = persons["days"].to_numpy(float)
    event = persons["relapse"].to_numpy(float)
    ta = persons["moud_day"].to_numpy(float)
    x = np.column_stack([persons["age"].to_numpy(float), (persons["sex"] == "m").to_numpy(float)])
    grid = np.arange(HORIZON + 1, dtype=float)
    full = _estimate(time, event, ta, x, g_event, g_free, HORIZON, 1, grid, "f", ("a", "b"))
    surv, risk, log_hr = _replicate(time, event, ta, x, g_event, g_free, HORIZON, 1, np.zeros(4), np.zeros(4))
    np.testing.assert_allclose(surv, full["surv"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(risk, full["risk"], rtol=1e-9)
    assert log_hr == pytest.approx(full["log_hr"], rel=1e-8)


@requires_r
def test_live_r_ccw(tmp_path):
    """Rscript --vanilla tests/r/ccw.R <datasets_dir> <out_json> reproduces the committed JSON."""
    live = run_r_script("ccw", tmp_path / "ccw.json")
    committed = load_golden("ccw")
    for case in ("linear", "quadratic", "sustained", "tv", "sustained_tv", "regime"):
        np.testing.assert_allclose(live[case]["weights"], committed[case]["weights"], rtol=RTOL_EST)
        np.testing.assert_allclose(live[case]["surv_second"], committed[case]["surv_second"], rtol=RTOL_EST)
        assert live[case]["risk_difference"] == pytest.approx(committed[case]["risk_difference"], rel=RTOL_EST)


# --------------------------------------------------------------------------- sustained strategies

SUS_ARGS = dict(id_col="id", time_col="days", event_col="overdose", stop_time_col="stop_day", sustain_days=30,
                stop_grace_days=14, covariates=["age", "sex"], horizon_days=HORIZON)


@pytest.fixture(scope="module")
def sustained_fit():
    d = pd.read_csv(GOLDEN_DIR / "data" / "ccw_sustained_persons.csv")
    return d, sustained_treatment(d, **SUS_ARGS, n_bootstrap=0)


def test_sustained_clones_and_deviation_rows_equal_the_script(sustained_fit):
    d, res = sustained_fit
    want = pd.read_csv(GOLDEN_DIR / "data" / "ccw_sustained_clones.csv")
    got = res.clones
    np.testing.assert_array_equal(got["id"].to_numpy(), want["id"].to_numpy())
    np.testing.assert_array_equal(got["strategy"].astype(str).to_numpy(), want["strategy"].to_numpy())
    np.testing.assert_array_equal(got[["start", "stop", "event"]].to_numpy(float),
                                  want[["start", "stop", "event"]].to_numpy(float))
    dev = pd.read_csv(GOLDEN_DIR / "data" / "ccw_sustained_deviation.csv")
    person, day, changed = _deviation_rows(d["days"].to_numpy(float), d["stop_day"].to_numpy(float), 30)
    np.testing.assert_array_equal(d["id"].to_numpy()[person], dev["id"].to_numpy())
    np.testing.assert_array_equal(day, dev["day"].to_numpy())
    np.testing.assert_array_equal(changed, dev["started"].to_numpy(float))


def test_sustained_matches_r(sustained_fit):
    """R (tests/r/ccw.R, case 'sustained'): glm stopping model on days 0..30, weights (sustain: daily up to day
    30; stop: 1 / P(stopped by day 14) after day 14), weighted survfit per arm, contrast sustain vs stop."""
    g = load_golden("ccw")["sustained"]
    _, res = sustained_fit
    assert tuple(res.glance.columns) == SUSTAINED_GLANCE_COLUMNS
    assert res.tidy["strategy"].unique().tolist() == ["sustain", "stop"]
    dm = res.deviation_model.set_index("term")
    for r_name, est, se in zip(g["dev_terms"], g["dev_coef"], g["dev_se"]):
        assert dm.loc[R_TERMS.get(r_name, r_name), "estimate"] == pytest.approx(est, rel=RTOL_EST)
        assert dm.loc[R_TERMS.get(r_name, r_name), "std_error"] == pytest.approx(se, rel=RTOL_SE)
    np.testing.assert_allclose(res.clones["weight"], g["weights"], rtol=RTOL_EST)
    for arm, key in (("sustain", "surv_first"), ("stop", "surv_second")):
        part = res.tidy[res.tidy["strategy"] == arm]
        np.testing.assert_allclose(part["survival"], g[key], rtol=RTOL_EST, atol=1e-12)
    gl = res.glance.iloc[0]
    for col, key in (("risk_sustain", "risk_first"), ("risk_stop", "risk_second"),
                     ("risk_difference", "risk_difference"), ("risk_ratio", "risk_ratio")):
        assert gl[col] == pytest.approx(g[key], rel=RTOL_EST)
    assert res.hazard_ratio["term"].iloc[0] == "strategy[T.sustain]"
    assert res.hazard_ratio["estimate"].iloc[0] == pytest.approx(g["log_hr"], rel=RTOL_EST)
    assert gl["sustain_days"] == 30 and gl["stop_grace_days"] == 14


def test_sustained_bootstrap_and_errors(sustained_fit):
    d, _ = sustained_fit
    a = sustained_treatment(d, **SUS_ARGS, n_bootstrap=10, seed=3, progress=False)
    b = sustained_treatment(d, **SUS_ARGS, n_bootstrap=10, seed=3, progress=False)
    pd.testing.assert_frame_equal(pd.DataFrame(a.glance), pd.DataFrame(b.glance))
    gl = a.glance.iloc[0]
    assert gl["rd_conf_low"] <= gl["risk_difference"] <= gl["rd_conf_high"]
    boot = a.bootstrap
    assert np.allclose(boot["risk_difference"], boot["risk_sustain"] - boot["risk_stop"])
    with pytest.raises(ModelSpecificationError, match=r"^sustained_treatment: horizon_days \(30\) must be later"):
        sustained_treatment(d, **{**SUS_ARGS, "horizon_days": 30}, n_bootstrap=0)
    with pytest.raises(EstimatorInputError, match=r"^sustained_treatment: column 'stop_day' \(stop time\) has 1 "):
        sustained_treatment(d.assign(stop_day=d["stop_day"].where(d.index != 0, -1.0)), **SUS_ARGS, n_bootstrap=0)


# --------------------------------------------------------------------------- result and bootstrap


def test_result_contract_and_bootstrap_reproducible(persons):
    a = clone_censor_weight(persons, **ARGS, n_bootstrap=25, seed=11, progress=False)
    b = clone_censor_weight(persons, **ARGS, n_bootstrap=25, seed=11, progress=False)
    c = clone_censor_weight(persons, **ARGS, n_bootstrap=25, seed=12, progress=False)
    assert isinstance(a, CcwResult)
    assert tuple(a.tidy.columns) == CCW_TIDY_COLUMNS
    assert tuple(a.glance.columns) == CCW_GLANCE_COLUMNS and len(a.glance) == 1
    assert len(a.tidy) == 2 * (HORIZON + 1)
    pd.testing.assert_frame_equal(pd.DataFrame(a.tidy), pd.DataFrame(b.tidy))
    pd.testing.assert_frame_equal(pd.DataFrame(a.glance), pd.DataFrame(b.glance))
    assert a.glance["rd_conf_low"].iloc[0] != c.glance["rd_conf_low"].iloc[0]
    gl = a.glance.iloc[0]
    assert gl["n"] == len(persons) and gl["n_bootstrap"] == 25
    assert gl["rd_conf_low"] <= gl["risk_difference"] <= gl["rd_conf_high"]
    assert gl["rr_conf_low"] <= gl["risk_ratio"] <= gl["rr_conf_high"]
    hr = a.hazard_ratio.iloc[0]
    assert hr["hr_conf_low"] <= hr["hazard_ratio"] <= hr["hr_conf_high"] and hr["std_error"] > 0
    for arm in ("start", "no_start"):
        part = a.tidy[a.tidy["strategy"] == arm]
        s = part["survival"].to_numpy()
        assert np.all(np.diff(s) <= 1e-15) and s[0] == 1.0 and np.all((s >= 0) & (s <= 1))
        assert np.all(part["conf_low"] <= part["conf_high"])
    assert len(a.bootstrap) == 25
    assert np.allclose(a.bootstrap["risk_difference"], a.bootstrap["risk_start"] - a.bootstrap["risk_no_start"])
    with pytest.raises(ReadOnlyResultError):
        a.tidy["survival"] = 0.0
    assert {"deviation", "weights", "curves", "ci"} <= set(a.conventions)
    # a Generator is accepted too, and the input frame is not modified
    before = persons.copy()
    clone_censor_weight(persons, **ARGS, n_bootstrap=2, seed=np.random.default_rng(1), progress=False)
    pd.testing.assert_frame_equal(persons, before)


def test_progress_bar_runs_quietly(persons):
    """progress=True shows a tqdm bar over replicates (no warning; filterwarnings = error)."""
    res = clone_censor_weight(persons, **ARGS, n_bootstrap=3, seed=2, progress=True)
    assert res.glance["n_bootstrap"].iloc[0] == 3


def test_public_export():
    import iop_research.designs as designs

    assert designs.clone_censor_weight is clone_censor_weight
    assert designs.sustained_treatment is sustained_treatment


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "mutate, kwargs, exc, match",
    [
        (lambda d: d.assign(id=1), {}, EstimatorInputError, "duplicated"),
        (lambda d: d.assign(days=d["days"].where(d.index != 3, 0)), {}, EstimatorInputError, "value\\(s\\) of 0"),
        (lambda d: d.assign(days=d["days"] + 0.5), {}, EstimatorInputError, "not whole days"),
        (lambda d: d.assign(moud_day=d["moud_day"].where(d.index != 0, 9999.0)), {}, EstimatorInputError,
         "after the end of follow-up"),
        (lambda d: d.assign(moud_day=d["moud_day"].where(d.index != 0, -2.0)), {}, EstimatorInputError, "negative"),
        (lambda d: d.assign(moud_day=d["moud_day"].astype(str)), {}, EstimatorInputError, "must be numeric"),
        (lambda d: d.assign(age=d["age"].where(d.index != 5)), {}, EstimatorInputError, "missing"),
        (lambda d: d.drop(columns="sex"), {}, EstimatorInputError, "not found"),
        (lambda d: d.assign(moud_day=np.nan), {}, ModelSpecificationError, "nobody's treatment changes"),
        (lambda d: d, {"horizon_days": GRACE}, ModelSpecificationError, "later than grace_days"),
        (lambda d: d, {"grace_days": 2.5}, ModelSpecificationError, "whole number"),
        (lambda d: d, {"n_bootstrap": -1}, ModelSpecificationError, "n_bootstrap"),
        (lambda d: d, {"deviation_time": "cubic"}, ModelSpecificationError, "deviation_time"),
        (lambda d: d, {"conf_level": 95}, ModelSpecificationError, "conf_level"),
        (lambda d: d, {"seed": "x"}, ModelSpecificationError, "seed"),
    ],
)
def test_bad_input_raises_one_clear_error(persons, mutate, kwargs, exc, match):
    args = {**ARGS, "n_bootstrap": 0, **kwargs}
    with pytest.raises(exc, match=match) as info:
        clone_censor_weight(mutate(persons.copy()), **args)
    assert isinstance(info.value, IopError) and isinstance(info.value, ValueError)
    assert "clone_censor_weight" in str(info.value)


# --------------------------------------------------------------------------- simulation with a known effect


def _simulate(n: int, rng: np.random.Generator, strategy: str | None = None, grace: int = 30) -> pd.DataFrame:
    """IOP admissions; severity x raises both the daily chance of starting MOUD within the grace period
    and the relapse hazard (confounding); MOUD started within the grace period halves the relapse hazard
    after it. ``strategy`` forces everybody to follow "start" or "no_start" (for the true risks)."""
    x = rng.normal(size=n)
    p_start = 1 / (1 + np.exp(-(-3.5 + 1.0 * x)))
    ta = np.full(n, np.nan)
    for day in range(grace + 1):
        s = np.isnan(ta) & (rng.random(n) < p_start)
        ta[s] = day
    treated = ~np.isnan(ta) if strategy is None else np.full(n, strategy == "start")
    lam = 0.004 * np.exp(0.7 * x)
    e = rng.exponential(size=n)
    t = np.where(e <= lam * grace, e / lam, grace + (e - lam * grace) / (lam * np.where(treated, 0.5, 1.0)))
    ev_day = np.ceil(t)
    cens = rng.integers(60, 400, n)
    days = np.minimum(ev_day, cens)
    return pd.DataFrame({"id": np.arange(n), "days": days, "relapse": (ev_day <= cens).astype(int),
                         "moud_day": np.where(ta <= days, ta, np.nan), "x": x, "ev_day": ev_day})


def test_simulation_ccw_recovers_true_risks_naive_is_biased():
    """2,000 people, start confounded by severity; true risks by simulating each strategy (200,000 people)."""
    rng = np.random.default_rng(20261207)
    horizon = 180
    truth = {s: float((_simulate(200_000, rng, s)["ev_day"] <= horizon).mean()) for s in ("start", "no_start")}
    true_rd = truth["start"] - truth["no_start"]
    d = _simulate(2000, rng)
    res = clone_censor_weight(d, id_col="id", time_col="days", event_col="relapse", treatment_time_col="moud_day",
                              grace_days=30, covariates=["x"], horizon_days=horizon, n_bootstrap=100, seed=5,
                              progress=False)
    gl = res.glance.iloc[0]
    assert gl["rd_conf_low"] <= true_rd <= gl["rd_conf_high"]
    assert abs(gl["risk_difference"] - true_rd) < 0.04
    assert abs(gl["risk_start"] - truth["start"]) < 0.04 and abs(gl["risk_no_start"] - truth["no_start"]) < 0.04
    # naive: started within the grace period or not, followed from time zero, unweighted
    from iop_research.survival.km import fit_km

    naive_df = d.assign(group=np.where(d["moud_day"].notna(), "start", "no_start"),
                        days=np.minimum(d["days"], horizon), relapse=d["relapse"] * (d["days"] <= horizon))
    km = fit_km(naive_df, duration_col="days", event_col="relapse", group_col="group", times=[horizon])
    at = km.at_times.set_index("group")["survival"]
    naive_rd = (1 - at["start"]) - (1 - at["no_start"])
    assert abs(naive_rd - true_rd) > 0.08
    assert abs(naive_rd - true_rd) > 3 * abs(gl["risk_difference"] - true_rd)


def _simulate_sustained(n: int, rng: np.random.Generator, strategy: str | None = None) -> pd.DataFrame:
    """People on MOUD at time zero; severity x raises the daily chance of stopping (days 0..30) and the
    overdose hazard; stopping within 14 days doubles the hazard after day 30. ``strategy`` forces
    "sustain" (nobody stops) or "stop" (everybody stops within 14 days) for the true risks."""
    x = rng.normal(size=n)
    p_stop = 1 / (1 + np.exp(-(-4.0 + 1.0 * x)))
    stop = np.full(n, np.nan)
    for day in range(31):
        s = np.isnan(stop) & (rng.random(n) < p_stop)
        stop[s] = day
    harmed = (stop <= 14) if strategy is None else np.full(n, strategy == "stop")
    lam = 0.004 * np.exp(0.7 * x)
    e = rng.exponential(size=n)
    t = np.where(e <= lam * 30, e / lam, 30 + (e - lam * 30) / (lam * np.where(harmed, 2.0, 1.0)))
    ev_day = np.ceil(t)
    cens = rng.integers(60, 400, n)
    days = np.minimum(ev_day, cens)
    return pd.DataFrame({"id": np.arange(n), "days": days, "overdose": (ev_day <= cens).astype(int),
                         "stop_day": np.where(stop <= days, stop, np.nan), "x": x, "ev_day": ev_day})


def test_simulation_sustained_recovers_true_risks():
    """2,000 people, stopping confounded by severity; true risks by simulating each strategy (200,000 people)."""
    rng = np.random.default_rng(20261208)
    horizon = 180
    truth = {s: float((_simulate_sustained(200_000, rng, s)["ev_day"] <= horizon).mean()) for s in ("sustain", "stop")}
    true_rd = truth["sustain"] - truth["stop"]
    d = _simulate_sustained(2000, rng)
    res = sustained_treatment(d, id_col="id", time_col="days", event_col="overdose", stop_time_col="stop_day",
                              sustain_days=30, stop_grace_days=14, covariates=["x"], horizon_days=horizon,
                              n_bootstrap=100, seed=6, progress=False)
    gl = res.glance.iloc[0]
    assert gl["rd_conf_low"] <= true_rd <= gl["rd_conf_high"]
    assert abs(gl["risk_difference"] - true_rd) < 0.04
    assert abs(gl["risk_sustain"] - truth["sustain"]) < 0.04 and abs(gl["risk_stop"] - truth["stop"]) < 0.04
    assert res.hazard_ratio["hazard_ratio"].iloc[0] < 1  # sustaining protects


# --------------------------------------------------------------------------- time-varying covariates

TV_COLS = ["uds_pos", "craving"]


def _tv_case(case):
    if case == "tv":
        d = pd.read_csv(GOLDEN_DIR / "data" / "ccw_persons.csv")
        tv = pd.read_csv(GOLDEN_DIR / "data" / "ccw_tv.csv")
        return d, tv, clone_censor_weight, dict(ARGS), ("start", "no_start")
    d = pd.read_csv(GOLDEN_DIR / "data" / "ccw_sustained_persons.csv")
    tv = pd.read_csv(GOLDEN_DIR / "data" / "ccw_sustained_tv.csv")
    return d, tv, sustained_treatment, dict(SUS_ARGS), ("sustain", "stop")


@pytest.mark.parametrize("case", ["tv", "sustained_tv"])
def test_time_varying_covariates_match_r(case):
    """R (tests/r/ccw.R, cases 'tv' and 'sustained_tv'): the covariates in force on each person-day merged in R,
    glm(started ~ age + sex + uds_pos + craving + day, binomial), the IPC weights, weighted survfit per arm, risks,
    difference, ratio and the pooled logistic log HR, to 1e-6."""
    g = load_golden("ccw")[case]
    d, tv, fn, args, arms = _tv_case(case)
    res = fn(d, **args, n_bootstrap=0, tv_frame=tv, tv_covariates=TV_COLS)
    dm = res.deviation_model.set_index("term")
    assert dm.index.tolist() == [R_TERMS.get(t, t) for t in g["dev_terms"]]
    for r_name, est, se in zip(g["dev_terms"], g["dev_coef"], g["dev_se"]):
        assert dm.loc[R_TERMS.get(r_name, r_name), "estimate"] == pytest.approx(est, rel=RTOL_EST)
        assert dm.loc[R_TERMS.get(r_name, r_name), "std_error"] == pytest.approx(se, rel=RTOL_SE)
    np.testing.assert_allclose(res.clones["weight"], g["weights"], rtol=RTOL_EST)
    for arm, key in zip(arms, ("surv_first", "surv_second")):
        part = res.tidy[res.tidy["strategy"] == arm]
        np.testing.assert_allclose(part["survival"], g[key], rtol=RTOL_EST, atol=1e-12)
    gl = res.glance.iloc[0]
    assert gl["risk_difference"] == pytest.approx(g["risk_difference"], rel=RTOL_EST)
    assert gl["risk_ratio"] == pytest.approx(g["risk_ratio"], rel=RTOL_EST)
    assert gl[f"risk_{arms[0]}"] == pytest.approx(g["risk_first"], rel=RTOL_EST)
    assert res.hazard_ratio["estimate"].iloc[0] == pytest.approx(g["log_hr"], rel=RTOL_EST)
    # the time-varying covariate matters: the weights differ from the baseline-only fit
    base = fn(d, **args, n_bootstrap=0)
    assert np.max(np.abs(base.clones["weight"].to_numpy() - res.clones["weight"].to_numpy())) > 0.05
    assert "uds_pos" in res.conventions["time_varying"]


def test_time_varying_bootstrap_resamples_the_rows_with_the_person():
    """A replicate on the original sample equals the full fit; the seeded bootstrap is reproducible; a replicate
    drawn by hand (people and their tv rows resampled, ids renamed) gives the replicate's numbers."""
    d, tv, fn, args, _ = _tv_case("tv")
    a = fn(d, **args, n_bootstrap=8, seed=5, tv_frame=tv, tv_covariates=TV_COLS, progress=False)
    b = fn(d, **args, n_bootstrap=8, seed=5, tv_frame=tv, tv_covariates=TV_COLS, progress=False)
    pd.testing.assert_frame_equal(pd.DataFrame(a.bootstrap), pd.DataFrame(b.bootstrap))
    idx = np.random.default_rng(5).integers(0, len(d), len(d))  # the first replicate's draw
    dd = d.iloc[idx].reset_index(drop=True).assign(id=np.arange(len(d)))
    parts = [tv[tv["id"] == d["id"].iloc[i]].assign(id=k) for k, i in enumerate(idx)]
    by_hand = fn(dd, **args, n_bootstrap=0, tv_frame=pd.concat(parts, ignore_index=True), tv_covariates=TV_COLS)
    first = a.bootstrap.iloc[0]
    assert first["risk_difference"] == pytest.approx(by_hand.glance["risk_difference"].iloc[0], rel=1e-8)
    assert first["log_hazard_ratio"] == pytest.approx(by_hand.hazard_ratio["estimate"].iloc[0], rel=1e-7)


def _tv_bad(tv, d):
    first = tv.groupby("id").head(1).index
    second = tv.groupby("id").nth(1).index
    return [
        ("overlap", tv.assign(start=tv["start"].where(~tv.index.isin(second[:3]), tv["start"] - 1)), "overlapping"),
        ("unknown id", pd.concat([tv, tv.iloc[[0]].assign(id=-7)], ignore_index=True), "not in frame"),
        ("missing id", tv[tv["id"] != d["id"].iloc[4]], "lacks 1 id"),
        ("outside", tv.assign(stop=tv["stop"].where(tv.index != tv.groupby("id").tail(1).index[2], 999)),
         "outside follow-up"),
        ("negative", tv.assign(start=tv["start"].where(~tv.index.isin(first[:2]), -1)), "outside follow-up"),
        ("gap", tv.drop(index=second[:2]), "without a value"),
        ("not whole", tv.assign(stop=tv["stop"].astype(float).where(tv.index != 3, 4.5)), "not whole days"),
        ("empty interval", tv.assign(stop=tv["stop"].where(tv.index != 2, tv["start"])), "not after"),
        ("missing value", tv.assign(craving=tv["craving"].where(tv.index != 6)), "missing"),
        ("no column", tv.drop(columns="stop"), "no column"),
    ]


@pytest.mark.parametrize("which", range(10))
def test_time_varying_bad_input_names_table_column_rows(which):
    d, tv, fn, args, _ = _tv_case("tv")
    name, bad, match = _tv_bad(tv, d)[which]
    with pytest.raises(EstimatorInputError, match=match) as info:
        fn(d, **args, n_bootstrap=0, tv_frame=bad, tv_covariates=TV_COLS)
    msg = str(info.value)
    assert msg.startswith("clone_censor_weight: table tv_frame"), (name, msg)
    assert isinstance(info.value, IopError) and isinstance(info.value, ValueError)
    if name != "no column":
        assert "(rows: " in msg and info.value.column in msg, (name, msg)
    if name in ("missing id", "gap"):
        assert "ids " in msg


def test_time_varying_argument_errors():
    d, tv, fn, args, _ = _tv_case("tv")
    with pytest.raises(ModelSpecificationError, match="without tv_frame"):
        fn(d, **args, n_bootstrap=0, tv_covariates=TV_COLS)
    with pytest.raises(ModelSpecificationError, match="tv_covariates is empty"):
        fn(d, **args, n_bootstrap=0, tv_frame=tv)
    with pytest.raises(ModelSpecificationError, match="both baseline and time-varying"):
        fn(d.assign(craving=np.arange(len(d)) % 7), **{**args, "covariates": ["age", "craving"]}, n_bootstrap=0, tv_frame=tv,
           tv_covariates=TV_COLS)


# --------------------------------------------------------------------------- grace_weights="regime"


@pytest.fixture(scope="module")
def regime_fit(persons):
    return clone_censor_weight(persons, **ARGS, n_bootstrap=0, grace_weights="regime")


def test_regime_weights_match_r(regime_fit):
    """R case "regime" (tests/r/ccw.R): start rows rebuilt person by person in R, weights (pi - F(d-1)) /
    (pi (1 - F(d-1))) while not started and 1 / pi after the start day, from the glm fit; survfit curves,
    risks, difference, ratio and the pooled logistic log HR equal to 1e-6."""
    g = load_golden("ccw")["regime"]
    res = regime_fit
    np.testing.assert_allclose(res.clones["weight"], g["weights"], rtol=RTOL_EST)
    tidy = res.tidy
    for arm, key in (("start", "surv_first"), ("no_start", "surv_second")):
        np.testing.assert_allclose(tidy.loc[tidy["strategy"] == arm, "survival"], g[key], rtol=RTOL_EST, atol=1e-12)
    gl = res.glance.iloc[0]
    for col, key in (("risk_start", "risk_first"), ("risk_no_start", "risk_second"),
                     ("risk_difference", "risk_difference"), ("risk_ratio", "risk_ratio")):
        assert gl[col] == pytest.approx(g[key], rel=RTOL_EST)
    assert res.hazard_ratio["estimate"].iloc[0] == pytest.approx(g["log_hr"], rel=RTOL_EST)


def test_regime_rows_and_weights_conventions(regime_fit, fits):
    """Daily "start" rows until the start day (or G), (T, end] after it; the weights of a person average to
    one over the two branches (a likelihood ratio); "no_start" unchanged from the default."""
    c = pd.DataFrame(regime_fit.clones)
    c["strategy"] = c["strategy"].astype(str)

    def rows(pid, arm="start"):
        return c[(c["id"] == pid) & (c["strategy"] == arm)][["start", "stop", "event", "weight"]].to_numpy(float)

    dm = regime_fit.deviation_model.set_index("term")["estimate"]
    p = pd.read_csv(GOLDEN_DIR / "data" / "ccw_persons.csv").set_index("id")

    def s_dev(pid):
        lin = dm["(Intercept)"] + dm["age"] * p.loc[pid, "age"] + dm["sex[T.m]"] * (p.loc[pid, "sex"] == "m") + \
            dm["day"] * np.arange(GRACE + 1)
        return np.cumprod(1 - 1 / (1 + np.exp(-lin)))

    r = rows(9001)  # start on day 0: one row (0, 50], weight 1 / pi
    assert r[:, :3].tolist() == [[0, 50, 1]]
    assert r[0, 3] == pytest.approx(1 / (1 - s_dev(9001)[GRACE]), rel=1e-12)
    r = rows(9002)  # start on day 5 with the event that day: daily rows (d-1, d], d = 1..5, event on the last
    assert r[:, :3].tolist() == [[d - 1, d, float(d == 5)] for d in range(1, 6)]
    s = s_dev(9002)
    pi = 1 - s[GRACE]
    np.testing.assert_allclose(r[:, 3], (s[:5] - s[GRACE]) / (pi * s[:5]), rtol=1e-12)
    r = rows(9004)  # start on day G: 21 daily rows, then (21, 100] with 1 / pi
    assert len(r) == GRACE + 1 and r[-1, :3].tolist() == [21, 100, 1]
    r = rows(9005)  # start after G: censored at G; the weight on (G-1, G] is p_G / pi
    s = s_dev(9005)
    assert r[-1, :3].tolist() == [20, 21, 0] and len(r) == GRACE
    assert r[-1, 3] == pytest.approx((s[GRACE - 1] - s[GRACE]) / s[GRACE - 1] / (1 - s[GRACE]), rel=1e-12)
    # likelihood ratio: F_{d-1} / pi + (1 - F_{d-1}) w_d = 1 on every day
    F = 1 - s
    w = (s[:GRACE] - s[GRACE]) / ((1 - s[GRACE]) * s[:GRACE])
    np.testing.assert_allclose(F[:GRACE] / (1 - s[GRACE]) + (1 - F[:GRACE]) * w, 1.0, rtol=1e-12)
    pd.testing.assert_frame_equal(c[c["strategy"] == "no_start"].reset_index(drop=True),
                                  fits["linear"].clones.assign(strategy=lambda f: f["strategy"].astype(str))
                                  .query("strategy == 'no_start'").reset_index(drop=True))


def test_regime_bootstrap_path_and_option_errors(persons):
    time = persons["days"].to_numpy(float)
    event = persons["relapse"].to_numpy(float)
    ta = persons["moud_day"].to_numpy(float)
    x = np.column_stack([persons["age"].to_numpy(float), (persons["sex"] == "m").to_numpy(float)])
    grid = np.arange(HORIZON + 1, dtype=float)
    full = _estimate(time, event, ta, x, GRACE, GRACE, HORIZON, 1, grid, "f", ("a", "b"), grace_weights="regime")
    surv, risk, log_hr = _replicate(time, event, ta, x, GRACE, GRACE, HORIZON, 1, np.zeros(4), np.zeros(4),
                                    grace_weights="regime")
    np.testing.assert_allclose(surv, full["surv"], rtol=1e-9, atol=1e-12)
    assert log_hr == pytest.approx(full["log_hr"], rel=1e-8)
    a = clone_censor_weight(persons, **ARGS, n_bootstrap=20, seed=3, grace_weights="regime")
    b = clone_censor_weight(persons, **ARGS, n_bootstrap=20, seed=3)
    assert not np.allclose(a.bootstrap["risk_start"], b.bootstrap["risk_start"])  # the replicates use the option
    np.testing.assert_allclose(a.bootstrap["risk_no_start"], b.bootstrap["risk_no_start"], rtol=1e-12)
    assert "grace_weights='regime'" in a.conventions["weights"]
    with pytest.raises(ModelSpecificationError, match="grace_weights must be one of"):
        clone_censor_weight(persons, **ARGS, n_bootstrap=0, grace_weights="maringe")


def _simulate_regime(n: int, rng: np.random.Generator, strategy: str | None = None, grace: int = 30) -> pd.DataFrame:
    """As _simulate, but MOUD lowers the relapse hazard (x 0.3) from the start day on, inside the grace period
    too. strategy "start" draws the start day from the natural law given x conditional on starting by G (the
    regime that grace_weights="regime" targets); "no_start" never starts."""
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(-3.5 + 1.0 * x)))
    if strategy == "start":
        f = p[:, None] * (1 - p[:, None]) ** np.arange(grace + 1)[None, :]
        cdf = np.cumsum(f, axis=1) / f.sum(axis=1, keepdims=True)
        ta = (rng.random(n)[:, None] > cdf).sum(axis=1).astype(float)
    else:
        ta = np.full(n, np.nan)
        for day in range(grace + 1 if strategy is None else 0):
            s = np.isnan(ta) & (rng.random(n) < p)
            ta[s] = day
    lam = 0.008 * np.exp(0.7 * x)
    e = rng.exponential(size=n)
    a = np.nan_to_num(ta, nan=1e9)  # treated from time ta on: the interval (ta - 1, ta] is untreated
    t = np.where(e <= lam * a, e / lam, a + (e - lam * a) / (0.3 * lam))
    ev_day = np.ceil(t)
    cens = rng.integers(60, 400, n)
    days = np.minimum(ev_day, cens)
    return pd.DataFrame({"id": np.arange(n), "days": days, "relapse": (ev_day <= cens).astype(int),
                         "moud_day": np.where(ta <= days, ta, np.nan), "x": x, "ev_day": ev_day})


def test_simulation_regime_weights_recover_the_regime_risk():
    """An effect inside the grace period: the "regime" start risk is near the regime's truth (200,000 people
    simulated under it), the default "natural" one is pulled toward the natural course."""
    rng = np.random.default_rng(7)
    horizon = 180
    truth = float((_simulate_regime(200_000, rng, "start")["ev_day"] <= horizon).mean())
    d = _simulate_regime(20_000, rng)
    args = dict(id_col="id", time_col="days", event_col="relapse", treatment_time_col="moud_day", grace_days=30,
                covariates=["x"], horizon_days=horizon, n_bootstrap=0)
    regime = clone_censor_weight(d, **args, grace_weights="regime").glance["risk_start"].iloc[0]
    natural = clone_censor_weight(d, **args).glance["risk_start"].iloc[0]
    assert abs(regime - truth) < 0.01
    assert natural - regime > 0.01
