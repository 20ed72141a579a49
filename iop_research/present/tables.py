"""Publication tables: Table 1, model tables, attrition, length of stay, exports.

Numbers and presentation are kept apart: :func:`table_one`,
:func:`suppress_attrition` and :func:`los_summary` return numeric tidy tables
(small cells already suppressed, see :mod:`iop_research.privacy`);
:func:`format_table_one`, :func:`model_table` and :func:`format_attrition`
turn numbers into display strings; :func:`export_table` writes CSV, HTML or
LaTeX after a last small-cell check.
"""
from __future__ import annotations

import html as _html
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research.designs.balance import standardized_mean_difference
from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids
from iop_research.privacy.audit import audit_ledger
from iop_research.privacy.suppression import (
    COMPLEMENTARY_MARKER,
    DEFAULT_MIN_CELL_COUNT,
    SuppressionMask,
    check_min_cell_count,
    apply_suppression,
    protect_lines,
    check_no_small_cells,
    format_suppressed,
    suppression_mask,
)

__all__ = [
    "modality_by_week",
    "swimmer_data",
    "TABLE_ONE_COLUMNS",
    "table_one",
    "format_table_one",
    "standardized_mean_difference",
    "model_table",
    "format_p_value",
    "suppress_attrition",
    "format_attrition",
    "los_summary",
    "smooth_curve",
    "to_csv",
    "to_html",
    "to_latex",
    "export_table",
    "LABEL_COLUMNS",
]

#: Columns of :func:`table_one`'s output, fixed.
TABLE_ONE_COLUMNS = (
    "variable",
    "level",
    "kind",
    "group",
    "n",
    "missing",
    "count",
    "percent",
    "mean",
    "sd",
    "median",
    "q1",
    "q3",
    "smd",
)
_COUNT_COLS = ("n", "missing", "count")
_STAT_COLS = ("mean", "sd", "median", "q1", "q3")

#: Label columns that :func:`export_table`'s small-cell check does not parse as counts.
LABEL_COLUMNS = frozenset({"variable", "level", "term", "step", "reason", "Variable", "Level", "Term", "Step", "Reason", "group", "Group"})


# --------------------------------------------------------------------------- SMD
# One implementation, in designs/balance.py (IPTW's balance table uses it too);
# standardized_mean_difference is imported above and re-exported because table_one reports it.


# --------------------------------------------------------------------------- Table 1


def _group_levels(s: pd.Series) -> list:
    if isinstance(s.dtype, pd.CategoricalDtype):
        present = set(s.dropna().unique())
        return [c for c in s.cat.categories if c in present]
    return sorted(pd.unique(s.dropna()), key=lambda x: (str(type(x)), x))


