"""Small-cell suppression for published tables and figures.

Counts between 1 and ``min_cell_count - 1`` (1-10 with the default of 11, the
CMS cell-size suppression policy [1]_) must not appear in anything that leaves
the analysis environment. This module hides them, hides further cells so that
the hidden ones cannot be recovered from row or column totals (complementary
suppression [2]_), and checks finished tables.

Conventions
-----------
* **Zero is shown.** A count of 0 is not a small cell under the CMS policy and
  is published as 0. Zeros are picked as complementary cells only when no
  positive cell is left in the line.
* **Primary suppression** hides counts in ``1 .. min_cell_count - 1``,
  including totals (a small total is itself a small cell).
* **Complementary suppression** then hides further cells, chosen by
  :func:`iop_research.privacy.secondary.protect_cells` with the auditor
  (:mod:`iop_research.privacy.audit`, mixed integer programming) in the loop,
  until no primary cell can be narrowed below ``1 .. min_cell_count - 1``
  from the shown cells, the totals readers know, and the markers (a reader
  knows a ``"*"`` is 0 or at least ``min_cell_count``). Small values are
  hidden first, totals last. ``audit_table`` re-checks a result.
* **Numbers and presentation apart.** :func:`suppress_small_cells` returns
  numbers (nullable ``Int64`` counts, ``NA`` where hidden) and records which
  cells were hidden; :func:`format_suppressed` renders ``"<11"`` for primary
  cells and ``"*"`` for complementary ones.

The record of hidden cells is a :class:`SuppressionMask` in
``table.attrs["suppressed"]``; :func:`suppression_mask` returns it as a boolean
DataFrame. (A plain DataFrame in ``attrs`` would make ``pandas.concat`` of two
suppressed tables fail, because pandas compares ``attrs`` with ``==``.)

References
----------
.. [1] Centers for Medicare & Medicaid Services (2020). CMS Cell Size
   Suppression Policy: no cell (e.g. admissions, discharges, patients) less
   than 11 may be displayed.
.. [2] Hundepool A, Domingo-Ferrer J, Franconi L, et al. (2012).
   *Statistical Disclosure Control*, ch. 5 "Frequency tables" (primary and
   secondary cell suppression). Wiley.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, ModelSpecificationError, PrivacyViolationError, format_ids

__all__ = [
    "check_min_cell_count",
    "counts_as_float",
    "protect_greedy",
    "DEFAULT_MIN_CELL_COUNT",
    "SuppressionMask",
    "suppress_small_cells",
    "suppression_mask",
    "apply_suppression",
    "format_suppressed",
    "suppress_risk_table",
    "check_no_small_cells",
    "protect_lines",
]


#: Smallest count that may be shown (CMS policy: 1-10 are suppressed).
DEFAULT_MIN_CELL_COUNT = 11

#: Marker of complementary (secondary) suppressed cells in formatted tables.
COMPLEMENTARY_MARKER = "*"


@dataclass(frozen=True, eq=False)
class SuppressionMask:
    """Which cells of a table were hidden, and why.

    Indexing (``mask["n"]``), ``.any()``, ``.to_numpy()``, ``.to_frame()``,
    ``.index``, ``.columns`` and ``.shape`` read the ``hidden`` frame; unlike a
    DataFrame, ``==`` returns one bool (so ``pandas.concat`` of suppressed
    tables works).

    Attributes
    ----------
    hidden : pandas.DataFrame
        Boolean, same index and columns as the table; True where the value was
        hidden (primary, complementary or derived).
    primary : pandas.DataFrame
        Boolean; True where the hidden value was itself a small count
        (shown as ``"<11"``). ``hidden & ~primary`` are complementary or
        derived cells (shown as ``"*"``).
    min_cell_count : int
        Threshold used.
    marker : str
        Display marker of primary cells, e.g. ``"<11"``.
    ledger : iop_research.privacy.audit.Ledger or None
        What the table publishes (shown counts, markers, the totals readers
        know), for :func:`~iop_research.privacy.audit.audit_table`.
    """

    hidden: pd.DataFrame
    primary: pd.DataFrame
    min_cell_count: int
    marker: str
    ledger: object = None

    def __eq__(self, other: object) -> bool:  # a bool, so pandas can compare attrs
        if not isinstance(other, SuppressionMask):
            return NotImplemented
        return (
            self.min_cell_count == other.min_cell_count
            and self.marker == other.marker
            and self.hidden.equals(other.hidden)
            and self.primary.equals(other.primary)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_hidden(self) -> int:
        """Number of hidden cells."""
        return int(self.hidden.to_numpy().sum())

    # read-only conveniences, so the mask reads like the boolean frame it wraps
    def __getitem__(self, key):
        return self.hidden[key]

    @property
    def index(self) -> pd.Index:
        return self.hidden.index

    @property
    def columns(self) -> pd.Index:
        return self.hidden.columns

    @property
    def shape(self) -> tuple[int, int]:
        return self.hidden.shape

    def any(self) -> bool:
        """Whether any cell was hidden."""
        return bool(self.hidden.to_numpy().any())

    def to_frame(self) -> pd.DataFrame:
        """A copy of the boolean frame of hidden cells."""
        return self.hidden.copy()

    def to_numpy(self) -> np.ndarray:
        """Boolean array of hidden cells."""
        return self.hidden.to_numpy(dtype=bool)


def check_min_cell_count(min_cell_count: int) -> int:
    """``min_cell_count`` as an int, or a ModelSpecificationError (a ValueError) saying what is allowed."""
    if isinstance(min_cell_count, bool) or not isinstance(min_cell_count, (int, np.integer)) or min_cell_count < 1:
        raise ModelSpecificationError(
            f"min_cell_count must be a positive integer, got {min_cell_count!r}. "
            f"Use the default {DEFAULT_MIN_CELL_COUNT} (CMS policy) unless your data use agreement says otherwise."
        )
    return int(min_cell_count)


def counts_as_float(table: pd.DataFrame, cols: Sequence[str], what: str) -> np.ndarray:
    """Counts as a float matrix (NaN = missing), validated as non-negative integers."""
    out = np.empty((len(table), len(cols)), dtype=float)
    for j, col in enumerate(cols):
        if col not in table.columns:
            raise DataValidationError(
                f"{what}: count column {col!r} not found (columns: {format_ids(table.columns)}). "
                f"Pass count_cols naming existing columns."
            )
        s = pd.to_numeric(table[col], errors="coerce")
        bad_type = s.isna() & table[col].notna()
        vals = s.to_numpy(dtype=float, na_value=np.nan)
        bad = bad_type.to_numpy() | (~np.isnan(vals) & ((vals < 0) | (np.mod(np.nan_to_num(vals), 1) != 0)))
        if bad.any():
            rows = table.index[bad]
            raise DataValidationError(
                f"{what}: column {col!r} must hold non-negative whole counts, but {int(bad.sum())} rows do not "
                f"(index: {format_ids(rows)}). Pass only count columns in count_cols, and percentages in pct_cols."
            )
        out[:, j] = vals
    return out


def protect_greedy(
    values: np.ndarray,
    lines: list[np.ndarray],
    *,
    k: int,
    is_total: np.ndarray,
    locked: np.ndarray | None = None,
    complementary: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Primary and complementary suppression on a flat vector of counts.

    ``values``: float vector (NaN = not published / unknown). ``lines``: index
    arrays of cells whose sum is known to readers (an explicit total cell is one
    of the elements; a derivable total is not). Returns (hidden, primary).
    """
    primary = (values >= 1) & (values < k)
    hidden = primary.copy()
    unknown = hidden | np.isnan(values)
    locked = np.zeros(values.shape, bool) if locked is None else locked
    if not complementary:
        return hidden, primary
    membership: dict[int, list[int]] = {}
    for li, line in enumerate(lines):
        for c in line:
            membership.setdefault(int(c), []).append(li)
    changed = True
    while changed:
        changed = False
        for line in lines:
            if unknown[line].sum() != 1:
                continue
            cand = line[~unknown[line] & ~locked[line]]
            if cand.size == 0:  # nothing left to hide; cannot protect this line
                continue

            def key(c: int) -> tuple:
                v = values[c]
                tier = 2 if v == 0 else (1 if is_total[c] else 0)
                helps = any(unknown[lines[o]].sum() == 1 for o in membership.get(int(c), []) if lines[o] is not line)
                return (tier, v, not helps, int(c))

            pick = min((int(c) for c in cand), key=key)
            hidden[pick] = True
            unknown[pick] = True
            changed = True
    return hidden, primary


