"""Target trial emulation by clone-censor-weight (CCW).

The question "does starting treatment (e.g. MOUD) within ``grace_days`` of IOP admission
lower the risk of relapse by day ``horizon_days``?" compares two *strategies* that are
both compatible with a person's data until they deviate from one of them. Assigning
people to a group by what they did later creates immortal time; CCW avoids it [1]_ [2]_:

1. **Clone**: every person enters both arms at time zero (admission).
2. **Censor**: a clone is censored artificially on the day its person deviates from the
   arm's strategy.
3. **Weight**: clones that remain are up-weighted by the inverse probability of remaining
   uncensored given baseline covariates (inverse probability of censoring weights, IPCW),
   estimated with a pooled logistic model of deviation on person-days within the grace
   period, on baseline covariates and, optionally, time-varying covariates given as a
   counting-process frame (``tv_frame``; the value in force on each day).

Weighted Kaplan-Meier curves per arm give the risks at ``horizon_days``, their difference
and ratio; confidence intervals come from the non-parametric bootstrap with people
resampled and the whole procedure (cloning, deviation model, weights, curves) repeated.

:func:`clone_censor_weight` compares "start within ``grace_days``" with "do not start";
:func:`sustained_treatment` uses the same machinery for the discontinuation question,
"stay on treatment at least ``sustain_days``" vs "stop within ``stop_grace_days``", with
the day treatment stopped in place of the day it started and a window per arm (the arm
that requires the change is censored at the end of its window, the arm that forbids it on
the change day). The conventions below are written for starting; read "stop" for "start"
there.

Conventions (days are whole days; intervals are ``(start, stop]`` as R's ``Surv``)
-----------------------------------------------------------------------------------
* ``treatment_time_col`` = day treatment started, ``0 <= T <= time`` (NaN = never started
  during follow-up). A start on day ``T`` changes exposure *after* ``T``: the interval
  ``(T - 1, T]`` is untreated (as ``tmerge``), so an event on the start day happened
  before treatment and counts in both arms.
* **Strategy "start"** (start within ``grace_days``, G): a clone that has not started by
  the end of day G is artificially censored at G (after any event on day G). Clones that
  start on a day ``T <= G`` follow the strategy for the rest of follow-up.
* **Strategy "no_start"** (do not start within G): a clone is artificially censored on its
  start day ``T`` if ``T <= G`` (after any event that day; a start on day 0 is censored
  at time 0 and contributes no person-time). Starting after G is compatible with it.
* Events, natural censoring and end of follow-up inside the grace period before any
  deviation are compatible with both strategies, so the person's outcome counts in both
  arms, each clone with its arm's weight on that day (Maringe et al. [3]_, Table 1;
  Hernan & Robins [1]_, ch. 22).
* Follow-up is truncated at ``horizon_days`` (later events are censored there).
* **Deviation model**: one row per person-day at risk of starting, days
  ``d = 0, ..., min(G, time, T)`` (day 0 = a start at time zero; day ``d >= 1`` = the
  interval ``(d - 1, d]``), outcome 1 on the start day; logistic regression (R
  ``glm(family = binomial)``) on the baseline covariates (coded by the package's design
  builder) plus ``d`` (``deviation_time="linear"``, default), ``d`` and ``d**2``
  (``"quadratic"``) or nothing (``"constant"``). ``p_d`` is the fitted daily probability
  of starting.
* **Weights** (unstabilised IPCW): "no_start" clones carry ``1 / prod_{u < d} (1 - p_u)``
  on ``(d - 1, d]`` for ``d <= G`` and ``1 / prod_{u <= G} (1 - p_u)`` after G. "start"
  clones carry 1 during the grace period (nobody is artificially censored there) and
  ``1 / (1 - prod_{u <= G} (1 - p_u))`` (one over the modelled probability of having
  started by G) after G, as in Maringe et al. [3]_ (``grace_weights="natural"``, default).
  With ``grace_weights="regime"`` the "start" clones carry, inside the grace period, the
  likelihood ratio of the regime "start on a day drawn from the natural start law given the
  covariates, conditional on starting by G" to the natural course: ``(pi - F_{d-1}) / (pi
  (1 - F_{d-1}))`` on ``(d - 1, d]`` while not yet started (``F_d = 1 - prod_{u <= d}
  (1 - p_u)``, ``pi = F_G``) and ``1 / pi`` from the start day on; the "start" risk is then
  the risk of that regime (see :func:`clone_censor_weight`).
* **What the "start" arm estimates** (measured in ``benchmarks/sim_ccw.py``, see
  ``benchmarks/README.md``): with weight 1 in the grace period, the "start" curve follows the
  *natural* course (people not yet, or never, on treatment) up to G and the strategy after it,
  i.e. the risk ``1 - S_nat(G) S_start(h) / S_start(G)``, not the risk of a regime in which
  everyone starts within G. The two agree when treatment cannot change the outcome inside the
  grace period (e.g. G no longer than a blanking period after admission, where relapse is not
  counted); with a longer G and an effect inside it, the "start" risk is pulled toward the
  natural course (by 0.010 at G = 30 days in the simulator's cohorts, 0.4 SD of the risk
  difference). Choose G with this in mind and say which estimand is reported, or use
  ``grace_weights="regime"``. The "no_start" arm is unaffected.
* **Curves**: weighted Kaplan-Meier per arm on the counting-process clone rows
  (:func:`~iop_research.survival.km.fit_km` with ``entry_col`` and ``weights_col``), equal
  to R ``survfit(Surv(start, stop, event) ~ 1, weights = w)``; risk = ``1 - S(horizon)``,
  risk difference ``start - no_start``, risk ratio ``start / no_start``.
* **Hazard ratio**: weighted pooled logistic regression of the event on person-days of the
  clones up to the horizon, ``event ~ strategy + t + t**2`` with ``t = day / horizon_days``
  (R ``glm(family = quasibinomial, weights = w)`` on person-day rows); its odds ratio
  approximates the hazard ratio when the daily risk is small.
* **Confidence intervals**: percentile bootstrap, people resampled with replacement, all
  steps repeated; the same ``seed`` gives identical intervals.

References
----------
.. [1] Hernan M.A., Robins J.M. (2016). Using big data to emulate a target trial when a
   randomized trial is not available. Am J Epidemiol 183:758-764; and Hernan M.A.,
   Robins J.M. (2020). Causal Inference: What If, ch. 22 (target trial emulation).
.. [2] Hernan M.A. (2018). How to estimate the effect of treatment duration on survival
   outcomes using observational data. BMJ 360:k182.
.. [3] Maringe C., Benitez Majano S., Exarchakou A., et al. (2020). Reflection on modern
   methods: trial emulation in the presence of immortal-time bias. Assessing the benefit
   of major surgery for elderly lung cancer patients using observational data. Int J
   Epidemiol 49:1719-1729.
.. [4] Cain L.E., Robins J.M., Lanoy E., et al. (2010). When to start treatment? A
   systematic approach to the comparison of dynamic regimes using observational data.
   Int J Biostat 6(2):18.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iop_research._design import build_design, check_identifiable
from iop_research._validate import (
    check_conf_level,
    duration_column,
    event_indicator,
    number_argument,
    require_frame,
    row_labels,
)
from iop_research._logistic import fit_logistic, newton_logistic
from iop_research.exceptions import ConvergenceError, EstimatorInputError, ModelSpecificationError, format_ids
from iop_research.results import TIDY_TERM_COLUMNS, Result
from iop_research.survival.km import fit_km

__all__ = [
    "clone_censor_weight",
    "sustained_treatment",
    "CcwResult",
    "CCW_TIDY_COLUMNS",
    "CCW_GLANCE_COLUMNS",
    "SUSTAINED_GLANCE_COLUMNS",
    "STRATEGIES",
]

#: The two strategies, in the order of ``tidy``.
STRATEGIES = ("start", "no_start")
#: Columns of :attr:`CcwResult.tidy`.
CCW_TIDY_COLUMNS = ("strategy", "time", "survival", "conf_low", "conf_high")
#: Columns of :attr:`CcwResult.glance`.
CCW_GLANCE_COLUMNS = (
    "risk_start",
    "risk_no_start",
    "risk_difference",
    "rd_conf_low",
    "rd_conf_high",
    "risk_ratio",
    "rr_conf_low",
    "rr_conf_high",
    "n",
    "n_events",
    "n_bootstrap",
    "horizon_days",
    "grace_days",
    "conf_level",
)
#: Columns of :func:`sustained_treatment`'s ``glance`` (contrast: sustain vs stop).
SUSTAINED_GLANCE_COLUMNS = (
    "risk_sustain",
    "risk_stop",
    "risk_difference",
    "rd_conf_low",
    "rd_conf_high",
    "risk_ratio",
    "rr_conf_low",
    "rr_conf_high",
    "n",
    "n_events",
    "n_bootstrap",
    "horizon_days",
    "sustain_days",
    "stop_grace_days",
    "conf_level",
)
_CLONE_COLUMNS = ("id", "strategy", "start", "stop", "event", "weight")
_DEVIATION_TIME = {"constant": 0, "linear": 1, "quadratic": 2}
_FUNC = "clone_censor_weight"
_GRACE_WEIGHTS = ("natural", "regime")


@dataclass(frozen=True, repr=False)
class CcwResult(Result):
    """Result of :func:`clone_censor_weight` (a :class:`~iop_research.results.Result`).

    Attributes
    ----------
    grace_days, horizon_days : int
        The grace period of the strategy that requires the treatment change (``grace_days``
        of :func:`clone_censor_weight`, ``stop_grace_days`` of :func:`sustained_treatment`)
        and the horizon of the emulated trial (days).
    seed : int or None
        The integer seed the bootstrap was drawn with (None if a Generator or nothing was
        given).
    """

    grace_days: int = 0
    horizon_days: int = 0
    seed: int | None = None


# --------------------------------------------------------------------------- input


def _whole_days(arr: np.ndarray, df: pd.DataFrame, col: str, role: str, func: str = _FUNC) -> None:
    ok = np.isnan(arr) | (arr == np.floor(arr))
    if not ok.all():
        bad = ~ok
        raise EstimatorInputError(
            f"{func}: column {col!r} ({role}) has {int(bad.sum())} value(s) that are not whole days "
            f"(rows: {row_labels(df, bad)}). The deviation model is per person-day; round the times up "
            f"(np.ceil) before calling {func}.",
            func=func, column=col, check="not_whole_days", n_rows=int(bad.sum()), rows=df.index[bad].tolist()[:5],
        )


def _treatment_times(df: pd.DataFrame, col: str, time: np.ndarray, func: str = _FUNC,
                     role: str = "treatment time") -> np.ndarray:
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)):
        raise EstimatorInputError(
            f"{func}: column {col!r} ({role}) must be numeric days since time zero (NaN = not during "
            f"follow-up), found dtype {s.dtype}. Convert it first, e.g. days since time zero.",
            func=func, column=col, check="dtype",
        )
    ta = s.to_numpy(dtype=float, na_value=np.nan)
    checks = (
        (np.isinf(ta), "infinite value(s)", "Use NaN when it did not happen during follow-up."),
        (ta < 0, "negative value(s)", "The day is before time zero: these people are not eligible for the emulated "
         "trial (e.g. prevalent users); exclude them explicitly (and count them) first."),
        (ta > time, "value(s) after the end of follow-up",
         "A day after the end of follow-up is not observed; set it to NaN (did not happen during follow-up)."),
    )
    for bad, problem, fix in checks:
        bad = np.asarray(bad & ~np.isnan(ta))
        if bad.any():
            raise EstimatorInputError(
                f"{func}: column {col!r} ({role}) has {int(bad.sum())} {problem} "
                f"(rows: {row_labels(df, bad)}). {fix}",
                func=func, column=col, check="treatment_time", n_rows=int(bad.sum()),
                rows=df.index[bad].tolist()[:5],
            )
    _whole_days(ta, df, col, role, func)
    return ta


def _whole_argument(value, name: str, *, positive: bool, func: str = _FUNC) -> int:
    x = number_argument(value, func, name, positive=positive, nonneg=not positive)
    if x != np.floor(x):
        raise ModelSpecificationError(f"{func}: {name} must be a whole number of days, got {value!r}.")
    return int(x)


# --------------------------------------------------------------------------- time-varying covariates


def _tv_fault(tv: pd.DataFrame, bad, *, func: str, col: str, problem: str, fix: str, check: str):
    bad = np.asarray(bad, dtype=bool)
    return EstimatorInputError(
        f"{func}: table tv_frame, column {col!r} has {int(bad.sum())} {problem} (rows: {row_labels(tv, bad)}). {fix}",
        func=func, column=col, check=check, n_rows=int(bad.sum()), rows=tv.index[bad].tolist()[:5],
    )


def _tv_days(tv_frame, tv_covariates, *, ids: pd.Series, time: np.ndarray, window: int, id_col: str,
             start_col: str, stop_col: str, func: str):
    """Time-varying covariates in force on each deviation day: ``(z, terms, labels)``.

    ``z[i, d, :]`` is the coded value of person ``i``'s covariates on day ``d = 0..window``: the
    row of ``tv_frame`` whose ``(start, stop]`` contains ``max(d, 1)`` (day ``d >= 1`` is the
    interval ``(d - 1, d]``; day 0, a start at time zero, takes the value of the first interval).
    Days after a person's follow-up are never used; they carry the last value forward.
    """
    if isinstance(tv_covariates, str):
        tv_covariates = [tv_covariates]
    tv_covariates = list(tv_covariates)
    if not tv_covariates:
        raise ModelSpecificationError(f"{func}: tv_covariates is empty; name the time-varying columns of tv_frame "
                                      "or leave tv_frame out.")
    if not isinstance(tv_frame, pd.DataFrame):
        raise EstimatorInputError(
            f"{func}: tv_frame must be a pandas DataFrame (counting-process rows {id_col}, {start_col}, {stop_col}, "
            f"covariates), got {type(tv_frame).__name__}.", func=func, check="not_a_frame")
    missing = [c for c in (id_col, start_col, stop_col, *tv_covariates) if c not in tv_frame.columns]
    if missing:
        raise EstimatorInputError(
            f"{func}: table tv_frame has no column(s) {format_ids(missing)} (columns: "
            f"{format_ids([str(c) for c in tv_frame.columns], limit=12)}). The counting-process frame needs the "
            f"person id ({id_col!r}, as id_col), the interval ({start_col!r}, {stop_col!r}] in days from time zero "
            "and the tv_covariates.", func=func, column=missing[0], check="missing_column")
    if len(tv_frame) == 0:
        raise EstimatorInputError(f"{func}: table tv_frame has no rows.", func=func, check="empty")
    tv = tv_frame
    bounds = {}
    for col in (start_col, stop_col):
        s = tv[col]
        if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            raise EstimatorInputError(
                f"{func}: table tv_frame, column {col!r} must be numeric days from time zero, found dtype {s.dtype}.",
                func=func, column=col, check="dtype")
        a = s.to_numpy(dtype=float, na_value=np.nan)
        if (~np.isfinite(a)).any():
            raise _tv_fault(tv, ~np.isfinite(a), func=func, col=col, problem="missing or infinite value(s)",
                            fix="Every interval needs both ends.", check="missing")
        if (a != np.floor(a)).any():
            raise _tv_fault(tv, a != np.floor(a), func=func, col=col, problem="value(s) that are not whole days",
                            fix="The deviation model is per person-day; give interval ends in whole days.",
                            check="not_whole_days")
        bounds[col] = a
    start, stop = bounds[start_col], bounds[stop_col]
    if (stop <= start).any():
        raise _tv_fault(tv, stop <= start, func=func, col=stop_col, problem=f"value(s) not after {start_col!r}",
                        fix="Intervals are (start, stop] with stop > start.", check="interval")
    pos = pd.Index(ids).get_indexer(tv[id_col])
    if (pos < 0).any():
        raise _tv_fault(tv, pos < 0, func=func, col=id_col, problem="id(s) that are not in frame",
                        fix=f"Keep only the rows of the cohort's people (ids {format_ids(tv[id_col][pos < 0].unique())})"
                        " or add those people to frame.", check="unknown_id")
    absent = np.setdiff1d(np.arange(len(ids)), pos)
    if len(absent):
        raise EstimatorInputError(
            f"{func}: table tv_frame, column {id_col!r} lacks {len(absent)} id(s) of frame (rows: "
            f"{format_ids(ids.index[absent].tolist())} of frame; ids {format_ids(ids.iloc[absent].tolist())}). Every "
            f"person needs time-varying covariate rows covering their deviation days (0..{window}, within follow-up).",
            func=func, column=id_col, check="missing_id", n_rows=len(absent), rows=ids.index[absent].tolist()[:5])
    outside = (start < 0) | (stop > time[pos])
    if outside.any():
        raise _tv_fault(tv, outside, func=func, col=start_col if (start < 0).any() else stop_col,
                        problem="interval(s) outside follow-up (start < 0 or stop after the person's time)",
                        fix="Clip the intervals to (0, time] of the person, or drop the rows outside it.",
                        check="outside_followup")
    order = np.lexsort((start, pos))
    same = pos[order][1:] == pos[order][:-1]
    overlap_sorted = same & (start[order][1:] < stop[order][:-1])
    if overlap_sorted.any():
        bad = np.zeros(len(tv), dtype=bool)
        bad[order[1:][overlap_sorted]] = True
        raise _tv_fault(tv, bad, func=func, col=start_col, problem="interval(s) overlapping the previous interval of "
                        "the same person", fix="Each day may be covered by one row only; split or merge the intervals.",
                        check="overlap")
    try:
        design = build_design(tv, covariates=tv_covariates, func=func)
    except EstimatorInputError as exc:
        msg = str(exc)
        msg = f"{func}: table tv_frame, {msg[len(func) + 2:]}" if msg.startswith(f"{func}: ") else msg
        raise EstimatorInputError(msg, func=func, column=exc.column, check=exc.check, n_rows=exc.n_rows,
                                  rows=exc.rows) from exc
    zrows = design.matrix
    n, k = len(ids), zrows.shape[1]
    points = max(window, 1)  # day d uses the time point max(d, 1): the interval (t - 1, t], t = 1..points
    z = np.zeros((n, points + 1, k))
    covered = np.zeros((n, points + 1), dtype=bool)
    lo = start.astype(np.int64) + 1
    hi = np.minimum(stop, points).astype(np.int64)
    cnt = np.maximum(hi - lo + 1, 0)
    r = np.repeat(np.arange(len(tv)), cnt)
    t = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)
    z[pos[r], t] = zrows[r]
    covered[pos[r], t] = True
    need = np.minimum(time, max(window, 1)).astype(np.int64)  # points 1..need are used
    gap = (np.arange(points + 1)[None, :] >= 1) & (np.arange(points + 1)[None, :] <= need[:, None]) & ~covered
    if gap.any():
        who = gap.any(axis=1)
        first_day = gap.argmax(axis=1)[who]
        raise EstimatorInputError(
            f"{func}: table tv_frame, columns {start_col!r}/{stop_col!r} leave {int(who.sum())} person(s) without a "
            f"value on some deviation day (rows: {format_ids(ids.index[who].tolist())} of frame; ids "
            f"{format_ids(ids.to_numpy()[who].tolist())}; first uncovered interval ({first_day[0] - 1}, "
            f"{first_day[0]}]). The rows of each person must cover (0, min(time, {max(window, 1)})] without gaps.",
            func=func, column=start_col, check="gap", n_rows=int(who.sum()), rows=ids.index[who].tolist()[:5])
    # carry the last value forward past the end of follow-up (never used, kept finite)
    idx = np.where(covered, np.arange(points + 1)[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    z = z[np.arange(n)[:, None], idx]
    z = np.concatenate([z[:, 1:2], z[:, 1 : window + 1]], axis=1)  # day 0 -> point 1; day d -> point d
    return z, list(design.terms), list(design.labels)


# --------------------------------------------------------------------------- core


def _time_terms(day: np.ndarray, degree: int) -> np.ndarray:
    return np.column_stack([day.astype(float) ** k for k in range(1, degree + 1)]) if degree else np.zeros((len(day), 0))


def _deviation_rows(time: np.ndarray, ta: np.ndarray, grace: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person-days at risk of starting within the grace period: (person index, day, started)."""
    last = np.minimum(np.minimum(time, grace), np.where(np.isnan(ta), np.inf, ta)).astype(np.int64)
    counts = last + 1  # days 0..last
    person = np.repeat(np.arange(len(time)), counts)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    day = np.arange(counts.sum()) - offsets
    started = (day == np.nan_to_num(ta, nan=-1.0)[person]).astype(float)
    return person, day, started