def _cat_levels(s: pd.Series) -> list:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return list(s.cat.categories)
    vals = pd.unique(s.dropna())
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def table_one(
    df: pd.DataFrame,
    *,
    group_col: str,
    continuous: Sequence[str] = (),
    categorical: Sequence[str] = (),
    nonnormal: Sequence[str] = (),
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    overall: bool = True,
    overall_label: str = "Overall",
    percent_of: str = "all",
) -> pd.DataFrame:
    """Baseline characteristics by group ("Table 1"), as numbers, suppressed.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per unit (episode or patient). Not modified.
    group_col : str
        Grouping column (e.g. MAT yes/no). Must have no missing values.
    continuous : sequence of str
        Numeric variables summarised by mean and SD (median and quartiles are
        also returned).
    categorical : sequence of str
        Variables summarised by count and percent per level; levels are the
        categories of a categorical dtype, else the sorted distinct values.
    nonnormal : sequence of str
        Numeric variables to be shown as median [Q1, Q3] (may repeat names in
        ``continuous``).
    min_cell_count : int, default 11
        Counts in ``1 .. min_cell_count-1`` are hidden with complementary
        suppression chosen by :func:`iop_research.privacy.protect_lines` and
        checked by the auditor against every margin a reader knows (levels sum
        to the non-missing count, non-missing plus missing to the group size,
        groups to the overall column); statistics (mean, SD, quartiles) of
        fewer than ``min_cell_count`` values are hidden, and so are percentages
        whose count or denominator is hidden.
        ``min_cell_count=1`` disables suppression (never for publication).
    overall : bool, default True
        Add a column of all units, labelled ``overall_label``.
    overall_label : str, default "Overall"
    percent_of : {"all", "non_missing"}, default "all"
        Denominator of categorical percentages. "all": every unit of the group
        (missing values are their own row), so percentages never reveal a
        suppressed missing count. "non_missing": R tableone's default; a
        percentage times its count gives the number of non-missing values, so
        wherever that number is hidden all percentages of the variable in that
        group are hidden too.

    Returns
    -------
    pandas.DataFrame
        Long table, columns :data:`TABLE_ONE_COLUMNS`:
        ``variable, level, kind, group, n, missing, count, percent, mean, sd,
        median, q1, q3, smd``. ``kind`` is "count" (the first rows, variable
        ``"n"``: group sizes in ``n``), "continuous", "nonnormal" or
        "categorical". ``n`` is the number of non-missing values and
        ``missing`` the number missing (per variable and group; repeated on
        each level row); ``count``/``percent`` the level's count and percent
        (see ``percent_of``); quartiles are R's type 7; ``sd`` has ddof=1. ``smd``
        is the largest pairwise standardised mean difference between groups
        (:func:`standardized_mean_difference`), repeated on each row of the
        variable. Counts are nullable ``Int64`` (``NA`` where hidden);
        ``attrs["suppressed"]`` is the :class:`~iop_research.privacy.SuppressionMask`,
        whose ``ledger`` :func:`iop_research.privacy.audit_table` audits.

    Raises
    ------
    DataValidationError
        Missing columns, missing group labels, non-numeric continuous values, a
        group named like ``overall_label``.

    References
    ----------
    .. [1] Yoshida K, Bartel A. tableone: Create 'Table 1' to describe baseline
       characteristics (R package), ``CreateTableOne(..., smd=TRUE)``.
    .. [2] Austin PC (2009). *Stat Med* 28:3083-3107 (SMD).
    .. [3] CMS Cell Size Suppression Policy (2020).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"mat": ["yes"] * 12 + ["no"] * 14,
    ...                    "age": list(range(20, 32)) + list(range(30, 44)),
    ...                    "sex": ["f"] * 4 + ["m"] * 8 + ["f"] * 7 + ["m"] * 7})
    >>> t1 = table_one(df, group_col="mat", continuous=["age"], categorical=["sex"])
    >>> t1.loc[t1.variable == "age", ["group", "mean"]].values.tolist()
    [['no', 36.5], ['yes', 25.5], ['Overall', 31.423076923076923]]
    >>> t1.loc[(t1.variable == "sex") & (t1.group == "yes"), "count"].astype("string").fillna("NA").tolist()
    ['NA', 'NA']

    The group sizes are hidden too: with ``n = 12`` shown, two ``"<11"``
    cells summing to 12 would each be at least 2 (the audit says so).

    >>> t1.loc[t1.variable == "n", "n"].astype("string").fillna("NA").tolist()
    ['NA', 'NA', '26']
    >>> from iop_research.privacy import audit_table
    >>> bool(audit_table(t1)["is_protected"].all())
    True
    """
    k = check_min_cell_count(min_cell_count)
    if percent_of not in ("all", "non_missing"):
        raise ModelSpecificationError(f"table_one: percent_of must be 'all' or 'non_missing', got {percent_of!r}.")
    continuous = list(dict.fromkeys(list(continuous) + [v for v in nonnormal if v not in categorical]))
    categorical = list(categorical)
    nonnormal = set(nonnormal)
    needed = [group_col, *continuous, *categorical]
    missing_cols = [c for c in needed if c not in df.columns]
    if missing_cols:
        raise DataValidationError(
            f"table_one: columns {format_ids(missing_cols)} not found in the data "
            f"(columns: {format_ids(df.columns)}). Check the names passed."
        )
    both = set(continuous) & set(categorical)
    if both:
        raise DataValidationError(
            f"table_one: {format_ids(sorted(both))} listed as both continuous and categorical; list each once."
        )
    if df[group_col].isna().any():
        bad = df.index[df[group_col].isna()]
        raise DataValidationError(
            f"table_one: {len(bad)} rows have no {group_col!r} (index: {format_ids(bad)}). "
            f"Fill the group or exclude these rows explicitly (and count them in the attrition table)."
        )
    groups = _group_levels(df[group_col])
    if overall and overall_label in [str(g) for g in groups]:
        raise DataValidationError(
            f"table_one: a group of {group_col!r} is named {overall_label!r}; pass another overall_label."
        )
    frames = [(g, df[df[group_col] == g]) for g in groups]
    if overall:
        frames.append((overall_label, df))

    records: list[dict] = []
    vals: list[float] = []
    pos: dict[int, list[tuple[int, str]]] = {}

    def cell(value, ri: int, col: str) -> int:
        cid = len(vals)
        vals.append(float(value))
        pos[cid] = [(ri, col)]
        return cid

    lines: list[list[int]] = []
    explicit: list[bool] = []  # the line's last cell is its total; else its sum is known (not a cell)

    def add_line(line: list[int], has_total: bool = True) -> None:
        lines.append(line)
        explicit.append(has_total)

    def across(ids: dict) -> None:
        line = [ids[g] for g in groups] + ([ids[overall_label]] if overall else [])
        if overall or len(groups) >= 2:
            add_line(line, has_total=overall)

    n_ids = {}
    for g, d in frames:
        ri = len(records)
        records.append({"variable": "n", "level": None, "kind": "count", "group": g, "n": len(d)})
        n_ids[g] = cell(len(d), ri, "n")
    big_n = dict(n_ids)
    across(n_ids)

    for v in continuous:
        x_all = pd.to_numeric(df[v], errors="coerce")
        bad = x_all.isna() & df[v].notna()
        if bad.any():
            raise DataValidationError(
                f"table_one: continuous variable {v!r} has {int(bad.sum())} non-numeric values "
                f"(index: {format_ids(df.index[bad])}). Convert them, or list {v!r} as categorical."
            )
        smd = standardized_mean_difference(x_all, df[group_col])
        kind = "nonnormal" if v in nonnormal else "continuous"
        nn_ids, mm_ids = {}, {}
        for g, d in frames:
            x = x_all.loc[d.index].dropna().to_numpy(dtype=float)
            ri = len(records)
            rec = {"variable": v, "level": None, "kind": kind, "group": g, "n": x.size, "missing": len(d) - x.size, "smd": smd}
            if x.size:
                q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
                rec.update(mean=float(np.mean(x)), sd=float(np.std(x, ddof=1)) if x.size > 1 else np.nan, median=float(med), q1=float(q1), q3=float(q3))
            records.append(rec)
            nn_ids[g] = cell(x.size, ri, "n")
            mm_ids[g] = cell(len(d) - x.size, ri, "missing")
            add_line([nn_ids[g], mm_ids[g], big_n[g]])
        across(nn_ids)
        across(mm_ids)

    for v in categorical:
        s_all = df[v]
        levels = _cat_levels(s_all)
        if not levels:
            raise DataValidationError(
                f"table_one: categorical variable {v!r} has no non-missing values. Drop it from categorical."
            )
        smd = standardized_mean_difference(s_all.astype(object), df[group_col], categorical=True)
        nn_ids, mm_ids = {}, {}
        lev_ids: dict = {lev: {} for lev in levels}
        for g, d in frames:
            s = s_all.loc[d.index]
            nn = int(s.notna().sum())
            miss = len(d) - nn
            first = None
            for lev in levels:
                cnt = int((s == lev).sum())
                ri = len(records)
                records.append(
                    {
                        "variable": v,
                        "level": lev,
                        "kind": "categorical",
                        "group": g,
                        "n": nn,
                        "missing": miss,
                        "count": cnt,
                        "percent": (100.0 * cnt / (nn if percent_of == "non_missing" else len(d))) if (nn if percent_of == "non_missing" else len(d)) else np.nan,
                        "smd": smd,
                    }
                )
                lev_ids[lev][g] = cell(cnt, ri, "count")
                if first is None:
                    first = ri
                    nn_ids[g] = cell(nn, ri, "n")
                    mm_ids[g] = cell(miss, ri, "missing")
                else:
                    pos[nn_ids[g]].append((ri, "n"))
                    pos[mm_ids[g]].append((ri, "missing"))
            add_line([lev_ids[lev][g] for lev in levels] + [nn_ids[g]])
            add_line([nn_ids[g], mm_ids[g], big_n[g]])
        for lev in levels:
            across(lev_ids[lev])
        across(nn_ids)
        across(mm_ids)

    out = pd.DataFrame.from_records(records)
    for c in TABLE_ONE_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    out = out[list(TABLE_ONE_COLUMNS)]
    out["level"] = out["level"].astype(object)

    values = np.array(vals, dtype=float)
    # group sizes and the overall column are totals: hidden last (the audit picks cheaper cells first)
    is_total = np.zeros(values.size, bool)
    is_total[np.array(list(big_n.values()))] = True
    for ids, has_total in zip(lines, explicit):
        if has_total:
            is_total[ids[-1]] = True
    labels = [""] * values.size
    for cid, plist in pos.items():
        ri, col = plist[0]
        r = out.iloc[ri]
        lab = str(r["variable"]) if pd.isna(r["level"]) else f"{r['variable']}: {r['level']}"
        labels[cid] = f"{lab}|{r['group']} {col}"
    hidden, primary, ledger = protect_lines(values, [np.array(li) for li in lines], min_cell_count=k,
                                            is_total=is_total, totals_last=explicit, labels=labels)

    hid = pd.DataFrame(False, index=out.index, columns=out.columns)
    pri = hid.copy()
    counts = {c: out[c].to_numpy(dtype=float, na_value=np.nan).copy() for c in _COUNT_COLS}
    for cid, plist in pos.items():
        for ri, col in plist:
            counts[col][ri] = values[cid]
            if hidden[cid]:
                hid.iat[ri, out.columns.get_loc(col)] = True
                pri.iat[ri, out.columns.get_loc(col)] = bool(primary[cid])
    # derived values: a percentage is hidden with its count or its denominator (it would give either back)
    pct_h = hid["count"].to_numpy()
    is_cat = (out["kind"] == "categorical").to_numpy()
    if percent_of == "non_missing":
        pct_h = pct_h | (is_cat & hid["n"].to_numpy())
    else:
        group_hidden = {g: bool(hidden[cid]) for g, cid in big_n.items()}
        pct_h = pct_h | (is_cat & out["group"].map(group_hidden).fillna(False).to_numpy(dtype=bool))
    hid["percent"] = pct_h
    nvals = counts["n"]
    small_stats = (out["kind"].isin(["continuous", "nonnormal"]).to_numpy()) & (nvals >= 1) & (nvals < k)
    for c in _STAT_COLS:
        hid[c] = small_stats
    return apply_suppression(out, hidden=hid, primary=pri, min_cell_count=k, count_cols=_COUNT_COLS,
                             derived_cols=["percent", *_STAT_COLS], counts=counts, ledger=ledger)


