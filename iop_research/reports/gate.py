"""Report privacy gate: refuse HTML reports that disclose identifiers, dates, old ages or small cells.

:func:`make_privacy_gate` builds the callable that
:func:`iop_research.reports.build.build_reports` calls (``gate=``) on every exported
notebook before anything is written; :func:`scan_report_html` lists what it
finds. HTML is parsed with the standard library's :mod:`html.parser` (no new
dependency); text inside ``<style>`` and ``<script>`` and attribute values
(figures embedded as data URIs) are not scanned.

Rules
-----
``identifier``
    A whole token equal to a value of an identifier column of the input
    (``patient_id``, ``episode_id`` of every table). Tokens are runs of
    letters, digits, ``_``, ``.`` and ``-``; a token and each of its ``-``/``.``
    separated parts are compared, so ``P0001`` is found inside ``P0001-S1``.
    Numeric identifiers (``1``, ``628``) cannot be told apart from counts and
    would be flagged wherever that number appears: de-identify first
    (:func:`iop_research.privacy.deidentify` turns ids into salted hashes).
``full_date``
    A calendar date with day precision: ``YYYY-MM-DD`` (also with ``/`` or
    ``.``, and as the date part of a timestamp), ``MM/DD/YYYY``,
    ``DD.MM.YYYY``, ``M/D/YY``, or a month name with day and year
    (``March 3, 2021``, ``3 Mar 2021``). Years alone, months
    (``2021-03``) and relative days (``day 30``) are allowed (HIPAA Safe
    Harbor [1]_ lists all date elements except the year). Dates inside the
    provenance block (``details.iop-provenance``: study parameters such as
    ``cohort_admit_from``; it carries no patient dates) and inside cells tagged
    ``parameters``/``injected-parameters`` are allowed.
``age_over_89``
    An age above 89 that is not aggregated into a "90 or older" category [1]_:
    a number > 89 in a table column or row whose label is ``age`` /
    ``age_*`` / ``age at ...`` (a range such as ``85-94`` counts by its upper
    bound; ``90+`` and ``>=90`` are fine), or text such as ``age 93``,
    ``aged 93``, ``93 years old``, ``93-year-old``.
``small_cell``
    A count in ``1 .. min_cell_count - 1`` in an HTML table: cells of
    count-like columns (``n``, ``count``, ``events``, ``n_at_risk``,
    ``n_events``, ``patients``, ``episodes``, ``rows_removed``, any ``n_*``,
    ``*_n`` or ``*_count``, ...), cells of rows whose label is count-like
    (Table 1's ``n`` and ``missing`` rows), and anywhere ``count (percent)``
    cells such as ``7 (3.5%)``; in tables printed as text (``print(df)``
    inside ``<pre>``: the value right-aligned under a count-like header);
    and ``n = 7`` in text outside code. A cell counts by its leading whole number,
    as in :func:`iop_research.privacy.check_no_small_cells` (which decides);
    ``<11``, ``*``, ``0`` and decimals pass. Counts drawn in figures cannot
    be read from HTML: suppress them before plotting
    (:func:`iop_research.privacy.suppress_risk_table`).

Cells are located by their position among the ``div.jp-Cell`` elements of
nbconvert's lab template (0-based; the provenance and contents cells that
:func:`~iop_research.reports.build.build_reports` prepends come first); text outside
every cell has ``cell=None``. When the report shows code, each violation also
carries the first line of its cell's code (``cell_starts``) to find the cell.

References
----------
.. [1] U.S. Department of Health and Human Services (2012). Guidance
   Regarding Methods for De-identification of Protected Health Information
   in Accordance with the HIPAA Privacy Rule, section 2.2 (Safe Harbor:
   dates more precise than the year; ages over 89).
.. [2] Centers for Medicare & Medicaid Services (2020). CMS Cell Size
   Suppression Policy (no cell below 11).
"""
from __future__ import annotations

import base64
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Callable, Iterable

import pandas as pd

from iop_research.exceptions import ModelSpecificationError, PrivacyViolationError, format_ids
from iop_research.data.schema import Col

__all__ = ["Violation", "scan_report_html", "make_privacy_gate", "identifier_values", "check_channel_only",
           "normalize_identifier", "RULES", "COUNT_LABELS", "CHANNEL_RULE", "MIN_ALLOWED_CELL_COUNT"]

#: Rule of :func:`check_channel_only`: an output that did not come from the publishing channel.
CHANNEL_RULE = "not_channel"

#: Thresholds below this need an explicit ``min_cell_count_override`` (a reason).
MIN_ALLOWED_CELL_COUNT = 5

#: Rule names, in the order they are reported.
RULES: tuple[str, ...] = ("identifier", "full_date", "age_over_89", "small_cell")

#: Column / row labels treated as counts (after lower-casing, spaces and dots to ``_``).
COUNT_LABELS: frozenset[str] = frozenset({
    "n", "count", "counts", "freq", "frequency", "events", "n_events", "n_at_risk", "at_risk",
    "n_censored", "censored", "patients", "n_patients", "episodes", "n_episodes", "rows",
    "rows_removed", "rows_remaining", "patients_removed", "patients_remaining", "missing",
    "number_at_risk", "no_at_risk", "deaths", "relapses", "cases", "total",
})
_COUNT_PATTERN = re.compile(r"^(n_.+|.+_n|.+_count|n_?\(.*\)|count_.+)$")
_AGE_LABEL = re.compile(r"^(age|age_.*|age,.*|age\s.*|.*_age)$")
_AGE_BUCKET_OK = re.compile(
    r"^\s*(?:(?:>=?|≥)\s*(?:89|90)|90\s*\+|90\s*(?:years?\s*)?(?:or|and)\s+(?:older|over|above))\s*(?:years?)?\s*$",
    re.I)
_COUNT_PCT = re.compile(r"^\s*(\d+)\s+\(\s*\d+(?:\.\d+)?\s*%?\s*\)\s*$")
_LEAD_INT = re.compile(r"^\s*(\d+)(?:\s|$|\()")

