"""Missing covariates: complete-case analysis, missing-indicator coding, and multiple
imputation by chained equations pooled with Rubin's rules.

Three policies for covariates with missing values (a study file's ``[missing]``):

``complete_case``
    Drop the rows with a missing covariate and say so: :func:`complete_case` returns the
    rows kept and one attrition row (rows and patients removed, the columns responsible).
``indicator``
    :func:`missing_indicator`: a categorical covariate gets a level ``"missing"``; a
    numeric one is filled with its observed mean and gets a 0/1 column
    ``<name>_missing``. Simple, keeps every row; biased in general (it is a model in
    which missingness itself carries information), so use it as a sensitivity analysis.
``multiple_imputation``
    :func:`impute_chained` draws ``m`` completed data sets by chained equations
    (MICE, fully conditional specification) with the methods of R's ``mice`` [1]_:
    numeric covariates by predictive mean matching (``pmm``), two-level covariates by
    Bayesian logistic regression (``logreg``), more levels by multinomial logistic
    regression (``polyreg``). Fit the analysis model on each and combine with
    :func:`pool_rubin` (Rubin's rules [2]_ with the Barnard-Rubin degrees of
    freedom [3]_), as R's ``pool(with(imp, coxph(...)))``.

For a survival outcome, include the event indicator and the Nelson-Aalen cumulative
hazard at each row's follow-up time (:func:`nelson_aalen`) as auxiliary predictors of the
imputation models, not the follow-up time itself (White and Royston [4]_); otherwise
the imputed covariates carry no association with the outcome and the hazard ratios are
biased towards 1.

Conventions (R ``mice`` 3.15 defaults, stated beside each choice)
-----------------------------------------------------------------
- Visit sequence: covariates in the order given (``visitSequence = "roman"``); each chain
  starts from random draws of the observed values (``mice``'s initialisation) and runs
  ``max_iter`` sweeps (``maxit``; ``mice`` default 5, here 10).
- ``pmm``: the regression parameters are drawn from their posterior (``.norm.draw``,
  ridge 1e-5); predicted values of observed rows use the least-squares estimate, of
  missing rows the draw (type-1 matching, ``matchtype = 1``); the donor is drawn from the
  ``donors = 5`` nearest observed rows.
- ``logreg``: logistic regression on the observed rows plus ``mice``'s augmentation
  records (``augment()``: 2 records per predictor and level, total weight p + 1, which
  prevents perfect prediction), parameters drawn from the normal approximation of their
  posterior; ``polyreg``: the same for a multinomial model, whose parameters, as in
  ``mice`` (``nnet::multinom``), are not drawn.
- Pooling: Rubin's rules with ``ubar`` the mean of the squared standard errors, ``b`` the
  between-imputation variance (denominator m - 1), ``t = ubar + (1 + 1/m) b``; degrees of
  freedom by Barnard and Rubin (1999) with ``dfcom`` as ``mice::pool``: events minus
  parameters for a Cox model, ``n`` minus parameters otherwise; t-based intervals and
  p-values (``summary(pool(fit), conf.int = TRUE)``).

References
----------
.. [1] van Buuren S, Groothuis-Oudshoorn K. mice: Multivariate Imputation by Chained
   Equations in R. J Stat Softw 2011;45(3):1-67.
.. [2] Rubin DB. Multiple Imputation for Nonresponse in Surveys. Wiley, 1987.
.. [3] Barnard J, Rubin DB. Small-sample degrees of freedom with multiple imputation.
   Biometrika 1999;86:948-955.
.. [4] White IR, Royston P. Imputing missing covariate values for the Cox model.
   Stat Med 2009;28:1982-1998.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from iop_research._design import term_label
from iop_research.exceptions import ConvergenceError, ModelSpecificationError, format_ids
from iop_research.results import TIDY_TERM_COLUMNS, Result

__all__ = [
    "complete_case",
    "missing_indicator",
    "nelson_aalen",
    "impute_chained",
    "imputation_methods",
    "pool_rubin",
    "POOL_TIDY_COLUMNS",
    "POOL_GLANCE_COLUMNS",
    "MISSING_LEVEL",
]

#: Level given to missing values of a categorical covariate by :func:`missing_indicator`.
MISSING_LEVEL = "missing"

#: Fixed tidy columns of :func:`pool_rubin` (hazard-ratio columns are added for Cox fits).
POOL_TIDY_COLUMNS = TIDY_TERM_COLUMNS + ("statistic", "df", "ubar", "b", "t", "riv", "lambda_", "fmi")
#: Fixed glance columns of :func:`pool_rubin`.
POOL_GLANCE_COLUMNS = ("m", "dfcom", "n")

_PMM, _LOGREG, _POLYREG = "pmm", "logreg", "polyreg"


# ----------------------------------------------------------------------------- validation


def _check_frame(df: Any, covariates: Sequence[str], where: str) -> list[str]:
    if not isinstance(df, pd.DataFrame):
        raise ModelSpecificationError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}.")
    if isinstance(covariates, str):
        raise ModelSpecificationError(
            f"{where}: covariates must be a list of column names, got the string {covariates!r}; "
            f"write covariates=[{covariates!r}].")
    covariates = list(covariates)
    absent = [c for c in covariates if c not in df.columns]
    if absent:
        raise ModelSpecificationError(
            f"{where}: covariate column(s) {', '.join(map(repr, absent))} not in the frame "
            f"(columns: {format_ids(df.columns, 12)}). Correct the names.")
    if len(set(covariates)) != len(covariates):
        raise ModelSpecificationError(f"{where}: covariates list a column twice ({covariates}).")
    return covariates


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


# ----------------------------------------------------------------------------- complete case


def complete_case(
    df: pd.DataFrame,
    covariates: Sequence[str],
    *,
    patient_col: str | None = "patient_id",
    attrition: Any = None,
    table: str = "episodes",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keep the rows with every covariate observed, and account for the rest.

    Parameters
    ----------
    df : pandas.DataFrame
        Analysis frame. Not modified.
    covariates : list of str
        Columns that must be observed.
    patient_col : str or None, default "patient_id"
        Person column for ``patients_removed`` (patients left without any row); ``None``
        or absent: counted as 0.
    attrition : iop_research.derive.cohorts.Attrition, optional
        When given, the step is also recorded in it (chain ``table``).
    table : str, default "episodes"
        Attrition chain.

    Returns
    -------
    kept : pandas.DataFrame
        Rows with no missing covariate (index kept).
    attrition_row : dict
        ``step`` ("complete_case"), ``reason`` (which columns, how many missing each),
        ``rows_removed``, ``patients_removed``, ``rows_remaining``, ``patients_remaining``.

    Examples
    --------
    >>> df = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "housing": ["stable", None, "homeless"],
    ...                    "age": [30.0, 41.0, None]})
    >>> kept, row = complete_case(df, ["housing", "age"])
    >>> len(kept), row["rows_removed"], row["reason"]
    (1, 2, 'missing covariate: housing 1, age 1')
    """
    covariates = _check_frame(df, covariates, "complete_case")
    miss = df[covariates].isna()
    drop = miss.any(axis=1).to_numpy()
    counts = miss.sum()
    parts = [f"{c} {int(counts[c])}" for c in covariates if counts[c] > 0]
    reason = "missing covariate: " + (", ".join(parts) if parts else "none")
    if attrition is not None:
        kept = attrition.exclude(df, pd.Series(drop, index=df.index), step="complete_case",
                                 reason=reason, table=table)
    else:
        kept = df.loc[~drop].copy()
    has_pid = patient_col is not None and patient_col in df.columns
    before = set(df[patient_col].dropna()) if has_pid else set()
    after = set(kept[patient_col].dropna()) if has_pid else set()
    row = {"step": "complete_case", "reason": reason, "rows_removed": int(drop.sum()),
           "patients_removed": len(before - after), "rows_remaining": len(kept),
           "patients_remaining": len(after)}
    return kept, row


