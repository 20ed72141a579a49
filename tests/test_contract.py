"""The result contract and the validation policy, checked over every public estimator.

1. ``test_result_contract``: every public estimator returns a :class:`~iop_research.results.Result`
   whose ``tidy``, ``glance`` and ``extra`` tables are read-only (mutation raises
   :class:`~iop_research.exceptions.ReadOnlyResultError`, the arrays behind them are not
   writeable), whose column names are fixed (the same whatever the options), who count events
   as ``n_events`` (never ``events``/``n_event``), whose ``glance`` is one row or one row per
   group with a leading ``group`` column, whose coefficient tables carry ``term, label`` and
   whose ``repr``/``_repr_html_`` show every group and the headline numbers.
2. ``test_same_fault_same_error``: the same bad input raises the same exception class
   (:class:`~iop_research.exceptions.EstimatorInputError`) with the same message shape from
   every estimator that takes that column.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import pytest

import iop_research.designs as designs
import iop_research.longitudinal as longitudinal
import iop_research.survival as survival
from iop_research.designs.causal import BALANCE_COLUMNS, POSITIVITY_COLUMNS, iptw, landmark_analysis, evalue
from iop_research.designs.adjusted import adjusted_survival
from iop_research.designs.iptw_cox import iptw_cox
from iop_research.designs.msm import MSM_GLANCE_COLUMNS, msm_cox
from iop_research.longitudinal.programmes import PROGRAMME_RATE_COLUMNS, programme_rates
from iop_research.designs.matching import MATCH_BALANCE_COLUMNS, MATCH_GLANCE_COLUMNS, ps_match
from iop_research.survival.metrics import (
    bootstrap_optimism,
    brier_score,
    calibrate_survival,
    concordance_index,
    time_dependent_auc,
)
from iop_research.survival.predict import predict_survival
from iop_research.designs.ccw import (
    CCW_GLANCE_COLUMNS,
    CCW_TIDY_COLUMNS,
    SUSTAINED_GLANCE_COLUMNS,
    clone_censor_weight,
    sustained_treatment,
)
from iop_research.exceptions import EstimatorInputError, IopError, ReadOnlyResultError
from iop_research.results import (
    GLANCE_TEST_COLUMNS,
    TIDY_COX_COLUMNS,
    TIDY_KM_COLUMNS,
    TIDY_TERM_COLUMNS,
    ReadOnlyFrame,
    Result,
)
from iop_research.survival.competing import (
    TIDY_CIF_COLUMNS,
    cumulative_incidence,
    fit_cause_specific,
    fit_fine_gray,
    gray_test,
)
from iop_research.longitudinal.gee import GLANCE_GEE_COLUMNS, TIDY_GEE_COLUMNS, fit_gee
from iop_research.longitudinal.glmm import GLANCE_GLMM_COLUMNS, RANEF_COLUMNS, TIDY_GLMM_COLUMNS, fit_glmm
from iop_research.survival.cox import COX_GLANCE_COLUMNS, COX_TIDY_COLUMNS, PH_TIDY_COLUMNS, fit_cox, ph_test
from iop_research.survival.frailty import FRAILTY_COLUMNS, FRAILTY_GLANCE_COLUMNS, fit_frailty
from iop_research.survival.interval import TURNBULL_COLUMNS, fit_interval_aft, fit_turnbull
from iop_research.survival.km import fit_km, logrank_test, rmst

from msm_sim import simulate_msm


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 120
    g = rng.choice(["a", "b"], n)
    x = rng.normal(0, 1, n)
    t = np.ceil(rng.exponential(50 / np.exp(0.4 * x + 0.3 * (g == "b")), n))
    c = np.ceil(rng.uniform(10, 150, n))
    e = (t <= c).astype(int)
    days = np.minimum(t, c)
    return pd.DataFrame({
        "days": days, "event": e, "cause": np.where(e == 1, rng.choice([1, 2], n, p=[0.7, 0.3]), 0),
        "group": g, "x": x, "sex": rng.choice(["f", "m"], n), "w": rng.uniform(0.5, 2, n).round(2),
        "id": np.arange(n) // 2, "strat": rng.choice(["s1", "s2"], n), "treat": rng.binomial(1, 0.5, n),
        "start": 0.0, "entry": np.where(rng.random(n) < 0.2, 1.0, 0.0),
        "lo": np.floor(days / 7) * 7, "hi": np.where(e == 1, np.floor(days / 7) * 7 + 7, np.inf),
        # day the exposure changed after day 10 (landmark_analysis's per-protocol IPCW), NaN = never
        "switch": np.where((days > 15) & (rng.random(n) < 0.4), np.minimum(days, 11 + rng.integers(0, 30, n)), np.nan),
    })


D = _frame()
_MSM = simulate_msm(np.random.default_rng(5), 150)
COVS = ["x", "sex"]


@dataclass
class Case:
    fit: Callable[..., Result]
    tidy: tuple
    glance: tuple
    options: list = field(default_factory=lambda: [{}])
    grouped: bool = False
    counts_events: bool = True
    headline: tuple = ()


def _cox(**k):
    return fit_cox(D, **{"duration_col": "days", "event_col": "event", "covariates": COVS, **k})


def _risk_frame():
    """D with a Cox model's risk score and predicted survival at day 40 (for the metrics)."""
    fit = fit_cox(D, duration_col="days", event_col="event", covariates=["x"])
    pred = predict_survival(fit, D, times=[20, 40])
    s40 = pred[pred["time"] == 40].sort_values("row")["survival"].to_numpy()
    return D.assign(risk=D["x"] * float(fit.tidy["estimate"].iloc[0]), p40=s40), pred


