"""OMOP CDM reader and writer (iop_research.datasets.omop) on DuckDB and PostgreSQL.

* Round trip: ``simulate_cohort -> write_omop -> read_omop`` gives back every table OMOP can
  carry, and the derived episodes (gap rule), MAT eras, relapse outcomes and counting-process
  frame are byte-identical to those of the original (as in ``tests/test_determinism.py``).
* A hand-built CDM (written here with plain ``create_table``, not by ``write_omop``) with known
  sessions, gaps, dispensings, screens and a death yields the episodes, eras and outcomes
  written out below.
* Concept sets from a user JSON file (ATLAS export format) change what is read.
* PostgreSQL (``pg_con`` from ``tests/conftest_pg.py``) gives the same tables and results as DuckDB.
* The derive steps run inside PostgreSQL (``engine=`` the Ibis PostgreSQL backend, and on
  ``read_omop(lazy=True)`` tables of a PostgreSQL CDM) and give DuckDB's tables; they leave no
  tables behind in the database.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

ibis = pytest.importorskip("ibis")

from conftest_pg import pg_con, pg_url  # noqa: F401  (fixtures)

from iop_research.data.io import IOPData
from iop_research.data.schema import empty_table
from iop_research.data.synth import simulate_cohort
from iop_research.datasets.omop import (
    OMOP_ROLES,
    ConceptSetError,
    load_concept_sets,
    read_omop,
    resolve_concept_sets,
    write_omop,
)
from iop_research.derive.engine import EngineSession, as_table, int_from_bool, stage
from iop_research.derive.episodes import build_episodes, episode_attrition
from iop_research.derive.exposures import medication_eras, proportion_days_covered
from iop_research.derive.frames import counting_process_frame, landmark_frame, survival_frame
from iop_research.derive.outcomes import recurrent_relapses, relapse_outcomes
from iop_research.exceptions import DataReadError, IopError

pytestmark = pytest.mark.filterwarnings("ignore:.*fetch_arrow_table.*:DeprecationWarning")

N_PATIENTS = 60
SEED = 17


def fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 of the CSV text of a frame (as tests/test_determinism.py)."""
    return hashlib.sha256(df.to_csv().encode("utf-8")).hexdigest()


def pipeline(data: IOPData) -> dict[str, pd.DataFrame]:
    """Episodes by the gap rule, MAT eras, relapse outcomes, counting-process frame."""
    ep = build_episodes(data, mode="sessions", gap_days=30)
    return {
        "episodes": ep,
        "eras": medication_eras(data.medications),
        "outcomes": relapse_outcomes(data, episodes=ep),
        "counting_process": counting_process_frame(data, episodes=ep),
    }


def omop_expressible(data: IOPData) -> IOPData:
    """What OMOP can carry of ``data`` (module docstring of iop_research.datasets.omop): no
    admissions, attended sessions without episode ids, no dose, no substance on negative screens."""
    ses = data.sessions.loc[data.sessions["attended"]].assign(episode_id=None)
    ev = data.events.copy()
    negative_screen = ev["event_type"].eq("uds") & ev["result"].ne("positive")
    ev["substance"] = ev["substance"].where(~negative_screen, None)
    return IOPData(patients=data.patients, admissions=empty_table("admissions"),
                   sessions=ses.reset_index(drop=True), medications=data.medications.assign(dose_mg=np.nan),
                   events=ev, observation=data.observation).coerce()


_KEYS = {
    "patients": ["patient_id"],
    "sessions": ["patient_id", "session_date", "modality", "minutes"],
    "medications": ["patient_id", "dispense_date", "medication", "days_supply"],
    "events": ["patient_id", "event_date", "event_type", "result", "substance"],
    "observation": ["patient_id"],
}


def sorted_table(df: pd.DataFrame, name: str) -> pd.DataFrame:
    return df.sort_values(_KEYS[name], kind="stable", na_position="first").reset_index(drop=True)


@pytest.fixture(scope="module")
def cohort() -> IOPData:
    return simulate_cohort(N_PATIENTS, seed=SEED, progress=False)


@pytest.fixture(scope="module")
def expected(cohort):
    return omop_expressible(cohort)


@pytest.fixture(scope="module")
def expected_results(expected):
    return pipeline(expected)


@pytest.fixture(scope="module")
def duck_con(cohort):
    con = ibis.duckdb.connect()
    write_omop(cohort, con, cdm_schema="cdm")
    return con


