"""Tests for iop_research.derive.exposures: MAT eras and proportion of days covered."""
from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import ref_days_covered, ref_eras
from iop_research.exceptions import DataValidationError, ModelSpecificationError
from iop_research.derive.exposures import ERA_COLUMNS, medication_eras, proportion_days_covered

D0 = pd.Timestamp("2024-01-01")


def meds(rows):
    """rows: (patient_id, medication, day offset from 2024-01-01, days_supply)."""
    return pd.DataFrame(
        {
            "patient_id": [r[0] for r in rows],
            "medication": [r[1] for r in rows],
            "dispense_date": [D0 + pd.Timedelta(days=r[2]) for r in rows],
            "days_supply": [r[3] for r in rows],
        }
    )


def day(ts) -> int:
    return int((pd.Timestamp(ts) - D0).days)


def test_early_refill_shifts_forward_and_era_end_is_last_covered_day():
    m = meds([("p", "buprenorphine", 0, 30), ("p", "buprenorphine", 20, 30)])
    e = medication_eras(m, grace_days=30)
    assert len(e) == 1
    assert day(e.era_start[0]) == 0
    assert day(e.era_end[0]) == 59  # second fill covers days 30-59, not 20-49
    assert e.days_covered[0] == 60 and e.era_days[0] == 60 and e.gap_days_total[0] == 0


@pytest.mark.parametrize("grace, n_eras", [(10, 1), (9, 2)])
def test_grace_boundary_counts_uncovered_days(grace, n_eras):
    # first fill covers days 0-6; next dispensing on day 17 leaves days 7-16 (10 days) uncovered
    m = meds([("p", "buprenorphine", 0, 7), ("p", "buprenorphine", 17, 7)])
    e = medication_eras(m, grace_days=grace)
    assert len(e) == n_eras
    if n_eras == 1:
        assert e.gap_days_total[0] == 10 and e.era_days[0] == 24 and e.days_covered[0] == 14


def test_contiguous_coverage_joins_with_zero_grace():
    m = meds([("p", "methadone", d, 1) for d in range(5)] + [("p", "methadone", 5, 7)])
    e = medication_eras(m, grace_days=0)
    assert len(e) == 1
    assert e.n_dispensings[0] == 6 and day(e.era_end[0]) == 11 and e.days_covered[0] == 12


def test_xr_naltrexone_covers_28_days_when_supply_missing_or_one_and_joins_oral():
    m = meds([("p", "naltrexone_xr", 0, 1), ("p", "naltrexone_xr", 28, np.nan), ("p", "naltrexone_oral", 56, 30),
              ("q", "naltrexone_xr", 0, 35)])
    e = medication_eras(m, grace_days=0)
    p = e[e.patient_id == "p"].iloc[0]
    assert len(e) == 2 and p.medication_class == "naltrexone"
    assert p.days_covered == 28 + 28 + 30 and day(p.era_end) == 85
    assert p.days_supply_total == 1 + 0 + 30  # as recorded, missing counts 0
    assert e[e.patient_id == "q"].days_covered.iloc[0] == 35  # recorded > 1 is kept


def test_classes_make_separate_eras_and_numbering():
    m = meds([("p", "buprenorphine", 0, 14), ("p", "methadone", 3, 1), ("p", "buprenorphine", 100, 7)])
    e = medication_eras(m)
    assert list(e.columns) == list(ERA_COLUMNS)
    got = list(zip(e.medication_class, e.era_number))
    assert got == [("buprenorphine", 1), ("buprenorphine", 2), ("methadone", 1)]


def test_retention_and_stricter_gap():
    m = meds([("p", "buprenorphine", 0, 90), ("p", "buprenorphine", 100, 90)])  # gap of 10 days
    e = medication_eras(m, grace_days=30)
    assert e.era_days[0] == 190 and bool(e.is_retained_180[0])
    strict = medication_eras(m, grace_days=30, retention_max_gap_days=7)
    assert not bool(strict.is_retained_180[0])
    assert not bool(medication_eras(m, retention_days=191).is_retained_180[0])


def test_input_not_mutated_and_lazy_and_path(tmp_path):
    m = meds([("p", "buprenorphine", 0, 30), ("p", "buprenorphine", 20, 30)])
    before = m.copy()
    eager = medication_eras(m)
    pd.testing.assert_frame_equal(m, before)
    lazy = medication_eras(m, lazy=True)
    assert isinstance(lazy, ibis.expr.types.Table)
    path = tmp_path / "meds.csv"
    m.to_csv(path, index=False)
    from_file = medication_eras(path)
    pd.testing.assert_frame_equal(from_file, eager)


