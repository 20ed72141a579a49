"""Study file, report build, privacy gate and the command line. The only layer that
imports :mod:`iop_research.reports`.
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'read_study_config': 'config',
    'STUDY_KEYS': 'config',
    'build_reports': 'build',
    'data_fingerprint': 'build',
    'provenance': 'build',
    'notebook_fingerprints': 'build',
    'DEFAULT_NOTEBOOKS_DIR': 'build',
    'ReportOutcome': 'build',
    'Violation': 'gate',
    'scan_report_html': 'gate',
    'make_privacy_gate': 'gate',
    'identifier_values': 'gate',
    'RULES': 'gate',
    'COUNT_LABELS': 'gate',
    'main': 'cli',
})
