"""Tests of iop_research.survival.predict against R survival 3.5 / cmprsk.

Golden values: ``tests/golden/predict_cox.json`` from ``tests/r/predict_cox.R`` (UIS and HELP
from the shared datasets; simulated ``cox_recurrent.csv`` and ``cr_sim.csv``). The R calls are
``survfit(fit, newdata = nd[i, ])`` + ``summary(..., times, extend = TRUE)``, ``basehaz(fit,
centered)``, ``predict(fit, newdata, type, se.fit = TRUE, reference)`` and
``predict.crr(crr(...), cov1)``. Estimates 1e-6 relative, standard errors 1e-4.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from uis_cox import UIS_COV, read_uis, split_at_los
from iop_research.exceptions import IopError, ModelSpecificationError
from iop_research.survival.competing import fit_fine_gray
from iop_research.survival.cox import fit_cox
from iop_research.survival.predict import baseline_hazard, predict_cif, predict_risk, predict_survival

RTOL_EST = 1e-6
RTOL_SE = 1e-4
ND_ROWS = [0, 1, 4, 99, 299]  # R: uis[c(1, 2, 5, 100, 300), ]


@pytest.fixture(scope="module")
def uis(uis_path) -> pd.DataFrame:
    return read_uis(uis_path)


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("predict_cox")




def uis_fit(uis, case):
    kw = dict(duration_col="TIME", event_col="CENSOR", covariates=UIS_COV)
    if case == "uis_breslow":
        kw["ties"] = "breslow"
    elif case == "uis_strata":
        kw["covariates"] = [c for c in UIS_COV if c != "SITE"]
        kw["strata_col"] = "SITE"
    elif case == "uis_cluster":
        kw["cluster_col"] = "cl"
    elif case == "uis_weights":
        kw["weights_col"] = "w_frac"
        kw["robust"] = False  # as the R script: coxph(..., weights = w_frac, robust = FALSE)
    return fit_cox(uis, **kw)


def check_curves(fit, nd, r_curves, times):
    for i, rc in enumerate(r_curves):
        pred = predict_survival(fit, nd.iloc[[i]], times=times)
        np.testing.assert_allclose(pred["time"], rc["time"], rtol=0)
        np.testing.assert_allclose(pred["survival"], rc["surv"], rtol=RTOL_EST)
        np.testing.assert_allclose(pred["std_error"], rc["se"], rtol=RTOL_SE, atol=1e-12)
        np.testing.assert_allclose(pred["conf_low"], rc["lower"], rtol=RTOL_SE)
        np.testing.assert_allclose(pred["conf_high"], rc["upper"], rtol=RTOL_SE)
        if "full_time" in rc:
            full = predict_survival(fit, nd.iloc[[i]])
            np.testing.assert_allclose(full["time"], rc["full_time"], rtol=0)
            np.testing.assert_allclose(full["survival"], rc["full_surv"], rtol=RTOL_EST)
            np.testing.assert_allclose(full["std_error"] / full["survival"], rc["full_se_h"], rtol=RTOL_SE, atol=1e-12)


def check_preds(fit, nd, rp, *, expected=True):
    for ty in ("lp", "risk"):
        p = predict_risk(fit, nd, type=ty)
        np.testing.assert_allclose(p["estimate"], rp[ty]["fit"], rtol=RTOL_EST, atol=1e-10)
        np.testing.assert_allclose(p["std_error"], rp[ty]["se"], rtol=RTOL_SE)
        p0 = predict_risk(fit, type=ty)
        np.testing.assert_allclose(p0["estimate"], rp[f"{ty}_train"]["fit"], rtol=RTOL_EST, atol=1e-10)
        np.testing.assert_allclose(p0["std_error"], rp[f"{ty}_train"]["se"], rtol=RTOL_SE)
    np.testing.assert_allclose(predict_risk(fit, nd, reference="zero")["estimate"], rp["lp_zero"], rtol=RTOL_EST)
    np.testing.assert_allclose(
        predict_risk(fit, nd, reference="sample")["estimate"], rp["lp_sample"], rtol=RTOL_EST, atol=1e-10
    )
    if expected:
        p = predict_risk(fit, nd, type="expected")
        np.testing.assert_allclose(p["estimate"], rp["expected"]["fit"], rtol=RTOL_EST)
        np.testing.assert_allclose(p["std_error"], rp["expected"]["se"], rtol=RTOL_SE)
    np.testing.assert_allclose(
        predict_risk(fit, type="expected")["estimate"], rp["expected_train"], rtol=RTOL_EST, atol=1e-10
    )


def check_bh(fit, rb):
    """R's basehaz lists every follow-up time; compare at the event times (increment > 0)."""
    for centered, key in ((True, "hazard"), (False, "hazard0")):
        bh = baseline_hazard(fit, centered=centered)
        rt, rh = np.asarray(rb["time"]), np.asarray(rb[key])
        if rb["strata"] is None:
            groups = [(None, slice(None))]
        else:
            rs = np.asarray(rb["strata"])
            groups = [(s, rs == s) for s in pd.unique(rs)]
        for s, sel in groups:
            t_s, h_s = rt[sel], rh[sel]
            jump = np.diff(np.concatenate([[0.0], h_s])) > 0
            mine = bh if s is None else bh[bh["stratum"].astype(str) == s.split("=")[-1]]
            np.testing.assert_allclose(mine["time"], t_s[jump], rtol=0)
            np.testing.assert_allclose(mine["cumhaz"], h_s[jump], rtol=RTOL_EST)


