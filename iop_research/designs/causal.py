"""Causal designs for comparing IOP modalities and MAT: IPTW, landmark analysis, E-values.

Exposure that starts after time zero must not be credited with the time before it
started (immortal-time bias), and baseline comparisons are confounded. This module
offers three of the standard remedies named in the design:

* :func:`iptw` -- inverse probability of treatment weighting with a logistic
  propensity model, trimming/truncation, positivity and balance diagnostics (SMDs);
  the weights feed ``fit_km(weights_col=)``, ``logrank_test``,
  :func:`~iop_research.survival.competing.cumulative_incidence` and
  ``fit_cox(weights_col=..., robust=True)``;
* :func:`landmark_analysis` -- exposure fixed at day L, follow-up restarted at L among
  those still at risk, Cox model;
* :func:`evalue` -- VanderWeele & Ding's E-value for unmeasured confounding.

References
----------
.. [1] Austin P.C., Stuart E.A. (2015). Moving towards best practice when using inverse
   probability of treatment weighting (IPTW) using the propensity score to estimate causal
   treatment effects in observational studies. Stat Med 34:3661-3679.
.. [2] Dafni U. (2011). Landmark analysis at the 25-year landmark point. Circ Cardiovasc Qual
   Outcomes 4:363-371.
.. [3] VanderWeele T.J., Ding P. (2017). Sensitivity analysis in observational research:
   introducing the E-value. Ann Intern Med 167:268-274.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iop_research._design import build_design, check_identifiable
from iop_research._validate import (
    binary_column,
    check_conf_level,
    cluster_codes,
    duration_column,
    event_indicator,
    number_argument,
    numeric_column,
    require_frame,
    row_labels,
    weights_column,
)
from iop_research._logistic import fit_logistic
from iop_research.designs.balance import standardized_difference
from iop_research.designs.ipcw import ipcw_landmark
from iop_research.results import TIDY_TERM_COLUMNS, Result
from iop_research.survival.cox import fit_cox
from iop_research.exceptions import ConvergenceError, EstimatorInputError, ModelSpecificationError

__all__ = ["iptw", "IptwResult", "landmark_analysis", "evalue", "BALANCE_COLUMNS", "POSITIVITY_COLUMNS"]

#: Columns of ``IptwResult.extra['balance']``.
BALANCE_COLUMNS = (
    "covariate",
    "level",
    "smd_unweighted",
    "smd_weighted",
    "mean_treated",
    "mean_control",
    "mean_treated_weighted",
    "mean_control_weighted",
)
#: Columns of ``IptwResult.extra['positivity']``.
POSITIVITY_COLUMNS = (
    "group",
    "n",
    "ps_min",
    "ps_p1",
    "ps_p5",
    "ps_median",
    "ps_p95",
    "ps_p99",
    "ps_max",
    "sum_weights",
    "ess",
)
_ESTIMANDS = ("ATE", "ATT", "overlap")


@dataclass(frozen=True)
class IptwResult(Result):
    """Result of :func:`iptw`: a :class:`~iop_research.results.Result` plus the weights.

    Attributes
    ----------
    weights : pandas.Series
        One weight per row of the input, aligned to its index; NaN for trimmed rows.
    propensity : pandas.Series
        Fitted propensity score P(treated | covariates) per row (trimmed rows included).
    """

    weights: pd.Series = None
    propensity: pd.Series = None

    def weighted(self, df: pd.DataFrame, weights_col: str = "iptw") -> pd.DataFrame:
        """Return the rows kept after trimming with the weights in a new column.

        Parameters
        ----------
        df : pandas.DataFrame
            The frame passed to :func:`iptw` (same index). Not modified.
        weights_col : str, default "iptw"
            Name of the new column.

        Returns
        -------
        pandas.DataFrame
            ``df`` without trimmed rows (counted in ``extra['attrition']``), plus ``weights_col``.
        """
        if not df.index.equals(self.weights.index):
            raise ModelSpecificationError(
                "IptwResult.weighted: the frame's index differs from the one iptw() was fitted on. "
                "Pass the same frame (same row order and index)."
            )
        keep = self.weights.notna().to_numpy()
        return df.loc[keep].assign(**{weights_col: self.weights[keep].to_numpy()})


# --------------------------------------------------------------------------- helpers


def _balance_matrix(df: pd.DataFrame, covariates: Sequence[str]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Columns to balance: numeric covariates as is; others one 0/1 dummy per level."""
    cols = {}
    labels = []
    for c in covariates:
        s = df[c]
        if pd.api.types.is_numeric_dtype(s) and s.dtype != bool:
            cols[(c, "")] = s.to_numpy(dtype=float)
            labels.append((c, ""))
        else:
            levels = s.cat.categories.tolist() if isinstance(s.dtype, pd.CategoricalDtype) else sorted(
                pd.unique(s).tolist(), key=str
            )
            for lv in levels:
                cols[(c, str(lv))] = (s == lv).to_numpy(dtype=float)
                labels.append((c, str(lv)))
    return pd.DataFrame({f"{k[0]}[{k[1]}]": v for k, v in cols.items()}), labels


