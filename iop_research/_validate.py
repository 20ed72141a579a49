"""One validation policy for every estimator's input columns.

Every estimator in :mod:`iop_research.survival` and :mod:`iop_research.designs` parses
its columns here, so the same fault raises the same exception class,
:class:`~iop_research.exceptions.EstimatorInputError`, with the same message shape
wherever it happens::

    <function>: column '<name>' (<role>) has <n> <problem> (rows: <first index labels>). <fix>

(``"columns '<start>'/'<stop>' (interval) have <n> row(s) with <stop> <= <start> ..."`` for
intervals). Rows are never dropped here: a bad row is an error naming where it is, and
the caller excludes it explicitly (and counts it) before fitting.

Argument faults that are not about a column (``conf_level`` outside (0, 1), an unknown
option) are :class:`~iop_research.exceptions.ModelSpecificationError`.

The functions return plain numpy arrays; none modifies the frame.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import EstimatorInputError, ModelSpecificationError, format_ids

__all__ = [
    "require_frame",
    "numeric_column",
    "duration_column",
    "event_indicator",
    "event_codes",
    "start_stop",
    "entry_column",
    "weights_column",
    "label_codes",
    "strata_codes",
    "cluster_codes",
    "binary_column",
    "interval_bounds",
    "check_conf_level",
    "days_argument",
    "number_argument",
    "complete_column",
    "factor_levels",
    "row_labels",
]

_NEVER_DROPPED = "Drop or impute these rows explicitly before fitting (rows are never dropped silently)."


def row_labels(df: pd.DataFrame, mask: np.ndarray) -> str:
    """First few index labels of the rows where ``mask`` is True, for a message."""
    return format_ids(df.index[np.asarray(mask, dtype=bool)].tolist())


def _fault(df, mask, *, func: str, col: str, role: str, problem: str, fix: str, check: str) -> EstimatorInputError:
    mask = np.asarray(mask, dtype=bool)
    n = int(mask.sum())
    rows = df.index[mask].tolist()
    return EstimatorInputError(
        f"{func}: column {col!r} ({role}) has {n} {problem} (rows: {format_ids(rows)}). {fix}",
        func=func, column=col, check=check, n_rows=n, rows=rows[:5],
    )


def require_frame(df: Any, func: str, columns: Mapping[str, str | Sequence[str] | None],
                  *, allow_empty: bool = False, multi: Sequence[str] = ("covariates",)) -> None:
    """Check that ``df`` is a non-empty DataFrame holding every named column.

    Parameters
    ----------
    df : object
        What the user passed.
    func : str
        Name of the estimator, starts every message.
    columns : mapping of str to str, list of str or None
        Argument name -> column name(s); None entries are skipped.
    allow_empty : bool, default False
        Accept a frame without rows.
    multi : sequence of str, default ("covariates",)
        Arguments that may name several columns; any other argument must name one.

    Raises
    ------
    EstimatorInputError
        ``check`` ``"not_a_frame"``, ``"missing_column"`` or ``"empty"``.
    """
    if not isinstance(df, pd.DataFrame):
        raise EstimatorInputError(
            f"{func}: expected a pandas DataFrame, got {type(df).__name__}. Pass the analysis frame "
            "(one row per episode, or per (start, stop] interval).",
            func=func, check="not_a_frame",
        )
    missing: list[str] = []
    first = None
    for arg, names in columns.items():
        if names is None:
            continue
        if isinstance(names, (list, tuple, pd.Index, np.ndarray, pd.Series)):
            if arg not in multi:
                raise ModelSpecificationError(f"{func}: {arg} must be one column name, got {names!r}.")
            names = list(names)
        elif arg == "covariates" and not isinstance(names, str):
            raise ModelSpecificationError(f"{func}: {arg} must be a list of column names, got {names!r}.")
        else:
            names = [names]
        for name in names:
            if name not in df.columns:
                missing.append(f"{arg}={name!r}")
                first = first if first is not None else name
    if missing:
        raise EstimatorInputError(
            f"{func}: column(s) not found in the data frame: {', '.join(missing)}. Available columns: "
            f"{format_ids([str(c) for c in df.columns], limit=12)}. Fix the *_col / covariates argument "
            "(names are case-sensitive).",
            func=func, column=first, check="missing_column",
        )
    if len(df) == 0 and not allow_empty:
        raise EstimatorInputError(
            f"{func}: the data frame has no rows; nothing to estimate. Check the cohort filter.",
            func=func, check="empty",
        )


def _as_float(df: pd.DataFrame, col: str, *, func: str, role: str, finite: bool = True) -> np.ndarray:
    s = df[col]
    if pd.api.types.is_bool_dtype(s.dtype) and not s.isna().any():
        return s.to_numpy(dtype=float)
    if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
        raise EstimatorInputError(
            f"{func}: column {col!r} ({role}) must be numeric, found dtype {s.dtype}. Convert it first, "
            f"e.g. df[{col!r}] = pd.to_numeric(df[{col!r}]).",
            func=func, column=col, check="dtype",
        )
    arr = s.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(arr) if finite else np.isnan(arr)
    if bad.any():
        raise _fault(df, bad, func=func, col=col, role=role, check="missing",
                     problem="missing or infinite value(s)" if finite else "missing value(s)", fix=_NEVER_DROPPED)
    return arr


def numeric_column(df: pd.DataFrame, col: str, *, func: str, role: str, nonneg: bool = False,
                   fix_negative: str = "Values must be >= 0.") -> np.ndarray:
    """A finite numeric column as float (booleans become 0/1).

    Raises
    ------
    EstimatorInputError
        Non-numeric dtype (``"dtype"``), missing or infinite values (``"missing"``), negative
        values when ``nonneg`` (``"negative"``).
    """
    arr = _as_float(df, col, func=func, role=role)
    if nonneg:
        neg = arr < 0
        if neg.any():
            raise _fault(df, neg, func=func, col=col, role=role, check="negative",
                         problem="negative value(s)", fix=fix_negative)
    return arr


def duration_column(df: pd.DataFrame, col: str, *, func: str) -> np.ndarray:
    """Follow-up times: finite, ``>= 0`` (0 allowed, as R's ``Surv``)."""
    return numeric_column(
        df, col, func=func, role="duration", nonneg=True,
        fix_negative="Durations are days from the analysis origin and must be >= 0 (0 is allowed, as in R's "
        "Surv); check the time origin of these rows.",
    )


def weights_column(df: pd.DataFrame, col: str, *, func: str) -> np.ndarray:
    """Case weights: finite, ``>= 0``."""
    return numeric_column(df, col, func=func, role="case weights", nonneg=True,
                          fix_negative="Case weights must be >= 0; fix the weighting step that made them.")


def event_indicator(df: pd.DataFrame, col: str, *, func: str) -> np.ndarray:
    """A 0/1 (or boolean) event indicator as float.

    Raises
    ------
    EstimatorInputError
        Non-numeric dtype (``"dtype"``), missing values (``"missing"``), values other than 0/1
        (``"not_binary"``).
    """
    s = df[col]
    fix = ("Recode to 1 = event, 0 = censored; competing causes go to cumulative_incidence / fit_fine_gray "
           "(or fit_cause_specific).")
    if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
        raise EstimatorInputError(
            f"{func}: column {col!r} (event) must hold only 0/1 or bool, found dtype {s.dtype}. {fix} "
            f"E.g. (df[{col!r}] == 'yes').astype(int).",
            func=func, column=col, check="dtype",
        )
    arr = _as_float(df, col, func=func, role="event", finite=False)
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        raise _fault(df, bad, func=func, col=col, role="event", check="not_binary",
                     problem="value(s) other than 0/1 (it must hold only 0/1 or bool)", fix=fix)
    return arr


def event_codes(df: pd.DataFrame, col: str, *, func: str, censor_code: Any = 0):
    """Competing-risks event codes.

    Returns
    -------
    tuple
        ``(values, is_censored, causes)``: the raw codes (numpy array), a boolean mask of
        ``censor_code`` rows and the sorted causes present (numbers numerically, labels
        alphabetically, as ``cmprsk::cuminc``).

    Raises
    ------
    EstimatorInputError
        Missing codes (``"missing"``).
    """
    s = df[col]
    bad = s.isna().to_numpy()
    if bad.any():
        raise _fault(df, bad, func=func, col=col, role="event", check="missing", problem="missing value(s)",
                     fix=f"Code censored rows as {censor_code!r} and each cause with its own code.")
    vals = s.to_numpy()
    is_cens = np.asarray(vals == censor_code, dtype=bool)
    causes = pd.unique(vals[~is_cens]).tolist()
    try:
        causes = sorted(causes)
    except TypeError:
        causes = sorted(causes, key=str)
    return vals, is_cens, causes


def _interval_fault(df, bad, *, func, lo_col, hi_col, fix) -> EstimatorInputError:
    n = int(bad.sum())
    rows = df.index[bad].tolist()
    return EstimatorInputError(
        f"{func}: columns {lo_col!r}/{hi_col!r} (interval) have {n} row(s) with {hi_col} <= {lo_col} "
        f"(rows: {format_ids(rows)}). {fix}",
        func=func, column=hi_col, check="interval", n_rows=n, rows=rows[:5],
    )


def start_stop(df: pd.DataFrame, start_col: str, stop_col: str, *, func: str) -> tuple[np.ndarray, np.ndarray]:
    """Counting-process ``(start, stop]`` bounds: finite numbers with ``stop > start``."""
    start = numeric_column(df, start_col, func=func, role="start")
    stop = numeric_column(df, stop_col, func=func, role="stop")
    bad = stop <= start
    if bad.any():
        raise _interval_fault(df, bad, func=func, lo_col=start_col, hi_col=stop_col,
                              fix="Intervals are (start, stop] and must have positive length; fix or drop these "
                              "rows explicitly.")
    return start, stop


def entry_column(df: pd.DataFrame, entry_col: str, time: np.ndarray, *, func: str, duration_col: str) -> np.ndarray:
    """Delayed-entry times: finite, strictly before the row's duration."""
    entry = numeric_column(df, entry_col, func=func, role="entry")
    bad = time <= entry
    if bad.any():
        raise _interval_fault(df, bad, func=func, lo_col=entry_col, hi_col=duration_col,
                              fix="The risk interval is (entry, duration] and must not be empty; fix the entry "
                              "times or drop these rows explicitly.")
    return entry


def complete_column(df: pd.DataFrame, col: str, *, func: str, role: str = "covariate") -> pd.Series:
    """The column, checked to have no missing (and, if numeric, no infinite) values."""
    s = df[col]
    bad = s.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        bad = bad | ~np.isfinite(s.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        raise _fault(df, bad, func=func, col=col, role=role, check="missing",
                     problem="missing or infinite value(s)", fix=_NEVER_DROPPED)
    return s


def factor_levels(s: pd.Series) -> list:
    """Levels in R ``factor()`` order: a Categorical's categories (unused dropped), else sorted."""
    return _levels(s)


def _levels(s: pd.Series) -> list:
    """Levels in R ``factor()`` order: a Categorical's categories (unused dropped), else sorted."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        present = set(pd.unique(s.dropna()).tolist())
        return [lv for lv in s.cat.categories.tolist() if lv in present]
    vals = pd.unique(s.dropna()).tolist()
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def _require_labels(df: pd.DataFrame, col: str, *, func: str, role: str) -> pd.Series:
    s = df[col]
    bad = s.isna().to_numpy()
    if bad.any():
        raise _fault(df, bad, func=func, col=col, role=role, check="missing", problem="missing value(s)",
                     fix="Give them a level of their own (e.g. 'unknown') or drop them explicitly.")
    return s


def label_codes(df: pd.DataFrame, col: str, *, func: str, role: str = "group") -> tuple[np.ndarray, list]:
    """Integer codes and levels of a grouping column (R ``factor()`` order, unused levels dropped)."""
    s = _require_labels(df, col, func=func, role=role)
    if isinstance(s.dtype, pd.CategoricalDtype):
        used = s.cat.remove_unused_categories()
        return np.asarray(used.cat.codes, dtype=np.int64), used.cat.categories.tolist()
    levels = _levels(s)
    codes = pd.Index(levels).get_indexer(s)
    if (codes < 0).any():  # mixed types that compare unequal after sorting: fall back to strings
        levels_s = [str(v) for v in levels]
        codes = pd.Index(levels_s).get_indexer(s.astype(str))
    return np.asarray(codes, dtype=np.int64), levels


def strata_codes(df: pd.DataFrame, cols: str | Sequence[str], *, func: str) -> np.ndarray:
    """Integer stratum codes from one or more columns (combinations, sorted)."""
    cols = [cols] if isinstance(cols, str) else list(cols)
    codes = [label_codes(df, c, func=func, role="strata")[0] for c in cols]
    if len(codes) == 1:
        return codes[0]
    combo = pd.MultiIndex.from_arrays(codes)
    return np.asarray(pd.factorize(combo, sort=True)[0], dtype=np.int64)


def cluster_codes(df: pd.DataFrame, col: str, *, func: str, role: str = "cluster") -> np.ndarray:
    """Integer codes of a cluster / id column (first-appearance order)."""
    s = _require_labels(df, col, func=func, role=role)
    return np.asarray(pd.factorize(s, sort=False)[0], dtype=np.int64)


def binary_column(df: pd.DataFrame, col: str, *, func: str, role: str = "treatment") -> np.ndarray:
    """A 0/1 (or boolean) column, e.g. treatment or exposure, as float; both values must occur."""
    s = df[col]
    bad = s.isna().to_numpy()
    if bad.any():
        raise _fault(df, bad, func=func, col=col, role=role, check="missing", problem="missing value(s)",
                     fix="Exclude them explicitly (and count them) before fitting.")
    fix = (f"Recode it to 0 (control) / 1 (treated), e.g. df.assign({col}=df[{col!r}].eq('yes').astype(int)).")
    if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
        raise EstimatorInputError(
            f"{func}: column {col!r} ({role}) must be coded 0 (control) / 1 (treated) or boolean, found dtype "
            f"{s.dtype} (values {format_ids(pd.unique(s).tolist())}). {fix}",
            func=func, column=col, check="dtype",
        )
    arr = s.to_numpy(dtype=float)
    other = ~np.isin(arr, (0.0, 1.0))
    if other.any():
        raise _fault(df, other, func=func, col=col, role=role, check="not_binary",
                     problem="value(s) other than 0/1 (it must be coded 0 (control) / 1 (treated) or boolean)",
                     fix=fix)
    if arr.min() == arr.max():
        raise ModelSpecificationError(
            f"{func}: every row has {col!r} = {int(arr[0])}; the comparison needs rows with 0 and with 1. "
            "Check the cohort filter."
        )
    return arr


def interval_bounds(df: pd.DataFrame, lower_col: str, upper_col: str, *, func: str) -> tuple[np.ndarray, np.ndarray]:
    """Interval-censored bounds, R ``Surv(lower, upper, type = "interval2")`` convention.

    ``lower`` finite and ``>= 0``; ``upper`` NaN or inf for right-censored rows, otherwise
    ``>= lower`` (equal = exact time).
    """
    lo = numeric_column(df, lower_col, func=func, role="lower bound", nonneg=True,
                        fix_negative="Bounds are days from the analysis origin and must be >= 0.")
    s = df[upper_col]
    if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
        raise EstimatorInputError(
            f"{func}: column {upper_col!r} (upper bound) must be numeric, found dtype {s.dtype}. Convert it first "
            f"(inf or NaN for right-censored rows).",
            func=func, column=upper_col, check="dtype",
        )
    hi = s.to_numpy(dtype=float, na_value=np.nan)
    hi = np.where(np.isnan(hi), np.inf, hi)
    bad = hi < lo
    if bad.any():
        n = int(bad.sum())
        rows = df.index[bad].tolist()
        raise EstimatorInputError(
            f"{func}: columns {lower_col!r}/{upper_col!r} (interval) have {n} row(s) with {upper_col} < {lower_col} "
            f"(rows: {format_ids(rows)}). Each row needs 0 <= {lower_col} <= {upper_col}; use {upper_col} = inf/NaN "
            "for right-censored rows, and fix or drop these rows explicitly.",
            func=func, column=upper_col, check="interval", n_rows=n, rows=rows[:5],
        )
    return lo, hi


def check_conf_level(conf_level: Any, func: str) -> float:
    """``conf_level`` strictly between 0 and 1 (e.g. 0.95)."""
    ok = isinstance(conf_level, (int, float, np.integer, np.floating)) and not isinstance(conf_level, bool)
    if not ok or not (0 < float(conf_level) < 1):
        raise ModelSpecificationError(
            f"{func}: conf_level must be a number strictly between 0 and 1, got {conf_level!r} (e.g. 0.95)."
        )
    return float(conf_level)


def days_argument(values: Any, func: str, name: str = "times") -> np.ndarray:
    """A non-empty sequence of finite day values ``>= 0`` (e.g. ``times=``), as float (order kept)."""
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        arr = np.array([np.nan])
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ModelSpecificationError(
            f"{func}: {name} must be a non-empty sequence of finite numbers of days >= 0, got {values!r}."
        )
    return arr


def number_argument(value: Any, func: str, name: str, *, positive: bool = False, nonneg: bool = False) -> float:
    """A finite number (``> 0`` with ``positive``, ``>= 0`` with ``nonneg``), as float."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    x = float(value) if ok else np.nan
    if not np.isfinite(x) or (positive and x <= 0) or (nonneg and x < 0):
        need = "a positive number" if positive else "a number >= 0" if nonneg else "a finite number"
        raise ModelSpecificationError(f"{func}: {name} must be {need}, got {value!r}.")
    return x