def _fmt(v, digits: int) -> str:
    return f"{v:.{digits}f}"


def format_table_one(
    t1: pd.DataFrame,
    *,
    digits: int = 1,
    pct_digits: int = 1,
    smd_digits: int = 3,
    show_missing: bool = True,
    marker: str | None = None,
    complementary_marker: str = COMPLEMENTARY_MARKER,
) -> pd.DataFrame:
    """Display strings of a :func:`table_one` result, one column per group.

    Parameters
    ----------
    t1 : pandas.DataFrame
        Output of :func:`table_one`.
    digits : int, default 1
        Decimals of means, SDs and quartiles.
    pct_digits : int, default 1
        Decimals of percentages.
    smd_digits : int, default 3
        Decimals of SMDs.
    show_missing : bool, default True
        Add a "missing" row under each variable that has missing values.
    marker : str, optional
        Text of small counts; default ``"<11"`` (from the mask).
    complementary_marker : str, default "*"
        Text of cells hidden to protect small ones.

    Returns
    -------
    pandas.DataFrame
        Columns ``variable, level, <groups...>, SMD``, all strings. Continuous
        variables read ``"mean (SD)"``, non-normal ``"median [Q1, Q3]"``,
        categorical levels ``"count (percent)"``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"g": ["a"] * 15 + ["b"] * 15, "x": [1.0, 2.0, 3.0] * 10})
    >>> format_table_one(table_one(df, group_col="g", continuous=["x"])).values.tolist()
    [['n', '', '15', '15', '30', ''], ['x, mean (SD)', '', '2.0 (0.8)', '2.0 (0.8)', '2.0 (0.8)', '0.000']]
    """
    mask = t1.attrs.get("suppressed")
    k = mask.min_cell_count if isinstance(mask, SuppressionMask) else DEFAULT_MIN_CELL_COUNT
    mark = marker if marker is not None else (mask.marker if isinstance(mask, SuppressionMask) else f"<{k}")
    hid = suppression_mask(t1)
    pri = mask.primary.reindex(index=t1.index, columns=t1.columns, fill_value=False) if isinstance(mask, SuppressionMask) else hid & False
    groups = list(dict.fromkeys(t1["group"].tolist()))

    def count_text(idx, col) -> str:
        if pri.at[idx, col]:
            return mark
        v = t1.at[idx, col]
        if hid.at[idx, col] or pd.isna(v):
            return complementary_marker
        return f"{int(v)}"

    rows: list[dict] = []
    for var, d in t1.groupby("variable", sort=False):
        kind = d["kind"].iloc[0]
        smd = d["smd"].iloc[0]
        smd_s = "" if pd.isna(smd) else _fmt(float(smd), smd_digits)
        if kind == "count":
            row = {"variable": "n", "level": ""}
            for _, r in d.iterrows():
                row[r["group"]] = count_text(r.name, "n")
            row["SMD"] = ""
            rows.append(row)
            continue
        if kind in ("continuous", "nonnormal"):
            label = f"{var}, mean (SD)" if kind == "continuous" else f"{var}, median [Q1, Q3]"
            row = {"variable": label, "level": ""}
            for _, r in d.iterrows():
                if hid.at[r.name, "mean"] or pd.isna(r["mean"]):
                    row[r["group"]] = complementary_marker if hid.at[r.name, "mean"] else ""
                elif kind == "continuous":
                    sd = "" if pd.isna(r["sd"]) else _fmt(r["sd"], digits)
                    row[r["group"]] = f"{_fmt(r['mean'], digits)} ({sd})"
                else:
                    row[r["group"]] = f"{_fmt(r['median'], digits)} [{_fmt(r['q1'], digits)}, {_fmt(r['q3'], digits)}]"
            row["SMD"] = smd_s
            rows.append(row)
        else:
            rows.append({"variable": f"{var}, n (%)", "level": "", **{g: "" for g in groups}, "SMD": smd_s})
            for lev, dl in d.groupby("level", sort=False):
                row = {"variable": "", "level": str(lev)}
                for _, r in dl.iterrows():
                    c = count_text(r.name, "count")
                    if c.isdigit():
                        pct = complementary_marker if pd.isna(r["percent"]) else _fmt(r["percent"], pct_digits)
                        c = f"{c} ({pct})"
                    row[r["group"]] = c
                row["SMD"] = ""
                rows.append(row)
        if show_missing:
            first = d.drop_duplicates("group")
            miss = first["missing"]
            if (miss.fillna(1) > 0).any():
                row = {"variable": "", "level": "missing"}
                for _, r in first.iterrows():
                    row[r["group"]] = count_text(r.name, "missing")
                row["SMD"] = ""
                rows.append(row)
    out = pd.DataFrame(rows, columns=["variable", "level", *groups, "SMD"]).fillna("")
    out.columns = [str(c) for c in out.columns]
    return out


