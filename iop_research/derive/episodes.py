"""IOP episodes: one row per treatment episode, with attendance, intensity and MAT.

Episodes come from recorded admissions (``mode="admissions"``) or, for claims-like
data without admissions, from attended sessions alone with a gap rule
(``mode="sessions"``). The heavy part (assigning millions of sessions to episodes,
the gap rule, weekly intensity, MAT joins) is written once as Ibis expressions and
runs on DuckDB in process by default or on Spark with ``engine="spark"``.

Conventions
-----------
Dates are whole days; episode windows ``[admit_date, end]`` include both days, where
``end`` is ``discharge_date`` or, for an episode still open, the patient's
``observation_end``.

Length of stay, ``los_convention="contract"`` (the default):
``los_days = max(1, end - admit_date)``, whole days, at least 1, so a same-day discharge
is 1 day and an admission on day 0 discharged on day 7 stays 7 days (hospital statistics
such as HCUP use ``discharge - admit`` with same-day stays as 0).
``los_convention="teds"``: TEDS-D's definition [1]_, from admission to the date of last
contact, plus one day for outpatient discharges (IOP is outpatient):
``los_days = last_contact - admit_date + 1``, where the last contact is the later of the
admission day and the last attended session in ``[admit_date, end]``. A stay whose last
session falls on its discharge day is then one day longer than under the contract, and a
stay whose last sessions were missed ends at the last one attended; this is the definition
to use when an IOP programme's own episodes are compared with TEDS-D ``LOS`` (codes 1-30
exact days, 31-37 ranges). Only ``los_days`` changes with the convention;
``weeks_in_treatment`` and the measures built on it keep the contract's window.

Weeks are 7-day blocks from admission (days 0-6 are week 0).
``weeks_in_treatment = ceil(los_days / 7)``; a session on the discharge day of a stay
whose length is a multiple of 7 counts in the last week. ASAM level 2.1 [2]_ needs
at least 9 attended hours a week for adults and 6 for adolescents (``age_at_admit``
under 18; unknown age counts as adult).

Attrition: sessions that belong to no episode are never dropped silently. They are
counted, with their reason, in an attrition table (columns ``step, reason,
rows_removed, patients_removed, rows_remaining``) that :func:`build_episodes`
attaches as records in ``df.attrs["attrition"]`` and that :func:`episode_attrition` returns on
its own (use it with ``lazy=True`` or when a pandas operation has dropped ``attrs``).

References
----------
.. [1] SAMHSA. Treatment Episode Data Set: Discharges (TEDS-D) codebook, variable
   ``LOS`` (length of stay).
.. [2] ASAM Criteria, 3rd ed. (2013): level 2.1 intensive outpatient services,
   9-19 hours a week for adults, 6-19 for adolescents.
.. [3] OHDSI. "Drug era" and "Condition era" persistence-window rules (gap rule).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iop_research.derive import exposures as _exp
from iop_research.derive.days import date_from_day, day_number
from iop_research.derive.engine import as_derived_table, as_table, collect, get_backend, int_from_bool, stage
from iop_research.exceptions import DataValidationError, EpisodeOverlapError, ModelSpecificationError, format_ids
from iop_research.data.io import IOPData
from iop_research.data.schema import (
    ASAM_21_MIN_HOURS_ADOLESCENT,
    ASAM_21_MIN_HOURS_ADULT,
    Col,
    DischargeReason,
    Modality,
)

__all__ = ["build_episodes", "episode_attrition", "EPISODE_COLUMNS", "ATTRITION_COLUMNS", "LOS_CONVENTIONS"]

#: Length-of-stay conventions of :func:`build_episodes` (module Conventions): the toolkit's
#: ``"contract"`` (``max(1, end - admit_date)``) and TEDS-D's ``"teds"`` (last contact + 1).
LOS_CONVENTIONS = ("contract", "teds")

_MODALITIES = [m.value for m in Modality]
_MODALITY_COLUMNS: tuple[str, ...] = tuple(
    c for m in _MODALITIES for c in (f"sessions_{m}", f"hours_{m}", f"sessions_{m}_first30", f"hours_{m}_first30")
)
_COVARIATES = (
    Col.referral_source,
    Col.primary_substance,
    Col.psychiatric_comorbidity,
    Col.prior_treatment_episodes,
    Col.severity_score,
    Col.housing,
    Col.employment,
)

#: Output columns of :func:`build_episodes`, in order.
EPISODE_COLUMNS: tuple[str, ...] = (
    Col.episode_id,
    Col.patient_id,
    Col.program,
    Col.admit_date,
    Col.discharge_date,
    "is_ongoing",
    "los_days",
    Col.discharge_reason,
    "is_completed",
    *_COVARIATES,
    "age_at_admit",
    Col.sex,
    "n_sessions_scheduled",
    "n_sessions_attended",
    "attendance_rate",
    "hours_attended",
    "weeks_in_treatment",
    "hours_per_week",
    "n_weeks_asam21",
    "share_weeks_asam21",
    *_MODALITY_COLUMNS,
    "has_mat",
    "mat_medication",
    "days_to_mat",
    "mat_pdc",
)

#: Columns of the attrition table.
ATTRITION_COLUMNS: tuple[str, ...] = ("step", "reason", "rows_removed", "patients_removed", "rows_remaining")

_FIRST_DAYS = 30  # "first30" columns: days [0, 30) from admission
_OPEN_END = 10**7  # epoch day far in the future, for windows of open episodes
_REASON_BAD_ID = "episode_id not in admissions"
_REASON_OUTSIDE_ADM = "session date outside every admission window"
_REASON_OUTSIDE_GAP = "session outside every episode of attended sessions (not attended, between episodes)"

_SESSION_REQUIRED = (Col.patient_id, Col.session_date, Col.modality, Col.minutes, Col.attended)
_ADMISSION_REQUIRED = (Col.episode_id, Col.patient_id, Col.admit_date)


# --------------------------------------------------------------------------- inputs
def _string(s: pd.Series) -> pd.Series:
    return s.astype("string")


def _attended(s: pd.Series) -> np.ndarray:
    """``attended`` as numpy bool; missing values are an error, never read as True."""
    if s.isna().any():
        raise DataValidationError(
            f"sessions: {int(s.isna().sum())} row(s) with a missing attended flag (first rows: "
            f"{format_ids(np.flatnonzero(s.isna().to_numpy()))}). Set attended to True/False "
            "(False for a no-show) or drop the rows explicitly."
        )
    return s.astype(bool).to_numpy()


def _sessions_frame(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _SESSION_REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"sessions: missing required column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))}). "
            "Rename the source columns to the data contract (iop_research.data.schema.Col)."
        )
    out = pd.DataFrame({
        Col.patient_id: _string(df[Col.patient_id]).to_numpy(),
        Col.episode_id: (_string(df[Col.episode_id]) if Col.episode_id in df.columns
                         else pd.Series(pd.NA, index=df.index, dtype="string")).to_numpy(),
        Col.session_date: pd.to_datetime(df[Col.session_date]).astype("datetime64[ns]").to_numpy(),
        Col.modality: _string(df[Col.modality]).to_numpy(),
        Col.minutes: pd.to_numeric(df[Col.minutes]).astype("float64").to_numpy(),
        Col.attended: _attended(df[Col.attended]),
    })
    out[Col.patient_id] = out[Col.patient_id].astype("string")
    out[Col.episode_id] = out[Col.episode_id].astype("string")
    out[Col.modality] = out[Col.modality].astype("string")
    return out


def _admissions_frame(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _ADMISSION_REQUIRED if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"admissions: missing required column(s) {', '.join(missing)}. Rename the source columns "
            "to the data contract (iop_research.data.schema.Col)."
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    out[Col.episode_id] = _string(df[Col.episode_id]).to_numpy()
    out[Col.patient_id] = _string(df[Col.patient_id]).to_numpy()
    out = out.astype({Col.episode_id: "string", Col.patient_id: "string"})
    for c in (Col.program, Col.discharge_reason, Col.referral_source, Col.primary_substance, Col.housing,
              Col.employment):
        out[c] = (_string(df[c]).to_numpy() if c in df.columns else pd.array([pd.NA] * len(df), dtype="string"))
        out[c] = out[c].astype("string")
    for c in (Col.admit_date, Col.discharge_date):
        out[c] = (pd.to_datetime(df[c]).astype("datetime64[ns]").to_numpy() if c in df.columns
                  else np.full(len(df), np.datetime64("NaT"), dtype="datetime64[ns]"))
    pc = df[Col.psychiatric_comorbidity] if Col.psychiatric_comorbidity in df.columns else pd.Series([pd.NA] * len(df))
    out[Col.psychiatric_comorbidity] = pc.astype("boolean").to_numpy()
    for c in (Col.prior_treatment_episodes, Col.severity_score):
        out[c] = (pd.to_numeric(df[c]).astype("float64").to_numpy() if c in df.columns
                  else np.full(len(df), np.nan))
    return out


def _patients_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        Col.patient_id: _string(df[Col.patient_id]).to_numpy(),
        Col.birth_year: pd.to_numeric(df[Col.birth_year]).astype("float64").to_numpy()
        if Col.birth_year in df.columns else np.full(len(df), np.nan),
        Col.sex: _string(df[Col.sex]).to_numpy() if Col.sex in df.columns
        else pd.array([pd.NA] * len(df), dtype="string"),
    }).astype({Col.patient_id: "string", Col.sex: "string"})


def _observation_frame(observation: pd.DataFrame) -> pd.DataFrame:
    """Per-patient observation end (patient_id, observation_end) with contract dtypes."""
    for c in (Col.patient_id, Col.observation_end):
        if c not in observation.columns:
            raise DataValidationError(
                f"observation: missing column {c!r}. Pass a table with patient_id and observation_end, "
                "or one cut-off date."
            )
    out = pd.DataFrame({
        Col.patient_id: _string(observation[Col.patient_id]).to_numpy(),
        Col.observation_end: pd.to_datetime(observation[Col.observation_end]).astype("datetime64[ns]").to_numpy(),
    })
    out[Col.patient_id] = out[Col.patient_id].astype("string")
    return out


def _cutoff_day(observation) -> int:
    """Epoch day of a single cut-off date."""
    try:
        cutoff = pd.Timestamp(observation)
    except (TypeError, ValueError) as exc:
        raise ModelSpecificationError(
            f"observation must be None, a DataFrame (patient_id, observation_end) or a date, got {observation!r}."
        ) from exc
    if pd.isna(cutoff):
        raise ModelSpecificationError("observation is a missing date; pass a date such as '2023-12-31'.")
    return day_number(cutoff)


def _unpack(data, mode, observation):
    """(sessions, admissions, medications, patients, observation) as given (frames, paths or tables)."""
    import ibis

    if mode not in ("admissions", "sessions"):
        raise ModelSpecificationError(f"mode must be 'admissions' or 'sessions', got {mode!r}.")
    if isinstance(data, IOPData):
        obs = observation if observation is not None else (
            data.observation if data.observation is not None and len(data.observation) else None)
        return data.sessions, data.admissions, data.medications, data.patients, obs
    if isinstance(data, (pd.DataFrame, str, Path, ibis.expr.types.Table)):
        if mode != "sessions":
            raise ModelSpecificationError(
                "build_episodes got a sessions table without admissions, so episodes can only be derived "
                "from attended sessions: pass mode='sessions' (gap rule), or pass an IOPData with admissions."
            )
        return data, None, None, None, observation
    raise ModelSpecificationError(
        f"data must be an IOPData or a sessions DataFrame / path / Ibis table, got {type(data).__name__}."
    )


class _Tables:
    """The inputs registered in one backend (Ibis tables; None when absent)."""

    def __init__(self, data, mode, observation, engine):
        import ibis

        sessions, admissions, medications, patients, obs = _unpack(data, mode, observation)
        if isinstance(sessions, ibis.expr.types.Table) and engine is None:
            self.backend = sessions._find_backend()
        else:
            self.backend = get_backend(engine)
        be = self.backend
        if isinstance(sessions, pd.DataFrame):
            s = as_derived_table(be, sessions, "sessions", _sessions_frame)
        else:
            s = as_table(be, sessions, "sessions")
        missing = [c for c in _SESSION_REQUIRED if c not in s.columns]
        if missing:
            raise DataValidationError(f"sessions: missing required column(s) {', '.join(missing)}.")
        ep_col = s[Col.episode_id].cast("string") if Col.episode_id in s.columns else ibis.null("string")
        self.sessions = s.select(
            **{Col.patient_id: s[Col.patient_id].cast("string"),
               "given_episode_id": ep_col,
               "day": day_number(s[Col.session_date]),
               Col.modality: s[Col.modality].cast("string"),
               Col.minutes: s[Col.minutes].cast("float64"),
               Col.attended: s[Col.attended].cast("boolean")}
        )
        self.admissions = None
        if mode == "admissions":
            if admissions is None:
                raise ModelSpecificationError("mode='admissions' needs an admissions table in data.")
            self.admissions = (as_derived_table(be, admissions, "admissions", _admissions_frame)
                               if isinstance(admissions, pd.DataFrame) else as_table(be, admissions, "admissions"))
        self.patients = None
        if patients is not None and len(patients):
            self.patients = as_derived_table(be, patients, "patients", _patients_frame)
        self.medications = None
        if medications is not None and not (isinstance(medications, pd.DataFrame) and len(medications) == 0):
            self.medications = _exp._medications_table(be, medications)
            _exp._validate_medications(self.medications)
        self.observation = None
        if isinstance(obs, pd.DataFrame):
            ot = as_derived_table(be, obs, "observation", _observation_frame)
            self.observation = ot.select(Col.patient_id, obs_day=day_number(ot[Col.observation_end]))
        elif obs is not None:  # one cut-off date for every patient
            cutoff = _cutoff_day(obs)
            src = self.admissions if self.admissions is not None else self.sessions
            ids = src.select(src[Col.patient_id].cast("string").name(Col.patient_id)).distinct()
            self.observation = ids.mutate(obs_day=ibis.literal(cutoff, type="int64"))


# --------------------------------------------------------------------------- episode bases
def _with_patients(base, tabs: _Tables):
    """Add age_at_admit and sex from patients (null when absent)."""
    import ibis

    if tabs.patients is None:
        return base.mutate(age_at_admit=ibis.null("float64"), **{Col.sex: ibis.null("string")})
    p = tabs.patients.rename(p_pid=Col.patient_id)
    j = base.left_join(p, base[Col.patient_id] == p.p_pid)
    year = date_from_day(j.admit_day).year()
    return j.mutate(age_at_admit=(year - j[Col.birth_year]).cast("float64")).drop(Col.birth_year, "p_pid")


def _with_obs(base, tabs: _Tables):
    import ibis

    if tabs.observation is None:
        return base.mutate(obs_day=ibis.null("int64"))
    o = tabs.observation.rename(o_pid=Col.patient_id)
    return base.left_join(o, base[Col.patient_id] == o.o_pid).drop("o_pid")


def _admission_base(tabs: _Tables):
    """Episodes from admissions: ids, days, covariates, end_day, is_ongoing."""
    import ibis

    a = tabs.admissions
    base = a.select(
        Col.episode_id, Col.patient_id, Col.program,
        admit_day=day_number(a[Col.admit_date]),
        discharge_day=day_number(a[Col.discharge_date]),
        **{Col.discharge_reason: a[Col.discharge_reason]},
        **{c: a[c] for c in _COVARIATES},
    )
    base = _with_obs(base, tabs)
    base = base.mutate(end_day=ibis.coalesce(base.discharge_day, base.obs_day),
                       is_ongoing=base.discharge_day.isnull())
    return _with_patients(base, tabs)


def _check_admissions(base) -> None:
    """Duplicate ids, discharge before admission, overlapping episodes: raise with ids."""
    import ibis

    w = ibis.window(group_by=Col.patient_id, order_by=[base.admit_day, base[Col.episode_id]])
    t = base.mutate(
        n_id=base[Col.episode_id].count().over(ibis.window(group_by=Col.episode_id)),
        prev_end=ibis.coalesce(base.end_day, _OPEN_END).lag().over(w),
        prev_id=base[Col.episode_id].lag().over(w),
    )
    t = t.mutate(
        is_dup=t.n_id > 1,
        is_reversed=t.discharge_day < t.admit_day,
        is_missing=t.admit_day.isnull(),
        is_overlap=t.prev_end.notnull() & (t.admit_day <= t.prev_end),
    )
    bad = t.filter(t.is_dup | t.is_reversed.fill_null(False) | t.is_missing | t.is_overlap.fill_null(False))
    df = bad.select(Col.episode_id, "prev_id", "is_dup", "is_reversed", "is_missing", "is_overlap") \
        .limit(10_000).execute()
    if df.empty:
        return
    msgs = []
    for flag, text, fix in (
        ("is_missing", "a missing admit_date", "fill admit_date"),
        ("is_dup", "a duplicated episode_id", "make episode_id unique"),
        ("is_reversed", "discharge_date before admit_date", "repair the dates or drop the rows explicitly"),
    ):
        sub = df[df[flag].fillna(False).astype(bool)]
        if len(sub):
            msgs.append(f"{len(sub)} admission(s) with {text} (episode_id: {format_ids(sub[Col.episode_id])}); {fix}")
    if msgs:
        raise DataValidationError("admissions: " + "; ".join(msgs) + ".")
    ov = df[df["is_overlap"].fillna(False).astype(bool)]
    pairs = [f"{p}/{e}" for p, e in zip(ov["prev_id"], ov[Col.episode_id])]
    raise EpisodeOverlapError(
        f"admissions: {len(ov)} episode(s) start on or before the end (discharge_date, or observation_end "
        f"when still open) of the patient's previous episode (previous/next episode_id: {format_ids(pairs)}). "
        "Merge or repair the overlapping admissions, or give the earlier one its discharge_date."
    )


def _gap_episodes(tabs: _Tables, gap_days: int):
    """Episodes from attended sessions with the gap rule.

    One sorted window pass over the attended sessions gives each one's previous and next
    day; an episode starts where the previous day is more than ``gap_days`` away (or
    missing) and ends where the next one is. Only these boundary sessions (about two per
    episode) go on: sorted by day, each start that is not also an end is followed by its
    episode's end, so a second window over the boundaries pairs them, and the k-th start of
    a patient is episode k. Sessions on the same day need no DISTINCT first (at claims scale
    that was the costliest step): between two of them the gap is 0, so only the first of a
    day's sessions can start an episode and only the last can end one (a start sorts before
    an end of the same day).
    """
    import ibis

    s = tabs.sessions
    att = s.filter(s[Col.attended]).select(Col.patient_id, "day")
    w = ibis.window(group_by=Col.patient_id, order_by=att.day)
    att = att.mutate(prev_day=att.day.lag().over(w), next_day=att.day.lead().over(w))
    is_start = att.prev_day.isnull() | ((att.day - att.prev_day) > gap_days)
    is_end = att.next_day.isnull() | ((att.next_day - att.day) > gap_days)
    bounds = att.filter(is_start | is_end).select(Col.patient_id, "day", is_start=is_start, is_end=is_end)
    wb = ibis.window(group_by=Col.patient_id, order_by=[bounds.day, bounds.is_end])
    bounds = bounds.mutate(next_bound=bounds.day.lead().over(wb))
    starts = bounds.filter(bounds.is_start)
    ep_n = (ibis.row_number().over(ibis.window(group_by=Col.patient_id, order_by=starts.day)) + 1).cast("int64")
    return starts.select(
        **{Col.episode_id: starts[Col.patient_id] + "-S" + ep_n.cast("string")},
        **{Col.patient_id: starts[Col.patient_id]},
        admit_day=starts.day.cast("int64"),
        discharge_day=ibis.ifelse(starts.is_end, starts.day, starts.next_bound).cast("int64"),
    )


def _session_base(tabs: _Tables, gap_days: int):
    import ibis

    eps = _gap_episodes(tabs, gap_days)
    base = _with_obs(eps, tabs)
    base = base.mutate(
        **{Col.program: ibis.null("string"), Col.discharge_reason: ibis.null("string")},
        **{c: ibis.null(t) for c, t in zip(_COVARIATES, ["string", "string", "boolean", "float64", "float64",
                                                          "string", "string"])},
        end_day=base.discharge_day,
        is_ongoing=ibis.coalesce((base.obs_day - base.discharge_day) <= gap_days, False),
    )
    return _with_patients(base, tabs)


# --------------------------------------------------------------------------- sessions -> episodes
def _assign(tabs: _Tables, base, mode: str):
    """Every session row with ``episode_id`` (null when unassigned) and ``status``.

    status 0 = assigned, 1 = given episode_id not in admissions, 2 = outside every window.
    The episode's admit day (``w_start``) and, when ``base`` has them, its
    ``weeks_in_treatment`` (``w_weeks``) and ASAM threshold (``w_thr``) ride along, so the
    per-episode measures need no second join of millions of rows back to the episodes.
    """
    import ibis

    s = tabs.sessions
    extra = {"w_weeks": "weeks_in_treatment", "w_thr": "asam_threshold"}
    extra = {k: base[v] for k, v in extra.items() if v in base.columns}
    win = base.select(w_ep=base[Col.episode_id], w_pid=base[Col.patient_id], w_start=base.admit_day,
                      w_end=ibis.coalesce(base.end_day, _OPEN_END), **extra)
    carried = ["w_ep", "w_start", *extra]
    if mode == "admissions":
        loose = s.filter(s.given_episode_id.isnull())
        fixed = s.filter(s.given_episode_id.notnull())
        j = loose.left_join(win, [loose[Col.patient_id] == win.w_pid, loose.day >= win.w_start,
                                  loose.day <= win.w_end])
        by_date = j.select(*s.columns, *carried)
        ids = win.select(*carried)
        jf = fixed.left_join(ids, fixed.given_episode_id == ids.w_ep)
        by_id = jf.select(*s.columns, *carried)
        both = by_date.union(by_id)
        status = ibis.cases((both.w_ep.notnull(), 0), (both.given_episode_id.notnull(), 1), else_=2)
    else:
        j = s.left_join(win, [s[Col.patient_id] == win.w_pid, s.day >= win.w_start, s.day <= win.w_end])
        both = j.select(*s.columns, *carried)
        status = ibis.cases((both.w_ep.notnull(), 0), else_=2)
    return both.mutate(status=status.cast("int64"))


def _attrition_expr(assigned, mode: str):
    a = assigned
    per = a.group_by(Col.patient_id).aggregate(
        n=a.count(),
        n1=int_from_bool(a.status == 1).sum(),
        n2=int_from_bool(a.status == 2).sum(),
    )
    return per.aggregate(
        rows=per.n.sum(),
        r1=per.n1.sum(),
        r2=per.n2.sum(),
        p1=int_from_bool((per.n1 == per.n) & (per.n > 0)).sum(),
        p2=int_from_bool((per.n1 < per.n) & ((per.n1 + per.n2) == per.n)).sum(),
    )


def _session_attrition_counts(tabs: _Tables, episodes: pd.DataFrame) -> pd.DataFrame:
    """The counts of :func:`_attrition_expr` in sessions mode, from the episodes already built.

    Gap-rule episodes of a patient never overlap, so a session is assigned to at most one
    episode: the sessions removed are all sessions minus the episodes' scheduled sessions,
    and the patients removed are the patients (a missing patient_id is one group, as in
    ``group_by``) minus those with an assigned session. One scan of the sessions instead of
    a second run of the gap rule and the assignment join.
    """
    s = tabs.sessions
    pid = s[Col.patient_id]
    tot = collect(s.aggregate(rows=s.count(), n_pat=pid.nunique(), any_null=pid.isnull().any()))
    rows = int(tot["rows"].iloc[0]) if len(tot) else 0
    n_pat = int(tot["n_pat"].iloc[0]) + int(bool(tot["any_null"].iloc[0])) if rows else 0
    placed = episodes["n_sessions_scheduled"].to_numpy()
    kept_pat = pd.unique(episodes.loc[placed > 0, Col.patient_id].dropna()).size
    r2 = rows - int(placed.sum())
    return pd.DataFrame({"rows": [rows], "r1": [0], "r2": [r2], "p1": [0], "p2": [n_pat - kept_pat]})


def _attrition_frame(counts: pd.DataFrame, mode: str) -> pd.DataFrame:
    c = counts.iloc[0] if len(counts) else pd.Series({"rows": 0, "r1": 0, "r2": 0, "p1": 0, "p2": 0})
    val = {k: int(0 if pd.isna(c[k]) else c[k]) for k in ("rows", "r1", "r2", "p1", "p2")}
    rows = [("input", "sessions received", 0, 0, val["rows"])]
    remaining = val["rows"]
    if mode == "admissions":
        remaining -= val["r1"]
        rows.append(("assign_sessions", _REASON_BAD_ID, val["r1"], val["p1"], remaining))
        remaining -= val["r2"]
        rows.append(("assign_sessions", _REASON_OUTSIDE_ADM, val["r2"], val["p2"], remaining))
    else:
        remaining -= val["r2"]
        rows.append(("assign_sessions", _REASON_OUTSIDE_GAP, val["r2"], val["p2"], remaining))
    out = pd.DataFrame(rows, columns=list(ATTRITION_COLUMNS))
    return out.astype({"rows_removed": "int64", "patients_removed": "int64", "rows_remaining": "int64"})


# --------------------------------------------------------------------------- per-episode measures
def _session_measures(assigned, base):
    import ibis

    # admit day, weeks and threshold of the session's episode came along in _assign
    a = assigned.filter(assigned.status == 0)
    a = a.rename(e_admit="w_start", e_weeks="w_weeks", e_thr="w_thr")
    rel = a.day - a.e_admit
    # attended minutes are summed and divided by 60 once: sums of whole minutes are exact in
    # float64, so hours do not change in the last bits with the order in which an engine
    # (threads, Spark partitions, input order) adds the rows up
    mins = ibis.cases((a[Col.attended], a[Col.minutes]), else_=0.0)
    first = (rel >= 0) & (rel < _FIRST_DAYS)
    a = a.mutate(rel=rel, mins=mins, first=first, att=int_from_bool(a[Col.attended]))
    aggs = {
        "n_sessions_scheduled": a.count(),
        "n_sessions_attended": a.att.sum(),
        "hours_attended": a.mins.sum() / 60.0,
        # last attended day (from admission) for los_convention="teds"
        "last_attended_rel": ibis.cases((a[Col.attended], a.rel), else_=ibis.null("int64")).max(),
    }
    for m in _MODALITIES:
        is_m = a[Col.modality] == m
        aggs[f"sessions_{m}"] = ibis.cases((is_m, a.att), else_=0).sum()
        aggs[f"hours_{m}"] = ibis.cases((is_m, a.mins), else_=0.0).sum() / 60.0
        aggs[f"sessions_{m}_first30"] = ibis.cases((is_m & a.first, a.att), else_=0).sum()
        aggs[f"hours_{m}_first30"] = ibis.cases((is_m & a.first, a.mins), else_=0.0).sum() / 60.0
    per_ep = a.group_by("w_ep").aggregate(**aggs)

    att = a.filter(a[Col.attended])
    week = (att.rel // 7).cast("int64")
    week = ibis.cases((att.e_weeks.notnull(), ibis.least(week, att.e_weeks - 1)), else_=week)
    att = att.mutate(week=ibis.greatest(week, 0))
    # the threshold is the episode's (one value per w_ep): carried by max(), not a grouping key
    wk = att.group_by(["w_ep", "week"]).aggregate(h=att.mins.sum() / 60.0, thr=att.e_thr.max())
    weeks = wk.group_by("w_ep").aggregate(
        n_weeks_asam21=int_from_bool(wk.h >= wk.thr - 1e-9).sum()
    ).rename(w_ep2="w_ep")
    return per_ep, weeks


def _mat_measures(tabs: _Tables, base):
    """First MAT dispensing in each episode window and the PDC over the window."""
    import ibis

    if tabs.medications is None:
        return None, None
    disp = _exp._dispensings(tabs.medications)
    win = base.select(m_ep=base[Col.episode_id], m_pid=base[Col.patient_id], m_start=base.admit_day,
                      m_end=ibis.coalesce(base.end_day, _OPEN_END))
    j = disp.inner_join(win, [disp[Col.patient_id] == win.m_pid, disp.day >= win.m_start, disp.day <= win.m_end])
    ranks = {c: i for i, c in enumerate(_exp._CLASS_ORDER)}
    n_cls = len(ranks)
    key = (j.day - j.m_start) * n_cls + j.medication_class.substitute(ranks, else_=0).cast("int64")
    first = j.group_by("m_ep").aggregate(first_key=key.min().cast("int64"))
    first = first.mutate(
        days_to_mat=(first.first_key // n_cls).cast("int64"),
        mat_rank=(first.first_key % n_cls).cast("int64"),
    )
    first = first.mutate(mat_medication=first.mat_rank.substitute({i: c for c, i in ranks.items()},
                                                                else_=ibis.null("string")))
    first = first.select("m_ep", "days_to_mat", "mat_medication")
    closed = base.filter(base.end_day.notnull())
    windows = closed.select(
        Col.episode_id, Col.patient_id, w_start=closed.admit_day, w_end=closed.end_day
    )
    pdc = _exp._pdc_expr(_exp._islands(_exp._coverage(disp)), windows, Col.episode_id)
    pdc = pdc.select(p_ep=pdc[Col.episode_id], mat_pdc=pdc.pdc)
    return first, pdc


def _episodes_expr(tabs: _Tables, mode: str, gap_days: int, los_convention: str = "contract"):
    import ibis

    base = _admission_base(tabs) if mode == "admissions" else _session_base(tabs, gap_days)
    # GREATEST skips nulls on DuckDB and Spark: keep los null when the end is unknown
    los = ibis.cases((base.end_day.notnull(), ibis.greatest(base.end_day - base.admit_day, 1)),
                     else_=ibis.null("int64"))
    base = base.mutate(
        los_days=los.cast("int64"),
        weeks_in_treatment=((los + 6) // 7).cast("int64"),
        asam_threshold=ibis.cases(
            (base.age_at_admit < 18, ASAM_21_MIN_HOURS_ADOLESCENT), else_=ASAM_21_MIN_HOURS_ADULT
        ),
    )
    # a temporary table on DuckDB and PostgreSQL (see engine.stage): the sessions are then
    # scanned once for the windows and once for the join instead of being materialised
    base = stage(tabs.backend, base, "episode_base")
    assigned = _assign(tabs, base, mode)
    per_ep, weeks = _session_measures(assigned, base)
    t = base.left_join(per_ep, base[Col.episode_id] == per_ep.w_ep)
    t = t.left_join(weeks, t[Col.episode_id] == weeks.w_ep2)
    if los_convention == "teds":
        # TEDS-D: admission to last contact (the later of admission and the last attended
        # session inside the window), plus one day for outpatient discharges
        last = ibis.greatest(ibis.least(t.last_attended_rel.fill_null(0), t.end_day - t.admit_day), 0)
        t = t.mutate(los_days=ibis.cases((t.end_day.notnull(), (last + 1).cast("int64")),
                                         else_=ibis.null("int64")))
    first, pdc = _mat_measures(tabs, base)
    if first is not None:
        t = t.left_join(first, t[Col.episode_id] == first.m_ep)
        t = t.left_join(pdc, t[Col.episode_id] == pdc.p_ep)
    else:
        t = t.mutate(days_to_mat=ibis.null("int64"), mat_medication=ibis.null("string"),
                     mat_pdc=ibis.null("float64"))
    zero_int = ["n_sessions_scheduled", "n_sessions_attended", "n_weeks_asam21",
                *[c for c in _MODALITY_COLUMNS if c.startswith("sessions_")]]
    zero_float = ["hours_attended", *[c for c in _MODALITY_COLUMNS if c.startswith("hours_")]]
    fills = {c: t[c].fill_null(0).cast("int64") for c in zero_int}
    fills.update({c: t[c].fill_null(0.0).cast("float64") for c in zero_float})
    t = t.mutate(**fills)
    weeks_f = t.weeks_in_treatment.cast("float64")
    t = t.mutate(
        attendance_rate=ibis.cases(
            (t.n_sessions_scheduled > 0, t.n_sessions_attended.cast("float64") / t.n_sessions_scheduled),
            else_=ibis.null("float64")),
        hours_per_week=t.hours_attended / weeks_f,
        share_weeks_asam21=t.n_weeks_asam21.cast("float64") / weeks_f,
        has_mat=t.days_to_mat.notnull(),
        mat_pdc=ibis.cases((t.end_day.notnull(), t.mat_pdc.fill_null(0.0)), else_=ibis.null("float64")),
        is_completed=ibis.coalesce(t[Col.discharge_reason] == DischargeReason.completed.value, False),
        **{Col.admit_date: date_from_day(t.admit_day),
           Col.discharge_date: date_from_day(t.discharge_day)},
    )
    t = t.select(*EPISODE_COLUMNS)
    return t.order_by([Col.patient_id, Col.admit_date, Col.episode_id]), assigned


def _to_pandas(expr) -> pd.DataFrame:
    """Execute ``expr`` into pandas for :func:`_shape`.

    On DuckDB through Arrow's own converter: ibis's ``to_pandas`` turns every column that
    has a null into Python objects one value at a time, which at claims scale (half a
    million episodes, a dozen all-null intake columns in sessions mode) costs seconds.
    :func:`_shape` then fixes every column's dtype, so both routes give the same frame.
    Other engines use :func:`iop_research.derive.engine.collect`.
    """
    import warnings

    backend = expr._find_backend()
    if getattr(backend, "name", "") != "duckdb":
        return collect(expr)
    with warnings.catch_warnings():
        # ibis 12 calls DuckDB's deprecated fetch_arrow_table(); not ours to fix
        warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
        table = expr.to_pyarrow()
    return table.to_pandas(date_as_object=False)


_INT_COLS = ["n_sessions_scheduled", "n_sessions_attended", "n_weeks_asam21",
             *[c for c in _MODALITY_COLUMNS if c.startswith("sessions_")]]


def _shape(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed pandas dtypes of the output (dates datetime64[ns], counts int64, flags bool)."""
    df = df.reset_index(drop=True)
    for c in (Col.admit_date, Col.discharge_date):
        df[c] = pd.to_datetime(df[c]).astype("datetime64[ns]")
    for c in ("is_ongoing", "is_completed", "has_mat"):
        df[c] = df[c].astype(bool)
    for c in _INT_COLS:
        df[c] = df[c].astype("int64")
    for c in ("los_days", "weeks_in_treatment", "days_to_mat", "prior_treatment_episodes"):
        df[c] = df[c].astype("Int64") if df[c].isna().any() else df[c].astype("int64")
    for c in ("attendance_rate", "hours_attended", "hours_per_week", "share_weeks_asam21", "mat_pdc",
              "severity_score", "age_at_admit", *[c for c in _MODALITY_COLUMNS if c.startswith("hours_")]):
        df[c] = df[c].astype("float64")
    for c in (Col.episode_id, Col.patient_id, Col.program, Col.discharge_reason, Col.referral_source,
              Col.primary_substance, Col.housing, Col.employment, Col.sex, "mat_medication"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    pc = df[Col.psychiatric_comorbidity]
    df[Col.psychiatric_comorbidity] = pc.astype(bool) if pc.notna().all() else pc.astype(object).where(pc.notna(), None)
    return df.loc[:, list(EPISODE_COLUMNS)]


def _check_args(gap_days, los_convention="contract"):
    if isinstance(gap_days, bool) or not isinstance(gap_days, (int, np.integer)) or gap_days < 0:
        raise ModelSpecificationError(f"gap_days must be a non-negative integer number of days, got {gap_days!r}.")
    if los_convention not in LOS_CONVENTIONS:
        raise ModelSpecificationError(f"los_convention must be one of {', '.join(map(repr, LOS_CONVENTIONS))}, "
                                      f"got {los_convention!r}.")


# --------------------------------------------------------------------------- public
def build_episodes(
    data: Any,
    *,
    mode: str = "admissions",
    gap_days: int = 30,
    observation: Any = None,
    engine: Any = None,
    lazy: bool = False,
    los_convention: str = "contract",
):
    """One row per IOP episode with attendance, intensity, modality mix and MAT.

    Parameters
    ----------
    data : IOPData, or sessions as pandas.DataFrame, CSV/Parquet path or Ibis table
        An :class:`~iop_research.data.io.IOPData` (uses admissions, sessions, medications,
        patients, observation), or the sessions table alone (then ``mode`` must be
        ``"sessions"``).
    mode : {"admissions", "sessions"}, default "admissions"
        ``"admissions"``: one episode per recorded admission; a session goes to its
        ``episode_id`` when given, else to the admission of the same patient whose
        window ``[admit_date, discharge_date or observation_end]`` contains its date.
        ``"sessions"``: episodes from attended sessions alone: a new episode starts
        when MORE than ``gap_days`` days separate consecutive attended sessions
        (days between their dates); admit = first, discharge = last attended
        session; ``episode_id = f"{patient_id}-S{n}"`` (n = 1, 2, ... in time order).
        Non-attended sessions inside an episode count as scheduled.
    gap_days : int, default 30
        Gap rule for ``mode="sessions"``, in days (60 and 90 are common sensitivity
        settings [3]_). Also the horizon of ``is_ongoing`` in that mode.
    observation : None, pandas.DataFrame or date-like, default None
        End of complete data: a table ``patient_id, observation_end``, or one cut-off
        date for everyone. ``None`` uses ``data.observation`` when ``data`` is an
        IOPData. Open episodes end there (``los_days``, PDC); without it their
        ``los_days`` is missing.
    engine : None, "duckdb", "spark" or an Ibis backend, default None (DuckDB)
        Where the expressions run (see :mod:`iop_research.derive.engine`). An Ibis table
        input with ``engine=None`` runs on its own backend.
    lazy : bool, default False
        Return the unexecuted Ibis table (no ``attrs``; call
        :func:`episode_attrition` for the attrition table). Input validation
        (admissions, medications) still runs a few small queries.
    los_convention : {"contract", "teds"}, default "contract"
        How ``los_days`` is counted (module Conventions). ``"contract"``:
        ``max(1, end - admit_date)``. ``"teds"``: TEDS-D's length of stay, admission to
        the last contact (the later of the admission day and the last attended session
        in the window) plus one day for outpatient discharges, so that a programme's
        episodes can be compared with TEDS-D ``LOS``
        (:func:`iop_research.datasets.read_teds_d`). Only ``los_days`` changes.

    Returns
    -------
    pandas.DataFrame (or ibis Table when ``lazy``)
        One row per episode, sorted by ``patient_id, admit_date, episode_id``, columns
        :data:`EPISODE_COLUMNS`:

        - ``episode_id``, ``patient_id``, ``program`` (site; null in sessions mode)
        - ``admit_date``, ``discharge_date`` (null while still enrolled in admissions
          mode; last attended session in sessions mode)
        - ``is_ongoing``: admissions mode, no discharge_date; sessions mode, the
          observation end falls within ``gap_days`` of the last attended session,
          so the gap rule cannot confirm the end (LOS right-censored)
        - ``los_days``: ``max(1, end - admit_date)`` in whole days, end =
          discharge_date or observation_end; with ``los_convention="teds"``,
          last contact - admit_date + 1 (see module Conventions)
        - ``discharge_reason`` (:class:`~iop_research.data.schema.DischargeReason`; null when
          ongoing and in sessions mode); ``is_completed``: reason is ``completed``
          (False when the reason is missing)
        - intake covariates from admissions (null in sessions mode):
          ``referral_source, primary_substance, psychiatric_comorbidity,
          prior_treatment_episodes, severity_score, housing, employment``
        - ``age_at_admit``: year of admit_date minus ``patients.birth_year`` (years);
          ``sex`` from patients
        - ``n_sessions_scheduled``, ``n_sessions_attended``, ``attendance_rate``
          (attended / scheduled, null without sessions), ``hours_attended``
          (attended minutes / 60)
        - ``weeks_in_treatment = ceil(los_days / 7)``, ``hours_per_week`` (hours
          attended / weeks_in_treatment)
        - ``n_weeks_asam21``: 7-day blocks from admission with attended hours >= 9
          (>= 6 when age_at_admit < 18); ``share_weeks_asam21`` = that / weeks
        - per modality m in :class:`~iop_research.data.schema.Modality`: ``sessions_<m>``
          (attended sessions), ``hours_<m>`` (attended hours), ``sessions_<m>_first30``
          and ``hours_<m>_first30`` (attended on days [0, 30) from admission)
        - ``has_mat``: a dispensing on a day in [admit_date, end];
          ``mat_medication``: class of the first such dispensing (ties on one day
          broken in :class:`~iop_research.data.schema.MedicationClass` order);
          ``days_to_mat``: its day minus admit_date; ``mat_pdc``: proportion of days
          in [admit_date, end] covered by any MAT, early refills shifted forward
          (see :func:`iop_research.derive.exposures.proportion_days_covered`; null when
          end is unknown)

        Attribute ``attrs["attrition"]``: the attrition table as a list of records
        (``pd.DataFrame(df.attrs["attrition"])``; records, not a DataFrame, because
        pandas compares ``attrs`` in ``concat`` and a DataFrame there breaks it).

    Raises
    ------
    DataValidationError
        Missing columns; admissions with a duplicated episode_id, a missing
        admit_date or discharge before admission; bad medications.
    EpisodeOverlapError
        Two admissions of one patient overlap (the later starts on or before the
        end of the earlier).
    ModelSpecificationError
        Unknown ``mode``, engine or ``los_convention``; a sessions-only input with
        ``mode="admissions"``; negative ``gap_days``.

    See Also
    --------
    episode_attrition : the attrition table on its own.
    iop_research.derive.exposures.medication_eras : MAT eras.

    References
    ----------
    .. [1] SAMHSA, TEDS-D codebook, ``LOS``.
    .. [2] ASAM Criteria, level 2.1 (9 hours a week for adults, 6 for adolescents).
    .. [3] OHDSI persistence-window (gap) rule for eras.

    Examples
    --------
    >>> import pandas as pd
    >>> sessions = pd.DataFrame({
    ...     "patient_id": ["p1"] * 5,
    ...     "session_date": pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-20",
    ...                                     "2024-03-01", "2024-03-02"]),
    ...     "modality": ["group", "individual", "group", "group", "family"],
    ...     "minutes": [180, 60, 180, 180, 60],
    ...     "attended": [True, True, False, True, True],
    ... })
    >>> ep = build_episodes(sessions, mode="sessions", gap_days=30)
    >>> print(ep[["episode_id", "admit_date", "discharge_date", "los_days", "hours_attended"]].to_string())
      episode_id admit_date discharge_date  los_days  hours_attended
    0      p1-S1 2024-01-01     2024-01-03         2             4.0
    1      p1-S2 2024-03-01     2024-03-02         1             4.0
    >>> pd.DataFrame(ep.attrs["attrition"])[["step", "rows_removed", "rows_remaining"]]
                  step  rows_removed  rows_remaining
    0            input             0               5
    1  assign_sessions             1               4
    """
    _check_args(gap_days, los_convention)
    tabs = _Tables(data, mode, observation, engine)
    if mode == "admissions":
        _check_admissions(_admission_base(tabs))
    expr, assigned = _episodes_expr(tabs, mode, int(gap_days), los_convention)
    if lazy:
        return collect(expr, lazy=True)
    out = _shape(_to_pandas(expr))
    if mode == "sessions":
        counts = _session_attrition_counts(tabs, out)
    else:
        counts = collect(_attrition_expr(assigned, mode))
    attrition = _attrition_frame(counts, mode)
    out.attrs["attrition"] = attrition.to_dict("records")
    return out


def episode_attrition(
    data: Any,
    *,
    mode: str = "admissions",
    gap_days: int = 30,
    observation: Any = None,
    engine: Any = None,
) -> pd.DataFrame:
    """Sessions that :func:`build_episodes` cannot place in an episode, counted by reason.

    Parameters
    ----------
    data, mode, gap_days, observation, engine
        As in :func:`build_episodes` (same arguments give the same episodes).

    Returns
    -------
    pandas.DataFrame
        Columns ``step, reason, rows_removed, patients_removed, rows_remaining``:
        first row ``input / sessions received``; then, in admissions mode,
        ``episode_id not in admissions`` and ``session date outside every admission
        window``; in sessions mode ``session outside every episode of attended
        sessions``. ``patients_removed`` counts patients who lose their last session
        at that step. Rows removed are kept out of every per-episode count.

    Raises
    ------
    As :func:`build_episodes`.

    References
    ----------
    .. [1] von Elm E, et al. The STROBE statement (2007): report numbers excluded at
       each stage, with reasons.

    Examples
    --------
    >>> import pandas as pd
    >>> s = pd.DataFrame({"patient_id": ["a", "a", "b"],
    ...     "session_date": pd.to_datetime(["2024-01-01", "2024-02-15", "2024-01-01"]),
    ...     "modality": "group", "minutes": 60, "attended": [True, True, False]})
    >>> episode_attrition(s, mode="sessions")[["rows_removed", "patients_removed", "rows_remaining"]]
       rows_removed  patients_removed  rows_remaining
    0             0                 0               3
    1             1                 1               2
    """
    _check_args(gap_days)
    tabs = _Tables(data, mode, observation, engine)
    base = _admission_base(tabs) if mode == "admissions" else _session_base(tabs, int(gap_days))
    if mode == "admissions":
        _check_admissions(base)
    assigned = _assign(tabs, base, mode)
    return _attrition_frame(collect(_attrition_expr(assigned, mode)), mode)
