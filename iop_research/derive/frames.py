"""Analysis frames: one row per episode, counting-process ``(start, stop]`` rows, landmark frames.

The frames are what the survival estimators take. They are built from an
:class:`~iop_research.data.io.IOPData` alone (every argument has a default): the
outcome is :func:`iop_research.derive.outcomes.relapse_outcomes` with its
:class:`~iop_research.derive.outcomes.RelapseDefinition`; the heavy joins (events,
eras and sessions to episodes, interval splitting) are Ibis expressions run
on DuckDB (``engine=None``) or Spark (``engine="spark"``).

Time-varying covariate convention (as R's ``survival::tmerge`` ``tdc()``)
--------------------------------------------------------------------------
Time is whole days from the origin. Rows are intervals ``(start, stop]``;
a covariate that changes on day ``x`` takes its new value on the intervals
that *start* at ``x``, so an event on day ``x`` is attributed to the old
value. Hence:

``on_<class>`` (buprenorphine, methadone, naltrexone) and ``on_mat`` (any class)
    A medication era covering calendar days ``[era_start, era_end]``
    (``era_end`` inclusive) is "on" over ``(era_start - origin,
    era_end - origin + 1]``: a relapse on the day MAT starts counts as
    unexposed, one on the day after the last covered day as exposed (R:
    ``tdc(era_start - origin, 1)`` then ``tdc(era_end - origin + 1, 0)``,
    ``tdcstart = 0``).
``in_treatment``
    1 over ``(0, discharge - origin]``, 0 afterwards (an event on the
    discharge day counts as in treatment); 1 throughout for ongoing episodes
    (R: ``tdc(discharge - origin, 0)``, ``tdcstart = 1``).
``aftercare``
    0 until the first ``aftercare_contact`` on or after admission, on day
    ``a``; 1 over ``(a - origin, ...]``.
``cum_sessions_attended`` (optional)
    Number of attended sessions of the episode (admission to discharge) on
    days ``<= start`` (R: ``cumtdc(session_day - origin)``).

Rows are split at every candidate change time strictly inside ``(0, time)``
(era starts and ends + 1, discharge, first aftercare contact, session days),
whether or not the value changes, as ``tmerge`` does; the rows of an episode
tile ``(0, time]`` with no gap or overlap, and ``event``/``status`` are
non-zero on the last row only.

References
----------
.. [1] Therneau T, Crowson C, Atkinson E. Using time dependent covariates and
   time dependent coefficients in the Cox model. survival package vignette
   ("timedep"), 2023.
.. [2] Andersen PK, Gill RD. Cox's regression model for counting processes.
   Ann Stat 1982;10:1100-20.
.. [3] Dafni U. Landmark analysis at the 25-year landmark point. Circ
   Cardiovasc Qual Outcomes 2011;4:363-71.
.. [4] Suissa S. Immortal time bias in pharmaco-epidemiology. Am J Epidemiol
   2008;167:492-9.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids
from iop_research.derive.outcomes import (
    _NEVER,
    RelapseDefinition,
    _get_episodes,
    _patient_index,
    _require,
    relapse_outcomes,
)
from iop_research.data.schema import Col, EventType, MedicationClass, Modality
from iop_research.derive.days import day_number
from iop_research.derive.exposures import medication_eras

__all__ = [
    "survival_frame",
    "counting_process_frame",
    "landmark_frame",
    "split_at",
    "MAT_CLASSES",
    "BASELINE_COVARIATES",
]

#: Classes that get their own ``on_<class>`` indicator.
MAT_CLASSES = (MedicationClass.buprenorphine.value, MedicationClass.methadone.value,
               MedicationClass.naltrexone.value)
#: Intake covariates known at admission (used as baseline covariates everywhere).
BASELINE_COVARIATES = (
    Col.program, "admit_year", "age", Col.sex, Col.referral_source, Col.primary_substance,
    Col.psychiatric_comorbidity, Col.prior_treatment_episodes, Col.severity_score, Col.housing,
    Col.employment,
)
_MODALITIES = tuple(Modality.values())
#: survival_frame's default covariates: intake, MAT during the episode, first-30-day dose.
_SURVIVAL_DEFAULT = BASELINE_COVARIATES + ("has_mat",) + tuple(
    f"hours_{m}_30d" for m in _MODALITIES) + ("attendance_30d",)


# ----------------------------------------------------------------------------- eras
def _get_eras(data, eras, grace_days: int, engine) -> pd.DataFrame:
    if eras is None:  # no medications table, or an empty one, gives no eras
        eras = medication_eras(data.medications, grace_days=grace_days, engine=engine)
    _require(eras, [Col.patient_id, "medication_class", "era_start", "era_end"], "eras",
             "Pass eras from iop_research.derive.exposures.medication_eras.")
    out = pd.DataFrame({Col.patient_id: eras[Col.patient_id].to_numpy(),
                        "cls": eras["medication_class"].astype(str).to_numpy(),
                        "s_day": day_number(eras["era_start"].to_numpy(), missing=_NEVER),
                        "e1_day": day_number(eras["era_end"].to_numpy(), missing=_NEVER) + 1})
    bad = out["e1_day"] <= out["s_day"]
    if bad.any():
        raise DataValidationError(
            f"eras: {int(bad.sum())} eras end before they start "
            f"(patient_id: {format_ids(out.loc[bad, Col.patient_id])}). Fix the era table."
        )
    return out


# ----------------------------------------------------------------------------- covariates
def _sessions_days(data, pat_index: pd.Index) -> pd.DataFrame | None:
    """Sessions of the patients in ``pat_index`` as integer days and patient codes (``pid``)."""
    ses = data.sessions
    if ses is None or len(ses) == 0:
        return None
    _require(ses, [Col.patient_id, Col.session_date, Col.modality, Col.minutes, Col.attended], "sessions",
             "Pass a table that follows the data contract (iop_research.data.schema).")
    if ses[Col.session_date].isna().any() or ses[Col.attended].isna().any():
        raise DataValidationError(
            "sessions: rows with missing session_date or attended; fix or drop them explicitly first.")
    out = pd.DataFrame({
        "pid": pat_index.get_indexer(ses[Col.patient_id]).astype("int64"),
        "day": day_number(ses[Col.session_date].to_numpy(), missing=_NEVER),
        Col.modality: ses[Col.modality].astype(str).to_numpy(),
        Col.minutes: ses[Col.minutes].astype("int64").to_numpy(),
        Col.attended: ses[Col.attended].astype(bool).astype("int64").to_numpy(),
    })
    out = out.loc[out["pid"] >= 0].reset_index(drop=True)
    return out if len(out) else None


def _session_exposure(eps: pd.DataFrame, data, window_days: int, engine, suffix: str) -> pd.DataFrame:
    """Per episode, sessions in days ``[0, window_days)`` from admission (and not after discharge).

    Columns ``sessions_<modality><suffix>`` (attended), ``hours_<modality><suffix>``
    (attended hours), ``attendance<suffix>`` (attended / scheduled; NaN when none scheduled).
    """
    from iop_research.derive.engine import as_table, collect, get_backend

    ids = eps[Col.episode_id].to_numpy()
    out = pd.DataFrame({Col.episode_id: ids})
    for m in _MODALITIES:
        out[f"sessions_{m}{suffix}"] = 0
        out[f"hours_{m}{suffix}"] = 0.0
    out[f"attendance{suffix}"] = np.nan
    pat_index = _patient_index(eps)
    ses = _sessions_days(data, pat_index)
    if ses is None or len(eps) == 0:
        return out
    admit = day_number(eps[Col.admit_date].to_numpy(), missing=_NEVER)
    dis = day_number(eps[Col.discharge_date].to_numpy(), missing=_NEVER)
    ep = pd.DataFrame({"eid": np.arange(len(eps), dtype="int64"),
                       "e_pid": pat_index.get_indexer(eps[Col.patient_id]).astype("int64"),
                       "lo": admit, "hi": np.minimum(admit + window_days - 1, dis)})
    be = get_backend(engine)
    ep_t = as_table(be, ep, "exposure_episodes")
    s_t = as_table(be, ses, "sessions")
    j = ep_t.join(s_t, (ep_t.e_pid == s_t.pid) & (s_t.day >= ep_t.lo) & (s_t.day <= ep_t.hi))
    agg = j.group_by(["eid", Col.modality]).aggregate(
        n_sched=j.attended.count(), n_att=j.attended.sum(), min_att=(j.minutes * j.attended).sum())
    res = collect(agg)
    if len(res):
        res[Col.episode_id] = ids[res["eid"].to_numpy()]
        wide_n = res.pivot_table(index=Col.episode_id, columns=Col.modality, values="n_att", aggfunc="sum")
        wide_h = res.pivot_table(index=Col.episode_id, columns=Col.modality, values="min_att", aggfunc="sum")
        tot = res.groupby(Col.episode_id)[["n_sched", "n_att"]].sum()
        idx = pd.Index(ids)
        for m in _MODALITIES:
            if m in wide_n.columns:
                out[f"sessions_{m}{suffix}"] = wide_n[m].reindex(idx).fillna(0).astype("int64").to_numpy()
                out[f"hours_{m}{suffix}"] = (wide_h[m].reindex(idx).fillna(0) / 60.0).to_numpy()
        t = tot.reindex(idx)
        out[f"attendance{suffix}"] = (t["n_att"] / t["n_sched"]).to_numpy(dtype="float64")
    return out


def _has_mat(eps: pd.DataFrame, eras_days: pd.DataFrame) -> np.ndarray:
    """Any era overlapping the episode's days [admit, discharge] (ongoing: from admit on)."""
    ep = pd.DataFrame({Col.episode_id: eps[Col.episode_id].to_numpy(), Col.patient_id: eps[Col.patient_id].to_numpy(),
                       "lo": day_number(eps[Col.admit_date].to_numpy(), missing=_NEVER),
                       "hi": day_number(eps[Col.discharge_date].to_numpy(), missing=_NEVER)})
    if len(eras_days) == 0:
        return np.zeros(len(ep), dtype=bool)
    j = ep.merge(eras_days, on=Col.patient_id)
    hit = j.loc[(j["s_day"] <= j["hi"]) & (j["e1_day"] - 1 >= j["lo"]), Col.episode_id].unique()
    return ep[Col.episode_id].isin(hit).to_numpy()


