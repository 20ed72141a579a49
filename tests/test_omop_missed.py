"""write_omop and missed urine screens: a scheduled screen not done (``result = "missed"``) is not an OMOP
measurement (the CDM's measurement table records performed tests), so write_omop leaves it out, as the module
docstring lists among what OMOP cannot carry; the round trip gives back every other event exactly."""
from __future__ import annotations

import pandas as pd
import pytest

ibis = pytest.importorskip("ibis")

from iop_research.data.io import IOPData  # noqa: E402
from iop_research.data.schema import empty_table  # noqa: E402
from iop_research.data.synth import simulate_cohort  # noqa: E402
from iop_research.datasets.omop import read_omop, write_omop  # noqa: E402

KEYS = ["patient_id", "event_date", "event_type", "result", "substance"]


@pytest.fixture(scope="module")
def cohort() -> IOPData:
    return simulate_cohort(80, seed=23, effects={"missed_screen_share": 0.25}, progress=False)


@pytest.fixture(scope="module")
def back(cohort):
    con = ibis.duckdb.connect()
    write_omop(cohort, con, cdm_schema="cdm")
    return con, read_omop(con, cdm_schema="cdm", patient_id_col="person_source_value")


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df[KEYS].sort_values(KEYS, kind="stable", na_position="first").reset_index(drop=True)


def test_missed_screens_are_left_out_and_the_rest_round_trips(cohort, back):
    _, data = back
    ev = cohort.events
    missed = ev["event_type"].eq("uds") & ev["result"].eq("missed")
    assert missed.sum() > 20
    want = ev.loc[~missed].copy()
    negative = want["event_type"].eq("uds") & want["result"].ne("positive")
    want["substance"] = want["substance"].where(~negative, None)  # OMOP cannot carry it (module docstring)
    want = IOPData(patients=cohort.patients, admissions=empty_table("admissions"), sessions=empty_table("sessions"),
                   medications=empty_table("medications"), events=want, observation=cohort.observation).coerce()
    pd.testing.assert_frame_equal(_sorted(data.events), _sorted(want.events), check_dtype=False)
    assert not data.events["result"].eq("missed").any()
    # every screen read back has a result (none is a measurement without a value)
    uds = data.events[data.events["event_type"].eq("uds")]
    assert uds["result"].isin(["positive", "negative"]).all()
    data.validate()


def test_measurement_rows_are_the_screens_done(cohort, back):
    con, _ = back
    rows = con.raw_sql("SELECT value_as_concept_id, count(*) FROM cdm.measurement GROUP BY 1").fetchall()
    counts = dict(rows)
    ev = cohort.events
    uds = ev[ev["event_type"].eq("uds")]
    assert counts == {9191: int(uds["result"].eq("positive").sum()), 9189: int(uds["result"].eq("negative").sum())}
