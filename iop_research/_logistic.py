"""One logistic-regression fitter, shared by every layer (designs' nuisance models, programme rates).

The propensity model of :func:`~iop_research.designs.iptw` and the deviation and pooled
outcome models of :func:`~iop_research.designs.clone_censor_weight` are all
``glm(y ~ x, family = binomial)``. :func:`fit_logistic` fits them with statsmodels (IRLS,
the estimate R's ``glm`` finds) and turns statsmodels' failures, separation and convergence
warnings into the package's errors with one wording; :func:`newton_logistic` is the bare
Newton-Raphson used inside bootstrap replicates, started from the full-sample estimate.
"""
from __future__ import annotations

import warnings

import numpy as np

from iop_research.exceptions import ConvergenceError, ModelSpecificationError

__all__ = ["fit_logistic", "newton_logistic"]


def fit_logistic(y, x, *, func: str, what: str, predicts: str, weights=None, tol: float = 1e-8):
    """Fit ``glm(y ~ x - 1, family = binomial, weights)``; ``x`` holds its own intercept column.

    ``what`` names the model in messages ("propensity model 'mat ~ age + sex'"), ``predicts``
    the outcome it models ("treatment", "starting treatment"). Raises
    :class:`ModelSpecificationError` when statsmodels cannot fit it, on perfect separation
    (a positivity violation) or non-finite coefficients, and :class:`ConvergenceError` when
    IRLS does not converge.
    """
    import statsmodels.api as sm  # noqa: PLC0415 - heavy import kept out of module import

    # Newton steps are cheap; statsmodels' IRLS builds a results object per iteration. Start IRLS at the
    # Newton solution (it then stops after a step or two) and let it judge separation and convergence.
    start = None
    if np.all(np.isfinite(np.asarray(x, dtype=float))) and np.all(np.isfinite(np.asarray(y, dtype=float))):
        try:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                start = newton_logistic(np.asarray(y, dtype=float), np.asarray(x, dtype=float), np.zeros(np.shape(x)[1]),
                                        None if weights is None else np.asarray(weights, dtype=float),
                                        func=func, what=what)
            if not np.all(np.isfinite(start)):
                start = None
        except (ConvergenceError, ModelSpecificationError, FloatingPointError):
            start = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = sm.GLM(y, x, family=sm.families.Binomial(), var_weights=weights, missing="raise").fit(
                start_params=start, tol=tol, maxiter=100)
    except Exception as exc:  # statsmodels' own errors (singular design, separation in old versions)
        raise ModelSpecificationError(
            f"{func}: the {what} could not be fitted ({type(exc).__name__}: {exc}). Check that both outcomes "
            f"occur, and for covariates that predict {predicts} exactly."
        ) from exc
    for wrn in caught:
        name = type(wrn.message).__name__
        if "Separation" in name:
            raise ModelSpecificationError(
                f"{func}: perfect separation in the {what}: some covariate pattern predicts {predicts} exactly "
                "(positivity violation). Coarsen or drop that covariate, or restrict the cohort."
            )
        if "Convergence" in name:
            raise ConvergenceError(f"{func}: the {what} did not converge ({wrn.message}).")
    if not np.all(np.isfinite(fit.params)):
        raise ModelSpecificationError(f"{func}: the {what} has non-finite coefficients; check the covariates.")
    return fit


def newton_logistic(y, x, start, weights=None, *, func: str, what: str) -> np.ndarray:
    """Logistic regression by Newton-Raphson from ``start`` (the maximum-likelihood estimate R's glm finds).

    Used in bootstrap replicates, started from the full-sample estimate (2-4 steps), where
    statsmodels' per-iteration results objects would dominate the run time; the tests check
    it against statsmodels and R.
    """
    beta = np.array(start, dtype=float)
    w = np.ones(len(y)) if weights is None else weights
    for _ in range(50):
        eta = x @ beta
        mu = 1.0 / (1.0 + np.exp(-eta))
        score = x.T @ (w * (y - mu))
        info = (x * (w * mu * (1.0 - mu))[:, None]).T @ x
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError as exc:
            raise ModelSpecificationError(f"{func}: the {what} is singular in this sample ({exc}).") from exc
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10 * (1.0 + np.max(np.abs(beta))):
            return beta
    raise ConvergenceError(f"{func}: the {what} did not converge in 50 Newton steps.")
