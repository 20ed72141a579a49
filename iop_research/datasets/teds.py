"""TEDS-D and TEDS-A public-use files: readers onto the toolkit's vocabulary, and generators of look-alikes.

The SAMHSA *Treatment Episode Data Set: Discharges* (TEDS-D) public-use file has one row per
discharge (about 1.5 million a year), upper-case column names, numeric codes with ``-9`` for
missing, and no dates or person linkage. SAMHSA distributes it as CSV and as SAS
(``.sas7bdat``/``.xpt``), Stata (``.dta``) and SPSS (``.sav``) files, each in a ``.zip``.
Intensive outpatient (IOP) episodes are those discharged from ``SERVICES_D == 6``
(ambulatory, intensive outpatient).

Layouts and code books. The code books differ between the 2006-2014 concatenated file, the
2015-2019 single-year files and the 2020+ files (the 2021 file ships text labels, latin-1):
see :mod:`iop_research.datasets._codebook`. The readers decode every row with the code book
of its own year (``DISYR``; ``ADMYR`` for TEDS-A) onto one harmonised vocabulary, and a value
outside its year's code book is an error naming the column, the value, the line (or row)
and the ``CASEID``: nothing is guessed.

Length of stay. TEDS counts ``LOS`` from admission to the date of last contact and adds one
day for outpatient discharges (the code books' definition), so an IOP stay whose last
session is ``d`` days after admission has ``LOS`` ``d + 1``. The toolkit's episode model
counts ``discharge_date - admit_date`` (at least 1);
:func:`iop_research.derive.episodes.build_episodes` with ``los_convention="teds"`` gives
TEDS's definition for a programme's own data, and :func:`read_teds_d` with
``los_convention="contract"`` moves TEDS's outpatient stays onto the toolkit's.

:func:`read_teds_d` reads CSV with DuckDB (only the needed columns and rows reach pandas) and
the SAS, Stata and SPSS files with pyreadstat in chunks. :func:`write_teds_d_like` writes a
synthetic CSV of a chosen layout whose every variable is drawn from that layout's published
code-book frequencies (no real record is used).

References
----------
.. [1] SAMHSA. Treatment Episode Data Set: Discharges (TEDS-D), 2006-2014 concatenated file
   and 2015, 2017, 2019 public-use files: codebooks (variable ``LOS``: "length of stay ...
   date of last contact ...; one day is added for outpatient").
.. [2] SAMHSA (2006). Treatment Episode Data Set (TEDS) highlights 2004 (IOP discharge
   reasons and lengths of stay), DASIS Series S-31.
"""
from __future__ import annotations

import csv
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from iop_research.data.schema import DischargeReason, PrimarySubstance
from iop_research.datasets import _codebook as cb
from iop_research.datasets.teds_frequencies import FREQUENCIES
from iop_research.exceptions import DataReadError, DataValidationError, format_ids

__all__ = ["IOP_SERVICES_CODE", "TEDS_FORMATS", "read_teds_a", "read_teds_d", "teds_attrition", "teds_missing",
           "write_teds_a_like", "write_teds_d_like"]

#: ``SERVICES_D`` / ``SERVICES`` code of ambulatory intensive outpatient treatment (every layout).
IOP_SERVICES_CODE = 6

#: File suffix -> format read (``.zip``: the archive as downloaded, holding one of the others).
TEDS_FORMATS = {".csv": "csv", ".dta": "stata", ".sav": "spss", ".zsav": "spss",
                ".sas7bdat": "sas", ".xpt": "xport", ".zip": "zip"}

_UNKNOWN = -32768  # sentinel of a label or code that no code book knows
_INT_RE = re.compile(r"^\s*-?\d+(\.0*)?\s*$")
_SAMPLE_ROWS = 2000
_OUTPATIENT_CODES = (6, 7, 8)  # ambulatory settings: TEDS adds one day to their LOS


@dataclass
class _Spec:
    """What one TEDS data set needs: its year column, setting column and coded columns."""

    name: str  # "TEDS-D" or "TEDS-A"
    year_col: str
    setting_col: str
    required: tuple[str, ...]
    optional: tuple[str, ...]


_SPEC_D = _Spec("TEDS-D", "DISYR", "SERVICES_D", cb.REQUIRED_COLUMNS, cb.OPTIONAL_COLUMNS)
_SPEC_A = _Spec("TEDS-A", "ADMYR", "SERVICES",
                ("CASEID", "ADMYR", "STFIPS", "SERVICES", "METHUSE", "FREQ1", "SUB1", "NOPRIOR", "PSYPROB",
                 "GENDER", "AGE", "RACE", "ETHNIC"), ())


@dataclass
class _Columns:
    """Columns of one file: current name -> name in the file, and what was renamed."""

    names: list[str]
    in_file: dict[str, str]
    renamed: dict[str, str]
    coded: list[str]
    ids: list[str]


@dataclass
class _Raw:
    """Integer codes of the kept rows (labels already mapped), with counts for attrition."""

    arrays: dict[str, np.ndarray]
    n_file: int
    n_year: int
    n_keep: int
    labelled: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Columns and labels
# ---------------------------------------------------------------------------


def _resolve_columns(names: list[str], spec: _Spec, path: Path, extra_required: Sequence[str] = ()) -> _Columns:
    upper = [n.strip().upper() for n in names]
    in_file = {u: n for u, n in zip(upper, names)}
    renamed = {}
    for old, new in cb.ALIASES.items():
        if old in in_file and new not in in_file:
            in_file[new] = in_file.pop(old)
            renamed[old] = new
    required = list(spec.required) + [c for c in extra_required if c not in spec.required]
    missing = [c for c in required if c not in in_file]
    if missing:
        alias_hint = {v: k for k, v in cb.ALIASES.items()}
        shown = ", ".join(f"{c} (or {alias_hint[c]})" if c in alias_hint else c for c in missing)
        other = "TEDS-A (admissions)" if spec.name == "TEDS-D" else "TEDS-D (discharges)"
        note = ""
        if "SERVICES" in missing and spec.name == "TEDS-D":
            note = (" The setting at admission (SERVICES) is in the 2017 and later code books only; the "
                    "2006-2014 and 2015 files do not have it: read them with include_admission_setting=False.")
        raise DataValidationError(
            f"{spec.name} file {path} lacks required column(s) {shown}; found {len(names)} column(s): "
            f"{format_ids(names, 12)}. Use the full public-use {spec.name} file, not {other} or an "
            f"extract without these columns.{note}",
            problems=pd.DataFrame([{"table": spec.name.lower().replace("-", "_"), "column": c,
                                    "check": "column_present", "n_failures": 1, "examples": "",
                                    "fix": "add the column"} for c in missing]))
    wanted = set(required) | set(spec.optional)
    coded = [c for c in cb.CODEBOOK if c in wanted and c in in_file]
    ids = [c for c in ("CASEID", spec.year_col, "ADMYR", "DISYR") if c in in_file and c in wanted | {"CASEID"}]
    ids = list(dict.fromkeys(ids))
    return _Columns(names, in_file, renamed, coded, ids)


def _label_maps(values: Iterable[object], col: str) -> dict[str, dict[str, int]]:
    """Per code system, the code of each distinct text of a labelled column (unknown: sentinel)."""
    out = {}
    for system in cb.CODE_SYSTEMS:
        by_label = {cb.normalise_label(lab): code for code, (_, lab) in cb.CODEBOOK[col].codes[system].items()}
        by_label.update({m: cb.MISSING_CODE for m in cb.MISSING_LABELS})
        m = {}
        for v in values:
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            text = str(v)
            if _INT_RE.match(text):
                m[text] = int(float(text))
            else:
                m[text] = by_label.get(cb.normalise_label(text), _UNKNOWN)
        out[system] = m
    return out


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _case_sql(col: str, maps: dict[str, dict[str, int]], year: str) -> str:
    def one(mapping):
        whens = " ".join(f"WHEN {_sql_str(k)} THEN {v}" for k, v in mapping.items())
        return f"CASE {col} {whens} ELSE {_UNKNOWN} END" if whens else str(_UNKNOWN)
    return (f"CAST(CASE WHEN {col} IS NULL THEN {cb.MISSING_CODE} WHEN {year} <= 2014 "
            f"THEN {one(maps['2006-2014'])} ELSE {one(maps['2015+'])} END AS SMALLINT)")


