"""Random-intercept mixed models, equal to R ``lme4::glmer`` (Laplace, adaptive Gauss-Hermite) and ``lmer``.

Patients' weekly urine screens, or patients within programmes, are clusters; :func:`fit_glmm` fits the
conditional (subject-specific) model ``g(E[y | b]) = X beta + b_group`` with ``b_group ~ N(0, tau^2)``,
the model lme4 writes ``y ~ x + (1 | group)``. The estimators are lme4's (Bates, Maechler, Bolker &
Walker 2015, "Fitting linear mixed-effects models using lme4", JSS 67(1)), so the numbers are R's:

* **binomial / poisson** (``glmer``): the marginal likelihood ``prod_i int p(y_i | u) phi(u) du`` with
  ``b = theta u`` is approximated at the conditional modes ``u_i`` (penalised IRLS, here Newton per
  group) with the curvature ``H_i = 1 + theta^2 sum_j w_ij`` (``w = mu (1 - mu)`` or ``mu``: the
  canonical links make the observed and expected information equal):
  ``nagq = 1`` is the Laplace approximation ``log L_i = log p(y_i | u_i) - u_i^2 / 2 - log(H_i) / 2``;
  ``nagq = K > 1`` is adaptive Gauss-Hermite quadrature with ``K`` nodes centred at ``u_i`` and scaled
  by ``H_i^(-1/2)`` (lme4's ``nAGQ``; as in lme4 only for a single scalar random effect).
  The deviance is minimised jointly over ``(theta, beta)`` (lme4's second stage; lme4 uses derivative-free
  bobyqa), here by damped Newton: the gradient is analytic (differentiated through the conditional modes
  and the curvature by the implicit function theorem), the Hessian central differences of that gradient,
  iterated until the Newton decrement is below ``1e-12``. Standard errors are lme4's default ``vcov()``:
  the ``beta`` block of the inverse of half the Hessian of the deviance in ``(theta, beta)``
  (``use.hessian = TRUE``; so the uncertainty of ``theta`` is propagated; lme4 takes its Hessian by
  finite differences of the deviance, so the two agree to about 1e-4 relative, not to rounding).
  The log-likelihood includes the family's constants (``-log y!`` for Poisson), as ``logLik()`` does for
  ``nAGQ = 1``; for ``nAGQ > 1`` lme4's ``logLik()`` leaves out the saturated model's log-likelihood
  (lme4 issues #161 and #567), which is zero for 0/1 responses but not for counts, so for Poisson AGQ fits
  the value here is lme4's plus ``sum(y log y - y - log y!)`` (comparable across ``nagq``).
* **gaussian** (``lmer``): the profiled REML criterion (default) or ML deviance of
  ``V_i = sigma^2 (I + theta^2 J)``, minimised over the relative sd ``theta`` on one dimension; the
  fixed effects are generalised least squares at ``theta``, and their covariance is lmer's
  ``sigma^2 (X' V^-1 X)^-1`` (conditional on ``theta``).

Wald intervals and p-values use the normal distribution (glmer's ``Pr(>|z|)``; lmer prints no p-value,
and the normal approximation here is anticonservative with few groups: use ``lmerTest``'s Satterthwaite
degrees of freedom in R when that matters).

Why not statsmodels: ``BinomialBayesMixedGLM`` / ``PoissonBayesMixedGLM`` are variational Bayes (a
different estimator), and ``MixedLM`` covers the gaussian case only.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from iop_research._design import build_design, check_identifiable
from iop_research._validate import check_conf_level, label_codes, numeric_column, require_frame
from iop_research.exceptions import ConvergenceError, EstimatorInputError, ModelSpecificationError
from iop_research.results import TIDY_TERM_COLUMNS, Result

__all__ = ["fit_glmm", "TIDY_GLMM_COLUMNS", "GLANCE_GLMM_COLUMNS", "RANEF_COLUMNS", "RANEF_SLOPE_COLUMNS"]

_FUNC = "fit_glmm"
_FAMILIES = ("binomial", "poisson", "gaussian")
_RATIO = {"binomial": ("odds_ratio", "or_conf_low", "or_conf_high"),
          "poisson": ("rate_ratio", "rr_conf_low", "rr_conf_high")}
#: tidy columns by family (gaussian: :data:`~iop_research.results.TIDY_TERM_COLUMNS`).
TIDY_GLMM_COLUMNS = {"binomial": TIDY_TERM_COLUMNS + _RATIO["binomial"],
                     "poisson": TIDY_TERM_COLUMNS + _RATIO["poisson"],
                     "gaussian": TIDY_TERM_COLUMNS}
#: glance columns (every family).
GLANCE_GLMM_COLUMNS = ("n_obs", "n_groups", "family", "method", "nagq", "re_variance", "re_sd",
                       "re_sd_conf_low", "re_sd_conf_high", "residual_variance", "loglik", "aic", "bic", "n_iter", "converged",
                       "re_slope_variance", "re_slope_sd", "re_corr")
#: columns of ``extra["random_effects"]``.
RANEF_COLUMNS = ("group", "n_obs", "estimate", "cond_sd")
#: columns of ``extra["random_effects"]`` with ``random_slope=`` (the slope's conditional mode and sd added).
RANEF_SLOPE_COLUMNS = RANEF_COLUMNS + ("slope_estimate", "slope_cond_sd")
_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def _response_name(formula: str) -> tuple[str, str]:
    if not isinstance(formula, str) or "~" not in formula:
        raise ModelSpecificationError(
            f"{_FUNC}: formula must be 'response ~ terms' (e.g. 'positive ~ mat + week'), got {formula!r}; the "
            "random intercept is given by group_col=, not in the formula."
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
    if "|" in rhs:
        raise ModelSpecificationError(
            f"{_FUNC}: formula {formula!r} contains a random-effect term '(... | ...)'; give fixed effects only "
            "and name the grouping column with group_col= (a random intercept per group)."
        )
    return name, rhs


def _slope_column(df: pd.DataFrame, col: str, group_col: str, nagq: int, profile: bool) -> np.ndarray:
    """The random slope's numeric column, after the options that cannot go with it are refused."""
    if nagq != 1:
        raise ModelSpecificationError(
            f"{_FUNC}: nagq={nagq} with random_slope={col!r}: adaptive Gauss-Hermite quadrature is available only "
            "for a single scalar random effect (as in lme4, whose nAGQ > 1 refuses '(1 + x | g)'); use nagq=1 "
            "(Laplace) with a random slope, or drop random_slope= for quadrature.")
    if profile:
        raise ModelSpecificationError(
            f"{_FUNC}: profile=True is implemented for a random intercept only; drop profile=True with "
            f"random_slope={col!r}.")
    if not isinstance(col, str) or col == group_col:
        raise ModelSpecificationError(
            f"{_FUNC}: random_slope must name a numeric column other than the grouping column, got {col!r}.")
    require_frame(df, _FUNC, {"random_slope": col})
    z = numeric_column(df, col, func=_FUNC, role="random_slope")
    if np.ptp(z) == 0:
        raise ModelSpecificationError(f"{_FUNC}: random_slope column {col!r} is constant; a slope needs variation.")
    return z


