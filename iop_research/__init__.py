"""iop-research: outcomes research for intensive outpatient addiction treatment (IOP).

Only names listed in ``__all__`` are promised to stay. They are loaded lazily on
first use, so ``import iop_research`` is cheap and starts no engine.

Pipeline: ``read_data``/``load_demo``/``simulate_cohort`` -> ``IOPData`` ->
``build_episodes``, ``medication_eras`` -> ``survival_frame``,
``counting_process_frame``, ``landmark_frame`` -> survival estimators
(``fit_km``, ``logrank_test``, ``rmst``, ``fit_cox``, ``ph_test``,
``cumulative_incidence``, ``gray_test``, ``fit_fine_gray``) and causal designs
(``iptw``, ``landmark_analysis``, ``evalue``) -> ``tables`` / ``plots`` -> reports.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("iop-research")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

#: public name -> module that defines it
_EXPORTS = {
    "IOPData": "data.io",
    "read_data": "data.io",
    "load_demo": "datasets",
    "simulate_cohort": "data.synth",
    "build_episodes": "derive.episodes",
    "medication_eras": "derive.exposures",
    "RelapseDefinition": "derive.outcomes",
    "relapse_outcomes": "derive.outcomes",
    "recurrent_relapses": "derive.outcomes",
    "retention_outcomes": "derive.outcomes",
    "survival_frame": "derive.frames",
    "counting_process_frame": "derive.frames",
    "landmark_frame": "derive.frames",
    "CohortDefinition": "derive.cohorts",
    "select_cohort": "derive.cohorts",
    "fit_km": "survival",
    "logrank_test": "survival",
    "rmst": "survival",
    "fit_cox": "survival",
    "ph_test": "survival",
    "fit_frailty": "survival",
    "cumulative_incidence": "survival",
    "gray_test": "survival",
    "fit_fine_gray": "survival",
    "fit_cause_specific": "survival",
    "fit_turnbull": "survival",
    "fit_interval_aft": "survival",
    "load_uis": "datasets",
    "load_help": "datasets",
    "read_teds_d": "datasets",
    "iptw": "designs.causal",
    "landmark_analysis": "designs.causal",
    "evalue": "designs.causal",
    "clone_censor_weight": "designs.ccw",
    "fit_gee": "longitudinal.gee",
    "fit_glmm": "longitudinal.glmm",
    "read_teds_a": "datasets",
    "suppress_small_cells": "privacy.suppression",
    "deidentify": "data.deidentify",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'iop_research' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