def _system_index(years: np.ndarray) -> np.ndarray:
    return (years.astype(np.int64) > 2014).astype(np.int8)


def _valid(col: str, system_idx: np.ndarray, codes: np.ndarray) -> np.ndarray:
    out = codes == cb.MISSING_CODE
    for i, system in enumerate(cb.CODE_SYSTEMS):
        known = np.array(list(cb.CODEBOOK[col].codes[system]) or [_UNKNOWN], dtype=np.int64)
        out |= (system_idx == i) & np.isin(codes.astype(np.int64), known)
    return out


# ---------------------------------------------------------------------------
# Sources: CSV (DuckDB), SAS/Stata/SPSS (pyreadstat), zip
# ---------------------------------------------------------------------------


def _header(path: Path, spec: _Spec) -> tuple[list[str], list[list[str]]]:
    """Column names (as in the file) and the first data rows, read with latin-1."""
    try:
        with open(path, encoding="latin-1", newline="") as fh:
            first = fh.readline()
            if not first.strip():
                raise DataReadError(f"{spec.name} file {path} is empty: it has no header line. "
                                    "Download the public-use file again.")
            if "," not in first:
                found = [name for d, name in (("\t", "tab"), (";", "';'"), ("|", "'|'")) if d in first]
                how = f"it looks {found[0]}-delimited" if found else "its header has a single column"
                raise DataReadError(
                    f"{spec.name} file {path} is not comma-separated ({how}; header starts "
                    f"{first[:60]!r}). The public-use file is a comma-separated CSV: export it "
                    "with ',' as delimiter.")
            names = next(csv.reader([first.removeprefix("\u00ef\u00bb\u00bf")]))
            sample = []
            for row in csv.reader(fh):
                sample.append(row)
                if len(sample) >= _SAMPLE_ROWS:
                    break
    except FileNotFoundError as exc:
        raise DataReadError(f"{spec.name} file not found: {path}. Pass the path of the public-use file "
                            "(CSV, .dta, .sav, .sas7bdat, .xpt or the .zip as downloaded).") from exc
    except IsADirectoryError as exc:
        raise DataReadError(f"{path} is a directory; pass the path of the {spec.name} file.") from exc
    return [n.strip() for n in names], sample


def _encoding(path: Path) -> str:
    """``"utf-8"`` for a pure-ASCII file (DuckDB's native path, faster), else ``"latin-1"``.

    Both decode ASCII identically; SAMHSA's files are latin-1, and the coded ones are ASCII.
    """
    with open(path, "rb") as fh:
        while chunk := fh.read(64 * 2**20):
            if not chunk.isascii():
                return "latin-1"
    return "utf-8"


def _connect(engine):
    """A DuckDB connection from the engine layer (:func:`iop_research.derive.engine.get_backend`)."""
    if engine is None or engine == "duckdb":
        import duckdb

        return duckdb.connect(), True
    con = getattr(engine, "con", None)
    if getattr(engine, "name", "") == "duckdb" and con is not None:
        return con, False
    raise DataReadError(f"engine={engine!r} is not supported for TEDS files; use engine='duckdb' (default) "
                        "or an Ibis DuckDB backend (iop_research.derive.engine.get_backend('duckdb')).")


def _read_csv(path: Path, spec: _Spec, cols: _Columns, sample: list[list[str]], years, iop_only: bool,
              engine) -> _Raw:
    in_file = cols.in_file
    text_cols = set()
    for c in cols.coded:
        j = cols.names.index(in_file[c])
        if any(j < len(r) and r[j].strip() and not _INT_RE.match(r[j]) for r in sample):
            text_cols.add(c)
    cur_of = {n: c for c, n in in_file.items()}

    def source_and_selects(text_cols: set[str]) -> tuple[str, list[str]]:
        types = {}
        for n in cols.names:
            cur = cur_of.get(n)
            if cur == "CASEID":
                types[n] = "BIGINT"
            elif cur in ("DISYR", "ADMYR"):
                types[n] = "INTEGER"
            elif cur in cols.coded and cur not in text_cols:
                types[n] = "SMALLINT"
            else:
                types[n] = "VARCHAR"
        col_spec = "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in types.items()) + "}"
        source = (f"read_csv({_sql_str(str(path))}, header=true, delim=',', quote='\"', "
                  f"encoding='{encoding}', auto_detect=false, columns={col_spec})")
        selects = [f"{_q(in_file['CASEID'])} AS CASEID"]
        selects += [f"COALESCE({_q(in_file[c])}, -9) AS {c}" for c in cols.ids if c != "CASEID"]
        for c in cols.coded:
            if c in text_cols:
                selects.append(f"trim({_q(in_file[c])}) AS {c}")
            else:
                selects.append(f"COALESCE({_q(in_file[c])}, {cb.MISSING_CODE}) AS {c}")
        return source, selects

    encoding = _encoding(path)
    import duckdb

    con, own = _connect(engine)
    table = f"_iop_teds_{id(cols)}"
    try:
        try:
            con.execute("SET enable_progress_bar = false")  # no stderr output in notebooks
        except duckdb.Error:  # inside Jupyter without ipywidgets DuckDB refuses; it draws no bar there
            pass

        while True:
            source, selects = source_and_selects(text_cols)
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {', '.join(selects)} FROM {source}")
                break
            except duckdb.Error as exc:  # conversion / malformed-line errors
                # text in a coded column beyond the sampled rows: read that column as text and map it
                # like a labelled one (unknown texts are then reported with their lines)
                m = re.search(r'[Cc]olumn\s*:?\s*"?([A-Za-z0-9_]+)', str(exc))
                cur = next((c for c in cols.coded if m and in_file[c] == m.group(1)), None)
                if cur is None or cur in text_cols:
                    raise _read_error(path, spec, exc) from exc
                text_cols = text_cols | {cur}
        year = spec.year_col
        exprs = {c: c for c in cols.coded}
        for c in sorted(text_cols):
            distinct = [r[0] for r in con.execute(f"SELECT DISTINCT {c} FROM {table}").fetchall()]
            exprs[c] = _case_sql(c, _label_maps(distinct, c), year)
        year_cond = "TRUE"
        if years is not None:
            year_cond = f"{year} IN ({', '.join(str(y) for y in years)})" if len(years) else "FALSE"
        iop_cond = f"({exprs[spec.setting_col]}) = {IOP_SERVICES_CODE}" if iop_only else "TRUE"
        n_file, n_year, n_keep = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {year_cond}), "
            f"count(*) FILTER (WHERE {year_cond} AND {iop_cond}) FROM {table}").fetchone()
        fields = list(cols.ids) + [f"{exprs[c]} AS {c}" for c in cols.coded]
        raw = con.execute(f"SELECT {', '.join(fields)} FROM {table} WHERE {year_cond} AND {iop_cond}").fetchnumpy()
        arrays = {k: np.asarray(v) for k, v in raw.items()}
        bad = _bad_values(arrays, cols.coded, spec)
        if bad:
            raise _unknown_report_csv(con, source, cols, spec, bad, text_cols, path, years is not None or iop_only)
    finally:
        try:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            if own:
                con.close()
    return _Raw(arrays, int(n_file), int(n_year), int(n_keep), sorted(text_cols))


def _bad_values(arrays: dict[str, np.ndarray], coded: list[str], spec: _Spec) -> dict[str, dict[int, list[int]]]:
    """Per column and code system, the codes outside that system's code book."""
    system_idx = _system_index(arrays[spec.year_col])
    bad: dict[str, dict[int, list[int]]] = {}
    for c in coded:
        ok = _valid(c, system_idx, arrays[c])
        if ok.all():
            continue
        bad[c] = {i: sorted(set(np.unique(arrays[c][~ok & (system_idx == i)]).tolist())) for i in (0, 1)}
    return bad