def _regime_parts(ta_inf, end1, ev1, surv_dev, g_event):
    """Rows of arm 0 with the regime's weights inside the grace period (``grace_weights="regime"``).

    With ``F_d = 1 - surv_dev[:, d]`` (P(changed on a day <= d)) and ``pi = F_G``: on the interval
    ``(d - 1, d]``, ``d <= min(T, end, G)`` (not yet changed: a change on day ``T`` alters exposure after
    ``T``, so the exposure history that decides ``(d - 1, d]`` is "no change on days 0..d-1"), the weight
    is ``P*(T* > d - 1) / P(T > d - 1) = (pi - F_{d-1}) / (pi (1 - F_{d-1}))``; from the change day on,
    ``(T, end]``, it is ``1 / pi``.
    """
    n = len(end1)
    pi = 1.0 - surv_dev[:, g_event]
    u = np.minimum(ta_inf, end1).astype(np.int64)  # untreated daily intervals (d - 1, d], d = 1..u
    person = np.repeat(np.arange(n), u)
    offsets = np.repeat(np.cumsum(u) - u, u)
    d = np.arange(u.sum()) - offsets + 1
    ev_daily = np.where(d == end1[person], ev1[person], 0.0)
    s_prev = surv_dev[person, d - 1]  # 1 - F_{d-1}
    with np.errstate(divide="ignore", invalid="ignore"):
        w_daily = (s_prev - surv_dev[person, g_event]) / (pi[person] * s_prev)
        later = np.flatnonzero(end1 > ta_inf)  # changed on a day T <= G and followed after it
        return [(person, (d - 1).astype(float), d.astype(float), ev_daily, w_daily),
                (later, ta_inf[later], end1[later], ev1[later], 1.0 / pi[later])]


