"""Survival estimators, each equal to R on the same data.

Kaplan-Meier, log-rank and RMST (:mod:`.km`), the Cox model with its
counting-process engine and the proportional-hazards test
(:mod:`.cox`), the shared gamma frailty Cox model (:mod:`.frailty`), and competing risks (:mod:`.competing`)
are implemented in one module each and published here. Every function takes a
DataFrame plus column names and returns a frozen :class:`~iop_research.results.Result`
with fixed-name ``tidy`` and ``glance`` tables.

==========================  =============================================  ==========================
function                    method                                         R reference
==========================  =============================================  ==========================
``fit_km``                  Kaplan-Meier, Greenwood variance               ``survival::survfit``
``logrank_test``            G(rho, gamma) k-sample test, strata, trend     ``survival::survdiff``
``rmst``                    restricted mean survival time                  ``survRM2::rmst2``
``fit_cox``                 Cox PH, Efron/Breslow, strata, weights,        ``survival::coxph``
                            cluster-robust, ``(start, stop]`` data
``fit_frailty``             Cox PH with a shared gamma frailty per         ``coxph(+ frailty(id))``
                            cluster (penalised partial likelihood)
``ph_test``                 scaled Schoenfeld residual test                ``survival::cox.zph``
``cumulative_incidence``    Aalen-Johansen                                 ``cmprsk::cuminc``
``gray_test``               Gray's K-sample test                           ``cmprsk::cuminc``
``fit_fine_gray``           subdistribution hazards                        ``cmprsk::crr``
``fit_cause_specific``      Cox with other causes censored                 ``survival::coxph``
``fit_turnbull``            interval-censored NPMLE (Turnbull)             ``survfit(Surv(type="interval2"))``
``fit_interval_aft``        interval-censored Weibull/log-logistic AFT     ``survival::survreg``
``baseline_hazard``         Breslow/Efron baseline hazard per stratum      ``survival::basehaz``
``predict_survival``        survival curves for new profiles, Tsiatis SE   ``survfit(coxph, newdata)``
``predict_risk``            lp / risk / expected                           ``predict.coxph``
``predict_cif``             Fine-Gray predicted CIF                        ``cmprsk::predict.crr``
``cox_residuals``           martingale ... dfbetas, collapse by cluster    ``residuals.coxph``
``concordance_index``       Harrell's / Uno's C, IJ standard error         ``survival::concordance``
``time_dependent_auc``      cumulative/dynamic AUC (IPCW)                  scikit-survival
``brier_score``             IPCW Brier and integrated Brier score          scikit-survival
``calibrate_survival``      KM by risk group, pseudo-value smooth, ICI     (Austin et al. 2020)
``split_train_test``        random / stratified / grouped split
``bootstrap_optimism``      Harrell's optimism-corrected performance
==========================  =============================================  ==========================

Every estimator parses its columns with the package's one validation policy
(:mod:`iop_research._validate`: the same fault raises
:class:`~iop_research.exceptions.EstimatorInputError` with the same message shape
everywhere) and builds covariates with the one design builder (:mod:`iop_research._design`:
``covariates=[...]`` or ``formula=``, categoricals dummy-coded against their first level,
terms named ``col[T.level]`` with a readable ``label``). Result tables are read-only.
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "fit_km": "km",
    "logrank_test": "km",
    "rmst": "km",
    "fit_cox": "cox",
    "ph_test": "cox",
    "fit_frailty": "frailty",
    "cumulative_incidence": "competing",
    "gray_test": "competing",
    "fit_fine_gray": "competing",
    "fit_cause_specific": "competing",
    "fit_turnbull": "interval",
    "fit_interval_aft": "interval",
    "baseline_hazard": "predict",
    "predict_survival": "predict",
    "predict_risk": "predict",
    "predict_cif": "predict",
    "cox_residuals": "residuals",
    "concordance_index": "metrics",
    "time_dependent_auc": "metrics",
    "brier_score": "metrics",
    "calibrate_survival": "metrics",
    "split_train_test": "metrics",
    "bootstrap_optimism": "metrics",
})
