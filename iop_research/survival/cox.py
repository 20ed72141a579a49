"""Cox proportional hazards: our own numpy engine, validated against R's ``survival``.

The engine handles right-censored data and counting-process ``(start, stop]`` rows
(time-varying covariates, Andersen-Gill recurrent events) with Efron or Breslow ties,
strata, case weights and cluster-robust (sandwich) variance, and is fast enough for
millions of rows. :func:`ph_test` replicates ``survival::cox.zph`` (survival 3.x).

The public names are re-exported from :mod:`iop_research.survival`.

Algorithm
---------
All rows are placed on one integer time axis: a time's key is the number of distinct event
times at or before it, and each stratum gets its own band of keys, so that one set of
cumulative sums serves every stratum.
For the distinct event times ``T_1 < ... < T_G`` each row ``j`` is at risk at the event
times with index ``b_j <= g < a_j`` (``a_j`` = number of event times ``<= stop_j``,
``b_j`` = number ``<= start_j``), so the risk-set sums ``S0, S1, S2`` of ``w exp(eta)``,
``w exp(eta) x`` and ``w exp(eta) x x'`` are a cumulative sum of two ``bincount``s
(entries minus exits).  Efron's tie correction expands each group of ``d`` tied events
into ``d`` pseudo event times (weights ``l/d``), vectorised over all groups.  Newton-Raphson
with step halving and R's convergence rule (relative change of the log partial likelihood
below ``tol``) mirrors ``survival``'s ``coxfit6``/``agfit4``; score residuals follow
``agscore3`` and the cluster-robust variance is ``D'D`` with ``D`` the dfbeta residuals
summed within clusters, as ``coxph(..., cluster = id)``.  Harrell's concordance and its
infinitesimal-jackknife standard error (as R's ``concordancefit``) come from 2-D dominance
sums (stop/start key x rank of the linear predictor): a dense cumulative table when
keys x distinct predictor values is small, otherwise a Fenwick-tree bit decomposition.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iop_research.results import TIDY_COX_COLUMNS, Result
from iop_research.exceptions import ConvergenceError, ModelSpecificationError, format_ids

__all__ = ["fit_cox", "ph_test", "CoxModel"]

#: Columns of ``fit_cox(...).tidy``.
COX_TIDY_COLUMNS = TIDY_COX_COLUMNS + ("naive_std_error",)
#: Columns of ``fit_cox(...).glance``.
COX_GLANCE_COLUMNS = (
    "n",
    "n_events",
    "n_clusters",
    "loglik_null",
    "loglik",
    "concordance",
    "concordance_se",
    "lr_statistic",
    "lr_df",
    "lr_p_value",
    "wald_statistic",
    "wald_p_value",
    "score_statistic",
    "score_p_value",
    "robust_score_statistic",
    "robust_score_p_value",
    "iterations",
    "converged",
)
#: Columns of ``ph_test(...).tidy``.
PH_TIDY_COLUMNS = ("term", "statistic", "df", "p_value")

_TIES = ("efron", "breslow")
_TRANSFORMS = ("km", "rank", "identity", "log")
_TOLER_CHOL = 1e-9  # R's coxph.control(toler.chol)


@dataclass(frozen=True)
class CoxModel:
    """Fitted Cox model (the ``model`` of :func:`fit_cox`'s result).

    Attributes
    ----------
    coefficients : pandas.Series
        Log hazard ratios by column name.
    var : numpy.ndarray
        Variance matrix reported (robust when robust/cluster, else model-based).
    naive_var : numpy.ndarray
        Model-based variance, inverse of the information matrix.
    columns : tuple of str
        Design column names.
    assign : dict of str to list of int
        Term name to design column positions (a categorical is one term).
    ties : str
        ``"efron"`` or ``"breslow"``.
    robust : bool
        Whether ``var`` is the sandwich estimator.
    data : dict
        Arrays used for the fit and needed by :func:`ph_test`: ``start``, ``stop``,
        ``event``, ``x``, ``weights``, ``strata``, ``is_counting``; for prediction and
        residuals also ``means`` (unweighted column means of ``x``; R's ``fit$means`` differ, see
        ``survival._riskset.r_means``), ``cluster`` (cluster codes or None) and ``row_index``
        (the index labels of the rows used).
    spec : dict
        What is needed to rebuild the design for new data and to label output
        (:mod:`iop_research.survival.predict`, :mod:`iop_research.survival.residuals`):
        ``covariates`` (list or None), ``formula`` (str or None), ``levels`` (categorical
        covariate -> its levels, reference first), ``model_spec`` (formulaic ``ModelSpec``
        for formula fits), ``strata_cols`` (list, empty without strata), ``strata_levels``
        (label of each stratum code), ``cluster_levels`` (label of each cluster code),
        ``duration_col``, ``start_col``, ``stop_col``, ``event_col``, ``weights_col``,
        ``cluster_col``.
    """

    coefficients: pd.Series
    var: np.ndarray
    naive_var: np.ndarray
    columns: tuple
    assign: Mapping[str, list]
    ties: str
    robust: bool
    data: Mapping[str, Any] = field(repr=False)
    spec: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"CoxModel(ties={self.ties!r}, robust={self.robust}, coefficients={dict(self.coefficients)})"


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------


def _require_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ModelSpecificationError(
            f"{what}: column(s) {format_ids(missing)} not found in the data frame "
            f"(available: {format_ids(list(df.columns), limit=12)}). Fix the column name argument."
        )


def _as_float(df: pd.DataFrame, col: str, what: str) -> np.ndarray:
    s = df[col]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise ModelSpecificationError(
            f"{what} column {col!r} has dtype {s.dtype}, expected numbers. Convert it to numeric first."
        )
    arr = s.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ModelSpecificationError(
            f"{what} column {col!r} has {int(bad.sum())} missing or infinite value(s) "
            f"(rows: {format_ids(df.index[bad])}). Drop or impute these rows explicitly before fitting."
        )
    return arr


def _is_categorical(s: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(s)
        or pd.api.types.is_string_dtype(s)
    )


def _design_from_covariates(df: pd.DataFrame, covariates: Sequence[str]):
    if isinstance(covariates, str):
        covariates = [covariates]
    covariates = list(covariates)
    if not covariates:
        raise ModelSpecificationError("covariates is empty: name at least one column (or pass formula=).")
    _require_columns(df, covariates, "covariates")
    cols: list[np.ndarray] = []
    names: list[str] = []
    assign: dict[str, list[int]] = {}
    for cov in covariates:
        s = df[cov]
        if _is_categorical(s):
            if s.isna().any():
                bad = s.isna().to_numpy()
                raise ModelSpecificationError(
                    f"covariate {cov!r} has {int(bad.sum())} missing value(s) (rows: {format_ids(df.index[bad])}). "
                    "Drop or impute these rows explicitly before fitting."
                )
            if isinstance(s.dtype, pd.CategoricalDtype):
                levels = [lv for lv in s.cat.categories if (s == lv).any()]
            else:
                levels = sorted(pd.unique(s), key=lambda v: (str(type(v)), v))
            if len(levels) < 2:
                raise ModelSpecificationError(
                    f"covariate {cov!r} has a single level ({format_ids(levels)}); a Cox model cannot estimate its "
                    "effect. Remove it from covariates or check the cohort filter."
                )
            idx = []
            for lv in levels[1:]:
                idx.append(len(names))
                names.append(f"{cov}[T.{lv}]")
                cols.append((s == lv).to_numpy(dtype=float))
            assign[cov] = idx
        else:
            arr = _as_float(df, cov, "covariate")
            assign[cov] = [len(names)]
            names.append(cov)
            cols.append(arr)
    return np.column_stack(cols), names, assign


def _design_from_formula(df: pd.DataFrame, formula: str):
    try:
        from formulaic import model_matrix
    except ImportError as exc:  # pragma: no cover - formulaic is a dependency of the venv
        raise ModelSpecificationError(
            "formula= needs the 'formulaic' package; install it or pass covariates=[...] instead."
        ) from exc
    rhs = formula.split("~", 1)[1] if "~" in formula else formula
    try:
        mm = model_matrix(rhs, df, na_action="ignore")
    except Exception as exc:
        raise ModelSpecificationError(
            f"formula {formula!r} could not be evaluated on the data ({type(exc).__name__}: {exc}). "
            "Check the column names and the formula syntax (formulaic/patsy, e.g. 'treat + C(site) + age')."
        ) from exc
    used_cols = sorted(mm.model_spec.variables_by_source.get("data", set()))
    miss = df[used_cols].isna().to_numpy() if used_cols else np.zeros((len(df), 0), dtype=bool)
    if miss.any():
        rows = miss.any(axis=1)
        bad_cols = [used_cols[j] for j in np.flatnonzero(miss.any(axis=0))]
        raise ModelSpecificationError(
            f"formula {formula!r}: {int(rows.sum())} row(s) have missing values in {format_ids(bad_cols)} "
            f"(rows: {format_ids(df.index[rows])}). Drop or impute them explicitly before fitting."
        )
    names = [str(c) for c in mm.columns]
    x = np.asarray(mm, dtype=float)
    assign: dict[str, list[int]] = {}
    for term, idx in mm.model_spec.term_indices.items():
        tname = str(term)
        if tname == "1":
            continue
        assign[tname] = list(idx)
    keep = [i for i, nm in enumerate(names) if nm != "Intercept"]
    remap = {old: new for new, old in enumerate(keep)}
    assign = {t: [remap[i] for i in idx] for t, idx in assign.items() if all(i in remap for i in idx)}
    names = [names[i] for i in keep]
    x = x[:, keep]
    if x.shape[1] == 0:
        raise ModelSpecificationError(f"formula {formula!r} has no covariate terms; add at least one.")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = bad.any(axis=1)
        colsbad = [names[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise ModelSpecificationError(
            f"formula {formula!r}: {int(rows.sum())} row(s) have missing or infinite covariate values in "
            f"{format_ids(colsbad)} (rows: {format_ids(df.index[rows])}). Drop or impute them explicitly."
        )
    return x, names, assign


def _codes(df: pd.DataFrame, col: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    s = df[col]
    if s.isna().any():
        bad = s.isna().to_numpy()
        raise ModelSpecificationError(
            f"{what} column {col!r} has {int(bad.sum())} missing value(s) (rows: {format_ids(df.index[bad])}). "
            "Fill or drop them explicitly."
        )
    codes, uniques = pd.factorize(s, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _check_collinear(x: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Centre x; raise ModelSpecificationError for constant or collinear columns."""
    xc = x - x.mean(axis=0)
    ss = np.einsum("ij,ij->j", xc, xc)
    scale = np.einsum("ij,ij->j", x, x)
    const = ss <= 1e-12 * np.maximum(scale, 1.0)
    if const.any():
        raise ModelSpecificationError(
            f"covariate(s) {format_ids([names[j] for j in np.flatnonzero(const)])} are constant in the data "
            "used for the fit; a Cox model has no intercept and cannot estimate them. Remove them."
        )
    sd = np.sqrt(ss)
    corr = (xc.T @ xc) / np.outer(sd, sd)
    # sequential (Gram-Schmidt) pivot: column j is collinear with earlier kept columns
    p = len(names)
    kept: list[int] = []
    for j in range(p):
        if kept:
            a = corr[np.ix_(kept, kept)]
            b = corr[kept, j]
            resid = corr[j, j] - b @ np.linalg.solve(a, b)
        else:
            resid = corr[j, j]
        if resid < 1e-9:
            raise ModelSpecificationError(
                f"singular design: term {names[j]!r} is a linear combination of "
                f"{format_ids([names[k] for k in kept]) or 'a constant'} (collinear terms). "
                "Drop one of the collinear terms or merge categories."
            )
        kept.append(j)
    return xc


# --------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------


class _Engine:
    """Risk-set bookkeeping for one data set; evaluates loglik, score and information."""

    def __init__(self, start, stop, event, x, weights, strata, efron: bool):
        self.n = len(stop)
        self.xcols = [np.ascontiguousarray(x[:, k]) for k in range(x.shape[1])]  # centred design
        self.w = weights
        self.event = event
        self.efron = efron
        p = x.shape[1]
        self.p = p
        ev = np.flatnonzero(event)
        self.ev = ev
        # integer time axis on the distinct event times only: key = rank among event times
        # (number of event times <= t), each stratum in its own band of width E + 2
        et = np.unique(stop[ev])
        band = len(et) + 2
        skey = np.searchsorted(et, stop, side="right").astype(np.int64)
        finite_start = np.isfinite(start)
        if finite_start.all():
            bkey = np.searchsorted(et, start, side="right").astype(np.int64)
        else:
            bkey = np.zeros(self.n, dtype=np.int64)
        if strata.any():
            skey += strata * band
            bkey += strata * band
        self.skey, self.bkey = skey, bkey
        gkeys, ginv, dcount = np.unique(skey[ev], return_inverse=True, return_counts=True)
        self.gkeys = gkeys
        self.G = len(gkeys)
        self.ev_group = ginv.ravel()
        self.dcount = dcount
        self.wev = weights[ev]
        self.dw = np.bincount(self.ev_group, weights=self.wev, minlength=self.G)
        # risk set of row j: event-time indices b_j <= g < a_j
        self.a = np.searchsorted(gkeys, skey, side="right")
        self.b = np.searchsorted(gkeys, bkey, side="right")
        # pseudo event times (slots): Efron expands a group of d ties into d slots
        if efron and (dcount > 1).any():
            slot_g = np.repeat(np.arange(self.G), dcount)
            first = np.concatenate([[0], np.cumsum(dcount)[:-1]])
            lidx = np.arange(len(slot_g)) - first[slot_g]
            self.slot_g = slot_g
            self.slot_f = lidx / dcount[slot_g]
            self.slot_w = (self.dw / dcount)[slot_g]
        else:
            self.slot_g = np.arange(self.G)
            self.slot_f = np.zeros(self.G)
            self.slot_w = self.dw
        self.iu = np.triu_indices(p)
        self.xev = np.column_stack([xk[ev] for xk in self.xcols])

    def _sums(self, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Risk-set sums and tied-event sums of one row vector at each event time."""
        G = self.G
        d = np.bincount(self.b, weights=vec, minlength=G + 1)
        d -= np.bincount(self.a, weights=vec, minlength=G + 1)
        return np.cumsum(d[:G]), np.bincount(self.ev_group, weights=vec[self.ev], minlength=G)

    def moments(self, beta: np.ndarray, need_info: bool = True):
        """Risk-set (s) and tied-event (d) sums of r, r x, r x x' (G x k) with r = w exp(x beta)."""
        xc = self.xcols
        p = self.p
        eta = xc[0] * beta[0]
        for k in range(1, p):
            eta += xc[k] * beta[k]
        score = np.exp(eta)
        r = self.w * score
        ncol = 1 + p + (len(self.iu[0]) if need_info else 0)
        s = np.empty((self.G, ncol))
        d = np.empty((self.G, ncol))
        s[:, 0], d[:, 0] = self._sums(r)
        rx = []
        tmp = np.empty_like(r)
        for k in range(p):
            v = r * xc[k]
            rx.append(v)
            s[:, 1 + k], d[:, 1 + k] = self._sums(v)
        if need_info:
            for c, (i, j) in enumerate(zip(*self.iu)):
                np.multiply(rx[i], xc[j], out=tmp)
                s[:, 1 + p + c], d[:, 1 + p + c] = self._sums(tmp)
        return eta, score, s, d

    def evaluate(self, beta: np.ndarray, need_info: bool = True):
        """Return loglik, score, information and per-slot quantities at beta."""
        p = self.p
        # a too-long Newton step can overflow exp(x beta); it is detected below and halved
        with np.errstate(over="ignore", invalid="ignore"):
            eta, score, s, d = self.moments(beta, need_info)
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(score))):
            return -np.inf, None, None, None
        f = self.slot_f
        g = self.slot_g
        d2 = s[g, 0] - f * d[g, 0]
        if not np.all(d2 > 0):
            # exp(X beta) under- or overflowed: signal an unusable step (Newton halves it)
            return -np.inf, None, None, None
        xbar = (s[g, 1 : 1 + p] - f[:, None] * d[g, 1 : 1 + p]) / d2[:, None]
        sw = self.slot_w
        ev = self.ev
        wev = self.wev
        xev = self.xev
        loglik = float(wev @ eta[ev] - sw @ np.log(d2))
        u = wev @ xev - sw @ xbar
        info = None
        if need_info:
            info = self._info(sw, d2, xbar, s, d)
        return loglik, u, info, dict(beta=beta, eta=eta, score=score, d2=d2, xbar=xbar, s=s, d=d)

    def _info(self, weight, d2, xbar, s, d):
        """Sum over slots of weight * (S2 - f D2) / d2 - weight * xbar xbar'."""
        p = self.p
        c = weight / d2
        cg = np.bincount(self.slot_g, weights=c, minlength=self.G)
        cfg = np.bincount(self.slot_g, weights=c * self.slot_f, minlength=self.G)
        a = np.zeros((p, p))
        a[self.iu] = cg @ s[:, 1 + p :] - cfg @ d[:, 1 + p :]
        a = a + np.triu(a, 1).T
        return a - (xbar * weight[:, None]).T @ xbar

    def score_residuals(self, st: dict) -> np.ndarray:
        """Unweighted score residuals per row (as R's agscore3 / coxscore2) from an evaluate() state."""
        p, G = self.p, self.G
        score = st["score"]
        h = self.slot_w / st["d2"]
        xbar = st["xbar"]
        g = self.slot_g
        f = self.slot_f
        H = np.bincount(g, weights=h, minlength=G)
        F = np.bincount(g, weights=f * h, minlength=G)
        nslot = np.bincount(g, minlength=G).astype(float)
        CH = np.concatenate([[0.0], np.cumsum(H)])
        hsum = CH[self.a] - CH[self.b]
        ev = self.ev
        ge = self.ev_group
        resid = np.empty((self.n, p))
        for k in range(p):
            HX = np.bincount(g, weights=h * xbar[:, k], minlength=G)
            FX = np.bincount(g, weights=f * h * xbar[:, k], minlength=G)
            M3 = np.bincount(g, weights=xbar[:, k], minlength=G) / nslot
            CHX = np.concatenate([[0.0], np.cumsum(HX)])
            xk = self.xcols[k]
            col = -score * (xk * hsum - (CHX[self.a] - CHX[self.b]))
            col[ev] += (xk[ev] - M3[ge]) + score[ev] * (xk[ev] * F[ge] - FX[ge])
            resid[:, k] = col
        return resid


