"""Tests of iop_research.designs.causal: IPTW (vs R glm + coxph), balance diagnostics (hand computations),
landmark analysis (vs R coxph), E-values (VanderWeele & Ding 2017), and a coverage simulation.

Golden values: tests/golden/causal_help.json (tests/r/causal_help.R) and
tests/golden/causal_landmark.json (tests/r/causal_landmark.R).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.survival.cox import fit_cox
from iop_research.designs.causal import BALANCE_COLUMNS, POSITIVITY_COLUMNS, IptwResult, evalue, iptw, landmark_analysis
from iop_research.designs.iptw_cox import iptw_cox
from iop_research.exceptions import ModelSpecificationError

from conftest import load_golden, requires_r, run_r_script

RTOL_EST = 1e-6
RTOL_SE = 1e-4
COVS = ["age", "female", "substance", "cesd", "homeless01"]
# R's coefficient names -> ours
R_TERMS = {
    "substancecocaine": "substance[T.cocaine]",
    "substanceheroin": "substance[T.heroin]",
}


@pytest.fixture(scope="module")
def uis(uis_path):
    return pd.read_csv(uis_path)


# --------------------------------------------------------------------------- IPTW vs R


def test_iptw_propensity_and_weights_match_r(help_cc):
    """R: glm(treat01 ~ age + female + substance + cesd + homeless01, family = binomial); weights
    p1/ps, (1-p1)/(1-ps) (stabilised ATE), 1/ps, 1/(1-ps), ATT and overlap (tests/r/causal_help.R)."""
    g = load_golden("causal_help")
    assert help_cc["rownames"].tolist() == g["rownames"]
    res = iptw(help_cc, treatment_col="treat01", covariates=COVS)
    assert isinstance(res, IptwResult)
    coef = res.tidy.set_index("term")
    for r_name, est, se in zip(g["ps_terms"], g["ps_coef"], g["ps_se"]):
        ours = R_TERMS.get(r_name, r_name)
        assert coef.loc[ours, "estimate"] == pytest.approx(est, rel=RTOL_EST)
        assert coef.loc[ours, "std_error"] == pytest.approx(se, rel=RTOL_SE)
    np.testing.assert_allclose(res.propensity, g["ps"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.weights, g["w_ate_s"], rtol=RTOL_EST)
    assert res.weights.index.equals(help_cc.index)
    for kwargs, key in (
        ({"stabilized": False}, "w_ate"),
        ({"estimand": "ATT"}, "w_att"),
        ({"estimand": "overlap"}, "w_overlap"),
    ):
        np.testing.assert_allclose(iptw(help_cc, treatment_col="treat01", covariates=COVS, **kwargs).weights, g[key], rtol=RTOL_EST)
    # formula interface gives the same weights
    res_f = iptw(help_cc, treatment_col="treat01", formula="age + female + C(substance) + cesd + homeless01")
    np.testing.assert_allclose(res_f.weights, g["w_ate_s"], rtol=RTOL_EST)


@pytest.mark.parametrize("key", ["cox_ate_s", "cox_att", "cox_overlap"])
def test_weighted_cox_matches_coxph_robust(help_cc, key):
    """R: coxph(Surv(daysanysub, anysubstatus) ~ treat01, weights = w, robust = TRUE) for the stabilised ATE,
    ATT and overlap weights."""
    g = load_golden("causal_help")
    estimand = {"cox_ate_s": "ATE", "cox_att": "ATT", "cox_overlap": "overlap"}[key]
    res = iptw(help_cc, treatment_col="treat01", covariates=COVS, estimand=estimand)
    d = res.weighted(help_cc, weights_col="w")
    # all complete HELP rows, including the 11 with daysanysub == 0 (at risk at time 0, as in R)
    cox = fit_cox(d, duration_col="daysanysub", event_col="anysubstatus", covariates=["treat01"], weights_col="w", robust=True)
    assert cox.tidy["estimate"].iloc[0] == pytest.approx(g[key]["coef"][0], rel=RTOL_EST)
    assert cox.tidy["std_error"].iloc[0] == pytest.approx(g[key]["se"][0], rel=RTOL_SE)
    assert cox.tidy["naive_std_error"].iloc[0] == pytest.approx(g[key]["naive_se"][0], rel=RTOL_SE)


def test_unweighted_cox_matches_coxph(help_cc):
    """R: coxph(Surv(daysanysub, anysubstatus) ~ treat01)."""
    g = load_golden("causal_help")["cox_unweighted"]
    cox = fit_cox(help_cc, duration_col="daysanysub", event_col="anysubstatus", covariates=["treat01"])
    assert cox.tidy["estimate"].iloc[0] == pytest.approx(g["coef"][0], rel=RTOL_EST)
    assert cox.tidy["std_error"].iloc[0] == pytest.approx(g["se"][0], rel=RTOL_SE)


def test_iptw_weights_feed_km_and_cif(help_cc):
    """R: summary(survfit(Surv(daysanysub, anysubstatus) ~ treat01, weights = w_ate_s), times = c(30, 90, 180)).
    The weights go into fit_km(weights_col=) unchanged; with one cause the weighted CIF is 1 - weighted KM."""
    from iop_research.survival.competing import cumulative_incidence
    from iop_research.survival.km import fit_km

    g = load_golden("causal_help")["km_weighted"]
    d = iptw(help_cc, treatment_col="treat01", covariates=COVS).weighted(help_cc, weights_col="w")
    km = fit_km(d, duration_col="daysanysub", event_col="anysubstatus", group_col="treat01", weights_col="w").tidy
    ours = []
    for grp in (0, 1):  # read the step function at 30, 90, 180 days
        sub = km[km["group"].astype(str) == str(grp)].sort_values("time")
        ours += [sub.loc[sub["time"] <= t, "survival"].iloc[-1] for t in (30, 90, 180)]
    np.testing.assert_allclose(ours, g["surv"], rtol=RTOL_EST)
    cif = cumulative_incidence(d, duration_col="daysanysub", event_col="anysubstatus", group_col="treat01", weights_col="w",
                               times=[30, 90, 180])
    np.testing.assert_allclose(cif.tidy["cumulative_incidence"], 1 - np.asarray(g["surv"]), rtol=RTOL_EST)


# --------------------------------------------------------------------------- diagnostics


def test_balance_smd_hand_computation(help_cc):
    res = iptw(help_cc, treatment_col="treat01", covariates=COVS)
    bal = res.balance
    assert tuple(bal.columns) == BALANCE_COLUMNS
    assert bal[["covariate", "level"]].apply(tuple, axis=1).tolist() == [
        ("age", ""), ("female", ""), ("substance", "alcohol"), ("substance", "cocaine"),
        ("substance", "heroin"), ("cesd", ""), ("homeless01", ""),
    ]
    a = help_cc["treat01"].to_numpy()
    w = res.weights.to_numpy()
    t, c = a == 1, a == 0
    # continuous: pooled sample SD with n-1
    x = help_cc["cesd"].to_numpy(float)
    sd = np.sqrt((x[t].var(ddof=1) + x[c].var(ddof=1)) / 2)
    row = bal[bal["covariate"] == "cesd"].iloc[0]
    assert row["smd_unweighted"] == pytest.approx((x[t].mean() - x[c].mean()) / sd, rel=1e-12)
    wm1 = (w[t] * x[t]).sum() / w[t].sum()
    wm0 = (w[c] * x[c]).sum() / w[c].sum()
    assert row["smd_weighted"] == pytest.approx((wm1 - wm0) / sd, rel=1e-12)
    assert row["mean_treated_weighted"] == pytest.approx(wm1, rel=1e-12)
    # binary (dummy of a category): p(1-p)
    x = (help_cc["substance"] == "cocaine").to_numpy(float)
    p1, p0 = x[t].mean(), x[c].mean()
    row = bal[(bal["covariate"] == "substance") & (bal["level"] == "cocaine")].iloc[0]
    assert row["smd_unweighted"] == pytest.approx((p1 - p0) / np.sqrt((p1 * (1 - p1) + p0 * (1 - p0)) / 2), rel=1e-12)
    # weighting improves balance: every |SMD| < 0.1 after weighting, the largest before was > 0.1
    assert bal["smd_weighted"].abs().max() < 0.1 < bal["smd_unweighted"].abs().max()
    assert res.glance["max_abs_smd_weighted"].iloc[0] == pytest.approx(bal["smd_weighted"].abs().max())


def test_positivity_table_and_ess(help_cc):
    res = iptw(help_cc, treatment_col="treat01", covariates=COVS)
    pos = res.positivity.set_index("group")
    assert tuple(res.positivity.columns) == POSITIVITY_COLUMNS
    a = help_cc["treat01"].to_numpy()
    ps = res.propensity.to_numpy()
    w = res.weights.to_numpy()
    assert pos.loc["treated", "n"] == (a == 1).sum()
    assert pos.loc["control", "ps_max"] == pytest.approx(ps[a == 0].max())
    assert pos.loc["treated", "ps_p5"] == pytest.approx(np.quantile(ps[a == 1], 0.05))
    wt = w[a == 1]
    assert pos.loc["treated", "ess"] == pytest.approx(wt.sum() ** 2 / (wt**2).sum())
    assert res.glance["ess_control"].iloc[0] == pytest.approx(pos.loc["control", "ess"])


def test_trim_and_truncate(help_cc):
    res = iptw(help_cc, treatment_col="treat01", covariates=COVS, trim=0.4)
    ps = res.propensity.to_numpy()
    out = (ps < 0.4) | (ps > 0.6)
    assert out.sum() > 0
    assert res.weights.isna().to_numpy().tolist() == out.tolist()
    att = res.extra["attrition"]
    assert att["n_excluded"].iloc[-1] == out.sum() and att["n_remaining"].iloc[-1] == (~out).sum()
    assert res.glance["n_trimmed"].iloc[0] == out.sum()
    kept = res.weighted(help_cc)
    assert len(kept) == (~out).sum() and "iptw" in kept.columns
    # stabilisation uses the prevalence among kept rows
    a = help_cc["treat01"].to_numpy()[~out]
    p1 = a.mean()
    np.testing.assert_allclose(kept["iptw"].to_numpy()[a == 1], p1 / ps[~out][a == 1])
    tr = iptw(help_cc, treatment_col="treat01", covariates=COVS, stabilized=False, truncate=0.05)
    raw = iptw(help_cc, treatment_col="treat01", covariates=COVS, stabilized=False).weights.to_numpy()
    lo, hi = np.quantile(raw, [0.05, 0.95])
    np.testing.assert_allclose(tr.weights, np.clip(raw, lo, hi))
    assert tr.glance["n_truncated"].iloc[0] == ((raw < lo) | (raw > hi)).sum()


def test_iptw_errors_and_purity(help_cc):
    before = help_cc.copy()
    iptw(help_cc, treatment_col="treat01", covariates=COVS)
    pd.testing.assert_frame_equal(help_cc, before)
    with pytest.raises(ModelSpecificationError, match="coded 0 \\(control\\) / 1"):
        iptw(help_cc, treatment_col="treat", covariates=COVS)
    with pytest.raises(ModelSpecificationError, match="exactly one of"):
        iptw(help_cc, treatment_col="treat01")
    with pytest.raises(ModelSpecificationError, match="estimand"):
        iptw(help_cc, treatment_col="treat01", covariates=COVS, estimand="ATC")
    bad = help_cc.astype({"cesd": float})
    bad.loc[bad.index[:2], "cesd"] = np.nan
    with pytest.raises(ModelSpecificationError, match=r"column 'cesd' \(covariate\) has 2 missing or infinite value\(s\) \(rows: 0, 1\)"):
        iptw(bad, treatment_col="treat01", covariates=COVS)
    sep = help_cc.assign(x=help_cc["treat01"] * 10.0)
    with pytest.raises(ModelSpecificationError, match="separation"):
        iptw(sep, treatment_col="treat01", covariates=["x", "age"])


# --------------------------------------------------------------------------- landmark


@pytest.mark.parametrize("landmark", [30, 90])
def test_landmark_matches_coxph(uis, landmark):
    """R: coxph(Surv(TIME - L, CENSOR) ~ in_tx + AGE + BECK, data = subset(u, TIME > L)), in_tx = LEN.T > L;
    and with cluster = SITE*1000 + TREAT*100 + AGE %/% 10 (robust) (tests/r/causal_landmark.R)."""
    g = load_golden("causal_landmark")[f"L{landmark}"]
    d = uis.assign(in_tx=(uis["LEN.T"] > landmark).astype(int))
    res = landmark_analysis(d, landmark_days=landmark, duration_col="TIME", event_col="CENSOR", exposure_col="in_tx", covariates=["AGE", "BECK"])
    assert res.tidy["term"].tolist()[0] == "in_tx"
    np.testing.assert_allclose(res.tidy["estimate"], g["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(res.tidy["std_error"], g["se"], rtol=RTOL_SE)
    assert res.glance["n_at_risk"].iloc[0] == g["n"] and res.glance["n_events"].iloc[0] == g["n_events"]
    exc = res.extra["excluded"]["n"].tolist()
    assert exc == [g["n_excluded_event"], g["n_excluded_censored"]]
    assert sum(exc) + g["n"] == len(uis)
    d = d.assign(cl=d["SITE"] * 1000 + d["TREAT"] * 100 + d["AGE"] // 10)
    rob = landmark_analysis(d, landmark_days=landmark, duration_col="TIME", event_col="CENSOR", exposure_col="in_tx",
                            covariates=["AGE", "BECK"], cluster_col="cl")
    np.testing.assert_allclose(rob.tidy["estimate"], g["robust_coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(rob.tidy["std_error"], g["robust_se"], rtol=RTOL_SE)


def test_landmark_clock_reset_frame(uis):
    d = uis.assign(in_tx=(uis["LEN.T"] > 30).astype(int))
    a = landmark_analysis(d, landmark_days=30, duration_col="TIME", event_col="CENSOR", exposure_col="in_tx")
    reset = d[d["TIME"] > 30].assign(since_l=lambda x: x["TIME"] - 30)
    b = landmark_analysis(reset, landmark_days=30, duration_col="since_l", event_col="CENSOR", exposure_col="in_tx", clock_reset=True)
    np.testing.assert_allclose(a.tidy["estimate"], b.tidy["estimate"], rtol=1e-12)
    assert b.glance["n_excluded"].iloc[0] == 0
    with pytest.raises(ModelSpecificationError, match="clock_reset=True"):
        landmark_analysis(d.assign(since_l=d["TIME"] - 30), landmark_days=30, duration_col="since_l", event_col="CENSOR",
                          exposure_col="in_tx", clock_reset=True)


# --------------------------------------------------------------------------- E-value


def test_evalue_published_examples():
    """VanderWeele & Ding (2017), Ann Intern Med 167:268: RR 3.9 (95% CI 1.8-8.7) -> E-values 7.26 and 3.0."""
    res = evalue(3.9, 1.8, 8.7)
    assert res.glance["evalue_estimate"].iloc[0] == pytest.approx(3.9 + np.sqrt(3.9 * 2.9), rel=1e-12)
    assert round(res.glance["evalue_estimate"].iloc[0], 2) == 7.26
    assert res.glance["evalue_ci"].iloc[0] == pytest.approx(3.0, rel=1e-12)  # 1.8 + sqrt(1.8 * 0.8) = 3
    # protective effect: invert; CI limit nearer the null is the upper one
    prot = evalue(1 / 3.9, 1 / 8.7, 1 / 1.8)
    assert prot.glance["evalue_estimate"].iloc[0] == pytest.approx(res.glance["evalue_estimate"].iloc[0])
    assert prot.glance["evalue_ci"].iloc[0] == pytest.approx(3.0)
    # CI including 1 -> 1
    assert evalue(1.4, 0.9, 2.2).glance["evalue_ci"].iloc[0] == 1.0
    assert np.isnan(evalue(1.4).glance["evalue_ci"].iloc[0])


def test_evalue_common_outcome_conversion():
    """Common outcome (EValue::evalues.HR(rare = FALSE)): RR = (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR))."""
    res = evalue(2.0, 1.5, 2.7, rare_outcome=False)
    rr = (1 - 0.5 ** np.sqrt(2.0)) / (1 - 0.5 ** np.sqrt(0.5))
    assert rr == pytest.approx(1.6125, abs=1e-4)  # hand computation: 0.62479 / 0.38745
    assert res.tidy["risk_ratio"].iloc[0] == pytest.approx(rr, rel=1e-12)
    assert res.glance["evalue_estimate"].iloc[0] == pytest.approx(rr + np.sqrt(rr * (rr - 1)), rel=1e-12)
    rr_lo = (1 - 0.5 ** np.sqrt(1.5)) / (1 - 0.5 ** np.sqrt(1 / 1.5))
    assert res.glance["evalue_ci"].iloc[0] == pytest.approx(rr_lo + np.sqrt(rr_lo * (rr_lo - 1)), rel=1e-12)
    with pytest.raises(ModelSpecificationError, match="does not contain"):
        evalue(2.0, 2.5, 3.0)
    with pytest.raises(ModelSpecificationError, match="positive"):
        evalue(-0.3)


# --------------------------------------------------------------------------- simulation


def _simulate(rng, n, beta, tau):
    u = rng.normal(size=n)
    a = rng.binomial(1, 1 / (1 + np.exp(-(-0.2 + 0.9 * u))))
    rate = 0.01 * np.exp(beta * a + 0.8 * u)
    t = rng.exponential(1 / rate)
    return pd.DataFrame({"days": np.minimum(t, tau), "event": (t <= tau).astype(int), "a": a, "u": u})


@pytest.mark.slow
def test_iptw_cox_covers_marginal_truth():
    """Confounded treatment (u raises both initiation and hazard). Truth: the marginal HR, i.e. the Cox
    estimate on a large counterfactual cohort where everyone is observed under both treatments (same
    administrative censoring at 180 days). Unweighted Cox is biased; IPTW Cox with the weights-known robust
    SE over-covers; iptw_cox's M-estimation SE covers within 93-97%."""
    rng = np.random.default_rng(20261127)
    beta, tau = np.log(0.6), 180.0
    big = 100_000
    u = rng.normal(size=big)
    rows = []
    for a in (0, 1):
        t = rng.exponential(1 / (0.01 * np.exp(beta * a + 0.8 * u)))
        rows.append(pd.DataFrame({"days": np.minimum(t, tau), "event": (t <= tau).astype(int), "a": a}))
    truth = fit_cox(pd.concat(rows, ignore_index=True), duration_col="days", event_col="event", covariates=["a"]).tidy["estimate"].iloc[0]
    covered, covered_m, naive_est, iptw_est, se_ratio = 0, 0, [], [], []
    reps = 200
    for _ in range(reps):
        d = _simulate(rng, 300, beta, tau)
        naive_est.append(fit_cox(d, duration_col="days", event_col="event", covariates=["a"]).tidy["estimate"].iloc[0])
        w = iptw(d, treatment_col="a", covariates=["u"]).weighted(d, weights_col="w")
        fit = fit_cox(w, duration_col="days", event_col="event", covariates=["a"], weights_col="w", robust=True).tidy.iloc[0]
        iptw_est.append(fit["estimate"])
        covered += fit["conf_low"] <= truth <= fit["conf_high"]
        m = iptw_cox(d, treatment_col="a", duration_col="days", event_col="event", covariates=["u"])
        assert m.tidy["estimate"].iloc[0] == pytest.approx(fit["estimate"], rel=1e-12)
        covered_m += m.tidy["conf_low"].iloc[0] <= truth <= m.tidy["conf_high"].iloc[0]
        se_ratio.append(m.glance["se_ratio"].iloc[0])
    coverage, coverage_m = covered / reps, covered_m / reps
    print(f"truth log HR {truth:.4f}; mean naive {np.mean(naive_est):.4f}; mean IPTW {np.mean(iptw_est):.4f}; "
          f"coverage robust {coverage:.3f}, M-estimation {coverage_m:.3f}; SD of estimates {np.std(iptw_est, ddof=1):.4f}; "
          f"mean SE ratio M/robust {np.mean(se_ratio):.3f}")
    assert 0.93 <= coverage_m <= 0.97  # issue 15: IPTW coverage with the M-estimation variance within 93-97%
    assert np.mean(naive_est) - truth > 0.2  # confounding pulls the unweighted estimate towards harm
    assert abs(np.mean(iptw_est) - truth) < 0.05
    assert 0.90 <= coverage <= 0.99


# --------------------------------------------------------------------------- live R


@requires_r
def test_live_r_causal_help(tmp_path):
    """Rscript --vanilla tests/r/causal_help.R <datasets_dir> <out_json> reproduces the committed JSON."""
    live = run_r_script("causal_help", tmp_path / "causal_help.json")
    committed = load_golden("causal_help")
    np.testing.assert_allclose(live["w_ate_s"], committed["w_ate_s"], rtol=RTOL_EST)
    np.testing.assert_allclose(live["cox_ate_s"]["se"], committed["cox_ate_s"]["se"], rtol=RTOL_SE)


@requires_r
def test_live_r_causal_landmark(tmp_path):
    """Rscript --vanilla tests/r/causal_landmark.R <datasets_dir> <out_json> reproduces the committed JSON."""
    live = run_r_script("causal_landmark", tmp_path / "causal_landmark.json")
    committed = load_golden("causal_landmark")
    np.testing.assert_allclose(live["L30"]["coef"], committed["L30"]["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(live["L90"]["robust_se"], committed["L90"]["robust_se"], rtol=RTOL_SE)
