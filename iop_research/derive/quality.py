"""Quality measures of addiction treatment from the data contract: IET, MOUD continuity, readmission, follow-up.

Each measure is computed as its specification writes it, as far as the data contract allows; every
simplification the contract forces is stated in the function's docstring. Each returns a frozen
:class:`~iop_research.results.Result`:

``tidy``
    one row per reported rate: ``measure, rate, window_days, numerator, denominator, value``
    (``value = numerator / denominator``, NaN when the denominator is 0).
``glance``
    one row: ``n_candidates`` (index events before exclusions), ``n_excluded``, ``n_denominator``.
``extra["exclusions"]``
    ``reason, n``: every candidate excluded is counted under the *first* exclusion (in the
    order listed in the docstring) that applies, so the counts add up to ``n_excluded`` and
    nothing is dropped silently; reasons that excluded nobody are listed with 0.
``extra["cases"]``
    one row per candidate (episode or patient) with the index date, ``excluded`` (reason or
    missing), and the day and flag of each numerator event, for audit.

Days are counted from the index date (day 0); "within N days after" means days 1..N.

Common simplifications forced by the contract
----------------------------------------------
* There are no claims diagnosis or procedure codes: an SUD "diagnosis" is an IOP admission (its
  ``primary_substance`` stands for the diagnosis), treatment services are attended sessions,
  admissions, ``readmission`` events and medication dispensings, and post-discharge contacts are
  ``aftercare_contact`` events or any of those.
* Continuous enrollment is replaced by observation: a candidate whose ``observation_end`` comes
  before the end of the measure's follow-up window is excluded (``insufficient_follow_up``);
  enrollment *before* the index date cannot be checked.
* Age is ``admit/index year - birth_year`` (the contract records the year of birth only).
* Hospice and other claims-based exclusions cannot be applied.

Examples
--------
>>> from iop_research.datasets import load_demo
>>> res = readmission_rates(load_demo())
>>> res.tidy[["rate", "numerator", "denominator"]]
             rate  numerator  denominator
0  readmission_30         75         2777
1  readmission_90        143         2661
>>> res.exclusions
                   reason  window_days    n
0          still_enrolled            0  100
1     died_during_episode            0    7
2             transferred            0  623
3          died_in_window           30    6
4  insufficient_follow_up           30   69
5          died_in_window           90   11
6  insufficient_follow_up           90  180
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from iop_research.data.io import IOPData
from iop_research.data.schema import Col, EventType, Medication, PrimarySubstance
from iop_research.derive.episodes import build_episodes
from iop_research.derive.exposures import medication_eras
from iop_research.exceptions import ModelSpecificationError
from iop_research.results import Result

__all__ = [
    "iet_measure",
    "moud_continuity",
    "readmission_rates",
    "followup_after_discharge",
    "QUALITY_TIDY_COLUMNS",
    "QUALITY_GLANCE_COLUMNS",
]

#: tidy columns of every quality measure.
QUALITY_TIDY_COLUMNS = ("measure", "rate", "window_days", "numerator", "denominator", "value")
#: glance columns of every quality measure.
QUALITY_GLANCE_COLUMNS = ("n_candidates", "n_excluded", "n_denominator")

#: Medications for opioid use disorder (NQF 3175 / HEDIS "Opioid Use Disorder Treatment Medications").
OUD_MEDICATIONS = (Medication.methadone.value, Medication.buprenorphine.value, Medication.naltrexone_oral.value,
                   Medication.naltrexone_xr.value)
#: Medications for alcohol use disorder (HEDIS "Alcohol Use Disorder Treatment Medications").
AUD_MEDICATIONS = (Medication.disulfiram.value, Medication.naltrexone_oral.value, Medication.naltrexone_xr.value,
                   Medication.acamprosate.value)
_MAT_FOR = {PrimarySubstance.opioids.value: OUD_MEDICATIONS, PrimarySubstance.alcohol.value: AUD_MEDICATIONS}


# --------------------------------------------------------------------------- helpers
def _require_data(data: Any, func: str) -> IOPData:
    if not isinstance(data, IOPData):
        raise ModelSpecificationError(
            f"{func}: data must be an IOPData (iop_research.read_data(...) or simulate_cohort(...)), got "
            f"{type(data).__name__}. The measures need admissions, sessions, medications, events, patients and "
            "observation together."
        )
    return data


def _int_arg(value: Any, func: str, name: str, *, minimum: int = 0) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < minimum:
        raise ModelSpecificationError(f"{func}: {name} must be a whole number >= {minimum}, got {value!r}.")
    return int(value)


def _date_arg(value: Any, func: str, name: str):
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ModelSpecificationError(f"{func}: {name} must be a date such as '2024-01-01', got {value!r}.") from exc
    if ts is pd.NaT or pd.isna(ts):
        raise ModelSpecificationError(f"{func}: {name} must be a date such as '2024-01-01', got {value!r}.")
    return ts.normalize()


def _days(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    """Whole days ``later - earlier`` as float (NaN where either is missing)."""
    delta = pd.to_datetime(later).to_numpy("datetime64[ns]") - pd.to_datetime(earlier).to_numpy("datetime64[ns]")
    out = delta.astype("timedelta64[D]").astype(float)
    out[np.isnat(delta)] = np.nan
    return out


def _dated(frame: pd.DataFrame, col: str) -> pd.DataFrame:
    out = frame.copy()
    out[col] = pd.to_datetime(out[col]).astype("datetime64[ns]")
    return out


def _events_of(data: IOPData, kind: str) -> pd.DataFrame:
    ev = data.events
    if ev is None or len(ev) == 0:
        return pd.DataFrame({Col.patient_id: pd.Series([], dtype=object),
                             Col.event_date: pd.Series([], dtype="datetime64[ns]")})
    sel = ev.loc[ev[Col.event_type].astype(str) == kind, [Col.patient_id, Col.event_date]]
    return _dated(sel, Col.event_date)


def _joined_days(index: pd.DataFrame, key: str, other: pd.DataFrame, date_col: str) -> pd.DataFrame:
    """Every (candidate, dated row of the same patient) pair with ``day`` relative to the index date."""
    if len(other) == 0:
        return pd.DataFrame({key: pd.Series([], dtype=index[key].dtype), "day": pd.Series([], dtype=float)})
    left = index[list(dict.fromkeys([key, Col.patient_id, "index_date"]))].copy()  # key may be patient_id
    left[Col.patient_id] = left[Col.patient_id].astype(str)
    right = other[[Col.patient_id, date_col]].copy()
    right[Col.patient_id] = right[Col.patient_id].astype(str)
    m = left.merge(right, on=Col.patient_id, how="inner")
    m["day"] = _days(m[date_col], m["index_date"])
    return m[[key, "day"]]


def _first_day(pairs: pd.DataFrame, key: str, lo: pd.Series | float, hi: pd.Series | float) -> pd.Series:
    """Earliest ``day`` per candidate with ``lo <= day <= hi`` (``lo``/``hi`` per candidate or scalars)."""
    p = pairs.copy()
    p["lo"] = p[key].map(lo) if isinstance(lo, pd.Series) else lo
    p["hi"] = p[key].map(hi) if isinstance(hi, pd.Series) else hi
    p = p[(p["day"] >= p["lo"]) & (p["day"] <= p["hi"])]
    return p.groupby(key)["day"].min()


def _exclude(cases: pd.DataFrame, rules: Sequence[tuple[str, pd.Series]]) -> pd.DataFrame:
    """Set ``excluded`` to the first rule (in order) that applies; return the exclusions table."""
    excluded = pd.Series(pd.NA, index=cases.index, dtype="object")
    counts = []
    for reason, mask in rules:
        mask = pd.Series(np.asarray(mask, dtype=bool), index=cases.index)
        new = mask & excluded.isna()
        excluded[new] = reason
        counts.append((reason, int(new.sum())))
    cases["excluded"] = excluded
    return pd.DataFrame(counts, columns=["reason", "n"])


def _result(method: str, measure: str, rates: Sequence[tuple[str, int, pd.Series]], cases: pd.DataFrame,
            exclusions: pd.DataFrame, conventions: dict) -> Result:
    keep = cases["excluded"].isna()
    rows = []
    for rate, window, flag in rates:
        num = int(np.asarray(flag, dtype=bool)[keep.to_numpy()].sum())
        den = int(keep.sum())
        rows.append((measure, rate, window, num, den, num / den if den else np.nan))
    tidy = pd.DataFrame(rows, columns=list(QUALITY_TIDY_COLUMNS))
    tidy["window_days"] = tidy["window_days"].astype("int64")
    glance = pd.DataFrame([{"n_candidates": int(len(cases)), "n_excluded": int((~keep).sum()),
                            "n_denominator": int(keep.sum())}])
    return Result(method=method, tidy=tidy, glance=glance, model=None,
                  extra={"exclusions": exclusions, "cases": cases.reset_index(drop=True)}, conventions=conventions)


def _episodes(data: IOPData, engine: Any) -> pd.DataFrame:
    ep = build_episodes(data, engine=engine)
    ep = ep[[Col.episode_id, Col.patient_id, Col.admit_date, Col.discharge_date, Col.discharge_reason,
             Col.primary_substance, "age_at_admit"]].copy()
    for c in (Col.admit_date, Col.discharge_date):
        ep[c] = pd.to_datetime(ep[c]).astype("datetime64[ns]")
    ep[Col.patient_id] = ep[Col.patient_id].astype(str)
    ep[Col.episode_id] = ep[Col.episode_id].astype(str)
    return ep


def _obs_end(data: IOPData) -> pd.Series:
    obs = _dated(data.observation, Col.observation_end)
    return pd.Series(obs[Col.observation_end].to_numpy(), index=obs[Col.patient_id].astype(str).to_numpy())


def _attended_sessions(data: IOPData) -> pd.DataFrame:
    s = data.sessions
    att = s[s[Col.attended].astype(bool)] if len(s) else s
    return _dated(att[[Col.patient_id, Col.session_date]], Col.session_date)


def _dispensings(data: IOPData, meds: Sequence[str]) -> pd.DataFrame:
    m = data.medications
    sel = m[m[Col.medication].astype(str).isin(meds)] if len(m) else m
    return _dated(sel[[Col.patient_id, Col.medication, Col.dispense_date]], Col.dispense_date)


def _substance_mat_pairs(index: pd.DataFrame, key: str, data: IOPData) -> pd.DataFrame:
    """Dispensing days of medications that treat the candidate's primary substance (HEDIS: MAT counts only
    for alcohol or opioid use disorder, with that disorder's medications)."""
    disp = _dispensings(data, sorted(set(OUD_MEDICATIONS) | set(AUD_MEDICATIONS)))
    if len(disp) == 0:
        return pd.DataFrame({key: pd.Series([], dtype=index[key].dtype), "day": pd.Series([], dtype=float)})
    left = index[[key, Col.patient_id, "index_date", Col.primary_substance]].copy()
    right = disp.copy()
    right[Col.patient_id] = right[Col.patient_id].astype(str)
    m = left.merge(right, on=Col.patient_id, how="inner")
    ok = [med in _MAT_FOR.get(str(sub), ()) for med, sub in zip(m[Col.medication], m[Col.primary_substance])]
    m = m[np.asarray(ok, dtype=bool)]
    m = m.assign(day=_days(m[Col.dispense_date], m["index_date"]))
    return m[[key, "day"]]