@pytest.fixture(scope="module")
def duck_back(duck_con):
    return read_omop(duck_con, cdm_schema="cdm", patient_id_col="person_source_value")


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("table", list(_KEYS))
def test_round_trip_duckdb_gives_back_the_tables(duck_back, expected, table):
    got = sorted_table(getattr(duck_back, table), table)
    want = sorted_table(getattr(expected, table), table)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert len(got) > 0


def test_round_trip_loses_only_what_omop_cannot_carry(duck_back, cohort):
    assert duck_back.admissions.empty
    assert duck_back.sessions["attended"].all()
    assert len(duck_back.sessions) == int(cohort.sessions["attended"].sum()) < len(cohort.sessions)
    assert duck_back.medications["dose_mg"].isna().all()


@pytest.fixture(scope="module")
def duck_results(duck_back):
    return pipeline(duck_back)


@pytest.mark.parametrize("step", ["episodes", "eras", "outcomes", "counting_process"])
def test_round_trip_duckdb_pipeline_byte_identical(duck_results, expected_results, step):
    got = duck_results[step]
    assert len(got) > 0
    assert fingerprint(got) == fingerprint(expected_results[step])


def test_gap_rule_episodes_match_original_but_for_no_shows(duck_back, cohort):
    """Episodes from the full original (with no-shows) differ only in columns that count no-shows."""
    orig = build_episodes(cohort, mode="sessions", gap_days=30)
    back = build_episodes(duck_back, mode="sessions", gap_days=30)
    no_show_cols = ["n_sessions_scheduled", "attendance_rate"]
    pd.testing.assert_frame_equal(orig.drop(columns=no_show_cols), back.drop(columns=no_show_cols))
    assert (orig["n_sessions_scheduled"] >= back["n_sessions_scheduled"]).all()
    assert (orig["n_sessions_scheduled"] > back["n_sessions_scheduled"]).any()


def test_round_trip_through_duckdb_file_url(cohort, expected, tmp_path):
    url = f"duckdb:///{tmp_path / 'omop.duckdb'}"
    write_omop(cohort, url, cdm_schema="cdm")
    back = read_omop(url, cdm_schema="cdm", patient_id_col="person_source_value")
    pd.testing.assert_frame_equal(sorted_table(back.events, "events"), sorted_table(expected.events, "events"),
                                  check_dtype=False)


def test_lazy_returns_database_expressions_that_run_the_pipeline(duck_con, duck_back, duck_results):
    lazy = read_omop(duck_con, cdm_schema="cdm", patient_id_col="person_source_value", lazy=True)
    assert set(lazy) == {"patients", "sessions", "medications", "events", "observation"}
    assert all(isinstance(t, ibis.expr.types.Table) for t in lazy.values())
    # sessions and dispensings stay in the CDM database as unexecuted expressions; the small
    # tables come to pandas; episodes, eras and the counting-process frame are the same
    small = {k: lazy[k].to_pandas() for k in ("patients", "events", "observation")}
    mixed = IOPData(patients=small["patients"], admissions=empty_table("admissions"), sessions=lazy["sessions"],
                    medications=lazy["medications"], events=small["events"], observation=small["observation"])
    ep = build_episodes(mixed, mode="sessions", gap_days=30)
    eras = medication_eras(lazy["medications"])
    assert fingerprint(ep) == fingerprint(duck_results["episodes"])
    assert fingerprint(eras) == fingerprint(duck_results["eras"])
    cp = counting_process_frame(mixed, episodes=ep, eras=eras)
    assert fingerprint(cp) == fingerprint(duck_results["counting_process"])


def test_person_id_as_patient_id(duck_con, cohort):
    back = read_omop(duck_con, cdm_schema="cdm", validate=False)
    assert back.patients["patient_id"].tolist() == sorted(str(i) for i in range(1, N_PATIENTS + 1))
    assert len(back.sessions) == int(cohort.sessions["attended"].sum())


