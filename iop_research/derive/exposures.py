"""MAT exposure: medication eras and proportion of days covered.

Dispensings (the ``medications`` table) become *days covered* and then *eras*
(continuous exposure to one medication class), written once as Ibis
expressions and executed by DuckDB (default) or Spark (``engine="spark"``).

Conventions
-----------
Days covered per formulation (:data:`iop_research.data.schema.MEDICATION_CLASS`):

* buprenorphine, oral naltrexone, acamprosate, disulfiram: ``days_supply`` as
  recorded;
* methadone: each row is a dose (``days_supply`` 1) or a take-home batch
  (``days_supply`` > 1), used as recorded;
* extended-release naltrexone: an injection covers ``xr_naltrexone_days``
  (28) days when ``days_supply`` is missing or 1; a larger recorded value is
  kept.

Early refills shift forward (the pharmacy-claims PDC convention [2]_): within a
patient and medication class, ordered by dispense date, coverage of a
dispensing starts on the later of its dispense date and the day after the
previous coverage ends. So ``end_i = max(dispense_i - 1, end_{i-1}) + covered_i``,
computed without recursion as ``C_i + max_{j<=i}(dispense_j - 1 - C_{j-1})``
where ``C`` is the running sum of days covered (one cumulative sum and one
cumulative max window).

Eras follow the OHDSI drug-era rule [1]_ with a persistence window of
``grace_days``: a dispensing joins the current era of its class when the number
of *uncovered* days between the end of the previous (shifted) coverage and its
dispense date is at most ``grace_days``; with ``grace_days=0`` only contiguous
coverage joins. OHDSI pads each exposure end by the persistence window and
merges overlaps, which is the same rule; OHDSI does not shift early refills
forward, so our eras can end later than OHDSI's when refills overlap.

References
----------
.. [1] OHDSI. "Drug era" (CDM v5 ``DRUG_ERA``; persistence window 30 days).
   https://ohdsi.github.io/CommonDataModel/
.. [2] Pharmacy Quality Alliance. "Proportion of Days Covered (PDC)"
   measure specification (early refills shift forward).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from iop_research.derive.days import date_from_day, day_number
from iop_research.derive.engine import as_derived_table, as_table, collect, get_backend, int_from_bool
from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids
from iop_research.data.schema import MEDICATION_CLASS, Col, Medication, MedicationClass

__all__ = ["medication_eras", "proportion_days_covered", "ERA_COLUMNS", "PDC_COLUMNS"]

#: Days covered by one extended-release naltrexone injection recorded with
#: ``days_supply`` missing or 1.
XR_NALTREXONE_DAYS = 28

#: Output columns of :func:`medication_eras`, in order.
ERA_COLUMNS: tuple[str, ...] = (
    Col.patient_id,
    "medication_class",
    "era_number",
    "era_start",
    "era_end",
    "n_dispensings",
    "days_supply_total",
    "days_covered",
    "era_days",
    "gap_days_total",
    "is_retained_180",
)

#: Output columns of :func:`proportion_days_covered`, in order (the window id
#: column comes first, named by ``id_col``).
PDC_COLUMNS: tuple[str, ...] = (Col.patient_id, "window_days", "days_covered", "pdc")

_MED_REQUIRED = (Col.patient_id, Col.medication, Col.dispense_date, Col.days_supply)
_CLASS_ORDER = [c.value for c in MedicationClass]  # rank used for deterministic ties


# --------------------------------------------------------------------------- helpers
def _check_columns(table, required, name):
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataValidationError(
            f"{name}: missing required column(s) {', '.join(missing)} (found: "
            f"{', '.join(table.columns)}). Rename the source columns to the data contract "
            "(iop_research.data.schema.Col) before calling."
        )


def _empty_eras() -> pd.DataFrame:
    """An era table without rows, with the dtypes of a non-empty one."""
    cols: dict[str, pd.Series] = {}
    for c in ERA_COLUMNS:
        if c in (Col.patient_id, "medication_class"):
            cols[c] = pd.Series([], dtype=str)
        elif c in ("era_start", "era_end"):
            cols[c] = pd.Series([], dtype="datetime64[ns]")
        elif c == "is_retained_180":
            cols[c] = pd.Series([], dtype=bool)
        else:
            cols[c] = pd.Series([], dtype="int64")
    return pd.DataFrame(cols)


def _medications_table(backend, medications, *, register: bool = True):
    """Register ``medications`` and keep only the contract columns we need."""
    if isinstance(medications, pd.DataFrame):
        if not register:
            return _medications_frame(medications)
        table = as_derived_table(backend, medications, "medications", _medications_frame)
    else:
        table = as_table(backend, medications, "medications")
    _check_columns(table, _MED_REQUIRED, "medications")
    return table


def _medications_frame(medications: pd.DataFrame) -> pd.DataFrame:
    """The contract columns of ``medications`` with the dtypes the expressions expect."""
    missing = [c for c in _MED_REQUIRED if c not in medications.columns]
    if missing:
        raise DataValidationError(
            f"medications: missing required column(s) {', '.join(missing)}. Rename the "
            "source columns to the data contract (iop_research.data.schema.Col)."
        )
    med = medications.loc[:, list(_MED_REQUIRED)].copy()
    med[Col.patient_id] = med[Col.patient_id].astype(str)
    med[Col.medication] = med[Col.medication].astype(str)
    med[Col.dispense_date] = pd.to_datetime(med[Col.dispense_date]).astype("datetime64[ns]")
    med[Col.days_supply] = pd.to_numeric(med[Col.days_supply]).astype("float64")
    return med


def _validate_medications(table) -> None:
    """Unknown medications, unusable days_supply, missing dates: all reported at once."""
    known = list(MEDICATION_CLASS)
    is_xr = table[Col.medication] == Medication.naltrexone_xr.value
    bad_med = ~table[Col.medication].isin(known) | table[Col.medication].isnull()
    bad_supply = (table[Col.days_supply].isnull() & ~is_xr) | (table[Col.days_supply] < 1)
    bad_date = table[Col.dispense_date].isnull()
    checks = (
        ("medication not in the vocabulary", bad_med,
         f"map source values to one of {', '.join(known)}"),
        ("days_supply missing or < 1", bad_supply.fill_null(False),
         "fill days_supply (>= 1; it may be missing only for naltrexone_xr)"),
        ("dispense_date missing", bad_date, "drop or repair these dispensings explicitly"),
    )
    # one aggregate query; ids are fetched only when something is wrong
    counts = table.aggregate(**{f"n{i}": int_from_bool(c[1]).sum() for i, c in enumerate(checks)}).execute()
    problems = []
    for i, (label, cond, fix) in enumerate(checks):
        n = counts[f"n{i}"].iloc[0]
        n = 0 if pd.isna(n) else int(n)
        if n:
            sub = table.filter(cond)
            ids = sub.select(Col.patient_id).limit(5).execute()[Col.patient_id].tolist()
            problems.append(f"{n} row(s) with {label} (patient_id: {format_ids(ids)}); {fix}")
    if problems:
        raise DataValidationError("medications: " + "; ".join(problems) + ".")


def _dispensings(table):
    """Per dispensing: patient_id, medication_class, day, covered, supply_raw."""
    import ibis

    med = table[Col.medication]
    supply = table[Col.days_supply].cast("float64")
    is_xr = med == Medication.naltrexone_xr.value
    covered = ibis.cases(
        (is_xr & (supply.isnull() | (supply <= 1)), XR_NALTREXONE_DAYS),
        else_=supply,
    ).cast("int64")
    return table.select(
        **{Col.patient_id: table[Col.patient_id].cast("string")},
        medication_class=med.substitute(MEDICATION_CLASS, else_=ibis.null("string")),
        day=day_number(table[Col.dispense_date]),
        covered=covered,
        supply_raw=supply.fill_null(0).cast("int64"),
    )


def _coverage(disp):
    """Shift early refills forward within patient x class; add cov_start, cov_end (epoch days).

    Rows with equal (day, covered) are interchangeable, so ordering by them gives the
    same result on every engine even though ties have no defined order.
    """
    import ibis

    order = [disp.day, disp.covered]
    w = ibis.window(group_by=[Col.patient_id, "medication_class"], order_by=order,
                    preceding=None, following=0)
    t = disp.mutate(cum=disp.covered.sum().over(w).cast("int64"))
    t = t.mutate(term=(t.day - 1 - t.cum + t.covered).cast("int64"))
    t = t.mutate(cov_end=(t.cum + t.term.max().over(w)).cast("int64"))
    return t.mutate(cov_start=(t.cov_end - t.covered + 1).cast("int64"))


def _eras_expr(cov, grace_days: int):
    """Era number per dispensing and the era table (epoch days)."""
    import ibis

    w = ibis.window(group_by=[Col.patient_id, "medication_class"], order_by=[cov.day, cov.covered])
    wc = ibis.window(group_by=[Col.patient_id, "medication_class"], order_by=[cov.day, cov.covered],
                     preceding=None, following=0)
    t = cov.mutate(prev_end=cov.cov_end.lag().over(w))
    gap = t.day - t.prev_end - 1  # uncovered days before this dispensing
    is_new = t.prev_end.isnull() | (gap > grace_days)
    t = t.mutate(is_new=int_from_bool(is_new),
                 gap_in=ibis.cases((is_new, 0), else_=ibis.greatest(gap, 0)).cast("int64"))
    t = t.mutate(era_number=t.is_new.sum().over(wc).cast("int64"))
    return t


def _era_table(t, retention_days: int, retention_max_gap_days: int | None):
    import ibis

    eras = t.group_by([Col.patient_id, "medication_class", "era_number"]).aggregate(
        start_day=t.day.min(),
        end_day=t.cov_end.max(),
        n_dispensings=t.count(),
        days_supply_total=t.supply_raw.sum(),
        days_covered=t.covered.sum(),
        gap_days_total=t.gap_in.sum(),
        max_gap=t.gap_in.max(),
    )
    era_days = eras.end_day - eras.start_day + 1
    retained = era_days >= retention_days
    if retention_max_gap_days is not None:
        retained = retained & (eras.max_gap <= retention_max_gap_days)
    return eras.select(
        Col.patient_id,
        "medication_class",
        eras.era_number.cast("int64").name("era_number"),
        date_from_day(eras.start_day).name("era_start"),
        date_from_day(eras.end_day).name("era_end"),
        eras.n_dispensings.cast("int64").name("n_dispensings"),
        eras.days_supply_total.cast("int64").name("days_supply_total"),
        eras.days_covered.cast("int64").name("days_covered"),
        era_days.cast("int64").name("era_days"),
        eras.gap_days_total.cast("int64").name("gap_days_total"),
        ibis.coalesce(retained, False).name("is_retained_180"),
    )


def _islands(cov):
    """Union of shifted coverage across classes per patient: patient_id, isl_start, isl_end."""
    import ibis

    w_prev = ibis.window(group_by=Col.patient_id, order_by=[cov.cov_start, cov.cov_end],
                         rows=(None, -1))
    w_cum = ibis.window(group_by=Col.patient_id, order_by=[cov.cov_start, cov.cov_end],
                        preceding=None, following=0)
    t = cov.mutate(prev_max=cov.cov_end.max().over(w_prev))
    t = t.mutate(is_new=int_from_bool(t.prev_max.isnull() | (t.cov_start > t.prev_max + 1)))
    t = t.mutate(island=t.is_new.sum().over(w_cum).cast("int64"))
    return t.group_by([Col.patient_id, "island"]).aggregate(
        isl_start=t.cov_start.min(), isl_end=t.cov_end.max()
    )


def _pdc_expr(islands, windows, id_col: str):
    """Days covered in each window [w_start, w_end] (epoch days, inclusive)."""
    import ibis

    j = windows.left_join(
        islands,
        [
            windows[Col.patient_id] == islands[Col.patient_id],
            islands.isl_start <= windows.w_end,
            islands.isl_end >= windows.w_start,
        ],
    )
    overlap = (ibis.least(j.isl_end, j.w_end) - ibis.greatest(j.isl_start, j.w_start) + 1)
    j = j.mutate(ov=ibis.cases((j.isl_start.notnull(), overlap), else_=0))
    agg = j.group_by([id_col, Col.patient_id, "w_start", "w_end"]).aggregate(days_covered=j.ov.sum())
    window_days = agg.w_end - agg.w_start + 1
    return agg.select(
        id_col,
        Col.patient_id,
        window_days.cast("int64").name("window_days"),
        agg.days_covered.cast("int64").name("days_covered"),
        (agg.days_covered.cast("float64") / window_days.cast("float64")).name("pdc"),
    )


def _check_nonneg_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelSpecificationError(f"{name} must be a non-negative integer number of days, got {value!r}.")


def _shape_dates(df: pd.DataFrame, cols) -> pd.DataFrame:
    for c in cols:
        df[c] = pd.to_datetime(df[c]).astype("datetime64[ns]")
    return df


# --------------------------------------------------------------------------- public
def medication_eras(
    medications: Any,
    *,
    grace_days: int = 30,
    engine: Any = None,
    lazy: bool = False,
    retention_days: int = 180,
    retention_max_gap_days: int | None = None,
):
    """Join dispensings of one medication class into continuous exposure eras.

    Parameters
    ----------
    medications : pandas.DataFrame, str, pathlib.Path, ibis Table or None
        The ``medications`` table of the data contract (``patient_id, medication,
        dispense_date, days_supply``; other columns are ignored), or a CSV/Parquet
        path to it. ``None`` or a table without rows (no MAT dispensed) gives an era
        table without rows.
    grace_days : int, default 30
        Persistence window in days: a dispensing joins the current era of its class
        when at most ``grace_days`` uncovered days separate it from the end of the
        previous coverage (OHDSI drug eras use 30).
    engine : None, "duckdb", "spark" or an Ibis backend, default None (DuckDB)
        Where the expression runs (see :mod:`iop_research.derive.engine`).
    lazy : bool, default False
        Return the unexecuted Ibis table instead of a pandas DataFrame.
    retention_days : int, default 180
        An era is *retained* when ``era_days >= retention_days``.
    retention_max_gap_days : int or None, default None
        When given, retention additionally requires that no single uncovered gap
        inside the era exceeds this many days (e.g. 7 for a stricter
        buprenorphine-retention definition). ``None`` uses the era rule alone.

    Returns
    -------
    pandas.DataFrame (or ibis Table when ``lazy``)
        One row per era, sorted by ``patient_id, medication_class, era_number``:

        - ``patient_id``
        - ``medication_class``: a :class:`~iop_research.data.schema.MedicationClass` value
        - ``era_number``: 1, 2, ... within patient and class, in time order
        - ``era_start``: first dispense date of the era
        - ``era_end``: last covered day (inclusive), after shifting early refills
        - ``n_dispensings``: dispensings in the era
        - ``days_supply_total``: sum of ``days_supply`` as recorded (missing = 0)
        - ``days_covered``: days covered after the formulation rules (XR-naltrexone
          28 days); with early refills shifted forward no day is counted twice
        - ``era_days``: ``era_end - era_start + 1``
        - ``gap_days_total``: uncovered days inside the era
          (``era_days == days_covered + gap_days_total``)
        - ``is_retained_180``: ``era_days >= retention_days`` (and the gap rule of
          ``retention_max_gap_days``); the name stays fixed whatever
          ``retention_days`` is, so downstream code never breaks.

    Raises
    ------
    DataValidationError
        Missing columns, medication values outside the vocabulary, ``days_supply``
        missing (other than XR-naltrexone) or below 1, missing dispense dates.
    ModelSpecificationError
        Negative or non-integer day arguments; unknown engine.

    See Also
    --------
    proportion_days_covered : share of a window covered by any MAT.

    Notes
    -----
    Conventions are in the module docstring. Compared with R: there is no
    ``survival`` equivalent; the eras match the OHDSI ``DRUG_ERA`` rule with a
    ``grace_days`` persistence window, plus forward shifting of early refills as
    in the PQA PDC measure [2]_.

    References
    ----------
    .. [1] OHDSI Common Data Model, ``DRUG_ERA`` (persistence window 30 days).
    .. [2] Pharmacy Quality Alliance, Proportion of Days Covered measure.

    Examples
    --------
    >>> import pandas as pd
    >>> meds = pd.DataFrame({
    ...     "patient_id": ["p1", "p1", "p1", "p2"],
    ...     "medication": ["buprenorphine"] * 3 + ["naltrexone_xr"],
    ...     "dispense_date": pd.to_datetime(["2024-01-01", "2024-01-25", "2024-04-01", "2024-01-10"]),
    ...     "days_supply": [30, 30, 7, 1],
    ... })
    >>> eras = medication_eras(meds, grace_days=30)
    >>> eras[["patient_id", "era_number", "era_start", "era_end", "days_covered", "era_days"]]
      patient_id  era_number  era_start    era_end  days_covered  era_days
    0         p1           1 2024-01-01 2024-02-29            60        60
    1         p1           2 2024-04-01 2024-04-07             7         7
    2         p2           1 2024-01-10 2024-02-06            28        28
    """
    _check_nonneg_int(grace_days, "grace_days")
    _check_nonneg_int(retention_days, "retention_days")
    if retention_max_gap_days is not None:
        _check_nonneg_int(retention_max_gap_days, "retention_max_gap_days")
    if medications is None or (isinstance(medications, pd.DataFrame) and len(medications) == 0):
        # no dispensings (e.g. a programme without MAT): no eras, same columns and dtypes
        if medications is not None and len(medications.columns):
            # the columns must still be there (a frame with no columns at all is an absent table)
            _medications_table(None, medications, register=False)
        empty = _empty_eras()
        if lazy:
            import ibis

            return ibis.memtable(empty)
        return empty
    backend = _backend_for(medications, engine)
    table = _medications_table(backend, medications)
    _validate_medications(table)
    cov = _coverage(_dispensings(table))
    eras = _era_table(_eras_expr(cov, grace_days), retention_days, retention_max_gap_days)
    eras = eras.order_by([Col.patient_id, "medication_class", "era_number"])
    if lazy:
        return collect(eras, lazy=True)
    out = collect(eras)
    out = _shape_dates(out, ["era_start", "era_end"]).reset_index(drop=True)
    out["is_retained_180"] = out["is_retained_180"].astype(bool)
    return out.loc[:, list(ERA_COLUMNS)]


def proportion_days_covered(
    medications: Any,
    windows: pd.DataFrame,
    *,
    start_col: str = Col.admit_date,
    end_col: str = Col.discharge_date,
    id_col: str = Col.episode_id,
    medication_classes: list[str] | None = None,
    engine: Any = None,
    lazy: bool = False,
):
    """Proportion of days in each patient window covered by MAT (any class).

    Parameters
    ----------
    medications : pandas.DataFrame, path or ibis Table
        The ``medications`` table (see :func:`medication_eras`).
    windows : pandas.DataFrame
        One row per window with ``patient_id``, ``id_col``, ``start_col`` and
        ``end_col`` (dates; both days included). Windows with a missing end are
        not allowed (close them at the observation end first).
    start_col, end_col : str, default "admit_date", "discharge_date"
        Window bounds (inclusive).
    id_col : str, default "episode_id"
        Window identifier, unique in ``windows``.
    medication_classes : list of str or None, default None (all classes)
        Restrict to these :class:`~iop_research.data.schema.MedicationClass` values.
    engine : None, "duckdb", "spark" or an Ibis backend, default None
    lazy : bool, default False

    Returns
    -------
    pandas.DataFrame
        One row per window, in the order of ``windows``: ``id_col``, ``patient_id``,
        ``window_days`` (``end - start + 1``), ``days_covered`` (days in the window
        covered by at least one class, early refills shifted forward within class,
        overlapping classes counted once), ``pdc`` (``days_covered / window_days``).

    Raises
    ------
    DataValidationError
        Missing columns, missing window bounds, end before start, bad medications.

    References
    ----------
    .. [1] Pharmacy Quality Alliance, Proportion of Days Covered measure
       (early refills shift forward; a day counts once).

    Examples
    --------
    >>> import pandas as pd
    >>> meds = pd.DataFrame({"patient_id": ["p1", "p1"], "medication": ["buprenorphine"] * 2,
    ...     "dispense_date": pd.to_datetime(["2024-01-01", "2024-01-05"]), "days_supply": [7, 7]})
    >>> win = pd.DataFrame({"episode_id": ["E1"], "patient_id": ["p1"],
    ...     "admit_date": pd.to_datetime(["2024-01-01"]), "discharge_date": pd.to_datetime(["2024-01-20"])})
    >>> proportion_days_covered(meds, win)
      episode_id patient_id  window_days  days_covered  pdc
    0         E1         p1           20            14  0.7
    """
    for c in (Col.patient_id, id_col, start_col, end_col):
        if c not in windows.columns:
            raise DataValidationError(f"windows: missing column {c!r}. Pass id_col/start_col/end_col.")
    w = pd.DataFrame({
        id_col: windows[id_col].astype(str).to_numpy(),
        Col.patient_id: windows[Col.patient_id].astype(str).to_numpy(),
        "w_start": pd.to_datetime(windows[start_col]).astype("datetime64[ns]").to_numpy(),
        "w_end": pd.to_datetime(windows[end_col]).astype("datetime64[ns]").to_numpy(),
    })
    bad = w["w_start"].isna() | w["w_end"].isna() | (w["w_end"] < w["w_start"])
    if bad.any():
        raise DataValidationError(
            f"windows: {int(bad.sum())} window(s) with a missing bound or {end_col} before "
            f"{start_col} ({id_col}: {format_ids(w.loc[bad, id_col])}). Close open windows at "
            "the observation end and repair reversed dates."
        )
    backend = _backend_for(medications, engine)
    table = _medications_table(backend, medications)
    _validate_medications(table)
    disp = _dispensings(table)
    if medication_classes is not None:
        disp = disp.filter(disp.medication_class.isin(list(medication_classes)))
    wt = as_table(backend, w, "windows")
    wt = wt.mutate(w_start=day_number(wt.w_start), w_end=day_number(wt.w_end))
    expr = _pdc_expr(_islands(_coverage(disp)), wt, id_col)
    if lazy:
        return collect(expr, lazy=True)
    out = collect(expr)
    order = pd.Series(range(len(w)), index=w[id_col])
    out = out.iloc[order.loc[out[id_col]].to_numpy().argsort()].reset_index(drop=True)
    return out.loc[:, [id_col, *PDC_COLUMNS]]


def _backend_for(data, engine):
    """The backend of an Ibis table input, else :func:`get_backend`."""
    import ibis

    if isinstance(data, ibis.expr.types.Table) and engine is None:
        return data._find_backend()
    return get_backend(engine)
