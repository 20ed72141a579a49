"""The day axis of every derive step: calendar dates as whole days since 1970-01-01.

One conversion, used by episodes, exposures, outcomes and frames on pandas data and inside
engine (Ibis) expressions alike, so that a date means the same day number everywhere. Times
of day are dropped (dates are normalised to midnight first).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError

__all__ = ["EPOCH", "day_number", "date_from_day"]

#: Day 0 of the day axis.
EPOCH = pd.Timestamp("1970-01-01")


def _is_ibis(values: Any) -> bool:
    mod = type(values).__module__
    return mod.startswith("ibis.")


def day_number(values: Any, *, missing: int | None = None):
    """Whole days since 1970-01-01 of dates (pandas data, a scalar, or an Ibis column).

    Parameters
    ----------
    values : scalar, array-like, pandas.Series or ibis column expression
        Dates or timestamps (strings are parsed by :func:`pandas.to_datetime`); the time
        of day is dropped.
    missing : int, optional
        Day number given to missing dates. Default None: missing dates become NaN (the
        result is then float) for array-like input, and a scalar missing date raises.
        Ignored for Ibis expressions (missing stays NULL).

    Returns
    -------
    int, numpy.ndarray or ibis column
        A Python ``int`` for a scalar; for array-like input a numpy array (``int64`` when
        ``missing`` is given, else ``float64`` with NaN); an integer Ibis expression for an
        Ibis column (evaluated by the engine).

    Raises
    ------
    DataValidationError
        A scalar date that is missing while ``missing`` is None.

    See Also
    --------
    date_from_day : the inverse.

    Examples
    --------
    >>> day_number("1970-01-02")
    1
    >>> day_number(["2024-01-01 13:45", None], missing=-1).tolist()
    [19723, -1]
    """
    if _is_ibis(values):
        return values.cast("date").epoch_days()
    if np.ndim(values) == 0 and not isinstance(values, (pd.Series, pd.Index)):
        ts = pd.Timestamp(values) if values is not None else pd.NaT
        if pd.isna(ts):
            if missing is None:
                raise DataValidationError(
                    f"day_number: {values!r} is a missing date; pass a date such as '2023-12-31'."
                )
            return int(missing)
        return int((ts.normalize() - EPOCH).days)
    d = pd.to_datetime(pd.Series(np.asarray(values) if not isinstance(values, pd.Series) else values.to_numpy()))
    days = (d.dt.normalize() - EPOCH).dt.days.astype("float64").to_numpy()
    if missing is None:
        return days
    return np.where(np.isnan(days), missing, days).astype("int64")


def date_from_day(days: Any):
    """Dates of day numbers (inverse of :func:`day_number`).

    Parameters
    ----------
    days : int, array-like or ibis column expression
        Whole days since 1970-01-01 (NaN = missing for array-like input).

    Returns
    -------
    pandas.Timestamp, pandas.Series of datetime64 or ibis date expression

    Examples
    --------
    >>> date_from_day(19723)
    Timestamp('2024-01-01 00:00:00')
    """
    if _is_ibis(days):
        import ibis

        return ibis.date(str(EPOCH.date())) + days.cast("int32").as_interval("D")
    if np.ndim(days) == 0:
        return EPOCH + pd.Timedelta(days=int(days))
    return EPOCH + pd.to_timedelta(pd.Series(days, dtype="float64"), unit="D")