def _clone_rows(time, event, ta, surv_dev, g_event, g_free, horizon, grace_weights="natural"):
    """Counting-process rows of both arms: dict of arrays (person, arm, start, stop, event, weight).

    ``arm`` 0 = the strategy that requires the treatment change (start, stop) on a day
    ``<= g_event``; 1 = the strategy that forbids it on days ``<= g_free`` (no_start, sustain).
    ``surv_dev[i, d] = prod_{u <= d} (1 - p_iu)``, d = 0..max(g_event, g_free).
    """
    n = len(time)
    yh = np.minimum(time, horizon)
    eh = np.where(time <= horizon, event, 0.0)
    ta_inf = np.nan_to_num(ta, nan=np.inf)

    # arm 0: weight 1 on (0, min(end, G)], then 1 / P(changed by G) on (G, end]
    changed = ta_inf <= g_event
    end1 = np.where(changed, yh, np.minimum(yh, g_event))
    ev1 = np.where(changed | (yh <= g_event), eh, 0.0)
    first = np.minimum(end1, g_event)
    later = np.flatnonzero(end1 > g_event)  # only people who changed within G (others stop at G)
    with np.errstate(divide="ignore"):
        parts = [(np.arange(n), np.zeros(n), first, np.where(end1 <= g_event, ev1, 0.0), np.ones(n)),
                 (later, np.full(len(later), float(g_event)), end1[later], ev1[later],
                  1.0 / (1.0 - surv_dev[later, g_event]))]
    if grace_weights == "regime":
        parts = _regime_parts(ta_inf, end1, ev1, surv_dev, g_event)
    arm1 = [np.concatenate(z) for z in zip(*parts)]

    # arm 1: censored on the change day if <= g_free; daily weights until g_free, constant after
    tai = np.where(ta_inf <= g_free, ta_inf, np.inf)
    end0 = np.minimum(yh, tai)
    ev0 = np.where(yh <= tai, eh, 0.0)
    nday = np.minimum(end0, g_free).astype(np.int64)  # daily intervals (d - 1, d], d = 1..nday
    person = np.repeat(np.arange(n), nday)
    offsets = np.repeat(np.cumsum(nday) - nday, nday)
    d = np.arange(nday.sum()) - offsets + 1
    ev_daily = np.where((d == end0[person]), ev0[person], 0.0)
    later0 = np.flatnonzero(end0 > g_free)
    parts0 = [(person, (d - 1).astype(float), d.astype(float), ev_daily, 1.0 / surv_dev[person, d - 1]),
              (later0, np.full(len(later0), float(g_free)), end0[later0], ev0[later0], 1.0 / surv_dev[later0, g_free])]
    arm0 = [np.concatenate(z) for z in zip(*parts0)]

    out = {}
    for key, a1, a0 in zip(("person", "start", "stop", "event", "weight"), arm1, arm0):
        out[key] = np.concatenate([a1, a0])
    out["arm"] = np.concatenate([np.zeros(len(arm1[0]), dtype=np.int64), np.ones(len(arm0[0]), dtype=np.int64)])
    keep = out["stop"] > out["start"]  # clones of people censored/ending at time 0 carry no person-time
    out = {k: v[keep] for k, v in out.items()}
    order = np.lexsort((out["start"], out["person"], out["arm"]))
    return {k: v[order] for k, v in out.items()}