DR, PRED = _risk_frame()


def _c_of(fit, df):
    """C index of a fitted Cox model on df (for bootstrap_optimism)."""
    risk = df["x"] * float(fit.tidy["estimate"].iloc[0])
    res = concordance_index(df.assign(risk=risk), duration_col="days", event_col="event", risk_col="risk")
    return float(res.tidy["estimate"].iloc[0])


def _ccw(d, **k):
    """clone_censor_weight on D: one row per person (pid), MOUD started on day 3 by the treated."""
    if isinstance(d, pd.DataFrame):
        d = d.assign(pid=np.arange(len(d)), moud=np.where(d["treat"] == 1, np.minimum(d["days"], 3), np.nan))
    return clone_censor_weight(d, **{"id_col": "pid", "time_col": "days", "event_col": "event",
                                     "treatment_time_col": "moud", "grace_days": 7, "covariates": COVS,
                                     "horizon_days": 60, "n_bootstrap": 5, "seed": 1, **k})


def _sustained(d, **k):
    """sustained_treatment on D: the treated stop on day 3, the others continue."""
    if isinstance(d, pd.DataFrame):
        d = d.assign(pid=np.arange(len(d)), stop=np.where(d["treat"] == 1, np.minimum(d["days"], 3), np.nan))
    return sustained_treatment(d, **{"id_col": "pid", "time_col": "days", "event_col": "event",
                                     "stop_time_col": "stop", "sustain_days": 10, "stop_grace_days": 5,
                                     "covariates": COVS, "horizon_days": 60, "n_bootstrap": 5, "seed": 1, **k})


