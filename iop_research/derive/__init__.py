"""Everything built on the engine (DuckDB in process, or any Ibis backend): episodes,
MAT eras, outcomes, analysis frames, cohorts, the public splitting helpers, and the
missing-covariate policies (complete case, missing indicator, multiple imputation).
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'get_backend': 'engine',
    'as_table': 'engine',
    'collect': 'engine',
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
    'complete_case': 'impute',
    'missing_indicator': 'impute',
    'nelson_aalen': 'impute',
    'impute_chained': 'impute',
    'imputation_methods': 'impute',
    'pool_rubin': 'impute',
    'POOL_TIDY_COLUMNS': 'impute',
    'POOL_GLANCE_COLUMNS': 'impute',
})
