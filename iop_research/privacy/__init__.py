"""Disclosure control: small-cell suppression of published counts and their checks.

:mod:`.suppression` hides small counts (primary) and the cells that would give them
away (secondary, chosen by :mod:`.secondary` with the auditor in the loop);
:mod:`.audit` keeps a :class:`~.audit.Ledger` of everything a report publishes and
computes, by mixed integer programming, how far a reader can narrow each hidden
count (:func:`~.audit.audit_ledger`, :func:`~.audit.audit_ledgers` across a
study's reports); :mod:`.rounding` rounds the cumulative event and censoring
counts of survival curves so that numbers at risk cannot be differenced
(used by :meth:`iop_research.present.publish.Publisher.km`). Study reports publish through
:class:`iop_research.present.publish.Publisher`. De-identified exports are made by
:func:`iop_research.data.deidentify.deidentify`, re-exported here.
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'DEFAULT_MIN_CELL_COUNT': 'suppression',
    'SuppressionMask': 'suppression',
    'suppress_small_cells': 'suppression',
    'suppression_mask': 'suppression',
    'apply_suppression': 'suppression',
    'format_suppressed': 'suppression',
    'suppress_risk_table': 'suppression',
    'check_no_small_cells': 'suppression',
    'deidentify': 'iop_research.data.deidentify',
    'Ledger': 'audit',
    'audit_ledger': 'audit',
    'audit_ledgers': 'audit',
    'audit_table': 'audit',
    'protect_cells': 'secondary',
    'protect_lines': 'suppression',
    'round_mid': 'rounding',
    'rounding_bounds': 'rounding',
    'round_survival_counts': 'rounding',
})