def _chol_inverse(info: np.ndarray, names: Sequence[str]) -> np.ndarray:
    try:
        lower = np.linalg.cholesky(info)
    except np.linalg.LinAlgError:
        diag = np.diag(info)
        bad = [names[j] for j in range(len(names)) if diag[j] <= _TOLER_CHOL * max(diag.max(), 1.0)]
        raise ModelSpecificationError(
            "the information matrix is singular: term(s) "
            f"{format_ids(bad or list(names))} carry no information in the risk sets "
            "(constant within strata, or collinear with other terms). Remove them or drop strata."
        ) from None
    linv = np.linalg.inv(lower)
    return linv.T @ linv


def _chol_inverse_diverging(info, names, beta):
    """Inverse information away from beta = 0: a singular matrix there means diverging coefficients."""
    try:
        return _chol_inverse(info, names)
    except ModelSpecificationError as exc:
        raise ConvergenceError(
            f"the information matrix became singular during Newton-Raphson (coefficients now "
            f"{dict(zip(names, np.round(beta, 3)))}): one or more coefficients may be infinite (monotone "
            "likelihood, e.g. a covariate that separates events from non-events). R warns; we raise. "
            "Collapse sparse categories or drop the separating covariate."
        ) from exc


def _newton(engine: _Engine, names, tol: float, max_iter: int):
    """Newton-Raphson with step halving, following survival's coxfit6/agfit4."""
    p = engine.p
    beta = np.zeros(p)
    loglik0, u0, info0, st0 = engine.evaluate(beta)
    if u0 is None:
        raise ConvergenceError(
            "risk-set sums are not finite at beta = 0 (extreme covariate values?); rescale the covariates "
            "(e.g. age in decades) and check for outliers."
        )
    var0 = _chol_inverse(info0, names)
    score_test = float(u0 @ var0 @ u0)
    loglik = loglik0
    newbeta = beta + var0 @ u0
    halving = False
    converged = False
    iters = 0
    info, u, st = info0, u0, st0
    for it in range(1, max_iter + 1):
        iters = it
        newlk, u, info, st = engine.evaluate(newbeta)
        if not np.isfinite(newlk):
            newlk = -np.inf
        elif abs(1 - loglik / newlk) <= tol and not halving:
            converged = True
            loglik = newlk
            beta = newbeta
            break
        if it == max_iter:
            break
        if newlk < loglik:
            halving = True
            newbeta = (newbeta + beta) / 2
        else:
            halving = False
            loglik = newlk
            beta = newbeta
            newbeta = newbeta + _chol_inverse_diverging(info, names, beta) @ u
    if not converged:
        raise ConvergenceError(
            f"Cox model did not converge in {max_iter} Newton-Raphson iterations (relative change in "
            f"log partial likelihood above tol={tol:g}; last coefficients {dict(zip(names, np.round(newbeta, 4)))}). "
            "R's coxph only warns here; we raise. Increase max_iter, rescale covariates, or look for a "
            "covariate that perfectly separates events (monotone likelihood; infinite hazard ratio)."
        )
    var = _chol_inverse_diverging(info, names, beta)
    # R's check for infinite coefficients (coxph.fit: toler.inf = sqrt(eps))
    infs = np.abs(u @ var)
    bad = (~np.isfinite(u)) | ((infs > tol) & (infs > np.sqrt(tol) * np.abs(beta)))
    if bad.any():
        raise ConvergenceError(
            f"log partial likelihood converged before coefficient(s) {format_ids([names[j] for j in np.flatnonzero(bad)])}; "
            "they may be infinite (monotone likelihood: the covariate separates events from non-events). "
            "R warns; we raise. Collapse categories or use a penalised model."
        )
    return beta, var, loglik0, loglik, score_test, iters, st0, st