def test_patient_id_prefix_in_every_table(duck_con, duck_back):
    """patient_id_prefix: person 17 is ``person-17`` in every table, eager and lazy (plain-number
    ids are refused by the report privacy gate)."""
    back = read_omop(duck_con, cdm_schema="cdm", patient_id_prefix="person-")
    plain = read_omop(duck_con, cdm_schema="cdm")
    for name in _KEYS:
        got, want = getattr(back, name), getattr(plain, name)
        assert len(got) == len(want) > 0
        assert (got["patient_id"] == "person-" + want["patient_id"]).all(), name
    lazy = read_omop(duck_con, cdm_schema="cdm", patient_id_prefix="person-", lazy=True)
    assert lazy["sessions"].patient_id.to_pandas().str.startswith("person-").all()
    with pytest.raises(DataReadError, match="patient_id_prefix must be text"):
        read_omop(duck_con, cdm_schema="cdm", patient_id_prefix=7)


# --------------------------------------------------------------------------- hand-built CDM
D = pd.Timestamp
# concept ids of the hand-built vocabulary (resolved by vocabulary + code, as at a real site)
H0015, REV0906, CPT90853, F1120, T401, LOINC_OPI, BUP_TAB, NTX_INJ, BUP_FILM = (
    501, 502, 503, 601, 602, 701, 40000001, 40000002, 40000003)


def hand_built_tables() -> dict[str, pd.DataFrame]:
    """A tiny CDM with known content (dates in 2023).

    person 1: IOP per-diem H0015 on Jan 2, 4, 6, 9 plus a 90-minute group session on Jan 4;
      then (51 days later) IOP visits with revenue code 0906 on Mar 1 (with a linked H0015
      procedure, counted once) and Mar 3 (visit only, 09:00-12:00). Buprenorphine tablets
      Jan 2 (14 days) and Jan 20 (14 days; 4 uncovered days, so one era), a buprenorphine film
      Apr 1 (days_supply missing, end date Apr 7: 7 days; 56 uncovered days, a new era), and a
      naltrexone injection (route intramuscular) Jun 1 to Jun 28. Screens: negative Jan 5,
      positive opiates Feb 15 (the relapse of the first episode).
    person 2: H0015 on Feb 1, 2, 3; dies Feb 20; observation ends Jun 30.
    person 3: no IOP; an ED visit with an opioid dependence diagnosis (F11.20) on May 5 and a
      heroin poisoning (T40.1X1A, source concept only) on May 5.
    """
    concept = pd.DataFrame({
        "concept_id": [H0015, REV0906, CPT90853, F1120, T401, LOINC_OPI, BUP_TAB, NTX_INJ, BUP_FILM,
                       1133201, 1714319],
        "concept_name": ["IOP per diem", "IOP chemical dependency", "group psychotherapy", "opioid dependence",
                         "heroin poisoning", "opiates screen", "buprenorphine 8 MG sublingual tablet",
                         "naltrexone 380 MG injection", "buprenorphine film", "buprenorphine", "naltrexone"],
        "vocabulary_id": ["HCPCS", "Revenue Code", "CPT4", "ICD10CM", "ICD10CM", "LOINC", "RxNorm", "RxNorm",
                          "RxNorm", "RxNorm", "RxNorm"],
        "concept_code": ["H0015", "0906", "90853", "F11.20", "T40.1X1A", "19295-5", "T1", "T2", "T3", "1819", "7243"],
    })
    ancestor = pd.DataFrame({
        "ancestor_concept_id": [1133201, 1133201, 1133201, 1714319, 1714319],
        "descendant_concept_id": [1133201, BUP_TAB, BUP_FILM, 1714319, NTX_INJ],
    })
    person = pd.DataFrame({"person_id": [1, 2, 3], "gender_concept_id": [8507, 8532, 8507],
                           "year_of_birth": [1980, 1975, 1990], "race_concept_id": [8527, 8516, 0],
                           "ethnicity_concept_id": [38003564, 38003564, 0],
                           "person_source_value": ["A", "B", "C"]})
    observation_period = pd.DataFrame({
        "observation_period_id": [1, 2, 3], "person_id": [1, 2, 3],
        "observation_period_start_date": [D("2022-01-01")] * 3,
        "observation_period_end_date": [D("2023-12-31"), D("2023-06-30"), D("2023-12-31")],
    })
    nat = pd.NaT
    procedure = pd.DataFrame({
        "procedure_occurrence_id": range(1, 10),
        "person_id": [1, 1, 1, 1, 1, 1, 2, 2, 2],
        "procedure_concept_id": [H0015, H0015, H0015, H0015, CPT90853, H0015, H0015, H0015, H0015],
        "procedure_date": [D("2023-01-02"), D("2023-01-04"), D("2023-01-06"), D("2023-01-09"), D("2023-01-04"),
                           D("2023-03-01"), D("2023-02-01"), D("2023-02-02"), D("2023-02-03")],
        "procedure_datetime": [nat, nat, nat, nat, D("2023-01-04 10:00"), nat, nat, nat, nat],
        "procedure_end_datetime": [nat, nat, nat, nat, D("2023-01-04 11:30"), nat, nat, nat, nat],
        "visit_occurrence_id": pd.array([None, None, None, None, None, 11, None, None, None], dtype="Int64"),
    })
    visit = pd.DataFrame({
        "visit_occurrence_id": [11, 12, 13], "person_id": [1, 1, 3],
        "visit_concept_id": [9202, 9202, 9203],
        "visit_source_concept_id": [REV0906, REV0906, 0],
        "visit_start_date": [D("2023-03-01"), D("2023-03-03"), D("2023-05-05")],
        "visit_start_datetime": [D("2023-03-01 09:00"), D("2023-03-03 09:00"), D("2023-05-05 02:00")],
        "visit_end_datetime": [D("2023-03-01 12:00"), D("2023-03-03 12:00"), D("2023-05-05 06:00")],
    })
    drug = pd.DataFrame({
        "drug_exposure_id": [1, 2, 3, 4], "person_id": [1, 1, 1, 1],
        "drug_concept_id": [BUP_TAB, BUP_TAB, BUP_FILM, NTX_INJ],
        "drug_exposure_start_date": [D("2023-01-02"), D("2023-01-20"), D("2023-04-01"), D("2023-06-01")],
        "drug_exposure_end_date": [D("2023-01-15"), D("2023-02-02"), D("2023-04-07"), D("2023-06-28")],
        "days_supply": pd.array([14, 14, None, None], dtype="Int64"),
        "route_concept_id": [4132161, 4132161, 4132161, 4302612],
    })
    measurement = pd.DataFrame({
        "measurement_id": [1, 2], "person_id": [1, 1], "measurement_concept_id": [LOINC_OPI, LOINC_OPI],
        "measurement_date": [D("2023-01-05"), D("2023-02-15")], "value_as_concept_id": [9189, 9191],
        "value_as_number": [np.nan, np.nan], "range_high": [np.nan, np.nan],
    })
    condition = pd.DataFrame({
        "condition_occurrence_id": [1, 2], "person_id": [3, 3], "condition_concept_id": [0, 0],
        "condition_source_concept_id": [F1120, T401],
        "condition_start_date": [D("2023-05-05"), D("2023-05-05")],
        "visit_occurrence_id": pd.array([13, None], dtype="Int64"),
    })
    death = pd.DataFrame({"person_id": [2], "death_date": [D("2023-02-20")]})
    return {"person": person, "observation_period": observation_period, "procedure_occurrence": procedure,
            "visit_occurrence": visit, "drug_exposure": drug, "measurement": measurement,
            "condition_occurrence": condition, "death": death, "concept": concept, "concept_ancestor": ancestor}