def _check_response(family: str, y: np.ndarray, df: pd.DataFrame, col: str) -> None:
    if family == "binomial":
        bad = ~np.isin(y, (0.0, 1.0))
        what, fix = "value(s) other than 0/1", "A binomial model needs a 0/1 (or boolean) outcome, e.g. positive = 1."
    elif family == "poisson":
        bad = (y < 0) | (y != np.floor(y))
        what, fix = "negative or non-integer value(s)", "A Poisson model needs counts 0, 1, 2, ..."
    else:
        return
    if bad.any():
        rows = df.index[bad].tolist()
        raise EstimatorInputError(
            f"{_FUNC}: column {col!r} (response) has {int(bad.sum())} {what} (rows: {rows[:5]}). {fix}",
            func=_FUNC, column=col, check="response_values", n_rows=int(bad.sum()), rows=rows[:5],
        )
    if family == "binomial" and y.min() == y.max():
        raise ModelSpecificationError(f"{_FUNC}: every row has {col!r} = {int(y[0])}; a binomial model needs both.")


def _obs_loglik(y, eta, const, family):
    """log p(y | eta) per row (binomial or Poisson; ``const`` the rows' constant), the mean and the working weight."""
    if family == "binomial":
        mu = 0.5 * (1.0 + np.tanh(0.5 * eta))
        return y * eta - np.logaddexp(0.0, eta) + const, mu, mu * (1.0 - mu)
    mu = np.exp(eta)
    return y * eta - mu + const, mu, mu


