"""Tests of iop_research.survival.cox: Cox model and PH test against R survival 3.5.

Golden values: ``tests/golden/cox_real.json`` (UIS, HELP) from ``tests/r/cox_real.R`` and
``tests/golden/cox_sim.json`` (simulated recurrent-event and edge-case data written by
``tests/r/make_cox_data.py``) from ``tests/r/cox_sim.R``.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from uis_cox import UIS_COV, read_uis, split_at_los
from iop_research.survival.cox import COX_GLANCE_COLUMNS, COX_TIDY_COLUMNS, fit_cox, ph_test
from iop_research.exceptions import ConvergenceError, IopError, ModelSpecificationError

RTOL_EST = 1e-6
RTOL_SE = 1e-4
HELP_COV = ["treat", "substance", "age", "female"]
TV_FORMULA = "TREAT * intreat + SITE + AGE + NDT + C(IVf) + RACE + BECK"
AG_COV = ["x1", "x2", "grp", "mat"]


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def uis(uis_path) -> pd.DataFrame:
    return read_uis(uis_path)


def split_at_los_by_id(uis: pd.DataFrame) -> pd.DataFrame:
    """UIS split at LEN.T, rows ordered by (ID, start) as ``tv[order(tv$ID, tv$start), ]`` in
    cox_real.R, so that ph_test's residual rows can be compared with R's ``zph$y`` row by row."""
    return split_at_los(uis).sort_values(["ID", "start"], kind="stable", ignore_index=True)


@pytest.fixture(scope="module")
def help_df(help_path) -> pd.DataFrame:
    df = pd.read_csv(help_path)
    # explicit exclusions, as cox_real.R: missing outcome, and (for these fits) day-0 outcomes
    return df.dropna(subset=["anysubstatus", "daysanysub"]).query("daysanysub > 0").reset_index(drop=True)


@pytest.fixture(scope="module")
def recurrent() -> pd.DataFrame:
    return pd.read_csv(GOLDEN_DIR / "data" / "cox_recurrent.csv")


@pytest.fixture(scope="module")
def edge() -> pd.DataFrame:
    return pd.read_csv(GOLDEN_DIR / "data" / "cox_edge.csv")


@pytest.fixture(scope="module")
def real_golden() -> dict:
    return load_golden("cox_real")


@pytest.fixture(scope="module")
def sim_golden() -> dict:
    return load_golden("cox_sim")


def assert_matches_r(res, r: dict, *, check_n: bool = True) -> None:
    tidy, gl = res.tidy, res.glance.iloc[0]
    np.testing.assert_allclose(tidy["estimate"], r["coef"], rtol=RTOL_EST, atol=1e-10)
    np.testing.assert_allclose(tidy["std_error"], r["se"], rtol=RTOL_SE)
    np.testing.assert_allclose(tidy["naive_std_error"], r["naive_se"], rtol=RTOL_SE)
    np.testing.assert_allclose([gl["loglik_null"], gl["loglik"]], r["loglik"], rtol=RTOL_EST)
    np.testing.assert_allclose(gl["score_statistic"], r["score"][0], rtol=RTOL_EST)
    np.testing.assert_allclose(gl["wald_statistic"], r["wald"][0], rtol=RTOL_EST)
    np.testing.assert_allclose(gl["concordance"], r["concordance"][0], rtol=RTOL_EST)
    np.testing.assert_allclose(gl["concordance_se"], r["concordance_se"][0], rtol=RTOL_SE)
    np.testing.assert_allclose(res.model.var, np.array(r["var"], dtype=float), rtol=RTOL_SE, atol=1e-12)
    if r["rscore"][0] is None:
        assert np.isnan(gl["robust_score_statistic"])
    else:
        np.testing.assert_allclose(gl["robust_score_statistic"], r["rscore"][0], rtol=RTOL_EST)
    assert gl["iterations"] == r["iter"][0]
    assert gl["n_events"] == r["nevent"][0]
    if check_n:
        assert gl["n"] == r["n"][0]
    lr = 2 * (r["loglik"][1] - r["loglik"][0])
    np.testing.assert_allclose(gl["lr_statistic"], lr, rtol=RTOL_EST)


def assert_zph_matches_r(zph, r: dict) -> None:
    tidy = zph.tidy
    np.testing.assert_allclose(tidy["statistic"], r["chisq"], rtol=RTOL_EST)
    assert list(tidy["df"]) == r["df"]
    np.testing.assert_allclose(tidy["p_value"], r["p"], rtol=1e-5, atol=1e-300)
    resid = zph.extra["residuals"]
    np.testing.assert_allclose(resid["time"], r["time"], rtol=0)
    np.testing.assert_allclose(resid["transformed_time"], r["x"], rtol=RTOL_EST)
    y_r = np.array(r["y"], dtype=float)
    y_py = resid.iloc[:, 2:].to_numpy()
    # row by row: tied event times in R's order (data order for right-censored fits, reverse
    # data order for (start, stop] fits)
    np.testing.assert_allclose(y_py, y_r, rtol=RTOL_SE, atol=1e-9)


# ----------------------------------------------------------------------------- UIS / HELP vs R


def _uis_fit(uis, **kw):
    cov = kw.pop("covariates", UIS_COV)
    return fit_cox(uis, duration_col="TIME", event_col="CENSOR", covariates=cov, **kw)


UIS_CASES = {
    "uis_efron": {},
    "uis_breslow": {"ties": "breslow"},
    "uis_strata": {"covariates": [c for c in UIS_COV if c != "SITE"], "strata_col": "SITE"},
    "uis_weights": {"weights_col": "w_int"},
    "uis_weights_frac": {"weights_col": "w_frac", "robust": False},
    "uis_cluster": {"cluster_col": "cl"},
    "uis_robust": {"robust": True},
    "uis_cluster_breslow_weights": {"cluster_col": "cl", "weights_col": "w_int", "ties": "breslow"},
}


@pytest.mark.parametrize("case", sorted(UIS_CASES))
def test_uis_matches_r(uis, real_golden, case):
    """R: coxph(Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + factor(IV) + RACE + BECK, data = uis, ...)
    with ties = "breslow", strata(SITE), weights = w, cluster = cl or robust = TRUE (cox_real.R)."""
    res = _uis_fit(uis, **UIS_CASES[case])
    assert_matches_r(res, real_golden[case])
    # R names factor columns "IVf2"; we name them "IVf[T.2]"
    assert [re.sub(r"\[T\.(.*?)\]", r"\1", t) for t in res.tidy["term"]] == real_golden[case]["names"]


def test_uis_time_varying_in_treatment_matches_r(uis, real_golden):
    """R: coxph(Surv(start, stop, event) ~ TREAT * intreat + SITE + AGE + NDT + IVf + RACE + BECK,
    data = tv, cluster = ID) with tv the UIS split at LEN.T (cox_real.R)."""
    tv = split_at_los_by_id(uis)
    res = fit_cox(tv, start_col="start", stop_col="stop", event_col="event", formula=TV_FORMULA, cluster_col="ID")
    r = real_golden["uis_tv"]
    # formulaic orders the interaction last, as R does; C(IVf) is named IVf[T.level] like a categorical column
    assert list(res.tidy["term"]) == [
        "TREAT", "intreat", "SITE", "AGE", "NDT", "IVf[T.2]", "IVf[T.3]", "RACE", "BECK", "TREAT:intreat"
    ]
    assert r["names"][-1] == "TREAT:intreat"
    assert_matches_r(res, r)
    assert res.glance["n_clusters"].iloc[0] == 575
    naive = fit_cox(tv, start_col="start", stop_col="stop", event_col="event", formula=TV_FORMULA)
    assert_matches_r(naive, real_golden["uis_tv_naive"])


@pytest.mark.parametrize("case,ties", [("help_efron", "efron"), ("help_breslow", "breslow")])
def test_help_matches_r(help_df, real_golden, case, ties):
    """R: coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female, data = help, ties = ...),
    rows with missing status or daysanysub == 0 excluded (cox_real.R)."""
    res = fit_cox(help_df, duration_col="daysanysub", event_col="anysubstatus", covariates=HELP_COV, ties=ties)
    assert_matches_r(res, real_golden[case])
    # categorical naming: col[T.level], first sorted level as reference (R: substancecocaine)
    assert list(res.tidy["term"]) == ["treat[T.yes]", "substance[T.cocaine]", "substance[T.heroin]", "age", "female"]


# ----------------------------------------------------------------------------- cox.zph


@pytest.mark.parametrize("transform", ["km", "rank", "identity", "log"])
def test_ph_test_uis_matches_r(uis, real_golden, transform):
    """R: cox.zph(coxph(Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + factor(IV) + RACE + BECK), transform)."""
    zph = ph_test(_uis_fit(uis), transform=transform)
    assert list(zph.tidy["term"]) == UIS_COV + ["GLOBAL"]
    assert_zph_matches_r(zph, real_golden[f"uis_zph_{transform}"])
    assert zph.glance["df"].iloc[0] == 8


@pytest.mark.parametrize(
    "case,kw",
    [
        ("uis_breslow_zph_km", {"ties": "breslow"}),
        ("uis_strata_zph_km", {"covariates": [c for c in UIS_COV if c != "SITE"], "strata_col": "SITE"}),
        ("uis_weights_zph_km", {"weights_col": "w_int"}),
    ],
)
def test_ph_test_uis_breslow_and_strata(uis, real_golden, case, kw):
    """R: cox.zph(coxph(..., ties = "breslow")), cox.zph(coxph(... + strata(SITE))) and
    cox.zph(coxph(..., weights = w_int))."""
    assert_zph_matches_r(ph_test(_uis_fit(uis, **kw)), real_golden[case])


@pytest.mark.parametrize("transform", ["km", "rank"])
def test_ph_test_counting_process_matches_r(uis, real_golden, transform):
    """R: cox.zph(coxph(Surv(start, stop, event) ~ TREAT * intreat + ..., data = tv), transform)."""
    tv = split_at_los_by_id(uis)
    res = fit_cox(tv, start_col="start", stop_col="stop", event_col="event", formula=TV_FORMULA)
    zph = ph_test(res, transform=transform)
    r = real_golden[f"uis_tv_zph_{transform}"]
    assert list(zph.tidy["term"])[-2:] == ["TREAT:intreat", "GLOBAL"]
    assert_zph_matches_r(zph, r)


@pytest.mark.parametrize("transform", ["km", "rank", "identity"])
def test_ph_test_help_matches_r(help_df, real_golden, transform):
    """R: cox.zph(coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female), transform);
    substance (3 levels) is one term with 2 df, as terms = TRUE."""
    res = fit_cox(help_df, duration_col="daysanysub", event_col="anysubstatus", covariates=HELP_COV)
    zph = ph_test(res, transform=transform)
    assert list(zph.tidy["term"]) == HELP_COV + ["GLOBAL"]
    assert list(zph.tidy["df"]) == [1, 2, 1, 1, 5]
    assert_zph_matches_r(zph, real_golden[f"help_zph_{transform}"])


# ----------------------------------------------------------------------------- Andersen-Gill and edge cases


@pytest.mark.parametrize(
    "case,kw",
    [
        ("ag_efron", {"covariates": AG_COV, "cluster_col": "id"}),
        ("ag_breslow", {"covariates": AG_COV, "cluster_col": "id", "ties": "breslow"}),
        ("ag_strata", {"covariates": ["x1", "x2", "mat"], "cluster_col": "id", "strata_col": "grp"}),
        ("ag_naive", {"covariates": AG_COV}),
    ],
)
def test_andersen_gill_recurrent_matches_r(recurrent, sim_golden, case, kw):
    """R: coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, data = rec, cluster = id) (cox_sim.R):
    the Andersen-Gill model for recurrent relapses with the Lin-Wei robust variance."""
    res = fit_cox(recurrent, start_col="start", stop_col="stop", event_col="event", **kw)
    assert_matches_r(res, sim_golden[case])
    if "cluster_col" in kw:
        # the frailty in the simulation makes the robust SE larger than the naive one
        assert (res.tidy["std_error"] > res.tidy["naive_std_error"]).all()
        assert res.glance["n_clusters"].iloc[0] == recurrent["id"].nunique()


@pytest.mark.parametrize("transform", ["km", "identity"])
def test_ph_test_recurrent_matches_r(recurrent, sim_golden, transform):
    """R: cox.zph(coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, data = rec), transform)."""
    res = fit_cox(recurrent, start_col="start", stop_col="stop", event_col="event", covariates=AG_COV)
    assert_zph_matches_r(ph_test(res, transform=transform), sim_golden[f"ag_zph_{transform}"])


@pytest.mark.parametrize("case,ties", [("edge_weights", "efron"), ("edge_weights_breslow", "breslow")])
def test_edge_ties_empty_stratum_zero_weights(edge, sim_golden, case, ties):
    """R: coxph(Surv(time, event) ~ x + z + strata(stratum), data = edge[edge$w > 0, ], weights = w):
    tied event and censoring times, stratum C without events; R rejects zero weights, fit_cox
    keeps those rows (counted in n) with no contribution."""
    res = fit_cox(
        edge, duration_col="time", event_col="event", covariates=["x", "z"], strata_col="stratum",
        weights_col="w", ties=ties,
    )
    assert_matches_r(res, sim_golden[case])
    assert res.glance["n"].iloc[0] == (edge["w"] > 0).sum() < len(edge)
    dropped = fit_cox(
        edge[edge["w"] > 0], duration_col="time", event_col="event", covariates=["x", "z"],
        strata_col="stratum", weights_col="w", ties=ties,
    )
    np.testing.assert_allclose(res.tidy["estimate"], dropped.tidy["estimate"], rtol=1e-12)


def test_edge_unweighted_and_zph(edge, sim_golden):
    """R: coxph(Surv(time, event) ~ x + z + strata(stratum), data = edge) and its cox.zph(transform = "km")."""
    res = fit_cox(edge, duration_col="time", event_col="event", covariates=["x", "z"], strata_col="stratum")
    assert_matches_r(res, sim_golden["edge_unweighted"])
    assert_zph_matches_r(ph_test(res), sim_golden["edge_zph_km"])


# ----------------------------------------------------------------------------- live R re-runs


@requires_r
@pytest.mark.r
@pytest.mark.parametrize("name", ["cox_real", "cox_sim"])
def test_golden_reproduces_live(tmp_path, name):
    """Rscript --vanilla tests/r/<name>.R <datasets_dir> <out_json> reproduces the committed JSON."""
    live = run_r_script(name, tmp_path / f"{name}.json")
    committed = load_golden(name)
    assert live.keys() == committed.keys()
    for key, val in committed.items():
        if key in ("R_version", "survival"):
            continue
        for field_name in ("coef", "chisq", "loglik"):
            if field_name in val:
                np.testing.assert_allclose(live[key][field_name], val[field_name], rtol=RTOL_EST)
        if "se" in val:
            np.testing.assert_allclose(live[key]["se"], val["se"], rtol=RTOL_SE)


def test_golden_records_versions():
    for name in ("cox_real", "cox_sim"):
        g = load_golden(name)
        assert g["R_version"][0].startswith("R version 4")
        assert g["survival"][0].startswith("3.5")


# ----------------------------------------------------------------------------- API contract


def test_columns_fixed_and_input_not_mutated(uis):
    before = uis.copy()
    res = _uis_fit(uis, cluster_col="cl")
    pd.testing.assert_frame_equal(uis, before)
    assert tuple(res.tidy.columns) == COX_TIDY_COLUMNS
    assert tuple(res.glance.columns) == COX_GLANCE_COLUMNS
    plain = _uis_fit(uis)
    assert tuple(plain.tidy.columns) == COX_TIDY_COLUMNS
    np.testing.assert_allclose(plain.tidy["std_error"], plain.tidy["naive_std_error"])
    np.testing.assert_allclose(res.tidy["hazard_ratio"], np.exp(res.tidy["estimate"]))
    assert "ties" in res.conventions and "variance" in res.conventions


def test_formula_equals_covariates(help_df):
    a = fit_cox(help_df, duration_col="daysanysub", event_col="anysubstatus", covariates=HELP_COV)
    b = fit_cox(help_df, duration_col="daysanysub", event_col="anysubstatus", formula="treat + substance + age + female")
    np.testing.assert_allclose(a.tidy["estimate"], b.tidy["estimate"], rtol=1e-12)
    assert list(b.tidy["term"])[:3] == ["treat[T.yes]", "substance[T.cocaine]", "substance[T.heroin]"]


def test_right_censored_equals_counting_process_from_zero(uis):
    a = _uis_fit(uis)
    b = fit_cox(uis.assign(t0=0), start_col="t0", stop_col="TIME", event_col="CENSOR", covariates=UIS_COV)
    np.testing.assert_allclose(a.tidy["estimate"], b.tidy["estimate"], rtol=1e-10)
    np.testing.assert_allclose(a.glance["concordance"], b.glance["concordance"], rtol=1e-12)


def test_row_splitting_without_covariate_change_is_invariant(uis):
    """Splitting (0, T] at LEN.T with the same covariates gives the same fit (risk sets unchanged)."""
    tv = split_at_los_by_id(uis)
    a = _uis_fit(uis)
    b = fit_cox(tv, start_col="start", stop_col="stop", event_col="event", covariates=UIS_COV)
    np.testing.assert_allclose(a.tidy["estimate"], b.tidy["estimate"], rtol=1e-9)
    np.testing.assert_allclose(a.tidy["std_error"], b.tidy["std_error"], rtol=1e-8)


def test_integer_weights_equal_replicated_rows(edge):
    pos = edge[edge["w"] > 0]
    a = fit_cox(pos, duration_col="time", event_col="event", covariates=["x", "z"], weights_col="w", ties="breslow")
    rep = pos.loc[pos.index.repeat(pos["w"])]
    b = fit_cox(rep, duration_col="time", event_col="event", covariates=["x", "z"], ties="breslow")
    np.testing.assert_allclose(a.tidy["estimate"], b.tidy["estimate"], rtol=1e-9)
    np.testing.assert_allclose(a.tidy["std_error"], b.tidy["std_error"], rtol=1e-8)


def test_categorical_dtype_reference_is_first_category(help_df):
    df = help_df.assign(substance=pd.Categorical(help_df["substance"], categories=["heroin", "alcohol", "cocaine"]))
    res = fit_cox(df, duration_col="daysanysub", event_col="anysubstatus", covariates=["substance"])
    assert list(res.tidy["term"]) == ["substance[T.alcohol]", "substance[T.cocaine]"]


# ----------------------------------------------------------------------------- validation


def _small():
    return pd.DataFrame(
        {"t": [1.0, 2, 3, 4, 5, 6], "e": [1, 0, 1, 1, 0, 1], "x": [0.1, 0.5, 0.2, 0.9, 0.4, 0.3], "g": list("aabbab")}
    )


@pytest.mark.parametrize(
    "mutate,kw,match",
    [
        (lambda d: d.assign(t=[-1.0, 2, 3, 4, 5, 6]), {}, r"column 't' \(duration\) has 1 negative value\(s\) \(rows: 0\)"),
        (lambda d: d.assign(x=[np.nan, 0.5, 0.2, np.inf, 0.4, 0.3]), {}, r"column 'x' \(covariate\) has 2 missing or infinite value\(s\) \(rows: 0, 3\)"),
        (lambda d: d.assign(k=1.0), {"covariates": ["x", "k"]}, "constant"),
        (lambda d: d.assign(g="a"), {"covariates": ["g"]}, "single level"),
        (lambda d: d.assign(w=[1, -1, 1, 1, 1, 1]), {"weights_col": "w"}, "negative"),
        (lambda d: d.assign(e=[1, 2, 0, 1, 0, 1]), {}, "0/1"),
        (lambda d: d.assign(x2=lambda z: 2 * z["x"] + 1), {"covariates": ["x", "x2"]}, r"singular design: term 'x2'.*collinear"),
        (lambda d: d.assign(e=0), {}, "no events"),
        (lambda d: d, {"covariates": ["nope"]}, "not found"),
        (lambda d: d, {"ties": "exact"}, "ties"),
    ],
)
def test_validation_errors(mutate, kw, match):
    df = mutate(_small())
    args = dict(duration_col="t", event_col="e", covariates=["x"])
    args.update(kw)
    with pytest.raises(ModelSpecificationError, match=match) as info:
        fit_cox(df, **args)
    assert isinstance(info.value, ValueError) and isinstance(info.value, IopError)


@pytest.mark.parametrize("formula", ["x", "C(g)", "x + g"])
def test_formula_missing_values_are_reported(formula):
    df = _small().assign(x=[0.1, np.nan, 0.2, 0.9, 0.4, 0.3], g=["a", "b", None, "a", "b", "a"])
    with pytest.raises(ModelSpecificationError, match=r"missing.*rows: (1|2)"):
        fit_cox(df, duration_col="t", event_col="e", formula=formula)


def test_stop_not_after_start_is_rejected():
    df = pd.DataFrame({"a": [0, 5, 0], "b": [5, 5, 3], "e": [0, 1, 1], "x": [1.0, 0.0, 0.5]})
    with pytest.raises(ModelSpecificationError, match=r"b <= a \(rows: 1\)"):
        fit_cox(df, start_col="a", stop_col="b", event_col="e", covariates=["x"])


def test_separation_raises_convergence_error():
    # x perfectly orders the event times: the MLE is infinite (R warns, we raise)
    df = pd.DataFrame({"t": np.arange(1.0, 21), "e": 1, "x": np.arange(20.0)[::-1]})
    with pytest.raises(ConvergenceError, match="infinite|converge"):
        fit_cox(df, duration_col="t", event_col="e", covariates=["x"])


def test_overflowing_newton_step_is_halved_without_warnings():
    """A strong effect makes the first Newton step overflow exp(); step halving recovers, silently
    (warnings are errors under pytest). Seed 3: the second Newton step overflows."""
    rng = np.random.default_rng(3)
    n = 150
    switch = rng.uniform(0, 30, n)
    t_before = rng.exponential(100, n)
    t = np.where(t_before <= switch, t_before, switch + rng.exponential(200, n))
    df = pd.DataFrame({"time": np.minimum(t, 180), "event": (t <= 180).astype(int), "ever": (t > switch).astype(int)})
    res = fit_cox(df, duration_col="time", event_col="event", covariates=["ever"])
    assert res.glance["converged"].iloc[0]
    assert res.tidy["hazard_ratio"].iloc[0] < 0.1


def test_max_iter_too_small_raises(uis):
    with pytest.raises(ConvergenceError, match="did not converge in 1"):
        _uis_fit(uis, max_iter=1)


def test_ph_test_rejects_other_results(uis):
    with pytest.raises(ModelSpecificationError):
        ph_test(_uis_fit(uis), transform="sqrt")
    with pytest.raises(ModelSpecificationError):
        ph_test("not a result")


# ----------------------------------------------------------------------------- simulation


def _simulate_switch(rng, n, beta):
    """Exposure switches on at a random day; hazard exp(beta * exposed); administrative end day 100."""
    base = 0.02
    switch = rng.uniform(0, 60, n)
    t_before = rng.exponential(1 / base, n)
    # after the switch the hazard is base * exp(beta): memoryless exponential restart
    t_after = switch + rng.exponential(1 / (base * np.exp(beta)), n)
    t = np.where(t_before <= switch, t_before, t_after)
    end = 100.0
    event = t <= end
    t = np.minimum(t, end)
    before = pd.DataFrame({"id": np.arange(n), "start": 0.0, "stop": np.minimum(t, switch), "exposed": 0})
    before["event"] = (event & (t <= switch)).astype(int)
    has_after = t > switch
    after = pd.DataFrame(
        {"id": np.arange(n)[has_after], "start": switch[has_after], "stop": t[has_after], "exposed": 1,
         "event": event[has_after].astype(int)}
    )
    rows = pd.concat([before, after], ignore_index=True)
    ever = pd.DataFrame({"time": t, "event": event.astype(int), "ever": has_after.astype(int)})
    return rows, ever


@pytest.mark.slow
def test_simulation_time_varying_coverage_and_immortal_time_bias():
    """Counting-process Cox covers the true log-HR in ~95% of 200 replicates; 'ever treated' is biased."""
    rng = np.random.default_rng(20261127)
    beta = np.log(0.5)
    covered, naive = 0, []
    reps = 200
    for _ in range(reps):
        rows, ever = _simulate_switch(rng, 150, beta)
        res = fit_cox(rows, start_col="start", stop_col="stop", event_col="event", covariates=["exposed"])
        t = res.tidy.iloc[0]
        covered += t["conf_low"] <= beta <= t["conf_high"]
        naive.append(fit_cox(ever, duration_col="time", event_col="event", covariates=["ever"]).tidy["estimate"].iloc[0])
    coverage = covered / reps
    naive_hr = float(np.exp(np.mean(naive)))
    print(f"coverage={coverage:.3f} naive_ever_treated_HR={naive_hr:.3f} true_HR=0.5")
    assert 0.90 <= coverage <= 0.99
    assert naive_hr < 0.5 * 0.8  # immortal time makes 'ever treated' look much more protective


# ----------------------------------------------------------------------------- concordance engine


def _brute_concordance(start, stop, event, lp, w, strata):
    conc = disc = tied = 0.0
    for i in np.flatnonzero(event):
        t = stop[i]
        for j in range(len(stop)):
            if j == i or strata[j] != strata[i] or not (start[j] < t <= stop[j]):
                continue
            if stop[j] == t and event[j]:
                continue  # tied event times are not comparable
            pair = w[i] * w[j]
            if lp[j] < lp[i]:
                conc += pair
            elif lp[j] > lp[i]:
                disc += pair
            else:
                tied += pair
    return (conc + tied / 2) / (conc + disc + tied)


@pytest.mark.parametrize("block_cells", [None, 1, 40, 10_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_concordance_equals_brute_force(monkeypatch, seed, block_cells):
    """Both dominance-sum paths (dense table; key blocks of several sizes) equal the O(n^2) definition."""
    import iop_research.survival.cox as cox_mod

    if block_cells is not None:
        monkeypatch.setattr(cox_mod, "_DENSE_CELLS", 0)
        monkeypatch.setattr(cox_mod, "_BLOCK_CELLS", block_cells)
    rng = np.random.default_rng(seed)
    n = 120
    start = rng.integers(0, 5, n).astype(float)
    stop = start + rng.integers(1, 8, n)
    df = pd.DataFrame(
        {
            "start": start,
            "stop": stop,
            "event": rng.integers(0, 2, n),
            "x": rng.integers(0, 3, n).astype(float),  # ties in the linear predictor
            "z": rng.normal(size=n).round(1),
            "w": rng.integers(1, 4, n).astype(float),
            "s": rng.integers(0, 2, n),
        }
    )
    res = fit_cox(df, start_col="start", stop_col="stop", event_col="event", covariates=["x", "z"],
                  weights_col="w", strata_col="s")
    lp = df[["x", "z"]].to_numpy() @ res.tidy["estimate"].to_numpy()
    expected = _brute_concordance(start, stop.astype(float), df["event"].to_numpy().astype(bool),
                                  np.round(lp, 12), df["w"].to_numpy(), df["s"].to_numpy())
    np.testing.assert_allclose(res.glance["concordance"].iloc[0], expected, rtol=1e-10)


@pytest.mark.parametrize("block_cells", [50, 2_000_000])
def test_blocked_path_matches_r_on_uis(monkeypatch, uis, real_golden, block_cells):
    """R: coxph(Surv(TIME, CENSOR) ~ ..., data = uis)$concordance via the blocked (sparse) path."""
    import iop_research.survival.cox as cox_mod

    monkeypatch.setattr(cox_mod, "_DENSE_CELLS", 0)
    monkeypatch.setattr(cox_mod, "_BLOCK_CELLS", block_cells)
    res = _uis_fit(uis)
    np.testing.assert_allclose(res.glance["concordance"].iloc[0], real_golden["uis_efron"]["concordance"][0], rtol=1e-9)
    np.testing.assert_allclose(res.glance["concordance_se"].iloc[0], real_golden["uis_efron"]["concordance_se"][0], rtol=1e-6)


# ----------------------------------------------------------------------------- properties


def test_two_strata_columns_equal_combined_column(recurrent):
    df = recurrent.assign(half=(recurrent["id"] % 2), combo=lambda d: d["grp"] + "_" + d["half"].astype(str))
    a = fit_cox(df, start_col="start", stop_col="stop", event_col="event", covariates=["x1", "x2", "mat"],
                strata_col=["grp", "half"])
    b = fit_cox(df, start_col="start", stop_col="stop", event_col="event", covariates=["x1", "x2", "mat"],
                strata_col="combo")
    np.testing.assert_allclose(a.tidy["estimate"], b.tidy["estimate"], rtol=1e-12)
    np.testing.assert_allclose(a.glance["concordance"], b.glance["concordance"], rtol=1e-12)


def test_bool_covariate_is_categorical(edge):
    res = fit_cox(edge.assign(flag=edge["z"] == 1), duration_col="time", event_col="event", covariates=["x", "flag"])
    ref = fit_cox(edge, duration_col="time", event_col="event", covariates=["x", "z"])
    assert list(res.tidy["term"]) == ["x", "flag[T.True]"]
    np.testing.assert_allclose(res.tidy["estimate"], ref.tidy["estimate"], rtol=1e-12)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50), scale=st.floats(0.1, 10))
def test_invariance_to_row_order_and_covariate_affine_maps(seed, shift, scale):
    """Row order and x -> a + b x change nothing but the coefficient of x (divided by b)."""
    rng = np.random.default_rng(seed)
    n = 60
    start = rng.integers(0, 4, n).astype(float)
    df = pd.DataFrame(
        {
            "start": start,
            "stop": start + rng.integers(1, 6, n),
            "event": rng.integers(0, 2, n),
            "x": rng.normal(size=n),
            "g": rng.integers(0, 2, n),
        }
    )
    df.loc[0, "event"] = 1
    base = fit_cox(df, start_col="start", stop_col="stop", event_col="event", covariates=["x", "g"])
    perm = df.sample(frac=1, random_state=seed).assign(x=lambda d: shift + scale * d["x"])
    moved = fit_cox(perm, start_col="start", stop_col="stop", event_col="event", covariates=["x", "g"])
    est = base.tidy["estimate"].to_numpy()
    np.testing.assert_allclose(moved.tidy["estimate"].to_numpy(), [est[0] / scale, est[1]], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(moved.glance["loglik"], base.glance["loglik"], rtol=1e-9)
    np.testing.assert_allclose(moved.glance["concordance"], base.glance["concordance"], rtol=1e-9)
    z = ph_test(base).tidy["statistic"].to_numpy()
    assert np.all(z >= 0)


def test_help_with_zero_durations_equals_r(help_path, real_golden):
    """R: coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female, data = help) on all 244
    complete rows, 11 of them with daysanysub == 0 (at risk at time 0, as R counts them)."""
    df = pd.read_csv(help_path).dropna(subset=["anysubstatus", "daysanysub"]).reset_index(drop=True)
    assert (df["daysanysub"] == 0).sum() == 11
    g = real_golden["help_with_zero"]
    res = fit_cox(df, duration_col="daysanysub", event_col="anysubstatus", covariates=["treat", "substance", "age", "female"])
    np.testing.assert_allclose(res.tidy["estimate"], g["coef"], rtol=1e-6)
    np.testing.assert_allclose(res.tidy["std_error"], g["se"], rtol=1e-4)
    np.testing.assert_allclose(res.glance["loglik"].iloc[0], g["loglik"][1] if isinstance(g["loglik"], list) else g["loglik"], rtol=1e-6)


# ----------------------------------------------------------------------------- holdout defects vs R
# Issue 11, point 8. Data: tests/r/make_defects_data.py; expected values: tests/r/defects.R
# (tests/golden/defects.json).


@pytest.fixture(scope="module")
def defects_golden() -> dict:
    return load_golden("defects")


@pytest.fixture(scope="module")
def dright() -> pd.DataFrame:
    return pd.read_csv(GOLDEN_DIR / "data" / "defects_right.csv")


@pytest.fixture(scope="module")
def dcount() -> pd.DataFrame:
    return pd.read_csv(GOLDEN_DIR / "data" / "defects_counting.csv")


@pytest.mark.parametrize("case,cl", [("few_clusters_2", "cl2"), ("few_clusters_3", "cl3")])
def test_clusters_not_more_than_coefficients_match_r(dright, defects_golden, case, cl):
    """R: coxph(Surv(time, event) ~ x1 + x2 + x3, data, cluster = cl2 / cl3): the robust variance is
    singular; R's Wald and robust score tests use a generalised inverse (coxph.wtest) and are finite."""
    res = fit_cox(dright, duration_col="time", event_col="event", covariates=["x1", "x2", "x3"], cluster_col=cl)
    r = defects_golden[case]
    assert_matches_r(res, r)
    gl = res.glance.iloc[0]
    assert np.isfinite(gl["wald_statistic"]) and gl["wald_statistic"] >= 0
    assert gl["n_clusters"] == int(cl[-1]) <= len(r["coef"])
    if "wald_p" in r:  # summary(fit)$waldtest: df = number of coefficients
        assert r["wald_df"][0] == 3
        np.testing.assert_allclose(gl["wald_p_value"], r["wald_p"][0], rtol=RTOL_SE)


