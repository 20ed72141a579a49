"""From a clinic's extract to the data contract: a declarative mapping file (TOML).

A clinic's extract has its own file names, column names, codes (``"IOP-Grp"``), flags
(``Y``/``N``) and date formats (``03/15/2023``). A mapping file states, for each contract
table (:data:`iop_research.data.schema.TABLES`), where its rows come from and how each
contract column is obtained; :func:`map_extract` applies it and returns the validated
:class:`~iop_research.data.io.IOPData` plus a :class:`MappingReport` that lists every
source value that was not mapped (with counts) and every row dropped (with its reason).
``iop-research map mapping.toml OUT`` does the same from the command line.

Mapping file
------------
::

    [mapping]
    base_dir = "."                             # source paths are relative to this (default: the file's folder)
    date_formats = ["%m/%d/%Y"]                # tried in order for every date column, then YYYY-MM-DD
    extract_date = "06/30/2024"                # the extract's cut-off (parsed with date_formats)
    unmapped = "keep"                          # value not in a value map: keep | missing | drop (the row)
    true_values = ["Y", "Yes", "1", "true"]    # booleans (these are the defaults, any letter case)
    false_values = ["N", "No", "0", "false"]

    [constants]                                # any table with this contract column, unless mapped
    observation_end = "extract_date"           # the keyword extract_date stands for [mapping] extract_date

    [tables.patients]
    source = "demographics.csv"                # .csv, .csv.gz, .parquet, .xlsx (needs openpyxl)
    columns = { patient_id = "MRN", birth_year = "BirthYr", sex = "Gender" }
    values.sex = { M = "male", F = "female", U = "unknown" }

    [tables.sessions]
    source = "visits.csv"
    columns = { patient_id = "MRN", session_date = "VisitDate", modality = "ServiceCode",
                minutes = "Minutes", attended = "ApptStatus", episode_id = "EncounterID" }
    values.modality = { "IOP-Grp" = "group", "IOP-Ind" = "individual" }
    values.attended = { Kept = true, "No-show" = false }
    drop_rows = { attended = ["Cancelled by clinic"] }   # source values; rows removed and reported

    [tables.observation]
    derive = "patients"                        # one row per patient of the mapped patients table
    constants = { observation_end = "extract_date" }

Per table, a contract column comes from (in this order): ``columns`` (contract name =
source column), the table's ``constants``, the global ``[constants]``, a source column of
the contract's name, or, for a nullable column, nothing (left empty; reported). Source
columns that are not used are not carried over (they may hold identifiers) and are listed
in the report. A table without an entry is empty (allowed for admissions, medications and
events only); the optional ``use_days`` table (Timeline Followback) is mapped only when the file has a
``[tables.use_days]`` section (``IOPData.use_days`` is None otherwise). Per table, ``date_formats``, ``unmapped``, ``delimiter``, ``encoding`` and
``sheet`` (xlsx) override the defaults.

Values
------
Text is stripped of surrounding blanks; an empty cell is missing. A value map applies to
the (stripped) source text; a value not in the map is kept when it is already a valid
contract value, and otherwise handled as ``unmapped`` says, and listed in the report.
Dates must parse with one of the formats (a time of day is dropped); numbers must parse;
values that do not are listed in the report and stop the mapping with a
:class:`MappingError` (they would otherwise be lost), before any contract check runs.

References
----------
.. [1] The data contract, ``data/README.md``; TOML v1.0.0, https://toml.io
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iop_research.data.io import IOPData
from iop_research.data.schema import (
    OPTIONAL_TABLES,
    REQUIRED_TABLES,
    TABLE_COLUMNS,
    TABLES,
    VOCABULARIES,
    coerce_tables,
    empty_table,
    find_problems,
)
from iop_research.exceptions import DataReadError, IopError, UnknownNameError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "MappingError",
    "MappingSourceError",
    "MappingReport",
    "map_extract",
    "read_mapping",
    "mapping_template",
    "UNMAPPED_COLUMNS",
    "DROPPED_COLUMNS",
    "ORIGIN_COLUMNS",
]

#: Columns of :attr:`MappingReport.unmapped`.
UNMAPPED_COLUMNS = ("table", "column", "source_column", "value", "n_rows", "action")
#: Columns of :attr:`MappingReport.dropped`.
DROPPED_COLUMNS = ("table", "reason", "n_rows", "source_lines")
#: Columns of :attr:`MappingReport.origins`.
ORIGIN_COLUMNS = ("table", "column", "origin")

_TRUE = ("y", "yes", "1", "true", "t")
_FALSE = ("n", "no", "0", "false", "f")
_UNMAPPED_ACTIONS = ("keep", "missing", "drop")
_MAPPING_KEYS = {"base_dir", "date_formats", "extract_date", "unmapped", "true_values", "false_values"}
_TABLE_KEYS = {"source", "derive", "columns", "values", "constants", "drop_rows", "date_formats", "unmapped",
               "delimiter", "encoding", "sheet"}
_EXTRACT_DATE = "extract_date"


class MappingError(IopError, ValueError):
    """A mapping file is invalid, or the extract cannot be mapped as it says.

    Attributes
    ----------
    report : MappingReport or None
        What was mapped before the error (unparsed values, unmapped values, dropped rows,
        contract problems), when the error arose while mapping.
    """

    def __init__(self, message: str, report: MappingReport | None = None):
        super().__init__(message)
        self.report = report


class MappingSourceError(MappingError, DataReadError):
    """The mapping file or a source file of the extract is missing or cannot be read."""


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "n_rows" else object) for c in columns})


@dataclass(frozen=True)
class MappingReport:
    """What :func:`map_extract` did with each table, column, value and row.

    Attributes
    ----------
    mapping_path : str
    sources : pandas.DataFrame
        ``table, source, rows_read, rows_written``.
    origins : pandas.DataFrame
        ``table, column, origin``: where each contract column came from.
    unmapped : pandas.DataFrame
        :data:`UNMAPPED_COLUMNS`: every source value that was not mapped, with its row
        count and what was done (``kept``, ``set missing``, ``rows dropped``,
        ``unparsed``).
    dropped : pandas.DataFrame
        :data:`DROPPED_COLUMNS`: rows removed, by reason, with their source line numbers
        (header = line 1).
    unused_columns : pandas.DataFrame
        ``table, source_column``: source columns not carried into the contract.
    problems : pandas.DataFrame
        Data-contract problems of the mapped tables
        (:func:`iop_research.data.schema.find_problems`); empty when valid.
    """

    mapping_path: str
    sources: pd.DataFrame
    origins: pd.DataFrame
    unmapped: pd.DataFrame
    dropped: pd.DataFrame
    unused_columns: pd.DataFrame
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame())

    @property
    def is_valid(self) -> bool:
        """No unparsed value and no contract problem."""
        return not self.unmapped["action"].str.startswith("unparsed").any() and len(self.problems) == 0

    def to_markdown(self) -> str:
        """The report as a markdown document (what ``iop-research map`` writes)."""

        def table(df: pd.DataFrame) -> str:
            if df.empty:
                return "_none_\n"
            cols = list(df.columns)
            lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for row in df.itertuples(index=False):
                cells = [str(v).replace("|", "\\|").replace("\n", " ") if not _isna(v) else "" for v in row]
                lines.append("| " + " | ".join(cells) + " |")
            return "\n".join(lines) + "\n"

        n_unparsed = int(self.unmapped["action"].str.startswith("unparsed").sum())
        verdict = ("The mapped tables satisfy the data contract." if self.is_valid else
                   f"The mapped tables are NOT usable yet: {n_unparsed} unparsed value(s), "
                   f"{len(self.problems)} contract problem(s); see below.")
        parts = [
            "# Mapping report", "",
            f"Mapping file: `{self.mapping_path}`", "", verdict, "",
            "## Tables", "", table(self.sources),
            "## Source values not mapped", "",
            "Every value of a mapped column that is not in its value map and not already a contract value "
            "(and every date or number that did not parse), with the number of rows.", "",
            table(self.unmapped),
            "## Rows dropped", "", table(self.dropped),
            "## Where each contract column came from", "", table(self.origins),
            "## Source columns not used", "", table(self.unused_columns),
        ]
        if len(self.problems):
            parts += ["## Data-contract problems", "",
                      table(self.problems[["table", "column", "check", "n_failures", "examples", "fix"]])]
        return "\n".join(parts)

    def write(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``mapping_report.md`` and the CSV files ``mapping_unmapped.csv``,
        ``mapping_dropped.csv``, ``mapping_columns.csv`` (and ``mapping_problems.csv`` when
        there are problems) to ``out_dir``; return the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "mapping_report.md", out / "mapping_unmapped.csv", out / "mapping_dropped.csv",
                 out / "mapping_columns.csv"]
        paths[0].write_text(self.to_markdown(), encoding="utf-8")
        self.unmapped.to_csv(paths[1], index=False, lineterminator="\n")
        self.dropped.to_csv(paths[2], index=False, lineterminator="\n")
        self.origins.to_csv(paths[3], index=False, lineterminator="\n")
        if len(self.problems):
            paths.append(out / "mapping_problems.csv")
            self.problems.to_csv(paths[-1], index=False, lineterminator="\n")
        return paths

    def _repr_html_(self) -> str:  # pragma: no cover - display only
        import html

        return f"<pre>{html.escape(self.to_markdown())}</pre>"


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- reading the mapping


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a mapping file; return its content (sections as dicts).

    Raises
    ------
    MappingError
        Missing file, invalid TOML, unknown sections, tables or keys, wrong types,
        contract columns that do not exist, or an ``unmapped`` setting other than
        keep/missing/drop; all problems at once.
    """
    p = Path(path)
    if not p.is_file():
        raise MappingSourceError(f"Mapping file {p} does not exist. Start from `iop-research init-study DIR`, "
                           "which writes a commented mapping.toml.")
    try:
        with open(p, "rb") as fh:
            raw = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(f"Mapping file {p} is not valid TOML: {exc}. Fix the syntax at that line.") from exc
    problems: list[str] = []
    for section in raw:
        if section not in ("mapping", "constants", "tables"):
            problems.append(f"unknown section [{section}] (allowed: [mapping], [constants], [tables.<table>])")
    settings = raw.get("mapping", {})
    if not isinstance(settings, dict):
        problems.append("[mapping] must be a table of settings")
        settings = {}
    for key in settings:
        if key not in _MAPPING_KEYS:
            problems.append(f"unknown key {key!r} in [mapping] (allowed: {', '.join(sorted(_MAPPING_KEYS))})")
    _check_setting_types(settings, "[mapping]", problems)
    all_columns = {c for cols in TABLE_COLUMNS.values() for c, *_ in cols}
    for col in raw.get("constants", {}) or {}:
        if col not in all_columns:
            problems.append(f"[constants] {col!r} is not a contract column (see data/README.md)")
    tables = raw.get("tables", {})
    if not isinstance(tables, dict):
        problems.append("[tables] must hold one [tables.<table>] section per contract table")
        tables = {}
    for name, spec in tables.items():
        where = f"[tables.{name}]"
        if name not in TABLES + OPTIONAL_TABLES:
            problems.append(f"unknown table {where} (contract tables: {', '.join(TABLES + OPTIONAL_TABLES)})")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{where} must be a table of keys")
            continue
        for key in spec:
            if key not in _TABLE_KEYS:
                problems.append(f"unknown key {key!r} in {where} (allowed: {', '.join(sorted(_TABLE_KEYS))})")
        if ("source" in spec) == ("derive" in spec):
            problems.append(f"{where} needs exactly one of source = \"file\" or derive = \"patients\"")
        if "derive" in spec and spec["derive"] != "patients":
            problems.append(f"{where} derive = {spec['derive']!r}: only \"patients\" (one row per patient) is "
                            "supported")
        if "derive" in spec and any(k in spec for k in ("columns", "values", "drop_rows")):
            problems.append(f"{where} is derived (derive = \"patients\"): it takes only constants, not columns, "
                            "values or drop_rows")
        if "derive" in spec and name == "patients":
            problems.append("[tables.patients] cannot be derived; give its source file")
        contract = {c for c, *_ in TABLE_COLUMNS[name]}
        for key in ("columns", "values", "constants", "drop_rows"):
            sub = spec.get(key, {})
            if not isinstance(sub, dict):
                problems.append(f"{where} {key} must be a table (e.g. {key} = {{ patient_id = ... }})")
                continue
            for col, val in sub.items():
                if col not in contract:
                    problems.append(f"{where} {key}: {col!r} is not a column of the {name} table "
                                    f"(columns: {', '.join(sorted(contract))})")
                elif key == "columns" and not isinstance(val, str):
                    problems.append(f"{where} columns.{col} must be the source column name in quotes")
                elif key == "values" and not isinstance(val, dict):
                    problems.append(f"{where} values.{col} must map source values to contract values, "
                                    f"e.g. values.{col} = {{ \"Y\" = true }}")
                elif key == "drop_rows" and not isinstance(val, list):
                    problems.append(f"{where} drop_rows.{col} must be a list of source values")
        _check_setting_types(spec, where, problems)
    if problems:
        raise MappingError(f"Mapping file {p} has {len(problems)} problem(s):\n- " + "\n- ".join(problems))
    return raw


