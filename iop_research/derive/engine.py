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
    Used as given (e.g. ``ibis.pyspark.connect(spark)`` on a cluster, PostgreSQL).
"""
from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from iop_research.exceptions import DataReadError, ModelSpecificationError

__all__ = ["get_backend", "as_table", "collect"]

_counter = itertools.count()
_SPARK_BACKEND = None


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
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def get_backend(engine: Any = None):
    """Return an Ibis backend for ``engine`` (see module docstring)."""
    import ibis

    global _SPARK_BACKEND
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
    backend : ibis backend
    data : pandas.DataFrame, str or Path (CSV or Parquet file), or ibis Table
    name : str
        Base name of the temporary table (a unique suffix is added).
    """
    import ibis

    if isinstance(data, ibis.expr.types.Table):
        return data
    table_name = f"iop_{name}_{next(_counter)}"
    with warnings.catch_warnings():
        # ibis 12 calls DuckDB 2's deprecated fetch_arrow_table() when it reads a schema;
        # not ours to fix, and pytest runs with warnings as errors.
        warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
        if isinstance(data, pd.DataFrame):
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
    return getattr(backend, "name", "") == "duckdb"


def collect(expr, *, lazy: bool = False):
    """Execute an Ibis expression into pandas (or return it unexecuted when ``lazy``)."""
    if lazy:
        return expr
    return expr.to_pandas()
