"""Tests of iop_research.survival.competing against cmprsk 2.2 (cuminc, timepoints, crr) and survival.

Golden values: tests/golden/cr_sim.json and tests/golden/cr_uis.json, written by
tests/r/cr_sim.R and tests/r/cr_uis.R (data of cr_sim from tests/r/make_cr_data.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iop_research.survival.competing import (
    TIDY_CIF_COLUMNS,
    cumulative_incidence,
    fit_cause_specific,
    fit_fine_gray,
    gray_test,
)
from iop_research.results import TIDY_COX_COLUMNS
from iop_research.exceptions import ModelSpecificationError

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script

RTOL_EST = 1e-6
RTOL_SE = 1e-4


def _arr(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.fixture(scope="module")
def sim():
    return pd.read_csv(GOLDEN_DIR / "data" / "cr_sim.csv")


@pytest.fixture(scope="module")
def edge():
    return pd.read_csv(GOLDEN_DIR / "data" / "cr_edge.csv")


@pytest.fixture(scope="module")
def uis_cr(uis_path):
    """UIS with the type of first relapse as competing causes (construction as tests/r/cr_uis.R)."""
    u = pd.read_csv(uis_path)
    status = np.where(u["CENSOR"] == 0, 0, np.where(u["TIME"] > u["LEN.T"], 1, 2))
    return u.assign(status=status)


def _compare_cif(tidy, golden_cif, group_cast=str):
    for key, val in golden_cif.items():
        grp, cause = key.rsplit(" ", 1)
        sub = tidy[(tidy["group"].map(group_cast) == grp) & (tidy["cause"] == int(cause))]
        est, var = _arr(val["est"]), _arr(val["var"])
        assert len(sub) == len(est), key
        np.testing.assert_array_equal(np.isnan(sub["cumulative_incidence"]), np.isnan(est))
        np.testing.assert_allclose(sub["cumulative_incidence"], est, rtol=RTOL_EST, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(sub["std_error"] ** 2, var, rtol=RTOL_SE, atol=1e-14, err_msg=key)


# --------------------------------------------------------------------------- cuminc


def test_cif_matches_cuminc_timepoints_sim(sim):
    """R: timepoints(cuminc(d$days, d$status, d$program), c(7, 14, 30, 45, 60, 90)) (tests/r/cr_sim.R)."""
    g = load_golden("cr_sim")
    res = cumulative_incidence(sim, duration_col="days", event_col="status", group_col="program", times=g["times"])
    assert tuple(res.tidy.columns) == TIDY_CIF_COLUMNS
    _compare_cif(res.tidy, g["prog"]["cif"])
    res_mat = cumulative_incidence(sim, duration_col="days", event_col="status", group_col="mat", times=g["times"])
    _compare_cif(res_mat.tidy, g["mat"]["cif"])


def test_cif_full_step_function_matches_cuminc(sim):
    """R: cuminc(d$days, d$status, d$program)[["A 1"]] (time, est, var at every jump)."""
    g = load_golden("cr_sim")["full_A1"]
    res = cumulative_incidence(sim[sim["program"] == "A"], duration_col="days", event_col="status")
    tidy = res.tidy[res.tidy["cause"] == 1].set_index("time")
    jump_times = np.unique(_arr(g["time"])[1:-1])  # corners of the step function
    est_after = {t: e for t, e in zip(g["time"], g["est"])}  # last value listed at t is after the jump
    var_after = {t: v for t, v in zip(g["time"], g["var"])}
    np.testing.assert_allclose(tidy.loc[jump_times, "cumulative_incidence"], [est_after[t] for t in jump_times], rtol=RTOL_EST)
    np.testing.assert_allclose(tidy.loc[jump_times, "std_error"] ** 2, [var_after[t] for t in jump_times], rtol=RTOL_SE)


def test_cif_matches_cuminc_uis(uis_cr):
    """R: timepoints(cuminc(u$TIME, status, u$TREAT), c(30, 90, 180, 365, 730)) (tests/r/cr_uis.R)."""
    g = load_golden("cr_uis")
    res = cumulative_incidence(uis_cr, duration_col="TIME", event_col="status", group_col="TREAT", times=g["times"])
    _compare_cif(res.tidy, g["cif"])


def test_cif_point_estimates_match_survfit_multistate(sim):
    """R: summary(survfit(Surv(days, factor(status)) ~ program), times)$pstate: same AJ estimates;
    survfit's infinitesimal-jackknife SE differs from cuminc's delta-method SE (documented)."""
    g = load_golden("cr_sim")
    res = cumulative_incidence(sim, duration_col="days", event_col="status", group_col="program", times=g["times"])
    t = res.tidy
    for grp, val in g["survfit"].items():
        n = len(val["p1"])  # survfit drops times after the last follow-up
        for cause, key in ((1, "p1"), (2, "p2")):
            ours = t[(t["group"] == grp) & (t["cause"] == cause)]["cumulative_incidence"].to_numpy()[:n]
            np.testing.assert_allclose(ours, val[key], rtol=RTOL_EST)
        ours_se = t[(t["group"] == grp) & (t["cause"] == 1)]["std_error"].to_numpy()[:n]
        rel = np.abs(ours_se / np.asarray(val["se1"]) - 1)
        assert rel.max() < 0.1 and rel.max() > 1e-6  # close, but not the same estimator


def test_weighted_cif_matches_survfit_weights(sim):
    """R: summary(survfit(Surv(days, factor(status)) ~ program, weights = 1 + 0.5 female + 0.25 mat), times)$pstate."""
    g = load_golden("cr_sim")
    d = sim.assign(w=1 + 0.5 * sim["female"] + 0.25 * sim["mat"])
    res = cumulative_incidence(d, duration_col="days", event_col="status", group_col="program", weights_col="w", times=g["times"])
    t = res.tidy
    for grp, val in g["survfit_weighted"].items():
        n = len(val["p1"])
        for cause, key in ((1, "p1"), (3, "p3")):
            ours = t[(t["group"] == grp) & (t["cause"] == cause)]["cumulative_incidence"].to_numpy()[:n]
            np.testing.assert_allclose(ours, val[key], rtol=RTOL_EST)
    shown = t["cumulative_incidence"].notna()
    assert t.loc[shown, "std_error"].notna().all() and t.loc[shown, "conf_low"].notna().all()


def _check_weighted_se(g):
    d = pd.read_csv(GOLDEN_DIR / "data" / "cif_weighted.csv")
    t = cumulative_incidence(d, duration_col="t", event_col="s", weights_col="w", times=g["times"]).tidy
    for cause in (1, 2):
        rows = t[t["cause"] == cause]
        np.testing.assert_allclose(rows["cumulative_incidence"], g[f"cif{cause}"], rtol=RTOL_EST)
        np.testing.assert_allclose(rows["std_error"], g[f"se{cause}"], rtol=1e-4)


def test_weighted_cif_variance_is_survfits_infinitesimal_jackknife():
    """R: summary(survfit(Surv(t, factor(s)) ~ 1, weights = w, id = id), times)$std.err (tests/r/cif_weighted.R)."""
    _check_weighted_se(load_golden("cif_weighted"))


@requires_r
def test_live_r_cif_weighted(tmp_path):
    _check_weighted_se(run_r_script("cif_weighted", tmp_path / "cif_weighted.json"))


def test_cif_edge_cases(edge):
    """R: timepoints(cuminc(e$days, e$status, e$arm), c(3, 5, 8, 12, 20, 25, 30)): cause 2 absent in arm b,
    ties across causes; NaN after the group's last follow-up (arm a ends at day 25)."""
    g = load_golden("cr_sim")["edge"]
    res = cumulative_incidence(edge, duration_col="days", event_col="status", group_col="arm", times=g["times"])
    _compare_cif(res.tidy, g["cif"])
    b2 = res.tidy[(res.tidy["group"] == "b") & (res.tidy["cause"] == 2)]
    assert (b2["cumulative_incidence"] == 0).all() and (b2["conf_low"] == 0).all()