def apply_suppression(
    table: pd.DataFrame,
    *,
    hidden: pd.DataFrame,
    primary: pd.DataFrame,
    min_cell_count: int,
    count_cols: Sequence[str] = (),
    derived_cols: Sequence[str] = (),
    counts: Mapping[str, np.ndarray] | None = None,
    marker: str | None = None,
    ledger: object = None,
) -> pd.DataFrame:
    """Write a suppression decision into a copy of a table: the one write-back.

    Every suppressing function (:func:`suppress_small_cells`, ``table_one``,
    ``suppress_attrition``, ``los_summary``) decides *which* cells to hide and then calls
    this to blank them and attach the :class:`SuppressionMask`, so that hidden values look
    the same everywhere.

    Parameters
    ----------
    table : pandas.DataFrame
        The table. Not modified.
    hidden, primary : pandas.DataFrame
        Boolean frames (aligned to ``table``; absent rows/columns count as False): cells to
        hide, and the hidden cells that are small counts themselves (shown as ``"<k"``;
        ``hidden & ~primary`` are complementary or derived, shown as ``"*"``).
    min_cell_count : int
        Threshold used (stored in the mask).
    count_cols : sequence of str, default ()
        Columns written as nullable ``Int64``: ``NA`` where hidden or missing.
    derived_cols : sequence of str, default ()
        Columns written as float (percentages, means, quantiles): ``NaN`` where hidden.
    counts : mapping of str to numpy.ndarray, optional
        Values to write into count columns (float, NaN = not published) instead of the
        table's own, e.g. after validation by the caller.
    marker : str, optional
        Display marker of primary cells; default ``"<{min_cell_count}"``.
    ledger : iop_research.privacy.audit.Ledger, optional
        What the table publishes, kept in the mask for the auditor.

    Returns
    -------
    pandas.DataFrame
        A copy of ``table`` with ``attrs == {"suppressed": SuppressionMask(...)}``.

    Raises
    ------
    PrivacyViolationError
        A hidden cell lies in a column that is neither a count nor a derived column (it
        would be published unchanged).
    ValueError
        Bad ``min_cell_count``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"n": [3, 40], "pct": [7.0, 93.0]})
    >>> h = pd.DataFrame({"n": [True, False], "pct": [True, False]})
    >>> out = apply_suppression(t, hidden=h, primary=h[["n"]], min_cell_count=11, count_cols=["n"],
    ...                         derived_cols=["pct"])
    >>> format_suppressed(out).values.tolist()
    [['<11', '*'], ['40', '93.0']]
    """
    k = check_min_cell_count(min_cell_count)
    hid = hidden.reindex(index=table.index, columns=table.columns, fill_value=False).fillna(False).astype(bool)
    pri = primary.reindex(index=table.index, columns=table.columns, fill_value=False).fillna(False).astype(bool)
    written = set(count_cols) | set(derived_cols)
    loose = [c for c in table.columns if c not in written and hid[c].to_numpy().any()]
    if loose:
        raise PrivacyViolationError(
            f"apply_suppression: cells of column(s) {format_ids(loose)} are marked hidden but would be published "
            "unchanged. Pass them as count_cols or derived_cols."
        )
    out = table.copy()
    out.attrs = {}
    counts = dict(counts or {})
    for c in count_cols:
        arr = np.asarray(counts[c], dtype=float) if c in counts else out[c].to_numpy(dtype=float, na_value=np.nan)
        col = pd.array(np.where(np.isnan(arr), 0, arr).astype("int64"), dtype="Int64")
        col[np.isnan(arr) | hid[c].to_numpy()] = pd.NA
        out[c] = col
    for c in derived_cols:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float).mask(hid[c].to_numpy())
    out.attrs["suppressed"] = SuppressionMask(hid, pri, k, f"<{k}" if marker is None else str(marker), ledger)
    return out