def _wmean(x: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * x) / np.sum(w))


def _smd_table(x: pd.DataFrame, labels, a: np.ndarray, w: np.ndarray) -> pd.DataFrame:
    rows = []
    t, c = a == 1, a == 0
    for col, (name, level) in zip(x.columns, labels):
        v = x[col].to_numpy(dtype=float)
        binary = bool(np.isin(v, (0.0, 1.0)).all())
        m1, m0 = v[t].mean(), v[c].mean()
        mw1, mw0 = _wmean(v[t], w[t]), _wmean(v[c], w[c])
        smd_u = standardized_difference(v[t], v[c], binary=binary)
        smd_w = standardized_difference(v[t], v[c], binary=binary, treated_weights=w[t], control_weights=w[c])
        rows.append((name, level, smd_u, smd_w, m1, m0, mw1, mw0))
    return pd.DataFrame(rows, columns=list(BALANCE_COLUMNS))


def _ess(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / np.sum(w**2)) if len(w) else 0.0


# --------------------------------------------------------------------------- IPTW


def iptw(
    df: pd.DataFrame,
    *,
    treatment_col: str,
    covariates: Sequence[str] | None = None,
    formula: str | None = None,
    estimand: str = "ATE",
    stabilized: bool = True,
    trim: float | None = None,
    truncate: float | tuple[float, float] | None = None,
    conf_level: float = 0.95,
) -> IptwResult:
    """Inverse probability of treatment weights from a logistic propensity model.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per episode/person. Not modified.
    treatment_col : str
        Treatment indicator, 0/1 or boolean (1 = treated, e.g. MAT at baseline).
    covariates : sequence of str, optional
        Confounders. Coded by the package's one design builder (:mod:`iop_research._design`),
        as in :func:`~iop_research.survival.cox.fit_cox`: numeric columns enter linearly;
        object, string, category and bool columns are dummy-coded against their first level
        (``substance[T.cocaine]``, as R's ``glm`` with a factor).
    formula : str, optional
        Right-hand side in formulaic syntax (``"age + C(substance) + cesd"``; anything before
        a ``"~"`` is ignored, so ``"treat ~ age + I(age**2)"`` works too), instead of
        ``covariates``. Balance is then reported on the design-matrix columns.
    estimand : {"ATE", "ATT", "overlap"}, default "ATE"
        ATE: 1/ps (treated), 1/(1-ps) (control); ATT: 1 and ps/(1-ps); overlap: 1-ps and ps.
    stabilized : bool, default True
        ATE only: multiply by the marginal prevalence P(T=1) (treated) or P(T=0) (control),
        computed on the rows kept after trimming. Ignored for ATT and overlap weights (they are
        already bounded by construction; stated in ``conventions``).
    trim : float, optional
        Drop rows with ps outside [trim, 1 - trim] (e.g. 0.05, Crump et al. use 0.1); the
        propensity model is not refitted. Trimmed rows get NaN weights and are counted in
        ``extra['attrition']``.
    truncate : float or (float, float), optional
        Cap weights at these quantiles of the kept rows' weights (pooled over groups): ``0.01``
        means the 1st and 99th percentiles. Capped rows are counted in ``glance['n_truncated']``.
    conf_level : float, default 0.95
        Level of the propensity-model coefficient intervals.

    Returns
    -------
    IptwResult
        ``weights`` (Series aligned to ``df.index``, NaN for trimmed rows), ``propensity``;
        ``tidy``: propensity-model coefficients ``term, label, estimate, std_error, conf_low,
        conf_high, p_value`` (``(Intercept)`` first, then the design columns); ``glance``: ``estimand, stabilized, n, n_treated, n_control,
        n_trimmed, n_truncated, ess_treated, ess_control, max_abs_smd_unweighted,
        max_abs_smd_weighted``; ``extra['balance']``: ``covariate, level, smd_unweighted,
        smd_weighted, mean_treated, mean_control, mean_treated_weighted,
        mean_control_weighted``; ``extra['positivity']``: ``group, n, ps_min, ps_p1, ps_p5,
        ps_median, ps_p95, ps_p99, ps_max, sum_weights, ess`` (ps over all rows, weights over
        kept rows); ``extra['attrition']``: ``step, reason, n_excluded, n_remaining``.

    Raises
    ------
    EstimatorInputError
        Missing columns or values, treatment not 0/1.
    ModelSpecificationError
        Both or neither of covariates/formula, unknown estimand, bad trim/truncate, a
        categorical with one level, collinear covariates, perfect separation.
    ConvergenceError
        The logistic regression did not converge.

    Notes
    -----
    The propensity model is ``glm(treat ~ ..., family = binomial)`` (statsmodels GLM,
    IRLS), so the weights equal R's. Standardised mean differences use the pooled SD of the
    *unweighted* kept sample, :math:`\\sqrt{(s_1^2+s_0^2)/2}` with :math:`s^2=p(1-p)` for 0/1
    variables and the n-1 sample variance otherwise (cobalt's default; tableone's
    ``svyCreateTableOne`` uses weighted SDs in the weighted SMD). Effective sample size is
    :math:`(\\sum w)^2/\\sum w^2` per group (Kish). Weighted Cox models need
    ``robust=True`` (R's ``coxph(weights = w, robust = TRUE)``); that sandwich SE ignores
    the estimation of the propensity score and is conservative for the ATE.
    :func:`~iop_research.designs.iptw_cox` fits the weighted Cox model with the
    M-estimation variance that accounts for it.

    References
    ----------
    .. [1] Austin P.C., Stuart E.A. (2015). Stat Med 34:3661-3679.
    .. [2] Li F., Morgan K.L., Zaslavsky A.M. (2018). Balancing covariates via propensity score
       weighting. JASA 113:390-400 (overlap weights).
    .. [3] Crump R.K., Hotz V.J., Imbens G.W., Mitnik O.A. (2009). Dealing with limited overlap
       in estimation of average treatment effects. Biometrika 96:187-199 (trimming).
    .. [4] Greifer N. cobalt: Covariate Balance Tables and Plots, R package (SMD conventions).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(7)
    >>> age = rng.normal(35, 9, 200)
    >>> d = pd.DataFrame({"age": age, "mat": rng.binomial(1, 1 / (1 + np.exp(-(age - 35) / 9)))})
    >>> res = iptw(d, treatment_col="mat", covariates=["age"])
    >>> res.balance[["covariate", "smd_unweighted", "smd_weighted"]].round(2).to_string(index=False)
    'covariate  smd_unweighted  smd_weighted\\n      age            0.86          0.11'
    >>> bool(res.weights.notna().all()), bool(res.glance["ess_treated"].iloc[0] < 100)
    (True, True)
    """

    where = "iptw"
    if (covariates is None) == (formula is None):
        raise ModelSpecificationError(
            f"{where}: give exactly one of covariates= (list of columns) or formula= (e.g. 'age + C(substance)')."
        )
    if estimand not in _ESTIMANDS:
        raise ModelSpecificationError(f"{where}: estimand must be one of {_ESTIMANDS}, got {estimand!r}.")
    if trim is not None and not 0 < number_argument(trim, where, "trim") < 0.5:
        raise ModelSpecificationError(f"{where}: trim must be in (0, 0.5), got {trim!r} (e.g. 0.05).")
    check_conf_level(conf_level, where)
    require_frame(df, where, {"treatment_col": treatment_col})
    a = binary_column(df, treatment_col, func=where, role="treatment")
    design = build_design(df, covariates=covariates, formula=formula, func=where)
    check_identifiable(design.matrix, design.terms, func=where)
    terms = ["(Intercept)", *design.terms]
    fml = f"{treatment_col} ~ {design.formula}"
    fit = fit_logistic(a, np.column_stack([np.ones(len(df)), design.matrix]), func=where,
                       what=f"propensity model {fml!r}", predicts="treatment")
    ps = np.asarray(fit.fittedvalues, dtype=float)
    treated = a == 1

    keep = np.ones(len(df), dtype=bool)
    attrition = [{"step": 0, "reason": "input rows", "n_excluded": 0, "n_remaining": len(df)}]
    if trim is not None:
        keep = (ps >= trim) & (ps <= 1 - trim)
        attrition.append(
            {
                "step": 1,
                "reason": f"propensity score outside [{trim}, {1 - trim}] (trimmed)",
                "n_excluded": int((~keep).sum()),
                "n_remaining": int(keep.sum()),
            }
        )
    if not (treated & keep).any() or not (~treated & keep).any():
        raise ModelSpecificationError(
            f"{where}: after trimming at {trim} no treated or no control rows remain. Lower trim."
        )

    if estimand == "ATE":
        w = np.where(treated, 1.0 / ps, 1.0 / (1.0 - ps))
        if stabilized:
            p1 = a[keep].mean()
            w = w * np.where(treated, p1, 1.0 - p1)
    elif estimand == "ATT":
        w = np.where(treated, 1.0, ps / (1.0 - ps))
    else:
        w = np.where(treated, 1.0 - ps, ps)
    n_trunc = 0
    if truncate is not None:
        lo_q, hi_q = (truncate, 1 - truncate) if np.isscalar(truncate) else truncate
        if not 0 <= lo_q < hi_q <= 1:
            raise ModelSpecificationError(
                f"{where}: truncate must be a quantile p in (0, 0.5) or a pair (low, high) with 0 <= low < high <= 1; "
                f"got {truncate!r}."
            )
        lo, hi = np.quantile(w[keep], [lo_q, hi_q])
        capped = keep & ((w < lo) | (w > hi))
        n_trunc = int(capped.sum())
        w = np.where(keep, np.clip(w, lo, hi), w)
    weights = pd.Series(np.where(keep, w, np.nan), index=df.index, name="iptw")
    propensity = pd.Series(ps, index=df.index, name="propensity")

    # balance on the kept rows
    if covariates is not None:
        xbal, labels = _balance_matrix(df.loc[keep], covariates)
    else:
        xbal = pd.DataFrame(design.matrix[keep], columns=list(design.terms))
        labels = [(c, "") for c in design.terms]
    balance = _smd_table(xbal, labels, a[keep], w[keep])

    pos_rows = []
    for label, m in (("treated", treated), ("control", ~treated)):
        q = np.quantile(ps[m], [0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0])
        wk = w[m & keep]
        pos_rows.append((label, int(m.sum()), *q.tolist(), float(wk.sum()), _ess(wk)))
    positivity = pd.DataFrame(pos_rows, columns=list(POSITIVITY_COLUMNS))

    z = stats.norm.ppf(0.5 + conf_level / 2.0)
    params = np.asarray(fit.params)
    bse = np.asarray(fit.bse)
    tidy = pd.DataFrame(
        {
            "term": terms,
            "label": ["(Intercept)", *design.labels],
            "estimate": params,
            "std_error": bse,
            "conf_low": params - z * bse,
            "conf_high": params + z * bse,
            "p_value": np.asarray(fit.pvalues),
        }
    )[list(TIDY_TERM_COLUMNS)]
    glance = pd.DataFrame(
        {
            "estimand": [estimand],
            "stabilized": [bool(stabilized and estimand == "ATE")],
            "n": [int(keep.sum())],
            "n_treated": [int((treated & keep).sum())],
            "n_control": [int((~treated & keep).sum())],
            "n_trimmed": [int((~keep).sum())],
            "n_truncated": [n_trunc],
            "ess_treated": [positivity["ess"].iloc[0]],
            "ess_control": [positivity["ess"].iloc[1]],
            "max_abs_smd_unweighted": [float(balance["smd_unweighted"].abs().max())],
            "max_abs_smd_weighted": [float(balance["smd_weighted"].abs().max())],
        }
    )
    return IptwResult(
        method=f"IPTW ({estimand})",
        tidy=tidy,
        glance=glance,
        model=fit,
        extra={"balance": balance, "positivity": positivity, "attrition": pd.DataFrame(attrition)},
        conventions={
            "propensity": "logistic regression, statsmodels GLM (IRLS) = R glm(family = binomial); design by "
            "iop_research._design (treatment coding, first level reference, as R's factor)",
            "weights": {
                "ATE": "1/ps treated, 1/(1-ps) control" + ("; stabilised by P(T=1), P(T=0)" if stabilized else ""),
                "ATT": "1 treated, ps/(1-ps) control (not stabilised)",
                "overlap": "1-ps treated, ps control (not stabilised)",
            }[estimand],
            "smd": "pooled SD of the unweighted kept sample sqrt((s1^2+s0^2)/2); p(1-p) for 0/1 (cobalt default)",
            "ess": "Kish (sum w)^2 / sum w^2 per group",
            "downstream": "weighted Cox: fit_cox(weights_col=..., robust=True) = coxph(weights = w, robust = TRUE)",
        },
        weights=weights,
        propensity=propensity,
    )