def test_cif_loglog_interval(sim):
    res = cumulative_incidence(sim, duration_col="days", event_col="status", times=[30.0], conf_level=0.9)
    row = res.tidy[res.tidy["cause"] == 1].iloc[0]
    f, se = row["cumulative_incidence"], row["std_error"]
    z = 1.6448536269514722
    assert row["conf_low"] == pytest.approx(f ** np.exp(z * se / abs(f * np.log(f))), rel=1e-12)
    assert row["conf_high"] == pytest.approx(f ** np.exp(-z * se / abs(f * np.log(f))), rel=1e-12)
    assert row["conf_low"] < f < row["conf_high"]


def test_cif_weighted_point_estimates_equal_replicated_rows(edge):
    w = np.tile([1, 2, 3, 1], 10)
    weighted = cumulative_incidence(edge.assign(w=w), duration_col="days", event_col="status", weights_col="w", times=[8, 20])
    replicated = cumulative_incidence(edge.loc[edge.index.repeat(w)], duration_col="days", event_col="status", times=[8, 20])
    np.testing.assert_allclose(weighted.tidy["cumulative_incidence"], replicated.tidy["cumulative_incidence"], rtol=1e-12)
    np.testing.assert_allclose(weighted.tidy["n_at_risk"], replicated.tidy["n_at_risk"])