def suppress_small_cells(
    table: pd.DataFrame,
    *,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    count_cols: Sequence[str] | None = None,
    row_total_col: str | None = None,
    col_total_row=None,
    complementary: bool = True,
    pct_cols: Mapping[str, str] | None = None,
    known_totals: str = "both",
    marker: str | None = None,
) -> pd.DataFrame:
    """Hide small counts, and further cells that would let readers recover them.

    Parameters
    ----------
    table : pandas.DataFrame
        A frequency table: rows are categories, ``count_cols`` hold counts
        (non-negative whole numbers; NaN means "not published"). Other columns
        (labels) are passed through. Not modified.
    min_cell_count : int, default 11
        Smallest count that may be shown; counts in ``1 .. min_cell_count-1``
        are hidden. 0 is shown (CMS practice).
    count_cols : sequence of str, optional
        Count columns. Default: every integer-typed column (numpy or nullable).
    row_total_col : str, optional
        Column holding each row's total (must be among or is added to the count
        columns). It is an element of every row's line, and is itself a column
        line ending at ``col_total_row``.
    col_total_row : index label, optional
        Row (index label) holding each column's total.
    complementary : bool, default True
        Apply complementary suppression. With False only small counts are hidden
        (use only when no totals are published anywhere).
    pct_cols : mapping of str to str, optional
        Percentage (or proportion) column -> the count column it derives from;
        hidden wherever that count is hidden.
    known_totals : {"both", "rows", "columns", "none"}, default "both"
        Which totals readers can derive when they are not in the table (e.g.
        group sizes in a column header). A row or column of at least two cells
        whose total is known is a line. Explicit totals always count. Such
        totals are protected like cells: when one of them must not be
        published next to the table (e.g. a small column total, or one that
        would give a small total away by differencing), its ledger entry in
        ``attrs["suppressed"].ledger`` has status ``"secondary"`` or
        ``"primary"``.
    marker : str, optional
        Display marker of primary cells, stored for :func:`format_suppressed`;
        default ``"<{min_cell_count}"``.

    Returns
    -------
    pandas.DataFrame
        A copy of ``table`` with count columns as nullable ``Int64`` (``NA`` where
        hidden) and percentage columns as float (NaN where hidden).
        ``attrs["suppressed"]`` holds a :class:`SuppressionMask`
        (``.hidden``, ``.primary`` boolean frames).

    Raises
    ------
    DataValidationError
        A count column is missing or holds negative or fractional values.
    ValueError
        Bad ``min_cell_count`` or ``known_totals``.

    See Also
    --------
    format_suppressed : render hidden cells as ``"<11"`` / ``"*"``.
    check_no_small_cells : the gate for finished tables.

    References
    ----------
    .. [1] CMS Cell Size Suppression Policy (2020).
    .. [2] Hundepool A, et al. (2012). *Statistical Disclosure Control*, ch. 5. Wiley.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"site": ["A", "B", "C"], "completed": [5, 40, 30], "dropped": [20, 25, 12]})
    >>> out = suppress_small_cells(t)
    >>> out[["completed", "dropped"]].astype("string").fillna("NA").values.tolist()
    [['NA', 'NA'], ['NA', 'NA'], ['30', '12']]
    >>> format_suppressed(out)["completed"].tolist()
    ['<11', '*', '30']

    (Hiding row C instead would leave ``dropped`` of C between 8 and 17, which
    a reader who knows that ``"*"`` is 0 or at least 11 narrows to 11-17 and
    so ``completed`` of A to 4-10.)
    """
    k = check_min_cell_count(min_cell_count)
    if known_totals not in ("both", "rows", "columns", "none"):
        raise ModelSpecificationError(f"known_totals must be 'both', 'rows', 'columns' or 'none', got {known_totals!r}.")
    if count_cols is None:
        count_cols = [c for c in table.columns if pd.api.types.is_integer_dtype(table[c].dtype)]
    count_cols = list(count_cols)
    if row_total_col is not None and row_total_col not in count_cols:
        count_cols.append(row_total_col)
    pct_cols = dict(pct_cols or {})
    for p, c in pct_cols.items():
        if p not in table.columns or c not in count_cols:
            raise DataValidationError(
                f"pct_cols maps {p!r} -> {c!r}, but {p!r} is not a column or {c!r} is not a count column "
                f"(count columns: {format_ids(count_cols)}). Map each percentage column to its count column."
            )
    if col_total_row is not None and col_total_row not in table.index:
        raise DataValidationError(
            f"col_total_row {col_total_row!r} is not in the table index. Pass the index label of the totals row."
        )
    vals = counts_as_float(table, count_cols, "suppress_small_cells")
    n_rows, n_cols = vals.shape
    flat = vals.ravel()
    idx = np.arange(flat.size).reshape(n_rows, n_cols)
    is_total = np.zeros((n_rows, n_cols), bool)
    tot_j = count_cols.index(row_total_col) if row_total_col is not None else None
    tot_i = int(table.index.get_loc(col_total_row)) if col_total_row is not None else None
    if tot_j is not None:
        is_total[:, tot_j] = True
    if tot_i is not None:
        is_total[tot_i, :] = True
    body_cols = [j for j in range(n_cols) if j != tot_j]
    body_rows = [i for i in range(n_rows) if i != tot_i]

    lines: list[np.ndarray] = []
    explicit: list[bool] = []
    rows_known = known_totals in ("both", "rows")
    cols_known = known_totals in ("both", "columns")
    for i in range(n_rows):  # row lines (including the totals row)
        cells = [idx[i, j] for j in body_cols]
        if tot_j is not None:
            lines.append(np.array(cells + [idx[i, tot_j]]))
            explicit.append(True)
        elif rows_known and len(cells) >= 2:
            lines.append(np.array(cells))
            explicit.append(False)
    for j in range(n_cols):  # column lines (including the totals column)
        cells = [idx[i, j] for i in body_rows]
        if tot_i is not None:
            lines.append(np.array(cells + [idx[tot_i, j]]))
            explicit.append(True)
        elif cols_known and len(cells) >= 2:
            lines.append(np.array(cells))
            explicit.append(False)

    labels = [f"{table.index[i]}|{count_cols[j]}" for i in range(n_rows) for j in range(n_cols)]
    hidden, primary, ledger = _protect_audited(flat, lines, explicit, k=k, is_total=is_total.ravel(),
                                               complementary=complementary, labels=labels)
    hidden = hidden.reshape(n_rows, n_cols)
    primary = primary.reshape(n_rows, n_cols)

    hidden_df = pd.DataFrame(False, index=table.index, columns=table.columns)
    primary_df = hidden_df.copy()
    for j, col in enumerate(count_cols):
        hidden_df[col] = hidden[:, j]
        primary_df[col] = primary[:, j]
    for p, c in pct_cols.items():
        hidden_df[p] = hidden_df[c].to_numpy()
    return apply_suppression(
        table, hidden=hidden_df, primary=primary_df, min_cell_count=k, count_cols=count_cols,
        derived_cols=list(pct_cols), counts={col: vals[:, j] for j, col in enumerate(count_cols)}, marker=marker,
        ledger=ledger,
    )