# ----------------------------------------------------------------------------- missing indicator


def missing_indicator(
    df: pd.DataFrame,
    covariates: Sequence[str],
    *,
    suffix: str = "_missing",
    missing_level: str = MISSING_LEVEL,
) -> tuple[pd.DataFrame, list[str]]:
    """Code missing covariate values explicitly instead of dropping rows.

    A categorical (text, category or boolean) covariate with missing values gets the
    level ``missing_level``; a numeric one is filled with its observed mean and a 0/1
    column ``<name><suffix>`` is added after it. Complete covariates are unchanged.

    Parameters
    ----------
    df : pandas.DataFrame
        Not modified.
    covariates : list of str
        Covariates to code.
    suffix : str, default "_missing"
        Suffix of the indicator columns of numeric covariates.
    missing_level : str, default "missing"
        Level of categorical covariates that stands for a missing value.

    Returns
    -------
    frame : pandas.DataFrame
        A new frame; boolean covariates with missing values become text (``"True"``,
        ``"False"``, ``missing_level``).
    covariates : list of str
        The covariate list to model with (indicator columns inserted after their covariate).

    Raises
    ------
    ModelSpecificationError
        A column is absent, a numeric covariate is entirely missing, an indicator name
        already exists, or a categorical covariate already has a level ``missing_level``.

    Examples
    --------
    >>> df = pd.DataFrame({"housing": ["stable", None], "severity_score": [4.0, None]})
    >>> out, cov = missing_indicator(df, ["housing", "severity_score"])
    >>> cov
    ['housing', 'severity_score', 'severity_score_missing']
    >>> out.to_dict("list")
    {'housing': ['stable', 'missing'], 'severity_score': [4.0, 4.0], 'severity_score_missing': [0, 1]}
    """
    covariates = _check_frame(df, covariates, "missing_indicator")
    out = df.copy()
    new_cov: list[str] = []
    for col in covariates:
        s = df[col]
        new_cov.append(col)
        if not s.isna().any():
            continue
        if _is_numeric(s):
            if s.notna().sum() == 0:
                raise ModelSpecificationError(
                    f"missing_indicator: covariate {col!r} has no observed value; drop it from the covariates.")
            ind = f"{col}{suffix}"
            if ind in df.columns:
                raise ModelSpecificationError(
                    f"missing_indicator: column {ind!r} already exists; pass another suffix=.")
            out[col] = s.astype("float64").fillna(float(s.mean()))
            out[ind] = s.isna().astype("int64")
            new_cov.append(ind)
        else:
            observed = pd.unique(s.dropna().astype(str))
            if missing_level in set(observed):
                raise ModelSpecificationError(
                    f"missing_indicator: covariate {col!r} already has a level {missing_level!r}; "
                    "pass another missing_level=.")
            text = s.astype(object).where(s.isna(), s.astype(str))
            out[col] = text.where(s.notna(), missing_level).astype(object)
    cols = list(df.columns) + [c for c in new_cov if c not in df.columns]
    # indicator columns right after their covariate
    order = []
    for c in df.columns:
        order.append(c)
        ind = f"{c}{suffix}"
        if c in covariates and ind in out.columns and ind not in df.columns:
            order.append(ind)
    order += [c for c in cols if c not in order]
    return out[order], new_cov


