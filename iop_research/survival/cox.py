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
keys x distinct predictor values is small, otherwise the key axis is cut into blocks (a running
per-value count for the blocks above plus a small dense table inside the block), O(n) per block.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iop_research._design import build_design, check_identifiable, is_categorical
from iop_research._validate import (
    check_conf_level,
    cluster_codes,
    duration_column,
    event_indicator,
    require_frame,
    start_stop,
    strata_codes,
    weights_column,
)
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


# Columns are parsed by the package's one validation policy (iop_research._validate) and the
# design matrix is built by the one design builder (iop_research._design).


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


def _gchol(a: np.ndarray, toler: float = _TOLER_CHOL) -> np.ndarray:
    """Generalised Cholesky (L D L') of a symmetric matrix, as survival's C ``cholesky2``.

    Returns one matrix with D on the diagonal and L below it. A pivot below ``toler`` times the
    largest diagonal element (or not finite) is set to 0 and its column is skipped: the matrix
    is treated as having that direction removed (a generalised inverse), as R does.
    """
    m = np.array(a, dtype=float, copy=True)
    n = m.shape[0]
    m = np.triu(m) + np.triu(m, 1).T
    eps = max(float(np.max(np.diag(m), initial=0.0)), 0.0)
    eps = toler if eps == 0 else eps * toler
    for i in range(n):
        pivot = m[i, i]
        if not np.isfinite(pivot) or pivot < eps:
            m[i, i] = 0.0
            continue
        temp = m[i + 1 :, i] / pivot
        m[i + 1 :, i] = temp
        # rank-one update of the trailing lower triangle (only the lower part is read later)
        m[i + 1 :, i + 1 :] -= np.outer(temp, temp) * pivot
    return m


