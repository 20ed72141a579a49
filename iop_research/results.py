"""Frozen result objects shared by every estimator.

After R's broom and statsmodels' model/results split, an estimator returns a
result with fixed-name tidy tables:

``tidy``
    one row per term (models, tests) or per time point (curves). Column names
    never change with options. Coefficient tables carry ``term`` (the design
    column name, e.g. ``sex[T.m]``) and ``label`` (readable, ``"Sex: m"``).
``glance``
    one row of fit statistics, or, for estimators that fit one curve per group
    (:func:`~iop_research.survival.km.fit_km`,
    :func:`~iop_research.survival.interval.fit_turnbull`), one row per group with
    ``group`` as first column. Counts of events are always ``n_events``.
``model``
    the underlying fitted object (statsmodels / our own), an escape hatch; may be
    ``None``.
``extra``
    further named tables (e.g. ``medians``, ``balance``), read-only mapping.

The contract is enforced, not only documented: ``tidy``, ``glance`` and every
``extra`` table are :class:`ReadOnlyFrame` objects. Reading works as on any
DataFrame, and anything derived from them (``r.tidy.copy()``, ``r.tidy[mask]``,
``r.tidy.assign(...)``, ``r.tidy.round(2)``) is an ordinary, writable DataFrame; writing
into the result's own tables (``r.tidy["x"] = ...``, ``r.tidy.loc[0, "x"] = ...``,
``.iloc``/``.at``/``.iat``, ``inplace=True`` methods, attribute assignment) raises
:class:`~iop_research.exceptions.ReadOnlyResultError`, and the numpy arrays behind them
are not writeable, so chained assignment and ``to_numpy()`` writes fail too. This is
plain Python on top of the public DataFrame API plus numpy's ``writeable`` flag, so it
behaves the same on pandas 2.2 and 3.x.

Results render in notebooks via ``_repr_html_`` with what a researcher looks for
first (:meth:`Result.summary`): medians with CI and n/events per group for curves,
the coefficient table with hazard ratios and CI for Cox-type models, statistic / df /
p for tests; then every glance row, the tidy table and the conventions.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import pandas as pd

from iop_research.exceptions import ArgumentTypeError, ReadOnlyResultError

__all__ = [
    "Result",
    "ReadOnlyFrame",
    "TIDY_TERM_COLUMNS",
    "TIDY_COX_COLUMNS",
    "TIDY_KM_COLUMNS",
    "GLANCE_TEST_COLUMNS",
]

#: Fixed tidy columns of term-level results (``label`` is the readable name of ``term``).
TIDY_TERM_COLUMNS = ("term", "label", "estimate", "std_error", "conf_low", "conf_high", "p_value")
#: Cox models add these.
TIDY_COX_COLUMNS = TIDY_TERM_COLUMNS + ("hazard_ratio", "hr_conf_low", "hr_conf_high")
#: Kaplan-Meier tables.
TIDY_KM_COLUMNS = (
    "group",
    "time",
    "n_at_risk",
    "n_events",
    "n_censored",
    "survival",
    "std_error",
    "conf_low",
    "conf_high",
)
#: Hypothesis tests' glance.
GLANCE_TEST_COLUMNS = ("statistic", "df", "p_value")

_HINT = "Result tables are read-only; take a copy to change it, e.g. t = result.tidy.copy()."


def _refuse(what: str):
    def method(self, *args, **kwargs):
        raise ReadOnlyResultError(f"cannot {what}: {_HINT}")

    method.__name__ = what
    return method


def _no_inplace(name: str):
    base = getattr(pd.DataFrame, name)

    def method(self, *args, **kwargs):
        if kwargs.get("inplace"):
            raise ReadOnlyResultError(f"cannot call {name}(inplace=True): {_HINT}")
        return base(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"pandas.DataFrame.{name}, refusing inplace=True (result tables are read-only)."
    return method


class _ReadOnlyIndexer:
    """``.loc``/``.iloc``/``.at``/``.iat`` of a :class:`ReadOnlyFrame`: reads pass through, writes raise."""

    __slots__ = ("_indexer", "_name")

    def __init__(self, indexer, name: str):
        self._indexer = indexer
        self._name = name

    def __getitem__(self, key):
        return self._indexer[key]

    def __setitem__(self, key, value):
        raise ReadOnlyResultError(f"cannot assign through .{self._name}[...]: {_HINT}")

    def __call__(self, *args, **kwargs):
        return _ReadOnlyIndexer(self._indexer(*args, **kwargs), self._name)

    def __getattr__(self, name):
        return getattr(self._indexer, name)


_INPLACE_METHODS = (
    "drop", "rename", "rename_axis", "set_index", "reset_index", "sort_values", "sort_index", "fillna",
    "ffill", "bfill", "replace", "where", "mask", "clip", "interpolate", "dropna", "drop_duplicates", "query",
    "eval",
)


class ReadOnlyFrame(pd.DataFrame):
    """A DataFrame that refuses changes; everything derived from it is a normal DataFrame.

    Result tables are of this type. Take ``frame.copy()`` for a writable frame.
    """

    _metadata: list[str] = []

    @property
    def _constructor(self):
        return pd.DataFrame

    def __setitem__(self, key, value):
        raise ReadOnlyResultError(f"cannot set column {key!r}: {_HINT}")

    def __delitem__(self, key):
        raise ReadOnlyResultError(f"cannot delete column {key!r}: {_HINT}")

    def __setattr__(self, name: str, value) -> None:
        if not name.startswith("_") and self.__dict__.get("_iop_frozen", False):
            raise ReadOnlyResultError(f"cannot set attribute {name!r}: {_HINT}")
        super().__setattr__(name, value)

    insert = _refuse("insert a column")
    pop = _refuse("pop a column")
    update = _refuse("update in place")
    isetitem = _refuse("set a column")

    @property
    def loc(self):
        return _ReadOnlyIndexer(pd.DataFrame.loc.fget(self), "loc")

    @property
    def iloc(self):
        return _ReadOnlyIndexer(pd.DataFrame.iloc.fget(self), "iloc")

    @property
    def at(self):
        return _ReadOnlyIndexer(pd.DataFrame.at.fget(self), "at")

    @property
    def iat(self):
        return _ReadOnlyIndexer(pd.DataFrame.iat.fget(self), "iat")

    def __reduce__(self):
        # unpickle as a plain DataFrame: a pickled result table is the user's copy
        return (pd.DataFrame, (pd.DataFrame(self).copy(),))


for _name in _INPLACE_METHODS:
    setattr(ReadOnlyFrame, _name, _no_inplace(_name))


def _lock_arrays(df: pd.DataFrame) -> None:
    """Mark the numpy arrays behind ``df`` non-writeable (best effort over pandas versions)."""
    mgr = getattr(df, "_mgr", None)
    for blk in getattr(mgr, "blocks", ()):
        vals = blk.values
        for arr in (vals, getattr(vals, "_ndarray", None), getattr(vals, "_codes", None),
                    getattr(vals, "_data", None), getattr(vals, "_mask", None)):
            if isinstance(arr, np.ndarray):
                arr.flags.writeable = False


def freeze_frame(df: pd.DataFrame) -> ReadOnlyFrame:
    """A read-only copy of ``df`` (already frozen frames are returned as they are)."""
    if isinstance(df, ReadOnlyFrame):
        return df
    if not isinstance(df, pd.DataFrame):
        raise ArgumentTypeError(f"result tables must be pandas DataFrames, got {type(df).__name__}")
    out = ReadOnlyFrame(pd.DataFrame(df).copy(deep=True))
    _lock_arrays(out)
    object.__setattr__(out, "_iop_frozen", True)
    out.__dict__["_iop_frozen"] = True
    return out


def _rebuild(cls, state):
    return cls(**state)


@dataclass(frozen=True)
class Result:
    """A fitted estimator's output.

    Parameters
    ----------
    method : str
        Human-readable name of the method, e.g. ``"Kaplan-Meier"``.
    tidy : pandas.DataFrame
        Fixed-name tidy table (stored as a read-only copy).
    glance : pandas.DataFrame
        One row of fit statistics, or one row per group with a leading ``group`` column
        (stored as a read-only copy).
    model : object, optional
        Underlying fitted object.
    extra : mapping of str to DataFrame, optional
        Further named tables (read-only copies), also reachable as attributes
        (``result.medians``).
    conventions : mapping of str to str, optional
        Conventions used, stated next to R's (ties, CI transform, variance).
    """

    method: str
    tidy: pd.DataFrame
    glance: pd.DataFrame
    model: Any = None
    extra: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    conventions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "tidy", freeze_frame(self.tidy))
        object.__setattr__(self, "glance", freeze_frame(self.glance))
        extra = {k: freeze_frame(v) if isinstance(v, pd.DataFrame) else v for k, v in dict(self.extra).items()}
        object.__setattr__(self, "extra", MappingProxyType(extra))
        object.__setattr__(self, "conventions", MappingProxyType(dict(self.conventions)))
        for f in fields(self):  # Series fields of subclasses (e.g. IptwResult.weights): locked copies
            value = getattr(self, f.name)
            if isinstance(value, pd.Series):
                locked = value.copy(deep=True)
                _lock_arrays(locked)
                object.__setattr__(self, f.name, locked)

    def __reduce__(self):
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["extra"] = dict(state["extra"])
        state["conventions"] = dict(state["conventions"])
        return (_rebuild, (type(self), state))

    def __getattr__(self, name: str):
        # extra tables are reachable as attributes: result.medians
        extra = object.__getattribute__(self, "extra")
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @property
    def is_grouped(self) -> bool:
        """Whether ``glance`` has one row per group (a leading ``group`` column)."""
        return "group" in self.glance.columns

    def summary(self) -> pd.DataFrame:
        """The headline table a researcher reads first (a plain DataFrame).

        Curves with medians: ``group, n, n_events, median, median_conf_low,
        median_conf_high``; Cox-type models: ``term, label, hazard_ratio, hr_conf_low,
        hr_conf_high, p_value``; tests: ``statistic, df, p_value``; other coefficient
        tables: ``term, label, estimate, conf_low, conf_high, p_value``; otherwise ``glance``.
        """
        tidy, glance = self.tidy, self.glance
        medians = self.extra.get("medians")
        if isinstance(medians, pd.DataFrame) and "group" in glance.columns and "median" in medians.columns:
            counts = glance[[c for c in ("group", "n", "n_events") if c in glance.columns]]
            med = medians.rename(columns={"conf_low": "median_conf_low", "conf_high": "median_conf_high"})
            return pd.DataFrame(counts).merge(pd.DataFrame(med), on="group", how="left")
        lead = [c for c in ("term", "label") if c in tidy.columns]
        if {"hazard_ratio", "hr_conf_low", "hr_conf_high"} <= set(tidy.columns):
            return pd.DataFrame(tidy[lead + ["hazard_ratio", "hr_conf_low", "hr_conf_high", "p_value"]])
        if set(GLANCE_TEST_COLUMNS) <= set(glance.columns):
            cols = (["group"] if "group" in glance.columns else []) + list(GLANCE_TEST_COLUMNS)
            return pd.DataFrame(glance[cols])
        if lead and {"estimate", "conf_low", "conf_high"} <= set(tidy.columns):
            cols = lead + ["estimate", "conf_low", "conf_high"] + (["p_value"] if "p_value" in tidy.columns else [])
            return pd.DataFrame(tidy[cols])
        return pd.DataFrame(glance)

    def _repr_html_(self) -> str:
        def table(df: pd.DataFrame) -> str:
            return pd.DataFrame(df).to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="NA")

        summary = self.summary()
        parts = [f"<h4>{html.escape(self.method)}</h4>", table(summary)]
        if list(summary.columns) != list(self.glance.columns):
            by = " (one row per group)" if self.is_grouped else ""
            parts.append(f"<p><b>glance</b>{by}</p>")
            parts.append(table(self.glance))
        tidy = self.tidy
        note = f"tidy: {len(tidy)} rows" + ("; first 40 shown" if len(tidy) > 40 else "")
        parts.append(f"<details><summary>{note}</summary>{table(tidy.head(40))}</details>")
        if self.extra:
            parts.append(f"<p>extra: {html.escape(', '.join(self.extra))}</p>")
        if self.conventions:
            items = "".join(
                f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in self.conventions.items()
            )
            parts.append(f"<details><summary>conventions</summary><ul>{items}</ul></details>")
        return "\n".join(parts)

    def __repr__(self) -> str:
        def text(df: pd.DataFrame) -> str:
            body = pd.DataFrame(df).to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="NA")
            return "\n".join("  " + line for line in body.splitlines())

        summary = self.summary()
        lines = [f"<{self.method}>", text(summary)]
        if list(summary.columns) != list(self.glance.columns):
            lines += ["glance (one row per group):" if self.is_grouped else "glance:", text(self.glance)]
        if set(GLANCE_TEST_COLUMNS) <= set(summary.columns) and len(self.tidy) <= 10:
            lines += ["tidy:", text(self.tidy)]
        extra = f"; extra: {', '.join(self.extra)}" if self.extra else ""
        lines.append(f"tidy: {self.tidy.shape[0]} rows x {self.tidy.shape[1]} columns{extra}")
        return "\n".join(lines)