# --------------------------------------------------------------------------- models


def format_p_value(p: float, *, digits: int = 3) -> str:
    """Format a p-value: ``"<0.001"`` below ``10**-digits``, else fixed decimals.

    Examples
    --------
    >>> format_p_value(0.0004), format_p_value(0.0432), format_p_value(float("nan"))
    ('<0.001', '0.043', '')
    """
    if p is None or pd.isna(p):
        return ""
    lim = 10.0 ** (-digits)
    if p < lim:
        return f"<{lim:.{digits}f}"
    return f"{p:.{digits}f}"


def model_table(
    result_or_tidy,
    *,
    digits: int = 2,
    p_digits: int = 3,
    labels: Mapping[str, str] | None = None,
    conf_level: float = 0.95,
) -> pd.DataFrame:
    """Display table of a model: term, estimate (CI), p.

    Parameters
    ----------
    result_or_tidy : Result or pandas.DataFrame
        A Cox result (tidy has ``hazard_ratio, hr_conf_low, hr_conf_high``), or
        any result / tidy table with ``term, estimate, conf_low, conf_high,
        p_value``.
    digits : int, default 2
        Decimals of estimates and limits.
    p_digits : int, default 3
        Decimals of p-values (smaller shown as ``"<0.001"``).
    labels : mapping of str to str, optional
        Display names of terms.
    conf_level : float, default 0.95
        Only used in the column header.

    Returns
    -------
    pandas.DataFrame
        Columns ``Term``, ``"HR (95% CI)"`` (or ``"Estimate (95% CI)"``) and
        ``p``, strings; one row per term in the tidy order.

    Raises
    ------
    DataValidationError
        The tidy table lacks the needed columns.

    Examples
    --------
    >>> import pandas as pd
    >>> tidy = pd.DataFrame({"term": ["mat"], "estimate": [-0.5], "std_error": [0.2], "conf_low": [-0.9],
    ...     "conf_high": [-0.1], "p_value": [0.012], "hazard_ratio": [0.6065], "hr_conf_low": [0.4066],
    ...     "hr_conf_high": [0.9048]})
    >>> model_table(tidy, labels={"mat": "MAT (yes vs no)"}).values.tolist()
    [['MAT (yes vs no)', '0.61 (0.41, 0.90)', '0.012']]
    """
    tidy = getattr(result_or_tidy, "tidy", result_or_tidy)
    if not isinstance(tidy, pd.DataFrame):
        raise DataValidationError("model_table: pass a Result or its .tidy DataFrame.")
    pct = f"{100 * conf_level:g}%"
    if {"hazard_ratio", "hr_conf_low", "hr_conf_high"} <= set(tidy.columns):
        est, lo, hi, head = "hazard_ratio", "hr_conf_low", "hr_conf_high", f"HR ({pct} CI)"
    else:
        est, lo, hi, head = "estimate", "conf_low", "conf_high", f"Estimate ({pct} CI)"
    need = ["term", est, lo, hi]
    lack = [c for c in need if c not in tidy.columns]
    if lack:
        raise DataValidationError(
            f"model_table: the tidy table lacks {format_ids(lack)} (has {format_ids(tidy.columns)}). "
            f"Pass a term-level result (Cox or regression)."
        )
    labels = dict(labels or {})
    rows = []
    for _, r in tidy.iterrows():
        rows.append(
            {
                "Term": labels.get(r["term"], str(r["term"])),
                head: f"{_fmt(r[est], digits)} ({_fmt(r[lo], digits)}, {_fmt(r[hi], digits)})",
                "p": format_p_value(r["p_value"], digits=p_digits) if "p_value" in tidy.columns else "",
            }
        )
    return pd.DataFrame(rows, columns=["Term", head, "p"])


