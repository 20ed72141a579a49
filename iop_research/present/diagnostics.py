"""Figures for model checking and prediction: functional form, influence, adjusted curves,
calibration.

Like :mod:`iop_research.present.plots`, every function draws precomputed tables (residuals
from :func:`~iop_research.survival.residuals.cox_residuals`, smooths from
:func:`~iop_research.present.tables.smooth_curve`, curves from
:func:`~iop_research.designs.adjusted.adjusted_survival`, calibration tables from
:func:`~iop_research.survival.metrics.calibrate_survival`), takes ``ax=None`` and returns the
Axes. Numbers at risk go through :func:`~iop_research.privacy.suppress_risk_table`: counts
below ``min_cell_count`` print as ``"<11"`` and curves stop where fewer remain at risk.
matplotlib is imported inside the functions.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, format_ids
from iop_research.present.plots import LINESTYLES, MARKERS, OKABE_ITO
from iop_research.privacy.suppression import DEFAULT_MIN_CELL_COUNT, format_suppressed, suppress_risk_table

__all__ = ["plot_functional_form", "plot_influence", "plot_adjusted_survival", "plot_calibration"]


def _axes(ax, figsize=(6.4, 4.8)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
        return ax, True
    return ax, False


def _need(df: Any, cols: Sequence[str], where: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}.")
    lack = [c for c in cols if c not in df.columns]
    if lack:
        raise DataValidationError(
            f"{where}: input lacks columns {format_ids(lack)} (has {format_ids(df.columns)}). Pass the matching table."
        )


def plot_functional_form(
    data: pd.DataFrame,
    *,
    x_col: str,
    residual_col: str = "residual",
    smooth: pd.DataFrame | None = None,
    ax=None,
    xlabel: str | None = None,
    ylabel: str = "Martingale residual",
):
    """Martingale residuals against a covariate, with a smooth, to check its functional form.

    Fit the model without the covariate (or with it linear), compute martingale residuals
    (:func:`~iop_research.survival.residuals.cox_residuals`) and plot them against the
    covariate; a straight smooth supports a linear term (Therneau et al. 1990).

    Parameters
    ----------
    data : pandas.DataFrame
        One row per subject with the covariate and the residual.
    x_col, residual_col : str
        Column names.
    smooth : pandas.DataFrame, optional
        ``x, y`` of the smooth (``smooth_curve(data[x_col], data[residual_col])``).
    ax : matplotlib.axes.Axes, optional
    xlabel, ylabel : str
        Axis labels (``xlabel`` defaults to ``x_col``).

    Returns
    -------
    matplotlib.axes.Axes
        Points gid ``"residuals"``, smooth gid ``"smooth"``, zero line gid ``"zero"``.

    References
    ----------
    .. [1] Therneau, T. M., Grambsch, P. M. & Fleming, T. R. (1990). Martingale-based residuals
       for survival models. Biometrika 77(1), 147-160.
    """
    _need(data, [x_col, residual_col], "plot_functional_form")
    ax, _ = _axes(ax)
    (pts,) = ax.plot(data[x_col], data[residual_col], linestyle="none", marker="o", markersize=3, alpha=0.4,
                     color=OKABE_ITO[0])
    pts.set_gid("residuals")
    z = ax.axhline(0, color="grey", linewidth=0.8, linestyle=":")
    z.set_gid("zero")
    if smooth is not None:
        _need(smooth, ["x", "y"], "plot_functional_form (smooth)")
        (ln,) = ax.plot(smooth["x"], smooth["y"], color=OKABE_ITO[5], linewidth=2, label="LOWESS")
        ln.set_gid("smooth")
        ax.legend(loc="best")
    ax.set_xlabel(xlabel or x_col)
    ax.set_ylabel(ylabel)
    return ax


def plot_influence(
    dfbeta: pd.DataFrame,
    *,
    term: str,
    id_col: str = "row",
    n_label: int = 5,
    ax=None,
    ylabel: str | None = None,
):
    """Index plot of dfbeta (or dfbetas) for one term, labelling the most influential rows.

    Parameters
    ----------
    dfbeta : pandas.DataFrame
        ``cox_residuals(fit, type="dfbeta" | "dfbetas")`` (one column per term).
    term : str
        Design column to show.
    id_col : str, default "row"
        Identifier column (``"cluster"`` for collapsed residuals).
    n_label : int, default 5
        Label this many rows with the largest absolute value.
    ax : matplotlib.axes.Axes, optional
    ylabel : str, optional

    Returns
    -------
    matplotlib.axes.Axes
        Stems gid ``"dfbeta"``; labels are ``ax.texts`` with gid ``"influential"``.
    """
    _need(dfbeta, [id_col, term], "plot_influence")
    ax, _ = _axes(ax)
    v = dfbeta[term].to_numpy(dtype=float)
    idx = np.arange(len(v))
    lines = ax.vlines(idx, 0, v, color=OKABE_ITO[4], linewidth=0.8)
    lines.set_gid("dfbeta")
    ax.axhline(0, color="grey", linewidth=0.8)
    top = np.argsort(-np.abs(v))[: max(0, int(n_label))]
    for i in top:
        ax.annotate(str(dfbeta[id_col].iloc[i]), (idx[i], v[i]), xytext=(2, 2), textcoords="offset points",
                    fontsize=8, gid="influential")
    ax.set_xlabel("Observation (order of the fit)")
    ax.set_ylabel(ylabel or f"dfbeta: {term}")
    return ax


def plot_adjusted_survival(
    result: Any,
    *,
    ax=None,
    times: Sequence[float] | None = None,
    risk_table: bool = True,
    conf_int: bool = True,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    labels: Mapping | None = None,
    xlabel: str = "Days",
    ylabel: str = "Adjusted probability without relapse",
):
    """Adjusted survival curves by exposure with bootstrap bands and a suppressed risk table.

    Parameters
    ----------
    result : Result
        Output of :func:`~iop_research.designs.adjusted.adjusted_survival`: curves from
        ``extra["curve"]``, bands from ``tidy`` (intervals at the result's ``times``; pass a
        fine grid of times there for smooth bands), numbers at risk from
        ``extra["risk_table"]`` (unweighted).
    ax : matplotlib.axes.Axes, optional
    times : sequence of float, optional
        Days of the risk table and x ticks; default the result's times (at most 8).
    risk_table : bool, default True
        Print numbers at risk (suppressed) below the axes.
    conf_int : bool, default True
        Shade the bootstrap interval.
    min_cell_count : int, default 11
        Curves stop where fewer remain at risk (a note says where); smaller counts print "<11".
    labels : mapping, optional
        Display label of each exposure level.
    xlabel, ylabel : str

    Returns
    -------
    matplotlib.axes.Axes
        Curves gid ``"curve"``, bands ``"band"``; risk-table texts gid ``"risk_count"``;
        notes gid ``"cut_note"``.
    """
    where = "plot_adjusted_survival"
    extra = getattr(result, "extra", None)
    if extra is None or "curve" not in extra:
        raise DataValidationError(f"{where}: pass the result of adjusted_survival(...).")
    curve, tidy, rt = extra["curve"], result.tidy, extra["risk_table"]
    ax, created = _axes(ax)
    levels = list(pd.unique(curve["exposure"]))
    labels = dict(labels or {})
    if times is None:
        tt = np.unique(tidy["time"].to_numpy(dtype=float))
        times = list(tt[np.linspace(0, len(tt) - 1, min(8, len(tt))).astype(int)])
    times = [float(t) for t in times]
    notes = []
    for i, a in enumerate(levels):
        color, ls = OKABE_ITO[i % len(OKABE_ITO)], LINESTYLES[i % len(LINESTYLES)]
        c = curve[curve["exposure"] == a]
        t = np.r_[0.0, c["time"].to_numpy(dtype=float)]
        s = np.r_[1.0, c["survival"].to_numpy(dtype=float)]
        r = rt[rt["group"] == a]
        small = r.loc[r["n_at_risk"] < min_cell_count, "time"]
        stop = float(small.min()) if len(small) else np.inf
        if np.isfinite(stop):
            notes.append(f"{labels.get(a, a)}: curve stops at day {stop:g}, fewer than {min_cell_count} at risk")
        keep = t < stop
        (ln,) = ax.step(t[keep], s[keep], where="post", color=color, linestyle=ls, label=str(labels.get(a, a)))
        ln.set_gid("curve")
        if conf_int:
            b = tidy[(tidy["exposure"] == a) & (tidy["time"] < stop)].sort_values("time")
            if b["conf_low"].notna().any():
                band = ax.fill_between(b["time"], b["conf_low"], b["conf_high"], step="post", color=color, alpha=0.15,
                                       linewidth=0)
                band.set_gid("band")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, max(times + [float(curve["time"].max())]) * 1.02)
    ax.set_xticks(times)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best")
    for i, note in enumerate(notes):
        ax.text(0.01, 0.02 + 0.06 * i, note, transform=ax.transAxes, fontsize=8, style="italic", gid="cut_note")
    if risk_table:
        from matplotlib.transforms import blended_transform_factory

        risk = suppress_risk_table(rt, times=times, min_cell_count=min_cell_count, include=("n_at_risk",))
        disp = format_suppressed(risk)
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        y0, dy = -44.0, 13.0
        kw = dict(xycoords="axes fraction", textcoords="offset points", ha="right", va="center", annotation_clip=False)
        ax.annotate("At risk", (0.0, 0.0), xytext=(-20, y0), fontweight="bold", **kw)
        for j, a in enumerate(levels):
            y = y0 - dy * (j + 1)
            ax.annotate(str(labels.get(a, a)), (0.0, 0.0), xytext=(-20, y), gid="risk_label", **kw)
            for _, row in disp[risk["group"].to_numpy() == a].iterrows():
                ax.annotate(row["n_at_risk"], (float(row["time"]), 0.0), xycoords=trans, xytext=(0, y),
                            textcoords="offset points", ha="center", va="center", annotation_clip=False,
                            gid="risk_count")
        if created:
            h = ax.figure.get_figheight() * 72.0
            ax.figure.subplots_adjust(bottom=min(0.6, (-y0 + dy * (len(levels) + 1) + 10) / h + 0.05), left=0.2)
    return ax


def plot_calibration(
    calibration: Any,
    *,
    ax=None,
    xlabel: str | None = None,
    ylabel: str | None = None,
):
    """Calibration plot: observed (Kaplan-Meier) vs predicted survival at a time.

    Parameters
    ----------
    calibration : Result
        Output of :func:`~iop_research.survival.metrics.calibrate_survival`: groups from
        ``tidy`` (points with their KM interval), the smooth from ``extra["smooth"]``.
    ax : matplotlib.axes.Axes, optional
    xlabel, ylabel : str, optional
        Default "Predicted survival at day t" / "Observed survival (Kaplan-Meier)".

    Returns
    -------
    matplotlib.axes.Axes
        Diagonal gid ``"ideal"``, group points ``"groups"``, smooth ``"smooth"``.
    """
    where = "plot_calibration"
    tidy = getattr(calibration, "tidy", None)
    extra = getattr(calibration, "extra", None)
    if tidy is None or extra is None or "smooth" not in extra:
        raise DataValidationError(f"{where}: pass the result of calibrate_survival(...).")
    _need(tidy, ["predicted", "observed", "conf_low", "conf_high"], where)
    t = float(calibration.glance["time"].iloc[0])
    ax, _ = _axes(ax, figsize=(5.2, 5.2))
    (diag,) = ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="Ideal")
    diag.set_gid("ideal")
    err = ax.errorbar(tidy["predicted"], tidy["observed"],
                      yerr=[tidy["observed"] - tidy["conf_low"], tidy["conf_high"] - tidy["observed"]],
                      fmt=MARKERS[0], color=OKABE_ITO[0], capsize=2, markersize=4, label="Risk groups (KM, 95% CI)")
    err.lines[0].set_gid("groups")
    sm = calibration.extra["smooth"]
    (ln,) = ax.plot(sm["predicted"], sm["observed"], color=OKABE_ITO[5], linewidth=2, label="Smoothed (pseudo-values)")
    ln.set_gid("smooth")
    lo = float(min(tidy["conf_low"].min(), tidy["predicted"].min(), sm["predicted"].min()))
    lo = max(0.0, min(lo, 0.9) - 0.05)
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.0)
    ax.set_xlabel(xlabel or f"Predicted survival at day {t:g}")
    ax.set_ylabel(ylabel or "Observed survival (Kaplan-Meier)")
    ax.legend(loc="upper left")
    return ax
