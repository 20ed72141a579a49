"""Tests of iop_research.derive.splitting (notebook helpers: landmark switches, censoring, post-stop windows)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iop_research.derive.splitting import censor_at, exposure_switch, split_after_exposure
from iop_research.exceptions import DataValidationError, ModelSpecificationError

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script


@pytest.fixture
def cp() -> pd.DataFrame:
    # E1: off (0,10], on (10,40], off (40,90]; E2 always off; E3 ends before L=30;
    # E4 starts MAT exactly on day 30 (row starting at L), stops on day 50, restarts on day 70.
    return pd.DataFrame({
        "episode_id": ["E1", "E1", "E1", "E2", "E3", "E4", "E4", "E4", "E4"],
        "start": [0, 10, 40, 0, 0, 0, 30, 50, 70],
        "stop": [10, 40, 90, 60, 20, 30, 50, 70, 100],
        "event": [0, 0, 1, 0, 1, 0, 0, 0, 1],
        "status": [0, 0, 1, 0, 1, 0, 0, 0, 1],
        "on_mat": [0, 1, 0, 0, 1, 0, 1, 0, 1],
    })


# ----------------------------------------------------------------------------- exposure_switch
def test_exposure_switch_hand_values(cp):
    got = exposure_switch(cp, landmark_days=30)
    assert got["episode_id"].tolist() == ["E1", "E2", "E4"]  # E3 ends on day 20 <= L
    assert got["exposed_at_landmark"].tolist() == [1, 0, 1]
    # E1 switches off on day 40 (10 days after L); E4 on from day 30, off on day 50.
    np.testing.assert_array_equal(got["switch_days"].to_numpy(), [10.0, np.nan, 20.0])


def test_exposure_switch_landmark_zero_and_input_untouched(cp):
    before = cp.copy()
    got = exposure_switch(cp, landmark_days=0)
    pd.testing.assert_frame_equal(cp, before)
    assert got["exposed_at_landmark"].tolist() == [0, 0, 1, 0]
    np.testing.assert_array_equal(got["switch_days"].to_numpy(), [10.0, np.nan, np.nan, 30.0])


def test_exposure_switch_errors(cp):
    with pytest.raises(ModelSpecificationError, match="not found"):
        exposure_switch(cp.drop(columns="on_mat"), landmark_days=30)
    with pytest.raises(ModelSpecificationError, match="non-negative"):
        exposure_switch(cp, landmark_days=-1)
    bad = cp.assign(on_mat=cp["on_mat"].replace({1: 2}))
    with pytest.raises(DataValidationError, match="E1"):
        exposure_switch(bad, landmark_days=30)
    bad = cp.assign(stop=cp["start"])
    with pytest.raises(DataValidationError, match="stop <= start"):
        exposure_switch(bad, landmark_days=30)


# ----------------------------------------------------------------------------- censor_at
def test_censor_at_hand_values():
    d = pd.DataFrame({"time": [50, 20, 30, 15], "event": [1, 1, 0, 1], "status": [1, 1, 0, 2],
                      "switch_days": [10, 20, np.nan, 40]})
    before = d.copy()
    got = censor_at(d, censor_col="switch_days")
    pd.testing.assert_frame_equal(d, before)
    assert got["time"].tolist() == [10, 20, 30, 15]
    assert got["time"].dtype == d["time"].dtype
    assert got["event"].tolist() == [0, 1, 0, 1]  # event on the switch day is kept
    assert got["status"].tolist() == [0, 1, 0, 2]
    assert got["artificially_censored"].tolist() == [True, False, False, False]
    assert len(got) == len(d)


def test_censor_at_errors():
    d = pd.DataFrame({"time": [5, 6], "event": [1, 0], "c": [0.0, 3.0]})
    with pytest.raises(DataValidationError, match="<= 0"):
        censor_at(d, censor_col="c", status_col=None)
    with pytest.raises(ModelSpecificationError, match="status"):
        censor_at(d.assign(c=[1.0, 2.0]), censor_col="c")


# ----------------------------------------------------------------------------- split_after_exposure
def test_split_after_exposure_hand_values(cp):
    before = cp.copy()
    got = split_after_exposure(cp, window_days=15)
    pd.testing.assert_frame_equal(cp, before)
    e1 = got[got["episode_id"] == "E1"]
    assert e1[["start", "stop"]].values.tolist() == [[0, 10], [10, 40], [40, 55], [55, 90]]
    assert e1["on_mat_recent_stop"].tolist() == [0, 0, 1, 0]
    assert e1["on_mat_past_stop"].tolist() == [0, 0, 0, 1]
    assert e1["event"].tolist() == [0, 0, 0, 1] and e1["status"].tolist() == [0, 0, 0, 1]
    # E4: stop on day 50, window (50, 65], restart on day 70 resets
    e4 = got[got["episode_id"] == "E4"]
    assert e4[["start", "stop"]].values.tolist() == [[0, 30], [30, 50], [50, 65], [65, 70], [70, 100]]
    assert e4["on_mat_recent_stop"].tolist() == [0, 0, 1, 0, 0]
    assert e4["on_mat_past_stop"].tolist() == [0, 0, 0, 1, 0]
    # never-on time has neither flag
    assert got.loc[got["episode_id"] == "E2", ["on_mat_recent_stop", "on_mat_past_stop"]].to_numpy().sum() == 0


def test_split_after_exposure_errors(cp):
    with pytest.raises(ModelSpecificationError, match="window_days"):
        split_after_exposure(cp, window_days=0)
    with pytest.raises(DataValidationError, match="sorted"):
        split_after_exposure(cp.iloc[::-1], window_days=30)


@st.composite
def _cp_frames(draw):
    rows = []
    for e in range(draw(st.integers(1, 6))):
        cuts = sorted(draw(st.sets(st.integers(1, 200), min_size=0, max_size=6)))
        bounds = [0, *cuts, cuts[-1] + draw(st.integers(1, 50)) if cuts else draw(st.integers(1, 50))]
        ev = draw(st.integers(0, 1))
        for i in range(len(bounds) - 1):
            last = i == len(bounds) - 2
            rows.append({"episode_id": f"E{e}", "start": bounds[i], "stop": bounds[i + 1],
                         "event": ev if last else 0, "on_mat": draw(st.integers(0, 1))})
    return pd.DataFrame(rows)


@settings(max_examples=60, deadline=None)
@given(_cp_frames(), st.integers(1, 60))
def test_split_after_exposure_tiles_follow_up(cp, window):
    got = split_after_exposure(cp, window_days=window)
    for eid, g in got.groupby("episode_id", sort=False):
        src = cp[cp["episode_id"] == eid]
        # rows tile (0, time] exactly, events kept on the last row only
        assert g["start"].iloc[0] == 0 and g["stop"].iloc[-1] == src["stop"].iloc[-1]
        assert (g["start"].to_numpy()[1:] == g["stop"].to_numpy()[:-1]).all()
        assert g["event"].sum() == src["event"].sum() and g["event"].iloc[:-1].sum() == 0
        # flags exclusive and only off exposure
        flags = g["on_mat_recent_stop"] + g["on_mat_past_stop"]
        assert (flags <= 1 - g["on_mat"]).all()
        # the recent window never lasts longer than window days after a stop
        assert ((g["stop"] - g["start"])[g["on_mat_recent_stop"] == 1] <= window).all()


# ----------------------------------------------------------------------------- simulation
def test_simulated_truth_recovered_by_post_stop_split_and_per_protocol_landmark():
    """Cohort simulated with a known post-MAT-stop risk window (HR 2 for 28 days) and MAT HR 0.5.

    The time-varying Cox model on ``split_after_exposure`` rows and the IPTW per-protocol
    landmark comparison (``exposure_switch`` + ``censor_at``) must cover the truth.
    """
    import math

    import iop_research as iop

    data = iop.simulate_cohort(2500, seed=11, effects={"log_hr_after_mat_stop": math.log(2.0)}, progress=False)
    eff = data.truth.effects
    cov = ["primary_substance", "severity_score", "psychiatric_comorbidity"]
    cp = iop.counting_process_frame(data, covariates=cov)
    opioid = cp[cp["primary_substance"] == "opioids"].reset_index(drop=True)
    rows = split_after_exposure(opioid, window_days=eff.after_mat_stop_days)
    fit = iop.fit_cox(rows, start_col="start", stop_col="stop", event_col="event",
                      covariates=["on_mat", "on_mat_recent_stop", "on_mat_past_stop", "in_treatment", "aftercare",
                                  "severity_score", "psychiatric_comorbidity"], cluster_col="patient_id")
    tidy = fit.tidy.set_index("term")
    for term, truth in (("on_mat", eff.log_hr_mat_opioid), ("on_mat_recent_stop", eff.log_hr_after_mat_stop),
                        ("on_mat_past_stop", 0.0)):
        assert tidy.loc[term, "conf_low"] <= truth <= tidy.loc[term, "conf_high"], term

    lm = iop.landmark_frame(data, landmark_days=30, covariates=cov)
    lm = lm[lm["primary_substance"] == "opioids"].merge(exposure_switch(opioid, landmark_days=30), on="episode_id",
                                                        how="left", validate="one_to_one").reset_index(drop=True)
    assert lm["exposed_at_landmark"].notna().all()
    pp = censor_at(lm, censor_col="switch_days")
    assert pp["artificially_censored"].sum() > 0
    w = iop.iptw(pp, treatment_col="exposed_at_landmark", covariates=["severity_score", "psychiatric_comorbidity"])
    res = iop.landmark_analysis(w.weighted(pp), landmark_days=30, duration_col="time", event_col="event",
                                exposure_col="exposed_at_landmark", weights_col="iptw", cluster_col="patient_id",
                                clock_reset=True)
    row = res.tidy.iloc[0]
    assert row["conf_low"] <= eff.log_hr_mat_opioid <= row["conf_high"]


# ----------------------------------------------------------------------------- R golden (tmerge + coxph)
def _post_stop_python(window_days: int):
    import iop_research as iop

    cp = pd.read_csv(GOLDEN_DIR / "data" / "post_stop.csv")
    rows = split_after_exposure(cp, window_days=window_days)
    fit = iop.fit_cox(rows, start_col="start", stop_col="stop", event_col="event",
                      covariates=["on_mat", "on_mat_recent_stop", "on_mat_past_stop", "severity_score"],
                      cluster_col="patient_id")
    return rows, fit


def _compare_post_stop(golden):
    rows, fit = _post_stop_python(golden["window_days"])
    length = rows["stop"] - rows["start"]
    assert len(rows) == golden["n_rows"]
    assert int(rows["event"].sum()) == golden["n_events"]
    assert int(length[rows["on_mat_recent_stop"] == 1].sum()) == golden["days_recent"]
    assert int(length[rows["on_mat_past_stop"] == 1].sum()) == golden["days_past"]
    np.testing.assert_allclose(fit.tidy["estimate"], golden["coef"], rtol=1e-6)
    np.testing.assert_allclose(fit.tidy["std_error"], golden["robust_se"], rtol=1e-4)
    np.testing.assert_allclose(fit.tidy["naive_std_error"], golden["naive_se"], rtol=1e-4)


def test_split_after_exposure_matches_r_tmerge_coxph():
    """Same rows (count, events, person-days per state) and Cox fit as survival::tmerge + coxph, from
    ``Rscript --vanilla tests/r/post_stop.R <datasets_dir> tests/golden/post_stop.json``
    (data: tests/r/make_post_stop_data.py -> tests/golden/data/post_stop.csv)."""
    _compare_post_stop(load_golden("post_stop"))


@requires_r
def test_post_stop_golden_is_reproducible_live(tmp_path):
    """``Rscript --vanilla tests/r/post_stop.R <datasets_dir> <tmp>/post_stop.json`` equals the committed JSON."""
    live = run_r_script("post_stop", tmp_path / "post_stop.json")
    committed = load_golden("post_stop")
    for key in ("n_rows", "n_events", "days_recent", "days_past", "window_days"):
        assert live[key] == committed[key]
    for key in ("coef", "robust_se", "naive_se"):
        np.testing.assert_allclose(live[key], committed[key], rtol=1e-6)
    _compare_post_stop(live)