def load_tables(con, tables: dict[str, pd.DataFrame], schema: str) -> None:
    con.create_database(schema, force=True)
    for name, df in tables.items():
        con.create_table(name, df, database=schema, overwrite=True)


def _hand_built_duckdb():
    con = ibis.duckdb.connect()
    load_tables(con, hand_built_tables(), "cdm")
    return con


def check_hand_built(data: IOPData) -> None:
    """The episodes, eras and outcomes of the hand-built CDM, written out."""
    s = data.sessions
    assert s["patient_id"].tolist() == ["1"] * 7 + ["2"] * 3
    assert s["session_date"].dt.strftime("%m-%d").tolist() == [
        "01-02", "01-04", "01-04", "01-06", "01-09", "03-01", "03-03", "02-01", "02-02", "02-03"]
    # the group session carries its 90 minutes; per-diem days 180 (default); the Mar 1 visit is
    # counted once (through its linked H0015 procedure), the Mar 3 visit by its own times
    assert s["minutes"].tolist() == [180, 90, 180, 180, 180, 180, 180, 180, 180, 180]
    assert (s["modality"] == "group").all() and s["attended"].all()

    ep = build_episodes(data, mode="sessions", gap_days=30)
    got = ep[["episode_id", "patient_id", "admit_date", "discharge_date", "n_sessions_attended", "hours_attended"]]
    want = pd.DataFrame({
        "episode_id": ["1-S1", "1-S2", "2-S1"],
        "patient_id": ["1", "1", "2"],
        "admit_date": [D("2023-01-02"), D("2023-03-01"), D("2023-02-01")],
        "discharge_date": [D("2023-01-09"), D("2023-03-03"), D("2023-02-03")],
        "n_sessions_attended": [5, 2, 3],
        "hours_attended": [13.5, 6.0, 9.0],
    })
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    # with a 60-day gap rule the two stays of person 1 are one episode
    assert build_episodes(data, mode="sessions", gap_days=60)["episode_id"].tolist() == ["1-S1", "2-S1"]

    eras = medication_eras(data.medications)
    got = eras[["patient_id", "medication_class", "era_number", "era_start", "era_end", "n_dispensings"]]
    want = pd.DataFrame({
        "patient_id": ["1", "1", "1"],
        "medication_class": ["buprenorphine", "buprenorphine", "naltrexone"],
        "era_number": [1, 2, 1],
        "era_start": [D("2023-01-02"), D("2023-04-01"), D("2023-06-01")],
        "era_end": [D("2023-02-02"), D("2023-04-07"), D("2023-06-28")],
        "n_dispensings": [2, 1, 1],
    })
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    assert data.medications["medication"].tolist() == ["buprenorphine"] * 3 + ["naltrexone_xr"]
    assert data.medications["days_supply"].tolist() == [14, 14, 7, 28]

    ev = data.events[["patient_id", "event_date", "event_type", "result", "substance"]]
    want = pd.DataFrame({
        "patient_id": ["1", "1", "2", "3", "3"],
        "event_date": [D("2023-01-05"), D("2023-02-15"), D("2023-02-20"), D("2023-05-05"), D("2023-05-05")],
        "event_type": ["uds", "uds", "death", "ed_visit", "overdose"],
        "result": ["negative", "positive", None, None, None],
        "substance": [None, "opioids", None, "opioids", "opioids"],
    })
    pd.testing.assert_frame_equal(ev.reset_index(drop=True), want, check_dtype=False)

    out = relapse_outcomes(data, episodes=ep)
    got = out[["episode_id", "time", "event", "status"]]
    # episode 1: positive screen 44 days after Jan 2; episode 2: censored at Dec 31 (305 days);
    # person 2: death 19 days after Feb 1, a competing event
    want = pd.DataFrame({"episode_id": ["1-S1", "1-S2", "2-S1"], "time": [44, 305, 19], "event": [1, 0, 0],
                         "status": [1, 0, 2]})
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)