@pytest.mark.parametrize("case", ["uis_efron", "uis_breslow", "uis_strata", "uis_cluster", "uis_weights"])
def test_uis_matches_r(uis, golden, case):
    """R: survfit / basehaz / predict on coxph(Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + factor(IV) +
    RACE + BECK) with ties="breslow", strata(SITE), cluster=cl or weights=w_frac (predict_cox.R)."""
    fit = uis_fit(uis, case)
    r = golden[case]
    nd = uis.iloc[ND_ROWS].reset_index(drop=True)
    check_curves(fit, nd, r["curves"], golden["times"])
    check_preds(fit, nd, r["pred"])
    if "bh" in r:
        check_bh(fit, r["bh"])


def test_counting_process_matches_r(uis, golden):
    """R: coxph(Surv(start, stop, event) ~ TREAT + intreat + SITE + ..., data = tv); survfit with newdata."""
    tv = split_at_los(uis)
    fit = fit_cox(tv, start_col="start", stop_col="stop", event_col="event", covariates=["TREAT", "intreat"] + UIS_COV[1:])
    nd = uis.iloc[ND_ROWS].reset_index(drop=True).assign(start=10, stop=100, event=1, intreat=[1, 0, 1, 0, 1])
    r = golden["uis_tv"]
    check_curves(fit, nd, r["curves"], golden["times"])
    check_preds(fit, nd, r["pred"], expected=False)
    check_bh(fit, r["bh"])
    np.testing.assert_allclose(predict_risk(fit, nd, type="expected")["estimate"], r["expected"], rtol=RTOL_EST)


def test_help_categorical_matches_r(help_path, golden):
    """R: coxph(Surv(daysanysub, anysubstatus) ~ treat + substance + age + female) on HELP."""
    df = pd.read_csv(help_path).dropna(subset=["anysubstatus", "daysanysub"]).query("daysanysub > 0")
    fit = fit_cox(df, duration_col="daysanysub", event_col="anysubstatus", covariates=["treat", "substance", "age", "female"])
    nd = pd.DataFrame(
        {"treat": ["yes", "no", "no"], "substance": ["heroin", "alcohol", "cocaine"], "age": [30, 45, 38],
         "female": [1, 0, 0], "daysanysub": [60, 120, 200], "anysubstatus": 1}
    )
    r = golden["help"]
    check_curves(fit, nd, r["curves"], golden["times"])
    check_preds(fit, nd, r["pred"])
    check_bh(fit, r["bh"])