def test_cif_labels_and_sum_with_km(edge):
    lab = edge.assign(status=edge["status"].map({0: "censored", 1: "relapse", 2: "death"}))
    res = cumulative_incidence(lab, duration_col="days", event_col="status", censor_code="censored")
    assert sorted(res.tidy["cause"].unique()) == ["death", "relapse"]
    num = cumulative_incidence(edge, duration_col="days", event_col="status")
    np.testing.assert_allclose(
        res.tidy[res.tidy["cause"] == "relapse"]["cumulative_incidence"],
        num.tidy[num.tidy["cause"] == 1]["cumulative_incidence"],
    )
    # sum over causes equals 1 - all-cause Kaplan-Meier
    t = num.tidy.pivot(index="time", columns="cause", values="cumulative_incidence").sum(axis=1)
    times = np.sort(edge["days"].unique())
    km, s = [], 1.0
    for u in times:
        n = (edge["days"] >= u).sum()
        dd = ((edge["days"] == u) & (edge["status"] > 0)).sum()
        s *= 1 - dd / n
        km.append(1 - s)
    np.testing.assert_allclose(t.to_numpy(), km, rtol=1e-12)


def test_cif_inputs_not_mutated_and_errors(edge):
    before = edge.copy()
    cumulative_incidence(edge, duration_col="days", event_col="status", group_col="arm")
    pd.testing.assert_frame_equal(edge, before)
    bad = edge.astype({"days": float})
    bad.loc[[3, 7], "days"] = np.nan
    with pytest.raises(ModelSpecificationError, match=r"column 'days' \(duration\) has 2 missing or infinite value\(s\) \(rows: 3, 7\)"):
        cumulative_incidence(bad, duration_col="days", event_col="status")
    with pytest.raises(ModelSpecificationError, match="not found"):
        cumulative_incidence(edge, duration_col="los_days", event_col="status")
    with pytest.raises(ModelSpecificationError, match="no events"):
        cumulative_incidence(edge.assign(status=0), duration_col="days", event_col="status")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.integers(1, 30), st.integers(0, 2)), min_size=2, max_size=40),
)
def test_cif_property_bounded_monotone(rows):
    d = pd.DataFrame(rows, columns=["days", "status"])
    if (d["status"] == 0).all():
        return
    res = cumulative_incidence(d, duration_col="days", event_col="status")
    for _, sub in res.tidy.groupby("cause"):
        f = sub["cumulative_incidence"].to_numpy()
        assert ((f >= 0) & (f <= 1 + 1e-12)).all()
        assert (np.diff(f) >= -1e-12).all()
        assert (sub["std_error"] >= 0).all()
    total = res.tidy.groupby("time")["cumulative_incidence"].sum()
    assert (total <= 1 + 1e-12).all()


# --------------------------------------------------------------------------- Gray's test


