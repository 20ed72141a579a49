"""Quality measures (iop_research.derive.quality) on hand-built studies.

Each patient of a study is one case, written out below with the specification clause it
exercises. Day 0 is the index date of the measure (IET: admission; NQF 3175: first OUD
dispensing; readmission and follow-up: discharge). Every study is checked against the data
contract first (``IOPData.validate``), so the cases are data the package accepts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.data.io import IOPData
from iop_research.derive.quality import (
    QUALITY_GLANCE_COLUMNS,
    QUALITY_TIDY_COLUMNS,
    followup_after_discharge,
    iet_measure,
    moud_continuity,
    readmission_rates,
)
from iop_research.exceptions import IopError, ModelSpecificationError

D0 = pd.Timestamp("2024-03-01")


def day(n: int) -> pd.Timestamp:
    return D0 + pd.Timedelta(days=n)


class Study:
    """Builder of a small contract-valid study (each patient one case)."""

    def __init__(self):
        self.patients, self.admissions, self.sessions = [], [], []
        self.medications, self.events, self.observation = [], [], []

    def patient(self, pid, *, birth_year=1980, obs_end=400):
        self.patients.append(dict(patient_id=pid, birth_year=birth_year, sex="female", race=None, ethnicity=None))
        self.observation.append(dict(patient_id=pid, observation_end=day(obs_end)))
        return self

    def admission(self, pid, eid, admit, discharge=None, *, reason="completed", substance="opioids"):
        self.admissions.append(dict(
            episode_id=eid, patient_id=pid, program="north", admit_date=day(admit),
            discharge_date=day(discharge) if discharge is not None else pd.NaT,
            discharge_reason=(reason if discharge is not None else None), referral_source="self",
            primary_substance=substance, psychiatric_comorbidity=False, prior_treatment_episodes=0,
            severity_score=5.0, housing="stable", employment="employed"))
        return self

    def session(self, pid, eid, d, attended=True):
        self.sessions.append(dict(patient_id=pid, episode_id=eid, session_date=day(d), modality="group",
                                  minutes=180, attended=attended))
        return self

    def dispense(self, pid, d, supply, medication="buprenorphine"):
        self.medications.append(dict(patient_id=pid, medication=medication, dispense_date=day(d),
                                     days_supply=supply, dose_mg=None))
        return self

    def event(self, pid, d, kind):
        self.events.append(dict(patient_id=pid, event_date=day(d), event_type=kind, result=None, substance=None))
        return self

    def build(self) -> IOPData:
        from iop_research.data.schema import empty_table

        def frame(rows, name):
            empty = empty_table(name)
            if not rows:
                return empty
            df = pd.DataFrame(rows, columns=list(empty.columns))
            for c in empty.columns:
                if str(empty[c].dtype).startswith("datetime"):
                    df[c] = pd.to_datetime(df[c]).astype("datetime64[ns]")
                elif empty[c].dtype == float:
                    df[c] = df[c].astype(float)
            return df

        data = IOPData(patients=frame(self.patients, "patients"), admissions=frame(self.admissions, "admissions"),
                       sessions=frame(self.sessions, "sessions"), medications=frame(self.medications, "medications"),
                       events=frame(self.events, "events"), observation=frame(self.observation, "observation"))
        return data.validate()


def case(result, key, value) -> pd.Series:
    cases = result.extra["cases"]
    rows = cases[cases[key] == value]
    assert len(rows) == 1, (key, value)
    return rows.iloc[0]


def excl_counts(result) -> dict:
    t = result.extra["exclusions"]
    return dict(zip(t["reason"], t["n"]))


# ============================================================================ IET
@pytest.fixture(scope="module")
def iet():
    s = Study()
    # initiation: "on the SUD episode date or in the 13 days after (14 total days)": a session on
    # day 13 is the last day that initiates; engagement "the day after the initiation encounter
    # through 34 days after": two services on days 14..47 (day 47 = 13 + 34 is the last) engage.
    s.patient("I_init13").admission("I_init13", "E_init13", 0, 60)
    for d in (0, 13, 20, 47):
        s.session("I_init13", "E_init13", d)
    # day 14 is the 15th day: not initiated (the day-0 session is the index encounter itself).
    s.patient("I_day14").admission("I_day14", "E_day14", 0, 60)
    for d in (0, 14, 20, 30):
        s.session("I_day14", "E_day14", d)
    # initiated on day 5; the second engagement service falls on day 40 = 5 + 35: only one
    # service (day 6) inside the 34 days, so not engaged.
    s.patient("I_eng35").admission("I_eng35", "E_eng35", 0, 60)
    for d in (5, 6, 40):
        s.session("I_eng35", "E_eng35", d)
    # engagement by "one engagement medication treatment event" on day 39 = 5 + 34.
    s.patient("I_engmat").admission("I_engmat", "E_engmat", 0, 60).session("I_engmat", "E_engmat", 5)
    s.dispense("I_engmat", 39, 7)
    # "medication treatment" initiates only for the disorder's medications: an alcohol episode with
    # buprenorphine on day 3 is not initiated by it.
    s.patient("I_wrongmat").admission("I_wrongmat", "E_wrongmat", 0, 60, substance="alcohol")
    s.dispense("I_wrongmat", 3, 7)
    # medication on the episode date itself initiates (day 0 counts for medication).
    s.patient("I_mat0").admission("I_mat0", "E_mat0", 0, 60).dispense("I_mat0", 0, 28)
    # negative SUD history (194 days): an earlier episode discharged on day -194 excludes ...
    s.patient("I_hist194").admission("I_hist194", "E_hist194_old", -300, -194)
    s.admission("I_hist194", "E_hist194", 0, 60).session("I_hist194", "E_hist194", 3)
    # ... one discharged on day -195 does not.
    s.patient("I_hist195").admission("I_hist195", "E_hist195_old", -300, -195)
    s.admission("I_hist195", "E_hist195", 0, 60).session("I_hist195", "E_hist195", 3)
    # negative medication history: an OUD dispensing on day -10 excludes.
    s.patient("I_priormat").admission("I_priormat", "E_priormat", 0, 60).dispense("I_priormat", -10, 7)
    # "members 13 years and older": age 12 excluded, 13 kept.
    s.patient("I_age12", birth_year=2012).admission("I_age12", "E_age12", 0, 60)
    s.patient("I_age13", birth_year=2011).admission("I_age13", "E_age13", 0, 60)
    # continuous enrollment through day 47: observation ending day 46 excludes, 47 keeps.
    s.patient("I_obs46", obs_end=46).admission("I_obs46", "E_obs46", 0, 40)
    s.patient("I_obs47", obs_end=47).admission("I_obs47", "E_obs47", 0, 40)
    # deceased: death on day 30.
    s.patient("I_died", obs_end=30).admission("I_died", "E_died", 0, 30, reason="death").event("I_died", 30, "death")
    return iet_measure(s.build(), intake_start=day(-10))


def test_iet_initiation_window_day13_in_day14_out(iet):
    r = case(iet, "episode_id", "E_init13")
    assert r["initiated"] and r["initiation_day"] == 13
    r = case(iet, "episode_id", "E_day14")
    assert not r["initiated"] and not r["engaged"]


def test_iet_engagement_window_34_in_35_out(iet):
    r = case(iet, "episode_id", "E_init13")
    assert r["n_engagement_services"] == 2 and r["engaged"]  # days 20 and 47 (= 13 + 34)
    r = case(iet, "episode_id", "E_eng35")
    assert r["initiation_day"] == 5 and r["n_engagement_services"] == 1 and not r["engaged"]
    r = case(iet, "episode_id", "E_engmat")
    assert r["engagement_mat"] and r["n_engagement_services"] == 0 and r["engaged"]


def test_iet_medication_rules(iet):
    assert not case(iet, "episode_id", "E_wrongmat")["initiated"]
    r = case(iet, "episode_id", "E_mat0")
    assert r["initiated"] and r["initiation_day"] == 0


def test_iet_exclusions_each_counted(iet):
    ex = excl_counts(iet)
    assert ex == {"age_under_min": 1, "prior_sud_episode": 1, "prior_sud_medication": 1, "died": 1,
                  "insufficient_follow_up": 1}
    assert case(iet, "episode_id", "E_hist194")["excluded"] == "prior_sud_episode"
    assert pd.isna(case(iet, "episode_id", "E_hist195")["excluded"])
    assert case(iet, "episode_id", "E_age12")["excluded"] == "age_under_min"
    assert pd.isna(case(iet, "episode_id", "E_age13")["excluded"])
    assert case(iet, "episode_id", "E_obs46")["excluded"] == "insufficient_follow_up"
    assert pd.isna(case(iet, "episode_id", "E_obs47")["excluded"])
    assert case(iet, "episode_id", "E_died")["excluded"] == "died"
    assert case(iet, "episode_id", "E_priormat")["excluded"] == "prior_sud_medication"
    # the old episodes lie before intake_start and are not candidates
    assert set(iet.extra["cases"]["episode_id"]) == {
        "E_init13", "E_day14", "E_eng35", "E_engmat", "E_wrongmat", "E_mat0", "E_hist194", "E_hist195",
        "E_priormat", "E_age12", "E_age13", "E_obs46", "E_obs47", "E_died"}


def test_iet_rates(iet):
    assert tuple(iet.tidy.columns) == QUALITY_TIDY_COLUMNS
    assert tuple(iet.glance.columns) == QUALITY_GLANCE_COLUMNS
    g = iet.glance.iloc[0]
    assert (g["n_candidates"], g["n_excluded"], g["n_denominator"]) == (14, 5, 9)
    t = iet.tidy.set_index("rate")
    # initiated among the 9 kept: E_init13, E_eng35, E_engmat, E_mat0, E_hist195 (session day 3)
    assert (t.loc["initiation", "numerator"], t.loc["initiation", "denominator"]) == (5, 9)
    assert t.loc["initiation", "value"] == pytest.approx(5 / 9)
    # engaged: E_init13, E_engmat (E_mat0: no service or medication after day 0)
    assert (t.loc["engagement", "numerator"], t.loc["engagement", "window_days"]) == (2, 34)


# ============================================================================ NQF 3175
@pytest.fixture(scope="module")
def nqf_data():
    s = Study()

    def opioid(pid, **kw):
        s.patient(pid, **kw).admission(pid, f"E_{pid}", -5, 10)

    # "at least 180 days of continuous pharmacotherapy": six 30-day fills cover days 0..179 = 180 days.
    opioid("C_180")
    for d in range(0, 180, 30):
        s.dispense("C_180", d, 30)
    # five 30-day fills and one of 29 days: 179 days, not continuous.
    opioid("C_179")
    for d in range(0, 150, 30):
        s.dispense("C_179", d, 30)
    s.dispense("C_179", 150, 29)
    # "without a gap of more than seven days": days 30..36 uncovered (7 days) still continuous ...
    opioid("C_gap7")
    s.dispense("C_gap7", 0, 30).dispense("C_gap7", 37, 150)
    # ... days 30..37 uncovered (8 days) break the episode at 30 days.
    opioid("C_gap8")
    s.dispense("C_gap8", 0, 30).dispense("C_gap8", 38, 150)
    # a switch from methadone to buprenorphine without a gap is continuous treatment.
    opioid("C_switch")
    s.dispense("C_switch", 0, 90, "methadone").dispense("C_switch", 90, 90, "buprenorphine")
    # early refills of the same medication shift forward: fills on day 0 and 20 (30 days each) cover
    # days 0..59, so with a fill on day 67 (7-day gap, days 60..66) for 120 days the episode lasts 187 days.
    opioid("C_early")
    s.dispense("C_early", 0, 30).dispense("C_early", 20, 30).dispense("C_early", 67, 120)
    # diagnosis of OUD: no opioid admission (alcohol) -> excluded.
    s.patient("C_alcohol").admission("C_alcohol", "E_C_alcohol", -5, 10, substance="alcohol")
    s.dispense("C_alcohol", 0, 200, "naltrexone_oral")
    # "18-64 years of age": 65 excluded (index year 2024, born 1959).
    opioid("C_age65", birth_year=1959)
    s.dispense("C_age65", 0, 200)
    # the 180-day window must be observed: observation ending on day 178 excludes, 179 keeps.
    opioid("C_obs178", obs_end=178)
    s.dispense("C_obs178", 0, 100)
    opioid("C_obs179", obs_end=179)
    s.dispense("C_obs179", 0, 100)
    # death before the end of the 180-day window (day 100) excludes as deceased.
    opioid("C_died", obs_end=100)
    s.dispense("C_died", 0, 100).event("C_died", 100, "death")
    return s.build()


@pytest.fixture(scope="module")
def nqf(nqf_data):
    return moud_continuity(nqf_data)


@pytest.mark.parametrize("pid, days, ok", [
    ("C_180", 180, True), ("C_179", 179, False), ("C_gap7", 187, True), ("C_gap8", 30, False),
    ("C_switch", 180, True), ("C_early", 187, True), ("C_obs179", 100, False),
])
def test_nqf3175_continuity(nqf, pid, days, ok):
    r = case(nqf, "patient_id", pid)
    assert r["treatment_days"] == days
    assert bool(r["continuous"]) is ok
    assert pd.isna(r["excluded"])


def test_nqf3175_exclusions_and_rate(nqf, nqf_data):
    assert excl_counts(nqf) == {"no_opioid_admission": 1, "age_out_of_range": 1, "died": 1,
                                "insufficient_follow_up": 1}
    assert case(nqf, "patient_id", "C_alcohol")["excluded"] == "no_opioid_admission"
    assert case(nqf, "patient_id", "C_age65")["excluded"] == "age_out_of_range"
    assert case(nqf, "patient_id", "C_obs178")["excluded"] == "insufficient_follow_up"
    assert case(nqf, "patient_id", "C_died")["excluded"] == "died"
    t = nqf.tidy.iloc[0]
    assert (t["rate"], t["numerator"], t["denominator"]) == ("continuity_180", 4, 7)
    # the MIPS version (Quality ID 468) has no upper age limit
    assert pd.isna(case(moud_continuity(nqf_data, max_age=None), "patient_id", "C_age65")["excluded"])


# ============================================================================ readmission
@pytest.fixture(scope="module")
def readm():
    s = Study()
    # "readmission within 30 days of the index discharge date": admission on day 30 after discharge counts,
    s.patient("R_30").admission("R_30", "E_R_30a", -40, 0).admission("R_30", "E_R_30b", 30)
    # day 31 does not (but is within 90).
    s.patient("R_31").admission("R_31", "E_R_31a", -40, 0).admission("R_31", "E_R_31b", 31)
    # a readmission event (any SUD treatment) on day 90 counts for 90; day 91 does not.
    s.patient("R_ev90").admission("R_ev90", "E_R_ev90", -40, 0).event("R_ev90", 90, "readmission")
    s.patient("R_ev91").admission("R_ev91", "E_R_ev91", -40, 0).event("R_ev91", 91, "readmission")
    # no readmission at all.
    s.patient("R_none").admission("R_none", "E_R_none", -40, 0)
    # died during the stay, direct transfer: not index discharges.
    s.patient("R_death", obs_end=0).admission("R_death", "E_R_death", -40, 0, reason="death").event("R_death", 0, "death")
    s.patient("R_transfer").admission("R_transfer", "E_R_transfer", -40, 0, reason="transferred")
    # enrollment for the window: observed to day 60 -> in the 30-day denominator, not the 90-day one.
    s.patient("R_obs60", obs_end=60).admission("R_obs60", "E_R_obs60", -40, 0)
    # died on day 20 after discharge: excluded from both windows.
    s.patient("R_died20", obs_end=20).admission("R_died20", "E_R_died20", -40, 0).event("R_died20", 20, "death")
    return readmission_rates(s.build())


def test_readmission_day30_in_day31_out(readm):
    r = case(readm, "episode_id", "E_R_30a")
    assert r["readmission_day"] == 30 and r["readmitted_30"] and r["readmitted_90"]
    r = case(readm, "episode_id", "E_R_31a")
    assert r["readmission_day"] == 31 and not r["readmitted_30"] and r["readmitted_90"]
    assert case(readm, "episode_id", "E_R_ev90")["readmitted_90"]
    assert not case(readm, "episode_id", "E_R_ev91")["readmitted_90"]


def test_readmission_exclusions_and_rates(readm):
    ex = readm.extra["exclusions"]
    got = {(r, w): n for r, w, n in ex.itertuples(index=False)}
    # open episodes: the two readmission episodes E_R_30b and E_R_31b
    assert got == {("still_enrolled", 0): 2, ("died_during_episode", 0): 1, ("transferred", 0): 1,
                   ("died_in_window", 30): 1, ("insufficient_follow_up", 30): 0,
                   ("died_in_window", 90): 1, ("insufficient_follow_up", 90): 1}
    assert case(readm, "episode_id", "E_R_obs60")["excluded_90"] == "insufficient_follow_up"
    assert pd.isna(case(readm, "episode_id", "E_R_obs60")["excluded_30"])
    t = readm.tidy.set_index("rate")
    # 30 days: E_R_30a, E_R_31a, E_R_ev90, E_R_ev91, E_R_none, E_R_obs60 kept; readmitted: E_R_30a
    assert (t.loc["readmission_30", "numerator"], t.loc["readmission_30", "denominator"]) == (1, 6)
    # 90 days: E_R_obs60 also out; readmitted: E_R_30a, E_R_31a, E_R_ev90
    assert (t.loc["readmission_90", "numerator"], t.loc["readmission_90", "denominator"]) == (3, 5)


# ============================================================================ follow-up
@pytest.fixture(scope="module")
def fu():
    s = Study()
    # "follow-up within 7 days after discharge": a contact on day 7 counts for both rates,
    s.patient("F_7").admission("F_7", "E_F_7", -40, 0).event("F_7", 7, "aftercare_contact")
    # day 8 only for the 30-day rate,
    s.patient("F_8").admission("F_8", "E_F_8", -40, 0).event("F_8", 8, "aftercare_contact")
    # a contact on the discharge date is part of the stay and does not count,
    s.patient("F_0").admission("F_0", "E_F_0", -40, 0).event("F_0", 0, "aftercare_contact")
    # day 30 counts for the 30-day rate, day 31 does not.
    s.patient("F_30").admission("F_30", "E_F_30", -40, 0).event("F_30", 30, "aftercare_contact")
    s.patient("F_31").admission("F_31", "E_F_31", -40, 0).event("F_31", 31, "aftercare_contact")
    # pharmacotherapy dispensing is a follow-up service.
    s.patient("F_mat").admission("F_mat", "E_F_mat", -40, 0).dispense("F_mat", 3, 28)
    # an attended session of a new episode on day 5.
    s.patient("F_sess").admission("F_sess", "E_F_sess_a", -40, 0).admission("F_sess", "E_F_sess_b", 5, 40)
    s.session("F_sess", "E_F_sess_b", 5)
    # members 13 and older; enrollment through day 30.
    s.patient("F_age12", birth_year=2012).admission("F_age12", "E_F_age12", -40, 0)
    s.patient("F_obs29", obs_end=29).admission("F_obs29", "E_F_obs29", -40, 0)
    return followup_after_discharge(s.build())


@pytest.mark.parametrize("eid, f7, f30", [
    ("E_F_7", True, True), ("E_F_8", False, True), ("E_F_0", False, False), ("E_F_30", False, True),
    ("E_F_31", False, False), ("E_F_mat", True, True), ("E_F_sess_a", True, True),
])
def test_followup_windows(fu, eid, f7, f30):
    r = case(fu, "episode_id", eid)
    assert pd.isna(r["excluded"])
    assert (bool(r["followup_7"]), bool(r["followup_30"])) == (f7, f30)


def test_followup_exclusions_and_rates(fu):
    # E_F_sess_b (discharged day 40, no contact) is a candidate too, kept.
    assert excl_counts(fu) == {"still_enrolled": 0, "died_during_episode": 0, "age_under_min": 1,
                               "died_in_window": 0, "insufficient_follow_up": 1}
    t = fu.tidy.set_index("rate")
    assert (t.loc["followup_7", "numerator"], t.loc["followup_7", "denominator"]) == (3, 8)
    assert (t.loc["followup_30", "numerator"], t.loc["followup_30", "denominator"]) == (5, 8)


# ============================================================================ bad input
def test_bad_arguments(iet):
    with pytest.raises(ModelSpecificationError, match="IOPData"):
        iet_measure(pd.DataFrame())
    with pytest.raises(IopError, match="windows"):
        readmission_rates(_tiny(), windows=(30, 30))
    with pytest.raises(ModelSpecificationError, match="max_gap_days"):
        moud_continuity(_tiny(), max_gap_days=-1)
    with pytest.raises(ModelSpecificationError, match="intake_start"):
        iet_measure(_tiny(), intake_start="not a date")


def _tiny() -> IOPData:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tiny_study import valid_tables

    return IOPData(**valid_tables())


def test_empty_denominator_gives_nan_rate():
    res = followup_after_discharge(_tiny(), discharge_start="2030-01-01")
    assert res.glance.iloc[0]["n_candidates"] == 1  # only the open episode (no discharge date) remains
    assert np.isnan(res.tidy["value"]).all()


@pytest.mark.parametrize("name", ["iet", "nqf", "fu"])
def test_every_candidate_is_counted_once(request, name):
    """Nothing is dropped silently: exclusion counts add up to n_excluded, kept + excluded = candidates,
    and the cases table names each candidate's reason."""
    res = request.getfixturevalue(name)
    g = res.glance.iloc[0]
    assert res.extra["exclusions"]["n"].sum() == g["n_excluded"]
    assert g["n_excluded"] + g["n_denominator"] == g["n_candidates"] == len(res.extra["cases"])
    cases = res.extra["cases"]
    got = cases["excluded"].dropna().value_counts().to_dict()
    assert got == {r: n for r, n in excl_counts(res).items() if n}
    assert (res.tidy["denominator"] == g["n_denominator"]).all()