def _person_day_totals(rows, horizon):
    """Weighted clones at risk and weighted events per (arm, day d = 1..horizon)."""
    at_risk = np.zeros((2, horizon + 2))
    events = np.zeros((2, horizon + 2))
    s = rows["start"].astype(np.int64)
    e = rows["stop"].astype(np.int64)
    np.add.at(at_risk, (rows["arm"], s + 1), rows["weight"])
    np.add.at(at_risk, (rows["arm"], e + 1), -rows["weight"])
    np.add.at(events, (rows["arm"], e), rows["weight"] * rows["event"])
    at_risk = np.cumsum(at_risk, axis=1)[:, 1 : horizon + 1]
    return at_risk, events[:, 1 : horizon + 1]


def _hr_cells(rows, horizon):
    """Cells of the weighted pooled logistic outcome model: (proportion, variance weight, design)."""
    at_risk, events = _person_day_totals(rows, horizon)
    arm = np.repeat([0.0, 1.0], horizon)
    t = np.tile(np.arange(1, horizon + 1) / horizon, 2)
    r = at_risk.ravel()
    ev = events.ravel()
    keep = r > 1e-12
    x = np.column_stack([np.ones(keep.sum()), 1.0 - arm[keep], t[keep], t[keep] ** 2])
    return np.clip(ev[keep] / r[keep], 0.0, 1.0), r[keep], x


def _survival_from_cells(rows, horizon):
    """Weighted Kaplan-Meier S(d), d = 0..horizon, per arm from the (arm, day) totals (whole days)."""
    at_risk, events = _person_day_totals(rows, horizon)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(events > 0, 1.0 - events / np.where(at_risk > 0, at_risk, 1.0), 1.0)
    return np.hstack([np.ones((2, 1)), np.cumprod(factor, axis=1)])


def _deviation_design(x, day, person, degree, z=None):
    zpart = z[person, day] if z is not None else np.zeros((len(day), 0))
    return np.column_stack([np.ones(len(day)), x[person], zpart, _time_terms(day, degree)])


def _weights_matrix(params, x, grace, degree, z=None):
    """``prod_{u <= d} (1 - p_u)`` for every person and day d = 0..G (``z``: time-varying covariates per day)."""
    k = 1 + x.shape[1]
    kz = z.shape[2] if z is not None else 0
    lin = (np.column_stack([np.ones(len(x)), x]) @ params[:k])[:, None] + (
        _time_terms(np.arange(grace + 1), degree) @ params[k + kz:])[None, :]
    if kz:
        lin = lin + z[:, : grace + 1, :] @ params[k : k + kz]
    return np.cumprod(1.0 - 1.0 / (1.0 + np.exp(-lin)), axis=1)


def _estimate(time, event, ta, x, g_event, g_free, horizon, degree, grid, func, labels, z=None,
              grace_weights="natural"):
    """The whole procedure on the full sample, with statsmodels fits and fit_km curves."""
    window = max(g_event, g_free)
    person, day, changed = _deviation_rows(time, ta, window)
    if not (ta <= g_event).any():
        raise ModelSpecificationError(
            f"{func}: nobody's treatment changes within {g_event} days; the strategy {labels[0]!r} is not observed. "
            "Check the treatment-time column or lengthen the grace period."
        )
    dev_fit = fit_logistic(changed, _deviation_design(x, day, person, degree, z), what="deviation model",
                           predicts="starting treatment", func=func, tol=1e-12)
    surv_dev = _weights_matrix(np.asarray(dev_fit.params), x, window, degree, z)
    rows = _clone_rows(time, event, ta, surv_dev, g_event, g_free, horizon, grace_weights)
    frame = pd.DataFrame({
        "strategy": pd.Categorical.from_codes(rows["arm"], categories=list(labels)),
        "start": rows["start"], "stop": rows["stop"], "event": rows["event"], "weight": rows["weight"],
    })
    km = fit_km(frame, duration_col="stop", event_col="event", entry_col="start", weights_col="weight",
                group_col="strategy", times=grid)
    at = km.extra["at_times"]
    surv = np.vstack([at.loc[at["group"] == s, "survival"].to_numpy() for s in labels])
    if surv.shape[1] != len(grid):
        raise ModelSpecificationError(f"{func}: one arm has no clone person-time; check the cohort.")
    y_hr, w_hr, x_hr = _hr_cells(rows, horizon)
    hr_fit = fit_logistic(y_hr, x_hr, what="weighted pooled logistic outcome model", predicts="the outcome",
                          weights=w_hr, func=func, tol=1e-12)
    return {"dev_fit": dev_fit, "hr_fit": hr_fit, "rows": rows, "surv": surv, "risk": 1.0 - surv[:, -1],
            "log_hr": float(hr_fit.params[1]), "km": km}


def _replicate(time, event, ta, x, g_event, g_free, horizon, degree, dev_start, hr_start, func=_FUNC, z=None,
               grace_weights="natural"):
    """One bootstrap replicate: the same steps with Newton fits and curves from the cell totals."""
    window = max(g_event, g_free)
    person, day, changed = _deviation_rows(time, ta, window)
    if not (ta <= g_event).any():
        raise ModelSpecificationError(f"{func}: nobody's treatment changes within {g_event} days in this resample.")
    params = newton_logistic(changed, _deviation_design(x, day, person, degree, z), dev_start,
                              what="deviation model", func=func)
    rows = _clone_rows(time, event, ta, _weights_matrix(params, x, window, degree, z), g_event, g_free, horizon,
                       grace_weights)
    surv = _survival_from_cells(rows, horizon)
    y_hr, w_hr, x_hr = _hr_cells(rows, horizon)
    log_hr = newton_logistic(y_hr, x_hr, hr_start, w_hr, what="weighted pooled logistic outcome model", func=func)[1]
    return surv, 1.0 - surv[:, -1], float(log_hr)


def _percentile(values: np.ndarray, alpha: float, axis: int = 0):
    return np.quantile(values, alpha / 2, axis=axis), np.quantile(values, 1 - alpha / 2, axis=axis)