def test_two_clusters_counting_process_match_r(dcount, defects_golden):
    """R: coxph(Surv(start, stop, event) ~ treat + x, data, cluster = cl2) (2 clusters, 2 coefficients)."""
    res = fit_cox(dcount, start_col="start", stop_col="stop", event_col="event", covariates=["treat", "x"],
                  cluster_col="cl2")
    assert_matches_r(res, defects_golden["few_clusters_counting"])


def test_generalised_inverse_is_r_cholesky2():
    """The Wald quadratic form equals b' V^+ b on a rank-deficient V, and b' V^-1 b on a regular one."""
    from iop_research.survival.cox import _wald_quadratic

    rng = np.random.default_rng(5)
    a = rng.normal(size=(2, 4))
    v = a.T @ a  # rank 2
    b = v @ rng.normal(size=4)  # in the column space: every generalised inverse gives the same form
    np.testing.assert_allclose(_wald_quadratic(v, b), b @ np.linalg.pinv(v) @ b, rtol=1e-8)
    full = v + np.eye(4)
    np.testing.assert_allclose(_wald_quadratic(full, b), b @ np.linalg.solve(full, b), rtol=1e-12)
    assert _wald_quadratic(np.zeros((3, 3)), np.ones(3)) == 0.0


@pytest.mark.parametrize("case,kw", [
    ("frac_weights_default", {}),
    ("frac_weights_model", {"robust": False}),
])
def test_fractional_weights_default_to_robust_as_r(dright, defects_golden, case, kw):
    """R: coxph(Surv(time, event) ~ x1 + x2 + x3, data, weights = wf [, robust = FALSE]): with
    non-integer weights and robust not given, R reports the robust variance."""
    res = fit_cox(dright, duration_col="time", event_col="event", covariates=["x1", "x2", "x3"],
                  weights_col="wf", **kw)
    assert_matches_r(res, defects_golden[case])
    assert res.model.robust is (case == "frac_weights_default")