_MONTHS = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
           r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_DATE_PATTERNS: tuple[tuple[re.Pattern, tuple[str, str, str]], ...] = (
    # 2021-03-04, 2021/3/4, 2021.03.04, 2021-03-04T10:00
    (re.compile(r"(?<![\d.])(?P<y>(?:1[89]|2\d)\d\d)(?P<s>[-/.])(?P<m>\d{1,2})(?P=s)(?P<d>\d{1,2})(?![\d])"),
     ("y", "m", "d")),
    # 03/04/2021, 3-4-2021, 04.03.2021 (month/day order unknown: either reading makes a date)
    (re.compile(r"(?<![\d.])(?P<m>\d{1,2})(?P<s>[-/.])(?P<d>\d{1,2})(?P=s)(?P<y>(?:1[89]|2\d)\d\d)(?![\d])"),
     ("y", "m", "d")),
    # 3/4/21
    (re.compile(r"(?<![\d./])(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d\d)(?![\d/])"), ("y", "m", "d")),
)
_DATE_WORDS = (
    re.compile(rf"\b{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:1[89]|2\d)\d\d\b", re.I),
    re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTHS}\.?,?\s+(?:1[89]|2\d)\d\d\b", re.I),
)
_AGE_TEXT = (
    re.compile(r"\bage[ds]?\b(?:\s*(?:of|at\s+\w+|=|:|was|is))?\s*(\d{2,3})\b(?!\s*\+)(?!\s*(?:or|and)\s+(?:older|over))", re.I),
    re.compile(r"\b(\d{2,3})[\s-]*(?:years?|yrs?)[\s-]*old\b", re.I),
)
_N_EQUALS = re.compile(r"(?<![\w.])[nN]\s*[=:]\s*(\d+)(?![\d.])")
# "5.3% of 94": the count it implies; "5/45": a count out of a total
_PCT_OF = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%\s*of\s+(\d[\d,]*)(?![\d.])", re.I)
_FRACTION = re.compile(r"(?<![\d./])(\d{1,4})\s*/\s*(\d[\d,]*)(?![\d/.])")
# more date forms: 20210314, 14-Mar-2021, 2021-073 (ordinal), epoch milliseconds / seconds; a digit run
# inside a longer word (a hex signature or hash such as 'b72...a1508410955967a85') is not a date
_COMPACT_DATE = re.compile(r"(?<![\w.])((?:19|20)\d\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?![\w.])")
_DMY_WORD = re.compile(rf"(?<![\w])\d{{1,2}}[-/]{_MONTHS}[-/](?:(?:1[89]|2\d)\d\d|\d\d)\b", re.I)
_ORDINAL_DATE = re.compile(r"(?<![\d.\-])((?:19|20)\d\d)-(\d{3})(?![\d\-])")
_EPOCH_MS = re.compile(r"(?<![\w.])(1\d{12}|2[0-4]\d{11})(?![\w.])")
_EPOCH_S = re.compile(r"(?<![\w.])(1\d{9})(?![\w.])")
_EXCEL_CONTEXT = re.compile(r"(?:date|admit|admission|discharg|dob|birth|dispens|visit|event|serial|on)\W{0,3}\s*"
                            r"(?:[:=]\s*)?(\d{5})(?:\.\d+)?(?![\d])", re.I)
_NOT_COUNT_LABEL = re.compile(r"(day|days|time|year|age|_id$|^id$|week|month|dose|mg|minute|hour|rank|seed|"
                               r"percent|pct|%|median|mean|order|version|step|level|index|lag|duration|^df$|^dof$|^k$|^p$)", re.I)
_DATE_LABEL = re.compile(r"(date|admit|discharge|dob|birth|dispens|visit|_dt$|^dt_|timestamp|time_stamp)", re.I)
_AGE_TEXT_MORE = (
    re.compile(r"\b(\d{2,3})\s*(?:y/?o|yo|yrs?\.?|years?)\b(?!\s*(?:of\s+)?(?:follow|data|study|old\b))", re.I),
    re.compile(r"\b(?:max(?:imum)?|oldest)\s+age\b\s*(?:of|was|is|=|:)?\s*(\d{2,3})\b", re.I),
)
_TOKEN = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?")
_SKIP_TAGS = {"style", "script"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
         "track", "wbr"}
_SNIPPET = 60


@dataclass(frozen=True)
class Violation:
    """One thing a report must not show.

    Attributes
    ----------
    notebook : str
        Notebook (report) name.
    cell : int or None
        0-based position of the ``div.jp-Cell`` holding it; None outside every cell.
    rule : str
        One of :data:`RULES`.
    text : str
        The offending text (the token, date, age or table cell).
    where : str
        Context: ``"table 2, column 'n', row 3"`` or a snippet of the surrounding text.
    cell_starts : str
        First line of the cell's code when the report shows inputs, else ``""``.
    """

    notebook: str
    cell: int | None
    rule: str
    text: str
    where: str
    cell_starts: str = ""

    def describe(self) -> str:
        """One line: ``cell 4: small_cell '7' (table 1, column 'n', row 2)``."""
        cell = "outside cells" if self.cell is None else f"cell {self.cell}"
        if self.cell_starts:
            cell += f" (code starts {self.cell_starts!r})"
        return f"{cell}: {self.rule} {self.text!r} ({self.where})"

    def __str__(self) -> str:
        return f"{self.notebook} {self.describe()}" if self.notebook else self.describe()


# ------------------------------------------------------------------ parsing
@dataclass
class _Text:
    cell: int | None
    text: str
    in_provenance: bool
    in_parameters: bool
    in_pre: bool = False
    in_input: bool = False
    #: a table cell whose row is labelled as a random seed ("seed", "MI seed"): a date-shaped number there is a
    #: seed, as it is after the word "seed" in running text
    seed_row: bool = False


@dataclass
class _Table:
    cell: int | None
    number: int
    rows: list  # list of list of (is_th, colspan, text)
    in_thead: list  # per row: inside <thead>


