"""Publication figures from tidy result tables.

Every function takes a result object (:class:`iop_research.results.Result`:
its ``.tidy``, or the named ``extra`` table such as ``balance``) or the
precomputed table itself (a tidy table, a balance table, ...) and an optional
``ax``; it draws and returns the Axes. Nothing is
estimated here: numbers at risk come from
:func:`iop_research.privacy.suppress_risk_table`, smooths from
:func:`iop_research.present.tables.smooth_curve`, box statistics from
:func:`iop_research.present.tables.los_summary`.

Figures read in greyscale and for colour-blind readers: colours are the
Okabe-Ito palette [1]_ and each group also gets its own line style and marker.
Small cells are never drawn: curves stop where fewer than ``min_cell_count``
patients remain at risk, the time axis ends at the last day a curve is drawn
(the axis range itself shows how far the data may be shown), and the caption
(:func:`figure_caption`) says where each curve ends; counts in ``1 ..
min_cell_count-1`` print as ``"<11"``.

matplotlib is imported inside the functions, never at module import.

References
----------
.. [1] Okabe M, Ito K (2008). Color Universal Design (CUD): how to make figures
   and presentations that are friendly to colorblind people. J*Fly.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, format_ids
from iop_research.privacy.suppression import DEFAULT_MIN_CELL_COUNT, SuppressionMask, format_suppressed, suppress_risk_table

__all__ = [
    "OKABE_ITO",
    "LINESTYLES",
    "MARKERS",
    "STYLE_RC",
    "style",
    "apply_style",
    "plot_km",
    "plot_cif",
    "plot_forest",
    "plot_love",
    "plot_swimmer",
    "plot_attrition",
    "plot_modality_heatmap",
    "plot_los",
    "plot_schoenfeld",
    "figure_caption",
]

#: Okabe-Ito colour-blind-safe palette (black first; yellow last, weak on white).
OKABE_ITO = (
    "#000000",
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#F0E442",
)
#: Line styles cycled with the colours, so groups differ in greyscale.
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), (0, (3, 1, 1, 1)))
#: Markers cycled with the colours.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

#: rcParams of the house style.
STYLE_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "lines.linewidth": 1.6,
}


def _rc() -> dict:
    from cycler import cycler

    rc = dict(STYLE_RC)
    rc["axes.prop_cycle"] = cycler(color=list(OKABE_ITO)) + cycler(linestyle=list(LINESTYLES))
    return rc


@contextmanager
def style() -> Iterator[None]:
    """Context manager applying the house style (fonts, sizes, palette) temporarily.

    The colour cycle is Okabe-Ito combined with :data:`LINESTYLES`.

    Examples
    --------
    >>> import matplotlib
    >>> with style():
    ...     matplotlib.rcParams["legend.frameon"]
    False
    """
    import matplotlib

    with matplotlib.rc_context(_rc()):
        yield


def apply_style() -> None:
    """Apply the house style to matplotlib's global rcParams (for notebooks).

    Changes global state; prefer ``with style():`` in library code.
    """
    import matplotlib

    matplotlib.rcParams.update(_rc())


def _new_ax(ax, figsize=(6.4, 4.8)):
    created = ax is None
    if created:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
    return ax, created


def _require(df: pd.DataFrame, cols: Sequence[str], where: str) -> None:
    lack = [c for c in cols if c not in df.columns]
    if lack:
        raise DataValidationError(
            f"{where}: input lacks columns {format_ids(lack)} (has {format_ids(df.columns)}). "
            f"Pass the matching tidy table, or name the columns with the *_col arguments."
        )


def _table_of(obj, where: str, *, extra: str | None = None) -> pd.DataFrame:
    """The table to plot: a DataFrame as given; of a result object its ``extra[extra]`` when
    named and present, else its ``.tidy``."""
    if isinstance(obj, pd.DataFrame):
        return obj
    tables = getattr(obj, "extra", None)
    if extra is not None and isinstance(tables, Mapping) and extra in tables:
        return tables[extra]
    tidy = getattr(obj, "tidy", None)
    if isinstance(tidy, pd.DataFrame):
        return tidy
    to_frame = getattr(obj, "to_frame", None)  # e.g. an Attrition accumulator
    if callable(to_frame):
        return to_frame()
    raise DataValidationError(
        f"{where}: expected a result object (with .tidy) or a pandas DataFrame, got {type(obj).__name__}."
    )


def _label_key(key):
    """Lookup key that keeps booleans apart from numbers (``True == 1`` in Python)."""
    if isinstance(key, (bool, np.bool_)):
        return ("bool", bool(key))
    if isinstance(key, (int, float, np.integer, np.floating)) and not isinstance(key, bool):
        return ("number", float(key))
    return ("other", key)


def _labeller(*mappings: Mapping | None):
    """``label(key)``: the first mapping's label of ``key`` (type-strict), else ``str(key)``."""
    norm = [{_label_key(k): v for k, v in (m or {}).items()} for m in mappings]

    def label(key) -> str:
        k = _label_key(key)
        for m in norm:
            if k in m:
                return str(m[k])
        return str(key)

    return label


def figure_caption(ax) -> str:
    """The caption text a plot function stored for its Axes (empty when none).

    :func:`plot_km` and :func:`plot_cif` describe what is drawn and where each
    curve ends for privacy; pass it on to the figure's published caption.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> km = pd.DataFrame({"group": ["a"] * 3, "time": [10.0, 20.0, 30.0], "n_at_risk": [50, 30, 8],
    ...     "n_events": [10, 5, 2], "n_censored": [10, 17, 6], "survival": [0.8, 0.667, 0.5]})
    >>> figure_caption(plot_km(km, risk_table=False, conf_int=False))
    'Kaplan-Meier estimates; tick marks show censored follow-up. Curves end at the last day with at least 11 patients at risk (day 20), where the time axis ends.'
    """
    return str(getattr(ax, "iop_caption", "") or "")


