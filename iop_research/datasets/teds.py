"""TEDS-D public-use files: a reader onto the toolkit's vocabulary, and a generator of look-alikes.

The SAMHSA *Treatment Episode Data Set: Discharges* (TEDS-D) public-use file has one row per
discharge (about 1.5 million a year), upper-case column names, numeric codes with ``-9`` for
missing, latin-1 encoding, and no dates or person linkage. Intensive outpatient (IOP)
episodes are those discharged from ``SERVICES_D == 6`` (ambulatory, intensive outpatient).
Length of stay (``LOS``) is exact for 1-30 days and a range above that, so retention is
interval-censored (see :mod:`iop_research.survival.interval`).

:func:`read_teds_d` (also exported by :mod:`iop_research.datasets`) reads such a file with
DuckDB, keeping only the columns and rows it needs before anything reaches pandas.
:func:`write_teds_d_like` writes a synthetic file with the real column names and realistic
code distributions, for tests, demos and benchmarks (no real record is used).

References
----------
.. [1] Substance Abuse and Mental Health Services Administration (2023). Treatment Episode
   Data Set (TEDS) Discharges, 2021: Public-use file codebook. Rockville, MD: SAMHSA.
.. [2] SAMHSA (2006). Treatment Episode Data Set (TEDS) highlights 2004 (IOP discharge
   reasons and lengths of stay), DASIS Series S-31.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from iop_research.datasets import _codebook as cb
from iop_research.exceptions import DataReadError, DataValidationError, format_ids
from iop_research.data.schema import DischargeReason, PrimarySubstance

__all__ = ["read_teds_d", "write_teds_d_like", "teds_attrition", "teds_missing", "IOP_SERVICES_CODE"]

#: ``SERVICES_D`` code of ambulatory intensive outpatient treatment.
IOP_SERVICES_CODE = 6

_UNKNOWN = -32768  # sentinel of a label or code that the codebook does not know
_INT_RE = re.compile(r"^\s*-?\d+\s*$")
_SAMPLE_ROWS = 2000


# ---------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------


def _header(path: Path) -> tuple[list[str], list[list[str]]]:
    """Column names (as in the file) and the first data rows, read with latin-1."""
    try:
        with open(path, encoding="latin-1", newline="") as fh:
            first = fh.readline()
            if not first.strip():
                raise DataReadError(f"TEDS-D file {path} is empty: it has no header line. "
                                    "Download the public-use CSV again.")
            if "," not in first:
                found = [name for d, name in (("\t", "tab"), (";", "';'"), ("|", "'|'")) if d in first]
                how = f"it looks {found[0]}-delimited" if found else "its header has a single column"
                raise DataReadError(
                    f"TEDS-D file {path} is not comma-separated ({how}; header starts "
                    f"{first[:60]!r}). The public-use file is a comma-separated CSV: export it "
                    "with ',' as delimiter.")
            # a UTF-8 byte-order mark, read as latin-1
            names = next(csv.reader([first.removeprefix("\u00ef\u00bb\u00bf")]))
            reader = csv.reader(fh)
            sample = []
            for row in reader:
                sample.append(row)
                if len(sample) >= _SAMPLE_ROWS:
                    break
    except FileNotFoundError as exc:
        raise DataReadError(f"TEDS-D file not found: {path}. Pass the path of the public-use CSV "
                            "(e.g. tedsd_puf_2019.csv).") from exc
    except IsADirectoryError as exc:
        raise DataReadError(f"{path} is a directory; pass the path of the TEDS-D CSV file.") from exc
    return [n.strip() for n in names], sample


def _labelled_columns(names: list[str], sample: list[list[str]], wanted: Iterable[str]) -> set[str]:
    """Coded columns whose sampled values hold text rather than integer codes."""
    out = set()
    for col in wanted:
        j = names.index(col)
        for row in sample:
            if j < len(row):
                v = row[j].strip()
                if v and not _INT_RE.match(v):
                    out.add(col)
                    break
    return out


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _label_codes(values: Iterable[object], col: str) -> dict[str, int]:
    """Map the distinct texts of a labelled (or mixed) column to codes; unknown -> sentinel."""
    by_label = {cb.normalise_label(lab): code for code, (_, lab) in cb.CODEBOOK[col].codes.items()}
    by_label.update({m: cb.MISSING_CODE for m in cb.MISSING_LABELS})
    out = {}
    for v in values:
        if v is None:
            continue
        text = str(v)
        if _INT_RE.match(text):
            out[text] = int(text)
        else:
            out[text] = by_label.get(cb.normalise_label(text), _UNKNOWN)
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _case_sql(col: str, mapping: dict[str, int]) -> str:
    whens = " ".join(f"WHEN {_sql_str(k)} THEN {v}" for k, v in mapping.items())
    return (f"CAST(CASE WHEN {col} IS NULL THEN {cb.MISSING_CODE} ELSE CASE {col} {whens} "
            f"ELSE {_UNKNOWN} END END AS SMALLINT)")


def _lookup(col: str, categories: list[str]) -> tuple[np.ndarray, int]:
    codes = cb.CODEBOOK[col].codes
    offset = -cb.MISSING_CODE
    table = np.full(max(codes) + offset + 1, -1, dtype=np.int16)
    pos = {c: i for i, c in enumerate(categories)}
    for code, (value, _) in codes.items():
        if value in pos:
            table[code + offset] = pos[value]
    return table, offset


def _categorical(codes: np.ndarray, col: str, categories: list[str] | None = None,
                 ordered: bool = False, value_map: dict[int, str | None] | None = None) -> pd.Categorical:
    if value_map is not None:
        if categories is None:
            categories = list(dict.fromkeys(v for v in value_map.values() if v is not None))
        offset = -cb.MISSING_CODE
        table = np.full(max(value_map) + offset + 1, -1, dtype=np.int16)
        pos = {c: i for i, c in enumerate(categories)}
        for code, value in value_map.items():
            if value is not None:
                table[code + offset] = pos[value]
    else:
        if categories is None:
            categories = list(dict.fromkeys(v for v, _ in cb.CODEBOOK[col].codes.values()))
        table, offset = _lookup(col, categories)
    return pd.Categorical.from_codes(table[codes.astype(np.int32) + offset], categories=categories,
                                     ordered=ordered)


def _yes_no(codes: np.ndarray) -> pd.array:
    out = pd.array(codes == 1, dtype="boolean")
    out[codes == cb.MISSING_CODE] = pd.NA
    return out


def _unknown_report(con, source: str, names_out: dict[str, str], bad: dict[str, tuple[int, list[str]]],
                    where: str, path: Path) -> DataValidationError:
    """Error naming each column with unknown codes, the codes and their first CSV lines."""
    rows, lines = [], []
    for col, (n_bad, shown) in bad.items():
        raw = names_out[col]
        listed = ", ".join(_sql_str(v) for v in shown[:50])
        expr = f"CAST({_q(raw)} AS VARCHAR)"
        q = (f"SELECT line, caseid, val FROM (SELECT row_number() OVER () + 1 AS line, "
             f"CAST({_q(names_out['CASEID'])} AS VARCHAR) AS caseid, trim({expr}) AS val FROM {source}) "
             f"WHERE val IN ({listed}) ORDER BY line LIMIT 5")
        try:
            hits = con.sql(q).fetchall()
        except Exception:  # pragma: no cover - diagnostics only
            hits = []
        where_txt = "; ".join(f"line {h[0]} (CASEID {h[1]}): {h[2]!r}" for h in hits)
        known = ", ".join(str(c) for c in cb.CODEBOOK[col].codes)
        lines.append(f"- {raw}: {n_bad:,} row(s) with unknown value(s) {format_ids(shown)}; "
                     f"first: {where_txt}. Known codes: {known} and {cb.MISSING_CODE} (missing).")
        rows.append({"table": "teds_d", "column": raw, "check": "codebook", "n_failures": n_bad,
                     "examples": where_txt, "fix": "correct the value or check the file's year and codebook"})
    msg = (f"TEDS-D file {path} holds codes or labels that are not in the codebook{where} "
           f"(iop_research.datasets._codebook); nothing is guessed:\n" + "\n".join(lines) +
           "\nFix the source rows, or map the new codes to known ones before reading.")
    return DataValidationError(msg, problems=pd.DataFrame(rows))


def read_teds_d(
    path: str | Path,
    *,
    years: Sequence[int] | None = None,
    iop_only: bool = True,
    include_admission_setting: bool = False,
    engine: str = "duckdb",
) -> pd.DataFrame:
    """Read a SAMHSA TEDS-D public-use CSV into one row per (IOP) discharge, with labels.

    The file is read by DuckDB (``read_csv`` with explicit column types, latin-1) and only
    the codebook columns of the kept rows reach pandas, so a ten-year file of 15 million
    rows needs well under the memory of the file itself. Year-specific layouts are
    recognised: ``SERVSETD``/``SERVSETA`` (2006-2014) are read as ``SERVICES_D``/
    ``SERVICES``, ``SEX`` (2023) as ``GENDER``, and columns holding text labels (the 2021
    file) are mapped back to codes through the codebook (case and spacing ignored).

    Parameters
    ----------
    path : str or pathlib.Path
        The public-use CSV (comma-separated, header row, latin-1 or ASCII).
    years : sequence of int, optional
        Discharge years (``DISYR``) to keep. Default None: all.
    iop_only : bool, default True
        Keep only IOP discharges (``SERVICES_D == 6``, ambulatory intensive outpatient),
        filtered in SQL before pandas. False keeps every setting.
    include_admission_setting : bool, default False
        Add ``admission_setting`` from ``SERVICES`` (``SERVSETA``); the column is then required.
    engine : {"duckdb"}, default "duckdb"
        Reader engine (DuckDB in process; the only one).

    Returns
    -------
    pandas.DataFrame
        One row per discharge, in file order, columns: ``episode_id`` (``CASEID`` as text),
        ``discharge_year`` (``DISYR``, int), ``admission_year`` (``ADMYR``, nullable Int16;
        all missing when the file has no ``ADMYR``), ``state`` (USPS abbreviation from ``STFIPS``),
        ``discharge_setting`` (and ``admission_setting``), ``discharge_reason``
        (:class:`~iop_research.data.schema.DischargeReason` values), ``los_code`` (ordered:
        ``"1"``..``"30"``, ``"31-45"``.. ``">365"``), ``los_days_lower`` and
        ``los_days_upper`` (float days: the stay lasted more than ``lower`` and at most
        ``upper`` days, R's ``Surv(lower, upper, type="interval2")``; exact stays have
        ``lower == upper``; ``upper`` is ``inf`` for more than 365 days), ``has_mat_plan``
        (``METHUSE``, boolean), ``use_frequency_admission`` / ``use_frequency_discharge``
        (``FREQ1``/``FREQ1_D``: none, some, daily), ``primary_substance_teds`` (``SUB1``
        TEDS categories), ``primary_substance`` (:class:`~iop_research.data.schema.PrimarySubstance`;
        missing for "none"), ``prior_treatment_episodes`` (``NOPRIOR``, Int8, 5 = five or
        more), ``psychiatric_comorbidity`` (``PSYPROB``, boolean), ``sex`` (male/female),
        ``age_group`` (ordered), ``race``, ``ethnicity`` (hispanic/not_hispanic).
        Labelled columns are pandas categoricals; ``-9`` (and empty cells) are missing.
        ``attrs["teds_attrition"]`` (rows read and excluded at each step, see
        :func:`teds_attrition`), ``attrs["teds_missing"]`` (missing count per output
        column, see :func:`teds_missing`) and ``attrs["teds_source"]`` (path, labelled
        columns, renamed columns) describe the read.

    Raises
    ------
    DataReadError
        File missing or empty, not comma-separated, or a value that is not an integer in a
        numeric column (the column and line are named).
    DataValidationError
        Required columns missing (listed), or codes/labels absent from the codebook (column,
        values, first lines and CASEIDs named; ``.problems`` holds a table). Unknown codes
        are never guessed.

    See Also
    --------
    write_teds_d_like : synthetic TEDS-D-format files.
    iop_research.survival.interval.fit_turnbull : retention from the interval-censored ``LOS``.

    References
    ----------
    .. [1] SAMHSA (2023). Treatment Episode Data Set (TEDS) Discharges 2021, codebook.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> f = write_teds_d_like(tmp / "teds.csv", n_rows=2000, seed=1)
    >>> iop = read_teds_d(f)
    >>> bool((iop["discharge_setting"] == "intensive_outpatient").all())
    True
    >>> teds_attrition(iop)["step"].tolist()
    ['rows in file', 'discharge year selected', 'IOP discharge (SERVICES_D == 6)']
    """
    if engine != "duckdb":
        raise DataReadError(f"engine={engine!r} is not supported for TEDS-D; use engine='duckdb'.")
    import duckdb

    path = Path(path)
    names, sample = _header(path)
    upper = [n.upper() for n in names]
    # current name -> name in the file
    in_file = {u: n for u, n in zip(upper, names)}
    renamed = {}
    for old, new in cb.ALIASES.items():
        if old in in_file and new not in in_file:
            in_file[new] = in_file.pop(old)
            renamed[old] = new
    required = list(cb.REQUIRED_COLUMNS) + (["SERVICES"] if include_admission_setting else [])
    missing = [c for c in required if c not in in_file]
    if missing:
        alias_hint = {v: k for k, v in cb.ALIASES.items()}
        shown = ", ".join(f"{c} (or {alias_hint[c]})" if c in alias_hint else c for c in missing)
        raise DataValidationError(
            f"TEDS-D file {path} lacks required column(s) {shown}; found {len(names)} column(s): "
            f"{format_ids(names, 12)}. Use the full public-use TEDS-D file (discharges), not "
            "TEDS-A (admissions) or an extract without these columns.",
            problems=pd.DataFrame([{"table": "teds_d", "column": c, "check": "column_present",
                                    "n_failures": 1, "examples": "", "fix": "add the column"} for c in missing]))
    coded = [c for c in cb.CODEBOOK if c in required]
    has_admyr = "ADMYR" in in_file
    labelled = _labelled_columns(names, sample, [in_file[c] for c in coded])
    labelled_cur = {c for c in coded if in_file[c] in labelled}

    def _source_and_selects(labelled_cur: set[str]) -> tuple[str, list[str]]:
        types = {}
        for n in names:
            u = n.upper()
            cur = cb.ALIASES.get(u, u) if renamed.get(u) else u
            if cur == "CASEID":
                types[n] = "BIGINT"
            elif cur in ("DISYR", "ADMYR"):
                types[n] = "INTEGER"
            elif cur in coded and cur not in labelled_cur and in_file.get(cur) == n:
                types[n] = "SMALLINT"
            else:
                types[n] = "VARCHAR"
        col_spec = "{" + ", ".join(f"{_sql_str(k)}: {_sql_str(v)}" for k, v in types.items()) + "}"
        source = (f"read_csv({_sql_str(str(path))}, header=true, delim=',', quote='\"', "
                  f"encoding='latin-1', auto_detect=false, columns={col_spec})")
        selects = [f"{_q(in_file['CASEID'])} AS CASEID", f"COALESCE({_q(in_file['DISYR'])}, -9) AS DISYR"]
        if has_admyr:
            selects.append(f"COALESCE({_q(in_file['ADMYR'])}, -9) AS ADMYR")
        for c in coded:
            if c in labelled_cur:
                selects.append(f"trim({_q(in_file[c])}) AS {c}")
            else:
                selects.append(f"COALESCE({_q(in_file[c])}, {cb.MISSING_CODE}) AS {c}")
        return source, selects

    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")  # no stderr output in notebooks
    except duckdb.Error:
        # inside Jupyter without ipywidgets DuckDB refuses the setting; it draws no bar there anyway
        pass
    try:
        while True:
            source, selects = _source_and_selects(labelled_cur)
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE teds AS SELECT {', '.join(selects)} FROM {source}")
                break
            except duckdb.Error as exc:  # conversion / malformed-line errors
                # text in a coded column beyond the sampled rows: read that column as text and
                # map it like a labelled one (unknown texts are then reported with their lines)
                m = re.search(r'[Cc]olumn\s*:?\s*"?([A-Za-z0-9_]+)', str(exc))
                cur = next((c for c in coded if m and in_file[c] == m.group(1)), None)
                if cur is None or cur in labelled_cur:
                    raise _read_error(path, exc) from exc
                labelled_cur = labelled_cur | {cur}
        # labelled columns: map each distinct text once (in Python), then by exact match in SQL
        exprs = {c: c for c in coded}
        label_maps: dict[str, dict[str, int]] = {}
        for c in sorted(labelled_cur):
            distinct = [r[0] for r in con.execute(f"SELECT DISTINCT {c} FROM teds").fetchall()]
            label_maps[c] = _label_codes(distinct, c)
            exprs[c] = _case_sql(c, label_maps[c])
        year_cond = "TRUE"
        if years is not None:
            years = [int(y) for y in years]
            year_cond = f"DISYR IN ({', '.join(str(y) for y in years)})" if years else "FALSE"
        iop_cond = f"({exprs['SERVICES_D']}) = {IOP_SERVICES_CODE}" if iop_only else "TRUE"
        n_file, n_year, n_keep = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {year_cond}), "
            f"count(*) FILTER (WHERE {year_cond} AND {iop_cond}) FROM teds").fetchone()
        fields = ["CASEID", "DISYR"] + (["ADMYR"] if has_admyr else []) + [f"{exprs[c]} AS {c}" for c in coded]
        raw = con.execute(f"SELECT {', '.join(fields)} FROM teds WHERE {year_cond} AND {iop_cond}").fetchnumpy()
        raw = {k: np.asarray(v) for k, v in raw.items()}
        bad: dict[str, tuple[int, list[str]]] = {}
        for c in coded:
            v = raw[c]
            valid = np.array(list(cb.CODEBOOK[c].codes) + [cb.MISSING_CODE], dtype=v.dtype)
            ok = np.isin(v, valid)
            if ok.all():
                continue
            if c in labelled_cur:
                badset = set(np.unique(v[~ok]).tolist())
                shown = sorted(k for k, code in label_maps[c].items() if code in badset)
            else:
                shown = [str(x) for x in np.unique(v[~ok])]
            bad[c] = (int((~ok).sum()), shown)
        if bad:
            scope = "" if iop_only is False and years is None else " among the rows selected"
            raise _unknown_report(con, source, in_file, bad, scope, path)
    finally:
        con.close()

    out = _to_frame(raw, coded, has_admyr)
    out.attrs["teds_attrition"] = [
        {"step": "rows in file", "n_remaining": int(n_file), "n_excluded": 0, "reason": ""},
        {"step": "discharge year selected", "n_remaining": int(n_year), "n_excluded": int(n_file - n_year),
         "reason": "DISYR not in years" if years is not None else ""},
        {"step": "IOP discharge (SERVICES_D == 6)" if iop_only else "all settings kept",
         "n_remaining": int(n_keep), "n_excluded": int(n_year - n_keep),
         "reason": "SERVICES_D != 6 (not ambulatory intensive outpatient)" if iop_only else ""},
    ]
    out.attrs["teds_missing"] = {col: int(out[col].isna().sum()) for col in out.columns
                                 if col not in ("los_days_upper",)}
    out.attrs["teds_source"] = {"path": str(path), "labelled_columns": sorted(labelled_cur),
                                "renamed_columns": dict(renamed)}
    return out


def _read_error(path: Path, exc: Exception) -> DataReadError:
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
        f"Could not read TEDS-D file {path}{where}: {first}. Numeric columns (CASEID, DISYR, "
        "ADMYR and the coded variables) must hold integers (or codebook labels); check for a "
        "truncated file, stray text or a different delimiter.")


def _to_frame(raw: dict[str, np.ndarray], coded: list[str], has_admyr: bool) -> pd.DataFrame:
    n = len(raw["CASEID"])
    cols: dict[str, object] = {}
    cols["episode_id"] = raw["CASEID"].astype(np.int64).astype(str).astype(object)
    cols["discharge_year"] = raw["DISYR"].astype(np.int64)
    if has_admyr:
        adm = pd.array(raw["ADMYR"].astype(np.int64), dtype="Int16")
        adm[raw["ADMYR"] == cb.MISSING_CODE] = pd.NA
    else:  # same columns whatever the file's year: all missing
        adm = pd.array([pd.NA] * n, dtype="Int16")
    cols["admission_year"] = adm
    cols["state"] = _categorical(raw["STFIPS"], "STFIPS")
    if "SERVICES" in coded:
        cols["admission_setting"] = _categorical(raw["SERVICES"], "SERVICES")
    cols["discharge_setting"] = _categorical(raw["SERVICES_D"], "SERVICES_D")
    cols["discharge_reason"] = _categorical(raw["REASON"], "REASON", categories=DischargeReason.values())
    los = raw["LOS"].astype(np.int32)
    cols["los_code"] = _categorical(los, "LOS", ordered=True)
    lo = np.full(38 + 9, np.nan)
    hi = np.full(38 + 9, np.nan)
    for code, (a, b) in cb.LOS_BOUNDS.items():
        lo[code + 9], hi[code + 9] = a, b
    cols["los_days_lower"] = lo[los + 9]
    cols["los_days_upper"] = hi[los + 9]
    cols["has_mat_plan"] = _yes_no(raw["METHUSE"])
    cols["use_frequency_admission"] = _categorical(raw["FREQ1"], "FREQ1", ordered=True)
    cols["use_frequency_discharge"] = _categorical(raw["FREQ1_D"], "FREQ1_D", ordered=True)
    cols["primary_substance_teds"] = _categorical(raw["SUB1"], "SUB1")
    cols["primary_substance"] = _categorical(raw["SUB1"], "SUB1", categories=PrimarySubstance.values(),
                                             value_map=cb.SUB1_TO_PRIMARY)
    nop = pd.array(raw["NOPRIOR"].astype(np.int64), dtype="Int8")
    nop[raw["NOPRIOR"] == cb.MISSING_CODE] = pd.NA
    cols["prior_treatment_episodes"] = nop
    cols["psychiatric_comorbidity"] = _yes_no(raw["PSYPROB"])
    cols["sex"] = _categorical(raw["GENDER"], "GENDER")
    cols["age_group"] = _categorical(raw["AGE"], "AGE", ordered=True)
    cols["race"] = _categorical(raw["RACE"], "RACE")
    cols["ethnicity"] = _categorical(raw["ETHNIC"], "ETHNIC")
    return pd.DataFrame(cols, index=pd.RangeIndex(n))


def teds_attrition(frame: pd.DataFrame) -> pd.DataFrame:
    """The attrition table of a frame returned by :func:`read_teds_d`.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`read_teds_d` (its ``attrs["teds_attrition"]``).

    Returns
    -------
    pandas.DataFrame
        Columns ``step, n_remaining, n_excluded, reason``: rows in the file, after the
        discharge-year filter and after the IOP filter.

    Raises
    ------
    DataValidationError
        When ``frame`` carries no TEDS-D attrition (not read by :func:`read_teds_d`, or its
        ``attrs`` were dropped by a pandas operation).
    """
    rows = frame.attrs.get("teds_attrition")
    if rows is None:
        raise DataValidationError("This frame carries no TEDS-D attrition (attrs['teds_attrition']); "
                                  "pass the frame returned by read_teds_d before transforming it.")
    return pd.DataFrame(rows, columns=["step", "n_remaining", "n_excluded", "reason"])


def teds_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing (``-9`` or empty) values per column of a frame returned by :func:`read_teds_d`.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`read_teds_d`.

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
        raise DataValidationError("This frame carries no TEDS-D missing-value report "
                                  "(attrs['teds_missing']); pass the frame returned by read_teds_d.")
    n = max(len(frame), 1)
    return pd.DataFrame({"column": list(counts), "n_missing": list(counts.values()),
                         "percent_missing": [100.0 * v / n for v in counts.values()]})


# ---------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------

#: Columns of the generated file, in the order of recent public-use files (a subset).
_GEN_COLUMNS = ("ADMYR", "CASEID", "DISYR", "STFIPS", "EDUC", "MARSTAT", "SERVICES", "SERVICES_D",
                "REASON", "EMPLOY", "EMPLOY_D", "LOS", "PSOURCE", "NOPRIOR", "ARRESTS", "METHUSE",
                "PSYPROB", "GENDER", "VET", "LIVARAG", "DAYWAIT", "AGE", "RACE", "ETHNIC", "SUB1",
                "SUB2", "ROUTE1", "FREQ1", "FREQ1_D", "FRSTUSE1", "IDU", "REGION", "DIVISION")

# discharge setting codes 1..8 (IOP = 6, about 10% of discharges)
_P_SETTING = np.array([0.03, 0.12, 0.01, 0.09, 0.05, 0.10, 0.55, 0.05])
# reason 1..7 among IOP discharges (TEDS 2004 magnitudes) and among others
_P_REASON_IOP = np.array([0.38, 0.23, 0.14, 0.18, 0.03, 0.005, 0.035])
_P_REASON_OTHER = np.array([0.45, 0.25, 0.07, 0.15, 0.02, 0.005, 0.055])
# median stay (days) by reason among IOP discharges; lognormal sigma
_IOP_MEDIAN_BY_REASON = np.array([50.0, 26.0, 36.0, 40.0, 30.0, 30.0, 35.0])
#: Stays are this many times longer when MAT is in the plan (METHUSE = 1).
_MAT_STAY_RATIO = 1.25
_SETTING_MEDIAN = np.array([4.0, 5.0, 20.0, 25.0, 60.0, 41.0, 95.0, 6.0])
_P_SUB1 = np.array([0.005, 0.30, 0.06, 0.12, 0.16, 0.002, 0.08, 0.005, 0.005, 0.12, 0.01, 0.003,
                    0.015, 0.002, 0.001, 0.003, 0.001, 0.002, 0.111])
_P_AGE = np.array([0.005, 0.02, 0.04, 0.09, 0.15, 0.16, 0.14, 0.11, 0.09, 0.08, 0.10, 0.015])
_P_RACE = np.array([0.003, 0.025, 0.01, 0.18, 0.68, 0.01, 0.07, 0.02, 0.002])
_P_ETHNIC = np.array([0.03, 0.06, 0.02, 0.86, 0.03])
_P_NOPRIOR = np.array([0.40, 0.22, 0.12, 0.07, 0.04, 0.15])
_STATE_CODES = np.array(sorted(cb.CODEBOOK["STFIPS"].codes), dtype=np.int16)
_LOS_CUTS = np.array([45, 60, 90, 120, 180, 365])


def _draw(rng: np.random.Generator, p: np.ndarray, n: int, first: int = 1) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    idx = np.searchsorted(np.cumsum(p / p.sum()), rng.random(n), side="right")
    return (np.minimum(idx, len(p) - 1) + first).astype(np.int16)


def _sprinkle(rng, x: np.ndarray, rate: float) -> np.ndarray:
    if rate > 0:
        x = x.copy()
        x[rng.random(len(x)) < rate] = cb.MISSING_CODE
    return x


def _los_code(days: np.ndarray) -> np.ndarray:
    code = days.astype(np.int16)
    over = days > 30
    code[over] = (31 + np.searchsorted(_LOS_CUTS, days[over], side="left")).astype(np.int16)
    return code


def _chunk(rng: np.random.Generator, n: int, years: np.ndarray, first_id: np.ndarray) -> dict[str, np.ndarray]:
    """One chunk of synthetic discharges as code arrays."""
    disyr = years[rng.integers(0, len(years), n)].astype(np.int32)
    setting = _draw(rng, _P_SETTING, n)
    iop = setting == IOP_SERVICES_CODE
    reason = np.where(iop, _draw(rng, _P_REASON_IOP, n), _draw(rng, _P_REASON_OTHER, n)).astype(np.int16)
    sub1 = _draw(rng, _P_SUB1, n)
    opioid = (sub1 >= 5) & (sub1 <= 7)
    methuse = np.where(rng.random(n) < np.where(opioid, 0.55, 0.03), 1, 2).astype(np.int16)
    median = np.where(iop, _IOP_MEDIAN_BY_REASON[reason - 1], _SETTING_MEDIAN[setting - 1])
    median = median * np.where(methuse == 1, _MAT_STAY_RATIO, 1.0)
    sigma = np.where(iop, 0.75, 0.9)
    days = np.maximum(1, np.ceil(median * np.exp(sigma * rng.standard_normal(n)))).astype(np.int64)
    los = _los_code(np.minimum(days, 5000))
    admyr = (disyr - (rng.random(n) < np.minimum(days, 365) / 365.0)).astype(np.int32)
    freq1 = _draw(rng, [0.30, 0.35, 0.35], n)
    p_none_d = np.where(reason == 1, 0.75, 0.35)
    freq1_d = np.where(rng.random(n) < p_none_d, 1, np.where(rng.random(n) < 0.5, 2, 3)).astype(np.int16)
    services = np.where(rng.random(n) < 0.85, setting, _draw(rng, _P_SETTING, n)).astype(np.int16)
    out = {
        "ADMYR": _sprinkle(rng, admyr, 0.002),
        "CASEID": first_id + np.arange(n, dtype=np.int64),
        "DISYR": disyr,
        "STFIPS": _STATE_CODES[rng.integers(0, len(_STATE_CODES), n)],
        "EDUC": _sprinkle(rng, _draw(rng, [0.05, 0.15, 0.45, 0.25, 0.10], n), 0.08),
        "MARSTAT": _sprinkle(rng, _draw(rng, [0.55, 0.15, 0.05, 0.25], n), 0.15),
        "SERVICES": services,
        "SERVICES_D": setting,
        "REASON": reason,
        "EMPLOY": _sprinkle(rng, _draw(rng, [0.25, 0.08, 0.37, 0.30], n), 0.04),
        "EMPLOY_D": _sprinkle(rng, _draw(rng, [0.28, 0.08, 0.34, 0.30], n), 0.10),
        "LOS": los,
        "PSOURCE": _sprinkle(rng, _draw(rng, [0.35, 0.05, 0.12, 0.08, 0.04, 0.06, 0.30], n), 0.02),
        "NOPRIOR": _sprinkle(rng, _draw(rng, _P_NOPRIOR, n, first=0), 0.06),
        "ARRESTS": _sprinkle(rng, _draw(rng, [0.88, 0.10, 0.02], n, first=0), 0.05),
        "METHUSE": _sprinkle(rng, methuse, 0.03),
        "PSYPROB": _sprinkle(rng, _draw(rng, [0.40, 0.60], n), 0.12),
        "GENDER": _sprinkle(rng, _draw(rng, [0.66, 0.34], n), 0.001),
        "VET": _sprinkle(rng, _draw(rng, [0.03, 0.97], n), 0.06),
        "LIVARAG": _sprinkle(rng, _draw(rng, [0.12, 0.20, 0.68], n), 0.04),
        "DAYWAIT": _sprinkle(rng, _draw(rng, [0.45, 0.25, 0.15, 0.10, 0.05], n, first=0), 0.45),
        "AGE": _draw(rng, _P_AGE, n),
        "RACE": _sprinkle(rng, _draw(rng, _P_RACE, n), 0.02),
        "ETHNIC": _sprinkle(rng, _draw(rng, _P_ETHNIC, n), 0.03),
        "SUB1": _sprinkle(rng, sub1, 0.01),
        "SUB2": _sprinkle(rng, _draw(rng, _P_SUB1, n), 0.10),
        "ROUTE1": _sprinkle(rng, _draw(rng, [0.45, 0.30, 0.10, 0.14, 0.01], n), 0.03),
        "FREQ1": _sprinkle(rng, freq1, 0.04),
        "FREQ1_D": _sprinkle(rng, freq1_d, 0.12),
        "FRSTUSE1": _sprinkle(rng, _draw(rng, [0.02, 0.25, 0.35, 0.18, 0.10, 0.06, 0.04], n), 0.03),
        "IDU": _sprinkle(rng, _draw(rng, [0.2, 0.8], n, first=0), 0.05),
        "REGION": _draw(rng, [0.17, 0.22, 0.36, 0.25], n),
        "DIVISION": _draw(rng, [0.05, 0.12, 0.14, 0.08, 0.19, 0.06, 0.11, 0.07, 0.18], n),
    }
    return out


def write_teds_d_like(
    path: str | Path,
    *,
    n_rows: int,
    years: Sequence[int] = (2019,),
    seed: int | np.random.Generator,
    labelled: bool = False,
    servsetd: bool = False,
    sex_column: bool = False,
    chunk_rows: int = 1_000_000,
) -> Path:
    """Write a synthetic CSV in the TEDS-D public-use format (no real record is used).

    Real column names and code sets (a subset of the 60+ columns of the public-use file),
    latin-1 (ASCII) text, ``-9`` for missing sprinkled at realistic rates. Magnitudes follow
    TEDS: IOP is about 10% of discharges; among IOP discharges 38% completed, 23% dropped
    out, 14% terminated by the facility, 18% transferred; IOP stays are lognormal with
    median about 41 days (completers 50, dropouts 26), coded into ``LOS`` 1-30 exact days
    and ranges 31-37; ``METHUSE`` is yes for about 55% of opioid and 3% of other
    admissions (about 15% overall), and stays with MAT in the plan are 1.25 times longer
    (time ratio; the discharge reason does not depend on it); ``CASEID`` is unique. Rows are generated and written in
    chunks with numpy and pyarrow, so 15 million rows need a few hundred MB of memory.

    Parameters
    ----------
    path : str or pathlib.Path
        File to write (parent directories are created).
    n_rows : int
        Number of discharges (rows), >= 1.
    years : sequence of int, default (2019,)
        Discharge years (``DISYR``), drawn uniformly.
    seed : int or numpy.random.Generator
        Source of randomness.
    labelled : bool, default False
        Write codebook text labels instead of codes in the coded columns, as the 2021 file.
    servsetd : bool, default False
        Name the setting columns ``SERVSETD``/``SERVSETA`` as the 2006-2014 files.
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
        ``n_rows`` or ``chunk_rows`` below 1, or no ``years``.

    References
    ----------
    .. [1] SAMHSA (2006). Treatment Episode Data Set (TEDS) highlights 2004, DASIS S-31.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = write_teds_d_like(pathlib.Path(tempfile.mkdtemp()) / "t.csv", n_rows=5, seed=3)
    >>> f.read_text(encoding="latin-1").splitlines()[0][:40]
    'ADMYR,CASEID,DISYR,STFIPS,EDUC,MARSTAT,S'
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if int(n_rows) < 1 or int(chunk_rows) < 1:
        raise DataValidationError(f"n_rows ({n_rows}) and chunk_rows ({chunk_rows}) must be >= 1.")
    years_arr = np.array([int(y) for y in years], dtype=np.int32)
    if len(years_arr) == 0:
        raise DataValidationError("years is empty; give at least one discharge year, e.g. years=(2019,).")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rename = {}
    if servsetd:
        rename.update({"SERVICES_D": "SERVSETD", "SERVICES": "SERVSETA"})
    if sex_column:
        rename["GENDER"] = "SEX"
    header = [rename.get(c, c) for c in _GEN_COLUMNS]
    label_arrays = {}
    if labelled:
        for col, entry in cb.CODEBOOK.items():
            labels = [""] * (max(entry.codes) + 10)
            labels[0] = "Missing/unknown/not collected/invalid"  # index of -9 after the +9 shift
            for code, (_, lab) in entry.codes.items():
                labels[code + 9] = lab
            label_arrays[col] = pa.array(labels, type=pa.string())
    opts = pacsv.WriteOptions(include_header=False, quoting_style="needed" if labelled else "none")
    written = 0
    with open(path, "wb") as fh:
        fh.write((",".join(header) + "\n").encode("latin-1"))
        while written < n_rows:
            m = min(int(chunk_rows), n_rows - written)
            arrays = _chunk(rng, m, years_arr, np.int64(years_arr.min()) * 10**8 + written + 1)
            cols = []
            for c in _GEN_COLUMNS:
                a = arrays[c]
                if labelled and c in label_arrays:
                    cols.append(label_arrays[c].take(pa.array(a.astype(np.int32) + 9)))
                else:
                    cols.append(pa.array(a))
            pacsv.write_csv(pa.Table.from_arrays(cols, names=header), fh, write_options=opts)
            written += m
    return path