# ----------------------------------------------------------------------------- Nelson-Aalen


def nelson_aalen(df: pd.DataFrame, *, duration_col: str, event_col: str) -> np.ndarray:
    """Nelson-Aalen cumulative hazard at each row's own follow-up time.

    The auxiliary predictor recommended for imputing covariates of a Cox model [4]_;
    equal to R's ``mice::nelsonaalen(data, time, status)``, which takes the baseline
    hazard of a null ``coxph`` model: tied events are counted with Efron's correction
    (``d`` events among ``n`` at risk add ``1/n + 1/(n-1) + ... + 1/(n-d+1)``, the
    Fleming-Harrington estimator, rather than Nelson-Aalen's ``d/n``); rows censored at an
    event time are at risk at that time.

    Parameters
    ----------
    df : pandas.DataFrame
    duration_col, event_col : str
        Follow-up time and 0/1 event indicator, both complete.

    Returns
    -------
    numpy.ndarray
        ``H(t_i)`` for every row, in row order.

    Examples
    --------
    >>> df = pd.DataFrame({"t": [1, 2, 2, 3], "e": [1, 1, 0, 1]})
    >>> nelson_aalen(df, duration_col="t", event_col="e").round(4).tolist()
    [0.25, 0.5833, 0.5833, 1.5833]
    >>> nelson_aalen(pd.DataFrame({"t": [1, 1, 2], "e": [1, 1, 0]}), duration_col="t", event_col="e").round(4).tolist()
    [0.8333, 0.8333, 0.8333]
    """
    for col in (duration_col, event_col):
        if col not in df.columns:
            raise ModelSpecificationError(f"nelson_aalen: column {col!r} not in the frame.")
        if df[col].isna().any():
            raise ModelSpecificationError(
                f"nelson_aalen: {col} has {int(df[col].isna().sum())} missing values; the follow-up "
                "time and event indicator must be complete.")
    t = df[duration_col].to_numpy(dtype="float64")
    e = df[event_col].to_numpy(dtype="float64")
    times, inv = np.unique(t, return_inverse=True)
    d = np.bincount(inv, weights=e, minlength=len(times))
    n_at = np.bincount(inv, minlength=len(times))
    at_risk = n_at[::-1].cumsum()[::-1].astype("float64")
    # sum_{j < d} 1 / (n - j) = digamma(n + 1) - digamma(n - d + 1)
    increment = np.where(d > 0, special.digamma(at_risk + 1) - special.digamma(at_risk - d + 1), 0.0)
    return np.cumsum(increment)[inv]


# ----------------------------------------------------------------------------- chained equations


@dataclass(frozen=True)
class _Var:
    name: str
    method: str  # pmm, logreg, polyreg, or "aux" (complete numeric/categorical predictor)
    levels: tuple | None  # categorical levels (sorted), None for numeric
    missing: np.ndarray  # bool mask


