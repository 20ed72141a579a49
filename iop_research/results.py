"""Frozen result objects shared by every estimator.

After R's broom and statsmodels' model/results split, an estimator returns a
result with fixed-name tidy tables:

``tidy``
    one row per term (models, tests) or per time point (curves). Column names
    never change with options.
``glance``
    one row of fit statistics.
``model``
    the underlying fitted object (lifelines / statsmodels / our own), an escape
    hatch; may be ``None``.
``extra``
    further named tables (e.g. ``medians``, ``balance``), read-only mapping.

Results render as HTML in notebooks via ``_repr_html_``.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import pandas as pd

__all__ = ["Result", "TIDY_TERM_COLUMNS", "TIDY_COX_COLUMNS", "TIDY_KM_COLUMNS", "GLANCE_TEST_COLUMNS"]

#: Fixed tidy columns of term-level results.
TIDY_TERM_COLUMNS = ("term", "estimate", "std_error", "conf_low", "conf_high", "p_value")
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


def _frozen_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy whose numpy blocks are read-only where pandas allows it."""
    out = df.copy()
    try:
        for col in out.columns:
            arr = out[col].to_numpy()
            if hasattr(arr, "flags") and arr.base is None:
                arr.flags.writeable = False
    except Exception:  # pragma: no cover - best effort only
        pass
    return out


@dataclass(frozen=True)
class Result:
    """A fitted estimator's output.

    Parameters
    ----------
    method : str
        Human-readable name of the method, e.g. ``"Kaplan-Meier"``.
    tidy : pandas.DataFrame
        Fixed-name tidy table.
    glance : pandas.DataFrame
        One-row table of fit statistics.
    model : object, optional
        Underlying fitted object.
    extra : mapping of str to DataFrame, optional
        Further named tables.
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
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))
        object.__setattr__(self, "conventions", MappingProxyType(dict(self.conventions)))

    def __getattr__(self, name: str):
        # extra tables are reachable as attributes: result.medians
        extra = object.__getattribute__(self, "extra")
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.method)}</h4>"]
        if len(self.glance):
            parts.append(self.glance.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
        tidy = self.tidy
        if len(tidy) > 40:
            parts.append(f"<p>tidy: {len(tidy)} rows; first 40 shown.</p>")
            tidy = tidy.head(40)
        parts.append(tidy.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
        if self.conventions:
            items = "".join(
                f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in self.conventions.items()
            )
            parts.append(f"<ul>{items}</ul>")
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"<{self.method}: tidy {self.tidy.shape[0]}x{self.tidy.shape[1]}, glance {dict(self.glance.iloc[0]) if len(self.glance) else {}}>"