def _known_text(col: str, system: int) -> str:
    codes = sorted(cb.CODEBOOK[col].codes[cb.CODE_SYSTEMS[system]])
    if not codes:
        return f"none (the column is not in the {cb.CODE_SYSTEMS[system]} code book)"
    return ", ".join(str(c) for c in codes) + f" and {cb.MISSING_CODE} (missing)"


def _unknown_report_csv(con, source: str, cols: _Columns, spec: _Spec, bad, text_cols: set[str], path: Path,
                        selected: bool) -> DataValidationError:
    """Error naming each column with codes outside its year's code book, with lines and CASEIDs."""
    import duckdb

    lines, rows = [], []
    year_raw = _q(cols.in_file[spec.year_col])
    for col, per_system in bad.items():
        raw = _q(cols.in_file[col])
        conds, shown = [], []
        for i, codes in per_system.items():
            if not codes:
                continue
            year_cond = "yr <= 2014" if i == 0 else "yr > 2014"
            if col in text_cols:
                maps = _label_maps([r[0] for r in con.execute(f"SELECT DISTINCT trim(CAST({raw} AS VARCHAR)) FROM {source}").fetchall()], col)
                texts = sorted(t for t, code in maps[cb.CODE_SYSTEMS[i]].items() if code in set(codes))
            else:
                texts = [str(c) for c in codes]
            shown += texts
            if texts:
                conds.append(f"({year_cond} AND val IN ({', '.join(_sql_str(t) for t in texts[:50])}))")
        q = (f"SELECT line, caseid, yr, val FROM (SELECT row_number() OVER () + 1 AS line, "
             f"CAST({_q(cols.in_file['CASEID'])} AS VARCHAR) AS caseid, {year_raw} AS yr, "
             f"trim(CAST({raw} AS VARCHAR)) AS val FROM {source}) WHERE {' OR '.join(conds) or 'FALSE'} "
             f"ORDER BY line LIMIT 5")
        try:
            hits = con.sql(q).fetchall()
        except duckdb.Error:  # pragma: no cover - diagnostics only: the message still names the values
            hits = []
        where = "; ".join(f"line {h[0]} (CASEID {h[1]}, {spec.year_col} {h[2]}): {h[3]!r}" for h in hits)
        lines.append(_bad_line(col, cols.in_file[col], per_system, shown, where))
        rows.append(_problem_row(spec, cols.in_file[col], per_system, where))
    return _unknown_error(spec, path, lines, rows, selected)


def _bad_line(col: str, raw: str, per_system, shown: list[str], where: str) -> str:
    n_sys = [cb.CODE_SYSTEMS[i] for i, codes in per_system.items() if codes]
    known = "; ".join(f"codes of {cb.CODE_SYSTEMS[i]}: {_known_text(col, i)}" for i, codes in per_system.items() if codes)
    return (f"- {raw}: value(s) {format_ids(shown)} outside the {' and '.join(n_sys)} code book; first: {where}. "
            f"Known {known}.")


def _problem_row(spec: _Spec, raw: str, per_system, where: str) -> dict:
    return {"table": spec.name.lower().replace("-", "_"), "column": raw, "check": "codebook",
            "n_failures": sum(len(v) for v in per_system.values()), "examples": where,
            "fix": "correct the value or check the file's year and code book"}


def _unknown_error(spec: _Spec, path: Path, lines: list[str], rows: list[dict], selected: bool) -> DataValidationError:
    scope = " among the rows selected" if selected else ""
    msg = (f"{spec.name} file {path} holds codes or labels that are not in the code book of their year"
           f"{scope} (iop_research.datasets._codebook); nothing is guessed:\n" + "\n".join(lines) +
           "\nFix the source rows, or map the new codes to known ones before reading.")
    return DataValidationError(msg, problems=pd.DataFrame(rows))


def _read_error(path: Path, spec: _Spec, exc: Exception) -> DataReadError:
    text = str(exc)
    m = re.search(r"[Cc]olumn\s*:?\s*\"?([A-Za-z0-9_]+)", text)
    line = re.search(r"[Ll]ine\s*:?\s*(\d+)", text)
    where = ""
    if m:
        where += f" in column {m.group(1)}"
    if line:
        where += f" at line {line.group(1)}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return DataReadError(
        f"Could not read {spec.name} file {path}{where}: {first}. Numeric columns (CASEID, DISYR, "
        "ADMYR and the coded variables) must hold integers (or code-book labels); check for a "
        "truncated file, stray text or a different delimiter.")


_STAT_READERS = {"stata": "read_dta", "spss": "read_sav", "sas": "read_sas7bdat", "xport": "read_xport"}


def _read_stat(path: Path, fmt: str, spec: _Spec, years, iop_only: bool, chunk_rows: int,
               extra_required: Sequence[str]) -> tuple[_Columns, _Raw]:
    """SAS, Stata or SPSS file with pyreadstat, ``chunk_rows`` rows at a time."""
    import pyreadstat

    reader = getattr(pyreadstat, _STAT_READERS[fmt])
    if not path.exists():
        raise DataReadError(f"{spec.name} file not found: {path}.")
    try:
        _, meta = reader(str(path), metadataonly=True)
    except Exception as exc:
        raise DataReadError(f"Could not read {spec.name} file {path} as {fmt} ({type(exc).__name__}: {exc}). "
                            "Check that the file is complete and that its suffix matches its format.") from exc
    cols = _resolve_columns(list(meta.column_names), spec, path, extra_required)
    use = [cols.in_file[c] for c in cols.ids + cols.coded]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in cols.ids + cols.coded + ["_row"]}
    labelled: set[str] = set()
    n_file = n_year = 0
    offset = 0
    # codes, not value labels (SAS and XPORT files carry formats, which pyreadstat does not apply)
    kwargs = {"apply_value_formats": False} if fmt in ("stata", "spss") else {}
    for chunk, _ in pyreadstat.read_file_in_chunks(reader, str(path), chunksize=int(chunk_rows), usecols=use,
                                                   **kwargs):
        n = len(chunk)
        arr = {}
        for c in cols.ids:
            v = pd.to_numeric(chunk[cols.in_file[c]], errors="coerce")
            if c == "CASEID" and v.isna().any():
                raise DataReadError(f"{spec.name} file {path}: CASEID is empty or not a number in row "
                                    f"{offset + int(np.flatnonzero(v.isna().to_numpy())[0]) + 1}.")
            arr[c] = v.fillna(cb.MISSING_CODE).to_numpy().astype(np.int64)
        system_idx = _system_index(arr[spec.year_col])
        for c in cols.coded:
            s = chunk[cols.in_file[c]]
            if pd.api.types.is_numeric_dtype(s):
                v = s.to_numpy(dtype=float, na_value=np.nan)
                whole = np.isnan(v) | (v == np.round(v))
                v = np.where(np.isnan(v), cb.MISSING_CODE, np.where(whole, v, _UNKNOWN)).astype(np.int64)
            else:
                labelled.add(c)
                # map each distinct text once; factorize's -1 (missing) picks the last entry, -9
                index, uniq = pd.factorize(s.astype(object), use_na_sentinel=True)
                texts = [str(u).strip() for u in uniq]
                maps = _label_maps(texts, c)
                v = np.empty(n, dtype=np.int64)
                for i, system in enumerate(cb.CODE_SYSTEMS):
                    lut = np.array([maps[system][t] for t in texts] + [cb.MISSING_CODE], dtype=np.int64)
                    sel = system_idx == i
                    v[sel] = lut[index[sel]]
            arr[c] = v
        keep = np.ones(n, dtype=bool)
        if years is not None:
            keep &= np.isin(arr[spec.year_col], np.array([int(y) for y in years], dtype=np.int64))
        n_year += int(keep.sum())
        if iop_only:
            keep &= arr[spec.setting_col] == IOP_SERVICES_CODE
        for c, v in arr.items():
            parts[c].append(v[keep])
        parts["_row"].append(np.flatnonzero(keep) + offset + 1)
        offset += n
        n_file += n
    arrays = {c: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for c, v in parts.items()}
    bad = _bad_values(arrays, cols.coded, spec)
    if bad:
        lines, rows = [], []
        system_idx = _system_index(arrays[spec.year_col])
        for col, per_system in bad.items():
            hit = ~_valid(col, system_idx, arrays[col])
            idx = np.flatnonzero(hit)[:5]
            shown = [("unknown label" if v == _UNKNOWN else str(v)) for codes in per_system.values() for v in codes]
            where = "; ".join(f"row {arrays['_row'][j]} (CASEID {arrays['CASEID'][j]}, {spec.year_col} "
                              f"{arrays[spec.year_col][j]}): {arrays[col][j]}" for j in idx)
            lines.append(_bad_line(col, cols.in_file[col], per_system, shown, where))
            rows.append(_problem_row(spec, cols.in_file[col], per_system, where))
        raise _unknown_error(spec, path, lines, rows, years is not None or iop_only)
    arrays.pop("_row")
    return cols, _Raw(arrays, n_file, n_year, len(arrays["CASEID"]), sorted(labelled))


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in TEDS_FORMATS:
        raise DataReadError(f"Cannot tell the format of {path} from its suffix {suffix!r}; SAMHSA distributes "
                            f"TEDS as {', '.join(sorted(TEDS_FORMATS))}. Rename the file to its format's suffix.")
    return TEDS_FORMATS[suffix]


