"""The data contract: tables and vocabularies (:mod:`.schema`), reading and writing
(:mod:`.io`), the cohort simulator (:mod:`.synth`) and de-identification
(:mod:`.deidentify`). Imports nothing above it.
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'Col': 'schema',
    'Modality': 'schema',
    'DischargeReason': 'schema',
    'ReferralSource': 'schema',
    'PrimarySubstance': 'schema',
    'Medication': 'schema',
    'MedicationClass': 'schema',
    'EventType': 'schema',
    'UdsResult': 'schema',
    'Sex': 'schema',
    'Housing': 'schema',
    'Employment': 'schema',
    'TABLES': 'schema',
    'TABLE_COLUMNS': 'schema',
    'MEDICATION_CLASS': 'schema',
    'ASAM_21_MIN_HOURS_ADULT': 'schema',
    'ASAM_21_MIN_HOURS_ADOLESCENT': 'schema',
    'VOCABULARIES': 'schema',
    'ValueRange': 'schema',
    'COLUMN_RANGES': 'schema',
    'UNIQUE_COLUMNS': 'schema',
    'ROW_KEY': 'schema',
    'REQUIRED_TABLES': 'schema',
    'PROBLEM_COLUMNS': 'schema',
    'column_kinds': 'schema',
    'empty_table': 'schema',
    'table_schema': 'schema',
    'coerce_tables': 'schema',
    'find_problems': 'schema',
    'validate_tables': 'schema',
    'IOPData': 'io',
    'read_data': 'io',
    'FORMATS': 'io',
    'DataWriteError': 'io',
    'SimulationEffects': 'synth',
    'SimulationTruth': 'synth',
    'DEFAULT_EFFECTS': 'synth',
    'simulate_cohort': 'synth',
    'deidentify': 'deidentify',
    'hash_identifier': 'deidentify',
    'MIN_SALT_LENGTH': 'deidentify',
    'AGE_CAP_YEARS': 'deidentify',
})
