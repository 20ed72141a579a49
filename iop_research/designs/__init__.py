"""Designs for fair comparisons: inverse probability of treatment weighting with
balance diagnostics, landmark analysis, E-values, adjusted (counterfactual) survival
curves by g-computation or IPTW.
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'iptw': 'causal',
    'IptwResult': 'causal',
    'landmark_analysis': 'causal',
    'evalue': 'causal',
    'BALANCE_COLUMNS': 'causal',
    'POSITIVITY_COLUMNS': 'causal',
    'adjusted_survival': 'adjusted',
})
