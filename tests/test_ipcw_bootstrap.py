"""Bootstrap intervals of the per-protocol IPCW landmark analysis (landmark_analysis(..., ci="bootstrap"))."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.designs.causal import landmark_analysis
from iop_research.designs.ipcw import ipcw_landmark
from iop_research.exceptions import ModelSpecificationError

from conftest import GOLDEN_DIR

KW = dict(landmark_days=30, duration_col="days", event_col="event", exposure_col="on_mat_at_l", cluster_col="pid")
PP = dict(switch_col="switch_day", censoring_covariates=["u", "age"])


@pytest.fixture(scope="module")
def data():
    return pd.read_csv(GOLDEN_DIR / "data" / "ipcw_landmark.csv")


@pytest.fixture(scope="module")
def boot(data):
    return landmark_analysis(data, ci="bootstrap", n_bootstrap=30, seed=11, **PP, **KW)


def test_bootstrap_is_reproducible_and_keeps_the_estimate(data, boot):
    again = landmark_analysis(data, ci="bootstrap", n_bootstrap=30, seed=11, **PP, **KW)
    pd.testing.assert_frame_equal(boot.tidy, again.tidy)
    pd.testing.assert_frame_equal(boot.extra["bootstrap"], again.extra["bootstrap"])
    other = landmark_analysis(data, ci="bootstrap", n_bootstrap=30, seed=12, **PP, **KW)
    assert other.tidy["std_error"].iloc[0] != boot.tidy["std_error"].iloc[0]
    robust = landmark_analysis(data, **PP, **KW)
    # the point estimate is the IPCW fit's; the model keeps the robust SEs
    assert boot.tidy["estimate"].iloc[0] == robust.tidy["estimate"].iloc[0]
    pd.testing.assert_frame_equal(boot.model.tidy, robust.tidy)
    assert list(boot.tidy.columns) == list(robust.tidy.columns)
    assert boot.extra["bootstrap"].shape == (30, 2)
    assert "bootstrap" in boot.conventions["variance"]


def test_bootstrap_interval_is_the_wald_interval_of_the_replicates(boot):
    row = boot.tidy.iloc[0]
    se = boot.extra["bootstrap"]["on_mat_at_l"].std(ddof=1)
    assert row["std_error"] == pytest.approx(se, rel=1e-12)
    z = 1.959963984540054
    assert row["conf_low"] == pytest.approx(row["estimate"] - z * se, rel=1e-12)
    assert row["conf_high"] == pytest.approx(row["estimate"] + z * se, rel=1e-12)
    assert row["hr_conf_low"] == pytest.approx(np.exp(row["conf_low"]), rel=1e-12)
    # the replicates are spread around the estimate, on the scale of the robust SE
    assert 0.5 < se / boot.model.tidy["std_error"].iloc[0] < 2.0


def test_each_replicate_is_the_whole_procedure_on_resampled_people(data, boot):
    # redraw the first replicate's people by hand and refit landmark_analysis on them
    rng = np.random.default_rng(11)
    codes, uniq = pd.factorize(data["pid"], sort=True)
    pick = rng.integers(0, len(uniq), len(uniq))
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniq)))])
    rows = order[np.concatenate([np.arange(bounds[k], bounds[k + 1]) for k in pick])]
    d1 = data.iloc[rows].reset_index(drop=True)
    d1["pid"] = np.repeat(np.arange(len(pick)), bounds[pick + 1] - bounds[pick])
    first = landmark_analysis(d1, **PP, **KW).tidy["estimate"].iloc[0]
    assert boot.extra["bootstrap"]["on_mat_at_l"].iloc[0] == pytest.approx(first, rel=1e-8)


def test_newton_switching_models_equal_the_glm_fit(data):
    time = data["days"].to_numpy(dtype=float)
    args = dict(landmark_days=30, time=time, event=data["event"].to_numpy(dtype=float),
                exposure=data["on_mat_at_l"].to_numpy(), switch_col="switch_day", duration_col="days",
                event_col="event", exposure_col="on_mat_at_l", covariates=[], censoring_covariates=["u", "age"],
                censoring_time="linear", stabilized=True, cluster_col="pid")
    full = ipcw_landmark(data, **args)
    start = {k: v + 0.05 for k, v in full["switch_params"].items()}  # not the solution: Newton must move
    fast = ipcw_landmark(data, **args, switch_start=start)
    for k, v in full["switch_params"].items():
        np.testing.assert_allclose(fast["switch_params"][k], v, rtol=1e-7, atol=1e-9)
    assert fast["fit"].tidy["estimate"].iloc[0] == pytest.approx(full["fit"].tidy["estimate"].iloc[0], rel=1e-8)


@pytest.mark.parametrize("kwargs, match", [
    ({"ci": "sandwich", **PP}, "ci must be"),
    ({"ci": "bootstrap"}, "switch_col"),
    ({"ci": "bootstrap", "n_bootstrap": 1, **PP}, "n_bootstrap"),
    ({"ci": "bootstrap", "seed": "a", **PP}, "seed"),
])
def test_bad_bootstrap_arguments(data, kwargs, match):
    with pytest.raises(ModelSpecificationError, match=match):
        landmark_analysis(data, **kwargs, **KW)