# --------------------------------------------------------------------------------------
# concordance (Harrell's C, as R's concordance for coxph fits)
# --------------------------------------------------------------------------------------


_DENSE_CELLS = 20_000_000  # largest key x value table for the dense concordance path


def _dominance_sums(pkey, pval, pw, qkey, qval, kmax, vmax):
    """For each query: sum of pw over points with pkey >= qkey and pval < qval.

    Keys lie in [0, kmax), values in [0, vmax) (query values up to vmax). With few distinct
    keys x values a dense 2-D cumulative table answers each query in O(1); otherwise the
    bit decomposition of a Fenwick tree over the key axis is used (one stable sort per level).
    """
    if kmax * (vmax + 1) <= _DENSE_CELLS:
        table = np.bincount(pkey * vmax + pval, weights=pw, minlength=kmax * vmax).reshape(kmax, vmax)
        table = np.cumsum(table[::-1], axis=0)[::-1]  # key >= k
        cum = np.zeros((kmax, vmax + 1))
        np.cumsum(table, axis=1, out=cum[:, 1:])  # value < v
        return cum[qkey, qval]
    # condition pkey >= qkey  <=>  rk < qlim with rk = kmax - 1 - key, qlim = kmax - qkey
    prk = kmax - 1 - pkey
    qlim = kmax - qkey
    order_v = np.argsort(pval, kind="stable")
    prk_v = prk[order_v]
    pval_v = pval[order_v]
    pw_v = pw[order_v]
    out = np.zeros(len(qkey))
    for bit in range(max(1, int(kmax).bit_length())):
        sel = np.flatnonzero((qlim >> bit) & 1)
        if sel.size == 0:
            continue
        grp_p = prk_v >> bit
        o = np.argsort(grp_p.astype(np.uint16) if grp_p.max() < 65536 else grp_p, kind="stable")
        comp = grp_p[o] * (vmax + 1) + pval_v[o]
        cw = np.concatenate([[0.0], np.cumsum(pw_v[o])])
        grp_q = (qlim[sel] >> bit) - 1
        lo = np.searchsorted(comp, grp_q * (vmax + 1), side="left")
        hi = np.searchsorted(comp, grp_q * (vmax + 1) + qval[sel], side="left")
        out[sel] += cw[hi] - cw[lo]
    return out


