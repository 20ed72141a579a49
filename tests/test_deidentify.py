"""De-identified export: intervals unchanged, ids unlinkable without the salt, deterministic, no free text."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iop_research.data.deidentify import AGE_CAP_YEARS, MIN_SALT_LENGTH, deidentify, hash_identifier
from iop_research.derive.episodes import build_episodes
from iop_research.exceptions import DataValidationError, IopError, ModelSpecificationError
from iop_research.derive.outcomes import relapse_outcomes
from iop_research.data.synth import simulate_cohort

SALT = "tests-only salt, not a secret"


@pytest.fixture(scope="module")
def cohort():
    data = simulate_cohort(40, seed=5, progress=False)
    pats = data.patients.copy()
    pats["notes"] = [f"lives at {i} Elm Street" for i in range(len(pats))]
    pats.loc[0, "birth_year"] = 1921  # over 89 by the end of follow-up
    adm = data.admissions.copy()
    adm["intake_note"] = "free text"
    adm["intake_score"] = 3  # numeric extra column: kept
    data2 = type(data)(pats, adm, data.sessions, data.medications, data.events, data.observation, truth=data.truth)
    return data2


def _maps(src, out):
    """Source id -> pseudonym, checking the mapping is one-to-one."""
    pm = dict(zip(src.patients["patient_id"], out.patients["patient_id"]))
    em = dict(zip(src.admissions["episode_id"], out.admissions["episode_id"]))
    assert len(set(pm.values())) == len(pm) and len(set(em.values())) == len(em)
    return pm, em


def _intervals(data, pm=None, em=None) -> dict[str, pd.Series]:
    """Every interval the analyses use, keyed by (mapped) ids, in a canonical order."""
    pm = pm or {}
    em = em or {}
    adm = data.admissions.assign(pid=lambda d: d["patient_id"].map(lambda v: pm.get(v, v)),
                                 eid=lambda d: d["episode_id"].map(lambda v: em.get(v, v)))
    first_admit = adm.groupby("pid")["admit_date"].min()
    out = {}
    out["los"] = (adm.set_index("eid")["discharge_date"] - adm.set_index("eid")["admit_date"]).dt.days.sort_index()
    for name, table, col in [("event_days", "events", "event_date"), ("session_days", "sessions", "session_date"),
                             ("dispense_days", "medications", "dispense_date"),
                             ("observation_days", "observation", "observation_end")]:
        t = getattr(data, table)
        pid = t["patient_id"].map(lambda v: pm.get(v, v))
        days = (t[col] - first_admit.reindex(pid).to_numpy()).dt.days
        out[name] = pd.Series(days.to_numpy(), index=pid.to_numpy()).reset_index(drop=True)
    med = data.medications.assign(pid=lambda d: d["patient_id"].map(lambda v: pm.get(v, v)))
    med = med.sort_values(["pid", "medication", "dispense_date"], kind="stable")
    out["dispensing_gaps"] = med.groupby(["pid", "medication"])["dispense_date"].diff().dt.days.reset_index(drop=True)
    return out


def test_intervals_unchanged_and_dates_shifted(cohort):
    out = deidentify(cohort, salt=SALT, seed=1)
    pm, em = _maps(cohort, out)
    before, after = _intervals(cohort, pm, em), _intervals(out)
    for key in before:
        pd.testing.assert_series_equal(before[key], after[key], check_names=False, obj=key)
    shift = (out.observation["observation_end"] - cohort.observation["observation_end"]).dt.days
    assert shift.ne(0).all() and shift.abs().le(180).all() and shift.nunique() > 5


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), max_shift=st.integers(1, 3650),
       salt=st.text(min_size=MIN_SALT_LENGTH, max_size=40))
def test_property_intervals_unchanged(cohort, seed, max_shift, salt):
    out = deidentify(cohort, salt=salt, seed=seed, max_shift_days=max_shift)
    pm, em = _maps(cohort, out)
    before, after = _intervals(cohort, pm, em), _intervals(out)
    for key in before:
        np.testing.assert_array_equal(before[key].to_numpy(), after[key].to_numpy(), err_msg=key)
    shift = (out.observation["observation_end"] - cohort.observation["observation_end"]).dt.days
    assert shift.abs().between(1, max_shift).all()
    out.validate()


def test_analyses_give_identical_results(cohort):
    """Episodes (LOS, sessions, PDC) and relapse outcomes are the same on the de-identified data."""
    out = deidentify(cohort, salt=SALT, seed=2)
    pm, em = _maps(cohort, out)
    ep0, ep1 = build_episodes(cohort), build_episodes(out)
    ep0 = ep0.assign(episode_id=ep0["episode_id"].map(em)).set_index("episode_id").sort_index()
    ep1 = ep1.set_index("episode_id").sort_index()
    cols = ["los_days", "n_sessions_attended", "hours_attended", "n_weeks_asam21", "has_mat", "days_to_mat",
            "mat_pdc", "is_completed"]
    pd.testing.assert_frame_equal(ep0[cols], ep1[cols])
    r0, r1 = relapse_outcomes(cohort), relapse_outcomes(out)
    r0 = r0.assign(episode_id=r0["episode_id"].map(em)).set_index("episode_id").sort_index()
    r1 = r1.set_index("episode_id").sort_index()
    pd.testing.assert_frame_equal(r0[["time", "status", "event_source", "followup_days"]],
                                  r1[["time", "status", "event_source", "followup_days"]])


def test_ids_unlinkable_without_salt(cohort, tmp_path):
    out = deidentify(cohort, salt=SALT, seed=3)
    other = deidentify(cohort, salt=SALT + "x", seed=3)
    src_ids = set(cohort.patients["patient_id"]) | set(cohort.admissions["episode_id"])
    assert not set(out.patients["patient_id"]) & set(other.patients["patient_id"])
    unsalted = {hashlib.sha256(str(v).encode()).hexdigest()[:20] for v in src_ids}
    assert not {v[1:] for v in out.patients["patient_id"]} & unsalted
    out.write(tmp_path / "export")
    blob = b"".join(p.read_bytes() for p in sorted((tmp_path / "export").iterdir()))
    assert SALT.encode() not in blob
    assert not [i for i in sorted(src_ids) if i.encode() in blob]  # no source id anywhere, even as a substring
    assert all(SALT not in repr(t.attrs) for t in out.tables().values())
    assert out.truth is None


def test_same_salt_and_seed_identical_output(cohort, tmp_path):
    a = deidentify(cohort, salt=SALT, seed=7).write(tmp_path / "a")
    b = deidentify(cohort, salt=SALT, seed=np.random.default_rng(7)).write(tmp_path / "b")
    c = deidentify(cohort, salt=SALT, seed=8).write(tmp_path / "c")
    files = sorted(p.name for p in a.iterdir())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "admissions.csv").read_bytes() != (c / "admissions.csv").read_bytes()


def test_row_order_does_not_change_shifts(cohort):
    shuffled = type(cohort)(**{n: t.iloc[::-1].reset_index(drop=True) for n, t in cohort.tables().items()})
    a, b = deidentify(cohort, salt=SALT, seed=9), deidentify(shuffled, salt=SALT, seed=9)
    pd.testing.assert_frame_equal(a.admissions.sort_values("episode_id").reset_index(drop=True),
                                  b.admissions.sort_values("episode_id").reset_index(drop=True))


def test_inputs_not_mutated(cohort):
    before = {n: t.copy(deep=True) for n, t in cohort.tables().items()}
    deidentify(cohort, salt=SALT, seed=1)
    for n, t in cohort.tables().items():
        pd.testing.assert_frame_equal(t, before[n])


def test_free_text_dropped_and_listed(cohort):
    out = deidentify(cohort, salt=SALT, seed=1, free_text_cols=["program"])
    assert "notes" not in out.patients.columns and out.patients.attrs["deidentify"]["dropped_columns"] == ["notes"]
    assert out.admissions.attrs["deidentify"]["dropped_columns"] == ["program", "intake_note"]
    assert "intake_score" in out.admissions.columns
    assert list(out.sessions.columns) == list(cohort.sessions.columns)


def test_birth_year_capped_and_age_kept(cohort):
    out = deidentify(cohort, salt=SALT, seed=4)
    last_old = cohort.observation.set_index("patient_id")["observation_end"].dt.year
    last_new = out.observation.set_index("patient_id")["observation_end"].dt.year
    pm = dict(zip(cohort.patients["patient_id"], out.patients["patient_id"]))
    age_old = last_old.reindex(cohort.patients["patient_id"]).to_numpy() - cohort.patients["birth_year"].to_numpy()
    age_new = last_new.reindex(cohort.patients["patient_id"].map(pm)).to_numpy() - out.patients["birth_year"].to_numpy()
    assert age_old[0] > 89 and age_new[0] == AGE_CAP_YEARS
    np.testing.assert_array_equal(np.minimum(age_old, AGE_CAP_YEARS), age_new)
    assert out.patients["birth_year"].dtype == cohort.patients["birth_year"].dtype


@pytest.mark.parametrize("salt", ["", "short", None, 12345])
def test_refuses_empty_or_short_salt(cohort, salt):
    with pytest.raises(ModelSpecificationError, match="at least 16 characters") as err:
        deidentify(cohort, salt=salt, seed=1)
    assert isinstance(err.value, IopError) and "secrets.token_hex" in str(err.value)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_refuses_bad_max_shift(cohort, bad):
    with pytest.raises(ModelSpecificationError, match="max_shift_days"):
        deidentify(cohort, salt=SALT, seed=1, max_shift_days=bad)


def test_refuses_text_dates_and_non_iopdata(cohort):
    t = cohort.tables()
    t["events"] = t["events"].assign(event_date=t["events"]["event_date"].dt.strftime("%Y-%m-%d"))
    with pytest.raises(DataValidationError, match=r"events.event_date .*IOPData.coerce\(\)"):
        deidentify(type(cohort)(**t), salt=SALT, seed=1)
    with pytest.raises(ModelSpecificationError, match="expects an IOPData"):
        deidentify(t, salt=SALT, seed=1)


def test_hash_identifier_domains_and_missing():
    p = hash_identifier(["X1", None, "X1"], salt=SALT, kind="patient")
    e = hash_identifier(["X1"], salt=SALT, kind="episode")
    assert p[0] == p[2] and p[1] is None and p[0].startswith("p") and len(p[0]) == 21
    assert e[0][1:] != p[0][1:]


def test_patient_without_dates_is_capped_against_the_extract(cohort):
    t = cohort.tables()
    t["patients"] = pd.concat([t["patients"], pd.DataFrame({
        "patient_id": ["P-nodates"], "birth_year": [1915], "sex": ["female"], "race": [None], "ethnicity": [None],
        "notes": [None]})], ignore_index=True)
    out = deidentify(type(cohort)(**t), salt=SALT, seed=1)
    latest = max(out.observation["observation_end"].max(), out.events["event_date"].max()).year
    assert out.patients["birth_year"].iloc[-1] == latest - AGE_CAP_YEARS
    assert out.patients["birth_year"].dtype == cohort.patients["birth_year"].dtype
