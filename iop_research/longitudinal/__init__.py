"""Longitudinal (repeated-measures) estimators, each equal to R on the same data.

Domain-free like :mod:`iop_research.survival`: a function takes a DataFrame plus column
names and returns a frozen :class:`~iop_research.results.Result` with fixed-name ``tidy``
and ``glance`` tables.

==========================  =============================================  ==========================
function                    method                                         R reference
==========================  =============================================  ==========================
``fit_gee``                 GEE, exchangeable / AR(1) / independence       ``geepack::geeglm``
                            working correlation, robust (sandwich) SEs
``fit_glmm``                GLMM (binomial, poisson) with a random         ``lme4::glmer``,
                            intercept by Laplace / adaptive Gauss-Hermite, ``lme4::lmer``
                            or a correlated intercept and slope
                            (``random_slope=``) by Laplace; LMM by
                            REML / ML
``programme_rates``         risk-standardised rates per programme:         ``glm`` + exact Poisson
                            indirect standardisation (O/E) with funnel     limits; ``lme4::glmer``
                            limits, or hierarchical (CMS predicted /       (hierarchical), written
                            expected, bootstrap of programmes)             out
==========================  =============================================  ==========================
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "fit_gee": "gee",
    "fit_glmm": "glmm",
    "programme_rates": "programmes",
    "funnel_limits": "programmes",
})
