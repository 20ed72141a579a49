"""Where data-preparation expressions run: DuckDB in process by default, Spark on request.

The data steps (episodes, eras, outcomes, interval splitting) are written once as
Ibis expressions. This module turns what a user hands in (pandas DataFrames,
file paths, Ibis tables) into tables of one backend, and results back into pandas.

Engines
-------
``None`` or ``"duckdb"``
    A private in-process DuckDB connection (default).
``"spark"``
    A local-mode SparkSession (``local[2]``), created on first use and reused.
an Ibis backend
    Used as given (e.g. ``ibis.pyspark.connect(spark)`` on a cluster, or
    ``ibis.connect("postgresql://...")``: every step compiles and runs on PostgreSQL and
    gives DuckDB's tables; frames handed in as pandas become temporary tables there).
an :class:`EngineSession`
    One connection of any of the above, shared by several pipeline steps: each step that
    takes ``engine=`` accepts a session, runs on its connection, and registers a given
    DataFrame object only once per session (``build_episodes`` -> ``relapse_outcomes`` ->
    ``survival_frame`` then upload the sessions, events and medications tables once instead
    of once per step). Intermediate tables can be kept inside the backend with
    :meth:`EngineSession.keep`. Without a session every step opens its own DuckDB connection.
"""
from __future__ import annotations

import itertools
import warnings
import weakref
from pathlib import Path
from typing import Any

import pandas as pd

from iop_research.exceptions import DataReadError, ModelSpecificationError

__all__ = ["EngineSession", "get_backend", "as_table", "as_derived_table", "collect", "int_from_bool", "stage"]

_counter = itertools.count()
_SPARK_BACKEND = None
#: id(backend) -> the EngineSession that owns it (sessions register their backend here)
_SESSIONS: "weakref.WeakValueDictionary[int, EngineSession]" = weakref.WeakValueDictionary()


