"""Survival estimators, each equal to R on the same data.

Kaplan-Meier, log-rank and RMST (:mod:`iop_research._km`), the Cox model with its
counting-process engine and the proportional-hazards test
(:mod:`iop_research._cox`), and competing risks (:mod:`iop_research._competing`)
are implemented in private modules and published here. Every function takes a
DataFrame plus column names and returns a frozen :class:`~iop_research._results.Result`
with fixed-name ``tidy`` and ``glance`` tables.

==========================  =============================================  ==========================
function                    method                                         R reference
==========================  =============================================  ==========================
``fit_km``                  Kaplan-Meier, Greenwood variance               ``survival::survfit``
``logrank_test``            G(rho, gamma) k-sample test, strata, trend     ``survival::survdiff``
``rmst``                    restricted mean survival time                  ``survRM2::rmst2``
``fit_cox``                 Cox PH, Efron/Breslow, strata, weights,        ``survival::coxph``
                            cluster-robust, ``(start, stop]`` data
``ph_test``                 scaled Schoenfeld residual test                ``survival::cox.zph``
``cumulative_incidence``    Aalen-Johansen                                 ``cmprsk::cuminc``
``gray_test``               Gray's K-sample test                           ``cmprsk::cuminc``
``fit_fine_gray``           subdistribution hazards                        ``cmprsk::crr``
``fit_cause_specific``      Cox with other causes censored                 ``survival::coxph``
``fit_turnbull``            interval-censored NPMLE (Turnbull)             ``survfit(Surv(type="interval2"))``
``fit_interval_aft``        interval-censored Weibull/log-logistic AFT     ``survival::survreg``
==========================  =============================================  ==========================
"""
from __future__ import annotations

from ._competing import cumulative_incidence, fit_cause_specific, fit_fine_gray, gray_test
from ._cox import fit_cox, ph_test
from ._km import fit_km, logrank_test, rmst
from .interval import fit_interval_aft, fit_turnbull

__all__ = [
    "fit_km",
    "logrank_test",
    "rmst",
    "fit_cox",
    "ph_test",
    "cumulative_incidence",
    "gray_test",
    "fit_fine_gray",
    "fit_cause_specific",
    "fit_turnbull",
    "fit_interval_aft",
]