def _check_setting_types(spec: dict, where: str, problems: list[str]) -> None:
    for key in ("date_formats", "true_values", "false_values"):
        if key in spec and (not isinstance(spec[key], list) or not all(isinstance(v, str) for v in spec[key])):
            problems.append(f"{where} {key} must be a list of strings, e.g. [\"%m/%d/%Y\"]")
    if "date_formats" in spec and isinstance(spec["date_formats"], list) and not spec["date_formats"]:
        problems.append(f"{where} date_formats must list at least one format")
    if "unmapped" in spec and spec["unmapped"] not in _UNMAPPED_ACTIONS:
        problems.append(f"{where} unmapped = {spec['unmapped']!r}: use one of {', '.join(_UNMAPPED_ACTIONS)}")
    for key in ("base_dir", "extract_date", "source", "delimiter", "encoding"):
        if key in spec and not isinstance(spec[key], str):
            problems.append(f"{where} {key} must be a string in quotes")


# ----------------------------------------------------------------------------- reading sources


def _read_source(path: Path, spec: dict, table: str) -> pd.DataFrame:
    """Every column as text (stripped; empty = missing), except native datetimes."""
    if not path.is_file():
        raise MappingSourceError(f"[tables.{table}] source {path} does not exist. Correct source = ... or base_dir.")
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            df = pd.read_parquet(path)
        elif name.endswith((".xlsx", ".xls")):
            try:
                import openpyxl  # noqa: F401
            except ImportError as exc:
                raise MappingError(f"Reading {path} needs the openpyxl package (pip install openpyxl), or "
                                   "export the sheet as CSV.") from exc
            df = pd.read_excel(path, sheet_name=spec.get("sheet", 0), dtype=object)
        elif name.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep=spec.get("delimiter", ","),
                             encoding=spec.get("encoding", "utf-8-sig"))
        else:
            raise MappingError(f"[tables.{table}] source {path}: unknown file type; use .csv, .csv.gz, "
                               ".parquet or .xlsx.")
    except MappingError:
        raise
    except (UnicodeDecodeError, LookupError) as exc:
        raise MappingSourceError(f"{path} could not be decoded ({exc}); set encoding = \"latin-1\" (or the file's "
                           f"encoding) in [tables.{table}].") from exc
    except Exception as exc:  # pandas/pyarrow parse errors, empty files
        raise MappingSourceError(f"{path} could not be read ({type(exc).__name__}: {str(exc)[:200]}). Check the "
                           "file and its delimiter.") from exc
    out = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            out[str(col)] = s
            continue
        out[str(col)] = _per_unique(s, lambda v: (v.strip() or None) if isinstance(v, str) else _num_text(v))
    return pd.DataFrame(out, index=pd.RangeIndex(len(df)))


