"""programme_rates(method="hierarchical"): CMS-style risk-standardised rates (random programme intercepts,
predicted / expected x overall rate) against lme4 written out (tests/r/programme_rates_hier.R on
tests/golden/data/programmes.csv; point estimates 1e-4); the posterior intervals' deterministic parts (joint
mode and Laplace marginal likelihood at fixed SDs) against R written out (tests/r/programme_rates_post.R),
their sampling law, the CMS bootstrap, shrinkage, bad input.

The intervals are random (R has no reference implementation of either); they are checked for their
construction (reproducible with a seed, contain the estimate's neighbourhood, wider for small programmes, the
draws' law) here and for coverage in benchmarks/sim_programmes.py --study rates (benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from iop_research.exceptions import IopError, ModelSpecificationError
from iop_research.longitudinal.programmes import (
    HIERARCHICAL_RATE_COLUMNS,
    _draw_effects,
    _joint_mode,
    programme_rates,
)

KW = dict(programme_col="programme", outcome_col="completed", covariates=["age", "severe"])


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(GOLDEN_DIR / "data" / "programmes.csv")


@pytest.fixture(scope="module")
def res(data):
    return programme_rates(data, method="hierarchical", n_boot=60, seed=3, interval="bootstrap", **KW)


@pytest.fixture(scope="module")
def post(data):
    return programme_rates(data, method="hierarchical", n_boot=2000, seed=3, **KW)


def _check(res, g):
    t = res.tidy
    assert t["programme"].tolist() == g["programme"]
    for ours, key in (("predicted", "predicted"), ("expected", "expected"), ("pe_ratio", "ratio"),
                      ("rate_standardized", "rate"), ("random_effect_sd", "random_effect_sd")):
        np.testing.assert_allclose(t[ours], g[key], rtol=1e-4, err_msg=ours)
    np.testing.assert_allclose(t["random_effect"], g["random_effect"], atol=1e-4)
    np.testing.assert_allclose(res.extra["case_mix"]["estimate"], g["coef"], rtol=1e-4)
    np.testing.assert_allclose(res.extra["case_mix"]["std_error"], g["se"], rtol=1e-3)
    assert res.glance["re_sd"].iloc[0] == pytest.approx(g["re_sd"], rel=1e-4)


def test_matches_lme4_written_out(res):
    _check(res, load_golden("programme_rates_hier"))


@requires_r
def test_matches_lme4_live(res, tmp_path):
    _check(res, run_r_script("programme_rates_hier", tmp_path / "programme_rates_hier.json"))


def test_table_and_definitions(res, data):
    t = res.tidy
    assert tuple(t.columns) == HIERARCHICAL_RATE_COLUMNS
    overall = data["completed"].mean()
    np.testing.assert_allclose(t["rate_standardized"], t["predicted"] / t["expected"] * overall, rtol=1e-12)
    np.testing.assert_allclose(t["conf_low"], t["pe_conf_low"] * overall, rtol=1e-12)
    # a programme's predicted count is above its expected count exactly when its random effect is positive
    assert ((t["predicted"] > t["expected"]) == (t["random_effect"] > 0)).all()
    assert (t["pe_conf_low"] < t["pe_ratio"]).all() and (t["pe_ratio"] < t["pe_conf_high"]).all()
    # every programme was drawn in some replicates (about 1 - (11/12)^12 = 65% of them)
    assert t["n_boot"].between(25, 55).all()
    flag = np.where(t["conf_low"] > overall, "above", np.where(t["conf_high"] < overall, "below", ""))
    assert t["flag"].tolist() == flag.tolist()
    g = res.glance.iloc[0]
    assert g["n_boot"] == 60 and g["n_boot_failed"] == 0 and g["n"] == len(data)


def test_small_programmes_shrink_toward_the_average(res, data):
    """The hierarchical ratio of a small programme lies between 1 and its indirect O/E (shrinkage), and its
    interval is wider than a large programme's."""
    t = res.tidy.set_index("programme")
    oe = programme_rates(data, **KW).tidy.set_index("programme")["oe_ratio"]
    small = t.index[t["n"] <= 40]
    assert len(small) == 4
    assert (np.abs(t.loc[small, "pe_ratio"] - 1) < np.abs(oe[small] - 1)).all()
    width = t["pe_conf_high"] - t["pe_conf_low"]
    assert width[small].min() > width[t["n"] >= 300].max() * 0.5
    assert (t["random_effect_sd"][small].min() > t["random_effect_sd"][t["n"] >= 300].max())


