"""The publishing channel: every number of a study report leaves through here.

A :class:`Publisher` renders tables, figures and sentences with numbers for a
report, and on the way applies small-cell suppression (primary and audited
secondary, :mod:`iop_research.privacy.secondary`), hides percentages of hidden
counts, and records every count it publishes, with the relations between
counts that a reader knows, in a ledger (:class:`~iop_research.privacy.audit.Ledger`).
Before a number is shown it is checked together with everything the report
(and the study's earlier reports, through their saved ledgers) already
published, so a hidden count cannot be worked out by differencing tables.

Each display is wrapped in ``<div class="iop-published" data-iop-kind=...
data-iop-sig=...>``; the signature is an HMAC-SHA256 of the content under the
key in the environment variable :data:`PUBLISH_KEY_ENV` (set by the report
build before notebooks run), so that the report gate
(:func:`iop_research.reports.gate.check_channel_only`) can tell channel output
from anything else a notebook printed.

Files
-----
With ``out_dir``: ``tables/<name>.csv`` (the displayed, suppressed strings),
``tables/<name>.docx`` (``docx=True``), ``figures/<name>.svg`` and
``figures/<name>.png`` (300 dpi), and ``ledgers/<report>.json`` (what was
published, never a hidden value), each written atomically.

References
----------
.. [1] Centers for Medicare & Medicaid Services (2020). CMS Cell Size
   Suppression Policy (no cell below 11).
.. [2] Hundepool A, et al. (2012). *Statistical Disclosure Control*, ch. 5. Wiley.
.. [3] Krawczyk H, Bellare M, Canetti R (1997). HMAC: Keyed-Hashing for
   Message Authentication. RFC 2104.
"""
from __future__ import annotations

import hashlib
import hmac
import html as _html
import io
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, ModelSpecificationError, PrivacyViolationError, format_ids
from iop_research.privacy.audit import Ledger, audit_cells, audit_ledger, connected_primaries
from iop_research.privacy.secondary import protect_cells

__all__ = [
    "Publisher",
    "Published",
    "PublishedNumber",
    "PUBLISH_KEY_ENV",
    "MIN_ALLOWED_CELL_COUNT",
    "sign_published",
    "parse_published",
]

#: Environment variable holding the hex key that signs channel output.
PUBLISH_KEY_ENV = "IOP_RESEARCH_PUBLISH_KEY"

#: Thresholds below this need ``min_cell_count_override`` (a reason).
MIN_ALLOWED_CELL_COUNT = 5

_PROCESS_KEY = secrets.token_bytes(32)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_WRAP_RE = re.compile(
    r'\A<div class="iop-published" data-iop-kind="(?P<kind>table|figure|text)" '
    r'data-iop-name="(?P<name>[A-Za-z0-9_.-]*)" data-iop-sig="(?P<sig>[0-9a-f]{64})">(?P<inner>.*)</div>\Z',
    re.S,
)


def _key() -> bytes:
    env = os.environ.get(PUBLISH_KEY_ENV)
    return bytes.fromhex(env) if env else _PROCESS_KEY


def sign_published(kind: str, name: str, inner_html: str, plain: str, *, key: bytes | None = None) -> str:
    """HMAC-SHA256 (hex) of a channel display (kind, name, HTML and plain-text content)."""
    msg = "\x00".join([kind, name, inner_html, plain]).encode("utf-8")
    return hmac.new(key if key is not None else _key(), msg, hashlib.sha256).hexdigest()


def parse_published(html: str, plain: str, *, key: bytes | None = None) -> dict | None:
    """The channel display in ``html`` if it is one and its signature holds, else None.

    Parameters
    ----------
    html : str
        A ``text/html`` output.
    plain : str
        The ``text/plain`` output of the same display ("" if none).
    key : bytes, optional
        Signing key; default from :data:`PUBLISH_KEY_ENV` (or this process's key).

    Returns
    -------
    dict or None
        ``kind, name, inner`` when valid.
    """
    m = _WRAP_RE.match(html)
    if m is None:
        return None
    want = sign_published(m["kind"], m["name"], m["inner"], plain, key=key)
    if not hmac.compare_digest(want, m["sig"]):
        return None
    return {"kind": m["kind"], "name": m["name"], "inner": m["inner"]}


class PublishedNumber(str):
    """A number rendered by the channel (a ``str``), for :meth:`Publisher.text`.

    Attributes
    ----------
    key : str or None
        Ledger key (counts and percentages).
    hidden : bool
        Whether the value was suppressed.
    """

    key: str | None = None
    hidden: bool = False

    @classmethod
    def make(cls, text: str, *, key: str | None = None, hidden: bool = False) -> "PublishedNumber":
        out = cls(text)
        out.key = key
        out.hidden = hidden
        return out


@dataclass(eq=False)
class Published:
    """One display of the channel.

    Attributes
    ----------
    kind : {"table", "figure", "text"}
    name : str
    number : int or None
        Table or figure number.
    html : str
        The signed HTML shown in the notebook.
    plain : str
        Its plain-text alternative.
    table : pandas.DataFrame or None
        The displayed strings of a table (suppressed).
    files : list of pathlib.Path
        Files written.
    """

    kind: str
    name: str
    number: int | None
    html: str
    plain: str
    table: pd.DataFrame | None = None
    files: list[Path] = field(default_factory=list)
    _shown: bool = False

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self.html, "text/plain": self.plain}

    def _ipython_display_(self):  # shown once, when published
        if not self._shown:
            _show(self)


def _show(p: Published) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency of jupyter
        return
    if get_ipython() is None:
        return
    display({"text/html": p.html, "text/plain": p.plain}, raw=True)
    p._shown = True