def test_gray_test_matches_cuminc_tests(sim, edge, uis_cr):
    """R: cuminc(d$days, d$status, d$program)$Tests; with strata = d$female; cuminc(u$TIME, status, u$TREAT,
    strata = u$SITE)$Tests; edge data (cause 2 absent in one arm)."""
    g = load_golden("cr_sim")
    res = gray_test(sim, duration_col="days", event_col="status", group_col="program", cause=1)
    np.testing.assert_allclose(res.tidy["statistic"], g["prog"]["tests"]["stat"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.tidy["p_value"], g["prog"]["tests"]["pv"], rtol=RTOL_EST)
    assert list(res.glance.columns) == ["statistic", "df", "p_value"]
    assert res.glance["df"].iloc[0] == 2
    strat = gray_test(sim, duration_col="days", event_col="status", group_col="program", strata_col="female")
    np.testing.assert_allclose(strat.tidy["statistic"], g["prog_strat"]["tests"]["stat"], rtol=RTOL_EST)
    mat = gray_test(sim, duration_col="days", event_col="status", group_col="mat", cause=3)
    np.testing.assert_allclose(mat.tidy["statistic"], g["mat"]["tests"]["stat"], rtol=RTOL_EST)
    assert mat.glance["statistic"].iloc[0] == pytest.approx(g["mat"]["tests"]["stat"][2], rel=RTOL_EST)
    e = gray_test(edge, duration_col="days", event_col="status", group_col="arm")
    np.testing.assert_allclose(e.tidy["statistic"], g["edge"]["tests"]["stat"], rtol=RTOL_EST)
    gu = load_golden("cr_uis")
    u = gray_test(uis_cr, duration_col="TIME", event_col="status", group_col="TREAT", strata_col="SITE")
    np.testing.assert_allclose(u.tidy["statistic"], gu["tests_strat"]["stat"], rtol=RTOL_EST)
    np.testing.assert_allclose(u.tidy["p_value"], gu["tests_strat"]["pv"], rtol=RTOL_EST)


def test_gray_test_rho_matches_cuminc(sim):
    """R: cuminc(d$days, d$status, d$program, rho = 1)$Tests (weights (1 - F(t-))^rho)."""
    g = load_golden("cr_sim")["prog_rho1"]["tests"]
    res = gray_test(sim, duration_col="days", event_col="status", group_col="program", rho=1.0)
    np.testing.assert_allclose(res.tidy["statistic"], g["stat"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.tidy["p_value"], g["pv"], rtol=RTOL_EST)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 2), st.integers(0, 2)), min_size=6, max_size=50))
def test_gray_test_property_nonnegative(rows):
    d = pd.DataFrame(rows, columns=["days", "status", "arm"])
    if d["arm"].nunique() < 2 or not (d["status"] == 1).any():
        return
    res = gray_test(d, duration_col="days", event_col="status", group_col="arm")
    stat = res.glance["statistic"].iloc[0]
    assert np.isnan(stat) or stat >= -1e-9
    # relabelling the groups does not change the statistic
    rel = gray_test(d.assign(arm=2 - d["arm"]), duration_col="days", event_col="status", group_col="arm")
    np.testing.assert_allclose(rel.glance["statistic"], res.glance["statistic"], rtol=1e-6, atol=1e-9)


def test_gray_test_errors(edge):
    with pytest.raises(ModelSpecificationError, match="only 1 level"):
        gray_test(edge.assign(arm="a"), duration_col="days", event_col="status", group_col="arm")
    with pytest.raises(ModelSpecificationError, match="cause 7 does not occur"):
        gray_test(edge, duration_col="days", event_col="status", group_col="arm", cause=7)


# --------------------------------------------------------------------------- Fine-Gray