class _GlmmDeviance:
    """Laplace / adaptive Gauss-Hermite deviance of a random-intercept GLMM as a function of (theta, beta)."""

    def __init__(self, x, y, g, n_groups, family, nagq):
        self.x, self.y, self.g, self.G, self.family = x, y, g, n_groups, family
        self.u = np.zeros(n_groups)  # warm start of the conditional modes
        if family == "poisson":
            self.const = -special.gammaln(y + 1.0)
        else:
            self.const = np.zeros_like(y)
        if nagq > 1:
            z, w = np.polynomial.hermite_e.hermegauss(nagq)  # weight exp(-z^2 / 2)
            self.nodes, self.logw = z, np.log(w) + 0.5 * z * z
        else:
            self.nodes, self.logw = np.zeros(1), np.array([_LOG_SQRT_2PI])

    def _obs(self, eta):
        """log p(y | eta) per row, the mean and the working weight (variance of y)."""
        return _obs_loglik(self.y, eta, self.const, self.family)

    def _group_ll(self, eta0, theta, u):
        ll, _, _ = self._obs(eta0 + theta * u[self.g])
        return np.bincount(self.g, ll, minlength=self.G) - 0.5 * u * u

    def modes(self, theta, beta):
        """Conditional modes u_i (Newton with step halving) and the curvature H_i."""
        eta0 = self.x @ beta
        u = self.u.copy() if theta > 0 else np.zeros(self.G)
        f = self._group_ll(eta0, theta, u)
        for _ in range(200):
            _, mu, w = self._obs(eta0 + theta * u[self.g])
            grad = theta * np.bincount(self.g, self.y - mu, minlength=self.G) - u
            hess = theta * theta * np.bincount(self.g, w, minlength=self.G) + 1.0
            step = grad / hess
            new = u + step
            fn = self._group_ll(eta0, theta, new)
            for _ in range(30):
                worse = fn < f - 1e-12 * (1.0 + np.abs(f))
                if not worse.any():
                    break
                step = np.where(worse, 0.5 * step, step)
                new = u + step
                fn = self._group_ll(eta0, theta, new)
            u, f = new, fn
            if np.max(np.abs(step)) < 1e-11:
                break
        _, mu, w = self._obs(eta0 + theta * u[self.g])
        hess = theta * theta * np.bincount(self.g, w, minlength=self.G) + 1.0
        self.u = u
        return u, hess, eta0

    def __call__(self, params) -> float:
        theta, beta = abs(float(params[0])), np.asarray(params[1:], dtype=float)
        u, h, eta0 = self.modes(theta, beta)
        if not np.all(np.isfinite(u)):
            return np.inf
        sd = 1.0 / np.sqrt(h)
        if len(self.nodes) == 1:
            loglik = self._group_ll(eta0, theta, u) - 0.5 * np.log(h)
        else:
            terms = np.empty((self.G, len(self.nodes)))
            for k, z in enumerate(self.nodes):
                uk = u + z * sd
                terms[:, k] = self.logw[k] + self._group_ll(eta0, theta, uk) - _LOG_SQRT_2PI
            loglik = special.logsumexp(terms, axis=1) - 0.5 * np.log(h)
        return float(-2.0 * np.sum(loglik))

    def value_grad(self, params):
        """Deviance and its gradient in (theta, beta), differentiating through the conditional modes and the
        curvature (implicit function theorem: ``du/dphi = (d h'(u) / d phi) / H``)."""
        theta, beta = abs(float(params[0])), np.asarray(params[1:], dtype=float)
        u, h, eta0 = self.modes(theta, beta)
        if not np.all(np.isfinite(u)):
            return np.inf, np.full(len(params), np.nan)
        g, G, x, y = self.g, self.G, self.x, self.y
        p = x.shape[1]
        _, mu, w = self._obs(eta0 + theta * u[g])
        dw = w * (1.0 - 2.0 * mu) if self.family == "binomial" else w  # d w / d eta
        sw = np.bincount(g, w, minlength=G)
        sdw = np.bincount(g, dw, minlength=G)
        resid = np.bincount(g, y - mu, minlength=G)
        swx = np.column_stack([np.bincount(g, w * x[:, k], minlength=G) for k in range(p)])
        sdwx = np.column_stack([np.bincount(g, dw * x[:, k], minlength=G) for k in range(p)])
        # d u / d phi (G x (1 + p)), columns theta then beta
        du = np.empty((G, 1 + p))
        du[:, 0] = (resid - theta * sw * u) / h
        du[:, 1:] = -theta * swx / h[:, None]
        # total d H / d phi
        dh = np.empty((G, 1 + p))
        dh[:, 0] = 2 * theta * sw + theta**2 * sdw * u
        dh[:, 1:] = theta**2 * sdwx
        dh += (theta**3 * sdw)[:, None] * du
        sd = 1.0 / np.sqrt(h)
        dsd = -0.5 * sd[:, None] ** 3 * dh
        grad = -0.5 * dh / h[:, None]
        nodes = self.nodes
        terms = np.empty((G, len(nodes)))
        parts = []
        for k, z in enumerate(nodes):
            uk = u + z * sd
            ll, mu_k, _ = self._obs(eta0 + theta * uk[g])
            terms[:, k] = self.logw[k] + np.bincount(g, ll, minlength=G) - 0.5 * uk * uk - _LOG_SQRT_2PI
            r = y - mu_k
            rk = np.bincount(g, r, minlength=G)
            dphi = np.empty((G, 1 + p))
            dphi[:, 0] = rk * uk
            dphi[:, 1:] = np.column_stack([np.bincount(g, r * x[:, j], minlength=G) for j in range(p)])
            hprime = theta * rk - uk
            dphi += hprime[:, None] * (du + z * dsd)
            parts.append(dphi)
        loglik = special.logsumexp(terms, axis=1)
        wts = np.exp(terms - loglik[:, None])
        for k in range(len(nodes)):
            grad += wts[:, k:k + 1] * parts[k]
        loglik = loglik - 0.5 * np.log(h)
        gsum = grad.sum(axis=0)
        if params[0] < 0:
            gsum[0] = -gsum[0]
        return float(-2.0 * np.sum(loglik)), -2.0 * gsum


def _grad_hess(grad, x, free):
    """Symmetric Hessian of the free parameters by central differences of the analytic gradient."""
    idx = np.flatnonzero(free)
    k = len(idx)
    hess = np.empty((k, k))
    for c, j in enumerate(idx):
        h = 1e-5 * max(1.0, abs(x[j]))
        e = np.zeros(len(x))
        e[j] = h
        hess[:, c] = (grad(x + e)[idx] - grad(x - e)[idx]) / (2 * h)
    return 0.5 * (hess + hess.T)


def _glm_start(x, y, family):
    """Fixed-effects GLM by IRLS (lme4's start for beta)."""
    if family == "binomial":
        mu = (y + 0.5) / 2.0
        eta = np.log(mu / (1 - mu))
    else:
        mu = y + 0.1
        eta = np.log(mu)
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        w = mu * (1 - mu) if family == "binomial" else mu
        z = eta + (y - mu) / np.maximum(w, 1e-12)
        xtw = x.T * w
        new = np.linalg.solve(xtw @ x, xtw @ z)
        done = np.max(np.abs(new - beta)) < 1e-10 * (1 + np.max(np.abs(beta)))
        beta = new
        eta = x @ beta
        mu = 0.5 * (1.0 + np.tanh(0.5 * eta)) if family == "binomial" else np.exp(eta)
        if done:
            break
    return beta


def _fit_glmer(x, y, g, n_groups, family, nagq, max_iter, start=None, vcov=True):
    """Damped Newton on the deviance in (theta, beta) with the analytic gradient and its finite-difference
    Hessian. The deviance is even in theta (b = theta u with u symmetric), so theta runs over the real line and
    its absolute value is reported; theta = 0 (no between-group variance) is then an interior point.
    ``start``: (theta, beta) to start from (a bootstrap refit); ``vcov=False`` skips the final Hessian."""
    dev = _GlmmDeviance(x, y, g, n_groups, family, nagq)
    par = np.r_[1.0, _glm_start(x, y, family)] if start is None else np.array(start, dtype=float)
    k = len(par)
    free = np.ones(k, dtype=bool)

    def grad(q):
        return dev.value_grad(q)[1]

    converged = False
    n_iter = 0
    f0, gr = dev.value_grad(par)
    for n_iter in range(1, max_iter + 1):
        hess = _grad_hess(grad, par, free)
        ridge = 0.0
        while True:
            try:
                chol = np.linalg.cholesky(hess + ridge * np.eye(k))
                break
            except np.linalg.LinAlgError:
                ridge = max(2 * ridge, 1e-6 * max(1.0, float(np.max(np.abs(np.diag(hess))))))
        step = np.linalg.solve(chol.T, np.linalg.solve(chol, gr))
        decrement = float(gr @ step)
        if ridge == 0.0 and decrement < 1e-12:
            converged = True
            break
        t = 1.0
        while t > 1e-8:
            trial = par - t * step
            f1, g1 = dev.value_grad(trial)
            if np.isfinite(f1) and f1 <= f0 + 1e-12 * abs(f0):
                break
            t *= 0.5
        else:
            break
        par, f0, gr = trial, f1, g1
    if not converged:
        raise ConvergenceError(
            f"{_FUNC}: the {family} mixed model did not converge in {max_iter} Newton iterations. Check for "
            "separation (a term that predicts the outcome perfectly) or rescale covariates (e.g. age in decades)."
        )
    par[0] = abs(par[0])
    if vcov:
        hess = _grad_hess(grad, par, free)
        vcov = np.linalg.inv(hess / 2.0)[1:, 1:]  # lme4: solve(Hessian of the deviance / 2), beta block
    else:
        vcov = None
    u, h, _ = dev.modes(par[0], par[1:])
    theta = par[0]
    return dict(beta=par[1:], vcov=vcov, theta=theta, loglik=-0.5 * dev(par), b=theta * u,
                b_sd=theta / np.sqrt(h), n_iter=n_iter, converged=converged)