def _protect_audited(
    values: np.ndarray,
    lines: list[np.ndarray],
    explicit: list[bool],
    *,
    k: int,
    is_total: np.ndarray,
    complementary: bool = True,
    labels: Sequence[str] | None = None,
    locked: np.ndarray | None = None,
    cost_factor: np.ndarray | None = None,
):
    """Primary and audited secondary suppression of a flat vector of counts.

    ``lines[i]`` sums to its last element when ``explicit[i]``, else to a
    total that readers can know but that is not in the table. Such totals
    are protected like cells (hidden last): the ledger records each with the
    status it needs (``"secondary"`` = must not be published next to the
    table; a small one is ``"primary"``). NaN values are not published.
    Returns ``(hidden, primary, ledger)``.
    """
    from iop_research.privacy.audit import Ledger
    from iop_research.privacy.secondary import protect_cells

    keys = [f"c{i}" for i in range(values.size)]
    vals = {keys[i]: (None if np.isnan(values[i]) else int(values[i])) for i in range(values.size)}
    totals: dict[str, int] = {}
    led = Ledger(min_cell_count=k)
    for n_line, (line, has_total) in enumerate(zip(lines, explicit)):
        members = [keys[int(c)] for c in line]
        if has_total:
            led.add_sum(members[:-1], members[-1], source="table total")
        else:
            if any(vals[m] is None for m in members):
                continue  # a total over unpublished cells is not known
            tk = f"t{n_line}"
            totals[tk] = sum(vals[m] for m in members)
            led.add_sum(members, tk, source="known total")
    factor = np.ones(values.size) if cost_factor is None else np.asarray(cost_factor, dtype=float)
    cost = {keys[i]: (0.0 if np.isnan(values[i]) else (values[i] + 1.0) * (10.0 if is_total[i] else 1.0) * factor[i])
            for i in range(values.size)}
    cost.update({tk: (v + 1.0) * 1000.0 for tk, v in totals.items()})  # known totals: withheld only if needed
    lock = [keys[i] for i in np.flatnonzero(locked)] if locked is not None else []
    hidden_keys, primary_keys = protect_cells({**vals, **totals}, led.relations, min_cell_count=k, cost=cost,
                                              complementary=complementary, on_unprotectable="hide", locked=lock)
    for tk, v in totals.items():  # which known totals may be published alongside the table
        st = "primary" if tk in primary_keys else ("secondary" if tk in hidden_keys else "shown")
        led.add_count(tk, value=v if st == "shown" else None, status=st, table="(known total)")
    hidden = np.array([kk in hidden_keys for kk in keys])
    primary = np.array([kk in primary_keys for kk in keys])
    labels = list(labels) if labels is not None else keys
    for i, kk in enumerate(keys):
        if vals[kk] is None:
            continue
        st = "primary" if primary[i] else ("secondary" if hidden[i] else "shown")
        row, _, col = labels[i].partition("|")
        led.add_count(kk, value=vals[kk] if st == "shown" else None, status=st, row=row, column=col)
    return hidden, primary, led