def imputation_methods(df: pd.DataFrame, covariates: Sequence[str]) -> dict[str, str]:
    """The method :func:`impute_chained` uses for each covariate with missing values.

    Numeric (not boolean) columns: ``"pmm"``; boolean or text/categorical with two observed
    levels: ``"logreg"``; more levels: ``"polyreg"`` (``mice``'s defaults).

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1.0, None], "b": ["x", None], "c": [1, 2]})
    >>> imputation_methods(df, ["a", "b", "c"])
    {'a': 'pmm', 'b': 'logreg'}
    """
    out = {}
    for col in _check_frame(df, covariates, "imputation_methods"):
        s = df[col]
        if not s.isna().any():
            continue
        if _is_numeric(s):
            out[col] = _PMM
        else:
            out[col] = _LOGREG if len(pd.unique(s.dropna())) <= 2 else _POLYREG
    return out


def _levels(s: pd.Series) -> tuple:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return tuple(c for c in s.cat.categories if (s == c).any())
    vals = pd.unique(s.dropna())
    try:
        return tuple(sorted(vals))
    except TypeError:
        return tuple(sorted(vals, key=str))


def _design(work: dict[str, np.ndarray], variables: list[_Var], exclude: str) -> np.ndarray:
    """Predictor matrix (no intercept) of every variable except ``exclude``: numeric as they
    are, categorical as treatment-coded dummies (first level reference, as R's contr.treatment)."""
    cols = []
    for v in variables:
        if v.name == exclude:
            continue
        x = work[v.name]
        if v.levels is None:
            cols.append(x.astype("float64")[:, None])
        elif len(v.levels) > 1:
            k = len(v.levels)
            cols.append((x[:, None] == np.arange(1, k)[None, :]).astype("float64"))
    if not cols:
        return np.empty((len(next(iter(work.values()))), 0))
    return np.hstack(cols)


def _drop_constant(x: np.ndarray) -> np.ndarray:
    """Remove predictor columns that are constant (cannot be estimated; mice removes them too)."""
    if x.shape[1] == 0:
        return x
    keep = np.ptp(x, axis=0) > 0
    return x[:, keep]


def _norm_draw(x1: np.ndarray, y: np.ndarray, rng: np.random.Generator, ridge: float):
    """mice's ``.norm.draw``: least-squares estimate and a posterior draw of the parameters."""
    xtx = x1.T @ x1
    pen = np.diag(ridge * np.diag(xtx))
    v = np.linalg.inv(xtx + pen)
    v = (v + v.T) / 2
    coef = v @ (x1.T @ y)
    resid = y - x1 @ coef
    df = max(len(y) - x1.shape[1], 1)
    sigma = np.sqrt(np.sum(resid**2) / rng.chisquare(df))
    beta = coef + np.linalg.cholesky(v) @ rng.standard_normal(x1.shape[1]) * sigma
    return coef, beta


def _pmm(x: np.ndarray, y: np.ndarray, obs: np.ndarray, rng: np.random.Generator, donors: int,
         ridge: float) -> np.ndarray:
    """Predictive mean matching (type-1 matching, ``donors`` nearest observed rows)."""
    x1 = np.hstack([np.ones((len(x), 1)), x])
    coef, beta = _norm_draw(x1[obs], y[obs], rng, ridge)
    yhat_obs = x1[obs] @ coef
    yhat_mis = x1[~obs] @ beta
    y_obs = y[obs]
    k = min(donors, len(y_obs))
    order = np.argsort(yhat_obs, kind="stable")
    sorted_hat = yhat_obs[order]
    pos = np.searchsorted(sorted_hat, yhat_mis)
    # the k nearest lie within k places either side of the insertion point
    window = pos[:, None] + np.arange(-k, k)[None, :]
    valid = (window >= 0) & (window < len(sorted_hat))
    window = np.clip(window, 0, len(sorted_hat) - 1)
    dist = np.abs(sorted_hat[window] - yhat_mis[:, None])
    dist = np.where(valid, dist, np.inf)
    dist = dist + rng.uniform(0, 1e-12, size=dist.shape) * (1 + np.abs(yhat_mis[:, None]))  # random tie-break
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    pick = nearest[np.arange(len(yhat_mis)), rng.integers(0, k, size=len(yhat_mis))]
    return y_obs[order[window[np.arange(len(yhat_mis)), pick]]]


