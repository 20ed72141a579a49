"""Tests of iop_research.derive.impute: complete case, missing indicator, chained equations
and Rubin's rules, against R ``mice`` 3.15 + ``pool``.

Golden values: ``tests/golden/mice_cox.json`` from ``tests/r/mice_cox.R`` on
``tests/golden/data/mice_cox.csv`` (written by ``tests/r/mice_make_data.py``)::

    imp <- mice(d[, c("age", "mat", "severity", "housing", "employed", "event", "cumhaz")],
                m = 50, maxit = 10, seed = 20261207)          # pmm / polyreg / logreg
    pool(with(imp, coxph(Surv(time, event) ~ age + severity + housing + employed + mat)))

Deterministic parts (Nelson-Aalen, Rubin's rules on R's own 50 fits, the complete-case fit)
are compared at 1e-6 (estimates) / 1e-4 (standard errors). Our imputations and R's use
different random numbers, so the pooled estimates are compared within a Monte-Carlo
tolerance, justified in :func:`test_pooled_cox_matches_mice_within_monte_carlo_error`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from iop_research.derive.cohorts import Attrition
from iop_research.derive.impute import (
    POOL_GLANCE_COLUMNS,
    POOL_TIDY_COLUMNS,
    complete_case,
    impute_chained,
    imputation_methods,
    missing_indicator,
    nelson_aalen,
    pool_rubin,
)
from iop_research.exceptions import IopError, ModelSpecificationError
from iop_research.survival.cox import fit_cox

RTOL_EST = 1e-6
RTOL_SE = 1e-4
COV = ["age", "severity", "housing", "employed", "mat"]
R_TERMS = ["age", "severity", "housingstable", "housingunstable", "employedyes", "mat"]
PY_TERMS = ["age", "severity", "housing[T.stable]", "housing[T.unstable]", "employed[T.yes]", "mat"]
M = 50


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("mice_cox")


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    df = pd.read_csv(GOLDEN_DIR / "data" / "mice_cox.csv")
    df["cumhaz"] = nelson_aalen(df, duration_col="time", event_col="event")
    return df


@pytest.fixture(scope="module")
def pooled(data) -> tuple:
    """Our MICE (m = 50, 10 sweeps, same predictors as mice_cox.R) + fit_cox + pool_rubin."""
    imps = impute_chained(data, COV, m=M, seed=11, max_iter=10, auxiliary=["event", "cumhaz"])
    fits = [fit_cox(d, duration_col="time", event_col="event", covariates=COV) for d in imps]
    return imps, fits, pool_rubin(fits)


# ----------------------------------------------------------------------------- against R, deterministic


def test_golden_records_versions(golden):
    assert golden["mice"] == "3.15.0" and golden["R_version"].startswith("R version")
    assert golden["terms"] == R_TERMS and golden["m"] == M
    assert golden["methods"]["severity"] == ["pmm"] and golden["methods"]["housing"] == ["polyreg"]
    assert golden["methods"]["employed"] == ["logreg"]


def test_nelson_aalen_matches_mice(data, golden):
    """``mice::nelsonaalen(dat, time, event)`` (Efron-corrected ties)."""
    np.testing.assert_allclose(data["cumhaz"], golden["cumhaz"], rtol=1e-10)


def test_imputation_methods_are_mices_defaults(data, golden):
    methods = imputation_methods(data, COV)
    assert methods == {c: golden["methods"][c][0] for c in ("severity", "housing", "employed")}


def test_pool_rubin_equals_mice_pool_on_the_same_fits(golden):
    """Rubin's rules on R's 50 per-imputation fits reproduce ``summary(pool(fit), conf.int = TRUE)``."""
    est = np.array(golden["per_imputation_estimate"])
    se = np.array(golden["per_imputation_se"])
    tidies = [pd.DataFrame({"term": R_TERMS, "estimate": est[i], "std_error": se[i]}) for i in range(M)]
    res = pool_rubin(tidies, dfcom=golden["dfcom"])
    R = golden["pooled"]
    for ours, theirs in [("estimate", "estimate"), ("ubar", "ubar"), ("b", "b"), ("t", "t"), ("df", "df"),
                         ("riv", "riv"), ("lambda_", "lambda"), ("fmi", "fmi"), ("statistic", "statistic"),
                         ("conf_low", "conf_low"), ("conf_high", "conf_high")]:
        np.testing.assert_allclose(res.tidy[ours], R[theirs], rtol=RTOL_EST, err_msg=ours)
    np.testing.assert_allclose(res.tidy["std_error"], R["std_error"], rtol=RTOL_SE)
    np.testing.assert_allclose(res.tidy["p_value"], R["p_value"], rtol=RTOL_SE)
    assert tuple(res.tidy.columns) == POOL_TIDY_COLUMNS
    assert tuple(res.glance.columns) == POOL_GLANCE_COLUMNS
    assert res.glance["m"].iloc[0] == M


def test_default_dfcom_is_mices_for_cox(pooled, golden):
    """mice:::get.dfcom for coxph: events minus coefficients."""
    _, fits, res = pooled
    assert res.glance["dfcom"].iloc[0] == golden["dfcom"] == fits[0].glance["n_events"].iloc[0] - len(COV) - 1


def test_complete_case_fit_matches_r(data, golden):
    """``coxph(Surv(time, event) ~ age + severity + housing + employed + mat, data = dat)`` drops incomplete rows."""
    kept, row = complete_case(data, COV, patient_col="id")
    cc = golden["complete_case"]
    assert len(kept) == cc["n"] == row["rows_remaining"]
    assert row["rows_removed"] == len(data) - cc["n"] == row["patients_removed"]
    fit = fit_cox(kept, duration_col="time", event_col="event", covariates=COV)
    assert fit.glance["n_events"].iloc[0] == cc["nevent"]
    np.testing.assert_allclose(fit.tidy["estimate"], cc["coef"], rtol=RTOL_EST)
    np.testing.assert_allclose(fit.tidy["std_error"], cc["se"], rtol=RTOL_SE)


# ----------------------------------------------------------------------------- against R, Monte Carlo


def test_pooled_cox_matches_mice_within_monte_carlo_error(pooled, golden):
    """Our pooled Cox estimates (m = 50) equal mice's (m = 50) within Monte-Carlo error.

    Tolerance. Both pooled estimates are means over 50 imputations of draws from the same
    posterior predictive distribution (same conditional models, same predictors), so each
    has Monte-Carlo variance b / m (b = between-imputation variance), and their difference,
    from independent random numbers, variance (b_ours + b_R) / m. We require
    ``|qbar_ours - qbar_R| <= 4 * sqrt((b_ours + b_R) / m)`` for every term (a true
    difference of this size or more has probability < 1e-4 per term; 6 terms). For the total
    variance t = ubar + (1 + 1/m) b: ubar is an average of 50 nearly equal within-variances
    (its Monte-Carlo error is negligible; 5% allowed) and b has relative Monte-Carlo SD
    sqrt(2 / (m - 1)) = 0.2 under normality, so ``|t_ours - t_R| <= 0.05 ubar +
    4 sqrt(2) (1 + 1/m) b_mean sqrt(2 / (m - 1))``. The test below shows the variance bound
    catches single imputation (b = 0).
    """
    _, _, res = pooled
    R = golden["pooled"]
    assert list(res.tidy["term"]) == PY_TERMS
    tidy = res.tidy
    b_both = tidy["b"].to_numpy() + np.array(R["b"])
    tol_est = 4 * np.sqrt(b_both / M)
    diff = np.abs(tidy["estimate"].to_numpy() - np.array(R["estimate"]))
    assert (diff <= tol_est).all(), pd.DataFrame({"term": PY_TERMS, "diff": diff, "tol": tol_est})
    tol_t = 0.05 * np.array(R["ubar"]) + 4 * np.sqrt(2) * (1 + 1 / M) * (b_both / 2) * np.sqrt(2 / (M - 1))
    diff_t = np.abs(tidy["t"].to_numpy() - np.array(R["t"]))
    assert (diff_t <= tol_t).all(), pd.DataFrame({"term": PY_TERMS, "diff_t": diff_t, "tol": tol_t})
    # the hazard-ratio columns follow the pooled log-HR
    np.testing.assert_allclose(tidy["hazard_ratio"], np.exp(tidy["estimate"]))
    np.testing.assert_allclose(tidy["hr_conf_low"], np.exp(tidy["conf_low"]))


def test_the_tolerance_detects_ignored_imputation_uncertainty(pooled, golden):
    """Pooling 50 copies of one imputation (between-imputation variance 0, the error of single
    imputation) understates the total variance by more than the Monte-Carlo tolerance above
    allows, for most terms whose missing information is large (b / ubar > 0.12)."""
    imps, fits, _ = pooled
    res = pool_rubin([fits[0]] * M)
    R = golden["pooled"]
    b_both = res.tidy["b"].to_numpy() + np.array(R["b"])
    tol_t = 0.05 * np.array(R["ubar"]) + 4 * np.sqrt(2) * (1 + 1 / M) * (b_both / 2) * np.sqrt(2 / (M - 1))
    diff_t = np.abs(res.tidy["t"].to_numpy() - np.array(R["t"]))
    large = np.array(R["b"]) / np.array(R["ubar"]) > 0.12
    assert large.sum() == 4 and (diff_t[large] > tol_t[large]).sum() >= 3


def _r_has_mice() -> bool:
    import subprocess

    from conftest import RSCRIPT

    if RSCRIPT is None:
        return False
    proc = subprocess.run([RSCRIPT, "-e", 'quit(status = !requireNamespace("mice", quietly = TRUE))'],
                          capture_output=True, timeout=120)
    return proc.returncode == 0


@requires_r
@pytest.mark.r
def test_golden_reproduces_live(tmp_path, golden):
    """Rscript --vanilla tests/r/mice_cox.R <datasets_dir> <out_json> reproduces the committed JSON (mice's seed)."""
    if not _r_has_mice():
        pytest.skip("R package mice not installed (CI: apt-get install r-cran-mice)")
    live = run_r_script("mice_cox", tmp_path / "mice_cox.json")
    assert live.keys() == golden.keys()
    np.testing.assert_allclose(live["cumhaz"], golden["cumhaz"], rtol=RTOL_EST)
    np.testing.assert_allclose(live["per_imputation_estimate"], golden["per_imputation_estimate"], rtol=RTOL_EST)
    for key in ("estimate", "b", "t", "df"):
        np.testing.assert_allclose(live["pooled"][key], golden["pooled"][key], rtol=RTOL_EST)
    np.testing.assert_allclose(live["complete_case"]["coef"], golden["complete_case"]["coef"], rtol=RTOL_EST)


# ----------------------------------------------------------------------------- properties of the imputations


def test_imputations_fill_only_missing_values_with_observed_kinds(pooled, data):
    imps, _, _ = pooled
    assert len(imps) == M
    for d in imps[:5]:
        assert d.index.equals(data.index) and list(d.columns) == list(data.columns)
        assert not d[COV].isna().any().any()
        for col in COV:
            obs = data[col].notna()
            pd.testing.assert_series_equal(d.loc[obs, col], data.loc[obs, col], check_dtype=False)
        # pmm imputes observed values; categorical imputations use observed levels
        assert set(d["severity"]) <= set(data["severity"].dropna())
        assert set(d["housing"]) <= set(data["housing"].dropna())
        assert set(d["employed"]) <= {"yes", "no"}
        assert d["housing"].dtype == data["housing"].dtype
    # imputations differ between data sets, observed rows never do
    mis = data["severity"].isna()
    assert (imps[0].loc[mis, "severity"] != imps[1].loc[mis, "severity"]).any()


def test_same_seed_same_imputations(data):
    a = impute_chained(data, COV, m=2, seed=5, max_iter=2, auxiliary=["event", "cumhaz"])
    b = impute_chained(data, COV, m=2, seed=np.random.default_rng(5), max_iter=2, auxiliary=["event", "cumhaz"])
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    c = impute_chained(data, COV, m=2, seed=6, max_iter=2, auxiliary=["event", "cumhaz"])
    assert not a[0].equals(c[0])


def test_input_not_modified_and_bool_category_kept(data):
    df = data.head(120).copy()
    df["flag"] = pd.array([True, False, None] * 40, dtype="boolean")
    df["site"] = pd.Categorical(["A", "B", None] * 40, categories=["A", "B", "C"])
    before = df.copy()
    imps = impute_chained(df, ["age", "flag", "site"], m=2, seed=1, max_iter=2)
    pd.testing.assert_frame_equal(df, before)
    assert imps[0]["site"].dtype == df["site"].dtype and not imps[0]["site"].isna().any()
    assert set(imps[0]["flag"]) <= {True, False}


def test_nothing_to_impute_returns_copies(data):
    imps = impute_chained(data, ["age", "mat"], m=2, seed=1)
    pd.testing.assert_frame_equal(imps[0], data)


# ----------------------------------------------------------------------------- complete case, indicator


def test_complete_case_records_attrition(data):
    att = Attrition(patient_col="id")
    att.start(data, table="analysis")
    kept, row = complete_case(data, COV, patient_col="id", attrition=att, table="analysis")
    frame = att.to_frame()
    last = frame.iloc[-1]
    assert last["step"] == "complete_case" and last["rows_removed"] == row["rows_removed"]
    assert last["rows_remaining"] == len(kept) == len(data) - row["rows_removed"]
    n_sev = int(data["severity"].isna().sum())
    assert f"severity {n_sev}" in row["reason"] and "age" not in row["reason"]
    assert not kept[COV].isna().any().any()


def test_missing_indicator(data):
    out, cov = missing_indicator(data, COV)
    assert cov == ["age", "severity", "severity_missing", "housing", "employed", "mat"]
    assert not out[COV].isna().any().any()
    assert (out["housing"] == "missing").sum() == data["housing"].isna().sum()
    assert out["severity_missing"].sum() == data["severity"].isna().sum()
    assert out.loc[data["severity"].isna(), "severity"].eq(data["severity"].mean()).all()
    assert list(out.columns).index("severity_missing") == list(out.columns).index("severity") + 1
    fit = fit_cox(out, duration_col="time", event_col="event", covariates=cov)
    assert "housing[T.missing]" in set(fit.tidy["term"])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, match", [
    ({"m": 0}, "m must be an integer >= 1"),
    ({"max_iter": 0}, "max_iter must be"),
    ({"seed": "x"}, "seed must be an int"),
    ({"auxiliary": ["severity"]}, "both as covariates"),
    ({"auxiliary": ["nope"]}, "not in the frame"),
])
def test_impute_bad_arguments(data, kwargs, match):
    args = {"m": 2, "seed": 1, **kwargs}
    with pytest.raises(ModelSpecificationError, match=match):
        impute_chained(data, COV, **args)