def _read_any(path, spec: _Spec, *, years, iop_only: bool, engine, chunk_rows: int,
              extra_required: Sequence[str] = ()) -> tuple[_Columns, _Raw, dict]:
    path = Path(path)
    if years is not None:
        years = [int(y) for y in years]
    fmt = _format_of(path)
    if fmt == "zip":
        if not path.exists():
            raise DataReadError(f"{spec.name} file not found: {path}.")
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if Path(m).suffix.lower() in TEDS_FORMATS
                       and Path(m).suffix.lower() != ".zip" and not Path(m).name.startswith(".")
                       and not m.startswith("__MACOSX")]
            if len(members) != 1:
                raise DataReadError(f"{path} holds {len(members)} data file(s) ({format_ids(members)}); a "
                                    f"SAMHSA download holds one. Extract the one to read and pass its path.")
            with tempfile.TemporaryDirectory(prefix="iop_teds_") as tmp:
                target = Path(tmp) / Path(members[0]).name
                with zf.open(members[0]) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=16 * 2**20)
                cols, raw, source = _read_any(target, spec, years=years, iop_only=iop_only, engine=engine,
                                              chunk_rows=chunk_rows, extra_required=extra_required)
        source.update(path=str(path), member=members[0])
        return cols, raw, source
    if fmt == "csv":
        names, sample = _header(path, spec)
        cols = _resolve_columns(names, spec, path, extra_required)
        raw = _read_csv(path, spec, cols, sample, years, iop_only, engine)
    else:
        if engine not in (None, "duckdb") and getattr(engine, "name", "") != "duckdb":
            raise DataReadError(f"engine={engine!r} is not supported for TEDS files; use engine='duckdb'.")
        cols, raw = _read_stat(path, fmt, spec, years, iop_only, chunk_rows, extra_required)
    source = {"path": str(path), "format": fmt, "labelled_columns": raw.labelled,
              "renamed_columns": dict(cols.renamed), "absent_columns": [c for c in spec.optional if c not in cols.in_file]}
    return cols, raw, source


# ---------------------------------------------------------------------------
# Decoding onto the harmonised vocabulary
# ---------------------------------------------------------------------------


def _decode(col: str, system_idx: np.ndarray, codes: np.ndarray, *, categories: list[str] | None = None,
            value_map: dict[str, str | None] | None = None, ordered: bool = False) -> pd.Categorical:
    """Harmonised categorical of ``col`` with each row decoded by its own code system."""
    var = cb.CODEBOOK[col]
    if categories is None:
        categories = list(var.vocabulary) if value_map is None else \
            list(dict.fromkeys(v for v in value_map.values() if v is not None))
    pos = {c: i for i, c in enumerate(categories)}
    offset = -cb.MISSING_CODE
    width = max([0] + [k for s in var.codes.values() for k in s]) + offset + 1
    table = np.full((len(cb.CODE_SYSTEMS), width), -1, dtype=np.int16)
    for i, system in enumerate(cb.CODE_SYSTEMS):
        for code, (value, _) in var.codes[system].items():
            target = value_map.get(value) if value_map is not None else value
            if target is not None and target in pos:
                table[i, code + offset] = pos[target]
    idx = np.clip(codes.astype(np.int64) + offset, 0, width - 1)  # codes were validated before
    return pd.Categorical.from_codes(table[system_idx, idx], categories=categories, ordered=ordered)


def _yes_no(codes: np.ndarray) -> pd.arrays.BooleanArray:
    out = pd.array(codes == 1, dtype="boolean")
    out[codes == cb.MISSING_CODE] = pd.NA
    return out


def _layout_column(years: np.ndarray) -> pd.Categorical:
    idx = np.where(years <= 2014, 0, np.where(years <= 2019, 1, 2)).astype(np.int8)
    idx[years == cb.MISSING_CODE] = -1
    return pd.Categorical.from_codes(idx, categories=list(cb.LAYOUTS))


def _common_columns(raw: dict[str, np.ndarray], system_idx: np.ndarray, cols: dict[str, object]) -> None:
    cols["has_mat_plan"] = _yes_no(raw["METHUSE"])
    cols["use_frequency_admission"] = _decode("FREQ1", system_idx, raw["FREQ1"], ordered=True)
    cols["primary_substance_teds"] = _decode("SUB1", system_idx, raw["SUB1"])
    cols["primary_substance"] = _decode("SUB1", system_idx, raw["SUB1"], categories=PrimarySubstance.values(),
                                        value_map=cb.SUB1_TO_PRIMARY)
    cols["prior_treatment"] = _decode("NOPRIOR", system_idx, raw["NOPRIOR"])
    nop = raw["NOPRIOR"].astype(np.int64)
    count = pd.array(np.clip(nop, 0, 5), dtype="Int8")
    count[(nop == cb.MISSING_CODE) | ((system_idx == 1) & (nop != 0))] = pd.NA
    cols["prior_treatment_episodes"] = count
    cols["psychiatric_comorbidity"] = _yes_no(raw["PSYPROB"])
    cols["sex"] = _decode("GENDER", system_idx, raw["GENDER"])
    cols["age_group"] = _decode("AGE", system_idx, raw["AGE"], ordered=True)
    cols["race"] = _decode("RACE", system_idx, raw["RACE"])
    detail = _decode("ETHNIC", system_idx, raw["ETHNIC"])
    cols["ethnicity"] = pd.Categorical(
        np.where(pd.isna(detail), None, np.where(np.asarray(detail.astype(object)) == "not_hispanic",
                                                  "not_hispanic", "hispanic")),
        categories=["hispanic", "not_hispanic"])
    cols["ethnicity_detail"] = detail


