"""Slow, obviously-correct pure-Python versions of the episode and era rules (tests only).

Nothing here is vectorised or clever: explicit loops over sorted rows, so that the Ibis
expressions of :mod:`iop_research.derive.episodes` and :mod:`iop_research.derive.exposures` (which use
window-function tricks such as a running maximum instead of recursion) can be checked
against them on random inputs.
"""
from __future__ import annotations

import math

import pandas as pd

from iop_research.data.schema import MEDICATION_CLASS, Medication

__all__ = [
    "ref_episodes_from_sessions",
    "ref_assign_sessions",
    "ref_coverage",
    "ref_eras",
    "ref_days_covered",
]


def _day(x) -> int:
    """Days since 1970-01-01 of a date-like value."""
    return int((pd.Timestamp(x) - pd.Timestamp("1970-01-01")).days)


def ref_episodes_from_sessions(sessions: pd.DataFrame, gap_days: int) -> pd.DataFrame:
    """Gap rule on attended sessions: a new episode after MORE than ``gap_days`` days.

    Returns columns ``episode_id, patient_id, admit_day, discharge_day`` (epoch days),
    with ``episode_id = f"{patient_id}-S{n}"``.
    """
    by_patient: dict[str, set[int]] = {}
    for pid, date, attended in zip(sessions["patient_id"], sessions["session_date"], sessions["attended"]):
        if attended:
            by_patient.setdefault(str(pid), set()).add(_day(date))
    rows = []
    for pid in sorted(by_patient):
        days = sorted(by_patient[pid])
        n = 1
        start = prev = days[0]
        for d in days[1:]:
            if d - prev > gap_days:
                rows.append((f"{pid}-S{n}", pid, start, prev))
                n += 1
                start = d
            prev = d
        rows.append((f"{pid}-S{n}", pid, start, prev))
    return pd.DataFrame(rows, columns=["episode_id", "patient_id", "admit_day", "discharge_day"])


def ref_assign_sessions(sessions: pd.DataFrame, windows: pd.DataFrame) -> list:
    """Episode of each session row: the window (admit_day <= day <= end_day) of the same patient.

    ``windows`` has ``episode_id, patient_id, admit_day, end_day`` (``end_day`` None = open).
    Returns a list aligned with ``sessions`` rows: the episode_id, or None when no window
    contains the date. Raises ValueError when two windows contain it.
    """
    out = []
    wins = list(zip(windows["episode_id"], windows["patient_id"], windows["admit_day"], windows["end_day"]))
    for pid, date in zip(sessions["patient_id"], sessions["session_date"]):
        d = _day(date)
        hits = [e for e, p, a, z in wins
                if p == str(pid) and a <= d and (z is None or (isinstance(z, float) and math.isnan(z)) or d <= z)]
        if len(hits) > 1:
            raise ValueError(f"session of {pid} on day {d} is in several episodes: {hits}")
        out.append(hits[0] if hits else None)
    return out


def _covered(medication: str, days_supply) -> int:
    if medication == Medication.naltrexone_xr.value and (
        days_supply is None or (isinstance(days_supply, float) and math.isnan(days_supply)) or days_supply <= 1
    ):
        return 28
    return int(days_supply)


def ref_coverage(medications: pd.DataFrame) -> pd.DataFrame:
    """Per dispensing: patient_id, medication_class, day, covered, cov_start, cov_end (shifted)."""
    rows = []
    for pid, med, date, supply in zip(medications["patient_id"], medications["medication"],
                                      medications["dispense_date"], medications["days_supply"]):
        rows.append([str(pid), MEDICATION_CLASS[med], _day(date), _covered(med, supply),
                     0 if supply is None or (isinstance(supply, float) and math.isnan(supply)) else int(supply)])
    rows.sort(key=lambda r: (r[0], r[1], r[2], r[3]))
    out = []
    last_key, last_end = None, None
    for pid, cls, day, cov, raw in rows:
        if (pid, cls) != last_key:
            last_key, last_end = (pid, cls), None
        start = day if last_end is None else max(day, last_end + 1)
        end = start + cov - 1
        out.append([pid, cls, day, cov, raw, start, end, last_end])
        last_end = end
    return pd.DataFrame(out, columns=["patient_id", "medication_class", "day", "covered", "supply_raw",
                                      "cov_start", "cov_end", "prev_end"])


def ref_eras(medications: pd.DataFrame, grace_days: int, retention_days: int = 180) -> pd.DataFrame:
    """Eras as in :func:`iop_research.derive.exposures.medication_eras` (epoch-day columns)."""
    cov = ref_coverage(medications)
    eras: list[dict] = []
    key = None
    for r in cov.itertuples(index=False):
        k = (r.patient_id, r.medication_class)
        gap = None if r.prev_end is None or pd.isna(r.prev_end) else r.day - int(r.prev_end) - 1
        if k != key or gap is None or gap > grace_days:
            n = 1 if k != key else eras[-1]["era_number"] + 1
            key = k
            eras.append(dict(patient_id=r.patient_id, medication_class=r.medication_class, era_number=n,
                             start_day=r.day, end_day=r.cov_end, n_dispensings=1,
                             days_supply_total=r.supply_raw, days_covered=r.covered, gap_days_total=0))
        else:
            e = eras[-1]
            e["end_day"] = max(e["end_day"], r.cov_end)
            e["n_dispensings"] += 1
            e["days_supply_total"] += r.supply_raw
            e["days_covered"] += r.covered
            e["gap_days_total"] += max(gap, 0)
    out = pd.DataFrame(eras, columns=["patient_id", "medication_class", "era_number", "start_day", "end_day",
                                      "n_dispensings", "days_supply_total", "days_covered", "gap_days_total"])
    out["era_days"] = out["end_day"] - out["start_day"] + 1
    out["is_retained_180"] = out["era_days"] >= retention_days
    return out


def ref_days_covered(medications: pd.DataFrame, patient_id: str, start_day: int, end_day: int) -> int:
    """Days in [start_day, end_day] covered by any class (a day counts once)."""
    cov = ref_coverage(medications)
    days: set[int] = set()
    for r in cov[cov["patient_id"] == str(patient_id)].itertuples(index=False):
        days.update(range(r.cov_start, r.cov_end + 1))
    return sum(1 for d in days if start_day <= d <= end_day)