CASES = {
    "fit_km": Case(
        lambda **k: fit_km(D, **{"duration_col": "days", "event_col": "event", "group_col": "group", **k}),
        TIDY_KM_COLUMNS, ("group", "n", "n_weighted", "n_events"),
        [{}, {"conf_type": "log-log", "weights_col": "w", "times": [10, 30]}, {"entry_col": "entry"}],
        grouped=True, headline=("median", "n_events")),
    "logrank_test": Case(
        lambda **k: logrank_test(D, **{"duration_col": "days", "event_col": "event", "group_col": "group", **k}),
        ("group", "n", "observed", "expected", "o_minus_e", "variance"), GLANCE_TEST_COLUMNS,
        [{}, {"strata_col": "strat", "rho": 1.0}, {"trend": True, "weights_col": "w"}],
        counts_events=False, headline=GLANCE_TEST_COLUMNS),
    "rmst": Case(
        lambda **k: rmst(D, **{"duration_col": "days", "event_col": "event", "tau": 60, **k}),
        TIDY_TERM_COLUMNS, ("tau", "n", "n_events"), [{}, {"group_col": "group", "conf_level": 0.9}],
        headline=("estimate",)),
    "fit_cox": Case(
        _cox, COX_TIDY_COLUMNS, COX_GLANCE_COLUMNS,
        [{}, {"robust": True, "ties": "breslow"}, {"strata_col": "strat", "weights_col": "w", "cluster_col": "id"},
         {"covariates": None, "formula": "x * sex"}],
        headline=("hazard_ratio", "hr_conf_low")),
    "fit_frailty": Case(
        lambda **k: fit_frailty(D, **{"duration_col": "days", "event_col": "event", "covariates": COVS,
                                      "cluster_col": "id", **k}),
        TIDY_COX_COLUMNS, FRAILTY_GLANCE_COLUMNS, [{}, {"ties": "breslow", "theta": 0.5}, {"cluster_col": "strat"}],
        headline=("hazard_ratio", "hr_conf_low")),
    "fit_gee": Case(
        lambda **k: fit_gee(D, **{"formula": "event ~ x + sex", "id_col": "id", **k}), TIDY_GEE_COLUMNS,
        GLANCE_GEE_COLUMNS, [{}, {"corstr": "ar1"}, {"corstr": "independence", "weights_col": "w"}],
        counts_events=False, headline=("estimate",)),
    "fit_glmm": Case(
        lambda **k: fit_glmm(D, **{"formula": "event ~ x + sex", "group_col": "strat", **k}),
        TIDY_GLMM_COLUMNS["binomial"], GLANCE_GLMM_COLUMNS, [{}, {"nagq": 5}, {"group_col": "id"}, {"profile": True}],
        counts_events=False, headline=("estimate",)),
    "ph_test": Case(
        lambda **k: ph_test(_cox(), **k), PH_TIDY_COLUMNS, GLANCE_TEST_COLUMNS,
        [{}, {"transform": "rank"}], counts_events=False, headline=GLANCE_TEST_COLUMNS),
    "cumulative_incidence": Case(
        lambda **k: cumulative_incidence(D, **{"duration_col": "days", "event_col": "cause", "group_col": "group",
                                              **k}),
        TIDY_CIF_COLUMNS, ("n", "n_groups", "n_causes", "n_events", "n_censored"),
        [{}, {"weights_col": "w", "times": [10, 30]}, {"group_col": None}], headline=("n_events",)),
    "gray_test": Case(
        lambda **k: gray_test(D, **{"duration_col": "days", "event_col": "cause", "group_col": "group", **k}),
        ("cause", "statistic", "df", "p_value"), GLANCE_TEST_COLUMNS, [{}, {"strata_col": "strat", "cause": 2}],
        counts_events=False, headline=GLANCE_TEST_COLUMNS),
    "fit_fine_gray": Case(
        lambda **k: fit_fine_gray(D, **{"duration_col": "days", "event_col": "cause", "covariates": COVS, **k}),
        TIDY_COX_COLUMNS, ("n", "n_events", "n_competing", "n_censored", "loglik", "loglik_null", "iterations"),
        [{}, {"covariates": None, "formula": "x + C(sex)", "cause": 2}], headline=("hazard_ratio",)),
    "fit_cause_specific": Case(
        lambda **k: fit_cause_specific(D, **{"duration_col": "days", "event_col": "cause", "cause": 1,
                                            "covariates": COVS, **k}),
        COX_TIDY_COLUMNS, COX_GLANCE_COLUMNS, [{}, {"weights_col": "w", "robust": True}],
        headline=("hazard_ratio",)),
    "fit_turnbull": Case(
        lambda **k: fit_turnbull(D, **{"lower_col": "lo", "upper_col": "hi", "group_col": "group", **k}),
        TURNBULL_COLUMNS,
        ("group", "n", "n_events", "n_exact", "n_interval", "n_right_censored", "n_intervals", "iterations",
         "converged", "loglik"),
        [{}, {"group_col": None}], grouped=True, headline=("n_events",)),
    "fit_interval_aft": Case(
        lambda **k: fit_interval_aft(D, **{"lower_col": "lo", "upper_col": "hi", "covariates": COVS, **k}),
        TIDY_TERM_COLUMNS + ("time_ratio",),
        ("distribution", "n", "n_events", "n_exact", "n_interval", "n_right_censored", "n_left_censored", "loglik",
         "scale", "aic", "iterations", "converged"),
        [{}, {"distribution": "loglogistic"}, {"covariates": ()}], headline=("estimate",)),
    "iptw": Case(
        lambda **k: iptw(D, **{"treatment_col": "treat", "covariates": COVS, **k}),
        TIDY_TERM_COLUMNS,
        ("estimand", "stabilized", "n", "n_treated", "n_control", "n_trimmed", "n_truncated", "ess_treated",
         "ess_control", "max_abs_smd_unweighted", "max_abs_smd_weighted"),
        [{}, {"estimand": "ATT", "trim": 0.05}, {"covariates": None, "formula": "x + C(sex)", "truncate": 0.01}],
        counts_events=False, headline=("estimate",)),
    "landmark_analysis": Case(
        lambda **k: landmark_analysis(D, **{"landmark_days": 10, "duration_col": "days", "event_col": "event",
                                           "exposure_col": "treat", "covariates": ["x"], **k}),
        COX_TIDY_COLUMNS, ("landmark_days", "n_at_risk", "n_events", "n_excluded", "n_censored_at_switch",
                           "max_weight"),
        [{}, {"weights_col": "w", "cluster_col": "id"}, {"switch_col": "switch", "cluster_col": "id"}],
        headline=("hazard_ratio",)),
    "evalue": Case(
        lambda **k: evalue(**{"hazard_ratio": 0.6, "conf_low": 0.4, "conf_high": 0.9, **k}),
        ("quantity", "hazard_ratio", "risk_ratio", "evalue"), ("evalue_estimate", "evalue_ci"),
        [{}, {"rare_outcome": False}, {"conf_low": None, "conf_high": None}], counts_events=False,
        headline=("evalue_estimate",)),
    "concordance_index": Case(
        lambda **k: concordance_index(DR, **{"duration_col": "days", "event_col": "event", "risk_col": "risk", **k}),
        ("statistic", "estimate", "std_error", "conf_low", "conf_high"), ("n", "concordant", "discordant", "tied_risk"),
        [{}, {"timewt": "n/G2"}, {"weights_col": "w", "strata_col": "strat"}], counts_events=False),
    "time_dependent_auc": Case(
        lambda **k: time_dependent_auc(DR, **{"duration_col": "days", "event_col": "event", "risk_col": "risk",
                                             "times": [20, 40], **k}),
        ("time", "auc"), ("mean_auc",), [{}], counts_events=False),
    "brier_score": Case(
        lambda **k: brier_score(DR, **{"duration_col": "days", "event_col": "event", "predicted": PRED,
                                      "times": [20, 40], **k}),
        tuple(brier_score(DR, duration_col="days", event_col="event", predicted=PRED, times=[20, 40]).tidy.columns),
        tuple(brier_score(DR, duration_col="days", event_col="event", predicted=PRED, times=[20, 40]).glance.columns),
        [{}], counts_events=False),
    "calibrate_survival": Case(
        lambda **k: calibrate_survival(DR, **{"duration_col": "days", "event_col": "event", "predicted_col": "p40",
                                             "time": 40, "n_groups": 4, **k}),
        ("group", "n", "predicted", "observed", "conf_low", "conf_high"), ("time", "ici", "error_p50", "error_p90"),
        [{}, {"n_groups": 3}], counts_events=False),
    "bootstrap_optimism": Case(
        lambda **k: bootstrap_optimism(D, **{"fit_fn": lambda df: fit_cox(df, duration_col="days", event_col="event",
                                                                          covariates=["x"]),
                                            "metric_fn": _c_of, "n_boot": 5, "seed": 1, **k}),
        ("apparent", "optimism", "corrected", "n_boot"), ("n_failed",), [{}], counts_events=False),
    "adjusted_survival": Case(
        lambda **k: adjusted_survival(D, **{"exposure_col": "treat", "covariates": ["x"], "duration_col": "days",
                                           "event_col": "event", "times": [20, 40], "n_boot": 5, "seed": 1, **k}),
        ("exposure", "time", "survival", "std_error", "conf_low", "conf_high"),
        ("method", "n", "n_events", "n_boot", "n_boot_failed", "tau"), [{}, {"method": "iptw"}]),
    "iptw_cox": Case(
        lambda **k: iptw_cox(D, **{"treatment_col": "treat", "duration_col": "days", "event_col": "event",
                                  "covariates": ["x"], **k}),
        COX_TIDY_COLUMNS, ("n", "n_events", "estimand", "stabilized", "se_ratio"),
        [{}, {"estimand": "ATT"}, {"cluster_col": "id"}]),
    "msm_cox": Case(
        lambda **k: msm_cox(_MSM, **{"id_col": "pid", "start_col": "start", "stop_col": "stop", "event_col": "event",
                                    "treatment_col": "on_mat", "treatment_covariates": ["mat_last_week",
                                                                                          "positive_screen"],
                                    "stabilizing_covariates": ["mat_last_week"], **k}),
        COX_TIDY_COLUMNS, MSM_GLANCE_COLUMNS, [{}, {"truncate": 0.01}], headline=("hazard_ratio",)),
    "programme_rates": Case(
        lambda **k: programme_rates(D, **{"programme_col": "strat", "outcome_col": "treat", "covariates": ["x"], **k}),
        PROGRAMME_RATE_COLUMNS, ("n", "n_programmes", "n_events", "overall_rate"),
        [{}, {"covariates": (), "conf_level": 0.9}], counts_events=False),
    "ps_match": Case(
        lambda **k: ps_match(D, **{"treatment_col": "treat", "covariates": ["x", "sex"], **k}),
        MATCH_BALANCE_COLUMNS, MATCH_GLANCE_COLUMNS, [{}, {"ratio": 2, "replace": True}], counts_events=False),
    "clone_censor_weight": Case(
        lambda **k: _ccw(D, **k), CCW_TIDY_COLUMNS, CCW_GLANCE_COLUMNS,
        [{}, {"n_bootstrap": 0, "deviation_time": "quadratic", "covariates": []}], headline=("risk_difference",)),
    "sustained_treatment": Case(
        lambda **k: _sustained(D, **k), CCW_TIDY_COLUMNS, SUSTAINED_GLANCE_COLUMNS,
        [{}, {"n_bootstrap": 0, "deviation_time": "constant"}], headline=("risk_difference",)),
}

