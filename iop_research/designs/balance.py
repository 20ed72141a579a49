"""Balance diagnostics: standardised mean differences (SMD), one implementation.

Used by :func:`iop_research.designs.causal.iptw` (signed, weighted balance table) and by
:func:`iop_research.present.tables.table_one` (largest pairwise SMD per variable). The
denominator is always the pooled standard deviation of the *unweighted* groups,
``sqrt((s1^2 + s0^2) / 2)``, as R's ``tableone`` and ``cobalt`` (for weighted differences
cobalt's default ``s.d.denom = "pooled"`` also uses the unweighted SDs).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["standardized_difference", "standardized_mean_difference"]


def _weighted_mean(x: np.ndarray, w: np.ndarray | None) -> float:
    if w is None:
        return float(np.mean(x))
    return float(np.sum(w * x) / np.sum(w))


def standardized_difference(
    treated,
    control,
    *,
    binary: bool = False,
    treated_weights=None,
    control_weights=None,
) -> float:
    """Signed standardised difference of two groups, ``(m1 - m0) / sqrt((s1^2 + s0^2) / 2)``.

    Parameters
    ----------
    treated, control : array-like of float
        Values of the two groups (no missing values).
    binary : bool, default False
        0/1 values: the variances are ``p (1 - p)`` (Austin 2009), else sample variances
        (``ddof = 1``; 0 for a group of one).
    treated_weights, control_weights : array-like of float, optional
        Weights for the means (e.g. inverse probability of treatment weights). The pooled SD
        always comes from the unweighted groups, so that weighting moves only the numerator.

    Returns
    -------
    float
        Signed SMD (treated minus control). When the pooled SD is 0: 0 if the means are
        equal, otherwise ``+/-inf``.

    References
    ----------
    .. [1] Austin PC (2009). Balance diagnostics for comparing the distribution of baseline
       covariates between treatment groups in propensity-score matched samples. Stat Med
       28:3083-3107.

    Examples
    --------
    >>> standardized_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    -1.0
    >>> round(standardized_difference([1, 1, 0, 0], [1, 0, 0, 0], binary=True), 4)
    0.5345
    """
    x1 = np.asarray(treated, dtype=float)
    x0 = np.asarray(control, dtype=float)
    w1 = None if treated_weights is None else np.asarray(treated_weights, dtype=float)
    w0 = None if control_weights is None else np.asarray(control_weights, dtype=float)
    if binary:
        p1, p0 = float(np.mean(x1)), float(np.mean(x0))
        v1, v0 = p1 * (1 - p1), p0 * (1 - p0)
    else:
        v1 = float(np.var(x1, ddof=1)) if x1.size > 1 else 0.0
        v0 = float(np.var(x0, ddof=1)) if x0.size > 1 else 0.0
    diff = _weighted_mean(x1, w1) - _weighted_mean(x0, w0)
    sd = np.sqrt((v1 + v0) / 2.0)
    if sd == 0:
        return 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
    return float(diff / sd)


def _smd_categorical(p1: np.ndarray, p2: np.ndarray) -> float:
    """Yang & Dalton (2012) multivariate SMD over levels 2..K (tableone's)."""
    t = (p1 - p2)[1:]
    if t.size == 0:
        return 0.0

    def cov(p):
        q = p[1:]
        s = -np.outer(q, q)
        np.fill_diagonal(s, q * (1 - q))
        return s

    s = (cov(p1) + cov(p2)) / 2.0
    val = float(t @ np.linalg.pinv(s) @ t)
    return float(np.sqrt(max(val, 0.0)))


def standardized_mean_difference(values: pd.Series, groups: pd.Series, *, categorical: bool = False) -> float:
    """Largest pairwise standardised mean difference between groups (absolute value).

    Parameters
    ----------
    values : pandas.Series
        The variable; missing values are left out (per group).
    groups : pandas.Series
        Group labels, aligned with ``values``.
    categorical : bool, default False
        Treat ``values`` as categorical.

    Returns
    -------
    float
        Continuous: ``|m1 - m2| / sqrt((s1^2 + s2^2) / 2)`` (:func:`standardized_difference`,
        pooled SD as in R's tableone and cobalt). Categorical: the multivariate SMD of Yang
        and Dalton over the level proportions (binary: ``|p1 - p2| /
        sqrt((p1(1-p1) + p2(1-p2)) / 2)``), as tableone. With more than two groups the
        maximum over pairs (tableone averages the pairs instead). 0 when both SDs are 0 and
        means equal, ``inf`` when SDs are 0 and means differ, NaN with fewer than two
        non-empty groups.

    References
    ----------
    .. [1] Austin PC (2009). Balance diagnostics for comparing the distribution
       of baseline covariates between treatment groups in propensity-score
       matched samples. *Stat Med* 28:3083-3107.
    .. [2] Yang D, Dalton JE (2012). A unified approach to measuring the effect
       size between two groups using SAS. SAS Global Forum paper 335-2012.
    .. [3] Yoshida K, Bartel A. tableone: ``ExtractSmd`` (R package).

    Examples
    --------
    >>> import pandas as pd
    >>> v = pd.Series([1.0, 2.0, 3.0, 2.0, 3.0, 4.0])
    >>> g = pd.Series(["a", "a", "a", "b", "b", "b"])
    >>> round(standardized_mean_difference(v, g), 6)
    1.0
    >>> s = pd.Series(["x", "y", "y", "x", "x", "x"])
    >>> round(standardized_mean_difference(s, g, categorical=True), 4)
    2.0
    """
    ok = values.notna() & groups.notna()
    v, g = values[ok], groups[ok]
    labels = [x for x in pd.unique(g)]
    if categorical:
        levels = sorted(pd.unique(v), key=str)
        props = {}
        for lab in labels:
            vv = v[g == lab]
            if len(vv):
                props[lab] = np.array([(vv == lev).mean() for lev in levels], dtype=float)
        keys = list(props)
        pairs = [(props[a], props[b]) for i, a in enumerate(keys) for b in keys[i + 1 :]]
        res = [_smd_categorical(a, b) for a, b in pairs]
    else:
        arrs = [v[g == lab].to_numpy(dtype=float) for lab in labels]
        arrs = [a for a in arrs if a.size]
        res = [abs(standardized_difference(a, b)) for i, a in enumerate(arrs) for b in arrs[i + 1 :]]
    return float(max(res)) if res else float("nan")
