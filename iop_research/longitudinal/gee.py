"""Generalised estimating equations (GEE) for repeated measures, equal to R ``geepack::geeglm``.

A patient-week frame of urine screens (one row per attended screen, ``id_col`` naming the
patient) is a set of clusters of correlated binary outcomes. :func:`fit_gee` fits the marginal
(population-averaged) model ``g(E[y]) = X beta`` of Liang & Zeger (1986) with a working
correlation and the robust (sandwich, "san.se") standard errors, using the estimators
``geepack`` uses (Halekoh, Hojsgaard & Yan 2006; Yan & Fine 2004), so the numbers are R's:

* scale ``phi = sum(w r^2) / sum(w)`` (Pearson residuals ``r``, prior weights ``w``; no
  ``N - p`` correction), estimated even for the binomial family (geepack's ``scale.fix = FALSE``);
* exchangeable ``alpha = sum_{pairs} w_j w_k r_j r_k / (phi * sum_{pairs} w_j w_k)``, pairs
  within clusters pooled (no ``- p`` correction);
* AR(1) ``corr(y_j, y_k) = alpha^|t_j - t_k|`` with ``t`` the ``time_col`` value (geepack's
  ``waves``; without ``time_col`` the position in the cluster), ``alpha`` solving Yan & Fine's
  estimating equation ``sum_{pairs} w_j w_k (r_j r_k / phi - alpha^d) d alpha^(d-1) = 0`` (all pairs,
  ``d = |t_j - t_k|``), so missed weeks are handled as R handles them;
* the sandwich ``H^-1 (sum_i U_i U_i') H^-1`` without a small-sample correction; Wald
  intervals and p-values from the normal distribution (R's ``Pr(>|W|)``).

Why not statsmodels' ``GEE``: with ``fit(ddof_scale=0)`` it equals geepack for the exchangeable
and independence structures (``tests/test_gee.py`` cross-checks this), but its AR(1) estimator is
not geepack's (on the golden data with missed weeks the treatment log-odds ratio differs by 0.02
and its SE by 4e-4), and its prior weights are not geepack's ``weights``. The equations here are
written out once for all three structures, batched over clusters of equal size.

The estimating equations are solved by Fisher scoring to a relative change below ``1e-10``
(geepack's default ``epsilon`` is ``1e-4``; the golden values are computed with
``geese.control(epsilon = 1e-12)`` so that both sides are converged).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats

from iop_research._design import build_design, check_identifiable
from iop_research._validate import (
    check_conf_level,
    cluster_codes,
    numeric_column,
    require_frame,
    weights_column,
)
from iop_research.exceptions import ConvergenceError, EstimatorInputError, ModelSpecificationError
from iop_research.results import TIDY_TERM_COLUMNS, Result

__all__ = ["fit_gee", "TIDY_GEE_COLUMNS", "GLANCE_GEE_COLUMNS"]

_FUNC = "fit_gee"
_FAMILIES = ("binomial", "gaussian")
_SEPARATION_EPS = 1e-10  # mu (1 - mu) below this: a fitted probability is 0 or 1 to double precision
_CORSTRS = ("exchangeable", "ar1", "independence")
#: tidy columns of a binomial GEE (other families: :data:`~iop_research.results.TIDY_TERM_COLUMNS`).
TIDY_GEE_COLUMNS = TIDY_TERM_COLUMNS + ("odds_ratio", "or_conf_low", "or_conf_high")
#: glance columns.
GLANCE_GEE_COLUMNS = ("n_obs", "n_clusters", "max_cluster_size", "family", "corstr", "alpha", "scale",
                      "n_iter", "converged")


def _response_name(formula: str) -> tuple[str, str]:
    if not isinstance(formula, str) or "~" not in formula:
        raise ModelSpecificationError(
            f"{_FUNC}: formula must be 'response ~ terms' (e.g. 'positive ~ mat + week + C(site)'), got {formula!r}."
        )
    lhs, rhs = formula.split("~", 1)
    name = lhs.strip().strip("`")
    if not name or not rhs.strip():
        raise ModelSpecificationError(
            f"{_FUNC}: formula {formula!r} needs a response column left of '~' and terms right of it."
        )
    if re.search(r"[()+*:]", name):
        raise ModelSpecificationError(
            f"{_FUNC}: the response {name!r} must be a column name; derive transformed responses as a column first."
        )
    return name, rhs


def _family(family: str, y: np.ndarray, df: pd.DataFrame, col: str):
    """(inverse link, variance function, d mu / d eta) of the family; the response checked."""
    if family == "binomial":
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            rows = df.index[bad].tolist()
            raise EstimatorInputError(
                f"{_FUNC}: column {col!r} (response) has {int(bad.sum())} value(s) other than 0/1 (rows: "
                f"{rows[:5]}). A binomial GEE needs a 0/1 (or boolean) outcome, e.g. positive screen = 1.",
                func=_FUNC, column=col, check="not_binary", n_rows=int(bad.sum()), rows=rows[:5],
            )
        if y.min() == y.max():
            raise ModelSpecificationError(
                f"{_FUNC}: every row has {col!r} = {int(y[0])}; a binomial model needs both outcomes."
            )

        def inv(eta):
            return 0.5 * (1.0 + np.tanh(0.5 * eta))  # logistic, stable for large |eta|

        return inv, (lambda mu: mu * (1.0 - mu)), (lambda mu: mu * (1.0 - mu))
    return (lambda eta: eta), (lambda mu: np.ones_like(mu)), (lambda mu: np.ones_like(mu))


def _irls_start(x, y, w, inv, var, dmu, family):
    """Independence GLM fit (the starting value geepack takes from glm)."""
    if family == "binomial":
        mu = (w * y + 0.5) / (w + 1.0)
        eta = np.log(mu / (1 - mu))
    else:
        mu = y.copy()
        eta = y.copy()
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        d = dmu(mu)
        if family == "binomial" and np.min(d) < _SEPARATION_EPS:
            break  # fitted probabilities at 0 or 1: separation, reported by the GEE loop
        z = eta + (y - mu) / d
        ww = w * d * d / var(mu)
        xtw = x.T * ww
        new = np.linalg.solve(xtw @ x, xtw @ z)
        done = np.max(np.abs(new - beta)) < 1e-10 * (1 + np.max(np.abs(beta)))
        beta = new
        eta = x @ beta
        mu = inv(eta)
        if done:
            break
    return beta


def _separation_error(it: int) -> ConvergenceError:
    return ConvergenceError(
        f"{_FUNC}: fitted probabilities reached 0 or 1 at iteration {it} (separation: a term or a combination of "
        "terms predicts the outcome perfectly, e.g. a category in which every screen is positive). Remove or merge "
        "that term's levels, or cross-tabulate the outcome by each term to find it."
    )


class _Clusters:
    """Rows grouped into equal-size blocks so that per-cluster algebra is batched."""

    def __init__(self, codes: np.ndarray, t: np.ndarray):
        order = np.lexsort((t, codes))
        self.order = order
        sc = codes[order]
        starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
        sizes = np.diff(np.r_[starts, len(sc)])
        self.n_clusters = len(starts)
        self.max_size = int(sizes.max())
        self.sizes = sizes
        self.blocks = []  # (size, row-index matrix k x size)
        for n in np.unique(sizes):
            st = starts[sizes == n]
            self.blocks.append((int(n), st[:, None] + np.arange(n)[None, :]))


def _scale_alpha(y, mu, v, w, corstr, pairs):
    """geepack's scale and correlation at the current mean (its update_gamma / update_alpha fixed points).

    ``phi = sum w r^2 / sum w`` with the Pearson residuals ``r = (y - mu) / sqrt(v)``;
    correlation equations over the pairs within clusters weighted by ``w_j w_k``.
    """
    r = (y - mu) / np.sqrt(v)
    phi = float(np.sum(w * r * r) / np.sum(w))
    if pairs is None:
        return phi, np.nan
    pj, pk, dist, ww = pairs
    z = r[pj] * r[pk] / phi
    if corstr == "exchangeable":
        return phi, float(np.sum(ww * z) / np.sum(ww))
    return phi, _ar1_alpha(z, dist, ww)


def _ar1_alpha(prod: np.ndarray, dist: np.ndarray, ww: np.ndarray) -> float:
    """Solve sum w_jk (prod - a^d) d a^(d-1) = 0 for a in (-1, 1) (Yan & Fine's AR(1) equation)."""
    lag1 = dist == 1
    a = float(np.mean(prod[lag1])) if lag1.any() else float(np.mean(prod) ** (1.0 / max(np.mean(dist), 1.0)))
    a = min(max(a, -0.95), 0.95)
    dm1 = np.maximum(dist - 1, 0)
    dm2 = np.maximum(dist - 2, 0)
    for _ in range(100):
        ad = a ** dist
        g = dist * a ** dm1
        f = np.sum(ww * (prod - ad) * g)
        fp = np.sum(ww * (-g * g + (prod - ad) * dist * (dist - 1) * a ** dm2))
        if fp == 0:
            break
        step = f / fp
        new = a - step
        if not (-1 < new < 1):
            new = 0.5 * (a + np.sign(new))
        if abs(new - a) < 1e-13:
            a = new
            break
        a = new
    return float(a)


def fit_gee(
    df: pd.DataFrame,
    *,
    formula: str,
    id_col: str,
    family: str = "binomial",
    corstr: str = "exchangeable",
    time_col: str | None = None,
    weights_col: str | None = None,
    conf_level: float = 0.95,
    max_iter: int = 100,
) -> Result:
    """Fit a marginal model by GEE with robust standard errors (R ``geepack::geeglm``).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per observation (e.g. patient-week), any order. Not modified.
    formula : str
        ``"response ~ terms"``; the right-hand side in formulaic syntax, built by
        :func:`iop_research._design.build_design` (``"mat + week + C(site)"``). An intercept
        ``(Intercept)`` is always included.
    id_col : str
        Cluster (patient) identifier; rows of a cluster need not be contiguous.
    family : {"binomial", "gaussian"}, default "binomial"
        With the canonical link (logit, identity).
    corstr : {"exchangeable", "ar1", "independence"}, default "exchangeable"
        Working correlation.
    time_col : str, optional
        Numeric measurement time within the cluster (e.g. week number), geepack's ``waves``:
        orders rows within clusters and gives the AR(1) distances ``|t_j - t_k|`` (so missed
        weeks widen the gap). Without it rows keep their order and AR(1) uses positions.
        Times must be distinct within a cluster.
    weights_col : str, optional
        Prior (case) weights ``>= 0`` (geepack's ``weights``): the mean equations use
        ``sqrt(w / v)``-scaled derivatives and residuals, scale and correlation are
        weighted as above. A zero-weight row contributes nothing.
    conf_level : float, default 0.95
        Wald interval level.
    max_iter : int, default 100
        Fisher-scoring iterations before :class:`~iop_research.exceptions.ConvergenceError`.

    Returns
    -------
    Result
        ``tidy``: ``term, label, estimate, std_error, conf_low, conf_high, p_value`` (robust
        SEs; normal-theory Wald), plus ``odds_ratio, or_conf_low, or_conf_high`` for the
        binomial family. ``glance`` (one row): ``n_obs, n_clusters, max_cluster_size, family,
        corstr, alpha`` (working correlation, NaN for independence), ``scale, n_iter,
        converged``. ``extra["vcov"]``: robust covariance (terms x terms, a ``term`` column
        first). ``model``: None.

    Raises
    ------
    EstimatorInputError
        Missing columns, missing/non-finite values, a non-0/1 binomial response, negative
        weights, repeated times within a cluster.
    ModelSpecificationError
        Unknown family or corstr, a bad formula, a singular design, a constant response.
    ConvergenceError
        No convergence within ``max_iter`` iterations.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> weeks = pd.DataFrame({"patient_id": np.repeat(np.arange(200), 8), "week": np.tile(np.arange(1, 9), 200)})
    >>> weeks["mat"] = weeks["patient_id"] % 2
    >>> u = np.repeat(rng.normal(size=200), 8)
    >>> eta = 0.2 - 0.8 * weeks["mat"] - 0.05 * weeks["week"] + u
    >>> weeks["positive"] = (rng.random(len(weeks)) < 1 / (1 + np.exp(-eta))).astype(int)
    >>> res = fit_gee(weeks, formula="positive ~ mat + week", id_col="patient_id", corstr="ar1", time_col="week")
    >>> res.tidy[["term", "estimate", "std_error", "odds_ratio"]].round(3)
              term  estimate  std_error  odds_ratio
    0  (Intercept)     0.209      0.142       1.233
    1          mat    -0.723      0.141       0.485
    2         week    -0.066      0.022       0.936
    >>> res.glance[["n_obs", "n_clusters", "corstr", "alpha"]].round(3)
       n_obs  n_clusters corstr  alpha
    0   1600         200    ar1  0.138

    The R call it equals: ``geepack::geeglm(positive ~ mat + week, id = patient_id, waves = week,
    data = weeks, family = binomial, corstr = "ar1")``.
    """
    if family not in _FAMILIES:
        raise ModelSpecificationError(f"{_FUNC}: family must be one of {_FAMILIES}, got {family!r}.")
    if corstr not in _CORSTRS:
        raise ModelSpecificationError(f"{_FUNC}: corstr must be one of {_CORSTRS}, got {corstr!r}.")
    level = check_conf_level(conf_level, _FUNC)
    yname, rhs = _response_name(formula)
    require_frame(df, _FUNC, {"response": yname, "id_col": id_col, "time_col": time_col,
                              "weights_col": weights_col})
    y = numeric_column(df, yname, func=_FUNC, role="response")
    codes = cluster_codes(df, id_col, func=_FUNC, role="cluster id")
    t = numeric_column(df, time_col, func=_FUNC, role="time") if time_col is not None else np.arange(len(df), dtype=float)
    w = weights_column(df, weights_col, func=_FUNC) if weights_col is not None else np.ones(len(df))
    if not np.any(w > 0):
        raise ModelSpecificationError(
            f"{_FUNC}: every weight in {weights_col!r} is 0, so no row contributes; check the weighting step."
        )
    design = build_design(df, formula=rhs, func=_FUNC)
    x = np.column_stack([np.ones(len(df)), design.matrix])
    terms = ("(Intercept)",) + design.terms
    labels = ("(Intercept)",) + design.labels
    check_identifiable(design.matrix, design.terms, func=_FUNC)
    inv, var, dmu = _family(family, y, df, yname)

    cl = _Clusters(codes, t)
    o = cl.order
    x, y, w, t = x[o], y[o], w[o], t[o]
    if time_col is not None:
        same = np.r_[False, (codes[o][1:] == codes[o][:-1]) & (t[1:] == t[:-1])]
        if same.any():
            rows = df.index[o[same]].tolist()
            raise EstimatorInputError(
                f"{_FUNC}: column {time_col!r} (time) repeats within a cluster in {int(same.sum())} row(s) (rows: "
                f"{rows[:5]}). Each {id_col!r} needs distinct times (one row per week); aggregate or fix them.",
                func=_FUNC, column=time_col, check="duplicate_time", n_rows=int(same.sum()), rows=rows[:5],
            )
    else:
        t = np.empty(len(y))
        for n, idx in cl.blocks:
            t[idx] = np.arange(n, dtype=float)[None, :]

    n_obs, p = x.shape
    beta = _irls_start(x, y, w, inv, var, dmu, family)
    # pairs within clusters (for the correlation estimators)
    pair_j, pair_k, pair_d = [], [], []
    if corstr != "independence":
        for n, idx in cl.blocks:
            if n < 2:
                continue
            j, k = np.triu_indices(n, 1)
            pair_j.append(idx[:, j].ravel())
            pair_k.append(idx[:, k].ravel())
            pair_d.append(np.abs(t[idx[:, j]] - t[idx[:, k]]).ravel())
        if not pair_j:
            raise ModelSpecificationError(
                f"{_FUNC}: every cluster of {id_col!r} has one row, so a {corstr!r} correlation cannot be estimated; "
                "use corstr='independence'."
            )
        pj, pk = np.concatenate(pair_j), np.concatenate(pair_k)
        pairs = (pj, pk, np.concatenate(pair_d), w[pj] * w[pk])
    else:
        pairs = None

    alpha = np.nan
    converged = False
    for it in range(1, max_iter + 1):
        eta = x @ beta
        mu = inv(eta)
        v = var(mu)
        if family == "binomial" and (np.min(v) < _SEPARATION_EPS or not np.all(np.isfinite(eta))):
            raise _separation_error(it)
        phi, alpha = _scale_alpha(y, mu, v, w, corstr, pairs)
        hess, score, meat = _equations(x, y, mu, v, w, dmu(mu), t, cl, corstr, alpha)
        try:
            step = np.linalg.solve(hess, score)
        except np.linalg.LinAlgError as exc:
            raise ConvergenceError(f"{_FUNC}: singular information matrix at iteration {it}.") from exc
        if not np.all(np.isfinite(step)):
            raise _separation_error(it) if family == "binomial" else ConvergenceError(
                f"{_FUNC}: the Fisher-scoring step is not finite at iteration {it}; rescale the covariates.")
        beta = beta + step
        if np.max(np.abs(step) / (np.abs(beta) + 1e-8)) < 1e-10 or np.max(np.abs(step)) < 1e-12:
            converged = True
            break
    if not converged:
        raise ConvergenceError(
            f"{_FUNC}: the estimating equations did not converge in {max_iter} iterations (last step "
            f"{np.max(np.abs(step)):.3g}). Check for separation (a term that predicts the outcome perfectly) or "
            "rescale covariates; max_iter= raises the limit."
        )
    # final quantities at the solution
    mu = inv(x @ beta)
    v = var(mu)
    phi, alpha = _scale_alpha(y, mu, v, w, corstr, pairs)
    hess, score, meat = _equations(x, y, mu, v, w, dmu(mu), t, cl, corstr, alpha)
    hinv = np.linalg.inv(hess)
    vcov = hinv @ meat @ hinv
    se = np.sqrt(np.diag(vcov))
    z = stats.norm.ppf(0.5 + level / 2)
    tidy = pd.DataFrame({
        "term": list(terms),
        "label": list(labels),
        "estimate": beta,
        "std_error": se,
        "conf_low": beta - z * se,
        "conf_high": beta + z * se,
        "p_value": 2 * stats.norm.sf(np.abs(beta / se)),
    })
    if family == "binomial":
        tidy["odds_ratio"] = np.exp(tidy["estimate"])
        tidy["or_conf_low"] = np.exp(tidy["conf_low"])
        tidy["or_conf_high"] = np.exp(tidy["conf_high"])
    glance = pd.DataFrame([{
        "n_obs": int(n_obs),
        "n_clusters": int(cl.n_clusters),
        "max_cluster_size": int(cl.max_size),
        "family": family,
        "corstr": corstr,
        "alpha": alpha if corstr != "independence" else np.nan,
        "scale": phi,
        "n_iter": int(it),
        "converged": bool(converged),
    }])
    vc = pd.DataFrame(vcov, columns=list(terms))
    vc.insert(0, "term", list(terms))
    link = {"binomial": "logit", "gaussian": "identity"}[family]
    return Result(
        method=f"GEE ({family}, {link} link, {corstr} working correlation)",
        tidy=tidy,
        glance=glance,
        model=None,
        extra={"vcov": vc},
        conventions={
            "variance": "robust sandwich (geepack san.se), no small-sample correction",
            "scale": "weighted sum of squared Pearson residuals / sum of weights (geepack), estimated for every family",
            "correlation": "moment estimators of geepack (Yan & Fine 2004): exchangeable = mean pairwise "
                           "product; AR(1) alpha^|t_j - t_k| solved over all pairs",
            "intervals": "Wald, normal quantile (R: Pr(>|W|) from chi-square 1 df)",
            "R": "geepack::geeglm(..., id =, waves = time_col, corstr =, scale.fix = FALSE)",
        },
    )


def _equations(x, y, mu, v, w, d, t, cl: _Clusters, corstr: str, alpha: float):
    """Information ``sum D' V^-1 D``, score ``sum D' V^-1 (y - mu)`` and meat ``sum U_i U_i'`` (batched).

    As geepack: ``D`` and the residuals are scaled by ``sqrt(w / v)`` and ``V^-1`` is the inverse of the
    working correlation, so a zero-weight row keeps its place in the correlation but contributes nothing.
    """
    p = x.shape[1]
    hess = np.zeros((p, p))
    score = np.zeros(p)
    meat = np.zeros((p, p))
    s = np.sqrt(w / v)
    ds = x * (d * s)[:, None]
    rs = (y - mu) * s
    for n, idx in cl.blocks:
        db = ds[idx]  # k x n x p
        res = rs[idx]
        if corstr == "independence" or n == 1:
            a, ra = db, res
        else:
            if corstr == "exchangeable":
                rmat = np.full((n, n), alpha)
                np.fill_diagonal(rmat, 1.0)
                rinv = np.linalg.inv(rmat)
                a = np.einsum("ij,kjp->kip", rinv, db)
            else:
                tb = t[idx]
                rb = alpha ** np.abs(tb[:, :, None] - tb[:, None, :])
                a = np.linalg.solve(rb, db)  # R^-1 D
            ra = res
        hess += np.einsum("kip,kiq->pq", a, db)
        u = np.einsum("kip,ki->kp", a, ra)
        score += u.sum(axis=0)
        meat += u.T @ u
    return hess, score, meat