def _cut_caption(ends: list[tuple[str, float | None, bool]], k: int, axis_end: float) -> str:
    """Caption sentence on where curves end. ``ends``: (label, last day drawn, was cut)."""
    cut = [(lab, end) for lab, end, was_cut in ends if was_cut]
    if not cut:
        return ""
    hidden = [lab for lab, end in cut if end is None]
    shown = [(lab, end) for lab, end in cut if end is not None]
    parts = []
    if shown:
        if len(ends) == 1:
            where = f"day {_fmt_time(shown[0][1])}"
        else:
            where = "; ".join(f"{lab}: day {_fmt_time(end)}" for lab, end in shown)
        parts.append(f"Curves end at the last day with at least {k} patients at risk ({where}), where the "
                     f"time axis ends." if all(end == axis_end for _, end in shown) or len(ends) == 1 else
                     f"Curves end at the last day with at least {k} patients at risk ({where}); the time axis "
                     f"ends at day {_fmt_time(axis_end)}.")
    if hidden:
        parts.append(f"Not shown (fewer than {k} at risk from the start): {', '.join(hidden)}.")
    return " ".join(parts)


def _nice_times(tmax: float) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(0, tmax)
    return [float(t) for t in ticks if 0 <= t <= tmax]


def _fmt_time(t: float) -> str:
    return f"{t:g}"


def _draw_curves(
    tidy: pd.DataFrame,
    keys: list,
    key_cols: list[str],
    *,
    ax,
    value_col: str,
    start_value: float,
    time_col: str,
    conf_int: bool,
    censor_marks: bool,
    min_cell_count: int,
    label_of,
    style_of,
) -> list[tuple[str, float | None, bool]]:
    """Draw step curves; return per curve (label, last day drawn or None, whether it was cut)."""
    ends = []
    for key in keys:
        sel = np.ones(len(tidy), bool)
        for c, v in zip(key_cols, key if isinstance(key, tuple) else (key,)):
            sel &= (tidy[c] == v).to_numpy()
        d = tidy[sel].sort_values(time_col)
        t = d[time_col].to_numpy(dtype=float)
        s = d[value_col].to_numpy(dtype=float)
        lo = d["conf_low"].to_numpy(dtype=float) if "conf_low" in d else np.full(t.size, np.nan)
        hi = d["conf_high"].to_numpy(dtype=float) if "conf_high" in d else np.full(t.size, np.nan)
        risk = d["n_at_risk"].to_numpy(dtype=float)
        cens = d["n_censored"].to_numpy(dtype=float) if "n_censored" in d else np.zeros(t.size)
        small = np.flatnonzero(risk < min_cell_count)
        label = label_of(key)
        was_cut = bool(small.size)
        if small.size:
            i = int(small[0])
            t, s, lo, hi, cens = t[:i], s[:i], lo[:i], hi[:i], cens[:i]
            if i == 0:
                ends.append((label, None, True))
                continue
        ends.append((label, float(t[-1]) if t.size else 0.0, was_cut))
        if t.size == 0 or t[0] > 0:
            t = np.r_[0.0, t]
            s = np.r_[start_value, s]
            lo = np.r_[start_value, lo]
            hi = np.r_[start_value, hi]
            cens = np.r_[0.0, cens]
        color, ls, marker = style_of(key)
        (line,) = ax.step(t, s, where="post", color=color, linestyle=ls, label=label)
        line.set_gid("curve")
        if conf_int and np.isfinite(lo).any():
            ax.fill_between(t, lo, hi, step="post", color=color, alpha=0.15, linewidth=0)
        if censor_marks and (cens > 0).any():
            (cm,) = ax.plot(t[cens > 0], s[cens > 0], linestyle="none", marker="|", markersize=7, color=color, label="_nolegend_")
            cm.set_gid("censor")
    return ends


def _risk_table_texts(ax, risk: pd.DataFrame, groups: list, label_of, *, col: str, created: bool, title: str) -> None:
    """Numbers at risk under the axes, placed in points below its bottom edge (any axes size)."""
    from matplotlib.transforms import blended_transform_factory

    disp = format_suppressed(risk)
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    y0, dy = -44.0, 13.0
    label_kw = dict(xycoords="axes fraction", textcoords="offset points", ha="right", va="center", annotation_clip=False)
    ax.annotate(title, (0.0, 0.0), xytext=(-20, y0), fontweight="bold", **label_kw)
    for j, g in enumerate(groups):
        y = y0 - dy * (j + 1)
        ax.annotate(str(label_of(g)), (0.0, 0.0), xytext=(-20, y), gid="risk_label", **label_kw)
        rows = disp[risk["group"].to_numpy() == g]
        for _, r in rows.iterrows():
            ax.annotate(r[col], (float(r["time"]), 0.0), xycoords=trans, xytext=(0, y), textcoords="offset points",
                        ha="center", va="center", annotation_clip=False, gid="risk_count")
    if created:
        height_pt = ax.figure.get_figheight() * 72.0
        ax.figure.subplots_adjust(bottom=min(0.6, (-y0 + dy * (len(groups) + 1) + 10) / height_pt + 0.05), left=0.2)