def _per_unique(s: pd.Series, fn) -> pd.Series:
    """``s.map(fn)`` evaluated once per distinct value (extracts repeat codes millions of times);
    missing values stay ``None``."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    for i, u in enumerate(uniques):
        mapped[i] = fn(u)
    mapped[-1] = None
    return pd.Series(mapped[codes], index=s.index, dtype=object)


def _num_text(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d")
    return str(v)


# ----------------------------------------------------------------------------- mapping


@dataclass
class _Acc:
    unmapped: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    origins: list[dict] = field(default_factory=list)
    unused: list[dict] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)


def _lines(rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(r) + 2) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def _parse_dates(s: pd.Series, formats: list[str]) -> tuple[pd.Series, np.ndarray]:
    """Parse text with the first matching format; return datetimes and the failed positions."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        out = s.dt.tz_localize(None) if getattr(s.dt, "tz", None) is not None else s
        return out.astype("datetime64[ns]").dt.normalize(), np.array([], dtype=np.int64)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    todo = s.notna().to_numpy(copy=True)
    for fmt in formats:
        if not todo.any():
            break
        parsed = pd.to_datetime(s[todo], format=fmt, errors="coerce")
        ok = parsed.notna().to_numpy()
        idx = np.flatnonzero(todo)[ok]
        out.iloc[idx] = parsed[ok].to_numpy(dtype="datetime64[ns]")
        todo[idx] = False
    return out.dt.normalize(), np.flatnonzero(todo)