def _to_frame_d(raw: dict[str, np.ndarray], coded: list[str], include_admission_setting: bool,
                los_convention: str) -> pd.DataFrame:
    n = len(raw["CASEID"])
    year = raw["DISYR"].astype(np.int64)
    system_idx = _system_index(year)
    cols: dict[str, object] = {}
    cols["episode_id"] = raw["CASEID"].astype(np.int64).astype(str).astype(object)
    cols["discharge_year"] = year
    adm = pd.array(raw["ADMYR"].astype(np.int64) if "ADMYR" in raw else np.zeros(n, dtype=np.int64), dtype="Int16")
    if "ADMYR" in raw:
        adm[raw["ADMYR"] == cb.MISSING_CODE] = pd.NA
    else:
        adm[:] = pd.NA
    cols["admission_year"] = adm
    cols["teds_layout"] = _layout_column(year)
    cols["state"] = _decode("STFIPS", system_idx, raw["STFIPS"])
    if include_admission_setting:
        cols["admission_setting"] = _decode("SERVICES", system_idx, raw["SERVICES"])
    cols["discharge_setting"] = _decode("SERVICES_D", system_idx, raw["SERVICES_D"])
    cols["discharge_reason"] = _decode("REASON", system_idx, raw["REASON"], categories=DischargeReason.values())
    los = raw["LOS"].astype(np.int64)
    cols["los_code"] = _decode("LOS", system_idx, los, ordered=True)
    lo = np.full(38 + 9, np.nan)
    hi = np.full(38 + 9, np.nan)
    for code, (a, b) in cb.LOS_BOUNDS.items():
        lo[code + 9], hi[code + 9] = a, b
    lower, upper = lo[los + 9], hi[los + 9]
    if los_convention == "contract":
        # TEDS adds one day to outpatient stays; the contract counts discharge - admit, at least 1
        outpatient = np.isin(raw["SERVICES_D"], _OUTPATIENT_CODES)
        exact = lower == upper
        lower = np.where(outpatient, np.where(exact, np.maximum(lower - 1, 1), lower - 1), lower)
        upper = np.where(outpatient, np.where(exact, lower, upper - 1), upper)
    cols["los_days_lower"] = lower
    cols["los_days_upper"] = upper
    _common_columns(raw, system_idx, cols)
    if "FREQ1_D" in raw:
        cols["use_frequency_discharge"] = _decode("FREQ1_D", system_idx, raw["FREQ1_D"], ordered=True)
    else:  # 2006-2014 layout: not collected
        cols["use_frequency_discharge"] = pd.Categorical.from_codes(np.full(n, -1, dtype=np.int8),
                                                                    categories=list(cb.CODEBOOK["FREQ1_D"].vocabulary),
                                                                    ordered=True)
    order = ["episode_id", "discharge_year", "admission_year", "teds_layout", "state", "admission_setting",
             "discharge_setting", "discharge_reason", "los_code", "los_days_lower", "los_days_upper", "has_mat_plan",
             "use_frequency_admission", "use_frequency_discharge", "primary_substance_teds", "primary_substance",
             "prior_treatment", "prior_treatment_episodes", "psychiatric_comorbidity", "sex", "age_group", "race",
             "ethnicity", "ethnicity_detail"]
    return pd.DataFrame({c: cols[c] for c in order if c in cols}, index=pd.RangeIndex(n))


def _attrition(raw: _Raw, years, iop_only: bool, setting_col: str) -> list[dict]:
    return [
        {"step": "rows in file", "n_remaining": raw.n_file, "n_excluded": 0, "reason": ""},
        {"step": "year selected", "n_remaining": raw.n_year, "n_excluded": raw.n_file - raw.n_year,
         "reason": "year not in years" if years is not None else ""},
        {"step": f"IOP ({setting_col} == 6)" if iop_only else "all settings kept",
         "n_remaining": raw.n_keep, "n_excluded": raw.n_year - raw.n_keep,
         "reason": f"{setting_col} != 6 (not ambulatory intensive outpatient)" if iop_only else ""},
    ]


def read_teds_d(
    path: str | Path,
    *,
    years: Sequence[int] | None = None,
    iop_only: bool = True,
    include_admission_setting: bool = False,
    los_convention: str = "teds",
    engine=None,
    chunk_rows: int = 500_000,
) -> pd.DataFrame:
    """Read a SAMHSA TEDS-D public-use file into one row per (IOP) discharge, harmonised.

    Every layout SAMHSA has published is read: the 2006-2014 concatenated file (``SERVSETD``,
    no ``FREQ1_D``), the 2015-2019 files and the 2020+ files, coded or with text labels (the
    2021 file), as CSV, SAS (``.sas7bdat``, ``.xpt``), Stata (``.dta``), SPSS (``.sav``) or the
    ``.zip`` as downloaded. Each row is decoded with the code book of its discharge year
    (``DISYR``: up to 2014, or 2015 on; see :mod:`iop_research.datasets._codebook`) onto one
    harmonised vocabulary. CSV is read by DuckDB (explicit column types, latin-1, or UTF-8
    when the file is pure ASCII; only the needed columns of the kept rows reach pandas); the other formats by pyreadstat in chunks
    of ``chunk_rows`` rows.

    Parameters
    ----------
    path : str or pathlib.Path
        The public-use file; its format is told by its suffix (:data:`TEDS_FORMATS`).
    years : sequence of int, optional
        Discharge years (``DISYR``) to keep. Default None: all.
    iop_only : bool, default True
        Keep only IOP discharges (``SERVICES_D == 6``, ambulatory intensive outpatient).
        False keeps every setting.
    include_admission_setting : bool, default False
        Add ``admission_setting`` from ``SERVICES`` (in the 2017 and later code books only:
        the 2006-2014 and 2015 files have no setting at admission).
    los_convention : {"teds", "contract"}, default "teds"
        ``"teds"``: ``los_days_lower``/``los_days_upper`` are TEDS's length of stay, from
        admission to the date of last contact, plus one day for outpatient settings
        (``SERVICES_D`` 6, 7, 8). ``"contract"``: outpatient stays moved onto the toolkit's
        episode convention (``discharge - admit``, at least 1;
        :func:`iop_research.derive.episodes.build_episodes`): one day less, so exact days
        ``d`` become ``max(d - 1, 1)`` and a range ``(a, b]`` becomes ``(a - 1, b - 1]``.
        ``los_code`` is TEDS's code either way.
    engine : None, "duckdb" or an Ibis DuckDB backend, default None
        Where CSV files are read: a new in-process DuckDB connection, or the connection of a
        backend from :func:`iop_research.derive.engine.get_backend` (a temporary table is
        created there and dropped).
    chunk_rows : int, default 500_000
        Rows read at a time from SAS, Stata and SPSS files.

    Returns
    -------
    pandas.DataFrame
        One row per discharge, in file order, columns: ``episode_id`` (``CASEID`` as text),
        ``discharge_year`` (``DISYR``, int), ``admission_year`` (``ADMYR``, Int16; missing in
        the public-use files, which have no ``ADMYR``), ``teds_layout`` (``"2006-2014"``,
        ``"2015-2019"`` or ``"2020+"``, from ``DISYR``), ``state`` (USPS abbreviation),
        ``discharge_setting`` (and ``admission_setting``), ``discharge_reason``
        (:class:`~iop_research.data.schema.DischargeReason` values), ``los_code`` (ordered:
        ``"1"``..``"30"``, ``"31-45"``..``">365"``), ``los_days_lower`` and
        ``los_days_upper`` (float days: the stay lasted more than ``lower`` and at most
        ``upper`` days, R's ``Surv(lower, upper, type="interval2")``; exact stays have
        ``lower == upper``; ``upper`` is ``inf`` for more than a year), ``has_mat_plan``
        (``METHUSE``), ``use_frequency_admission`` / ``use_frequency_discharge``
        (``FREQ1``/``FREQ1_D``: none, some, daily; the 2006-2014 five levels harmonised, the
        discharge one missing where the layout has no ``FREQ1_D``), ``primary_substance_teds``
        (``SUB1`` harmonised TEDS categories), ``primary_substance``
        (:class:`~iop_research.data.schema.PrimarySubstance`; missing for "none"),
        ``prior_treatment`` (``NOPRIOR``: none / one_or_more, every layout),
        ``prior_treatment_episodes`` (Int8 count, 5 = five or more: known in 2006-2014; from
        2015 the code book only says "none" (0) or "one or more" (missing here)),
        ``psychiatric_comorbidity`` (``PSYPROB``), ``sex``, ``age_group`` (ordered, 55+
        harmonised), ``race``, ``ethnicity`` (hispanic/not_hispanic) and ``ethnicity_detail``
        (harmonised origin). Labelled columns are pandas categoricals; ``-9`` and empty cells
        are missing. ``attrs["teds_attrition"]`` (see :func:`teds_attrition`),
        ``attrs["teds_missing"]`` (see :func:`teds_missing`) and ``attrs["teds_source"]``
        (path, format, labelled, renamed and absent columns, LOS convention, layouts of the
        rows returned) describe the read.

    Raises
    ------
    DataReadError
        File missing or empty, unknown suffix, not comma-separated, a zip without exactly
        one data file, or a value that is not an integer in a numeric column.
    DataValidationError
        Required columns missing (listed), or codes/labels outside the code book of their
        year (column, values, first lines or rows, ``CASEID`` and year named; ``.problems``
        holds a table). Unknown codes are never guessed.

    Notes
    -----
    Layout detection: each row's code book comes from its ``DISYR`` (up to 2014: the
    2006-2014 codes; from 2015: the 2015+ codes), so a file that mixes years is decoded row
    by row; the columns say what the layout carries: ``SERVSETD`` is read as ``SERVICES_D``,
    ``FREQ1_D`` (2015 on) and ``SERVICES`` (2017 on) are read when present, and
    ``attrs["teds_source"]["absent_columns"]`` lists those a file lacks. The harmonised values
    and each code's meaning per layout are in :data:`iop_research.datasets._codebook.CODEBOOK`.

    See Also
    --------
    read_teds_a : admissions (TEDS-A) with the same machinery.
    write_teds_d_like : synthetic TEDS-D files of each layout.
    iop_research.survival.interval.fit_turnbull : retention from the interval-censored ``LOS``.

    References
    ----------
    .. [1] SAMHSA. TEDS-D 2006-2014, 2015, 2017 and 2019 public-use file codebooks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> f = write_teds_d_like(tmp / "teds.csv", n_rows=2000, layout="2006-2014", seed=1)
    >>> iop = read_teds_d(f)
    >>> bool((iop["discharge_setting"] == "intensive_outpatient").all()), iop["teds_layout"].iloc[0]
    (True, '2006-2014')
    >>> teds_attrition(iop)["step"].tolist()
    ['rows in file', 'year selected', 'IOP (SERVICES_D == 6)']
    """
    if los_convention not in ("teds", "contract"):
        raise DataValidationError(f"los_convention must be 'teds' or 'contract', got {los_convention!r}.")
    if int(chunk_rows) < 1:
        raise DataValidationError(f"chunk_rows must be >= 1, got {chunk_rows}.")
    extra = ["SERVICES"] if include_admission_setting else []
    cols, raw, source = _read_any(path, _SPEC_D, years=years, iop_only=iop_only, engine=engine,
                                  chunk_rows=int(chunk_rows), extra_required=extra)
    out = _to_frame_d(raw.arrays, cols.coded, include_admission_setting, los_convention)
    out.attrs["teds_attrition"] = _attrition(raw, years, iop_only, "SERVICES_D")
    out.attrs["teds_missing"] = {c: int(out[c].isna().sum()) for c in out.columns if c != "los_days_upper"}
    source["los_convention"] = los_convention
    source["layouts"] = [str(v) for v in out["teds_layout"].dropna().unique()]
    out.attrs["teds_source"] = source
    return out


