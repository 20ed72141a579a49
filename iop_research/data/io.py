"""The IOPData container and reading/writing of the canonical tables.

``IOPData`` holds the six canonical tables of the data contract
(:mod:`iop_research.data.schema`) as pandas DataFrames. :func:`read_data` reads a
directory with one file per table and validates it; :meth:`IOPData.write`
writes one losslessly. The layout and the columns are documented in
``data/README.md``.

File layout
-----------
One file per table, named after it: ``<table>.csv``, ``<table>.csv.gz`` or
``<table>.parquet`` (one format per table; formats may differ between
tables). ``patients``, ``sessions`` and ``observation`` are required;
``admissions``, ``medications`` and ``events`` may be absent and are then
empty (sessions-only data; episodes are derived later with the gap rule).
CSV files are UTF-8 (a byte-order mark is tolerated), comma-separated, with
a header row; dates are written ``YYYY-MM-DD``; an empty cell is a missing
value (so an empty string is written, and read back, as missing); booleans are
``true``/``false`` (``1``/``0`` and any case are read).
"""
from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iop_research.exceptions import DataReadError, IopError
from iop_research.data.schema import (
    OPTIONAL_TABLES,
    REQUIRED_TABLES,
    TABLES,
    _coerce_into,
    _error,
    _find_into,
    _none_for_missing,
    _Problems,
    column_kinds,
    empty_table,
)

__all__ = ["IOPData", "read_data", "FORMATS", "DataWriteError", "atomic_directory", "atomic_write_bytes",
           "atomic_write_text", "check_writable"]

#: Lossless float parsing: pandas 3 parses round-trip by default (and deprecates the option).
_ROUND_TRIP = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}

#: File formats understood by :func:`read_data` and :meth:`IOPData.write`.
FORMATS: tuple[str, ...] = ("csv", "csv.gz", "parquet")


class DataWriteError(IopError, OSError):
    """Tables could not be written (conflicting files of another format, unknown format)."""


