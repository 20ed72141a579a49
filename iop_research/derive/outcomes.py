"""Outcomes: time to relapse (with death as a competing event), recurrent relapses, retention.

A relapse is a return to use after treatment entry, proxied in data by dated
events (:class:`iop_research.data.schema.EventType`). What counts, from which time
origin and for how long, is declared once in a :class:`RelapseDefinition`.

Conventions (all times in whole days)
-------------------------------------
Time origin
    ``"admission"`` (default): the episode's ``admit_date`` is day 0.
    ``"discharge"``: the ``discharge_date`` is day 0; ongoing episodes (no
    discharge) have no origin and are excluded.
    ``"landmark"``: day ``landmark_days`` after admission is day 0; episodes
    with a relapse, death or end of observation on or before it are excluded
    (they are not at risk at the landmark).
Qualifying events
    An event of a type in ``sources`` (a ``uds`` only when ``result`` is
    ``positive``) on date ``x`` qualifies for the episode admitted on ``a``
    when ``x - a > blanking_days`` (intake positives on days
    ``0 .. blanking_days`` are ignored: the blanking window is ``(0,
    blanking_days]`` as in :mod:`iop_research.data.synth`), ``x`` is strictly
    after the origin and not after the end of follow-up. With
    ``episodes_as_readmissions`` (default), the admission of each *later*
    episode of the patient is a ``readmission`` event too.
    With origin ``"discharge"`` only post-discharge events count (in-treatment
    use does not exclude an episode); with origin ``"landmark"`` a qualifying
    event on or before the landmark excludes it.
End of follow-up
    The patient's ``observation_end``, capped at ``origin + max_followup_days``
    when given. Follow-up is *not* cut at the next episode's admission: a
    readmission ends follow-up only as a relapse (when ``readmission`` is in
    ``sources``). Death (first ``death`` event, or a discharge with reason
    ``death``) ends follow-up: as a competing event (status 2) when ``"death"``
    is in ``competing``, else as censoring.
Ties
    A relapse and a death on the same day count as relapse; two sources on the
    same day are reported in the order of ``sources``.
Output coding (as R's ``Surv(time, event)`` and ``cmprsk::cuminc(ftime, fstatus)``)
    ``event`` 1 relapse / 0 otherwise; ``status`` 0 censored, 1 relapse,
    2 death (competing); ``event_type`` ``"relapse"``, ``"death"``,
    ``"censored"``; ``event_source`` the relapse source, ``"death"``, or the
    reason of censoring (``"observation_end"``, ``"max_followup"``,
    ``"death"`` when death is not competing). ``time >= 1`` always.

References
----------
.. [1] Therneau TM, Grambsch PM. *Modeling Survival Data: Extending the Cox
   Model*. Springer 2000 (counting process, Andersen-Gill, ch. 8).
.. [2] Fine JP, Gray RJ. A proportional hazards model for the subdistribution
   of a competing risk. JASA 1999;94:496-509.
.. [3] Andersen PK, Gill RD. Cox's regression model for counting processes.
   Ann Stat 1982;10:1100-20.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids
from iop_research.data.schema import Col, DischargeReason, EventType, UdsResult
from iop_research.derive.days import date_from_day, day_number
from iop_research.derive.repeated import _first_runs

__all__ = [
    "RelapseDefinition",
    "relapse_outcomes",
    "recurrent_relapses",
    "retention_outcomes",
    "OUTCOME_COLUMNS",
    "RECURRENT_COLUMNS",
    "RETENTION_COLUMNS",
]

#: Columns of :func:`relapse_outcomes`.
OUTCOME_COLUMNS = (
    Col.episode_id,
    Col.patient_id,
    "origin_date",
    "end_date",
    "followup_days",
    "time",
    "event",
    "event_type",
    "event_source",
    "status",
)
#: Columns of :func:`recurrent_relapses`.
RECURRENT_COLUMNS = (
    Col.patient_id,
    Col.episode_id,
    "interval",
    "start",
    "stop",
    "event",
    "event_source",
    "status",
)
#: Columns of :func:`retention_outcomes`.
RETENTION_COLUMNS = (Col.episode_id, Col.patient_id, "time", "event", "event_type", "status", Col.discharge_reason)

_RELAPSE_SOURCES = (
    EventType.uds.value,
    EventType.self_report_use.value,
    EventType.overdose.value,
    EventType.ed_visit.value,
    EventType.readmission.value,
)
#: Day number used for "never" (no discharge, no death, no event): far beyond any data.
_NEVER = 10**9


@dataclass(frozen=True)
class RelapseDefinition:
    """What counts as relapse, from which origin, for how long (see module conventions).

    Parameters
    ----------
    sources : tuple of str, default ("uds", "self_report_use", "overdose", "readmission")
        Event types that count as relapse (``uds`` only when positive);
        ``"ed_visit"`` may be added.
    blanking_days : int, default 7
        Events on days ``0 .. blanking_days`` after admission are ignored
        (intake positives); the first qualifying day is ``blanking_days + 1``.
    origin : {"admission", "discharge", "landmark"}, default "admission"
    landmark_days : int, optional
        Day after admission that is the origin when ``origin="landmark"`` (required then).
    max_followup_days : int, optional
        Administrative censoring this many days after the origin.
    competing : tuple of str, default ("death",)
        Events that end follow-up as a competing event; ``()`` makes death censor.
    episodes_as_readmissions : bool, default True
        Count the admission of a later episode of the patient as a readmission.
    uds_rule : {"any_positive", "consecutive_weeks"}, default "any_positive"
        How urine screens make a relapse (when ``"uds"`` is a source). ``"any_positive"``: the
        first positive screen after the blanking days. ``"consecutive_weeks"``: the trial-style
        definition (X:BOT, Lee et al. 2018: four consecutive weeks of use): weeks are counted from
        admission (week k = days 7k..7k+6), built from the screens after the blanking days; a
        week is positive when any screen in it is positive (or, with ``uds_missed="positive"``,
        recorded ``missed``) and negative when its screens are all negative; a week without a
        result breaks a run. Relapse is dated at the first positive screen of the first week of
        the first run of ``uds_weeks`` positive weeks. The other sources are unchanged (the first
        of any source is the relapse). Only :func:`relapse_outcomes` accepts it.
    uds_weeks : int, default 4
        Length of the run for ``uds_rule="consecutive_weeks"``.
    uds_missed : {"positive", "missing"}, default "positive"
        With ``uds_rule="consecutive_weeks"``: a screen recorded ``missed`` makes its week
        positive (the trial rule), or is no result (a week with only missed screens breaks a run).
    """

    sources: tuple[str, ...] = (
        EventType.uds.value,
        EventType.self_report_use.value,
        EventType.overdose.value,
        EventType.readmission.value,
    )
    blanking_days: int = 7
    origin: str = "admission"
    landmark_days: int | None = None
    max_followup_days: int | None = None
    competing: tuple[str, ...] = (EventType.death.value,)
    episodes_as_readmissions: bool = True
    uds_rule: str = "any_positive"
    uds_weeks: int = 4
    uds_missed: str = "positive"

    def __post_init__(self):
        if self.uds_rule not in ("any_positive", "consecutive_weeks"):
            raise ModelSpecificationError(
                f"RelapseDefinition: uds_rule={self.uds_rule!r}; use 'any_positive' (first positive screen) or "
                "'consecutive_weeks' (a run of uds_weeks positive weeks, trial style)."
            )
        if isinstance(self.uds_weeks, bool) or not isinstance(self.uds_weeks, (int, np.integer)) or self.uds_weeks < 1:
            raise ModelSpecificationError(
                f"RelapseDefinition: uds_weeks={self.uds_weeks!r} must be a whole number of weeks >= 1 (e.g. 4)."
            )
        if self.uds_missed not in ("positive", "missing"):
            raise ModelSpecificationError(
                f"RelapseDefinition: uds_missed={self.uds_missed!r}; use 'positive' (a missed screen counts as "
                "use, the trial rule) or 'missing' (no result)."
            )
        bad = [s for s in self.sources if s not in _RELAPSE_SOURCES]
        if bad or not self.sources:
            raise ModelSpecificationError(
                f"RelapseDefinition: sources {list(self.sources)} must be a non-empty subset of "
                f"{list(_RELAPSE_SOURCES)} (unknown: {bad})."
            )
        if len(set(self.sources)) != len(self.sources):
            raise ModelSpecificationError("RelapseDefinition: sources contain duplicates.")
        if self.origin not in ("admission", "discharge", "landmark"):
            raise ModelSpecificationError(
                f"RelapseDefinition: origin={self.origin!r}; use 'admission', 'discharge' or 'landmark'."
            )
        if self.origin == "landmark" and (self.landmark_days is None or self.landmark_days < 0):
            raise ModelSpecificationError(
                "RelapseDefinition: origin='landmark' needs landmark_days >= 0 (e.g. landmark_days=30)."
            )
        if self.blanking_days < 0:
            raise ModelSpecificationError(f"RelapseDefinition: blanking_days={self.blanking_days} must be >= 0.")
        if self.max_followup_days is not None and self.max_followup_days <= 0:
            raise ModelSpecificationError(
                f"RelapseDefinition: max_followup_days={self.max_followup_days} must be positive or None."
            )
        if any(c != EventType.death.value for c in self.competing):
            raise ModelSpecificationError(
                f"RelapseDefinition: competing={list(self.competing)}; only ('death',) or () is supported."
            )
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "competing", tuple(self.competing))


# ----------------------------------------------------------------------------- helpers
def _require(frame: pd.DataFrame, cols: Sequence[str], name: str, fix: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{name} lacks column(s) {missing} (has: {format_ids(frame.columns, 15)}). {fix}"
        )


def _get_episodes(data, episodes, engine) -> pd.DataFrame:
    """Episodes given, else ``episodes.build_episodes(data)`` (recorded admissions, or sessions)."""
    if episodes is not None:
        eps = episodes.copy()
    else:
        from iop_research.derive.episodes import build_episodes

        eps = build_episodes(data, engine=engine)
    _require(eps, [Col.episode_id, Col.patient_id, Col.admit_date, Col.discharge_date], "episodes",
             "Pass episodes from iop_research.derive.episodes.build_episodes (or admissions).")
    dup = eps[Col.episode_id].duplicated()
    if dup.any():
        raise DataValidationError(
            f"episodes: {int(dup.sum())} duplicated episode_id values "
            f"(episode_id: {format_ids(eps.loc[dup, Col.episode_id])}). Episode ids must be unique."
        )
    eps[Col.admit_date] = pd.to_datetime(eps[Col.admit_date])
    eps[Col.discharge_date] = pd.to_datetime(eps[Col.discharge_date])
    bad = eps[Col.discharge_date] < eps[Col.admit_date]
    if bad.any():
        raise DataValidationError(
            f"episodes: {int(bad.sum())} episodes have discharge_date before admit_date "
            f"(episode_id: {format_ids(eps.loc[bad, Col.episode_id])}). Fix the source rows."
        )
    return eps.reset_index(drop=True)


def _events_days(data, pat_index: pd.Index) -> pd.DataFrame:
    """Events as integer days with integer patient codes (``pid``, position in ``pat_index``).

    Events of patients without episodes cannot join any episode and are left out here.
    """
    ev = data.events
    cols = ["pid", "day", Col.event_type, Col.result]
    if ev is None or len(ev) == 0:
        return pd.DataFrame({"pid": np.array([], "int64"), "day": np.array([], "int64"),
                             Col.event_type: np.array([], str), Col.result: np.array([], str)})[cols]
    _require(ev, [Col.patient_id, Col.event_date, Col.event_type], "events",
             "Pass a table that follows the data contract (iop_research.data.schema).")
    if ev[Col.event_date].isna().any():
        raise DataValidationError(
            f"events: {int(ev[Col.event_date].isna().sum())} rows have no event_date "
            f"(patient_id: {format_ids(ev.loc[ev[Col.event_date].isna(), Col.patient_id])}). "
            "Drop or fix them before building outcomes."
        )
    out = pd.DataFrame({
        "pid": pat_index.get_indexer(ev[Col.patient_id]).astype("int64"),
        "day": day_number(ev[Col.event_date].to_numpy(), missing=-_NEVER),
        Col.event_type: ev[Col.event_type].astype(str).to_numpy(),
        Col.result: (ev[Col.result].astype(object).where(ev[Col.result].notna(), "")
                     .astype(str).to_numpy() if Col.result in ev.columns else ""),
    })
    return out.loc[out["pid"] >= 0, cols].reset_index(drop=True)


def _qualifying_expr(ev_t, definition: RelapseDefinition):
    """Ibis: qualifying relapse events with ``key = day * 16 + source priority``."""
    import ibis

    conds = []
    for i, src in enumerate(definition.sources):
        if src == EventType.uds.value:
            cond = (ev_t.event_type == src) & (ev_t.result == UdsResult.positive.value)
        else:
            cond = ev_t.event_type == src
        conds.append((cond, i))
    prio = ibis.cases(*conds, else_=None)
    q = ev_t.mutate(prio=prio).filter(lambda t: t.prio.notnull())
    return q.select(q_pid=q.pid, ev_day=q.day, key=q.day * 16 + q.prio.cast("int64"))


def _patient_index(eps: pd.DataFrame) -> pd.Index:
    """Patients of the episodes, in first-appearance order (codes for the engine)."""
    return pd.Index(pd.unique(eps[Col.patient_id]))


def _episode_days(eps: pd.DataFrame, data, definition: RelapseDefinition) -> pd.DataFrame:
    """Per episode integer days: admit, discharge, origin, observation end, end of follow-up."""
    obs = data.observation
    _require(obs, [Col.patient_id, Col.observation_end], "observation",
             "Pass a table that follows the data contract (iop_research.data.schema).")
    obs = obs[[Col.patient_id, Col.observation_end]].drop_duplicates(Col.patient_id)
    out = pd.DataFrame({Col.episode_id: eps[Col.episode_id].to_numpy(),
                        Col.patient_id: eps[Col.patient_id].to_numpy()})
    # integer codes for the engine: eid = row position, pid = position in the patient index
    out["eid"] = np.arange(len(out), dtype="int64")
    out["pid"] = _patient_index(eps).get_indexer(out[Col.patient_id]).astype("int64")
    out["admit_day"] = day_number(eps[Col.admit_date].to_numpy(), missing=_NEVER)
    out["discharge_day"] = day_number(eps[Col.discharge_date].to_numpy(), missing=_NEVER)  # _NEVER when ongoing
    obs_end = out[[Col.patient_id]].merge(obs, on=Col.patient_id, how="left")[Col.observation_end]
    out["obs_end_day"] = day_number(obs_end.to_numpy())  # NaN when the patient has none
    if definition.origin == "admission":
        out["origin_day"] = out["admit_day"]
    elif definition.origin == "discharge":
        out["origin_day"] = out["discharge_day"]
    else:
        out["origin_day"] = out["admit_day"] + int(definition.landmark_days)
    cap = out["origin_day"] + (definition.max_followup_days if definition.max_followup_days else _NEVER)
    obs_i = out["obs_end_day"].fillna(-_NEVER).astype("int64")
    out["end_day"] = np.minimum(obs_i, cap)
    out["end_reason"] = np.where(obs_i <= cap, "observation_end", "max_followup")
    reason_death = (eps[Col.discharge_reason].astype(object).eq(DischargeReason.death.value).to_numpy()
                    if Col.discharge_reason in eps.columns else np.zeros(len(eps), bool))
    out["discharge_death_day"] = np.where(reason_death & (out["discharge_day"] < _NEVER),
                                          out["discharge_day"], _NEVER)
    return out


def _consecutive_week_events(ev: pd.DataFrame, ep_days: pd.DataFrame, definition: RelapseDefinition) -> pd.DataFrame:
    """``ev`` with its ``uds`` rows replaced by one positive ``uds`` row per episode whose screens make a run of
    ``definition.uds_weeks`` positive weeks (``RelapseDefinition.uds_rule="consecutive_weeks"``), dated at the first
    positive screen of the run's first week."""
    is_uds = ev[Col.event_type].to_numpy() == EventType.uds.value
    other, uds = ev.loc[~is_uds], ev.loc[is_uds]
    m = ep_days[["eid", "pid", "admit_day", "end_day"]].merge(uds, on="pid")
    off = (m["day"] - m["admit_day"]).to_numpy()
    m = m.loc[(off > definition.blanking_days) & (m["day"] <= m["end_day"]).to_numpy()]
    res = m[Col.result].to_numpy()
    missed_pos = definition.uds_missed == "positive"
    pos = (res == UdsResult.positive.value) | (missed_pos & (res == UdsResult.missed.value))
    has = pos | (res == UdsResult.negative.value)
    m = m.assign(week=(m["day"] - m["admit_day"]) // 7, pos=pos, pos_day=np.where(pos, m["day"], _NEVER)).loc[has]
    w = (m.groupby(["eid", "week"], sort=True)
         .agg(pid=("pid", "first"), pos=("pos", "max"), pos_day=("pos_day", "min")).reset_index())
    rows = _first_runs(w["eid"].to_numpy(), w["week"].to_numpy(), w["pos"].to_numpy(dtype=bool),
                       int(definition.uds_weeks)).to_numpy()
    made = pd.DataFrame({"pid": w["pid"].to_numpy(dtype="int64")[rows], "day": w["pos_day"].to_numpy(dtype="int64")[rows],
                         Col.event_type: EventType.uds.value, Col.result: UdsResult.positive.value})
    return pd.concat([other, made], ignore_index=True)


def _first_events(ep_days: pd.DataFrame, data, definition: RelapseDefinition, engine) -> pd.DataFrame:
    """Ibis join of episodes to events: first qualifying relapse (any / after origin) and death."""
    from iop_research.derive.engine import as_table, collect, get_backend

    be = get_backend(engine)
    ev = _events_days(data, pd.Index(pd.unique(ep_days[Col.patient_id])))
    if definition.uds_rule == "consecutive_weeks" and EventType.uds.value in definition.sources:
        ev = _consecutive_week_events(ev, ep_days, definition)
    if definition.episodes_as_readmissions and EventType.readmission.value in definition.sources:
        adm = pd.DataFrame({"pid": ep_days["pid"].to_numpy(), "day": ep_days["admit_day"].to_numpy(),
                            Col.event_type: EventType.readmission.value, Col.result: ""})
        ev = pd.concat([ev, adm], ignore_index=True)
    ev_t = as_table(be, ev, "events")
    ep_t = as_table(be, ep_days[["eid", "pid", "admit_day", "origin_day", "end_day"]], "episodes")
    q = _qualifying_expr(ev_t, definition)
    j = ep_t.join(q, ep_t.pid == q.q_pid)
    j = j.filter((j.ev_day - j.admit_day > definition.blanking_days) & (j.ev_day <= j.end_day))
    first = j.group_by("eid").aggregate(
        first_any=j.key.min(), first_post=j.key.min(where=j.ev_day > j.origin_day))
    deaths = (ev_t.filter(ev_t.event_type == EventType.death.value)
              .group_by("pid").aggregate(death_day=lambda t: t.day.min()))
    first_df = collect(first)
    death_df = collect(deaths)
    out = ep_days[["eid", "pid"]].merge(first_df, on="eid", how="left")
    out = out.merge(death_df, on="pid", how="left")
    return out


def _compute_outcomes(eps: pd.DataFrame, data, definition: RelapseDefinition, engine):
    """Outcome rows for every episode plus a per-row exclusion reason ('' = kept)."""
    days = _episode_days(eps, data, definition)
    first = _first_events(days, data, definition, engine)
    first = first.set_index("eid").reindex(days["eid"])
    key_any = first["first_any"].to_numpy(dtype="float64")
    key_post = first["first_post"].to_numpy(dtype="float64")
    any_day = np.where(np.isnan(key_any), _NEVER, np.floor_divide(np.nan_to_num(key_any), 16)).astype("int64")
    post_day = np.where(np.isnan(key_post), _NEVER, np.floor_divide(np.nan_to_num(key_post), 16)).astype("int64")
    post_src = np.where(np.isnan(key_post), -1, np.mod(np.nan_to_num(key_post), 16)).astype("int64")
    death_ev = first["death_day"].to_numpy(dtype="float64")
    death = np.minimum(np.where(np.isnan(death_ev), _NEVER, death_ev).astype("int64"),
                       days["discharge_death_day"].to_numpy())
    origin = days["origin_day"].to_numpy()
    end = days["end_day"].to_numpy()

    reason = np.full(len(days), "", dtype=object)

    def mark(cond, text):
        sel = (reason == "") & cond
        reason[sel] = text

    mark(days["obs_end_day"].isna().to_numpy(), "patient has no observation_end")
    if definition.origin == "discharge":
        mark(days["discharge_day"].to_numpy() >= _NEVER, "origin discharge: episode ongoing (no discharge)")
    if definition.origin == "landmark":
        mark(any_day <= origin, "relapse on or before the landmark")
    mark(death <= origin, "died on or before the origin")
    mark(end <= origin, "no follow-up after the origin (observation ends on or before it)")

    is_relapse = (post_day <= end) & (post_day <= death)
    is_death = ~is_relapse & (death <= end)
    stop = np.where(is_relapse, post_day, np.where(is_death, death, end))
    death_competes = EventType.death.value in definition.competing
    srcs = np.array(list(definition.sources) + [""], dtype=object)
    event_type = np.where(is_relapse, "relapse",
                          np.where(is_death & death_competes, "death", "censored")).astype(object)
    event_source = np.where(is_relapse, srcs[post_src],
                            np.where(is_death, "death", days["end_reason"].to_numpy())).astype(object)
    status = np.where(is_relapse, 1, np.where(is_death & death_competes, 2, 0)).astype("int64")
    out = pd.DataFrame({
        Col.episode_id: days[Col.episode_id].to_numpy(),
        Col.patient_id: days[Col.patient_id].to_numpy(),
        "origin_date": date_from_day(np.where(origin < _NEVER, origin, np.nan)).to_numpy(),
        "end_date": date_from_day(np.where(reason == "", stop, np.nan)).to_numpy(),
        "followup_days": (end - origin).astype("int64"),
        "time": (stop - origin).astype("int64"),
        "event": is_relapse.astype("int64"),
        "event_type": event_type,
        "event_source": event_source,
        "status": status,
    })
    return out, reason, days


def _record_exclusions(eps: pd.DataFrame, reason: np.ndarray, attrition, step_prefix: str) -> None:
    """Record excluded episodes by reason (in a fixed order) into ``attrition``."""
    if attrition is None:
        return
    cur = eps
    if not attrition.has_table("episodes"):
        attrition.start(cur, table="episodes")
    r = pd.Series(reason, index=eps.index)
    for text in [t for t in pd.unique(r) if t != ""]:
        cur = attrition.exclude(cur, r.loc[cur.index].eq(text), step=step_prefix, reason=text,
                                table="episodes")


def relapse_outcomes(data, *, definition: RelapseDefinition | None = None,
                     episodes: pd.DataFrame | None = None, engine: Any = None,
                     attrition=None) -> pd.DataFrame:
    """Time from the origin to the first relapse, per episode, with death as a competing event.

    Parameters
    ----------
    data : IOPData
        Needs ``events`` and ``observation`` (and ``admissions`` when
        ``episodes`` is not given).
    definition : RelapseDefinition, optional
        Default ``RelapseDefinition()``: positive UDS, self-reported use,
        overdose or readmission after 7 blanking days, origin admission,
        follow-up to the observation end, death competing.
    episodes : pandas.DataFrame, optional
        One row per episode (``episode_id, patient_id, admit_date,
        discharge_date``, optional ``discharge_reason``). Default:
        ``iop_research.derive.episodes.build_episodes(data)`` when that module is
        available, else the recorded admissions.
    engine : None, "duckdb", "spark" or an Ibis backend
        Where the join of events to episodes runs (default in-process DuckDB).
    attrition : iop_research.derive.cohorts.Attrition, optional
        Receives one record per exclusion reason (chain ``"episodes"``).

    Returns
    -------
    pandas.DataFrame
        One row per kept episode, input order: ``episode_id, patient_id,
        origin_date, end_date`` (date of the event or censoring),
        ``followup_days`` (potential follow-up: origin to end of observation
        or cap), ``time`` (days, >= 1), ``event`` (1 relapse), ``event_type``,
        ``event_source``, ``status`` (0 censored, 1 relapse, 2 death).

    Raises
    ------
    DataValidationError
        If a table lacks contract columns, episode ids repeat, or a discharge
        precedes its admission.

    Notes
    -----
    R equivalent: ``Surv(time, event)`` for the cause-specific analysis and
    ``cmprsk::cuminc(time, status)`` / ``survfit(Surv(time, factor(status)) ~ 1)``
    for cumulative incidence with death competing. Episodes without follow-up
    after the origin are excluded, never silently: pass ``attrition`` to get
    the counts with their reasons.

    References
    ----------
    .. [1] Fine JP, Gray RJ. JASA 1999;94:496-509 (competing risks coding).
    .. [2] Therneau TM, Grambsch PM. Modeling Survival Data. Springer 2000.

    Examples
    --------
    >>> import pandas as pd
    >>> from iop_research.data.io import IOPData
    >>> from iop_research.derive.cohorts import Attrition
    >>> ts = pd.to_datetime
    >>> adm = pd.DataFrame({"episode_id": ["E1", "E2"], "patient_id": ["P1", "P2"],
    ...     "admit_date": ts(["2021-01-01", "2021-01-01"]), "discharge_date": ts(["2021-02-15", None]),
    ...     "discharge_reason": ["completed", None]})
    >>> ev = pd.DataFrame({"patient_id": ["P1", "P1", "P2"],
    ...     "event_date": ts(["2021-01-03", "2021-03-01", "2021-04-11"]),
    ...     "event_type": ["uds", "uds", "death"], "result": ["positive", "positive", None],
    ...     "substance": [None, None, None]})
    >>> obs = pd.DataFrame({"patient_id": ["P1", "P2"], "observation_end": ts(["2021-12-31"] * 2)})
    >>> data = IOPData(pd.DataFrame(), adm, pd.DataFrame(), pd.DataFrame(), ev, obs)
    >>> out = relapse_outcomes(data, episodes=adm)
    >>> out[["episode_id", "time", "event", "event_type", "event_source", "status"]]
      episode_id  time  event event_type event_source  status
    0         E1    59      1    relapse          uds       1
    1         E2   100      0      death        death       2
    >>> att = Attrition()
    >>> post = relapse_outcomes(data, episodes=adm, attrition=att,
    ...                         definition=RelapseDefinition(origin="discharge"))
    >>> post[["episode_id", "time"]].to_dict("records")
    [{'episode_id': 'E1', 'time': 14}]
    >>> row = att.to_frame().iloc[1]
    >>> row["reason"], int(row["rows_removed"])
    ('origin discharge: episode ongoing (no discharge)', 1)
    """
    definition = definition if definition is not None else RelapseDefinition()
    eps = _get_episodes(data, episodes, engine)
    out, reason, _ = _compute_outcomes(eps, data, definition, engine)
    _record_exclusions(eps, reason, attrition, step_prefix=f"relapse_outcomes (origin {definition.origin})")
    keep = reason == ""
    return out.loc[keep].reset_index(drop=True)


def _blocks(keys: np.ndarray) -> dict:
    """``{key: (first, end)}`` row slices of an array whose equal keys are contiguous."""
    if len(keys) == 0:
        return {}
    starts = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1]
    ends = np.r_[starts[1:], len(keys)]
    return dict(zip(keys[starts].tolist(), zip(starts.tolist(), ends.tolist())))


