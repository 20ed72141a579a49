"""programme_rates(method="hierarchical"): CMS-style risk-standardised rates (random programme intercepts,
predicted / expected x overall rate) against lme4 written out (tests/r/programme_rates_hier.R on
tests/golden/data/programmes.csv; point estimates 1e-4), the CMS bootstrap, shrinkage, bad input.

The bootstrap intervals are random (R has no reference implementation); they are checked for their
construction (reproducible with a seed, contain the estimate's neighbourhood, wider for small programmes) here
and for coverage in benchmarks/sim_programmes.py --study rates (benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from iop_research.exceptions import IopError, ModelSpecificationError
from iop_research.longitudinal.programmes import HIERARCHICAL_RATE_COLUMNS, programme_rates

KW = dict(programme_col="programme", outcome_col="completed", covariates=["age", "severe"])


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(GOLDEN_DIR / "data" / "programmes.csv")


@pytest.fixture(scope="module")
def res(data):
    return programme_rates(data, method="hierarchical", n_boot=60, seed=3, **KW)


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


def test_bootstrap_is_reproducible(data):
    a = programme_rates(data, method="hierarchical", n_boot=15, seed=7, **KW).tidy
    b = programme_rates(data, method="hierarchical", n_boot=15, seed=7, **KW).tidy
    pd.testing.assert_frame_equal(a, b)
    none = programme_rates(data, method="hierarchical", n_boot=0, **KW).tidy
    assert none["conf_low"].isna().all() and (none["flag"] == "").all()
    np.testing.assert_allclose(none["pe_ratio"], a["pe_ratio"], rtol=1e-12)


def test_bad_input(data):
    with pytest.raises(ModelSpecificationError, match="method must be"):
        programme_rates(data, method="cms", **KW)
    with pytest.raises(ModelSpecificationError, match="n_boot"):
        programme_rates(data, method="hierarchical", n_boot=-1, **KW)
    with pytest.raises(ModelSpecificationError, match="single programme"):
        programme_rates(data.assign(programme="P00"), method="hierarchical", **KW)
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