@dataclass
class IOPData:
    """The canonical IOP tables of one study.

    Attributes
    ----------
    patients, admissions, sessions, medications, events, observation : pandas.DataFrame
        The tables of the data contract (see ``data/README.md``).
    truth : dict or None
        On simulated data, the simulator's parameters and each patient's latent
        times (see :func:`iop_research.data.synth.simulate_cohort`); ``None`` otherwise.
    use_days : pandas.DataFrame or None
        The optional Timeline Followback table (``patient_id, use_date, substance, used, drinks``;
        :data:`iop_research.data.schema.OPTIONAL_TABLES`); ``None`` when the study has none. Validated,
        coerced, written and read with the six tables when present.

    Examples
    --------
    >>> from iop_research.data.schema import empty_table
    >>> data = IOPData(**{name: empty_table(name) for name in
    ...                   ["patients", "admissions", "sessions", "medications", "events", "observation"]})
    >>> data.validate() is data
    True
    """

    patients: pd.DataFrame
    admissions: pd.DataFrame
    sessions: pd.DataFrame
    medications: pd.DataFrame
    events: pd.DataFrame
    observation: pd.DataFrame
    truth: Any = field(default=None, repr=False, compare=False)
    use_days: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The six tables by name, in contract order."""
        return {name: getattr(self, name) for name in TABLES}

    def _all_tables(self) -> dict[str, pd.DataFrame]:
        """The six tables and the optional ones that are present (not None)."""
        out = self.tables()
        out.update({t: getattr(self, t) for t in OPTIONAL_TABLES if getattr(self, t) is not None})
        return out

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{k}={len(v):,}" if isinstance(v, pd.DataFrame) else f"{k}=?" for k, v in self._all_tables().items()
        )
        return f"IOPData({counts}{', simulated' if self.truth is not None else ''})"

    # ------------------------------------------------------------------ checks
    def find_problems(self, *, tolerance_days: int = 0) -> pd.DataFrame:
        """Every data-contract problem, as a table (empty when valid).

        Parameters
        ----------
        tolerance_days : int, default 0
            Days a session may lie outside its episode and still count as within it.

        Returns
        -------
        pandas.DataFrame
            Columns ``table, column, check, n_failures, examples, fix``; see
            :func:`iop_research.data.schema.find_problems` for the checks.
        """
        acc = _Problems()
        _find_into(self._all_tables(), acc, tolerance_days)
        return acc.frame()

    def validate(self, *, tolerance_days: int = 0) -> IOPData:
        """Check the tables against the data contract; return ``self`` or raise.

        Validation is lazy: every problem of every table is collected, then
        reported together in one exception. Column checks (presence, dtype,
        missing values, uniqueness, vocabularies, ranges, whole-day dates) use
        the pandera schemas of :func:`iop_research.data.schema.table_schema`;
        cross-table checks (unknown patients and episodes, discharge before
        admission, overlapping episodes, sessions outside every episode, dates
        after ``observation_end``, ...) are vectorised pandas; see
        :func:`iop_research.data.schema.find_problems`. Nothing is converted or
        dropped: frames with near-miss dtypes (e.g. dates as strings) fail with
        a ``dtype`` problem; :meth:`coerce` converts them.

        Parameters
        ----------
        tolerance_days : int, default 0
            Days a session may lie before admission or after discharge and still
            count as within the episode.

        Returns
        -------
        IOPData
            ``self``, unchanged, so that calls chain (``read(...).validate()``).

        Raises
        ------
        DataValidationError
            When anything breaks the contract. The message lists each problem
            (table, column, failing check, number of rows, up to five offending
            ids -- episode_id for admissions, patient_id otherwise -- and 0-based
            row positions, and how to fix it); ``.problems`` holds the same as a
            DataFrame with columns ``table, column, check, n_failures,
            examples, fix``.

        Examples
        --------
        >>> from iop_research.data.schema import empty_table
        >>> t = {n: empty_table(n) for n in
        ...      ["patients", "admissions", "sessions", "medications", "events", "observation"]}
        >>> t["patients"] = pd.DataFrame({"patient_id": ["P1"], "birth_year": [1850], "sex": ["female"],
        ...                               "race": [None], "ethnicity": [None]})
        >>> try:
        ...     IOPData(**t).validate()
        ... except ValueError as err:
        ...     print(err.problems[["table", "column", "check", "examples"]].to_dict("records"))
        [{'table': 'patients', 'column': 'birth_year', 'check': 'range(between 1900 and 2020)', 'examples': 'patient_id P1; rows 0'}, {'table': 'observation', 'column': 'patient_id', 'check': 'observation_for_every_patient', 'examples': 'patient_id P1 (patients rows 0)'}]
        """
        problems = self.find_problems(tolerance_days=tolerance_days)
        if len(problems):
            raise _error(problems)
        return self

    def coerce(self) -> IOPData:
        """A new IOPData whose contract columns have canonical dtypes.

        Text dates (``YYYY-MM-DD``), numbers and booleans are parsed, datetime
        columns cast to ``datetime64[ns]``, ids made strings; see
        :func:`iop_research.data.schema.coerce_tables`. Inputs are not modified.

        Returns
        -------
        IOPData
            New frames (``truth`` carried over).

        Raises
        ------
        DataValidationError
            When values do not parse (check ``parse(<kind>)``, with their rows).

        Examples
        --------
        >>> from iop_research.data.schema import empty_table
        >>> t = {n: empty_table(n) for n in
        ...      ["patients", "admissions", "sessions", "medications", "events", "observation"]}
        >>> t["observation"] = pd.DataFrame({"patient_id": [1], "observation_end": ["2024-03-31"]})
        >>> IOPData(**t).coerce().observation["observation_end"].dtype
        dtype('<M8[ns]')
        """
        acc = _Problems()
        tables = _coerce_into(self._all_tables(), acc)
        problems = acc.frame()
        if len(problems):
            raise _error(problems)
        return IOPData(**tables, truth=self.truth)

    # ------------------------------------------------------------------ writing
    def write(self, path: str | os.PathLike, format: str = "csv") -> Path:
        """Write the six tables (and ``use_days`` when present) to a directory, one file per table, losslessly.

        CSV: UTF-8, comma-separated, ``\\n`` line ends, no index, columns and rows
        in the frames' order, dates of contract date columns as ``%Y-%m-%d``
        (missing = empty cell), booleans as ``true``/``false``, floats in
        shortest round-trip form (``repr``). ``csv.gz`` is byte-deterministic
        (gzip with mtime 0 and the fixed inner name ``<table>.csv``). Parquet via
        pyarrow, without the index. :func:`read_data` reads every format back to
        equal frames (for canonical dtypes, see :meth:`coerce`; extra CSV columns
        come back with the types pandas infers).

        Parameters
        ----------
        path : str or os.PathLike
            Directory; created if needed. Existing files of the same format are
            replaced.
        format : {"csv", "csv.gz", "parquet"}, default "csv"

        Returns
        -------
        pathlib.Path
            The directory.

        Raises
        ------
        DataWriteError
            For an unknown format, when the directory holds a file of another
            format for one of the tables (reading would be ambiguous), for a
            table that cannot be written, and for permission and path problems
            (checked before anything is written).

        Notes
        -----
        Atomic: the tables are written to a staging directory next to
        ``path``; only when all six are written does the export replace the
        previous one, with one rename (or one atomic directory exchange on
        Linux) when ``path`` holds nothing but the tables, else by moving each
        finished file into place. A failure while writing leaves the previous
        export as it was, and no staging directory is left behind.

        References
        ----------
        .. [1] Shafranovich Y. Common Format and MIME Type for Comma-Separated
           Values (CSV) Files. RFC 4180, 2005.
        .. [2] Deutsch P. GZIP file format specification version 4.3. RFC 1952,
           1996 (the MTIME field is 0 here, as the RFC allows).

        Examples
        --------
        >>> import tempfile
        >>> from iop_research.data.schema import empty_table
        >>> d = IOPData(**{n: empty_table(n) for n in
        ...                ["patients", "admissions", "sessions", "medications", "events", "observation"]})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     out = d.write(tmp, format="csv.gz")
        ...     print(sorted(p.name for p in out.iterdir())[:2])
        ['admissions.csv.gz', 'events.csv.gz']
        """
        if format not in FORMATS:
            raise DataWriteError(f"Unknown format {format!r}: use one of {', '.join(FORMATS)}.")
        out = check_writable(path)
        for table in self._all_tables():
            for other in FORMATS:
                clash = out / f"{table}.{other}"
                if other != format and clash.exists():
                    raise DataWriteError(
                        f"{clash} exists, so writing {table}.{format} next to it would make the directory "
                        f"ambiguous for read_data. Write to an empty directory or remove {clash.name}."
                    )
        for table, df in self._all_tables().items():
            if not isinstance(df, pd.DataFrame):
                raise DataWriteError(
                    f"Table {table} is a {type(df).__name__}, not a DataFrame; nothing was written. Use "
                    f"schema.empty_table({table!r}) for a table without rows."
                )
        names = {f"{t}.{format}" for t in self._all_tables()}
        others = [p for p in out.iterdir() if p.name not in names] if out.is_dir() else []
        if not others:
            # the whole directory is the export: build it aside, publish it with one rename / exchange
            with atomic_directory(out) as stage:
                try:
                    self._write_tables(stage, format)
                except DataWriteError:
                    raise
                except OSError as exc:
                    raise _wrap_os_error(exc, out, "write the tables into") from exc
            return out
        # a directory with other files: stage every table first, then move each into place
        import shutil
        import tempfile

        try:
            stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out))
        except OSError as exc:
            raise _wrap_os_error(exc, out, "stage the export in") from exc
        try:
            self._write_tables(stage, format)
            for name in sorted(names):
                os.replace(stage / name, out / name)
        except DataWriteError:
            raise
        except OSError as exc:
            raise _wrap_os_error(exc, out, "write the tables into") from exc
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return out

    def _write_tables(self, directory: Path, format: str) -> None:
        for table, df in self._all_tables().items():
            target = directory / f"{table}.{format}"
            if format == "parquet":
                try:
                    df.to_parquet(target, index=False, engine="pyarrow")
                except OSError:
                    raise
                except Exception as exc:  # pyarrow type errors for mixed object columns, ...
                    raise DataWriteError(
                        f"Table {table} could not be written as Parquet ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); nothing was written. Columns with mixed types are the usual cause: "
                        "run IOPData.coerce() and validate() first, or write CSV."
                    ) from exc
                continue
            text = _csv_frame(table, df)
            if format == "csv":
                with open(target, "w", encoding="utf-8", newline="") as fh:
                    text.to_csv(fh, index=False, lineterminator="\n")
            else:
                with open(target, "wb") as raw, gzip.GzipFile(
                    filename=f"{table}.csv", mode="wb", fileobj=raw, mtime=0, compresslevel=6
                ) as gz, io.TextIOWrapper(gz, encoding="utf-8", newline="") as fh:
                    text.to_csv(fh, index=False, lineterminator="\n")


def _csv_frame(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Shallow copy with contract dates as YYYY-MM-DD text and booleans as true/false."""
    kinds = column_kinds(table)
    new = {}
    for col in df.columns:
        s = df[col]
        kind = kinds.get(col) if isinstance(col, str) else None
        if kind == "date" and pd.api.types.is_datetime64_dtype(s.dtype):
            ns = s.to_numpy(dtype="datetime64[ns]")
            if (ns[~np.isnat(ns)].view("int64") % 86_400_000_000_000).any():
                continue  # times of day (invalid): keep them, in pandas' ISO format, rather than cut them
            text = ns.astype("datetime64[D]").astype(str).astype(object)
            text[s.isna().to_numpy()] = None
            new[col] = pd.Series(text, index=s.index)
        elif pd.api.types.is_bool_dtype(s.dtype):
            vals = s.to_numpy(dtype=object)
            out = np.full(len(s), None, dtype=object)
            notna = s.notna().to_numpy()
            out[notna] = np.where(vals[notna].astype(bool), "true", "false")
            new[col] = pd.Series(out, index=s.index)
    if not new:
        return df
    out = df.copy(deep=False)
    for col, s in new.items():
        out[col] = s
    return out