def test_fine_gray_matches_crr_sim(sim):
    """R: crr(d$days, d$status, cbind(age_c, female, mat, progB), failcode = 1, gtol = 1e-10) and
    failcode = 3 (rare cause, 14 events) with cov1 = cbind(mat, female)."""
    g = load_golden("cr_sim")
    d = sim.assign(progB=(sim["program"] == "B").astype(int))
    res = fit_fine_gray(d, duration_col="days", event_col="status", cause=1, covariates=["age_c", "female", "mat", "progB"])
    assert tuple(res.tidy.columns) == TIDY_COX_COLUMNS
    np.testing.assert_allclose(res.tidy["estimate"], g["crr1"]["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.tidy["std_error"], g["crr1"]["se"], rtol=RTOL_SE)
    np.testing.assert_allclose(res.glance["loglik"], g["crr1"]["loglik"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.glance["loglik_null"], g["crr1"]["loglik_null"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.tidy["hazard_ratio"], np.exp(g["crr1"]["coef"]), rtol=RTOL_EST)
    # crr's default gtol = 1e-6 stops a little earlier: still within 1e-5
    np.testing.assert_allclose(res.tidy["estimate"], g["crr1"]["coef_default_gtol"], rtol=1e-5)
    rare = fit_fine_gray(d, duration_col="days", event_col="status", cause=3, covariates=["mat", "female"])
    np.testing.assert_allclose(rare.tidy["estimate"], g["crr3"]["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(rare.tidy["std_error"], g["crr3"]["se"], rtol=RTOL_SE)


def test_fine_gray_matches_crr_uis(uis_cr):
    """R: crr(u$TIME, status, cbind(AGE, BECK, NDT, IV3, TREAT, SITE), failcode = 1 and 2, gtol = 1e-10)."""
    g = load_golden("cr_uis")
    cov = ["AGE", "BECK", "NDT", "IV3", "TREAT", "SITE"]
    for cause in (1, 2):
        res = fit_fine_gray(uis_cr, duration_col="TIME", event_col="status", cause=cause, covariates=cov)
        np.testing.assert_allclose(res.tidy["estimate"], g[f"crr{cause}"]["coef"], rtol=RTOL_EST)
        np.testing.assert_allclose(res.tidy["std_error"], g[f"crr{cause}"]["se"], rtol=RTOL_SE)


def test_fine_gray_point_estimates_agree_with_finegray_coxph(sim, uis_cr):
    """R: coxph(Surv(fgstart, fgstop, fgstatus) ~ ..., weights = fgwt, ties = "breslow", cluster = id,
    data = finegray(...)). Same estimator; finegray breaks ties between censoring and event times
    slightly differently, so coefficients agree to a small fraction of a standard error."""
    g = load_golden("cr_uis")
    res = fit_fine_gray(uis_cr, duration_col="TIME", event_col="status", covariates=["AGE", "BECK", "NDT", "IV3", "TREAT", "SITE"])
    diff = np.abs(res.tidy["estimate"] - g["finegray"]["coef"]) / res.tidy["std_error"]
    assert diff.max() < 0.01
    gs = load_golden("cr_sim")
    d = sim.assign(progB=(sim["program"] == "B").astype(int))
    res = fit_fine_gray(d, duration_col="days", event_col="status", covariates=["age_c", "female", "mat", "progB"])
    assert (np.abs(res.tidy["estimate"] - gs["finegray"]["coef"]) / res.tidy["std_error"]).max() < 0.01


def test_fine_gray_without_competing_events_is_breslow_cox(sim):
    """With no competing events the subdistribution risk set is the ordinary one and psi = 0: crr equals
    coxph(..., ties = "breslow", robust = TRUE), here the package's fit_cox."""
    from iop_research.survival.cox import fit_cox

    d = sim.assign(status=np.where(sim["status"] == 1, 1, 0))
    fg = fit_fine_gray(d, duration_col="days", event_col="status", covariates=["age_c", "female", "mat"])
    cox = fit_cox(d, duration_col="days", event_col="status", covariates=["age_c", "female", "mat"], ties="breslow", robust=True)
    np.testing.assert_allclose(fg.tidy["estimate"], cox.tidy["estimate"], rtol=1e-6)
    np.testing.assert_allclose(fg.tidy["std_error"], cox.tidy["std_error"], rtol=1e-5)


def test_fine_gray_errors(sim):
    with pytest.raises(ModelSpecificationError, match="single level"):
        fit_fine_gray(sim.assign(site="A"), duration_col="days", event_col="status", covariates=["site", "mat"])
    with pytest.raises(ModelSpecificationError, match="missing or infinite"):
        fit_fine_gray(sim.assign(x=np.where(np.arange(len(sim)) == 3, np.nan, 1.0 * np.arange(len(sim)))),
                      duration_col="days", event_col="status", covariates=["x"])
    with pytest.raises(ModelSpecificationError, match="constant"):
        fit_fine_gray(sim.assign(k=1.0), duration_col="days", event_col="status", covariates=["mat", "k"])
    with pytest.raises(ModelSpecificationError, match="no events of cause 9"):
        fit_fine_gray(sim, duration_col="days", event_col="status", cause=9, covariates=["mat"])


def test_cause_specific_cox_matches_coxph(sim):
    """R: coxph(Surv(days, status == 1) ~ age_c + female + mat + progB, data = d) (Efron ties)."""
    g = load_golden("cr_sim")["cause_specific1"]
    d = sim.assign(progB=(sim["program"] == "B").astype(int))
    res = fit_cause_specific(d, duration_col="days", event_col="status", cause=1, covariates=["age_c", "female", "mat", "progB"])
    np.testing.assert_allclose(res.tidy["estimate"], g["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.tidy["std_error"], g["se"], rtol=RTOL_SE)
    assert "__cause_event__" not in d.columns
    with pytest.raises(ModelSpecificationError, match="no events of cause 5"):
        fit_cause_specific(d, duration_col="days", event_col="status", cause=5, covariates=["mat"])


# --------------------------------------------------------------------------- live R


@requires_r
def test_live_r_cr_sim(tmp_path):
    """Rscript --vanilla tests/r/cr_sim.R <datasets_dir> <out_json> reproduces the committed JSON."""
    live = run_r_script("cr_sim", tmp_path / "cr_sim.json")
    committed = load_golden("cr_sim")
    np.testing.assert_allclose(live["crr1"]["coef"], committed["crr1"]["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(live["crr1"]["se"], committed["crr1"]["se"], rtol=RTOL_SE)
    np.testing.assert_allclose(live["prog"]["tests"]["stat"], committed["prog"]["tests"]["stat"], rtol=RTOL_EST)
    np.testing.assert_allclose(_arr(live["prog"]["cif"]["A 1"]["est"]), _arr(committed["prog"]["cif"]["A 1"]["est"]), rtol=RTOL_EST)


@requires_r
def test_live_r_cr_uis(tmp_path):
    """Rscript --vanilla tests/r/cr_uis.R <datasets_dir> <out_json> reproduces the committed JSON."""
    live = run_r_script("cr_uis", tmp_path / "cr_uis.json")
    committed = load_golden("cr_uis")
    np.testing.assert_allclose(live["crr2"]["coef"], committed["crr2"]["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(live["crr2"]["se"], committed["crr2"]["se"], rtol=RTOL_SE)
    np.testing.assert_allclose(live["tests"]["stat"], committed["tests"]["stat"], rtol=RTOL_EST)


def test_fine_gray_dummy_codes_categorical_covariates_like_fit_cox():
    """A string covariate gets treatment dummies (first sorted level = reference), named as fit_cox names them;
    the fit equals the one on hand-made dummies."""
    rng = np.random.default_rng(7)
    n = 400
    site = rng.choice(["A", "B", "C"], size=n)
    age = rng.normal(40, 10, size=n)
    d = pd.DataFrame({"days": rng.integers(1, 200, size=n).astype(float),
                      "status": rng.choice([0, 1, 2], size=n, p=[0.3, 0.4, 0.3]), "site": site, "age": age})
    auto = fit_fine_gray(d, duration_col="days", event_col="status", cause=1, covariates=["site", "age"])
    manual = d.assign(siteB=(site == "B").astype(float), siteC=(site == "C").astype(float))
    hand = fit_fine_gray(manual, duration_col="days", event_col="status", cause=1, covariates=["siteB", "siteC", "age"])
    assert auto.tidy["term"].tolist() == ["site[T.B]", "site[T.C]", "age"]
    np.testing.assert_allclose(auto.tidy["estimate"], hand.tidy["estimate"], rtol=1e-10)
    np.testing.assert_allclose(auto.tidy["std_error"], hand.tidy["std_error"], rtol=1e-10)
