"""Residuals of a Cox model, equal to R ``residuals.coxph`` (survival 3.5).

Martingale, deviance, score, Schoenfeld (raw and scaled), dfbeta and dfbetas, for
right-censored and counting-process fits, with strata, case weights and Efron or Breslow
ties, optionally collapsed (summed) within clusters (R's ``collapse=``).

The public names are re-exported from :mod:`iop_research.survival`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import ModelSpecificationError
from iop_research.survival._riskset import RiskSets
from iop_research.survival.cox import CoxModel

__all__ = ["cox_residuals"]

_TYPES = ("martingale", "deviance", "score", "schoenfeld", "scaledsch", "dfbeta", "dfbetas")


def _deviance(mart: np.ndarray, status: np.ndarray) -> np.ndarray:
    # collapsed rows can give a negative argument: NaN, as R (which warns)
    with np.errstate(divide="ignore", invalid="ignore"):
        logterm = np.where(status == 0, 0.0, status * np.log(np.where(status == 0, 1.0, status - mart)))
        return np.sign(mart) * np.sqrt(-2 * (mart + logterm))


def cox_residuals(
    fit: Any,
    *,
    type: str = "martingale",
    collapse: bool | Sequence | np.ndarray | None = None,
    weighted: bool | None = None,
) -> pd.DataFrame:
    """Residuals of a Cox fit, as R ``residuals(coxph_fit, type, collapse, weighted)``.

    Parameters
    ----------
    fit : Result
        Output of :func:`~iop_research.survival.cox.fit_cox`.
    type : {"martingale", "deviance", "score", "schoenfeld", "scaledsch", "dfbeta", "dfbetas"}
        ``martingale``: ``event - expected`` (Efron-adjusted at the row's own event time);
        ``deviance``: ``sign(m) sqrt(-2 (m + d log(d - m)))``; ``score``: per-row score
        contributions (n x p); ``schoenfeld``: ``x_i - xbar(t_i)`` for each event (Efron:
        ``xbar`` averaged over the tie slots); ``scaledsch``: ``beta + n_events * V r_i``
        with V the model-based variance (R's ``type="scaledsch"``; :func:`ph_test` uses the
        per-term scaling of ``cox.zph`` instead); ``dfbeta``: ``score @ V`` (the approximate
        change in each coefficient when the row is left out); ``dfbetas``: dfbeta divided by
        the coefficients' model-based standard errors.
    collapse : bool or array-like, optional
        ``True``: sum the residuals within the fit's ``cluster_col`` (e.g. per patient in an
        Andersen-Gill model); an array of length n (rows of the fit): sum within its values,
        as R's ``collapse=``. Not for Schoenfeld residuals. Default None (one row per fit row).
    weighted : bool, optional
        Multiply by the case weights. Default as R: True for dfbeta and dfbetas, else False.

    Returns
    -------
    pandas.DataFrame
        martingale/deviance: ``row`` (index label of the fitted row; ``cluster`` when
        collapsed), ``residual``. score/dfbeta/dfbetas: ``row`` (or ``cluster``) and one
        column per design column (``fit.tidy["term"]``). schoenfeld/scaledsch: one row per
        event, ordered as R (by stratum, time; ties in data order), ``row``, ``stratum``
        (stratified fits), ``time`` and one column per design column.

    Raises
    ------
    ModelSpecificationError
        Not a Cox fit; unknown type; ``collapse=True`` without a cluster; collapse of the
        wrong length; collapse with Schoenfeld residuals.

    References
    ----------
    .. [1] Therneau, T. M., Grambsch, P. M. & Fleming, T. R. (1990). Martingale-based
       residuals for survival models. Biometrika 77(1), 147-160.
    .. [2] Schoenfeld, D. (1982). Partial residuals for the proportional hazards regression
       model. Biometrika 69(1), 239-241.
    .. [3] Therneau, T. M. & Grambsch, P. M. (2000). Modeling Survival Data, ch. 4 and 7.
       R package ``survival`` 3.5, ``residuals.coxph``.

    Examples
    --------
    >>> import pandas as pd
    >>> from iop_research.survival.cox import fit_cox
    >>> df = pd.DataFrame({"days": [5, 8, 9, 12, 20, 25, 30, 31], "relapse": [1, 1, 0, 1, 0, 1, 1, 0],
    ...                    "age": [30, 41, 25, 52, 38, 29, 47, 33]})
    >>> fit = fit_cox(df, duration_col="days", event_col="relapse", covariates=["age"])
    >>> m = cox_residuals(fit, type="martingale")
    >>> round(float(m["residual"].sum()), 10)  # martingale residuals sum to zero
    0.0
    """
    model = getattr(fit, "model", fit)
    if not isinstance(model, CoxModel):
        raise ModelSpecificationError(f"cox_residuals needs the result of fit_cox(...), got {fit.__class__.__name__}.")
    if type not in _TYPES:
        raise ModelSpecificationError(f"cox_residuals: type={type!r} is not supported; use one of {', '.join(_TYPES)}.")
    if weighted is None:
        weighted = type in ("dfbeta", "dfbetas")
    rs = RiskSets(model)
    d = model.data
    n = len(rs.stop)
    names = list(model.columns)
    row_index = d.get("row_index")
    rows = np.asarray(row_index) if row_index is not None else np.arange(n)
    w = rs.w

    if type in ("schoenfeld", "scaledsch"):
        if collapse is not None and collapse is not False:
            raise ModelSpecificationError("cox_residuals: collapse is not defined for Schoenfeld residuals.")
        ev = rs.ev
        res = rs.schoenfeld()
        if weighted:
            res = res * w[ev][:, None]
        if type == "scaledsch":
            res = len(ev) * res @ np.asarray(model.naive_var) + rs.beta
        order = np.lexsort((ev, rs.stop[ev], rs.strata[ev]))
        out = pd.DataFrame(res[order], columns=names)
        out.insert(0, "time", rs.stop[ev][order])
        if model.spec.get("strata_cols"):
            labels = model.spec["strata_levels"]
            out.insert(0, "stratum", [labels[k] for k in rs.strata[ev][order]])
        out.insert(0, "row", rows[ev][order])
        return out

    if type in ("martingale", "deviance"):
        res = rs.martingale()
        status = rs.event.astype(float)
        if weighted:
            res = res * w
    else:
        res = rs.score()
        if type in ("dfbeta", "dfbetas"):
            res = res @ np.asarray(model.naive_var)
            if type == "dfbetas":
                res = res / np.sqrt(np.diag(model.naive_var))
        if weighted:
            res = res * w[:, None]

    key_name = "row"
    keys = rows
    if collapse is not None and collapse is not False:
        if collapse is True:
            if d.get("cluster") is None:
                raise ModelSpecificationError(
                    "cox_residuals: collapse=True needs a fit with cluster_col; or pass an array of cluster ids "
                    "(one per fitted row)."
                )
            levels = model.spec.get("cluster_levels")
            codes0 = np.asarray(d["cluster"])
            groups = np.asarray(levels, dtype=object)[codes0] if levels is not None else codes0
        else:
            groups = np.asarray(collapse)
            if groups.shape != (n,):
                raise ModelSpecificationError(
                    f"cox_residuals: collapse has length {groups.size}, the fit has {n} rows. Pass one id per "
                    "fitted row (rows with zero weight are not part of the fit)."
                )
        key_name = "cluster"
        codes, keys_lab = pd.factorize(groups, sort=True)
        ng = len(keys_lab)
        if res.ndim == 1:
            res = np.bincount(codes, weights=res, minlength=ng)
        else:
            res = np.column_stack([np.bincount(codes, weights=res[:, k], minlength=ng) for k in range(res.shape[1])])
        if type == "deviance":
            status = np.bincount(codes, weights=status, minlength=ng)
        keys = np.asarray(keys_lab)
    if type == "deviance":
        res = _deviance(res, status)
    if res.ndim == 1:
        return pd.DataFrame({key_name: keys, "residual": res})
    out = pd.DataFrame(res, columns=names)
    out.insert(0, key_name, keys)
    return out