def _baseline(eps: pd.DataFrame, data) -> pd.DataFrame:
    """Intake covariates per episode (age and sex from patients when episodes lack them)."""
    base = pd.DataFrame({Col.episode_id: eps[Col.episode_id].to_numpy()})
    base["admit_year"] = pd.to_datetime(eps[Col.admit_date]).dt.year.to_numpy()
    pats = getattr(data, "patients", None)
    # birth_year only serves age, which episodes from build_episodes already carry (age_at_admit):
    # then the patients are joined only for a missing sex (a string merge of every episode)
    has_age = "age" in eps.columns or "age_at_admit" in eps.columns
    need_pat = [c for c in (Col.sex, Col.birth_year) if c not in eps.columns and not (c == Col.birth_year and has_age)]
    extra = pd.DataFrame(index=eps.index)
    if need_pat and pats is not None and len(pats) and Col.patient_id in pats.columns:
        cols = [Col.patient_id] + [c for c in need_pat if c in pats.columns]
        extra = eps[[Col.patient_id]].merge(pats[cols].drop_duplicates(Col.patient_id), on=Col.patient_id,
                                            how="left").drop(columns=Col.patient_id)
        extra.index = eps.index
    src = pd.concat([eps, extra], axis=1)
    if "age" in src.columns:
        base["age"] = src["age"].to_numpy()
    elif "age_at_admit" in src.columns:  # episodes.build_episodes
        base["age"] = src["age_at_admit"].to_numpy()
    elif Col.birth_year in src.columns:
        base["age"] = (base["admit_year"].to_numpy() - src[Col.birth_year].to_numpy()).astype("float64")
    for c in BASELINE_COVARIATES:
        if c not in base.columns and c in src.columns:
            base[c] = src[c].to_numpy()
    return base


