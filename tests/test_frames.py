"""Tests of iop_research.derive.frames: survival, counting-process and landmark frames, split_at."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iop_research.derive.cohorts import Attrition
from iop_research.exceptions import DataValidationError, ModelSpecificationError
from iop_research.derive.frames import counting_process_frame, landmark_frame, split_at, survival_frame
from iop_research.data.io import IOPData
from iop_research.derive.outcomes import RelapseDefinition
from iop_research.data.schema import TABLE_COLUMNS

ts = pd.to_datetime
D0 = ts("2021-01-01")
TV_COLS = ["in_treatment", "on_mat", "on_buprenorphine", "on_methadone", "on_naltrexone", "aftercare"]


def day(n):
    return D0 + pd.Timedelta(days=int(n))


def empty(table):
    return pd.DataFrame({c[0]: pd.Series([], dtype="datetime64[ns]" if c[1] == "date" else object)
                         for c in TABLE_COLUMNS[table]})


def admissions(rows):
    """Contract admissions from (episode_id, patient_id, admit, discharge or None, reason) tuples."""
    adm = pd.DataFrame(rows, columns=["episode_id", "patient_id", "admit_date", "discharge_date",
                                      "discharge_reason"])
    adm["admit_date"] = ts(adm["admit_date"])
    adm["discharge_date"] = ts(adm["discharge_date"])
    adm.insert(2, "program", "A")
    extra = dict(referral_source="self", primary_substance="opioids", psychiatric_comorbidity=False,
                 prior_treatment_episodes=0, severity_score=5.0, housing="stable", employment="employed")
    return adm.assign(**extra)


# ----------------------------------------------------------------------------- hand case vs R
def hand_case():
    """IOPData + eras from tests/golden/data/tmerge_hand_*.csv (the R script reads the same files)."""
    ep = pd.read_csv(GOLDEN_DIR / "data" / "tmerge_hand_episodes.csv", dtype=str)
    er = pd.read_csv(GOLDEN_DIR / "data" / "tmerge_hand_eras.csv", dtype=str)
    adm = admissions([(r.episode_id, r.patient_id, r.admit_date, r.discharge_date,
                       None if pd.isna(r.discharge_date) else "completed") for r in ep.itertuples()])
    events = []
    for r in ep.itertuples():
        if isinstance(r.relapse_date, str) and r.relapse_source != "readmission":
            events.append((r.patient_id, r.relapse_date, r.relapse_source,
                           "positive" if r.relapse_source == "uds" else None))
        for a in (r.aftercare_date, r.aftercare_date2):
            if isinstance(a, str):
                events.append((r.patient_id, a, "aftercare_contact", None))
    ev = pd.DataFrame(events, columns=["patient_id", "event_date", "event_type", "result"]).assign(substance=None)
    ev["event_date"] = ts(ev["event_date"])
    obs = ep[["patient_id", "observation_end"]].drop_duplicates().assign(observation_end=lambda x: ts(x.observation_end))
    pats = pd.DataFrame({"patient_id": obs["patient_id"], "birth_year": 1980, "sex": "female", "race": None,
                         "ethnicity": None})
    eras = er.assign(era_start=ts(er["era_start"]), era_end=ts(er["era_end"]))
    data = IOPData(pats, adm, empty("sessions"), empty("medications"), ev, obs)
    return data, adm, eras


def golden_hand_rows(golden):
    g = pd.DataFrame(golden["rows"]).rename(columns={"tstart": "start", "tstop": "stop", "relapse": "event"})
    return g[["episode_id", "start", "stop", "event", *TV_COLS]]


def python_hand_rows():
    data, adm, eras = hand_case()
    cp = counting_process_frame(data, episodes=adm, eras=eras, covariates=None)
    return cp[["episode_id", "start", "stop", "event", *TV_COLS]]


def test_counting_process_matches_r_tmerge_hand_case():
    """Row for row equal to survival::tmerge (tests/golden/tmerge_hand.json), written by
    ``Rscript --vanilla tests/r/tmerge_hand.R <datasets_dir> tests/golden/tmerge_hand.json``."""
    pd.testing.assert_frame_equal(python_hand_rows(), golden_hand_rows(load_golden("tmerge_hand")),
                                  check_dtype=False)


@requires_r
def test_tmerge_hand_golden_is_reproducible_live(tmp_path):
    """``Rscript --vanilla tests/r/tmerge_hand.R <datasets_dir> <tmp>/tmerge_hand.json`` gives the committed rows."""
    live = run_r_script("tmerge_hand", tmp_path / "tmerge_hand.json")
    pd.testing.assert_frame_equal(golden_hand_rows(live), golden_hand_rows(load_golden("tmerge_hand")))


# ----------------------------------------------------------------------------- UIS vs R
def uis_split(uis_path):
    uis = pd.read_csv(uis_path)
    df = uis[["ID", "TIME", "CENSOR", "LEN.T"]].copy()
    tm = split_at(df, id_col="ID", duration_col="TIME", event_col="CENSOR", cuts="LEN.T")
    tm["in_treatment"] = (tm["stop"] <= tm["LEN.T"]).astype(int)
    ss = split_at(df, id_col="ID", duration_col="TIME", event_col="CENSOR", cuts=[30, 90, 180])
    ss["interval"] = ss.groupby("ID").cumcount() + 1
    return tm, ss


def check_uis(golden, tm, ss):
    g = pd.DataFrame(golden["tmerge"])
    assert len(g) == len(tm) == 1079
    np.testing.assert_array_equal(tm["ID"], g["ID"])
    np.testing.assert_array_equal(tm["start"], g["tstart"])
    np.testing.assert_array_equal(tm["stop"], g["tstop"])
    np.testing.assert_array_equal(tm["CENSOR"], g["relapse"])
    np.testing.assert_array_equal(tm["in_treatment"], g["in_treatment"])
    s = pd.DataFrame(golden["survsplit"])
    assert len(s) == len(ss)
    for mine, theirs in (("ID", "ID"), ("start", "tstart"), ("stop", "TIME"), ("CENSOR", "CENSOR"),
                         ("interval", "interval")):
        np.testing.assert_array_equal(ss[mine], s[theirs])


def test_split_at_matches_r_on_uis(uis_path):
    """In-treatment split at LEN.T and survSplit at 30/90/180 days equal R's rows, from
    ``Rscript --vanilla tests/r/tmerge_uis.R <datasets_dir> tests/golden/tmerge_uis.json``."""
    tm, ss = uis_split(uis_path)
    check_uis(load_golden("tmerge_uis"), tm, ss)
    # person-time and events are preserved by the split
    uis = pd.read_csv(uis_path)
    assert (tm["stop"] - tm["start"]).sum() == uis["TIME"].sum()
    assert tm["CENSOR"].sum() == uis["CENSOR"].sum()


@requires_r
def test_tmerge_uis_live(tmp_path, uis_path):
    """``Rscript --vanilla tests/r/tmerge_uis.R <datasets_dir> <tmp>/tmerge_uis.json`` live."""
    live = run_r_script("tmerge_uis", tmp_path / "tmerge_uis.json")
    tm, ss = uis_split(uis_path)
    check_uis(live, tm, ss)


def test_split_at_validation():
    df = pd.DataFrame({"id": [1, 2], "t": [5, 0], "e": [1, 0]})
    with pytest.raises(DataValidationError, match="missing or <= 0.*2"):
        split_at(df, id_col="id", duration_col="t", event_col="e", cuts=[1])
    with pytest.raises(DataValidationError, match="repeats"):
        split_at(pd.DataFrame({"id": [1, 1], "t": [5, 3], "e": [1, 0]}), id_col="id", duration_col="t",
                 event_col="e", cuts=[1])


# ----------------------------------------------------------------------------- frames by hand
def small_case():
    adm = admissions([("E1", "P1", "2021-01-01", "2021-02-10", "completed"),
                      ("E2", "P2", "2021-01-01", None, None),
                      ("E3", "P3", "2021-01-01", "2021-01-11", "dropped_out")])
    ses = pd.DataFrame({
        "patient_id": ["P1", "P1", "P1", "P1", "P2", "P2", "P3"],
        "episode_id": ["E1"] * 4 + ["E2"] * 2 + ["E3"],
        "session_date": [day(0), day(2), day(29), day(30), day(5), day(40), day(3)],
        "modality": ["group", "group", "individual", "group", "family", "group", "group"],
        "minutes": [180, 180, 60, 180, 90, 180, 180],
        "attended": [True, False, True, True, True, True, True],
    })
    ev = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "event_date": [day(90), day(45), day(20)],
                       "event_type": ["self_report_use", "uds", "overdose"],
                       "result": [None, "positive", None], "substance": None})
    obs = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "observation_end": [day(365)] * 3})
    pats = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "birth_year": [1990, 1970, 2000],
                         "sex": ["male", "female", "male"], "race": None, "ethnicity": None})
    med = pd.DataFrame({"patient_id": ["P2", "P2"], "medication": ["buprenorphine", "buprenorphine"],
                        "dispense_date": [day(10), day(24)], "days_supply": [14, 14], "dose_mg": 16.0})
    return IOPData(pats, adm, ses, med, ev, obs)


def test_survival_frame_exact_covariates():
    data = small_case()
    sf = survival_frame(data, episodes=data.admissions)
    r = sf.set_index("episode_id")
    assert r["time"].tolist() == [90, 45, 20] and r["event"].tolist() == [1, 1, 1]
    assert r["age"].tolist() == [31, 51, 21]
    assert r["sex"].tolist() == ["male", "female", "male"]
    assert r["admit_year"].tolist() == [2021] * 3
    assert r["has_mat"].tolist() == [False, True, False]
    # first 30 days [0, 30): P1 group day 0 (3 h) attended, day 2 no-show, individual day 29 (1 h);
    # the day-30 session is outside the window
    assert r.loc["E1", "hours_group_30d"] == 3.0 and r.loc["E1", "hours_individual_30d"] == 1.0
    assert r.loc["E1", "attendance_30d"] == pytest.approx(2 / 3)
    assert r.loc["E2", "hours_family_30d"] == 1.5 and r.loc["E2", "hours_group_30d"] == 0.0
    assert r.loc["E3", "hours_group_30d"] == 3.0
    assert list(sf.columns[:10]) == ["episode_id", "patient_id", "origin_date", "end_date", "followup_days",
                                     "time", "event", "event_type", "event_source", "status"]
    with pytest.raises(ModelSpecificationError, match="not available"):
        survival_frame(data, episodes=data.admissions, covariates=["no_such_column"])
    assert list(survival_frame(data, episodes=data.admissions, covariates=None).columns)[-1] == "status"


def test_counting_process_cum_sessions_and_baseline():
    data = small_case()
    cp = counting_process_frame(data, episodes=data.admissions, cum_sessions=True)
    e1 = cp[cp["episode_id"] == "E1"]
    # attended sessions on days 0, 29, 30; discharge day 40; event day 90
    assert e1[["start", "stop", "cum_sessions_attended", "in_treatment", "event"]].values.tolist() == [
        [0, 29, 1, 1, 0], [29, 30, 2, 1, 0], [30, 40, 3, 1, 0], [40, 90, 3, 0, 1]]
    assert (e1["program"] == "A").all() and (e1["age"] == 31).all()
    e2 = cp[cp["episode_id"] == "E2"]
    # ongoing: in treatment throughout; bup days 10-37 -> on over (10, 38]; event day 45
    assert e2[["start", "stop", "on_buprenorphine", "in_treatment"]].values.tolist() == [
        [0, 5, 0, 1], [5, 10, 0, 1], [10, 38, 1, 1], [38, 40, 0, 1], [40, 45, 0, 1]]


def test_counting_process_lazy_returns_expression():
    import ibis

    data = small_case()
    expr = counting_process_frame(data, episodes=data.admissions, lazy=True)
    assert isinstance(expr, ibis.expr.types.Table)
    got = expr.to_pandas().sort_values(["episode_id", "start"]).reset_index(drop=True)
    eager = counting_process_frame(data, episodes=data.admissions, covariates=None)
    pd.testing.assert_frame_equal(got[eager.columns].sort_values(["episode_id", "start"]).reset_index(drop=True),
                                  eager.sort_values(["episode_id", "start"]).reset_index(drop=True),
                                  check_dtype=False)


def test_landmark_frame_exact():
    data = small_case()
    att = Attrition()
    lm = landmark_frame(data, landmark_days=21, episodes=data.admissions, attrition=att)
    r = lm.set_index("episode_id")
    # E3 relapsed on day 20 <= 21: excluded; clock reset for the others
    assert list(r.index) == ["E1", "E2"]
    assert r["time"].tolist() == [69, 24]
    assert r["origin_date"].tolist() == [day(21), day(21)]
    assert r["mat_by_landmark"].tolist() == [0, 1] and r["buprenorphine_by_landmark"].tolist() == [0, 1]
    # sessions in [0, 21): P1 group day 0 only (day 2 no-show); P2 family day 5
    assert r.loc["E1", "sessions_group"] == 1 and r.loc["E1", "hours_individual"] == 0.0
    assert r.loc["E1", "attendance"] == 0.5
    assert r.loc["E2", "hours_family"] == 1.5
    table = att.to_frame()
    assert table["rows_removed"].tolist() == [0, 1]
    assert table.loc[1, "reason"] == "relapse on or before the landmark"
    assert table["rows_remaining"].iloc[-1] == len(lm)


def test_defaults_work_with_only_iopdata():
    """Every frame builds from an IOPData alone (episodes and eras from their modules)."""
    data = small_case()
    sf = survival_frame(data)
    cp = counting_process_frame(data)
    lm = landmark_frame(data)
    assert len(sf) == 3 and set(cp["episode_id"]) == set(sf["episode_id"])
    assert len(lm) == 2
    tot = cp.assign(d=cp["stop"] - cp["start"]).groupby("episode_id")["d"].sum()
    assert (tot.reindex(sf["episode_id"]).to_numpy() == sf["time"].to_numpy()).all()


# ----------------------------------------------------------------------------- properties
@st.composite
def cohorts(draw):
    n_pat = draw(st.integers(1, 4))
    rows, ev, eras, obs = [], [], [], []
    k = 0
    for p in range(n_pat):
        pid = f"P{p}"
        start = 0
        for _ in range(draw(st.integers(1, 2))):
            admit = start + draw(st.integers(0, 30))
            los = draw(st.integers(1, 60))
            ongoing = draw(st.booleans()) and draw(st.booleans())
            rows.append((f"E{k}", pid, day(admit), None if ongoing else day(admit + los),
                         None if ongoing else "completed"))
            k += 1
            start = admit + los + 1
            if ongoing:
                break
        obs.append((pid, day(start + draw(st.integers(1, 200)))))
        for _ in range(draw(st.integers(0, 3))):
            ev.append((pid, day(draw(st.integers(0, 300))),
                       draw(st.sampled_from(["uds", "self_report_use", "aftercare_contact", "death", "ed_visit"])),
                       draw(st.sampled_from(["positive", "negative"]))))
        for _ in range(draw(st.integers(0, 3))):
            s = draw(st.integers(-30, 250))
            eras.append((pid, draw(st.sampled_from(["buprenorphine", "methadone", "naltrexone", "acamprosate"])),
                         day(s), day(s + draw(st.integers(0, 60)))))
    adm = admissions(rows)
    evd = pd.DataFrame(ev, columns=["patient_id", "event_date", "event_type", "result"]).assign(substance=None)
    evd["event_date"] = ts(evd["event_date"])
    evd["result"] = evd["result"].where(evd["event_type"] == "uds", None)
    obsd = pd.DataFrame(obs, columns=["patient_id", "observation_end"])
    erd = pd.DataFrame(eras, columns=["patient_id", "medication_class", "era_start", "era_end"])
    # eras of one class never overlap (as medication_eras guarantees): keep the first of overlapping ones
    erd = erd.sort_values(["patient_id", "medication_class", "era_start"]).reset_index(drop=True)
    prev_end = erd.groupby(["patient_id", "medication_class"])["era_end"].shift()
    erd = erd[prev_end.isna() | (erd["era_start"] > prev_end + pd.Timedelta(days=1))].reset_index(drop=True)
    if len(erd):
        ends = erd.groupby(["patient_id", "medication_class"])["era_end"].cummax().shift()
        erd = erd[~((erd["patient_id"] == erd["patient_id"].shift())
                    & (erd["medication_class"] == erd["medication_class"].shift())
                    & (erd["era_start"] <= ends + pd.Timedelta(days=1)))].reset_index(drop=True)
    origin = draw(st.sampled_from(["admission", "discharge", "landmark"]))
    data = IOPData(empty("patients"), adm, empty("sessions"), empty("medications"), evd, obsd)
    return data, adm, erd, origin


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cohorts())
def test_counting_rows_tile_followup(case):
    data, adm, eras, origin = case
    d = RelapseDefinition(origin=origin, landmark_days=14 if origin == "landmark" else None)
    att = Attrition()
    sf = survival_frame(data, episodes=adm, definition=d, covariates=None, attrition=att)
    table = att.to_frame()
    assert table["rows_remaining"].iloc[0] == len(adm)
    assert table["rows_removed"].sum() == len(adm) - len(sf)
    if len(sf) == 0:
        return
    cp = counting_process_frame(data, episodes=adm, eras=eras, definition=d, covariates=None)
    origin_day = dict(zip(sf["episode_id"], (sf["origin_date"] - D0).dt.days))
    sfi = sf.set_index("episode_id")
    for eid, g in cp.groupby("episode_id", sort=False):
        start, stop = g["start"].to_numpy(), g["stop"].to_numpy()
        assert start[0] == 0 and stop[-1] == sfi.loc[eid, "time"]
        assert (stop > start).all() and (start[1:] == stop[:-1]).all()  # no gap, no overlap
        assert (g["event"].iloc[:-1] == 0).all() and (g["status"].iloc[:-1] == 0).all()
        assert g["event"].iloc[-1] == sfi.loc[eid, "event"] and g["status"].iloc[-1] == sfi.loc[eid, "status"]
        # brute-force oracle for on_<class>: era days [s, e] relative to origin are on over (s, e + 1]
        pid = sfi.loc[eid, "patient_id"]
        o = origin_day[eid]
        mine = eras[eras["patient_id"] == pid]
        for row in g.itertuples():
            on = {c: 0 for c in ["buprenorphine", "methadone", "naltrexone", "acamprosate"]}
            for er in mine.itertuples():
                s = (er.era_start - D0).days - o
                e1 = (er.era_end - D0).days - o + 1
                if s <= row.start and row.stop <= e1:
                    on[er.medication_class] = 1
                assert not (s < row.stop and row.start < e1) or (s <= row.start and row.stop <= e1)
            assert row.on_buprenorphine == on["buprenorphine"] and row.on_methadone == on["methadone"]
            assert row.on_naltrexone == on["naltrexone"] and row.on_mat == int(any(on.values()))
    # person-time preserved
    pt = (cp["stop"] - cp["start"]).sum()
    assert pt == sf["time"].sum()
    assert cp["event"].sum() == sf["event"].sum()


# ----------------------------------------------------------------------------- simulator truth
def test_counting_process_reproduces_simulator_switch_times():
    """Single-episode patients: on_mat and in_treatment switch exactly at the simulator's truth times."""
    synth = pytest.importorskip("iop_research.data.synth")
    data = synth.simulate_cohort(250, seed=5)
    cp = counting_process_frame(data, grace_days=0, covariates=None)
    te = data.truth.episodes.set_index("episode_id")
    mi = data.truth.mat_intervals
    n_ep = data.admissions.groupby("patient_id").size()
    single = set(data.admissions.loc[data.admissions["patient_id"].map(n_ep) == 1, "episode_id"])
    n_checked = 0
    for eid, g in cp[cp["episode_id"].isin(single)].groupby("episode_id", sort=False):
        T = g["stop"].iloc[-1]
        st_, v = g["start"].to_numpy(), g["on_mat"].to_numpy()
        switches = ([0] if v[0] == 1 else []) + [int(st_[i]) for i in range(1, len(g)) if v[i] != v[i - 1]]
        m = mi[mi["episode_id"] == eid]
        truth = sorted({max(int(s), 0) for s in m["start_day"] if s < T} | {int(e) for e in m["stop_day"] if e < T})
        assert switches == truth, eid
        it = g["in_treatment"].to_numpy()
        off = [int(st_[i]) for i in range(1, len(g)) if it[i] != it[i - 1]]
        dis = te.loc[eid, "discharge_day"]
        assert off == ([int(dis)] if 0 < dis < T and not pd.isna(data.admissions.set_index("episode_id")
                                                                    .loc[eid, "discharge_date"]) else [])
        n_checked += 1
    assert n_checked > 100


