"""iptw_cox: the IPTW Cox model's M-estimation (stacked estimating equations) variance against R written out.

Golden values: tests/golden/iptw_cox.json (tests/r/iptw_cox.R: glm, coxph(weights, robust), residuals(type =
"score") and the stacked sandwich by hand). The coverage simulation is tests/test_causal.py::
test_iptw_cox_covers_marginal_truth (slow).
"""
from __future__ import annotations

import numpy as np
import pytest

from iop_research.designs.iptw_cox import IPTW_COX_EXTRA_COLUMNS, iptw_cox
from iop_research.exceptions import EstimatorInputError, IopError
from iop_research.survival.cox import COX_TIDY_COLUMNS

from conftest import load_golden, requires_r, run_r_script

COVS = ["age", "female", "substance", "cesd", "homeless01"]
CASES = {
    "ate_s": {"estimand": "ATE", "stabilized": True},
    "ate": {"estimand": "ATE", "stabilized": False},
    "att": {"estimand": "ATT"},
    "overlap": {"estimand": "overlap"},
    "ate_s_breslow": {"estimand": "ATE", "stabilized": True, "ties": "breslow"},
}


def _check(golden, help_cc):
    for key, kwargs in CASES.items():
        res = iptw_cox(help_cc, treatment_col="treat01", duration_col="daysanysub", event_col="anysubstatus",
                       covariates=COVS, **kwargs)
        g = golden[key]
        row = res.tidy.iloc[0]
        var = res.extra["variance"].iloc[0]
        assert row["estimate"] == pytest.approx(g["coef"], rel=1e-6), key
        assert row["std_error"] == pytest.approx(g["se_m"], rel=1e-4), key
        assert var["std_error_robust_weights_known"] == pytest.approx(g["se_robust"], rel=1e-4), key
        assert var["std_error_naive"] == pytest.approx(g["se_naive"], rel=1e-4), key


def test_m_estimation_variance_matches_r(help_cc):
    _check(load_golden("iptw_cox"), help_cc)


@requires_r
def test_live_r_iptw_cox(tmp_path, help_cc):
    _check(run_r_script("iptw_cox", tmp_path / "iptw_cox.json"), help_cc)


def test_result_shape_and_interval(help_cc):
    res = iptw_cox(help_cc, treatment_col="treat01", duration_col="daysanysub", event_col="anysubstatus",
                   covariates=COVS)
    assert tuple(res.tidy.columns) == COX_TIDY_COLUMNS
    assert tuple(res.extra["variance"].columns) == IPTW_COX_EXTRA_COLUMNS
    row = res.tidy.iloc[0]
    assert row["conf_low"] == pytest.approx(row["estimate"] - 1.959963984540054 * row["std_error"], rel=1e-12)
    assert row["hazard_ratio"] == pytest.approx(np.exp(row["estimate"]))
    assert res.glance["se_ratio"].iloc[0] < 1  # estimated weights: the ATE interval narrows


def test_cluster_sums_contributions_within_patient(help_cc):
    """Each row its own cluster gives the unclustered variance; pairing rows changes it."""
    kw = dict(treatment_col="treat01", duration_col="daysanysub", event_col="anysubstatus", covariates=COVS)
    base = iptw_cox(help_cc, **kw).tidy["std_error"].iloc[0]
    own = iptw_cox(help_cc.assign(pid=np.arange(len(help_cc))), cluster_col="pid", **kw).tidy["std_error"].iloc[0]
    assert own == pytest.approx(base, rel=1e-10)
    paired = iptw_cox(help_cc.assign(pid=np.arange(len(help_cc)) // 2), cluster_col="pid", **kw).tidy["std_error"].iloc[0]
    assert paired != pytest.approx(base, rel=1e-3)


def test_bad_input_is_a_package_error(help_cc):
    with pytest.raises(EstimatorInputError, match="nope"):
        iptw_cox(help_cc, treatment_col="treat01", duration_col="nope", event_col="anysubstatus", covariates=COVS)
    with pytest.raises(IopError):
        iptw_cox(help_cc, treatment_col="treat01", duration_col="daysanysub", event_col="anysubstatus",
                 covariates=COVS, estimand="ATX")
