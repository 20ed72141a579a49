"""fit_gee against R geepack::geeglm (robust "san.se" SEs), bad input, and CI coverage.

Golden values: ``tests/golden/gee.json`` from ``tests/r/gee.R`` on ``tests/golden/data/gee_uds.csv``
(written by ``tests/r/make_gee_data.py``: 300 patients, 4-12 scheduled weeks, ~15% of weeks missed,
a patient random intercept). R is run with ``geese.control(epsilon = 1e-12)`` so both sides are
fully converged; estimates agree to 1e-6 and SEs to 1e-6 (the brief asks 1e-4 / 1e-3).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from iop_research.exceptions import ConvergenceError, EstimatorInputError, IopError, ModelSpecificationError
from iop_research.longitudinal.gee import GLANCE_GEE_COLUMNS, TIDY_GEE_COLUMNS, fit_gee
from iop_research.results import TIDY_TERM_COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parent / "r"))
from make_gee_data import TRUE_LOG_OR, make_uds  # noqa: E402

TOL_EST = 1e-6
TOL_SE = 1e-6
BIN = "positive ~ mat + week + female + age + site"
GAU = "craving ~ mat + week + age"
R_TERMS = {"site[T.south]": "sitesouth", "site[T.west]": "sitewest"}


@pytest.fixture(scope="module")
def uds() -> pd.DataFrame:
    d = pd.read_csv(GOLDEN_DIR / "data" / "gee_uds.csv")
    return d.assign(w=1 + d["id"] % 3)


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("gee")


CASES = {
    **{f"binomial_{cs}": dict(formula=BIN, family="binomial", corstr=cs, time_col="week")
       for cs in ("exchangeable", "ar1", "independence")},
    **{f"gaussian_{cs}": dict(formula=GAU, family="gaussian", corstr=cs, time_col="week")
       for cs in ("exchangeable", "ar1", "independence")},
    "binomial_ar1_nowaves": dict(formula=BIN, family="binomial", corstr="ar1"),
    "gaussian_exchangeable_weighted": dict(formula=GAU, family="gaussian", corstr="exchangeable",
                                           time_col="week", weights_col="w"),
    "binomial_exchangeable_weighted": dict(formula=BIN, family="binomial", corstr="exchangeable",
                                           time_col="week", weights_col="w"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_geepack(uds, golden, case):
    res = fit_gee(uds, id_col="id", **CASES[case])
    r = golden[case]
    assert [R_TERMS.get(t, t) for t in res.tidy["term"]] == r["term"]
    np.testing.assert_allclose(res.tidy["estimate"], r["estimate"], rtol=0, atol=TOL_EST)
    np.testing.assert_allclose(res.tidy["std_error"], r["std_error"], rtol=0, atol=TOL_SE)
    np.testing.assert_allclose(res.tidy["p_value"], r["p_value"], rtol=1e-5, atol=1e-12)
    g = res.glance.iloc[0]
    assert g["scale"] == pytest.approx(r["scale"], abs=1e-8)
    if r["alpha"] is None:
        assert np.isnan(g["alpha"])
    else:
        assert g["alpha"] == pytest.approx(r["alpha"], abs=1e-8)
    assert g["n_clusters"] == r["n_clusters"]
    assert g["max_cluster_size"] == r["max_cluster_size"]
    assert g["n_obs"] == len(uds)
    assert bool(g["converged"])


def test_result_contract(uds):
    res = fit_gee(uds, formula=BIN, id_col="id", corstr="exchangeable", time_col="week")
    assert tuple(res.tidy.columns) == TIDY_GEE_COLUMNS
    assert tuple(res.glance.columns) == GLANCE_GEE_COLUMNS
    assert res.tidy["term"].iloc[0] == "(Intercept)"
    row = res.tidy.set_index("term").loc["site[T.south]"]
    assert row["label"] == "Site: south"
    assert row["odds_ratio"] == pytest.approx(np.exp(row["estimate"]))
    z = stats.norm.ppf(0.975)
    assert row["conf_high"] == pytest.approx(row["estimate"] + z * row["std_error"])
    assert row["or_conf_low"] == pytest.approx(np.exp(row["estimate"] - z * row["std_error"]))
    vc = res.extra["vcov"].set_index("term")
    np.testing.assert_allclose(np.sqrt(np.diag(vc.to_numpy())), res.tidy["std_error"], rtol=1e-12)
    gau = fit_gee(uds, formula=GAU, id_col="id", family="gaussian", corstr="independence")
    assert tuple(gau.tidy.columns) == TIDY_TERM_COLUMNS
    narrow = fit_gee(uds, formula=BIN, id_col="id", corstr="exchangeable", time_col="week", conf_level=0.5)
    assert (narrow.tidy["conf_high"] - narrow.tidy["conf_low"] < res.tidy["conf_high"] - res.tidy["conf_low"]).all()


def test_row_order_does_not_matter(uds):
    """Clusters are grouped by id and ordered by time_col whatever the row order (geepack needs sorted data)."""
    a = fit_gee(uds, formula=BIN, id_col="id", corstr="ar1", time_col="week")
    shuffled = uds.sample(frac=1.0, random_state=3)
    b = fit_gee(shuffled, formula=BIN, id_col="id", corstr="ar1", time_col="week")
    np.testing.assert_allclose(a.tidy["estimate"], b.tidy["estimate"], atol=1e-10)
    np.testing.assert_allclose(a.tidy["std_error"], b.tidy["std_error"], atol=1e-10)


def test_zero_weight_rows_contribute_nothing_to_independence_fit(uds):
    """Under independence a zero-weight row is the same as an absent row (estimates; the scale divides by sum w)."""
    w0 = uds.assign(w=np.where(uds.index % 7 == 0, 0.0, 1.0))
    a = fit_gee(w0, formula=BIN, id_col="id", corstr="independence", weights_col="w")
    b = fit_gee(uds[uds.index % 7 != 0], formula=BIN, id_col="id", corstr="independence")
    np.testing.assert_allclose(a.tidy["estimate"], b.tidy["estimate"], atol=1e-9)
    np.testing.assert_allclose(a.tidy["std_error"], b.tidy["std_error"], atol=1e-9)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(family="poisson"), ModelSpecificationError, "family must be one of"),
        (dict(corstr="unstructured"), ModelSpecificationError, "corstr must be one of"),
        (dict(formula="mat + week"), ModelSpecificationError, "response ~ terms"),
        (dict(formula="log(positive) ~ mat"), ModelSpecificationError, "must be a column name"),
        (dict(formula="nope ~ mat"), EstimatorInputError, "not found"),
        (dict(formula="positive ~ mat + nope"), EstimatorInputError, "not found"),
        (dict(id_col="patient"), EstimatorInputError, "not found"),
        (dict(formula="craving ~ mat"), EstimatorInputError, "other than 0/1"),
        (dict(conf_level=1.5), ModelSpecificationError, "conf_level"),
        (dict(time_col="mat", corstr="ar1"), EstimatorInputError, "repeats within a cluster"),
    ],
)
def test_bad_input(uds, kw, exc, match):
    args = dict(formula=BIN, id_col="id") | kw
    with pytest.raises(exc, match=match) as info:
        fit_gee(uds, **args)
    assert isinstance(info.value, IopError)


def test_bad_values(uds):
    bad = uds.copy()
    bad.loc[bad.index[4], "positive"] = np.nan
    with pytest.raises(EstimatorInputError, match="missing"):
        fit_gee(bad, formula=BIN, id_col="id")
    neg = uds.assign(w=-uds["w"])
    with pytest.raises(EstimatorInputError, match="negative"):
        fit_gee(neg, formula=BIN, id_col="id", weights_col="w")
    with pytest.raises(ModelSpecificationError, match="both outcomes"):
        fit_gee(uds.assign(positive=1), formula=BIN, id_col="id")
    single = uds.drop_duplicates("id")
    with pytest.raises(ModelSpecificationError, match="one row"):
        fit_gee(single, formula=BIN, id_col="id", corstr="exchangeable")
    with pytest.raises(ModelSpecificationError, match="linear combination|constant"):
        fit_gee(uds.assign(mat2=2 * uds["mat"]), formula="positive ~ mat + mat2", id_col="id")
    with pytest.raises(ModelSpecificationError, match="every weight"):
        fit_gee(uds.assign(w=0.0), formula=BIN, id_col="id", weights_col="w")


def test_separation_is_a_convergence_error(uds):
    """Every screen positive at site 'west' (quasi-separation): an error naming the cause, never NaN estimates."""
    sep = uds.assign(positive=np.where(uds["site"] == "west", 1, uds["positive"]))
    with pytest.raises(ConvergenceError, match="separation"):
        fit_gee(sep, formula=BIN, id_col="id", time_col="week")


def _copula_uds(rng: np.random.Generator, n_patients: int, beta_mat: float, rho: float = 0.4) -> pd.DataFrame:
    """Binary screens whose *marginal* model is exactly logit P = -0.3 + beta_mat * mat - 0.05 * week.

    A Gaussian copula (latent normal with exchangeable correlation rho within a patient) makes the
    screens of a patient correlated while each screen keeps its marginal probability, so the GEE
    (a marginal model) has a known true coefficient; random-intercept data would attenuate it.
    """
    sizes = rng.integers(3, 9, n_patients)
    pid = np.repeat(np.arange(n_patients), sizes)
    week = np.concatenate([np.arange(1, s + 1) for s in sizes])
    mat = np.repeat(rng.integers(0, 2, n_patients), sizes)
    latent = np.sqrt(rho) * np.repeat(rng.normal(size=n_patients), sizes) + np.sqrt(1 - rho) * rng.normal(size=len(pid))
    prob = 1 / (1 + np.exp(-(-0.3 + beta_mat * mat - 0.05 * week)))
    positive = (stats.norm.cdf(latent) < prob).astype(int)
    return pd.DataFrame({"id": pid, "week": week, "mat": mat, "positive": positive})


@pytest.mark.parametrize("corstr", ["exchangeable", "ar1"])
def test_ci_covers_true_effect(corstr):
    """100 replicates of 120 patients: the 95% robust CI of the mat log-OR covers the truth in 88-99%."""
    rng = np.random.default_rng(11)
    beta = -0.7
    hits = 0
    for _ in range(100):
        d = _copula_uds(rng, 120, beta)
        row = fit_gee(d, formula="positive ~ mat + week", id_col="id", corstr=corstr,
                      time_col="week").tidy.set_index("term").loc["mat"]
        hits += int(row["conf_low"] <= beta <= row["conf_high"])
    assert 88 <= hits <= 99, hits


def test_simulator_effect_recovered_on_golden_data(uds):
    """The golden data's conditional log-OR (-0.7, patient sd 1) is attenuated in the marginal model
    by about 1/sqrt(1 + 0.346 * sigma^2) = 0.86 (Zeger, Liang & Albert 1988): the GEE estimate lies
    within 2 SE of -0.7 * 0.86."""
    res = fit_gee(uds, formula=BIN, id_col="id", corstr="exchangeable", time_col="week")
    row = res.tidy.set_index("term").loc["mat"]
    target = TRUE_LOG_OR / np.sqrt(1 + 0.346)
    assert abs(row["estimate"] - target) < 2 * row["std_error"]


def test_data_file_is_the_generator_output(uds):
    fresh = make_uds()
    pd.testing.assert_frame_equal(fresh, uds.drop(columns="w"), check_dtype=False)


@requires_r
@pytest.mark.r
def test_golden_reproduces_live(tmp_path):
    """Rscript --vanilla tests/r/gee.R <datasets_dir> <out_json> reproduces the committed JSON."""
    live = run_r_script("gee", tmp_path / "gee.json")
    committed = load_golden("gee")
    assert live.keys() == committed.keys()
    for key, val in committed.items():
        if key in ("R_version", "geepack"):
            continue
        assert live[key]["term"] == val["term"]
        np.testing.assert_allclose(live[key]["estimate"], val["estimate"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(live[key]["std_error"], val["std_error"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("corstr", ["exchangeable", "independence"])
def test_agrees_with_statsmodels_where_statsmodels_matches_geepack(uds, corstr):
    """statsmodels GEE with ddof_scale=0 uses geepack's moment estimators for these two structures."""
    import warnings

    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    cov = sm.cov_struct.Exchangeable() if corstr == "exchangeable" else sm.cov_struct.Independence()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smf.gee(BIN, groups="id", data=uds, family=sm.families.Binomial(), cov_struct=cov).fit(ddof_scale=0)
    ours = fit_gee(uds, formula=BIN, id_col="id", corstr=corstr, time_col="week").tidy.set_index("term")
    names = {"Intercept": "(Intercept)"}
    np.testing.assert_allclose(ours["estimate"], ref.params.rename(names)[ours.index], atol=1e-8)
    np.testing.assert_allclose(ours["std_error"], ref.bse.rename(names)[ours.index], atol=1e-8)
