"""Kaplan-Meier curves, (weighted, stratified) log-rank tests and restricted mean survival time.

Own numpy estimators, vectorised with sorting and cumulative sums, validated number for
number against R's ``survival`` 3.5 (``survfit``, ``survdiff``, ``print(survfit, rmean=)``);
see ``tests/test_km.py`` and ``tests/r/km_*.R``. They exist because lifelines computes
weighted numbers at risk incorrectly (lifelines issue #1286), uses the log-log CI by default
where R uses log, has no G(rho, gamma) or stratified k-group log-rank with R's variance, and is
slow on millions of rows.

The lead re-exports the public functions from :mod:`iop_research.survival`.

Conventions (stated next to R's)
--------------------------------
* Time is in days (any unit works; results are in the unit of ``duration_col``). Durations
  must be finite and ``>= 0``; time 0 is allowed, as in R's ``Surv``. Times are compared
  exactly (R's ``timefix=TRUE`` only merges times that differ by rounding error, which never
  happens with whole days).
* Risk set at time ``t`` is ``entry < t <= duration`` (R's ``Surv(entry, time, event)``;
  without ``entry_col``, everybody is at risk from ``-inf``).
* Case weights: numbers at risk, events and censorings are weighted sums. Zero-weight rows
  are kept (they contribute time points with zero counts, as in R); they are never dropped.
* Variance of the Kaplan-Meier estimate: Greenwood, with weighted counts. R's ``survfit``
  uses the same for integer weights; for non-integer weights R switches to the robust
  infinitesimal-jackknife variance, so compare with ``survfit(..., robust=FALSE)``.
* Confidence intervals: ``conf_type="log"`` is R's default (``exp(log S +- z se)``, upper
  limit capped at 1); ``"log-log"`` is lifelines' default; ``"plain"`` is ``S +- z se(S)``
  clipped to [0, 1]. Limits are NaN where R gives NA (S = 0; S = 1 for log-log).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iop_research.results import (
    GLANCE_TEST_COLUMNS,
    TIDY_KM_COLUMNS,
    TIDY_TERM_COLUMNS,
    Result,
)
from iop_research._validate import (
    check_conf_level,
    days_argument,
    duration_column,
    entry_column,
    event_indicator,
    label_codes,
    require_frame,
    weights_column,
)
from iop_research.exceptions import ModelSpecificationError, format_ids

__all__ = ["fit_km", "logrank_test", "rmst"]

_CONF_TYPES = ("log", "log-log", "plain")
_MEDIAN_COLUMNS = ("group", "median", "conf_low", "conf_high")
_LOGRANK_COLUMNS = ("group", "n", "observed", "expected", "o_minus_e", "variance")
_TOL_ZERO = 1e-12  # relative tolerance under which n_at_risk - n_events counts as 0


# --------------------------------------------------------------------------------------
# input: parsed by the package's one validation policy (iop_research._validate)
# --------------------------------------------------------------------------------------
def _prepare(
    df: pd.DataFrame,
    func: str,
    *,
    duration_col: str,
    event_col: str,
    group_col: str | None = None,
    weights_col: str | None = None,
    entry_col: str | None = None,
    strata_col: str | None = None,
) -> dict[str, Any]:
    require_frame(
        df,
        func,
        {
            "duration_col": duration_col,
            "event_col": event_col,
            "group_col": group_col,
            "weights_col": weights_col,
            "entry_col": entry_col,
            "strata_col": strata_col,
        },
    )
    time = duration_column(df, duration_col, func=func)
    event = event_indicator(df, event_col, func=func)
    weight = weights_column(df, weights_col, func=func) if weights_col is not None else np.ones_like(time)
    entry = None
    if entry_col is not None:
        entry = entry_column(df, entry_col, time, func=func, duration_col=duration_col)
    out: dict[str, Any] = {"time": time, "event": event, "weight": weight, "entry": entry}
    if group_col is not None:
        out["gcode"], out["glevels"] = label_codes(df, group_col, func=func, role="group")
    else:
        out["gcode"], out["glevels"] = np.zeros(len(time), dtype=np.int64), ["all"]
    if strata_col is not None:
        out["scode"], out["slevels"] = label_codes(df, strata_col, func=func, role="strata")
    else:
        out["scode"], out["slevels"] = np.zeros(len(time), dtype=np.int64), [None]
    return out


def _split(codes: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """Row indices of each level (stable)."""
    if n_levels == 1:
        return [np.arange(len(codes))]
    small = codes.astype(np.uint8 if n_levels <= 255 else np.uint16 if n_levels <= 65535 else np.int64)
    order = np.argsort(small, kind="stable")  # radix sort for small integer types
    bounds = np.searchsorted(codes[order], np.arange(n_levels + 1), side="left")
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_levels)]


def _z(conf_level: float, func: str) -> float:
    conf_level = check_conf_level(conf_level, func)
    return float(stats.norm.ppf(1 - (1 - conf_level) / 2))


# --------------------------------------------------------------------------------------
# Kaplan-Meier core
# --------------------------------------------------------------------------------------
def _km_table(time, event, weight, entry=None) -> dict[str, np.ndarray]:
    """One Kaplan-Meier curve at every distinct time (events and censorings).

    Returns times, weighted n_at_risk / n_events / n_censored, survival and the Greenwood
    variance of log S (R's ``survfit()$std.err`` squared).
    """
    ut, inv = np.unique(time, return_inverse=True)
    m = len(ut)
    n_event = np.bincount(inv, weights=weight * event, minlength=m)
    n_cens = np.bincount(inv, weights=weight * (1.0 - event), minlength=m)
    n_total = np.bincount(inv, weights=weight, minlength=m)
    order = None
    if entry is None:
        n_risk = np.cumsum(n_total[::-1])[::-1]
    else:
        order = np.argsort(entry, kind="stable")
        cum_entry = np.concatenate(([0.0], np.cumsum(weight[order])))
        entered = cum_entry[np.searchsorted(entry[order], ut, side="left")]
        exited_before = np.concatenate(([0.0], np.cumsum(n_total)[:-1]))
        n_risk = entered - exited_before
    remaining = n_risk - n_event
    remaining = np.where(np.abs(remaining) <= _TOL_ZERO * np.maximum(n_risk, 1.0), 0.0, remaining)
    has_event = n_event > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(has_event, remaining / np.where(has_event, n_risk, 1.0), 1.0)
        term = np.where(has_event, n_event / (n_risk * remaining), 0.0)
    surv = np.cumprod(factor)
    var_log = np.cumsum(term)
    return {
        "time": ut,
        "n_at_risk": n_risk,
        "n_events": n_event,
        "n_censored": n_cens,
        "survival": surv,
        "var_log": var_log,
        "_inverse": inv,  # row -> index of its time (reused by the robust variance)
        "_entry_order": order,
    }


def _km_robust_var_log(time, event, weight, entry, tab) -> np.ndarray:
    """Infinitesimal-jackknife variance of log S(t), each row its own cluster.

    R ``survfit(..., robust=TRUE)`` (its default for non-integer case weights). The
    influence of row i on log S(t) is ``U_i(t) = sum_j [d_j Y_ij / (n_j (n_j - d_j)) -
    dN_ij / (n_j - d_j)]`` over event times ``t_j <= t``; the variance is
    ``sum_i w_i**2 U_i(t)**2``, expanded into cumulative sums (no n x m matrix).
    """
    ut = tab["time"]
    m = len(ut)
    nr, nd = tab["n_at_risk"], tab["n_events"]
    G = tab["var_log"]  # cumulative sum of d / (n (n - d)): Greenwood's sum
    k = tab["_inverse"]  # exit-time index of each row
    w2 = weight**2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if entry is None:
            g_entry = np.zeros_like(time)
        else:
            e_idx = np.searchsorted(ut, entry, side="right") - 1  # last time <= entry
            g_entry = np.where(e_idx >= 0, G[np.maximum(e_idx, 0)], 0.0)
        jump = np.where(event > 0, 1.0 / (nr[k] - nd[k]), 0.0)
        jump = np.where((event > 0) & (weight == 0), 0.0, jump)
        c = G[k] - g_entry - jump
        done = np.cumsum(np.bincount(k, weights=np.where(w2 > 0, w2 * c**2, 0.0), minlength=m))
        out_w = [np.cumsum(np.bincount(k, weights=w2 * g_entry**p, minlength=m)) for p in (0, 1, 2)]
        if entry is None:
            in_w = [np.full(m, w2.sum()), np.zeros(m), np.zeros(m)]
        else:
            order = tab["_entry_order"]
            pos = np.searchsorted(entry[order], ut, side="left")  # rows with entry < t
            in_w = [np.concatenate(([0.0], np.cumsum((w2 * g_entry**p)[order])))[pos] for p in (0, 1, 2)]
        W0, W1, W2 = (a - b for a, b in zip(in_w, out_w))
        var = done + G**2 * W0 - 2 * G * W1 + W2
    return np.maximum(var, 0.0)


def _conf_int(surv: np.ndarray, se_log: np.ndarray, z: float, conf_type: str):
    """R's ``survfit_confint`` (logse=TRUE): limits from S and the standard error of log S."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "plain":
            half = z * se_log * surv
            low = np.maximum(surv - half, 0.0)
            high = np.minimum(surv + half, 1.0)
            nan = np.isnan(half)
            low[nan] = np.nan
            high[nan] = np.nan
        elif conf_type == "log":
            xx = np.where(surv == 0, np.nan, surv)
            low = np.exp(np.log(xx) - z * se_log)
            high = np.minimum(np.exp(np.log(xx) + z * se_log), 1.0)
            high[np.isnan(xx)] = np.nan
        else:  # log-log
            xx = np.where((surv == 0) | (surv == 1), np.nan, surv)
            lx = np.log(xx)
            se2 = z * se_log / lx
            low = np.exp(-np.exp(np.log(-lx) - se2))
            high = np.exp(-np.exp(np.log(-lx) + se2))
    return low, high


def _minmin(y: np.ndarray, x: np.ndarray) -> float:
    """R ``survmean``'s median rule: first x where y <= 0.5; average with the next drop if y == 0.5."""
    tol = np.finfo(float).eps ** 0.5
    keep = ~np.isnan(y) & (y < 0.5 + tol)
    if not keep.any():
        return np.nan
    xs, ys = x[keep], y[keep]
    if abs(ys[0] - 0.5) < tol:
        lower = np.flatnonzero(ys < ys[0])
        if len(lower):
            return float((xs[0] + xs[lower[0]]) / 2)
    return float(xs[0])


def _at_times(tab: dict[str, np.ndarray], times: np.ndarray) -> dict[str, np.ndarray]:
    """R's ``summary(fit, times=, extend=TRUE)`` on one curve (``tab`` has CI columns)."""
    t = tab["time"]
    m = len(t)
    last = np.searchsorted(t, times, side="right") - 1  # last data time <= requested
    nxt = np.searchsorted(t, times, side="left")  # first data time >= requested
    n_risk = np.where(nxt < m, tab["n_at_risk"][np.minimum(nxt, m - 1)], 0.0)
    cum_ev = np.concatenate(([0.0], np.cumsum(tab["n_events"])))
    cum_ce = np.concatenate(([0.0], np.cumsum(tab["n_censored"])))
    ev_upto = cum_ev[last + 1]
    ce_upto = cum_ce[last + 1]
    n_ev = np.diff(np.concatenate(([0.0], ev_upto)))
    n_ce = np.diff(np.concatenate(([0.0], ce_upto)))
    before = last < 0
    idx = np.maximum(last, 0)
    out = {"n_at_risk": n_risk, "n_events": n_ev, "n_censored": n_ce}
    for key, fill in (("survival", 1.0), ("std_error", 0.0), ("conf_low", 1.0), ("conf_high", 1.0)):
        vals = tab[key][idx].astype(float)
        vals[before] = fill
        out[key] = vals
    return out


def fit_km(
    df: pd.DataFrame,
    *,
    duration_col: str,
    event_col: str,
    group_col: str | None = None,
    weights_col: str | None = None,
    entry_col: str | None = None,
    conf_level: float = 0.95,
    conf_type: str = "log",
    times: Sequence[float] | None = None,
) -> Result:
    """Kaplan-Meier survival curves, per group, with Greenwood variance, as R's ``survfit``.

    Parameters
    ----------
    df : pandas.DataFrame
        Analysis frame, one row per episode (or per ``(entry, duration]`` interval). Not
        modified.
    duration_col : str
        Follow-up time (days from the analysis origin), finite and ``>= 0``; 0 is allowed.
    event_col : str
        Event indicator: 1/``True`` = event (e.g. relapse), 0/``False`` = censored.
    group_col : str, optional
        Column whose levels get one curve each. Levels are ordered as R's ``factor()``:
        categorical order, else sorted. Default None: one curve, group label ``"all"``.
    weights_col : str, optional
        Non-negative case weights. Numbers at risk, events and censorings are weighted sums
        (unlike lifelines, issue #1286). Default None (all 1).
    entry_col : str, optional
        Delayed-entry (left-truncation) time, same unit as ``duration_col``, must be
        ``< duration``. The risk set at ``t`` is ``entry < t <= duration`` as in R's
        ``Surv(entry, time, event)``. Default None (at risk from the origin).
    conf_level : float, default 0.95
        Confidence level of pointwise intervals and of the median's interval.
    conf_type : {"log", "log-log", "plain"}, default "log"
        Transform of the pointwise interval. ``"log"`` is R ``survfit``'s default;
        lifelines' default is ``"log-log"``.
    times : sequence of float, optional
        Times (days) at which to report survival in ``extra["at_times"]``, as R's
        ``summary(fit, times=, extend=TRUE)``.

    Returns
    -------
    Result
        ``tidy``: one row per distinct time (event or censoring) per group, as R's
        ``summary(fit, censored=TRUE)``, columns ``group, time, n_at_risk, n_events,
        n_censored, survival, std_error, conf_low, conf_high``. ``std_error`` is the standard
        error of S(t) (Greenwood, R's ``summary(fit)$std.err``); counts are weighted.
        ``glance``: one row per group, ``group, n, n_weighted, n_events`` (weighted events).
        ``extra["medians"]``: ``group, median, conf_low, conf_high`` with R's
        ``print(survfit)`` rule (first time the curve, resp. the lower/upper CI curve, is
        <= 0.5; midpoint to the next drop when it equals 0.5 exactly; NaN when never reached).
        ``extra["std_err_log"]``: ``group, time, std_err_log``, the standard error of log S(t),
        which is what R stores in ``survfit()$std.err``.
        ``extra["robust"]`` (when ``weights_col`` is given): ``group, time, std_error,
        std_err_log, conf_low, conf_high`` with the robust infinitesimal-jackknife variance
        (each row its own cluster), which is R ``survfit``'s default for non-integer weights
        (``robust=TRUE``); use it for inverse-probability weights.
        ``extra["at_times"]`` (when ``times`` is given): the tidy columns at those times.
        After the last observed time survival stays at its last value and ``n_at_risk`` is 0;
        ``n_events`` / ``n_censored`` count those in (previous requested time, time].

    Raises
    ------
    EstimatorInputError
        Missing columns, missing / infinite / negative durations, an event column that is
        not 0/1/bool, negative weights, ``entry >= duration``, missing group labels (the
        package's one validation policy, :mod:`iop_research._validate`; it subclasses both
        ``DataValidationError`` and ``ModelSpecificationError``).
    ModelSpecificationError
        Bad ``conf_level`` or ``conf_type``, ``times`` negative or missing.

    See Also
    --------
    logrank_test, rmst

    Notes
    -----
    Greenwood variance of log S: ``sum d / (n (n - d))`` over event times, with weighted
    ``n`` and ``d``. With non-integer weights R's ``survfit`` defaults to the robust
    (infinitesimal-jackknife) variance; these estimates then equal
    ``survfit(..., robust=FALSE)``, and ``extra["robust"]`` equals R's default
    (``robust=TRUE``: the influence of row i on log S(t) is
    ``sum_j [d_j Y_ij / (n_j (n_j - d_j)) - dN_ij / (n_j - d_j)]``, variance
    ``sum_i w_i**2 U_i(t)**2``; R reports 0 once S = 0). Medians' intervals always use the
    Greenwood curves. Conventions are also returned in ``result.conventions``.

    References
    ----------
    .. [1] Kaplan, E. L. and Meier, P. (1958). Nonparametric estimation from incomplete
       observations. JASA 53, 457-481.
    .. [2] Greenwood, M. (1926). The natural duration of cancer. Reports on Public Health and
       Medical Subjects 33, HMSO.
    .. [3] Therneau, T. M. (2023). A package for survival analysis in R (``survfit``,
       ``survfit_confint``, ``survmean``), R package survival 3.5.
    .. [4] Klein, J. P. and Moeschberger, M. L. (2003). Survival Analysis, 2nd ed., sections
       4.2-4.6 (left truncation, confidence interval transforms).

    Examples
    --------
    >>> import pandas as pd
    >>> d = pd.DataFrame({"days": [1, 2, 2, 3, 4, 5], "relapse": [1, 1, 0, 1, 0, 1]})
    >>> res = fit_km(d, duration_col="days", event_col="relapse")
    >>> res.tidy[["time", "n_at_risk", "n_events", "survival"]].round(4)
       time  n_at_risk  n_events  survival
    0   1.0        6.0       1.0    0.8333
    1   2.0        5.0       1.0    0.6667
    2   3.0        3.0       1.0    0.4444
    3   4.0        2.0       0.0    0.4444
    4   5.0        1.0       1.0    0.0000
    >>> float(res.medians["median"].iloc[0])
    3.0
    """
    func = "fit_km"
    if conf_type not in _CONF_TYPES:
        raise ModelSpecificationError(
            f"{func}: conf_type must be one of {_CONF_TYPES}, got {conf_type!r} "
            "('log' is R survfit's default, 'log-log' lifelines')."
        )
    z = _z(conf_level, func)
    if times is not None:
        times_arr = np.sort(days_argument(times, func))
    p = _prepare(
        df,
        func,
        duration_col=duration_col,
        event_col=event_col,
        group_col=group_col,
        weights_col=weights_col,
        entry_col=entry_col,
    )
    time, event, weight, entry = p["time"], p["event"], p["weight"], p["entry"]
    levels = p["glevels"]
    tidy_parts, med_rows, glance_rows, log_parts, at_parts, robust_parts = [], [], [], [], [], []
    for label, idx in zip(levels, _split(p["gcode"], len(levels))):
        tab = _km_table(time[idx], event[idx], weight[idx], None if entry is None else entry[idx])
        se_log = np.sqrt(tab["var_log"])
        with np.errstate(invalid="ignore"):
            tab["std_error"] = tab["survival"] * se_log
        tab["conf_low"], tab["conf_high"] = _conf_int(tab["survival"], se_log, z, conf_type)
        m = len(tab["time"])
        part = pd.DataFrame({"group": [label] * m})
        for col in TIDY_KM_COLUMNS[1:]:
            part[col] = tab[col]
        tidy_parts.append(part)
        if weights_col is not None:
            rob_log = np.sqrt(
                _km_robust_var_log(time[idx], event[idx], weight[idx], None if entry is None else entry[idx], tab)
            )
            rob_log[tab["survival"] == 0] = 0.0  # as R: its robust se of S is 0 once S = 0
            rob = pd.DataFrame({"group": [label] * m, "time": tab["time"]})
            rob["std_error"] = tab["survival"] * rob_log
            rob["std_err_log"] = rob_log
            rob["conf_low"], rob["conf_high"] = _conf_int(tab["survival"], rob_log, z, conf_type)
            robust_parts.append(rob)
        log_parts.append(pd.DataFrame({"group": [label] * m, "time": tab["time"], "std_err_log": se_log}))
        med_rows.append(
            {
                "group": label,
                "median": _minmin(tab["survival"], tab["time"]),
                "conf_low": _minmin(tab["conf_low"], tab["time"]),
                "conf_high": _minmin(tab["conf_high"], tab["time"]),
            }
        )
        glance_rows.append(
            {"group": label, "n": int(len(idx)), "n_weighted": float(weight[idx].sum()),
             "n_events": float((weight[idx] * event[idx]).sum())}
        )
        if times is not None:
            at = _at_times(tab, times_arr)
            at_part = pd.DataFrame({"group": [label] * len(times_arr), "time": times_arr})
            for col in TIDY_KM_COLUMNS[2:]:
                at_part[col] = at[col]
            at_parts.append(at_part)
    tidy = pd.concat(tidy_parts, ignore_index=True)[list(TIDY_KM_COLUMNS)]
    extra = {
        "medians": pd.DataFrame(med_rows, columns=list(_MEDIAN_COLUMNS)),
        "std_err_log": pd.concat(log_parts, ignore_index=True),
    }
    if times is not None:
        extra["at_times"] = pd.concat(at_parts, ignore_index=True)[list(TIDY_KM_COLUMNS)]
    if weights_col is not None:
        extra["robust"] = pd.concat(robust_parts, ignore_index=True)
    conventions = {
        "estimator": "Kaplan-Meier product limit, as R survfit(stype=1)",
        "variance": "Greenwood with weighted counts; std_error is se of S(t) (R summary()$std.err); "
        "extra['std_err_log'] is se of log S(t) (R survfit()$std.err). For non-integer weights "
        "equals R survfit(robust=FALSE); R's default there, the robust IJ variance, is in extra['robust'].",
        "ci": f"{conf_type} transform at level {conf_level} (R survfit default 'log'; lifelines 'log-log')",
        "median": "R print.survfit rule on the survival and CI curves",
        "risk_set": "entry < t <= duration, as R Surv(entry, time, event)",
        "ties": "events before censorings at tied times (R)",
    }
    return Result(
        method="Kaplan-Meier",
        tidy=tidy,
        glance=pd.DataFrame(glance_rows, columns=["group", "n", "n_weighted", "n_events"]),
        model=None,
        extra=extra,
        conventions=conventions,
    )


# --------------------------------------------------------------------------------------
# log-rank
# --------------------------------------------------------------------------------------
def _logrank_stratum(time, event, weight, gcode, k, rho, gamma):
    """Weighted O, E and variance matrix in one stratum (R survdiff's algorithm)."""
    ut, inv = np.unique(time, return_inverse=True)
    m = len(ut)
    cell = inv * k + gcode
    at_time = np.bincount(cell, weights=weight, minlength=m * k).reshape(m, k)
    D = np.bincount(cell, weights=weight * event, minlength=m * k).reshape(m, k)
    Y = np.cumsum(at_time[::-1], axis=0)[::-1]  # weight with time >= t, per group
    has_event = D.sum(axis=1) > 0
    if not has_event.any():
        return np.zeros(k), np.zeros(k), np.zeros((k, k))
    D, Y = D[has_event], Y[has_event]
    T = len(D)
    n = Y.sum(axis=1)
    d = D.sum(axis=1)
    if rho != 0 or gamma != 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(n > 0, 1.0 - d / np.where(n > 0, n, 1.0), 1.0)
        km = np.cumprod(step)
        s_minus = np.concatenate(([1.0], km[:-1]))
        wt = s_minus**rho * (1.0 - s_minus) ** gamma
    else:
        wt = np.ones(T)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(n[:, None] > 0, Y / np.where(n > 0, n, 1.0)[:, None], 0.0)
        c = np.where(n > 1, wt**2 * d * (n - d) / np.where(n > 1, n - 1, 1.0), 0.0)
    obs = (wt[:, None] * D).sum(axis=0)
    exp = (wt[:, None] * d[:, None] * frac).sum(axis=0)
    var = np.diag((c[:, None] * frac).sum(axis=0)) - (frac * c[:, None]).T @ frac
    return obs, exp, var


def logrank_test(
    df: pd.DataFrame,
    *,
    duration_col: str,
    event_col: str,
    group_col: str,
    strata_col: str | None = None,
    weights_col: str | None = None,
    rho: float = 0.0,
    gamma: float = 0.0,
    trend: bool = False,
) -> Result:
    """k-group (stratified, weighted) log-rank and Fleming-Harrington tests, as R's ``survdiff``.

    Parameters
    ----------
    df : pandas.DataFrame
        Analysis frame, one row per episode. Not modified.
    duration_col : str
        Follow-up time (days), finite and ``>= 0``.
    event_col : str
        Event indicator, 1/``True`` = event, 0/``False`` = censored.
    group_col : str
        Groups to compare (at least two levels). Level order as R's ``factor()``:
        categorical order, else sorted.
    strata_col : str, optional
        Stratification column: observed, expected and variance are summed over strata, as
        ``survdiff(Surv(t, e) ~ g + strata(s))``. Default None.
    weights_col : str, optional
        Non-negative case (frequency) weights: every count is a weighted sum, so integer
        weights give exactly ``survdiff`` on the data with rows replicated. R's ``survdiff``
        itself takes no weights. Default None.
    rho : float, default 0.0
        Fleming-Harrington rho: each event time is weighted by ``S(t-)**rho`` with ``S`` the
        pooled Kaplan-Meier estimate (within stratum); R ``survdiff(rho=)``. 0 = log-rank,
        1 = Peto-Peto modification of the Gehan-Wilcoxon test.
    gamma : float, default 0.0
        Fleming-Harrington gamma: extra weight ``(1 - S(t-))**gamma`` (late differences).
        R ``survdiff`` in survival 3.5 has no gamma; the G(rho, gamma) statistic is validated
        against a direct computation of the formula in R (``tests/r/km_main.R``).
    trend : bool, default False
        Test for trend over ordered groups (1 df): ``(s'(O - E))**2 / (s' V s)`` with scores
        ``s`` = the group values when numeric, else 1..k in level order. Then ``glance`` holds
        the trend test; the k-group test is always in ``extra["tests"]``.

    Returns
    -------
    Result
        ``tidy``: one row per group, ``group, n, observed, expected, o_minus_e, variance``:
        ``n`` rows in the group, ``observed``/``expected`` weighted events summed over
        strata (weighted by ``S(t-)**rho (1-S(t-))**gamma`` when those are non-zero, as
        survdiff's ``obs``/``exp``), ``variance`` the diagonal of the variance matrix of
        O - E. ``glance``: ``statistic, df, p_value`` (chi-square). ``extra["variance"]``:
        the full variance matrix (groups x groups); ``extra["tests"]``: ``test, statistic,
        df, p_value`` for the k-group test (and the trend test when requested).

    Raises
    ------
    EstimatorInputError
        Missing columns, missing / infinite / negative durations, event not 0/1/bool,
        negative weights, missing group or stratum labels.
    ModelSpecificationError
        Fewer than two groups, no events at all (every row censored; R's
        ``survdiff`` silently returns chisq = 0 on -1 df there), bad ``rho``/``gamma``, trend scores that are not usable,
        singular variance matrix.

    See Also
    --------
    fit_km, rmst

    Notes
    -----
    As ``survdiff``: groups with expected = 0 are left out of the chi-square, whose degrees
    of freedom are then (groups with expected > 0) - 1; the hypergeometric variance uses
    ``d (n - d) / (n - 1)``, skipped at times with ``n <= 1``.

    References
    ----------
    .. [1] Mantel, N. (1966). Evaluation of survival data and two new rank order statistics
       arising in its consideration. Cancer Chemotherapy Reports 50, 163-170.
    .. [2] Harrington, D. P. and Fleming, T. R. (1982). A class of rank test procedures for
       censored survival data. Biometrika 69, 553-566.
    .. [3] Klein, J. P. and Moeschberger, M. L. (2003). Survival Analysis, 2nd ed., sections
       7.3-7.5 (k-sample, trend and stratified tests).
    .. [4] Therneau, T. M. (2023). R package survival 3.5, ``survdiff``.

    Examples
    --------
    >>> import pandas as pd
    >>> d = pd.DataFrame({"days": [1, 2, 3, 4, 5, 6, 7, 8],
    ...                   "relapse": [1, 1, 0, 1, 1, 1, 0, 1],
    ...                   "arm": ["a", "b", "a", "a", "b", "b", "a", "b"]})
    >>> res = logrank_test(d, duration_col="days", event_col="relapse", group_col="arm")
    >>> res.tidy[["group", "observed", "expected"]].round(4)
      group  observed  expected
    0     a       2.0    1.9119
    1     b       4.0    4.0881
    >>> round(float(res.glance["statistic"].iloc[0]), 6)  # R: survdiff(...)$chisq
    0.00678
    """
    func = "logrank_test"
    for name, val in (("rho", rho), ("gamma", gamma)):
        if not (isinstance(val, (int, float)) and np.isfinite(val) and val >= 0):
            raise ModelSpecificationError(f"{func}: {name} must be a finite number >= 0, got {val!r}.")
    p = _prepare(
        df,
        func,
        duration_col=duration_col,
        event_col=event_col,
        group_col=group_col,
        weights_col=weights_col,
        strata_col=strata_col,
    )
    levels = p["glevels"]
    k = len(levels)
    if k < 2:
        raise ModelSpecificationError(
            f"{func}: column {group_col!r} has a single level ({format_ids(levels)}); a log-rank "
            "test needs at least two groups. Check the cohort filter or use fit_km for one curve."
        )
    time, event, weight, gcode = p["time"], p["event"], p["weight"], p["gcode"]
    obs, exp, var = np.zeros(k), np.zeros(k), np.zeros((k, k))
    for idx in _split(p["scode"], len(p["slevels"])):
        o, e, v = _logrank_stratum(time[idx], event[idx], weight[idx], gcode[idx], k, float(rho), float(gamma))
        obs += o
        exp += e
        var += v
    diff = obs - exp
    keep = exp > 0
    tests = []
    if not keep.any():
        n_rows = len(time)
        raise ModelSpecificationError(
            f"{func}: no events in {event_col!r} (all {n_rows} rows are censored or carry zero weight), so "
            "there is nothing to compare: the test has no degrees of freedom (R's survdiff returns chisq = 0 "
            "with p = NaN). Check the event coding (1/True = event) and the cohort filter."
        )
    if keep.sum() < 2:
        chi, dof = 0.0, int(keep.sum()) - 1
    else:
        u = diff[keep][1:]
        vv = var[np.ix_(keep, keep)][1:, 1:]
        try:
            chi = float(u @ np.linalg.solve(vv, u))
        except np.linalg.LinAlgError as exc:
            raise ModelSpecificationError(
                f"{func}: the variance matrix of O - E is singular (groups: {format_ids(levels)}); "
                "a group may have nobody at risk at any event time. Merge or drop that group."
            ) from exc
        dof = int(keep.sum()) - 1
    p_overall = float(stats.chi2.sf(chi, dof)) if dof > 0 else np.nan
    name = "log-rank" if rho == 0 and gamma == 0 else f"Fleming-Harrington G({rho:g}, {gamma:g})"
    tests.append({"test": f"{name}, {k} groups", "statistic": chi, "df": dof, "p_value": p_overall})
    if trend:
        if pd.api.types.is_numeric_dtype(pd.Series(levels)) and not isinstance(
            df[group_col].dtype, pd.CategoricalDtype
        ):
            scores = np.asarray(levels, dtype=float)
        else:
            scores = np.arange(1, k + 1, dtype=float)
        denom = float(scores @ var @ scores)
        if not denom > 0:
            raise ModelSpecificationError(
                f"{func}: the trend test's variance is {denom!r}; the groups of {group_col!r} "
                "carry no information about trend (no events at common risk times)."
            )
        chi_t = float((scores @ diff) ** 2 / denom)
        tests.append(
            {"test": f"trend over {k} ordered groups (scores {format_ids(scores.tolist())})",
             "statistic": chi_t, "df": 1, "p_value": float(stats.chi2.sf(chi_t, 1))}
        )
    tests_df = pd.DataFrame(tests, columns=["test", *GLANCE_TEST_COLUMNS])
    glance = tests_df.iloc[[-1]][list(GLANCE_TEST_COLUMNS)].reset_index(drop=True)
    n_per = np.bincount(gcode, minlength=k)
    tidy = pd.DataFrame(
        {
            "group": levels,
            "n": n_per.astype(np.int64),
            "observed": obs,
            "expected": exp,
            "o_minus_e": diff,
            "variance": np.diag(var).copy(),
        },
        columns=list(_LOGRANK_COLUMNS),
    )
    var_df = pd.DataFrame(var, index=pd.Index(levels, name="group"), columns=levels)
    conventions = {
        "test": "R survdiff: k-group log-rank, chi-square on k-1 df via the variance of O-E",
        "weights": "S(t-)^rho (1-S(t-))^gamma with S the pooled KM within stratum (survdiff rho; "
        "gamma not in survdiff 3.5)",
        "variance": "hypergeometric, d(n-d)/(n-1) (as survdiff); case weights act as frequency weights",
        "strata": "O, E and V summed over strata (survdiff strata())",
        "trend": "scores = numeric group values, else 1..k in level order",
    }
    return Result(
        method=name + (" (stratified)" if strata_col is not None else ""),
        tidy=tidy,
        glance=glance,
        model=None,
        extra={"variance": var_df, "tests": tests_df},
        conventions=conventions,
    )


# --------------------------------------------------------------------------------------
# RMST
# --------------------------------------------------------------------------------------
def _rmst_one(tab: dict[str, np.ndarray], tau: float) -> tuple[float, float]:
    """R ``survmean`` restricted mean and its standard error (= survRM2 ``rmst1``)."""
    t, surv, nr, nd = tab["time"], tab["survival"], tab["n_at_risk"], tab["n_events"]
    with np.errstate(divide="ignore", invalid="ignore"):
        hh = np.where(nr - nd == 0, 0.0, nd / (nr * (nr - nd)))
    keep = t <= tau
    if not keep.any():
        return float(tau), 0.0
    tt = np.concatenate((t[keep], [tau]))
    ss = np.concatenate((surv[keep], [surv[keep][-1]]))
    hh = np.concatenate((hh[keep], [0.0]))
    delta = np.diff(np.concatenate(([0.0], tt)))
    rect = delta * np.concatenate(([1.0], ss[:-1]))
    var = float(np.sum(np.cumsum(rect[1:][::-1]) ** 2 * hh[::-1][1:]))
    return float(rect.sum()), float(np.sqrt(var))


def rmst(
    df: pd.DataFrame,
    *,
    duration_col: str,
    event_col: str,
    group_col: str | None = None,
    tau: float,
    conf_level: float = 0.95,
) -> Result:
    """Restricted mean survival time up to ``tau``, per group, and its two-group contrasts.

    Parameters
    ----------
    df : pandas.DataFrame
        Analysis frame, one row per episode. Not modified.
    duration_col : str
        Follow-up time (days), finite and ``>= 0``.
    event_col : str
        Event indicator, 1/``True`` = event, 0/``False`` = censored.
    group_col : str, optional
        Groups. With exactly two levels (R ``factor()`` order), the difference and ratio
        ``second - first`` and ``second / first`` are added (survRM2's arm 1 vs arm 0 when
        the levels are 0/1). Default None: one RMST, term ``rmst[all]``.
    tau : float
        Truncation time (days), > 0 and at most the smallest of the groups' largest observed
        times (the survRM2 rule: the curve is not extrapolated).
    conf_level : float, default 0.95
        Level of the normal-approximation confidence intervals.

    Returns
    -------
    Result
        ``tidy``: ``term, label, estimate, std_error, conf_low, conf_high, p_value`` with terms
        ``rmst[<group>]`` (days; p_value NaN; label ``"RMST: <group>"``), and with two
        groups ``difference`` (days, Wald CI and p) and ``ratio`` (CI and p on the log scale;
        its ``std_error`` is that of log(ratio)). ``glance``: ``tau, n, n_events``.

    Raises
    ------
    EstimatorInputError
        As :func:`fit_km`.
    ModelSpecificationError
        ``tau`` not positive or beyond a group's follow-up, bad ``conf_level``.

    Notes
    -----
    RMST is the area under the Kaplan-Meier curve on [0, tau]; its variance is
    ``sum_i A_i**2 d_i / (n_i (n_i - d_i))`` with ``A_i`` the area from event time ``t_i``
    to tau (R ``survival:::survmean``, ``print(survfit(...), rmean=tau)``, identical to
    survRM2 ``rmst2``'s unadjusted analysis, whose difference and ratio are reproduced).

    References
    ----------
    .. [1] Royston, P. and Parmar, M. K. B. (2013). Restricted mean survival time: an
       alternative to the hazard ratio for the design and analysis of randomized trials with
       a time-to-event outcome. BMC Med Res Methodol 13, 152.
    .. [2] Uno, H. et al. (2014). Moving beyond the hazard ratio in quantifying the
       between-group difference in survival analysis. J Clin Oncol 32, 2380-2385
       (R package survRM2, ``rmst2``).
    .. [3] Klein, J. P. and Moeschberger, M. L. (2003). Survival Analysis, 2nd ed.,
       section 4.5 (mean survival time and its variance).

    Examples
    --------
    >>> import pandas as pd
    >>> d = pd.DataFrame({"days": [2, 4, 6, 8, 3, 5, 9, 10],
    ...                   "relapse": [1, 1, 0, 1, 1, 0, 1, 0],
    ...                   "arm": ["a"] * 4 + ["b"] * 4})
    >>> res = rmst(d, duration_col="days", event_col="relapse", group_col="arm", tau=8)
    >>> res.tidy[["term", "estimate"]].round(4)
             term  estimate
    0     rmst[a]    5.5000
    1     rmst[b]    6.7500
    2  difference    1.2500
    3       ratio    1.2273
    """
    func = "rmst"
    z = _z(conf_level, func)
    if not (isinstance(tau, (int, float, np.integer, np.floating)) and np.isfinite(tau) and tau > 0):
        raise ModelSpecificationError(f"{func}: tau must be a finite number of days > 0, got {tau!r}.")
    tau = float(tau)
    p = _prepare(df, func, duration_col=duration_col, event_col=event_col, group_col=group_col)
    time, event, weight = p["time"], p["event"], p["weight"]
    levels = p["glevels"]
    rows, ests, ses = [], [], []
    splits = _split(p["gcode"], len(levels))
    max_times = [float(time[idx].max()) for idx in splits]
    if tau > min(max_times):
        raise ModelSpecificationError(
            f"{func}: tau = {tau:g} is beyond the follow-up of group(s) "
            f"{format_ids([lab for lab, mt in zip(levels, max_times) if mt < tau])} "
            f"(largest observed times: {format_ids([f'{lab}: {mt:g}' for lab, mt in zip(levels, max_times)])}). "
            f"Choose tau <= {min(max_times):g} (survRM2's rule: the curve is not extrapolated)."
        )
    for label, idx in zip(levels, splits):
        tab = _km_table(time[idx], event[idx], weight[idx])
        est, se = _rmst_one(tab, tau)
        ests.append(est)
        ses.append(se)
        rows.append((f"rmst[{label}]", f"RMST: {label}", est, se, est - z * se, est + z * se, np.nan))
    if len(levels) == 2:
        d = ests[1] - ests[0]
        se_d = float(np.hypot(ses[0], ses[1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            p_d = float(2 * stats.norm.sf(abs(d / se_d))) if se_d > 0 else np.nan
        rows.append(("difference", f"Difference in RMST ({levels[1]} - {levels[0]})", d, se_d, d - z * se_d,
                     d + z * se_d, p_d))
        lr = float(np.log(ests[1] / ests[0]))
        se_r = float(np.sqrt((ses[1] / ests[1]) ** 2 + (ses[0] / ests[0]) ** 2))
        p_r = float(2 * stats.norm.sf(abs(lr / se_r))) if se_r > 0 else np.nan
        rows.append(("ratio", f"Ratio of RMST ({levels[1]} / {levels[0]})", float(np.exp(lr)), se_r,
                     float(np.exp(lr - z * se_r)), float(np.exp(lr + z * se_r)), p_r))
    tidy = pd.DataFrame(rows, columns=list(TIDY_TERM_COLUMNS))
    glance = pd.DataFrame({"tau": [tau], "n": [int(len(time))], "n_events": [float(event.sum())]})
    conventions = {
        "estimate": "area under the KM curve on [0, tau] (R survmean / print(survfit, rmean=tau))",
        "variance": "sum A_i^2 d_i/(n_i(n_i-d_i)) (R survmean; survRM2 rmst2)",
        "contrasts": "difference = second - first level, ratio = second / first with log-scale CI "
        "(survRM2 rmst2 unadjusted, arm 1 vs arm 0)",
        "tau": "must not exceed any group's largest observed time (survRM2)",
    }
    return Result(method=f"RMST (tau = {tau:g})", tidy=tidy, glance=glance, model=None,
                  extra={}, conventions=conventions)
