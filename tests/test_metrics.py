"""Tests of iop_research.survival.metrics.

Concordance against R survival 3.5 (``tests/golden/concordance_metrics.json`` from
``tests/r/concordance_metrics.R``: ``concordance(Surv(time, status) ~ risk, reverse = TRUE,
timewt = "n" | "n/G2", weights, strata, cluster, ymax)`` on UIS, HELP and simulated data).
Time-dependent AUC and Brier scores against scikit-survival (``cumulative_dynamic_auc``,
``brier_score``, ``integrated_brier_score``), which is a test-only dependency.
Estimates 1e-6 relative, standard errors 1e-4.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from iop_research.exceptions import ModelSpecificationError
from iop_research.survival.cox import fit_cox
from iop_research.survival.km import fit_km
from iop_research.survival.metrics import (
    _km_pseudo_values,
    bootstrap_optimism,
    brier_score,
    calibrate_survival,
    concordance_index,
    split_train_test,
    time_dependent_auc,
)
from iop_research.survival.predict import predict_risk, predict_survival

RTOL_EST = 1e-6
RTOL_SE = 1e-4


@pytest.fixture(scope="module")
def uis(uis_path) -> pd.DataFrame:
    df = pd.read_csv(uis_path)
    df["r_int"] = df["NDT"] + 2 * df["IV"]
    df["r_cont"] = df["AGE"] + df["BECK"] / 100
    df["w_frac"] = 0.5 + (df["ID"] % 4) / 4
    df["cl"] = df["ID"] % 40
    return df


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return pd.read_csv(GOLDEN_DIR / "data" / "concordance_sim.csv")


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("concordance_metrics")


def cases(uis, help_path, sim):
    help_df = pd.read_csv(help_path).dropna(subset=["anysubstatus", "daysanysub"])
    u = dict(df=uis, duration_col="TIME", event_col="CENSOR")
    return {
        "uis_int": dict(u, risk_col="r_int"),
        "uis_cont": dict(u, risk_col="r_cont"),
        "uis_weights": dict(u, risk_col="r_cont", weights_col="w_frac"),
        "uis_strata": dict(u, risk_col="r_int", strata_col="SITE"),
        "uis_cluster": dict(u, risk_col="r_cont", cluster_col="cl"),
        "uis_ymax": dict(u, risk_col="r_cont", tau=365),
        "help": dict(df=help_df, duration_col="daysanysub", event_col="anysubstatus", risk_col="cesd"),
        "sim": dict(df=sim, duration_col="days", event_col="event", risk_col="risk"),
        "sim_all": dict(df=sim, duration_col="days", event_col="event", risk_col="risk", strata_col="site",
                        weights_col="w", cluster_col="patient", tau=300),
    }


@pytest.mark.parametrize("timewt,key", [("n", "harrell"), ("n/G2", "uno")])
def test_concordance_matches_r(uis, help_path, sim, golden, timewt, key):
    """R: concordance(Surv(time, status) ~ risk [+ strata(s)], weights, cluster, ymax, reverse = TRUE, timewt)."""
    for name, kw in cases(uis, help_path, sim).items():
        kw = dict(kw)
        df = kw.pop("df")
        res = concordance_index(df, timewt=timewt, **kw)
        r = golden[key][name]
        np.testing.assert_allclose(res.tidy["estimate"].iloc[0], r["c"][0], rtol=RTOL_EST, err_msg=name)
        np.testing.assert_allclose(res.tidy["std_error"].iloc[0], r["se"][0], rtol=RTOL_SE, err_msg=name)
        count = np.asarray(r["count"], dtype=float)
        count = count.sum(axis=0) if count.ndim == 2 else count
        g = res.glance.iloc[0]
        # reverse = TRUE: R's count columns are concordant, discordant, tied.x, tied.y, tied.xy
        np.testing.assert_allclose([g["concordant"], g["discordant"], g["tied_risk"]], count[:3], rtol=RTOL_EST,
                                   err_msg=name)


def test_harrell_equals_cox_glance(uis):
    """Harrell's C of the Cox linear predictor equals fit_cox's glance (R coxph()$concordance)."""
    fit = fit_cox(uis, duration_col="TIME", event_col="CENSOR", covariates=["AGE", "BECK", "NDT", "TREAT"])
    d = uis.assign(lp=predict_risk(fit)["estimate"].to_numpy())
    c = concordance_index(d, duration_col="TIME", event_col="CENSOR", risk_col="lp")
    np.testing.assert_allclose(c.tidy["estimate"].iloc[0], fit.glance["concordance"].iloc[0], rtol=1e-9)
    np.testing.assert_allclose(c.tidy["std_error"].iloc[0], fit.glance["concordance_se"].iloc[0], rtol=1e-6)


@requires_r
def test_r_golden_reproduces_live(tmp_path, golden):
    """Re-run tests/r/concordance_metrics.R and compare with the committed golden file."""
    live = run_r_script("concordance_metrics", tmp_path / "c.json")
    for key in ("harrell", "uno"):
        for name in golden[key]:
            np.testing.assert_allclose(live[key][name]["c"], golden[key][name]["c"], rtol=1e-12)


# ----------------------------------------------------------------------------- scikit-survival


@pytest.fixture(scope="module")
def uis_split(uis):
    train, test = split_train_test(uis, test_fraction=0.35, seed=11, stratify_col="CENSOR")
    fit = fit_cox(train, duration_col="TIME", event_col="CENSOR", covariates=["AGE", "BECK", "NDT", "TREAT", "IV"])
    test = test.reset_index(drop=True)
    test["lp"] = predict_risk(fit, test)["estimate"].to_numpy()
    return train, test, fit


def _y(df):
    from sksurv.util import Surv

    return Surv.from_arrays(event=df["CENSOR"].astype(bool).to_numpy(), time=df["TIME"].to_numpy(dtype=float))


def test_time_dependent_auc_matches_sksurv(uis_split):
    """scikit-survival: cumulative_dynamic_auc(y_train, y_test, lp, times)."""
    sksurv_metrics = pytest.importorskip("sksurv.metrics")
    train, test, _ = uis_split
    times = [60, 90, 180, 365]
    auc = time_dependent_auc(test, duration_col="TIME", event_col="CENSOR", risk_col="lp", times=times, train=train)
    ref, ref_mean = sksurv_metrics.cumulative_dynamic_auc(_y(train), _y(test), test["lp"].to_numpy(), times)
    np.testing.assert_allclose(auc.tidy["auc"], ref, rtol=RTOL_EST)
    np.testing.assert_allclose(auc.glance["mean_auc"].iloc[0], ref_mean, rtol=RTOL_EST)
    tied = test.assign(lp=np.round(test["lp"], 1))  # ties in the risk score
    a2 = time_dependent_auc(tied, duration_col="TIME", event_col="CENSOR", risk_col="lp", times=[90], train=train)
    r2, _ = sksurv_metrics.cumulative_dynamic_auc(_y(train), _y(tied), tied["lp"].to_numpy(), [90])
    np.testing.assert_allclose(a2.tidy["auc"], r2, rtol=RTOL_EST)


def test_brier_matches_sksurv(uis_split):
    """scikit-survival: brier_score and integrated_brier_score(y_train, y_test, S(t), times)."""
    sksurv_metrics = pytest.importorskip("sksurv.metrics")
    train, test, fit = uis_split
    times = [30, 60, 90, 120, 180, 270, 365]
    pred = predict_survival(fit, test, times=times)
    bs = brier_score(test, duration_col="TIME", event_col="CENSOR", predicted=pred, times=times, train=train)
    wide = pred.pivot(index="row", columns="time", values="survival").to_numpy()
    _, ref = sksurv_metrics.brier_score(_y(train), _y(test), wide, times)
    np.testing.assert_allclose(bs.tidy["brier"], ref, rtol=RTOL_EST)
    ibs = sksurv_metrics.integrated_brier_score(_y(train), _y(test), wide, times)
    np.testing.assert_allclose(bs.glance["integrated_brier"].iloc[0], ibs, rtol=RTOL_EST)


# ----------------------------------------------------------------------------- calibration


def test_pseudo_values_equal_brute_force_jackknife(sim):
    """Pseudo-observations n S(t) - (n-1) S_{-i}(t) against leave-one-out fit_km (= R survfit)."""
    d = sim.iloc[:80].reset_index(drop=True)
    t = 90.0
    fast = _km_pseudo_values(d["days"].to_numpy(float), d["event"].to_numpy(bool), t)
    s_all = fit_km(d, duration_col="days", event_col="event", times=[t]).extra["at_times"]["survival"].iloc[0]
    slow = []
    for i in range(len(d)):
        s_i = fit_km(d.drop(index=i), duration_col="days", event_col="event", times=[t]).extra["at_times"]["survival"].iloc[0]
        slow.append(len(d) * s_all - (len(d) - 1) * s_i)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)


def test_calibration_groups_are_km(uis_split):
    _, test, fit = uis_split
    pred = predict_survival(fit, test, times=[90])
    d = test.assign(s90=pred["survival"].to_numpy())
    cal = calibrate_survival(d, duration_col="TIME", event_col="CENSOR", predicted_col="s90", time=90, n_groups=5)
    assert list(cal.tidy.columns) == ["group", "n", "predicted", "observed", "conf_low", "conf_high"]
    assert cal.tidy["n"].sum() == len(d) and len(cal.tidy) == 5
    assert cal.tidy["predicted"].is_monotonic_increasing
    g1 = d.loc[d["s90"].rank(method="first") <= len(d) / 5]
    km = fit_km(g1, duration_col="TIME", event_col="CENSOR", times=[90]).extra["at_times"]
    np.testing.assert_allclose(cal.tidy["observed"].iloc[0], km["survival"].iloc[0], rtol=1e-12)
    assert 0 <= cal.glance["ici"].iloc[0] < 0.2
    assert {"predicted", "observed"} <= set(cal.extra["smooth"].columns)


def test_calibration_of_a_true_model_is_good():
    """Simulated exponential data and its true S(90): ICI small, groups near the diagonal."""
    rng = np.random.default_rng(5)
    n = 3000
    x = rng.normal(size=n)
    rate = np.exp(-5 + 0.8 * x)
    t = rng.exponential(1 / rate)
    c = rng.uniform(30, 400, n)
    d = pd.DataFrame({"days": np.minimum(t, c), "event": (t <= c).astype(int), "s90": np.exp(-rate * 90)})
    cal = calibrate_survival(d, duration_col="days", event_col="event", predicted_col="s90", time=90)
    assert cal.glance["ici"].iloc[0] < 0.02
    covered = (cal.tidy["conf_low"] <= cal.tidy["predicted"]) & (cal.tidy["predicted"] <= cal.tidy["conf_high"])
    assert covered.sum() >= 8  # 95% intervals of 10 groups
    np.testing.assert_allclose(cal.tidy["observed"], cal.tidy["predicted"], atol=0.1)


# ----------------------------------------------------------------------------- validation helpers


def test_split_and_bootstrap_optimism(uis):
    train, test = split_train_test(uis, test_fraction=0.25, seed=3, stratify_col="CENSOR")
    assert len(train) + len(test) == len(uis) and not set(train.index) & set(test.index)
    assert abs(test["CENSOR"].mean() - uis["CENSOR"].mean()) < 0.01
    tr2, te2 = split_train_test(uis, test_fraction=0.25, seed=3, group_col="cl")
    assert set(tr2["cl"]).isdisjoint(set(te2["cl"])) and te2["cl"].nunique() == 10
    cov = ["AGE", "BECK", "NDT", "TREAT", "IV", "RACE"]

    def fit_fn(d):
        return fit_cox(d, duration_col="TIME", event_col="CENSOR", covariates=cov)

    def metric_fn(f, d):
        lp = predict_risk(f, d)["estimate"].to_numpy()
        return concordance_index(d.assign(lp=lp), duration_col="TIME", event_col="CENSOR", risk_col="lp").tidy[
            "estimate"
        ].iloc[0]

    opt = bootstrap_optimism(uis, fit_fn=fit_fn, metric_fn=metric_fn, n_boot=12, seed=1)
    row = opt.tidy.iloc[0]
    assert row["n_boot"] == 12
    assert row["optimism"] > 0  # the apparent C of a fitted model is optimistic
    np.testing.assert_allclose(row["corrected"], row["apparent"] - row["optimism"])
    again = bootstrap_optimism(uis, fit_fn=fit_fn, metric_fn=metric_fn, n_boot=12, seed=1)
    assert again.tidy["corrected"].iloc[0] == row["corrected"]


def test_errors(uis):
    with pytest.raises(ModelSpecificationError, match="timewt"):
        concordance_index(uis, duration_col="TIME", event_col="CENSOR", risk_col="AGE", timewt="S")
    with pytest.raises(ModelSpecificationError, match="not found"):
        concordance_index(uis, duration_col="TIME", event_col="CENSOR", risk_col="nope")
    with pytest.raises(ModelSpecificationError, match="times must lie"):
        time_dependent_auc(uis, duration_col="TIME", event_col="CENSOR", risk_col="AGE", times=[99999])
    with pytest.raises(ModelSpecificationError, match="test_fraction"):
        split_train_test(uis, test_fraction=1.5, seed=1)
    with pytest.raises(ModelSpecificationError, match="predict_survival"):
        brier_score(uis, duration_col="TIME", event_col="CENSOR",
                    predicted=pd.DataFrame({"row": [0], "time": [5.0], "survival": [0.5]}), times=[30])


def test_calibration_plot(uis_split):
    import matplotlib.pyplot as plt

    from iop_research.present.diagnostics import plot_calibration

    _, test, fit = uis_split
    d = test.assign(s90=predict_survival(fit, test, times=[90])["survival"].to_numpy())
    cal = calibrate_survival(d, duration_col="TIME", event_col="CENSOR", predicted_col="s90", time=90, n_groups=5)
    ax = plot_calibration(cal)
    pts = [ln for ln in ax.get_lines() if ln.get_gid() == "groups"][0]
    np.testing.assert_allclose(np.asarray(pts.get_ydata(), dtype=float), cal.tidy["observed"])
    assert "90" in ax.get_xlabel()
    plt.close(ax.figure)


def test_auc_and_brier_match_sksurv_on_simulated_data(sim):
    """scikit-survival on simulated data with tied times and risks; censoring from a separate train half."""
    sksurv_metrics = pytest.importorskip("sksurv.metrics")
    from sksurv.util import Surv

    train, test = sim.iloc[:200].reset_index(drop=True), sim.iloc[200:].reset_index(drop=True)
    y = lambda d: Surv.from_arrays(event=d["event"].astype(bool).to_numpy(), time=d["days"].to_numpy(float))  # noqa: E731
    times = [20.0, 50.0, 100.0, 150.0]
    auc = time_dependent_auc(test, duration_col="days", event_col="event", risk_col="risk", times=times, train=train)
    ref, ref_mean = sksurv_metrics.cumulative_dynamic_auc(y(train), y(test), test["risk"].to_numpy(), times)
    np.testing.assert_allclose(auc.tidy["auc"], ref, rtol=RTOL_EST)
    np.testing.assert_allclose(auc.glance["mean_auc"].iloc[0], ref_mean, rtol=RTOL_EST)
    fit = fit_cox(train, duration_col="days", event_col="event", covariates=["risk", "site"])
    pred = predict_survival(fit, test, times=times)
    bs = brier_score(test, duration_col="days", event_col="event", predicted=pred, times=times, train=train)
    wide = pred.pivot(index="row", columns="time", values="survival").to_numpy()
    _, ref_bs = sksurv_metrics.brier_score(y(train), y(test), wide, times)
    np.testing.assert_allclose(bs.tidy["brier"], ref_bs, rtol=RTOL_EST)
    np.testing.assert_allclose(bs.glance["integrated_brier"].iloc[0],
                               sksurv_metrics.integrated_brier_score(y(train), y(test), wide, times), rtol=RTOL_EST)