def test_hand_built_cdm_duckdb():
    data = read_omop(_hand_built_duckdb(), cdm_schema="cdm")
    want = pd.DataFrame({
        "patient_id": ["1", "2", "3"], "birth_year": [1980, 1975, 1990], "sex": ["male", "female", "male"],
        "race": ["white", "black", None], "ethnicity": ["not_hispanic", "not_hispanic", None]})
    pd.testing.assert_frame_equal(data.patients, want, check_dtype=False)
    assert data.observation["observation_end"].tolist() == [D("2023-12-31"), D("2023-06-30"), D("2023-12-31")]
    check_hand_built(data)


def test_observation_end_cuts_follow_up():
    data = read_omop(_hand_built_duckdb(), cdm_schema="cdm", observation_end="2023-03-31")
    assert data.observation["observation_end"].tolist() == [D("2023-03-31"), D("2023-03-31"), D("2023-03-31")]
    # nothing dated after the cut-off is read: the Apr 1 film, the Jun 1 injection, the May 5 events
    assert data.medications["dispense_date"].max() == D("2023-01-20")
    assert data.events["event_type"].tolist() == ["uds", "uds", "death"]
    assert len(data.sessions) == 10


# --------------------------------------------------------------------------- user concept sets
def test_user_concept_set_file_changes_what_is_read(tmp_path):
    """An ATLAS-format file: IOP sessions are H0015 only (no revenue-code visits), and the
    buprenorphine set excludes the film (isExcluded), so the Mar 3 visit and the Apr 1 film vanish."""
    con = _hand_built_duckdb()
    atlas = {
        "iop_session": {"items": [{"concept": {"CONCEPT_ID": None, "VOCABULARY_ID": "HCPCS", "CONCEPT_CODE": "H0015"},
                                   "isExcluded": False, "includeDescendants": False, "includeMapped": False}]},
        "moud_buprenorphine": {"items": [
            {"concept": {"CONCEPT_ID": 1133201}, "isExcluded": False, "includeDescendants": True},
            {"concept": {"CONCEPT_ID": BUP_FILM}, "isExcluded": True, "includeDescendants": False}]},
    }
    path = tmp_path / "sets.json"
    path.write_text(json.dumps(atlas))
    default = read_omop(con, cdm_schema="cdm")
    user = read_omop(con, cdm_schema="cdm", concept_sets=path)
    assert len(default.sessions) == 10 and len(user.sessions) == 9
    assert D("2023-03-03") not in set(user.sessions["session_date"])
    assert default.medications["dispense_date"].tolist() == [D("2023-01-02"), D("2023-01-20"), D("2023-04-01"),
                                                             D("2023-06-01")]
    assert user.medications["dispense_date"].tolist() == [D("2023-01-02"), D("2023-01-20"), D("2023-06-01")]
    # the second episode of person 1 is now a single day
    ep = build_episodes(user, mode="sessions")
    assert ep.loc[ep["episode_id"] == "1-S2", "discharge_date"].tolist() == [D("2023-03-01")]