def plot_km(
    km_tidy: pd.DataFrame,
    *,
    ax=None,
    risk_table: bool | pd.DataFrame = True,
    censor_marks: bool = True,
    conf_int: bool = True,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    times: Sequence[float] | None = None,
    group_col: str = "group",
    time_col: str = "time",
    survival_col: str = "survival",
    labels: Mapping | None = None,
    xlabel: str = "Days",
    ylabel: str = "Probability without relapse",
):
    """Kaplan-Meier curves with confidence bands, censor marks and numbers at risk.

    Parameters
    ----------
    km_tidy : Result or pandas.DataFrame
        A Kaplan-Meier result (:func:`iop_research.survival.km.fit_km`) or its
        tidy table: ``group, time, n_at_risk, n_events, n_censored, survival,
        std_error, conf_low, conf_high``, one row per distinct time (events and
        censorings) per group.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default a new figure.
    risk_table : bool or pandas.DataFrame, default True
        Print numbers at risk under the plot at ``times``. A DataFrame from
        :func:`~iop_research.privacy.suppress_risk_table` is used as given.
        The table sits about 45 points below the axes; on a passed ``ax``,
        leave that room (``fig.subplots_adjust(bottom=...)``).
    censor_marks : bool, default True
        Tick marks at censoring times.
    conf_int : bool, default True
        Shade ``conf_low`` to ``conf_high`` (the CI as estimated, e.g. log-log).
    min_cell_count : int, default 11
        Curves stop at the last time with at least this many at risk; when a
        curve is cut, the time axis ends at the last day any curve is drawn
        (ticks and numbers at risk beyond it are dropped) and the caption says
        where each curve ends. Numbers at risk below it print as ``"<11"``.
    times : sequence of float, optional
        Days of the risk table and x ticks; default about six round values.
    group_col, time_col, survival_col : str
        Column names.
    labels : mapping, optional
        Display label of each group (``True`` and ``1`` are different keys).
    xlabel, ylabel : str
        Axis labels.

    Returns
    -------
    matplotlib.axes.Axes
        Curves are ``Line2D`` with gid ``"curve"``, censor marks gid
        ``"censor"``; risk-table texts are in ``ax.texts``. The caption text
        (what is drawn, where curves end for privacy) is
        :func:`figure_caption` ``(ax)``.

    Raises
    ------
    DataValidationError
        Missing columns.

    References
    ----------
    .. [1] Kaplan EL, Meier P (1958). Nonparametric estimation from incomplete
       observations. *JASA* 53:457-481.
    .. [2] Pocock SJ, Clayton TC, Altman DG (2002). Survival plots of
       time-to-event outcomes in clinical trials: good practice and pitfalls.
       *Lancet* 359:1686-1689.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> km = pd.DataFrame({"group": ["a"] * 3, "time": [10.0, 20.0, 30.0], "n_at_risk": [50, 30, 8],
    ...     "n_events": [10, 5, 2], "n_censored": [10, 17, 6], "survival": [0.8, 0.667, 0.5],
    ...     "std_error": [0.05, 0.07, 0.1], "conf_low": [0.7, 0.5, 0.3], "conf_high": [0.9, 0.8, 0.7]})
    >>> ax = plot_km(km, times=[0, 10, 20, 30])
    >>> [t.get_text() for t in ax.texts if t.get_gid() == "risk_count"]
    ['50', '50', '30']
    >>> float(round(ax.get_xlim()[1], 1))
    20.4
    >>> figure_caption(ax).split(". ")[1]
    'Curves end at the last day with at least 11 patients at risk (day 20), where the time axis ends.'
    """
    km_tidy = _table_of(km_tidy, "plot_km")
    _require(km_tidy, [group_col, time_col, survival_col, "n_at_risk"], "plot_km")
    ax, created = _new_ax(ax)
    tidy = km_tidy.rename(columns={group_col: "group", time_col: "time"})
    groups = list(pd.unique(tidy["group"]))
    label_of = _labeller(labels)
    style_of = lambda g: (  # noqa: E731
        OKABE_ITO[groups.index(g) % len(OKABE_ITO)],
        LINESTYLES[groups.index(g) % len(LINESTYLES)],
        MARKERS[groups.index(g) % len(MARKERS)],
    )
    ends = _draw_curves(
        tidy, groups, ["group"], ax=ax, value_col=survival_col, start_value=1.0, time_col="time",
        conf_int=conf_int, censor_marks=censor_marks, min_cell_count=min_cell_count,
        label_of=label_of, style_of=style_of,
    )
    bands = conf_int and "conf_low" in tidy and "conf_high" in tidy
    caption = ("Kaplan-Meier estimates" + (" with confidence bands" if bands else "")
               + ("; tick marks show censored follow-up" if censor_marks and "n_censored" in tidy else "") + ".")
    _finish_curve_axes(ax, tidy, ends, times, risk_table, groups, label_of, min_cell_count, created, xlabel, ylabel,
                       caption)
    return ax


def _finish_curve_axes(ax, tidy, ends, times, risk_table, groups, label_of, k, created, xlabel, ylabel, caption):
    drawn = [end for _, end, _ in ends if end is not None]
    cut = any(was_cut for _, _, was_cut in ends)
    tmax = float(tidy["time"].max()) if len(tidy) else 1.0
    if cut:  # the axis ends where the last curve ends: nothing is shown beyond it
        tmax = max(drawn) if drawn and max(drawn) > 0 else tmax
    if times is None:
        times = _nice_times(tmax)
    times = [float(t) for t in times if not cut or float(t) <= tmax]
    ax.set_xlim(0, (tmax if cut else max([tmax, *times])) * 1.02)
    ax.set_xticks(times)
    sentence = _cut_caption(ends, k, tmax)
    ax.iop_caption = " ".join(x for x in (caption, sentence) if x)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if any(not str(line.get_label()).startswith("_") for line in ax.get_lines()):
        ax.legend(loc="best")
    if risk_table is not False and risk_table is not None:
        if isinstance(risk_table, pd.DataFrame):
            risk = risk_table[risk_table["time"].astype(float).isin(times)] if cut else risk_table
        else:
            risk = suppress_risk_table(tidy, times=times, min_cell_count=k, include=("n_at_risk",))
        _risk_table_texts(ax, risk, groups, label_of, col="n_at_risk", created=created, title="At risk")


