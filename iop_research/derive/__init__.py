"""Everything built on the engine (DuckDB in process, or any Ibis backend): episodes,
MAT eras, outcomes, analysis frames, cohorts, and the public splitting helpers.
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'EngineSession': 'engine',
    'get_backend': 'engine',
    'as_table': 'engine',
    'collect': 'engine',
    'day_number': 'days',
    'date_from_day': 'days',
    'build_episodes': 'episodes',
    'episode_attrition': 'episodes',
    'EPISODE_COLUMNS': 'episodes',
    'ATTRITION_COLUMNS': 'episodes',
    'medication_eras': 'exposures',
    'proportion_days_covered': 'exposures',
    'ERA_COLUMNS': 'exposures',
    'PDC_COLUMNS': 'exposures',
    'RelapseDefinition': 'outcomes',
    'relapse_outcomes': 'outcomes',
    'recurrent_relapses': 'outcomes',
    'retention_outcomes': 'outcomes',
    'OUTCOME_COLUMNS': 'outcomes',
    'RECURRENT_COLUMNS': 'outcomes',
    'RETENTION_COLUMNS': 'outcomes',
    'survival_frame': 'frames',
    'counting_process_frame': 'frames',
    'landmark_frame': 'frames',
    'split_at': 'frames',
    'MAT_CLASSES': 'frames',
    'BASELINE_COVARIATES': 'frames',
    'Attrition': 'cohorts',
    'CohortDefinition': 'cohorts',
    'select_cohort': 'cohorts',
    'exposure_switch': 'splitting',
    'censor_at': 'splitting',
    'split_after_exposure': 'splitting',
})
