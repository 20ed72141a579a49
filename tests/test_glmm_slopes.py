"""fit_glmm(random_slope=...) against R lme4 (correlated random intercept and slope), and bad input.

Golden values: ``tests/golden/glmm_slopes.json`` from ``tests/r/glmm_slopes.R`` on simulated patient-week data
(``tests/golden/data/glmm_slopes.csv``, ``tests/r/make_glmm_slopes_data.py``: 240 patients, weeks 0..7, a
correlated random intercept and week slope per patient): ``glmer(... + (1 + week | id))`` binomial and Poisson
(Laplace), ``lmer`` REML and ML, and a singular binomial fit (correlation -1) on ``tests/golden/data/gee_uds.csv``.
R's optimiser runs to ``rhoend = 1e-12``. Tolerances (the brief's): estimates
1e-4 relative, standard errors 1e-3 relative (glmer's come from its own finite-difference Hessian), the two SDs
and the correlation 1e-3 (relative for the SDs, absolute for the correlation), log-likelihood 1e-4 absolute,
conditional modes 1e-4 absolute and their conditional sds 1e-3 relative.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from iop_research.exceptions import EstimatorInputError, IopError, ModelSpecificationError
from iop_research.longitudinal.glmm import GLANCE_GLMM_COLUMNS, RANEF_SLOPE_COLUMNS, TIDY_GLMM_COLUMNS, fit_glmm

CASES = {
    "binomial_laplace": dict(formula="positive ~ mat + female + age + week"),
    "poisson_laplace": dict(formula="drinks ~ mat + age + week", family="poisson"),
    "gaussian_reml": dict(formula="craving ~ mat + age + week", family="gaussian"),
    "gaussian_ml": dict(formula="craving ~ mat + age + week", family="gaussian", reml=False),
    # tests/golden/data/gee_uds.csv: a singular fit (correlation -1), lme4's boundary
    "uds_binomial_singular": dict(formula="positive ~ mat + week"),
}


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(GOLDEN_DIR / "data" / "glmm_slopes.csv")


@pytest.fixture(scope="module")
def fits(data) -> dict:
    uds = pd.read_csv(GOLDEN_DIR / "data" / "gee_uds.csv")
    return {case: fit_glmm(uds if case.startswith("uds") else data, group_col="id", random_slope="week", **kw)
            for case, kw in CASES.items()}


def _compare(res, r):
    assert list(res.tidy["term"]) == r["term"]
    np.testing.assert_allclose(res.tidy["estimate"], r["estimate"], rtol=1e-4)
    np.testing.assert_allclose(res.tidy["std_error"], r["std_error"], rtol=1e-3)
    if "p_value" in r:
        np.testing.assert_allclose(stats.norm.isf(res.tidy["p_value"] / 2), stats.norm.isf(np.array(r["p_value"]) / 2),
                                   rtol=1e-3)
    g = res.glance.iloc[0]
    assert g["re_sd"] == pytest.approx(r["re_sd"], rel=1e-3)
    assert g["re_slope_sd"] == pytest.approx(r["re_slope_sd"], rel=1e-3)
    assert g["re_corr"] == pytest.approx(r["re_corr"], abs=1e-3)
    if r["residual_variance"] is None:
        assert np.isnan(g["residual_variance"])
    else:
        assert g["residual_variance"] == pytest.approx(r["residual_variance"], rel=1e-4)
    assert g["loglik"] == pytest.approx(r["loglik"], abs=1e-4)
    assert g["aic"] == pytest.approx(r["aic"], abs=2e-4) and g["bic"] == pytest.approx(r["bic"], abs=2e-4)
    assert g["n_obs"] == r["n_obs"] and g["n_groups"] == r["n_groups"] and bool(g["converged"])
    re_ = res.extra["random_effects"]
    assert [str(v) for v in re_["group"]] == r["ranef_group"]
    np.testing.assert_allclose(re_["estimate"], r["ranef"], atol=1e-4)
    np.testing.assert_allclose(re_["slope_estimate"], r["ranef_slope"], atol=1e-4)
    np.testing.assert_allclose(re_["cond_sd"], r["cond_sd"], rtol=1e-3)
    np.testing.assert_allclose(re_["slope_cond_sd"], r["slope_cond_sd"], rtol=1e-3)
    assert g["loglik"] >= r["loglik"] - 1e-6  # never less converged than R


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_lme4(fits, case):
    _compare(fits[case], load_golden("glmm_slopes")[case])


@requires_r
def test_matches_lme4_live(fits, tmp_path):
    """Re-run tests/r/glmm_slopes.R (a few seconds) and compare with the fresh output."""
    live = run_r_script("glmm_slopes", tmp_path / "glmm_slopes.json")
    for case in CASES:
        _compare(fits[case], live[case])


def test_result_contract(fits):
    for case, res in fits.items():
        fam = CASES[case].get("family", "binomial")
        assert tuple(res.tidy.columns) == TIDY_GLMM_COLUMNS[fam]
        assert tuple(res.glance.columns) == GLANCE_GLMM_COLUMNS
        assert tuple(res.extra["random_effects"].columns) == RANEF_SLOPE_COLUMNS
        g = res.glance.iloc[0]
        assert g["re_slope_sd"] == pytest.approx(np.sqrt(g["re_slope_variance"]))
        assert g["re_sd"] == pytest.approx(np.sqrt(g["re_variance"]))
        assert "(1 + week | group)" in res.conventions["R"]
    assert fits["binomial_laplace"].glance["method"].iloc[0] == "Laplace"
    assert fits["gaussian_ml"].glance["method"].iloc[0] == "ML"


def test_intercept_only_fit_reports_no_slope(data):
    g = fit_glmm(data, formula="positive ~ mat + week", group_col="id").glance.iloc[0]
    assert np.isnan(g["re_slope_sd"]) and np.isnan(g["re_corr"]) and np.isnan(g["re_slope_variance"])


def test_row_order_does_not_matter(data, fits):
    res = fit_glmm(data.sample(frac=1.0, random_state=3), group_col="id", random_slope="week",
                   **CASES["binomial_laplace"])
    np.testing.assert_allclose(res.tidy["estimate"], fits["binomial_laplace"].tidy["estimate"], rtol=1e-6)
    assert res.glance["re_corr"].iloc[0] == pytest.approx(fits["binomial_laplace"].glance["re_corr"].iloc[0],
                                                          abs=1e-6)


def test_recovers_simulated_truth():
    """A slope sd of 0.3 and correlation -0.5 simulated on 600 patients x 10 weeks are recovered (gaussian)."""
    rng = np.random.default_rng(11)
    n, m = 600, 10
    grp = np.repeat(np.arange(n), m)
    week = np.tile(np.arange(m), n)
    cov = np.array([[1.0, -0.5 * 0.3], [-0.5 * 0.3, 0.09]])
    b = rng.multivariate_normal([0, 0], cov, n)
    y = 1.0 - 0.1 * week + b[grp, 0] + b[grp, 1] * week + rng.normal(0, 1, n * m)
    g = fit_glmm(pd.DataFrame({"g": grp, "week": week, "y": y}), formula="y ~ week", group_col="g",
                 family="gaussian", random_slope="week").glance.iloc[0]
    assert 0.25 < g["re_slope_sd"] < 0.35 and -0.7 < g["re_corr"] < -0.3 and 0.85 < g["re_sd"] < 1.15


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(nagq=5), ModelSpecificationError, "single scalar random effect"),
        (dict(profile=True), ModelSpecificationError, "profile=True"),
        (dict(random_slope="nope"), EstimatorInputError, "not found"),
        (dict(random_slope="id"), ModelSpecificationError, "other than the grouping column"),
        (dict(random_slope="grade"), EstimatorInputError, "random_slope"),
        (dict(random_slope="const"), ModelSpecificationError, "constant"),
    ],
)
def test_bad_input(data, kw, exc, match):
    d = data.assign(grade=np.where(data["week"] > 3, "late", "early"), const=1.0)
    args = dict(formula="positive ~ mat + week", group_col="id", random_slope="week") | kw
    with pytest.raises(exc, match=match) as info:
        fit_glmm(d, **args)
    assert isinstance(info.value, IopError)
