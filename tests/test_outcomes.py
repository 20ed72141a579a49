"""Tests of iop_research.derive.outcomes: relapse, recurrent relapses and retention outcomes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.derive.cohorts import Attrition
from iop_research.exceptions import DataValidationError, ModelSpecificationError
from iop_research.data.io import IOPData
from iop_research.data.schema import TABLE_COLUMNS
from iop_research.derive.outcomes import (
    OUTCOME_COLUMNS,
    RECURRENT_COLUMNS,
    RETENTION_COLUMNS,
    RelapseDefinition,
    recurrent_relapses,
    relapse_outcomes,
    retention_outcomes,
)

ts = pd.to_datetime
D0 = ts("2021-01-01")


def day(n):
    return D0 + pd.Timedelta(days=n)


def empty(table):
    """A contract table with no rows."""
    return pd.DataFrame({c[0]: pd.Series([], dtype="datetime64[ns]" if c[1] == "date" else object)
                         for c in TABLE_COLUMNS[table]})


def make_data():
    """Hand-built cohort; all episodes admitted relative to 2021-01-01 (day 0).

    P1: E1 days 0-40; UDS positive day 7 (blanked), negative day 20, positive day 30 -> relapse 30.
    P2: E2 days 0-50; ED visit day 15 (not a default source); self-report day 60 -> relapse 60.
    P3: E3 days 0-20, E4 admitted day 100 (readmission) -> E3 relapse 100 (readmission); E4 censored.
    P4: E5 days 0-30; overdose and death on day 45 -> relapse (ties: relapse wins).
    P5: E6 days 0-30; death day 80 -> competing.
    P6: E7 ongoing (no discharge); nothing -> censored at observation end.
    P7: E8 no observation row -> excluded.
    P8: E9 days 0-10, uds positive and self-report both on day 50 -> source uds (order of sources).
    """
    adm = pd.DataFrame({
        "episode_id": ["E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "E9"],
        "patient_id": ["P1", "P2", "P3", "P3", "P4", "P5", "P6", "P7", "P8"],
        "program": ["A", "A", "B", "B", "A", "B", "A", "B", "A"],
        "admit_date": [day(0), day(0), day(0), day(100), day(0), day(0), day(0), day(0), day(0)],
        "discharge_date": [day(40), day(50), day(20), day(130), day(30), day(30), pd.NaT, day(10), day(10)],
        "discharge_reason": ["completed", "dropped_out", "dropped_out", "completed", "completed", "transferred",
                             None, "other", "completed"],
        "referral_source": "self", "primary_substance": "opioids", "psychiatric_comorbidity": False,
        "prior_treatment_episodes": 0, "severity_score": 5.0, "housing": "stable", "employment": "employed",
    })
    ev = pd.DataFrame({
        "patient_id": ["P1", "P1", "P1", "P2", "P2", "P4", "P4", "P5", "P8", "P8"],
        "event_date": [day(7), day(20), day(30), day(15), day(60), day(45), day(45), day(80), day(50), day(50)],
        "event_type": ["uds", "uds", "uds", "ed_visit", "self_report_use", "death", "overdose", "death",
                       "self_report_use", "uds"],
        "result": ["positive", "negative", "positive", None, None, None, None, None, None, "positive"],
        "substance": [None] * 10,
    })
    obs = pd.DataFrame({"patient_id": ["P1", "P2", "P3", "P4", "P5", "P6", "P8"],
                        "observation_end": [day(365)] * 7})
    pats = pd.DataFrame({"patient_id": [f"P{i}" for i in range(1, 9)], "birth_year": 1980, "sex": "male",
                         "race": None, "ethnicity": None})
    return IOPData(pats, adm, empty("sessions"), empty("medications"), ev, obs)


def test_default_relapse_outcomes_exact_rows():
    data = make_data()
    before = data.events.copy()
    att = Attrition()
    out = relapse_outcomes(data, episodes=data.admissions, attrition=att)
    assert list(out.columns) == list(OUTCOME_COLUMNS)
    got = out.set_index("episode_id")[["time", "event", "event_type", "event_source", "status"]]
    expected = pd.DataFrame({
        "episode_id": ["E1", "E2", "E3", "E4", "E5", "E6", "E7", "E9"],
        "time": [30, 60, 100, 265, 45, 80, 365, 50],
        "event": [1, 1, 1, 0, 1, 0, 0, 1],
        "event_type": ["relapse", "relapse", "relapse", "censored", "relapse", "death", "censored", "relapse"],
        "event_source": ["uds", "self_report_use", "readmission", "observation_end", "overdose", "death",
                         "observation_end", "uds"],
        "status": [1, 1, 1, 0, 1, 2, 0, 1],
    }).set_index("episode_id")
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert out["time"].dtype == np.int64 and (out["time"] >= 1).all()
    assert (out["end_date"] == out["origin_date"] + pd.to_timedelta(out["time"], unit="D")).all()
    assert out.set_index("episode_id").loc["E4", "followup_days"] == 265
    # E8 has no observation_end: excluded and counted with its reason
    table = att.to_frame()
    assert table["rows_removed"].tolist() == [0, 1]
    assert table.loc[1, "reason"] == "patient has no observation_end"
    pd.testing.assert_frame_equal(data.events, before)


def test_sources_blanking_and_competing_options():
    data = make_data()
    with_ed = relapse_outcomes(data, episodes=data.admissions,
                               definition=RelapseDefinition(sources=("uds", "self_report_use", "ed_visit")))
    r = with_ed.set_index("episode_id")
    assert (r.loc["E2", "time"], r.loc["E2", "event_source"]) == (15, "ed_visit")
    # without readmission and overdose as sources, E3 runs to the end, E5 dies on day 45
    assert (r.loc["E3", "time"], r.loc["E3", "status"]) == (365, 0)
    assert (r.loc["E5", "event_type"], r.loc["E5", "status"]) == ("death", 2)
    # blanking 5: the day-7 positive of P1 now counts
    b = relapse_outcomes(data, episodes=data.admissions, definition=RelapseDefinition(blanking_days=5))
    assert b.set_index("episode_id").loc["E1", "time"] == 7
    # death not competing: censors, source says why
    c = relapse_outcomes(data, episodes=data.admissions, definition=RelapseDefinition(competing=()))
    e6 = c.set_index("episode_id").loc["E6"]
    assert (e6["event_type"], e6["event_source"], e6["status"], e6["time"]) == ("censored", "death", 0, 80)
    # administrative censoring at max_followup_days
    m = relapse_outcomes(data, episodes=data.admissions, definition=RelapseDefinition(max_followup_days=40))
    m = m.set_index("episode_id")
    assert (m.loc["E2", "time"], m.loc["E2", "event_source"]) == (40, "max_followup")
    assert (m.loc["E1", "time"], m.loc["E1", "event"]) == (30, 1)
    assert m.loc["E2", "followup_days"] == 40


def test_discharge_origin_counts_post_discharge_events_only():
    data = make_data()
    att = Attrition()
    out = relapse_outcomes(data, episodes=data.admissions, definition=RelapseDefinition(origin="discharge"),
                           attrition=att).set_index("episode_id")
    # E1: discharge day 40, the day-30 positive was in treatment: no later event -> censored
    assert (out.loc["E1", "time"], out.loc["E1", "event"]) == (325, 0)
    assert (out.loc["E2", "time"], out.loc["E2", "event"]) == (10, 1)
    assert (out.loc["E3", "time"], out.loc["E3", "event_source"]) == (80, "readmission")
    assert "E7" not in out.index
    reasons = att.to_frame().set_index("reason")["rows_removed"]
    assert reasons["origin discharge: episode ongoing (no discharge)"] == 1
    assert reasons["patient has no observation_end"] == 1


def test_landmark_origin_excludes_episodes_not_at_risk():
    data = make_data()
    att = Attrition()
    out = relapse_outcomes(data, episodes=data.admissions, attrition=att,
                           definition=RelapseDefinition(origin="landmark", landmark_days=35))
    out = out.set_index("episode_id")
    assert "E1" not in out.index  # relapse on day 30 <= 35
    assert (out.loc["E2", "time"], out.loc["E2", "event"]) == (25, 1)
    assert out.loc["E2", "origin_date"] == day(35)
    table = att.to_frame()
    assert table["rows_remaining"].iloc[-1] == len(out)
    assert table["rows_removed"].sum() == 9 - len(out)
    assert "relapse on or before the landmark" in set(table["reason"])


def test_death_on_or_before_origin_and_no_followup():
    data = make_data()
    obs = data.observation.copy()
    obs.loc[obs["patient_id"] == "P6", "observation_end"] = day(0)
    ev = data.events[data.events["event_type"] != "overdose"]  # P4 now dies on day 45 without relapse
    d2 = IOPData(data.patients, data.admissions, data.sessions, data.medications, ev, obs)
    att = Attrition()
    out = relapse_outcomes(d2, episodes=d2.admissions, attrition=att,
                           definition=RelapseDefinition(origin="landmark", landmark_days=50))
    reasons = att.to_frame().set_index("reason")["rows_removed"]
    assert reasons["died on or before the origin"] == 1  # P4 died day 45
    assert reasons["no follow-up after the origin (observation ends on or before it)"] == 1  # P6
    assert reasons["relapse on or before the landmark"] == 2  # E1 (day 30), E9 (day 50)
    assert set(out["episode_id"]) == {"E2", "E3", "E4", "E6"}


def test_definition_validation():
    with pytest.raises(ModelSpecificationError, match="subset"):
        RelapseDefinition(sources=("uds", "aftercare_contact"))
    with pytest.raises(ModelSpecificationError, match="landmark_days"):
        RelapseDefinition(origin="landmark")
    with pytest.raises(ModelSpecificationError, match="origin="):
        RelapseDefinition(origin="intake")
    with pytest.raises(ModelSpecificationError, match="competing"):
        RelapseDefinition(competing=("incarcerated",))


def test_bad_episodes_raise_with_ids():
    data = make_data()
    eps = data.admissions.copy()
    eps.loc[0, "discharge_date"] = day(-3)
    with pytest.raises(DataValidationError, match="discharge_date before admit_date.*E1"):
        relapse_outcomes(data, episodes=eps)
    with pytest.raises(DataValidationError, match="duplicated episode_id"):
        relapse_outcomes(data, episodes=pd.concat([data.admissions, data.admissions.iloc[:1]]))


def test_recurrent_relapses_exact_rows():
    """Risk intervals: re-entry at the next admission on/after a relapse, or after min_gap_days."""
    adm = pd.DataFrame({"episode_id": ["A1", "A2", "B1"], "patient_id": ["P1", "P1", "P2"],
                        "admit_date": [day(0), day(60), day(0)],
                        "discharge_date": [day(30), day(90), day(20)],
                        "discharge_reason": ["dropped_out", "completed", "completed"]})
    ev = pd.DataFrame({
        "patient_id": ["P1", "P1", "P1", "P1", "P2", "P2", "P2"],
        "event_date": [day(20), day(40), day(63), day(100), day(30), day(35), day(90)],
        "event_type": ["uds", "uds", "uds", "self_report_use", "overdose", "uds", "death"],
        "result": ["positive", "positive", "positive", None, None, "positive", None],
        "substance": [None] * 7,
    })
    obs = pd.DataFrame({"patient_id": ["P1", "P2"], "observation_end": [day(200), day(200)]})
    data = IOPData(pd.DataFrame(), adm, pd.DataFrame(), pd.DataFrame(), ev, obs)
    out = recurrent_relapses(data, episodes=adm)
    assert list(out.columns) == list(RECURRENT_COLUMNS)
    # P1: relapse 20 -> not at risk until A2 admission (60; the readmission itself is before
    # re-entry, day 40 ignored) -> day 63 blanked (3 days after admission) -> relapse 100 ->
    # no further admission: follow-up ends. P2: relapse 30, no re-entry.
    got = out[["patient_id", "episode_id", "interval", "start", "stop", "event", "event_source", "status"]]
    expected = pd.DataFrame({
        "patient_id": ["P1", "P1", "P2"], "episode_id": ["A1", "A2", "B1"], "interval": [1, 2, 1],
        "start": [0, 60, 0], "stop": [20, 100, 30], "event": [1, 1, 1],
        "event_source": ["uds", "self_report_use", "overdose"], "status": [1, 1, 1]})
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)
    # wash-out of 10 days: P1 re-enters at 30, relapses at 40 (uds), re-enters 50,
    # relapses at 60 (readmission), re-enters 60 ... P2: re-enters 40, dies day 90
    w = recurrent_relapses(data, episodes=adm, min_gap_days=10)
    p1 = w[w["patient_id"] == "P1"]
    assert p1[["start", "stop", "event"]].values.tolist() == [
        [0, 20, 1], [30, 40, 1], [50, 60, 1], [60, 100, 1], [110, 200, 0]]
    assert p1["event_source"].tolist()[2] == "readmission"
    p2 = w[w["patient_id"] == "P2"]
    assert p2[["start", "stop", "event", "status"]].values.tolist() == [[0, 30, 1, 1], [40, 90, 0, 2]]
    # intervals never overlap and lie within follow-up
    for _, g in w.groupby("patient_id"):
        assert (g["start"].to_numpy()[1:] >= g["stop"].to_numpy()[:-1]).all()
        assert (g["stop"] > g["start"]).all()


def test_retention_outcomes_coding():
    eps = pd.DataFrame({"episode_id": list("abcdefg"), "patient_id": list("ABCDEFG"),
                        "discharge_reason": ["completed", "dropped_out", "terminated", "transferred",
                                             "death", None, "incarcerated"],
                        "los_days": [50, 26, 10, 30, 5, 70, 1]})
    out = retention_outcomes(eps)
    assert list(out.columns) == list(RETENTION_COLUMNS)
    assert out["status"].tolist() == [2, 1, 3, 3, 3, 0, 3]
    assert out["event"].tolist() == [0, 1, 0, 0, 0, 0, 0]
    assert out["event_type"].tolist() == ["completed", "dropped_out", "other_discharge", "other_discharge",
                                          "other_discharge", "ongoing", "other_discharge"]
    assert out["time"].tolist() == [50, 26, 10, 30, 5, 70, 1]
    with pytest.raises(DataValidationError, match="los_days missing or below 1.*b"):
        retention_outcomes(eps.assign(los_days=[50, 0, 10, 30, 5, 70, 1]))
    with pytest.raises(DataValidationError, match="outside"):
        retention_outcomes(eps.assign(discharge_reason=["done"] * 7))


def test_build_episodes_default_is_used_when_available():
    """With episodes=None the episodes module (or admissions) defines episodes; results agree."""
    data = make_data()
    a = relapse_outcomes(data, episodes=data.admissions)
    b = relapse_outcomes(data)
    pd.testing.assert_frame_equal(a[["episode_id", "time", "status"]], b[["episode_id", "time", "status"]])


def test_relapse_matches_simulator_truth():
    """Single-episode patients of a simulated cohort: observed relapse day = ceil(latent relapse time)."""
    synth = pytest.importorskip("iop_research.data.synth")
    data = synth.simulate_cohort(300, seed=11)
    te = data.truth.episodes
    d = RelapseDefinition(sources=("uds", "self_report_use", "overdose", "ed_visit", "readmission"),
                          blanking_days=data.truth.effects.blanking_days)
    out = relapse_outcomes(data, definition=d).merge(te, on=["episode_id", "patient_id"])
    n_ep = data.admissions.groupby("patient_id").size()
    single = out[out["patient_id"].map(n_ep) == 1]
    assert len(single) > 100
    assert ((single["event"] == 1) == single["is_relapse_observed"]).all()
    rel = single[single["event"] == 1]
    assert (rel["time"] == np.ceil(rel["relapse_day"])).all()