def _concordance(engine: _Engine, lp: np.ndarray, cluster: np.ndarray | None):
    """Harrell's C and its standard error as R's coxph()$concordance (reverse = TRUE).

    Pairs (event i at T, comparator j at risk at T) are weighted w_i * w_j. The standard error
    is R's infinitesimal-jackknife one: per-row influence on Somers' d, summed within
    clusters, ``se = sqrt(sum(dfbeta^2) / 4)``.
    """
    w = engine.w
    ev = engine.ev
    n = engine.n
    _, vrank = np.unique(lp, return_inverse=True)
    vrank = vrank.ravel().astype(np.int64)
    vmax = int(vrank.max()) + 1
    # exit keys 2*stop (+1 for censored rows, which outlast an event at the same time); entry keys
    # 2*start + 1 (leaving the comparison set). An event at T compares with keys >= 2T + 1, so
    # row j is a comparator of the events with 2T + 1 in (bkey_j, ekey_j].
    ekey = 2 * engine.skey + (~engine.event)
    bkey = 2 * engine.bkey + 1
    kmax = int(max(ekey.max(), bkey.max())) + 2
    qk = 2 * engine.skey[ev] + 1
    vev = vrank[ev]
    wev = w[ev]
    if kmax * (vmax + 1) <= _DENSE_CELLS:
        # role A: each event against its comparators
        pts = np.bincount(ekey * vmax + vrank, weights=w, minlength=kmax * vmax)
        pts -= np.bincount(bkey * vmax + vrank, weights=w, minlength=kmax * vmax)
        pge = np.cumsum(pts.reshape(kmax, vmax)[::-1], axis=0)[::-1]  # key >= k
        pcum = np.zeros((kmax, vmax + 1))
        np.cumsum(pge, axis=1, out=pcum[:, 1:])  # value < v
        less = pcum[qk, vev]
        leq = less + pge[qk, vev]
        total = pcum[qk, vmax]
        # role B: each row as comparator; events with key <= h, split by value
        evt = np.bincount(qk * vmax + vev, weights=wev, minlength=kmax * vmax).reshape(kmax, vmax)
        ele = np.cumsum(evt, axis=0)  # key <= h
        egt = np.zeros((kmax, vmax + 1))
        np.cumsum(ele[:, ::-1], axis=1, out=egt[:, 1:])
        egt = egt[:, ::-1]  # egt[h, v]: events with key <= h and value >= v (egt[h, vmax] = 0)
        gt = egt[ekey, vrank + 1] - egt[bkey, vrank + 1]
        ge = egt[ekey, vrank] - egt[bkey, vrank]
        tot = egt[ekey, 0] - egt[bkey, 0]
    else:
        pkey = np.concatenate([ekey, bkey])
        pval = np.concatenate([vrank, vrank])
        pw = np.concatenate([w, -w])
        pair, pinv = np.unique(qk * (vmax + 1) + vev, return_inverse=True)
        uq_key, uq_val = pair // (vmax + 1), pair % (vmax + 1)
        qkey = np.concatenate([uq_key, uq_key, uq_key])
        qval = np.concatenate([uq_val, uq_val + 1, np.full(len(pair), vmax)])
        less, leq, total = _dominance_sums(pkey, pval, pw, qkey, qval, kmax, vmax).reshape(3, -1)[:, pinv.ravel()]
        # flip keys and values so that the same dominance sum applies
        qkeys = np.concatenate([np.repeat(kmax - 1 - ekey, 3), np.repeat(kmax - 1 - bkey, 3)])
        vv = np.stack([vmax - 1 - vrank, vmax - vrank, np.full(n, vmax)], axis=1).ravel()
        f = _dominance_sums(kmax - 1 - qk, vmax - 1 - vev, wev, qkeys, np.concatenate([vv, vv]), kmax, vmax)
        gt, ge, tot = (f.reshape(2, n, 3)[0] - f.reshape(2, n, 3)[1]).T
    conc = float(wev @ less)
    tied = float(wev @ (leq - less))
    disc = float(wev @ (total - leq))
    npair = conc + disc + tied
    if npair <= 0:
        return np.nan, np.nan
    cindex = (conc + tied / 2) / npair
    c_inf = gt.copy()
    d_inf = tot - ge
    t_inf = ge - gt
    c_inf[ev] += less
    d_inf[ev] += total - leq
    t_inf[ev] += leq - less
    somer = (conc - disc) / npair
    dfbeta = w * ((c_inf - d_inf) / npair - somer / npair * (c_inf + d_inf + t_inf))
    if cluster is not None:
        dfbeta = np.bincount(cluster, weights=dfbeta)
    return cindex, float(np.sqrt(np.sum(dfbeta**2) / 4))


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------