def test_single_atlas_export_named_by_role(tmp_path):
    con = _hand_built_duckdb()
    export = {"name": "moud_naltrexone", "expression": {"items": [
        {"concept": {"CONCEPT_ID": 1714319}, "isExcluded": False, "includeDescendants": False}]}}
    path = tmp_path / "ntx.json"
    path.write_text(json.dumps(export))
    data = read_omop(con, cdm_schema="cdm", concept_sets=path)
    # without descendants the injection (a descendant of naltrexone) is not a naltrexone dispensing
    assert "naltrexone_xr" not in set(data.medications["medication"])
    assert len(data.medications) == 3


def test_descendants_through_concept_ancestor_and_code_prefix():
    ids = resolve_concept_sets(_hand_built_duckdb(), cdm_schema="cdm")
    assert ids["moud_buprenorphine"] == [1133201, BUP_TAB, BUP_FILM]
    assert ids["iop_session"] == [H0015, REV0906]
    assert ids["oud"] == [F1120]  # F11 with descendants: every ICD-10-CM code starting F11
    assert ids["overdose_opioids"] == [T401]
    assert ids["session_family"] == []  # codes absent from this vocabulary resolve to nothing


def test_default_concept_sets_cover_every_role_and_document_codes():
    sets = load_concept_sets()
    assert set(sets) == set(OMOP_ROLES)
    for role, items in sets.items():
        assert items, role
        for it in items:
            c = it["concept"]
            assert c["VOCABULARY_ID"] and c["CONCEPT_CODE"] and c["CONCEPT_NAME"], (role, c)
    codes = {(it["concept"]["VOCABULARY_ID"], it["concept"]["CONCEPT_CODE"]) for it in sets["iop_session"]}
    assert codes == {("HCPCS", "H0015"), ("HCPCS", "S9480"), ("Revenue Code", "0905"), ("Revenue Code", "0906")}
    assert sets["moud_buprenorphine"][0]["concept"]["CONCEPT_ID"] == 1133201
    assert sets["moud_methadone"][0]["concept"]["CONCEPT_ID"] == 1103640
    assert sets["moud_naltrexone"][0]["concept"]["CONCEPT_ID"] == 1714319


# --------------------------------------------------------------------------- errors
def test_unknown_role_is_a_concept_set_error():
    with pytest.raises(ConceptSetError, match="unknown role.*'moud_heroin'") as err:
        load_concept_sets({"moud_heroin": [1]})
    assert isinstance(err.value, IopError) and isinstance(err.value, ValueError)


def test_item_without_id_or_code_is_rejected():
    with pytest.raises(ConceptSetError, match="neither CONCEPT_ID nor VOCABULARY_ID"):
        load_concept_sets({"oud": {"items": [{"concept": {"CONCEPT_NAME": "x"}}]}})


def test_codes_need_a_concept_table():
    con = ibis.duckdb.connect()
    tables = hand_built_tables()
    del tables["concept"]
    load_tables(con, tables, "cdm")
    with pytest.raises(ConceptSetError, match="need the vocabulary table 'concept'"):
        read_omop(con, cdm_schema="cdm")