def _map_table(table: str, spec: dict, raw: pd.DataFrame | None, *, settings: dict, constants: dict,
               extract_date: pd.Timestamp | None, derived_ids: pd.Series | None, acc: _Acc,
               unparsed: list[str]) -> pd.DataFrame:
    columns_map: dict[str, str] = dict(spec.get("columns", {}))
    values_map: dict[str, dict] = dict(spec.get("values", {}))
    table_constants = dict(spec.get("constants", {}))
    formats = list(spec.get("date_formats", settings.get("date_formats", [])))
    if "%Y-%m-%d" not in formats:
        formats.append("%Y-%m-%d")  # ISO dates (and the constants written from extract_date) always parse
    unmapped_action = spec.get("unmapped", settings.get("unmapped", "keep"))
    true_values = {v.strip().lower() for v in settings.get("true_values", _TRUE)}
    false_values = {v.strip().lower() for v in settings.get("false_values", _FALSE)}
    n = len(raw) if raw is not None else len(derived_ids)
    if raw is not None:
        absent = sorted({src for src in columns_map.values() if src not in raw.columns})
        if absent:
            raise MappingError(
                f"[tables.{table}] maps source column(s) {', '.join(map(repr, absent))}, which "
                f"{spec['source']} does not have (its columns: {', '.join(map(repr, raw.columns))}). "
                "Correct the names in columns = { ... }.")
    keep = np.ones(n, dtype=bool)
    out: dict[str, pd.Series] = {}
    source_of: dict[str, str | None] = {}
    missing_required = []
    for col, kind, nullable, _meaning in TABLE_COLUMNS[table]:
        kind = kind.split(":", 1)[0]
        if col in columns_map:
            s, origin, source_of[col] = raw[columns_map[col]], f"source column {columns_map[col]!r}", columns_map[col]
        elif col in table_constants or col in constants:
            value = table_constants.get(col, constants.get(col))
            shown = value
            if value == _EXTRACT_DATE and kind == "date":
                if extract_date is None:
                    raise MappingError(f"[tables.{table}] {col} = \"extract_date\" needs [mapping] extract_date.")
                value = extract_date.strftime("%Y-%m-%d")
                shown = f"extract_date {value}"
            s = pd.Series([value] * n, index=pd.RangeIndex(n), dtype=object)
            origin, source_of[col] = f"constant {shown!r}", None
        elif col == "patient_id" and derived_ids is not None:
            s, origin, source_of[col] = derived_ids.reset_index(drop=True), "derived: patients table", None
        elif raw is not None and col in raw.columns:
            s, origin, source_of[col] = raw[col], f"source column {col!r} (same name)", col
        elif nullable:
            s, origin, source_of[col] = pd.Series([None] * n, index=pd.RangeIndex(n), dtype=object), \
                "empty: not in the source", None
        else:
            missing_required.append(col)
            continue
        if isinstance(s.iloc[0] if n else None, bool):
            s = s.map(lambda v: "true" if v is True else ("false" if v is False else v))
        out[col] = s.reset_index(drop=True)
        acc.origins.append({"table": table, "column": col, "origin": origin})
    if missing_required:
        avail = f" (its columns: {', '.join(map(repr, raw.columns))})" if raw is not None else ""
        raise MappingError(
            f"[tables.{table}] has no source for the required column(s) {', '.join(missing_required)}{avail}. "
            f"Map them in [tables.{table}] columns = {{ {missing_required[0]} = \"<source column>\" }}, or give "
            "a constant.")
    # rows dropped by source value
    for col, drop_values in spec.get("drop_rows", {}).items():
        if col not in out:
            continue
        text = out[col].astype(object)
        for value in drop_values:
            hit = (text == str(value)).to_numpy() & keep
            if hit.any():
                acc.dropped.append({"table": table, "reason": f"{col} = {value!r} (drop_rows)",
                                    "n_rows": int(hit.sum()), "source_lines": _lines(np.flatnonzero(hit))})
                keep &= ~hit
    # value maps, booleans, vocabularies
    kinds = {c: k.split(":", 1)[0] for c, k, *_ in TABLE_COLUMNS[table]}
    for col, s in list(out.items()):
        kind = kinds[col]
        vmap = values_map.get(col)
        if kind == "date":
            parsed, failed = _parse_dates(s, formats)
            failed = failed[keep[failed]]
            if len(failed):
                _record_values(acc, table, col, source_of[col], s.iloc[failed], "unparsed",
                               note=f"not a date in {' or '.join(formats)}")
                unparsed.append(f"{table}.{col}: {len(failed)} value(s) such as {s.iloc[failed[0]]!r} are not "
                                f"dates in {' or '.join(formats)}")
            out[col] = parsed
            continue
        if kind in ("int", "float"):
            text = s.astype(object)
            if vmap:
                text = text.map(lambda v: vmap.get(v, v) if v is not None else v)
            num = pd.to_numeric(text, errors="coerce")
            failed = np.flatnonzero(text.notna().to_numpy() & num.isna().to_numpy() & keep)
            if len(failed):
                _record_values(acc, table, col, source_of[col], s.iloc[failed], "unparsed", note="not a number")
                unparsed.append(f"{table}.{col}: {len(failed)} value(s) such as {s.iloc[failed[0]]!r} are not numbers")
            out[col] = text.where(num.notna(), None)  # coerce_tables converts, exactly
            continue
        if kind == "bool":
            mapped, bad = _map_bool(s, vmap, true_values, false_values)
        elif kind == "category":
            vocab = set(VOCABULARIES[_vocab_name(table, col)].values())
            mapped, bad = _map_values(s, vmap, valid=vocab)
        elif vmap:  # free text or ids with a value map
            mapped, bad = _map_values(s, vmap, valid=None)
        else:
            continue
        bad &= keep
        if bad.any():
            if kind in ("bool", "category"):
                action = {"keep": "kept", "missing": "set missing", "drop": "rows dropped"}[unmapped_action]
            else:  # free text: any value is allowed; listed so that a forgotten code is seen
                action = "kept (free text)"
            _record_values(acc, table, col, source_of[col], s[bad], action)
            if action == "set missing":
                mapped = mapped.where(~bad, None)
            elif action == "rows dropped":
                for value, cnt in s[bad].value_counts(sort=True).items():
                    rows = np.flatnonzero((s == value).to_numpy() & bad)
                    acc.dropped.append({"table": table, "reason": f"{col} = {value!r} not in the value map "
                                        "(unmapped = \"drop\")", "n_rows": int(cnt), "source_lines": _lines(rows)})
                keep &= ~bad
        out[col] = mapped
    frame = pd.DataFrame(out).loc[keep].reset_index(drop=True)
    if raw is not None:
        used = {src for src in source_of.values() if src is not None}
        for c in raw.columns:
            if c not in used:
                acc.unused.append({"table": table, "source_column": c})
    acc.sources.append({"table": table, "source": spec.get("source", f"derived from {spec.get('derive')}"),
                        "rows_read": n, "rows_written": len(frame)})
    return frame


