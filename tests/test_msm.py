"""msm_cox: marginal structural Cox model with stabilised time-varying IPTW, against R written out
(tests/r/msm.R on tests/golden/data/msm.csv), input checks, and a 200-replicate study on data from a known MSM
(tests/msm_sim.py) where the time-varying Cox models, with or without the confounder, are biased."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.designs.msm import MSM_GLANCE_COLUMNS, MSM_WEIGHT_COLUMNS, msm_cox
from iop_research.exceptions import EstimatorInputError, ModelSpecificationError
from iop_research.survival.cox import fit_cox

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from msm_sim import simulate_msm

KW = dict(id_col="pid", start_col="start", stop_col="stop", event_col="event", treatment_col="on_mat",
          treatment_covariates=["mat_last_week", "positive_screen"], stabilizing_covariates=["mat_last_week"])


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(GOLDEN_DIR / "data" / "msm.csv")


def _check(g, d):
    for key, extra in (("all_rows", {}), ("truncated", {"truncate": 0.01}),
                       ("untreated_before", {"model_rows": "untreated_before"})):
        res = msm_cox(d.assign(untreated_before=d["mat_last_week"] == 0), **KW, **extra)
        assert res.tidy["estimate"].iloc[0] == pytest.approx(g[key]["coef"], rel=1e-6), key
        assert res.tidy["std_error"].iloc[0] == pytest.approx(g[key]["se"], rel=1e-4), key
        assert res.glance["max_weight"].iloc[0] == pytest.approx(g[key]["max_w"], rel=1e-6), key
        assert res.glance["mean_weight"].iloc[0] == pytest.approx(g[key]["mean_w"], rel=1e-6), key
        np.testing.assert_allclose(res.extra["weights"]["weight"].to_numpy()[:20], g[key]["w_head"], rtol=1e-6)
    for key, covs in (("tv_unadjusted", ["on_mat"]), ("tv_adjusted", ["on_mat", "positive_screen"])):
        f = fit_cox(d, start_col="start", stop_col="stop", event_col="event", covariates=covs, cluster_col="pid")
        np.testing.assert_allclose(f.tidy["estimate"], g[key]["coef"], rtol=1e-6)


def test_msm_matches_r(data):
    _check(load_golden("msm"), data)


@requires_r
def test_live_r_msm(tmp_path, data):
    _check(run_r_script("msm", tmp_path / "msm.json"), data)


def test_result_tables(data):
    res = msm_cox(data, **KW)
    assert tuple(res.glance.columns) == MSM_GLANCE_COLUMNS
    assert tuple(res.extra["weights"].columns) == MSM_WEIGHT_COLUMNS
    assert res.glance["n_persons"].iloc[0] == data["pid"].nunique()
    assert set(res.extra["treatment_models"]["model"]) == {"denominator", "numerator"}


def test_bad_input_is_a_package_error(data):
    with pytest.raises(EstimatorInputError, match="not sorted"):
        msm_cox(data.sample(frac=1.0, random_state=1), **KW)
    bad = data.copy()
    second = bad.index[bad["pid"].duplicated()][0]
    bad.loc[second, "start"] -= 0.5
    with pytest.raises(EstimatorInputError, match="overlapping"):
        msm_cox(bad, **KW)
    with pytest.raises(ModelSpecificationError, match="nested"):
        msm_cox(data, **{**KW, "stabilizing_covariates": ["mat_last_week", "pid"]})
    with pytest.raises(ModelSpecificationError, match="truncate"):
        msm_cox(data, truncate=0.7, **KW)


@pytest.mark.slow
def test_msm_covers_the_truth_where_time_varying_cox_is_biased():
    """200 replicates of 2,000 people, 12 weeks. Truth: log HR log(0.5) of the data-generating MSM."""
    rng = np.random.default_rng(20261209)
    truth = np.log(0.5)
    est = {"msm": [], "tv_unadjusted": [], "tv_adjusted": []}
    cover = 0
    reps = 200
    for _ in range(reps):
        d = simulate_msm(rng, 2000)
        r = msm_cox(d, **KW).tidy.iloc[0]
        est["msm"].append(r["estimate"])
        cover += r["conf_low"] <= truth <= r["conf_high"]
        for key, covs in (("tv_unadjusted", ["on_mat"]), ("tv_adjusted", ["on_mat", "positive_screen"])):
            est[key].append(fit_cox(d, start_col="start", stop_col="stop", event_col="event",
                                    covariates=covs).tidy["estimate"].iloc[0])
    sd = np.std(est["msm"], ddof=1)
    print({k: round(float(np.mean(v)), 4) for k, v in est.items()}, f"SD {sd:.4f}", f"coverage {cover / reps:.3f}")
    assert abs(np.mean(est["msm"]) - truth) < 0.1 * sd
    assert 0.93 <= cover / reps <= 0.97
    for key in ("tv_unadjusted", "tv_adjusted"):
        assert abs(np.mean(est[key]) - truth) > 1.0 * sd, key