# --------------------------------------------------------------------------- public


def clone_censor_weight(
    frame: pd.DataFrame,
    *,
    id_col: str,
    time_col: str,
    event_col: str,
    treatment_time_col: str,
    grace_days: int,
    covariates: Sequence[str],
    horizon_days: int,
    n_bootstrap: int = 200,
    seed: int | np.random.Generator | None = None,
    conf_level: float = 0.95,
    deviation_time: str = "linear",
    progress: bool | None = None,
    tv_frame: pd.DataFrame | None = None,
    tv_covariates: Sequence[str] = (),
    tv_start_col: str = "start",
    tv_stop_col: str = "stop",
    grace_weights: str = "natural",
) -> CcwResult:
    """Emulate a target trial of "start treatment within ``grace_days``" vs "do not" by CCW.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per person, follow-up from time zero (e.g. IOP admission). Not modified.
    id_col : str
        Person identifier, unique per row.
    time_col : str
        Days from time zero to the event or censoring, whole days ``> 0``.
    event_col : str
        1/``True`` = event (e.g. relapse), 0/``False`` = censored.
    treatment_time_col : str
        Day treatment started (whole days, ``0 <= T <= time``); NaN if it did not start
        during follow-up.
    grace_days : int
        Grace period G (days, ``>= 0``): the strategy "start" allows the start on any day
        ``0..G``; "no_start" forbids it on those days.
    covariates : sequence of str
        Baseline covariates of the deviation model (coded by the package's design builder:
        numeric as they are, categorical against the first level, as R's ``glm``). May be
        empty (then the model has the time terms only).
    horizon_days : int
        Day at which risks are compared (``> grace_days``); follow-up is truncated there.
    n_bootstrap : int, default 200
        Bootstrap replicates (people resampled with replacement, everything refitted). 0
        gives point estimates with NaN intervals.
    seed : int or numpy.random.Generator, optional
        Randomness of the bootstrap; the same integer seed gives identical intervals.
    conf_level : float, default 0.95
        Level of the percentile bootstrap intervals.
    deviation_time : {"linear", "constant", "quadratic"}, default "linear"
        Function of the day ``d`` in the deviation model: ``d``, none, or ``d + d**2``.
    progress : bool, optional
        Show a tqdm progress bar over bootstrap replicates; None (default) shows it when
        ``n_bootstrap >= 100``.
    tv_frame : pandas.DataFrame, optional
        Time-varying covariates of the deviation model as a counting-process frame: rows
        ``id_col, tv_start_col, tv_stop_col, *tv_covariates``, intervals ``(start, stop]``
        in whole days from time zero, within ``(0, time]`` of the person, not overlapping,
        covering every deviation day of every person (``(0, min(time, grace_days)]``).
        Day ``d >= 1`` of the model takes the row whose interval holds ``d`` (the value in
        force on ``(d - 1, d]``), day 0 the first interval's value. Rows are resampled with
        their person in the bootstrap. Not modified.
    tv_covariates : sequence of str, default ()
        Columns of ``tv_frame`` entering the deviation model (coded like ``covariates``).
    tv_start_col, tv_stop_col : str, default "start", "stop"
        Interval columns of ``tv_frame``.
    grace_weights : {"natural", "regime"}, default "natural"
        Weights of the "start" clones inside the grace period (the "no_start" arm and
        everything after G are the same for both).

        ``"natural"`` (Maringe et al. 2020): weight 1 until G. The "start" curve follows the
        natural course up to G and the strategy after it; it estimates
        ``1 - S_nat(G) S_start(h) / S_start(G)`` (see the module docstring), which equals the
        risk of the regime below only when treatment cannot change the outcome within G.

        ``"regime"``: the likelihood ratio of the regime "start on a day drawn from the
        natural start law given the covariates, conditional on starting by G" to the natural
        course (the grace-period regime of Wanis et al. 2024). With ``F_d = 1 - prod_{u<=d}
        (1 - p_u)`` (modelled probability of a start on a day ``<= d``) and ``pi = F_G``, a
        clone not yet started carries ``(pi - F_{d-1}) / (pi (1 - F_{d-1}))`` on
        ``(d - 1, d]``, ``d <= G`` (``F_{d-1}``: a start on day ``d`` changes exposure after
        ``d``, so ``(d - 1, d]`` depends only on no start on days ``0..d-1``; the weight on
        ``(G - 1, G]`` is ``p_G / pi``), and a clone that started on day ``T <= G`` carries
        ``1 / pi`` on ``(T, end]``. The "start" risk is then the risk of that regime, the
        same law of start days as the "start" arm of the data-generating strategy in
        :func:`iop_research.data.synth.strategy_risks`. The "start" clone rows are daily
        inside the grace period (until the start day). Used by the bootstrap too.

    Returns
    -------
    CcwResult
        ``tidy``: ``strategy, time, survival, conf_low, conf_high`` for each strategy
        ("start", "no_start") and each day ``0..horizon_days`` (weighted Kaplan-Meier,
        percentile bootstrap limits). ``glance`` (one row): ``risk_start, risk_no_start,
        risk_difference, rd_conf_low, rd_conf_high, risk_ratio, rr_conf_low, rr_conf_high,
        n, n_events, n_bootstrap, horizon_days, grace_days, conf_level`` (``n_events``:
        people with an event by the horizon). ``extra``:

        ``hazard_ratio``
            ``term, label, estimate, std_error, conf_low, conf_high, hazard_ratio,
            hr_conf_low, hr_conf_high``: the weighted pooled-logistic log hazard ratio of
            "start" vs "no_start" (bootstrap SD as ``std_error``, percentile limits).
        ``deviation_model``
            ``term, label, estimate, std_error, conf_low, conf_high, p_value`` of the pooled
            logistic model of starting (model-based, Wald).
        ``arms``
            ``strategy, n_clones, n_with_person_time, n_artificially_censored, n_events,
            weight_mean, weight_max`` (unweighted counts by the horizon; weights over clone
            rows after time zero).
        ``clones``
            The weighted clone rows ``id, strategy, start, stop, event, weight`` (counting
            process, ``(start, stop]``): the data of the weighted Kaplan-Meier curves.
        ``bootstrap``
            One row per replicate: ``replicate, risk_start, risk_no_start,
            risk_difference, risk_ratio, log_hazard_ratio``.

    Raises
    ------
    EstimatorInputError
        Missing columns; duplicated ids; times missing, not whole days or ``<= 0``;
        treatment times negative, after the end of follow-up or not whole days; events not
        0/1; missing covariate values. In ``tv_frame`` (the message names the table, the
        column and the first rows): missing columns, interval ends missing or not whole
        days, ``stop <= start``, ids not in ``frame`` or people of ``frame`` without rows,
        intervals outside follow-up, overlapping intervals, deviation days not covered.
    ModelSpecificationError
        Bad ``grace_days``, ``horizon_days`` (must exceed ``grace_days``), ``n_bootstrap``,
        ``conf_level``, ``seed`` or ``deviation_time``; nobody starting within the grace
        period; perfect separation in the deviation model.
    ConvergenceError
        A logistic model did not converge.

    See Also
    --------
    sustained_treatment : the same design for "stay on treatment at least N days" vs "stop".
    iop_research.designs.causal.landmark_analysis, iop_research.designs.causal.iptw,
    iop_research.survival.km.fit_km

    Notes
    -----
    The conventions (deviation day, events on the deviation day, follow-up ending inside
    the grace period, the weights) are stated in the module docstring and in
    ``result.conventions``. The R equivalent, written out with ``glm`` and ``survfit`` on
    the same clones, is ``tests/r/ccw.R``. With ``tv_frame`` the deviation model is
    ``started ~ baseline covariates + time-varying covariates in force that day + day``,
    and the weights multiply daily probabilities that change with the covariates. For the
    "start" arm the weight after the grace period, ``1 / P(started by G)``, multiplies
    the daily probabilities on every day ``0..G``, including the days after the person
    started: covariate values after the start enter it as recorded (a covariate that
    treatment changes is better given at its pre-treatment value, e.g. carried forward
    from the start day, in ``tv_frame``).

    References
    ----------
    .. [1] Hernan M.A., Robins J.M. (2016). Am J Epidemiol 183:758-764.
    .. [2] Maringe C. et al. (2020). Int J Epidemiol 49:1719-1729.
    .. [3] Hernan M.A. (2018). BMJ 360:k182.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(3)
    >>> n = 300
    >>> x = rng.normal(size=n)
    >>> ta = np.where(rng.random(n) < 0.5, rng.integers(0, 15, n), np.nan)
    >>> time = rng.integers(20, 120, n)
    >>> d = pd.DataFrame({"pid": np.arange(n), "days": time, "relapse": rng.integers(0, 2, n),
    ...                   "moud_day": np.where(ta <= time, ta, np.nan), "x": x})
    >>> res = clone_censor_weight(d, id_col="pid", time_col="days", event_col="relapse",
    ...                           treatment_time_col="moud_day", grace_days=14, covariates=["x"],
    ...                           horizon_days=90, n_bootstrap=20, seed=1)
    >>> list(res.glance.columns[:3])
    ['risk_start', 'risk_no_start', 'risk_difference']
    >>> bool(res.glance["rd_conf_low"].iloc[0] <= res.glance["risk_difference"].iloc[0])
    True
    """
    return _run(
        frame, func=_FUNC, id_col=id_col, time_col=time_col, event_col=event_col, change_col=treatment_time_col,
        change_role="treatment time", windows={"grace_days": grace_days}, g_event_arg="grace_days",
        g_free_arg="grace_days", labels=STRATEGIES, report_order=(0, 1), covariates=covariates,
        horizon_days=horizon_days, n_bootstrap=n_bootstrap, seed=seed, conf_level=conf_level,
        deviation_time=deviation_time, progress=progress, glance_columns=CCW_GLANCE_COLUMNS,
        tv=(tv_frame, tv_covariates, tv_start_col, tv_stop_col), grace_weights=grace_weights,
        method="Target trial emulation (clone-censor-weight)",
        strategies_text=lambda g1, g0: (
            f"'start': start treatment on a day 0..{g1} (grace_days); 'no_start': no start on days 0..{g0}. "
            "Every person is cloned into both arms at time zero."),
        deviation_text=(
            "day T of treatment start changes exposure after T ((T-1, T] untreated, as tmerge). 'start' clones not "
            "started by day G are censored at G; 'no_start' clones are censored on their start day T <= G. Events on "
            "the deviation day count (events before censorings, as R); outcomes inside the grace period before any "
            "deviation count in both arms (Maringe et al. 2020)."),
    )