def _vocab_name(table: str, col: str) -> str:
    for c, kind, *_ in TABLE_COLUMNS[table]:
        if c == col:
            return kind.split(":", 1)[1]
    raise UnknownNameError(f"{table}: no column {col!r} in the contract")  # pragma: no cover


def _map_values(s: pd.Series, vmap: dict | None, *, valid: set | None) -> tuple[pd.Series, np.ndarray]:
    """Apply a value map; return the values and the mask of present values that were not mapped
    (and, with ``valid``, are not already valid)."""
    vmap = vmap or {}
    text = s.astype(object)
    present = text.notna().to_numpy()
    in_map = text.isin(list(vmap)).to_numpy()

    def one(v):
        v = vmap.get(v, v)
        return ("true" if v else "false") if isinstance(v, bool) else v

    mapped = _per_unique(text, one)
    bad = present & ~in_map
    if valid is not None:
        bad &= ~text.isin(list(valid)).to_numpy()
    return mapped.astype(object), bad


def _map_bool(s: pd.Series, vmap: dict | None, true_values: set, false_values: set) -> tuple[pd.Series, np.ndarray]:
    vmap = vmap or {}
    text = s.astype(object)

    def one(v):  # (value, unmapped?)
        if v in vmap:
            target = vmap[v]
            if isinstance(target, str):
                target = {"true": True, "false": False}.get(target.lower(), target)
            return ("true" if target is True else ("false" if target is False else target)), False
        if str(v).lower() in true_values:
            return "true", False
        if str(v).lower() in false_values:
            return "false", False
        return v, True

    pairs = _per_unique(text, one)
    present = pairs.notna().to_numpy()
    out = pairs.map(lambda p: p[0], na_action="ignore")
    bad = np.zeros(len(text), dtype=bool)
    bad[present] = [p[1] for p in pairs[present]]
    return out.astype(object).where(present, None), bad