def _select_covariates(avail: pd.DataFrame, covariates, default: Sequence[str], where: str) -> list[str]:
    if covariates is None:
        return []
    if isinstance(covariates, str):
        if covariates != "default":
            raise ModelSpecificationError(
                f"{where}: covariates={covariates!r}; use 'default', None or a list of column names."
            )
        return [c for c in default if c in avail.columns]
    wanted = list(covariates)
    missing = [c for c in wanted if c not in avail.columns]
    if missing:
        raise ModelSpecificationError(
            f"{where}: covariates {missing} are not available (available: "
            f"{format_ids([c for c in avail.columns if c != Col.episode_id], 40)})."
        )
    return wanted


# ----------------------------------------------------------------------------- frames
def survival_frame(data, *, definition: RelapseDefinition | None = None, episodes: pd.DataFrame | None = None,
                   covariates: str | Sequence[str] | None = "default", eras: pd.DataFrame | None = None,
                   grace_days: int = 30, engine: Any = None, attrition=None) -> pd.DataFrame:
    """One row per episode: time to relapse with death competing, plus covariates.

    Parameters
    ----------
    data : IOPData
    definition : RelapseDefinition, optional
        Default ``RelapseDefinition()`` (origin admission, 7 blanking days,
        follow-up to the observation end, death competing).
    episodes : pandas.DataFrame, optional
        Default: ``episodes.build_episodes(data)`` if available, else admissions.
    covariates : "default", list of str or None, default "default"
        ``"default"``: intake covariates (``program, admit_year, age, sex,
        referral_source, primary_substance, psychiatric_comorbidity,
        prior_treatment_episodes, severity_score, housing, employment``, those
        available), ``has_mat`` (any MAT era overlapping the episode) and the
        first-30-day dose from admission: ``hours_<modality>_30d`` (attended
        hours) and ``attendance_30d``. A list picks among these and
        ``sessions_<modality>_30d``. ``has_mat`` and the 30-day dose are
        measured *after* time zero: with origin admission they carry
        immortal-time bias [1]_; use :func:`counting_process_frame` or
        :func:`landmark_frame` for exposure comparisons.
    eras : pandas.DataFrame, optional
        MAT eras (``patient_id, medication_class, era_start, era_end``);
        default ``exposures.medication_eras(data.medications, grace_days=grace_days)``.
        Ignored when episodes carry ``has_mat``.
    grace_days : int, default 30
        Gap (days) that still joins dispensings into one era.
    engine : None, "duckdb", "spark" or an Ibis backend
    attrition : iop_research.derive.cohorts.Attrition, optional
        Receives the outcome exclusions.

    Returns
    -------
    pandas.DataFrame
        ``episode_id, patient_id, origin_date, end_date, followup_days, time,
        event, event_type, event_source, status`` (see
        :func:`iop_research.derive.outcomes.relapse_outcomes`) followed by the
        covariates. R: ``coxph(Surv(time, event) ~ ...)``; competing risks
        ``cmprsk::crr(time, status, ...)``.

    Raises
    ------
    ModelSpecificationError
        If a requested covariate is not available.

    References
    ----------
    .. [1] Suissa S. Immortal time bias in pharmaco-epidemiology. Am J Epidemiol 2008;167:492-9.

    Examples
    --------
    >>> import pandas as pd
    >>> from iop_research.data.io import IOPData
    >>> ts = pd.to_datetime
    >>> adm = pd.DataFrame({"episode_id": ["E1", "E2"], "patient_id": ["P1", "P2"], "program": ["A", "B"],
    ...     "admit_date": ts(["2021-01-01", "2021-02-01"]), "discharge_date": ts(["2021-02-15", "2021-03-01"]),
    ...     "discharge_reason": ["completed", "dropped_out"]})
    >>> ev = pd.DataFrame({"patient_id": ["P1"], "event_date": ts(["2021-03-01"]), "event_type": ["uds"],
    ...     "result": ["positive"], "substance": [None]})
    >>> obs = pd.DataFrame({"patient_id": ["P1", "P2"], "observation_end": ts(["2021-12-31"] * 2)})
    >>> data = IOPData(pd.DataFrame(), adm, pd.DataFrame(), pd.DataFrame(), ev, obs)
    >>> survival_frame(data, episodes=adm, covariates=["program", "has_mat"])[
    ...     ["episode_id", "time", "event", "status", "program", "has_mat"]]
      episode_id  time  event  status program  has_mat
    0         E1    59      1       1       A    False
    1         E2   333      0       0       B    False
    """
    definition = definition if definition is not None else RelapseDefinition()
    eps = _get_episodes(data, episodes, engine)
    out = relapse_outcomes(data, definition=definition, episodes=eps, engine=engine, attrition=attrition)
    if covariates is None:
        return out
    kept = eps.set_index(Col.episode_id).loc[out[Col.episode_id]].reset_index()
    avail = _baseline(kept, data)
    if "has_mat" in kept.columns:
        avail["has_mat"] = kept["has_mat"].astype(bool).to_numpy()
    else:
        avail["has_mat"] = _has_mat(kept, _get_eras(data, eras, grace_days, engine))
    dose = _session_exposure(kept, data, 30, engine, "_30d")
    avail = pd.concat([avail, dose.drop(columns=Col.episode_id)], axis=1)
    cols = _select_covariates(avail, covariates, _SURVIVAL_DEFAULT, "survival_frame")
    return pd.concat([out, avail[cols].reset_index(drop=True)], axis=1)


