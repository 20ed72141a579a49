"""Cox model with a shared gamma frailty per cluster, equal to R ``coxph(... + frailty(id, distribution = "gamma"))``.

Patients treated in the same programme (or repeated episodes of one patient) share unmeasured risk. The
shared frailty model multiplies the hazard of every member of cluster ``i`` by ``Z_i`` with
``Z_i ~ Gamma(mean 1, variance theta)``: ``h_ij(t) = Z_i h_0(t) exp(x_ij' beta)``. It is fitted as R's
``survival`` fits it (Therneau, Grambsch & Pankratz 2003, "Penalized survival models and frailty",
J Comput Graph Stat 12:156-175; Therneau & Grambsch 2000, section 9.6):

* **inner fit, theta fixed**: the log-frailties ``w_i = log Z_i`` are coefficients of cluster indicators and
  ``(beta, w)`` maximise the penalised partial likelihood ``PL(beta, w) - nu sum_i (exp(w_i) - w_i)``,
  ``nu = 1 / theta`` (R's ``frailty.gamma`` penalty), by Newton-Raphson; at the solution ``mean(exp(w)) = 1``.
  Ties: Efron (default) or Breslow, as ``coxph(ties =)``.
* **theta**: maximises R's integrated (marginal) log-likelihood
  ``PL(beta, w) + nu sum_i w_i + sum_i [d_i + nu log nu - (nu + d_i) log(nu + d_i) + log Gamma(nu + d_i)
  - log Gamma(nu)]`` (``d_i`` events in cluster ``i``; R's ``loglik + frailty.gammacon(d, nu)``, the exact
  gamma-frailty marginal likelihood with the baseline hazard profiled out), here over ``theta >= 0`` by a
  grid then Brent's method on ``sqrt(theta)``. R's default ``method = "em"`` runs its own bracketing search
  (which converges slowly near the maximum) and stops when the criterion changes by less than ``eps = 1e-5``
  (relative) or after ``coxph.control(outer.max = 10)`` iterations, which can leave R's reported theta a few
  per cent from the maximiser (test data: 0.3409 against 0.3341, coefficients 1e-3 apart); the tests compare
  with R run with ``frailty(..., eps = 1e-10)`` and ``outer.max = 200``. ``theta = 0`` is the ordinary Cox model.
  A fixed ``theta=`` gives ``frailty(id, theta = )``.
* **standard errors**: R's ``se(coef)``, the ``beta`` block of the inverse of the penalised information
  ``H`` (partial-likelihood information plus ``diag(nu exp(w))`` on the frailty block), conditional on
  theta. With more than 5 clusters R uses its *sparse* computation, in which the frailty-by-frailty block of
  the information is replaced by its diagonal (``frailty(sparse = TRUE)``, the default then); this is
  reproduced (``sparse=None`` follows R's rule) because it changes the SEs slightly. ``extra["vcov2"]`` is
  R's ``se2`` matrix ``H^-1 I H^-1``. The frailty term's effective degrees of freedom are R's
  (``nclusters - sum diag(H^-1)_ww nu exp(w)`` when sparse).

Wald intervals and p-values use the normal distribution, as ``summary.coxph``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from iop_research._design import build_design, check_identifiable
from iop_research._validate import (
    check_conf_level,
    duration_column,
    event_indicator,
    label_codes,
    require_frame,
    start_stop,
)
from iop_research.exceptions import ConvergenceError, ModelSpecificationError
from iop_research.results import Result

__all__ = ["fit_frailty", "FRAILTY_GLANCE_COLUMNS", "FRAILTY_COLUMNS"]

_FUNC = "fit_frailty"
_TIES = ("efron", "breslow")
_FULL_MAX = 1000  # clusters up to which the inner Newton uses the full frailty-by-frailty information
#: glance columns.
FRAILTY_GLANCE_COLUMNS = ("n_obs", "n_events", "n_clusters", "theta", "frailty_df", "loglik_integrated",
                          "loglik", "loglik_null", "ties", "sparse", "n_iter", "converged")
#: columns of ``extra["frailties"]``.
FRAILTY_COLUMNS = ("cluster", "n_obs", "n_events", "log_frailty", "frailty")


def _gamma_correction(d: np.ndarray, nu: float) -> float:
    """R's ``frailty.gammacon(d, nu)``: integrated minus penalised log-likelihood of the gamma frailty."""
    if nu > 1e7 * max(float(d.max()), 1.0):
        return float(np.sum(d * d) / nu)
    return float(np.sum(d + nu * np.log(nu / (nu + d)) + special.gammaln(nu + d) - special.gammaln(nu)
                        - d * np.log(nu + d)))