def test_fractional_weights_counting_process_default_robust(dcount, defects_golden):
    """R: coxph(Surv(start, stop, event) ~ treat + x + strata(s), data, weights = wf): robust with each
    row its own cluster (robust not given, so R does not ask for an id)."""
    res = fit_cox(dcount, start_col="start", stop_col="stop", event_col="event", covariates=["treat", "x"],
                  strata_col="s", weights_col="wf")
    assert_matches_r(res, defects_golden["frac_weights_counting"])


def test_integer_weights_stay_model_based(edge):
    res = fit_cox(edge, duration_col="time", event_col="event", covariates=["x", "z"], weights_col="w")
    assert not res.model.robust
    assert np.isnan(res.glance["robust_score_statistic"].iloc[0])


def test_robust_counting_process_without_cluster_is_refused(dcount, defects_golden):
    """R: coxph(Surv(start, stop, event) ~ treat + x, data, robust = TRUE) stops with
    'one of cluster or id is needed'; with cluster = id it fits (compared with R)."""
    assert defects_golden["robust_counting_no_cluster"]["error"] == ["one of cluster or id is needed"]
    with pytest.raises(ModelSpecificationError, match="robust=True on \\(start, stop\\] rows needs cluster_col.*"
                                                      "cluster_col='patient_id'"):
        fit_cox(dcount, start_col="start", stop_col="stop", event_col="event", covariates=["treat", "x"], robust=True)
    res = fit_cox(dcount, start_col="start", stop_col="stop", event_col="event", covariates=["treat", "x"],
                  cluster_col="id", robust=True)
    assert_matches_r(res, defects_golden["robust_counting_id"])