def sustained_treatment(
    frame: pd.DataFrame,
    *,
    id_col: str,
    time_col: str,
    event_col: str,
    stop_time_col: str,
    sustain_days: int,
    stop_grace_days: int,
    covariates: Sequence[str],
    horizon_days: int,
    n_bootstrap: int = 200,
    seed: int | np.random.Generator | None = None,
    conf_level: float = 0.95,
    deviation_time: str = "linear",
    progress: bool | None = None,
    tv_frame: pd.DataFrame | None = None,
    tv_covariates: Sequence[str] = (),
    tv_start_col: str = "start",
    tv_stop_col: str = "stop",
) -> CcwResult:
    """Emulate a trial of "stay on treatment at least ``sustain_days``" vs "stop" by CCW.

    The discontinuation question (e.g. Williams et al. 2020 for buprenorphine): among people
    on treatment at time zero (e.g. day 180 of continuous MOUD), compare sustaining it with
    stopping it. Every person is cloned into both strategies and censored when they deviate:

    * **"sustain"**: do not stop on days ``0..sustain_days``. A clone is censored on the day
      treatment stopped if that is ``<= sustain_days`` (after any event that day); stopping
      later is compatible. Weights ``1 / prod_{u < d} (1 - p_u)`` on ``(d - 1, d]`` up to
      ``sustain_days``, constant after: time-varying inverse probability of censoring
      weights.
    * **"stop"**: stop on a day ``0..stop_grace_days``. A clone still on treatment at the end
      of day ``stop_grace_days`` is censored there; weight 1 until then and
      ``1 / (1 - prod_{u <= g} (1 - p_u))`` after it.

    ``p_d`` is the daily probability of stopping from a pooled logistic model on the
    person-days at risk of stopping (days ``0..min(max(sustain_days, stop_grace_days),
    time, stop day)``, outcome 1 on the stop day) with the baseline covariates. Everything
    else (curves, contrasts, bootstrap, hazard ratio) is as in
    :func:`clone_censor_weight`; the conventions are in the module docstring.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per person on treatment at time zero. Not modified.
    id_col, time_col, event_col : str
        As in :func:`clone_censor_weight` (whole days ``> 0`` from time zero).
    stop_time_col : str
        Day treatment stopped (whole days, ``0 <= stop <= time``); NaN if it did not stop
        during follow-up.
    sustain_days : int
        N: the "sustain" strategy forbids stopping on days ``0..N``.
    stop_grace_days : int
        g: the "stop" strategy requires stopping on a day ``0..g``.
    covariates : sequence of str
        Baseline covariates of the stopping model (may be empty).
    horizon_days : int
        Day of the risk comparison, ``> max(sustain_days, stop_grace_days)``.
    n_bootstrap, seed, conf_level, deviation_time, progress
        As in :func:`clone_censor_weight`.
    tv_frame, tv_covariates, tv_start_col, tv_stop_col
        Time-varying covariates of the stopping model, as in :func:`clone_censor_weight`
        (intervals must cover ``(0, min(time, max(sustain_days, stop_grace_days))]``).

    Returns
    -------
    CcwResult
        ``tidy``: ``strategy, time, survival, conf_low, conf_high`` for "sustain" and "stop",
        days ``0..horizon_days``. ``glance`` (one row): ``risk_sustain, risk_stop,
        risk_difference, rd_conf_low, rd_conf_high, risk_ratio, rr_conf_low, rr_conf_high,
        n, n_events, n_bootstrap, horizon_days, sustain_days, stop_grace_days, conf_level``
        (difference and ratio are sustain vs stop). ``extra``: ``hazard_ratio`` (term
        ``strategy[T.sustain]``), ``deviation_model`` (the stopping model), ``arms``,
        ``clones``, ``bootstrap`` (``risk_sustain, risk_stop, ...``), as in
        :func:`clone_censor_weight`.

    Raises
    ------
    EstimatorInputError
        As :func:`clone_censor_weight`, for ``stop_time_col`` (role "stop time").
    ModelSpecificationError
        As :func:`clone_censor_weight`; nobody stopping within ``stop_grace_days``.
    ConvergenceError
        A logistic model did not converge.

    See Also
    --------
    clone_censor_weight

    Notes
    -----
    Time-varying covariates of the stopping model (e.g. a recent positive urine screen) come
    in ``tv_frame`` as in :func:`clone_censor_weight`: the value in force on each day enters
    the pooled logistic model of stopping, so the "sustain" weights follow them day by day.

    References
    ----------
    .. [1] Hernan M.A. (2018). How to estimate the effect of treatment duration on survival
       outcomes using observational data. BMJ 360:k182.
    .. [2] Williams A.R., Samples H., Crystal S., Olfson M. (2020). Acute care, prescription
       opioid use, and overdose following discontinuation of long-term buprenorphine
       treatment for opioid use disorder. Am J Psychiatry 177:117-124.
    .. [3] Maringe C. et al. (2020). Int J Epidemiol 49:1719-1729.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(4)
    >>> n = 300
    >>> x = rng.normal(size=n)
    >>> stop = np.where(rng.random(n) < 0.6, rng.integers(0, 60, n), np.nan)
    >>> time = rng.integers(30, 200, n)
    >>> d = pd.DataFrame({"pid": np.arange(n), "days": time, "overdose": rng.integers(0, 2, n),
    ...                   "stop_day": np.where(stop <= time, stop, np.nan), "x": x})
    >>> res = sustained_treatment(d, id_col="pid", time_col="days", event_col="overdose",
    ...                           stop_time_col="stop_day", sustain_days=30, stop_grace_days=14,
    ...                           covariates=["x"], horizon_days=180, n_bootstrap=10, seed=1)
    >>> res.tidy["strategy"].unique().tolist()
    ['sustain', 'stop']
    >>> list(res.glance.columns[:3])
    ['risk_sustain', 'risk_stop', 'risk_difference']
    """
    return _run(
        frame, func="sustained_treatment", id_col=id_col, time_col=time_col, event_col=event_col,
        change_col=stop_time_col, change_role="stop time",
        windows={"sustain_days": sustain_days, "stop_grace_days": stop_grace_days},
        g_event_arg="stop_grace_days", g_free_arg="sustain_days", labels=("stop", "sustain"), report_order=(1, 0),
        covariates=covariates, horizon_days=horizon_days, n_bootstrap=n_bootstrap, seed=seed,
        conf_level=conf_level, deviation_time=deviation_time, progress=progress,
        tv=(tv_frame, tv_covariates, tv_start_col, tv_stop_col), glance_columns=SUSTAINED_GLANCE_COLUMNS,
        method="Target trial emulation of sustained treatment (clone-censor-weight)",
        strategies_text=lambda g1, g0: (
            f"'sustain': do not stop treatment on days 0..{g0} (sustain_days); 'stop': stop on a day 0..{g1} "
            "(stop_grace_days). Every person is cloned into both arms at time zero."),
        deviation_text=(
            "day T of stopping changes exposure after T ((T-1, T] still on treatment). 'stop' clones still on "
            "treatment at the end of day g are censored at g; 'sustain' clones are censored on their stop day "
            "T <= N. Events on the deviation day count (events before censorings, as R); outcomes before any "
            "deviation count in both arms (Maringe et al. 2020)."),
    )