def _split_expr(be, fu: pd.DataFrame, eras_days: pd.DataFrame, data, cum_sessions: bool, *,
                with_ids: bool = True):
    """Ibis expression of the (start, stop] split with the time-varying covariates.

    ``with_ids=False`` keeps the integer episode code ``eid`` (row of ``fu``) instead of
    joining the string ``episode_id, patient_id`` back in the engine (the caller maps codes
    to ids with numpy, which is much cheaper for millions of rows than a string join).
    """
    import ibis

    from iop_research.derive.engine import as_table, int_from_bool

    ids = fu[[Col.episode_id, Col.patient_id, "eid"]].rename(
        columns={"eid": "id_eid", Col.episode_id: "id_episode_id", Col.patient_id: "id_patient_id"})
    pat_index = pd.Index(pd.unique(fu[Col.patient_id]))
    fu = fu.drop(columns=[Col.episode_id, Col.patient_id]).rename(columns={"eid": "episode_id"})
    fu_t = as_table(be, fu, "cp_followup")
    i64 = "int64"

    def cut(expr, col):
        return expr.select(episode_id=expr.episode_id, t=expr[col].cast(i64))

    pieces = [fu_t.select(episode_id=fu_t.episode_id, t=ibis.literal(0, type=i64)), cut(fu_t, "time")]
    inside = (fu_t.discharge_rel > 0) & (fu_t.discharge_rel < fu_t.time)
    pieces.append(cut(fu_t.filter(inside), "discharge_rel"))

    je = None
    eras_days = eras_days.assign(e_pid=pat_index.get_indexer(eras_days[Col.patient_id]).astype("int64"))
    eras_days = eras_days.loc[eras_days["e_pid"] >= 0].drop(columns=Col.patient_id)
    if len(eras_days):
        er_t = as_table(be, eras_days, "cp_eras")
        je = fu_t.join(er_t, fu_t.pid == er_t.e_pid)
        je = je.select(je_episode_id=je.episode_id, cls=je.cls, time=je.time,
                       s_rel=(je.s_day - je.origin_day).cast(i64), e_rel=(je.e1_day - je.origin_day).cast(i64))
        je = je.filter((je.s_rel < je.time) & (je.e_rel > 0))
        for col in ("s_rel", "e_rel"):
            part = je.filter((je[col] > 0) & (je[col] < je.time))
            pieces.append(part.select(episode_id=part.je_episode_id, t=part[col]))

    ev = data.events
    af = None
    contacts = None
    if ev is not None and len(ev):
        is_ac = ev[Col.event_type].astype(str).eq(EventType.aftercare_contact.value).to_numpy()
        contacts = pd.DataFrame({"a_pid": pat_index.get_indexer(ev.loc[is_ac, Col.patient_id]).astype("int64"),
                                 "day": day_number(ev.loc[is_ac, Col.event_date].to_numpy(), missing=-_NEVER)})
        contacts = contacts.loc[contacts["a_pid"] >= 0]
    if contacts is not None and len(contacts):
        ev_t = as_table(be, contacts, "cp_aftercare")
        ja = fu_t.join(ev_t, (fu_t.pid == ev_t.a_pid) & (ev_t.day >= fu_t.admit_day))
        af = ja.group_by(ja.episode_id).aggregate(a_rel=(ja.day - ja.origin_day).min().cast(i64))
        af = af.select(af_episode_id=af.episode_id, a_rel=af.a_rel)
        afc = af.join(fu_t, af.af_episode_id == fu_t.episode_id)
        afc = afc.filter((afc.a_rel > 0) & (afc.a_rel < afc.time))
        pieces.append(afc.select(episode_id=afc.af_episode_id, t=afc.a_rel))

    js = None
    if cum_sessions:
        ses = _sessions_days(data, pat_index)
        if ses is not None and (ses[Col.attended] == 1).any():
            ses = ses.loc[ses[Col.attended] == 1, ["pid", "day"]].rename(columns={"pid": "s_pid"})
            s_t = as_table(be, ses, "cp_sessions")
            js = fu_t.join(s_t, (fu_t.pid == s_t.s_pid) & (s_t.day >= fu_t.admit_day)
                           & (s_t.day <= fu_t.hi_day))
            js = js.select(js_episode_id=js.episode_id, time=js.time, s_rel=(js.day - js.origin_day).cast(i64))
            part = js.filter((js.s_rel > 0) & (js.s_rel < js.time))
            pieces.append(part.select(episode_id=part.js_episode_id, t=part.s_rel))

    # one UNION ALL and one DISTINCT (a chain of UNION DISTINCTs hashes the rows once per piece)
    cuts = pieces[0].union(*pieces[1:], distinct=False).distinct() if len(pieces) > 1 else pieces[0]
    w = ibis.window(group_by=cuts.episode_id, order_by=cuts.t)
    iv = cuts.mutate(start=cuts.t.lag().over(w))
    iv = iv.filter(iv.start.notnull()).select(iv_episode_id=iv.episode_id, start=iv.start.cast(i64),
                                                stop=iv.t)
    res = iv.join(fu_t, iv.iv_episode_id == fu_t.episode_id)
    at_end = res.stop == res.time
    res = res.select(
        episode_id=res.episode_id, start=res.start, stop=res.stop,
        event=ibis.ifelse(at_end, res.event, 0).cast(i64), status=ibis.ifelse(at_end, res.status, 0).cast(i64),
        in_treatment=int_from_bool(res.stop <= res.discharge_rel),
    )
    flags = ["on_mat"] + [f"on_{c}" for c in MAT_CLASSES]
    if je is not None:
        k = iv.join(je, (iv.iv_episode_id == je.je_episode_id) & (je.s_rel <= iv.start) & (je.e_rel >= iv.stop))
        on = k.group_by([k.iv_episode_id, k.start]).aggregate(
            on_mat=ibis.ifelse(k.s_rel.notnull(), 1, 0).cast(i64).max(),
            **{f"on_{c}": ibis.ifelse(k.cls == c, 1, 0).cast(i64).max() for c in MAT_CLASSES})
        on = on.rename(on_episode_id="iv_episode_id", on_start="start")
        res = res.left_join(on, (res.episode_id == on.on_episode_id) & (res.start == on.on_start))
        res = res.mutate(**{f: res[f].fill_null(0) for f in flags}).drop("on_episode_id", "on_start")
    else:
        res = res.mutate(**{f: ibis.literal(0, type=i64) for f in flags})
    if af is not None:
        res = res.left_join(af, res.episode_id == af.af_episode_id)
        res = res.mutate(aftercare=ibis.ifelse(res.a_rel.notnull() & (res.start >= res.a_rel), 1, 0).cast(i64))
        res = res.drop("af_episode_id", "a_rel")
    else:
        res = res.mutate(aftercare=ibis.literal(0, type=i64))
    if cum_sessions:
        if js is not None:
            k = iv.join(js, (iv.iv_episode_id == js.js_episode_id) & (js.s_rel <= iv.start))
            cs = k.group_by([k.iv_episode_id, k.start]).aggregate(cum_sessions_attended=k.s_rel.count().cast(i64))
            cs = cs.rename(cs_episode_id="iv_episode_id", cs_start="start")
            res = res.left_join(cs, (res.episode_id == cs.cs_episode_id) & (res.start == cs.cs_start))
            res = res.mutate(cum_sessions_attended=res.cum_sessions_attended.fill_null(0)).drop(
                "cs_episode_id", "cs_start")
        else:
            res = res.mutate(cum_sessions_attended=ibis.literal(0, type=i64))
    order = ["start", "stop", "event", "status", *flags, "in_treatment", "aftercare"]
    if cum_sessions:
        order.append("cum_sessions_attended")
    if not with_ids:
        return res.select(eid=res.episode_id, **{c: res[c] for c in order})
    id_t = as_table(be, ids, "cp_ids")
    res = res.join(id_t, res.episode_id == id_t.id_eid)
    return res.select(episode_id=res.id_episode_id, patient_id=res.id_patient_id, **{c: res[c] for c in order})


