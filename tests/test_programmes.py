"""programme_rates: indirect standardisation with funnel limits, against R written out
(tests/r/programme_rates.R on tests/golden/data/programmes.csv), and a coverage study on simulated programmes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from iop_research.exceptions import IopError, ModelSpecificationError
from iop_research.longitudinal.programmes import PROGRAMME_RATE_COLUMNS, funnel_limits, programme_rates

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from programme_sim import simulate_programmes

KW = dict(programme_col="programme", outcome_col="completed", covariates=["age", "severe"])


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(GOLDEN_DIR / "data" / "programmes.csv")


def _check(g, d):
    res = programme_rates(d, **KW)
    t = res.tidy
    assert t["programme"].tolist() == g["programme"]
    assert t["n"].tolist() == g["n"] and t["observed"].tolist() == g["observed"]
    for ours, key in (("expected", "expected"), ("oe_ratio", "oe"), ("oe_conf_low", "oe_low"),
                      ("oe_conf_high", "oe_high"), ("rate_standardized", "rate"), ("limit95_low", "l95_low"),
                      ("limit95_high", "l95_high"), ("limit998_low", "l998_low"), ("limit998_high", "l998_high")):
        np.testing.assert_allclose(t[ours], g[key], rtol=1e-6, atol=1e-12, err_msg=ours)
    np.testing.assert_allclose(res.extra["case_mix"]["estimate"], g["coef"], rtol=1e-6)
    np.testing.assert_allclose(res.extra["case_mix"]["std_error"], g["se"], rtol=1e-4)


def test_programme_rates_match_r(data):
    _check(load_golden("programme_rates"), data)


@requires_r
def test_live_r_programme_rates(tmp_path, data):
    _check(run_r_script("programme_rates", tmp_path / "programme_rates.json"), data)


def test_table_and_flags(data):
    res = programme_rates(data, **KW)
    t = res.tidy
    assert tuple(t.columns) == PROGRAMME_RATE_COLUMNS
    assert t["observed"].sum() == pytest.approx(t["expected"].sum(), rel=1e-8)  # logistic MLE with an intercept
    out = (t["oe_ratio"] > t["limit998_high"]) | (t["oe_ratio"] < t["limit998_low"])
    assert (t["flag"] != "").tolist() == out.tolist()
    # limits narrow as the expected count grows, and contain 1
    order = np.argsort(t["expected"].to_numpy())
    assert np.all(np.diff(t["limit998_high"].to_numpy()[order]) <= 1e-12)
    assert ((t["limit95_low"] <= 1) & (t["limit95_high"] >= 1)).all()


def test_funnel_limits_are_poisson_quantiles_when_they_fall_on_integers():
    # E = 10: P(O <= 15) = 0.9513, so the 0.975 limit lies between 16/10 and 17/10, interpolated
    lim = funnel_limits([10.0], 0.975)[0]
    assert 1.6 <= lim <= 1.7
    assert funnel_limits([4.0], 0.001)[0] == 0.0  # never negative


def test_without_case_mix_the_rate_is_the_crude_rate(data):
    t = programme_rates(data, programme_col="programme", outcome_col="completed").tidy
    np.testing.assert_allclose(t["rate_standardized"], t["rate_crude"], rtol=1e-9)


def test_bad_input(data):
    with pytest.raises(ModelSpecificationError, match="must not be in the case-mix"):
        programme_rates(data, programme_col="programme", outcome_col="completed", covariates=["age", "programme"])
    with pytest.raises(IopError):
        programme_rates(data.assign(completed=data["completed"] * 2), **KW)


@pytest.mark.slow
def test_rates_cover_the_simulated_truth():
    """100 replicates of 12 programmes (15-400 patients, programme effects N(0, 0.4^2), case mix differing by
    programme). Truth per programme: sum of true probabilities over sum of the probabilities the population
    (no-programme) model gives its patients; the population model is fitted on 200 stacked replicates."""
    rng = np.random.default_rng(20261210)
    pop = pd.concat([simulate_programmes(rng)[0] for _ in range(200)], ignore_index=True)
    pop_fit = programme_rates(pop, **KW).extra["case_mix"]["estimate"].to_numpy()
    covered, total = 0, 0
    for _ in range(100):
        d, _effects = simulate_programmes(rng)
        t = programme_rates(d, **KW).tidy.set_index("programme")
        p_lim = expit(pop_fit[0] + pop_fit[1] * d["age"] + pop_fit[2] * d["severe"])
        truth = d.assign(p_lim=p_lim).groupby("programme").apply(
            lambda g: g["p_true"].sum() / g["p_lim"].sum(), include_groups=False)
        inside = (t["oe_conf_low"] <= truth) & (truth <= t["oe_conf_high"])
        covered += int(inside.sum())
        total += len(t)
    print(f"coverage {covered / total:.3f} over {total} programme-replicates")
    assert 0.90 <= covered / total <= 0.99


def test_funnel_and_caterpillar_leave_out_small_counts(data):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from iop_research.present import plot_caterpillar, plot_funnel
    from iop_research.present.plots import figure_caption

    small = data[data["programme"] != "P00"]
    tiny = pd.DataFrame({"programme": "P99", "age": [30.0, 40.0, 35.0, 50.0], "severe": [0, 1, 0, 1],
                         "completed": [1, 0, 0, 0]})
    res = programme_rates(pd.concat([small, tiny], ignore_index=True), **KW)
    t = res.tidy
    small_rows = ((t["observed"].between(1, 10)) | ((t["n"] - t["observed"]).between(1, 10)))
    hidden = t.loc[small_rows, "programme"].tolist()
    assert "P99" in hidden and len(hidden) == 3  # P99 (1 event), P01 (9), P02 (7)
    ax = plot_funnel(res)
    pts = [c for c in ax.collections if c.get_gid() == "programmes"][0].get_offsets()
    assert len(pts) == len(t) - 3
    assert "3 programmes with 1 to 10 events or non-events are not shown" in figure_caption(ax)
    assert len([ln for ln in ax.lines if ln.get_gid() == "limit998"]) == 2
    ax2 = plot_caterpillar(res)
    labels = [t.get_text() for t in ax2.get_yticklabels()]
    assert not set(hidden) & set(labels) and len(labels) == len(t) - 3
    shown = t[~small_rows].sort_values("rate_standardized")
    assert labels == shown["programme"].tolist()
    plt.close("all")