def _run(frame, *, func, id_col, time_col, event_col, change_col, change_role, windows, g_event_arg, g_free_arg,
         labels, report_order, covariates, horizon_days, n_bootstrap, seed, conf_level, deviation_time, progress,
         glance_columns, method, strategies_text, deviation_text, tv=(None, (), "start", "stop"),
         grace_weights="natural") -> CcwResult:
    """Shared body of the public designs. ``labels`` are the internal arms (0: change within the window,
    1: no change within the window); ``report_order`` is the order of tidy rows and of the contrast
    (first minus second)."""
    conf_level = check_conf_level(conf_level, func)
    win = {name: _whole_argument(value, name, positive=False, func=func) for name, value in windows.items()}
    g_event, g_free = win[g_event_arg], win[g_free_arg]
    window = max(g_event, g_free)
    horizon = _whole_argument(horizon_days, "horizon_days", positive=True, func=func)
    if horizon <= window:
        names = " and ".join(f"{k} ({v})" for k, v in win.items())
        raise ModelSpecificationError(
            f"{func}: horizon_days ({horizon}) must be later than {names}; the strategies only differ after the "
            "grace period."
        )
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ModelSpecificationError(f"{func}: n_bootstrap must be an integer >= 0, got {n_bootstrap!r}.")
    if deviation_time not in _DEVIATION_TIME:
        raise ModelSpecificationError(
            f"{func}: deviation_time must be one of {tuple(_DEVIATION_TIME)}, got {deviation_time!r}."
        )
    if not isinstance(seed, (type(None), int, np.integer, np.random.Generator)) or isinstance(seed, bool):
        raise ModelSpecificationError(f"{func}: seed must be an int or a numpy Generator, got {seed!r}.")
    degree = _DEVIATION_TIME[deviation_time]
    if not isinstance(grace_weights, str) or grace_weights not in _GRACE_WEIGHTS:
        raise ModelSpecificationError(
            f"{func}: grace_weights must be one of {_GRACE_WEIGHTS}, got {grace_weights!r}."
        )
    if isinstance(covariates, str):
        covariates = [covariates]
    change_arg = "stop_time_col" if change_role == "stop time" else "treatment_time_col"
    require_frame(frame, func, {"id_col": id_col, "time_col": time_col, "event_col": event_col,
                                change_arg: change_col, "covariates": covariates})
    ids = frame[id_col]
    dup = ids.duplicated(keep=False).to_numpy()
    if ids.isna().any() or dup.any():
        bad = dup | ids.isna().to_numpy()
        raise EstimatorInputError(
            f"{func}: column {id_col!r} (id) has {int(bad.sum())} missing or duplicated value(s) (rows: "
            f"{row_labels(frame, bad)}; ids {format_ids(ids[bad].unique().tolist())}). The frame must have one row "
            "per person; aggregate or split episodes before cloning.",
            func=func, column=id_col, check="duplicated", n_rows=int(bad.sum()), rows=frame.index[bad].tolist()[:5],
        )
    time = duration_column(frame, time_col, func=func)
    zero = time <= 0
    if zero.any():
        raise EstimatorInputError(
            f"{func}: column {time_col!r} (duration) has {int(zero.sum())} value(s) of 0 (rows: "
            f"{row_labels(frame, zero)}). Follow-up must start at time zero and last at least one day; exclude "
            "people with no follow-up explicitly (and count them) before cloning.",
            func=func, column=time_col, check="zero_duration", n_rows=int(zero.sum()),
            rows=frame.index[zero].tolist()[:5],
        )
    _whole_days(time, frame, time_col, "duration", func)
    event = event_indicator(frame, event_col, func=func)
    ta = _treatment_times(frame, change_col, time, func, change_role)
    covariates = list(covariates)
    if covariates:
        design = build_design(frame, covariates=covariates, func=func)
        check_identifiable(design.matrix, design.terms, func=func)
        x, terms, term_labels = design.matrix, list(design.terms), list(design.labels)
    else:
        x, terms, term_labels = np.zeros((len(frame), 0)), [], []
    tv_frame, tv_covariates, tv_start_col, tv_stop_col = tv
    z, tv_terms, tv_labels = None, [], []
    if tv_frame is not None or (tv_covariates is not None and len(tv_covariates)):
        if tv_frame is None:
            raise ModelSpecificationError(f"{func}: tv_covariates {list(tv_covariates)!r} given without tv_frame; pass "
                                          "the counting-process frame that holds them.")
        z, tv_terms, tv_labels = _tv_days(tv_frame, tv_covariates, ids=ids, time=time, window=window, id_col=id_col,
                                          start_col=tv_start_col, stop_col=tv_stop_col, func=func)
        clash = sorted(set(tv_terms) & set(terms))
        if clash:
            raise ModelSpecificationError(f"{func}: {clash} are both baseline and time-varying covariates; name each "
                                          "column once.")

    grid = np.arange(horizon + 1, dtype=float)
    fit = _estimate(time, event, ta, x, g_event, g_free, horizon, degree, grid, func, labels, z=z,
                    grace_weights=grace_weights)
    dev_start, hr_start = np.asarray(fit["dev_fit"].params), np.asarray(fit["hr_fit"].params)

    # ------------------------------------------------------------------ bootstrap
    alpha = 1.0 - conf_level
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = len(frame)
    boot_surv = np.empty((n_bootstrap, 2, len(grid)))
    boot = np.empty((n_bootstrap, 3))  # risk arm 0, risk arm 1, log HR arm 0 vs arm 1
    if progress is None:
        progress = n_bootstrap >= 100
    bar = None
    if progress and n_bootstrap:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=n_bootstrap, desc=func, unit="replicate")
    try:
        for b in range(n_bootstrap):
            idx = rng.integers(0, n, n)
            try:
                surv_b, risk_b, lhr_b = _replicate(time[idx], event[idx], ta[idx], x[idx], g_event, g_free, horizon,
                                                   degree, dev_start, hr_start, func,
                                                   z=None if z is None else z[idx], grace_weights=grace_weights)
            except (ModelSpecificationError, ConvergenceError) as exc:
                raise type(exc)(f"{func}: bootstrap replicate {b + 1} of {n_bootstrap} failed: {exc}") from exc
            boot_surv[b] = surv_b
            boot[b] = (*risk_b, lhr_b)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    first, second = report_order
    sign = 1.0 if first == 0 else -1.0  # the internal log HR is arm 0 vs arm 1
    nan2 = (np.full(len(grid), np.nan), np.full(len(grid), np.nan))
    tidy_parts = []
    for a in report_order:
        lo, hi = _percentile(boot_surv[:, a, :], alpha) if n_bootstrap else nan2
        tidy_parts.append(pd.DataFrame({"strategy": labels[a], "time": grid, "survival": fit["surv"][a],
                                        "conf_low": lo, "conf_high": hi}))
    tidy = pd.concat(tidy_parts, ignore_index=True)[list(CCW_TIDY_COLUMNS)]

    r1, r0 = fit["risk"][first], fit["risk"][second]
    rd_b = boot[:, first] - boot[:, second]
    lhr_b = sign * boot[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        rr_b = boot[:, first] / boot[:, second]
        rr = r1 / r0 if r0 > 0 else np.nan
    if n_bootstrap:
        rd_lo, rd_hi = _percentile(rd_b, alpha)
        rr_lo, rr_hi = _percentile(rr_b, alpha)
        lhr_lo, lhr_hi = _percentile(lhr_b, alpha)
        lhr_se = float(np.std(lhr_b, ddof=1)) if n_bootstrap > 1 else np.nan
    else:
        rd_lo = rd_hi = rr_lo = rr_hi = lhr_lo = lhr_hi = lhr_se = np.nan
    n_events = int(((time <= horizon) & (event == 1)).sum())
    glance = pd.DataFrame([{
        f"risk_{labels[first]}": r1, f"risk_{labels[second]}": r0, "risk_difference": r1 - r0,
        "rd_conf_low": float(rd_lo), "rd_conf_high": float(rd_hi),
        "risk_ratio": float(rr), "rr_conf_low": float(rr_lo), "rr_conf_high": float(rr_hi),
        "n": n, "n_events": n_events, "n_bootstrap": int(n_bootstrap),
        "horizon_days": horizon, **win, "conf_level": conf_level,
    }])[list(glance_columns)]

    lhr = sign * fit["log_hr"]
    hazard_ratio = pd.DataFrame([{
        "term": f"strategy[T.{labels[first]}]", "label": f"Strategy: {labels[first]} (vs {labels[second]})",
        "estimate": lhr, "std_error": lhr_se, "conf_low": float(lhr_lo), "conf_high": float(lhr_hi),
        "hazard_ratio": float(np.exp(lhr)), "hr_conf_low": float(np.exp(lhr_lo)),
        "hr_conf_high": float(np.exp(lhr_hi)),
    }])

    dev = fit["dev_fit"]
    z = stats.norm.ppf(0.5 + conf_level / 2.0)
    params, bse = np.asarray(dev.params), np.asarray(dev.bse)
    time_names = ["day", "I(day ** 2)"][:degree]
    deviation_model = pd.DataFrame({
        "term": ["(Intercept)", *terms, *tv_terms, *time_names],
        "label": ["(Intercept)", *term_labels, *tv_labels, *["Day", "Day squared"][:degree]],
        "estimate": params, "std_error": bse, "conf_low": params - z * bse, "conf_high": params + z * bse,
        "p_value": np.asarray(dev.pvalues),
    })[list(TIDY_TERM_COLUMNS)]

    rows = fit["rows"]
    order_labels = [labels[a] for a in report_order]
    clones = pd.DataFrame({
        "id": ids.to_numpy()[rows["person"]],
        "strategy": pd.Categorical(np.asarray(labels, dtype=object)[rows["arm"]], categories=order_labels),
        "start": rows["start"], "stop": rows["stop"], "event": rows["event"], "weight": rows["weight"],
    })[list(_CLONE_COLUMNS)]
    ta_inf = np.nan_to_num(ta, nan=np.inf)
    yh = np.minimum(time, horizon)
    art = {
        0: int(((ta_inf > g_event) & (yh > g_event)).sum()),
        # an arm-1 clone whose event falls on its change day is not counted as artificially censored
        1: int(((ta_inf <= g_free) & ~((ta == yh) & (time <= horizon) & (event == 1))).sum()),
    }
    arm_rows = []
    for a in report_order:
        m = rows["arm"] == a
        arm_rows.append({
            "strategy": labels[a], "n_clones": n, "n_with_person_time": int(len(np.unique(rows["person"][m]))),
            "n_artificially_censored": art[a], "n_events": int(rows["event"][m].sum()),
            "weight_mean": float(rows["weight"][m].mean()), "weight_max": float(rows["weight"][m].max()),
        })
    bootstrap = pd.DataFrame({
        "replicate": np.arange(1, n_bootstrap + 1), f"risk_{labels[first]}": boot[:, first],
        f"risk_{labels[second]}": boot[:, second], "risk_difference": rd_b, "risk_ratio": rr_b,
        "log_hazard_ratio": lhr_b,
    })
    conventions = {
        "strategies": strategies_text(g_event, g_free),
        "deviation": deviation_text,
        "deviation_model": "pooled logistic regression on person-days d = 0..min(window, time, T) at risk of the "
        f"treatment change, outcome = change on day d; covariates + time terms '{deviation_time}'; statsmodels GLM "
        "= R glm(family = binomial)",
        "time_varying": "none" if z is None else (
            f"time-varying covariates {tv_terms} from tv_frame (counting-process rows (start, stop]): day d >= 1 of the "
            "deviation model takes the row whose interval contains d, i.e. the value in force on (d-1, d]; day 0 "
            "takes the first interval's value (as R: merge person-days with the interval rows, start < max(d, 1) "
            "<= stop); the rows are resampled with their person in the bootstrap"),
        "weights": f"unstabilised IPCW: '{labels[1]}' 1/prod_{{u<d}}(1-p_u) on (d-1, d], constant after day {g_free}; "
        + (f"'{labels[0]}' 1 until day {g_event}, 1/(1 - prod_{{u<={g_event}}}(1-p_u)) after it"
           if grace_weights == "natural" else
           f"'{labels[0]}' (grace_weights='regime', pi = 1 - prod_{{u<={g_event}}}(1-p_u), F_d = 1 - "
           "prod_{u<=d}(1-p_u)): not yet changed on (d-1, d], d <= G: (pi - F_{d-1}) / (pi (1 - F_{d-1})); from the "
           "change day T on, (T, .]: 1/pi (likelihood ratio of the regime 'change drawn from the natural law given "
           "the covariates, conditional on a change by G' to the natural course)"),
        "curves": "weighted Kaplan-Meier per arm on (start, stop] clone rows = R survfit(Surv(start, stop, event) ~ "
        "1, weights = w); follow-up truncated at horizon_days",
        "contrast": f"risk = 1 - S(horizon); risk_difference = {labels[first]} - {labels[second]}; risk_ratio = "
        f"{labels[first]} / {labels[second]}",
        "hazard_ratio": "weighted pooled logistic event ~ strategy + t + t^2 (t = day / horizon) on clone "
        "person-days = R glm(family = quasibinomial, weights = w); odds ratio ~ hazard ratio for small daily risks",
        "ci": f"percentile bootstrap at level {conf_level}, {n_bootstrap} replicates, people resampled with "
        "replacement and every step refitted",
    }
    return CcwResult(
        method=method,
        tidy=tidy,
        glance=glance,
        model=dev,
        extra={"hazard_ratio": hazard_ratio, "deviation_model": deviation_model, "arms": pd.DataFrame(arm_rows),
               "clones": clones, "bootstrap": bootstrap},
        conventions=conventions,
        grace_days=g_event,
        horizon_days=horizon,
        seed=int(seed) if isinstance(seed, (int, np.integer)) else None,
    )