def test_validation_reports_every_problem():
    m = meds([("p", "aspirin", 0, 30), ("q", "buprenorphine", 0, 0)])
    with pytest.raises(DataValidationError) as exc:
        medication_eras(m)
    msg = str(exc.value)
    assert "vocabulary" in msg and "days_supply" in msg and "p" in msg and "q" in msg
    with pytest.raises(DataValidationError, match="days_supply"):
        medication_eras(m.drop(columns="days_supply"))
    with pytest.raises(ModelSpecificationError, match="grace_days"):
        medication_eras(meds([("p", "buprenorphine", 0, 3)]), grace_days=-1)


def test_pdc_counts_days_once_across_classes():
    m = meds([("p", "buprenorphine", 0, 10), ("p", "methadone", 5, 10), ("q", "disulfiram", 50, 5)])
    win = pd.DataFrame({"episode_id": ["E2", "E1", "E3"], "patient_id": ["q", "p", "r"],
                        "admit_date": [D0, D0, D0], "discharge_date": [D0 + pd.Timedelta(days=d) for d in (99, 19, 9)]})
    out = proportion_days_covered(m, win)
    assert list(out.episode_id) == ["E2", "E1", "E3"]  # order of windows kept
    assert list(out.days_covered) == [5, 15, 0]
    assert list(out.window_days) == [100, 20, 10]
    np.testing.assert_allclose(out.pdc, [0.05, 0.75, 0.0])
    bad = win.assign(discharge_date=[pd.NaT, D0, D0])
    with pytest.raises(DataValidationError, match="E2"):
        proportion_days_covered(m, bad)


# ----------------------------------------------------------------- property tests vs reference
_MEDS = ["buprenorphine", "methadone", "naltrexone_oral", "naltrexone_xr", "acamprosate"]

dispensings = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(_MEDS), st.integers(0, 200),
              st.sampled_from([1, 1, 2, 3, 7, 14, 28, 30])),
    min_size=1, max_size=25,
)


@settings(max_examples=50, deadline=None)
@given(rows=dispensings, grace=st.sampled_from([0, 3, 7, 30]))
def test_eras_match_reference_and_invariants(rows, grace):
    m = meds(rows)
    got = medication_eras(m, grace_days=grace)
    ref = ref_eras(m, grace)
    assert len(got) == len(ref)
    g = got.sort_values(["patient_id", "medication_class", "era_number"]).reset_index(drop=True)
    r = ref.sort_values(["patient_id", "medication_class", "era_number"]).reset_index(drop=True)
    assert list(g.patient_id) == list(r.patient_id)
    epoch = (D0 - pd.Timestamp("1970-01-01")).days
    assert [day(x) + epoch for x in g.era_start] == r.start_day.tolist()
    assert [day(x) + epoch for x in g.era_end] == r.end_day.tolist()
    for col in ("era_number", "n_dispensings", "days_supply_total", "days_covered", "gap_days_total", "era_days"):
        assert g[col].tolist() == r[col].astype(int).tolist(), col
    # invariants
    assert (g.days_covered <= g.era_days).all()
    assert (g.era_days == g.days_covered + g.gap_days_total).all()
    for _, grp in g.groupby(["patient_id", "medication_class"]):
        starts = grp.era_start.to_numpy()
        ends = grp.era_end.to_numpy()
        gaps = (starts[1:] - ends[:-1]) / np.timedelta64(1, "D") - 1
        assert (gaps > grace).all()


@settings(max_examples=30, deadline=None)
@given(rows=dispensings, start=st.integers(0, 150), length=st.integers(0, 120))
def test_pdc_matches_reference(rows, start, length):
    m = meds(rows)
    win = pd.DataFrame({"episode_id": ["E1", "E2"], "patient_id": ["a", "b"],
                        "admit_date": [D0 + pd.Timedelta(days=start)] * 2,
                        "discharge_date": [D0 + pd.Timedelta(days=start + length)] * 2})
    out = proportion_days_covered(m, win)
    epoch = (D0 - pd.Timestamp("1970-01-01")).days
    for pid, got in zip(out.patient_id, out.days_covered):
        assert got == ref_days_covered(m, pid, epoch + start, epoch + start + length)
    assert ((out.pdc >= 0) & (out.pdc <= 1)).all()