#: per-estimator extra tables with fixed columns
EXTRA_COLUMNS = {
    ("fit_km", "medians"): ("group", "median", "conf_low", "conf_high"),
    ("iptw", "balance"): BALANCE_COLUMNS,
    ("iptw", "positivity"): POSITIVITY_COLUMNS,
    ("cumulative_incidence", "events"): ("group", "cause", "n", "n_events"),
    ("fit_frailty", "frailties"): FRAILTY_COLUMNS,
    ("fit_glmm", "random_effects"): RANEF_COLUMNS,
}


#: public functions that return numbers or tables, not a Result: balance diagnostics; prediction,
#: residuals and data splitting after a fit (tested against R in test_predict / test_residuals /
#: test_metrics)
NOT_ESTIMATORS = {"standardized_difference", "standardized_mean_difference", "baseline_hazard", "predict_survival",
                  "predict_risk", "predict_cif", "cox_residuals", "split_train_test", "funnel_limits"}


def test_every_public_estimator_is_covered():
    public = (set(survival.__all__) | set(longitudinal.__all__) | {n for n in designs.__all__ if n[0].islower()}
              ) - NOT_ESTIMATORS
    assert public == set(CASES)


def _assert_read_only(name: str, table: pd.DataFrame) -> None:
    assert isinstance(table, ReadOnlyFrame), name
    before = table.copy()
    col, row = table.columns[0], table.index[0]
    for mutate in (
        lambda t: t.__setitem__("new", 1),
        lambda t: t.__setitem__(col, 1),
        lambda t: t.loc.__setitem__((row, col), 1),
        lambda t: t.iloc.__setitem__((0, 0), 1),
        lambda t: t.at.__setitem__((row, col), 1),
        lambda t: t.iat.__setitem__((0, 0), 1),
        lambda t: t.insert(0, "new", 1),
        lambda t: t.pop(col),
        lambda t: t.drop(columns=[col], inplace=True),
        lambda t: t.sort_values(col, inplace=True),
        lambda t: t.reset_index(drop=True, inplace=True),
        lambda t: setattr(t, "columns", [f"c{i}" for i in range(t.shape[1])]),
        lambda t: t.__delitem__(col),
    ):
        with pytest.raises(ReadOnlyResultError):
            mutate(table)
    num = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and table[c].dtype != bool]
    for c in num[:2]:
        arr = table[c].to_numpy()
        assert not arr.flags.writeable, (name, c)
        with pytest.raises(ValueError):
            arr[0] = 12345.0
    pd.testing.assert_frame_equal(pd.DataFrame(table), before)
    # what is derived from a result table is an ordinary, writable frame
    copy = table.copy()
    copy.loc[row, col] = copy.loc[row, col]
    assert type(copy) is pd.DataFrame and type(table.head()) is pd.DataFrame