# --------------------------------------------------------------------------- attrition


def suppress_attrition(
    attrition: pd.DataFrame,
    *,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    removed_cols: Sequence[str] = ("rows_removed", "patients_removed"),
    remaining_cols: Sequence[str] = ("rows_remaining", "patients_remaining"),
    chain_col: str | None = "table",
) -> pd.DataFrame:
    """Suppress small counts of an attrition table, with complementary cells.

    Each step satisfies ``remaining[previous] = remaining[step] + removed[step]``
    (per pair of ``removed_cols``/``remaining_cols``), where the previous row is
    the one before it in the same chain (same value of ``chain_col``; the
    whole table when that column is absent). These are the lines of
    complementary suppression, chosen by :func:`iop_research.privacy.protect_lines`
    and checked by the auditor, so a small exclusion cannot be recovered or
    narrowed by subtraction. The input counts (first row of each chain) are
    kept shown (they are the study's N, published elsewhere) unless the
    small counts cannot be protected otherwise; then they are hidden last.

    Parameters
    ----------
    attrition : pandas.DataFrame
        One row per step, first row the input (``step, reason, rows_removed,
        patients_removed, rows_remaining, patients_remaining``, as
        ``cohorts.select_cohort``). Not modified.
    min_cell_count : int, default 11
    removed_cols, remaining_cols : sequence of str
        Paired count columns; pairs whose columns are absent are skipped.
    chain_col : str or None, default "table"
        Column naming the table chain of each row (``cohorts.Attrition`` records
        several chains, e.g. sessions and episodes, in one table).

    Returns
    -------
    pandas.DataFrame
        Copy with counts as nullable Int64 (``NA`` where hidden) and
        ``attrs["suppressed"]`` (its ``ledger`` is audited by
        :func:`iop_research.privacy.audit_table`).

    References
    ----------
    .. [1] CMS Cell Size Suppression Policy (2020).
    .. [2] von Elm E, et al. (2007). The STROBE statement (flow of participants).

    Examples
    --------
    >>> import pandas as pd
    >>> a = pd.DataFrame({"step": ["input", "age >= 18", "opioids"], "rows_removed": [0, 4, 300],
    ...                   "rows_remaining": [1000, 996, 696]})
    >>> s = suppress_attrition(a)
    >>> format_suppressed(s)[["rows_removed", "rows_remaining"]].values.tolist()
    [['0', '1000'], ['<11', '*'], ['*', '696']]
    """
    k = check_min_cell_count(min_cell_count)
    pairs = [(r, m) for r, m in zip(removed_cols, remaining_cols) if r in attrition.columns and m in attrition.columns]
    if not pairs:
        raise DataValidationError(
            f"suppress_attrition: none of the count columns {format_ids([*removed_cols, *remaining_cols])} found "
            f"(columns: {format_ids(attrition.columns)}). Pass removed_cols/remaining_cols."
        )
    from iop_research.privacy.suppression import counts_as_float

    cols = [c for p in pairs for c in p]
    vals = counts_as_float(attrition, cols, "suppress_attrition")
    n, m = vals.shape
    idx = np.arange(n * m).reshape(n, m)
    chains = attrition[chain_col].tolist() if chain_col is not None and chain_col in attrition.columns else [None] * n
    prev_of: dict = {}
    previous = []
    for i, c in enumerate(chains):
        previous.append(prev_of.get(c))
        prev_of[c] = i
    lines = []
    for j in range(0, m, 2):
        for i in range(n):
            if previous[i] is not None:
                lines.append(np.array([idx[i, j], idx[i, j + 1], idx[previous[i], j + 1]]))
    is_total = np.zeros((n, m), bool)
    is_total[:, 1::2] = True
    # the input of each chain (its first row's remaining counts) is the study's N, published elsewhere
    # too: it stays shown unless nothing else protects the small counts (then it is hidden last)
    is_input = np.zeros((n, m), bool)
    for i in range(n):
        if previous[i] is None:
            is_input[i, 1::2] = True
    labels = [f"{attrition.index[i]}|{cols[j]}" for i in range(n) for j in range(m)]
    hidden, primary, ledger = protect_lines(vals.ravel(), lines, min_cell_count=k, is_total=is_total.ravel(),
                                            locked=is_input.ravel(), labels=labels)
    if not audit_ledger(ledger)["is_protected"].all():
        hidden, primary, ledger = protect_lines(vals.ravel(), lines, min_cell_count=k, is_total=is_total.ravel(),
                                                cost_factor=np.where(is_input, 1e4, 1.0).ravel(), labels=labels)
    hidden, primary = hidden.reshape(n, m), primary.reshape(n, m)
    hid = pd.DataFrame(False, index=attrition.index, columns=attrition.columns)
    pri = hid.copy()
    for j, c in enumerate(cols):
        hid[c] = hidden[:, j]
        pri[c] = primary[:, j]
    return apply_suppression(attrition, hidden=hid, primary=pri, min_cell_count=k, count_cols=cols,
                             counts={c: vals[:, j] for j, c in enumerate(cols)}, ledger=ledger)


def format_attrition(attrition: pd.DataFrame, *, min_cell_count: int = DEFAULT_MIN_CELL_COUNT, **kwargs) -> pd.DataFrame:
    """Display strings of an attrition table (suppressing it first if needed).

    Parameters
    ----------
    attrition : pandas.DataFrame
        Raw or :func:`suppress_attrition` output.
    min_cell_count : int, default 11
        Used when ``attrition`` is not yet suppressed.
    **kwargs
        Passed to :func:`~iop_research.privacy.format_suppressed`.

    Returns
    -------
    pandas.DataFrame
        Same columns, strings (``"<11"`` small, ``"*"`` complementary).

    Examples
    --------
    >>> import pandas as pd
    >>> a = pd.DataFrame({"step": ["input", "adults"], "rows_removed": [0, 20], "rows_remaining": [100, 80]})
    >>> format_attrition(a).values.tolist()
    [['input', '0', '100'], ['adults', '20', '80']]
    """
    if not isinstance(attrition.attrs.get("suppressed"), SuppressionMask):
        attrition = suppress_attrition(attrition, min_cell_count=min_cell_count)
    return format_suppressed(attrition, **kwargs)