def recurrent_relapses(data, *, definition: RelapseDefinition | None = None,
                       episodes: pd.DataFrame | None = None, min_gap_days: int | None = None,
                       engine: Any = None) -> pd.DataFrame:
    """Counting-process rows for recurrent relapses (Andersen-Gill), one block per patient.

    Risk-interval convention: time is days since the patient's *first*
    episode admission. The patient is at risk from day 0. A qualifying event
    (see :class:`RelapseDefinition`; blanking counted from the most recent
    admission on or before the event) ends an interval with ``event = 1``.
    After a relapse on day ``r`` the patient is *not* at risk until re-entry:
    the first admission on or after ``r`` (which is ``r`` itself when the
    relapse is a readmission), or ``r + min_gap_days`` when that comes first
    (wash-out; ``None`` = re-entry only by admission). Without re-entry the
    follow-up ends at ``r``. Follow-up ends at the observation end (capped at
    ``max_followup_days`` after the first admission) or at death (``status``
    2 on the last row when death competes). Qualifying events while not at
    risk are ignored.

    Parameters
    ----------
    data : IOPData
    definition : RelapseDefinition, optional
        Only ``sources``, ``blanking_days``, ``max_followup_days``,
        ``competing``, ``episodes_as_readmissions`` are used (origin is always
        the first admission).
    episodes : pandas.DataFrame, optional
        As in :func:`relapse_outcomes`.
    min_gap_days : int, optional
        Wash-out after a relapse before the patient is at risk again.
    engine : None, "duckdb", "spark" or an Ibis backend

    Returns
    -------
    pandas.DataFrame
        ``patient_id, episode_id`` (latest episode admitted on or before the
        interval start), ``interval`` (1, 2, ... per patient), ``start, stop``
        (days, ``(start, stop]``), ``event`` (1 relapse), ``event_source``,
        ``status`` (0, 1 relapse, 2 death). Fit with R's
        ``coxph(Surv(start, stop, event) ~ x + cluster(patient_id))``.
        Patients without follow-up (no observation end, death or end on day
        0) give no rows.

    References
    ----------
    .. [1] Andersen PK, Gill RD. Ann Stat 1982;10:1100-20.
    .. [2] Amorim LD, Cai J. Modelling recurrent events: a tutorial for
       analysis in epidemiology. Int J Epidemiol 2015;44:324-33.

    Examples
    --------
    >>> import pandas as pd
    >>> from iop_research.data.io import IOPData
    >>> ts = pd.to_datetime
    >>> adm = pd.DataFrame({"episode_id": ["E1", "E2"], "patient_id": ["P1", "P1"],
    ...     "admit_date": ts(["2021-01-01", "2021-03-01"]), "discharge_date": ts(["2021-02-01", "2021-04-01"]),
    ...     "discharge_reason": ["dropped_out", "completed"]})
    >>> ev = pd.DataFrame({"patient_id": ["P1"], "event_date": ts(["2021-05-01"]),
    ...     "event_type": ["self_report_use"], "result": [None], "substance": [None]})
    >>> obs = pd.DataFrame({"patient_id": ["P1"], "observation_end": ts(["2021-06-30"])})
    >>> data = IOPData(pd.DataFrame(), adm, pd.DataFrame(), pd.DataFrame(), ev, obs)
    >>> recurrent_relapses(data, episodes=adm, min_gap_days=14)[["episode_id", "start", "stop", "event", "event_source"]]
      episode_id  start  stop  event     event_source
    0         E1      0    59      1      readmission
    1         E2     59   120      1  self_report_use
    2         E2    134   180      0  observation_end
    """
    definition = definition if definition is not None else RelapseDefinition()
    if definition.uds_rule != "any_positive":
        raise ModelSpecificationError(
            "recurrent_relapses: RelapseDefinition(uds_rule='consecutive_weeks') defines a first relapse only (a run "
            "of positive weeks from admission); recurrent relapses count positive screens. Use uds_rule='any_positive' "
            "here, or relapse_outcomes for the trial-style first relapse."
        )
    if min_gap_days is not None and min_gap_days < 0:
        raise ModelSpecificationError(f"recurrent_relapses: min_gap_days={min_gap_days} must be >= 0 or None.")
    eps = _get_episodes(data, episodes, engine)
    adm_def = RelapseDefinition(sources=definition.sources, blanking_days=definition.blanking_days,
                                max_followup_days=definition.max_followup_days,
                                competing=definition.competing,
                                episodes_as_readmissions=definition.episodes_as_readmissions)
    days = _episode_days(eps, data, adm_def)
    days = days.sort_values([Col.patient_id, "admit_day", Col.episode_id], kind="mergesort")
    # patient level: first admission, end of follow-up, death
    first_adm = days.groupby(Col.patient_id, sort=False).first()
    pat = pd.DataFrame({Col.patient_id: first_adm.index, "origin_day": first_adm["admit_day"].to_numpy(),
                        "obs_end_day": first_adm["obs_end_day"].to_numpy()})
    cap = pat["origin_day"] + (definition.max_followup_days or _NEVER)
    obs_i = pat["obs_end_day"].fillna(-_NEVER).astype("int64")
    pat["end_day"] = np.minimum(obs_i, cap)
    pat["end_reason"] = np.where(obs_i <= cap, "observation_end", "max_followup")

    # qualifying events joined to the latest admission on or before them (Ibis)
    from iop_research.derive.engine import as_table, collect, get_backend

    be = get_backend(engine)
    pat_index = _patient_index(eps)
    ev = _events_days(data, pat_index)
    if definition.episodes_as_readmissions and EventType.readmission.value in definition.sources:
        ev = pd.concat([ev, pd.DataFrame({"pid": days["pid"].to_numpy(), "day": days["admit_day"].to_numpy(),
                                          Col.event_type: EventType.readmission.value, Col.result: ""})],
                       ignore_index=True)
    ev_t = as_table(be, ev, "events")
    ep_t = as_table(be, days[["eid", "pid", "admit_day"]], "episodes")
    q = _qualifying_expr(ev_t, definition)
    # latest admission on or before the event day; a readmission belongs to the previous one
    same_day_ok = (q.key % 16) != (definition.sources.index(EventType.readmission.value)
                                   if EventType.readmission.value in definition.sources else -1)
    j = ep_t.join(q, (ep_t.pid == q.q_pid)
                  & ((q.ev_day > ep_t.admit_day) | ((q.ev_day == ep_t.admit_day) & same_day_ok)))
    latest = j.group_by([j.q_pid, j.ev_day, j.key]).aggregate(last_admit=j.admit_day.max())
    latest = latest.filter(latest.ev_day - latest.last_admit > definition.blanking_days)
    qual = collect(latest.select(pid=latest.q_pid, day=latest.ev_day, key=latest.key))
    deaths = collect(ev_t.filter(ev_t.event_type == EventType.death.value)
                     .group_by("pid").aggregate(death_day=lambda t: t.day.min()))
    qual[Col.patient_id] = pat_index[qual["pid"].to_numpy()]
    deaths[Col.patient_id] = pat_index[deaths["pid"].to_numpy()]

    qual = qual.sort_values([Col.patient_id, "key"], kind="mergesort")
    death_map = dict(zip(deaths[Col.patient_id], deaths["death_day"].astype("int64")))
    dd = days.loc[days["discharge_death_day"] < _NEVER].groupby(Col.patient_id)["discharge_death_day"].min()
    for pid, d in dd.items():
        death_map[pid] = min(int(d), death_map.get(pid, _NEVER))
    # per-patient blocks as slices of sorted arrays (a groupby dict of 100,000 small frames was most of the time)
    q_pid, q_day, q_src = qual[Col.patient_id].to_numpy(), qual["day"].to_numpy(), qual["key"].to_numpy() % 16
    q_by_pat = _blocks(q_pid)
    a_pid, a_days, a_ids = days[Col.patient_id].to_numpy(), days["admit_day"].to_numpy(), days[Col.episode_id].to_numpy()
    adm_by_pat = _blocks(a_pid)
    no_events = np.array([], dtype="int64")
    srcs = list(definition.sources)
    death_competes = EventType.death.value in definition.competing
    rows = []
    for rec in pat.itertuples(index=False):
        pid, o = rec.patient_id, int(rec.origin_day)
        if np.isnan(rec.obs_end_day):
            continue
        death = death_map.get(pid, _NEVER)
        end = int(min(rec.end_day, death))
        end_src = "death" if death <= rec.end_day else rec.end_reason
        if end <= o:
            continue
        lo, hi = adm_by_pat[pid]
        adm_days, adm_ids = a_days[lo:hi], a_ids[lo:hi]
        g = q_by_pat.get(pid)
        ev_days = q_day[g[0]:g[1]] if g is not None else no_events
        ev_src = q_src[g[0]:g[1]] if g is not None else no_events
        start, k, n = o, 0, 0
        while start is not None and start < end:
            # first qualifying event strictly after start (and not after end)
            while k < len(ev_days) and ev_days[k] <= start:
                k += 1
            epi = adm_ids[np.searchsorted(adm_days, start, side="right") - 1]
            n += 1
            if k < len(ev_days) and ev_days[k] <= end:
                r = int(ev_days[k])
                rows.append((pid, epi, n, start - o, r - o, 1, srcs[int(ev_src[k])], 1))
                nxt = adm_days[adm_days >= r]
                cands = ([int(nxt[0])] if len(nxt) else []) + ([r + min_gap_days] if min_gap_days is not None else [])
                start = min(cands) if cands else None
            else:
                is_d = end_src == "death"
                rows.append((pid, epi, n, start - o, end - o, 0,
                             end_src, 2 if (is_d and death_competes) else 0))
                start = None
    out = pd.DataFrame(rows, columns=list(RECURRENT_COLUMNS))
    for c in ("interval", "start", "stop", "event", "status"):
        out[c] = out[c].astype("int64")
    return out