def _fmt_int(v: int) -> str:
    return f"{int(v):,}"


class Publisher:
    """The publishing channel of one report.

    Parameters
    ----------
    min_cell_count : int, default 11
        Counts in ``1 .. min_cell_count - 1`` are hidden (CMS policy [1]_).
        Values below 5 are refused unless ``min_cell_count_override`` says why.
    out_dir : str or os.PathLike, optional
        Directory for ``tables/``, ``figures/`` and ``ledgers/``; None writes nothing.
    report : str, default "report"
        Report name (keys and ledger file name).
    min_cell_count_override : str, optional
        The reason (e.g. the data use agreement's clause) for a threshold
        below 5; recorded in every table footnote.
    show : bool, optional
        Display in the notebook; default: when running under IPython.
    study_ledgers : bool, default True
        Audit against the ledgers of the study's other reports found in
        ``out_dir/ledgers/`` (differencing across reports).

    Raises
    ------
    PrivacyViolationError
        ``min_cell_count`` below 5 without an override reason.

    Examples
    --------
    >>> import pandas as pd
    >>> pub = Publisher(min_cell_count=11, report="demo")
    >>> t = pub.table(pd.DataFrame({"site": ["A", "B", "C", "All"], "n": [1, 11, 40, 52]}),
    ...               caption="Patients by site", count_cols=["n"], total_row="All", name="sites")
    >>> t.table["n"].tolist()
    ['<11', '11', '*', '52']
    >>> str(pub.count(5, label="deaths")), str(pub.count(3000, label="patients"))
    ('<11', '3,000')
    """

    def __init__(self, *, min_cell_count: int = 11, out_dir: str | os.PathLike | None = None,
                 report: str = "report", min_cell_count_override: str | None = None, show: bool | None = None,
                 study_ledgers: bool = True):
        if isinstance(min_cell_count, bool) or not isinstance(min_cell_count, (int, np.integer)) \
                or min_cell_count < 1:
            raise PrivacyViolationError(
                f"min_cell_count must be a whole number >= {MIN_ALLOWED_CELL_COUNT}, got {min_cell_count!r}. "
                f"Use 11 (CMS policy) unless your data use agreement sets another threshold."
            )
        if min_cell_count < MIN_ALLOWED_CELL_COUNT and not (
                isinstance(min_cell_count_override, str) and min_cell_count_override.strip()):
            raise PrivacyViolationError(
                f"min_cell_count = {min_cell_count} would publish counts as small as {min_cell_count} "
                f"(1 switches suppression off). Thresholds below {MIN_ALLOWED_CELL_COUNT} need "
                f"min_cell_count_override = \"<the reason, e.g. the clause of your data use agreement>\"."
            )
        if not _NAME_RE.match(str(report)):
            raise DataValidationError(f"report name {report!r} must be letters, digits, '_', '.', '-'.")
        self.min_cell_count = int(min_cell_count)
        self.override_reason = min_cell_count_override
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.report = str(report)
        self.show = show
        self.study_ledgers = study_ledgers
        self._ledger = Ledger(min_cell_count=self.min_cell_count)
        self._prior: Ledger | None = None
        self._n_table = 0
        self._n_figure = 0
        self._n_text = 0
        self._names: dict[str, int] = {}  # name -> table/figure number
        self.published: list[Published] = []

    # ------------------------------------------------------------------ ledger
    @property
    def ledger(self) -> pd.DataFrame:
        """Every count published by this report: ``key, value, status, report, table, row, column``."""
        return self._ledger.entries

    @property
    def ledger_object(self) -> Ledger:
        """The :class:`~iop_research.privacy.audit.Ledger` itself (counts and relations)."""
        return self._ledger

    def _prior_ledger(self) -> Ledger:
        if self._prior is None:
            self._prior = Ledger(min_cell_count=self.min_cell_count)
            if self.study_ledgers and self.out_dir is not None and (self.out_dir / "ledgers").is_dir():
                for p in sorted((self.out_dir / "ledgers").glob("*.json")):
                    if p.stem != self.report:
                        self._prior.extend(Ledger.from_json(p))
        return self._prior

    def _all(self) -> Ledger:
        led = self._prior_ledger().copy()
        led.extend(self._ledger)
        return led

    def audit(self, *, raise_on_failure: bool = True) -> pd.DataFrame:
        """Audit everything published (with the study's earlier reports) together.

        Returns
        -------
        pandas.DataFrame
            See :func:`~iop_research.privacy.audit.audit_ledger`.
        """
        return audit_ledger(self._all(), raise_on_failure=raise_on_failure)

    def save_ledger(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the ledger as JSON (default ``out_dir/ledgers/<report>.json``)."""
        if path is None:
            if self.out_dir is None:
                return None
            path = self.out_dir / "ledgers" / f"{self.report}.json"
        self._ledger.to_json(path)
        return Path(path)

    def withdraw(self, name: str, *, sources: Sequence[str] = ()) -> None:
        """Take back what was published under ``name`` (its display, ledger entries and relations), and the
        relations declared with a ``source`` in ``sources`` (e.g. by :meth:`relate`), before the report is
        written: for a display the audit shows cannot be protected, so the report says so instead."""
        self._drop(name)
        gone = set(sources)
        self._ledger._relations = [r for r in self._ledger._relations if r.source not in gone]
        self._after_publish()

    def relate(self, parts: Sequence[str], total: str, *, source: str = "") -> None:
        """Declare that the counts ``parts`` sum to ``total`` (keys), e.g. across tables."""
        self._ledger.add_sum(list(parts), total, source=source or f"{self.report}: relate")
        self._after_publish()

    # ------------------------------------------------------------------ numbers
    def _marker(self) -> str:
        return f"<{self.min_cell_count}"

    def count(self, n, *, label: str | None = None, key: str | None = None) -> PublishedNumber:
        """A count for text, suppressed if small (``"<11"``) or if showing it would reveal a hidden count.

        Parameters
        ----------
        n : int
        label : str, optional
            What is counted (ledger and messages).
        key : str, optional
            Study-wide key (no ``"/"``) when the same quantity is published
            elsewhere; default ``"<report>/text/<label>"``.

        Returns
        -------
        PublishedNumber
            ``"3,000"``, ``"<11"`` or ``"*"``.
        """
        n = _whole(n, label or "count")
        self._n_text += 1
        label = label or f"count_{self._n_text}"
        key = key or f"{self.report}/text/{label}"
        view = self._all().view()
        if key in view and view[key][0] not in ("unpublished", "sensitive"):
            st, v = view[key]
            if st == "shown" and v != n:
                raise PrivacyViolationError(f"Count {key!r} was published as {v}, now {n}. Use another key.")
            text = _fmt_int(n) if st == "shown" else (self._marker() if st == "primary" else "*")
            self._ledger.add_count(key, value=n if st == "shown" else None, status=st, report=self.report,
                                   table="text", row=label, column="")
            self._after_publish()
            return PublishedNumber.make(text, key=key, hidden=st != "shown")
        hidden, primary = protect_cells({key: n}, self._all().relations, min_cell_count=self.min_cell_count,
                                        published=view)
        st = "primary" if key in primary else ("secondary" if key in hidden else "shown")
        self._ledger.add_count(key, value=n if st == "shown" else None, status=st, report=self.report,
                               table="text", row=label, column="")
        self._after_publish()
        text = _fmt_int(n) if st == "shown" else (self._marker() if st == "primary" else "*")
        return PublishedNumber.make(text, key=key, hidden=st != "shown")

    def percent(self, k, n, *, label: str | None = None, digits: int = 1, key: str | None = None,
                denominator_key: str | None = None, with_count: bool = False) -> PublishedNumber:
        """A percentage ``100 k / n``, hidden (``"*"``) when ``k`` is small or when showing it would
        reveal a hidden count through a published denominator.

        Parameters
        ----------
        k, n : int
            Count and denominator.
        label : str, optional
        digits : int, default 1
        key, denominator_key : str, optional
            Ledger keys of ``k`` and ``n`` (link to counts published elsewhere).
        with_count : bool, default False
            Render ``"45 (12.3%)"`` (the count then passes :meth:`count`).

        Returns
        -------
        PublishedNumber
        """
        k = _whole(k, label or "numerator")
        n = _whole(n, (label or "percentage") + " denominator")
        if n == 0 or k > n:
            raise DataValidationError(f"percent({k}, {n}): the denominator must be positive and at least the count.")
        self._n_text += 1
        label = label or f"percent_{self._n_text}"
        key = key or f"{self.report}/text/{label}"
        denominator_key = denominator_key or f"{self.report}/text/{label}/denominator"
        count_text = None
        if with_count:
            count_text = self.count(k, label=label, key=key)
        pct = round(100.0 * k / n, digits)
        small = 1 <= k < self.min_cell_count or (0 < n - k < self.min_cell_count)
        view = self._all().view()
        hide = small or (key in view and view[key][0] in ("primary", "secondary")) \
            or (denominator_key in view and view[denominator_key][0] in ("primary", "secondary"))
        if not hide:
            trial = self._all()
            trial.add_percentage(key, denominator_key, percent=pct, digits=digits)
            tv = trial.view()
            targets = connected_primaries(tv, trial.relations, [key, denominator_key])
            if targets and not audit_cells(tv, trial.relations, min_cell_count=self.min_cell_count,
                                           targets=targets)["is_protected"].all():
                hide = True
        if hide:
            text = "*"
        else:
            self._ledger.add_percentage(key, denominator_key, percent=pct, digits=digits,
                                        source=f"{self.report}/text/{label}")
            text = f"{pct:.{digits}f}%"
        self._after_publish()
        if count_text is not None:
            text = f"{count_text} ({text})"
        return PublishedNumber.make(text, key=key, hidden=hide)

    def estimate(self, value, low=None, high=None, *, fmt: str = "{:.2f}", sep: str = " to ") -> PublishedNumber:
        """An estimate with its confidence interval, ``"0.71 (0.55 to 0.92)"`` (not a count)."""
        def f(x):
            x = float(x)
            return "NA" if math.isnan(x) else fmt.format(x)

        text = f(value)
        if low is not None and high is not None:
            text = f"{text} ({f(low)}{sep}{f(high)})"
        return PublishedNumber.make(text)

    def text(self, template: str, /, **values) -> Published:
        """A paragraph whose numbers all come from the channel.

        Parameters
        ----------
        template : str
            ``str.format`` template, e.g. ``"Of {n} patients, {k} relapsed ({pct})."``.
        **values : PublishedNumber or str
            Numbers from :meth:`count`, :meth:`percent`, :meth:`estimate`;
            plain strings (names of groups) are accepted as they are.

        Raises
        ------
        PrivacyViolationError
            A value is a raw number (pass it through :meth:`count` or :meth:`estimate`).
        """
        raw = [k for k, v in values.items() if not isinstance(v, str)]
        if raw:
            raise PrivacyViolationError(
                f"text(): values {format_ids(raw)} are raw numbers. Pass counts through pub.count(...), "
                f"percentages through pub.percent(...), estimates through pub.estimate(...)."
            )
        try:
            body = template.format(**{k: v for k, v in values.items()})
        except (KeyError, IndexError) as exc:
            raise DataValidationError(f"text(): the template names {exc} but no such value was passed.") from exc
        self._n_text += 1
        name = f"text_{self._n_text}"
        inner = f'<p class="iop-text">{_html.escape(body)}</p>'
        return self._emit("text", name, None, inner, body)

    # ------------------------------------------------------------------ tables
    def table(
        self,
        df: pd.DataFrame,
        *,
        caption: str,
        kind: str = "counts",
        count_cols: Sequence[str] | None = None,
        denominator_col: str | None = None,
        pct_cols: Mapping[str, str] | None = None,
        footnotes: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        name: str | None = None,
        docx: bool = False,
        total_col: str | None = None,
        total_row=None,
        row_blocks: Mapping[str, Sequence] | None = None,
        keys: Mapping[tuple, str] | None = None,
        digits: int = 2,
        pct_digits: int = 1,
    ) -> Published:
        """Publish a table: suppress, caption, footnote, display, write CSV (and Word).

        Parameters
        ----------
        df : pandas.DataFrame
            Raw numbers (counts unsuppressed). The first non-count column (or
            the index) labels the rows.
        caption : str
            Caption, numbered ``"Table 2. ..."``.
        kind : {"counts", "estimates"}
            ``"counts"``: ``count_cols`` (default: every integer column) are
            suppressed. ``"estimates"``: numbers are formatted, and only
            ``count_cols`` given explicitly (e.g. events per group) are counts.
        count_cols : sequence of str, optional
        denominator_col : str, optional
            Count column with each row's denominator of ``pct_cols``.
            Default: a percentage's denominator is its count column's total
            over the rows (``total_row`` if given).
        pct_cols : mapping of str to str, optional
            Percentage column -> count column. Hidden where the count or the
            denominator is hidden, or where it would narrow a hidden count.
        footnotes : sequence of str
            Method notes, N. The suppression rule is added.
        labels : mapping of str to str, optional
            Readable names of columns and of row-label values.
        name : str, optional
            File stem; default ``table_<n>``.
        docx : bool, default False
            Also write ``tables/<name>.docx``.
        total_col : str, optional
            Count column holding each row's total of the other count columns.
        total_row : label, optional
            Row (row label) holding each column's total of the other rows (or
            of each of ``row_blocks``).
        row_blocks : mapping of str to sequence of labels, optional
            Groups of rows (e.g. the levels of one variable in Table 1) that
            each sum to ``total_row``.
        keys : mapping of (row label, column) to str, optional
            Study-wide keys of cells that are published elsewhere too (e.g.
            ``{("Episodes", "All"): "n_episodes"}``), so the audit sees them as one.
        digits, pct_digits : int
            Decimals of estimates and of percentages.

        Returns
        -------
        Published
            ``.table`` holds the displayed strings.

        Raises
        ------
        DataValidationError
            Unknown columns, non-count values in count columns.
        """
        if kind not in ("counts", "estimates"):
            raise ModelSpecificationError(f"kind must be 'counts' or 'estimates', got {kind!r}.")
        if not isinstance(df, pd.DataFrame):
            raise DataValidationError(f"table() takes a DataFrame, got {type(df).__name__}.")
        name, number = self._name(name, "table")
        df = df.reset_index(drop=not _has_named_index(df))
        if count_cols is None:
            count_cols = [c for c in df.columns if pd.api.types.is_integer_dtype(df[c].dtype)] \
                if kind == "counts" else []
        count_cols = list(count_cols)
        pct_cols = dict(pct_cols or {})
        missing = [c for c in [*count_cols, *pct_cols, *pct_cols.values(), denominator_col, total_col]
                   if c is not None and c not in df.columns]
        if missing:
            raise DataValidationError(f"table {name!r}: columns {format_ids(missing)} not found "
                                      f"(columns: {format_ids(df.columns)}).")
        if denominator_col is not None and denominator_col not in count_cols:
            count_cols.append(denominator_col)
        if total_col is not None and total_col not in count_cols:
            count_cols.append(total_col)
        label_col = next((c for c in df.columns if c not in count_cols and c not in pct_cols), None)
        row_labels = [str(v) for v in (df[label_col] if label_col is not None else df.index)]
        counts = _counts(df, count_cols, name)

        def cell_key(i: int, col: str) -> str:
            if keys and (row_labels[i], col) in keys:
                return keys[(row_labels[i], col)]
            return f"{self.report}/{name}/{i}:{row_labels[i]}/{col}"

        values: dict[str, int | None] = {}
        cost: dict[str, float] = {}
        for i in range(len(df)):
            for j, col in enumerate(count_cols):
                v = counts[i, j]
                kk = cell_key(i, col)
                values[kk] = None if np.isnan(v) else int(v)
        # relations
        led = Ledger(min_cell_count=self.min_cell_count)
        src = f"{self.report}/{name}"
        others = [c for c in count_cols if c not in (total_col, denominator_col)]
        if total_col is not None:
            for i in range(len(df)):
                led.add_sum([cell_key(i, c) for c in others], cell_key(i, total_col), source=f"{src}: row total")
                cost[cell_key(i, total_col)] = 10.0
        tot_i = None
        if total_row is not None:
            hits = [i for i, lab in enumerate(row_labels) if lab == str(total_row)]
            if not hits:
                raise DataValidationError(f"table {name!r}: total_row {total_row!r} is not a row label "
                                          f"(rows: {format_ids(row_labels)}).")
            tot_i = hits[0]
            blocks = list(row_blocks.values()) if row_blocks else [[lab for i, lab in enumerate(row_labels)
                                                                   if i != tot_i]]
            for block in blocks:
                pos = [i for i, lab in enumerate(row_labels) if lab in {str(b) for b in block} and i != tot_i]
                for col in count_cols:
                    if col == denominator_col:
                        continue
                    led.add_sum([cell_key(i, col) for i in pos], cell_key(tot_i, col), source=f"{src}: column total")
            for col in count_cols:
                cost[cell_key(tot_i, col)] = 10.0
        for kk, v in values.items():
            if v is not None:
                cost[kk] = (v + 1.0) * cost.get(kk, 1.0)
        prior = self._all()
        rels = prior.relations + led.relations
        hidden, primary = protect_cells(values, rels, min_cell_count=self.min_cell_count,
                                        published=prior.view(), cost=cost)
        for i in range(len(df)):
            for col in count_cols:
                kk = cell_key(i, col)
                v = values[kk]
                if v is None:
                    continue
                st = "primary" if kk in primary else ("secondary" if kk in hidden else "shown")
                led.add_count(kk, value=v if st == "shown" else None, status=st, report=self.report, table=name,
                              row=row_labels[i], column=col)
        # percentages
        pct_text: dict[str, list[str]] = {}
        trial = prior.copy()
        trial.extend(led)
        for pcol, ccol in pct_cols.items():
            shown_pct = []
            for i in range(len(df)):
                ck = cell_key(i, ccol)
                if denominator_col is not None:
                    dk = cell_key(i, denominator_col)
                elif tot_i is not None:
                    dk = cell_key(tot_i, ccol)
                else:
                    dk = f"{src}/total/{ccol}"
                    if i == 0:
                        trial.add_sum([cell_key(r, ccol) for r in range(len(df))], dk, source=f"{src}: denominator")
                        led.add_sum([cell_key(r, ccol) for r in range(len(df))], dk, source=f"{src}: denominator")
                raw = df[pcol].iloc[i]
                if pd.isna(raw) or values.get(ck) is None:
                    shown_pct.append("")
                    continue
                st_c = "hidden" if ck in hidden else "shown"
                st_d = "hidden" if dk in hidden else "shown"
                if st_c == "hidden" or st_d == "hidden":
                    shown_pct.append("*")
                    continue
                p = round(float(raw), pct_digits)
                t2 = trial.copy()
                t2.add_percentage(ck, dk, percent=p, digits=pct_digits)
                tv = t2.view()
                targets = connected_primaries(tv, t2.relations, [ck, dk])
                if targets and not audit_cells(tv, t2.relations, min_cell_count=self.min_cell_count,
                                               targets=targets)["is_protected"].all():
                    shown_pct.append("*")
                    continue
                trial = t2
                led.add_percentage(ck, dk, percent=p, digits=pct_digits, source=f"{src}: {pcol}")
                shown_pct.append(f"{p:.{pct_digits}f}")
            pct_text[pcol] = shown_pct
        self._ledger.extend(led)
        # display strings
        out = pd.DataFrame(index=range(len(df)))
        for col in df.columns:
            if col in count_cols:
                cells = []
                for i in range(len(df)):
                    kk = cell_key(i, col)
                    v = values[kk]
                    cells.append("" if v is None else self._marker() if kk in primary else "*" if kk in hidden
                                 else _fmt_int(v))
                out[col] = cells
            elif col in pct_cols:
                out[col] = pct_text[col]
            else:
                out[col] = [_fmt_value(v, col, digits) for v in df[col]]
        if labels:
            if label_col is not None:
                out[label_col] = [labels.get(v, v) for v in out[label_col]]
            out = out.rename(columns={c: labels.get(c, c) for c in out.columns})
        notes = list(footnotes)
        if count_cols:
            notes.append(self._rule_note(any(k in hidden for k in values)))
        inner = _table_html(out, f"Table {number}. {caption}", notes, name)
        pub = self._emit("table", name, number, inner, f"Table {number}. {caption}", table=out)
        if self.out_dir is not None:
            from iop_research.data.io import atomic_write_bytes, atomic_write_text

            csv_path = self.out_dir / "tables" / f"{name}.csv"
            atomic_write_text(csv_path, out.to_csv(index=False, lineterminator="\n"))
            pub.files.append(csv_path)
            if docx:
                path = self.out_dir / "tables" / f"{name}.docx"
                atomic_write_bytes(path, _docx_bytes(out, f"Table {number}. {caption}", notes))
                pub.files.append(path)
        self._after_publish()
        return pub

    def _rule_note(self, any_hidden: bool) -> str:
        k = self.min_cell_count
        note = (f"Counts from 1 to {k - 1} are shown as <{k}; counts marked * are hidden so that they "
                f"cannot be worked out from totals, and so are percentages of hidden counts.")
        if k < MIN_ALLOWED_CELL_COUNT:
            note += f" Threshold {k} by exception: {self.override_reason}."
        return note

    # ------------------------------------------------------------------ survival curves
    def km(self, km, *, name: str = "km_counts", times: Sequence[float] | None = None, rounding: int | None = None,
           n_key=None, events_key=None, conf_type: str | None = None, conf_level: float | None = None):
        """A Kaplan-Meier result fit for publishing: counts rounded, estimates derived from them, ledger kept.

        Numbers at risk, survival steps and estimates at chosen days can be
        differenced (``168 -> 167`` at risk with 99.4% relapse-free says one
        relapse). Here the cumulative numbers of events and of censorings of
        each curve are rounded to a multiple of ``rounding`` (midpoint, as
        OpenSAFELY [4]_; :mod:`iop_research.privacy.rounding`), and the curve
        is re-estimated from the rounded counts alone (same estimator, variance
        and confidence-interval transform), so everything drawn or tabulated
        from the returned result (numbers at risk, survival, CI, medians) shows
        nothing the rounded counts do not.

        The ledger records, per curve and day of ``times``, the intervals of
        true cumulative counts that the rounded ones stand for, and as
        *sensitive* counts the relapses and the censorings between consecutive
        days, so the joint audit checks that none of them can be narrowed into
        ``1 .. min_cell_count - 1``, also together with counts published
        elsewhere (``n_key``, ``events_key``). (Their sum, the exits, is known
        to be at least 2 when both are non-zero: a curve that steps and a risk
        table that drops by more than its steps say that much.)

        Parameters
        ----------
        km : Result
            :func:`iop_research.survival.km.fit_km` result (unweighted).
        name : str, default "km_counts"
            Ledger table name (keys ``<report>/<name>/<group>/...``).
        times : sequence of float, optional
            Days at which the report shows numbers at risk or estimates;
            default 0 and the days of ``km.at_times``. The re-estimated result
            reports ``at_times`` at the same days as ``km``.
        rounding : int, optional
            Rounding unit. Default: the smallest multiple of ``min_cell_count``
            with which the audit (with everything published before) protects
            every relapse and censoring count between the days; usually
            ``min_cell_count`` itself, larger (up to 5 times) when exact totals
            published elsewhere would narrow a count (small groups). If none
            does, the last is used and the audit (the study build's joint
            audit) reports the counts that are not protected.
        n_key, events_key : str or PublishedNumber, optional
            Keys (or the published numbers) of counts published elsewhere that
            equal the number of episodes and of events over all curves.
        conf_type, conf_level : optional
            Default: those of ``km`` (its ``conventions["ci"]``).

        Returns
        -------
        Result
            As :func:`~iop_research.survival.km.fit_km`, from the rounded counts
            (``tidy`` counts are the rounded ones; ``glance.n`` the rounded
            total), with ``conventions["disclosure"]`` saying so.

        References
        ----------
        .. [4] OpenSAFELY kaplan-meier-function (``round_km``).
        """
        from iop_research.privacy.rounding import round_survival_counts, rounding_bounds
        from iop_research.results import Result
        from iop_research.survival.km import fit_km

        tidy = getattr(km, "tidy", None)
        if not isinstance(tidy, pd.DataFrame):
            raise DataValidationError("km() takes a Kaplan-Meier Result (iop_research.fit_km).")
        if not _NAME_RE.match(str(name)):
            raise DataValidationError(f"name {name!r} must be letters, digits, '_', '.', '-'.")
        conv = dict(getattr(km, "conventions", {}) or {})
        ci = str(conv.get("ci", "log transform at level 0.95")).split()
        if conf_type is None:
            conf_type = ci[0] if ci and ci[0] in ("log", "log-log", "plain") else "log"
        if conf_level is None:
            m_lvl = re.search(r"level ([0-9.]+)", str(conv.get("ci", "")))
            conf_level = float(m_lvl.group(1)) if m_lvl else 0.95
        at = km.extra.get("at_times") if hasattr(km, "extra") else None
        at_days = sorted({float(t) for t in at["time"]}) if at is not None and len(at) else []
        days = sorted({0.0, *(float(t) for t in (times if times is not None else at_days))})
        groups = list(pd.unique(tidy["group"]))
        self._drop(name)
        prior = self._all()
        n_total = float(tidy.groupby("group")["n_at_risk"].max().sum()) if len(tidy) else 0.0
        # at most five units: past that, what fails is given away by counts published elsewhere
        # (e.g. a small total shown as "<11"), which coarser rounding does not cure; the audit says so
        units = [int(rounding)] if rounding is not None else \
            [self.min_cell_count * j for j in range(1, 2 + min(4, int(n_total // self.min_cell_count)))]
        for m in units:  # the smallest unit (a multiple of the threshold) the joint audit passes with
            r = round_survival_counts(tidy, min_cell_count=self.min_cell_count, rounding=m)
            led = self._km_ledger(r, groups, days, name, m, n_key, events_key, rounding_bounds)
            trial = prior.copy()
            trial.extend(led)
            tv = trial.view()
            targets = list(dict.fromkeys(
                [e["key"] for e in led._entries if e["status"] == "sensitive"]
                + connected_primaries(tv, trial.relations, [e["key"] for e in led._entries])))
            if audit_cells(tv, trial.relations, min_cell_count=self.min_cell_count,
                           targets=targets)["is_protected"].all():
                break
        self._ledger.extend(led)
        self._after_publish()
        ev_rows = r[r["n_events"] > 0]
        ce_rows = r[r["n_censored"] > 0]
        pseudo = pd.concat([
            pd.DataFrame({"group": ev_rows["group"].to_numpy(), "time": ev_rows["time"].to_numpy(), "event": 1,
                          "w": ev_rows["n_events"].to_numpy()}),
            pd.DataFrame({"group": ce_rows["group"].to_numpy(), "time": ce_rows["time"].to_numpy(), "event": 0,
                          "w": ce_rows["n_censored"].to_numpy()}),
        ], ignore_index=True)
        pseudo["group"] = pd.Categorical(pseudo["group"], categories=groups)
        fit = fit_km(pseudo, duration_col="time", event_col="event", group_col="group", weights_col="w",
                     times=at_days or None, conf_type=conf_type, conf_level=conf_level)
        new_tidy = fit.tidy.copy()
        for c in ("n_at_risk", "n_events", "n_censored"):
            new_tidy[c] = np.round(new_tidy[c].to_numpy(dtype=float)).astype(np.int64)
        extra = {k: v for k, v in fit.extra.items() if k in ("medians", "std_err_log", "at_times")}
        if "at_times" in extra:
            a = extra["at_times"].copy()
            for c in ("n_at_risk", "n_events", "n_censored"):
                a[c] = np.round(a[c].to_numpy(dtype=float)).astype(np.int64)
            extra["at_times"] = a
        glance = fit.glance.copy()
        glance["n"] = np.round(glance["n_weighted"].to_numpy(dtype=float)).astype(np.int64)
        conv.update({k: v for k, v in fit.conventions.items() if k in ("estimator", "ci", "median", "ties")})
        conv["variance"] = "Greenwood on the rounded counts (as R survfit on data with these counts)"
        conv["disclosure"] = (f"cumulative events and censorings rounded up to a multiple of {m} and moved to the "
                              f"middle (OpenSAFELY roundmid); numbers at risk and estimates derived from them")
        out = Result(method="Kaplan-Meier (rounded counts)", tidy=new_tidy, glance=glance, model=None, extra=extra,
                     conventions=conv)
        return out

    def _km_ledger(self, r: pd.DataFrame, groups: list, days: list, name: str, m: int, n_key, events_key,
                   rounding_bounds) -> Ledger:
        """Ledger of a rounded curve: bounds of true cumulative counts at ``days``, sensitive interval counts."""
        src = f"{self.report}/{name}"
        led = Ledger(min_cell_count=self.min_cell_count)
        k_of = {"n": [], "events": []}

        def cum_key(g, what: str, day) -> str:
            return f"{src}/{g}/{what}/{day:g}"

        def bound(key: str, rounded: int, g, what: str) -> None:
            lo, hi = rounding_bounds(int(rounded), m)
            led.add_count(key, value=None, status="unpublished", report=self.report, table=name, row=str(g),
                          column=what)
            led.add_relation({key: 1.0}, lower=float(lo), upper=float(hi), source=f"{src}: rounded {what}")

        for g in groups:
            d = r[r["group"] == g]
            t = d["time"].to_numpy(dtype=float)
            rev = d["cum_events_rounded"].to_numpy()
            rce = d["cum_censored_rounded"].to_numpy()

            def rounded_at(arr, day: float, *, strict: bool) -> int:
                i = int(np.searchsorted(t, day, side="left" if strict else "right")) - 1
                return int(arr[i]) if i >= 0 else 0

            tot_e, tot_c = f"{src}/{g}/events/total", f"{src}/{g}/censored/total"
            bound(tot_e, rev[-1] if rev.size else 0, g, "events, all")
            bound(tot_c, rce[-1] if rce.size else 0, g, "censored, all")
            k_of["events"].append(tot_e)
            k_of["n"] += [tot_e, tot_c]
            prev = None
            for day in days:
                eb, cb, et = (cum_key(g, "events_before", day), cum_key(g, "censored_before", day),
                              cum_key(g, "events_to", day))
                bound(eb, rounded_at(rev, day, strict=True), g, f"events before day {day:g}")
                bound(cb, rounded_at(rce, day, strict=True), g, f"censored before day {day:g}")
                bound(et, rounded_at(rev, day, strict=False), g, f"events to day {day:g}")
                for a_key, tot in ((eb, tot_e), (et, tot_e), (cb, tot_c)):
                    led.add_relation({tot: 1.0, a_key: -1.0}, lower=0.0, upper=math.inf, source=f"{src}: cumulative")
                led.add_relation({et: 1.0, eb: -1.0}, lower=0.0, upper=math.inf, source=f"{src}: cumulative")
                lo_day = 0.0 if prev is None else prev[0]
                _, peb, pcb, pet = prev if prev is not None else (None, None, None, None)
                # counts between consecutive days, each the difference of one rounded series
                for what, col, cur, before in (
                        ("relapses", f"events in ({lo_day:g}, {day:g}]" if prev else f"events to day {day:g}", et, pet),
                        ("relapses_before", f"events in [{lo_day:g}, {day:g})", eb, peb),
                        ("censored", f"censored in [{lo_day:g}, {day:g})", cb, pcb)):
                    key = f"{src}/{g}/{what}/{lo_day:g}-{day:g}"
                    led.add_count(key, value=None, status="sensitive", report=self.report, table=name, row=str(g),
                                  column=col)
                    coefs = {key: 1.0, cur: -1.0}
                    if before is not None:
                        coefs[before] = 1.0
                    led.add_relation(coefs, lower=0.0, source=f"{src}: interval")
                prev = (day, eb, cb, et)
        for key, parts in ((n_key, k_of["n"]), (events_key, k_of["events"])):
            key = getattr(key, "key", key)
            if key:
                led.add_sum(parts, str(key), source=f"{src}: total")
        return led

    # ------------------------------------------------------------------ figures
    def figure(self, fig, *, caption: str, name: str | None = None, dpi: int = 300) -> Published:
        """Publish a matplotlib figure: inline SVG with a numbered caption, files SVG and PNG.

        The figure is closed, so the notebook backend does not show it again
        outside the channel. Counts drawn in the figure (numbers at risk)
        must come from suppressed tables
        (:func:`~iop_research.privacy.suppress_risk_table`).

        Parameters
        ----------
        fig : matplotlib.figure.Figure
        caption : str
        name : str, optional
            File stem; default ``figure_<n>``.
        dpi : int, default 300
            Resolution of the PNG.
        """
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        if not isinstance(fig, Figure):
            fig = getattr(fig, "figure", None)
            if not isinstance(fig, Figure):
                raise DataValidationError("figure() takes a matplotlib Figure (or an Axes).")
        name, number = self._name(name, "figure")
        svg = io.StringIO()
        import matplotlib as mpl

        with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
            fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        svg_text = svg.getvalue()
        svg_text = svg_text[svg_text.find("<svg"):]
        svg_text = re.sub(r"<metadata>.*?</metadata>\s*", "", svg_text, flags=re.S)  # RDF boilerplate
        cap = f"Figure {number}. {caption}"
        inner = (f'<figure class="iop-figure" id="{name}">{svg_text}'
                 f"<figcaption>{_html.escape(cap)}</figcaption></figure>")
        pub = self._emit("figure", name, number, inner, cap)
        if self.out_dir is not None:
            from iop_research.data.io import atomic_write_bytes, atomic_write_text

            p1 = self.out_dir / "figures" / f"{name}.svg"
            p2 = self.out_dir / "figures" / f"{name}.png"
            atomic_write_text(p1, svg.getvalue())
            atomic_write_bytes(p2, png.getvalue())
            pub.files += [p1, p2]
        return pub

    # ------------------------------------------------------------------ plumbing
    def _name(self, name: str | None, kind: str) -> tuple[str, int]:
        """File stem and number of a table or figure. Publishing a name again (re-running a notebook
        cell) replaces the earlier display: same number, its ledger entries and relations dropped."""
        if name is not None and str(name) in self._names:
            name = str(name)
            self._drop(name)
            return name, self._names[name]
        if name is not None and not _NAME_RE.match(str(name)):
            raise DataValidationError(f"name {name!r} must be letters, digits, '_', '.', '-' (it names files).")
        if kind == "table":
            self._n_table += 1
            number = self._n_table
        else:
            self._n_figure += 1
            number = self._n_figure
        name = f"{kind}_{number}" if name is None else str(name)
        if name in self._names:
            raise DataValidationError(f"name {name!r} is already used in report {self.report!r}; pass a "
                                      f"name= to each table and figure (names are file names).")
        self._names[name] = number
        return name, number

    def _drop(self, name: str) -> None:
        src = f"{self.report}/{name}"
        led = self._ledger
        led._entries = [e for e in led._entries if not (e["report"] == self.report and e["table"] == name)]
        led._relations = [r for r in led._relations if not (r.source == src or r.source.startswith(src + ":"))]
        self.published = [p for p in self.published if p.name != name]

    def _emit(self, kind: str, name: str, number: int | None, inner: str, plain: str, *,
              table: pd.DataFrame | None = None) -> Published:
        sig = sign_published(kind, name, inner, plain)
        html = (f'<div class="iop-published" data-iop-kind="{kind}" data-iop-name="{name}" '
                f'data-iop-sig="{sig}">{inner}</div>')
        pub = Published(kind, name, number, html, plain, table=table)
        self.published.append(pub)
        if self.show is None or self.show:
            _show(pub)
        return pub

    def _after_publish(self) -> None:
        if self.out_dir is not None:
            self.save_ledger()


def _has_named_index(df: pd.DataFrame) -> bool:
    return df.index.name is not None or not pd.api.types.is_integer_dtype(df.index.dtype)


def _whole(n, what: str) -> int:
    try:
        f = float(n)
    except (TypeError, ValueError):
        raise DataValidationError(f"{what} must be a whole number, got {n!r}.") from None
    if math.isnan(f) or f < 0 or f != int(f):
        raise DataValidationError(f"{what} must be a non-negative whole number, got {n!r}.")
    return int(f)


def _counts(df: pd.DataFrame, cols: Sequence[str], name: str) -> np.ndarray:
    out = np.empty((len(df), len(cols)))
    for j, c in enumerate(cols):
        s = pd.to_numeric(df[c], errors="coerce")
        vals = s.to_numpy(dtype=float, na_value=np.nan)
        bad = (s.isna() & df[c].notna()).to_numpy() | (~np.isnan(vals) & ((vals < 0) | (np.mod(np.nan_to_num(vals), 1) != 0)))
        if bad.any():
            raise DataValidationError(
                f"table {name!r}: column {c!r} must hold non-negative whole counts, but {int(bad.sum())} rows do "
                f"not. Pass only count columns in count_cols (percentages in pct_cols)."
            )
        out[:, j] = vals
    return out


def _fmt_value(v, col: str, digits: int) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return _fmt_int(int(v))
    if isinstance(v, (float, np.floating)):
        if str(col).lower() in ("p", "p_value", "p-value", "p value"):
            return "<0.001" if v < 0.001 else f"{v:.3f}"
        return f"{float(v):.{digits}f}"
    return str(v)


def _table_html(out: pd.DataFrame, caption: str, notes: Sequence[str], name: str) -> str:
    from great_tables import GT

    gt = GT(out, id=name).tab_header(title=caption)
    for n in notes:
        gt = gt.tab_source_note(n)
    return gt.as_raw_html(inline_css=False)


def _docx_bytes(out: pd.DataFrame, caption: str, notes: Sequence[str]) -> bytes:
    import docx

    doc = docx.Document()
    para = doc.add_paragraph()
    para.add_run(caption).bold = True
    tab = doc.add_table(rows=1, cols=len(out.columns))
    tab.style = "Table Grid"
    for j, c in enumerate(out.columns):
        tab.rows[0].cells[j].text = str(c)
    for row in out.itertuples(index=False):
        cells = tab.add_row().cells
        for j, v in enumerate(row):
            cells[j].text = str(v)
    for n in notes:
        doc.add_paragraph(n).style = "Normal"
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()