class EngineSession:
    """One backend connection reused across pipeline steps.

    Parameters
    ----------
    engine : None, "duckdb", "spark" or an Ibis backend, default None (DuckDB in process)
        Where the steps run. The connection is opened on first use (nothing happens in the
        constructor) and closed by :meth:`close` or at the end of a ``with`` block.

    Notes
    -----
    Pass the session as ``engine=`` to any step (``build_episodes``, ``medication_eras``,
    ``relapse_outcomes``, ``survival_frame``, ``counting_process_frame``, ...). All of them
    then run on this one connection, and a pandas DataFrame object that several steps hand to
    the engine (the sessions, events or medications table) is registered once: the session
    keeps a reference to it until it is closed, so do not modify such a frame in place while
    the session is open. Results are the same as without a session.

    Examples
    --------
    >>> from iop_research.data.synth import simulate_cohort
    >>> from iop_research.derive.episodes import build_episodes
    >>> from iop_research.derive.frames import survival_frame
    >>> data = simulate_cohort(30, seed=1)
    >>> with EngineSession() as session:
    ...     eps = build_episodes(data, engine=session)
    ...     frame = survival_frame(data, episodes=eps, engine=session)
    >>> len(frame) > 0
    True
    """

    def __init__(self, engine: Any = None):
        if isinstance(engine, EngineSession):
            raise ModelSpecificationError("EngineSession(engine=...) takes an engine, not another session.")
        self.engine = engine
        self._backend = None
        self._tables: dict[int, tuple[Any, Any]] = {}
        self._derived: dict[tuple[int, str], tuple[Any, Any]] = {}
        self._created: list[str] = []
        self._closed = False
        #: Number of tables registered with the backend through this session.
        self.n_registered = 0

    @property
    def backend(self):
        """The Ibis backend (connected on first use)."""
        if self._closed:
            raise ModelSpecificationError("this EngineSession is closed; open a new one.")
        if self._backend is None:
            self._backend = get_backend(self.engine)
            _SESSIONS[id(self._backend)] = self
        return self._backend

    def table(self, data: Any, name: str):
        """``data`` as a table of the session's backend, registered once per object."""
        if not isinstance(data, pd.DataFrame):
            return _register(self.backend, data, name)
        hit = self._tables.get(id(data))
        if hit is not None and hit[0] is data:
            return hit[1]
        table = _register(self.backend, data, name)
        self._tables[id(data)] = (data, table)  # the reference keeps id(data) unique
        self._created.append(table.get_name())
        self.n_registered += 1
        return table

    def derived_table(self, source: Any, name: str, build):
        """Table of ``build(source)`` (a pandas frame prepared from ``source``), built and
        registered once per ``source`` object and ``name`` in this session."""
        key = (id(source), name)
        hit = self._derived.get(key)
        if hit is not None and hit[0] is source:
            return hit[1]
        table = self.table(build(source), name)
        self._derived[key] = (source, table)
        return table

    def keep(self, expr, name: str):
        """Materialise an Ibis expression as a table inside the backend (no pandas round trip).

        Parameters
        ----------
        expr : ibis Table
            An expression on this session's backend (e.g. ``build_episodes(..., lazy=True)``).
        name : str
            Base name of the table (a unique suffix is added).

        Returns
        -------
        ibis Table
        """
        be = self.backend
        table_name = f"iop_{name}_{next(_counter)}"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
            if _supports_temp(be):
                self._created.append(table_name)
                return _analyzed(be, be.create_table(table_name, expr, temp=True, overwrite=True))
            if getattr(be, "name", "") == "pyspark":
                return be.create_view(table_name, expr, overwrite=True)
            return be.create_table(table_name, expr, overwrite=True)

    def close(self) -> None:
        """Drop the registered tables' references and disconnect an in-process DuckDB.

        On a connection the caller passed in (PostgreSQL, a DuckDB file), which stays open,
        the temporary tables the session uploaded or kept are dropped.
        """
        if self._closed:
            return
        self._tables.clear()
        self._derived.clear()
        be, self._backend = self._backend, None
        created, self._created = self._created, []
        self._closed = True
        if be is not None:
            _SESSIONS.pop(id(be), None)
            if _supports_temp(be) and self.engine in (None, "duckdb"):
                be.disconnect()
            elif _supports_temp(be):
                # a connection the caller owns (PostgreSQL, a DuckDB file) stays open: drop the
                # temporary tables this session uploaded instead of leaving them until it closes
                for table_name in created:
                    be.drop_table(table_name, force=True)

    def __enter__(self) -> "EngineSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self._backend is not None else "not connected")
        return f"EngineSession(engine={self.engine!r}, {state}, tables={self.n_registered})"


def _local_spark():
    """A local-mode SparkSession with UTC timestamps and quiet logging.

    Python workers run the interpreter of this process (so they see the same pandas).
    """
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("iop-research")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "4g")
        .config("spark.rpc.message.maxSize", "1024")  # pandas frames travel inside tasks (145 MB at 1 M persons)
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def get_backend(engine: Any = None):
    """Return an Ibis backend for ``engine`` (see module docstring)."""
    import ibis

    global _SPARK_BACKEND
    if isinstance(engine, EngineSession):
        return engine.backend
    if engine is None or engine == "duckdb":
        return ibis.duckdb.connect()
    if engine in ("spark", "pyspark"):
        if _SPARK_BACKEND is None:
            _SPARK_BACKEND = ibis.pyspark.connect(_local_spark())
        return _SPARK_BACKEND
    if hasattr(engine, "create_table") and hasattr(engine, "execute"):
        return engine
    raise ModelSpecificationError(
        f"Unknown engine {engine!r}. Use None/'duckdb' (default, in process), 'spark' "
        "(local PySpark) or an Ibis backend object such as ibis.pyspark.connect(spark)."
    )


def as_table(backend, data: Any, name: str):
    """Make ``data`` a table of ``backend``.

    Parameters
    ----------
    backend : ibis backend or EngineSession
        A backend owned by an :class:`EngineSession` (or the session itself) registers a
        given DataFrame object once per session.
    data : pandas.DataFrame, str or Path (CSV or Parquet file), or ibis Table
    name : str
        Base name of the temporary table (a unique suffix is added).
    """
    if isinstance(backend, EngineSession):
        return backend.table(data, name)
    session = _SESSIONS.get(id(backend))
    if session is not None and session._backend is backend:
        return session.table(data, name)
    return _register(backend, data, name)


