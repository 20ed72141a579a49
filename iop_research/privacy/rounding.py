"""Rounded event and censoring counts of survival curves (numbers at risk that cannot be differenced).

A Kaplan-Meier curve with its numbers at risk publishes, at every time, how
many people are still followed. Two published numbers at risk one apart
(``168 -> 167``), or a survival step ``99.4% = 1 - 1/168``, say that exactly one
person left the risk set, or relapsed, in between: a count of 1, although no
cell of any table shows it. Suppressing small numbers at risk does not help,
the disclosure is in the *differences*.

The fix used by OpenSAFELY's Kaplan-Meier action [1]_: round the *cumulative*
numbers of events and of censorings at every time up to a multiple of a
rounding unit ``m`` and move them to the middle of their interval
(``ceil(c / m) * m - floor(m / 2)``; 0 stays 0), then derive every published
number (numbers at risk, steps, survival, confidence limits, medians) from
the rounded counts only. A reader who knows every rounded cumulative count
knows the true count ``c`` only up to an interval of ``m`` values, so the
number of events (or of exits) between any two times lies in ``0 .. m-1``
(rounded counts equal), ``1 .. 2m-1`` (one step apart) or above ``m``: with
``m >= min_cell_count`` no count in ``1 .. min_cell_count - 1`` between two
times can be narrowed below ``1 .. min_cell_count - 1``. The default unit is
``min_cell_count`` itself, so that the guarantee matches the protection
interval of :mod:`iop_research.privacy.audit`, and
:func:`rounding_bounds` gives the auditor the interval each rounded count
stands for (:meth:`iop_research.present.publish.Publisher.km` records them
in the ledger).

References
----------
.. [1] OpenSAFELY (2023). kaplan-meier-function reusable action:
   ``round_km`` (cumulative events and censorings rounded with ``roundmid_any``,
   numbers at risk and estimates derived from them).
   https://github.com/opensafely-actions/kaplan-meier-function
.. [2] Hundepool A, et al. (2012). *Statistical Disclosure Control*, section
   5.4 (rounding). Wiley.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids
from iop_research.privacy.suppression import check_min_cell_count

__all__ = ["round_mid", "rounding_bounds", "round_survival_counts"]


def _unit(rounding) -> int:
    if isinstance(rounding, bool) or not isinstance(rounding, (int, np.integer)) or rounding < 1:
        raise ModelSpecificationError(f"rounding must be a positive whole number, got {rounding!r}.")
    return int(rounding)


def round_mid(counts, rounding: int) -> np.ndarray:
    """Round non-negative counts up to a multiple of ``rounding``, then to the middle of that interval.

    ``0`` stays ``0``; ``c >= 1`` becomes ``ceil(c / m) * m - floor(m / 2)``
    (OpenSAFELY's ``roundmid_any``).

    Examples
    --------
    >>> round_mid([0, 1, 11, 12, 22, 23], 11).tolist()
    [0, 6, 6, 17, 17, 28]
    """
    m = _unit(rounding)
    c = np.asarray(counts, dtype=float)
    if np.any(c < 0) or np.any(np.mod(c, 1) != 0):
        raise DataValidationError("round_mid: counts must be non-negative whole numbers.")
    out = np.ceil(c / m) * m - (m // 2)
    return np.where(c == 0, 0, out).astype(np.int64)


def rounding_bounds(rounded: int, rounding: int) -> tuple[int, int]:
    """The true counts a rounded count stands for: ``(lower, upper)`` (``(0, 0)`` for 0).

    Examples
    --------
    >>> rounding_bounds(6, 11), rounding_bounds(17, 11), rounding_bounds(0, 11)
    ((1, 11), (12, 22), (0, 0))
    """
    m = _unit(rounding)
    r = int(rounded)
    if r == 0:
        return 0, 0
    top = r + m // 2
    return top - m + 1, top


def round_survival_counts(
    km_tidy: pd.DataFrame,
    *,
    min_cell_count: int = 11,
    rounding: int | None = None,
    group_col: str = "group",
    time_col: str = "time",
    n_events_col: str = "n_events",
    n_censored_col: str = "n_censored",
) -> pd.DataFrame:
    """Rounded cumulative events and censorings of each curve, and the counts derived from them.

    Parameters
    ----------
    km_tidy : pandas.DataFrame
        Tidy curve table, one row per distinct time per group (events and
        censorings), as :func:`iop_research.survival.km.fit_km`'s ``.tidy``.
    min_cell_count : int, default 11
    rounding : int, optional
        Rounding unit; default ``min_cell_count``. A unit below
        ``min_cell_count`` leaves differences of ``1 .. rounding - 1`` exits
        narrower than the protection interval (the audit reports them).
    group_col, time_col, n_events_col, n_censored_col : str
        Column names.

    Returns
    -------
    pandas.DataFrame
        ``group, time, cum_events, cum_censored`` (true, for the caller's
        ledger bounds only, never to publish), ``cum_events_rounded,
        cum_censored_rounded, n_events, n_censored, n_at_risk`` (the last three
        derived from the rounded counts: the rounded total of the group minus
        the rounded exits before ``time``).

    Raises
    ------
    DataValidationError
        Missing columns, negative or fractional (weighted) counts.

    Examples
    --------
    >>> import pandas as pd
    >>> km = pd.DataFrame({"group": ["a"] * 3, "time": [10.0, 90.0, 200.0], "n_at_risk": [168, 167, 100],
    ...                    "n_events": [1, 0, 30], "n_censored": [0, 67, 70]})
    >>> r = round_survival_counts(km)
    >>> r[["time", "n_at_risk", "n_events", "n_censored"]].values.tolist()
    [[10.0, 166.0, 6.0, 0.0], [90.0, 160.0, 0.0, 72.0], [200.0, 88.0, 22.0, 66.0]]
    """
    k = check_min_cell_count(min_cell_count)
    m = k if rounding is None else _unit(rounding)
    need = [group_col, time_col, n_events_col, n_censored_col]
    lack = [c for c in need if c not in km_tidy.columns]
    if lack:
        raise DataValidationError(
            f"round_survival_counts: km_tidy lacks columns {format_ids(lack)}. Pass the .tidy table of a "
            f"Kaplan-Meier result (fit_km), or name the columns with *_col arguments."
        )
    parts = []
    for g, d in km_tidy.groupby(group_col, sort=False, dropna=False):
        per = d.groupby(time_col, sort=True)[[n_events_col, n_censored_col]].sum()
        ev = per[n_events_col].to_numpy(dtype=float)
        ce = per[n_censored_col].to_numpy(dtype=float)
        if np.any(np.mod(ev, 1) != 0) or np.any(np.mod(ce, 1) != 0) or np.any(ev < 0) or np.any(ce < 0):
            raise DataValidationError(
                f"round_survival_counts: group {g!r} has fractional or negative event or censoring counts "
                f"(a weighted curve). Round weighted curves' counts before publishing, or publish the "
                f"unweighted curve."
            )
        cev, cce = np.cumsum(ev).astype(np.int64), np.cumsum(ce).astype(np.int64)
        rev, rce = round_mid(cev, m), round_mid(cce, m)
        total = int(rev[-1] + rce[-1]) if rev.size else 0
        before = np.r_[0, (rev + rce)[:-1]]
        parts.append(pd.DataFrame({
            "group": [g] * per.shape[0], "time": per.index.to_numpy(dtype=float),
            "cum_events": cev, "cum_censored": cce, "cum_events_rounded": rev, "cum_censored_rounded": rce,
            "n_events": np.diff(np.r_[0, rev]).astype(float), "n_censored": np.diff(np.r_[0, rce]).astype(float),
            "n_at_risk": (total - before).astype(float),
        }))
    cols = ["group", "time", "cum_events", "cum_censored", "cum_events_rounded", "cum_censored_rounded",
            "n_events", "n_censored", "n_at_risk"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