_CONVENTIONS = {
    "ties": "Efron by default (as R coxph); 'breslow' available. Efron with case weights uses the mean "
    "weight of the tied events, as survival's coxfit6/agfit4.",
    "intervals": "counting-process rows are (start, stop], as R Surv(start, stop, event); a row is at risk "
    "at event time t when start < t <= stop.",
    "variance": "model-based: inverse observed information at the estimate. Robust (robust=True or "
    "cluster_col): sandwich D'D with D the weighted dfbeta residuals summed within clusters (each row "
    "its own cluster when no cluster_col), as R coxph(..., robust=TRUE / cluster(id)); std_error, limits "
    "and p are then robust and naive_std_error is the model-based one. Unlike R we do not switch to "
    "robust automatically for non-integer weights.",
    "tests": "likelihood ratio and score (log-rank) tests are model-based; the Wald test uses the reported "
    "variance (robust when robust, as R); robust_score_statistic is R's 'Robust' score test (score "
    "residuals at beta = 0 summed within clusters).",
    "confidence_intervals": "Wald intervals estimate +/- z * std_error; hazard-ratio limits exponentiated.",
    "convergence": "Newton-Raphson from 0 with step halving; stops when |1 - loglik_old/loglik_new| <= tol "
    "(R's eps, default 1e-9). Non-convergence raises ConvergenceError where R only warns.",
    "concordance": "Harrell's C as R's coxph()$concordance (reverse=TRUE, timewt='n', within strata, "
    "pairs weighted w_i*w_j; a row censored at an event time outlasts it; tied event times are not "
    "comparable; ties in the linear predictor count 1/2). concordance_se is R's infinitesimal-jackknife "
    "standard error (per-row influence on Somers' d, summed within clusters when cluster_col is given).",
    "weights": "case weights as R's weights=; rows with zero weight are accepted but carry no information "
    "and are not counted in n and n_events (R rejects zero weights; the fit equals R's without those rows).",
    "coding": "object/category/bool covariates get treatment dummies, first sorted level (first "
    "category) as reference, named col[T.level] (R: collevel); formula terms via formulaic, intercept dropped.",
    "durations": "right-censored durations must be >= 0 (as R's Surv; a row with time 0 is at risk at time 0); counting-process rows "
    "need stop > start.",
    "time_fix": "times are used as given (R's coxph.control(timefix=TRUE) merges times that differ by "
    "floating-point noise; use whole days or round first).",
}


