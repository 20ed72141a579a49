"""The designs' one logistic fitter: statsmodels' IRLS estimate, Newton from a start, and one error wording."""
import numpy as np
import pytest

from iop_research._logistic import fit_logistic, newton_logistic
from iop_research.exceptions import ModelSpecificationError


def _data(n=400, seed=3):
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ np.array([-0.3, 0.8, -0.5]))))).astype(float)
    return y, x


def test_newton_from_a_start_reaches_the_irls_estimate():
    y, x = _data()
    w = np.random.default_rng(4).uniform(0.5, 2.0, len(y))
    for weights in (None, w):
        fit = fit_logistic(y, x, func="f", what="model", predicts="y", weights=weights, tol=1e-12)
        beta = newton_logistic(y, x, np.zeros(3), weights, func="f", what="model")
        np.testing.assert_allclose(beta, fit.params, rtol=0, atol=1e-9)


def test_separation_is_one_package_error_naming_the_model():
    y, x = _data()
    y = (x[:, 1] > 0).astype(float)  # the covariate predicts the outcome exactly
    with pytest.raises(ModelSpecificationError, match="separation in the propensity model 'a ~ z'.*treatment exactly"):
        fit_logistic(y, x, func="iptw", what="propensity model 'a ~ z'", predicts="treatment")


def test_one_outcome_level_is_a_package_error():
    y, x = _data()
    with pytest.raises(ModelSpecificationError, match="(could not be fitted|separation|non-finite)"):
        fit_logistic(np.ones_like(y), x, func="ccw", what="deviation model", predicts="starting treatment")