def protect_lines(
    values: np.ndarray,
    lines: Sequence[np.ndarray],
    *,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    is_total: np.ndarray | None = None,
    locked: np.ndarray | None = None,
    complementary: bool = True,
    totals_last: bool | Sequence[bool] = True,
    labels: Sequence[str] | None = None,
    cost_factor: np.ndarray | None = None,
):
    """Audited primary and secondary suppression of a flat vector of counts with line totals.

    The drop-in for building suppressed tables by hand (Table 1, attrition):
    the same inputs as the legacy greedy sweep, with the cells chosen by
    :func:`iop_research.privacy.secondary.protect_cells` and checked by the
    auditor.

    Parameters
    ----------
    values : numpy.ndarray
        Float vector of counts (NaN = not published).
    lines : sequence of numpy.ndarray
        Index arrays of cells whose sum readers know.
    min_cell_count : int, default 11
    is_total : numpy.ndarray of bool, optional
        Cells that are totals (hidden last).
    locked : numpy.ndarray of bool, optional
        Cells that must stay shown.
    complementary : bool, default True
    totals_last : bool or sequence of bool, default True
        Each line's last element is its total (``sum(line[:-1]) == line[-1]``);
        with False every line sums to a total readers know that is not a cell.
        A sequence gives the choice per line.
    labels : sequence of str, optional
        ``"row|column"`` of each cell, for the ledger's ``row`` and ``column``.
    cost_factor : numpy.ndarray, optional
        Per-cell multiplier of the cost of hiding it (default cost: value + 1,
        times 10 for totals); e.g. a large factor keeps a count shown unless
        nothing else protects the small ones (unlike ``locked``, which never hides it).

    Returns
    -------
    (hidden, primary, ledger)
        Boolean vectors and the :class:`~iop_research.privacy.audit.Ledger`
        (audit it with :func:`~iop_research.privacy.audit.audit_ledger`).

    Examples
    --------
    >>> import numpy as np
    >>> hidden, primary, led = protect_lines(np.array([1.0, 11, 40, 52]), [np.arange(4)])
    >>> hidden.tolist(), primary.tolist()
    ([True, False, True, False], [True, False, False, False])
    """
    k = check_min_cell_count(min_cell_count)
    values = np.asarray(values, dtype=float)
    is_total = np.zeros(values.size, bool) if is_total is None else np.asarray(is_total, bool)
    lines = [np.asarray(li, dtype=int) for li in lines]
    if isinstance(totals_last, (bool, np.bool_)):
        explicit = [bool(totals_last)] * len(lines)
    else:
        explicit = [bool(t) for t in totals_last]
        if len(explicit) != len(lines):
            raise ModelSpecificationError(
                f"protect_lines: totals_last has {len(explicit)} entries for {len(lines)} lines; give one per line."
            )
    if labels is not None and len(labels) != values.size:
        raise ModelSpecificationError(
            f"protect_lines: labels has {len(labels)} entries for {values.size} values; give one per value."
        )
    if cost_factor is not None and np.asarray(cost_factor).shape != (values.size,):
        raise ModelSpecificationError(
            f"protect_lines: cost_factor must have one entry per value ({values.size})."
        )
    return _protect_audited(values, lines, explicit, k=k, is_total=is_total, complementary=complementary,
                            locked=locked, labels=labels, cost_factor=cost_factor)