def _profile_sd_ci(x, y, g, n_groups, family, nagq, theta_hat, beta_hat, level):
    """Profile-likelihood interval of the random-effect SD theta (lme4 ``confint(method = "profile")``'s
    ``.sig01``, found by root search on the profiled deviance instead of lme4's spline of the profile).

    For each theta the deviance is minimised over beta (Newton with the analytic gradient); the limits are
    where it exceeds its minimum by the chi-square(1) quantile of ``level``; the lower limit is 0 when the
    deviance at theta = 0 is within that bound.
    """
    dev = _GlmmDeviance(x, y, g, n_groups, family, nagq)
    p = len(beta_hat)
    free = np.r_[False, np.ones(p, dtype=bool)]
    state = {"beta": np.array(beta_hat, dtype=float)}

    def prof(theta: float) -> float:
        par = np.r_[theta, state["beta"]]

        def grad(q):
            return dev.value_grad(q)[1]

        f0, gr = dev.value_grad(par)
        for _ in range(50):
            hess = _grad_hess(grad, par, free)
            try:
                step = np.linalg.solve(hess, gr[1:])
            except np.linalg.LinAlgError:
                break
            t = 1.0
            while t > 1e-8:
                trial = par.copy()
                trial[1:] -= t * step
                f1, g1 = dev.value_grad(trial)
                if np.isfinite(f1) and f1 <= f0 + 1e-12 * abs(f0):
                    break
                t *= 0.5
            else:
                break
            done = f0 - f1 < 1e-10
            par, f0, gr = trial, f1, g1
            if done:
                break
        state["beta"] = par[1:]
        return f0

    crit = float(stats.chi2.ppf(level, 1))
    d0 = prof(theta_hat)
    target = d0 + crit
    # upper limit: expand until the profile passes the target
    hi = max(theta_hat, 0.05) * 1.5 + 0.05
    while prof(hi) < target:
        hi *= 1.6
        if hi > 1e3:
            return np.nan, np.nan
    state["beta"] = np.array(beta_hat, dtype=float)
    upper = optimize.brentq(lambda t: prof(t) - target, theta_hat, hi, xtol=1e-7)
    state["beta"] = np.array(beta_hat, dtype=float)
    if theta_hat <= 0 or prof(0.0) <= target:
        lower = 0.0
    else:
        state["beta"] = np.array(beta_hat, dtype=float)
        lower = optimize.brentq(lambda t: prof(t) - target, 0.0, theta_hat, xtol=1e-7)
    return float(lower), float(upper)


def _fit_lmer(x, y, g, n_groups, reml):
    """Profiled REML/ML of y = X beta + b_g + e, V = sigma^2 (I + theta^2 J) per group."""
    n, p = x.shape
    ni = np.bincount(g, minlength=n_groups).astype(float)
    xtx, xty, yty = x.T @ x, x.T @ y, float(y @ y)
    sx = np.zeros((n_groups, p))
    np.add.at(sx, g, x)
    sy = np.bincount(g, y, minlength=n_groups)

    def parts(theta):
        c = theta * theta / (1.0 + ni * theta * theta)
        a = xtx - (sx.T * c) @ sx
        bvec = xty - (sx.T * c) @ sy
        cyy = yty - float(np.sum(c * sy * sy))
        beta = np.linalg.solve(a, bvec)
        rss = cyy - float(beta @ bvec)
        logdet_v = float(np.sum(np.log1p(ni * theta * theta)))
        return a, beta, rss, logdet_v

    def crit(theta):
        a, _, rss, ldv = parts(theta)
        if reml:
            m = n - p
            return ldv + np.linalg.slogdet(a)[1] + m * (1.0 + np.log(2.0 * np.pi * rss / m))
        return ldv + n * (1.0 + np.log(2.0 * np.pi * rss / n))

    # bracket on a log grid, then refine (theta = 0 is allowed: no between-group variance)
    grid = np.r_[0.0, np.exp(np.linspace(np.log(1e-4), np.log(1e3), 71))]
    vals = np.array([crit(t) for t in grid])
    k = int(np.argmin(vals))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    opt = optimize.minimize_scalar(crit, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-12 * max(1.0, grid[k]), "maxiter": 500})
    theta = float(opt.x) if opt.fun <= vals[k] else float(grid[k])
    a, beta, rss, _ = parts(theta)
    sigma2 = rss / (n - p if reml else n)
    vcov = sigma2 * np.linalg.inv(a)
    resid = y - x @ beta
    sr = np.bincount(g, resid, minlength=n_groups)
    t2 = theta * theta
    b = t2 * sr / (1.0 + ni * t2)
    b_sd = np.sqrt(sigma2 * t2 / (1.0 + ni * t2))
    return dict(beta=beta, vcov=vcov, theta=theta, sigma2=sigma2, loglik=-0.5 * crit(theta), b=b, b_sd=b_sd,
                n_iter=int(opt.nfev), converged=bool(opt.success))