def _augment(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mice's ``augment()``: 2 records per predictor and level at mean +- sd/2 (clipped to the
    observed range), total weight p + 1, appended to the observed rows (weight 1)."""
    p = x.shape[1]
    w = np.ones(len(y))
    if p == 0:
        return x, y, w
    mean, sd = x.mean(axis=0), x.std(axis=0, ddof=1) if len(x) > 1 else np.zeros(p)
    lo, hi = x.min(axis=0), x.max(axis=0)
    nr = 2 * p * k
    d = np.tile(mean, (nr, 1))
    for j in range(p):
        rows = slice(2 * k * j, 2 * k * (j + 1))
        d[rows, j] = mean[j] + np.tile([0.5, -0.5], k) * sd[j]
    d = np.clip(d, lo, hi)
    e = np.tile(np.repeat(np.arange(k), 2), p)
    return (np.vstack([x, d]), np.concatenate([y, e]),
            np.concatenate([w, np.full(nr, (p + 1) / nr)]))


def _multinomial(x1: np.ndarray, y: np.ndarray, w: np.ndarray, k: int, *, max_iter: int = 100,
                 tol: float = 1e-10, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logistic regression by Newton-Raphson; first level is the reference.

    Returns the (p, k-1) coefficients and the inverse information (covariance) of their
    column-stacked vector. ``start``: initial coefficients (the previous sweep's fit).
    """
    n, p = x1.shape
    q = k - 1
    beta = np.zeros((p, q)) if start is None or start.shape != (p, q) else start.copy()
    yk = (y[:, None] == np.arange(1, k)[None, :]).astype("float64")
    old = -np.inf
    for _ in range(max_iter):
        eta = x1 @ beta
        eta_max = np.maximum(eta.max(axis=1), 0)
        ex = np.exp(eta - eta_max[:, None])
        denom = np.exp(-eta_max) + ex.sum(axis=1)
        prob = ex / denom[:, None]
        loglik = np.sum(w * (np.sum(yk * eta, axis=1) - eta_max - np.log(denom)))
        grad = (x1.T @ (w[:, None] * (yk - prob))).reshape(-1, order="F")
        info = np.empty((p * q, p * q))
        for a in range(q):
            for b in range(q):
                wab = w * prob[:, a] * ((a == b) - prob[:, b])
                info[a * p:(a + 1) * p, b * p:(b + 1) * p] = x1.T @ (wab[:, None] * x1)
        info += np.eye(p * q) * 1e-10
        step = np.linalg.solve(info, grad)
        beta = beta + step.reshape((p, q), order="F")
        if abs(loglik - old) < tol * (abs(loglik) + tol):
            break
        old = loglik
    else:  # pragma: no cover - augmentation keeps the likelihood bounded
        raise ConvergenceError("impute_chained: the (multinomial) logistic imputation model did not converge.")
    cov = np.linalg.inv(info)
    return beta, (cov + cov.T) / 2


def _categorical(x: np.ndarray, y: np.ndarray, obs: np.ndarray, k: int, rng: np.random.Generator,
                 draw: bool, warm: dict, name: str) -> np.ndarray:
    xa, ya, wa = _augment(x[obs], y[obs], k)
    xa1 = np.hstack([np.ones((len(xa), 1)), xa])
    beta, cov = _multinomial(xa1, ya, wa, k, start=warm.get(name))
    warm[name] = beta  # the next sweep starts from this fit (same maximum, fewer Newton steps)
    if draw:  # logreg: parameters drawn from their approximate posterior
        beta = beta + (np.linalg.cholesky(cov) @ rng.standard_normal(cov.shape[0])).reshape(beta.shape, order="F")
    eta = np.hstack([np.zeros((int((~obs).sum()), 1)), np.hstack([np.ones((int((~obs).sum()), 1)), x[~obs]]) @ beta])
    eta -= eta.max(axis=1, keepdims=True)
    prob = np.exp(eta)
    prob /= prob.sum(axis=1, keepdims=True)
    u = rng.uniform(size=len(prob))
    return np.minimum((prob.cumsum(axis=1) < u[:, None]).sum(axis=1), k - 1)