def test_missing_cdm_tables_name_the_schema():
    con = ibis.duckdb.connect()
    with pytest.raises(DataReadError, match="person, observation_period not found in schema 'cdm'"):
        read_omop(con, cdm_schema="cdm")


def test_bad_url_is_a_data_read_error():
    with pytest.raises(DataReadError, match="Could not connect"):
        read_omop("nosuchdb://nowhere/x", cdm_schema="cdm")


# --------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="module")
def pg_back(pg_con, cohort):  # noqa: F811
    write_omop(cohort, pg_con, cdm_schema="omop_round_trip")
    return read_omop(pg_con, cdm_schema="omop_round_trip", patient_id_col="person_source_value")


@pytest.mark.parametrize("table", list(_KEYS))
def test_postgres_round_trip_equals_duckdb(pg_back, duck_back, expected, table):
    got = getattr(pg_back, table)
    pd.testing.assert_frame_equal(got, getattr(duck_back, table))
    pd.testing.assert_frame_equal(sorted_table(got, table), sorted_table(getattr(expected, table), table),
                                  check_dtype=False)


def test_postgres_pipeline_identical_to_duckdb(pg_back, duck_results, expected_results):
    got = pipeline(pg_back)
    for step, frame in got.items():
        assert fingerprint(frame) == fingerprint(duck_results[step]) == fingerprint(expected_results[step]), step


def test_hand_built_cdm_postgres(pg_con, pg_url):  # noqa: F811
    load_tables(pg_con, hand_built_tables(), "omop_hand_built")
    via_con = read_omop(pg_con, cdm_schema="omop_hand_built")
    check_hand_built(via_con)
    via_url = read_omop(pg_url, cdm_schema="omop_hand_built")
    for name in _KEYS:
        pd.testing.assert_frame_equal(getattr(via_url, name), getattr(via_con, name))


# --------------------------------------------------------------------------- derivation inside PostgreSQL
def _steps(data: IOPData, episodes: pd.DataFrame) -> dict:
    """Every derive step that takes ``engine=``, as engine -> DataFrame."""
    closed = episodes.dropna(subset=["discharge_date"])
    return {
        "episodes_admissions": lambda e: build_episodes(data, engine=e),
        "episodes_sessions": lambda e: build_episodes(data, mode="sessions", gap_days=30, engine=e),
        "episodes_teds_los": lambda e: build_episodes(data, engine=e, los_convention="teds"),
        "episodes_cut_off": lambda e: build_episodes(data, mode="sessions", observation="2023-06-30", engine=e),
        "attrition_admissions": lambda e: episode_attrition(data, engine=e),
        "eras": lambda e: medication_eras(data.medications, engine=e),
        "eras_no_grace": lambda e: medication_eras(data.medications, grace_days=0, engine=e),
        "pdc": lambda e: proportion_days_covered(data.medications, closed, engine=e),
        "outcomes": lambda e: relapse_outcomes(data, episodes=episodes, engine=e),
        "survival_frame": lambda e: survival_frame(data, episodes=episodes, engine=e),
        "counting_process": lambda e: counting_process_frame(data, episodes=episodes, engine=e),
        "landmark": lambda e: landmark_frame(data, episodes=episodes, engine=e),
        "recurrent": lambda e: recurrent_relapses(data, episodes=episodes, engine=e),
    }


@pytest.fixture(scope="module")
def cohort_episodes(cohort):
    return build_episodes(cohort)


@pytest.mark.parametrize("step", list(_steps(None, pd.DataFrame({"discharge_date": []}))))
def test_derivation_runs_inside_postgres_and_equals_duckdb(pg_con, cohort, cohort_episodes, step):  # noqa: F811
    """engine=<Ibis PostgreSQL backend>: the expressions compile and run on PostgreSQL (no
    CAST(boolean AS bigint), which PostgreSQL rejects) and give DuckDB's table, attrs included."""
    run = _steps(cohort, cohort_episodes)[step]
    want = run(None)
    got = run(pg_con)
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want)
    assert got.attrs == want.attrs
    assert fingerprint(got) == fingerprint(want)