def retention_outcomes(episodes: pd.DataFrame) -> pd.DataFrame:
    """Time in treatment (length of stay) with dropout, completion and other discharges competing.

    Coding (as ``cmprsk::cuminc(ftime = time, fstatus = status)``): ``status``
    1 dropped out (left against advice; the event of interest, ``event = 1``),
    2 completed, 3 other discharge (terminated, transferred, incarcerated,
    died, other), 0 still enrolled (censored at the episode's ``los_days``).

    Parameters
    ----------
    episodes : pandas.DataFrame
        ``episode_id, patient_id, discharge_reason`` and ``los_days`` (whole
        days, >= 1; for ongoing episodes, days enrolled up to the observation
        end) as from :func:`iop_research.derive.episodes.build_episodes`.

    Returns
    -------
    pandas.DataFrame
        ``episode_id, patient_id, time`` (= ``los_days``), ``event``,
        ``event_type`` (``"dropped_out"``, ``"completed"``,
        ``"other_discharge"``, ``"ongoing"``), ``status``, ``discharge_reason``.

    Raises
    ------
    DataValidationError
        If columns are missing, ``los_days`` is missing or below 1, or a
        discharge reason is outside the vocabulary.

    References
    ----------
    .. [1] Fine JP, Gray RJ. JASA 1999;94:496-509.
    .. [2] SAMHSA. Treatment Episode Data Set - Discharges (TEDS-D), REASON codes.

    Examples
    --------
    >>> import pandas as pd
    >>> eps = pd.DataFrame({"episode_id": ["E1", "E2", "E3", "E4"], "patient_id": ["P1", "P2", "P3", "P4"],
    ...     "discharge_reason": ["dropped_out", "completed", "transferred", None], "los_days": [12, 60, 30, 45]})
    >>> retention_outcomes(eps)[["episode_id", "time", "event", "event_type", "status"]]
      episode_id  time  event       event_type  status
    0         E1    12      1      dropped_out       1
    1         E2    60      0        completed       2
    2         E3    30      0  other_discharge       3
    3         E4    45      0          ongoing       0
    """
    _require(episodes, [Col.episode_id, Col.patient_id, Col.discharge_reason, "los_days"], "episodes",
             "Pass episodes from iop_research.derive.episodes.build_episodes.")
    los = episodes["los_days"]
    bad = los.isna() | (los < 1)
    if bad.any():
        raise DataValidationError(
            f"episodes: {int(bad.sum())} rows have los_days missing or below 1 "
            f"(episode_id: {format_ids(episodes.loc[bad, Col.episode_id])}). Length of stay is whole days >= 1."
        )
    reason = episodes[Col.discharge_reason].astype(object)
    unknown = reason.notna() & ~reason.isin(DischargeReason.values())
    if unknown.any():
        raise DataValidationError(
            f"episodes: discharge_reason has values outside {DischargeReason.values()} "
            f"(episode_id: {format_ids(episodes.loc[unknown, Col.episode_id])})."
        )
    status = np.select([reason.isna(), reason.eq(DischargeReason.dropped_out.value),
                        reason.eq(DischargeReason.completed.value)], [0, 1, 2], default=3).astype("int64")
    labels = np.array(["ongoing", "dropped_out", "completed", "other_discharge"], dtype=object)
    return pd.DataFrame({
        Col.episode_id: episodes[Col.episode_id].to_numpy(),
        Col.patient_id: episodes[Col.patient_id].to_numpy(),
        "time": los.astype("int64").to_numpy(),
        "event": (status == 1).astype("int64"),
        "event_type": labels[status],
        "status": status,
        Col.discharge_reason: reason.to_numpy(),
    })