def plot_cif(
    cif_tidy: pd.DataFrame,
    *,
    ax=None,
    cause=None,
    risk_table: bool | pd.DataFrame = True,
    conf_int: bool = True,
    censor_marks: bool = False,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    times: Sequence[float] | None = None,
    group_col: str = "group",
    cause_col: str = "cause",
    time_col: str = "time",
    value_col: str = "cumulative_incidence",
    labels: Mapping | None = None,
    group_labels: Mapping | None = None,
    cause_labels: Mapping | None = None,
    xlabel: str = "Days",
    ylabel: str = "Cumulative incidence",
):
    """Cumulative incidence curves (competing risks) per group and cause.

    Parameters
    ----------
    cif_tidy : Result or pandas.DataFrame
        A cumulative-incidence result
        (:func:`iop_research.survival.competing.cumulative_incidence`) or its
        tidy table: ``group, cause, time, n_at_risk, n_events,
        cumulative_incidence, std_error, conf_low, conf_high`` (``n_censored``
        optional).
    ax : matplotlib.axes.Axes, optional
    cause : object or sequence, optional
        Cause(s) to draw; default all.
    group_labels, cause_labels : mapping, optional
        Display labels of groups and of causes, separately: ``group_labels=
        {True: "MAT"}, cause_labels={1: "relapse"}`` renames group ``True`` and
        cause ``1`` independently.
    labels : mapping, optional
        Labels looked up for groups and causes alike (after ``group_labels`` /
        ``cause_labels``); keys match by type, so ``{True: "MAT"}`` does not
        rename cause ``1``.
    risk_table, conf_int, censor_marks, min_cell_count, times, xlabel, ylabel
        As :func:`plot_km`. Colour follows the group, line style the cause.
    group_col, cause_col, time_col, value_col : str
        Column names.

    Returns
    -------
    matplotlib.axes.Axes
        One ``Line2D`` (gid ``"curve"``) per group and cause, labelled
        ``"<group>: <cause>"``; the caption text is :func:`figure_caption` ``(ax)``.

    References
    ----------
    .. [1] Kalbfleisch JD, Prentice RL (1980). *The Statistical Analysis of
       Failure Time Data* (cumulative incidence, Aalen-Johansen).
    .. [2] Gray RJ (1988). *Ann Stat* 16:1141-1154 (R ``cmprsk::cuminc``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> cif = pd.DataFrame({"group": ["a"] * 4, "cause": ["relapse", "death"] * 2, "time": [10.0, 10.0, 20.0, 20.0],
    ...     "n_at_risk": [40, 40, 20, 20], "n_events": [5, 1, 6, 0], "cumulative_incidence": [0.12, 0.02, 0.3, 0.02],
    ...     "std_error": [0.05] * 4, "conf_low": [0.05, 0.0, 0.2, 0.0], "conf_high": [0.2, 0.05, 0.4, 0.05]})
    >>> ax = plot_cif(cif, times=[0, 10, 20])
    >>> sorted(line.get_label() for line in ax.get_lines() if line.get_gid() == "curve")
    ['a: death', 'a: relapse']
    """
    cif_tidy = _table_of(cif_tidy, "plot_cif")
    _require(cif_tidy, [group_col, cause_col, time_col, value_col, "n_at_risk"], "plot_cif")
    ax, created = _new_ax(ax)
    tidy = cif_tidy.rename(columns={group_col: "group", cause_col: "cause", time_col: "time"})
    if cause is not None:
        wanted = list(cause) if isinstance(cause, (list, tuple, set)) else [cause]
        tidy = tidy[tidy["cause"].isin(wanted)]
        if tidy.empty:
            raise DataValidationError(
                f"plot_cif: no rows for cause {format_ids(wanted)} (causes: {format_ids(pd.unique(cif_tidy[cause_col]))})."
            )
    groups = list(pd.unique(tidy["group"]))
    causes = list(pd.unique(tidy["cause"]))
    keys = [(g, c) for g in groups for c in causes]
    group_label = _labeller(group_labels, labels)
    cause_label = _labeller(cause_labels, labels)
    label_of = lambda key: f"{group_label(key[0])}: {cause_label(key[1])}"  # noqa: E731
    style_of = lambda key: (  # noqa: E731
        OKABE_ITO[groups.index(key[0]) % len(OKABE_ITO)],
        LINESTYLES[causes.index(key[1]) % len(LINESTYLES)],
        MARKERS[groups.index(key[0]) % len(MARKERS)],
    )
    ends = _draw_curves(
        tidy, keys, ["group", "cause"], ax=ax, value_col=value_col, start_value=0.0, time_col="time",
        conf_int=conf_int, censor_marks=censor_marks and "n_censored" in tidy, min_cell_count=min_cell_count,
        label_of=label_of, style_of=style_of,
    )
    if risk_table is not False and risk_table is not None and not isinstance(risk_table, pd.DataFrame):
        rt = tidy.copy()
        if "n_censored" not in rt:
            rt["n_censored"] = 0
        if "n_events" not in rt:
            rt["n_events"] = 0
        t = times if times is not None else _nice_times(float(tidy["time"].max()))
        risk_table = suppress_risk_table(rt, times=t, min_cell_count=min_cell_count, include=("n_at_risk",))
        times = t
    bands = conf_int and "conf_low" in tidy and "conf_high" in tidy
    caption = ("Cumulative incidence of " + ", ".join(cause_label(c) for c in causes)
               + (" with confidence bands" if bands else "") + ", accounting for competing events.")
    _finish_curve_axes(ax, tidy, ends, times, risk_table, groups, group_label, min_cell_count, created, xlabel,
                       ylabel, caption)
    return ax


def plot_forest(
    cox_tidy: pd.DataFrame,
    *,
    ax=None,
    labels: Mapping[str, str] | None = None,
    term_col: str = "term",
    estimate_col: str = "hazard_ratio",
    low_col: str = "hr_conf_low",
    high_col: str = "hr_conf_high",
    annotate: bool = True,
    digits: int = 2,
    reference: float = 1.0,
    xlabel: str = "Hazard ratio (95% CI, log scale)",
):
    """Forest plot of hazard ratios with confidence intervals on a log axis.

    Parameters
    ----------
    cox_tidy : Result or pandas.DataFrame
        A Cox result (:func:`iop_research.survival.cox.fit_cox`, or pooled with
        :func:`iop_research.derive.impute.pool_rubin`) or its tidy table
        (``term, hazard_ratio, hr_conf_low, hr_conf_high``, ...).
    ax : matplotlib.axes.Axes, optional
    labels : mapping, optional
        Display names of terms.
    term_col, estimate_col, low_col, high_col : str
        Column names (all ratios must be positive).
    annotate : bool, default True
        Print ``"HR (low, high)"`` right of the axes.
    digits : int, default 2
    reference : float, default 1.0
        Position of the dashed no-effect line.
    xlabel : str

    Returns
    -------
    matplotlib.axes.Axes
        Point estimates are one ``Line2D`` (gid ``"estimate"``), intervals a
        ``LineCollection`` (gid ``"ci"``); the first term is at the top.

    Raises
    ------
    DataValidationError
        Missing columns, or non-positive ratios.

    References
    ----------
    .. [1] Lewis S, Clarke M (2001). Forest plots: trying to see the wood and
       the trees. *BMJ* 322:1479-1480.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> t = pd.DataFrame({"term": ["mat", "age"], "hazard_ratio": [0.5, 1.01],
    ...     "hr_conf_low": [0.34, 1.0], "hr_conf_high": [0.74, 1.02]})
    >>> ax = plot_forest(t)
    >>> [tl.get_text() for tl in ax.get_yticklabels()], ax.get_xscale()
    (['age', 'mat'], 'log')
    """
    cox_tidy = _table_of(cox_tidy, "plot_forest")
    _require(cox_tidy, [term_col, estimate_col, low_col, high_col], "plot_forest")
    est = cox_tidy[estimate_col].to_numpy(dtype=float)
    lo = cox_tidy[low_col].to_numpy(dtype=float)
    hi = cox_tidy[high_col].to_numpy(dtype=float)
    bad = ~((est > 0) & (lo > 0) & (hi > 0))
    if bad.any():
        raise DataValidationError(
            f"plot_forest: ratios must be positive for a log axis, but terms "
            f"{format_ids(cox_tidy[term_col][bad])} are not. Pass hazard ratios, not log hazard ratios."
        )
    ax, created = _new_ax(ax, figsize=(6.4, 1.0 + 0.4 * len(cox_tidy)))
    labels = dict(labels or {})
    n = len(cox_tidy)
    y = np.arange(n)[::-1].astype(float)
    lc = ax.hlines(y, lo, hi, color=OKABE_ITO[0], linewidth=1.4)
    lc.set_gid("ci")
    (pts,) = ax.plot(est, y, linestyle="none", marker="s", color=OKABE_ITO[0], markersize=6)
    pts.set_gid("estimate")
    ax.axvline(reference, color="0.4", linestyle="--", linewidth=1, gid="reference")
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, StrMethodFormatter

    left, right = min(lo.min(), reference) / 1.15, max(hi.max(), reference) * 1.15
    nice = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 10, 20, 50, 100])
    ticks = nice[(nice >= left) & (nice <= right)]
    if ticks.size > 7:
        ticks = ticks[np.isin(ticks, [0.01, 0.1, 0.25, 0.5, 1, 2, 4, 10, 100])]
    ax.set_xlim(left, right)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    terms = [labels.get(t, str(t)) for t in cox_tidy[term_col]]
    ax.set_yticks(y[::-1])
    ax.set_yticklabels(terms[::-1])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(xlabel)
    if annotate:
        for yi, e, l_, h in zip(y, est, lo, hi):
            ax.text(1.02, yi, f"{e:.{digits}f} ({l_:.{digits}f}, {h:.{digits}f})", transform=ax.get_yaxis_transform(),
                    ha="left", va="center", clip_on=False, gid="hr_text")
        if created:
            ax.figure.subplots_adjust(right=0.72, left=0.25)
    return ax


