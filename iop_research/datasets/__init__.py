"""Bundled and public data sets: the demo cohort (package data), the UIS and HELP
trials, SAMHSA TEDS-D and TEDS-A (:mod:`.teds`, code books in :mod:`._codebook`).
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'load_demo': 'loaders',
    'demo_truth': 'loaders',
    'demo_path': 'loaders',
    'DEMO_SEED': 'loaders',
    'DEMO_N_PATIENTS': 'loaders',
    'DEMO_FORMAT': 'loaders',
    'load_uis': 'loaders',
    'load_help': 'loaders',
    'uis_treatment_phases': 'loaders',
    'loader_attrition': 'loaders',
    'read_teds_d': 'teds',
    'read_teds_a': 'teds',
    'teds_attrition': 'teds',
    'teds_missing': 'teds',
    'write_teds_d_like': 'teds',
    'write_teds_a_like': 'teds',
    'TEDS_FORMATS': 'teds',
    'UIS_URL': 'loaders',
    'HELP_URL': 'loaders',
    'IOP_SERVICES_CODE': 'teds',
    'read_omop': 'omop',
    'write_omop': 'omop',
    'load_concept_sets': 'omop',
    'resolve_concept_sets': 'omop',
    'omop_source': 'omop',
    'OMOP_ROLES': 'omop',
})