def fit_cox(
    df: pd.DataFrame,
    *,
    duration_col: str | None = None,
    event_col: str,
    covariates: Sequence[str] | None = None,
    formula: str | None = None,
    start_col: str | None = None,
    stop_col: str | None = None,
    strata_col: str | Sequence[str] | None = None,
    weights_col: str | None = None,
    cluster_col: str | None = None,
    robust: bool = False,
    ties: str = "efron",
    conf_level: float = 0.95,
    tol: float = 1e-9,
    max_iter: int = 50,
) -> Result:
    """Fit a Cox proportional hazards model (right-censored or counting-process data).

    Equal to R's ``survival::coxph`` to numerical precision (tested against survival 3.5).
    With counting-process rows and ``cluster_col`` set to the patient id this is the
    Andersen-Gill model for recurrent events (e.g. repeated relapses), with the
    Lin-Wei cluster-robust variance, as R's
    ``coxph(Surv(start, stop, event) ~ x + cluster(id))``. Time-varying exposures (MAT
    on/off, in treatment) enter as ``(start, stop]`` rows, which avoids immortal-time bias.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per subject (right-censored) or per ``(start, stop]`` interval. Not modified.
    duration_col : str, optional
        Follow-up time (e.g. days; any unit, must be >= 0 as in R) for right-censored data.
        Give either this or ``start_col`` and ``stop_col``.
    event_col : str
        Event indicator (1/True = event at the end of the row, 0/False = censored).
    covariates : list of str, optional
        Covariate columns. Numeric and 0/1 columns enter as they are; object, category and
        bool columns get treatment (dummy) coding with the first sorted level (first category
        for a pandas Categorical) as reference, named ``col[T.level]`` (patsy/formulaic style;
        R would name them ``collevel``). Give either this or ``formula``.
    formula : str, optional
        Right-hand side (formulaic/patsy syntax, an optional ``"~"`` prefix is ignored), e.g.
        ``"treat + C(site) + age"`` or ``"treat * in_treatment"``; the intercept is dropped.
    start_col, stop_col : str, optional
        Interval ``(start, stop]`` of counting-process rows, same unit as the events;
        ``stop`` must exceed ``start``.
    strata_col : str or list of str, optional
        Stratification: separate baseline hazards per stratum (R ``strata()``). Default None.
    weights_col : str, optional
        Non-negative case weights (R ``weights=``). Default None (all 1).
    cluster_col : str, optional
        Cluster id (patient); implies the robust variance with dfbeta residuals summed within
        clusters (R ``cluster(id)``). Default None.
    robust : bool, default False
        Sandwich variance; without ``cluster_col`` each row is its own cluster.
    ties : {"efron", "breslow"}, default "efron"
        Handling of tied event times (R ``ties=``).
    conf_level : float, default 0.95
        Level of the Wald confidence intervals.
    tol : float, default 1e-9
        Convergence tolerance on the relative change of the log partial likelihood (R ``eps``).
    max_iter : int, default 50
        Maximum Newton-Raphson iterations (R ``iter.max`` defaults to 20).

    Returns
    -------
    Result
        ``tidy`` columns ``term, estimate, std_error, conf_low, conf_high, p_value,
        hazard_ratio, hr_conf_low, hr_conf_high, naive_std_error`` (one row per design column;
        ``term`` is the design column name). ``glance`` (one row) columns ``n, n_events,
        n_clusters, loglik_null, loglik, concordance, concordance_se, lr_statistic, lr_df,
        lr_p_value, wald_statistic, wald_p_value, score_statistic, score_p_value,
        robust_score_statistic, robust_score_p_value, iterations, converged``. ``model`` is a
        :class:`CoxModel`. ``conventions`` states ties, intervals, variance and tests next to R's.

    Raises
    ------
    ModelSpecificationError
        Missing columns, negative durations, ``stop <= start``, missing/infinite values in
        covariates, weights, strata or cluster, negative weights, a constant covariate or a
        categorical with one level, collinear terms (named), no events.
    ConvergenceError
        Newton-Raphson did not converge in ``max_iter`` iterations, or a coefficient diverges
        (R warns in both cases).

    See Also
    --------
    ph_test : test of proportional hazards (R ``cox.zph``).

    References
    ----------
    .. [1] Cox, D. R. (1972). Regression models and life-tables. JRSS B 34(2), 187-220.
    .. [2] Efron, B. (1977). The efficiency of Cox's likelihood function for censored data.
       JASA 72(359), 557-565.
    .. [3] Andersen, P. K. & Gill, R. D. (1982). Cox's regression model for counting processes:
       a large sample study. Ann. Statist. 10(4), 1100-1120.
    .. [4] Lin, D. Y. & Wei, L. J. (1989). The robust inference for the Cox proportional hazards
       model. JASA 84(408), 1074-1078.
    .. [5] Therneau, T. M. & Grambsch, P. M. (2000). Modeling Survival Data: Extending the Cox
       Model. Springer. (R package ``survival``.)
    .. [6] Harrell, F. E., Califf, R. M., Pryor, D. B., Lee, K. L. & Rosati, R. A. (1982).
       Evaluating the yield of medical tests. JAMA 247(18), 2543-2546.
    .. [7] Therneau, T. & Atkinson, E. (2020). The concordance statistic. Vignette of R package
       ``survival`` (variance of the concordance by the infinitesimal jackknife).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> df = pd.DataFrame({"treat": rng.integers(0, 2, 200), "age": rng.normal(35, 8, 200)})
    >>> t = rng.exponential(100 * np.exp(0.7 * df["treat"]))
    >>> df["days"] = np.ceil(np.minimum(t, 180)); df["relapse"] = (t < 180).astype(int)
    >>> res = fit_cox(df, duration_col="days", event_col="relapse", covariates=["treat", "age"])
    >>> res.tidy[["term", "hazard_ratio"]].round(2)
        term  hazard_ratio
    0  treat          0.37
    1    age          1.01
    >>> int(res.glance["n_events"].iloc[0])
    140

    Andersen-Gill model for recurrent relapses: one ``(start, stop]`` row per gap between
    relapses, MAT as a time-varying exposure, robust variance clustered by patient:

    >>> rows = pd.DataFrame({
    ...     "patient_id": [1, 1, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7],
    ...     "start": [0, 10, 30, 0, 5, 0, 0, 40, 0, 0, 12, 0],
    ...     "stop": [10, 30, 90, 5, 60, 90, 40, 70, 25, 12, 80, 50],
    ...     "relapse": [1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 0, 1],
    ...     "on_mat": [0, 1, 1, 0, 1, 1, 0, 1, 0, 0, 0, 1]})
    >>> ag = fit_cox(rows, start_col="start", stop_col="stop", event_col="relapse",
    ...              covariates=["on_mat"], cluster_col="patient_id")
    >>> ag.tidy[["term", "hazard_ratio", "std_error", "naive_std_error"]].round(3)
         term  hazard_ratio  std_error  naive_std_error
    0  on_mat         0.363      0.579            0.771
    >>> int(ag.glance["n_clusters"].iloc[0])
    7
    """
    if not isinstance(df, pd.DataFrame):
        raise ModelSpecificationError(f"df must be a pandas DataFrame, got {type(df).__name__}.")
    if ties not in _TIES:
        raise ModelSpecificationError(f"ties={ties!r} is not supported; use 'efron' (default) or 'breslow'.")
    if not (0 < conf_level < 1):
        raise ModelSpecificationError(f"conf_level={conf_level!r} must lie strictly between 0 and 1 (e.g. 0.95).")
    if (covariates is None) == (formula is None):
        raise ModelSpecificationError("give exactly one of covariates=[...] or formula='...'.")
    counting = start_col is not None or stop_col is not None
    if counting and duration_col is not None:
        raise ModelSpecificationError("give either duration_col (right-censored) or start_col and stop_col, not both.")
    if counting and (start_col is None or stop_col is None):
        raise ModelSpecificationError("counting-process data needs both start_col and stop_col.")
    if not counting and duration_col is None:
        raise ModelSpecificationError("give duration_col, or start_col and stop_col for (start, stop] rows.")
    if len(df) == 0:
        raise ModelSpecificationError("df has no rows.")

    need = [event_col] + ([start_col, stop_col] if counting else [duration_col])
    _require_columns(df, need, "fit_cox")
    if counting:
        start = _as_float(df, start_col, "start")
        stop = _as_float(df, stop_col, "stop")
        bad = stop <= start
        if bad.any():
            raise ModelSpecificationError(
                f"{int(bad.sum())} row(s) have {stop_col} <= {start_col} (rows: {format_ids(df.index[bad])}); "
                "intervals are (start, stop] and must have positive length. Fix or drop these rows."
            )
    else:
        stop = _as_float(df, duration_col, "duration")
        bad = stop < 0
        if bad.any():
            raise ModelSpecificationError(
                f"{int(bad.sum())} row(s) have negative {duration_col} (rows: {format_ids(df.index[bad])}); "
                "durations must be >= 0 (0 is allowed, as in R's Surv(time, event)). Fix or drop these rows."
            )
        start = np.full(len(df), -np.inf)
    ev_raw = _as_float(df, event_col, "event")
    badev = ~np.isin(ev_raw, (0.0, 1.0))
    if badev.any():
        raise ModelSpecificationError(
            f"event column {event_col!r} must be 0/1 or boolean; {int(badev.sum())} row(s) have other values "
            f"(rows: {format_ids(df.index[badev])}). Recode competing events as 0 or use a competing-risks model."
        )
    event = ev_raw == 1.0

    if weights_col is not None:
        _require_columns(df, [weights_col], "weights_col")
        weights = _as_float(df, weights_col, "weights")
        neg = weights < 0
        if neg.any():
            raise ModelSpecificationError(
                f"weights column {weights_col!r} has {int(neg.sum())} negative value(s) "
                f"(rows: {format_ids(df.index[neg])}). Case weights must be >= 0."
            )
    else:
        weights = np.ones(len(df))

    if strata_col is not None:
        scols = [strata_col] if isinstance(strata_col, str) else list(strata_col)
        _require_columns(df, scols, "strata_col")
        for c in scols:
            _codes(df, c, "strata")  # validates missing values
        strata, _ = pd.factorize(pd.MultiIndex.from_frame(df[scols]), sort=True) if len(scols) > 1 else _codes(
            df, scols[0], "strata"
        )
        strata = np.asarray(strata, dtype=np.int64)
    else:
        strata = np.zeros(len(df), dtype=np.int64)

    if cluster_col is not None:
        _require_columns(df, [cluster_col], "cluster_col")
        if df[cluster_col].isna().any():
            _codes(df, cluster_col, "cluster")  # raises with the offending rows
        cluster = pd.factorize(df[cluster_col], sort=False)[0].astype(np.int64)
        robust = True
    else:
        cluster = None

    if formula is not None:
        x, names, assign = _design_from_formula(df, formula)
    else:
        x, names, assign = _design_from_covariates(df, covariates)

    use = weights > 0
    if not use.any():
        raise ModelSpecificationError("all case weights are zero; nothing to fit.")
    if not (event & use).any():
        raise ModelSpecificationError(
            f"no events ({event_col} == 1) among rows with positive weight; a Cox model needs events."
        )
    idx = np.flatnonzero(use) if not use.all() else slice(None)
    xu = x[idx]
    means = xu.mean(axis=0)
    xc = _check_collinear(xu, names)
    engine = _Engine(start[idx], stop[idx], event[idx], xc, weights[idx], strata[idx], ties == "efron")
    beta, naive_var, loglik0, loglik, score_stat, iters, st0, st = _newton(engine, names, tol, max_iter)
    p = len(names)

    robust_score = np.nan
    n_clusters = np.nan
    var = naive_var
    if robust:
        wu = weights[idx]
        # dfbeta = weighted score residuals (summed within clusters) times the model-based variance
        resid = engine.score_residuals(st) * wu[:, None]
        resid0 = engine.score_residuals(st0) * wu[:, None]
        if cluster is not None:
            cu = cluster[idx]
            ncl = int(cluster.max()) + 1
            resid = np.column_stack([np.bincount(cu, weights=resid[:, k], minlength=ncl) for k in range(p)])
            resid0 = np.column_stack([np.bincount(cu, weights=resid0[:, k], minlength=ncl) for k in range(p)])
            n_clusters = int(np.count_nonzero(np.bincount(cu, minlength=ncl)))
        # einsum, not @: OpenBLAS is pathologically slow for tall-by-tiny products
        dfb = np.einsum("ij,jk->ik", resid, naive_var)
        var = np.einsum("ij,ik->jk", dfb, dfb)
        u0 = resid0.sum(axis=0)
        robust_score = float(u0 @ np.linalg.solve(np.einsum("ij,ik->jk", resid0, resid0), u0))

    se = np.sqrt(np.diag(var))
    naive_se = np.sqrt(np.diag(naive_var))
    z = stats.norm.ppf(0.5 + conf_level / 2)
    lo, hi = beta - z * se, beta + z * se
    pval = 2 * stats.norm.sf(np.abs(beta / se))
    tidy = pd.DataFrame(
        {
            "term": names,
            "estimate": beta,
            "std_error": se,
            "conf_low": lo,
            "conf_high": hi,
            "p_value": pval,
            "hazard_ratio": np.exp(beta),
            "hr_conf_low": np.exp(lo),
            "hr_conf_high": np.exp(hi),
            "naive_std_error": naive_se,
        },
        columns=list(COX_TIDY_COLUMNS),
    )
    cindex, cindex_se = _concordance(engine, st["eta"], cluster[idx] if cluster is not None else None)
    wald = float(beta @ np.linalg.solve(var, beta))
    lr = 2 * (loglik - loglik0)
    glance = pd.DataFrame(
        [
            {
                "n": int(use.sum()),
                "n_events": int(event[idx].sum()),
                "n_clusters": n_clusters,
                "loglik_null": loglik0,
                "loglik": loglik,
                "concordance": cindex,
                "concordance_se": cindex_se,
                "lr_statistic": lr,
                "lr_df": p,
                "lr_p_value": float(stats.chi2.sf(lr, p)),
                "wald_statistic": wald,
                "wald_p_value": float(stats.chi2.sf(wald, p)),
                "score_statistic": score_stat,
                "score_p_value": float(stats.chi2.sf(score_stat, p)),
                "robust_score_statistic": robust_score,
                "robust_score_p_value": float(stats.chi2.sf(robust_score, p)) if robust else np.nan,
                "iterations": iters,
                "converged": True,
            }
        ],
        columns=list(COX_GLANCE_COLUMNS),
    )
    model = CoxModel(
        coefficients=pd.Series(beta, index=names, name="coef"),
        var=var,
        naive_var=naive_var,
        columns=tuple(names),
        assign={k: list(v) for k, v in assign.items()},
        ties=ties,
        robust=bool(robust),
        data=dict(
            start=start[idx],
            stop=stop[idx],
            event=event[idx],
            x=xu,
            means=means,
            weights=weights[idx],
            strata=strata[idx],
            is_counting=counting,
            cluster=cluster[idx] if cluster is not None else None,
            row_index=df.index[idx],
        ),
        spec=_prediction_spec(
            df, covariates=covariates, formula=formula, strata_col=strata_col, duration_col=duration_col,
            start_col=start_col, stop_col=stop_col, event_col=event_col, weights_col=weights_col,
            cluster_col=cluster_col,
        ),
    )
    method = "Cox proportional hazards" + (" (counting process)" if counting else "")
    return Result(method=method, tidy=tidy, glance=glance, model=model, conventions=_CONVENTIONS)