def test_pipeline_inside_postgres_on_the_cdm(pg_con, pg_back, duck_results):  # noqa: F811
    """read_omop(lazy=True) on PostgreSQL: sessions and dispensings stay in the CDM database and
    episodes, eras and the counting-process frame are built there, equal to DuckDB's."""
    lazy = read_omop(pg_con, cdm_schema="omop_round_trip", patient_id_col="person_source_value", lazy=True)
    assert lazy["sessions"]._find_backend().name == "postgres"
    small = {k: lazy[k].to_pandas() for k in ("patients", "events", "observation")}
    data = IOPData(patients=small["patients"], admissions=empty_table("admissions"), sessions=lazy["sessions"],
                   medications=lazy["medications"], events=small["events"], observation=small["observation"])
    with EngineSession(pg_con) as session:
        ep = build_episodes(data, mode="sessions", gap_days=30, engine=session)
        eras = medication_eras(lazy["medications"], engine=session)
        cp = counting_process_frame(data, episodes=ep, eras=eras, engine=session)
    assert fingerprint(ep) == fingerprint(duck_results["episodes"])
    assert fingerprint(eras) == fingerprint(duck_results["eras"])
    assert fingerprint(cp) == fingerprint(duck_results["counting_process"])


def _iop_tables(con) -> list[str]:
    """Tables named iop_* in every schema of the database, temporary ones included."""
    sql = "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables WHERE table_name LIKE 'iop\\_%'"
    return sorted(con.sql(sql).to_pandas()["t"])


def test_postgres_runs_leave_no_tables_behind(pg_url, cohort):  # noqa: F811
    """Frames uploaded to PostgreSQL are temporary tables: nothing lands in the user's schemas,
    and an EngineSession on the caller's connection drops its tables when it closes."""
    con = ibis.connect(pg_url)
    try:
        with EngineSession(con) as session:
            ep = build_episodes(cohort, engine=session)
            counting_process_frame(cohort, episodes=ep, engine=session)
            during = _iop_tables(con)
        assert during and all(t.startswith("pg_temp") for t in during)
        assert _iop_tables(con) == []
        build_episodes(cohort, engine=con)  # without a session: temporary until the connection closes
        assert all(t.startswith("pg_temp") for t in _iop_tables(con))
    finally:
        con.disconnect()
    con = ibis.connect(pg_url)
    try:
        assert _iop_tables(con) == []
    finally:
        con.disconnect()


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_int_from_bool_keeps_nulls(backend, request):
    con = ibis.duckdb.connect() if backend == "duckdb" else request.getfixturevalue("pg_con")
    t = con.create_table("flags_int", pd.DataFrame({"k": [1, 2, 3], "b": pd.array([True, False, None])}),
                         temp=True, overwrite=True)
    got = t.select("k", v=int_from_bool(t.b)).order_by("k").to_pandas()
    assert got["v"].tolist()[:2] == [1, 0] and pd.isna(got["v"].iloc[2])
    assert str(t.select(v=int_from_bool(t.b)).schema()["v"]) == "int64"
    assert int(t.aggregate(n=int_from_bool(t.b).sum()).to_pandas()["n"].iloc[0]) == 1


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_stage_materialises_and_analyses_temporary_tables(backend, request):
    """engine.stage keeps an intermediate result in a temporary table (same rows); on PostgreSQL
    it and every uploaded frame are ANALYZEd, so the planner sees 700 keys, not its default guess."""
    con = ibis.duckdb.connect() if backend == "duckdb" else request.getfixturevalue("pg_con")
    src = as_table(con, pd.DataFrame({"k": np.arange(5000) % 700, "v": np.arange(5000)}), "stage_src")
    expr = src.group_by("k").aggregate(n=src.count())
    staged = stage(con, expr, "stage_test")
    assert staged.get_name().split(".")[-1].startswith("iop_stage_test_")
    pd.testing.assert_frame_equal(staged.order_by("k").to_pandas(), expr.order_by("k").to_pandas())
    if backend == "postgres":
        for table, rows in ((staged, 700), (src, 5000)):
            name = table.get_name().split(".")[-1]
            stats = con.sql(f"SELECT s.n_distinct, c.reltuples FROM pg_stats s JOIN pg_class c ON c.relname = "
                            f"s.tablename WHERE s.tablename = '{name}' AND s.attname = 'k'").to_pandas()
            assert len(stats) == 1 and stats["reltuples"].iloc[0] == rows, name  # never analysed: no row, -1
            n_distinct = stats["n_distinct"].iloc[0]
            assert (n_distinct if n_distinct > 0 else -n_distinct * rows) == pytest.approx(700), name
    spark_like = type("NoTemp", (), {"name": "pyspark"})()
    assert stage(spark_like, expr, "stage_test") is expr