def impute_chained(
    df: pd.DataFrame,
    covariates: Sequence[str],
    *,
    m: int = 20,
    seed: int | np.random.Generator,
    max_iter: int = 10,
    auxiliary: Sequence[str] = (),
    donors: int = 5,
    ridge: float = 1e-5,
) -> list[pd.DataFrame]:
    """Multiple imputation of missing covariates by chained equations (MICE).

    Each incomplete covariate is imputed in turn from all other covariates and the
    ``auxiliary`` columns by its conditional model (``pmm``, ``logreg`` or ``polyreg``,
    see :func:`imputation_methods` and the module's conventions); ``max_iter`` sweeps
    per chain, one independent chain per completed data set, as R's
    ``mice(data, m, maxit, method = "pmm"/"logreg"/"polyreg")``.

    Parameters
    ----------
    df : pandas.DataFrame
        Analysis frame, one row per unit. Not modified.
    covariates : list of str
        Covariates of the analysis model; those with missing values are imputed, all act
        as predictors.
    m : int, default 20
        Number of completed data sets (``mice``'s default is 5; 20 or more keeps the
        Monte-Carlo error of pooled estimates small).
    seed : int or numpy.random.Generator
        Randomness; the same seed gives the same imputations.
    max_iter : int, default 10
        Sweeps through the incomplete covariates per chain (R ``maxit``).
    auxiliary : list of str, default ()
        Complete columns used only as predictors, e.g. the event indicator and
        :func:`nelson_aalen` for a Cox model.
    donors : int, default 5
        Candidate donors of predictive mean matching (R ``donors``).
    ridge : float, default 1e-5
        Ridge penalty of the linear model of ``pmm`` (R ``ridge``).

    Returns
    -------
    list of pandas.DataFrame
        ``m`` copies of ``df`` with the missing covariate values filled (same index,
        columns and dtypes; integer columns with missing values come back as ``int64``
        where pandas' nullable dtype allowed it).

    Raises
    ------
    ModelSpecificationError
        Absent columns, an auxiliary column with missing values, a covariate without
        any observed value, ``m < 1``, ``max_iter < 1``,
        ``donors < 1`` or a bad seed.

    See Also
    --------
    pool_rubin : combine the fits on the completed data sets.
    complete_case, missing_indicator : the other policies.

    References
    ----------
    .. [1] van Buuren S, Groothuis-Oudshoorn K. mice: Multivariate Imputation by Chained
       Equations in R. J Stat Softw 2011;45(3):1-67.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> df = pd.DataFrame({"age": rng.normal(40, 10, 60), "housing": rng.choice(["a", "b"], 60)})
    >>> df.loc[:9, "age"] = np.nan
    >>> imps = impute_chained(df, ["age", "housing"], m=3, seed=2, max_iter=2)
    >>> len(imps), int(imps[0]["age"].isna().sum()), bool((imps[0]["age"] != imps[1]["age"]).any())
    (3, 0, True)
    """
    covariates = _check_frame(df, covariates, "impute_chained")
    auxiliary = _check_frame(df, list(auxiliary), "impute_chained (auxiliary)")
    both = [c for c in auxiliary if c in covariates]
    if both:
        raise ModelSpecificationError(f"impute_chained: {both} are listed both as covariates and auxiliary columns.")
    for name, value, low in (("m", m, 1), ("max_iter", max_iter, 1), ("donors", donors, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ModelSpecificationError(f"impute_chained: {name} must be an integer >= {low}, got {value!r}.")
    if not isinstance(seed, (int, np.integer, np.random.Generator)) or isinstance(seed, bool):
        raise ModelSpecificationError(
            f"impute_chained: seed must be an int or a numpy.random.Generator, got {type(seed).__name__}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))
    bad_aux = [c for c in auxiliary if df[c].isna().any()]
    if bad_aux:
        raise ModelSpecificationError(
            f"impute_chained: auxiliary column(s) {bad_aux} have missing values; auxiliary predictors must "
            "be complete (impute them as covariates instead).")
    variables: list[_Var] = []
    for col in covariates + auxiliary:
        s = df[col]
        miss = s.isna().to_numpy()
        if miss.all():
            raise ModelSpecificationError(
                f"impute_chained: covariate {col!r} has no observed value; it cannot be imputed. Drop it.")
        if _is_numeric(s):
            variables.append(_Var(col, _PMM if miss.any() else "aux", None, miss))
        else:
            levels = _levels(s)
            method = "aux" if not miss.any() else (_LOGREG if len(levels) <= 2 else _POLYREG)
            variables.append(_Var(col, method, levels, miss))
    incomplete = [v for v in variables if v.method != "aux"]

    def encode(v: _Var) -> np.ndarray:
        s = df[v.name]
        if v.levels is None:
            return s.to_numpy(dtype="float64", na_value=np.nan)
        lookup = {lev: i for i, lev in enumerate(v.levels)}
        return np.array([lookup.get(x, -1) if not pd.isna(x) else -1 for x in s.astype(object)], dtype=np.int64)

    base = {v.name: encode(v) for v in variables}
    out = []
    for _ in range(m):
        work = {k: a.copy() for k, a in base.items()}
        warm: dict[str, np.ndarray] = {}
        for v in incomplete:  # mice's initialisation: random draws of the observed values
            observed = work[v.name][~v.missing]
            work[v.name][v.missing] = rng.choice(observed, size=int(v.missing.sum()), replace=True)
        for _sweep in range(max_iter):
            for v in incomplete:
                x = _drop_constant(_design(work, variables, v.name))
                obs = ~v.missing
                if v.method == _PMM:
                    work[v.name][v.missing] = _pmm(x, work[v.name], obs, rng, donors, ridge)
                else:
                    k = len(v.levels)
                    if k == 1:
                        work[v.name][v.missing] = 0
                    else:
                        work[v.name][v.missing] = _categorical(x, work[v.name], obs, k, rng,
                                                               draw=v.method == _LOGREG, warm=warm, name=v.name)
        completed = df.copy()
        for v in incomplete:
            s = df[v.name]
            if v.levels is None:
                vals = work[v.name]
                if pd.api.types.is_integer_dtype(s.dtype):
                    completed[v.name] = pd.Series(np.rint(vals).astype("int64"), index=df.index)
                else:
                    completed[v.name] = pd.Series(vals, index=df.index, dtype="float64")
            else:
                filled = pd.Series(np.asarray(v.levels, dtype=object)[work[v.name]], index=df.index)
                if isinstance(s.dtype, pd.CategoricalDtype):
                    filled = pd.Series(pd.Categorical(filled, categories=s.cat.categories,
                                                      ordered=s.cat.ordered), index=df.index)
                elif pd.api.types.is_bool_dtype(s.dtype):
                    filled = filled.astype(bool)
                else:
                    filled = s.astype(object).where(s.notna(), filled)
                    if isinstance(s.dtype, pd.StringDtype):
                        filled = filled.astype(s.dtype)
                completed[v.name] = filled
        out.append(completed)
    return out


# ----------------------------------------------------------------------------- Rubin's rules


def _tidy_of(res: Any, i: int) -> pd.DataFrame:
    tidy = res.tidy if isinstance(res, Result) else res
    if not isinstance(tidy, pd.DataFrame) or not {"term", "estimate", "std_error"} <= set(tidy.columns):
        raise ModelSpecificationError(
            f"pool_rubin: result {i} is neither a Result nor a tidy table with columns term, estimate, "
            f"std_error (got {type(res).__name__}).")
    return tidy


def _default_dfcom(res: Any, k: int) -> float:
    """``mice::pool``'s complete-data degrees of freedom: Cox: events - parameters; else n - parameters."""
    if not isinstance(res, Result) or res.glance is None or not len(res.glance):
        return np.inf
    g = res.glance.iloc[0]
    if "n_events" in g.index and "hazard_ratio" in res.tidy.columns:
        return float(max(g["n_events"] - k, 1))
    if "df_resid" in g.index:
        return float(g["df_resid"])
    if "n" in g.index:
        return float(max(g["n"] - k, 1))
    return np.inf


def _barnard_rubin(m: int, b: np.ndarray, t: np.ndarray, dfcom: float) -> np.ndarray:
    """As ``mice:::barnard.rubin`` (lambda floored at 1e-4)."""
    lam = (1 + 1 / m) * b / t
    lam = np.maximum(lam, 1e-4)
    dfold = (m - 1) / lam**2
    if np.isinf(dfcom):
        return dfold
    dfobs = (dfcom + 1) / (dfcom + 3) * dfcom * (1 - lam)
    return dfold * dfobs / (dfold + dfobs)


def pool_rubin(
    results: Sequence[Any],
    *,
    dfcom: float | None = None,
    conf_level: float = 0.95,
) -> Result:
    """Combine fits on multiply imputed data sets with Rubin's rules.

    For each term: pooled estimate ``qbar`` (mean of the estimates), within-imputation
    variance ``ubar`` (mean of the squared standard errors), between-imputation variance
    ``b`` (sample variance of the estimates), total variance
    ``t = ubar + (1 + 1/m) b``; Barnard-Rubin degrees of freedom; t-based confidence
    interval and two-sided p-value. Equal to R's
    ``summary(pool(with(imp, coxph(...))), conf.int = TRUE)`` (mice 3.15) given the same fits.

    Parameters
    ----------
    results : sequence of Result or pandas.DataFrame
        ``m >= 2`` fits with the same terms (e.g. :func:`iop_research.survival.cox.fit_cox`
        results), or their tidy tables (``term, estimate, std_error``).
    dfcom : float, optional
        Complete-data degrees of freedom. Default as ``mice::pool``: number of events
        minus number of terms for Cox results, ``n`` minus terms for other results with
        ``n`` in their glance, infinite for bare tables.
    conf_level : float, default 0.95

    Returns
    -------
    Result
        ``tidy`` columns :data:`POOL_TIDY_COLUMNS` (``estimate`` = qbar, ``std_error`` =
        sqrt(t), ``statistic`` = estimate / std_error, ``df``, ``ubar``, ``b``, ``t``,
        ``riv`` = (1 + 1/m) b / ubar, ``lambda_`` = (1 + 1/m) b / t, ``fmi``) plus
        ``hazard_ratio, hr_conf_low, hr_conf_high`` when the inputs have ``hazard_ratio``;
        ``glance`` ``m, dfcom, n``; ``extra["estimates"]``: every term's estimate and
        standard error per imputation (``imputation, term, estimate, std_error``).

    Raises
    ------
    ModelSpecificationError
        Fewer than two results, differing terms, missing estimates, or bad ``conf_level``.

    References
    ----------
    .. [1] Rubin DB. Multiple Imputation for Nonresponse in Surveys. Wiley, 1987.
    .. [2] Barnard J, Rubin DB. Small-sample degrees of freedom with multiple imputation.
       Biometrika 1999;86:948-955.

    Examples
    --------
    >>> tidies = [pd.DataFrame({"term": ["x"], "estimate": [b], "std_error": [0.1]}) for b in (0.5, 0.7)]
    >>> pooled = pool_rubin(tidies)
    >>> pooled.tidy[["term", "estimate", "b", "t"]].round(4).to_dict("records")
    [{'term': 'x', 'estimate': 0.6, 'b': 0.02, 't': 0.04}]
    """
    results = list(results)
    if len(results) < 2:
        raise ModelSpecificationError(
            f"pool_rubin: needs the fits on at least 2 imputed data sets, got {len(results)}.")
    if not 0 < conf_level < 1:
        raise ModelSpecificationError(f"pool_rubin: conf_level must lie in (0, 1), got {conf_level!r}.")
    tidies = [_tidy_of(r, i) for i, r in enumerate(results)]
    terms = list(tidies[0]["term"])
    for i, t in enumerate(tidies[1:], start=1):
        if list(t["term"]) != terms:
            raise ModelSpecificationError(
                f"pool_rubin: fit {i} has terms {list(t['term'])} but fit 0 has {terms}; every imputed data "
                "set must give the same terms (a level absent from one imputation changes the dummies: "
                "fix the levels with a pandas Categorical).")
    est = np.array([t["estimate"].to_numpy(dtype="float64") for t in tidies])
    se = np.array([t["std_error"].to_numpy(dtype="float64") for t in tidies])
    if not (np.isfinite(est).all() and np.isfinite(se).all()):
        raise ModelSpecificationError("pool_rubin: some fits have missing or infinite estimates or standard errors.")
    m = len(tidies)
    k = len(terms)
    if dfcom is None:
        dfcom = _default_dfcom(results[0], k)
    qbar = est.mean(axis=0)
    ubar = (se**2).mean(axis=0)
    b = est.var(axis=0, ddof=1)
    t = ubar + (1 + 1 / m) * b
    df = _barnard_rubin(m, b, t, float(dfcom))
    std = np.sqrt(t)
    q = stats.t.ppf(0.5 + conf_level / 2, df)
    stat = qbar / std
    riv = (1 + 1 / m) * b / ubar
    lam = (1 + 1 / m) * b / t
    labels = (list(tidies[0]["label"]) if "label" in tidies[0].columns else [term_label(str(x)) for x in terms])
    tidy = pd.DataFrame({
        "term": terms, "label": labels, "estimate": qbar, "std_error": std, "conf_low": qbar - q * std, "conf_high": qbar + q * std,
        "p_value": 2 * stats.t.sf(np.abs(stat), np.maximum(df, 0.001)), "statistic": stat, "df": df,
        "ubar": ubar, "b": b, "t": t, "riv": riv, "lambda_": lam, "fmi": (riv + 2 / (df + 3)) / (riv + 1),
    })
    if "hazard_ratio" in tidies[0].columns:
        tidy["hazard_ratio"] = np.exp(qbar)
        tidy["hr_conf_low"] = np.exp(tidy["conf_low"])
        tidy["hr_conf_high"] = np.exp(tidy["conf_high"])
    n = np.nan
    if isinstance(results[0], Result) and len(results[0].glance) and "n" in results[0].glance.columns:
        n = float(results[0].glance["n"].iloc[0])
    glance = pd.DataFrame({"m": [m], "dfcom": [float(dfcom)], "n": [n]})
    long = pd.DataFrame({
        "imputation": np.repeat(np.arange(1, m + 1), k), "term": terms * m,
        "estimate": est.ravel(), "std_error": se.ravel(),
    })
    method = results[0].method if isinstance(results[0], Result) else "model"
    return Result(
        method=f"{method}, pooled over {m} imputations (Rubin's rules)",
        tidy=tidy, glance=glance, model=None, extra={"estimates": long},
        conventions={
            "pooling": "Rubin (1987): t = ubar + (1 + 1/m) b; as mice::pool(rule = 'rubin1987')",
            "df": "Barnard-Rubin (1999) with dfcom = events - terms (Cox) or n - terms; as mice:::barnard.rubin",
            "interval": "estimate +- qt(1 - alpha/2, df) * sqrt(t); as summary(pool(fit), conf.int = TRUE)",
        },
    )