#: Attributes whose values are colours or CSS, and the hex colours in them and in ``<style>`` blocks: there
#: ``#e57373`` is a colour, not episode ``E0057373`` of a large cohort (a colour-like id in text is still found).
_COLOUR_ATTRS = frozenset({"style", "fill", "stroke", "color", "stop-color", "bgcolor", "flood-color"})
_HEX_COLOUR = re.compile(r"#(?:[0-9a-f]{8}|[0-9a-f]{6}|[0-9a-f]{3,4})(?![0-9a-z])", re.I)


def _mask_colours(text: str) -> str:
    return _HEX_COLOUR.sub(lambda m: " " * len(m.group(0)), text)


class _ReportParser(HTMLParser):
    """Collect text runs and tables, each with the index of its jp-Cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[_Text] = []
        self.tables: list[_Table] = []
        self._stack: list[tuple[str, set]] = []  # (tag, flags)
        self._cell = -1
        self._cell_open = False
        self._skip = 0
        self._prov = 0
        self._params = 0
        self._table_stack: list[_Table] = []
        self._thead = 0
        self._cell_text: list[str] | None = None
        self._cell_meta: tuple[bool, int] | None = None
        self._pre = 0
        self._input = 0
        self._md = 0
        #: cell index -> source text of its input area (empty when inputs are hidden)
        self.inputs: dict[int, str] = {}
        #: text a reader can reach without it being rendered: scripts, styles (Styler tooltips),
        #: attribute values (title, alt, href), comments, SVG inside data URIs
        self.hidden: list[_Text] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        flags = set()
        for name, value in attrs:
            if value and name != "class":
                self._hidden_text(_mask_colours(value) if name in _COLOUR_ATTRS else value)
        if classes & {"jp-RenderedMarkdown", "jp-MarkdownOutput"}:
            self._md += 1
            flags.add("md")
        if tag in _SKIP_TAGS:
            self._skip += 1
            flags.add("skip")
        if "jp-Cell" in classes:
            self._cell += 1
            self._cell_open = True
            flags.add("cell")
            if classes & {"celltag_parameters", "celltag_injected-parameters"}:
                self._params += 1
                flags.add("params")
        if "iop-provenance" in classes:
            self._prov += 1
            flags.add("prov")
        if tag == "pre":
            self._pre += 1
            flags.add("pre")
        if "jp-InputArea" in classes:
            self._input += 1
            flags.add("input")
        if tag == "table":
            t = _Table(self._current_cell(), len(self.tables) + 1, [], [])
            self.tables.append(t)
            self._table_stack.append(t)
        elif tag == "thead":
            self._thead += 1
        elif tag == "tr" and self._table_stack:
            self._table_stack[-1].rows.append([])
            self._table_stack[-1].in_thead.append(self._thead > 0)
        elif tag in ("td", "th") and self._table_stack:
            try:
                span = max(1, int(a.get("colspan") or 1))
            except ValueError:
                span = 1
            self._cell_meta = (tag == "th", span)
            self._cell_text = []
        if tag not in _VOID:
            self._stack.append((tag, flags))

    def handle_startendtag(self, tag, attrs):
        for name, value in attrs:
            if value and name != "class":
                self._hidden_text(_mask_colours(value) if name in _COLOUR_ATTRS else value)
        if tag == "br":
            self.handle_data("\n")

    def handle_comment(self, data):
        self._hidden_text(data)

    def _hidden_text(self, value: str) -> None:
        cell = self._current_cell()
        if value.startswith("data:"):
            head, _, payload = value.partition(",")
            if "svg" not in head:
                return  # raster images cannot be read as text
            try:
                svg = base64.b64decode(payload).decode("utf-8", "replace") if ";base64" in head \
                    else urllib.parse.unquote(payload)
            except ValueError:
                return
            sub = _parse(svg)
            for run in [*sub.texts, *sub.hidden]:
                self.hidden.append(_Text(cell, run.text, self._prov > 0, self._params > 0))
            return
        self.hidden.append(_Text(cell, value, self._prov > 0, self._params > 0))

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        # pop to the matching open tag (browsers' tolerance of unclosed tags)
        for pos in range(len(self._stack) - 1, -1, -1):
            if self._stack[pos][0] == tag:
                break
        else:
            return
        while len(self._stack) > pos:
            t, flags = self._stack.pop()
            self._close(t, flags)

    def _close(self, tag, flags):
        if "skip" in flags:
            self._skip -= 1
        if "cell" in flags:
            self._cell_open = False
        if "params" in flags:
            self._params -= 1
        if "prov" in flags:
            self._prov -= 1
        if "pre" in flags:
            self._pre -= 1
        if "input" in flags:
            self._input -= 1
        if "md" in flags:
            self._md -= 1
        if tag in ("td", "th") and self._table_stack and self._cell_text is not None:
            is_th, span = self._cell_meta
            t = self._table_stack[-1]
            if not t.rows:
                t.rows.append([])
                t.in_thead.append(self._thead > 0)
            t.rows[-1].append((is_th, span, " ".join("".join(self._cell_text).split())))
            self._cell_text = None
        elif tag == "thead":
            self._thead = max(0, self._thead - 1)
        elif tag == "table" and self._table_stack:
            self._table_stack.pop()

    def _current_cell(self):
        return self._cell if self._cell_open else None

    def handle_data(self, data):
        if not data:
            return
        if self._skip:
            self._hidden_text(_mask_colours(data) if self._stack and self._stack[-1][0] == "style" else data)
            return
        if self._cell_text is not None:
            self._cell_text.append(data)
        cell = self._current_cell()
        in_input = self._input > 0 and self._md == 0
        if in_input and cell is not None:
            self.inputs[cell] = self.inputs.get(cell, "") + data
        seed_row = bool(self._cell_text is not None and self._table_stack and self._table_stack[-1].rows
                        and any(_SEED_LABEL.search(txt) for _, _, txt in self._table_stack[-1].rows[-1]))
        self.texts.append(_Text(cell, data, self._prov > 0, self._params > 0, self._pre > 0, in_input, seed_row))


def _parse(html: str) -> _ReportParser:
    p = _ReportParser()
    p.feed(html)
    p.close()
    return p


# ------------------------------------------------------------------ rules
def _norm_label(text: str) -> str:
    return re.sub(r"[\s.]+", "_", text.strip().lower()).strip("_")


def _is_count_label(text: str) -> bool:
    lab = _norm_label(text)
    return bool(lab) and (lab in COUNT_LABELS or bool(_COUNT_PATTERN.match(lab)))


def _is_age_label(text: str) -> bool:
    lab = text.strip().lower()
    return bool(lab) and bool(_AGE_LABEL.match(lab)) and "group" not in lab and "band" not in lab


def normalize_identifier(value: Any) -> str:
    """Canonical form of an identifier for matching: Unicode NFKC, case-folded, whitespace removed,
    zero padding of digit runs removed (``" P:000001 "`` and ``"p:1"`` match).

    Examples
    --------
    >>> normalize_identifier("PT:000001  "), normalize_identifier("\uff30\uff14\uff12")
    ('pt:1', 'p42')
    """
    s = "".join(unicodedata.normalize("NFKC", str(value)).casefold().split())
    return re.sub(r"\d+", lambda m: str(int(m.group(0))), s)


_ID_SPLIT = re.compile(r"[\s<>\"'`(),;\[\]{}|*]+")
_ID_PARTS = re.compile(r"[-./:=#]+")


def _identifier_hits(text: str, ids: frozenset[str]) -> list[tuple[str, int, int]]:
    """Tokens of ``text`` whose canonical form (or a part's) is a canonical identifier."""
    found = []
    norm_text = unicodedata.normalize("NFKC", text)
    pos = 0
    for tok in _ID_SPLIT.split(norm_text):
        start = norm_text.find(tok, pos) if tok else pos
        pos = start + len(tok)
        if not tok:
            continue
        cands = [tok, tok.rstrip(".,:;!?"), *_ID_PARTS.split(tok)]
        for c in sorted(set(cands), key=len, reverse=True):
            if c and normalize_identifier(c) in ids:
                found.append((c, start, start + len(tok)))
                break
    return found


def _snippet(text: str, start: int, end: int) -> str:
    lo, hi = max(0, start - _SNIPPET // 2), min(len(text), end + _SNIPPET // 2)
    return " ".join(text[lo:hi].split())


def _valid_date(y: str, m: str, d: str) -> bool:
    mi, di = int(m), int(d)
    if 1 <= mi <= 12 and 1 <= di <= 31:
        return True
    return 1 <= di <= 12 and 1 <= mi <= 31  # day/month order


#: Namespace and licence URLs of SVG/XML metadata (``http://www.w3.org/1999/02/22-rdf-syntax-ns#``): their
#: path segments look like dates but are fixed strings of the standards.
_STANDARD_URL = re.compile(r"https?://(?:www\.)?(?:w3\.org|purl\.org|creativecommons\.org|ns\.adobe\.com|"
                           r"schemas\.openxmlformats\.org|schemas\.microsoft\.com)/[^\s\"'<>)]*", re.I)


_SEED_LABEL = re.compile(r"\bseed\b", re.I)


def _find_dates(text: str, *, seed_row: bool = False) -> list[tuple[str, int, int]]:
    text = _STANDARD_URL.sub(lambda m: " " * len(m.group(0)), text)
    found = []
    for m in _COMPACT_DATE.finditer(text):  # 20210314 (not a random seed that happens to look like one)
        if seed_row and m.group(0) == text.strip():
            continue  # the value cell of a row labelled "seed"
        if not re.search(r"seed\W{0,3}$", text[max(0, m.start() - 8):m.start()], re.I):
            found.append((m.group(0), m.start(), m.end()))
    for m in _DMY_WORD.finditer(text):  # 14-Mar-2021
        found.append((m.group(0), m.start(), m.end()))
    for m in _ORDINAL_DATE.finditer(text):  # 2021-073
        if 1 <= int(m.group(2)) <= 366:
            found.append((m.group(0), m.start(), m.end()))
    for m in _EPOCH_MS.finditer(text):  # epoch milliseconds, 2000-2040
        if 946_684_800_000 <= int(m.group(1)) <= 2_208_988_800_000:
            found.append((m.group(0), m.start(), m.end()))
    for m in _EXCEL_CONTEXT.finditer(text):  # Excel serial after a date word, 1990-2039
        if 32_874 <= int(m.group(1)) <= 51_501:
            found.append((m.group(1), m.start(1), m.end(1)))
    for pattern, _ in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if _valid_date(m.group("y"), m.group("m"), m.group("d")):
                found.append((m.group(0), m.start(), m.end()))
    for pattern in _DATE_WORDS:
        for m in pattern.finditer(text):
            found.append((m.group(0), m.start(), m.end()))
    return found


def _age_value_over(text: str, limit: int = 89) -> str | None:
    """A number > limit shown as an age in a table cell (not a 90+ bucket), else None."""
    s = text.strip()
    if not s or _AGE_BUCKET_OK.match(s):
        return None
    for m in re.finditer(r"(?<![\d.])(\d{2,3})(?:\.\d+)?(?!\s*%)(?!\s*\+)(?![\d.])", s):
        v = int(m.group(1))
        if limit < v < 130:
            return m.group(0)
    return None


def _grid(table: _Table) -> tuple[list[str], list[list[tuple[bool, str]]]]:
    """Column labels (header rows joined by position) and body rows, colspans expanded."""
    header_rows, body = [], []
    for row, head in zip(table.rows, table.in_thead):
        cells = []
        for is_th, span, text in row:
            cells.extend([(is_th, text)] * span)
        (header_rows if head else body).append(cells)
    if not header_rows and body and all(is_th for is_th, _ in body[0]):
        header_rows, body = [body[0]], body[1:]
    width = max([len(r) for r in header_rows + body] or [0])
    labels = []
    for j in range(width):
        parts = [r[j][1] for r in header_rows if j < len(r) and r[j][1]]
        labels.append(" ".join(parts))
    return labels, body


def _small(text: str, k: int) -> bool:
    m = _LEAD_INT.match(text)
    return bool(m) and 1 <= int(m.group(1)) < k


def _check_cells(cells: list[str], row_labels: list[str], col_label: str, k: int) -> list[int]:
    """Positions of small counts, decided by privacy.check_no_small_cells."""
    from iop_research.privacy.suppression import check_no_small_cells  # local import: privacy imports pandas machinery

    frame = pd.DataFrame({"cell": pd.Series(cells, dtype=object)})
    try:
        check_no_small_cells(frame, min_cell_count=k, count_cols=["cell"], name=col_label)
    except PrivacyViolationError:
        return [i for i, c in enumerate(cells) if _small(c, k)]
    return []


def _table_violations(notebook: str, t: _Table, k: int) -> list[Violation]:
    out: list[Violation] = []
    labels, body = _grid(t)
    width = max([len(labels)] + [len(r) for r in body] or [0])
    labels = labels + [""] * (width - len(labels))

    def row_label(r):
        return " ".join(text for is_th, text in r if is_th) or (r[0][1] if r else "")

    def add(rule, text, i, j):
        where = f"table {t.number}, column {labels[j]!r}, row {i}"
        out.append(Violation(notebook, t.cell, rule, text, where))

    flagged: set[tuple[int, int]] = set()
    # count-like columns
    for j, lab in enumerate(labels):
        if not _is_count_label(lab):
            continue
        idx = [i for i, r in enumerate(body) if j < len(r) and not r[j][0]]
        bad = _check_cells([body[i][j][1] for i in idx], [str(i) for i in idx], lab, k)
        for pos in bad:
            i = idx[pos]
            flagged.add((i, j))
            add("small_cell", body[i][j][1], i, j)
    # count-like rows (Table 1's "n" and "missing") and "count (percent)" cells anywhere
    for i, r in enumerate(body):
        count_row = any(_is_count_label(text) for _, text in r[:2])
        for j, (is_th, text) in enumerate(r):
            if (i, j) in flagged or is_th:
                continue
            if (count_row and _LEAD_INT.match(text) and text.strip() != r[0][1].strip()) or _COUNT_PCT.match(text):
                if _check_cells([text], [str(i)], labels[j] if j < len(labels) else "", k):
                    flagged.add((i, j))
                    add("small_cell", text, i, j)
    # a crosstab with margins ("All" row or column): every whole number is a count
    if any(lab.strip() == "All" for lab in labels) or any(row_label(r).strip() == "All" for r in body):
        for i, r in enumerate(body):
            for j, (is_th, text) in enumerate(r):
                if (i, j) in flagged or is_th:
                    continue
                if re.fullmatch(r"\s*\d+\s*", text) and _check_cells([text], [str(i)], "crosstab", k):
                    flagged.add((i, j))
                    add("small_cell", text, i, j)
    # dates stored as numbers in date columns (Excel serials, epoch milliseconds, yyyymmdd)
    for j, lab in enumerate(labels):
        if _DATE_LABEL.search(lab or ""):
            for i, r in enumerate(body):
                if j < len(r) and not r[j][0]:
                    tok = r[j][1].strip()
                    if re.fullmatch(r"\d{5}(?:\.\d+)?|\d{8}|\d{13}", tok):
                        v = float(tok)
                        if 32_874 <= v <= 51_501 or _COMPACT_DATE.fullmatch(tok) or 946_684_800_000 <= v <= 2_208_988_800_000:
                            add("full_date", tok, i, j)
    # ages over 89: age columns, age rows
    for j, lab in enumerate(labels):
        if _is_age_label(lab):
            for i, r in enumerate(body):
                if j < len(r) and not r[j][0]:
                    v = _age_value_over(r[j][1])
                    if v is not None:
                        add("age_over_89", r[j][1], i, j)
    for i, r in enumerate(body):
        lab = row_label(r)
        if _is_age_label(lab):
            for j, (is_th, text) in enumerate(r):
                if not is_th and text != lab and not _is_age_label(text) and _age_value_over(text) is not None:
                    add("age_over_89", text, i, j)
    return out


def _printed_table_violations(notebook: str, cell: int | None, text: str, k: int) -> list[Violation]:
    """Small counts in tables printed as text (``print(df)``, ``df.to_string()``: right-aligned columns).

    A line holding a count-like label starts a table; on the following lines up to a blank line, the
    token that ends where the label ends is that column's value.
    """
    out = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        words = list(re.finditer(r"\S+", lines[i]))
        heads = [(m.group(0), m.end()) for m in words if _is_count_label(m.group(0))]
        ages = [(m.group(0), m.end()) for m in words if _is_age_label(m.group(0))]
        dates = [(m.group(0), m.end()) for m in words if _DATE_LABEL.search(m.group(0))]
        margins = any(m.group(0) == "All" for m in words)
        if not (heads or ages or dates or margins):
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip():
            toks = list(re.finditer(r"\S+", lines[j]))
            ends = {m.end(): m.group(0) for m in toks}
            for label, end in heads:
                tok = ends.get(end)
                if tok is not None and _small(tok, k) and _check_cells([tok], [str(j)], label, k):
                    where = f"printed table, column {label!r}, line {j - i}"
                    out.append(Violation(notebook, cell, "small_cell", tok, where))
            for label, end in ages:
                tok = ends.get(end)
                if tok is not None and _age_value_over(tok) is not None:
                    out.append(Violation(notebook, cell, "age_over_89", tok,
                                         f"printed table, column {label!r}, line {j - i}"))
            for label, end in dates:
                tok = ends.get(end)
                if tok is not None and re.fullmatch(r"\d{5}(?:\.\d+)?|\d{8}|\d{13}", tok):
                    v = float(tok)
                    if 32_874 <= v <= 51_501 or _COMPACT_DATE.fullmatch(tok) or 946_684_800_000 <= v <= 2_208_988_800_000:
                        out.append(Violation(notebook, cell, "full_date", tok,
                                             f"printed table, column {label!r}, line {j - i}"))
            if margins:  # a crosstab with margins: every whole number is a count
                for m in toks[1:]:
                    if re.fullmatch(r"\d+", m.group(0)) and _small(m.group(0), k):
                        out.append(Violation(notebook, cell, "small_cell", m.group(0),
                                             f"printed crosstab, line {j - i}"))
            j += 1
        i = j
    # printed DataFrames: a column whose values are all whole numbers is a count column unless its
    # header says otherwise (days, years, ages, ids, doses, ...)
    i = 0
    while i < len(lines):
        words = list(re.finditer(r"\S+", lines[i]))
        if not words or i + 1 >= len(lines) or not lines[i + 1].strip():
            i += 1
            continue
        j = i + 1
        body = []
        while j < len(lines) and lines[j].strip():
            body.append(lines[j])
            j += 1
        if len(body) >= 1 and len(words) >= 1:
            for w in words:
                label, end = w.group(0), w.end()
                if _is_count_label(label) or _NOT_COUNT_LABEL.search(label) or _is_age_label(label):
                    continue
                toks = []
                for ln in body:
                    ends = {m.end(): m.group(0) for m in re.finditer(r"\S+", ln)}
                    toks.append(ends.get(end))
                vals = [t for t in toks if t is not None]
                if len(vals) >= 2 and all(re.fullmatch(r"\d+", t) for t in vals):
                    for n_line, t in enumerate(toks):
                        if t is not None and _small(t, k):
                            out.append(Violation(notebook, cell, "small_cell", t,
                                                 f"printed table, whole-number column {label!r}, line {n_line + 1}"))
        i = j
    # printed Series of whole numbers ("label  7" lines, e.g. value_counts().to_string())
    block: list[tuple[int, re.Match]] = []
    for n_line, line in enumerate([*lines, ""]):
        m = re.match(r"^(?P<label>\S.*?[^\d\s.])\s{2,}(?P<n>\d+)\s*$", line)
        if m and not _NOT_COUNT_LABEL.search(m.group("label")):
            block.append((n_line, m))
            continue
        if len(block) >= 2 and not re.match(r"^(?:Name: |dtype: )", line.strip()):
            for _, bm in block:
                if _small(bm.group("n"), k):
                    out.append(Violation(notebook, cell, "small_cell", bm.group("n"),
                                         f"printed counts, row {bm.group('label').strip()!r}"))
        block = []
    # printed Series of counts (value_counts(), groupby().size()): "label  7" lines over a footer
    for f, line in enumerate(lines):
        foot = re.match(r"^(?:Name: (?P<name>[^,]*),\s*)?(?:Length: \d+,\s*)?dtype: (?P<dtype>u?int\d*|Int\d+)\s*$",
                        line.strip())
        if not foot or (foot.group("name") and not _is_count_label(foot.group("name"))
                        and foot.group("name") not in ("size",)):
            continue
        b = f - 1
        while b >= 0 and lines[b].strip():
            m = re.match(r"^(?P<label>.*\S)\s+(?P<n>\d+)\s*$", lines[b])
            if m and _small(m.group("n"), k):
                out.append(Violation(notebook, cell, "small_cell", m.group("n"),
                                     f"printed counts ({(foot.group('name') or 'Series')}), row {m.group('label').strip()!r}"))
            b -= 1
    return out


def scan_report_html(
    html: str,
    *,
    notebook: str,
    identifiers: Iterable[Any] = (),
    min_cell_count: int = 11,
    min_cell_count_override: str | None = None,
) -> list[Violation]:
    """Every disclosure in an exported report, by rule (see module Rules).

    Parameters
    ----------
    html : str
        The report (nbconvert HTML, lab template, or any HTML).
    notebook : str
        Name used in the violations (e.g. ``"02_survival.ipynb"``).
    identifiers : iterable of str, default ()
        Identifier values that must not appear as whole tokens (see
        :func:`identifier_values`). Missing values are ignored.
    min_cell_count : int, default 11
        Smallest count a table may show (CMS policy [2]_: 1-10 hidden).
        Below 5 only with ``min_cell_count_override``.
    min_cell_count_override : str, optional
        The reason for a threshold below 5 (as for the publishing channel).

    Returns
    -------
    list of Violation
        In document order within each rule; rules in :data:`RULES` order.
        Empty for a clean report.

    Raises
    ------
    PrivacyViolationError
        Never for findings (they are returned); only when ``min_cell_count`` is
        not an integer >= 1.

    References
    ----------
    .. [1] HHS (2012), HIPAA Safe Harbor de-identification guidance, section 2.2.
    .. [2] CMS Cell Size Suppression Policy (2020).

    Examples
    --------
    >>> html = ("<div class='jp-Cell'><p>Patient P0007 relapsed on 2021-03-04.</p></div>"
    ...         "<div class='jp-Cell'><table><thead><tr><th>group</th><th>n</th></tr></thead>"
    ...         "<tbody><tr><td>MAT</td><td>7</td></tr><tr><td>none</td><td>40</td></tr></tbody></table></div>")
    >>> for v in scan_report_html(html, notebook="nb", identifiers=["P0007"]):
    ...     print(v.describe())
    cell 0: identifier 'P0007' (Patient P0007 relapsed on 2021-03-04.)
    cell 0: full_date '2021-03-04' (Patient P0007 relapsed on 2021-03-04.)
    cell 1: small_cell '7' (table 1, column 'n', row 0)
    """
    _check_threshold(min_cell_count, min_cell_count_override)
    ids = frozenset(normalize_identifier(v) for v in identifiers
                    if v is not None and not (isinstance(v, float) and v != v) and str(v).strip())
    parsed = _parse(html)
    found: dict[str, list[Violation]] = {r: [] for r in RULES}
    k = min_cell_count

    def text_rules(run, text, visible: bool):
        if ids:
            for hit, a, b in _identifier_hits(text, ids):
                found["identifier"].append(Violation(notebook, run.cell, "identifier", hit, _snippet(text, a, b)))
        if not (run.in_provenance or run.in_parameters):
            for date, a, b in _find_dates(text, seed_row=run.seed_row):
                found["full_date"].append(Violation(notebook, run.cell, "full_date", date, _snippet(text, a, b)))
        if visible and not run.in_input:
            for m in _N_EQUALS.finditer(text):
                if _check_cells([m.group(1)], ["0"], "n", k):
                    found["small_cell"].append(
                        Violation(notebook, run.cell, "small_cell", m.group(0), _snippet(text, m.start(), m.end())))
            for m in _PCT_OF.finditer(text):
                pct, total = float(m.group(1)), int(m.group(2).replace(",", ""))
                implied = pct * total / 100.0
                if pct > 0 and implied < k - 0.5 and total > 0:
                    found["small_cell"].append(
                        Violation(notebook, run.cell, "small_cell", m.group(0), _snippet(text, m.start(), m.end())))
            for m in _FRACTION.finditer(text):
                num, den = int(m.group(1)), int(m.group(2).replace(",", ""))
                if 1 <= num < k and den > num:
                    found["small_cell"].append(
                        Violation(notebook, run.cell, "small_cell", m.group(0), _snippet(text, m.start(), m.end())))
            if run.in_pre:
                for v in _printed_table_violations(notebook, run.cell, text, k):
                    found[v.rule].append(v)
        age_spans: list[tuple[int, int]] = []
        for pattern in (*_AGE_TEXT, *_AGE_TEXT_MORE):
            for m in pattern.finditer(text):
                if any(a < m.end() and m.start() < b for a, b in age_spans):
                    continue  # one finding per place
                if 89 < int(m.group(1)) < 130:
                    age_spans.append((m.start(), m.end()))
                    found["age_over_89"].append(
                        Violation(notebook, run.cell, "age_over_89", m.group(0), _snippet(text, m.start(), m.end())))

    for run in parsed.texts:
        text_rules(run, run.text, True)
    for run in parsed.hidden:
        text_rules(run, run.text, False)
    for t in parsed.tables:
        for v in _table_violations(notebook, t, k):
            found[v.rule].append(v)
    for r in RULES:  # one finding per (cell, text, place)
        seen, uniq = set(), []
        for v in found[r]:
            if (v.cell, v.text, v.where) not in seen:
                seen.add((v.cell, v.text, v.where))
                uniq.append(v)
        found[r] = uniq
    starts = {c: next((ln.strip() for ln in src.splitlines() if ln.strip()), "")[:60]
              for c, src in parsed.inputs.items()}
    return [v if v.cell not in starts or not starts[v.cell] else
            Violation(v.notebook, v.cell, v.rule, v.text, v.where, starts[v.cell])
            for r in RULES for v in found[r]]


def identifier_values(data_or_identifier_values: Any) -> frozenset[str]:
    """The identifier values a report must not show.

    Parameters
    ----------
    data_or_identifier_values : IOPData, mapping of DataFrames, DataFrame or iterable
        An :class:`~iop_research.data.io.IOPData` or a mapping of tables: every value
        of the ``patient_id`` and ``episode_id`` columns of every table. A
        DataFrame: those columns of it. Otherwise an iterable of values.

    Returns
    -------
    frozenset of str
        Missing values dropped.
    """
    obj = data_or_identifier_values
    if hasattr(obj, "tables") and callable(obj.tables):
        frames = list(obj.tables().values())
    elif isinstance(obj, pd.DataFrame):
        frames = [obj]
    elif isinstance(obj, dict) and all(isinstance(v, pd.DataFrame) for v in obj.values()):
        frames = list(obj.values())
    else:
        if isinstance(obj, (str, bytes)):
            raise PrivacyViolationError(
                "make_privacy_gate: pass the data (IOPData) or an iterable of identifier values, "
                f"not the single string {obj[:20]!r}; wrap it in a list."
            )
        return frozenset(str(v) for v in obj if v is not None and not (isinstance(v, float) and v != v))
    vals: set[str] = set()
    for df in frames:
        for col in (Col.patient_id, Col.episode_id):
            if isinstance(df, pd.DataFrame) and col in df.columns:
                vals.update(str(v) for v in df[col].dropna().unique().tolist())
    return frozenset(vals)


def make_privacy_gate(data_or_identifier_values: Any, *, min_cell_count: int = 11,
                      ignore_numeric_ids: bool = False,
                      min_cell_count_override: str | None = None) -> Callable[[str, str], None]:
    """The gate for :func:`iop_research.reports.build.build_reports` (``gate=``).

    Parameters
    ----------
    data_or_identifier_values : IOPData, mapping of DataFrames, DataFrame or iterable of str
        The input data (its ``patient_id`` / ``episode_id`` values are
        collected once, see :func:`identifier_values`) or the identifier
        values themselves.
    min_cell_count : int, default 11
        Smallest count a table may show.
    min_cell_count_override : str, optional
        The reason for a threshold below 5; without it such thresholds are
        refused (``min_cell_count = 1`` would switch the rule off).
    ignore_numeric_ids : bool, default False
        Identifiers that are plain numbers (``"17"``) cannot be told apart from
        counts and days in a report, so by default they are refused. True
        drops them from the identifier rule (e.g. for the public UIS/HELP
        files, whose ids are row numbers); better, de-identify first
        (:func:`iop_research.privacy.deidentify`).

    Returns
    -------
    callable(notebook_name, html) -> None
        Returns None for a clean report; raises otherwise.

    Raises
    ------
    ModelSpecificationError
        When some identifiers are plain numbers and ``ignore_numeric_ids`` is False.
    PrivacyViolationError
        From the returned callable: names the notebook, the number of
        violations and, per violation, the cell, the rule and the offending
        text, with how to fix each rule. ``build_reports`` then writes nothing.

    See Also
    --------
    scan_report_html : the findings as a list.

    References
    ----------
    .. [1] HHS (2012), HIPAA Safe Harbor de-identification guidance.
    .. [2] CMS Cell Size Suppression Policy (2020).

    Examples
    --------
    >>> gate = make_privacy_gate(["P0007"])
    >>> gate("01_cohort.ipynb", "<div class='jp-Cell'><p>median stay 41 days</p></div>")
    >>> gate("01_cohort.ipynb", "<div class='jp-Cell'><p>aged 93 at intake</p></div>")
    Traceback (most recent call last):
    ...
    iop_research.exceptions.PrivacyViolationError: Report 01_cohort.ipynb would disclose 1 item(s); nothing was written:
    - cell 0: age_over_89 'aged 93' (aged 93 at intake)
    Fix: bucket ages above 89 into '90+' (HIPAA Safe Harbor).
    """
    ids = identifier_values(data_or_identifier_values)
    numeric = sorted((v for v in ids if normalize_identifier(v).isdigit()), key=lambda v: (len(v), v))
    if numeric and not ignore_numeric_ids:
        raise ModelSpecificationError(
            f"make_privacy_gate: {len(numeric)} identifier value(s) are plain numbers ({format_ids(numeric)}), "
            "which cannot be told apart from counts and days in a report. De-identify the data first "
            "(privacy.deidentify gives hashed ids), or pass ignore_numeric_ids=True to leave them out of "
            "the identifier rule."
        )
    if numeric:
        ids = frozenset(v for v in ids if not normalize_identifier(v).isdigit())
    _check_threshold(min_cell_count, min_cell_count_override)

    def gate(notebook_name: str, html: str) -> None:
        found = scan_report_html(html, notebook=notebook_name, identifiers=ids, min_cell_count=min_cell_count,
                                 min_cell_count_override=min_cell_count_override)
        if not found:
            return None
        shown = found[:20]
        lines = "\n".join(f"- {v.describe()}" for v in shown)
        more = f"\n- ... and {len(found) - len(shown)} more" if len(found) > len(shown) else ""
        fixes = [_FIXES[r] for r in RULES if any(v.rule == r for v in found)]
        raise PrivacyViolationError(
            f"Report {notebook_name} would disclose {len(found)} item(s); nothing was written:\n"
            f"{lines}{more}\nFix: {' '.join(fixes)}"
        )

    gate.identifiers = ids  # type: ignore[attr-defined]
    gate.min_cell_count = min_cell_count  # type: ignore[attr-defined]
    return gate


def _check_threshold(min_cell_count, override) -> None:
    if isinstance(min_cell_count, bool) or not isinstance(min_cell_count, int) or min_cell_count < 1:
        raise PrivacyViolationError(
            f"min_cell_count must be an integer >= 1, got {min_cell_count!r}. Use 11 (CMS policy)."
        )
    if min_cell_count < MIN_ALLOWED_CELL_COUNT and not (isinstance(override, str) and override.strip()):
        raise PrivacyViolationError(
            f"min_cell_count = {min_cell_count} would let counts as small as {min_cell_count} through the gate "
            f"(1 switches it off). Thresholds below {MIN_ALLOWED_CELL_COUNT} need min_cell_count_override = "
            f"\"<the reason, e.g. the clause of your data use agreement>\"."
        )


def check_channel_only(nb, *, notebook: str = "", key: bytes | None = None) -> list[Violation]:
    """Study-report mode: every output of every code cell must come from the publishing channel.

    An allow-list: a display is accepted only when it is exactly one signed
    ``div.iop-published`` (see :class:`iop_research.present.publish.Publisher`)
    with its plain-text alternative; any stream (``print``), error, image,
    DataFrame repr or unsigned HTML is a violation, named by notebook and cell.

    Parameters
    ----------
    nb : nbformat.NotebookNode or dict
        The executed notebook.
    notebook : str, default ""
        Name used in the violations.
    key : bytes, optional
        The signing key; default from the environment variable
        :data:`iop_research.present.publish.PUBLISH_KEY_ENV` (which the build
        sets before running the notebooks).

    Returns
    -------
    list of Violation
        Rule :data:`CHANNEL_RULE`; ``cell`` is the 0-based index in ``nb.cells``
        and ``cell_starts`` the first line of its code.

    Examples
    --------
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook()
    >>> c = nbformat.v4.new_code_cell("print(n)")
    >>> c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="n = 7\\n")]
    >>> nb.cells = [c]
    >>> print(check_channel_only(nb, notebook="03_relapse")[0])
    03_relapse cell 0 (code starts 'print(n)'): not_channel 'n = 7' (stdout stream, not published through the channel)
    """
    from iop_research.present.publish import parse_published

    out: list[Violation] = []
    cells = nb.get("cells", []) if isinstance(nb, dict) else nb.cells
    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        starts = next((ln.strip() for ln in src.splitlines() if ln.strip()), "")[:60]
        for o in cell.get("outputs", []):
            ot = o.get("output_type")
            if ot == "stream":
                text = o.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                if text.strip():
                    out.append(Violation(notebook, i, CHANNEL_RULE, " ".join(text.split())[:_SNIPPET],
                                         f"{o.get('name', 'stream')} stream, not published through the channel",
                                         starts))
            elif ot == "error":
                out.append(Violation(notebook, i, CHANNEL_RULE, str(o.get("ename", "error")),
                                     "error output (tracebacks can show data)", starts))
            elif ot in ("display_data", "execute_result", "update_display_data"):
                data = o.get("data", {})

                def text_of(v):
                    return "".join(v) if isinstance(v, list) else (v if isinstance(v, str) else "")

                html = data.get("text/html")
                plain = text_of(data.get("text/plain", ""))
                extra = sorted(set(data) - {"text/html", "text/plain"})
                ok = html is not None and not extra and parse_published(text_of(html), plain, key=key) is not None
                if not ok:
                    kinds = ", ".join(sorted(data)) or "no data"
                    out.append(Violation(notebook, i, CHANNEL_RULE, (plain or text_of(html))[:_SNIPPET],
                                         f"display ({kinds}) not from the publishing channel", starts))
            else:
                out.append(Violation(notebook, i, CHANNEL_RULE, str(ot), "unknown output type", starts))
    return out


_FIXES = {
    "identifier": "remove patient/episode ids from outputs (print counts, not rows; or de-identify first).",
    "full_date": "show years or days from admission instead of calendar dates.",
    "age_over_89": "bucket ages above 89 into '90+' (HIPAA Safe Harbor).",
    "small_cell": "suppress counts below min_cell_count with privacy.suppress_small_cells(...) before display.",
}