def as_derived_table(backend, source: Any, name: str, build):
    """Table of ``build(source)`` on ``backend``; prepared and registered once per session.

    ``build`` turns the user's frame into the frame the engine needs (column selection,
    dtypes). With a backend owned by an :class:`EngineSession` the result is cached per
    ``source`` object and ``name``, so steps that start from the same input share one table.
    """
    if isinstance(backend, EngineSession):
        return backend.derived_table(source, name, build)
    session = _SESSIONS.get(id(backend))
    if session is not None and session._backend is backend and isinstance(source, pd.DataFrame):
        return session.derived_table(source, name, build)
    return _register(backend, build(source), name)


def _register(backend, data: Any, name: str):
    import ibis

    if isinstance(data, ibis.expr.types.Table):
        return data
    table_name = f"iop_{name}_{next(_counter)}"
    with warnings.catch_warnings():
        # ibis 12 calls DuckDB 2's deprecated fetch_arrow_table() when it reads a schema;
        # not ours to fix, and pytest runs with warnings as errors.
        warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
        if isinstance(data, pd.DataFrame):
            if getattr(backend, "name", "") == "postgres":
                return _analyzed(backend, _pg_upload(backend, data, table_name))
            if _supports_temp(backend):
                return backend.create_table(table_name, data, temp=True, overwrite=True)
            if getattr(backend, "name", "") == "pyspark":
                # a session-scoped temporary view: nothing is written to spark-warehouse/, and
                # names cannot collide with tables of other processes
                return backend.create_view(table_name, _spark_memtable(data), overwrite=True)
            return backend.create_table(table_name, data, overwrite=True)
        if isinstance(data, (str, Path)):
            path = Path(data)
            if not path.exists():
                raise DataReadError(f"{name}: file {path} does not exist. Pass an existing CSV/Parquet path.")
            if path.suffix == ".parquet":
                return backend.read_parquet(str(path), table_name=table_name)
            return backend.read_csv(str(path), table_name=table_name)
    raise ModelSpecificationError(
        f"{name}: expected a pandas DataFrame, a file path or an Ibis table, got {type(data).__name__}."
    )


def _pg_upload(backend, df: pd.DataFrame, table_name: str):
    """A pandas frame as a PostgreSQL temporary table, sent with ``COPY``.

    Ibis uploads a frame with one ``INSERT`` per row (``executemany``), which at claims scale
    dominates a step run inside PostgreSQL (3.6 million rows of follow-up, eras and contacts
    for 100,000 persons: 315 of 340 seconds). The table and its column types are Ibis's own
    (the frame's Ibis schema), and the rows are the same Python values Ibis would insert (its
    Arrow conversion of the frame), written by psycopg's ``COPY`` with the same adapters;
    only the round trips are saved. Frames with an all-null column go through Ibis (which
    rejects them with its own message).
    """
    import ibis
    import sqlglot as sg

    memtable = ibis.memtable(df)
    schema = memtable.schema()
    if schema.null_fields:
        return backend.create_table(table_name, df, temp=True, overwrite=True)
    arrow = memtable.op().data.to_pyarrow(schema)
    table = backend.create_table(table_name, schema=schema, temp=True, overwrite=True)
    quote = lambda name: sg.to_identifier(name, quoted=True).sql("postgres")  # noqa: E731
    columns = ", ".join(quote(c) for c in schema.names)
    with backend.con.cursor() as cursor, cursor.copy(f"COPY {quote(table_name)} ({columns}) FROM STDIN") as copy:
        for batch in arrow.to_batches(max_chunksize=100_000):
            for row in zip(*(col.to_pylist() for col in batch.columns)):
                copy.write_row(row)
    return table