# Spark vs DuckDB for survival_frame / counting_process_frame: tests/test_engines_spark.py


# ----------------------------------------------------------------------------- engine session
def test_engine_session_reuses_one_connection_and_gives_the_same_frames(monkeypatch):
    """build_episodes -> medication_eras -> relapse_outcomes -> survival_frame / counting_process_frame
    on one EngineSession: one DuckDB connection, each input table registered once, and frames equal
    to the step-by-step run without a session."""
    import ibis

    from iop_research.data.synth import simulate_cohort
    from iop_research.derive.engine import EngineSession
    from iop_research.derive.episodes import build_episodes
    from iop_research.derive.exposures import medication_eras
    from iop_research.derive.outcomes import relapse_outcomes

    data = simulate_cohort(40, seed=11)

    def pipeline(engine):
        eps = build_episodes(data, engine=engine)
        eras = medication_eras(data.medications, engine=engine)
        out = relapse_outcomes(data, episodes=eps, engine=engine)
        sf = survival_frame(data, episodes=eps, eras=eras, engine=engine)
        cp = counting_process_frame(data, episodes=eps, eras=eras, engine=engine, cum_sessions=True, covariates=None)
        return eps, eras, out, sf, cp

    plain = pipeline(None)
    connects = []
    real_connect = ibis.duckdb.connect
    monkeypatch.setattr(ibis.duckdb, "connect", lambda *a, **k: connects.append(1) or real_connect(*a, **k))
    with EngineSession() as session:
        assert repr(session).startswith("EngineSession(engine=None, not connected")
        shared = pipeline(session)
        # sessions, admissions, patients, observation, medications: once each, although
        # build_episodes and medication_eras (and survival_frame's steps) all start from them
        first = session.n_registered
        build_episodes(data, engine=session)
        medication_eras(data.medications, engine=session)
        assert session.n_registered == first
    assert len(connects) == 1
    for a, b in zip(plain, shared):
        pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ModelSpecificationError, match="closed"):
        build_episodes(data, engine=session)


def test_engine_session_keeps_intermediate_tables_in_the_backend():
    from iop_research.data.synth import simulate_cohort
    from iop_research.derive.engine import EngineSession, collect
    from iop_research.derive.episodes import build_episodes

    data = simulate_cohort(20, seed=3)
    with EngineSession() as session:
        lazy = build_episodes(data, engine=session, lazy=True)
        kept = session.keep(lazy, "episodes")
        assert type(kept.op()).__name__ == "DatabaseTable"  # a table of the backend, not an expression
        got = collect(kept.order_by("episode_id"))
    expected = build_episodes(data)
    assert len(got) == len(expected)
    assert sorted(got["episode_id"]) == sorted(expected["episode_id"])
