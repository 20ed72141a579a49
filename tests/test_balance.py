"""Tests of iop_research.designs.balance: the one SMD implementation (issue 11, point 5)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.designs.balance import standardized_difference, standardized_mean_difference


def test_standardized_difference_by_hand():
    x1, x0 = np.array([1.0, 4.0, 6.0, 9.0]), np.array([2.0, 2.0, 3.0])
    sd = np.sqrt((np.var(x1, ddof=1) + np.var(x0, ddof=1)) / 2)
    assert standardized_difference(x1, x0) == pytest.approx((x1.mean() - x0.mean()) / sd, rel=1e-14)
    assert standardized_difference(x0, x1) == pytest.approx(-(x1.mean() - x0.mean()) / sd, rel=1e-14)
    # binary: variances p(1 - p) (Austin 2009)
    b1, b0 = np.array([1, 1, 1, 0]), np.array([1, 0, 0, 0, 0])
    p1, p0 = 0.75, 0.2
    assert standardized_difference(b1, b0, binary=True) == pytest.approx(
        (p1 - p0) / np.sqrt((p1 * (1 - p1) + p0 * (1 - p0)) / 2), rel=1e-14)


def test_weights_move_only_the_numerator():
    x1, x0 = np.array([1.0, 2.0, 5.0]), np.array([0.0, 3.0, 4.0])
    w1, w0 = np.array([1.0, 3.0, 0.5]), np.array([2.0, 1.0, 1.0])
    sd = np.sqrt((np.var(x1, ddof=1) + np.var(x0, ddof=1)) / 2)
    expected = (np.average(x1, weights=w1) - np.average(x0, weights=w0)) / sd
    got = standardized_difference(x1, x0, treated_weights=w1, control_weights=w0)
    assert got == pytest.approx(expected, rel=1e-14)


def test_zero_sd_edge_cases():
    assert standardized_difference([2.0, 2.0], [2.0, 2.0]) == 0.0
    assert standardized_difference([3.0, 3.0], [2.0, 2.0]) == np.inf
    assert standardized_difference([1.0], [2.0]) == -np.inf


def test_table_smd_is_the_absolute_pairwise_maximum():
    v = pd.Series([1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 10.0, 11.0, 12.0])
    g = pd.Series(list("aaabbbccc"))
    parts = [v[g == k].to_numpy() for k in "abc"]
    pair_max = max(abs(standardized_difference(a, b)) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert standardized_mean_difference(v, g) == pytest.approx(pair_max, rel=1e-14)


def test_present_tables_reexports_the_same_function():
    from iop_research.present import tables

    assert tables.standardized_mean_difference is standardized_mean_difference