@pytest.mark.parametrize("interval", ["bootstrap", "posterior"])
def test_intervals_are_reproducible(data, interval):
    a = programme_rates(data, method="hierarchical", n_boot=15, seed=7, interval=interval, **KW).tidy
    b = programme_rates(data, method="hierarchical", n_boot=15, seed=7, interval=interval, **KW).tidy
    pd.testing.assert_frame_equal(a, b)
    c = programme_rates(data, method="hierarchical", n_boot=15, seed=8, interval=interval, **KW).tidy
    assert not np.allclose(a["pe_conf_low"], c["pe_conf_low"])
    none = programme_rates(data, method="hierarchical", n_boot=0, interval=interval, **KW).tidy
    assert none["conf_low"].isna().all() and (none["flag"] == "").all()
    np.testing.assert_allclose(none["pe_ratio"], a["pe_ratio"], rtol=1e-12)


def _arrays(data):
    """Design matrix (intercept, age, severe), outcome, programme codes and labels, as programme_rates builds them."""
    from iop_research._validate import label_codes

    codes, levels = label_codes(data, "programme", func="t", role="programme")
    x = np.column_stack([np.ones(len(data)), data["age"], data["severe"]]).astype(float)
    return x, data["completed"].to_numpy(float), codes, levels


def _check_post(data, g):
    """Our joint mode and log marginal likelihood at the SDs R used (differences between SDs, which is what the
    grid posterior uses)."""
    x, y, codes, levels = _arrays(data)
    assert list(levels) == g["programme"]
    k = len(levels)
    lm = []
    for i, theta in enumerate(g["theta"]):
        beta, v, *_, logml = _joint_mode(x, y, codes, k, theta, np.zeros(3), np.zeros(k))
        np.testing.assert_allclose(beta, g["beta"][i], atol=1e-7, err_msg=f"beta at theta {theta}")
        np.testing.assert_allclose(v, g["v"][i], atol=1e-7, err_msg=f"v at theta {theta}")
        lm.append(logml)
    np.testing.assert_allclose(np.diff(lm), np.diff(g["log_marginal"]), atol=1e-7)


def test_posterior_parts_match_r_written_out(data):
    _check_post(data, load_golden("programme_rates_post"))


@requires_r
def test_posterior_parts_match_r_live(data, tmp_path):
    _check_post(data, run_r_script("programme_rates_post", tmp_path / "programme_rates_post.json"))


def test_effect_draws_follow_the_joint_normal(data):
    """The factorised draw (beta marginal, then v given beta) has the joint normal law N(mode, H^-1), with H
    built densely here: means and covariances of 100,000 draws within Monte Carlo error."""
    x, y, codes, levels = _arrays(data)
    k, theta = len(levels), 0.4
    mode = _joint_mode(x, y, codes, k, theta, np.zeros(3), np.zeros(k))[:5]
    betas, v = _draw_effects(mode, 100_000, np.random.default_rng(5))
    draws = np.vstack([betas, v])
    m = np.column_stack([x, theta * np.eye(k)[codes]])
    mu = 1 / (1 + np.exp(-(m @ np.r_[mode[0], mode[1]])))
    h = (m * (mu * (1 - mu))[:, None]).T @ m + np.diag(np.r_[np.zeros(3), np.ones(k)])
    cov = np.linalg.inv(h)
    sd = np.sqrt(np.diag(cov))
    z = (draws.mean(axis=1) - np.r_[mode[0], mode[1]]) / (sd / np.sqrt(100_000))
    assert np.abs(z).max() < 4.5
    emp = np.cov(draws)
    np.testing.assert_allclose(emp / np.outer(sd, sd), cov / np.outer(sd, sd), atol=0.015)