def _spark_memtable(df: pd.DataFrame):
    """An in-memory table Spark can ingest: the schema is read from pandas' dtypes first, then
    pandas extension values (pd.NA in string/boolean/Int64 columns) become plain Python None,
    which Spark's pickler understands."""
    import ibis

    schema = ibis.memtable(df).schema()
    plain = {}
    for col in df.columns:
        s = df[col]
        if (isinstance(s.dtype, pd.api.extensions.ExtensionDtype) and not isinstance(s.dtype, pd.DatetimeTZDtype)) \
                or s.dtype == object:
            s = s.astype(object).where(s.notna(), None)
        plain[col] = s
    return ibis.memtable(pd.DataFrame(plain, index=df.index), schema=schema)


def _supports_temp(backend) -> bool:
    """Backends whose uploaded frames become temporary tables: private to the connection and
    dropped when it closes. On PostgreSQL a plain table would outlive the run in the user's
    database, and two processes would overwrite each other's ``iop_<name>_<n>`` tables."""
    return getattr(backend, "name", "") in ("duckdb", "postgres")


def _analyzed(backend, table):
    """``table`` after ``ANALYZE`` on PostgreSQL (a no-op elsewhere).

    PostgreSQL's autovacuum never analyses temporary tables, so without this the planner
    guesses their size and the number of distinct keys (e.g. a few hundred patients where
    there are 100,000) and multiplies the guesses through every join: at 100,000 persons it
    estimated 10^12 rows for the sessions-to-episodes join and chose sorts and merge joins
    that did not finish.
    """
    if getattr(backend, "name", "") == "postgres":
        backend.raw_sql(f'ANALYZE "{table.get_name()}"').close()
    return table


def stage(backend, expr, name: str):
    """``expr`` materialised as a temporary table on DuckDB and PostgreSQL; unchanged on Spark.

    For an intermediate result that a large query joins to (the episode windows that millions
    of sessions are assigned to). PostgreSQL cannot estimate the rows of a window-function
    result, and a wrong estimate there turns a hash join into sorts and nested loops; with the
    result in an analysed table it plans the join from real counts. DuckDB, in one query,
    notices that the windows and the join read the same session rows and materialises those
    rows (at 70 million sessions several GB, spilled to disk under a memory limit); in two
    queries it scans the sessions twice instead (at 1 M persons a quarter less CPU for the
    episodes; no difference at 100,000). Spark recomputes a view per use and needs neither.
    Same rows either way.

    Parameters
    ----------
    backend : ibis backend or EngineSession
    expr : ibis Table
    name : str
        Base name of the temporary table (a unique suffix is added).

    Returns
    -------
    ibis Table
    """
    be = backend.backend if isinstance(backend, EngineSession) else backend
    if not _supports_temp(be):
        return expr
    session = backend if isinstance(backend, EngineSession) else _SESSIONS.get(id(be))
    if session is not None and session._backend is be:
        return session.keep(expr, name)
    table_name = f"iop_{name}_{next(_counter)}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
        return _analyzed(be, be.create_table(table_name, expr, temp=True, overwrite=True))


def int_from_bool(flag):
    """A boolean Ibis expression as int64 (1 true, 0 false, NULL stays NULL), on every engine.

    PostgreSQL has no cast from boolean to bigint (``CAST(flag AS BIGINT)`` fails with
    "cannot cast type boolean to bigint") but has one to integer; DuckDB and Spark have both.
    Going through int32 gives the same values everywhere. Use it for counting flags
    (``int_from_bool(x == 1).sum()``) instead of ``flag.cast("int64")``.

    Parameters
    ----------
    flag : ibis boolean column or scalar expression

    Returns
    -------
    ibis int64 expression

    Examples
    --------
    >>> import ibis
    >>> t = ibis.memtable({"x": [1, 2, 3]})
    >>> int(t.aggregate(n=int_from_bool(t.x > 1).sum()).to_pandas()["n"].iloc[0])
    2
    """
    return flag.cast("int32").cast("int64")


def collect(expr, *, lazy: bool = False):
    """Execute an Ibis expression into pandas (or return it unexecuted when ``lazy``)."""
    if lazy:
        return expr
    return expr.to_pandas()