def _within(dates: pd.Series, start, end) -> pd.Series:
    keep = pd.Series(True, index=dates.index)
    if start is not None:
        keep &= dates >= start
    if end is not None:
        keep &= dates <= end
    return keep


# --------------------------------------------------------------------------- IET
def iet_measure(
    data: IOPData,
    *,
    intake_start: Any = None,
    intake_end: Any = None,
    min_age: int = 13,
    negative_history_days: int = 194,
    initiation_days: int = 14,
    engagement_days: int = 34,
    follow_up_days: int = 47,
    engine: Any = None,
) -> Result:
    """HEDIS IET: initiation (14 days) and engagement (34 days) of SUD treatment after a new episode.

    Specification: NCQA, HEDIS Measurement Year 2024 Technical Specifications, *Initiation and
    Engagement of Substance Use Disorder Treatment (IET)* (NQF 0004). Episode-based: each new SUD
    episode in the intake period is a denominator event.

    Implemented clauses (day 0 = the SUD episode date, here the IOP ``admit_date``):

    * *Denominator / SUD episode*: every admission with ``admit_date`` in
      ``[intake_start, intake_end]`` (all admissions when not given).
    * *Age*: members ``min_age`` (13) years and older as of the episode date.
    * *Negative SUD history*: no SUD episode or SUD medication in the ``negative_history_days``
      (194) days before the episode date: an earlier IOP episode of the patient that was open on
      any of days -194..-1, or a dispensing of an OUD/AUD medication on days -194..-1, excludes it.
    * *Continuous enrollment through 47 days after the episode date*: ``observation_end`` at or
      after day ``follow_up_days`` (47).
    * *Deceased members* are a required exclusion: a ``death`` event on or before day 47.
    * *Initiation*: "initiation of SUD treatment ... on the SUD episode date or in the 13 days
      after (14 total days)". The index encounter here is the IOP admission itself, so services on
      day 0 other than medication are the index encounter and do not count; a treatment service on
      days 1..13, or a medication dispensing for the episode's disorder on days 0..13, initiates.
      Treatment services: attended sessions (any episode), admissions, ``readmission`` events.
    * *Engagement*: initiated, and "evidence of treatment engagement ... on the day after the
      initiation encounter through 34 days after the initiation event": at least two treatment
      services on distinct days, or at least one medication dispensing for the episode's disorder
      (opioid or alcohol use disorder), on days ``init + 1 .. init + 34``.

    Simplifications: see the module docstring (no diagnosis codes: the episode's
    ``primary_substance`` is the diagnosis; MAT counts only for ``opioids`` and ``alcohol``, with
    HEDIS' OUD and AUD medication lists); the inpatient-index rule (inpatient stay counts as
    initiation) does not arise because the index is an outpatient (IOP) encounter.

    Parameters
    ----------
    data : IOPData
    intake_start, intake_end : date-like, optional
        Intake period of the episode dates (HEDIS: Jan 1 - Nov 14 of the measurement year).
    min_age, negative_history_days, initiation_days, engagement_days, follow_up_days : int
        The specification's numbers (13, 194, 14, 34, 47); change them only for sensitivity analyses.
    engine : optional
        Where :func:`~iop_research.derive.episodes.build_episodes` runs.

    Returns
    -------
    Result
        ``tidy`` rows ``initiation`` (window 14) and ``engagement`` (window 34); exclusions
        ``age_under_min``, ``prior_sud_episode``, ``prior_sud_medication``, ``died``,
        ``insufficient_follow_up``; ``cases`` one row per episode with ``initiation_day``,
        ``initiated``, ``n_engagement_services``, ``engagement_mat``, ``engaged``.
    """
    func = "iet_measure"
    data = _require_data(data, func)
    min_age = _int_arg(min_age, func, "min_age")
    hist = _int_arg(negative_history_days, func, "negative_history_days", minimum=1)
    init_days = _int_arg(initiation_days, func, "initiation_days", minimum=1)
    eng_days = _int_arg(engagement_days, func, "engagement_days", minimum=1)
    fu_days = _int_arg(follow_up_days, func, "follow_up_days")
    start, end = _date_arg(intake_start, func, "intake_start"), _date_arg(intake_end, func, "intake_end")

    ep = _episodes(data, engine)
    cases = ep[_within(ep[Col.admit_date], start, end)].copy()
    cases["index_date"] = cases[Col.admit_date]
    key = Col.episode_id
    cases = cases.set_index(key, drop=False)

    # negative history: other episodes open on days -hist..-1
    other = ep[[Col.patient_id, Col.episode_id, Col.admit_date, Col.discharge_date]].rename(
        columns={Col.episode_id: "other_id", Col.admit_date: "o_admit", Col.discharge_date: "o_dis"})
    pairs = cases[[key, Col.patient_id, "index_date"]].reset_index(drop=True).merge(other, on=Col.patient_id)
    pairs = pairs[pairs["other_id"] != pairs[key]]
    o_start = _days(pairs["o_admit"], pairs["index_date"])
    o_end = _days(pairs["o_dis"], pairs["index_date"])
    o_end = np.where(np.isnan(o_end), np.inf, o_end)
    prior_ep = set(pairs.loc[(o_start <= -1) & (o_end >= -hist), key])
    mat_all = _joined_days(cases.reset_index(drop=True), key,
                           _dispensings(data, sorted(set(OUD_MEDICATIONS) | set(AUD_MEDICATIONS))), Col.dispense_date)
    prior_mat = set(mat_all.loc[(mat_all["day"] >= -hist) & (mat_all["day"] <= -1), key])
    deaths = _joined_days(cases.reset_index(drop=True), key, _events_of(data, EventType.death.value), Col.event_date)
    died = set(deaths.loc[deaths["day"] <= fu_days, key])
    obs = cases[Col.patient_id].map(_obs_end(data))
    fu_short = obs.isna() | (_days(obs, cases["index_date"]) < fu_days)
    age = cases["age_at_admit"]

    exclusions = _exclude(cases, [
        ("age_under_min", age.isna() | (age < min_age)),
        ("prior_sud_episode", cases[key].isin(prior_ep)),
        ("prior_sud_medication", cases[key].isin(prior_mat)),
        ("died", cases[key].isin(died)),
        ("insufficient_follow_up", fu_short),
    ])

    base = cases.reset_index(drop=True)
    svc = pd.concat([
        _joined_days(base, key, _attended_sessions(data), Col.session_date),
        _joined_days(base, key, ep[[Col.patient_id, Col.admit_date]], Col.admit_date),
        _joined_days(base, key, _events_of(data, EventType.readmission.value), Col.event_date),
    ], ignore_index=True)
    mat = _substance_mat_pairs(base, key, data)
    first_svc = _first_day(svc, key, 1, init_days - 1)
    first_mat = _first_day(mat, key, 0, init_days - 1)
    init_day = pd.concat([first_svc, first_mat], axis=1).min(axis=1)
    cases["initiation_day"] = cases[key].map(init_day)
    cases["initiated"] = cases["initiation_day"].notna()

    lo = cases["initiation_day"] + 1
    hi = cases["initiation_day"] + eng_days
    s = svc.copy()
    s["lo"], s["hi"] = s[key].map(lo), s[key].map(hi)
    s = s[(s["day"] >= s["lo"]) & (s["day"] <= s["hi"])]
    n_svc = s.groupby(key)["day"].nunique()
    mm = mat.copy()
    mm["lo"], mm["hi"] = mm[key].map(lo), mm[key].map(hi)
    eng_mat = set(mm.loc[(mm["day"] >= mm["lo"]) & (mm["day"] <= mm["hi"]), key])
    cases["n_engagement_services"] = cases[key].map(n_svc).fillna(0).astype("int64")
    cases["engagement_mat"] = cases[key].isin(eng_mat)
    cases["engaged"] = cases["initiated"] & ((cases["n_engagement_services"] >= 2) | cases["engagement_mat"])
    cases = cases.drop(columns=[Col.admit_date])
    return _result(
        "HEDIS IET (NCQA MY 2024): initiation and engagement of SUD treatment", "iet",
        [("initiation", init_days, cases["initiated"]), ("engagement", eng_days, cases["engaged"])],
        cases, exclusions,
        {"index": "IOP admission date = SUD episode date (no diagnosis codes in the contract)",
         "initiation": f"service on days 1..{init_days - 1} or disorder medication on days 0..{init_days - 1}",
         "engagement": f">= 2 services (distinct days) or >= 1 disorder medication on days init+1..init+{eng_days}"},
    )


