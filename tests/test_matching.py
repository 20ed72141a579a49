"""ps_match: greedy nearest-neighbour propensity-score matching, against the algorithm written out in R
(tests/r/ps_match.R, MatchIt's documented method = "nearest" defaults), plus hand-built cases."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.designs.matching import MATCH_BALANCE_COLUMNS, MATCH_GLANCE_COLUMNS, ps_match
from iop_research.exceptions import IopError, ModelSpecificationError
from iop_research.survival.cox import fit_cox

from conftest import load_golden, requires_r, run_r_script

COVS = ["age", "female", "substance", "cesd", "homeless01"]
CASES = {"nn1": {}, "nn2": {"ratio": 2}, "nn1_replace": {"replace": True}, "nn1_nocal": {"caliper": None}}


def _check(golden, h):
    rn = h["rownames"]
    for key, kw in CASES.items():
        m = ps_match(h, treatment_col="treat01", covariates=COVS, **kw)
        g = golden[key]
        pairs = m.extra["pairs"]
        assert rn.loc[pairs["treated_row"]].tolist() == g["treated_row"], key
        assert rn.loc[pairs["control_row"]].tolist() == g["control_row"], key
        w = pd.Series(0.0, index=h.index)
        matched = m.extra["matched"]
        w.loc[matched.index] = matched["match_weight"].to_numpy()  # a reused control carries one weight
        np.testing.assert_allclose(w.to_numpy(), g["weight"], rtol=1e-12, err_msg=key)
        assert m.glance["caliper_logit"].iloc[0] == pytest.approx(
            np.inf if g["caliper_logit"] is None else g["caliper_logit"], rel=1e-9)  # R's Inf is JSON null


def test_matches_equal_r(help_cc):
    _check(load_golden("ps_match"), help_cc)


@requires_r
def test_live_r_ps_match(tmp_path, help_cc):
    _check(run_r_script("ps_match", tmp_path / "ps_match.json"), help_cc)


def _toy():
    # logit scores chosen by hand through a one-covariate model: x is the score's driver
    return pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 0.1, 1.05, 2.9, 8.0, 9.0],
                         "t": [1, 1, 1, 1, 0, 0, 0, 0, 1]})


def test_caliper_leaves_people_unmatched_and_counts_them():
    d = _toy()
    tight = ps_match(d, treatment_col="t", covariates=["x"], caliper=0.01)
    loose = ps_match(d, treatment_col="t", covariates=["x"], caliper=None)
    assert tight.glance["n_treated_unmatched"].iloc[0] > loose.glance["n_treated_unmatched"].iloc[0]
    att = tight.extra["attrition"].set_index("reason")["n"]
    assert att.iloc[0] == tight.glance["n_treated_unmatched"].iloc[0]
    assert att.iloc[0] + tight.glance["n_treated_matched"].iloc[0] == 5
    # without replacement no control is used twice; with replacement they may be
    assert not loose.extra["pairs"]["control_row"].duplicated().any()
    assert loose.glance["n_treated_matched"].iloc[0] == 4  # 4 controls for 5 treated


def test_each_treated_takes_its_nearest_available_control():
    d = _toy()
    m = ps_match(d, treatment_col="t", covariates=["x"], caliper=None, replace=True)
    ps = m.extra["matched"]["propensity"]
    pairs = m.extra["pairs"]
    logit = np.log(ps / (1 - ps))
    controls = d.index[d["t"] == 0]
    lg = pd.Series(logit.to_numpy(), index=m.extra["matched"].index).groupby(level=0).first()
    for _, p in pairs.iterrows():
        best = min(controls, key=lambda c: abs(lg[c] - lg[p["treated_row"]]))
        assert p["control_row"] == best


def test_matching_balances_and_fits_downstream(help_cc):
    m = ps_match(help_cc, treatment_col="treat01", covariates=COVS, replace=True)
    assert tuple(m.tidy.columns) == MATCH_BALANCE_COLUMNS and tuple(m.glance.columns) == MATCH_GLANCE_COLUMNS
    assert m.glance["max_abs_smd_matched"].iloc[0] < m.glance["max_abs_smd_before"].iloc[0]
    mt = m.extra["matched"]
    fit = fit_cox(mt.assign(pid=mt["rownames"]), duration_col="daysanysub", event_col="anysubstatus",
                  covariates=["treat01"], weights_col="match_weight", cluster_col="pid", robust=True)
    assert np.isfinite(fit.tidy["std_error"].iloc[0])


def test_bad_arguments_are_package_errors(help_cc):
    for kw in ({"caliper": 0}, {"caliper": True}, {"ratio": 0}, {"ratio": 1.5}, {"order": "biggest"}):
        with pytest.raises(ModelSpecificationError):
            ps_match(help_cc, treatment_col="treat01", covariates=COVS, **kw)
    with pytest.raises(IopError):
        ps_match(help_cc, treatment_col="nope", covariates=COVS)


def test_random_order_is_reproducible_with_a_seed(help_cc):
    a = ps_match(help_cc, treatment_col="treat01", covariates=COVS, order="random", seed=4).extra["pairs"]
    b = ps_match(help_cc, treatment_col="treat01", covariates=COVS, order="random", seed=4).extra["pairs"]
    pd.testing.assert_frame_equal(a, b)
