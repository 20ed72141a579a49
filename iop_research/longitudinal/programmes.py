"""Programmes compared fairly: risk-standardised rates by indirect standardisation, with funnel limits.

A programme whose patients are sicker completes fewer of them; its crude completion rate
says little about the programme. Indirect standardisation (the approach of standardised
mortality ratios and of CMS's hospital measures, with a fixed-effect patient model):

1. a logistic model of the outcome on patient case-mix, fitted on every patient *without*
   the programme, gives each patient's expected probability :math:`\\hat p_i`;
2. per programme, observed :math:`O = \\sum y_i`, expected :math:`E = \\sum \\hat p_i`, their
   ratio :math:`O/E`, and the risk-standardised rate :math:`O/E \\times \\bar y` (the overall rate);
3. the interval treats :math:`E` as fixed and :math:`O` as Poisson: exact limits
   :math:`[\\chi^2_{2O, \\alpha/2}/2,\\ \\chi^2_{2(O+1), 1-\\alpha/2}/2] / E` (Garwood), times
   :math:`\\bar y` for the rate;
4. funnel control limits for :math:`O/E` at each programme's :math:`E` under the hypothesis of
   no programme effect, 95% and 99.8%, from the Poisson distribution with Spiegelhalter's
   interpolation (2005, appendix A.1.1) so the limits are smooth in :math:`E`.

A programme outside the 99.8% limits is flagged "above" or "below". Small programmes have
wide limits: the funnel shows that a striking rate at 20 patients is often chance.
``tests/r/programme_rates.R`` writes the same steps out (``glm``, ``qgamma``, ``qpois``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iop_research._design import build_design
from iop_research._logistic import fit_logistic
from iop_research._validate import binary_column, check_conf_level, label_codes, require_frame
from iop_research.results import Result

__all__ = ["programme_rates", "funnel_limits", "PROGRAMME_RATE_COLUMNS"]

#: Columns of ``programme_rates(...).tidy``.
PROGRAMME_RATE_COLUMNS = (
    "programme", "n", "observed", "expected", "oe_ratio", "oe_conf_low", "oe_conf_high", "rate_crude",
    "rate_standardized", "conf_low", "conf_high", "limit95_low", "limit95_high", "limit998_low",
    "limit998_high", "flag",
)


def funnel_limits(expected, p: float) -> np.ndarray:
    """Funnel limit of O/E at ``expected`` (array) for the Poisson quantile ``p`` (e.g. 0.001, 0.999).

    Spiegelhalter (2005), appendix A.1.1: with :math:`r_p` the ``p`` quantile of
    Poisson(E) and :math:`\\alpha = (F(r_p) - p) / (F(r_p) - F(r_p - 1))`, the limit is
    :math:`\\max(r_p - \\alpha, 0) / E`.

    >>> [round(float(x), 4) for x in funnel_limits([10.0, 100.0], 0.975)]
    [1.616, 1.1958]
    """
    e = np.asarray(expected, dtype=float)
    r = stats.poisson.ppf(p, e)
    f_r = stats.poisson.cdf(r, e)
    f_r1 = stats.poisson.cdf(r - 1, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(f_r > f_r1, (f_r - p) / (f_r - f_r1), 0.0)
        return np.where(e > 0, np.maximum(r - alpha, 0.0) / e, np.nan)


def programme_rates(
    df: pd.DataFrame,
    *,
    programme_col: str,
    outcome_col: str,
    covariates: Sequence[str] = (),
    formula: str | None = None,
    conf_level: float = 0.95,
) -> Result:
    """Risk-standardised rates per programme (indirect standardisation) with funnel limits.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per patient or episode (e.g. episodes with ``completed``). Not modified.
    programme_col : str
        Programme (site, state) label.
    outcome_col : str
        0/1 outcome (e.g. completed treatment, retained 90 days).
    covariates : sequence of str, default ()
        Case-mix covariates of the patient model (coded as in
        :func:`~iop_research.survival.fit_cox`); never the programme itself. With none,
        every patient's expected probability is the overall rate (crude comparison).
    formula : str, optional
        Right-hand side in formulaic syntax instead of ``covariates``.
    conf_level : float, default 0.95
        Level of the per-programme intervals.

    Returns
    -------
    Result
        ``tidy`` (one row per programme, ``PROGRAMME_RATE_COLUMNS``; ``flag`` is
        ``"above"``/``"below"`` outside the 99.8% funnel limits, else ``""``); ``glance``:
        ``n, n_programmes, n_events, overall_rate``; ``extra["case_mix"]``: the patient
        model's coefficients ``term, label, estimate, std_error``.

    Raises
    ------
    EstimatorInputError, ModelSpecificationError, ConvergenceError
        Missing columns or values, outcome not 0/1, the programme among the covariates,
        a case-mix model that cannot be fitted.

    References
    ----------
    .. [1] Spiegelhalter D.J. (2005). Funnel plots for comparing institutional performance.
       Stat Med 24:1185-1202.
    .. [2] Garwood F. (1936). Fiducial limits for the Poisson distribution. Biometrika 28:437-442.
    .. [3] Krumholz H.M. et al. (2006). An administrative claims model suitable for profiling
       hospital performance based on 30-day mortality rates. Circulation 113:1693-1701
       (risk-standardised rates).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> d = pd.DataFrame({"site": rng.choice(list("ABCD"), 800), "age": rng.normal(35, 9, 800)})
    >>> d["completed"] = rng.binomial(1, 1 / (1 + np.exp((d["age"] - 35) / 9)))
    >>> res = programme_rates(d, programme_col="site", outcome_col="completed", covariates=["age"])
    >>> bool(np.isclose((res.tidy["observed"].sum()), res.tidy["expected"].sum()))
    True
    """
    func = "programme_rates"
    require_frame(df, func, {"programme_col": programme_col, "outcome_col": outcome_col, "covariates": covariates})
    check_conf_level(conf_level, func)
    if programme_col in covariates or (formula is not None and programme_col in formula):
        from iop_research.exceptions import ModelSpecificationError  # noqa: PLC0415

        raise ModelSpecificationError(
            f"{func}: the programme column {programme_col!r} must not be in the case-mix model; indirect "
            "standardisation compares each programme with what the whole cohort's model expects.")
    y = binary_column(df, outcome_col, func=func, role="outcome").astype(float)
    codes, levels = label_codes(df, programme_col, func=func, role="programme")
    if covariates or formula:
        design = build_design(df, covariates=list(covariates) if formula is None else None, formula=formula,
                              func=func)
        x = np.column_stack([np.ones(len(df)), design.matrix])
        terms, labels = ["(Intercept)", *design.terms], ["(Intercept)", *design.labels]
    else:
        x = np.ones((len(df), 1))
        terms, labels = ["(Intercept)"], ["(Intercept)"]
    fit = fit_logistic(y, x, func=func, what="case-mix model", predicts="the outcome", tol=1e-12)
    p = np.asarray(fit.fittedvalues, dtype=float)
    k = len(levels)
    n = np.bincount(codes, minlength=k)
    obs = np.bincount(codes, weights=y, minlength=k)
    exp_ = np.bincount(codes, weights=p, minlength=k)
    overall = float(y.mean())
    a = 1.0 - conf_level
    with np.errstate(divide="ignore", invalid="ignore"):
        oe = obs / exp_
        lo = np.where(obs > 0, stats.gamma.ppf(a / 2, obs) / exp_, 0.0)
        hi = stats.gamma.ppf(1 - a / 2, obs + 1) / exp_
    l95 = funnel_limits(exp_, 0.025), funnel_limits(exp_, 0.975)
    l998 = funnel_limits(exp_, 0.001), funnel_limits(exp_, 0.999)
    flag = np.where(oe > l998[1], "above", np.where(oe < l998[0], "below", ""))
    tidy = pd.DataFrame({
        "programme": list(levels), "n": n.astype(int), "observed": obs.astype(int), "expected": exp_, "oe_ratio": oe,
        "oe_conf_low": lo, "oe_conf_high": hi, "rate_crude": obs / n, "rate_standardized": oe * overall,
        "conf_low": lo * overall, "conf_high": hi * overall, "limit95_low": l95[0], "limit95_high": l95[1],
        "limit998_low": l998[0], "limit998_high": l998[1], "flag": flag,
    })[list(PROGRAMME_RATE_COLUMNS)]
    glance = pd.DataFrame([{"n": int(len(df)), "n_programmes": int(k), "n_events": int(y.sum()),
                            "overall_rate": overall}])
    case_mix = pd.DataFrame({"term": terms, "label": labels, "estimate": np.asarray(fit.params),
                             "std_error": np.asarray(fit.bse)})
    return Result(
        method="Risk-standardised rates (indirect standardisation, logistic case-mix model)",
        tidy=tidy,
        glance=glance,
        model=fit,
        extra={"case_mix": case_mix},
        conventions={
            "expected": "sum of each patient's probability from glm(outcome ~ case mix, binomial) without programme",
            "rate": "O/E x overall rate; interval: exact Poisson (Garwood) on O with E fixed",
            "funnel": "O/E limits at E under no programme effect, Poisson with Spiegelhalter's interpolation; "
                      "95% and 99.8%; flag outside 99.8%",
        },
    )