# --------------------------------------------------------------------------- LOS, smoothing


def los_summary(
    df: pd.DataFrame,
    *,
    los_col: str = "los_days",
    reason_col: str = "discharge_reason",
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    whis: float = 1.5,
) -> pd.DataFrame:
    """Box-plot statistics of length of stay by discharge reason (for ``plots.plot_los``).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per episode. Not modified.
    los_col : str, default "los_days"
        Length of stay in days.
    reason_col : str, default "discharge_reason"
        Grouping column; missing reasons (ongoing episodes) form the group
        ``"ongoing"`` rather than being dropped.
    min_cell_count : int, default 11
        Reasons with fewer episodes are hidden (all statistics NaN, ``n`` NA),
        with complementary suppression of ``n`` across reasons (the total is known).
    whis : float, default 1.5
        Whisker reach in IQRs (Tukey), as matplotlib and R's ``boxplot.stats``.

    Returns
    -------
    pandas.DataFrame
        ``reason, n, mean, whislo, q1, median, q3, whishi`` (quartiles type 7),
        one row per reason in sorted order, ``attrs["suppressed"]``.

    Raises
    ------
    DataValidationError
        Missing columns or non-numeric lengths of stay.

    References
    ----------
    .. [1] Tukey JW (1977). *Exploratory Data Analysis*. Addison-Wesley.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"los_days": list(range(1, 21)) + [5] * 3,
    ...                    "discharge_reason": ["completed"] * 20 + ["died"] * 3})
    >>> s = los_summary(df, min_cell_count=1)
    >>> s[["reason", "n", "median"]].values.tolist()
    [['completed', 20, 10.5], ['died', 3, 5.0]]
    """
    k = check_min_cell_count(min_cell_count)
    lack = [c for c in (los_col, reason_col) if c not in df.columns]
    if lack:
        raise DataValidationError(f"los_summary: columns {format_ids(lack)} not found. Pass los_col/reason_col.")
    los = pd.to_numeric(df[los_col], errors="coerce")
    if los.isna().any():
        bad = df.index[los.isna()]
        raise DataValidationError(
            f"los_summary: {len(bad)} rows have missing or non-numeric {los_col!r} (index: {format_ids(bad)}). "
            f"Fix them or exclude them explicitly."
        )
    reason = df[reason_col].astype(object).where(df[reason_col].notna(), "ongoing").astype(str)
    rows = []
    for r in sorted(reason.unique()):
        x = los[reason == r].to_numpy(dtype=float)
        q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
        iqr = q3 - q1
        lo = x[x >= q1 - whis * iqr].min()
        hi = x[x <= q3 + whis * iqr].max()
        rows.append({"reason": r, "n": x.size, "mean": x.mean(), "whislo": lo, "q1": q1, "median": med, "q3": q3, "whishi": hi})
    out = pd.DataFrame(rows, columns=["reason", "n", "mean", "whislo", "q1", "median", "q3", "whishi"])
    from iop_research.privacy.suppression import suppress_small_cells

    sup = suppress_small_cells(out, min_cell_count=k, count_cols=["n"], known_totals="columns")
    mask = sup.attrs["suppressed"]
    hid = mask.hidden.copy()
    small = mask.primary["n"].to_numpy()
    stats = ["mean", "whislo", "q1", "median", "q3", "whishi"]
    for c in stats:
        hid[c] = small
    return apply_suppression(sup, hidden=hid, primary=mask.primary, min_cell_count=k, count_cols=["n"],
                             derived_cols=stats, counts={"n": out["n"].to_numpy(dtype=float)}, marker=mask.marker)


