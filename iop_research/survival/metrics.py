"""Discrimination and calibration of survival predictions.

Harrell's and Uno's concordance (R ``survival::concordance``, ``timewt="n"`` and
``"n/G2"``), cumulative/dynamic time-dependent AUC and the IPCW Brier score (as
scikit-survival's ``cumulative_dynamic_auc`` and ``brier_score``), calibration at a time
point (Kaplan-Meier by risk group and a smoothed pseudo-observation curve), a
train/test split and Harrell's bootstrap optimism correction.

The public names are re-exported from :mod:`iop_research.survival`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iop_research.exceptions import ModelSpecificationError, format_ids
from iop_research.results import Result
from iop_research.survival.km import fit_km

__all__ = [
    "concordance_index",
    "time_dependent_auc",
    "brier_score",
    "calibrate_survival",
    "split_train_test",
    "bootstrap_optimism",
]

_TIMEWT = ("n", "n/G2")
_CHUNK = 2_000_000  # pairs per block in the pairwise concordance sums


# ----------------------------------------------------------------------------- helpers


def _columns(df: Any, cols: Sequence[str], where: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ModelSpecificationError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}.")
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise ModelSpecificationError(
            f"{where}: column(s) {format_ids(missing)} not found (available: {format_ids(list(df.columns), limit=10)})."
        )


def _numeric(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise ModelSpecificationError(f"{where}: column {col!r} has dtype {s.dtype}; expected numbers.")
    arr = s.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ModelSpecificationError(
            f"{where}: column {col!r} has {int(bad.sum())} missing or infinite value(s) "
            f"(rows: {format_ids(df.index[bad])}). Drop or impute them explicitly first."
        )
    return arr


def _surv_arrays(df: pd.DataFrame, duration_col: str, event_col: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    _columns(df, [duration_col, event_col], where)
    time = _numeric(df, duration_col, where)
    ev = _numeric(df, event_col, where)
    if not np.isin(ev, (0.0, 1.0)).all():
        raise ModelSpecificationError(f"{where}: event column {event_col!r} must be 0/1 or boolean.")
    if (time < 0).any():
        raise ModelSpecificationError(f"{where}: column {duration_col!r} has negative times.")
    return time, ev == 1.0


def _censoring_km_before(time: np.ndarray, event: np.ndarray, w: np.ndarray, at: np.ndarray) -> np.ndarray:
    """G(t-) at ``at``: KM of censoring, deaths before censorings at tied times (R fastkm1)."""
    ut = np.unique(time[~event])
    if ut.size == 0:
        return np.ones(len(at))
    srt = np.argsort(time, kind="stable")
    ts = time[srt]
    suffix = np.concatenate([np.cumsum(w[srt][::-1])[::-1], [0.0]])
    n_gt = suffix[np.searchsorted(ts, ut, side="right")]  # weight with time > u
    c = np.bincount(np.searchsorted(ut, time[~event]), weights=w[~event], minlength=len(ut))
    factor = n_gt / (n_gt + c)
    g = np.concatenate([[1.0], np.cumprod(factor)])
    return g[np.searchsorted(ut, at, side="left")]


def _censoring_km_sksurv(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Censoring KM as scikit-survival's CensoringDistributionEstimator: (unique times, G(t))."""
    if event.all():
        return np.unique(time), np.ones(len(np.unique(time)))
    ut, inv = np.unique(time, return_inverse=True)
    inv = inv.ravel()
    n_cens = np.bincount(inv, weights=(~event).astype(float), minlength=len(ut))
    n_ev = np.bincount(inv, weights=event.astype(float), minlength=len(ut))
    total = np.bincount(inv, minlength=len(ut)).astype(float)
    at_risk = np.cumsum(total[::-1])[::-1] - n_ev  # reverse KM: events leave before censorings
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1 - n_cens / at_risk, 1.0)
    return np.r_[-np.inf, ut], np.r_[1.0, np.cumprod(factor)]


def _step(x: np.ndarray, y: np.ndarray, at: np.ndarray, where: str) -> np.ndarray:
    pos = np.searchsorted(x, at, side="right") - 1
    if (pos < 0).any():  # pragma: no cover - x starts at -inf
        raise ModelSpecificationError(f"{where}: time before the censoring distribution's support.")
    return y[pos]


