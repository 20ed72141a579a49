"""Figures that compare programmes: funnel plot and caterpillar plot of risk-standardised rates.

Both take :func:`~iop_research.longitudinal.programme_rates` (or its tidy table). A point
on either figure gives away the programme's observed count (O/E times E on the funnel; the
rate times the programme's size); programmes whose observed events or non-events are
between 1 and ``min_cell_count - 1`` are therefore not drawn, and the caption says how many
were left out and why.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError
from iop_research.longitudinal.programmes import funnel_limits
from iop_research.present.plots import _new_ax, _require, _table_of
from iop_research.privacy.suppression import DEFAULT_MIN_CELL_COUNT, check_min_cell_count

__all__ = ["plot_funnel", "plot_caterpillar", "drawable_programmes"]

_NEEDED = ("programme", "n", "observed", "expected", "oe_ratio")


def drawable_programmes(table: pd.DataFrame, min_cell_count: int = DEFAULT_MIN_CELL_COUNT) -> tuple[pd.DataFrame, int]:
    """Rows safe to draw (events and non-events each 0 or at least ``min_cell_count``) and how many were held back."""
    min_cell_count = check_min_cell_count(min_cell_count)
    obs = table["observed"].to_numpy(dtype=float)
    non = table["n"].to_numpy(dtype=float) - obs
    small = ((obs > 0) & (obs < min_cell_count)) | ((non > 0) & (non < min_cell_count))
    return table.loc[~small], int(small.sum())


def _caption_hidden(k: int, min_cell_count: int) -> str:
    if not k:
        return ""
    return (f" {k} programme{'s' if k != 1 else ''} with 1 to {min_cell_count - 1} events or non-events "
            f"{'are' if k != 1 else 'is'} not shown (small counts).")


def plot_funnel(rates, *, ax=None, min_cell_count: int = DEFAULT_MIN_CELL_COUNT, label: bool = True,
                labels: Mapping[str, str] | None = None, ylabel: str = "Observed / expected"):
    """Funnel plot: each programme's O/E against its expected count, with 95% and 99.8% limits.

    Parameters
    ----------
    rates : Result or pandas.DataFrame
        :func:`~iop_research.longitudinal.programme_rates` or its tidy table.
    ax : matplotlib.axes.Axes, optional
    min_cell_count : int, default 11
        Programmes with 1 to ``min_cell_count - 1`` events or non-events are left out.
    label : bool, default True
        Name the programmes outside the 99.8% limits.
    labels : mapping, optional
        Display names of programmes.
    ylabel : str

    Returns
    -------
    matplotlib.axes.Axes
        Points are a ``PathCollection`` (gid ``"programmes"``); the limits are lines with gids
        ``"limit95"`` and ``"limit998"``; ``ax.iop_caption`` describes the figure.
    """
    where = "plot_funnel"
    t = _table_of(rates, where)
    if "oe_ratio" not in t.columns and "pe_ratio" in t.columns:
        raise DataValidationError(
            f"{where}: got hierarchical rates (predicted / expected, method='hierarchical'). Funnel limits are "
            "the spread of observed / expected under no programme effect, which a shrunken predicted / expected "
            "ratio does not follow. Draw the funnel from programme_rates(..., method='indirect') and show the "
            "hierarchical rates with plot_caterpillar."
        )
    _require(t, _NEEDED, where)
    shown, hidden = drawable_programmes(t, min_cell_count)
    ax, created = _new_ax(ax)
    e_all = t["expected"].to_numpy(dtype=float)
    grid = np.linspace(max(min(e_all.min(), 1.0) * 0.8, 0.5), e_all.max() * 1.1, 300)
    for p_lo, p_hi, gid, style in ((0.025, 0.975, "limit95", "--"), (0.001, 0.999, "limit998", ":")):
        ax.plot(grid, funnel_limits(grid, p_lo), style, color="0.4", lw=1, gid=gid)
        ax.plot(grid, funnel_limits(grid, p_hi), style, color="0.4", lw=1, gid=gid)
    ax.axhline(1.0, color="0.2", lw=0.8)
    ax.scatter(shown["expected"], shown["oe_ratio"], s=22, color="#0072B2", zorder=3, gid="programmes")
    if label and "flag" in shown.columns:
        names = labels or {}
        for _, r in shown[shown["flag"] != ""].iterrows():
            ax.annotate(str(names.get(r["programme"], r["programme"])), (r["expected"], r["oe_ratio"]),
                        xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("Expected events (case-mix model)")
    ax.set_ylabel(ylabel)
    ax.iop_caption = ("Funnel plot: observed over expected events per programme against the expected count; "
                      "dashed lines 95% and dotted lines 99.8% limits under no programme effect."
                      + _caption_hidden(hidden, min_cell_count))
    return ax


def plot_caterpillar(rates, *, ax=None, min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
                     labels: Mapping[str, str] | None = None, percent: bool = True,
                     xlabel: str = "Risk-standardised rate (95% CI)"):
    """Caterpillar plot: risk-standardised rates with intervals, programmes sorted by rate.

    Returns
    -------
    matplotlib.axes.Axes
        Points (gid ``"estimate"``), intervals (``LineCollection``, gid ``"ci"``), the overall
        rate as a vertical line (gid ``"overall"``); ``ax.iop_caption``.
    """
    where = "plot_caterpillar"
    t = _table_of(rates, where)
    _require(t, ("programme", "n", "observed", "rate_standardized", "conf_low", "conf_high", "rate_crude"), where)
    hierarchical = "pe_ratio" in t.columns and "oe_ratio" not in t.columns
    shown, hidden = drawable_programmes(t, min_cell_count)
    shown = shown.sort_values("rate_standardized")
    k = len(shown)
    ax, created = _new_ax(ax, figsize=(6.4, max(2.5, 0.28 * k + 1.2)))
    from matplotlib.collections import LineCollection  # noqa: PLC0415

    scale = 100.0 if percent else 1.0
    y = np.arange(k)
    lo, hi = shown["conf_low"].to_numpy() * scale, np.minimum(shown["conf_high"].to_numpy(), 1.0) * scale
    ax.add_collection(LineCollection([[(a, b), (c, b)] for a, c, b in zip(lo, hi, y)], colors="0.3", gid="ci"))
    ax.plot(shown["rate_standardized"] * scale, y, "o", color="#0072B2", gid="estimate")
    overall = float((t["observed"].sum() / t["n"].sum()) * scale)
    ax.axvline(overall, color="0.2", lw=0.8, ls="--", gid="overall")
    names = labels or {}
    ax.set_yticks(y)
    ax.set_yticklabels([str(names.get(p, p)) for p in shown["programme"]])
    ax.set_xlabel(xlabel + (" %" if percent else ""))
    ax.set_ylim(-0.7, k - 0.3)
    made = str(getattr(rates, "conventions", {}).get("interval", ""))
    how = ("predicted (with the programme's shrunken random effect) over expected times the overall rate, dashed; "
           + ("intervals from the approximate posterior of the programme effects" if "posterior" in made
              else "bootstrap of programmes") if hierarchical
           else "observed over expected times the overall rate, dashed")
    ax.iop_caption = (f"Risk-standardised rates with 95% intervals ({how})." + _caption_hidden(hidden, min_cell_count))
    return ax