# ---------------------------------------------------------------------- reading


def _find_file(directory: Path, table: str) -> Path | None:
    found = [directory / f"{table}.{fmt}" for fmt in FORMATS if (directory / f"{table}.{fmt}").is_file()]
    if len(found) > 1:
        raise DataReadError(
            f"{directory} holds {len(found)} files for table {table} ({', '.join(p.name for p in found)}); "
            "keep exactly one so that it is clear which to read."
        )
    return found[0] if found else None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        raise DataReadError(
            f"Could not read {path}: the gzip stream is damaged or truncated ({exc}). "
            "Re-export or re-download the file."
        ) from exc


def _read_csv(path: Path, table: str) -> pd.DataFrame:
    raw = _read_bytes(path)
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        raw = raw[3:]
    if not raw.strip():
        raise DataReadError(
            f"{path} is empty: a {table} file needs at least a header row "
            f"({', '.join(column_kinds(table))}). Re-export it, or delete it if the table is optional."
        )
    try:
        raw.decode("utf-8")  # validate only; pandas parses the bytes
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataReadError(
            f"{path} is not UTF-8: byte 0x{raw[exc.start]:02x} at line {line} (byte offset {exc.start}) "
            "cannot be decoded. Re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8, or "
            "pandas.read_csv(..., encoding=...).to_csv(..., encoding='utf-8'))."
        ) from exc
    first = raw.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    try:
        header = next(csv.reader([first]))
    except csv.Error as exc:  # pragma: no cover - a single line rarely fails
        raise DataReadError(f"{path}: the header row cannot be parsed ({exc}).") from exc
    if len(header) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs")):
            if sep in header[0]:
                raise DataReadError(
                    f"{path} seems to be separated by {name}, not commas (header: {first[:80]!r}). "
                    "Re-export it comma-separated, e.g. pandas.read_csv(path, sep=';').to_csv(path, index=False)."
                )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataReadError(f"{path}: duplicate column name(s) {', '.join(dupes)} in the header; rename them.")
    # a file cut off mid-row: the last line has fewer fields than the header and no line end
    if not raw.endswith(b"\n") and b"\n" in raw.strip(b"\r\n"):
        last = raw[raw.rfind(b"\n") + 1:].decode("utf-8").rstrip("\r")
        try:
            n_last = len(next(csv.reader([last])))
        except (csv.Error, StopIteration):  # e.g. cut inside a quoted field
            n_last = 0
        # an odd number of quotes: the line continues a multi-line quoted field; pandas decides
        if n_last < len(header) and last.count('"') % 2 == 0:
            n_lines = raw.count(b"\n") + 1
            raise DataReadError(
                f"{path} looks truncated: its last line ({n_lines}) has {n_last} of {len(header)} fields and "
                "no line end. Re-export or re-download the complete file."
            )
    # rows with fewer fields than the header: pandas would pad them with missing values
    short = []
    try:
        for rec in csv.reader(io.StringIO(raw.decode("utf-8"), newline="")):
            if rec and len(rec) < len(header) and any(f.strip() for f in rec):
                short.append(len(rec))
                if len(short) == 1:
                    first_short = rec
    except csv.Error:
        short = []  # pandas reports the malformed file below
    if short:
        lines = []
        for n_line, line in enumerate(raw.decode("utf-8").splitlines()[1:], start=2):
            try:
                rec = next(csv.reader([line]))
            except (csv.Error, StopIteration):
                continue
            if rec and len(rec) < len(header) and any(f.strip() for f in rec):
                lines.append(n_line)
        raise DataReadError(
            f"{path}: {len(short)} row(s) have fewer fields than the header's {len(header)} (lines "
            f"{', '.join(map(str, lines[:5]))}{', ...' if len(lines) > 5 else ''}; e.g. {first_short!r}), so "
            "their last columns would be filled with missing values. Add the missing fields (an empty field "
            "still needs its comma) and re-export the file."
        )
    kinds = column_kinds(table)
    dtypes = {col: str for col in header if col in kinds}
    try:
        df = pd.read_csv(
            io.BytesIO(raw),
            encoding="utf-8",
            dtype=dtypes,
            keep_default_na=False,
            na_values=[""],
            **_ROUND_TRIP,
        )
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:
        raise DataReadError(
            f"{path} cannot be parsed as CSV ({exc}). Check for rows with extra fields, unbalanced quotes, "
            "or a file cut off mid-row; re-export it comma-separated with a header row."
        ) from exc
    for col in df.columns:  # extra text columns: missing as None, as for contract columns
        if col not in kinds and df[col].dtype == object:
            df[col] = _none_for_missing(df[col])
    return df