def smooth_curve(x, y, *, frac: float = 2.0 / 3.0, it: int = 3, n_points: int | None = None) -> pd.DataFrame:
    """LOWESS smooth of ``y`` on ``x`` (e.g. scaled Schoenfeld residuals on time).

    Parameters
    ----------
    x, y : array-like
        Same length; pairs with a missing value are left out.
    frac : float, default 2/3
        Span, as R's ``lowess(f=2/3)``.
    it : int, default 3
        Robustifying iterations, as R's ``lowess(iter=3)``.
    n_points : int, optional
        Interpolate the smooth on this many equally spaced x values; default
        the sorted distinct x.

    Returns
    -------
    pandas.DataFrame
        Columns ``x, y``, sorted by ``x``.

    Notes
    -----
    R's ``plot.cox.zph`` smooths with a natural spline (``df=4``) and shows
    pointwise bands; this is a LOWESS line (statsmodels), for display only.

    References
    ----------
    .. [1] Cleveland WS (1979). Robust locally weighted regression and smoothing
       scatterplots. *JASA* 74:829-836.
    .. [2] Grambsch PM, Therneau TM (1994). Proportional hazards tests and
       diagnostics based on weighted residuals. *Biometrika* 81:515-526.

    Examples
    --------
    >>> s = smooth_curve([0, 1, 2, 3, 4], [1.0, 1.0, 1.0, 1.0, 1.0])
    >>> s["y"].round(6).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    from statsmodels.nonparametric.smoothers_lowess import lowess

    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape:
        raise ModelSpecificationError(f"smooth_curve: x and y differ in length ({xa.size} vs {ya.size}).")
    ok = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[ok], ya[ok]
    if xa.size < 2:
        return pd.DataFrame({"x": xa, "y": ya})
    fit = lowess(ya, xa, frac=frac, it=it, return_sorted=True)
    xs, ys = fit[:, 0], fit[:, 1]
    xs, first = np.unique(xs, return_index=True)
    ys = ys[first]
    if n_points is not None:
        grid = np.linspace(xs.min(), xs.max(), int(n_points))
        ys = np.interp(grid, xs, ys)
        xs = grid
    return pd.DataFrame({"x": xs, "y": ys})


# --------------------------------------------------------------------------- export


def _display_frame(df: pd.DataFrame) -> pd.DataFrame:
    if isinstance(df.attrs.get("suppressed"), SuppressionMask):
        return format_suppressed(df)
    return df


def to_csv(df: pd.DataFrame, path=None, *, index: bool = False) -> str | None:
    """CSV of a table (suppressed tables as displayed: ``"<11"``, ``"*"``).

    Returns the text when ``path`` is None, else writes UTF-8 and returns None.

    Examples
    --------
    >>> import pandas as pd
    >>> print(to_csv(pd.DataFrame({"a": [1, 2]})), end="")
    a
    1
    2
    """
    d = _display_frame(df)
    text = d.to_csv(index=index, lineterminator="\n")
    if path is None:
        return text
    Path(path).write_text(text, encoding="utf-8")
    return None


def to_html(df: pd.DataFrame, path=None, *, index: bool = False, caption: str | None = None) -> str | None:
    """HTML ``<table>`` of a table (escaped; suppressed cells as displayed).

    Examples
    --------
    >>> import pandas as pd
    >>> "<td>&lt;11</td>" in to_html(pd.DataFrame({"a": ["<11"]}))
    True
    """
    d = _display_frame(df)
    text = d.to_html(index=index, escape=True, na_rep="", border=0)
    if caption:
        text = text.replace(">\n", f">\n  <caption>{_html.escape(caption)}</caption>\n", 1)
    if path is None:
        return text
    Path(path).write_text(text, encoding="utf-8")
    return None


def to_latex(df: pd.DataFrame, path=None, *, index: bool = False, caption: str | None = None) -> str | None:
    """LaTeX ``tabular`` of a table (special characters escaped).

    Examples
    --------
    >>> import pandas as pd
    >>> "HR (95\\\\% CI)" in to_latex(pd.DataFrame({"HR (95% CI)": ["1.00 (0.90, 1.10)"]}))
    True
    """
    d = _display_frame(df).astype(str).replace({"<NA>": "", "nan": ""})
    text = d.to_latex(index=index, escape=True, caption=caption)
    if path is None:
        return text
    Path(path).write_text(text, encoding="utf-8")
    return None


def export_table(
    df: pd.DataFrame,
    path,
    *,
    index: bool = False,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    check_cols: Sequence[str] | None = None,
    caption: str | None = None,
) -> Path:
    """Write a table as CSV, HTML or LaTeX, chosen by the file suffix, after a small-cell check.

    Parameters
    ----------
    df : pandas.DataFrame
        Numbers (suppressed tables are rendered with their markers) or display strings.
    path : str or Path
        ``.csv``, ``.html``/``.htm`` or ``.tex``.
    index : bool, default False
        Write the index.
    min_cell_count : int, default 11
        Threshold of the check.
    check_cols : sequence of str, optional
        Columns checked for counts in ``1 .. min_cell_count-1``. Default:
        integer-typed columns, and string columns not in :data:`LABEL_COLUMNS`
        (their leading whole number, e.g. ``"7 (3.5)"``, is checked). Pass
        ``()`` to skip (never for publication).
    caption : str, optional
        Caption (HTML, LaTeX).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    PrivacyViolationError
        A checked cell shows a small count; nothing is written.
    ValueError
        Unknown suffix.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = export_table(pd.DataFrame({"n": [12, 40]}), os.path.join(d, "t.csv"))
    >>> p.read_text()
    'n\\n12\\n40\\n'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".html", ".htm", ".tex"):
        raise ModelSpecificationError(f"export_table: unknown suffix {suffix!r} of {path}; use .csv, .html or .tex.")
    display = _display_frame(df)
    if check_cols is None:
        check_cols = [
            c
            for c in display.columns
            if pd.api.types.is_integer_dtype(display[c].dtype)
            or ((display[c].dtype == object or pd.api.types.is_string_dtype(display[c].dtype)) and str(c) not in LABEL_COLUMNS)
        ]
    check_no_small_cells(display, min_cell_count=min_cell_count, count_cols=list(check_cols), name=f"table for {path.name}")
    if suffix == ".csv":
        to_csv(df, path, index=index)
    elif suffix in (".html", ".htm"):
        to_html(df, path, index=index, caption=caption)
    else:
        to_latex(df, path, index=index, caption=caption)
    return path


# --------------------------------------------------------------------------------------
# Treatment over time: modality hours by week, swimmer lanes
# --------------------------------------------------------------------------------------


