"""Marginal structural Cox model with stabilised time-varying inverse probability of treatment weights.

When a time-varying confounder (a positive urine screen, a missed week) predicts both later
treatment (starting or staying on MAT) and relapse, *and is itself affected by earlier
treatment*, a time-varying Cox model cannot be fixed by adjusting for it: adjusting blocks
part of the treatment's effect and opens a path through the common causes of screen and
relapse; not adjusting leaves confounding. A marginal structural model (Robins, Hernan &
Brumback 2000) weights each person-interval by the inverse probability of the treatment
history actually received given the confounder history, so that in the weighted data
treatment no longer depends on the confounders, and then fits
``coxph(Surv(start, stop, event) ~ treatment + baseline, weights = sw, cluster = id)``.

Weights (one row per person and interval, rows of a person in time order):

* denominator model ``logit P(A_k = 1) = treatment_covariates`` (e.g. previous treatment,
  the current confounder value, baseline covariates), numerator model
  ``logit P(A_k = 1) = stabilizing_covariates`` (previous treatment and baseline only);
  pooled logistic regressions over the rows in ``model_rows`` (all rows, or only the rows
  still untreated at the previous interval when treatment, once started, is kept);
* ``sw_ik = prod_{j <= k} p_num(A_j) / p_den(A_j)`` with ``p(A_j)`` the probability of the
  treatment received; rows outside ``model_rows`` contribute a factor 1;
* optional truncation at quantiles of the weights (``truncate``), counted.

The variance is the robust (cluster = person) sandwich with the weights treated as known,
which is conservative (Robins et al. 2000). ``tests/r/msm.R`` writes the same steps out with
``glm``, ``ave(cumprod)`` and ``coxph``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from iop_research._design import build_design
from iop_research._validate import binary_column, require_frame
from iop_research._logistic import fit_logistic
from iop_research.exceptions import EstimatorInputError, ModelSpecificationError
from iop_research._validate import row_labels
from iop_research.results import Result
from iop_research.survival.cox import fit_cox

__all__ = ["msm_cox", "MSM_GLANCE_COLUMNS", "MSM_WEIGHT_COLUMNS"]

#: Columns of ``msm_cox(...).glance``.
MSM_GLANCE_COLUMNS = ("n_persons", "n_rows", "n_events", "n_truncated", "mean_weight", "max_weight")
#: Columns of ``msm_cox(...).extra["weights"]`` (one row per input row, input order).
MSM_WEIGHT_COLUMNS = ("row", "weight", "p_denominator", "p_numerator")


def _model(df: pd.DataFrame, rows: np.ndarray, a: np.ndarray, covs: Sequence[str], what: str, func: str):
    if covs:
        design = build_design(df.loc[rows], covariates=list(covs), func=func)
        x, terms = design.matrix, ["(Intercept)", *design.terms]
    else:
        x, terms = np.zeros((int(rows.sum()), 0)), ["(Intercept)"]
    x = np.column_stack([np.ones(len(x)), x])
    fit = fit_logistic(a[rows], x, func=func, what=what, predicts="treatment", tol=1e-12)
    return np.asarray(fit.fittedvalues, dtype=float), pd.DataFrame(
        {"model": what, "term": terms, "estimate": np.asarray(fit.params), "std_error": np.asarray(fit.bse)})


def msm_cox(
    frame: pd.DataFrame,
    *,
    id_col: str,
    start_col: str,
    stop_col: str,
    event_col: str,
    treatment_col: str,
    treatment_covariates: Sequence[str],
    stabilizing_covariates: Sequence[str] = (),
    outcome_covariates: Sequence[str] = (),
    model_rows: str | None = None,
    truncate: float | None = None,
    conf_level: float = 0.95,
) -> Result:
    """Marginal structural Cox model for a time-varying treatment, with stabilised IPT weights.

    Parameters
    ----------
    frame : pandas.DataFrame
        Counting-process rows ``(start, stop]``, one per person and interval (e.g. weeks since
        admission), with the treatment and confounders as known at the interval's start.
        Not modified.
    id_col, start_col, stop_col, event_col : str
        Person id, interval bounds, event at ``stop``.
    treatment_col : str
        Treatment during the interval, 0/1 (e.g. on MAT this week).
    treatment_covariates : sequence of str
        Denominator model: everything that drives treatment and may confound, including the
        time-varying confounder (e.g. ``["mat_last_week", "positive_screen", "age"]``).
    stabilizing_covariates : sequence of str, default ()
        Numerator model: previous treatment and baseline covariates only (never a
        time-varying confounder); also put the baseline ones in ``outcome_covariates``.
    outcome_covariates : sequence of str, default ()
        Baseline covariates of the weighted Cox model, beside the treatment.
    model_rows : str, optional
        A boolean column choosing the rows the treatment models are fitted on and that
        contribute a weight factor (e.g. "not treated in the previous interval" when
        treatment, once started, is kept); default every row.
    truncate : float, optional
        Cap the weights at their ``truncate`` and ``1 - truncate`` quantiles (e.g. 0.01).
    conf_level : float, default 0.95

    Returns
    -------
    Result
        ``tidy``: the weighted Cox model (columns as ``fit_cox``); ``glance``:
        ``MSM_GLANCE_COLUMNS``; ``extra["weights"]``: per input row ``row`` (index label),
        ``weight``, ``p_denominator``, ``p_numerator`` (NaN outside ``model_rows``);
        ``extra["treatment_models"]``: ``model, term, estimate, std_error``.

    Raises
    ------
    EstimatorInputError
        Missing columns or values, treatment not 0/1, rows of a person not in time order or
        overlapping.
    ModelSpecificationError, ConvergenceError
        Bad truncate; treatment models that cannot be fitted (separation: positivity).

    References
    ----------
    .. [1] Robins J.M., Hernan M.A., Brumback B. (2000). Marginal structural models and causal
       inference in epidemiology. Epidemiology 11:550-560.
    .. [2] Cole S.R., Hernan M.A. (2008). Constructing inverse probability weights for marginal
       structural models. Am J Epidemiol 168:656-664.
    .. [3] Havercroft W.G., Didelez V. (2012). Simulating from marginal structural models with
       time-dependent confounding. Stat Med 31:4190-4206.
    """
    func = "msm_cox"
    require_frame(frame, func, {"id_col": id_col, "start_col": start_col, "stop_col": stop_col,
                                "event_col": event_col, "treatment_col": treatment_col,
                                "treatment_covariates": treatment_covariates,
                                "stabilizing_covariates": stabilizing_covariates,
                                "outcome_covariates": outcome_covariates, "model_rows": model_rows},
                  multi=("treatment_covariates", "stabilizing_covariates", "outcome_covariates"))
    if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, (int, float))
                                 or not 0 < truncate < 0.5):
        raise ModelSpecificationError(f"{func}: truncate must be a quantile in (0, 0.5), e.g. 0.01; got {truncate!r}.")
    leaked = sorted(set(stabilizing_covariates) - set(treatment_covariates))
    if leaked:
        raise ModelSpecificationError(
            f"{func}: stabilizing_covariates {leaked} are not in treatment_covariates; the numerator model must be "
            "nested in the denominator model (add them to treatment_covariates).")
    a = binary_column(frame, treatment_col, func=func, role="treatment").astype(float)
    start = frame[start_col].to_numpy(dtype=float)
    stop = frame[stop_col].to_numpy(dtype=float)
    ids = frame[id_col].to_numpy()
    # rows of a person in time order, not overlapping
    order = np.lexsort((start, pd.factorize(ids)[0]))
    if not np.array_equal(order, np.arange(len(frame))):
        raise EstimatorInputError(
            f"{func}: the rows of table 'frame' are not sorted by {id_col!r} then {start_col!r} (first rows out of "
            f"order: {list(frame.index[order[order != np.arange(len(frame))]][:5])}). Sort them first: "
            f"frame.sort_values([{id_col!r}, {start_col!r}]).", func=func, column=start_col, check="order")
    same = ids[1:] == ids[:-1]
    overlap = np.zeros(len(frame), dtype=bool)
    overlap[1:] = same & (start[1:] < stop[:-1])
    if overlap.any():
        raise EstimatorInputError(
            f"{func}: table 'frame' has {int(overlap.sum())} interval(s) overlapping the previous one of the same "
            f"person (rows: {row_labels(frame, overlap)}). Each person's (start, stop] intervals must not overlap.",
            func=func, column=start_col, check="overlap", n_rows=int(overlap.sum()))
    rows = (frame[model_rows].to_numpy(dtype=bool) if model_rows is not None else np.ones(len(frame), dtype=bool))

    p_den, den_tab = _model(frame, rows, a, treatment_covariates, "denominator", func)
    p_num, num_tab = _model(frame, rows, a, stabilizing_covariates, "numerator", func)
    ar = a[rows]
    factor = np.ones(len(frame))
    factor[rows] = np.where(ar == 1, p_num / p_den, (1.0 - p_num) / (1.0 - p_den))
    codes = pd.factorize(ids)[0]
    logf = np.log(factor)
    csum = np.cumsum(logf)
    first = np.r_[True, codes[1:] != codes[:-1]]
    base = np.maximum.accumulate(np.where(first, np.arange(len(frame)), 0))
    before = np.where(base > 0, csum[np.maximum(base - 1, 0)], 0.0)
    weight = np.exp(csum - before)
    n_trunc = 0
    if truncate is not None:
        lo, hi = np.quantile(weight, [truncate, 1 - truncate])
        n_trunc = int(((weight < lo) | (weight > hi)).sum())
        weight = np.clip(weight, lo, hi)

    work = frame.assign(__msm_w__=weight)
    fit = fit_cox(work, start_col=start_col, stop_col=stop_col, event_col=event_col,
                  covariates=[treatment_col, *outcome_covariates], weights_col="__msm_w__", cluster_col=id_col,
                  robust=True, conf_level=conf_level)
    pd_full = np.full(len(frame), np.nan)
    pn_full = np.full(len(frame), np.nan)
    pd_full[rows], pn_full[rows] = p_den, p_num
    weights = pd.DataFrame({"row": frame.index.to_numpy(), "weight": weight, "p_denominator": pd_full,
                            "p_numerator": pn_full})[list(MSM_WEIGHT_COLUMNS)]
    glance = pd.DataFrame([{
        "n_persons": int(codes.max() + 1) if len(codes) else 0, "n_rows": int(len(frame)),
        "n_events": int(fit.glance["n_events"].iloc[0]), "n_truncated": n_trunc,
        "mean_weight": float(weight.mean()), "max_weight": float(weight.max()),
    }])[list(MSM_GLANCE_COLUMNS)]
    return Result(
        method="Marginal structural Cox model (stabilised time-varying IPTW)",
        tidy=fit.tidy,
        glance=glance,
        model=fit.model,
        extra={"weights": weights, "treatment_models": pd.concat([den_tab, num_tab], ignore_index=True)},
        conventions={
            **dict(fit.conventions),
            "weights": "sw_ik = prod_{j<=k} p_num(A_j) / p_den(A_j), pooled logistic treatment models"
                       + (f" on rows where {model_rows!r}" if model_rows else " on every row")
                       + (f"; truncated at the {truncate:g}/{1 - truncate:g} quantiles" if truncate else ""),
            "variance": "robust (cluster = person), weights treated as known: conservative",
        },
    )
