"""Tests of iop_research.derive.cohorts: inclusion criteria and the attrition accumulator."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iop_research.derive.cohorts import ATTRITION_COLUMNS, Attrition, CohortDefinition, select_cohort
from iop_research.exceptions import ModelSpecificationError
from iop_research.data.io import IOPData
from iop_research.derive.outcomes import RelapseDefinition, relapse_outcomes

ts = pd.to_datetime


@pytest.fixture()
def episodes():
    return pd.DataFrame({
        "episode_id": ["E1", "E2", "E3", "E4", "E5", "E6"],
        "patient_id": ["P1", "P1", "P2", "P3", "P4", "P4"],
        "program": ["A", "A", "B", "A", "B", "B"],
        "admit_date": ts(["2019-05-01", "2020-03-01", "2020-01-15", "2021-06-01", "2020-02-01", "2020-09-01"]),
        "birth_year": [1990, 1990, 2004, 1960, 1985, 1985],
        "primary_substance": ["opioids", "opioids", "alcohol", "opioids", "opioids", "stimulants"],
        "followup_days": [900, 500, 40, 200, 700, 300],
    })


def test_select_cohort_exact_rows_and_attrition(episodes):
    definition = CohortDefinition(min_age=18, max_age=60, primary_substances=["opioids"],
                                  admit_from="2020-01-01", admit_to="2020-12-31",
                                  first_episode_only=True, min_followup_days=365)
    cohort, att = select_cohort(episodes, definition)
    # age: E3 (16) and E4 (61) removed; substance: E6; admit window: E1; first: none left to remove;
    # follow-up: E2 (500) kept, E5 (700) kept.
    assert cohort["episode_id"].tolist() == ["E2", "E5"]
    assert list(att.columns) == list(ATTRITION_COLUMNS)
    assert att["step"].tolist() == ["input", "min_age", "max_age", "primary_substances", "admit_from",
                                    "admit_to", "first_episode_only", "min_followup_days"]
    assert att["rows_removed"].tolist() == [0, 1, 1, 1, 1, 0, 0, 0]
    assert att["patients_removed"].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    assert att["rows_remaining"].tolist() == [6, 5, 4, 3, 2, 2, 2, 2]
    assert att["patients_remaining"].tolist() == [4, 3, 2, 2, 2, 2, 2, 2]
    # input untouched
    assert len(episodes) == 6 and "age" not in episodes.columns


def test_first_episode_only_keeps_earliest_eligible(episodes):
    cohort, att = select_cohort(episodes, CohortDefinition(admit_from="2020-01-01", first_episode_only=True))
    # P1's first eligible episode is E2 (E1 is before the window); P4 keeps E5
    assert sorted(cohort["episode_id"]) == ["E2", "E3", "E4", "E5"]
    assert att.set_index("step").loc["first_episode_only", "rows_removed"] == 1


def test_missing_values_are_excluded_and_counted(episodes):
    eps = episodes.assign(birth_year=[1990, 1990, np.nan, 1960, 1985, 1985])
    cohort, att = select_cohort(eps, CohortDefinition(min_age=18))
    assert "E3" not in set(cohort["episode_id"])
    assert att["rows_removed"].sum() == 1


def test_min_followup_uses_potential_followup_not_event_time(episodes):
    eps = episodes.assign(time=[10, 10, 10, 10, 10, 10])  # early events must not remove anyone
    cohort, _ = select_cohort(eps, CohortDefinition(min_followup_days=100))
    assert cohort["episode_id"].tolist() == ["E1", "E2", "E4", "E5", "E6"]


def test_errors_say_what_and_how(episodes):
    with pytest.raises(ModelSpecificationError, match="programs needs column 'program'"):
        select_cohort(episodes.drop(columns="program"), CohortDefinition(programs=["A"]))
    with pytest.raises(ModelSpecificationError, match="min_age=70 is above max_age=20"):
        select_cohort(episodes, CohortDefinition(min_age=70, max_age=20))
    with pytest.raises(ModelSpecificationError, match="needs an 'age' column"):
        select_cohort(episodes.drop(columns="birth_year"), CohortDefinition(min_age=18))


def test_attrition_accumulator_rules():
    df = pd.DataFrame({"episode_id": ["E1", "E2"], "patient_id": ["P1", "P2"]})
    att = Attrition()
    att.start(df, table="episodes")
    with pytest.raises(ModelSpecificationError, match="already started"):
        att.start(df, table="episodes")
    with pytest.raises(ModelSpecificationError, match="missing values"):
        att.exclude(df, pd.Series([True, None]), step="x", reason="y")
    with pytest.raises(ModelSpecificationError, match="holds 2 rows"):
        att.exclude(df.iloc[:1], [False], step="x", reason="y")
    with pytest.raises(ModelSpecificationError, match="start the chain"):
        att.record(df, step="x", reason="y", table="sessions")


def test_outcome_exclusions_and_cohort_end_in_one_table():
    """Outcome exclusions, a side table (sessions) and cohort criteria add up in one attrition table."""
    adm = pd.DataFrame({"episode_id": ["E1", "E2", "E3", "E4"], "patient_id": ["P1", "P2", "P3", "P3"],
                        "admit_date": ts(["2021-01-01", "2021-01-01", "2021-01-01", "2021-06-01"]),
                        "discharge_date": ts(["2021-02-01", None, "2021-02-01", "2021-07-01"]),
                        "discharge_reason": ["completed", None, "dropped_out", "completed"],
                        "primary_substance": ["opioids", "opioids", "alcohol", "alcohol"]})
    obs = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "observation_end": ts(["2021-12-31"] * 3)})
    ev = pd.DataFrame(columns=["patient_id", "event_date", "event_type", "result", "substance"])
    ses = pd.DataFrame({"patient_id": ["P1", "P1", "P9"], "session_date": ts(["2021-01-02", "2022-01-01", "2021-01-02"])})
    data = IOPData(pd.DataFrame(), adm, ses, pd.DataFrame(), ev, obs)
    att = Attrition()
    att.start(ses, table="sessions")
    att.exclude(ses, [False, True, True], step="assign_sessions", reason="session outside every episode",
                table="sessions")
    out = relapse_outcomes(data, episodes=adm, definition=RelapseDefinition(origin="discharge"), attrition=att)
    cohort, _ = select_cohort(adm.set_index("episode_id").loc[out["episode_id"]].reset_index(),
                              CohortDefinition(primary_substances=["opioids"]), attrition=att)
    table = att.to_frame()
    assert cohort["episode_id"].tolist() == ["E1"]
    for name, g in table.groupby("table"):
        g = g.reset_index(drop=True)
        assert g.loc[0, "step"] == "input"
        # counts add up to the input along each chain
        assert (g["rows_remaining"].iloc[0] - g["rows_removed"].cumsum() == g["rows_remaining"]).all()
    ep = table[table["table"] == "episodes"]
    assert ep["rows_remaining"].iloc[0] == 4 and ep["rows_remaining"].iloc[-1] == 1
    assert ep["reason"].iloc[1] == "origin discharge: episode ongoing (no discharge)"
    assert table[table["table"] == "sessions"]["rows_removed"].sum() == 2


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 30),
    seed=st.integers(0, 10_000),
    min_age=st.one_of(st.none(), st.integers(10, 60)),
    max_age=st.one_of(st.none(), st.integers(30, 90)),
    first=st.booleans(),
    min_fu=st.one_of(st.none(), st.integers(0, 800)),
)
def test_attrition_counts_add_up(n, seed, min_age, max_age, first, min_fu):
    rng = np.random.default_rng(seed)
    eps = pd.DataFrame({
        "episode_id": [f"E{i}" for i in range(n)],
        "patient_id": [f"P{i}" for i in rng.integers(0, max(1, n // 2), n)],
        "admit_date": ts("2020-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D"),
        "age": rng.integers(12, 80, n).astype(float),
        "primary_substance": rng.choice(["opioids", "alcohol"], n),
        "followup_days": rng.integers(0, 1000, n),
    })
    if min_age is not None and max_age is not None and min_age > max_age:
        min_age, max_age = max_age, min_age
    d = CohortDefinition(min_age=min_age, max_age=max_age, primary_substances=["opioids"],
                         first_episode_only=first, min_followup_days=min_fu)
    cohort, att = select_cohort(eps, d)
    assert att["rows_remaining"].iloc[0] == n
    assert att["rows_removed"].sum() == n - len(cohort)
    assert att["rows_remaining"].iloc[-1] == len(cohort)
    assert att["patients_removed"].sum() == eps["patient_id"].nunique() - cohort["patient_id"].nunique()
    assert att["patients_remaining"].iloc[-1] == cohort["patient_id"].nunique()
    assert (cohort["primary_substance"] == "opioids").all()
    if first:
        assert not cohort["patient_id"].duplicated().any()