def test_impute_rejects_incomplete_auxiliary_and_empty_covariate(data):
    with pytest.raises(ModelSpecificationError, match="auxiliary column"):
        impute_chained(data.drop(columns="severity"), ["age"], m=2, seed=1, auxiliary=["housing"])
    empty = data.assign(x=np.nan)
    with pytest.raises(ModelSpecificationError, match="no observed value"):
        impute_chained(empty, ["age", "x"], m=2, seed=1)
    with pytest.raises(ModelSpecificationError, match="list of column names"):
        complete_case(data, "age")


def test_pool_rubin_errors():
    t = pd.DataFrame({"term": ["x"], "estimate": [0.1], "std_error": [0.1]})
    with pytest.raises(ModelSpecificationError, match="at least 2"):
        pool_rubin([t])
    with pytest.raises(ModelSpecificationError, match="terms"):
        pool_rubin([t, t.assign(term="y")])
    with pytest.raises(ModelSpecificationError, match="neither a Result"):
        pool_rubin([t, {"a": 1}])
    with pytest.raises(IopError, match="infinite"):
        pool_rubin([t, t.assign(std_error=np.nan)])
    # bare tables: infinite dfcom, the classical Rubin df
    res = pool_rubin([t, t.assign(estimate=0.3)])
    assert np.isinf(res.glance["dfcom"].iloc[0])
    lam = (1 + 1 / 2) * 0.02 / res.tidy["t"].iloc[0]
    assert res.tidy["df"].iloc[0] == pytest.approx(1 / lam**2)


@pytest.mark.slow
def test_multiple_imputation_covers_the_true_hazard_ratios():
    """Simulation (tests/r/mice_make_data.py with n = 2,000; true log-HRs known; three covariates
    missing at random given age, MAT and the event): the pooled 95% intervals cover every true
    log-HR. Deterministic (fixed seeds)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mice_make_data", GOLDEN_DIR.parent / "r" / "mice_make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    df = mod.make_mice_cox(n=2000, seed=99)
    df["cumhaz"] = nelson_aalen(df, duration_col="time", event_col="event")
    truth = {"age": 0.02, "severity": 0.15, "housing[T.stable]": -0.6, "housing[T.unstable]": -0.3,
             "employed[T.yes]": -0.4, "mat": -0.5}  # reference level homeless (first sorted)
    imps = impute_chained(df, COV, m=10, seed=3, max_iter=10, auxiliary=["event", "cumhaz"])
    res = pool_rubin([fit_cox(d, duration_col="time", event_col="event", covariates=COV) for d in imps])
    tidy = res.tidy.set_index("term")
    for term, beta in truth.items():
        assert tidy.loc[term, "conf_low"] <= beta <= tidy.loc[term, "conf_high"], (term, tidy.loc[term].to_dict())