# ----------------------------------------------------------------------------- concordance


def _pair_counts(time, event, risk, w, tw_of_event):
    """Weighted concordant/discordant/tied-risk pair counts and per-row influence (one stratum).

    Pair (i, j) is comparable when i has an event at t_i and j is still at risk after it
    (t_j > t_i, or t_j == t_i and j censored); weight ``w_i w_j tw(t_i)``. With a risk score
    (higher = earlier event) the pair is concordant when ``risk_i > risk_j``.
    """
    n = len(time)
    ev = np.flatnonzero(event)
    cinf = np.zeros(n)
    dinf = np.zeros(n)
    tinf = np.zeros(n)
    conc = disc = tied = 0.0
    step = max(1, _CHUNK // max(n, 1))
    for s in range(0, len(ev), step):
        idx = ev[s : s + step]
        ti = time[idx][:, None]
        comp = (time[None, :] > ti) | ((time[None, :] == ti) & ~event[None, :])
        ri = risk[idx][:, None]
        gt = comp & (risk[None, :] < ri)
        lt = comp & (risk[None, :] > ri)
        eq = comp & (risk[None, :] == ri)
        twi = tw_of_event[idx]
        wi = w[idx] * twi
        c_i = gt @ w
        d_i = lt @ w
        t_i = eq @ w
        conc += float(wi @ c_i)
        disc += float(wi @ d_i)
        tied += float(wi @ t_i)
        cinf[idx] += twi * c_i
        dinf[idx] += twi * d_i
        tinf[idx] += twi * t_i
        cinf += wi @ gt
        dinf += wi @ lt
        tinf += wi @ eq
    return conc, disc, tied, cinf, dinf, tinf


def concordance_index(
    df: pd.DataFrame,
    *,
    duration_col: str,
    event_col: str,
    risk_col: str,
    weights_col: str | None = None,
    strata_col: str | None = None,
    cluster_col: str | None = None,
    timewt: str = "n",
    tau: float | None = None,
    conf_level: float = 0.95,
) -> Result:
    """Harrell's or Uno's concordance of a risk score, as R ``survival::concordance``.

    Equal to ``concordance(Surv(time, status) ~ risk, data, weights, strata, cluster,
    timewt, ymax = tau, reverse = TRUE)`` (survival 3.5): a higher risk predicts an earlier
    event.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per subject (right-censored data). Not modified.
    duration_col, event_col : str
        Follow-up time and event indicator (0/1).
    risk_col : str
        Risk score: linear predictor, predicted risk at a horizon, etc. (higher = worse).
    weights_col : str, optional
        Case weights; a pair is weighted ``w_i w_j``.
    strata_col : str, optional
        Compare only within strata (pairs summed over strata).
    cluster_col : str, optional
        Sum the influence within clusters for the standard error (R ``cluster=``).
    timewt : {"n", "n/G2"}, default "n"
        ``"n"``: Harrell's C (every comparable pair counts once). ``"n/G2"``: Uno's C, each
        pair of an event at ``t`` weighted ``1 / G(t-)^2`` with ``G`` the Kaplan-Meier of the
        censoring distribution (deaths before censorings at tied times, as R's
        ``fastkm1``), computed within each stratum.
    tau : float, optional
        Only events at times ``<= tau`` count (R ``ymax``); usual for Uno's C.
    conf_level : float, default 0.95
        Level of the Wald interval ``C +/- z se``.

    Returns
    -------
    Result
        ``tidy`` one row: ``statistic`` ("harrell" or "uno"), ``estimate``, ``std_error``,
        ``conf_low``, ``conf_high``. ``glance`` one row: ``n``, ``concordant``,
        ``discordant``, ``tied_risk`` (weighted pair counts). Ties in the risk count 1/2;
        pairs tied in time (both events) are not comparable.

    Notes
    -----
    The standard error is R's infinitesimal jackknife (``var = sum(dfbeta^2) / 4`` of
    Somers' d), which treats the time weights as fixed. Computed by blocks of pairs:
    O(n x events) time.

    Raises
    ------
    ModelSpecificationError
        Missing columns or values, bad ``timewt`` or ``conf_level``, no comparable pairs.

    References
    ----------
    .. [1] Harrell, F. E. et al. (1982). Evaluating the yield of medical tests. JAMA 247, 2543-2546.
    .. [2] Uno, H., Cai, T., Pencina, M. J., D'Agostino, R. B. & Wei, L. J. (2011). On the
       C-statistics for evaluating overall adequacy of risk prediction procedures with
       censored survival data. Stat. Med. 30(10), 1105-1117.
    .. [3] Therneau, T. & Atkinson, E. (2023). The concordance statistic. Vignette of R
       package ``survival``.

    Examples
    --------
    >>> import pandas as pd
    >>> d = pd.DataFrame({"days": [5, 10, 15, 20, 25], "relapse": [1, 1, 0, 1, 0],
    ...                   "risk": [0.9, 0.5, 0.7, 0.2, 0.1]})
    >>> c = concordance_index(d, duration_col="days", event_col="relapse", risk_col="risk")
    >>> round(float(c.tidy["estimate"].iloc[0]), 4)
    0.875
    """
    where = "concordance_index"
    if timewt not in _TIMEWT:
        raise ModelSpecificationError(f"{where}: timewt={timewt!r} is not supported; use 'n' (Harrell) or 'n/G2' (Uno).")
    if not (0 < conf_level < 1):
        raise ModelSpecificationError(f"{where}: conf_level must lie strictly between 0 and 1.")
    time, event = _surv_arrays(df, duration_col, event_col, where)
    _columns(df, [risk_col, weights_col, strata_col, cluster_col], where)
    risk = _numeric(df, risk_col, where)
    w = _numeric(df, weights_col, where) if weights_col is not None else np.ones(len(df))
    strata = pd.factorize(df[strata_col], sort=True)[0] if strata_col is not None else np.zeros(len(df), dtype=int)
    n = len(df)
    cinf = np.zeros(n)
    dinf = np.zeros(n)
    tinf = np.zeros(n)
    conc = disc = tied = 0.0
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        t_s, e_s, w_s = time[rows], event[rows], w[rows]
        if timewt == "n/G2" and e_s.sum() >= 2:
            g = _censoring_km_before(t_s, e_s, w_s, t_s)
            tw = 1.0 / g**2
        else:
            tw = np.ones(len(rows))
        if tau is not None:
            tw = np.where(t_s > tau, 0.0, tw)
        c, d_, t_, ci, di, ti = _pair_counts(t_s, e_s, risk[rows], w_s, tw)
        conc += c
        disc += d_
        tied += t_
        cinf[rows], dinf[rows], tinf[rows] = ci, di, ti
    npair = conc + disc + tied
    if npair <= 0:
        raise ModelSpecificationError(f"{where}: no comparable pairs (need at least one event with someone at risk after it).")
    somer = (conc - disc) / npair
    dfbeta = w * ((cinf - dinf) / npair - somer / npair * (cinf + dinf + tinf))
    if cluster_col is not None:
        codes = pd.factorize(df[cluster_col])[0]
        dfbeta = np.bincount(codes, weights=dfbeta)
    se = float(np.sqrt(np.sum(dfbeta**2) / 4))
    est = (somer + 1) / 2
    z = stats.norm.ppf(0.5 + conf_level / 2)
    tidy = pd.DataFrame(
        {
            "statistic": ["harrell" if timewt == "n" else "uno"],
            "estimate": [est],
            "std_error": [se],
            "conf_low": [est - z * se],
            "conf_high": [est + z * se],
        }
    )
    glance = pd.DataFrame({"n": [n], "concordant": [conc], "discordant": [disc], "tied_risk": [tied]})
    return Result(
        method=f"Concordance ({'Harrell' if timewt == 'n' else 'Uno, IPCW'})",
        tidy=tidy,
        glance=glance,
        model=None,
        conventions={
            "direction": "higher risk predicts an earlier event (R concordance(..., reverse=TRUE))",
            "ties": "ties in the risk count 1/2; a subject censored at an event time is still at risk; "
            "tied event times are not comparable",
            "timewt": "n: Harrell; n/G2: Uno, 1/G(t-)^2 with the censoring KM per stratum (R fastkm1)",
            "variance": "infinitesimal jackknife, time weights fixed (R concordancefit)",
        },
    )


# ----------------------------------------------------------------------------- AUC, Brier


def _train_test(df, train, duration_col, event_col, where):
    t_test, e_test = _surv_arrays(df, duration_col, event_col, where)
    if train is None:
        t_train, e_train = t_test, e_test
    else:
        t_train, e_train = _surv_arrays(train, duration_col, event_col, where + " (train)")
    return t_test, e_test, t_train, e_train


def _check_eval_times(times, t_test, t_train, e_train, where) -> np.ndarray:
    tt = np.atleast_1d(np.asarray(times, dtype=float))
    if tt.ndim != 1 or tt.size == 0 or not np.isfinite(tt).all():
        raise ModelSpecificationError(f"{where}: times must be a non-empty list of finite numbers.")
    if (tt < t_test.min()).any() or (tt >= t_test.max()).any():
        raise ModelSpecificationError(
            f"{where}: times must lie in [{t_test.min():g}, {t_test.max():g}) (the test follow-up range); got "
            f"{format_ids(tt[(tt < t_test.min()) | (tt >= t_test.max())])}."
        )
    return tt


def time_dependent_auc(
    df: pd.DataFrame,
    *,
    duration_col: str,
    event_col: str,
    risk_col: str,
    times: Sequence[float],
    train: pd.DataFrame | None = None,
    tied_tol: float = 1e-8,
) -> Result:
    """Cumulative/dynamic time-dependent AUC with IPCW, as scikit-survival's ``cumulative_dynamic_auc``.

    Parameters
    ----------
    df : pandas.DataFrame
        Test data: follow-up, event and the risk score of each subject.
    duration_col, event_col, risk_col : str
        Column names; higher risk = earlier event.
    times : sequence of float
        Horizons ``t``: cases have an event at ``<= t``, controls are event-free at ``t``.
    train : pandas.DataFrame, optional
        Data from which the censoring distribution is estimated (default ``df``).
    tied_tol : float, default 1e-8
        Risk scores closer than this are tied (trapezoid through the tie).

    Returns
    -------
    Result
        ``tidy``: ``time``, ``auc``. ``glance``: ``mean_auc``, the AUC integrated over the
        Kaplan-Meier of ``df`` (as scikit-survival; equals ``auc`` for one time).

    Notes
    -----
    ``AUC(t) = sum_i sum_j w_i 1(T_i <= t, d_i = 1) 1(T_j > t) 1(r_i > r_j)
    / (sum_i w_i 1(T_i <= t, d_i = 1) x sum_j 1(T_j > t))`` with ``w_i = 1 / G(T_i)``, ``G``
    the censoring Kaplan-Meier of ``train`` (censorings after events at tied times).

    References
    ----------
    .. [1] Uno, H., Cai, T., Tian, L. & Wei, L. J. (2007). Evaluating prediction rules for
       t-year survivors with censored regression models. JASA 102, 527-537.
    .. [2] Hung, H. & Chiang, C. T. (2010). Estimation methods for time-dependent AUC models
       with survival data. Can. J. Stat. 38(1), 8-26.
    """
    where = "time_dependent_auc"
    t_test, e_test, t_train, e_train = _train_test(df, train, duration_col, event_col, where)
    _columns(df, [risk_col], where)
    risk = _numeric(df, risk_col, where)
    tt = _check_eval_times(times, t_test, t_train, e_train, where)
    gx, gy = _censoring_km_sksurv(t_train, e_train)
    g_at = _step(gx, gy, t_test[e_test], where)
    if (g_at == 0).any():
        raise ModelSpecificationError(f"{where}: the censoring survival is 0 at some event times; shorten times.")
    ipcw = np.zeros(len(t_test))
    ipcw[e_test] = 1.0 / g_at
    o = np.argsort(-risk, kind="quicksort")
    rs, ts, es, ws = risk[o], t_test[o], e_test[o], ipcw[o]
    tied = np.abs(np.diff(np.r_[np.inf, rs])) <= tied_tol
    aucs = np.empty(len(tt))
    for k, t in enumerate(tt):
        case = (ts <= t) & es
        ctrl = ts > t
        tp = np.cumsum(case * ws)
        fp = np.cumsum(ctrl)
        tp = tp / tp[-1]
        fp = fp / ctrl.sum()
        drop = np.flatnonzero(tied) - 1
        tp_ = np.r_[0, np.delete(tp, drop)]
        fp_ = np.r_[0, np.delete(fp, drop)]
        aucs[k] = np.trapezoid(tp_, fp_) if hasattr(np, "trapezoid") else np.trapz(tp_, fp_)
    if len(tt) == 1:
        mean_auc = aucs[0]
    else:
        km = fit_km(
            pd.DataFrame({"t": t_test, "e": e_test.astype(int)}), duration_col="t", event_col="e", times=list(tt)
        ).extra["at_times"]
        s_t = km["survival"].to_numpy()
        d = -np.diff(np.r_[1.0, s_t])
        mean_auc = float((aucs * d).sum() / (1.0 - s_t[-1]))
    return Result(
        method="Cumulative/dynamic time-dependent AUC (IPCW)",
        tidy=pd.DataFrame({"time": tt, "auc": aucs}),
        glance=pd.DataFrame({"mean_auc": [mean_auc]}),
        model=None,
        conventions={"reference": "scikit-survival cumulative_dynamic_auc (Uno 2007 IPCW for cases)"},
    )


def _survival_matrix(predicted: pd.DataFrame, n: int, times: np.ndarray, where: str) -> np.ndarray:
    _columns(predicted, ["row", "time", "survival"], where)
    wide = predicted.pivot_table(index="row", columns="time", values="survival", aggfunc="first")
    missing_t = [t for t in times if t not in wide.columns]
    if missing_t:
        raise ModelSpecificationError(
            f"{where}: predicted has no survival at time(s) {format_ids(missing_t)}; call "
            "predict_survival(fit, df, times=times) with the same times."
        )
    if len(wide) != n or not np.array_equal(wide.index.to_numpy(), np.arange(n)):
        raise ModelSpecificationError(
            f"{where}: predicted must have rows 0..{n - 1} (one per row of df, as predict_survival(fit, df))."
        )
    return wide[list(times)].to_numpy(dtype=float)


def brier_score(
    df: pd.DataFrame,
    *,
    duration_col: str,
    event_col: str,
    predicted: pd.DataFrame,
    times: Sequence[float],
    train: pd.DataFrame | None = None,
) -> Result:
    """IPCW Brier score and integrated Brier score, as scikit-survival's ``brier_score``.

    Parameters
    ----------
    df : pandas.DataFrame
        Test data (follow-up and event).
    duration_col, event_col : str
        Column names.
    predicted : pandas.DataFrame
        Predicted survival, tidy ``row, time, survival`` with ``row`` the 0-based position in
        ``df`` (the output of :func:`~iop_research.survival.predict.predict_survival` for
        ``df`` at ``times``).
    times : sequence of float
        Evaluation times (at least two for the integrated score).
    train : pandas.DataFrame, optional
        Data for the censoring distribution (default ``df``).

    Returns
    -------
    Result
        ``tidy``: ``time``, ``brier``. ``glance``: ``integrated_brier`` (trapezoid over
        ``times`` divided by their range, NaN for one time).

    Notes
    -----
    ``BS(t) = mean_i [ S_i(t)^2 1(T_i <= t, d_i = 1) / G(T_i) + (1 - S_i(t))^2 1(T_i > t) / G(t) ]``
    (Graf et al. 1999), ``G`` the censoring Kaplan-Meier of ``train`` evaluated at the
    time itself.

    References
    ----------
    .. [1] Graf, E., Schmoor, C., Sauerbrei, W. & Schumacher, M. (1999). Assessment and
       comparison of prognostic classification schemes for survival data. Stat. Med. 18, 2529-2545.
    """
    where = "brier_score"
    t_test, e_test, t_train, e_train = _train_test(df, train, duration_col, event_col, where)
    tt = _check_eval_times(times, t_test, t_train, e_train, where)
    surv = _survival_matrix(predicted, len(df), tt, where)
    gx, gy = _censoring_km_sksurv(t_train, e_train)
    g_t = _step(gx, gy, tt, where)
    g_y = _step(gx, gy, t_test, where)
    g_t = np.where(g_t == 0, np.inf, g_t)
    g_y = np.where(g_y == 0, np.inf, g_y)
    bs = np.empty(len(tt))
    for k, t in enumerate(tt):
        case = (t_test <= t) & e_test
        ctrl = t_test > t
        est = surv[:, k]
        bs[k] = np.mean(est**2 * case / g_y + (1 - est) ** 2 * ctrl / g_t[k])
    if len(tt) >= 2:
        integ = np.trapezoid(bs, tt) if hasattr(np, "trapezoid") else np.trapz(bs, tt)
        ibs = float(integ / (tt[-1] - tt[0]))
    else:
        ibs = np.nan
    return Result(
        method="Brier score (IPCW)",
        tidy=pd.DataFrame({"time": tt, "brier": bs}),
        glance=pd.DataFrame({"integrated_brier": [ibs]}),
        model=None,
        conventions={"reference": "scikit-survival brier_score / integrated_brier_score (Graf 1999)"},
    )


# ----------------------------------------------------------------------------- calibration


def _km_pseudo_values(time: np.ndarray, event: np.ndarray, t: float) -> np.ndarray:
    """Jackknife pseudo-observations of the Kaplan-Meier S(t): n S - (n - 1) S_(-i)."""
    n = len(time)
    ut = np.unique(time[event & (time <= t)])
    nrisk = (n - np.searchsorted(np.sort(time), ut, side="left")).astype(float)
    d = np.bincount(np.searchsorted(ut, time[event & (time <= t)]), minlength=len(ut)).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        full = np.log1p(-d / nrisk)
        minus = np.where(nrisk > 1, np.log1p(-d / (nrisk - 1)), 0.0)
    s_full = float(np.exp(full.sum()))
    cf = np.concatenate([[0.0], np.cumsum(full)])
    cm = np.concatenate([[0.0], np.cumsum(minus)])
    # for row i: times u < T_i lose i from the risk set; the time u == T_i also loses its death
    k_lt = np.searchsorted(ut, time, side="left")  # number of event times < T_i (<= t)
    k_le = np.searchsorted(ut, time, side="right")
    log_si = cm[k_lt] + (cf[-1] - cf[k_le])
    at = (k_le > k_lt)  # T_i is one of the event times <= t
    if at.any():
        j = k_lt[at]
        nr, dd = nrisk[j], d[j] - event[at]
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(nr > 1, np.log1p(-dd / (nr - 1)), 0.0)
        log_si[at] += term
    s_minus = np.exp(log_si)
    return n * s_full - (n - 1) * s_minus


def calibrate_survival(
    df: pd.DataFrame,
    *,
    duration_col: str,
    event_col: str,
    predicted_col: str,
    time: float,
    n_groups: int = 10,
    conf_level: float = 0.95,
    frac: float = 2 / 3,
) -> Result:
    """Calibration of predicted survival at one time: observed KM by risk group and a smooth curve.

    Parameters
    ----------
    df : pandas.DataFrame
        Data with follow-up, event and each subject's predicted survival at ``time``.
    duration_col, event_col : str
        Column names.
    predicted_col : str
        Predicted survival probability at ``time`` (e.g. ``predict_survival(...)["survival"]``).
    time : float
        Horizon (e.g. 90 days).
    n_groups : int, default 10
        Risk groups (deciles of predicted survival; fewer when values tie).
    conf_level : float, default 0.95
        Level of the Kaplan-Meier interval (log transform, as R ``survfit``).
    frac : float, default 2/3
        Span of the lowess smoother (statsmodels ``lowess``).

    Returns
    -------
    Result
        ``tidy`` one row per group: ``group`` (``"Q1"`` = the group with the lowest predicted survival; a label, not a count), ``n``,
        ``predicted`` (mean), ``observed`` (KM at ``time``), ``conf_low``, ``conf_high``.
        ``glance``: ``time``, ``ici`` (integrated calibration index: mean absolute
        difference between the smoothed observed and the predicted survival), ``error_p50``,
        ``error_p90`` (median and 90th percentile of that difference; E50 and E90 of Austin & Steyerberg 2020). ``extra["smooth"]``:
        ``predicted``, ``observed`` (lowess of the Kaplan-Meier pseudo-observations on the
        predicted survival, one row per distinct predicted value).

    Notes
    -----
    The smooth curve regresses jackknife pseudo-observations of the Kaplan-Meier at
    ``time`` on the predicted survival (Andersen & Perme 2010), a censoring-aware analogue
    of a calibration loess; ICI/E50/E90 as Austin et al. (2020).

    References
    ----------
    .. [1] Andersen, P. K. & Perme, M. P. (2010). Pseudo-observations in survival analysis.
       Stat. Methods Med. Res. 19(1), 71-99.
    .. [2] Austin, P. C., Harrell, F. E. & van Klaveren, D. (2020). Graphical calibration
       curves and the integrated calibration index (ICI) for survival models. Stat. Med.
       39(21), 2714-2742.
    """
    from statsmodels.nonparametric.smoothers_lowess import lowess

    where = "calibrate_survival"
    t, e = _surv_arrays(df, duration_col, event_col, where)
    _columns(df, [predicted_col], where)
    pred = _numeric(df, predicted_col, where)
    if ((pred < 0) | (pred > 1)).any():
        raise ModelSpecificationError(f"{where}: {predicted_col!r} must hold survival probabilities in [0, 1].")
    if not (isinstance(n_groups, (int, np.integer)) and n_groups >= 1):
        raise ModelSpecificationError(f"{where}: n_groups must be a positive integer, got {n_groups!r}.")
    ranks = stats.rankdata(pred, method="ordinal")
    group = np.ceil(ranks * n_groups / len(pred)).astype(int)
    frame = pd.DataFrame({"t": t, "e": e.astype(int), "group": group})
    km = fit_km(frame, duration_col="t", event_col="e", group_col="group", times=[time], conf_level=conf_level)
    at = km.extra["at_times"].set_index("group")
    rows = []
    for g in sorted(np.unique(group)):
        sel = group == g
        rows.append(
            {
                "group": f"Q{int(g)}",
                "n": int(sel.sum()),
                "predicted": float(pred[sel].mean()),
                "observed": float(at.loc[g, "survival"]),
                "conf_low": float(at.loc[g, "conf_low"]),
                "conf_high": float(at.loc[g, "conf_high"]),
            }
        )
    pseudo = _km_pseudo_values(t, e, float(time))
    sm = lowess(pseudo, pred, frac=frac, it=0, return_sorted=True)
    smooth = pd.DataFrame({"predicted": sm[:, 0], "observed": sm[:, 1]}).drop_duplicates("predicted")
    fitted = np.interp(pred, smooth["predicted"].to_numpy(), smooth["observed"].to_numpy())
    diff = np.abs(fitted - pred)
    glance = pd.DataFrame(
        {"time": [float(time)], "ici": [float(diff.mean())], "error_p50": [float(np.median(diff))],
         "error_p90": [float(np.quantile(diff, 0.9))]}
    )
    return Result(
        method="Calibration at a time point",
        tidy=pd.DataFrame(rows, columns=["group", "n", "predicted", "observed", "conf_low", "conf_high"]),
        glance=glance,
        model=None,
        extra={"smooth": smooth.reset_index(drop=True)},
        conventions={
            "groups": "equal-size groups of predicted survival (ties broken by order)",
            "observed": "Kaplan-Meier at time per group, log CI as R survfit",
            "smooth": "lowess (statsmodels, it=0) of KM pseudo-observations on predicted survival",
        },
    )


# ----------------------------------------------------------------------------- validation


def split_train_test(
    df: pd.DataFrame,
    *,
    test_fraction: float = 0.3,
    seed: int | np.random.Generator,
    stratify_col: str | None = None,
    group_col: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random train/test split, optionally stratified (e.g. by the event) or by group (patient).

    Parameters
    ----------
    df : pandas.DataFrame
        Data to split. Not modified.
    test_fraction : float, default 0.3
        Share of rows (or groups) in the test set, in (0, 1).
    seed : int or numpy.random.Generator
        Randomness.
    stratify_col : str, optional
        Keep the share of each value of this column (e.g. the event indicator) equal.
    group_col : str, optional
        Keep all rows of a group (e.g. ``patient_id``) on one side. Not with ``stratify_col``.

    Returns
    -------
    tuple of pandas.DataFrame
        ``(train, test)``, each with the original index, in the original row order.
    """
    where = "split_train_test"
    if not (0 < test_fraction < 1):
        raise ModelSpecificationError(f"{where}: test_fraction must lie strictly between 0 and 1, got {test_fraction!r}.")
    if stratify_col is not None and group_col is not None:
        raise ModelSpecificationError(f"{where}: give stratify_col or group_col, not both.")
    _columns(df, [stratify_col, group_col], where)
    rng = np.random.default_rng(seed)
    n = len(df)
    is_test = np.zeros(n, dtype=bool)
    if group_col is not None:
        codes, uniq = pd.factorize(df[group_col])
        chosen = rng.permutation(len(uniq))[: int(round(test_fraction * len(uniq)))]
        is_test = np.isin(codes, chosen)
    else:
        keys = pd.factorize(df[stratify_col])[0] if stratify_col is not None else np.zeros(n, dtype=int)
        for k in np.unique(keys):
            rows = np.flatnonzero(keys == k)
            take = rng.permutation(rows)[: int(round(test_fraction * len(rows)))]
            is_test[take] = True
    if is_test.all() or not is_test.any():
        raise ModelSpecificationError(f"{where}: the split left one side empty; use more rows or another test_fraction.")
    return df.loc[~is_test].copy(), df.loc[is_test].copy()


def bootstrap_optimism(
    df: pd.DataFrame,
    *,
    fit_fn: Callable[[pd.DataFrame], Any],
    metric_fn: Callable[[Any, pd.DataFrame], float],
    n_boot: int = 200,
    seed: int | np.random.Generator,
) -> Result:
    """Harrell's bootstrap optimism correction of a performance measure.

    ``apparent = metric(fit(df), df)``; in each bootstrap sample ``b``:
    ``optimism_b = metric(fit(b), b) - metric(fit(b), df)``; corrected = apparent -
    mean optimism (Harrell, Lee & Mark 1996; Steyerberg 2019, ch. 17).

    Parameters
    ----------
    df : pandas.DataFrame
        Development data.
    fit_fn : callable
        ``fit_fn(data) -> fitted model`` (e.g. ``lambda d: fit_cox(d, ...)``).
    metric_fn : callable
        ``metric_fn(fitted, data) -> float`` (e.g. Harrell's C of the model's linear
        predictor on ``data``).
    n_boot : int, default 200
        Bootstrap replicates.
    seed : int or numpy.random.Generator
        Randomness.

    Returns
    -------
    Result
        ``tidy`` one row: ``apparent``, ``optimism``, ``corrected``, ``n_boot``
        (replicates that ran). ``extra["replicates"]``: ``replicate``, ``boot``
        (performance in the bootstrap sample), ``test`` (on ``df``), ``optimism``.

    Raises
    ------
    ModelSpecificationError
        ``n_boot < 1``; every replicate failed (the last error is chained).

    References
    ----------
    .. [1] Harrell, F. E., Lee, K. L. & Mark, D. B. (1996). Multivariable prognostic models.
       Stat. Med. 15, 361-387.
    """
    where = "bootstrap_optimism"
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 1):
        raise ModelSpecificationError(f"{where}: n_boot must be a positive integer.")
    rng = np.random.default_rng(seed)
    apparent = float(metric_fn(fit_fn(df), df))
    reps = []
    last_exc: Exception | None = None
    n = len(df)
    failed = 0
    for b in range(n_boot):
        boot = df.iloc[rng.integers(0, n, n)].reset_index(drop=True)
        try:
            fb = fit_fn(boot)
            pb = float(metric_fn(fb, boot))
            pt = float(metric_fn(fb, df))
        except ModelSpecificationError as exc:  # e.g. a level absent from the bootstrap sample
            last_exc = exc
            failed += 1
            continue
        reps.append({"replicate": b, "boot": pb, "test": pt, "optimism": pb - pt})
    if not reps:
        raise ModelSpecificationError(f"{where}: every bootstrap replicate failed ({last_exc}).") from last_exc
    rep = pd.DataFrame(reps)
    opt = float(rep["optimism"].mean())
    return Result(
        method="Bootstrap optimism correction",
        tidy=pd.DataFrame(
            {"apparent": [apparent], "optimism": [opt], "corrected": [apparent - opt], "n_boot": [len(rep)]}
        ),
        glance=pd.DataFrame({"n_failed": [failed]}),
        model=None,
        extra={"replicates": rep},
        conventions={"method": "Harrell's optimism bootstrap (resampling rows with replacement)"},
    )