# --------------------------------------------------------------------------- landmark


def landmark_analysis(
    df: pd.DataFrame,
    *,
    landmark_days: float,
    duration_col: str,
    event_col: str,
    exposure_col: str,
    covariates: Sequence[str] = (),
    weights_col: str | None = None,
    cluster_col: str | None = None,
    clock_reset: bool = False,
    switch_col: str | None = None,
    censoring_covariates: Sequence[str] | None = None,
    censoring_time: str = "linear",
    stabilized: bool = True,
    ci: str = "robust",
    n_bootstrap: int = 200,
    seed: int | np.random.Generator | None = None,
) -> Result:
    """Landmark analysis: exposure fixed at day L, Cox model from L among those at risk at L.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per episode. Not modified. ``exposure_col`` must already hold the exposure
        status as known at day L (e.g. on MAT at day 30), 0/1.
    landmark_days : float
        The landmark L, in days from the origin (e.g. 30, 90).
    duration_col : str
        Days from the origin to event or censoring (``clock_reset=False``), or days from L
        (``clock_reset=True``).
    event_col : str
        1 = event, 0 = censored.
    exposure_col : str
        Exposure fixed at L (0/1); first term of the model.
    covariates : sequence of str, default ()
        Further adjustment covariates (coded as in :func:`~iop_research.survival.cox.fit_cox`).
    weights_col : str, optional
        Case weights (e.g. IPTW fitted among the landmark sample); implies robust SEs.
    cluster_col : str, optional
        Cluster id (e.g. patient with several episodes); implies robust SEs.
    clock_reset : bool, default False
        False: keep rows with duration > L and use duration - L. True: the frame is already a
        landmark frame (e.g. from ``frames.landmark_frame``): durations count from L, rows with
        duration <= 0 are an error.
    switch_col : str, optional
        Per-protocol analysis with inverse probability of censoring weights: the day (on the
        duration's clock, whole days) the exposure changed after L, NaN if it did not.
        Follow-up is censored at the switch and the people who have not switched are
        weighted by their inverse probability of not having switched (see
        :mod:`iop_research.designs.ipcw`). Not with ``clock_reset=True`` or ``weights_col``.
    censoring_covariates : sequence of str, optional
        Covariates of the switching model (default: ``covariates``); include what predicts
        both switching and the outcome.
    censoring_time : {"constant", "linear", "quadratic"}, default "linear"
        Day terms of the switching model.
    stabilized : bool, default True
        Stabilised censoring weights (numerator model with the day terms only, per arm). Under
        non-proportional marginal hazards they shift the Cox HR's target slightly (see
        :mod:`iop_research.designs.ipcw`); ``False`` gives more variable weights.
    ci : {"robust", "bootstrap"}, default "robust"
        Standard errors and 95% intervals. ``"robust"``: the Cox model's robust (sandwich)
        variance; with ``switch_col`` it treats the censoring weights as known (covers 0.945-0.965
        with bias under 10% of an SE in ``benchmarks/sim_ipcw.py`` at n = 400-1,000 when the
        weights stay below about 50-300). ``"bootstrap"`` (only with
        ``switch_col``): people (clusters of ``cluster_col``, else rows) are resampled with
        replacement and the whole procedure is repeated (landmark sample, switching models,
        weights, weighted Cox); it gives the same SE as the robust variance there, so it is not
        the default. Both under-cover when a few people carry very large weights (0.80 in the
        fifth of samples whose maximum weight was 16 to 1,141, at n = 400 with an unbounded
        switching covariate): check ``glance['max_weight']``.
        With ``"bootstrap"``, ``std_error`` is the SD of the bootstrap estimates and the interval is the Wald
        interval ``estimate +- 1.96 SE`` on the log-HR scale (p-value from ``estimate / SE``).
        The bootstrap-SE Wald interval is used rather than percentiles because the log HR is
        close to normal and its SD needs far fewer replicates than the 2.5% and 97.5%
        quantiles do; the replicates are in ``extra['bootstrap']``.
    n_bootstrap : int, default 200
        Bootstrap replicates (``ci="bootstrap"``).
    seed : int or numpy.random.Generator, optional
        Source of the bootstrap resamples; the same integer seed gives the same interval.

    Returns
    -------
    Result
        ``tidy``: Cox columns ``term, estimate, std_error, conf_low, conf_high, p_value,
        hazard_ratio, hr_conf_low, hr_conf_high`` (plus what ``fit_cox`` adds, e.g.
        ``naive_std_error``); ``glance``: ``landmark_days, n_at_risk, n_events, n_excluded,
        n_censored_at_switch, max_weight`` (the last two 0 and NaN without ``switch_col``);
        ``extra['excluded']``: ``reason, n`` (event by L, censored by L);
        ``extra['censoring']``: ``arm, model, term, estimate, std_error`` of the switching
        models (empty without ``switch_col``); with ``ci="bootstrap"``,
        ``extra['bootstrap']``: one row per replicate, one column per term (log HR), and
        ``model`` is the weighted Cox fit with its robust SEs.

    Raises
    ------
    ModelSpecificationError
        Bad columns, negative landmark, non-positive durations with ``clock_reset=True``, nobody
        at risk at L.

    Notes
    -----
    Equals ``coxph(Surv(time - L, event) ~ exposure + ..., data = subset(d, time > L))``
    (Efron ties), with ``weights``/``cluster`` and ``robust = TRUE`` when given. Episodes
    ending at or before L are excluded (counted); they cannot contribute since exposure
    status at L is undefined for them.

    References
    ----------
    .. [1] Anderson J.R., Cain K.C., Gelber R.D. (1983). Analysis of survival by tumor response.
       J Clin Oncol 1:710-719.
    .. [2] Dafni U. (2011). Landmark analysis at the 25-year landmark point. Circ Cardiovasc Qual
       Outcomes 4:363-371.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(2)
    >>> d = pd.DataFrame({"days": rng.integers(1, 365, 150), "relapse": rng.integers(0, 2, 150),
    ...                   "on_mat_day30": rng.integers(0, 2, 150)})
    >>> res = landmark_analysis(d, landmark_days=30, duration_col="days", event_col="relapse",
    ...                         exposure_col="on_mat_day30")
    >>> bool(res.extra["excluded"]["n"].sum() == res.glance["n_excluded"].iloc[0])
    True
    """
    where = "landmark_analysis"
    if ci not in ("robust", "bootstrap"):
        raise ModelSpecificationError(f"{where}: ci must be 'robust' or 'bootstrap', got {ci!r}.")
    if ci == "bootstrap":
        if switch_col is None:
            raise ModelSpecificationError(
                f"{where}: ci='bootstrap' is offered for the per-protocol IPCW analysis (switch_col); without "
                "switch_col use the robust variance (ci='robust').")
        if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 2:
            raise ModelSpecificationError(f"{where}: n_bootstrap must be an integer >= 2, got {n_bootstrap!r}.")
        if not isinstance(seed, (type(None), int, np.integer, np.random.Generator)) or isinstance(seed, bool):
            raise ModelSpecificationError(f"{where}: seed must be an int or a numpy Generator, got {seed!r}.")
    require_frame(df, where, {"duration_col": duration_col, "event_col": event_col, "exposure_col": exposure_col,
                              "covariates": covariates, "weights_col": weights_col, "cluster_col": cluster_col})
    landmark_days = number_argument(landmark_days, where, "landmark_days", nonneg=True)
    # with clock_reset the durations count from L: a row at or before 0 is not a landmark row (below)
    time = (numeric_column(df, duration_col, func=where, role="duration") if clock_reset
            else duration_column(df, duration_col, func=where))
    event = event_indicator(df, event_col, func=where)
    # exposure, covariates, weights and cluster are validated here on every row (rows ending by L are
    # excluded below and counted, never used to hide a bad value), so faults name landmark_analysis
    binary_column(df, exposure_col, func=where, role="exposure")
    build_design(df, covariates=[exposure_col, *covariates], func=where)
    if weights_col is not None:
        weights_column(df, weights_col, func=where)
    if cluster_col is not None:
        cluster_codes(df, cluster_col, func=where)
    if clock_reset:
        bad = time <= 0
        if bad.any():
            raise EstimatorInputError(
                f"{where}: column {duration_col!r} (duration) has {int(bad.sum())} value(s) <= 0 with "
                f"clock_reset=True (rows: {row_labels(df, bad)}); a landmark frame holds only rows at risk after L. "
                "Use clock_reset=False with times from the origin.",
                func=where, column=duration_col, check="negative", n_rows=int(bad.sum()),
            )
        at_risk = np.ones(len(df), dtype=bool)
        new_time = time
    else:
        at_risk = time > landmark_days
        new_time = time - landmark_days
    excluded = pd.DataFrame(
        {
            "reason": [f"event on or before day {landmark_days:g}", f"censored on or before day {landmark_days:g}"],
            "n": [int(((~at_risk) & (event == 1)).sum()), int(((~at_risk) & (event != 1)).sum())],
        }
    )
    if not at_risk.any():
        raise ModelSpecificationError(f"{where}: nobody is at risk after day {landmark_days:g}. Choose an earlier landmark.")
    censoring = pd.DataFrame(columns=["arm", "model", "term", "estimate", "std_error"])
    n_switch, max_w = 0, np.nan
    conventions = {"landmark": "at risk: duration > L; clock reset to duration - L; exposure as known at L"}
    if switch_col is not None:
        if clock_reset or weights_col is not None:
            raise ModelSpecificationError(
                f"{where}: switch_col (per-protocol IPCW) needs durations from the origin (clock_reset=False) and "
                "makes its own weights (no weights_col). Fit baseline IPTW inside the landmark sample separately.")
        require_frame(df, where, {"switch_col": switch_col, "censoring_covariates": censoring_covariates},
                      multi=("censoring_covariates",))
        pp = ipcw_landmark(df, landmark_days=landmark_days, time=time, event=event,
                           exposure=binary_column(df, exposure_col, func=where, role="exposure"),
                           switch_col=switch_col, duration_col=duration_col, event_col=event_col,
                           exposure_col=exposure_col, covariates=list(covariates),
                           censoring_covariates=censoring_covariates, censoring_time=censoring_time,
                           stabilized=stabilized, cluster_col=cluster_col, func=where)
        fit, censoring = pp["fit"], pp["censoring"]
        n_switch, max_w, n_ev = pp["n_switched"], pp["weight_summary"]["max"], pp["n_events"]
        conventions["per-protocol"] = (
            "censored on the switch day (an event that day counts); stabilised IPCW from pooled logistic switching "
            "models per arm" if stabilized else "censored on the switch day; IPCW from pooled logistic switching models")
        conventions["variance"] = (
            "robust (cluster = person), censoring weights treated as known; under-covers when a few people carry "
            "very large weights (see max_weight; benchmarks/sim_ipcw.py)")
        if ci == "bootstrap":
            tidy, boot = _ipcw_bootstrap(df, pp, time=time, event=event, landmark_days=landmark_days,
                                         switch_col=switch_col, duration_col=duration_col, event_col=event_col,
                                         exposure_col=exposure_col, covariates=list(covariates),
                                         censoring_covariates=censoring_covariates, censoring_time=censoring_time,
                                         stabilized=stabilized, cluster_col=cluster_col, n_bootstrap=int(n_bootstrap),
                                         seed=seed, func=where)
            conventions["variance"] = (
                f"bootstrap: {int(n_bootstrap)} resamples of {'clusters of ' + repr(cluster_col) if cluster_col else 'rows'}"
                " with replacement, landmark sample, switching models, weights and weighted Cox refitted in each; "
                "std_error = SD of the replicate log HRs; Wald interval estimate +- z SE on the log-HR scale; "
                "the model's robust SEs (weights treated as known) are in model.tidy")
    else:
        tcol = "__days_since_landmark__"
        work = df.loc[at_risk].assign(**{tcol: new_time[at_risk]})
        robust = weights_col is not None or cluster_col is not None
        fit = fit_cox(
            work,
            duration_col=tcol,
            event_col=event_col,
            covariates=[exposure_col, *covariates],
            weights_col=weights_col,
            cluster_col=cluster_col,
            robust=robust,
        )
        n_ev = int((event[at_risk] == 1).sum())
    glance = pd.DataFrame(
        {
            "landmark_days": [float(landmark_days)],
            "n_at_risk": [int(at_risk.sum())],
            "n_events": [n_ev],
            "n_excluded": [int((~at_risk).sum())],
            "n_censored_at_switch": [n_switch],
            "max_weight": [max_w],
        }
    )
    extra = {"excluded": excluded, "censoring": censoring}
    if ci == "bootstrap":
        extra["bootstrap"] = boot
    return Result(
        method=f"Landmark Cox (L = {landmark_days:g} days)" + (", per-protocol IPCW" if switch_col else ""),
        tidy=tidy if ci == "bootstrap" else fit.tidy,
        glance=glance,
        model=fit,
        extra=extra,
        conventions={**dict(fit.conventions), **conventions},
    )


