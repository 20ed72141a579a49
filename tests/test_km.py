"""Tests of iop_research.survival.km: Kaplan-Meier, log-rank and RMST against R survival 3.5.

Golden values: ``tests/golden/km.json``, written by
``Rscript --vanilla tests/r/km.R ../shared/datasets tests/golden/km.json`` from UIS, HELP
(rows with missing ``anysubstatus``/``daysanysub`` dropped: 209 of 453) and the simulated
data of ``tests/r/make_km_data.py`` (``tests/golden/data/km_sim.csv``, ``km_edge.csv``).
Every golden case stores the Python arguments (``spec``) and the R call (``r_call``).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iop_research.survival.km import fit_km, logrank_test, rmst
from iop_research.exceptions import DataValidationError, ModelSpecificationError

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script

RTOL_EST = 1e-6
RTOL_SE = 1e-4

GOLDEN = load_golden("km")
CASES = GOLDEN["cases"]


def _names(kind: str) -> list[str]:
    return [name for name, case in CASES.items() if case["kind"] == kind]


def _spec(case: dict) -> dict:
    spec = {}
    for key, val in case["spec"].items():
        if key == "times":
            spec[key] = [float(v[0]) if isinstance(v, list) else float(v) for v in val]
        else:
            spec[key] = val[0] if isinstance(val, list) and len(val) == 1 else val
    return spec


def _arr(values) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype(float)
    if not isinstance(values, list):
        values = [values]
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.fixture(scope="module")
def frames(uis_path, help_path) -> dict[str, pd.DataFrame]:
    uis = pd.read_csv(uis_path)
    help_raw = pd.read_csv(help_path)
    bad = help_raw["anysubstatus"].isna() | help_raw["daysanysub"].isna()
    # say how many: 207 rows lack anysubstatus, 2 more lack daysanysub
    assert int(help_raw["anysubstatus"].isna().sum()) == 207
    assert int(bad.sum()) == GOLDEN["help_rows_dropped"] == 209
    sim = pd.read_csv(GOLDEN_DIR / "data" / "km_sim.csv")
    edge = pd.read_csv(GOLDEN_DIR / "data" / "km_edge.csv")
    out = {"uis": uis, "help": help_raw.loc[~bad].reset_index(drop=True), "sim": sim,
           "sim_ab": sim[sim["arm"].isin(["a", "b"])].reset_index(drop=True),
           "sim_unbal": sim[~((sim["arm"] == "c") & (sim["site"] == "s2"))].reset_index(drop=True)}
    for case in edge["case"].unique():
        out[f"edge:{case}"] = edge[edge["case"] == case].reset_index(drop=True)
    assert len(out["uis"]) == GOLDEN["uis_rows_used"]
    assert len(out["help"]) == GOLDEN["help_rows_used"]
    return out


def _close(actual, expected, rtol, what):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), _arr(expected), rtol=rtol, atol=1e-12,
                               equal_nan=True, err_msg=what)


# ----------------------------------------------------------------------------- Kaplan-Meier
@pytest.mark.parametrize("name", _names("km"))
def test_fit_km_matches_r(name, frames):
    """R: ``summary(survfit(Surv(...) ~ g, data, weights, conf.type), censored=TRUE)``,
    ``summary(fit)$table`` medians and ``summary(fit, times=, extend=TRUE)``; exact call in
    the golden case's ``r_call``. Greenwood (tidy) against ``robust = FALSE``; R's default
    robust variance for non-integer weights against ``extra["robust"]``."""
    case = CASES[name]
    spec = _spec(case)
    data = frames[spec.pop("data")]
    res = fit_km(data, **spec)
    tidy = res.tidy
    assert list(res.glance["group"].astype(str)) == [g["label"] for g in case["groups"]]
    for gi, (label, g) in enumerate(zip(res.glance["group"], case["groups"])):
        part = tidy[tidy["group"] == label]
        robust = not case["logse"]
        if robust:  # R's robust variance: compare the robust table; std.err is on the S scale
            rob = res.robust[res.robust["group"] == label]
            _close(rob["std_error"], g["std_err"], RTOL_SE, f"{name} {label} robust std.err")
            _close(rob["std_error"], g["std_err_log"], RTOL_SE, f"{name} {label} robust fit$std.err")
            _close(rob["conf_low"], g["lower"], RTOL_SE, f"{name} {label} robust lower")
            _close(rob["conf_high"], g["upper"], RTOL_SE, f"{name} {label} robust upper")
            _close(part["survival"], g["surv"], RTOL_EST, f"{name} {label} surv")
            _close([res.medians.iloc[gi]["median"]], g["median"], RTOL_EST, f"{name} {label} median")
            continue
        _close(part["time"], g["time"], RTOL_EST, f"{name} {label} time")
        _close(part["n_at_risk"], g["n_risk"], RTOL_EST, f"{name} {label} n_risk")
        _close(part["n_events"], g["n_event"], RTOL_EST, f"{name} {label} n_event")
        _close(part["n_censored"], g["n_censor"], RTOL_EST, f"{name} {label} n_censor")
        _close(part["survival"], g["surv"], RTOL_EST, f"{name} {label} surv")
        _close(part["std_error"], g["std_err"], RTOL_SE, f"{name} {label} std.err")
        _close(part["conf_low"], g["lower"], RTOL_SE, f"{name} {label} lower")
        _close(part["conf_high"], g["upper"], RTOL_SE, f"{name} {label} upper")
        log_se = res.std_err_log[res.std_err_log["group"] == label]["std_err_log"]
        _close(log_se, g["std_err_log"], RTOL_SE, f"{name} {label} fit$std.err")
        med = res.medians.iloc[gi]
        _close([med["median"]], g["median"], RTOL_EST, f"{name} {label} median")
        _close([med["conf_low"]], g["median_lcl"], RTOL_EST, f"{name} {label} median LCL")
        _close([med["conf_high"]], g["median_ucl"], RTOL_EST, f"{name} {label} median UCL")
        glance = res.glance.iloc[gi]
        assert glance["n"] == g["n"]
        if "at_times" in g:
            at = res.at_times[res.at_times["group"] == label]
            a = g["at_times"]
            _close(at["time"], a["time"], RTOL_EST, f"{name} {label} at time")
            _close(at["n_at_risk"], a["n_risk"], RTOL_EST, f"{name} {label} at n_risk")
            _close(at["n_events"], a["n_event"], RTOL_EST, f"{name} {label} at n_event")
            _close(at["n_censored"], a["n_censor"], RTOL_EST, f"{name} {label} at n_censor")
            _close(at["survival"], a["surv"], RTOL_EST, f"{name} {label} at surv")
            _close(at["std_error"], a["std_err"], RTOL_SE, f"{name} {label} at std.err")
            _close(at["conf_low"], a["lower"], RTOL_SE, f"{name} {label} at lower")
            _close(at["conf_high"], a["upper"], RTOL_SE, f"{name} {label} at upper")


# ----------------------------------------------------------------------------- log-rank
@pytest.mark.parametrize("name", _names("logrank"))
def test_logrank_matches_r(name, frames):
    """R: ``survdiff(Surv(t, e) ~ g [+ strata(s)], data, rho)`` (weights: rows replicated
    ``w`` times); gamma > 0: the direct G(rho, gamma) formula ``fh_direct`` in tests/r/km.R,
    which the script checks against survdiff for gamma = 0; trend: ``(s'(O-E))^2 / s'Vs``."""
    case = CASES[name]
    spec = _spec(case)
    data = frames[spec.pop("data")]
    res = logrank_test(data, **spec)
    tidy = res.tidy
    assert list(tidy["group"].astype(str)) == case["labels"]
    if spec.get("weights_col") is None:
        assert list(tidy["n"]) == case["n"]
    _close(tidy["observed"], case["obs"], RTOL_EST, f"{name} observed")
    _close(tidy["expected"], case["exp"], RTOL_EST, f"{name} expected")
    _close(tidy["o_minus_e"], _arr(case["obs"]) - _arr(case["exp"]), RTOL_EST, f"{name} O-E")
    var = np.array(case["var"], dtype=float).reshape(len(tidy), len(tidy))
    _close(tidy["variance"], np.diag(var), RTOL_SE, f"{name} variance")
    np.testing.assert_allclose(res.variance.to_numpy(), var, rtol=RTOL_SE, atol=1e-10)
    overall = res.tests.iloc[0]
    _close([overall["statistic"]], case["chisq"], RTOL_SE, f"{name} chisq")
    assert overall["df"] == case["df"]
    _close([overall["p_value"]], case["p"], RTOL_SE, f"{name} p")
    if spec.get("trend"):
        tr = case["trend"]
        _close(res.glance["statistic"], tr["chisq"], RTOL_SE, f"{name} trend chisq")
        assert res.glance["df"].iloc[0] == 1
        _close(res.glance["p_value"], tr["p"], RTOL_SE, f"{name} trend p")
    else:
        _close(res.glance["statistic"], case["chisq"], RTOL_SE, f"{name} glance")


# ----------------------------------------------------------------------------- RMST
@pytest.mark.parametrize("name", _names("rmst"))
def test_rmst_matches_r(name, frames):
    """R: ``summary(survfit(Surv(t, e) ~ g, data), rmean = tau)$table`` (rmean, se(rmean));
    difference and ratio as survRM2::rmst2 (unadjusted), computed in tests/r/km.R."""
    case = CASES[name]
    spec = _spec(case)
    data = frames[spec.pop("data")]
    res = rmst(data, **spec)
    tidy = res.tidy.set_index("term")
    terms = [f"rmst[{lab}]" for lab in case["labels"]]
    _close(tidy.loc[terms, "estimate"], case["rmst"], RTOL_EST, f"{name} rmst")
    _close(tidy.loc[terms, "std_error"], case["se"], RTOL_SE, f"{name} se")
    if "difference" in case:
        for term, key_se in (("difference", "se"), ("ratio", "se_log")):
            ref = case[term]
            row = tidy.loc[term]
            _close([row["estimate"]], ref["est"], RTOL_EST, f"{name} {term}")
            _close([row["std_error"]], ref[key_se], RTOL_SE, f"{name} {term} se")
            _close([row["conf_low"], row["conf_high"]], [ref["low"], ref["high"]], RTOL_SE, f"{name} {term} CI")
            _close([row["p_value"]], ref["p"], RTOL_SE, f"{name} {term} p")
    else:
        assert "difference" not in tidy.index


@requires_r
def test_r_script_live_reproduces_committed_golden(tmp_path):
    """Re-runs ``Rscript --vanilla tests/r/km.R <datasets_dir> <tmp>/km.json`` and compares
    every number with the committed ``tests/golden/km.json``."""
    live = run_r_script("km", tmp_path / "km.json")
    assert live["survival_version"] == GOLDEN["survival_version"]

    def walk(a, b, path):
        if isinstance(b, dict):
            assert set(a) == set(b), path
            for key in b:
                walk(a[key], b[key], f"{path}.{key}")
        elif isinstance(b, list):
            assert len(a) == len(b), path
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif isinstance(b, float) or isinstance(a, float):
            if b is None or a is None:
                assert a is None and b is None, path
            else:
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b)), path
        else:
            assert a == b, path

    walk(live["cases"], GOLDEN["cases"], "cases")


# ----------------------------------------------------------------------------- invariants
def test_tidy_columns_fixed_and_input_not_mutated(frames):
    data = frames["sim"]
    before = data.copy()
    for ct in ("log", "log-log", "plain"):
        res = fit_km(data, duration_col="days", event_col="event", group_col="arm", conf_type=ct)
        assert list(res.tidy.columns) == ["group", "time", "n_at_risk", "n_events", "n_censored", "survival",
                                          "std_error", "conf_low", "conf_high"]
    lr = logrank_test(data, duration_col="days", event_col="event", group_col="arm", trend=True)
    assert list(lr.tidy.columns) == ["group", "n", "observed", "expected", "o_minus_e", "variance"]
    assert list(lr.glance.columns) == ["statistic", "df", "p_value"]
    rm = rmst(data, duration_col="days", event_col="event", tau=100)
    assert list(rm.tidy.columns) == ["term", "label", "estimate", "std_error", "conf_low", "conf_high", "p_value"]
    pd.testing.assert_frame_equal(data, before)


def test_integer_weights_equal_replicated_rows(frames):
    data = frames["sim"]
    rep = data.loc[data.index.repeat(data["w"])].reset_index(drop=True)
    a = fit_km(data, duration_col="days", event_col="event", group_col="arm", weights_col="w")
    b = fit_km(rep, duration_col="days", event_col="event", group_col="arm")
    # weighted tables keep zero-weight time points (as R); compare where b has rows
    merged = b.tidy.merge(a.tidy, on=["group", "time"], suffixes=("", "_w"))
    assert len(merged) == len(b.tidy)
    for col in ("n_at_risk", "n_events", "survival", "std_error"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_w"], rtol=1e-12)
    lw = logrank_test(data, duration_col="days", event_col="event", group_col="arm", weights_col="w", rho=1)
    lr = logrank_test(rep, duration_col="days", event_col="event", group_col="arm", rho=1)
    assert lw.glance["statistic"].iloc[0] == pytest.approx(lr.glance["statistic"].iloc[0], rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.booleans(), st.integers(0, 3), st.sampled_from(["x", "y"])),
        min_size=1, max_size=40,
    )
)
def test_survival_in_unit_interval_and_non_increasing(rows):
    d = pd.DataFrame(rows, columns=["t", "e", "w", "g"])
    res = fit_km(d, duration_col="t", event_col="e", group_col="g", weights_col="w", times=[0, 5, 50])
    for _, part in res.tidy.groupby("group"):
        s = part["survival"].to_numpy()
        assert np.all((s >= 0) & (s <= 1))
        assert np.all(np.diff(s) <= 1e-15)
        assert np.all(np.diff(part["time"].to_numpy()) > 0)
        low, high = part["conf_low"].to_numpy(), part["conf_high"].to_numpy()
        ok = ~np.isnan(low)
        assert np.all(low[ok] <= s[ok] + 1e-12) and np.all(high[ok] >= s[ok] - 1e-12)
    at = res.at_times
    assert np.all((at["survival"] >= 0) & (at["survival"] <= 1))


def test_km_covers_true_survival_in_simulation():
    rng = np.random.default_rng(11)
    n = 2000
    t = rng.exponential(100, n)
    c = rng.uniform(0, 300, n)
    d = pd.DataFrame({"days": np.minimum(t, c), "event": (t <= c).astype(int)})
    res = fit_km(d, duration_col="days", event_col="event", times=[50, 100])
    at = res.at_times
    truth = np.exp(-at["time"].to_numpy() / 100)
    assert np.all(at["conf_low"].to_numpy() < truth) and np.all(truth < at["conf_high"].to_numpy())
    r = rmst(d, duration_col="days", event_col="event", tau=100).tidy.iloc[0]
    true_rmst = 100 * (1 - np.exp(-1))
    assert r["conf_low"] < true_rmst < r["conf_high"]


def test_logrank_all_censored_raises():
    """R: survdiff(Surv(t, e) ~ g, data = defects_censored) silently returns chisq = 0 and p = NaN
    (tests/r/defects.R, tests/golden/defects.json); we raise a clear error instead."""
    r = load_golden("defects")["logrank_all_censored"]
    assert r["chisq"] == [0] and r["p"] == [None] and r["exp"] == [0, 0]
    d = pd.read_csv(GOLDEN_DIR / "data" / "defects_censored.csv")
    with pytest.raises(ModelSpecificationError, match="no events in 'e'.*all 4 rows are censored"):
        logrank_test(d, duration_col="t", event_col="e", group_col="g")
    with pytest.raises(ModelSpecificationError, match="no events"):
        logrank_test(d.assign(e=[1, 0, 0, 0], w=[0.0, 1, 1, 1]), duration_col="t", event_col="e", group_col="g",
                     weights_col="w")


def test_bool_event_and_categorical_group_order():
    d = pd.DataFrame({"t": [1, 2, 3, 4, 5, 6], "e": [True, True, False, True, True, False],
                      "g": pd.Categorical(["hi", "lo", "hi", "lo", "mid", "mid"], categories=["lo", "mid", "hi"])})
    res = fit_km(d, duration_col="t", event_col="e", group_col="g")
    assert list(res.glance["group"]) == ["lo", "mid", "hi"]
    lr = logrank_test(d, duration_col="t", event_col="e", group_col="g", trend=True)
    assert "scores 1.0, 2.0, 3.0" in lr.tests["test"].iloc[1]


# ----------------------------------------------------------------------------- errors
BASE = pd.DataFrame({"t": [1.0, 2.0, 3.0, 4.0], "e": [1, 0, 1, 1], "g": ["a", "b", "a", "b"],
                     "w": [1.0, 2.0, 1.0, 1.0], "entry": [0.0, 0.0, 1.0, 0.0]})


@pytest.mark.parametrize(
    "change, kwargs, exc, match",
    [
        ({"t": [1.0, -2.0, 3.0, 4.0]}, {}, DataValidationError, r"'t' \(duration\) has 1 negative value"),
        ({"t": [1.0, np.nan, 3.0, 4.0]}, {}, DataValidationError, "missing or infinite"),
        ({"e": [1, 2, 1, 0]}, {}, DataValidationError, "only 0/1"),
        ({"e": ["y", "n", "y", "y"]}, {}, DataValidationError, "0/1 or bool"),
        ({"w": [1.0, -1.0, 1.0, 1.0]}, {"weights_col": "w"}, DataValidationError, r"\(case weights\) has 1 negative"),
        ({"entry": [0.0, 2.0, 1.0, 0.0]}, {"entry_col": "entry"}, DataValidationError, "entry"),
        ({"g": ["a", None, "a", "b"]}, {"group_col": "g"}, DataValidationError, r"'g' \(group\) has 1 missing value"),
        ({}, {"group_col": "nope"}, ModelSpecificationError, "not found"),
        ({}, {"conf_type": "logit"}, ModelSpecificationError, "conf_type"),
        ({}, {"conf_level": 95}, ModelSpecificationError, "conf_level"),
    ],
)
def test_fit_km_errors(change, kwargs, exc, match):
    d = BASE.assign(**change)
    with pytest.raises(exc, match=match) as info:
        fit_km(d, duration_col="t", event_col="e", **kwargs)
    assert isinstance(info.value, ValueError)


def test_error_message_names_rows():
    d = BASE.assign(t=[1.0, -2.0, 3.0, -4.0])
    with pytest.raises(DataValidationError, match=r"rows: 1, 3"):
        fit_km(d, duration_col="t", event_col="e")


def test_time_zero_allowed():
    d = BASE.assign(t=[0.0, 0.0, 3.0, 4.0])
    res = fit_km(d, duration_col="t", event_col="e")
    assert res.tidy["time"].iloc[0] == 0.0
    assert res.tidy["survival"].iloc[0] == pytest.approx(0.75)


def test_logrank_errors():
    with pytest.raises(ModelSpecificationError, match="single level"):
        logrank_test(BASE.assign(g="a"), duration_col="t", event_col="e", group_col="g")
    with pytest.raises(ModelSpecificationError, match="gamma"):
        logrank_test(BASE, duration_col="t", event_col="e", group_col="g", gamma=-1)
    with pytest.raises(DataValidationError, match=r"\(case weights\) has 1 negative"):
        logrank_test(BASE.assign(w=[1, -1, 1, 1]), duration_col="t", event_col="e", group_col="g", weights_col="w")


def test_rmst_errors():
    with pytest.raises(ModelSpecificationError, match="beyond the follow-up"):
        rmst(BASE, duration_col="t", event_col="e", group_col="g", tau=3.5)
    with pytest.raises(ModelSpecificationError, match="tau"):
        rmst(BASE, duration_col="t", event_col="e", tau=0)
    res = rmst(BASE, duration_col="t", event_col="e", group_col="g", tau=3)
    assert list(res.tidy["term"]) == ["rmst[a]", "rmst[b]", "difference", "ratio"]


def test_golden_records_versions():
    assert GOLDEN["survival_version"].startswith("3.5")
    assert "R version 4.2" in GOLDEN["R_version"]
    assert json.dumps(GOLDEN["cases"]["lr_uis_treat"]["r_call"]).startswith('"survdiff')


def test_rmst_help_365_is_beyond_follow_up(frames):
    """HELP follow-up ends at day 260 (treat = no) and 268 (yes): tau = 365 is refused, as
    survRM2 would; R's survmean would silently extend the last survival value."""
    with pytest.raises(ModelSpecificationError, match="Choose tau <= 260"):
        rmst(frames["help"], duration_col="daysanysub", event_col="anysubstatus", group_col="treat", tau=365)