@pytest.mark.parametrize("name", list(CASES))
def test_result_contract(name):
    case = CASES[name]
    results = [case.fit(**opts) for opts in case.options]
    for res in results:
        assert isinstance(res, Result)
        # fixed column names, whatever the options
        assert tuple(res.tidy.columns) == tuple(case.tidy), name
        assert tuple(res.glance.columns) == tuple(case.glance), name
        for (est, key), cols in EXTRA_COLUMNS.items():
            if est == name and key in res.extra:
                assert tuple(res.extra[key].columns) == tuple(cols)
        # n_events everywhere
        tables = {"tidy": res.tidy, "glance": res.glance, **dict(res.extra)}
        for tname, table in tables.items():
            if isinstance(table, pd.DataFrame):
                assert not {"events", "n_event", "nevent", "n.event"} & {str(c) for c in table.columns}, (name, tname)
        if case.counts_events:
            assert "n_events" in res.glance.columns, name
        # coefficient tables carry term and label
        if "estimate" in res.tidy.columns and "term" in res.tidy.columns:
            assert list(res.tidy.columns[:2]) == ["term", "label"]
            assert res.tidy["label"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
        # glance: one row, or one row per group with a leading group column
        if case.grouped:
            assert res.glance.columns[0] == "group" and res.glance["group"].is_unique
            assert res.is_grouped
        else:
            assert len(res.glance) == 1 and "group" not in res.glance.columns and not res.is_grouped
        # read-only tables
        for tname, table in tables.items():
            if isinstance(table, pd.DataFrame) and len(table) and len(table.columns):
                _assert_read_only(f"{name}.{tname}", table)
        with pytest.raises((AttributeError, TypeError)):
            res.tidy = pd.DataFrame()
        # repr and HTML show the headline numbers and every group
        text, page = repr(res), res._repr_html_()
        assert res.method in text and "<table" in page
        for col in case.headline:
            assert col in res.summary().columns or col in text, (name, col)
            assert col in page, (name, col)
        if case.grouped:
            for g in res.glance["group"]:
                assert str(g) in text and f"<td>{g}</td>" in page
        assert type(res.summary()) is pd.DataFrame


def test_headlines():
    km = CASES["fit_km"].fit()
    s = km.summary()
    assert list(s.columns) == ["group", "n", "n_events", "median", "median_conf_low", "median_conf_high"]
    assert s["group"].tolist() == ["a", "b"]
    np.testing.assert_allclose(s["median"], km.medians["median"])
    cox = CASES["fit_cox"].fit()
    assert list(cox.summary().columns) == ["term", "label", "hazard_ratio", "hr_conf_low", "hr_conf_high", "p_value"]
    lr = CASES["logrank_test"].fit()
    assert list(lr.summary().columns) == list(GLANCE_TEST_COLUMNS)


def test_result_pickles_and_stays_read_only():
    import pickle

    res = CASES["iptw"].fit()
    back = pickle.loads(pickle.dumps(res))
    assert type(back) is type(res) and isinstance(back.tidy, ReadOnlyFrame)
    pd.testing.assert_frame_equal(pd.DataFrame(back.tidy), pd.DataFrame(res.tidy))
    pd.testing.assert_series_equal(back.weights, res.weights)
    with pytest.raises(ReadOnlyResultError):
        back.balance["smd_weighted"] = 0.0
    assert type(pickle.loads(pickle.dumps(res.tidy))) is pd.DataFrame  # a pickled table is the user's copy


# ----------------------------------------------------------------------------- one validation policy

#: estimator -> call with the columns it takes, and which column plays each role
S = {
    "fit_km": (lambda d, **k: fit_km(d, **{"duration_col": "days", "event_col": "event", "group_col": "group",
                                          "weights_col": "w", **k}),
               {"duration": "days", "event": "event", "group": "group", "weights": "w", "first": "duration_col"}),
    "logrank_test": (lambda d, **k: logrank_test(d, **{"duration_col": "days", "event_col": "event",
                                                      "group_col": "group", "weights_col": "w", **k}),
                     {"duration": "days", "event": "event", "group": "group", "weights": "w", "first": "duration_col"}),
    "rmst": (lambda d, **k: rmst(d, **{"duration_col": "days", "event_col": "event", "group_col": "group", "tau": 40,
                                       **k}),
             {"duration": "days", "event": "event", "group": "group", "first": "duration_col"}),
    "fit_cox": (lambda d, **k: fit_cox(d, **{"duration_col": "days", "event_col": "event", "covariates": COVS,
                                            "weights_col": "w", "cluster_col": "id", **k}),
                {"duration": "days", "event": "event", "covariate": "x", "weights": "w", "cluster": "id",
                 "first": "duration_col"}),
    "fit_frailty": (lambda d, **k: fit_frailty(d, **{"duration_col": "days", "event_col": "event", "covariates": COVS,
                                                    "cluster_col": "id", "theta": 0.5, **k}),
                    {"duration": "days", "event": "event", "covariate": "x", "cluster": "id",
                     "first": "duration_col"}),
    "cumulative_incidence": (lambda d, **k: cumulative_incidence(d, **{"duration_col": "days", "event_col": "cause",
                                                                      "group_col": "group", "weights_col": "w", **k}),
                             {"duration": "days", "codes": "cause", "group": "group", "weights": "w",
                              "first": "duration_col"}),
    "gray_test": (lambda d, **k: gray_test(d, **{"duration_col": "days", "event_col": "cause", "group_col": "group",
                                                **k}),
                  {"duration": "days", "codes": "cause", "group": "group", "first": "duration_col"}),
    "fit_fine_gray": (lambda d, **k: fit_fine_gray(d, **{"duration_col": "days", "event_col": "cause",
                                                        "covariates": COVS, **k}),
                      {"duration": "days", "codes": "cause", "covariate": "x", "first": "duration_col"}),
    "fit_cause_specific": (lambda d, **k: fit_cause_specific(d, **{"duration_col": "days", "event_col": "cause",
                                                                  "cause": 1, "covariates": COVS, "weights_col": "w",
                                                                  "cluster_col": "id", **k}),
                           {"duration": "days", "codes": "cause", "covariate": "x", "weights": "w", "cluster": "id",
                            "first": "duration_col"}),
    "fit_turnbull": (lambda d, **k: fit_turnbull(d, **{"lower_col": "lo", "upper_col": "hi", "group_col": "group",
                                                      **k}),
                     {"lower": "lo", "group": "group", "first": "lower_col"}),
    "fit_interval_aft": (lambda d, **k: fit_interval_aft(d, **{"lower_col": "lo", "upper_col": "hi",
                                                              "covariates": COVS, **k}),
                         {"lower": "lo", "covariate": "x", "first": "lower_col"}),
    "iptw": (lambda d, **k: iptw(d, **{"treatment_col": "treat", "covariates": COVS, **k}),
             {"treatment": "treat", "covariate": "x", "first": "treatment_col"}),
    "landmark_analysis": (lambda d, **k: landmark_analysis(d, **{"landmark_days": 5, "duration_col": "days",
                                                                "event_col": "event", "exposure_col": "treat",
                                                                "covariates": ["x"], "weights_col": "w",
                                                                "cluster_col": "id", **k}),
                          {"duration": "days", "event": "event", "covariate": "x", "weights": "w", "cluster": "id",
                           "treatment": "treat", "first": "duration_col"}),
    "clone_censor_weight": (_ccw, {"duration": "days", "event": "event", "covariate": "x", "first": "time_col"}),
    "sustained_treatment": (_sustained, {"duration": "days", "event": "event", "covariate": "x",
                                         "first": "time_col"}),
}
ROWS = [3, 7]


def _set(col, value):
    def change(d):
        d = d.copy()
        if value is None and pd.api.types.is_integer_dtype(d[col]):
            d[col] = d[col].astype(float)
        d.loc[ROWS, col] = np.nan if value is None else value
        return d
    return change


def _column_shape(role_name, problem):
    return lambda func, col: (rf"^{func}: column '{col}' \({role_name}\) has 2 {re.escape(problem)} "
                              rf"\(rows: 3, 7\)\. [A-Z]")


#: fault -> (role it needs, how to break the column, expected check, message pattern)
FAULTS = {
    "nan_duration": ("duration", lambda c: _set(c, None), "missing",
                     _column_shape("duration", "missing or infinite value(s)")),
    "negative_duration": ("duration", lambda c: _set(c, -1.0), "negative",
                          _column_shape("duration", "negative value(s)")),
    "event_not_binary": ("event", lambda c: _set(c, 2), "not_binary",
                         _column_shape("event", "value(s) other than 0/1 (it must hold only 0/1 or bool)")),
    "event_missing": ("event", lambda c: _set(c, None), "missing", _column_shape("event", "missing value(s)")),
    "codes_missing": ("codes", lambda c: _set(c, None), "missing", _column_shape("event", "missing value(s)")),
    "negative_weight": ("weights", lambda c: _set(c, -0.5), "negative",
                        _column_shape("case weights", "negative value(s)")),
    "nan_weight": ("weights", lambda c: _set(c, None), "missing",
                   _column_shape("case weights", "missing or infinite value(s)")),
    "missing_group": ("group", lambda c: _set(c, None), "missing", _column_shape("group", "missing value(s)")),
    "nan_covariate": ("covariate", lambda c: _set(c, None), "missing",
                      _column_shape("covariate", "missing or infinite value(s)")),
    "missing_cluster": ("cluster", lambda c: _set(c, None), "missing", _column_shape("cluster", "missing value(s)")),
    "negative_lower": ("lower", lambda c: _set(c, -1.0), "negative", _column_shape("lower bound", "negative value(s)")),
    "treatment_not_binary": ("treatment", lambda c: _set(c, 3), "not_binary", None),
}

PARAMS = [(est, fault) for est, (_, roles) in S.items() for fault, spec in FAULTS.items() if spec[0] in roles]


def _check(exc: EstimatorInputError, func: str, col, check: str) -> None:
    assert isinstance(exc, EstimatorInputError) and isinstance(exc, ValueError) and isinstance(exc, IopError)
    assert exc.func == func and exc.check == check and exc.column == col


@pytest.mark.parametrize("est, fault", PARAMS, ids=[f"{e}-{f}" for e, f in PARAMS])
def test_same_fault_same_error(est, fault):
    call, roles = S[est]
    role, breaker, check, shape = FAULTS[fault]
    col = roles[role]
    with pytest.raises(EstimatorInputError) as info:
        call(breaker(col)(D))
    _check(info.value, est, col, check)
    assert info.value.rows == ROWS and info.value.n_rows == 2
    if shape is not None:
        assert re.match(shape(est, col), str(info.value)), str(info.value)
    else:  # treatment / exposure: role named by the estimator
        assert re.match(rf"^{est}: column '{col}' \((treatment|exposure)\) has 2 value\(s\) other than 0/1 .*"
                        rf"\(rows: 3, 7\)\. [A-Z]", str(info.value)), str(info.value)


@pytest.mark.parametrize("est", list(S))
def test_missing_column_and_not_a_frame(est):
    call, roles = S[est]
    arg = roles["first"]
    with pytest.raises(EstimatorInputError) as info:
        call(D, **{arg: "nope"})
    _check(info.value, est, "nope", "missing_column")
    assert re.match(rf"^{est}: column\(s\) not found in the data frame: {arg}='nope'\. Available columns: .*\. Fix ",
                    str(info.value)), str(info.value)
    with pytest.raises(EstimatorInputError) as info:
        call(D.to_dict("list"))
    _check(info.value, est, None, "not_a_frame")
    assert str(info.value).startswith(f"{est}: expected a pandas DataFrame, got dict. ")


@pytest.mark.parametrize(
    "est, call, lo, hi, op",
    [
        ("fit_cox", lambda d: fit_cox(d, start_col="start", stop_col="days", event_col="event", covariates=COVS),
         "start", "days", "<="),
        ("fit_km", lambda d: fit_km(d, duration_col="days", event_col="event", entry_col="entry"),
         "entry", "days", "<="),
        ("fit_turnbull", lambda d: fit_turnbull(d, lower_col="lo", upper_col="hi"), "lo", "hi", "<"),
        ("fit_interval_aft", lambda d: fit_interval_aft(d, lower_col="lo", upper_col="hi"), "lo", "hi", "<"),
    ],
)
def test_empty_interval_same_error(est, call, lo, hi, op):
    bad = D.copy()
    bad.loc[ROWS, lo] = bad.loc[ROWS, hi] + (1.0 if op == "<" else 0.0)
    with pytest.raises(EstimatorInputError) as info:
        call(bad)
    _check(info.value, est, hi, "interval")
    assert re.match(rf"^{est}: columns '{lo}'/'{hi}' \(interval\) have 2 row\(s\) with {hi} {op} {lo} "
                    rf"\(rows: 3, 7\)\. [A-Z]", str(info.value)), str(info.value)


#: nonsense arguments: each must give an IopError (never a bare TypeError/AttributeError from deep inside)
NONSENSE = [
    {"conf_level": "x"}, {"covariates": 5}, {"covariates": [5]}, {"group_col": 3.5}, {"weights_col": ["w"]},
    {"times": "abc"}, {"times": [np.nan]}, {"tau": "x"}, {"cause": None}, {"formula": 3}, {"formula": "x +"},
    {"distribution": None}, {"estimand": 3}, {"trim": "a"}, {"truncate": (0.9, 0.1)}, {"landmark_days": "10"},
    {"strata_col": ["strat", "nope"]}, {"rho": "1"}, {"ties": 3}, {"covariates": "x + sex"}, {"covariates": []},
    {"entry_col": "x"},
]


@pytest.mark.parametrize("est", list(S))
def test_nonsense_arguments_raise_iop_errors(est):
    call, _ = S[est]
    tried = 0
    for kwargs in NONSENSE:
        try:
            call(D, **kwargs)
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc):  # not an argument of this estimator
                continue
            raise AssertionError(f"{est}({kwargs}) raised a bare TypeError: {exc}") from exc
        except IopError:
            tried += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"{est}({kwargs}) raised {type(exc).__name__}: {exc}") from exc
        else:
            if kwargs in ({"strata_col": ["strat", "nope"]},) or list(kwargs) == ["entry_col"]:
                raise AssertionError(f"{est}({kwargs}) accepted a bad argument")
    assert tried >= 1


def test_series_of_a_result_are_locked():
    """IptwResult.weights / .propensity: the arrays are not writeable (a copy is)."""
    res = CASES["iptw"].fit()
    w0 = res.weights.copy()
    for series in (res.weights, res.propensity):
        with pytest.raises(ValueError):
            series.iloc[0] = 5.0
        with pytest.raises(ValueError):
            series.to_numpy()[0] = 5.0
    pd.testing.assert_series_equal(res.weights, w0)
    copy = res.weights.copy()
    copy.iloc[0] = 5.0
    assert copy.iloc[0] == 5.0