def read_teds_a(
    path: str | Path,
    *,
    years: Sequence[int] | None = None,
    iop_only: bool = True,
    engine=None,
    chunk_rows: int = 500_000,
) -> pd.DataFrame:
    """Read a SAMHSA TEDS-A (admissions) public-use file with the TEDS-D machinery.

    TEDS-A has one row per admission and carries the setting at admission (``SERVICES``) and
    the MAT plan (``METHUSE``) for every admission, in every year. The variables it shares
    with TEDS-D are decoded with the same code books, by the admission year (``ADMYR``: up to
    2014, or 2015 on), onto the same harmonised vocabulary; formats as :func:`read_teds_d`.
    The TEDS-A code books are not among the shared tables: that they code the shared
    variables as TEDS-D of the same year is an assumption, checked by the code-book error
    on every value read.

    Parameters
    ----------
    path : str or pathlib.Path
        The public-use TEDS-A file (:data:`TEDS_FORMATS`).
    years : sequence of int, optional
        Admission years (``ADMYR``) to keep. Default None: all.
    iop_only : bool, default True
        Keep only IOP admissions (``SERVICES == 6``).
    engine : None, "duckdb" or an Ibis DuckDB backend, default None
        As :func:`read_teds_d`.
    chunk_rows : int, default 500_000
        Rows read at a time from SAS, Stata and SPSS files.

    Returns
    -------
    pandas.DataFrame
        One row per admission: ``episode_id``, ``admission_year``, ``teds_layout``,
        ``state``, ``admission_setting``, then the columns of :func:`read_teds_d` from
        ``has_mat_plan`` on except ``use_frequency_discharge``; ``attrs`` as there.

    Raises
    ------
    DataReadError, DataValidationError
        As :func:`read_teds_d`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = write_teds_a_like(pathlib.Path(tempfile.mkdtemp()) / "a.csv", n_rows=2000, seed=1)
    >>> adm = read_teds_a(f)
    >>> bool((adm["admission_setting"] == "intensive_outpatient").all())
    True
    """
    if int(chunk_rows) < 1:
        raise DataValidationError(f"chunk_rows must be >= 1, got {chunk_rows}.")
    _, raw, source = _read_any(path, _SPEC_A, years=years, iop_only=iop_only, engine=engine,
                                  chunk_rows=int(chunk_rows))
    arrays = raw.arrays
    year = arrays["ADMYR"].astype(np.int64)
    system_idx = _system_index(year)
    out: dict[str, object] = {
        "episode_id": arrays["CASEID"].astype(np.int64).astype(str).astype(object),
        "admission_year": year,
        "teds_layout": _layout_column(year),
        "state": _decode("STFIPS", system_idx, arrays["STFIPS"]),
        "admission_setting": _decode("SERVICES", system_idx, arrays["SERVICES"]),
    }
    _common_columns(arrays, system_idx, out)
    frame = pd.DataFrame(out, index=pd.RangeIndex(len(year)))
    frame.attrs["teds_attrition"] = _attrition(raw, years, iop_only, "SERVICES")
    frame.attrs["teds_missing"] = {c: int(frame[c].isna().sum()) for c in frame.columns}
    source["layouts"] = [str(v) for v in frame["teds_layout"].dropna().unique()]
    frame.attrs["teds_source"] = source
    return frame


def teds_attrition(frame: pd.DataFrame) -> pd.DataFrame:
    """The attrition table of a frame returned by :func:`read_teds_d` or :func:`read_teds_a`.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`read_teds_d` (its ``attrs["teds_attrition"]``).

    Returns
    -------
    pandas.DataFrame
        Columns ``step, n_remaining, n_excluded, reason``: rows in the file, after the
        year filter and after the IOP filter.

    Raises
    ------
    DataValidationError
        When ``frame`` carries no TEDS attrition (not read by a TEDS reader, or its
        ``attrs`` were dropped by a pandas operation).
    """
    rows = frame.attrs.get("teds_attrition")
    if rows is None:
        raise DataValidationError("This frame carries no TEDS attrition (attrs['teds_attrition']); "
                                  "pass the frame returned by read_teds_d before transforming it.")
    return pd.DataFrame(rows, columns=["step", "n_remaining", "n_excluded", "reason"])