class _ClusteredCox:
    """Partial likelihood of ``eta = x beta + w[cluster]`` with its score and information, using the cluster
    structure: risk-set sums per (event time, cluster) are ``E x G`` tables, so nothing is ``n x G``.

    Right-censored rows, unit weights; Efron slots ``k = 0..d-1`` of a tie group of ``d`` events with
    ``D_s = R_m - (k / d) E_m`` (Breslow: ``k / d`` replaced by 0), as survival's coxfit5.
    With ``full=False`` only the diagonal of the frailty-by-frailty information block is formed (R's
    sparse computation, and the cheap one for many clusters).
    """

    def __init__(self, start, stop, event, x, g, n_groups, efron):
        self.n, self.p = x.shape
        self.G = n_groups
        self.x = x - x.mean(axis=0) if self.p else x
        self.g = g
        ev = np.flatnonzero(event)
        et = np.unique(stop[ev])
        self.E = len(et)
        self.a = np.searchsorted(et, stop, side="right")  # row j is at risk at event times b_j <= m < a_j
        self.b = None if start is None else np.searchsorted(et, start, side="right")
        self.ev = ev
        self.evm = np.searchsorted(et, stop[ev])
        dcount = np.bincount(self.evm, minlength=self.E)
        slot_m = np.repeat(np.arange(self.E), dcount)
        first = np.r_[0, np.cumsum(dcount)[:-1]]
        self.slot_m = slot_m
        self.slot_f = (np.arange(len(slot_m)) - first[slot_m]) / dcount[slot_m] if efron else np.zeros(len(slot_m))
        self.xev = self.x[ev].sum(axis=0)
        self.d = np.bincount(g[ev], minlength=n_groups).astype(float)

    def _risk(self, v):
        """R[m] = sum of v over rows at risk at event time m, and the event sums (length E)."""
        c = np.bincount(self.a, weights=v, minlength=self.E + 1)
        if self.b is not None:
            c -= np.bincount(self.b, weights=v, minlength=self.E + 1)
        rc = np.cumsum(c[::-1])[::-1]
        return rc[1:], np.bincount(self.evm, weights=v[self.ev], minlength=self.E)

    def _risk_g(self, v):
        """Per cluster: E x G tables of the risk-set and event sums of v."""
        G, E = self.G, self.E
        c = np.bincount(self.a * G + self.g, weights=v, minlength=(E + 1) * G).reshape(E + 1, G)
        if self.b is not None:
            c -= np.bincount(self.b * G + self.g, weights=v, minlength=(E + 1) * G).reshape(E + 1, G)
        rc = np.cumsum(c[::-1], axis=0)[::-1]
        e = np.bincount(self.evm * G + self.g[self.ev], weights=v[self.ev], minlength=E * G).reshape(E, G)
        return rc[1:], e

    def evaluate(self, par, full: bool):
        p, G, E = self.p, self.G, self.E
        beta, w = par[:p], par[p:]
        eta = (self.x @ beta if p else 0.0) + w[self.g]
        with np.errstate(over="ignore", invalid="ignore"):
            r = np.exp(eta)
        if not np.all(np.isfinite(r)):
            return -np.inf, None, None
        m, f = self.slot_m, self.slot_f
        R, Ev = self._risk(r)
        D = R[m] - f * Ev[m]
        if not np.all(D > 0):
            return -np.inf, None, None
        pl = float(np.sum(eta[self.ev]) - np.sum(np.log(D)))
        # per event time: sums over its slots of 1/D, f/D, 1/D^2, f/D^2, f^2/D^2
        c1 = np.bincount(m, 1.0 / D, minlength=E)
        cf = np.bincount(m, f / D, minlength=E)
        c2 = np.bincount(m, 1.0 / D**2, minlength=E)
        c2f = np.bincount(m, f / D**2, minlength=E)
        c2ff = np.bincount(m, f * f / D**2, minlength=E)
        Rg, Eg = self._risk_g(r)
        u = np.empty(p + G)
        info = np.zeros((p + G, p + G))
        u[p:] = self.d - (c1 @ Rg - cf @ Eg)
        diag_w = (c1 @ Rg - cf @ Eg) - (c2 @ Rg**2 - 2 * c2f @ (Rg * Eg) + c2ff @ Eg**2)
        if full:
            ww = -((Rg * c2[:, None]).T @ Rg - (Rg * c2f[:, None]).T @ Eg - (Eg * c2f[:, None]).T @ Rg
                   + (Eg * c2ff[:, None]).T @ Eg)
            ww[np.diag_indices(G)] = diag_w
            info[p:, p:] = ww
        else:
            info[p + np.arange(G), p + np.arange(G)] = diag_w
        if p:
            Rx = np.empty((E, p))
            Ex = np.empty((E, p))
            for k in range(p):
                Rx[:, k], Ex[:, k] = self._risk(r * self.x[:, k])
            xbar = (Rx[m] - f[:, None] * Ex[m]) / D[:, None]
            u[:p] = self.xev - xbar.sum(axis=0)
            for k in range(p):
                for l in range(k + 1):
                    Rkl, Ekl = self._risk(r * self.x[:, k] * self.x[:, l])
                    v = c1 @ Rkl - cf @ Ekl - xbar[:, k] @ xbar[:, l]
                    info[k, l] = info[l, k] = v
                Rgx, Egx = self._risk_g(r * self.x[:, k])
                cross = (c1 @ Rgx - cf @ Egx) - (
                    (Rx[:, k] * c2) @ Rg - (Rx[:, k] * c2f) @ Eg - (Ex[:, k] * c2f) @ Rg + (Ex[:, k] * c2ff) @ Eg)
                info[k, p:] = info[p:, k] = cross
        return pl, u, info


