"""Propensity-score matching: greedy nearest neighbour on the logit of the propensity score.

An alternative to weighting (:func:`~iop_research.designs.iptw`) for the effect of a
baseline treatment on the treated (ATT): each treated person is matched to the nearest
control(s) on the logit propensity score, within a caliper, and the outcome model is then
fitted on the matched sample (Cox with ``cluster_col`` = the matched set, as Austin 2014
recommends, or ``weights_col`` = the match weight when controls are reused).

Algorithm (as R MatchIt's ``method = "nearest"`` with ``distance = "glm"``, ``link =
"linear.logit"``, ``m.order = "largest"``, ``std.caliper = TRUE``):

* the propensity model is :func:`~iop_research.designs.iptw`'s logistic regression; the
  distance is :math:`|\\mathrm{logit}\\,e_i - \\mathrm{logit}\\,e_j|`;
* the caliper is ``caliper`` standard deviations of the logit score over all rows (0.2 is
  Austin's recommendation);
* treated people are taken in order of decreasing propensity score (``order="largest"``;
  ``"smallest"``, ``"data"`` or ``"random"`` with ``seed``); each takes the nearest
  control still available (any control with ``replace=True``) within the caliper, ties to
  the control that comes first in the data; with ``ratio = k`` this is done in k rounds,
  the first control of every treated person before anyone's second;
* treated people with no control within the caliper are unmatched and counted in
  ``extra["attrition"]``; the estimand is then the effect in the matched treated.

Match weights: treated 1; a control gets the sum over the treated people it is matched to
of 1 / (that person's number of controls), rescaled so the control weights sum to the
number of distinct matched controls (MatchIt's ATT weights).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from iop_research._validate import require_frame
from iop_research.designs.causal import _balance_matrix, iptw
from iop_research.designs.balance import standardized_difference
from iop_research.exceptions import ModelSpecificationError
from iop_research.results import Result

__all__ = ["ps_match", "MATCH_BALANCE_COLUMNS", "MATCH_GLANCE_COLUMNS"]

#: Columns of ``ps_match(...).tidy`` (the balance table).
MATCH_BALANCE_COLUMNS = ("covariate", "level", "smd_before", "smd_matched", "mean_treated", "mean_control",
                         "mean_treated_matched", "mean_control_matched")
#: Columns of ``ps_match(...).glance``.
MATCH_GLANCE_COLUMNS = ("n_treated", "n_control", "n_treated_matched", "n_treated_unmatched",
                        "n_control_matched", "ratio", "replace", "caliper_sd", "caliper_logit",
                        "max_abs_smd_before", "max_abs_smd_matched")
_ORDERS = ("largest", "smallest", "data", "random")


def _greedy(dist: np.ndarray, treated: np.ndarray, control: np.ndarray, order: np.ndarray, ratio: int,
            replace: bool, caliper: float) -> list[list[int]]:
    """Matched control positions for each treated position (in ``treated``'s order)."""
    matches: list[list[int]] = [[] for _ in treated]
    available = np.ones(len(control), dtype=bool)
    d_control = dist[control]
    for rnd in range(ratio):
        for k in order:
            if len(matches[k]) < rnd:  # found no control in an earlier round: none in later ones
                continue
            gap = np.abs(d_control - dist[treated[k]])
            ok = gap <= caliper
            if not replace:
                ok &= available
            if matches[k]:
                ok[matches[k]] = False  # never the same control twice for one person
            if not ok.any():
                continue
            j = int(np.flatnonzero(ok)[np.argmin(gap[ok])])
            matches[k].append(j)
            if not replace:
                available[j] = False
    return matches


def ps_match(
    df: pd.DataFrame,
    *,
    treatment_col: str,
    covariates: Sequence[str] | None = None,
    formula: str | None = None,
    caliper: float | None = 0.2,
    ratio: int = 1,
    replace: bool = False,
    order: str = "largest",
    seed: int | None = None,
) -> Result:
    """Match treated to control people on the propensity score (nearest neighbour, caliper).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per person (or episode). Not modified.
    treatment_col : str
        Treatment indicator, 0/1 or boolean.
    covariates, formula :
        The propensity model's confounders, as :func:`~iop_research.designs.iptw`; balance
        is reported on them.
    caliper : float or None, default 0.2
        Maximum distance in standard deviations of the logit propensity score; None = no
        caliper.
    ratio : int, default 1
        Controls per treated person (k:1 matching in k rounds).
    replace : bool, default False
        Whether a control may be matched to more than one treated person.
    order : {"largest", "smallest", "data", "random"}, default "largest"
        Order in which treated people choose.
    seed : int, optional
        For ``order="random"``.

    Returns
    -------
    Result
        ``tidy``: balance before and after matching (``MATCH_BALANCE_COLUMNS``; standardised
        differences use the pooled SD of the whole unmatched sample, as
        :func:`~iop_research.designs.iptw`); ``glance``: one row, ``MATCH_GLANCE_COLUMNS``;
        ``extra["matched"]``: the matched rows of ``df`` with ``match_set`` (the treated
        person's set id; a control reused with replacement appears once per set),
        ``match_weight`` and ``propensity``; ``extra["pairs"]``: ``match_set, treated_row,
        control_row, distance`` (index labels of ``df``); ``extra["attrition"]``: ``reason, n``.

    Raises
    ------
    EstimatorInputError, ModelSpecificationError, ConvergenceError
        As :func:`~iop_research.designs.iptw`; bad caliper, ratio or order; fewer controls
        than treated people without replacement is allowed (some stay unmatched, counted).

    References
    ----------
    .. [1] Austin P.C. (2011). Optimal caliper widths for propensity-score matching when
       estimating differences in means and differences in proportions in observational
       studies. Pharm Stat 10:150-161.
    .. [2] Austin P.C. (2014). The use of propensity score methods with survival or
       time-to-event outcomes: reporting measures of effect similar to those used in
       randomized experiments. Stat Med 33:1242-1258.
    .. [3] Ho D., Imai K., King G., Stuart E. (2011). MatchIt: nonparametric preprocessing for
       parametric causal inference. J Stat Softw 42(8).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(3)
    >>> age = rng.normal(35, 9, 300)
    >>> d = pd.DataFrame({"age": age, "mat": rng.binomial(1, 1 / (1 + np.exp(-(age - 40) / 6)))})
    >>> m = ps_match(d, treatment_col="mat", covariates=["age"])
    >>> b = m.tidy.iloc[0]
    >>> bool(abs(b["smd_matched"]) < abs(b["smd_before"]))
    True
    """
    where = "ps_match"
    require_frame(df, where, {"treatment_col": treatment_col})
    if caliper is not None and (isinstance(caliper, bool) or not isinstance(caliper, (int, float))
                                or not np.isfinite(caliper) or caliper <= 0):
        raise ModelSpecificationError(f"{where}: caliper must be a positive number of SDs (e.g. 0.2) or None, got {caliper!r}.")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)) or ratio < 1:
        raise ModelSpecificationError(f"{where}: ratio must be a whole number >= 1 (controls per treated), got {ratio!r}.")
    if order not in _ORDERS:
        raise ModelSpecificationError(f"{where}: order must be one of {', '.join(_ORDERS)}; got {order!r}.")
    ipw = iptw(df, treatment_col=treatment_col, covariates=covariates, formula=formula, estimand="ATT")
    ps = ipw.propensity.to_numpy(dtype=float)
    a = np.asarray(ipw.model.model.endog, dtype=float)
    dist = np.log(ps / (1.0 - ps))
    cal = np.inf if caliper is None else float(caliper) * float(np.std(dist, ddof=1))
    treated, control = np.flatnonzero(a == 1), np.flatnonzero(a == 0)
    if order == "largest":
        seq = np.argsort(-ps[treated], kind="stable")
    elif order == "smallest":
        seq = np.argsort(ps[treated], kind="stable")
    elif order == "data":
        seq = np.arange(len(treated))
    else:
        seq = np.random.default_rng(seed).permutation(len(treated))
    matches = _greedy(dist, treated, control, seq, int(ratio), bool(replace), cal)

    labels = df.index.to_numpy()
    pair_rows, set_rows, w_ctrl = [], [], np.zeros(len(df))
    set_id = 0
    matched_treated = np.zeros(len(df), dtype=bool)
    for k in seq:
        if not matches[k]:
            continue
        set_id += 1
        t = treated[k]
        matched_treated[t] = True
        set_rows.append((t, set_id, 1.0))
        for j in matches[k]:
            c = control[j]
            pair_rows.append((set_id, labels[t], labels[c], float(abs(dist[t] - dist[c]))))
            set_rows.append((c, set_id, 1.0 / len(matches[k])))
            w_ctrl[c] += 1.0 / len(matches[k])
    used = w_ctrl > 0
    n_used = int(used.sum())
    if n_used:
        w_ctrl *= n_used / w_ctrl.sum()
    weight = np.where(matched_treated, 1.0, w_ctrl)
    pos = np.array([r[0] for r in set_rows], dtype=int)
    matched = df.iloc[pos].assign(
        match_set=np.array([r[1] for r in set_rows], dtype=int),
        match_weight=weight[pos],
        propensity=ps[pos],
    )
    pairs = pd.DataFrame(pair_rows, columns=["match_set", "treated_row", "control_row", "distance"])

    # balance: all rows before; the matched rows with their weights after
    if covariates is not None:
        xbal, blabels = _balance_matrix(df, covariates)
    else:
        design_terms = list(ipw.tidy["term"])[1:]
        xbal = pd.DataFrame(np.asarray(ipw.model.model.exog)[:, 1:], columns=design_terms)
        blabels = [(c, "") for c in design_terms]
    rows = []
    t_all, c_all = a == 1, a == 0
    for col, (name, level) in zip(xbal.columns, blabels):
        v = xbal[col].to_numpy(dtype=float)
        binary = bool(np.isin(v, (0.0, 1.0)).all())
        before = standardized_difference(v[t_all], v[c_all], binary=binary)
        if n_used:
            after = standardized_difference(v[t_all], v[c_all], binary=binary, treated_weights=weight[t_all],
                                            control_weights=weight[c_all])
            mt = float(np.average(v[t_all & matched_treated]))
            mc = float(np.average(v[c_all & used], weights=weight[c_all & used]))
        else:
            after, mt, mc = np.nan, np.nan, np.nan
        rows.append((name, level, before, after, float(v[t_all].mean()), float(v[c_all].mean()), mt, mc))
    tidy = pd.DataFrame(rows, columns=list(MATCH_BALANCE_COLUMNS))
    n_unmatched = int(len(treated) - matched_treated.sum())
    glance = pd.DataFrame([{
        "n_treated": int(len(treated)), "n_control": int(len(control)),
        "n_treated_matched": int(matched_treated.sum()), "n_treated_unmatched": n_unmatched,
        "n_control_matched": n_used, "ratio": int(ratio), "replace": bool(replace),
        "caliper_sd": np.nan if caliper is None else float(caliper), "caliper_logit": float(cal),
        "max_abs_smd_before": float(tidy["smd_before"].abs().max()),
        "max_abs_smd_matched": float(tidy["smd_matched"].abs().max()),
    }])[list(MATCH_GLANCE_COLUMNS)]
    attrition = pd.DataFrame({
        "reason": ["treated with no available control within the caliper (unmatched)", "controls not matched to anyone"],
        "n": [n_unmatched, int(len(control) - n_used)],
    })
    return Result(
        method=f"Propensity-score matching (nearest neighbour {ratio}:1, "
               f"{'with' if replace else 'without'} replacement, caliper "
               f"{'none' if caliper is None else f'{caliper:g} SD of logit PS'})",
        tidy=tidy,
        glance=glance,
        model=ipw.model,
        extra={"matched": matched, "pairs": pairs, "attrition": attrition, "propensity": ipw.tidy},
        conventions={
            "distance": "|logit e_i - logit e_j|, e from glm(treat ~ covariates, binomial)",
            "caliper": "caliper x SD(logit e) over all rows (MatchIt std.caliper = TRUE)",
            "order": f"treated take controls in order '{order}' (MatchIt m.order); ties to the first control in "
                     "the data; ratio k in k rounds",
            "weights": "treated 1; controls sum of 1/k over their sets, rescaled to sum to the number of distinct "
                       "matched controls (MatchIt ATT weights)",
            "smd": "pooled SD of the whole unmatched sample (as iptw); matched means weighted by match_weight",
            "downstream": "fit_cox(extra['matched'], weights_col='match_weight', cluster_col='match_set' or the "
                          "person id with replacement, robust=True) for the ATT hazard ratio",
        },
    )