def teds_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing (``-9`` or empty) values per column of a frame returned by a TEDS reader.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`read_teds_d` or :func:`read_teds_a`.

    Returns
    -------
    pandas.DataFrame
        Columns ``column, n_missing, percent_missing`` (percent of the rows returned).

    Raises
    ------
    DataValidationError
        When ``frame`` carries no ``attrs["teds_missing"]``.
    """
    counts = frame.attrs.get("teds_missing")
    if counts is None:
        raise DataValidationError("This frame carries no TEDS missing-value report "
                                  "(attrs['teds_missing']); pass the frame returned by read_teds_d.")
    n = max(len(frame), 1)
    return pd.DataFrame({"column": list(counts), "n_missing": list(counts.values()),
                         "percent_missing": [100.0 * v / n for v in counts.values()]})


# ---------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------

#: Columns written besides the decoded ones (drawn from their published frequencies).
_GEN_EXTRAS = ("MARSTAT", "EDUC", "EMPLOY", "EMPLOY_D", "VET", "LIVARAG", "ARRESTS", "REGION", "DIVISION",
               "PSOURCE", "ROUTE1", "FRSTUSE1", "SUB2", "IDU")
#: Reason shares among IOP discharges (TEDS 2004 [2]_), codes 1-7; the other settings' shares are
#: solved so that every setting together gives the code book's REASON marginal.
_P_REASON_IOP = np.array([0.38, 0.23, 0.14, 0.18, 0.03, 0.005, 0.035])
#: Latent log-stay shifts by setting (codes 1-8), reason (1-7) and MAT in the plan; the latent stay
#: is turned into LOS codes through the code book's LOS marginal (a Gaussian-mixture copula).
_LOS_SETTING = np.array([-1.6, -1.5, -0.5, -0.35, 0.45, 0.35, 0.55, -1.2])
_LOS_REASON = np.array([0.2, -0.2, -0.1, -0.1, -0.05, 0.0, -0.1])
_LOS_MAT = 0.2
_LOS_NOISE = 0.8
#: Share of MAT-in-plan (METHUSE = 1) discharges whose primary substance is an opioid.
_MAT_OPIOID_SHARE = 0.85
#: Probability that the admission setting equals the discharge setting.
_SAME_SETTING = 0.9
_MISSING_TEXT = "Missing/unknown/not collected/invalid"


def _probs(table: str, col: str) -> tuple[np.ndarray, np.ndarray]:
    f = FREQUENCIES[table][col]
    codes = np.array(list(f), dtype=np.int64)
    p = np.array(list(f.values()), dtype=float)
    return codes, p / p.sum()


def _draw_p(rng: np.random.Generator, codes: np.ndarray, p: np.ndarray, n: int) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 0, None)
    idx = np.searchsorted(np.cumsum(p / p.sum()), rng.random(n), side="right")
    return codes[np.minimum(idx, len(codes) - 1)].astype(np.int64)


def _draw(rng, table: str, col: str, n: int) -> np.ndarray:
    return _draw_p(rng, *_probs(table, col), n)


def _chunk(rng: np.random.Generator, table: str, n: int, dataset: str) -> dict[str, np.ndarray]:
    """``n`` synthetic rows drawn from code book ``table``'s published frequencies."""
    from scipy.special import ndtr

    out: dict[str, np.ndarray] = {}
    setting_col = "SERVICES_D" if dataset == "D" else "SERVICES"
    set_table = "SERVICES_D" if "SERVICES" not in FREQUENCIES[table] or dataset == "D" else "SERVICES"
    setting = _draw(rng, table, set_table, n)
    out[setting_col] = setting
    sub1 = _draw(rng, table, "SUB1", n)
    out["SUB1"] = sub1
    # METHUSE: published missing share and yes share, yes concentrated on opioid admissions
    m_codes, m_p = _probs(table, "METHUSE")
    p_missing = m_p[m_codes == cb.MISSING_CODE].sum()
    q = m_p[m_codes == 1].sum() / max(1e-12, 1 - p_missing)
    s_codes, s_p = _probs(table, "SUB1")
    p_op = s_p[np.isin(s_codes, (5, 6, 7))].sum()
    r1 = min(0.95, _MAT_OPIOID_SHARE * q / p_op)
    r0 = max(0.0, (q - r1 * p_op) / (1 - p_op))
    opioid = np.isin(sub1, (5, 6, 7))
    methuse = np.where(rng.random(n) < np.where(opioid, r1, r0), 1, 2)
    methuse[rng.random(n) < p_missing] = cb.MISSING_CODE
    out["METHUSE"] = methuse
    for col in ("STFIPS", "AGE", "GENDER", "RACE", "ETHNIC", "NOPRIOR", "FREQ1", "PSYPROB", *_GEN_EXTRAS):
        if col in FREQUENCIES[table]:
            out[col] = _draw(rng, table, col, n)
    if dataset == "D":
        if "FREQ1_D" in FREQUENCIES[table]:
            out["FREQ1_D"] = _draw(rng, table, "FREQ1_D", n)
        if "SERVICES" in FREQUENCIES[table]:
            x_codes, x_p = _probs(table, "SERVICES")
            d_codes, d_p = _probs(table, "SERVICES_D")
            p_d = np.array([d_p[d_codes == c].sum() for c in x_codes])
            other = _draw_p(rng, x_codes, np.clip(x_p - _SAME_SETTING * p_d, 0, None), n)
            same = (rng.random(n) < _SAME_SETTING) & np.isin(setting, x_codes)
            out["SERVICES"] = np.where(same, setting, other)
        # REASON: TEDS 2004 shares among IOP, the other settings solved to give the published marginal
        r_codes, r_p = _probs(table, "REASON")
        d_codes, d_p = _probs(table, "SERVICES_D")
        share = d_p[d_codes == IOP_SERVICES_CODE].sum()
        p_iop = np.array([_P_REASON_IOP[c - 1] if c > 0 else 0.0 for c in r_codes])
        p_other = np.clip((r_p - share * p_iop) / (1 - share), 0, None)
        iop = setting == IOP_SERVICES_CODE
        reason = np.where(iop, _draw_p(rng, r_codes, p_iop, n), _draw_p(rng, r_codes, p_other, n))
        out["REASON"] = reason
        # LOS: latent log stay by setting, reason and MAT, mapped through the published LOS marginal
        mu = (np.where(setting > 0, _LOS_SETTING[np.clip(setting, 1, 8) - 1], 0.0)
              + np.where(reason > 0, _LOS_REASON[np.clip(reason, 1, 7) - 1], 0.0) + _LOS_MAT * (methuse == 1))
        z = mu + _LOS_NOISE * rng.standard_normal(n)
        groups, counts = np.unique(np.round(mu, 6), return_counts=True)
        grid = np.linspace(z.min() - 1e-9, z.max() + 1e-9, 4097)
        cdf = (counts[None, :] * ndtr((grid[:, None] - groups[None, :]) / _LOS_NOISE)).sum(axis=1) / n
        u = np.interp(z, grid, cdf)
        l_codes, l_p = _probs(table, "LOS")
        ok = l_codes != cb.MISSING_CODE
        order = np.argsort(l_codes[ok])
        cum = np.cumsum(l_p[ok][order] / l_p[ok].sum())
        los = l_codes[ok][order][np.minimum(np.searchsorted(cum, u, side="right"), ok.sum() - 1)]
        los[rng.random(n) < l_p[~ok].sum()] = cb.MISSING_CODE
        out["LOS"] = los
    return out


def _gen_columns(layout: str, dataset: str, with_services: bool) -> list[str]:
    year_col = "DISYR" if dataset == "D" else "ADMYR"
    cols = ["CASEID", year_col, "AGE", "GENDER", "RACE", "ETHNIC", "MARSTAT", "EDUC", "EMPLOY"]
    if dataset == "D" and layout != "2006-2014":
        cols.append("EMPLOY_D")
    cols += ["VET", "LIVARAG", "ARRESTS", "STFIPS", "REGION", "DIVISION"]
    if dataset == "D":
        if with_services:
            cols.append("SERVICES")
        cols += ["SERVICES_D", "METHUSE", "REASON", "LOS"]
    else:
        cols += ["SERVICES", "METHUSE"]
    cols += ["PSOURCE", "NOPRIOR", "SUB1", "ROUTE1", "FREQ1"]
    if dataset == "D" and layout != "2006-2014":
        cols.append("FREQ1_D")
    cols += ["FRSTUSE1", "SUB2", "IDU", "PSYPROB"]
    return cols


_DEFAULT_YEARS = {"2006-2014": tuple(range(2006, 2015)), "2015-2019": (2019,), "2020+": (2021,)}