# --------------------------------------------------------------------------- NQF 3175
def moud_continuity(
    data: IOPData,
    *,
    intake_start: Any = None,
    intake_end: Any = None,
    min_days: int = 180,
    max_gap_days: int = 7,
    min_age: int = 18,
    max_age: int | None = 64,
    engine: Any = None,
) -> Result:
    """NQF 3175: continuity of pharmacotherapy for opioid use disorder (at least 180 days).

    Specification: *Continuity of Pharmacotherapy for Opioid Use Disorder*, NQF 3175 (endorsed
    2017; measure steward: University of Southern California; also CMS MIPS Quality ID 468).

    Implemented clauses:

    * *Denominator*: "individuals 18-64 years of age who had a diagnosis of opioid use disorder
      and at least one claim for an OUD medication": patients with a dispensing of methadone,
      buprenorphine or naltrexone (oral or extended-release) in ``[intake_start, intake_end]``
      (all dispensings when not given). The index date is the first such dispensing.
    * *OUD diagnosis*: an IOP admission of the patient with ``primary_substance == "opioids"``
      (the contract has no diagnosis codes); otherwise excluded as ``no_opioid_admission``.
    * *Age* ``min_age``..``max_age`` (18-64; the MIPS version has no upper limit: ``max_age=None``)
      at the index date.
    * *Numerator*: "at least 180 days of continuous pharmacotherapy with a medication prescribed
      for OUD without a gap of more than seven days": days covered come from
      :func:`~iop_research.derive.exposures.medication_eras` (``grace_days=0``: days supply, early
      refills of the same medication shifted forward, XR-naltrexone 28 days); coverage of
      different OUD medications is combined (switching is continuous treatment, overlapping days
      count once); starting at the index date, a block of coverage joins the treatment episode when
      at most ``max_gap_days`` (7) uncovered days separate it from the previous block; the
      treatment duration is ``end of the last joined block - index date + 1`` days (gap days of
      7 or fewer included) and must be at least ``min_days`` (180).
    * *Follow-up*: the 180-day treatment window must be observable: ``observation_end`` on or after
      index + 179 (the specification's intake period ending 180 days before the measurement year
      ends does the same); otherwise ``insufficient_follow_up``. A ``death`` event before index +
      179 excludes (``died``).

    Returns
    -------
    Result
        ``tidy`` row ``continuity_180``; exclusions ``no_opioid_admission``, ``age_out_of_range``,
        ``died``, ``insufficient_follow_up``; ``cases`` one row per patient with
        ``index_date``, ``treatment_days``, ``continuous``.
    """
    func = "moud_continuity"
    data = _require_data(data, func)
    min_days = _int_arg(min_days, func, "min_days", minimum=1)
    max_gap = _int_arg(max_gap_days, func, "max_gap_days")
    min_age = _int_arg(min_age, func, "min_age")
    if max_age is not None:
        max_age = _int_arg(max_age, func, "max_age")
    start, end = _date_arg(intake_start, func, "intake_start"), _date_arg(intake_end, func, "intake_end")

    disp = _dispensings(data, OUD_MEDICATIONS)
    disp[Col.patient_id] = disp[Col.patient_id].astype(str)
    in_window = disp[_within(disp[Col.dispense_date], start, end)]
    cases = (in_window.groupby(Col.patient_id, as_index=False)[Col.dispense_date].min()
             .rename(columns={Col.dispense_date: "index_date"}))
    key = Col.patient_id
    cases = cases.set_index(key, drop=False)

    ep = _episodes(data, engine)
    opioid_patients = set(ep.loc[ep[Col.primary_substance].astype(str) == PrimarySubstance.opioids.value,
                                 Col.patient_id])
    pts = data.patients.assign(**{Col.patient_id: data.patients[Col.patient_id].astype(str)}).set_index(Col.patient_id)
    age = cases["index_date"].dt.year - cases[key].map(pts[Col.birth_year]).astype(float)
    cases["age_at_index"] = age
    horizon = min_days - 1
    deaths = _joined_days(cases.reset_index(drop=True), key, _events_of(data, EventType.death.value), Col.event_date)
    died = set(deaths.loc[(deaths["day"] >= 0) & (deaths["day"] < horizon), key])
    obs = cases[key].map(_obs_end(data))
    fu_short = obs.isna() | (_days(obs, cases["index_date"]) < horizon)
    too_old = (age > max_age) if max_age is not None else pd.Series(False, index=cases.index)
    exclusions = _exclude(cases, [
        ("no_opioid_admission", ~cases[key].isin(opioid_patients)),
        ("age_out_of_range", age.isna() | (age < min_age) | too_old),
        ("died", cases[key].isin(died)),
        ("insufficient_follow_up", fu_short),
    ])

    # covered blocks: eras with grace 0 per class, then the union over classes
    meds = data.medications
    meds = meds[meds[Col.medication].astype(str).isin(OUD_MEDICATIONS)]
    treatment_days = pd.Series(0.0, index=cases.index)
    if len(meds):
        eras = medication_eras(meds, grace_days=0, engine=engine)
        eras[Col.patient_id] = eras[Col.patient_id].astype(str)
        eras = eras.merge(cases[[key, "index_date"]].reset_index(drop=True), on=key)
        eras["s"] = _days(eras["era_start"], eras["index_date"])
        eras["e"] = _days(eras["era_end"], eras["index_date"])
        for pid, g in eras.groupby(key, sort=False):
            g = g.sort_values(["s", "e"])
            cur_end = None
            for s, e in zip(g["s"].to_numpy(), g["e"].to_numpy()):
                if e < 0:
                    continue  # coverage that ended before the index date
                if cur_end is None:
                    if s > 0:
                        break  # index dispensing always starts a block at day 0
                    cur_end = e
                elif s - cur_end - 1 <= max_gap:
                    cur_end = max(cur_end, e)
                else:
                    break
            treatment_days[pid] = (cur_end + 1) if cur_end is not None else 0.0
    cases["treatment_days"] = treatment_days.astype("int64")
    cases["continuous"] = cases["treatment_days"] >= min_days
    return _result(
        "Continuity of pharmacotherapy for OUD (NQF 3175)", "moud_continuity",
        [(f"continuity_{min_days}", min_days, cases["continuous"])], cases, exclusions,
        {"coverage": "medication_eras(grace_days=0) per class, union over OUD medications",
         "gap": f"at most {max_gap} uncovered days between blocks; duration counted from the index date"},
    )