def test_simulated_recurrent_formula_matches_r(golden):
    """R: coxph(Surv(start, stop, event) ~ x1 + x2 + grp + mat, cluster = id) on simulated recurrent events;
    fitted here with a formula, so prediction goes through the formulaic model spec."""
    rec = pd.read_csv(GOLDEN_DIR / "data" / "cox_recurrent.csv")
    fit = fit_cox(rec, start_col="start", stop_col="stop", event_col="event", formula="x1 + x2 + C(grp) + mat", cluster_col="id")
    nd = pd.DataFrame({"x1": [0, 1], "x2": [0.2, -1.0], "grp": ["a", "c"], "mat": [1, 0], "start": [0, 30],
                       "stop": [60, 200], "event": 1})
    r = golden["recurrent"]
    check_curves(fit, nd, r["curves"], golden["times"])
    check_preds(fit, nd, r["pred"], expected=False)
    check_bh(fit, r["bh"])
    np.testing.assert_allclose(predict_risk(fit, nd, type="expected")["estimate"], r["expected"], rtol=RTOL_EST)


def test_fine_gray_cif_matches_cmprsk(golden):
    """R: predict(crr(days, status, cbind(age_c, female, mat), failcode = 1), cov1) on cr_sim.csv."""
    d = pd.read_csv(GOLDEN_DIR / "data" / "cr_sim.csv")
    fit = fit_fine_gray(d, duration_col="days", event_col="status", cause=1, covariates=["age_c", "female", "mat"])
    r = golden["crr"]
    np.testing.assert_allclose(fit.tidy["estimate"], r["coef"], rtol=1e-5)
    cov1 = pd.DataFrame(np.array(r["cov1"], dtype=float), columns=["age_c", "female", "mat"])
    pred = predict_cif(fit, cov1)
    for i, cif in enumerate(r["cif"]):
        mine = pred[pred["row"] == i]
        np.testing.assert_allclose(mine["time"], r["time"], rtol=0)
        np.testing.assert_allclose(mine["cif"], cif, rtol=1e-5)


@requires_r
def test_r_golden_reproduces_live(tmp_path, golden):
    """Re-run tests/r/predict_cox.R and compare with the committed golden file."""
    live = run_r_script("predict_cox", tmp_path / "predict_cox.json")
    for case in ("uis_efron", "uis_strata", "uis_tv", "help", "recurrent"):
        for a, b in zip(live[case]["curves"], golden[case]["curves"]):
            np.testing.assert_allclose(a["surv"], b["surv"], rtol=1e-12)
            np.testing.assert_allclose(a["se"], b["se"], rtol=1e-12)
    np.testing.assert_allclose(live["crr"]["cif"], golden["crr"]["cif"], rtol=1e-12)


def test_properties_and_errors(uis):
    fit = uis_fit(uis, "uis_efron")
    nd = uis.iloc[:3]
    pred = predict_survival(fit, nd, times=[0, 50, 100, 400])
    assert list(pred.columns) == ["row", "time", "survival", "std_error", "conf_low", "conf_high", "cumhaz"]
    for _, g in pred.groupby("row"):
        s = g["survival"].to_numpy()
        assert (np.diff(s) <= 0).all() and ((s >= 0) & (s <= 1)).all()
        assert (g["conf_low"] <= g["survival"]).all() and (g["survival"] <= g["conf_high"]).all()
    assert pred.loc[pred["time"] == 0, "survival"].eq(1).all()
    with pytest.raises(ModelSpecificationError, match="lacks covariate"):
        predict_survival(fit, nd.drop(columns="AGE"), times=[30])
    with pytest.raises(ModelSpecificationError, match="not seen in the fit"):
        predict_survival(fit, nd.assign(IVf="9"), times=[30])
    with pytest.raises(ModelSpecificationError, match="missing"):
        predict_survival(fit, nd.assign(AGE=np.nan), times=[30])
    with pytest.raises(ModelSpecificationError, match="times"):
        predict_survival(fit, nd, times=[-1])
    with pytest.raises(ModelSpecificationError, match="type"):
        predict_risk(fit, nd, type="hazard")
    with pytest.raises(IopError):
        predict_survival(pd.DataFrame(), nd, times=[1])
    strat = uis_fit(uis, "uis_strata")
    allstrata = predict_survival(strat, nd.drop(columns="SITE"), times=[100])
    assert len(allstrata) == 6 and set(allstrata["stratum"]) == {0, 1}
    with pytest.raises(ModelSpecificationError, match="strata"):
        predict_survival(strat, nd.assign(SITE=7), times=[100])