def _read_parquet(path: Path, table: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise DataReadError(
            f"{path} is not a readable Parquet file ({type(exc).__name__}: {str(exc)[:200]}); it may be "
            "truncated or not Parquet at all. Re-export or re-download it."
        ) from exc


def read_data(path: str | os.PathLike, *, validate: bool = True, tolerance_days: int = 0) -> IOPData:
    """Read the six canonical tables from a directory (one file per table).

    Each table is ``<table>.csv``, ``<table>.csv.gz`` or ``<table>.parquet``.
    ``patients``, ``sessions`` and ``observation`` are required; ``admissions``,
    ``medications`` and ``events`` may be absent and are then empty tables
    with the contract's columns. The optional ``use_days`` table (Timeline Followback) is read when its
    file exists (``IOPData.use_days``; None otherwise). Contract columns of CSV files are read as
    text and converted with :func:`iop_research.data.schema.coerce_tables` (dates
    with format ``%Y-%m-%d``; booleans from true/false/1/0; floats exactly);
    extra columns get pandas' inferred types (dates stay text). Values that do
    not parse are reported as validation problems with their rows -- always,
    even with ``validate=False``, since they would otherwise be lost.

    Parameters
    ----------
    path : str or os.PathLike
        Directory holding the table files.
    validate : bool, default True
        Validate the tables (:meth:`IOPData.validate`) after reading.
    tolerance_days : int, default 0
        Passed to :meth:`IOPData.validate`.

    Returns
    -------
    IOPData
        Contract columns in canonical dtypes (``datetime64[ns]``, ``int64``,
        ``float64``, ``bool``, strings as ``object``), columns and rows in file
        order, a fresh ``RangeIndex``; ``truth`` is None.

    Raises
    ------
    DataReadError
        The directory or a required file is missing; a file is empty,
        truncated, not UTF-8, not comma-separated, not valid CSV/gzip/Parquet,
        or two formats exist for one table. The message names the file and
        the fix.
    DataValidationError
        Values do not parse, or (``validate=True``) the tables break the data
        contract; every problem is listed in one error.

    See Also
    --------
    IOPData.write : the inverse.
    iop_research.data.schema.find_problems : the checks.

    References
    ----------
    .. [1] Shafranovich Y. Common Format and MIME Type for Comma-Separated Values
       (CSV) Files. RFC 4180, 2005.
    .. [2] Apache Parquet format specification, https://parquet.apache.org/docs/

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = Path(tmp, "patients.csv").write_text(
    ...         "patient_id,birth_year,sex,race,ethnicity\\nP1,1980,female,,\\n")
    ...     _ = Path(tmp, "sessions.csv").write_text(
    ...         "patient_id,episode_id,session_date,modality,minutes,attended\\n"
    ...         "P1,,2024-01-02,group,180,true\\n")
    ...     _ = Path(tmp, "observation.csv").write_text("patient_id,observation_end\\nP1,2024-06-30\\n")
    ...     data = read_data(tmp)
    >>> data
    IOPData(patients=1, admissions=0, sessions=1, medications=0, events=0, observation=1)
    >>> data.sessions[["session_date", "minutes", "attended"]].dtypes.astype(str).tolist()
    ['datetime64[ns]', 'int64', 'bool']
    """
    directory = Path(path)
    if not directory.is_dir():
        raise DataReadError(
            f"{directory} is not a directory. read_data expects a directory with one file per table "
            f"({', '.join(f'{t}.csv' for t in TABLES)}; .csv.gz or .parquet also work)."
        )
    files = {table: _find_file(directory, table) for table in TABLES}
    files.update({t: f for t in OPTIONAL_TABLES if (f := _find_file(directory, t)) is not None})
    missing = [t for t in REQUIRED_TABLES if files[t] is None]
    if missing:
        raise DataReadError(
            f"{directory} lacks the required table file(s) {', '.join(missing)} "
            f"(looked for {', '.join(f'{t}.csv/.csv.gz/.parquet' for t in missing)}). "
            "Add them; only admissions, medications and events may be absent."
        )
    raw: dict[str, pd.DataFrame] = {}
    for table, file in files.items():
        if file is None:
            raw[table] = empty_table(table)
        elif file.name.endswith(".parquet"):
            raw[table] = _read_parquet(file, table)
        else:
            raw[table] = _read_csv(file, table)
    acc = _Problems()
    tables = _coerce_into(raw, acc)
    if validate:
        _find_into(tables, acc, tolerance_days)
    problems = acc.frame()
    if len(problems):
        raise _error(problems)
    return IOPData(**tables)


# ---------------------------------------------------------------- atomic output
def _wrap_os_error(exc: OSError, path: Path, what: str) -> DataWriteError:
    reason = exc.strerror or type(exc).__name__
    hint = ("check that you may write there (permissions) and that the parent directory exists"
            if isinstance(exc, (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError))
            else "check free disk space and the path")
    return DataWriteError(f"Could not {what} {path} ({reason}); nothing was changed there. Fix: {hint}.")


def check_writable(path: str | os.PathLike) -> Path:
    """Check, before any work, that ``path`` (a directory, existing or not) can be written.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    pathlib.Path
        The absolute path.

    Raises
    ------
    DataWriteError
        ``path`` is a file, or its nearest existing ancestor is not writable.
    """
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        raise DataWriteError(f"{p} is a file, not a directory. Pass a directory path.")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DataWriteError(f"{probe} is a file, so {p} cannot be created. Pass a directory path.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataWriteError(f"No permission to write in {probe}, so {p} cannot be written. Choose a writable "
                             f"directory or fix its permissions.")
    return p


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one system call (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return rc == 0


class atomic_directory:
    """Context manager: build a directory's content in a staging directory, publish it at once.

    ``with atomic_directory(target) as stage:`` yields a new, empty staging
    directory next to ``target`` (same file system). On normal exit the
    staging directory replaces ``target`` with one rename (when ``target``
    does not exist) or one atomic exchange (Linux ``renameat2``; elsewhere two
    renames), and the old content is removed. On any exception the staging
    directory is removed and ``target`` is left as it was. No staging
    directory is left behind either way.

    Parameters
    ----------
    target : str or os.PathLike
        Directory to create or replace.
    keep : callable, optional
        ``keep(name) -> bool`` for entries of an existing ``target`` that are
        not part of the new content and must survive (e.g. a user's own files
        next to the exported tables); they are moved into the new directory
        before it is published.

    Raises
    ------
    DataWriteError
        Permission and path problems, wrapped with the path and a fix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with atomic_directory(pathlib.Path(tmp) / "out") as stage:
    ...         _ = (stage / "a.txt").write_text("x")
    ...     print(sorted(p.name for p in pathlib.Path(tmp).iterdir()))
    ['out']
    """

    def __init__(self, target: str | os.PathLike, *, keep=None):
        self.target = Path(target).absolute()
        self.keep = keep
        self.stage: Path | None = None

    def __enter__(self) -> Path:
        import tempfile

        check_writable(self.target)
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.stage = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.staging-", dir=parent))
        except OSError as exc:
            raise _wrap_os_error(exc, self.target, "create a staging directory for") from exc
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> bool:
        import shutil

        stage = self.stage
        assert stage is not None
        if exc_type is not None:
            shutil.rmtree(stage, ignore_errors=True)
            return False
        try:
            if self.target.exists():
                mode = self.target.stat().st_mode & 0o7777
            else:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o777 & ~umask
            os.chmod(stage, mode)  # mkdtemp makes 0700; the published directory keeps the usual mode
            if self.target.exists() and self.keep is not None:
                for entry in self.target.iterdir():
                    if self.keep(entry.name) and not (stage / entry.name).exists():
                        if entry.is_dir():
                            shutil.copytree(entry, stage / entry.name, symlinks=True)
                        else:
                            shutil.copy2(entry, stage / entry.name, follow_symlinks=False)
            if not self.target.exists():
                os.rename(stage, self.target)
                return False
            if _exchange(stage, self.target):
                shutil.rmtree(stage, ignore_errors=True)  # stage now holds the old content
                return False
            old = stage.with_name(stage.name.replace(".staging-", ".old-"))
            os.rename(self.target, old)
            os.rename(stage, self.target)
            shutil.rmtree(old, ignore_errors=True)
            return False
        except OSError as err:
            shutil.rmtree(stage, ignore_errors=True)
            raise _wrap_os_error(err, self.target, "publish") from err


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write a file atomically: a temporary file in the same directory, then one rename.

    Raises
    ------
    DataWriteError
        Permission and path problems.
    """
    import tempfile

    p = Path(path).absolute()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise _wrap_os_error(exc, p, "write") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _wrap_os_error(exc, p, "write") from exc
        raise
    return p


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` for text (``\\n`` line ends kept as given)."""
    return atomic_write_bytes(path, text.encode(encoding))
