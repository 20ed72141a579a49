"""Designs for fair comparisons: inverse probability of treatment weighting with
balance diagnostics, IPTW Cox with the M-estimation variance, propensity-score
matching, landmark analysis (per-protocol with censoring weights), marginal structural
Cox models, E-values, target trial emulation by clone-censor-weight, adjusted
(counterfactual) survival curves by g-computation or IPTW.
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'iptw': 'causal',
    'IptwResult': 'causal',
    'landmark_analysis': 'causal',
    'evalue': 'causal',
    'clone_censor_weight': 'ccw',
    'sustained_treatment': 'ccw',
    'BALANCE_COLUMNS': 'causal',
    'POSITIVITY_COLUMNS': 'causal',
    'standardized_difference': 'balance',
    'standardized_mean_difference': 'balance',
    'adjusted_survival': 'adjusted',
    'iptw_cox': 'iptw_cox',
    'ps_match': 'matching',
    'msm_cox': 'msm',
})