def _ipcw_bootstrap(df, pp, *, time, event, landmark_days, switch_col, duration_col, event_col, exposure_col,
                    covariates, censoring_covariates, censoring_time, stabilized, cluster_col, n_bootstrap, seed,
                    func):
    """Bootstrap of the per-protocol IPCW landmark Cox: (tidy with bootstrap SEs, replicate estimates)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    exposure = binary_column(df, exposure_col, func=func, role="exposure")
    tidy0 = pp["fit"].tidy
    est = tidy0["estimate"].to_numpy(dtype=float)
    if cluster_col is not None:
        codes, uniq = pd.factorize(df[cluster_col], sort=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(uniq)))])
    reps = np.empty((n_bootstrap, len(est)))
    for b in range(n_bootstrap):
        if cluster_col is None:
            idx = rng.integers(0, len(df), len(df))
            new_cluster = None
        else:
            pick = rng.integers(0, len(uniq), len(uniq))
            sizes = bounds[pick + 1] - bounds[pick]
            idx = order[np.concatenate([np.arange(bounds[k], bounds[k + 1]) for k in pick])]
            new_cluster = np.repeat(np.arange(len(pick)), sizes)  # a cluster drawn twice is two clusters
        d_b = df.iloc[idx].reset_index(drop=True)
        if new_cluster is not None:
            d_b[cluster_col] = new_cluster
        try:
            pp_b = ipcw_landmark(d_b, landmark_days=landmark_days, time=time[idx], event=event[idx],
                                 exposure=exposure[idx], switch_col=switch_col, duration_col=duration_col,
                                 event_col=event_col, exposure_col=exposure_col, covariates=covariates,
                                 censoring_covariates=censoring_covariates, censoring_time=censoring_time,
                                 stabilized=stabilized, cluster_col=cluster_col, func=func,
                                 switch_start=pp["switch_params"])
        except (ModelSpecificationError, ConvergenceError) as exc:
            raise type(exc)(f"{func}: bootstrap replicate {b + 1} of {n_bootstrap} failed: {exc}") from exc
        reps[b] = pp_b["fit"].tidy["estimate"].to_numpy(dtype=float)
    se = reps.std(axis=0, ddof=1)
    z = stats.norm.ppf(0.975)
    tidy = tidy0.copy()
    tidy["std_error"] = se
    tidy["conf_low"], tidy["conf_high"] = est - z * se, est + z * se
    tidy["p_value"] = 2.0 * stats.norm.sf(np.abs(est / se))
    if "hazard_ratio" in tidy:
        tidy["hr_conf_low"], tidy["hr_conf_high"] = np.exp(tidy["conf_low"]), np.exp(tidy["conf_high"])
    boot = pd.DataFrame(reps, columns=tidy0["term"].tolist())
    boot.insert(0, "replicate", np.arange(1, n_bootstrap + 1))
    return tidy, boot


# --------------------------------------------------------------------------- E-value


def _rr_from_hr(hr: float, rare_outcome: bool) -> float:
    if rare_outcome:
        return hr
    return (1.0 - 0.5 ** np.sqrt(hr)) / (1.0 - 0.5 ** np.sqrt(1.0 / hr))


def _evalue_rr(rr: float) -> float:
    rr = rr if rr >= 1 else 1.0 / rr
    return float(rr + np.sqrt(rr * (rr - 1.0)))


def evalue(
    hazard_ratio: float,
    conf_low: float | None = None,
    conf_high: float | None = None,
    *,
    rare_outcome: bool = True,
) -> Result:
    """E-value for a hazard ratio (VanderWeele & Ding 2017).

    Parameters
    ----------
    hazard_ratio : float
        Point estimate (> 0).
    conf_low, conf_high : float, optional
        Confidence limits; the one nearer the null is used.
    rare_outcome : bool, default True
        True: outcome rare by end of follow-up (< 15%), RR = HR. False (e.g. relapse, 40-60%
        within a year): RR = (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR)).

    Returns
    -------
    Result
        ``tidy``: ``quantity`` ("estimate", "ci_limit"), ``hazard_ratio``, ``risk_ratio``,
        ``evalue``; ``glance``: ``evalue_estimate, evalue_ci``. The CI E-value is 1 when the
        interval includes 1 (NaN when no limits are given).

    Raises
    ------
    ModelSpecificationError
        Non-positive ratios, or limits not bracketing the estimate.

    Notes
    -----
    E = RR + sqrt(RR (RR - 1)) for RR >= 1 (use 1/RR for protective effects): the minimum
    strength of association, on the risk-ratio scale, that an unmeasured confounder would
    need with both treatment and outcome to explain away the estimate. Same formulas as the
    R package EValue (``evalues.HR``).

    References
    ----------
    .. [1] VanderWeele T.J., Ding P. (2017). Sensitivity analysis in observational research:
       introducing the E-value. Ann Intern Med 167:268-274.
    .. [2] VanderWeele T.J. (2020). Optimal approximate conversions of odds ratios and hazard
       ratios to risk ratios. Biometrics 76:746-752.

    Examples
    --------
    >>> res = evalue(3.9, 1.8, 8.7)
    >>> res.glance.round(2).to_dict("records")
    [{'evalue_estimate': 7.26, 'evalue_ci': 3.0}]
    """
    where = "evalue"
    hr = number_argument(hazard_ratio, where, "hazard_ratio", positive=True)
    conf_low = None if conf_low is None else number_argument(conf_low, where, "conf_low", positive=True)
    conf_high = None if conf_high is None else number_argument(conf_high, where, "conf_high", positive=True)
    if (conf_low is not None and conf_low > hr) or (conf_high is not None and conf_high < hr):
        raise ModelSpecificationError(
            f"{where}: the interval ({conf_low}, {conf_high}) does not contain the estimate {hr}. "
            "Pass hazard ratios (exponentiated), not log hazard ratios."
        )
    rr = _rr_from_hr(hr, rare_outcome)
    e_est = _evalue_rr(rr)
    limit = np.nan
    if hr > 1 and conf_low is not None:
        limit = float(conf_low)
    elif hr < 1 and conf_high is not None:
        limit = float(conf_high)
    elif hr == 1 and (conf_low is not None or conf_high is not None):
        limit = 1.0
    if np.isnan(limit):
        rr_lim, e_ci = np.nan, np.nan
    else:
        rr_lim = _rr_from_hr(limit, rare_outcome)
        crosses = (hr >= 1 and limit <= 1) or (hr <= 1 and limit >= 1)
        e_ci = 1.0 if crosses else _evalue_rr(rr_lim)
    tidy = pd.DataFrame(
        {
            "quantity": ["estimate", "ci_limit"],
            "hazard_ratio": [hr, limit],
            "risk_ratio": [rr, rr_lim],
            "evalue": [e_est, e_ci],
        }
    )
    glance = pd.DataFrame({"evalue_estimate": [e_est], "evalue_ci": [e_ci]})
    return Result(
        method="E-value",
        tidy=tidy,
        glance=glance,
        conventions={
            "conversion": "rare outcome: RR = HR" if rare_outcome else "common outcome: RR = (1-0.5^sqrt(HR))/(1-0.5^sqrt(1/HR))",
            "formula": "E = RR + sqrt(RR(RR-1)), RR<1 inverted; CI limit nearer the null, 1 if the CI includes 1 (EValue::evalues.HR)",
        },
    )
