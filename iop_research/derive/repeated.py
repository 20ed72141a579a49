"""Repeated urine screens: a patient-week frame with an explicit missed-screen rule, and abstinence endpoints.

Trials and programme evaluations report the weekly screen series, not only the time to the
first positive: the proportion of negative screens, the longest run of negative weeks,
abstinence in the last weeks, and trial relapse definitions such as "four consecutive weeks
of use" (X:BOT's secondary analyses). What happens to a week without a screen changes all of
them, so the rule is an argument, never a default hidden in the code.

Conventions
-----------
* Week ``k`` of an episode covers days ``[7k, 7k + 7)`` after admission; weeks
  ``0 .. weeks - 1`` are built (``weeks`` = 12 by default), but only while the patient is
  observed (the whole week before ``observation_end`` and before death).
* A week is **positive** when any screen that week is positive, **negative** when it has a
  screen and none is positive.
* A week without a screen is **scheduled** while the patient is in treatment (the week starts
  on or before the discharge date; open episodes are in treatment), or always with
  ``scheduled="all"`` (trial follow-up visits). A scheduled week without a screen is
  **missed**; an unscheduled week without one is simply not observed.
* ``missing="positive"`` counts a missed week as positive (the usual trial rule);
  ``missing="missing"`` leaves it missing (NaN), for analyses that model missingness (GEE
  under MAR is then not the same analysis: say which one was used); :func:`impute_missed_weeks`
  multiply imputes the missed weeks of such a frame (the third rule).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from iop_research.data.schema import Col, EventType, UdsResult
from iop_research.data.io import IOPData
from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids

__all__ = ["uds_weeks", "abstinence_endpoints", "consecutive_use_relapse", "tlfb_endpoints", "impute_missed_weeks",
           "UDS_WEEK_COLUMNS", "ABSTINENCE_COLUMNS", "TLFB_COLUMNS"]

#: Columns of :func:`uds_weeks`.
UDS_WEEK_COLUMNS = ("episode_id", "patient_id", "week", "n_screens", "scheduled", "missed", "positive")
#: Columns of :func:`abstinence_endpoints`.
ABSTINENCE_COLUMNS = ("episode_id", "patient_id", "weeks_observed", "weeks_screened", "weeks_missed",
                      "share_negative", "longest_negative_run", "abstinent_last_weeks")
_MISSING = ("positive", "missing")
_SCHEDULED = ("in_treatment", "all")


def _days(s: pd.Series) -> np.ndarray:
    """Epoch days as float, NaN for a missing date (never NaT's integer)."""
    d = pd.to_datetime(s)
    out = d.to_numpy().astype("datetime64[D]").astype("int64").astype(float)
    out[d.isna().to_numpy()] = np.nan
    return out


def uds_weeks(data: Any, episodes: pd.DataFrame, *, weeks: int = 12, missing: str = "positive",
              scheduled: str = "in_treatment") -> pd.DataFrame:
    """One row per episode and week since admission: screens, missed screen, positive (0/1/NaN).

    Parameters
    ----------
    data : IOPData
        Needs ``events`` (``uds`` rows with ``result``) and ``observation``.
    episodes : pandas.DataFrame
        From :func:`~iop_research.derive.build_episodes` (``episode_id, patient_id,
        admit_date, discharge_date``).
    weeks : int, default 12
        Weeks from admission to build.
    missing : {"positive", "missing"}, default "positive"
        A missed scheduled week counts as positive, or stays missing (NaN).
    scheduled : {"in_treatment", "all"}, default "in_treatment"
        Which weeks expect a screen (see the module conventions).

    Returns
    -------
    pandas.DataFrame
        ``UDS_WEEK_COLUMNS``, sorted by episode and week; ``attrs["missing"]`` and
        ``attrs["scheduled"]`` record the rules; ``attrs["attrition"]`` counts the
        episode-weeks not built because the patient was no longer observed.

    Raises
    ------
    ModelSpecificationError
        Bad ``weeks``, ``missing`` or ``scheduled``.
    DataValidationError
        Missing tables or columns, a ``uds`` row without a result.

    Examples
    --------
    >>> import pandas as pd
    >>> from types import SimpleNamespace
    >>> ep = pd.DataFrame({"episode_id": ["E1"], "patient_id": ["P1"], "admit_date": [pd.Timestamp("2024-01-01")],
    ...                    "discharge_date": [pd.Timestamp("2024-01-20")]})
    >>> ev = pd.DataFrame({"patient_id": ["P1", "P1"], "event_date": pd.to_datetime(["2024-01-02", "2024-01-16"]),
    ...                    "event_type": ["uds", "uds"], "result": ["positive", "negative"], "substance": [None, None]})
    >>> obs = pd.DataFrame({"patient_id": ["P1"], "observation_end": [pd.Timestamp("2024-06-30")]})
    >>> w = uds_weeks(SimpleNamespace(events=ev, observation=obs), ep, weeks=4)
    >>> w[["week", "missed", "positive"]].to_dict("list")
    {'week': [0, 1, 2, 3], 'missed': [False, True, False, False], 'positive': [1.0, 1.0, 0.0, nan]}
    """
    func = "uds_weeks"
    if isinstance(weeks, bool) or not isinstance(weeks, (int, np.integer)) or weeks < 1:
        raise ModelSpecificationError(f"{func}: weeks must be a whole number >= 1 (e.g. 12), got {weeks!r}.")
    if missing not in _MISSING:
        raise ModelSpecificationError(f"{func}: missing must be one of {', '.join(_MISSING)}; got {missing!r}.")
    if scheduled not in _SCHEDULED:
        raise ModelSpecificationError(f"{func}: scheduled must be one of {', '.join(_SCHEDULED)}; got {scheduled!r}.")
    for table, cols in (("events", (Col.patient_id, Col.event_date, Col.event_type, Col.result)),
                        ("observation", (Col.patient_id, Col.observation_end))):
        df = getattr(data, table, None)
        if df is None:
            raise DataValidationError(f"{func}: the data have no {table!r} table; it is needed for the weekly screens.")
        lack = [c for c in cols if c not in df.columns]
        if lack:
            raise DataValidationError(f"{func}: table {table!r} lacks columns {format_ids(lack)}.")
    lack = [c for c in (Col.episode_id, Col.patient_id, Col.admit_date, Col.discharge_date) if c not in episodes.columns]
    if lack:
        raise DataValidationError(f"{func}: table 'episodes' lacks columns {format_ids(lack)}; pass build_episodes(...).")
    ev = data.events
    uds = ev[ev[Col.event_type].astype(str) == EventType.uds.value]
    res = uds[Col.result].astype("string")
    bad = res.isna()
    if bad.any():
        raise DataValidationError(
            f"{func}: table 'events' has {int(bad.sum())} uds row(s) without a result (first rows: "
            f"{format_ids(uds.index[bad.to_numpy()][:5])}). Record positive, negative or missed.")
    known = {UdsResult.positive.value, UdsResult.negative.value, UdsResult.missed.value}
    odd = ~res.isin(known)
    if odd.any():
        raise DataValidationError(
            f"{func}: table 'events', column 'result' has uds values {format_ids(sorted(set(res[odd])))}; "
            "use positive, negative or missed.")
    ep = episodes[[Col.episode_id, Col.patient_id, Col.admit_date, Col.discharge_date]].reset_index(drop=True)
    obs = data.observation[[Col.patient_id, Col.observation_end]].drop_duplicates(Col.patient_id)
    deaths = ev[ev[Col.event_type].astype(str) == EventType.death.value].groupby(Col.patient_id)[Col.event_date].min()
    ep = ep.merge(obs, on=Col.patient_id, how="left")
    admit = _days(ep[Col.admit_date])
    dis = _days(ep[Col.discharge_date])
    end = _days(ep[Col.observation_end])
    death = _days(ep[Col.patient_id].map(deaths)) if len(deaths) else np.full(len(ep), np.nan)
    last_day = np.fmin(end, np.where(np.isnan(death), np.inf, death))
    # a week is built when all of it is observed: its last day on or before the last observed day
    k = np.arange(weeks)
    starts = admit[:, None] + 7 * k[None, :]
    built = (starts + 6) <= last_day[:, None]
    ei, wk = np.nonzero(built)
    frame = pd.DataFrame({"episode_id": ep[Col.episode_id].to_numpy()[ei], "patient_id": ep[Col.patient_id].to_numpy()[ei],
                          "week": wk.astype(int)})
    w_start = starts[ei, wk]
    # screens per episode-week: join on patient, then keep screens inside the week
    u = pd.DataFrame({"patient_id": uds[Col.patient_id].to_numpy(), "day": _days(uds[Col.event_date]),
                      "pos": (res == UdsResult.positive.value).to_numpy(), "done": (res != UdsResult.missed.value).to_numpy()})
    key = pd.DataFrame({"row": np.arange(len(frame)), "patient_id": frame["patient_id"].to_numpy(), "w0": w_start})
    j = key.merge(u, on="patient_id", how="inner")
    j = j[(j["day"] >= j["w0"]) & (j["day"] < j["w0"] + 7)]
    n_screens = np.bincount(j.loc[j["done"], "row"], minlength=len(frame))
    any_pos = np.bincount(j.loc[j["done"] & j["pos"], "row"], minlength=len(frame)) > 0
    recorded_missed = np.bincount(j.loc[~j["done"], "row"], minlength=len(frame)) > 0
    in_treatment = np.isnan(dis[ei]) | (w_start <= dis[ei])
    sched = recorded_missed | (in_treatment if scheduled == "in_treatment" else np.ones(len(frame), dtype=bool))
    missed = sched & (n_screens == 0)
    positive = np.where(n_screens > 0, any_pos.astype(float), np.where(missed & (missing == "positive"), 1.0, np.nan))
    frame["n_screens"] = n_screens.astype(int)
    frame["scheduled"] = sched
    frame["missed"] = missed
    frame["positive"] = positive
    frame = frame[list(UDS_WEEK_COLUMNS)].sort_values(["episode_id", "week"], ignore_index=True)
    frame.attrs["missing"] = missing
    frame.attrs["scheduled"] = scheduled
    frame.attrs["attrition"] = pd.DataFrame({
        "reason": ["episode-week not fully observed (after observation_end or death)"],
        "n": [int(len(ep) * weeks - built.sum())]})
    return frame


def _runs(x: np.ndarray) -> int:
    """Longest run of 1s."""
    best = cur = 0
    for v in x:
        cur = cur + 1 if v else 0
        best = max(best, cur)
    return best


def abstinence_endpoints(weeks_frame: pd.DataFrame, *, last_weeks: int = 4) -> pd.DataFrame:
    """Abstinence endpoints per episode from :func:`uds_weeks`.

    ``share_negative``: negative weeks over weeks with a result (a missed week counts as
    positive under ``missing="positive"``, and is left out under ``"missing"``);
    ``longest_negative_run``: most consecutive negative weeks (a week without a result ends
    a run); ``abstinent_last_weeks``: every one of the last ``last_weeks`` built weeks
    negative (NaN when fewer weeks were built, or one of them has no result).
    """
    if isinstance(last_weeks, bool) or not isinstance(last_weeks, (int, np.integer)) or last_weeks < 1:
        raise ModelSpecificationError(f"abstinence_endpoints: last_weeks must be a whole number >= 1, got {last_weeks!r}.")
    lack = [c for c in UDS_WEEK_COLUMNS if c not in weeks_frame.columns]
    if lack:
        raise DataValidationError(f"abstinence_endpoints: the frame lacks {format_ids(lack)}; pass uds_weeks(...).")
    rows = []
    for (eid, pid), g in weeks_frame.sort_values("week").groupby(["episode_id", "patient_id"], sort=True):
        pos = g["positive"].to_numpy(dtype=float)
        has = ~np.isnan(pos)
        neg = has & (pos == 0)
        tail = pos[-last_weeks:]
        last = (float(np.all(tail == 0)) if len(pos) >= last_weeks and not np.isnan(tail).any() else np.nan)
        rows.append((eid, pid, len(pos), int((g["n_screens"] > 0).sum()), int(g["missed"].sum()),
                     float(neg.sum() / has.sum()) if has.any() else np.nan, _runs(neg), last))
    return pd.DataFrame(rows, columns=list(ABSTINENCE_COLUMNS))


def _first_runs(key: np.ndarray, week: np.ndarray, positive: np.ndarray, length: int) -> pd.Series:
    """Row of the start of each key's first run of ``length`` consecutive positive weeks.

    Rows are sorted by ``key`` then ``week``; a run is positive rows whose weeks follow one another, so a
    negative row or a missing week breaks it. Returns a Series indexed by the keys that have such a run.
    """
    n = len(key)
    new = np.ones(n, dtype=bool)
    new[1:] = (key[1:] != key[:-1]) | (week[1:] != week[:-1] + 1) | ~positive[:-1]
    run = np.cumsum(new | ~positive)  # a negative row is a run of its own, left out below
    rows = pd.DataFrame({"run": run, "key": key, "row": np.arange(n)}).loc[positive]
    runs = rows.groupby("run", sort=True).agg(key=("key", "first"), row=("row", "first"), n=("row", "size"))
    return runs.loc[runs["n"] >= length].groupby("key", sort=True)["row"].first()


def consecutive_use_relapse(weeks_frame: pd.DataFrame, *, weeks: int = 4) -> pd.DataFrame:
    """Trial-style relapse: ``weeks`` consecutive positive weeks (X:BOT: four, missed = positive).

    Returns one row per episode: ``episode_id, patient_id, relapse, week`` where ``week`` is
    the week at which the run began (the relapse week, as X:BOT dates it) or, without
    relapse, the last built week (censored). A week without a result breaks a run (use
    ``uds_weeks(missing="positive")`` for the trial rule). The same rule on the events, from
    admission, is ``RelapseDefinition(uds_rule="consecutive_weeks")``.
    """
    if isinstance(weeks, bool) or not isinstance(weeks, (int, np.integer)) or weeks < 1:
        raise ModelSpecificationError(f"consecutive_use_relapse: weeks must be a whole number >= 1, got {weeks!r}.")
    f = weeks_frame.sort_values(["episode_id", "patient_id", "week"], kind="stable").reset_index(drop=True)
    code = f.groupby(["episode_id", "patient_id"], sort=True).ngroup().to_numpy()
    wk = f["week"].to_numpy()
    starts = _first_runs(code, wk, f["positive"].to_numpy(dtype=float) == 1, int(weeks))
    per = f.groupby(code, sort=True).agg(episode_id=("episode_id", "first"), patient_id=("patient_id", "first"),
                                         last=("week", "last"))
    hit = per.index.isin(starts.index)
    start_week = pd.Series(wk[starts.to_numpy()], index=starts.index).reindex(per.index)
    return pd.DataFrame({"episode_id": per["episode_id"].to_numpy(), "patient_id": per["patient_id"].to_numpy(),
                         "relapse": hit.astype(int),
                         "week": np.where(hit, start_week.fillna(0).to_numpy(), per["last"].to_numpy()).astype(int)})


#: Columns of :func:`tlfb_endpoints`.
TLFB_COLUMNS = ("episode_id", "patient_id", "days_recorded", "days_abstinent", "percent_days_abstinent",
                "heavy_days", "percent_heavy_days", "first_heavy_day", "heavy_event")
#: Drinks in a day that make it a heavy-drinking day (NIAAA: 4 or more for women, 5 or more for men).
HEAVY_DRINKS = {"female": 4.0, "male": 5.0}


def tlfb_endpoints(use_days, episodes: pd.DataFrame, *, days: int = 90,
                   sex: pd.DataFrame | None = None, substance: str | None = None) -> pd.DataFrame:
    """Timeline Followback endpoints per episode over ``days`` days from admission.

    Parameters
    ----------
    use_days : pandas.DataFrame or IOPData
        One row per patient and recorded day (Timeline Followback): ``patient_id``,
        ``use_date``, ``used`` (bool), optional ``drinks`` (standard drinks that day) and
        ``substance``. Days without a row are not recorded (left out of every percentage,
        never counted as abstinent). An :class:`~iop_research.data.io.IOPData` is read for its optional
        ``use_days`` table (and, when ``sex`` is not given, its ``patients`` table for the thresholds).
    episodes : pandas.DataFrame
        ``episode_id, patient_id, admit_date`` (e.g. :func:`~iop_research.derive.build_episodes`).
    days : int, default 90
        Window: days ``0 .. days - 1`` from admission.
    sex : pandas.DataFrame, optional
        ``patient_id, sex`` (the patients table) for the heavy-day threshold (4 drinks for
        women, 5 for men, NIAAA); without it, or for other values, 5 is used.
    substance : str, optional
        Keep only rows of this substance (e.g. "alcohol").

    Returns
    -------
    pandas.DataFrame
        ``TLFB_COLUMNS``: ``percent_days_abstinent`` = days not used / days recorded x 100;
        ``heavy_days`` needs ``drinks``; ``first_heavy_day`` is the first heavy day (days
        from admission) with ``heavy_event = 1``, else the last recorded day with
        ``heavy_event = 0`` (censored), for time-to-first-heavy-day analyses.

    Raises
    ------
    DataValidationError
        Missing columns, duplicate patient-days, ``used`` missing, negative drinks, drinks
        on a day marked not used.
    """
    func = "tlfb_endpoints"
    if isinstance(use_days, IOPData):
        if use_days.use_days is None:
            raise DataValidationError(
                f"{func}: this IOPData has no use_days table (Timeline Followback); read a directory with a "
                "use_days.csv, or pass the table itself.")
        if sex is None:
            sex = use_days.patients
        use_days = use_days.use_days
    elif not isinstance(use_days, pd.DataFrame):
        raise DataValidationError(
            f"{func}: use_days must be a DataFrame or an IOPData with a use_days table, got {type(use_days).__name__}.")
    if isinstance(days, bool) or not isinstance(days, (int, np.integer)) or days < 1:
        raise ModelSpecificationError(f"{func}: days must be a whole number >= 1 (e.g. 90), got {days!r}.")
    lack = [c for c in ("patient_id", "use_date", "used") if c not in use_days.columns]
    if lack:
        raise DataValidationError(
            f"{func}: table 'use_days' lacks columns {format_ids(lack)}; it needs patient_id, use_date, used "
            "(and optionally drinks, substance).")
    lack = [c for c in (Col.episode_id, Col.patient_id, Col.admit_date) if c not in episodes.columns]
    if lack:
        raise DataValidationError(f"{func}: table 'episodes' lacks columns {format_ids(lack)}.")
    u = use_days if substance is None else use_days[use_days.get("substance", pd.Series(index=use_days.index,
                                                                                       dtype=object)) == substance]
    problems = []
    if u["used"].isna().any():
        problems.append(("used", u["used"].isna(), "is missing; record True/False for every recorded day"))
    dup = u.duplicated(["patient_id", "use_date"], keep=False)
    if dup.any():
        problems.append(("use_date", dup, "repeats a patient-day; keep one row per patient and day"))
    drinks = u["drinks"] if "drinks" in u.columns else None
    if drinks is not None:
        dn = pd.to_numeric(drinks, errors="coerce")
        neg = dn < 0
        if neg.any():
            problems.append(("drinks", neg, "is negative"))
        contradict = (dn > 0) & (u["used"] == False)  # noqa: E712 - pandas element-wise
        if contradict.any():
            problems.append(("drinks", contradict, "is above 0 on a day marked not used"))
    if problems:
        col, mask, what = problems[0]
        raise DataValidationError(
            f"{func}: table 'use_days', column {col!r} {what} ({int(mask.sum())} row(s), first rows "
            f"{format_ids(u.index[mask.to_numpy()][:5])}).")
    ep = episodes[[Col.episode_id, Col.patient_id, Col.admit_date]]
    j = ep.merge(u.assign(_day=_days(u["use_date"])), on=Col.patient_id, how="left")
    j["_off"] = j["_day"] - _days(j[Col.admit_date])
    j = j[(j["_off"] >= 0) & (j["_off"] < days)]
    thr = 5.0
    if sex is not None and "sex" in sex.columns:
        j = j.merge(sex[["patient_id", "sex"]].drop_duplicates("patient_id"), on="patient_id", how="left")
        j["_thr"] = j["sex"].map(HEAVY_DRINKS).fillna(thr)
    else:
        j["_thr"] = thr
    j["_used"] = j["used"].astype(bool)
    j["_heavy"] = (pd.to_numeric(j["drinks"], errors="coerce") >= j["_thr"]) if drinks is not None else False
    rows = []
    by = j.groupby([Col.episode_id, Col.patient_id], sort=True)
    for (eid, pid), g in by:
        n = len(g)
        abst = int((~g["_used"]).sum())
        heavy = g.loc[g["_heavy"].astype(bool), "_off"]
        rows.append((eid, pid, n, abst, 100.0 * abst / n, int(len(heavy)) if drinks is not None else np.nan,
                     100.0 * len(heavy) / n if drinks is not None else np.nan,
                     float(heavy.min()) if len(heavy) else float(g["_off"].max()), int(len(heavy) > 0)))
    out = pd.DataFrame(rows, columns=list(TLFB_COLUMNS))
    # episodes without any recorded day: present, with nothing recorded (never silently dropped)
    none = ep[~ep[Col.episode_id].isin(out["episode_id"])]
    if len(none):
        out = pd.concat([out, pd.DataFrame({"episode_id": none[Col.episode_id].to_numpy(),
                                            "patient_id": none[Col.patient_id].to_numpy(), "days_recorded": 0})],
                        ignore_index=True)
    return out[list(TLFB_COLUMNS)].sort_values("episode_id", ignore_index=True)


def impute_missed_weeks(weeks_frame: pd.DataFrame, *, m: int = 20, seed: int | np.random.Generator,
                        covariates: pd.DataFrame | None = None) -> list[pd.DataFrame]:
    """Multiple imputation of missed weekly screens (the third missed-screen rule, beside positive and missing).

    Parameters
    ----------
    weeks_frame : pandas.DataFrame
        :func:`uds_weeks` with ``missing="missing"`` (missed weeks have ``positive`` NaN).
    m : int, default 20
        Number of imputed frames.
    seed : int or numpy.random.Generator
        Source of randomness (the imputations are random draws; the seed makes them reproducible).
    covariates : pandas.DataFrame, optional
        Per-episode predictors (``episode_id`` plus numeric or 0/1 columns, e.g. severity, MAT), joined on
        ``episode_id``.

    Returns
    -------
    list of pandas.DataFrame
        ``m`` copies of ``weeks_frame`` with each missed week's ``positive`` drawn; observed weeks unchanged;
        ``attrs["imputation"]`` describes the model. Fit the analysis on each and pool with
        :func:`~iop_research.derive.impute.pool_rubin`.

    Notes
    -----
    The imputation model is a logistic regression, fitted on the observed weeks after the intake week, of a
    positive week on the week number, the previous and the next week's result (positive, negative, or
    unknown, as indicators) and ``covariates``. Each imputation draws the coefficients from their normal
    approximation N(beta_hat, V) and then each missed week from Bernoulli(p), as ``mice``'s ``logreg``
    method does (proper imputation). Adjacent missed weeks are imputed from their observed neighbours only.
    Missingness is assumed random given these predictors (MAR); when missed screens depend on use beyond
    them, as in the simulator's ``missed_screen_odds_after_relapse``, MI narrows but does not remove the gap.
    """
    from iop_research._logistic import fit_logistic  # noqa: PLC0415 - statsmodels only when imputing

    func = "impute_missed_weeks"
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 2:
        raise ModelSpecificationError(f"{func}: m must be a whole number >= 2 (e.g. 20), got {m!r}.")
    lack = [c for c in UDS_WEEK_COLUMNS if c not in weeks_frame.columns]
    if lack:
        raise DataValidationError(f"{func}: the frame lacks {format_ids(lack)}; pass uds_weeks(..., missing='missing').")
    if weeks_frame.attrs.get("missing") == "positive":
        raise ModelSpecificationError(
            f"{func}: the frame counts missed weeks as positive; build it with uds_weeks(..., missing='missing').")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    f = weeks_frame.sort_values(["episode_id", "week"]).reset_index(drop=True)
    y = f["positive"].to_numpy(dtype=float)
    same_prev = np.r_[False, (f["episode_id"].to_numpy()[1:] == f["episode_id"].to_numpy()[:-1])
                      & (f["week"].to_numpy()[1:] == f["week"].to_numpy()[:-1] + 1)]
    same_next = np.r_[same_prev[1:], False]
    prev = np.where(same_prev, np.r_[np.nan, y[:-1]], np.nan)
    nxt = np.where(same_next, np.r_[y[1:], np.nan], np.nan)
    cols = [np.ones(len(f)), f["week"].to_numpy(dtype=float),
            (prev == 1).astype(float), np.isnan(prev).astype(float),
            (nxt == 1).astype(float), np.isnan(nxt).astype(float)]
    names = ["(Intercept)", "week", "previous positive", "previous unknown", "next positive", "next unknown"]
    if covariates is not None:
        if "episode_id" not in covariates.columns:
            raise DataValidationError(f"{func}: covariates need an episode_id column.")
        cv = f[["episode_id"]].merge(covariates.drop_duplicates("episode_id"), on="episode_id", how="left")
        for c in covariates.columns.drop("episode_id"):
            v = pd.to_numeric(cv[c], errors="coerce").astype(float).to_numpy()
            if np.isnan(v).any():
                raise DataValidationError(
                    f"{func}: covariate {c!r} is missing or not numeric for {int(np.isnan(v).sum())} week(s); "
                    "impute or drop it first.")
            cols.append(v)
            names.append(str(c))
    x = np.column_stack(cols)
    fit_rows = ~np.isnan(y) & (f["week"].to_numpy() > 0)
    todo = np.isnan(y) & f["missed"].to_numpy(dtype=bool)
    fit = fit_logistic(y[fit_rows], x[fit_rows], func=func, what="imputation model", predicts="a positive week")
    beta, vcov = np.asarray(fit.params, dtype=float), np.asarray(fit.cov_params(), dtype=float)
    out = []
    for _ in range(m):
        b = rng.multivariate_normal(beta, vcov)
        p = 1.0 / (1.0 + np.exp(-(x[todo] @ b)))
        draw = y.copy()
        draw[todo] = (rng.random(int(todo.sum())) < p).astype(float)
        g = f.assign(positive=draw)
        g.attrs = {**weeks_frame.attrs, "missing": "imputed",
                   "imputation": f"logistic on {', '.join(names[1:])}; coefficients drawn from N(beta, V) (mice logreg)"}
        out.append(g)
    return out