def modality_by_week(
    sessions: pd.DataFrame,
    episodes: pd.DataFrame,
    *,
    max_weeks: int = 12,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean attended hours per modality in each week of treatment.

    Week ``w`` (1-based) covers days ``[7(w-1), 7w)`` from admission. The mean is
    over the episodes still in treatment during that week (admission + 7(w-1) on or
    before discharge), so dropouts do not dilute later weeks with zeros.

    Parameters
    ----------
    sessions : pandas.DataFrame
        Contract sessions table (``episode_id, session_date, modality, minutes, attended``);
        rows without an episode_id, or of episodes not in ``episodes``, are not counted.
    episodes : pandas.DataFrame
        From :func:`iop_research.build_episodes` (``episode_id, admit_date, los_days``).
    max_weeks : int, default 12
    min_cell_count : int, default 11
        Weeks with fewer episodes in treatment are dropped from the matrix
        (their means would describe fewer than ``min_cell_count`` patients).

    Returns
    -------
    (matrix, counts) : tuple of DataFrames
        ``matrix``: index ``week`` (1..), one column per modality, mean hours.
        ``counts``: index ``week``, column ``episodes_in_treatment``.

    Examples
    --------
    >>> import pandas as pd
    >>> eps = pd.DataFrame({"episode_id": ["E1"], "admit_date": pd.to_datetime(["2020-01-01"]), "los_days": [10]})
    >>> ses = pd.DataFrame({"episode_id": ["E1", "E1"], "session_date": pd.to_datetime(["2020-01-02", "2020-01-09"]),
    ...                     "modality": ["group", "group"], "minutes": [180, 120], "attended": [True, True]})
    >>> m, n = modality_by_week(ses, eps, min_cell_count=1)
    >>> m["group"].tolist(), n["episodes_in_treatment"].tolist()
    ([3.0, 2.0], [1, 1])
    """
    from iop_research.data.schema import Modality

    ep = episodes[["episode_id", "admit_date", "los_days"]]
    s = sessions.loc[sessions["attended"].astype(bool), ["episode_id", "session_date", "modality", "minutes"]]
    s = s.merge(ep, on="episode_id", how="inner")
    s = s.assign(week=((s["session_date"] - s["admit_date"]).dt.days // 7 + 1).astype(int))
    s = s[(s["week"] >= 1) & (s["week"] <= max_weeks)]
    hours = s.pivot_table(index="week", columns="modality", values="minutes", aggfunc="sum", fill_value=0) / 60.0
    weeks = np.arange(1, max_weeks + 1)
    in_treatment = pd.Series(
        [(ep["los_days"] > 7 * (w - 1)).sum() for w in weeks], index=pd.Index(weeks, name="week"),
        name="episodes_in_treatment",
    )
    hours = hours.reindex(index=weeks, columns=Modality.values(), fill_value=0.0)
    matrix = hours.div(in_treatment.replace(0, np.nan), axis=0)
    keep = in_treatment >= min_cell_count
    matrix = matrix[keep.to_numpy()]
    matrix.index.name = "week"
    matrix.columns.name = "modality"
    return matrix, in_treatment[keep].to_frame()


def swimmer_data(
    data,
    episodes: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    episode_ids: Sequence[str],
    max_day: int | None = None,
    grace_days: int = 30,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spans and points of a swimmer plot for chosen episodes, in days from admission.

    Parameters
    ----------
    data : IOPData
        Source tables (sessions, medications, events).
    episodes : pandas.DataFrame
        From :func:`iop_research.build_episodes`.
    outcomes : pandas.DataFrame
        Per-episode outcomes with ``episode_id, time, event_type`` (e.g.
        :func:`iop_research.survival_frame`), origin at admission.
    episode_ids : sequence of str
        Episodes to show, one lane each, in this order.
    max_day : int, optional
        Clip everything after this day.
    grace_days : int, default 30
        Persistence window of the MAT eras shown (passed to
        :func:`iop_research.derive.exposures.medication_eras`, which builds them: the
        spans are the analysis' own eras, early refills shifted forward).

    Returns
    -------
    (spans, points) : tuple of DataFrames
        ``spans``: ``patient, start_day, end_day, kind`` (``treatment``, or the
        medication class of a MAT era, clipped to the lane's ``[0, horizon]``; ``end_day``
        is the day after the era's last covered day); ``points``: ``patient, day, kind`` (session modality,
        ``uds_positive``/``uds_negative``, ``relapse``, ``death``). The
        ``patient`` column carries the lane number (1..n), never an identifier.
    """
    from iop_research.derive.exposures import medication_eras

    ids = list(episode_ids)
    lane = {e: i + 1 for i, e in enumerate(ids)}
    ep = episodes.set_index("episode_id").loc[ids]
    meds = data.medications
    if meds is not None and len(meds):
        meds = meds[meds["patient_id"].astype(str).isin(ep["patient_id"].astype(str))]
    eras = medication_eras(meds, grace_days=grace_days)
    era_pid = eras["patient_id"].astype(str).to_numpy()
    spans, points = [], []
    for eid, row in ep.iterrows():
        admit, los = row["admit_date"], int(row["los_days"])
        end_follow = int(outcomes.set_index("episode_id").loc[eid, "time"]) if eid in set(outcomes["episode_id"]) else los
        horizon = max(los, end_follow) if max_day is None else min(max(los, end_follow), max_day)
        spans.append({"patient": lane[eid], "start_day": 0, "end_day": min(los, horizon), "kind": "treatment"})
        pid = row["patient_id"]
        for _, e in eras[era_pid == str(pid)].iterrows():
            d0 = max((e["era_start"] - admit).days, 0)
            d1 = min((e["era_end"] - admit).days + 1, horizon)
            if d1 > d0:
                spans.append({"patient": lane[eid], "start_day": d0, "end_day": d1, "kind": e["medication_class"]})
        ses = data.sessions[(data.sessions["patient_id"] == pid) & data.sessions["attended"].astype(bool)]
        for _, s in ses.iterrows():
            d = (s["session_date"] - admit).days
            if 0 <= d <= horizon:
                points.append({"patient": lane[eid], "day": d, "kind": s["modality"]})
        ev = data.events[(data.events["patient_id"] == pid) & (data.events["event_type"] == "uds")]
        for _, e in ev.iterrows():
            d = (e["event_date"] - admit).days
            if 0 <= d <= horizon:
                points.append({"patient": lane[eid], "day": d, "kind": f"uds_{e['result']}"})
        if eid in set(outcomes["episode_id"]):
            o = outcomes.set_index("episode_id").loc[eid]
            if o["event_type"] in ("relapse", "death") and o["time"] <= horizon:
                points.append({"patient": lane[eid], "day": float(o["time"]), "kind": o["event_type"]})
    spans_df = pd.DataFrame(spans, columns=["patient", "start_day", "end_day", "kind"])
    points_df = pd.DataFrame(points, columns=["patient", "day", "kind"])
    return spans_df, points_df