def suppression_mask(table: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame of hidden cells of a suppressed table (all False if none).

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`suppress_small_cells` (or any table).

    Returns
    -------
    pandas.DataFrame
        Same index and columns; True where a value was hidden.

    Examples
    --------
    >>> import pandas as pd
    >>> t = suppress_small_cells(pd.DataFrame({"n": [3, 50, 60]}))
    >>> suppression_mask(t)["n"].tolist()
    [True, True, False]
    """
    m = table.attrs.get("suppressed")
    if isinstance(m, SuppressionMask):
        return m.hidden.reindex(index=table.index, columns=table.columns, fill_value=False).astype(bool)
    return pd.DataFrame(False, index=table.index, columns=table.columns)


def _fmt_number(v, digits: int) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{int(v):d}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return str(v)


def format_suppressed(
    table: pd.DataFrame,
    *,
    marker: str | None = None,
    complementary_marker: str = COMPLEMENTARY_MARKER,
    digits: int = 1,
    missing: str = "",
) -> pd.DataFrame:
    """Render a suppressed table as strings for display.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`suppress_small_cells` (numbers with ``NA`` where hidden).
    marker : str, optional
        Text of primary (small-count) cells; default the marker stored by
        :func:`suppress_small_cells`, ``"<11"``.
    complementary_marker : str, default "*"
        Text of cells hidden to protect others, and of derived values
        (percentages) of hidden counts. Say so in a footnote.
    digits : int, default 1
        Decimals of float values.
    missing : str, default ""
        Text of values that were missing before suppression.

    Returns
    -------
    pandas.DataFrame
        Same shape, every cell a ``str``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = suppress_small_cells(pd.DataFrame({"n": [3, 50, 60], "pct": [2.7, 44.2, 53.1]}), pct_cols={"pct": "n"})
    >>> format_suppressed(t).values.tolist()
    [['<11', '*'], ['*', '*'], ['60', '53.1']]
    """
    m = table.attrs.get("suppressed")
    hidden = suppression_mask(table).to_numpy()
    if isinstance(m, SuppressionMask):
        primary = m.primary.reindex(index=table.index, columns=table.columns, fill_value=False).to_numpy(bool)
        mark = m.marker if marker is None else marker
    else:
        primary = np.zeros(table.shape, bool)
        mark = f"<{DEFAULT_MIN_CELL_COUNT}" if marker is None else marker
    out = {}
    for j, col in enumerate(table.columns):
        vals = table[col].tolist()
        cells = []
        for i, v in enumerate(vals):
            if primary[i, j]:
                cells.append(mark)
            elif hidden[i, j]:
                cells.append(complementary_marker)
            else:
                s = _fmt_number(v, digits)
                cells.append(missing if s == "" else s)
        out[col] = cells
    return pd.DataFrame(out, index=table.index, columns=table.columns)


def suppress_risk_table(
    km_tidy: pd.DataFrame,
    *,
    times: Iterable[float],
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    group_col: str = "group",
    time_col: str = "time",
    n_at_risk_col: str = "n_at_risk",
    n_events_col: str = "n_events",
    n_censored_col: str = "n_censored",
    include: Sequence[str] = ("n_at_risk", "n_events"),
    complementary: bool = True,
) -> pd.DataFrame:
    """Numbers at risk (and cumulative events) at chosen times, suppressed.

    The table printed under a Kaplan-Meier or cumulative-incidence plot.

    Parameters
    ----------
    km_tidy : pandas.DataFrame
        Tidy curve table with one row per distinct time per group, including
        censoring times (R ``survfit`` and lifelines both list them):
        ``group, time, n_at_risk, n_events, n_censored``. A cumulative-incidence
        table with one row per cause and time also works: event counts are
        summed over causes.
    times : iterable of float
        Times (days) at which to report.
    min_cell_count : int, default 11
        Suppression threshold.
    group_col, time_col, n_at_risk_col, n_events_col, n_censored_col : str
        Column names in ``km_tidy``.
    include : sequence of {"n_at_risk", "n_events", "n_censored"}
        Columns of the output. ``n_events`` and ``n_censored`` are cumulative
        counts on ``[0, t]``.
    complementary : bool, default True
        When all three columns are included, each row is a line whose total
        (the group size) is known, and complementary suppression is applied.

    Returns
    -------
    pandas.DataFrame
        ``group, time, <include...>`` (nullable Int64, NA where hidden), with
        ``attrs["suppressed"]``.

    Notes
    -----
    Number at risk at ``t`` is the ``n_at_risk`` of the group's first row with
    time ``>= t`` (those with follow-up ``>= t``, as R's
    ``summary(survfit, times=)``), and 0 after the last row. Weighted curves
    (e.g. IPTW) carry weighted numbers; they are rounded to whole numbers
    before suppression, and the caption should say they are weighted.

    References
    ----------
    .. [1] CMS Cell Size Suppression Policy (2020).
    .. [2] Therneau T (2024). survival: ``summary.survfit`` (``n.risk`` at
       requested times).

    Examples
    --------
    >>> import pandas as pd
    >>> km = pd.DataFrame({"group": ["a"] * 3, "time": [5.0, 10.0, 20.0],
    ...     "n_at_risk": [40, 30, 8], "n_events": [10, 2, 8], "n_censored": [0, 20, 0]})
    >>> rt = suppress_risk_table(km, times=[0, 10, 20, 30])
    >>> rt["n_at_risk"].astype("string").fillna("NA").tolist()
    ['40', '30', 'NA', '0']
    >>> format_suppressed(rt)["n_at_risk"].tolist()
    ['40', '30', '<11', '0']
    """
    bad = [c for c in (group_col, time_col, n_at_risk_col, n_events_col, n_censored_col) if c not in km_tidy.columns]
    if bad:
        raise DataValidationError(
            f"suppress_risk_table: km_tidy lacks columns {format_ids(bad)}. Pass the .tidy table of a "
            f"Kaplan-Meier or cumulative-incidence result, or name the columns with *_col arguments."
        )
    allowed = {"n_at_risk", "n_events", "n_censored"}
    if not set(include) <= allowed or not include:
        raise ModelSpecificationError(f"include must be a non-empty subset of {sorted(allowed)}, got {list(include)!r}.")
    times = [float(t) for t in times]
    rows = []
    for g, d in km_tidy.groupby(group_col, sort=False, dropna=False):
        per_time = d.groupby(time_col, sort=True).agg(
            n_at_risk=(n_at_risk_col, "max"), n_events=(n_events_col, "sum"), n_censored=(n_censored_col, "first")
        )
        tt = per_time.index.to_numpy(dtype=float)
        risk = per_time["n_at_risk"].to_numpy(dtype=float)
        cum_ev = np.cumsum(per_time["n_events"].to_numpy(dtype=float))
        cum_ce = np.cumsum(per_time["n_censored"].to_numpy(dtype=float))
        for t in times:
            pos = int(np.searchsorted(tt, t, side="left"))
            n_risk = risk[pos] if pos < tt.size else 0.0
            upto = int(np.searchsorted(tt, t, side="right"))
            rows.append(
                {
                    "group": g,
                    "time": t,
                    "n_at_risk": int(np.round(n_risk)),
                    "n_events": int(np.round(cum_ev[upto - 1])) if upto > 0 else 0,
                    "n_censored": int(np.round(cum_ce[upto - 1])) if upto > 0 else 0,
                }
            )
    frame = pd.DataFrame(rows, columns=["group", "time", "n_at_risk", "n_events", "n_censored"])
    for c in ("n_at_risk", "n_events", "n_censored"):
        frame[c] = frame[c].astype("int64")
    frame = frame[["group", "time", *include]]
    all_three = set(include) == allowed
    return suppress_small_cells(
        frame,
        min_cell_count=min_cell_count,
        count_cols=list(include),
        complementary=complementary and all_three,
        known_totals="rows",
    )


def check_no_small_cells(
    table: pd.DataFrame,
    *,
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT,
    count_cols: Sequence[str] | None = None,
    name: str = "table",
) -> None:
    """Raise if a table shows a count in ``1 .. min_cell_count - 1``.

    The gate for anything about to be published. It checks primary small
    cells only: complementary protection is the job of
    :func:`suppress_small_cells`.

    Parameters
    ----------
    table : pandas.DataFrame
        Numbers (hidden cells NA) or formatted strings; strings that are not
        whole numbers (``"<11"``, ``"12 (4.0%)"``'s leading count is parsed) are
        checked by their leading integer.
    min_cell_count : int, default 11
        Threshold.
    count_cols : sequence of str, optional
        Columns to check; default every integer-typed column, or every column
        for an all-string table.
    name : str, default "table"
        Name used in the error message.

    Raises
    ------
    PrivacyViolationError
        Naming the columns and row labels of the offending cells (not their values).

    References
    ----------
    .. [1] CMS Cell Size Suppression Policy (2020).

    Examples
    --------
    >>> import pandas as pd
    >>> check_no_small_cells(pd.DataFrame({"n": [0, 11, 250]}))
    >>> check_no_small_cells(pd.DataFrame({"n": [4, 20]}, index=["opioids", "alcohol"]))
    Traceback (most recent call last):
    ...
    iop_research.exceptions.PrivacyViolationError: table shows 1 count(s) below 11: column 'n' (rows: opioids). Suppress them with privacy.suppress_small_cells(...) before publishing.
    """
    k = check_min_cell_count(min_cell_count)
    if count_cols is None:
        count_cols = [c for c in table.columns if pd.api.types.is_integer_dtype(table[c].dtype)]
        if not count_cols and len(table.columns) and all(
                table[c].dtype == object or pd.api.types.is_string_dtype(table[c].dtype) for c in table.columns):
            count_cols = list(table.columns)
    problems = []
    n_bad = 0
    for col in count_cols:
        s = table[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            lead = s.astype("string").str.extract(r"^\s*(\d+)(?:\s|$|\()", expand=False)
            num = pd.to_numeric(lead, errors="coerce")
        else:
            num = pd.to_numeric(s, errors="coerce")
        bad = (num >= 1) & (num < k)
        bad = bad.fillna(False).to_numpy(bool)
        if bad.any():
            n_bad += int(bad.sum())
            problems.append(f"column {col!r} (rows: {format_ids(table.index[bad])})")
    if problems:
        raise PrivacyViolationError(
            f"{name} shows {n_bad} count(s) below {k}: {'; '.join(problems)}. "
            f"Suppress them with privacy.suppress_small_cells(...) before publishing."
        )