def _write_like(path, *, dataset: str, n_rows: int, layout: str, years, seed, labelled, sex_column: bool,
                chunk_rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if layout not in cb.LAYOUTS:
        raise DataValidationError(f"layout must be one of {', '.join(cb.LAYOUTS)}; got {layout!r}.")
    if int(n_rows) < 1 or int(chunk_rows) < 1:
        raise DataValidationError(f"n_rows ({n_rows}) and chunk_rows ({chunk_rows}) must be >= 1.")
    years_arr = np.array([int(y) for y in (_DEFAULT_YEARS[layout] if years is None else years)], dtype=np.int64)
    if len(years_arr) == 0:
        raise DataValidationError("years is empty; give at least one year, e.g. years=(2019,).")
    wrong = sorted({int(y) for y in years_arr if cb.layout_of_year(y) != layout})
    if wrong:
        raise DataValidationError(f"year(s) {wrong} do not belong to the {layout} layout (2006-2014: DISYR up to "
                                  "2014; 2015-2019; 2020+). Pick years of the layout, or another layout.")
    labelled = (layout == "2020+") if labelled is None else bool(labelled)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = np.array([cb.frequency_table(y) for y in years_arr])
    # TEDS-D files have SERVICES from the 2017 code book on; TEDS-A always has it
    with_services = dataset == "A" or all("SERVICES" in FREQUENCIES[t] for t in tables)
    columns = _gen_columns(layout, dataset, with_services)
    year_col = columns[1]
    rename = {"SERVICES_D": "SERVSETD"} if layout == "2006-2014" and dataset == "D" else {}
    if sex_column:
        rename["GENDER"] = "SEX"
    header = [rename.get(c, c) for c in columns]
    # years in proportion to the published DISYR counts (uniform when a year has none)
    year_w = np.array([FREQUENCIES[cb.frequency_table(y)]["DISYR"].get(int(y), 0) for y in years_arr], dtype=float)
    year_w = year_w if year_w.sum() > 0 and (year_w > 0).all() else np.ones(len(years_arr))
    labels = {}
    if labelled:
        offset = -cb.MISSING_CODE
        for col, var in cb.CODEBOOK.items():
            width = max([0] + [k for s in var.codes.values() for k in s]) + offset + 1
            lab = [str(i - offset) for i in range(width)] * len(cb.CODE_SYSTEMS)
            for i, system in enumerate(cb.CODE_SYSTEMS):
                lab[i * width] = _MISSING_TEXT
                for code, (_, text) in var.codes[system].items():
                    lab[i * width + code + offset] = text
            labels[col] = (pa.array(lab, type=pa.string()), width)
    opts = pacsv.WriteOptions(include_header=False, quoting_style="needed" if labelled else "none")
    written = 0
    first_id = int(years_arr.min()) * 10**8 + 1
    with open(path, "wb") as fh:
        fh.write((",".join(header) + "\n").encode("latin-1"))
        while written < n_rows:
            m = min(int(chunk_rows), int(n_rows) - written)
            yr = years_arr[_draw_p(rng, np.arange(len(years_arr)), year_w, m)]
            arrays: dict[str, np.ndarray] = {c: np.full(m, cb.MISSING_CODE, dtype=np.int64) for c in columns}
            for t in np.unique(tables):
                sel = np.isin(yr, years_arr[tables == t])
                part = _chunk(rng, str(t), int(sel.sum()), dataset)
                for c, v in part.items():
                    if c in arrays:
                        arrays[c][sel] = v
            arrays["CASEID"] = first_id + written + np.arange(m, dtype=np.int64)
            arrays[year_col] = yr
            system_idx = _system_index(yr).astype(np.int64)
            cols = []
            for c in columns:
                a = arrays[c]
                if c in labels:
                    lab, width = labels[c]
                    cols.append(lab.take(pa.array(system_idx * width + a - cb.MISSING_CODE)))
                else:
                    cols.append(pa.array(a))
            pacsv.write_csv(pa.Table.from_arrays(cols, names=header), fh, write_options=opts)
            written += m
    return path


def write_teds_d_like(
    path: str | Path,
    *,
    n_rows: int,
    layout: str = "2015-2019",
    years: Sequence[int] | None = None,
    seed: int | np.random.Generator,
    labelled: bool | None = None,
    sex_column: bool = False,
    chunk_rows: int = 1_000_000,
) -> Path:
    """Write a synthetic TEDS-D CSV of one published layout, drawn from its code book (no real record).

    Every variable is drawn from the published frequencies of the code book of its row's
    discharge year (:data:`iop_research.datasets.teds_frequencies.FREQUENCIES`: the
    2006-2014 code book; 2015 for 2015-2016, 2017 for 2017-2018, 2019 for 2019 and later),
    including its missing share (``-9``) and the IOP share of ``SERVICES_D`` (12.4% in
    2006-2014, 13.3-14.1% from 2015). Four variables are drawn jointly, each keeping its
    published marginal: ``REASON`` has the TEDS 2004 shares among IOP discharges (38%
    completed, 23% dropped out, 14% terminated, 18% transferred) and shares solved from the
    marginal elsewhere; ``METHUSE`` yes is concentrated on opioid primary substances (85% of
    the yes); ``LOS`` comes from a latent log stay shifted by setting, reason and MAT in the
    plan (``_LOS_*``; completers stay longer than dropouts, MAT stays longer), mapped onto the
    published ``LOS`` marginal through the latent variable's own distribution (a Gaussian
    mixture copula); ``SERVICES`` equals ``SERVICES_D`` for 90% of rows. Everything else is
    independent. The file has the layout's columns: ``SERVSETD`` and no ``FREQ1_D`` in
    2006-2014, ``SERVICES`` only when every year's code book has it (2017 on), text labels in
    the coded columns for ``"2020+"`` (as the 2021 file; other columns stay codes). Rows are
    generated and written in chunks, so 15 million rows need a few hundred MB of memory.

    Parameters
    ----------
    path : str or pathlib.Path
        File to write (parent directories are created).
    n_rows : int
        Number of discharges (rows), >= 1.
    layout : {"2006-2014", "2015-2019", "2020+"}, default "2015-2019"
        Published layout to imitate.
    years : sequence of int, optional
        Discharge years, all of the layout; drawn in proportion to the published ``DISYR``
        counts. Default: 2006-2014, 2019 or 2021 by layout.
    seed : int or numpy.random.Generator
        Source of randomness.
    labelled : bool, optional
        Write code-book text labels instead of codes in the decoded columns. Default: True
        for ``"2020+"`` only.
    sex_column : bool, default False
        Name ``GENDER`` ``SEX`` as the 2023 file.
    chunk_rows : int, default 1_000_000
        Rows generated and written at a time.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    DataValidationError
        Unknown layout, years outside it, ``n_rows`` or ``chunk_rows`` below 1, or no years.

    References
    ----------
    .. [1] SAMHSA. TEDS-D code books 2006-2014, 2015, 2017, 2019 (published frequencies).
    .. [2] SAMHSA (2006). Treatment Episode Data Set (TEDS) highlights 2004, DASIS S-31.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = write_teds_d_like(pathlib.Path(tempfile.mkdtemp()) / "t.csv", n_rows=5, layout="2006-2014", seed=3)
    >>> f.read_text(encoding="latin-1").splitlines()[0][:40]
    'CASEID,DISYR,AGE,GENDER,RACE,ETHNIC,MARS'
    """
    return _write_like(path, dataset="D", n_rows=n_rows, layout=layout, years=years, seed=seed,
                       labelled=labelled, sex_column=sex_column, chunk_rows=chunk_rows)


def write_teds_a_like(
    path: str | Path,
    *,
    n_rows: int,
    layout: str = "2015-2019",
    years: Sequence[int] | None = None,
    seed: int | np.random.Generator,
    labelled: bool | None = None,
    chunk_rows: int = 1_000_000,
) -> Path:
    """Write a synthetic TEDS-A (admissions) CSV, drawn as :func:`write_teds_d_like`.

    The admission-side variables of the TEDS-D code book of each row's year (``ADMYR``); the
    setting at admission ``SERVICES`` from its published frequencies where the code book
    has them (2017 on) and from ``SERVICES_D``'s before. No discharge variables.

    Parameters
    ----------
    path, n_rows, layout, years, seed, labelled, chunk_rows
        As :func:`write_teds_d_like` (``years`` are admission years).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    DataValidationError
        As :func:`write_teds_d_like`.
    """
    return _write_like(path, dataset="A", n_rows=n_rows, layout=layout, years=years, seed=seed,
                       labelled=labelled, sex_column=False, chunk_rows=chunk_rows)