def _prediction_spec(df, *, covariates, formula, strata_col, **cols) -> dict:
    """What prediction for new data needs: covariate coding, formula spec, strata labels."""
    levels: dict[str, list] = {}
    model_spec = None
    if formula is not None:
        from formulaic import model_matrix

        rhs = formula.split("~", 1)[1] if "~" in formula else formula
        model_spec = model_matrix(rhs, df, na_action="ignore").model_spec
    else:
        covs = [covariates] if isinstance(covariates, str) else list(covariates)
        for cov in covs:
            s = df[cov]
            if _is_categorical(s):
                if isinstance(s.dtype, pd.CategoricalDtype):
                    levels[cov] = [lv for lv in s.cat.categories if (s == lv).any()]
                else:
                    levels[cov] = sorted(pd.unique(s), key=lambda v: (str(type(v)), v))
        covariates = covs
    scols = [] if strata_col is None else ([strata_col] if isinstance(strata_col, str) else list(strata_col))
    if len(scols) == 1:
        strata_levels = list(pd.factorize(df[scols[0]], sort=True)[1])
    elif scols:
        strata_levels = list(pd.factorize(pd.MultiIndex.from_frame(df[scols]), sort=True)[1])
    else:
        strata_levels = []
    cluster_col = cols.get("cluster_col")
    cluster_levels = list(pd.factorize(df[cluster_col], sort=False)[1]) if cluster_col is not None else None
    return dict(covariates=None if formula is not None else covariates, formula=formula, levels=levels,
                model_spec=model_spec, strata_cols=scols, strata_levels=strata_levels,
                cluster_levels=cluster_levels, **cols)


def _km_transform(start, stop, event, counting: bool) -> np.ndarray:
    """1 - KM(t-) at each row's stop time (unweighted, ignoring strata), as cox.zph's 'km'."""
    ut = np.unique(stop)
    ev_t = stop[event]
    d = np.bincount(np.searchsorted(ut, ev_t), minlength=len(ut)).astype(float)
    n_stop_ge = len(stop) - np.searchsorted(np.sort(stop), ut, side="left")
    if counting:
        n_start_ge = len(start) - np.searchsorted(np.sort(start), ut, side="left")
        nrisk = n_stop_ge - n_start_ge
    else:
        nrisk = n_stop_ge
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(d > 0, 1 - d / nrisk, 1.0)
    surv = np.cumprod(factor)
    # S(t-): surv at the largest unique time strictly below t
    pos = np.searchsorted(ut, stop, side="left")
    s_minus = np.concatenate([[1.0], surv])[pos]
    return 1 - s_minus


