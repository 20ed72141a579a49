"""Cross-checks against lifelines, where lifelines computes the same quantity.

lifelines is not a runtime dependency: it is the ``crosscheck`` test extra, installed in the
pandas 2.2 test environment (``make test-pandas2``) because lifelines 0.30 requires pandas < 3.
In that environment ``IOP_REQUIRE_LIFELINES=1`` turns a missing lifelines into a failure, so
these tests cannot be skipped silently where they are meant to run. R stays the reference
(``tests/test_km.py``, ``tests/test_cox.py``, ...); these tests show that a user moving from
lifelines gets the same numbers where the two conventions agree.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from iop_research.survival import cumulative_incidence, fit_cox, fit_km, logrank_test, rmst

if os.environ.get("IOP_REQUIRE_LIFELINES") == "1":
    import lifelines  # noqa: F401  (fails the module, not skips, where it must run)
lifelines = pytest.importorskip("lifelines", reason="lifelines is the `crosscheck` extra (pandas < 3 only)")

pytestmark = pytest.mark.lifelines


@pytest.fixture(scope="module")
def uis(uis_path) -> pd.DataFrame:
    df = pd.read_csv(uis_path)
    return df.dropna(subset=["AGE", "BECK", "NDT", "IV", "TIME", "CENSOR"]).reset_index(drop=True)


def test_km_equals_lifelines_with_loglog_ci(uis):
    """lifelines' default CI is log-log; ours with ``conf_type="log-log"`` must match it."""
    from lifelines import KaplanMeierFitter

    res = fit_km(uis, duration_col="TIME", event_col="CENSOR", conf_type="log-log")
    kmf = KaplanMeierFitter().fit(uis["TIME"], uis["CENSOR"])
    sf = kmf.survival_function_.iloc[1:, 0]  # lifelines adds time 0
    np.testing.assert_allclose(res.tidy["survival"], sf.to_numpy(), rtol=1e-12)
    ci = kmf.confidence_interval_.iloc[1:]
    has_ci = res.tidy["conf_low"].notna().to_numpy()
    np.testing.assert_allclose(res.tidy["conf_low"].to_numpy()[has_ci], ci.iloc[:, 0].to_numpy()[has_ci], rtol=1e-8)


def test_logrank_equals_lifelines(uis):
    from lifelines.statistics import logrank_test as ll_logrank

    ours = logrank_test(uis, duration_col="TIME", event_col="CENSOR", group_col="TREAT")
    a, b = uis[uis["TREAT"] == 0], uis[uis["TREAT"] == 1]
    theirs = ll_logrank(a["TIME"], b["TIME"], a["CENSOR"], b["CENSOR"])
    assert ours.glance["statistic"].iloc[0] == pytest.approx(theirs.test_statistic, rel=1e-10)
    assert ours.glance["p_value"].iloc[0] == pytest.approx(theirs.p_value, rel=1e-8)


def test_rmst_equals_lifelines(uis):
    from lifelines import KaplanMeierFitter
    from lifelines.utils import restricted_mean_survival_time

    tau = 365.0
    ours = rmst(uis, duration_col="TIME", event_col="CENSOR", tau=tau)
    kmf = KaplanMeierFitter().fit(uis["TIME"], uis["CENSOR"])
    theirs = restricted_mean_survival_time(kmf, t=tau)
    assert float(ours.tidy["estimate"].iloc[0]) == pytest.approx(theirs, rel=1e-10)


def test_cox_equals_lifelines_efron(uis):
    """Efron ties, model-based SE: lifelines' ``CoxPHFitter`` and ``fit_cox`` agree.

    lifelines stops Newton-Raphson at a looser tolerance than R and ``fit_cox`` (which equal
    each other to 1e-6 in ``tests/test_cox.py``): on UIS its estimates differ from R's in the
    5th significant digit, so this cross-check uses 1e-4 (estimates) and 1e-3 (SEs).
    """
    from lifelines import CoxPHFitter

    covs = ["AGE", "BECK", "NDT", "TREAT"]
    ours = fit_cox(uis, duration_col="TIME", event_col="CENSOR", covariates=covs)
    cph = CoxPHFitter().fit(uis[covs + ["TIME", "CENSOR"]], duration_col="TIME", event_col="CENSOR")
    tidy = ours.tidy.set_index("term")
    for cov in covs:
        assert tidy.loc[cov, "estimate"] == pytest.approx(cph.params_[cov], rel=1e-4)
        assert tidy.loc[cov, "std_error"] == pytest.approx(cph.standard_errors_[cov], rel=1e-3)


def test_cumulative_incidence_equals_aalen_johansen():
    """Aalen-Johansen CIF of cause 1 with a competing cause 2, no ties at event times."""
    from lifelines import AalenJohansenFitter

    rng = np.random.default_rng(7)
    n = 400
    t = rng.exponential(100, n).round(3) + 0.001 * np.arange(n)  # distinct times
    cause = rng.choice([0, 1, 2], size=n, p=[0.3, 0.45, 0.25])
    df = pd.DataFrame({"t": t, "cause": cause})
    ours = cumulative_incidence(df, duration_col="t", event_col="cause")
    ajf = AalenJohansenFitter(calculate_variance=False).fit(df["t"], df["cause"], event_of_interest=1)
    theirs = ajf.cumulative_density_.iloc[:, 0]
    tidy = ours.tidy[ours.tidy["cause"].astype(str) == "1"].set_index("time")["cumulative_incidence"]
    common = theirs.index.intersection(tidy.index)
    assert len(common) > 100
    np.testing.assert_allclose(tidy.loc[common].to_numpy(), theirs.loc[common].to_numpy(), rtol=1e-10)