class _FrailtyFit:
    """Penalised partial likelihood of (beta, w) for a given theta, and its maximiser."""

    def __init__(self, start, stop, event, x, g, n_groups, efron):
        self.p = x.shape[1]
        self.G = n_groups
        # Newton steps use the exact information (quadratic convergence) up to _FULL_MAX clusters; beyond, the
        # frailty block is taken as diagonal (R's sparse iteration: cheaper, converges linearly)
        self.full = n_groups <= _FULL_MAX
        self.cox = _ClusteredCox(start, stop, event, x, g, n_groups, efron)
        self.start = np.zeros(self.p + n_groups)

    def penalised(self, par, nu):
        pl, u, info = self.cox.evaluate(par, self.full)
        if u is None:
            return -np.inf, None, None, None
        w = par[self.p:]
        ew = np.exp(w)
        ppl = pl - nu * float(np.sum(ew - w))
        grad = u.copy()
        grad[self.p:] -= nu * (ew - 1.0)
        hess = info  # negative Hessian of the PPL
        hess[self.p + np.arange(self.G), self.p + np.arange(self.G)] += nu * ew
        return ppl, grad, hess, pl

    def fit(self, theta: float, max_iter: int):
        """Maximise the PPL at theta (theta = 0: no frailty, w = 0). Returns a dict of the solution."""
        p, G = self.p, self.G
        if theta == 0:
            beta = self.start[:p].copy()
            free = np.arange(p)
        else:
            beta = self.start.copy()
            free = np.arange(p + G)
        nu = 1.0 / theta if theta > 0 else 0.0
        par = beta if theta > 0 else np.r_[beta, np.zeros(G)]
        f, grad, hess, pl = self.penalised(par, nu)
        if grad is None:
            par = np.zeros(p + G)
            f, grad, hess, pl = self.penalised(par, nu)
        it = 0
        converged = False
        for it in range(1, (max_iter if self.full else 20 * max_iter) + 1):
            step = np.zeros(p + G)
            if len(free):
                step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
            # Newton decrement grad' H^-1 grad: scale-free (a tiny theta makes the penalty, and the rounding
            # of its gradient, huge), so the test works for every theta
            if not len(free) or float(grad[free] @ step[free]) < 1e-16 * max(1.0, abs(f)):
                converged = True
                break
            t = 1.0
            while True:
                new = par + t * step
                fn, gn, hn, pln = self.penalised(new, nu)
                if gn is not None and fn >= f - 1e-12 * abs(f):
                    break
                t *= 0.5
                if t < 1e-10:
                    raise ConvergenceError(
                        f"{_FUNC}: the penalised partial likelihood could not be increased at theta = {theta:.4g} "
                        "(extreme covariate values?); rescale the covariates."
                    )
            par, f, grad, hess, pl = new, fn, gn, hn, pln
        if not converged:
            raise ConvergenceError(
                f"{_FUNC}: the inner Newton-Raphson did not converge in {max_iter} iterations at theta = {theta:.4g}; "
                "raise max_iter or rescale the covariates."
            )
        if theta > 0:
            # recentre (the partial likelihood does not change; at the optimum mean(exp(w)) = 1 already)
            par = par.copy()
            par[p:] -= np.log(np.mean(np.exp(par[p:])))
            self.start = par.copy()
        else:
            self.start = np.r_[par[:p], self.start[p:]]
        w = par[p:]
        return dict(par=par, pl=pl, loglik=pl + nu * float(np.sum(w)), hess=hess, nu=nu, n_iter=it,
                    converged=converged)


