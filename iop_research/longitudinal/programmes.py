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
from scipy import special, stats

from iop_research._design import build_design
from iop_research._logistic import fit_logistic
from iop_research._validate import binary_column, check_conf_level, label_codes, require_frame
from iop_research.exceptions import ConvergenceError, ModelSpecificationError
from iop_research.longitudinal.glmm import _fit_glmer, _obs_loglik
from iop_research.results import Result

__all__ = ["programme_rates", "funnel_limits", "PROGRAMME_RATE_COLUMNS", "HIERARCHICAL_RATE_COLUMNS"]

#: Columns of ``programme_rates(...).tidy``.
PROGRAMME_RATE_COLUMNS = (
    "programme", "n", "observed", "expected", "oe_ratio", "oe_conf_low", "oe_conf_high", "rate_crude",
    "rate_standardized", "conf_low", "conf_high", "limit95_low", "limit95_high", "limit998_low",
    "limit998_high", "flag",
)
#: Columns of ``programme_rates(..., method="hierarchical").tidy``.
HIERARCHICAL_RATE_COLUMNS = (
    "programme", "n", "observed", "predicted", "expected", "pe_ratio", "pe_conf_low", "pe_conf_high", "rate_crude",
    "rate_standardized", "conf_low", "conf_high", "random_effect", "random_effect_sd", "n_boot", "flag",
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
    method: str = "indirect",
    n_boot: int = 1000,
    seed: int | None = 1,
    interval: str = "posterior",
) -> Result:
    """Risk-standardised rates per programme (indirect standardisation with funnel limits, or hierarchical).

    ``method="hierarchical"`` is the CMS hospital measures' approach instead (see ``method`` below): a
    random-intercept logistic model, predicted over expected times the overall rate, with intervals from the
    model's approximate posterior (or CMS's bootstrap of programmes, ``interval="bootstrap"``).

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
    method : {"indirect", "hierarchical"}, default "indirect"
        ``"indirect"``: the fixed-effect case-mix model, O/E, exact Poisson intervals and funnel limits
        (above). ``"hierarchical"``: as CMS's hospital outcome measures (Yale New Haven Health Services
        Corporation, Center for Outcomes Research and Evaluation (YNHHSC/CORE), "2017 Condition-Specific Measures
        Updates and Specifications Report: Hospital-Level 30-Day Risk-Standardized Mortality Measures", CMS 2017,
        whose methodology gives ``interval="bootstrap"``; Krumholz et al. 2006 [3]; Normand & Shahian 2007 [4]): a
        random-intercept logistic model ``outcome ~ case mix + (1 | programme)`` (Laplace, :func:`~iop_research.longitudinal.fit_glmm`,
        equal to ``lme4::glmer``); per programme *predicted* = sum over its patients of
        ``expit(x_i beta + b_j)`` with the programme's conditional mode ``b_j``, *expected* = sum of
        ``expit(x_i beta)`` (the average programme, ``b = 0``); ratio P/E and rate P/E x the overall observed
        rate. Small programmes' ``b_j`` shrink toward 0, so their ratios shrink toward 1. The rate interval is
        the ratio's times the overall rate (held fixed, as CMS multiplies by the national observed rate);
        ``flag`` is ``"above"`` / ``"below"`` when it excludes the overall rate (CMS's "better / worse than the
        national rate"). No funnel limits (they belong to O/E under no programme effect). See ``interval`` for
        how the intervals are made. Needs at least 5 programmes (the spread of programme effects cannot be
        estimated from fewer); compare fewer with ``"indirect"``.
    n_boot : int, default 1000
        Draws (``interval="posterior"``) or bootstrap refits (``interval="bootstrap"``; CMS uses 1000, each a
        refit of roughly 30-80 ms for a few thousand patients) for ``method="hierarchical"``; 0: no intervals.
    seed : int or None, default 1
        Seed of the draws or the bootstrap (``numpy.random.default_rng``).
    interval : {"posterior", "bootstrap"}, default "posterior"
        Intervals of ``method="hierarchical"``. ``"posterior"``: percentiles of ``n_boot`` draws of each
        programme's P/E from the approximate posterior of the model: the SD of the programme intercepts on a
        grid of 80 values (half-Cauchy(0, 1) prior on the SD, Gelman 2006 [5], weakly informative on the log-odds
        scale and proper with few programmes; Laplace marginal likelihood with the fixed effects and the programme
        effects integrated out), and at each SD the fixed effects and programme
        effects jointly normal around their joint mode (precision: the negative Hessian), as in Kass & Steffey
        (1989) [6]. The grid is in ``extra["sd_posterior"]`` (``sd, weight, log_marginal``). These intervals carry
        the uncertainty of the fixed effects and of the SD. ``"bootstrap"``: the CMS bootstrap of programmes:
        sample the programmes with replacement, refit the model on all their patients (a programme drawn twice
        counts as two groups; starting values from the full fit), draw each sampled programme's effect from
        ``N(b_j^(b), cond_sd_j^(b)^2)`` (its first copy), recompute its P/E with the refitted ``beta``;
        percentiles of the replicates in which the programme was drawn (``n_boot`` column: how many). In
        ``benchmarks/sim_programmes.py --study rates`` (100 replicates of 12 programmes of 15-400 patients,
        programme SD 0.4) the posterior intervals cover each programme's true P/E in 95.4% (95.5% in a second
        stream of 100; 93.1% and 93.5% at SD 0.2 and 0.8); the CMS bootstrap covers 88.7% there whether 100 or
        400 refits are used (measured; its cause was not isolated), so it is
        offered for reproducing CMS's published method, not as the default.

    Returns
    -------
    Result
        ``tidy`` (one row per programme, ``PROGRAMME_RATE_COLUMNS``; ``flag`` is
        ``"above"``/``"below"`` outside the 99.8% funnel limits, else ``""``); ``glance``:
        ``n, n_programmes, n_events, overall_rate``; ``extra["case_mix"]``: the patient
        model's coefficients ``term, label, estimate, std_error``. With ``method="hierarchical"``: ``tidy``
        columns ``HIERARCHICAL_RATE_COLUMNS`` (``random_effect``, ``random_effect_sd``: the conditional mode
        and sd of ``b_j``), ``glance`` adds ``re_sd`` (SD of the programme intercepts), ``n_boot``,
        ``n_boot_failed`` (bootstrap refits that did not converge, left out), ``case_mix`` holds the GLMM's
        fixed effects (lme4 ``vcov`` standard errors) and, with ``interval="posterior"``, ``extra["sd_posterior"]``
        the SD's grid posterior.

    Raises
    ------
    EstimatorInputError, ModelSpecificationError, ConvergenceError
        Missing columns or values, outcome not 0/1, the programme among the covariates,
        a case-mix model that cannot be fitted, fewer than 5 programmes with ``method="hierarchical"``.

    References
    ----------
    .. [1] Spiegelhalter D.J. (2005). Funnel plots for comparing institutional performance.
       Stat Med 24:1185-1202.
    .. [2] Garwood F. (1936). Fiducial limits for the Poisson distribution. Biometrika 28:437-442.
    .. [3] Krumholz H.M. et al. (2006). An administrative claims model suitable for profiling
       hospital performance based on 30-day mortality rates. Circulation 113:1693-1701
       (risk-standardised rates).
    .. [4] Normand S.-L.T., Shahian D.M. (2007). Statistical and clinical aspects of hospital outcomes
       profiling. Statistical Science 22(2):206-226.
    .. [5] Gelman A. (2006). Prior distributions for variance parameters in hierarchical models. Bayesian
       Analysis 1(3):515-534.
    .. [6] Kass R.E., Steffey D. (1989). Approximate Bayesian inference in conditionally independent
       hierarchical models (parametric empirical Bayes models). JASA 84(407):717-726.

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
    if method not in ("indirect", "hierarchical"):
        raise ModelSpecificationError(
            f"{func}: method must be 'indirect' (fixed-effect case mix, O/E) or 'hierarchical' (random programme "
            f"intercepts, predicted / expected as CMS), got {method!r}.")
    if method == "hierarchical" and (isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer))
                                     or n_boot < 0):
        raise ModelSpecificationError(f"{func}: n_boot must be an integer >= 0 (0: no intervals), got {n_boot!r}.")
    if method == "hierarchical" and interval not in ("posterior", "bootstrap"):
        raise ModelSpecificationError(
            f"{func}: interval must be 'posterior' (draws from the approximate posterior of the programme "
            f"effects, the default) or 'bootstrap' (CMS's bootstrap of programmes), got {interval!r}.")
    require_frame(df, func, {"programme_col": programme_col, "outcome_col": outcome_col, "covariates": covariates})
    check_conf_level(conf_level, func)
    if programme_col in covariates or (formula is not None and programme_col in formula):
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
    if method == "hierarchical":
        if len(levels) < 5:
            raise ModelSpecificationError(
                f"{func}: column {programme_col!r} has {len(levels)} programme{'s' if len(levels) > 1 else ''}; "
                "hierarchical rates need at least 5 programmes, because the spread of programme effects (and so "
                "how far each programme is pulled toward the average) cannot be estimated from fewer (Gelman "
                "2006). Compare fewer programmes with method='indirect' (observed / expected, exact intervals).")
        return _hierarchical_rates(x, y, codes, levels, terms, labels, conf_level, int(n_boot), seed, interval)
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


def _bootstrap_ratio_draws(x, y, codes, k, fit, n_boot, rng):
    """CMS bootstrap of programmes: resample the programmes, refit, draw each sampled programme's effect from
    ``N(mode, cond sd^2)`` of the refit and recompute its P/E (NaN where a programme was not drawn)."""
    rows = [np.flatnonzero(codes == j) for j in range(k)]
    boot = np.full((n_boot, k), np.nan)
    failed = 0
    start = np.r_[fit["theta"], fit["beta"]]
    for r in range(n_boot):
        pick = rng.integers(0, k, k)
        idx = np.concatenate([rows[j] for j in pick])
        gb = np.repeat(np.arange(k), [len(rows[j]) for j in pick])
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                fb = _fit_glmer(x[idx], y[idx], gb, k, "binomial", 1, 100, start=start, vcov=False)
        except ConvergenceError:
            failed += 1
            continue
        first = {}
        for pos, j in enumerate(pick):
            first.setdefault(int(j), pos)
        uniq = np.fromiter(first.keys(), dtype=int)
        draw = rng.normal(fb["b"][list(first.values())], fb["b_sd"][list(first.values())])
        for j, bj in zip(uniq, draw):
            e0 = x[rows[j]] @ fb["beta"]
            boot[r, j] = special.expit(e0 + bj).sum() / special.expit(e0).sum()
    return boot, failed


def _joint_mode(x, y, codes, k, theta, beta, v):
    """Mode of ``f(beta, v) = sum_i log p(y_i | x_i beta + theta v_g(i)) - |v|^2 / 2`` (binomial) at a fixed SD
    ``theta`` by Newton with step halving, and the blocks of ``-Hessian``: ``X'WX``, ``B = theta X'WZ``
    (p x k) and the diagonal ``D = theta^2 Z'WZ + I``, with the Schur complement ``S = X'WX - B D^-1 B'``.
    Returns ``beta, v, S, B, D`` and the Laplace log marginal likelihood of theta with beta and v integrated
    out (flat prior on beta, constants dropped): ``f - (log det S + sum log D) / 2``."""
    p = x.shape[1]

    def value(bb, vv):
        return float(np.sum(_obs_loglik(y, x @ bb + theta * vv[codes], 0.0, "binomial")[0]) - 0.5 * vv @ vv)

    def blocks(bb, vv):
        _, mu, w = _obs_loglik(y, x @ bb + theta * vv[codes], 0.0, "binomial")
        a = (x * w[:, None]).T @ x
        bm = theta * np.stack([np.bincount(codes, w * x[:, j], minlength=k) for j in range(p)])
        d = theta * theta * np.bincount(codes, w, minlength=k) + 1.0
        return mu, a, bm, d, a - (bm / d) @ bm.T

    f = value(beta, v)
    for _ in range(100):
        mu, _, bm, d, schur = blocks(beta, v)
        r = y - mu
        gb = x.T @ r
        gv = theta * np.bincount(codes, r, minlength=k) - v
        db = np.linalg.solve(schur, gb - bm @ (gv / d))
        dv = (gv - bm.T @ db) / d
        decrement = float(gb @ db + gv @ dv)
        t = 1.0
        while True:
            nb, nv = beta + t * db, v + t * dv
            fn = value(nb, nv)
            if fn >= f - 1e-12 * abs(f) or t < 1e-8:
                break
            t *= 0.5
        beta, v, f = nb, nv, fn
        if decrement < 1e-10:
            break
    _, _, bm, d, schur = blocks(beta, v)
    logml = f - 0.5 * (np.linalg.slogdet(schur)[1] + float(np.sum(np.log(d))))
    return beta, v, schur, bm, d, logml


def _theta_grid(x, y, codes, k, beta_hat, theta_hat, n_grid=80):
    """The approximate posterior of the programme SD theta on a grid: half-Cauchy(0, 1) prior on theta (Gelman
    2006's weakly informative prior for a group-level SD, proper with few groups; an SD of 1 on the log-odds
    scale spreads programmes' odds over a factor of 50), Laplace marginal likelihood with beta and the effects
    integrated out (``_joint_mode``).
    The grid spans (0, upper], upper where the log posterior has fallen 12 below its maximum (at most 10 on the
    log-odds scale). Returns the grid, the normalised weights, each point's mode and blocks, and the log marginal
    likelihoods."""
    start = (np.array(beta_hat, dtype=float), np.zeros(k))
    top, best = max(2.0 * theta_hat, 0.25), -np.inf
    while True:  # expand the upper end until the posterior is negligible there
        probe = np.linspace(0.0, top, 9)[1:]
        lps = []
        bb, vv = start
        for t in probe:
            bb, vv, *_, lp = _joint_mode(x, y, codes, k, t, bb, vv)
            lps.append(lp - np.log1p(t * t))
        best = max(best, max(lps))
        if lps[-1] < best - 12.0 or top >= 10.0:
            break
        top = min(2.0 * top, 10.0)
    grid = (np.arange(n_grid) + 0.5) * top / n_grid
    modes, logml = [], np.empty(n_grid)
    bb, vv = start
    for m, t in enumerate(grid):
        bb, vv, schur, bm, d, logml[m] = _joint_mode(x, y, codes, k, t, bb, vv)
        modes.append((bb.copy(), vv.copy(), schur, bm, d))
    logpost = logml - np.log1p(grid * grid)  # half-Cauchy(0, 1) prior on the SD
    w = np.exp(logpost - logpost.max())
    return grid, w / w.sum(), modes, logml


def _draw_effects(mode, c, rng):
    """``c`` draws of ``(beta, v)`` from ``N(mode, H^-1)`` at one SD (``mode`` from ``_joint_mode``): ``beta ~
    N(beta_mode, S^-1)`` and ``v | beta ~ N(v_mode - D^-1 B' (beta - beta_mode), D^-1)``, the factorisation of
    the joint normal with precision ``H = [[X'WX, B], [B', D]]``. Returns ``(p x c, k x c)``."""
    bmode, vmode, schur, bm, d = mode
    chol = np.linalg.cholesky(schur)
    dbeta = np.linalg.solve(chol.T, rng.standard_normal((len(bmode), c)))  # covariance S^-1
    v = vmode[:, None] - (bm.T @ dbeta) / d[:, None] + rng.standard_normal((len(vmode), c)) / np.sqrt(d)[:, None]
    return bmode[:, None] + dbeta, v


def _posterior_ratio_draws(x, codes, k, grid, weights, modes, n_draws, rng, batch=64):
    """Draws of every programme's P/E from the approximate posterior: theta from its grid posterior
    (``_theta_grid``), ``(beta, v)`` at that theta (``_draw_effects``), ``b = theta v``, and P/E =
    ``sum expit(x beta + b_j) / sum expit(x beta)`` over the programme's patients. So the interval carries the
    uncertainty of the fixed effects and of the SD."""
    out = np.empty((n_draws, k))
    counts = rng.multinomial(n_draws, weights) if n_draws else np.zeros(len(grid), dtype=int)
    row = 0
    for m in np.flatnonzero(counts):
        for lo in range(0, counts[m], batch):
            c = min(batch, counts[m] - lo)
            betas, v = _draw_effects(modes[m], c, rng)
            eta = x @ betas
            num = special.expit(eta + grid[m] * v[codes])
            den = special.expit(eta)
            pred = np.stack([np.bincount(codes, num[:, j], minlength=k) for j in range(c)])
            expd = np.stack([np.bincount(codes, den[:, j], minlength=k) for j in range(c)])
            out[row:row + c] = pred / expd
            row += c
    return out


def _hierarchical_rates(x, y, codes, levels, terms, labels, conf_level, n_boot, seed, interval) -> Result:
    """CMS-style risk-standardised rates from a random-intercept logistic model, with intervals from the
    approximate posterior of the programme effects (default) or the CMS bootstrap of programmes."""
    k = len(levels)
    with np.errstate(over="ignore", invalid="ignore"):
        fit = _fit_glmer(x, y, codes, k, "binomial", 1, 500)
    beta, b, b_sd, theta = fit["beta"], fit["b"], fit["b_sd"], fit["theta"]
    eta0 = x @ beta
    pred = np.bincount(codes, weights=special.expit(eta0 + b[codes]), minlength=k)
    expd = np.bincount(codes, weights=special.expit(eta0), minlength=k)
    ratio = pred / expd
    overall = float(y.mean())
    n = np.bincount(codes, minlength=k)
    obs = np.bincount(codes, weights=y, minlength=k)
    rng = np.random.default_rng(seed)
    failed = 0
    extra = {}
    if interval == "posterior":
        grid, weights, modes, logml = _theta_grid(x, y, codes, k, beta, theta)
        boot = _posterior_ratio_draws(x, codes, k, grid, weights, modes, n_boot, rng)
        extra["sd_posterior"] = pd.DataFrame({"sd": grid, "weight": weights, "log_marginal": logml})
    else:
        boot, failed = _bootstrap_ratio_draws(x, y, codes, k, fit, n_boot, rng)
    a = 1.0 - conf_level
    n_in = np.sum(np.isfinite(boot), axis=0)
    with np.errstate(invalid="ignore"):
        lo = np.array([np.quantile(boot[np.isfinite(boot[:, j]), j], a / 2) if n_in[j] else np.nan for j in range(k)])
        hi = np.array([np.quantile(boot[np.isfinite(boot[:, j]), j], 1 - a / 2) if n_in[j] else np.nan
                       for j in range(k)])
    rate_lo, rate_hi = lo * overall, hi * overall
    flag = np.where(rate_lo > overall, "above", np.where(rate_hi < overall, "below", ""))
    tidy = pd.DataFrame({
        "programme": list(levels), "n": n.astype(int), "observed": obs.astype(int), "predicted": pred,
        "expected": expd, "pe_ratio": ratio, "pe_conf_low": lo, "pe_conf_high": hi, "rate_crude": obs / n,
        "rate_standardized": ratio * overall, "conf_low": rate_lo, "conf_high": rate_hi, "random_effect": b,
        "random_effect_sd": b_sd, "n_boot": n_in.astype(int), "flag": flag,
    })[list(HIERARCHICAL_RATE_COLUMNS)]
    glance = pd.DataFrame([{"n": int(len(y)), "n_programmes": int(k), "n_events": int(y.sum()),
                            "overall_rate": overall, "re_sd": float(theta), "n_boot": int(n_boot),
                            "n_boot_failed": int(failed)}])
    case_mix = pd.DataFrame({"term": terms, "label": labels, "estimate": beta,
                             "std_error": np.sqrt(np.diag(fit["vcov"]))})
    return Result(
        method="Risk-standardised rates (hierarchical: random programme intercepts, predicted / expected, as CMS)",
        tidy=tidy,
        glance=glance,
        model=None,
        extra={"case_mix": case_mix, **extra},
        conventions={
            "model": "lme4::glmer(outcome ~ case mix + (1 | programme), family = binomial) (Laplace)",
            "predicted": "sum of expit(x beta + b_programme) over the programme's patients (conditional mode b)",
            "expected": "sum of expit(x beta) over the programme's patients (the average programme, b = 0)",
            "rate": "predicted / expected x overall observed rate",
            "interval": (f"percentiles of {n_boot} draws from the approximate posterior (SD on a grid, "
                         "half-Cauchy(0, 1) prior; fixed effects and programme effects jointly normal at each SD, Laplace); overall "
                         "rate held fixed") if interval == "posterior" else
                        (f"CMS bootstrap of programmes ({n_boot} refits, effect drawn from N(mode, cond sd^2)), "
                         "percentiles; overall rate held fixed"),
            "flag": "interval excludes the overall rate",
        },
    )