# --------------------------------------------------------------------------- discharge-based measures
def _discharges(data: IOPData, func: str, start, end, engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    ep = _episodes(data, engine)
    cases = ep.copy()
    cases["index_date"] = cases[Col.discharge_date]
    cases = cases.set_index(Col.episode_id, drop=False)
    keep = _within(cases[Col.discharge_date], start, end) | cases[Col.discharge_date].isna()
    return ep, cases[keep].copy()


def readmission_rates(
    data: IOPData,
    *,
    windows: Sequence[int] = (30, 90),
    discharge_start: Any = None,
    discharge_end: Any = None,
    engine: Any = None,
) -> Result:
    """Readmission to SUD treatment within 30 and 90 days of an IOP discharge.

    Specification: no endorsed readmission measure exists for outpatient SUD treatment; the rule
    follows NCQA HEDIS MY 2024 *Plan All-Cause Readmissions (PCR)*: an index discharge, and a
    readmission "within 30 days of the index discharge date" (discharge date = day 0, readmission
    on days 1..30); direct transfers are not index discharges; members who died during the stay are
    excluded; continuous enrollment for 30 days after discharge. The 90-day rate applies the same
    rule with 90 days (with its own follow-up requirement and denominator).

    Implemented clauses:

    * *Index discharge*: an episode with a ``discharge_date`` (in ``[discharge_start,
      discharge_end]`` when given). Open episodes are counted as ``still_enrolled``.
    * *Exclusions*, in order: ``still_enrolled``; ``died_during_episode`` (``discharge_reason ==
      "death"``); ``transferred`` (``discharge_reason == "transferred"``: PCR joins a direct
      transfer to the next stay, and the receiving stay is not in the data); per window
      ``died_in_window`` (a ``death`` event on days 1..N) and ``insufficient_follow_up``
      (``observation_end`` before day N).
    * *Readmission*: a later IOP admission of the patient (``admissions``) or a ``readmission``
      event on days 1..N after the discharge.

    Simplification: PCR's planned-readmission exclusion and its risk adjustment cannot be applied.

    Returns
    -------
    Result
        ``tidy`` rows ``readmission_30``, ``readmission_90``; each has its own denominator, so
        ``extra["exclusions"]`` has a ``window_days`` column (0 for the exclusions common to all
        windows); ``cases`` one row per episode with ``readmission_day`` and ``excluded_<N>``,
        ``readmitted_<N>`` per window. ``glance`` counts the common exclusions only.
    """
    func = "readmission_rates"
    data = _require_data(data, func)
    windows = [_int_arg(w, func, "windows", minimum=1) for w in (windows if isinstance(windows, (list, tuple)) else [windows])]
    if not windows or len(set(windows)) != len(windows):
        raise ModelSpecificationError(f"{func}: windows must be distinct whole numbers of days, e.g. (30, 90).")
    start, end = _date_arg(discharge_start, func, "discharge_start"), _date_arg(discharge_end, func, "discharge_end")
    ep, cases = _discharges(data, func, start, end, engine)
    key = Col.episode_id
    reason = cases[Col.discharge_reason].astype("object")
    common = _exclude(cases, [
        ("still_enrolled", cases[Col.discharge_date].isna()),
        ("died_during_episode", reason == "death"),
        ("transferred", reason == "transferred"),
    ])
    base = cases.reset_index(drop=True)
    readm = pd.concat([
        _joined_days(base, key, ep[[Col.patient_id, Col.admit_date]], Col.admit_date),
        _joined_days(base, key, _events_of(data, EventType.readmission.value), Col.event_date),
    ], ignore_index=True)
    cases["readmission_day"] = cases[key].map(_first_day(readm, key, 1, max(windows)))
    deaths = _joined_days(base, key, _events_of(data, EventType.death.value), Col.event_date)
    obs = cases[Col.patient_id].map(_obs_end(data))
    obs_days = _days(obs, cases["index_date"])
    rows = [(r, 0, n) for r, n in common.itertuples(index=False)]
    tidy_rows = []
    common_keep = cases["excluded"].isna()
    for w in sorted(windows):
        died = set(deaths.loc[(deaths["day"] >= 1) & (deaths["day"] <= w), key])
        d_mask = cases[key].isin(died) & common_keep
        f_mask = (np.isnan(obs_days) | (obs_days < w)) & common_keep & ~d_mask
        excl = pd.Series(pd.NA, index=cases.index, dtype="object")
        excl[~common_keep] = cases.loc[~common_keep, "excluded"]
        excl[d_mask] = "died_in_window"
        excl[f_mask] = "insufficient_follow_up"
        cases[f"excluded_{w}"] = excl
        readmitted = cases["readmission_day"].le(w).fillna(False).astype(bool)
        cases[f"readmitted_{w}"] = readmitted
        rows += [("died_in_window", w, int(d_mask.sum())), ("insufficient_follow_up", w, int(f_mask.sum()))]
        keep = excl.isna()
        num, den = int((readmitted & keep).sum()), int(keep.sum())
        tidy_rows.append(("readmission", f"readmission_{w}", w, num, den, num / den if den else np.nan))
    tidy = pd.DataFrame(tidy_rows, columns=list(QUALITY_TIDY_COLUMNS))
    glance = pd.DataFrame([{"n_candidates": int(len(cases)), "n_excluded": int((~common_keep).sum()),
                            "n_denominator": int(common_keep.sum())}])
    exclusions = pd.DataFrame(rows, columns=["reason", "window_days", "n"])
    return Result(
        method="Readmission to SUD treatment after IOP discharge (HEDIS PCR rule)", tidy=tidy, glance=glance,
        extra={"exclusions": exclusions, "cases": cases.reset_index(drop=True)},
        conventions={"window": "discharge date = day 0; readmission on days 1..N",
                     "readmission": "later IOP admission or readmission event"},
    )


def followup_after_discharge(
    data: IOPData,
    *,
    windows: Sequence[int] = (7, 30),
    min_age: int = 13,
    discharge_start: Any = None,
    discharge_end: Any = None,
    engine: Any = None,
) -> Result:
    """Follow-up contact within 7 and 30 days after an IOP discharge.

    Specification: NCQA HEDIS MY 2024 *Follow-Up After High-Intensity Care for Substance Use
    Disorder (FUI)*: "the percentage of acute inpatient hospitalizations, residential treatment or
    withdrawal management visits for a diagnosis of SUD among members 13 years of age and older
    that result in a follow-up visit or service for SUD. Two rates are reported: follow-up within
    30 days and within 7 days after the visit or discharge." Continuous enrollment from the
    discharge date through 30 days after, so both rates share one denominator.

    Implemented clauses (day 0 = ``discharge_date``):

    * *Index*: every IOP discharge (in ``[discharge_start, discharge_end]`` when given). FUI's
      index is high-intensity care (inpatient, residential, withdrawal management); applying it to
      IOP discharges (step-down to continuing care) is the adaptation this measure makes.
    * *Exclusions*, in order: ``still_enrolled`` (no discharge), ``died_during_episode``,
      ``age_under_min`` (13, as of the discharge), ``died_in_window`` (a ``death`` event on days
      1..30: no enrollment through the window), ``insufficient_follow_up`` (``observation_end``
      before day 30).
    * *Numerator*: a follow-up visit or service "within 30 (7) days after the discharge": an
      ``aftercare_contact`` event, an attended session, an IOP admission, a ``readmission`` event
      or a dispensing of an OUD/AUD medication (FUI counts pharmacotherapy dispensing events) on
      days 1..N. Contacts on the discharge date itself do not count (as in HEDIS' follow-up
      measures, a visit on the date of discharge is part of the stay).

    Returns
    -------
    Result
        ``tidy`` rows ``followup_7``, ``followup_30``; exclusions as above; ``cases`` one row per
        episode with ``followup_day`` and ``followup_<N>`` flags.
    """
    func = "followup_after_discharge"
    data = _require_data(data, func)
    windows = sorted(_int_arg(w, func, "windows", minimum=1) for w in (windows if isinstance(windows, (list, tuple)) else [windows]))
    if not windows or len(set(windows)) != len(windows):
        raise ModelSpecificationError(f"{func}: windows must be distinct whole numbers of days, e.g. (7, 30).")
    min_age = _int_arg(min_age, func, "min_age")
    start, end = _date_arg(discharge_start, func, "discharge_start"), _date_arg(discharge_end, func, "discharge_end")
    ep, cases = _discharges(data, func, start, end, engine)
    key = Col.episode_id
    horizon = windows[-1]
    base = cases.reset_index(drop=True)
    deaths = _joined_days(base, key, _events_of(data, EventType.death.value), Col.event_date)
    died = set(deaths.loc[(deaths["day"] >= 1) & (deaths["day"] <= horizon), key])
    obs = cases[Col.patient_id].map(_obs_end(data))
    fu_short = obs.isna() | (_days(obs, cases["index_date"]) < horizon)
    reason = cases[Col.discharge_reason].astype("object")
    age = cases["age_at_admit"]
    exclusions = _exclude(cases, [
        ("still_enrolled", cases[Col.discharge_date].isna()),
        ("died_during_episode", reason == "death"),
        ("age_under_min", age.isna() | (age < min_age)),
        ("died_in_window", cases[key].isin(died)),
        ("insufficient_follow_up", fu_short),
    ])
    contacts = pd.concat([
        _joined_days(base, key, _events_of(data, EventType.aftercare_contact.value), Col.event_date),
        _joined_days(base, key, _attended_sessions(data), Col.session_date),
        _joined_days(base, key, ep[[Col.patient_id, Col.admit_date]], Col.admit_date),
        _joined_days(base, key, _events_of(data, EventType.readmission.value), Col.event_date),
        _joined_days(base, key, _dispensings(data, sorted(set(OUD_MEDICATIONS) | set(AUD_MEDICATIONS))),
                     Col.dispense_date),
    ], ignore_index=True)
    cases["followup_day"] = cases[key].map(_first_day(contacts, key, 1, horizon))
    rates = []
    for w in windows:
        flag = cases["followup_day"].le(w).fillna(False).astype(bool)
        cases[f"followup_{w}"] = flag
        rates.append((f"followup_{w}", w, flag))
    return _result(
        "Follow-up after IOP discharge (HEDIS FUI rule)", "followup", rates, cases, exclusions,
        {"window": "discharge date = day 0; contact on days 1..N",
         "contact": "aftercare contact, attended session, admission, readmission event, OUD/AUD dispensing"},
    )