def fit_frailty(
    df: pd.DataFrame,
    *,
    duration_col: str | None = None,
    event_col: str,
    cluster_col: str,
    start_col: str | None = None,
    stop_col: str | None = None,
    covariates: Sequence[str] | None = None,
    formula: str | None = None,
    ties: str = "efron",
    theta: float | None = None,
    sparse: bool | None = None,
    conf_level: float = 0.95,
    max_iter: int = 50,
) -> Result:
    """Fit a Cox model with a shared gamma frailty per cluster (R ``coxph(Surv(t, e) ~ x + frailty(id))``).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per patient (right-censored follow-up), or per ``(start, stop]`` interval (counting process,
        e.g. repeated relapses of a patient). Not modified.
    duration_col : str, optional
        Follow-up time (>= 0) for right-censored data; or give ``start_col`` and ``stop_col``.
    event_col : str
        Event indicator (1/True = event at the end of the row).
    cluster_col : str
        Cluster sharing the frailty (programme, site, or patient for repeated episodes).
    start_col, stop_col : str, optional
        ``(start, stop]`` bounds of counting-process rows (R ``Surv(start, stop, event)``; Andersen-Gill with a
        shared frailty when ``cluster_col`` is the patient).
    covariates, formula : optional
        Fixed effects, as :func:`~iop_research.survival.cox.fit_cox` (one of the two).
    ties : {"efron", "breslow"}, default "efron"
    theta : float, optional
        Fix the frailty variance (R ``frailty(id, theta = )``); by default it maximises the integrated
        log-likelihood (R's ``method = "em"`` criterion).
    sparse : bool, optional
        R's sparse computation (frailty block of the information taken as diagonal for the standard
        errors); default as R: sparse when there are more than 5 clusters.
    conf_level : float, default 0.95
    max_iter : int, default 50
        Newton-Raphson iterations of each inner fit.

    Returns
    -------
    Result
        ``tidy``: the Cox columns (``term, label, estimate, std_error, conf_low, conf_high, p_value,
        hazard_ratio, hr_conf_low, hr_conf_high``; R's ``se(coef)``). ``glance``: ``n_obs, n_events,
        n_clusters, theta`` (frailty variance), ``frailty_df`` (effective df of the frailty term),
        ``loglik_integrated`` (R's "I-likelihood", the criterion maximised over theta), ``loglik`` (partial
        log-likelihood at ``(beta, w)``, R ``fit$loglik[2]``), ``loglik_null`` (at ``beta = 0, w = 0``, R
        ``fit$loglik[1]``), ``ties, sparse, n_iter`` (inner fits run), ``converged``.
        ``extra["frailties"]``: ``cluster, n_obs, n_events, log_frailty`` (R ``fit$frail``), ``frailty``;
        ``extra["vcov"]``, ``extra["vcov2"]`` (R's ``var`` and ``var2``).

    Raises
    ------
    EstimatorInputError
        Missing columns or values, negative times, a non-0/1 event.
    ModelSpecificationError
        Bad ``ties``/``theta``, fewer than two clusters, no events, a singular design.
    ConvergenceError
        An inner fit did not converge.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(4)
    >>> prog = np.repeat(np.arange(30), 20)
    >>> z = rng.gamma(2.0, 0.5, 30)[prog]  # programme frailty, variance 0.5
    >>> mat = rng.binomial(1, 0.5, 600)
    >>> t = np.ceil(rng.exponential(200 / (z * np.exp(-0.5 * mat))))
    >>> c = np.ceil(rng.uniform(30, 365, 600))
    >>> d = pd.DataFrame({"program": prog, "mat": mat, "days": np.minimum(t, c), "relapse": (t <= c).astype(int)})
    >>> res = fit_frailty(d, duration_col="days", event_col="relapse", covariates=["mat"], cluster_col="program")
    >>> res.tidy[["term", "estimate", "std_error", "hazard_ratio"]].round(4)
      term  estimate  std_error  hazard_ratio
    0  mat   -0.4702     0.1344        0.6249
    >>> res.glance[["n_clusters", "theta", "frailty_df"]].round(4)
       n_clusters   theta  frailty_df
    0          30  0.5018     24.2152

    R: ``coxph(Surv(days, relapse) ~ mat + frailty(program, distribution = "gamma", eps = 1e-12), data = d,
    control = coxph.control(eps = 1e-12, outer.max = 200))`` gives -0.47015, SE 0.13444, theta 0.50180 and
    df 24.215 after 23 outer iterations. With R's defaults the search stops at ``outer.max = 10`` iterations
    at theta 0.5125 (coefficient -0.47025).
    """
    if ties not in _TIES:
        raise ModelSpecificationError(f"{_FUNC}: ties must be one of {_TIES}, got {ties!r}.")
    if theta is not None and (isinstance(theta, bool) or not isinstance(theta, (int, float, np.number))
                              or not np.isfinite(theta) or theta < 0):
        raise ModelSpecificationError(
            f"{_FUNC}: theta (the frailty variance) must be a number >= 0 or None (estimated), got {theta!r}."
        )
    level = check_conf_level(conf_level, _FUNC)
    counting = start_col is not None or stop_col is not None
    if counting == (duration_col is not None) or (counting and (start_col is None or stop_col is None)):
        raise ModelSpecificationError(
            f"{_FUNC}: give either duration_col= (right-censored data) or both start_col= and stop_col= "
            "(counting-process rows)."
        )
    require_frame(df, _FUNC, {"duration_col": duration_col, "event_col": event_col, "cluster_col": cluster_col,
                              "start_col": start_col, "stop_col": stop_col})
    if counting:
        start, stop = start_stop(df, start_col, stop_col, func=_FUNC)
    else:
        start, stop = None, duration_column(df, duration_col, func=_FUNC)
    event = event_indicator(df, event_col, func=_FUNC) == 1.0
    g, levels = label_codes(df, cluster_col, func=_FUNC, role="cluster")
    n_groups = len(levels)
    if n_groups < 2:
        raise ModelSpecificationError(
            f"{_FUNC}: column {cluster_col!r} has a single cluster; a shared frailty needs at least two (use fit_cox)."
        )
    if not event.any():
        raise ModelSpecificationError(f"{_FUNC}: column {event_col!r} has no events; nothing to fit.")
    design = build_design(df, covariates=covariates, formula=formula, func=_FUNC)
    check_identifiable(design.matrix, design.terms, func=_FUNC)
    x = design.matrix
    if sparse is None:
        sparse = n_groups > 5
    p = x.shape[1]
    model = _FrailtyFit(start, stop, event, x, g, n_groups, ties == "efron")
    d = np.bincount(g, weights=event.astype(float), minlength=n_groups)

    cache: dict[float, dict] = {}

    def solve(th: float) -> dict:
        th = float(max(th, 0.0))
        if th not in cache:
            cache[th] = model.fit(th, max_iter)
        return cache[th]

    def integrated(th: float) -> float:
        fit = solve(th)
        return fit["loglik"] + (_gamma_correction(d, fit["nu"]) if th > 0 else 0.0)

    null_fit = model.cox.evaluate(np.zeros(p + n_groups), False)[0]
    if theta is None:
        grid = np.array([0.0, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0])
        vals = np.array([integrated(t) for t in grid])
        while np.argmax(vals) == len(grid) - 1 and grid[-1] < 1e4:
            grid = np.r_[grid, grid[-1] * 3]
            vals = np.r_[vals, integrated(grid[-1])]
        k = int(np.argmax(vals))
        lo, hi = (0.0, grid[1]) if k == 0 else (grid[k - 1], grid[min(k + 1, len(grid) - 1)])
        # maximise on sqrt(theta) (R's frailty.brent works on sqrt(theta) too)
        opt = optimize.minimize_scalar(lambda s: -integrated(s * s), bounds=(np.sqrt(lo), np.sqrt(hi)),
                                       method="bounded", options={"xatol": 1e-10, "maxiter": 200})
        th_hat = float(opt.x) ** 2
        if -opt.fun < vals[k]:
            th_hat = float(grid[k])
        n_outer = len(cache)
        outer_ok = bool(opt.success) or th_hat == 0.0
    else:
        th_hat = float(theta)
        n_outer, outer_ok = 1, True
    fit = solve(th_hat)
    par, nu = fit["par"], fit["nu"]
    beta, w = par[:p], par[p:]
    if th_hat > 0:
        if not sparse and not model.full:  # many clusters iterated with the diagonal block: form the full one
            _, _, full_info = model.cox.evaluate(par, True)
            full_info[p + np.arange(n_groups), p + np.arange(n_groups)] += nu * np.exp(w)
            fit = dict(fit, hess=full_info)
        h = fit["hess"].copy()
        info = h.copy()
        info[p:, p:] -= np.diag(nu * np.exp(w))
        if sparse:  # R's sparse computation: the frailty block of the information is its diagonal
            off = ~np.eye(n_groups, dtype=bool)
            for mat in (h, info):
                block = mat[p:, p:]  # a view
                block[off] = 0.0
        hinv = np.linalg.inv(h)
        vcov = hinv[:p, :p]
        vcov2 = (hinv @ info @ hinv)[:p, :p]
        pen = nu * np.exp(w)
        if sparse:
            frailty_df = float(n_groups - np.sum(np.diag(hinv)[p:] * pen))
        else:
            v_all = hinv @ info @ hinv
            frailty_df = float(np.trace(np.linalg.solve(hinv[p:, p:], v_all[p:, p:])))
    else:
        info = fit["hess"][:p, :p]
        vcov = vcov2 = np.linalg.inv(info) if p else np.zeros((0, 0))
        frailty_df = 0.0
    se = np.sqrt(np.diag(vcov))
    z = stats.norm.ppf(0.5 + level / 2)
    terms, labels = list(design.terms), list(design.labels)
    tidy = pd.DataFrame({
        "term": terms, "label": labels, "estimate": beta, "std_error": se,
        "conf_low": beta - z * se, "conf_high": beta + z * se,
        "p_value": 2 * stats.norm.sf(np.abs(beta / se)),
    })
    tidy["hazard_ratio"] = np.exp(tidy["estimate"])
    tidy["hr_conf_low"] = np.exp(tidy["conf_low"])
    tidy["hr_conf_high"] = np.exp(tidy["conf_high"])
    glance = pd.DataFrame([{
        "n_obs": int(len(stop)),
        "n_events": int(event.sum()),
        "n_clusters": int(n_groups),
        "theta": th_hat,
        "frailty_df": frailty_df,
        "loglik_integrated": integrated(th_hat),
        "loglik": fit["pl"],
        "loglik_null": float(null_fit),
        "ties": ties,
        "sparse": bool(sparse),
        "n_iter": int(n_outer),
        "converged": bool(fit["converged"] and outer_ok),
    }])
    frail = pd.DataFrame({
        "cluster": levels,
        "n_obs": np.bincount(g, minlength=n_groups).astype(int),
        "n_events": d.astype(int),
        "log_frailty": w,
        "frailty": np.exp(w),
    })
    vc = pd.DataFrame(vcov, columns=terms)
    vc.insert(0, "term", terms)
    vc2 = pd.DataFrame(vcov2, columns=terms)
    vc2.insert(0, "term", terms)
    return Result(
        method=f"Cox model with shared gamma frailty ({ties} ties)",
        tidy=tidy,
        glance=glance,
        model=None,
        extra={"frailties": frail, "vcov": vc, "vcov2": vc2},
        conventions={
            "estimation": "penalised partial likelihood, gamma frailty penalty nu sum(exp(w) - w) (survival "
                          "frailty.gamma)",
            "theta": ("fixed by the user" if theta is not None else
                      "maximiser of R's integrated log-likelihood (loglik + frailty.gammacon); R's default "
                      "em search stops at eps = 1e-5 (relative), so its theta differs slightly"),
            "variance": "beta block of the inverse penalised information (R se(coef)), conditional on theta"
                        + ("; frailty block diagonal (R sparse computation)" if sparse else ""),
            "ties": ties,
            "intervals": "Wald, normal quantile",
            "R": "coxph(Surv(time, event) ~ x + frailty(cluster, distribution = 'gamma'), ties = ...)",
        },
    )