def fit_glmm(
    df: pd.DataFrame,
    *,
    formula: str,
    group_col: str,
    family: str = "binomial",
    nagq: int = 1,
    reml: bool = True,
    conf_level: float = 0.95,
    max_iter: int = 500,
    profile: bool = False,
    random_slope: str | None = None,
) -> Result:
    """Fit a random-intercept (and slope) mixed model (R ``lme4::glmer(y ~ x + (1 | group))``, or ``lmer``).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per observation (e.g. patient-week, or patient within programme), any order. Not modified.
    formula : str
        ``"response ~ fixed terms"`` (formulaic right-hand side, built by
        :func:`iop_research._design.build_design`); ``(Intercept)`` is always included. The random
        intercept is not written in the formula: ``group_col`` names it.
    group_col : str
        Grouping column of the random intercept (patient, programme). Groups are listed in R
        ``factor()`` order in ``extra["random_effects"]``.
    family : {"binomial", "poisson", "gaussian"}, default "binomial"
        Canonical links (logit, log, identity). Binomial responses are 0/1 (or boolean), Poisson
        responses counts.
    nagq : int, default 1
        Quadrature nodes per group (binomial / poisson): 1 = Laplace approximation (glmer's default),
        ``> 1`` = adaptive Gauss-Hermite quadrature (glmer's ``nAGQ``, at most 25). Must be 1 for gaussian.
    reml : bool, default True
        Gaussian only: REML (lmer's default) or maximum likelihood (``REML = FALSE``; needed to compare
        fixed effects by likelihood ratio).
    conf_level : float, default 0.95
        Wald interval level (normal quantile).
    max_iter : int, default 500
        Optimiser iterations before :class:`~iop_research.exceptions.ConvergenceError`.
    profile : bool, default False
        Binomial and Poisson: a profile-likelihood interval (at ``conf_level``) for the random-effect SD in
        ``glance["re_sd_conf_low", "re_sd_conf_high"]`` (lme4 ``confint(method = "profile")``, ``.sig01``);
        NaN without it; refused for gaussian fits. It refits the fixed effects at each trial SD, so it costs several fits.
    random_slope : str, optional
        A numeric column (e.g. ``"week"``) given a random slope per group, correlated with the random intercept
        (unstructured 2 x 2 covariance): lme4's ``y ~ x + (1 + week | group)``. The column usually also appears
        among the fixed effects. Fitted by the Laplace approximation (binomial, poisson) or REML / ML
        (gaussian); ``nagq > 1`` and ``profile=True`` are refused with it (lme4 allows ``nAGQ > 1`` only for a
        single scalar random effect). ``glance`` then carries ``re_slope_variance, re_slope_sd, re_corr``
        (NaN for random-intercept fits), and ``extra["random_effects"]`` the slope's conditional mode and sd.

    Returns
    -------
    Result
        ``tidy``: ``term, label, estimate, std_error, conf_low, conf_high, p_value`` for the fixed
        effects, plus ``odds_ratio, or_conf_low, or_conf_high`` (binomial) or ``rate_ratio,
        rr_conf_low, rr_conf_high`` (poisson). ``glance``: ``n_obs, n_groups, family, method``
        (``"Laplace"``, ``"AGQ"``, ``"REML"``, ``"ML"``), ``nagq, re_variance`` (``tau^2``), ``re_sd,
        residual_variance`` (gaussian ``sigma^2``; NaN otherwise), ``loglik`` (R ``logLik()``; the REML
        criterion's for REML fits), ``aic, bic, n_iter, converged``; ``re_sd_conf_low, re_sd_conf_high`` (with ``profile=True``);
        ``re_slope_variance, re_slope_sd, re_corr`` (with ``random_slope=``; ``re_variance`` is then the intercept's).
        ``extra["random_effects"]``:
        ``group, n_obs, estimate`` (conditional mode / BLUP of ``b``, R ``ranef()``), ``cond_sd``
        (conditional sd, R's ``postVar``), with ``random_slope=`` also ``slope_estimate, slope_cond_sd``;
        ``extra["vcov"]``: covariance of the fixed effects.

    Raises
    ------
    EstimatorInputError
        Missing columns or values, a response outside the family's support.
    ModelSpecificationError
        Unknown family, a bad ``nagq``, a bad formula, a singular design, a constant binomial response,
        fewer than two groups.
    ConvergenceError
        The optimiser did not converge (e.g. separation).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> weeks = pd.DataFrame({"patient_id": np.repeat(np.arange(200), 8), "week": np.tile(np.arange(1, 9), 200)})
    >>> weeks["mat"] = weeks["patient_id"] % 2
    >>> eta = 0.2 - 0.8 * weeks["mat"] - 0.05 * weeks["week"] + np.repeat(rng.normal(size=200), 8)
    >>> weeks["positive"] = (rng.random(len(weeks)) < 1 / (1 + np.exp(-eta))).astype(int)
    >>> res = fit_glmm(weeks, formula="positive ~ mat + week", group_col="patient_id", nagq=7)
    >>> res.tidy[["term", "estimate", "std_error"]].round(3)
              term  estimate  std_error
    0  (Intercept)     0.242      0.155
    1          mat    -0.830      0.160
    2         week    -0.075      0.024
    >>> res.glance[["n_groups", "method", "re_variance"]].round(3)
       n_groups method  re_variance
    0       200    AGQ         0.64

    The R call it equals: ``lme4::glmer(positive ~ mat + week + (1 | patient_id), data = weeks,
    family = binomial, nAGQ = 7)`` (R: 0.24183, -0.83008, -0.07454; SEs 0.15505, 0.16040, 0.02431;
    variance 0.6397).
    """
    if family not in _FAMILIES:
        raise ModelSpecificationError(f"{_FUNC}: family must be one of {_FAMILIES}, got {family!r}.")
    if isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer)) or not 1 <= int(nagq) <= 25:
        raise ModelSpecificationError(f"{_FUNC}: nagq must be an integer from 1 (Laplace) to 25, got {nagq!r}.")
    nagq = int(nagq)
    if family == "gaussian" and nagq != 1:
        raise ModelSpecificationError(
            f"{_FUNC}: nagq={nagq} applies to binomial and poisson models; a gaussian mixed model's likelihood is "
            "exact (leave nagq=1)."
        )
    level = check_conf_level(conf_level, _FUNC)
    yname, rhs = _response_name(formula)
    require_frame(df, _FUNC, {"response": yname, "group_col": group_col})
    y = numeric_column(df, yname, func=_FUNC, role="response")
    g, levels = label_codes(df, group_col, func=_FUNC, role="group")
    if len(levels) < 2:
        raise ModelSpecificationError(
            f"{_FUNC}: column {group_col!r} has a single group ({levels!r}); a random intercept needs at least two "
            "groups (fit an ordinary regression instead)."
        )
    design = build_design(df, formula=rhs, func=_FUNC)
    check_identifiable(design.matrix, design.terms, func=_FUNC)
    x = np.column_stack([np.ones(len(df)), design.matrix])
    terms = ("(Intercept)",) + design.terms
    labels = ("(Intercept)",) + design.labels
    _check_response(family, y, df, yname)

    n_groups = len(levels)
    sd_lo = sd_hi = np.nan
    if profile and family == "gaussian":
        raise ModelSpecificationError(
            f"{_FUNC}: profile=True is for binomial and Poisson fits; for a gaussian (lmer) fit the interval of "
            "the random-effect SD is not computed here. Drop profile=True.")
    slope_var = slope_sd = corr = np.nan
    if random_slope is not None:
        zcol = _slope_column(df, random_slope, group_col, nagq, profile)
        zmat = np.column_stack([np.ones(len(df)), zcol])
        if family == "gaussian":
            fit = _fit_lmer_slope(x, zmat, y, g, n_groups, reml, max_iter)
            method, resid_var, k = ("REML" if reml else "ML"), fit["sigma2"], x.shape[1] + 4
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                fit = _fit_glmer_slope(x, zmat, y, g, n_groups, family, max_iter)
            method, resid_var, k = "Laplace", np.nan, x.shape[1] + 3
        cov = fit["cov"]
        re_var, slope_var = cov[0, 0], cov[1, 1]
        slope_sd = np.sqrt(slope_var)
        denom = np.sqrt(cov[0, 0] * cov[1, 1])
        corr = cov[0, 1] / denom if denom > 0 else np.nan
        fit["b_sd"] = np.sqrt(fit["b_cov"][:, 0, 0])
    elif family == "gaussian":
        fit = _fit_lmer(x, y, g, n_groups, reml)
        method = "REML" if reml else "ML"
        resid_var = fit["sigma2"]
        re_var = fit["theta"] ** 2 * fit["sigma2"]
        k = x.shape[1] + 2
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            fit = _fit_glmer(x, y, g, n_groups, family, nagq, max_iter)
        method = "Laplace" if nagq == 1 else "AGQ"
        resid_var = np.nan
        re_var = fit["theta"] ** 2
        k = x.shape[1] + 1
        if profile:
            with np.errstate(over="ignore", invalid="ignore"):
                sd_lo, sd_hi = _profile_sd_ci(x, y, g, n_groups, family, nagq, fit["theta"], fit["beta"], level)
    beta, vcov = fit["beta"], fit["vcov"]
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
    if family in _RATIO:
        r, lo, hi = _RATIO[family]
        tidy[r] = np.exp(tidy["estimate"])
        tidy[lo] = np.exp(tidy["conf_low"])
        tidy[hi] = np.exp(tidy["conf_high"])
    n_obs = len(y)
    loglik = fit["loglik"]
    glance = pd.DataFrame([{
        "n_obs": int(n_obs),
        "n_groups": int(n_groups),
        "family": family,
        "method": method,
        "nagq": nagq,
        "re_variance": float(re_var),
        "re_sd": float(np.sqrt(re_var)),
        "re_sd_conf_low": sd_lo,
        "re_sd_conf_high": sd_hi,
        "residual_variance": float(resid_var),
        "loglik": float(loglik),
        "aic": float(-2 * loglik + 2 * k),
        "bic": float(-2 * loglik + np.log(n_obs) * k),
        "n_iter": int(fit["n_iter"]),
        "converged": bool(fit["converged"]),
        "re_slope_variance": float(slope_var),
        "re_slope_sd": float(slope_sd),
        "re_corr": float(corr),
    }])
    b = fit["b"]
    ranef = pd.DataFrame({
        "group": levels,
        "n_obs": np.bincount(g, minlength=n_groups).astype(int),
        "estimate": b if b.ndim == 1 else b[:, 0],
        "cond_sd": fit["b_sd"],
    })
    if random_slope is not None:
        ranef["slope_estimate"] = b[:, 1]
        ranef["slope_cond_sd"] = np.sqrt(fit["b_cov"][:, 1, 1])
    vc = pd.DataFrame(vcov, columns=list(terms))
    vc.insert(0, "term", list(terms))
    link = {"binomial": "logit", "poisson": "log", "gaussian": "identity"}[family]
    re_term = "(1 | group)" if random_slope is None else f"(1 + {random_slope} | group)"
    r_call = (f"lme4::lmer(y ~ x + {re_term}, REML = {'TRUE' if reml else 'FALSE'})" if family == "gaussian"
              else f"lme4::glmer(y ~ x + {re_term}, family = {family}, nAGQ = {nagq})")
    return Result(
        method=(f"GLMM ({family}, {link} link, random intercept, {method})" if random_slope is None else
                f"GLMM ({family}, {link} link, correlated random intercept and {random_slope} slope, {method})"),
        tidy=tidy,
        glance=glance,
        model=None,
        extra={"random_effects": ranef, "vcov": vc},
        conventions={
            "likelihood": ("exact profiled REML / ML (lmer)" if family == "gaussian" else
                           "Laplace approximation at the conditional modes (glmer nAGQ = 1)" if nagq == 1 else
                           f"adaptive Gauss-Hermite quadrature, {nagq} nodes per group (glmer nAGQ = {nagq})"),
            "variance": ("sigma^2 (X' V^-1 X)^-1 at the estimates (lmer vcov)" if family == "gaussian" else
                         "inverse of half the deviance Hessian in (theta, beta), beta block (glmer vcov, "
                         "use.hessian = TRUE)"),
            "intervals": "Wald, normal quantile (glmer Pr(>|z|); lmer reports no p-value)",
            "random_effects": "conditional modes (ranef) with conditional sd (postVar)",
            "R": r_call,
        },
    )