def plot_love(
    balance: pd.DataFrame,
    *,
    ax=None,
    threshold: float = 0.1,
    covariate_col: str = "covariate",
    level_col: str = "level",
    unweighted_col: str = "smd_unweighted",
    weighted_col: str = "smd_weighted",
    absolute: bool = True,
    sort: bool = True,
    xlabel: str = "Absolute standardised mean difference",
):
    """Love plot: |SMD| of each covariate before and after weighting.

    Parameters
    ----------
    balance : Result or pandas.DataFrame
        An IPTW result (its ``extra["balance"]``) or the balance table
        ``covariate, level, smd_unweighted, smd_weighted``.
    ax : matplotlib.axes.Axes, optional
    threshold : float, default 0.1
        Dashed line at the usual balance threshold (Austin 2009).
    covariate_col, level_col, unweighted_col, weighted_col : str
        Column names; ``level`` may be missing or empty for continuous covariates.
    absolute : bool, default True
        Plot absolute values.
    sort : bool, default True
        Largest unweighted imbalance at the top.
    xlabel : str

    Returns
    -------
    matplotlib.axes.Axes
        Two ``Line2D`` (labels ``"Unweighted"``, ``"Weighted"``), tick labels
        ``"covariate: level"``.

    References
    ----------
    .. [1] Austin PC, Stuart EA (2015). Moving towards best practice when using
       inverse probability of treatment weighting (IPTW) using the propensity
       score. *Stat Med* 34:3661-3679.
    .. [2] Greifer N. cobalt: ``love.plot`` (R package).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> b = pd.DataFrame({"covariate": ["age", "sex"], "level": [None, "female"],
    ...     "smd_unweighted": [0.3, -0.15], "smd_weighted": [0.02, 0.01]})
    >>> ax = plot_love(b)
    >>> [tl.get_text() for tl in ax.get_yticklabels()]
    ['sex: female', 'age']
    """
    balance = _table_of(balance, "plot_love", extra="balance")
    _require(balance, [covariate_col, unweighted_col, weighted_col], "plot_love")
    ax, created = _new_ax(ax, figsize=(6.4, 1.2 + 0.3 * len(balance)))
    b = balance.reset_index(drop=True)
    u = b[unweighted_col].to_numpy(dtype=float)
    w = b[weighted_col].to_numpy(dtype=float)
    if absolute:
        u, w = np.abs(u), np.abs(w)
    names = []
    for _, r in b.iterrows():
        lev = r[level_col] if level_col in b.columns else None
        names.append(f"{r[covariate_col]}: {lev}" if lev is not None and not pd.isna(lev) and str(lev) != "" else str(r[covariate_col]))
    order = np.argsort(u, kind="stable") if sort else np.arange(len(b))[::-1]
    y = np.arange(len(b), dtype=float)
    ax.plot(u[order], y, linestyle="none", marker="o", markerfacecolor="white", color=OKABE_ITO[5], label="Unweighted")
    ax.plot(w[order], y, linestyle="none", marker="^", color=OKABE_ITO[4], label="Weighted")
    ax.axvline(threshold, color="0.4", linestyle="--", linewidth=1, gid="threshold")
    if not absolute:
        ax.axvline(-threshold, color="0.4", linestyle="--", linewidth=1, gid="threshold")
        ax.axvline(0, color="0.7", linewidth=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([names[i] for i in order])
    ax.set_xlabel(xlabel if absolute else "Standardised mean difference")
    ax.legend(loc="lower right")
    return ax


#: Display order of span and point kinds in swimmer plots.
_SWIMMER_POINT_STYLE = {
    "uds_positive": dict(marker="P", color=OKABE_ITO[5], markersize=7),
    "uds_negative": dict(marker="o", color=OKABE_ITO[2], markerfacecolor="white", markersize=5),
    "relapse": dict(marker="*", color=OKABE_ITO[0], markersize=12),
    "death": dict(marker="X", color=OKABE_ITO[0], markersize=9),
}


def plot_swimmer(
    spans: pd.DataFrame,
    points: pd.DataFrame | None = None,
    *,
    ax=None,
    patient_col: str = "patient",
    start_col: str = "start_day",
    end_col: str = "end_day",
    kind_col: str = "kind",
    day_col: str = "day",
    treatment_kind: str = "treatment",
    relabel: bool = True,
    xlabel: str = "Days since admission",
):
    """Swimmer plot: one lane per patient with treatment, MAT, sessions, UDS and relapse.

    Parameters
    ----------
    spans : pandas.DataFrame
        ``patient, start_day, end_day, kind``: ``kind == "treatment"`` is the
        IOP episode (wide grey bar); any other kind (a medication, e.g.
        ``"buprenorphine"``) is a MAT span (narrow bar coloured and hatched by
        medication). Days are relative to the analysis origin, never dates.
    points : pandas.DataFrame, optional
        ``patient, day, kind``: session modalities (``"group"``,
        ``"individual"``, ...) are small markers above the lane;
        ``"uds_positive"``, ``"uds_negative"``, ``"relapse"``, ``"death"`` sit
        on the lane; other kinds get their own markers.
    ax : matplotlib.axes.Axes, optional
    patient_col, start_col, end_col, kind_col, day_col : str
        Column names.
    treatment_kind : str, default "treatment"
    relabel : bool, default True
        Label lanes 1..n (in order of first appearance) instead of showing
        patient identifiers; set False only for pseudonymous labels.
    xlabel : str

    Returns
    -------
    matplotlib.axes.Axes
        Bars in ``ax.patches`` (gid ``"treatment"`` or ``"mat"``), one
        ``Line2D`` per point kind labelled with the kind, lane tick labels.

    References
    ----------
    .. [1] Phillips R, Cro S, Wheeler G, et al. (2022). Visualising harms in
       publications of randomised controlled trials: consensus and
       recommendations. *BMJ* 377:e068983.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> spans = pd.DataFrame({"patient": ["P7", "P7", "P9"], "start_day": [0, 3, 0],
    ...     "end_day": [60, 40, 45], "kind": ["treatment", "buprenorphine", "treatment"]})
    >>> points = pd.DataFrame({"patient": ["P7", "P9", "P9"], "day": [14, 20, 50],
    ...     "kind": ["uds_negative", "uds_positive", "relapse"]})
    >>> ax = plot_swimmer(spans, points)
    >>> [tl.get_text() for tl in ax.get_yticklabels()]
    ['1', '2']
    """
    _require(spans, [patient_col, start_col, end_col, kind_col], "plot_swimmer")
    if points is not None:
        _require(points, [patient_col, day_col, kind_col], "plot_swimmer (points)")
    patients = list(pd.unique(spans[patient_col]))
    if points is not None:
        patients += [p for p in pd.unique(points[patient_col]) if p not in patients]
    ax, created = _new_ax(ax, figsize=(7.5, 1.2 + 0.45 * len(patients)))
    lane = {p: float(len(patients) - 1 - i) for i, p in enumerate(patients)}
    from matplotlib.patches import Patch

    handles = []
    tr = spans[spans[kind_col] == treatment_kind]
    if len(tr):
        bars = ax.barh(
            [lane[p] for p in tr[patient_col]], (tr[end_col] - tr[start_col]).to_numpy(dtype=float),
            left=tr[start_col].to_numpy(dtype=float), height=0.6, color="0.88", edgecolor="0.5", linewidth=0.6,
        )
        for b in bars:
            b.set_gid("treatment")
        handles.append(Patch(facecolor="0.88", edgecolor="0.5", label="IOP episode"))
    mat = spans[spans[kind_col] != treatment_kind]
    hatches = ("", "///", "...", "xxx", "\\\\\\", "++")
    for i, med in enumerate(pd.unique(mat[kind_col])):
        m = mat[mat[kind_col] == med]
        color = OKABE_ITO[(i + 1) % len(OKABE_ITO)]
        bars = ax.barh(
            [lane[p] for p in m[patient_col]], (m[end_col] - m[start_col]).to_numpy(dtype=float),
            left=m[start_col].to_numpy(dtype=float), height=0.22, color=color, hatch=hatches[i % len(hatches)],
            edgecolor="0.2", linewidth=0.4,
        )
        for b in bars:
            b.set_gid("mat")
        handles.append(Patch(facecolor=color, hatch=hatches[i % len(hatches)], edgecolor="0.2", label=str(med)))
    if points is not None and len(points):
        other = 0
        for kind in pd.unique(points[kind_col]):
            p = points[points[kind_col] == kind]
            yv = np.array([lane[x] for x in p[patient_col]])
            if kind in _SWIMMER_POINT_STYLE:
                kw = dict(_SWIMMER_POINT_STYLE[kind])
            else:  # session modalities and anything else: small markers above the lane
                kw = dict(marker=MARKERS[other % len(MARKERS)], color=OKABE_ITO[(other + 2) % len(OKABE_ITO)], markersize=4)
                yv = yv + 0.38
                other += 1
            (line,) = ax.plot(p[day_col].to_numpy(dtype=float), yv, linestyle="none", label=str(kind), **kw)
            line.set_gid("point")
            handles.append(line)
    ax.set_yticks([lane[p] for p in patients])
    ax.set_yticklabels([str(i + 1) for i in range(len(patients))] if relabel else [str(p) for p in patients])
    ax.set_ylim(-0.7, len(patients) - 0.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Patient")
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        if created:
            ax.figure.subplots_adjust(right=0.72)
    return ax


def plot_attrition(
    attrition: pd.DataFrame,
    *,
    ax=None,
    step_col: str = "step",
    reason_col: str = "reason",
    removed_col: str = "rows_removed",
    remaining_col: str = "rows_remaining",
    patients_removed_col: str | None = "patients_removed",
    patients_remaining_col: str | None = "patients_remaining",
    unit: str = "episodes",
    table: str | None = None,
    chain_col: str = "table",
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
):
    """Flow diagram (STROBE/CONSORT style) of an attrition table, small counts suppressed.

    Parameters
    ----------
    attrition : pandas.DataFrame
        One row per step, first row the input: ``step, reason, rows_removed,
        rows_remaining`` (``cohorts.select_cohort``'s table). Suppressed with
        :func:`iop_research.present.tables.suppress_attrition` unless it already is.
    ax : matplotlib.axes.Axes, optional
    step_col, reason_col, removed_col, remaining_col : str
        Column names.
    patients_removed_col, patients_remaining_col : str or None
        Patient counts, shown as a second line in each box when both columns
        exist (episodes and patients differ when patients have several episodes).
    unit : str, default "episodes"
        Counted unit shown in the boxes.
    table : str, optional
        Chain to draw when ``chain_col`` holds several (``cohorts.Attrition``
        records e.g. "sessions" and "episodes"); required then.
    chain_col : str, default "table"
    min_cell_count : int, default 11

    Returns
    -------
    matplotlib.axes.Axes
        Axis off; one box text per step (gid ``"step_box"``) and one per
        exclusion (gid ``"exclusion_box"``).

    References
    ----------
    .. [1] von Elm E, et al. (2007). The Strengthening the Reporting of
       Observational Studies in Epidemiology (STROBE) statement. *Lancet*
       370:1453-1457.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> a = pd.DataFrame({"step": ["All episodes", "Adults"], "reason": ["", "age < 18"],
    ...     "rows_removed": [0, 4], "rows_remaining": [1000, 996]})
    >>> ax = plot_attrition(a)
    >>> [t.get_text() for t in ax.texts if t.get_gid() == "exclusion_box"]
    ['Excluded: <11\\nage < 18']
    """
    from iop_research.present.tables import suppress_attrition

    attrition = _table_of(attrition, "plot_attrition")
    _require(attrition, [step_col, removed_col, remaining_col], "plot_attrition")
    if chain_col in attrition.columns:
        chains = list(pd.unique(attrition[chain_col]))
        if table is None and len(chains) > 1:
            raise DataValidationError(
                f"plot_attrition: the attrition table holds several chains in {chain_col!r} "
                f"({format_ids(chains)}). Pass table=... to choose the one to draw."
            )
        if table is not None:
            if table not in chains:
                raise DataValidationError(
                    f"plot_attrition: no chain {table!r} in {chain_col!r} (chains: {format_ids(chains)})."
                )
            attrition = attrition[attrition[chain_col] == table]
    with_patients = (
        patients_removed_col is not None
        and patients_remaining_col is not None
        and patients_removed_col in attrition.columns
        and patients_remaining_col in attrition.columns
    )
    if isinstance(attrition.attrs.get("suppressed"), SuppressionMask):
        sup = attrition
    else:
        removed = (removed_col, patients_removed_col) if with_patients else (removed_col,)
        remaining = (remaining_col, patients_remaining_col) if with_patients else (remaining_col,)
        sup = suppress_attrition(attrition, min_cell_count=min_cell_count, removed_cols=removed, remaining_cols=remaining)
    disp = format_suppressed(sup)
    n = len(disp)
    ax, created = _new_ax(ax, figsize=(7.0, 1.2 + 1.1 * n))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, n)
    ax.axis("off")
    box = dict(boxstyle="round,pad=0.4", facecolor="white", edgecolor="0.2")
    ys = [n - 0.5 - i for i in range(n)]
    for i in range(n):
        txt = f"{disp[step_col].iloc[i]}\n{unit}: {disp[remaining_col].iloc[i]}"
        if with_patients:
            txt += f"\npatients: {disp[patients_remaining_col].iloc[i]}"
        ax.text(0.3, ys[i], txt, ha="center", va="center", bbox=box, gid="step_box")
        if i > 0:
            ax.annotate("", xy=(0.3, ys[i] + 0.25), xytext=(0.3, ys[i - 1] - 0.25),
                        arrowprops=dict(arrowstyle="->", color="0.2"))
            reason = disp[reason_col].iloc[i] if reason_col in disp.columns else ""
            ex = f"Excluded: {disp[removed_col].iloc[i]}"
            if with_patients:
                ex += f" ({disp[patients_removed_col].iloc[i]} patients)"
            ex += f"\n{reason}" if reason else ""
            ymid = (ys[i] + ys[i - 1]) / 2
            ax.text(0.75, ymid, ex, ha="center", va="center", bbox=dict(box, facecolor="0.95"), gid="exclusion_box")
            ax.annotate("", xy=(0.58, ymid), xytext=(0.3, ymid), arrowprops=dict(arrowstyle="->", color="0.4"))
    return ax


def plot_modality_heatmap(
    matrix: pd.DataFrame,
    *,
    ax=None,
    counts: pd.DataFrame | None = None,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    annotate: bool = True,
    digits: int = 1,
    cmap: str = "cividis",
    colorbar: bool = True,
    value_label: str = "Mean hours attended",
    xlabel: str = "Week of treatment",
):
    """Heat map of mean hours per week (rows of ``matrix``) by modality (columns).

    Parameters
    ----------
    matrix : pandas.DataFrame
        Index: week (e.g. 1..12); columns: modalities; values: mean hours.
    ax : matplotlib.axes.Axes, optional
    counts : pandas.DataFrame, optional
        Same shape: number of patients behind each mean. Cells with
        ``1 .. min_cell_count-1`` patients are blanked and marked ``"<11"``.
    min_cell_count : int, default 11
    annotate : bool, default True
        Print values in the cells.
    digits : int, default 1
    cmap : str, default "cividis"
        A colour-blind-safe, greyscale-monotone colour map.
    colorbar : bool, default True
    value_label, xlabel : str

    Returns
    -------
    matplotlib.axes.Axes
        One image (``ax.images[0]``) with weeks on x and modalities on y.

    References
    ----------
    .. [1] Nuñez JR, Anderton CR, Renslow RS (2018). Optimizing colormaps with
       consideration for color vision deficiency (cividis). *PLoS ONE* 13:e0199239.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> m = pd.DataFrame({"group": [6.0, 5.5], "individual": [1.0, 0.8]}, index=[1, 2])
    >>> ax = plot_modality_heatmap(m)
    >>> [tl.get_text() for tl in ax.get_yticklabels()]
    ['group', 'individual']
    """
    vals = matrix.to_numpy(dtype=float).T.copy()
    hidden = np.zeros(vals.shape, bool)
    if counts is not None:
        c = counts.reindex(index=matrix.index, columns=matrix.columns).to_numpy(dtype=float).T
        hidden = (c >= 1) & (c < min_cell_count)
        vals[hidden] = np.nan
    ax, created = _new_ax(ax, figsize=(max(5.0, 0.45 * matrix.shape[0] + 2), 1.2 + 0.5 * matrix.shape[1]))
    im = ax.imshow(np.ma.masked_invalid(vals), aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(np.arange(matrix.shape[0]))
    ax.set_xticklabels([str(w) for w in matrix.index])
    ax.set_yticks(np.arange(matrix.shape[1]))
    ax.set_yticklabels([str(m) for m in matrix.columns])
    ax.set_xlabel(xlabel)
    if annotate or hidden.any():
        finite = vals[np.isfinite(vals)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                if hidden[i, j]:
                    ax.text(j, i, f"<{min_cell_count}", ha="center", va="center", fontsize=7, color="0.2")
                elif annotate and np.isfinite(vals[i, j]):
                    ax.text(j, i, f"{vals[i, j]:.{digits}f}", ha="center", va="center", fontsize=7,
                            color="white" if vals[i, j] < mid else "black")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=value_label)
    return ax


def plot_los(
    los_by_reason: pd.DataFrame,
    *,
    ax=None,
    reason_col: str = "reason",
    labels: Mapping | None = None,
    show_mean: bool = True,
    ylabel: str = "Length of stay (days)",
):
    """Box plots of length of stay by discharge reason, from precomputed statistics.

    Parameters
    ----------
    los_by_reason : pandas.DataFrame
        :func:`iop_research.present.tables.los_summary` output: ``reason, n, mean,
        whislo, q1, median, q3, whishi``; rows with hidden statistics (small
        groups) are not drawn and their tick says ``n <11``.
    ax : matplotlib.axes.Axes, optional
    reason_col : str, default "reason"
    labels : mapping, optional
        Display names of reasons.
    show_mean : bool, default True
    ylabel : str

    Returns
    -------
    matplotlib.axes.Axes
        Tick labels ``"<reason>\\n(n=<n>)"``.

    References
    ----------
    .. [1] Tukey JW (1977). *Exploratory Data Analysis*.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> s = pd.DataFrame({"reason": ["completed"], "n": [40], "mean": [50.0], "whislo": [10.0], "q1": [35.0],
    ...     "median": [48.0], "q3": [62.0], "whishi": [90.0]})
    >>> ax = plot_los(s)
    >>> [tl.get_text() for tl in ax.get_xticklabels()]
    ['completed\\n(n=40)']
    """
    _require(los_by_reason, [reason_col, "n", "whislo", "q1", "median", "q3", "whishi"], "plot_los")
    ax, created = _new_ax(ax)
    labels = dict(labels or {})
    disp = format_suppressed(los_by_reason) if isinstance(los_by_reason.attrs.get("suppressed"), SuppressionMask) else None
    stats, positions, ticks = [], [], []
    for i, (_, r) in enumerate(los_by_reason.reset_index(drop=True).iterrows()):
        n_txt = disp["n"].iloc[i] if disp is not None else str(r["n"])
        ticks.append(f"{labels.get(r[reason_col], r[reason_col])}\n(n={n_txt})")
        if pd.isna(r["median"]):
            continue
        st = {"med": r["median"], "q1": r["q1"], "q3": r["q3"], "whislo": r["whislo"], "whishi": r["whishi"], "fliers": []}
        if show_mean and "mean" in r and not pd.isna(r["mean"]):
            st["mean"] = r["mean"]
        stats.append(st)
        positions.append(i)
    if stats:
        ax.bxp(stats, positions=positions, showfliers=False, showmeans=show_mean, patch_artist=True,
               boxprops=dict(facecolor=OKABE_ITO[2], alpha=0.6), medianprops=dict(color="black"),
               meanprops=dict(marker="D", markerfacecolor="white", markeredgecolor="black"))
    ax.set_xticks(range(len(ticks)))
    ax.set_xticklabels(ticks)
    ax.set_xlim(-0.6, len(ticks) - 0.4)
    ax.set_ylabel(ylabel)
    return ax


def plot_schoenfeld(
    residuals: pd.DataFrame,
    term: str,
    *,
    smooth: pd.DataFrame | None = None,
    ax=None,
    time_col: str = "time",
    hline: float | None = None,
    xlabel: str | None = None,
):
    """Scaled Schoenfeld residuals of one term against time, with a precomputed smooth.

    Parameters
    ----------
    residuals : Result or pandas.DataFrame
        The :func:`iop_research.survival.cox.ph_test` result (its
        ``extra["residuals"]``) or that table: ``time, transformed_time, <term>...``.
    term : str
        Column to plot.
    smooth : pandas.DataFrame, optional
        ``x, y`` curve, e.g. ``tables.smooth_curve(res[time_col], res[term])``.
    ax : matplotlib.axes.Axes, optional
    time_col : str, default "time"
        x variable (``"transformed_time"`` to match the test's transform).
    hline : float, optional
        Horizontal reference, e.g. the Cox coefficient (flat beta(t) under
        proportional hazards).
    xlabel : str, optional

    Returns
    -------
    matplotlib.axes.Axes
        Points ``Line2D`` gid ``"residuals"``, smooth gid ``"smooth"``.

    References
    ----------
    .. [1] Grambsch PM, Therneau TM (1994). *Biometrika* 81:515-526 (R
       ``plot(cox.zph(fit))``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import pandas as pd
    >>> r = pd.DataFrame({"time": [5.0, 9.0, 20.0], "transformed_time": [0.2, 0.5, 0.9], "mat": [0.1, -0.4, 0.3]})
    >>> ax = plot_schoenfeld(r, "mat", hline=-0.2)
    >>> ax.get_ylabel()
    'Beta(t) for mat'
    """
    if not isinstance(residuals, pd.DataFrame) and not (
            isinstance(getattr(residuals, "extra", None), Mapping) and "residuals" in residuals.extra):
        raise DataValidationError("plot_schoenfeld: pass the result of survival.cox.ph_test or its "
                                  "extra['residuals'] table.")
    residuals = _table_of(residuals, "plot_schoenfeld", extra="residuals")
    _require(residuals, [time_col, term], "plot_schoenfeld")
    ax, created = _new_ax(ax)
    (pts,) = ax.plot(residuals[time_col].to_numpy(dtype=float), residuals[term].to_numpy(dtype=float),
                     linestyle="none", marker="o", markersize=3, color=OKABE_ITO[2], alpha=0.7, label="Scaled residuals")
    pts.set_gid("residuals")
    if smooth is not None:
        _require(smooth, ["x", "y"], "plot_schoenfeld (smooth)")
        (sm,) = ax.plot(smooth["x"].to_numpy(dtype=float), smooth["y"].to_numpy(dtype=float), color=OKABE_ITO[0], label="Smooth")
        sm.set_gid("smooth")
    if hline is not None:
        ax.axhline(hline, color="0.4", linestyle="--", linewidth=1, gid="hline")
    ax.set_xlabel(xlabel or ("Time (days)" if time_col == "time" else time_col))
    ax.set_ylabel(f"Beta(t) for {term}")
    return ax