#: Episode columns that counting_process_frame reads: outcome inputs and baseline-covariate sources.
_OUTCOME_COLUMNS = (Col.episode_id, Col.patient_id, Col.admit_date, Col.discharge_date, Col.discharge_reason)
_COVARIATE_SOURCES = BASELINE_COVARIATES + ("age", "age_at_admit", Col.birth_year, Col.sex)


def _slim(eps: pd.DataFrame | None, cols: Sequence[str]) -> pd.DataFrame | None:
    """``eps`` restricted to ``cols`` (in its own column order), so that the copies and checks
    of the outcome step do not carry the ~50 measure columns of build_episodes. Left whole
    when a required column is missing, so that the error message lists what the frame has."""
    if eps is None or any(c not in eps.columns for c in _OUTCOME_COLUMNS[:4]):
        return eps
    return eps.loc[:, [c for c in eps.columns if c in cols]]


def _followup_days(out: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """Per kept episode: integer days the split needs (``kept``: the episodes of ``out``, row by row)."""
    origin = day_number(out["origin_date"].to_numpy(), missing=_NEVER)
    admit = day_number(kept[Col.admit_date].to_numpy(), missing=_NEVER)
    dis = day_number(kept[Col.discharge_date].to_numpy(), missing=_NEVER)
    pat_index = pd.Index(pd.unique(out[Col.patient_id]))
    return pd.DataFrame({
        Col.episode_id: out[Col.episode_id].to_numpy(), Col.patient_id: out[Col.patient_id].to_numpy(),
        "eid": np.arange(len(out), dtype="int64"),
        "pid": pat_index.get_indexer(out[Col.patient_id]).astype("int64"),
        "origin_day": origin, "admit_day": admit, "hi_day": dis,
        "time": out["time"].to_numpy(dtype="int64"), "event": out["event"].to_numpy(dtype="int64"),
        "status": out["status"].to_numpy(dtype="int64"),
        "discharge_rel": np.where(dis >= _NEVER, _NEVER, dis - origin).astype("int64"),
    })


def counting_process_frame(data, *, definition: RelapseDefinition | None = None,
                           episodes: pd.DataFrame | None = None, eras: pd.DataFrame | None = None,
                           grace_days: int = 30, covariates: str | Sequence[str] | None = "default",
                           cum_sessions: bool = False, engine: Any = None, lazy: bool = False,
                           attrition=None):
    """Long ``(start, stop]`` rows per episode, split where a time-varying covariate may change.

    Equivalent to R's ``survival::tmerge`` with ``event()``/``tdc()`` (see
    the module docstring for the exact day conventions).

    Parameters
    ----------
    data : IOPData
    definition : RelapseDefinition, optional
        Outcome definition (default ``RelapseDefinition()``).
    episodes : pandas.DataFrame, optional
        Default: ``episodes.build_episodes(data)`` if available, else admissions.
    eras : pandas.DataFrame, optional
        ``patient_id, medication_class, era_start, era_end`` (inclusive);
        default ``exposures.medication_eras(data.medications, grace_days=grace_days)``.
    grace_days : int, default 30
    covariates : "default", list of str or None, default "default"
        Baseline covariates added to every row: ``"default"`` = the intake
        covariates of :data:`BASELINE_COVARIATES` that are available.
    cum_sessions : bool, default False
        Add ``cum_sessions_attended`` (splits at every session day: many rows).
    engine : None, "duckdb", "spark" or an Ibis backend
    lazy : bool, default False
        Return the unexecuted Ibis expression of the split (time-varying
        columns only, no baseline covariates, unordered).
    attrition : iop_research.derive.cohorts.Attrition, optional
        Receives the outcome exclusions.

    Returns
    -------
    pandas.DataFrame
        ``episode_id, patient_id, start, stop, event, status, on_mat,
        on_buprenorphine, on_methadone, on_naltrexone, in_treatment,
        aftercare`` [``cum_sessions_attended``] then the baseline covariates;
        sorted by episode (survival_frame order) and ``start``. Fit with R's
        ``coxph(Surv(start, stop, event) ~ on_mat + ..., cluster = patient_id)``.

    References
    ----------
    .. [1] Therneau T, Crowson C, Atkinson E. Using time dependent covariates
       and time dependent coefficients in the Cox model (survival vignette).
    .. [2] Andersen PK, Gill RD. Ann Stat 1982;10:1100-20.

    Examples
    --------
    >>> import pandas as pd
    >>> from iop_research.data.io import IOPData
    >>> ts = pd.to_datetime
    >>> adm = pd.DataFrame({"episode_id": ["E1"], "patient_id": ["P1"], "admit_date": ts(["2021-01-01"]),
    ...     "discharge_date": ts(["2021-01-31"]), "discharge_reason": ["completed"]})
    >>> ev = pd.DataFrame({"patient_id": ["P1"], "event_date": ts(["2021-03-02"]), "event_type": ["uds"],
    ...     "result": ["positive"], "substance": [None]})
    >>> obs = pd.DataFrame({"patient_id": ["P1"], "observation_end": ts(["2021-12-31"])})
    >>> eras = pd.DataFrame({"patient_id": ["P1"], "medication_class": ["buprenorphine"],
    ...     "era_start": ts(["2021-01-11"]), "era_end": ts(["2021-02-09"])})
    >>> data = IOPData(pd.DataFrame(), adm, pd.DataFrame(), pd.DataFrame(), ev, obs)
    >>> cp = counting_process_frame(data, episodes=adm, eras=eras, covariates=None)
    >>> cp[["start", "stop", "event", "on_mat", "on_buprenorphine", "in_treatment"]]
       start  stop  event  on_mat  on_buprenorphine  in_treatment
    0      0    10      0       0                 0             1
    1     10    30      0       1                 1             1
    2     30    40      0       1                 1             0
    3     40    60      1       0                 0             0
    """
    from iop_research.derive.engine import collect, get_backend

    definition = definition if definition is not None else RelapseDefinition()
    eps = _get_episodes(data, _slim(episodes, _OUTCOME_COLUMNS + _COVARIATE_SOURCES), engine)
    out = relapse_outcomes(data, definition=definition, episodes=_slim(eps, _OUTCOME_COLUMNS), engine=engine,
                           attrition=attrition)
    # out keeps a subset of the (unique) episodes: one string lookup gives their rows in eps
    kept = eps.iloc[pd.Index(eps[Col.episode_id]).get_indexer(out[Col.episode_id])].reset_index(drop=True)
    fu = _followup_days(out, kept)
    eras_days = _get_eras(data, eras, grace_days, engine)
    if len(fu) == 0:
        raise ModelSpecificationError(
            "counting_process_frame: no episode has follow-up after the origin (see the attrition "
            "table of relapse_outcomes); nothing to split.")
    be = get_backend(engine)
    if lazy:
        return _split_expr(be, fu, eras_days, data, cum_sessions)
    res = collect(_split_expr(be, fu, eras_days, data, cum_sessions, with_ids=False))
    # rows by episode (survival_frame order = row of out = eid) then start; ids and covariates
    # are taken by position (eid), not joined on strings
    eid = res["eid"].to_numpy(dtype="int64")
    rows = np.lexsort((res["start"].to_numpy(dtype="int64"), eid))
    eid = eid[rows]
    cols = {Col.episode_id: out[Col.episode_id].to_numpy()[eid], Col.patient_id: out[Col.patient_id].to_numpy()[eid]}
    cols.update({c: res[c].to_numpy()[rows].astype("int64") for c in res.columns if c != "eid"})
    res = pd.DataFrame(cols)
    if covariates is not None:
        avail = _baseline(kept, data)
        names = _select_covariates(avail, covariates, BASELINE_COVARIATES, "counting_process_frame")
        if names:
            cov = avail[names].iloc[eid]
            cov.index = res.index  # a new frame of ours: relabel in place rather than copy
            res = pd.concat([res, cov], axis=1)
    return res


def landmark_frame(data, *, landmark_days: int = 30, definition: RelapseDefinition | None = None,
                   episodes: pd.DataFrame | None = None, eras: pd.DataFrame | None = None,
                   grace_days: int = 30, covariates: str | Sequence[str] | None = "default",
                   engine: Any = None, attrition=None) -> pd.DataFrame:
    """Landmark frame: episodes still at risk on day ``landmark_days``, exposures fixed by then, clock reset.

    Episodes with a relapse, death or end of follow-up on or before day
    ``L = landmark_days`` after admission are excluded (reasons recorded in
    ``attrition``); time is counted from day ``L`` (``time = time_from_admission - L``).

    Parameters
    ----------
    data : IOPData
    landmark_days : int, default 30
    definition : RelapseDefinition, optional
        Its ``origin`` is replaced by ``"landmark"`` with ``landmark_days``.
    episodes, eras, grace_days, engine
        As in :func:`counting_process_frame`.
    covariates : "default", list of str or None, default "default"
        Baseline (intake) covariates of :data:`BASELINE_COVARIATES`.
    attrition : iop_research.derive.cohorts.Attrition, optional
        Receives the exclusions (not at risk at the landmark).

    Returns
    -------
    pandas.DataFrame
        Outcome columns of :func:`iop_research.derive.outcomes.relapse_outcomes`
        (``origin_date`` = landmark date), then exposures fixed in days
        ``[0, L)`` after admission: ``mat_by_landmark`` and
        ``<class>_by_landmark`` (an era overlapping those days; 0/1),
        ``sessions_<modality>``, ``hours_<modality>`` (attended, within the
        episode), ``attendance`` (attended / scheduled, NaN when none), then
        baseline covariates.

    References
    ----------
    .. [1] Anderson JR, Cain KC, Gelber RD. Analysis of survival by tumor
       response. J Clin Oncol 1983;1:710-9.
    .. [2] Dafni U. Landmark analysis. Circ Cardiovasc Qual Outcomes 2011;4:363-71.

    Examples
    --------
    >>> import pandas as pd
    >>> from iop_research.data.io import IOPData
    >>> ts = pd.to_datetime
    >>> adm = pd.DataFrame({"episode_id": ["E1", "E2"], "patient_id": ["P1", "P2"],
    ...     "admit_date": ts(["2021-01-01"] * 2), "discharge_date": ts(["2021-03-01"] * 2),
    ...     "discharge_reason": ["completed"] * 2})
    >>> ev = pd.DataFrame({"patient_id": ["P1", "P2"], "event_date": ts(["2021-01-21", "2021-04-11"]),
    ...     "event_type": ["self_report_use"] * 2, "result": [None] * 2, "substance": [None] * 2})
    >>> obs = pd.DataFrame({"patient_id": ["P1", "P2"], "observation_end": ts(["2021-12-31"] * 2)})
    >>> data = IOPData(pd.DataFrame(), adm, pd.DataFrame(), pd.DataFrame(), ev, obs)
    >>> landmark_frame(data, landmark_days=30, episodes=adm, covariates=None)[
    ...     ["episode_id", "time", "event", "mat_by_landmark", "attendance"]]
      episode_id  time  event  mat_by_landmark  attendance
    0         E2    70      1                0         NaN
    """
    if landmark_days < 0:
        raise ModelSpecificationError(f"landmark_frame: landmark_days={landmark_days} must be >= 0.")
    definition = replace(definition if definition is not None else RelapseDefinition(),
                         origin="landmark", landmark_days=int(landmark_days))
    eps = _get_episodes(data, episodes, engine)
    out = relapse_outcomes(data, definition=definition, episodes=eps, engine=engine, attrition=attrition)
    kept = eps.set_index(Col.episode_id).loc[out[Col.episode_id]].reset_index()
    eras_days = _get_eras(data, eras, grace_days, engine)
    admit = day_number(kept[Col.admit_date].to_numpy(), missing=_NEVER)
    ep = pd.DataFrame({Col.episode_id: kept[Col.episode_id].to_numpy(), Col.patient_id: kept[Col.patient_id].to_numpy(),
                       "lo": admit, "hi": admit + int(landmark_days) - 1})
    flags = pd.DataFrame({Col.episode_id: ep[Col.episode_id]})
    names = ["mat_by_landmark"] + [f"{c}_by_landmark" for c in MAT_CLASSES]
    for n in names:
        flags[n] = 0
    if len(eras_days) and len(ep):
        j = ep.merge(eras_days, on=Col.patient_id)
        j = j.loc[(j["s_day"] <= j["hi"]) & (j["e1_day"] - 1 >= j["lo"])]
        flags["mat_by_landmark"] = ep[Col.episode_id].isin(j[Col.episode_id]).astype("int64").to_numpy()
        for c in MAT_CLASSES:
            hit = j.loc[j["cls"] == c, Col.episode_id]
            flags[f"{c}_by_landmark"] = ep[Col.episode_id].isin(hit).astype("int64").to_numpy()
    dose = _session_exposure(kept, data, int(landmark_days), engine, "")
    res = pd.concat([out, flags.drop(columns=Col.episode_id), dose.drop(columns=Col.episode_id)], axis=1)
    if covariates is not None:
        avail = _baseline(kept, data)
        cols = _select_covariates(avail, covariates, BASELINE_COVARIATES, "landmark_frame")
        res = pd.concat([res, avail[cols].reset_index(drop=True)], axis=1)
    return res


def split_at(df: pd.DataFrame, *, id_col: str, duration_col: str, event_col: str,
             cuts: str | Sequence[float], start_col: str = "start", stop_col: str = "stop") -> pd.DataFrame:
    """Split each row's follow-up ``(0, duration]`` at cut times (R's ``survSplit`` / ``tmerge``).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per subject.
    id_col, duration_col, event_col : str
        Subject id, follow-up time (> 0) and event indicator columns.
    cuts : str or sequence of float
        A column name holding one change time per row (missing = none), as
        ``tmerge(..., tdc(cut))``; or global cut times as ``survSplit(cut=)``.
        Only cuts strictly inside ``(0, duration)`` split a row.
    start_col, stop_col : str, default "start", "stop"
        Names of the interval columns in the output.

    Returns
    -------
    pandas.DataFrame
        The input columns (``duration_col`` kept) with ``start_col``,
        ``stop_col`` added; one row per interval ``(start, stop]``, the event
        on the last row of each subject only (``event_col`` is 0 elsewhere);
        rows ordered as the input, then by start.

    Raises
    ------
    DataValidationError
        If a duration is missing or not positive, or ids repeat.

    References
    ----------
    .. [1] Therneau TM. survival: ``survSplit`` and ``tmerge`` (R package
       survival 3.5), timedep vignette.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"id": [1, 2], "time": [100, 20], "event": [1, 0], "los": [30, 40]})
    >>> split_at(df, id_col="id", duration_col="time", event_col="event", cuts="los")[
    ...     ["id", "start", "stop", "event"]]
       id  start  stop  event
    0   1      0    30      0
    1   1     30   100      1
    2   2      0    20      0
    """
    _require(df, [id_col, duration_col, event_col], "split_at input", "Name existing columns.")
    dur = df[duration_col]
    bad = dur.isna() | ~(dur > 0)
    if bad.any():
        raise DataValidationError(
            f"split_at: {int(bad.sum())} rows have {duration_col} missing or <= 0 "
            f"({id_col}: {format_ids(df.loc[bad, id_col])}). Follow-up must be positive."
        )
    if df[id_col].duplicated().any():
        raise DataValidationError(
            f"split_at: {id_col} repeats ({format_ids(df.loc[df[id_col].duplicated(), id_col])}); "
            "pass one row per subject."
        )
    n = len(df)
    pos = np.arange(n)
    d = dur.to_numpy(dtype="float64")
    pts_pos = [pos, pos]
    pts_t = [np.zeros(n), d]
    if isinstance(cuts, str):
        c = df[cuts].to_numpy(dtype="float64")
        ok = ~np.isnan(c) & (c > 0) & (c < d)
        pts_pos.append(pos[ok])
        pts_t.append(c[ok])
    else:
        for c in sorted(set(float(x) for x in cuts)):
            ok = (c > 0) & (c < d)
            pts_pos.append(pos[ok])
            pts_t.append(np.full(int(ok.sum()), c))
    pts = pd.DataFrame({"_pos": np.concatenate(pts_pos), "_t": np.concatenate(pts_t)})
    pts = pts.drop_duplicates().sort_values(["_pos", "_t"], kind="mergesort").reset_index(drop=True)
    prev = pts.groupby("_pos")["_t"].shift()
    iv = pts.assign(_start=prev).dropna(subset=["_start"])
    out = df.iloc[iv["_pos"].to_numpy()].reset_index(drop=True)
    out[start_col] = iv["_start"].to_numpy()
    out[stop_col] = iv["_t"].to_numpy()
    if pd.api.types.is_integer_dtype(dur):
        out[start_col] = out[start_col].astype(dur.dtype)
        out[stop_col] = out[stop_col].astype(dur.dtype)
    last = out[stop_col].to_numpy(dtype="float64") == out[duration_col].to_numpy(dtype="float64")
    out[event_col] = np.where(last, out[event_col].to_numpy(), 0).astype(df[event_col].dtype)
    return out