# --------------------------------------------------------------------------------------------------------------
# correlated random intercept and slope, (1 + x | group)
# --------------------------------------------------------------------------------------------------------------
def _lambda(theta) -> np.ndarray:
    """lme4's relative covariance factor: lower-triangular, ``theta`` column-wise (``getME(f, "theta")``)."""
    return np.array([[theta[0], 0.0], [theta[1], theta[2]]])


def _canonical_theta(theta) -> np.ndarray:
    """The deviance is unchanged when a column of Lambda changes sign (``u_k`` is symmetric); report the
    factor with a non-negative diagonal, as lme4 does (its bounds)."""
    t = np.array(theta, dtype=float)
    if t[0] < 0:
        t[:2] = -t[:2]
    t[2] = abs(t[2])
    return t


def _fd_grad(f, x, h=1e-5):
    g = np.empty(len(x))
    for j in range(len(x)):
        e = np.zeros(len(x))
        e[j] = h * max(1.0, abs(x[j]))
        g[j] = (f(x + e) - f(x - e)) / (2 * e[j])
    return g


def _fd_hess(f, x, h=1e-4):
    """Symmetric Hessian by central differences of the function (4-point off-diagonal formula)."""
    k = len(x)
    steps = h * np.maximum(1.0, np.abs(x))
    f0 = f(x)
    hess = np.empty((k, k))
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = steps[i]
        hess[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / steps[i] ** 2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = steps[j]
            hess[i, j] = hess[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * steps[i] * steps[j])
    return hess


def _minimise(f, x0, max_iter, what):
    """Minimise a smooth function: BFGS on central-difference gradients, then Newton steps on a
    finite-difference Hessian until the Newton decrement is below 1e-10. Returns (x, n_iter)."""
    opt = optimize.minimize(f, x0, jac=lambda q: _fd_grad(f, q), method="BFGS",
                            options={"gtol": 1e-6, "maxiter": max_iter})
    x, fx, n_iter = opt.x, opt.fun, int(opt.nit)
    for _ in range(20):
        n_iter += 1
        gr = _fd_grad(f, x)
        hess = _fd_hess(f, x)
        try:
            chol = np.linalg.cholesky(hess)
        except np.linalg.LinAlgError:
            break
        step = np.linalg.solve(chol.T, np.linalg.solve(chol, gr))
        decrement = float(gr @ step)
        if decrement < 1e-10:
            return x, n_iter, True
        t = 1.0
        while t > 1e-6:
            trial = x - t * step
            ft = f(trial)
            if np.isfinite(ft) and ft <= fx + 1e-12 * abs(fx):
                break
            t *= 0.5
        else:
            break
        x, fx = trial, ft
    raise ConvergenceError(
        f"{_FUNC}: the {what} with a random slope did not converge. The slope variance may be near zero or the "
        "correlation near +-1 (a singular fit); try a random intercept only, or centre / rescale the slope variable.")


class _SlopeDeviance:
    """Laplace deviance of a GLMM with a correlated random intercept and slope, ``b_g = Lambda u_g``,
    ``u_g ~ N(0, I_2)``: ``-2 sum_g [log p(y_g | u_g) - |u_g|^2 / 2 - log det(H_g) / 2]`` at the conditional
    modes (Newton per group), ``H_g = I + Lambda' Z_g' W_g Z_g Lambda``."""

    def __init__(self, x, z, y, g, n_groups, family):
        self.x, self.z, self.y, self.g, self.G, self.family = x, z, y, g, n_groups, family
        self.u = np.zeros((n_groups, 2))
        self.const = -special.gammaln(y + 1.0) if family == "poisson" else np.zeros_like(y)

    def _obs(self, eta):
        """log p(y | eta) per row, the mean and the working weight (variance of y)."""
        return _obs_loglik(self.y, eta, self.const, self.family)

    def _sum(self, v):
        return np.bincount(self.g, v, minlength=self.G)

    def _h(self, eta0, zl, u):
        ll, _, _ = self._obs(eta0 + np.einsum("ij,ij->i", zl, u[self.g]))
        return self._sum(ll) - 0.5 * np.einsum("ij,ij->i", u, u)

    def modes(self, theta, beta):
        lam = _lambda(theta)
        zl = self.z @ lam
        eta0 = self.x @ beta
        u = self.u.copy()
        f = self._h(eta0, zl, u)
        for _ in range(200):
            _, mu, w = self._obs(eta0 + np.einsum("ij,ij->i", zl, u[self.g]))
            r = self.y - mu
            g0 = self._sum(r * zl[:, 0]) - u[:, 0]
            g1 = self._sum(r * zl[:, 1]) - u[:, 1]
            a = 1.0 + self._sum(w * zl[:, 0] ** 2)
            b = self._sum(w * zl[:, 0] * zl[:, 1])
            c = 1.0 + self._sum(w * zl[:, 1] ** 2)
            det = a * c - b * b
            step = np.column_stack([(c * g0 - b * g1) / det, (a * g1 - b * g0) / det])
            new = u + step
            fn = self._h(eta0, zl, new)
            for _ in range(30):
                worse = fn < f - 1e-12 * (1.0 + np.abs(f))
                if not worse.any():
                    break
                step = np.where(worse[:, None], 0.5 * step, step)
                new = u + step
                fn = self._h(eta0, zl, new)
            u, f = new, fn
            if np.max(np.abs(step)) < 1e-10:
                break
        _, mu, w = self._obs(eta0 + np.einsum("ij,ij->i", zl, u[self.g]))
        hess = np.empty((self.G, 2, 2))
        hess[:, 0, 0] = 1.0 + self._sum(w * zl[:, 0] ** 2)
        hess[:, 0, 1] = hess[:, 1, 0] = self._sum(w * zl[:, 0] * zl[:, 1])
        hess[:, 1, 1] = 1.0 + self._sum(w * zl[:, 1] ** 2)
        if np.all(np.isfinite(u)):
            self.u = u
        return u, hess, f

    def __call__(self, params) -> float:
        u, hess, f = self.modes(params[:3], params[3:])
        if not np.all(np.isfinite(f)):
            return np.inf
        logdet = np.log(hess[:, 0, 0] * hess[:, 1, 1] - hess[:, 0, 1] ** 2)
        return float(-2.0 * np.sum(f - 0.5 * logdet))


def _fit_glmer_slope(x, z, y, g, n_groups, family, max_iter):
    dev = _SlopeDeviance(x, z, y, g, n_groups, family)
    par0 = np.r_[1.0, 0.0, 1.0, _glm_start(x, y, family)]
    par, n_iter, converged = _minimise(dev, par0, max_iter, f"{family} mixed model")
    par = np.r_[_canonical_theta(par[:3]), par[3:]]
    dev.u = np.zeros((n_groups, 2))
    hess = _fd_hess(dev, par)
    vcov = np.linalg.inv(hess / 2.0)[3:, 3:]  # lme4: solve(Hessian of the deviance / 2), beta block
    lam = _lambda(par[:3])
    u, h, _ = dev.modes(par[:3], par[3:])
    cond = lam @ np.linalg.inv(h) @ lam.T  # Lambda H^-1 Lambda' per group (lme4 condVar)
    return dict(beta=par[3:], vcov=vcov, theta=par[:3], cov=lam @ lam.T, loglik=-0.5 * dev(par),
                b=u @ lam.T, b_cov=cond, n_iter=n_iter, converged=converged)


def _fit_lmer_slope(x, z, y, g, n_groups, reml, max_iter):
    """Profiled REML/ML of ``y = X beta + Z_g b_g + e``, ``b_g ~ N(0, sigma^2 Lambda Lambda')``: with
    ``M_g = I + Lambda' Z_g' Z_g Lambda``, ``V_g^-1 sigma^2 = I - Z_g Lambda M_g^-1 Lambda' Z_g'`` (Woodbury) and
    ``log det(V_g / sigma^2) = log det M_g``; the criterion is lmer's, minimised over the three elements of
    Lambda."""
    n, p = x.shape
    ztz = np.zeros((n_groups, 2, 2))
    np.add.at(ztz, g, z[:, :, None] * z[:, None, :])
    ztx = np.zeros((n_groups, 2, p))
    np.add.at(ztx, g, z[:, :, None] * x[:, None, :])
    zty = np.zeros((n_groups, 2))
    np.add.at(zty, g, z * y[:, None])
    xtx, xty, yty = x.T @ x, x.T @ y, float(y @ y)
    eye = np.eye(2)

    def parts(theta):
        lam = _lambda(theta)
        m = eye + lam.T @ ztz @ lam
        minv = np.linalg.inv(m)
        lzx = lam.T @ ztx  # G x 2 x p
        lzy = zty @ lam  # G x 2 (Lambda' Z'y)
        mzx = minv @ lzx
        mzy = np.einsum("gij,gj->gi", minv, lzy)
        a = xtx - np.einsum("gip,giq->pq", lzx, mzx)
        bvec = xty - np.einsum("gip,gi->p", lzx, mzy)
        cyy = yty - float(np.einsum("gi,gi->", lzy, mzy))
        beta = np.linalg.solve(a, bvec)
        rss = cyy - float(beta @ bvec)
        logdet_v = float(np.sum(np.linalg.slogdet(m)[1]))
        return a, beta, rss, logdet_v, lam, minv

    def crit(theta):
        a, _, rss, ldv, _, _ = parts(theta)
        if rss <= 0:
            return np.inf
        if reml:
            mm = n - p
            return ldv + np.linalg.slogdet(a)[1] + mm * (1.0 + np.log(2.0 * np.pi * rss / mm))
        return ldv + n * (1.0 + np.log(2.0 * np.pi * rss / n))

    theta, n_iter, converged = _minimise(crit, np.array([1.0, 0.0, 1.0]), max_iter, "gaussian mixed model")
    theta = _canonical_theta(theta)
    a, beta, rss, _, lam, minv = parts(theta)
    sigma2 = rss / (n - p if reml else n)
    vcov = sigma2 * np.linalg.inv(a)
    resid = y - x @ beta
    ztr = np.zeros((n_groups, 2))
    np.add.at(ztr, g, z * resid[:, None])
    b = np.einsum("ij,gjk,gk->gi", lam, minv, ztr @ lam)
    return dict(beta=beta, vcov=vcov, theta=theta, sigma2=sigma2, cov=sigma2 * lam @ lam.T,
                loglik=-0.5 * crit(theta), b=b, b_cov=sigma2 * lam @ minv @ lam.T, n_iter=n_iter,
                converged=converged)