def ph_test(result: Result, *, transform: str = "km") -> Result:
    """Test proportional hazards with scaled Schoenfeld residuals (R ``cox.zph``).

    Replicates survival 3.x's ``cox.zph(fit, transform, terms=TRUE, global=TRUE)``: for
    each term the score test of adding ``x * g(t)`` to the model at the fitted
    coefficients, using the full ``2p x 2p`` information matrix (Efron or Breslow as the
    fit), with ``g`` the transformed event time centred at its mean over the events. A
    categorical term is tested jointly (df = number of its columns), as ``terms=TRUE``.

    Parameters
    ----------
    result : Result
        Output of :func:`fit_cox`.
    transform : {"km", "rank", "identity", "log"}, default "km"
        Time transform: ``1 - KM(t-)`` of the pooled unweighted Kaplan-Meier (R's default),
        rank of the times (average ties, all rows), the time itself, or its logarithm.

    Returns
    -------
    Result
        ``tidy`` columns ``term, statistic, df, p_value`` (one row per term, then
        ``"GLOBAL"``). ``glance`` one row: ``statistic, df, p_value`` of the global test.
        ``extra["residuals"]``: one row per event with ``time``, ``transformed_time`` and
        one column per term holding the scaled Schoenfeld residuals (R's ``zph$y``: beta +
        residual scaled by the average information; for a multi-column term the
        coefficient-weighted sum plus 1), sorted by stratum and time, for plotting
        ``beta(t)``.

    Raises
    ------
    ModelSpecificationError
        ``result`` is not a :func:`fit_cox` result, or ``transform`` is unknown.

    References
    ----------
    .. [1] Grambsch, P. M. & Therneau, T. M. (1994). Proportional hazards tests and
       diagnostics based on weighted residuals. Biometrika 81(3), 515-526.
    .. [2] Therneau, T. M. & Grambsch, P. M. (2000). Modeling Survival Data: Extending the Cox
       Model, ch. 6. Springer. R package ``survival`` 3.x, ``cox.zph``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(2)
    >>> df = pd.DataFrame({"treat": rng.integers(0, 2, 150)})
    >>> t = rng.exponential(50 * np.exp(0.5 * df["treat"]))
    >>> df["days"] = np.ceil(t); df["relapse"] = 1
    >>> zph = ph_test(fit_cox(df, duration_col="days", event_col="relapse", covariates=["treat"]))
    >>> list(zph.tidy["term"])
    ['treat', 'GLOBAL']
    >>> bool(zph.tidy["p_value"].between(0, 1).all())
    True
    """
    model = getattr(result, "model", None)
    if not isinstance(model, CoxModel):
        raise ModelSpecificationError("ph_test needs the result of fit_cox(...).")
    if transform not in _TRANSFORMS:
        raise ModelSpecificationError(
            f"transform={transform!r} is not supported; use one of {', '.join(_TRANSFORMS)}."
        )
    d = model.data
    start, stop, event, x, w, strata = d["start"], d["stop"], d["event"], d["x"], d["weights"], d["strata"]
    beta = model.coefficients.to_numpy()
    p = len(beta)
    if transform == "identity":
        ttimes = stop.copy()
    elif transform == "log":
        ttimes = np.log(stop)
    elif transform == "rank":
        ttimes = stats.rankdata(stop, method="average")
    else:
        ttimes = _km_transform(start, stop, event, d["is_counting"])
    gtime = ttimes - ttimes[event].mean()

    xc = x - x.mean(axis=0)
    engine = _Engine(start, stop, event, xc, w, strata, model.ties == "efron")
    _, _, _, st = engine.evaluate(beta)
    if st is None:  # pragma: no cover - the fit evaluated fine at these coefficients
        raise ModelSpecificationError("risk-set sums are not finite at the fitted coefficients.")
    G = engine.G
    # time weight per event group (all tied events share the time)
    gt_group = np.empty(G)
    gt_group[engine.ev_group] = gtime[engine.ev]
    g = engine.slot_g
    sw = engine.slot_w
    s, dd, d2, xbar = st["s"], st["d"], st["d2"], st["xbar"]
    gs = gt_group[g]
    i11 = engine._info(sw, d2, xbar, s, dd)
    i12 = engine._info(sw * gs, d2, xbar, s, dd)
    i22 = engine._info(sw * gs * gs, d2, xbar, s, dd)
    info11 = i11
    imat = np.block([[i11, i12], [i12.T, i22]])
    ev = engine.ev
    u2 = (w[ev] * gtime[ev]) @ xc[ev] - (sw * gs) @ xbar

    # Schoenfeld residuals: x - (mean over Efron slots of xbar)
    nslot = np.bincount(g, minlength=G).astype(float)
    m3 = np.column_stack([np.bincount(g, weights=xbar[:, k], minlength=G) for k in range(p)]) / nslot[:, None]
    schoen = xc[ev] - m3[engine.ev_group]

    terms = list(model.assign.keys())
    tests, dfs = [], []
    for t in terms:
        jj = model.assign[t]
        kk = list(range(p)) + [j + p for j in jj]
        uu = np.concatenate([np.zeros(p), u2[jj]])
        tests.append(float(np.linalg.solve(imat[np.ix_(kk, kk)], uu) @ uu))
        dfs.append(len(jj))
    uu = np.concatenate([np.zeros(p), u2])
    tests.append(float(np.linalg.solve(imat, uu) @ uu))
    dfs.append(p)
    tidy = pd.DataFrame(
        {
            "term": terms + ["GLOBAL"],
            "statistic": tests,
            "df": dfs,
            "p_value": [float(stats.chi2.sf(t, k)) for t, k in zip(tests, dfs)],
        },
        columns=list(PH_TIDY_COLUMNS),
    )

    # scaled residuals (cox.zph's y), per stratum over the covariates that vary in it
    nstrat = int(strata.max()) + 1
    used = np.zeros((nstrat, p))
    for sidx in range(nstrat):
        rows = strata == sidx
        if not rows.any():
            continue
        nd = event[rows].sum()
        xs_ = x[rows]
        varies = (xs_ != xs_[0]).any(axis=0)
        used[sidx] = np.where(varies, nd, 0)
    wtmat = np.zeros((p, p))
    for sidx in range(nstrat):
        wtmat += np.minimum.outer(used[sidx], used[sidx])
    vmean = info11 / np.where(wtmat == 0, 1, wtmat)
    tmat = np.zeros((p, len(terms)))
    multi = any(len(model.assign[t]) > 1 for t in terms)
    if multi:
        for i, t in enumerate(terms):
            jj = model.assign[t]
            if len(jj) == 1:
                tmat[jj[0], i] = 1
            else:
                tmat[jj, i] = beta[jj]
        sres = np.einsum("ij,jk->ik", schoen, tmat)
        vmean = tmat.T @ vmean @ tmat
        used = used[:, [model.assign[t][0] for t in terms]]
    else:
        # the design columns are the terms, in order
        order = [model.assign[t][0] for t in terms]
        sres = schoen[:, order]
        vmean = vmean[np.ix_(order, order)]
        used = used[:, order]
    sres = sres.astype(float).copy()
    ev_strata = strata[ev]
    for sidx in range(nstrat):
        k = np.flatnonzero(used[sidx] > 0)
        rows = np.flatnonzero(ev_strata == sidx)
        if len(rows) == 0:
            continue
        if len(k):
            sres[np.ix_(rows, k)] = np.linalg.solve(vmean[np.ix_(k, k)], sres[np.ix_(rows, k)].T).T
        other = np.setdiff1d(np.arange(sres.shape[1]), k)
        if len(other):
            sres[np.ix_(rows, other)] = np.nan
    for i, t in enumerate(terms):
        jj = model.assign[t]
        sres[:, i] += beta[jj[0]] if len(jj) == 1 else 1.0
    order_ev = np.lexsort((np.arange(len(ev)), stop[ev], ev_strata))
    resid = pd.DataFrame(sres[order_ev], columns=terms)
    resid.insert(0, "transformed_time", ttimes[ev][order_ev])
    resid.insert(0, "time", stop[ev][order_ev])
    glance = tidy.iloc[[-1]][["statistic", "df", "p_value"]].reset_index(drop=True)
    return Result(
        method=f"Proportional hazards test (scaled Schoenfeld residuals, transform={transform})",
        tidy=tidy,
        glance=glance,
        model=None,
        extra={"residuals": resid},
        conventions={
            "test": "score test for x*g(t) with the full information matrix, as survival 3.x cox.zph "
            "(terms=TRUE, global=TRUE); g centred at its mean over events.",
            "transform": f"{transform}; 'km' is 1 - KM(t-) of the pooled unweighted Kaplan-Meier, as R.",
        },
    )