def test_cluster_with_robust_false_is_refused(dcount):
    with pytest.raises(ModelSpecificationError, match="cluster_col='id' was given with robust=False"):
        fit_cox(dcount, start_col="start", stop_col="stop", event_col="event", covariates=["treat", "x"],
                cluster_col="id", robust=False)
    with pytest.raises(ModelSpecificationError, match="robust='yes' must be True, False or None"):
        fit_cox(dcount, start_col="start", stop_col="stop", event_col="event", covariates=["treat"], robust="yes")


def test_ph_test_rows_in_r_order_counting_strata(dcount, defects_golden):
    """R: cox.zph(coxph(Surv(start, stop, event) ~ treat + x + strata(s), data), "km")$y, row by row."""
    res = fit_cox(dcount, start_col="start", stop_col="stop", event_col="event", covariates=["treat", "x"],
                  strata_col="s")
    assert_zph_matches_r(ph_test(res), defects_golden["zph_counting_strata"])
    t = ph_test(res).extra["residuals"]["time"].to_numpy()
    assert (np.diff(t) == 0).any()  # the comparison covers tied event times


def test_ph_test_rows_in_r_order_right_censored_ties(dright, defects_golden):
    """R: cox.zph(coxph(Surv(time, event) ~ x1 + x2 + grp, data), "identity")$y, row by row."""
    res = fit_cox(dright, duration_col="time", event_col="event", covariates=["x1", "x2", "grp"])
    assert_zph_matches_r(ph_test(res, transform="identity"), defects_golden["zph_right_ties"])


