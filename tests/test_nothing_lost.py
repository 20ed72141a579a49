"""Nothing lost: every input row of each pipeline step is in an output or counted, with its reason.

Steps covered (those that have landed): sessions -> episodes (both modes),
admissions -> episodes, dispensings -> MAT eras, episodes -> relapse outcomes
(each origin) and survival frames, episodes -> cohort, and the public-data
loaders (TEDS-D, UIS, HELP). Data: the bundled demo cohort and a simulated
cohort with planted orphan sessions (so that the attrition rows are not all zero).
"""
from __future__ import annotations

import pandas as pd
import pytest

from iop_research.derive.cohorts import Attrition, CohortDefinition, select_cohort
from iop_research.datasets import load_demo, load_help, load_uis, loader_attrition
from iop_research.derive.episodes import build_episodes
from iop_research.derive.exposures import medication_eras
from iop_research.derive.frames import survival_frame
from iop_research.derive.outcomes import RelapseDefinition, relapse_outcomes
from iop_research.data.synth import simulate_cohort
from iop_research.datasets.teds import read_teds_d, teds_attrition, write_teds_d_like


def _with_orphans(data):
    """Add sessions no episode can hold: an unknown episode_id, and dates outside every admission."""
    s = data.sessions
    first = s.iloc[:3].copy()
    orphans = pd.concat([
        first.assign(episode_id="E-nowhere"),
        first.assign(episode_id=None, session_date=pd.Timestamp("2030-01-01"), attended=False),
        first.assign(episode_id=None, session_date=pd.Timestamp("2031-06-01"), attended=True),
    ], ignore_index=True)
    sessions = pd.concat([s, orphans], ignore_index=True)
    return type(data)(data.patients, data.admissions, sessions, data.medications, data.events, data.observation)


@pytest.fixture(scope="module", params=["demo", "simulated"])
def data(request):
    if request.param == "demo":
        return load_demo()
    return _with_orphans(simulate_cohort(300, seed=2024, progress=False))


@pytest.fixture(scope="module")
def episodes(data):
    return build_episodes(data)


def _chain_ok(att: pd.DataFrame, n_in: int, n_out: int) -> None:
    """Attrition chain: starts at n_in, each step removes what it says, ends at n_out."""
    assert att["rows_remaining"].iloc[0] == n_in
    assert (att["rows_remaining"].diff().iloc[1:].abs() == att["rows_removed"].iloc[1:]).all()
    assert n_in - att["rows_removed"].sum() == att["rows_remaining"].iloc[-1] == n_out
    assert att["reason"].iloc[1:].map(lambda r: isinstance(r, str) and len(r) > 3).all()


@pytest.mark.parametrize("mode", ["admissions", "sessions"])
def test_sessions_to_episodes(data, mode):
    ep = build_episodes(data, mode=mode)
    att = pd.DataFrame(ep.attrs["attrition"])
    _chain_ok(att, len(data.sessions), int(ep["n_sessions_scheduled"].sum()))
    if data.sessions["episode_id"].eq("E-nowhere").any():
        assert att["rows_removed"].sum() >= (6 if mode == "admissions" else 3)


def test_admissions_to_episodes(data, episodes):
    assert len(episodes) == len(data.admissions)
    assert sorted(episodes["episode_id"]) == sorted(data.admissions["episode_id"])


def test_sessions_mode_episodes_hold_every_attended_session(data):
    ep = build_episodes(data, mode="sessions")
    assert ep["n_sessions_attended"].sum() == data.sessions["attended"].sum()


def test_dispensings_to_eras(data):
    eras = medication_eras(data.medications)
    med = data.medications
    assert eras["n_dispensings"].sum() == len(med)
    assert eras["days_supply_total"].sum() == med["days_supply"].fillna(0).sum()
    per = eras.groupby("patient_id")["n_dispensings"].sum().sort_index()
    pd.testing.assert_series_equal(per, med.groupby("patient_id").size().sort_index(), check_names=False)