def _record_values(acc: _Acc, table: str, col: str, source_col: str | None, values: pd.Series, action: str,
                   *, note: str | None = None) -> None:
    for value, count in values.astype(str).value_counts(sort=True).items():
        acc.unmapped.append({"table": table, "column": col, "source_column": source_col or "", "value": value,
                             "n_rows": int(count), "action": action if note is None else f"{action} ({note})"})


def map_extract(
    mapping_path: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    format: str = "csv",
    validate: bool = True,
) -> tuple[IOPData, MappingReport]:
    """Map a clinic's extract onto the data contract as a mapping file says.

    Parameters
    ----------
    mapping_path : path-like
        The mapping file (TOML; see the module docstring).
    out_dir : path-like, optional
        When given, the contract tables (one file per table, :meth:`IOPData.write`) and the
        report (:meth:`MappingReport.write`) are written there; the report also when the
        mapping fails (then no tables are written).
    format : {"csv", "csv.gz", "parquet"}, default "csv"
        File format of the written tables.
    validate : bool, default True
        Check the mapped tables against the data contract.

    Returns
    -------
    data : IOPData
        The mapped tables in canonical dtypes (validated unless ``validate=False``).
    report : MappingReport
        Unmapped values, dropped rows, column origins, unused source columns.

    Raises
    ------
    MappingError
        The mapping file is invalid, a source file or column is missing, values do not
        parse, or (``validate=True``) the mapped tables break the data contract; the
        message lists every problem and ``.report`` holds the report.

    See Also
    --------
    iop_research.data.io.read_data : read tables that already follow the contract.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = Path(tmp, "people.csv").write_text("MRN,Born,Gender\\n7,1980,F\\n8,1975,X\\n")
    ...     _ = Path(tmp, "visits.csv").write_text("MRN,Day,Kind,Min,Came\\n7,03/04/2024,IOP-Grp,180,Y\\n")
    ...     _ = Path(tmp, "m.toml").write_text('''
    ... [mapping]
    ... date_formats = ["%m/%d/%Y"]
    ... extract_date = "06/30/2024"
    ... [tables.patients]
    ... source = "people.csv"
    ... columns = { patient_id = "MRN", birth_year = "Born", sex = "Gender" }
    ... values.sex = { F = "female", M = "male" }
    ... [tables.sessions]
    ... source = "visits.csv"
    ... columns = { patient_id = "MRN", session_date = "Day", modality = "Kind", minutes = "Min", attended = "Came" }
    ... values.modality = { "IOP-Grp" = "group" }
    ... [tables.observation]
    ... derive = "patients"
    ... constants = { observation_end = "extract_date" }
    ... ''')
    ...     try:
    ...         map_extract(Path(tmp, "m.toml"))
    ...     except MappingError as err:
    ...         print(err.report.unmapped[["table", "column", "value", "n_rows", "action"]].to_dict("records"))
    [{'table': 'patients', 'column': 'sex', 'value': 'X', 'n_rows': 1, 'action': 'kept'}]
    """
    path = Path(mapping_path)
    raw_mapping = read_mapping(path)
    settings = raw_mapping.get("mapping", {})
    constants = dict(raw_mapping.get("constants", {}))
    base = Path(settings.get("base_dir", "."))
    base = base if base.is_absolute() else (path.parent / base)
    extract_date = None
    if "extract_date" in settings:
        parsed, failed = _parse_dates(pd.Series([settings["extract_date"]], dtype=object),
                                      list(settings.get("date_formats", ["%Y-%m-%d"])) + ["%Y-%m-%d"])
        if len(failed):
            raise MappingError(f"[mapping] extract_date = {settings['extract_date']!r} is not a date in the "
                               "date_formats (or YYYY-MM-DD).")
        extract_date = parsed.iloc[0]
    specs = raw_mapping.get("tables", {})
    absent_required = [t for t in REQUIRED_TABLES if t not in specs]
    if absent_required:
        raise MappingError(f"Mapping file {path} has no [tables.<name>] for the required table(s) "
                           f"{', '.join(absent_required)}; add them (observation may be derive = \"patients\" "
                           "with constants = { observation_end = \"extract_date\" }).")
    acc = _Acc()
    unparsed: list[str] = []
    mapped: dict[str, pd.DataFrame] = {}
    for table in TABLES + tuple(t for t in OPTIONAL_TABLES if t in specs):  # patients first (derived tables)
        spec = specs.get(table)
        if spec is None:
            mapped[table] = empty_table(table)
            acc.sources.append({"table": table, "source": "none (empty table)", "rows_read": 0, "rows_written": 0})
            continue
        raw = _read_source(base / spec["source"], spec, table) if "source" in spec else None
        derived_ids = None
        if "derive" in spec:
            derived_ids = mapped["patients"]["patient_id"].dropna().drop_duplicates()
        mapped[table] = _map_table(table, spec, raw, settings=settings, constants=constants,
                                   extract_date=extract_date, derived_ids=derived_ids, acc=acc, unparsed=unparsed)
    tables, parse_problems = coerce_tables(mapped)
    problems = parse_problems
    if validate and not unparsed:
        problems = find_problems(tables)
    report = MappingReport(
        mapping_path=str(path),
        sources=pd.DataFrame(acc.sources, columns=["table", "source", "rows_read", "rows_written"]),
        origins=pd.DataFrame(acc.origins, columns=list(ORIGIN_COLUMNS)),
        unmapped=pd.DataFrame(acc.unmapped, columns=list(UNMAPPED_COLUMNS)) if acc.unmapped else _empty(UNMAPPED_COLUMNS),
        dropped=pd.DataFrame(acc.dropped, columns=list(DROPPED_COLUMNS)) if acc.dropped else _empty(DROPPED_COLUMNS),
        unused_columns=pd.DataFrame(acc.unused, columns=["table", "source_column"]),
        problems=problems,
    )
    if out_dir is not None:
        report.write(out_dir)
    if unparsed:
        raise MappingError(
            f"{len(unparsed)} column(s) of the extract hold values that do not parse (the contract checks did not "
            "run; fix these first):\n- " + "\n- ".join(unparsed)
            + "\nAdd the missing format to date_formats (e.g. \"%d.%m.%Y\"), correct the source, or map the "
              "values.", report)
    if len(problems):
        from iop_research.data.schema import _error

        raise MappingError(f"The mapped tables break the data contract.\n{_error(problems)}\nAdd the listed "
                           "values to the value maps of the mapping file (or drop the rows with drop_rows).",
                           report)
    data = IOPData(**tables)
    if out_dir is not None:
        data.write(out_dir, format=format)
    return data, report