def test_fine_gray_dummy_codes_categories_as_r(dright, defects_golden):
    """R: crr(time, cr, model.matrix(~ x2 + grp, data)[, -1], failcode = 1): fit_fine_gray takes the
    categorical column as it is (its docstring no longer asks for dummies)."""
    from iop_research.survival.competing import fit_fine_gray

    r = defects_golden["fine_gray_categorical"]
    res = fit_fine_gray(dright, duration_col="time", event_col="cr", cause=1, covariates=["x2", "grp"])
    assert [re.sub(r"\[T\.(.*?)\]", r"\1", t) for t in res.tidy["term"]] == r["names"]
    np.testing.assert_allclose(res.tidy["estimate"], r["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.tidy["std_error"], r["se"], rtol=RTOL_SE)
    assert "dummy-code categories beforehand" not in fit_fine_gray.__doc__


@pytest.mark.parametrize("block_cells", [None, 1, 30, 500])
def test_concordance_blocked_path_matches_r_counting_weights_cluster(monkeypatch, dcount, defects_golden,
                                                                     block_cells):
    """R: coxph(Surv(start, stop, event) ~ treat + x, data, cluster = id, weights = wf)$concordance
    (concordance and its infinitesimal-jackknife SE), by the dense path and by key blocks."""
    import iop_research.survival.cox as cox_mod

    if block_cells is not None:
        monkeypatch.setattr(cox_mod, "_DENSE_CELLS", 0)
        monkeypatch.setattr(cox_mod, "_BLOCK_CELLS", block_cells)
    res = fit_cox(dcount, start_col="start", stop_col="stop", event_col="event", covariates=["treat", "x"],
                  cluster_col="id", weights_col="wf")
    assert_matches_r(res, defects_golden["concordance_counting"])


@requires_r
@pytest.mark.r
def test_defects_golden_reproduces_live(tmp_path):
    """Rscript --vanilla tests/r/defects.R <datasets_dir> <out_json> reproduces tests/golden/defects.json."""
    live = run_r_script("defects", tmp_path / "defects.json")
    committed = load_golden("defects")
    assert live.keys() == committed.keys()
    assert committed["survival"][0].startswith("3.5") and committed["R_version"][0].startswith("R version 4")
    for key, val in committed.items():
        if not isinstance(val, dict):
            continue
        for name in ("coef", "chisq", "loglik", "wald", "rscore", "concordance"):
            if name in val and val[name] != [None]:
                np.testing.assert_allclose(live[key][name], val[name], rtol=RTOL_EST)
        for name in ("se", "concordance_se"):
            if name in val:
                np.testing.assert_allclose(live[key][name], val[name], rtol=RTOL_SE)
        if "error" in val:
            assert live[key]["error"] == val["error"]