def _gchol_solve(chol: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Solve with the generalised Cholesky of :func:`_gchol` (survival's ``chsolve2``)."""
    n = chol.shape[0]
    y = np.array(y, dtype=float, copy=True)
    for i in range(n):
        y[i] -= chol[i, :i] @ y[:i]
    for i in range(n - 1, -1, -1):
        if chol[i, i] == 0:
            y[i] = 0.0
        else:
            y[i] = y[i] / chol[i, i] - chol[i + 1 :, i] @ y[i + 1 :]
    return y


def _wald_quadratic(var: np.ndarray, b: np.ndarray) -> float:
    """``b' V^- b`` with R's generalised inverse (``coxph.wtest``, toler.chol = 1e-9).

    With fewer clusters than coefficients the robust variance is singular: R drops the
    redundant directions (pivots below the tolerance) and reports a finite, non-negative
    statistic; a plain solve raises ``LinAlgError`` or returns a negative number.
    """
    b = np.asarray(b, dtype=float)
    if len(b) == 1:
        v = float(var[0, 0])
        return float(b[0] ** 2 / v) if v != 0 else (np.inf if b[0] != 0 else np.nan)
    return float(b @ _gchol_solve(_gchol(var), b))


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


_DENSE_CELLS = 1_000_000  # largest key x value table for the dense concordance path
_BLOCK_CELLS = 4_000_000  # largest per-block local table of the blocked path
_BLOCK_MIN_CELLS = 4096  # smallest per-block local table


def _dominance_sums(pkey, pval, pw, qkey, qval, kmax, vmax):
    """For each query: sum of pw over points with pkey >= qkey and pval < qval.

    Keys lie in [0, kmax), values in [0, vmax) (query values up to vmax); ``qval`` may be a
    2-D array (one column per threshold sharing the query's key), the result has its shape.
    With few distinct keys x values a dense 2-D cumulative table answers each query in O(1).
    Otherwise the key axis is cut into blocks, processed from the highest key down: the
    points of the blocks already passed are kept as a running weight per value (one prefix
    sum per block answers "key above this block and value < v" by a lookup), and the points
    inside the query's own block come from a small dense table (block keys x the block's
    distinct values). No sort or binary search over all points is needed: with tables of about
    vmax cells (capped by ``_BLOCK_CELLS``) there are about sqrt(n * kmax / vmax) blocks and the
    cost is O(n + sqrt(n * kmax * vmax)).
    """
    pkey = np.asarray(pkey, dtype=np.int64)
    qkey = np.asarray(qkey, dtype=np.int64)
    pval = np.asarray(pval, dtype=np.int64)
    qval = np.asarray(qval, dtype=np.int64)
    if kmax * (vmax + 1) <= _DENSE_CELLS:
        table = np.bincount(pkey * vmax + pval, weights=pw, minlength=kmax * vmax).reshape(kmax, vmax)
        table = np.cumsum(table[::-1], axis=0)[::-1]  # key >= k
        cum = np.zeros((kmax, vmax + 1))
        np.cumsum(table, axis=1, out=cum[:, 1:])  # value < v
        return cum[qkey[:, None] if qval.ndim == 2 else qkey, qval]
    # blocks of consecutive keys from the top key down (r = kmax - 1 - key ascending); a block
    # closes after about `per_block` points or `keys_per_block` keys; a key holding more than
    # `per_block` points is a block of its own
    # each block costs O(vmax + table): tables of about vmax cells balance the two
    cells = min(max(vmax, _BLOCK_MIN_CELLS), _BLOCK_CELLS)
    cnt_r = np.bincount(kmax - 1 - pkey, minlength=kmax)
    per_block = max(1, int(np.sqrt(cells * max(len(pkey), 1) / kmax)))
    keys_per_block = max(1, cells // per_block)
    before = np.cumsum(cnt_r) - cnt_r  # points with a higher key
    heavy = cnt_r > per_block
    r = np.arange(kmax)
    newb = np.zeros(kmax, dtype=bool)
    newb[1:] = (
        (before[1:] // per_block != before[:-1] // per_block)
        | (r[1:] % keys_per_block == 0)
        | heavy[1:]
        | heavy[:-1]
    )
    block_r = np.cumsum(newb)
    nblock = int(block_r[-1]) + 1
    first_r = np.concatenate([np.flatnonzero(np.concatenate([[True], newb[1:]])), [kmax]])
    block_of_key = block_r[::-1]
    btype = np.uint16 if nblock < 65536 else np.int64  # uint16: radix sort
    pb = block_of_key[pkey].astype(btype)
    qb = block_of_key[qkey].astype(btype)
    po = np.argsort(pb, kind="stable")
    qo = np.argsort(qb, kind="stable")
    edges = np.arange(nblock + 1).astype(btype, copy=False) if nblock < 65536 else np.arange(nblock + 1)
    pcut = np.searchsorted(pb[po], edges)
    qcut = np.searchsorted(qb[qo], edges)
    out = np.zeros(qval.shape)
    above = np.zeros(vmax)  # weight of the points in the blocks already passed, by value
    prefix = np.zeros(vmax + 1)  # prefix[v]: of those, weight with value < v
    seen = np.zeros(vmax + 1, dtype=np.int64)
    for b in range(nblock):
        pi = po[pcut[b] : pcut[b + 1]]
        qi = qo[qcut[b] : qcut[b + 1]]
        if len(qi):
            qv = qval[qi]
            res = prefix[qv]
            if len(pi):
                pv = pval[pi]
                # local value rank without sorting: number of the block's distinct values below v
                seen[:] = 0
                seen[pv + 1] = 1
                np.cumsum(seen, out=seen)
                nuv = int(seen[vmax])
                lo_key = kmax - first_r[b + 1]  # lowest key of the block
                nk = int(kmax - first_r[b] - lo_key)
                table = np.bincount((pkey[pi] - lo_key) * nuv + seen[pv], weights=pw[pi], minlength=nk * nuv)
                table = np.cumsum(table.reshape(nk, nuv)[::-1], axis=0)[::-1]  # local key >= k
                cum = np.zeros((nk, nuv + 1))
                np.cumsum(table, axis=1, out=cum[:, 1:])  # local value < v
                lk = qkey[qi] - lo_key
                res += cum[lk[:, None] if qv.ndim == 2 else lk, seen[qv]]
            out[qi] = res
        if len(pi):
            above += np.bincount(pval[pi], weights=pw[pi], minlength=vmax)
            np.cumsum(above, out=prefix[1:])
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
    vrank, _ = pd.factorize(lp, sort=True)  # rank of the linear predictor (hashing, then a sort of the uniques)
    vrank = vrank.astype(np.int64)
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
        # role A: each distinct (event key, value) against the comparators; totals need no values
        qmin = int(qk.min())
        keepb = bkey >= qmin  # entries below every event key never leave a comparison set
        pkey = np.concatenate([ekey, bkey[keepb]])
        pval = np.concatenate([vrank, vrank[keepb]])
        pw = np.concatenate([w, -w[keepb]])
        pair, pinv = np.unique(qk * (vmax + 1) + vev, return_inverse=True)
        pinv = pinv.ravel()
        uq_key, uq_val = pair // (vmax + 1), pair % (vmax + 1)
        f = _dominance_sums(pkey, pval, pw, uq_key, np.stack([uq_val, uq_val + 1], axis=1), kmax, vmax)
        less, leq = f[pinv, 0], f[pinv, 1]
        atk = np.bincount(ekey, weights=w, minlength=kmax) - np.bincount(bkey, weights=w, minlength=kmax)
        total = np.cumsum(atk[::-1])[::-1][qk]  # weight with entry < key <= exit
        # role B: each row as comparator of the events with key in (bkey, ekey]; keys and values
        # flipped so that the same dominance sum applies (events with key <= h and value > v)
        # (one call: exits of every row, then entries of the rows entering after the first event)
        late = np.flatnonzero(bkey >= qmin)
        qkeys = kmax - 1 - np.concatenate([ekey, bkey[late]])
        qv = np.concatenate([vrank, vrank[late]])
        f = _dominance_sums(kmax - 1 - qk, vmax - 1 - vev, wev, qkeys, np.stack([vmax - 1 - qv, vmax - qv], axis=1),
                            kmax, vmax)
        f, f_late = f[:n], f[n:]
        f[late] -= f_late
        gt, ge = f[:, 0], f[:, 1]
        ecum = np.cumsum(np.bincount(qk, weights=wev, minlength=kmax))  # events with key <= h
        tot = ecum[ekey] - ecum[bkey]
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
    "and p are then robust and naive_std_error is the model-based one. Default (robust=None) as R's coxph: "
    "robust when cluster_col is given or any case weight is not an integer, model-based otherwise. "
    "robust=True on (start, stop] rows needs cluster_col (R: 'one of cluster or id is needed').",
    "tests": "likelihood ratio and score (log-rank) tests are model-based; the Wald test uses the reported "
    "variance (robust when robust, as R) through R's generalised inverse (coxph.wtest, cholesky2 with "
    "toler.chol = 1e-9), so a singular robust variance (clusters <= coefficients) gives a finite statistic "
    "with df = number of coefficients, as R's print/summary; robust_score_statistic is R's 'Robust' score test (score "
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
    robust: bool | None = None,
    ties: str = "efron",
    conf_level: float = 0.95,
    tol: float = 1e-9,
    max_iter: int = 50,
    frailty_col: str | None = None,
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
        Covariate columns. Numeric columns enter as they are; object, string, category and
        bool columns get treatment (dummy) coding against the first level (a Categorical's
        first used category, else the first sorted value; ``False`` for bool), named
        ``col[T.level]`` (formulaic style; R would name them ``collevel``), with a readable
        ``label`` (``"Col: level"``). The package's one design builder
        (:mod:`iop_research._design`) does this for every regression. Give either this or
        ``formula``.
    formula : str, optional
        Right-hand side (formulaic syntax, an optional ``"~"`` prefix is ignored), e.g.
        ``"treat + C(site) + age"`` or ``"treat * in_treatment"``; the intercept is dropped.
        ``C(site)`` is named ``site[T.level]``, as with ``covariates``.
    start_col, stop_col : str, optional
        Interval ``(start, stop]`` of counting-process rows, same unit as the events;
        ``stop`` must exceed ``start``.
    strata_col : str or list of str, optional
        Stratification: separate baseline hazards per stratum (R ``strata()``). Default None.
    weights_col : str, optional
        Non-negative case weights (R ``weights=``). Default None (all 1). Non-integer weights
        switch the default variance to robust, as R (see ``robust``).
    cluster_col : str, optional
        Cluster id (patient); implies the robust variance with dfbeta residuals summed within
        clusters (R ``cluster(id)``). Default None.
    robust : bool or None, default None
        Sandwich (robust) variance. ``None`` follows R's ``coxph`` default: robust when
        ``cluster_col`` is given or when any case weight is not a whole number (sampling or
        inverse-probability weights, where the model-based variance is wrong), model-based
        otherwise. Without ``cluster_col`` each row is its own cluster, which is only valid for
        one row per subject: ``robust=True`` on ``(start, stop]`` rows without ``cluster_col``
        raises (as R). ``robust=False`` with ``cluster_col`` raises (R ignores the cluster).
    ties : {"efron", "breslow"}, default "efron"
        Handling of tied event times (R ``ties=``).
    conf_level : float, default 0.95
        Level of the Wald confidence intervals.
    frailty_col : str, optional
        A shared gamma frailty per value of this column (programme, site, patient): the fit is
        :func:`~iop_research.survival.frailty.fit_frailty` (R ``coxph(... + frailty(col))``), with its
        result. Not with ``strata_col``, ``weights_col``, ``cluster_col`` or ``robust``.
    tol : float, default 1e-9
        Convergence tolerance on the relative change of the log partial likelihood (R ``eps``).
    max_iter : int, default 50
        Maximum Newton-Raphson iterations (R ``iter.max`` defaults to 20).

    Returns
    -------
    Result
        ``tidy`` columns ``term, label, estimate, std_error, conf_low, conf_high, p_value,
        hazard_ratio, hr_conf_low, hr_conf_high, naive_std_error`` (one row per design column;
        ``term`` is the design column name, ``label`` its readable form). ``glance`` (one row) columns ``n, n_events,
        n_clusters, loglik_null, loglik, concordance, concordance_se, lr_statistic, lr_df,
        lr_p_value, wald_statistic, wald_p_value, score_statistic, score_p_value,
        robust_score_statistic, robust_score_p_value, iterations, converged``. ``model`` is a
        :class:`CoxModel`. ``conventions`` states ties, intervals, variance and tests next to R's.

    Raises
    ------
    EstimatorInputError
        Missing columns, negative durations, ``stop <= start``, an event column that is not
        0/1, missing/infinite values in covariates, weights, strata or cluster, negative
        weights (the package's one validation policy, :mod:`iop_research._validate`).
    ModelSpecificationError
        A constant covariate or a categorical with one level, collinear terms (named), no
        events, bad ``ties`` or ``conf_level``.
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
    func = "fit_cox"
    if frailty_col is not None:
        given = [n for n, v in (("strata_col", strata_col), ("weights_col", weights_col), ("cluster_col", cluster_col),
                                ("robust", robust)) if v is not None]
        if given:
            raise ModelSpecificationError(
                f"{func}: frailty_col fits a shared-frailty model (fit_frailty), which takes no {', '.join(given)}. "
                "Drop them, or fit without frailty_col.")
        from iop_research.survival.frailty import fit_frailty  # noqa: PLC0415 - frailty builds on this module

        return fit_frailty(df, duration_col=duration_col, event_col=event_col, cluster_col=frailty_col,
                           start_col=start_col, stop_col=stop_col, covariates=covariates, formula=formula, ties=ties,
                           conf_level=conf_level)
    if ties not in _TIES:
        raise ModelSpecificationError(f"{func}: ties={ties!r} is not supported; use 'efron' (default) or 'breslow'.")
    check_conf_level(conf_level, func)
    if (covariates is None) == (formula is None):
        raise ModelSpecificationError(f"{func}: give exactly one of covariates=[...] or formula='...'.")
    counting = start_col is not None or stop_col is not None
    if counting and duration_col is not None:
        raise ModelSpecificationError(
            f"{func}: give either duration_col (right-censored) or start_col and stop_col, not both."
        )
    if counting and (start_col is None or stop_col is None):
        raise ModelSpecificationError(f"{func}: counting-process data needs both start_col and stop_col.")
    if not counting and duration_col is None:
        raise ModelSpecificationError(f"{func}: give duration_col, or start_col and stop_col for (start, stop] rows.")

    # ---- input columns: one validation policy (iop_research._validate)
    require_frame(df, func, {"duration_col": duration_col, "start_col": start_col, "stop_col": stop_col,
                             "event_col": event_col, "strata_col": strata_col, "weights_col": weights_col,
                             "cluster_col": cluster_col}, multi=("strata_col",))
    if counting:
        start, stop = start_stop(df, start_col, stop_col, func=func)
    else:
        stop = duration_column(df, duration_col, func=func)
        start = np.full(len(df), -np.inf)
    event = event_indicator(df, event_col, func=func) == 1.0
    weights = weights_column(df, weights_col, func=func) if weights_col is not None else np.ones(len(df))
    if strata_col is not None:
        strata = strata_codes(df, strata_col, func=func)
    else:
        strata = np.zeros(len(df), dtype=np.int64)

    if robust is not None and not isinstance(robust, (bool, np.bool_)):
        raise ModelSpecificationError(f"{func}: robust={robust!r} must be True, False or None (R's default rule).")
    if cluster_col is not None:
        if robust is False:
            raise ModelSpecificationError(
                f"{func}: cluster_col={cluster_col!r} was given with robust=False; a cluster only enters through "
                "the robust variance (R warns 'cluster specified with robust=FALSE, cluster ignored'). "
                "Drop robust=False to use the cluster, or drop cluster_col for the model-based variance."
            )
        cluster = cluster_codes(df, cluster_col, func=func)
        robust = True
    else:
        cluster = None
        if robust and counting:
            raise ModelSpecificationError(
                "robust=True on (start, stop] rows needs cluster_col: without it every row would be its own "
                "cluster, although the rows of one subject are not independent (R stops with 'one of "
                "cluster or id is needed'). Pass cluster_col='patient_id' (the subject/episode id), or "
                "robust=False for the model-based variance."
            )
    if robust is None:
        # R's default: robust when a cluster is given or when a case weight is not an integer
        # (sampling / inverse-probability weights); each row its own cluster without cluster_col
        pos = weights[weights > 0]
        robust = bool(np.any(pos != np.floor(pos)))

    # ---- design matrix: one builder (iop_research._design)
    design = build_design(df, covariates=covariates, formula=formula, func=func)
    x, names, assign = design.matrix, list(design.terms), {k: list(v) for k, v in design.assign.items()}

    use = weights > 0
    if not use.any():
        raise ModelSpecificationError(f"{func}: all case weights are zero; nothing to fit.")
    if not (event & use).any():
        raise ModelSpecificationError(
            f"{func}: no events ({event_col} == 1) among rows with positive weight; a Cox model needs events."
        )
    idx = np.flatnonzero(use) if not use.all() else slice(None)
    xu = x[idx]
    means = xu.mean(axis=0)
    check_identifiable(xu, names, func=func)
    xc = xu - xu.mean(axis=0)
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
        robust_score = _wald_quadratic(np.einsum("ij,ik->jk", resid0, resid0), u0)

    se = np.sqrt(np.diag(var))
    naive_se = np.sqrt(np.diag(naive_var))
    z = stats.norm.ppf(0.5 + conf_level / 2)
    lo, hi = beta - z * se, beta + z * se
    pval = 2 * stats.norm.sf(np.abs(beta / se))
    tidy = pd.DataFrame(
        {
            "term": names,
            "label": list(design.labels),
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
    wald = _wald_quadratic(var, beta)
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
            df, covariates=covariates, formula=formula, model_spec=design.model_spec, strata_col=strata_col, duration_col=duration_col,
            start_col=start_col, stop_col=stop_col, event_col=event_col, weights_col=weights_col,
            cluster_col=cluster_col,
        ),
    )
    method = "Cox proportional hazards" + (" (counting process)" if counting else "")
    return Result(method=method, tidy=tidy, glance=glance, model=model, conventions=_CONVENTIONS)


def _prediction_spec(df, *, covariates, formula, model_spec, strata_col, **cols) -> dict:
    """What prediction for new data needs: covariate coding, formula spec, strata labels."""
    levels: dict[str, list] = {}
    if formula is None:
        model_spec = None  # covariate lists: coded from ``levels`` below
        covs = [covariates] if isinstance(covariates, str) else list(covariates)
        for cov in covs:
            s = df[cov]
            if is_categorical(s):
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
        coefficient-weighted sum plus 1), in R's row order: by stratum and time, tied times in
        data order for right-censored fits and in reverse data order for ``(start, stop]`` fits
        (as ``zph$y``), for plotting ``beta(t)``.

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
    # R's row order (cox.zph: order(istrat, time) for right-censored data; rev(order(-istrat, -stop))
    # for (start, stop] data, which puts tied event times in reverse row order)
    within = -np.arange(len(ev)) if d["is_counting"] else np.arange(len(ev))
    order_ev = np.lexsort((within, stop[ev], ev_strata))
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