def mapping_template() -> str:
    """A commented mapping file to start from (what ``iop-research init-study`` writes)."""
    return _TEMPLATE


_TEMPLATE = '''# Mapping file: from your extract to the iop-research data contract (data/README.md).
# Run:  iop-research map mapping.toml mapped/   -> contract tables + mapping_report.md in mapped/
#       iop-research validate mapped/
# Every source value that is not mapped and every dropped row is listed in the report.
# Replace the source file and column names on the right-hand sides with your extract's.

[mapping]
base_dir = "extract"                       # folder of the source files, relative to this file
date_formats = ["%m/%d/%Y"]                # tried in order (strftime codes); YYYY-MM-DD always works
extract_date = "06/30/2024"                # the extract's cut-off; "extract_date" below stands for it
unmapped = "keep"                          # value not in a value map: keep | missing | drop (the row)
# true_values = ["Y", "Yes", "1", "true"]  # booleans (these are the defaults, any letter case)
# false_values = ["N", "No", "0", "false"]

[constants]
observation_end = "extract_date"           # follow-up ends at the cut-off unless a table maps it

[tables.patients]
source = "patients.csv"                    # .csv, .csv.gz, .parquet or .xlsx

[tables.patients.columns]                  # contract column = "source column"
patient_id = "MRN"
birth_year = "BirthYear"
sex = "Sex"
# race = "Race"
# ethnicity = "Ethnicity"

[tables.patients.values.sex]               # "source value" = contract value
M = "male"
F = "female"
U = "unknown"

[tables.admissions]
source = "encounters.csv"

[tables.admissions.columns]
episode_id = "EncounterID"
patient_id = "MRN"
program = "Site"
admit_date = "AdmitDate"
discharge_date = "DischargeDate"
discharge_reason = "Disposition"
referral_source = "Referral"
primary_substance = "PrimarySubstance"
psychiatric_comorbidity = "PsychDx"
prior_treatment_episodes = "PriorTx"
# severity_score = "Severity"              # optional columns: left empty when not mapped
# housing = "Housing"
# employment = "Employment"

[tables.admissions.values.discharge_reason]
COMP = "completed"
AMA = "dropped_out"
ADMIN = "terminated"
XFER = "transferred"
JAIL = "incarcerated"
EXP = "death"
OTH = "other"

[tables.admissions.values.referral_source]
SELF = "self"
RESID = "residential_step_down"
MD = "healthcare"
COURT = "criminal_justice"
COMM = "community"
OTH = "other"

[tables.admissions.values.primary_substance]
"F10.20" = "alcohol"
"F11.20" = "opioids"
"F14.20" = "stimulants"
"F12.20" = "cannabis"
"F13.20" = "sedatives"
"F19.20" = "other"

[tables.admissions.values.psychiatric_comorbidity]
Y = true
N = false

[tables.sessions]
source = "visits.csv"
drop_rows = { attended = ["Cancelled"] }   # source values whose rows are not sessions (counted in the report)

[tables.sessions.columns]
patient_id = "MRN"
episode_id = "EncounterID"                 # optional: sessions are assigned to episodes by date when empty
session_date = "VisitDate"
modality = "ServiceCode"
minutes = "Minutes"
attended = "Status"

[tables.sessions.values.modality]
"IOP-Ind" = "individual"
"IOP-Grp" = "group"
"IOP-Fam" = "family"
"IOP-Edu" = "education"
"IOP-Hol" = "holistic"

[tables.sessions.values.attended]
Kept = true
"No-show" = false

# [tables.medications]                     # optional, like [tables.events]: empty when absent
# source = "pharmacy.csv"
# [tables.medications.columns]
# patient_id = "MRN"
# medication = "Drug"
# dispense_date = "FillDate"
# days_supply = "DaysSupply"

[tables.observation]
derive = "patients"                        # one row per patient, observation_end from [constants]
'''