def test_posterior_intervals(post, res, data):
    """Default intervals: draws from the approximate posterior. They contain the estimate, all programmes get
    every draw, small programmes' intervals are wider, the SD posterior is a normalised grid over the estimate,
    and the convention says how they were made."""
    t = post.tidy
    assert (t["pe_conf_low"] < t["pe_ratio"]).all() and (t["pe_ratio"] < t["pe_conf_high"]).all()
    assert (t["n_boot"] == 2000).all() and post.glance["n_boot_failed"].iloc[0] == 0
    width = (t["pe_conf_high"] - t["pe_conf_low"]).to_numpy()
    assert width[t["n"] <= 40].mean() > 1.2 * width[t["n"] >= 300].mean()
    sd = post.extra["sd_posterior"]
    assert sd["weight"].sum() == pytest.approx(1.0) and (np.diff(sd["sd"]) > 0).all()
    # posterior = Laplace marginal likelihood x half-Cauchy(0, 1) prior on the SD, normalised on the grid
    w = np.exp(sd["log_marginal"] - sd["log_marginal"].max()) / (1 + sd["sd"] ** 2)
    np.testing.assert_allclose(sd["weight"], w / w.sum(), rtol=1e-12)
    assert sd["weight"].iloc[-1] < 1e-4  # the grid reaches where the posterior is negligible
    assert sd["sd"].min() > 0 and sd["sd"].iloc[sd["weight"].argmax()] == pytest.approx(
        post.glance["re_sd"].iloc[0], abs=0.25)
    assert "posterior" in post.conventions["interval"] and "bootstrap" in res.conventions["interval"]
    np.testing.assert_allclose(t["pe_ratio"], res.tidy["pe_ratio"], rtol=1e-12)


def test_six_programmes_one_all_completing():
    """Leaving the demo path: 300 patients in 6 programmes, one of which completed all its 47 patients (its
    effect is unbounded by its own data, the ML SD is 1.3). The SD's posterior stays proper under the prior, the
    intervals are finite and contain the estimates."""
    from scipy.special import expit

    rng = np.random.default_rng(3)
    site = rng.integers(0, 6, 300)
    u, age = rng.normal(0, 0.4, 6), rng.normal(35, 9, 300)
    d = pd.DataFrame({"site": [f"S{s}" for s in site], "age": age,
                      "done": rng.binomial(1, expit(0.3 - 0.03 * (age - 35) + u[site]))})
    d.loc[d["site"] == "S0", "done"] = 1
    r = programme_rates(d, programme_col="site", outcome_col="done", covariates=["age"], method="hierarchical",
                        n_boot=500)
    t = r.tidy
    assert t.loc[0, "observed"] == t.loc[0, "n"] == 47
    assert np.isfinite(t[["pe_conf_low", "pe_conf_high"]].to_numpy()).all()
    assert (t["pe_conf_low"] < t["pe_ratio"]).all() and (t["pe_ratio"] < t["pe_conf_high"]).all()
    assert t["pe_conf_high"].max() < 4 and r.extra["sd_posterior"]["weight"].iloc[-1] < 1e-3


def test_bad_input(data):
    with pytest.raises(ModelSpecificationError, match="method must be"):
        programme_rates(data, method="cms", **KW)
    with pytest.raises(ModelSpecificationError, match="n_boot"):
        programme_rates(data, method="hierarchical", n_boot=-1, **KW)
    with pytest.raises(ModelSpecificationError, match="interval must be"):
        programme_rates(data, method="hierarchical", interval="cms", **KW)
    with pytest.raises(ModelSpecificationError, match="at least 5 programmes"):
        programme_rates(data.assign(programme="P00"), method="hierarchical", **KW)
    four = data[data["programme"].isin(["P00", "P04", "P08", "P11"])]
    with pytest.raises(ModelSpecificationError, match="4 programmes.*method='indirect'"):
        programme_rates(four, method="hierarchical", **KW)
    with pytest.raises(IopError):
        programme_rates(data.assign(completed=data["completed"] * 2), method="hierarchical", **KW)


def test_plots_of_hierarchical_rates(res):
    """The caterpillar plot draws hierarchical rates (and says how they were made); the funnel plot, whose
    limits hold for observed / expected under no programme effect, refuses them with the way out."""
    import matplotlib

    matplotlib.use("Agg")
    from iop_research.exceptions import IopError
    from iop_research.present import plot_caterpillar, plot_funnel

    ax = plot_caterpillar(res, min_cell_count=1)
    assert "shrunken random effect" in ax.iop_caption
    assert len(ax.get_yticklabels()) == len(res.tidy)
    with pytest.raises(IopError, match="method='indirect'"):
        plot_funnel(res)