@pytest.mark.parametrize("origin", ["admission", "discharge", "landmark"])
def test_episodes_to_outcomes(data, episodes, origin):
    definition = RelapseDefinition(origin=origin, landmark_days=30) if origin == "landmark" else \
        RelapseDefinition(origin=origin)
    att = Attrition()
    out = relapse_outcomes(data, definition=definition, episodes=episodes, attrition=att)
    table = att.to_frame()
    _chain_ok(table, len(episodes), len(out))
    assert out["episode_id"].is_unique and set(out["episode_id"]) <= set(episodes["episode_id"])
    if origin != "admission":
        assert table["rows_removed"].sum() > 0  # ongoing episodes / early events exist in both cohorts


def test_relapses_trace_to_input_events(data, episodes):
    """No relapse is invented: each non-readmission relapse is a row of events on that date."""
    out = relapse_outcomes(data, episodes=episodes)
    rel = out.loc[(out["event"] == 1) & (out["event_source"] != "readmission")]
    ev = data.events.assign(key=lambda d: d["patient_id"] + "|" + d["event_date"].dt.strftime("%Y-%m-%d")
                            + "|" + d["event_type"])
    keys = rel["patient_id"] + "|" + pd.to_datetime(rel["end_date"]).dt.strftime("%Y-%m-%d") + "|" \
        + rel["event_source"]
    assert len(rel) > 0 and keys.isin(set(ev["key"])).all()


def test_survival_frame_keeps_or_counts_every_episode(data, episodes):
    att = Attrition()
    frame = survival_frame(data, episodes=episodes, attrition=att)
    _chain_ok(att.to_frame(), len(episodes), len(frame))


def test_episodes_to_cohort(data, episodes):
    att = Attrition()
    out = relapse_outcomes(data, episodes=episodes, attrition=att)
    frame = out.merge(episodes.drop(columns=["patient_id"]), on="episode_id", how="left")
    frame = frame.rename(columns={"age_at_admit": "age"})
    cohort, table = select_cohort(frame, CohortDefinition(min_age=21, max_age=64,
                                                          primary_substances=["opioids", "alcohol"],
                                                          first_episode_only=True, min_followup_days=90),
                                  attrition=att)
    _chain_ok(table, len(episodes), len(cohort))
    steps = table["step"].tolist()
    assert steps[-5:] == ["min_age", "max_age", "primary_substances", "first_episode_only", "min_followup_days"]
    assert table["patients_remaining"].iloc[-1] == cohort["patient_id"].nunique()
    assert table["patients_remaining"].iloc[0] == episodes["patient_id"].nunique()


# ----------------------------------------------------------------------------- loaders
def test_teds_rows_read_equal_rows_kept_plus_excluded(tmp_path):
    path = write_teds_d_like(tmp_path / "teds.csv", n_rows=2000, years=(2018, 2019), seed=8)
    df = read_teds_d(path, years=[2019])
    att = teds_attrition(df)
    assert att["n_remaining"].iloc[0] == 2000
    assert att["n_remaining"].iloc[0] - att["n_excluded"].sum() == att["n_remaining"].iloc[-1] == len(df)
    assert len(df) > 0 and att["n_excluded"].iloc[1:].gt(0).all()


@pytest.mark.parametrize("loader,file", [(load_uis, "uis_path"), (load_help, "help_path")])
def test_public_loaders_count_every_row(loader, file, request):
    path = request.getfixturevalue(file)
    df = loader(path)
    att = loader_attrition(df)
    n_file = len(pd.read_csv(path))
    assert att["n_remaining"].iloc[0] == n_file
    assert n_file - att["n_excluded"].sum() == att["n_remaining"].iloc[-1] == len(df)


def test_counting_process_rows_tile_each_kept_episode(data, episodes):
    """Interval splitting loses no episode, no day of follow-up and no event."""
    att = Attrition()
    sf = survival_frame(data, episodes=episodes)
    from iop_research.derive.frames import counting_process_frame

    cp = counting_process_frame(data, episodes=episodes, attrition=att)
    _chain_ok(att.to_frame(), len(episodes), cp["episode_id"].nunique())
    assert set(cp["episode_id"]) == set(sf["episode_id"])
    per = cp.assign(days=cp["stop"] - cp["start"]).groupby("episode_id").agg(days=("days", "sum"),
                                                                           event=("event", "sum"))
    per = per.reindex(sf["episode_id"])
    assert (per["days"].to_numpy() == sf["time"].to_numpy()).all()
    assert (per["event"].to_numpy() == sf["event"].to_numpy()).all()
