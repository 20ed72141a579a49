"""Small analysis-frame helpers used by the comparison notebooks (04 modalities, 05 MAT).

Private module: the notebooks contain no ``def``; the reshaping they need beyond
:mod:`iop_research.derive.frames` lives here, tested in ``tests/test_analysis.py``.

* :func:`exposure_switch` -- exposure status at a landmark day and the first later day
  it changes, from counting-process ``(start, stop]`` rows;
* :func:`censor_at` -- artificial censoring of one-row-per-episode follow-up at a
  given day (per-protocol landmark comparisons);
* :func:`split_after_exposure` -- split counting-process rows so that the first
  ``window_days`` after an exposure stops get their own indicator (e.g. the
  post-MAT-discontinuation risk window).

Day conventions are those of :func:`iop_research.derive.frames.counting_process_frame`
(R's ``tmerge``/``tdc``): a covariate that changes on day ``x`` takes its new value on
the interval that starts at ``x``; an event on day ``x`` belongs to the old value.

References
----------
.. [1] Therneau T, Crowson C, Atkinson E. Using time dependent covariates and time
   dependent coefficients in the Cox model. survival package vignette ("timedep"), 2023.
.. [2] Hernan MA, Robins JM. Per-protocol analyses of pragmatic trials. N Engl J Med
   2017;377:1391-8.
.. [3] Sordo L, Barrio G, Bravo MJ, et al. Mortality risk during and after opioid
   substitution treatment. BMJ 2017;357:j1550.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids

__all__ = ["exposure_switch", "censor_at", "split_after_exposure"]


def _need(df: pd.DataFrame, cols: Sequence[str], where: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ModelSpecificationError(
            f"{where}: column(s) {missing} not found (available: {list(df.columns)[:12]}...). "
            "Pass the right *_col arguments or build the frame with iop_research.counting_process_frame."
        )


def _binary(df: pd.DataFrame, col: str, id_col: str, where: str) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise DataValidationError(
            f"{where}: column {col!r} must be 0/1; {int(bad.sum())} rows are not "
            f"({id_col}: {format_ids(df.loc[bad, id_col])}). Recode the exposure to 0/1."
        )
    return values.astype(np.int64)


def _intervals(cp: pd.DataFrame, id_col: str, start_col: str, stop_col: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    start = pd.to_numeric(cp[start_col], errors="coerce").to_numpy(dtype=float)
    stop = pd.to_numeric(cp[stop_col], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(start) & np.isfinite(stop) & (stop > start))
    if bad.any():
        raise DataValidationError(
            f"{where}: {int(bad.sum())} rows have a missing interval or {stop_col} <= {start_col} "
            f"({id_col}: {format_ids(cp.loc[bad, id_col])}). Rows must be (start, stop] intervals "
            "with stop > start, as counting_process_frame returns."
        )
    return start, stop


def exposure_switch(
    cp: pd.DataFrame,
    *,
    landmark_days: float,
    exposure_col: str = "on_mat",
    id_col: str = "episode_id",
    start_col: str = "start",
    stop_col: str = "stop",
) -> pd.DataFrame:
    """Exposure status at a landmark day and the first later day on which it changes.

    Parameters
    ----------
    cp : pandas.DataFrame
        Counting-process rows ``(start, stop]`` (days from the origin) that tile each
        episode's follow-up, e.g. from :func:`iop_research.counting_process_frame`.
        Not modified.
    landmark_days : float
        The landmark ``L`` (days from the origin, >= 0).
    exposure_col : str, default "on_mat"
        Time-varying 0/1 exposure.
    id_col, start_col, stop_col : str, default "episode_id", "start", "stop"
        Episode id and interval columns.

    Returns
    -------
    pandas.DataFrame
        One row per episode whose follow-up extends beyond ``L`` (last ``stop > L``), in
        order of first appearance: ``id_col``, ``exposed_at_landmark`` (0/1: the value on the
        row with ``start <= L < stop``, i.e. the status that applies just after day ``L``)
        and ``switch_days`` (float: days after ``L`` on which the status first differs from
        ``exposed_at_landmark``, i.e. the ``start`` of that row minus ``L``; NaN when it never
        changes during follow-up). Episodes ending on or before ``L`` are not returned
        (a landmark frame excludes them too).

    Raises
    ------
    ModelSpecificationError
        Missing columns, negative or non-finite ``landmark_days``.
    DataValidationError
        Exposure not 0/1, ``stop <= start`` or missing interval bounds.

    Notes
    -----
    As ``tmerge``'s ``tdc()``: an exposure that changes on day ``x`` is in effect on
    ``(x, ...]``, so censoring follow-up at ``L + switch_days`` keeps an event on the day
    of the change (it belongs to the old status).

    References
    ----------
    .. [1] Therneau T, Crowson C, Atkinson E. Using time dependent covariates and time
       dependent coefficients in the Cox model (survival vignette "timedep").

    Examples
    --------
    >>> import pandas as pd
    >>> cp = pd.DataFrame({"episode_id": ["E1", "E1", "E1", "E2", "E3"],
    ...                    "start": [0, 10, 40, 0, 0], "stop": [10, 40, 90, 60, 20],
    ...                    "on_mat": [0, 1, 0, 0, 1]})
    >>> exposure_switch(cp, landmark_days=30)
      episode_id  exposed_at_landmark  switch_days
    0         E1                    1         10.0
    1         E2                    0          NaN
    """
    where = "exposure_switch"
    _need(cp, [id_col, start_col, stop_col, exposure_col], where)
    if not np.isfinite(landmark_days) or landmark_days < 0:
        raise ModelSpecificationError(f"{where}: landmark_days must be a non-negative number of days, got {landmark_days!r}.")
    start, stop = _intervals(cp, id_col, start_col, stop_col, where)
    x = _binary(cp, exposure_col, id_col, where)
    ids = cp[id_col].to_numpy()
    codes, uniques = pd.factorize(ids)
    n = len(uniques)
    covers = (start <= landmark_days) & (landmark_days < stop)
    status = np.full(n, -1, dtype=np.int64)
    status[codes[covers]] = x[covers]
    later = start > landmark_days
    differs = later & (status[codes] >= 0) & (x != status[codes])
    switch = np.full(n, np.inf)
    np.minimum.at(switch, codes[differs], start[differs] - landmark_days)
    keep = status >= 0
    return pd.DataFrame({
        id_col: uniques[keep],
        "exposed_at_landmark": status[keep],
        "switch_days": np.where(np.isfinite(switch[keep]), switch[keep], np.nan),
    })


def censor_at(
    df: pd.DataFrame,
    *,
    censor_col: str,
    duration_col: str = "time",
    event_col: str = "event",
    status_col: str | None = "status",
) -> pd.DataFrame:
    """Censor each row's follow-up at a given day (artificial censoring, e.g. at a treatment switch).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per episode. Not modified.
    censor_col : str
        Day (same clock as ``duration_col``) at which follow-up is censored; NaN = never.
        Values must be > 0.
    duration_col : str, default "time"
        Follow-up (days).
    event_col : str, default "event"
        Event indicator (0/1).
    status_col : str or None, default "status"
        Competing-risks status (0 censored, 1, 2, ...) set to 0 where censored; None
        when the frame has none.

    Returns
    -------
    pandas.DataFrame
        A copy of ``df`` with ``duration_col = min(duration, censor)``, ``event_col`` (and
        ``status_col``) set to 0 where ``duration > censor``, and a new boolean column
        ``artificially_censored``. An event on the censoring day itself is kept (it belongs
        to the old exposure status, as in :func:`exposure_switch`). No row is dropped.

    Raises
    ------
    ModelSpecificationError
        Missing columns.
    DataValidationError
        Censoring days <= 0 or non-numeric.

    Notes
    -----
    Per-protocol follow-up: the estimate is unbiased only if the switch is not informative
    about the outcome given the covariates (otherwise weight by inverse probability of
    remaining uncensored, R ``ipw``); state that assumption next to the estimate.

    References
    ----------
    .. [1] Hernan MA, Robins JM. Per-protocol analyses of pragmatic trials. N Engl J Med
       2017;377:1391-8.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> d = pd.DataFrame({"time": [50, 20, 30], "event": [1, 1, 0], "switch_days": [10, 20, np.nan]})
    >>> censor_at(d, censor_col="switch_days", status_col=None)
       time  event  switch_days  artificially_censored
    0    10      0         10.0                   True
    1    20      1         20.0                  False
    2    30      0          NaN                  False
    """
    where = "censor_at"
    cols = [censor_col, duration_col, event_col] + ([status_col] if status_col else [])
    _need(df, cols, where)
    censor = pd.to_numeric(df[censor_col], errors="coerce").to_numpy(dtype=float)
    bad = (df[censor_col].notna().to_numpy() & np.isnan(censor)) | (censor <= 0)
    if bad.any():
        raise DataValidationError(
            f"{where}: {int(bad.sum())} rows have {censor_col!r} <= 0 or non-numeric (index: "
            f"{format_ids(df.index[bad])}). Censoring days must be > 0 on the clock of "
            f"{duration_col!r}; use NaN for 'never'."
        )
    time = df[duration_col].to_numpy()
    cut = ~np.isnan(censor) & (time > np.where(np.isnan(censor), np.inf, censor))
    out = df.copy()
    new_time = np.where(cut, censor, time)
    if pd.api.types.is_integer_dtype(df[duration_col].dtype):
        new_time = new_time.astype(df[duration_col].dtype)
    out[duration_col] = new_time
    out.loc[cut, event_col] = 0
    if status_col:
        out.loc[cut, status_col] = 0
    out["artificially_censored"] = cut
    return out


def split_after_exposure(
    cp: pd.DataFrame,
    *,
    window_days: float = 30,
    exposure_col: str = "on_mat",
    id_col: str = "episode_id",
    start_col: str = "start",
    stop_col: str = "stop",
    event_cols: Sequence[str] = ("event", "status"),
) -> pd.DataFrame:
    """Split counting-process rows at ``window_days`` after each exposure stop; flag the window.

    Parameters
    ----------
    cp : pandas.DataFrame
        Counting-process rows ``(start, stop]`` (days) tiling each episode's follow-up, e.g.
        :func:`iop_research.counting_process_frame`. Not modified.
    window_days : float, default 30
        Length (days, > 0) of the post-stop window.
    exposure_col : str, default "on_mat"
        Time-varying 0/1 exposure.
    id_col, start_col, stop_col : str, default "episode_id", "start", "stop"
    event_cols : sequence of str, default ("event", "status")
        Columns that are non-zero only on an episode's last row; on a split row they stay on
        the later piece and are 0 on the earlier one. Those absent from ``cp`` are ignored.

    Returns
    -------
    pandas.DataFrame
        The rows of ``cp`` (in order; a row crossing ``e + window_days`` split in two), plus
        ``<exposure>_recent_stop`` (1 on rows off exposure within ``(e, e + window_days]``
        where ``e`` is the day of the most recent stop in the episode) and
        ``<exposure>_past_stop`` (1 on rows off exposure later than that). Rows off exposure
        that never were on in the episode have both 0, so the three states on / recent stop /
        past stop are compared with never-exposed time.

    Raises
    ------
    ModelSpecificationError
        Missing columns, ``window_days <= 0``.
    DataValidationError
        Exposure not 0/1, bad intervals.

    Notes
    -----
    A stop on day ``e`` is the ``start`` of the first off row after an on row (``tdc``
    convention), so the window is the interval ``(e, e + window_days]``, as R's
    ``tmerge(..., recent = tdc(e, 1), recent = tdc(e + window_days, 0))``. Exposure carried
    over from before the episode's origin is not seen: a stop is only detected after an
    on row of the same episode.

    References
    ----------
    .. [1] Sordo L, et al. Mortality risk during and after opioid substitution treatment.
       BMJ 2017;357:j1550.
    .. [2] Therneau T, Crowson C, Atkinson E. survival vignette "timedep".

    Examples
    --------
    >>> import pandas as pd
    >>> cp = pd.DataFrame({"episode_id": ["E1"] * 3, "start": [0, 10, 40], "stop": [10, 40, 120],
    ...                    "event": [0, 0, 1], "on_mat": [0, 1, 0]})
    >>> split_after_exposure(cp, window_days=30)
      episode_id  start  stop  event  on_mat  on_mat_recent_stop  on_mat_past_stop
    0         E1      0    10      0       0                   0                 0
    1         E1     10    40      0       1                   0                 0
    2         E1     40    70      0       0                   1                 0
    3         E1     70   120      1       0                   0                 1
    """
    where = "split_after_exposure"
    _need(cp, [id_col, start_col, stop_col, exposure_col], where)
    if not np.isfinite(window_days) or window_days <= 0:
        raise ModelSpecificationError(f"{where}: window_days must be a positive number of days, got {window_days!r}.")
    start, stop = _intervals(cp, id_col, start_col, stop_col, where)
    x = _binary(cp, exposure_col, id_col, where)
    order = np.lexsort((start, pd.factorize(cp[id_col])[0]))
    if not np.array_equal(order, np.arange(len(cp))):
        raise DataValidationError(
            f"{where}: rows must be grouped by {id_col!r} and sorted by {start_col!r} within it "
            f"(as counting_process_frame returns). Sort with cp.sort_values([{id_col!r}, {start_col!r}])."
        )
    ids = cp[id_col].to_numpy()
    same_prev = np.r_[False, ids[1:] == ids[:-1]]
    prev_on = np.r_[0, x[:-1]] == 1
    is_stop = same_prev & prev_on & (x == 0)
    last = pd.Series(np.where(is_stop, start, np.where(x == 1, -np.inf, np.nan)))
    last = last.groupby(pd.factorize(ids)[0]).ffill().to_numpy()
    last = np.where((x == 0) & np.isfinite(last), last, np.nan)
    cut = last + window_days
    crosses = (start < cut) & (cut < stop)  # NaN compares False
    rep = np.where(crosses, 2, 1)
    src = np.repeat(np.arange(len(cp)), rep)
    out = cp.iloc[src].reset_index(drop=True)
    first = np.r_[True, src[1:] != src[:-1]]
    split_row = np.repeat(crosses, rep)
    cut_r = np.repeat(cut, rep)
    new_start = np.repeat(start, rep)
    new_stop = np.repeat(stop, rep)
    new_stop = np.where(split_row & first, cut_r, new_stop)
    new_start = np.where(split_row & ~first, cut_r, new_start)
    for col, vals in ((start_col, new_start), (stop_col, new_stop)):
        out[col] = vals.astype(cp[col].dtype) if pd.api.types.is_integer_dtype(cp[col].dtype) and np.all(
            np.mod(vals, 1) == 0) else vals
    for col in event_cols:
        if col in out.columns:
            out.loc[split_row & first, col] = 0
    last_r = np.repeat(last, rep)
    off_after = ~np.isnan(last_r)
    out[f"{exposure_col}_recent_stop"] = (off_after & (new_stop <= last_r + window_days)).astype(np.int64)
    out[f"{exposure_col}_past_stop"] = (off_after & (new_start >= last_r + window_days)).astype(np.int64)
    return out
