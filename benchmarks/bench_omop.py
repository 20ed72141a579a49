"""Benchmark: a simulated OMOP CDM at health-system scale, read with read_omop and prepared.

Generates (vectorised numpy, written as Parquet under ``benchmarks/_work/omop_<n>/``) an OMOP
CDM of ``--persons`` persons: about 70 IOP session procedures per person (per-diem H0015 and
CPT group/individual/family psychotherapy, 1-4 days apart with 2% breaks of 40-150 days),
dispensings of buprenorphine/methadone/naltrexone for 40% of persons, about 8 urine drug
screens per person, overdoses and deaths; the vocabulary subset (``concept``,
``concept_ancestor``) comes from :func:`iop_research.datasets.omop.write_omop` on a tiny
simulated cohort. The CDM is loaded into a DuckDB file and (``--postgres URL``) into
PostgreSQL, then each configuration is measured in a fresh Python process (so peak
resident memory, ``ru_maxrss``, is that configuration's alone):

``duckdb``
    ``read_omop(duckdb file)`` -> IOPData in pandas; ``build_episodes(mode="sessions")``,
    ``medication_eras``, ``counting_process_frame`` on in-process DuckDB.
``duckdb-lazy``
    ``read_omop(..., lazy=True)``: sessions and dispensings stay in the CDM file; episodes and
    eras are built there; only patients, events and observation come to pandas for the
    counting-process frame.
``postgres``
    ``read_omop(PostgreSQL URL, lazy=True)`` and every step with ``engine=`` the PostgreSQL
    connection: the derivation runs inside PostgreSQL (pandas frames the steps hand in become
    temporary tables there).
``postgres-pandas`` (``--measure`` only)
    ``read_omop(PostgreSQL URL)`` -> IOPData in pandas, then the steps on in-process DuckDB.
``spark``
    (``--spark``) a Spark standalone cluster on loopback (master + two workers of 1 core,
    1 GB), the CDM as Parquet views; ``read_omop(lazy=True)`` and the steps with
    ``engine=`` the PySpark backend.

Run from the repository root::

    .venv/bin/python benchmarks/bench_omop.py --persons 100000
    .venv/bin/python benchmarks/bench_omop.py --persons 100000 --postgres "$(.ci/postgres.sh start)" --spark

Generating and loading 1 M persons takes minutes: do it once (``--prepare-only``) and measure
with ``--reuse``. ``BENCH_DUCKDB_MEMORY=5GB`` sets DuckDB's memory limit on the CDM connection
(it then spills to ``omop.duckdb.tmp/``)::

    .venv/bin/python benchmarks/bench_omop.py --persons 1000000 --prepare-only
    BENCH_DUCKDB_MEMORY=5GB .venv/bin/python benchmarks/bench_omop.py --persons 1000000 --reuse --skip duckdb

At 1 M persons: ``--results FILE`` writes the results elsewhere than the default file (so a
PostgreSQL or Spark run does not overwrite the DuckDB one), ``--postgres-loaded`` measures
on the ``cdm`` schema an earlier run loaded (no reload), and ``BENCH_SPARK_EXECUTOR_MEMORY``
(default ``1g``), ``BENCH_SPARK_WORKER_MEMORY`` (``1500m``), ``BENCH_SPARK_DRIVER_MEMORY``
(``3g``), ``BENCH_SPARK_SHUFFLE_PARTITIONS`` (``8``) and ``BENCH_SPARK_RPC_MAX_MB``
(``spark.rpc.message.maxSize``, default 128; 1 M persons needs more) size the Spark cluster.

For ``spark`` the "server CPU" of each step is that of the Spark JVMs (driver JVM, master,
workers, executors), from ``/proc``.

``--baseline DIR`` first measures ``duckdb-lazy`` on the code checked out in ``DIR`` (e.g.
``git archive main | tar -x -C DIR``) and reports the ratios of this checkout's run to it: on a
shared machine two runs one after the other share the load, and the ratio is steadier than
either time.

Each step prints its wall and CPU seconds, peak memory and the load average to stderr (for
``postgres`` also the CPU seconds of the local PostgreSQL server's processes, from ``/proc``).
Results are printed and written to ``benchmarks/_work/omop_results_<n>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "_work"
sys.path.insert(0, str(REPO))

DAY0 = np.datetime64("2018-01-01", "D")
LAST = np.datetime64("2024-12-31", "D")
SPAN_DAYS = int((LAST - DAY0).astype(int))
OMOP_TABLES = ("person", "observation_period", "procedure_occurrence", "visit_occurrence", "drug_exposure",
               "measurement", "condition_occurrence", "observation", "death", "concept", "concept_ancestor")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def server_cpu_seconds(postmaster: int | None) -> float:
    """CPU seconds (user + system) of a local PostgreSQL server: its live processes and, through
    the postmaster's ``cutime``/``cstime``, the parallel workers that have exited. 0 when the
    server is not on this machine."""
    if postmaster is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")

    def stat(pid):
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return text[text.rindex(")") + 2:].split()

    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = stat(entry.name)
            if f is not None and int(f[1]) == postmaster:  # field 4 (ppid)
                total += (int(f[11]) + int(f[12])) / tick
    f = stat(postmaster)
    if f is not None:
        total += sum(int(x) for x in f[11:15]) / tick  # utime, stime, cutime, cstime
    return total


def spark_cpu_seconds() -> float:
    """CPU seconds (user + system) of the live Spark processes on this machine: the driver JVM,
    master, workers, executors (and PySpark daemons). Executors live for the whole session, so
    the difference over a step is the cluster's CPU in that step."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            text = (entry / "stat").read_text()
        except OSError:
            continue
        if b"org.apache.spark" in cmd or b"pyspark.daemon" in cmd:
            f = text[text.rindex(")") + 2:].split()
            total += (int(f[11]) + int(f[12])) / tick
    return total


def postmaster_pid(con) -> int | None:
    """Pid of the postmaster behind an Ibis PostgreSQL connection, when it runs on this machine."""
    cur = con.raw_sql("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    cur.close()
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[1])


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads: DuckDB's too). On a shared
    machine wall time grows with the load; CPU time does much less."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------- generation
def vocabulary(folder: Path) -> dict[str, int]:
    """concept/concept_ancestor from write_omop on a tiny cohort; concept ids by code."""
    import ibis

    from iop_research.data.synth import simulate_cohort
    from iop_research.datasets.omop import write_omop

    con = ibis.duckdb.connect()
    write_omop(simulate_cohort(5, seed=1, progress=False), con, cdm_schema="v")
    for name in ("concept", "concept_ancestor"):
        con.table(name, database="v").to_parquet(folder / f"{name}.parquet")
    c = con.table("concept", database="v").to_pandas()
    return dict(zip(c["concept_code"], c["concept_id"].astype(int)))


def generate(n: int, folder: Path, seed: int = 20261207, chunk: int = 200_000) -> dict[str, int]:
    """Write the CDM tables of ``n`` persons as Parquet; return row counts.

    Persons are generated in blocks of ``chunk`` (each block its own seeded generator), each
    block appended to the Parquet files as row groups, so memory stays that of one block
    (about 14 M session rows) whatever ``n`` is.
    """
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    ids = vocabulary(folder)
    writers: dict[str, pq.ParquetWriter] = {}
    counts: dict[str, int] = {}
    try:
        for block, first in enumerate(range(0, n, chunk)):
            rng = np.random.default_rng([seed, block])
            tables = _generate_block(rng, first, min(chunk, n - first), ids, counts)
            for name, table in tables.items():
                if name not in writers:
                    writers[name] = pq.ParquetWriter(folder / f"{name}.parquet", table.schema)
                writers[name].write_table(table, row_group_size=1_000_000)
                counts[name] = counts.get(name, 0) + table.num_rows
    finally:
        for w in writers.values():
            w.close()
    return counts


def _generate_block(rng, first: int, n: int, ids: dict[str, int], counts: dict[str, int]) -> dict:
    """CDM rows of persons ``first + 1 .. first + n``; row ids continue after ``counts``."""
    import pyarrow as pa

    pid = np.arange(first + 1, first + n + 1, dtype=np.int64)
    out = {}

    def row_ids(name, m):
        base = counts.get(name, 0)
        return np.arange(base + 1, base + m + 1, dtype=np.int64)

    out["person"] = pa.table({
        "person_id": pid, "gender_concept_id": rng.choice([8507, 8532], n).astype(np.int64),
        "year_of_birth": rng.integers(1950, 2001, n).astype(np.int64),
        "race_concept_id": rng.choice([8527, 8516, 8515, 0], n, p=[0.6, 0.2, 0.05, 0.15]).astype(np.int64),
        "ethnicity_concept_id": rng.choice([38003563, 38003564], n, p=[0.15, 0.85]).astype(np.int64),
        "person_source_value": pa.array([f"P{i:07d}" for i in pid]),
    })
    obs_end = LAST - rng.integers(0, 365, n) * (rng.random(n) < 0.3)
    out["observation_period"] = pa.table({
        "observation_period_id": pid, "person_id": pid,
        "observation_period_start_date": np.full(n, DAY0), "observation_period_end_date": obs_end,
        "period_type_concept_id": np.full(n, 32817, dtype=np.int64),
    })
    # sessions: ~70 per person, consecutive days 1-4 apart, 2% breaks of 40-150 days
    k = rng.poisson(70, n) + 1
    m = int(k.sum())
    owner = np.repeat(np.arange(n), k)
    step = np.where(rng.random(m) < 0.02, rng.integers(40, 151, m), rng.integers(1, 5, m))
    starts = np.cumsum(k) - k
    step[starts] = 0
    offset = np.cumsum(step) - np.repeat(np.cumsum(step)[starts], k)
    del step
    span = np.repeat(offset[np.cumsum(k) - 1], k)
    obs_day = (obs_end - DAY0).astype(int)
    room = obs_day[owner] - span
    first_day = (rng.random(n) * np.maximum(room[starts], 1)).astype(int)
    del span, room
    day = np.minimum(np.repeat(first_day, k) + offset, obs_day[owner])
    del offset
    kind = rng.choice(4, m, p=[0.5, 0.3, 0.15, 0.05])
    concept = np.array([ids["H0015"], ids["90853"], ids["90834"], ids["90847"]], dtype=np.int64)[kind]
    date = DAY0 + day.astype("timedelta64[D]")
    start_ts = date.astype("datetime64[s]") + np.timedelta64(9 * 3600, "s")
    minutes = np.array([0, 90, 50, 50])[kind]
    has_time = kind > 0
    out["procedure_occurrence"] = pa.table({
        "procedure_occurrence_id": row_ids("procedure_occurrence", m), "person_id": pid[owner],
        "procedure_concept_id": concept, "procedure_date": date,
        "procedure_datetime": pa.array(start_ts, mask=~has_time),
        "procedure_end_datetime": pa.array(start_ts + (minutes * 60).astype("timedelta64[s]"), mask=~has_time),
        "procedure_type_concept_id": np.full(m, 32817, dtype=np.int64),
        "procedure_source_concept_id": np.zeros(m, dtype=np.int64),
        "visit_occurrence_id": pa.nulls(m, pa.int64()),
    })
    del owner, day, kind, concept, date, start_ts, minutes, has_time
    # dispensings: 40% of persons, ~10 each, 7-30 days apart
    treated = np.flatnonzero(rng.random(n) < 0.4)
    kd = rng.poisson(10, len(treated)) + 1
    md = int(kd.sum())
    downer = np.repeat(treated, kd)
    drug = rng.choice([1133201, 1103640, 1714319], len(treated), p=[0.55, 0.3, 0.15])
    supply = rng.choice([7, 14, 28, 30], md).astype(np.int64)
    gap = rng.integers(5, 40, md)
    dstart = np.cumsum(kd) - kd
    gap[dstart] = 0
    doff = np.cumsum(gap) - np.repeat(np.cumsum(gap)[dstart], kd)
    dday = np.minimum(rng.integers(0, SPAN_DAYS // 2, len(treated))[np.repeat(np.arange(len(treated)), kd)] + doff,
                      obs_day[downer])
    ddate = DAY0 + dday.astype("timedelta64[D]")
    out["drug_exposure"] = pa.table({
        "drug_exposure_id": row_ids("drug_exposure", md), "person_id": pid[downer],
        "drug_concept_id": np.repeat(drug, kd).astype(np.int64), "drug_exposure_start_date": ddate,
        "drug_exposure_end_date": ddate + (supply - 1).astype("timedelta64[D]"),
        "drug_type_concept_id": np.full(md, 32817, dtype=np.int64), "days_supply": supply,
        "route_concept_id": np.full(md, 4132161, dtype=np.int64),
    })
    # urine drug screens: ~8 per person, 15% positive
    ku = rng.poisson(8, n)
    mu = int(ku.sum())
    uowner = np.repeat(np.arange(n), ku)
    uday = (rng.random(mu) * obs_day[uowner]).astype(int)
    out["measurement"] = pa.table({
        "measurement_id": row_ids("measurement", mu), "person_id": pid[uowner],
        "measurement_concept_id": np.full(mu, ids["19295-5"], dtype=np.int64),
        "measurement_date": DAY0 + uday.astype("timedelta64[D]"),
        "measurement_type_concept_id": np.full(mu, 32817, dtype=np.int64),
        "value_as_number": np.full(mu, np.nan),
        "value_as_concept_id": np.where(rng.random(mu) < 0.15, 9191, 9189).astype(np.int64),
        "range_high": np.full(mu, np.nan),
    })
    od = np.flatnonzero(rng.random(n) < 0.02)
    oday = (rng.random(len(od)) * obs_day[od]).astype(int)
    out["condition_occurrence"] = pa.table({
        "condition_occurrence_id": row_ids("condition_occurrence", len(od)), "person_id": pid[od],
        "condition_concept_id": np.zeros(len(od), dtype=np.int64),
        "condition_source_concept_id": np.full(len(od), ids["T40.2X1A"], dtype=np.int64),
        "condition_start_date": DAY0 + oday.astype("timedelta64[D]"),
        "condition_type_concept_id": np.full(len(od), 32817, dtype=np.int64),
        "visit_occurrence_id": pa.nulls(len(od), pa.int64()),
    })
    dead = np.flatnonzero(rng.random(n) < 0.01)
    out["death"] = pa.table({"person_id": pid[dead], "death_date": obs_end[dead],
                             "death_type_concept_id": np.full(len(dead), 32817, dtype=np.int64)})
    return out


# --------------------------------------------------------------------------- loading
def load_duckdb(folder: Path, path: Path) -> float:
    import duckdb

    t0 = time.perf_counter()
    if path.exists():
        path.unlink()
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA cdm")
    for name in OMOP_TABLES:
        f = folder / f"{name}.parquet"
        if f.exists():
            con.execute(f"CREATE TABLE cdm.{name} AS SELECT * FROM read_parquet('{f}')")
    con.close()
    return time.perf_counter() - t0


_PG_TYPES = {"int64": "bigint", "double": "double precision", "string": "text", "large_string": "text",
             "date32[day]": "date", "timestamp[s]": "timestamp", "timestamp[us]": "timestamp",
             "timestamp[ns]": "timestamp", "timestamp[ms]": "timestamp", "int32": "integer", "null": "bigint"}


def load_postgres(folder: Path, url: str) -> float:
    import psycopg
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS cdm CASCADE")
        conn.execute("CREATE SCHEMA cdm")
        for name in OMOP_TABLES:
            f = folder / f"{name}.parquet"
            if not f.exists():
                continue
            pf = pq.ParquetFile(f)
            cols = ", ".join(f'"{fld.name}" {_PG_TYPES[str(fld.type)]}' for fld in pf.schema_arrow)
            conn.execute(f"CREATE TABLE cdm.{name} ({cols})")
            with conn.cursor().copy(f"COPY cdm.{name} FROM STDIN WITH (FORMAT csv)") as copy:
                for batch in pf.iter_batches(batch_size=500_000):
                    import io

                    buf = io.BytesIO()
                    pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                    copy.write(buf.getvalue())
            conn.execute(f"ANALYZE cdm.{name}")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- measurement (child process)
def measure(config: str, target: str) -> dict:
    warnings.simplefilter("ignore")
    from iop_research.data.io import IOPData
    from iop_research.data.schema import empty_table
    from iop_research.datasets.omop import read_omop
    from iop_research.derive.episodes import build_episodes
    from iop_research.derive.exposures import medication_eras
    from iop_research.derive.frames import counting_process_frame

    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    rows: dict[str, int] = {}
    t0 = time.perf_counter()
    c0 = cpu_seconds()

    server: dict[str, float] = {}
    postmaster = None

    def step(name, fn):
        # the server's CPU: PostgreSQL's processes, or the Spark JVMs
        measured = postmaster is not None or spark is not None

        def server_cpu():
            return spark_cpu_seconds() if spark is not None else server_cpu_seconds(postmaster)

        t, c, sc = time.perf_counter(), cpu_seconds(), server_cpu()
        out = fn()
        times[name], cpu[name] = time.perf_counter() - t, cpu_seconds() - c
        if measured:
            server[name] = server_cpu() - sc
        print(f"{config}: {name} {times[name]:.1f} s (cpu {cpu[name]:.1f} s"
              + (f", server cpu {server[name]:.1f} s" if measured else "")
              + f", peak {peak_rss_mb():,.0f} MiB, "
              f"load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        return out

    engine = None
    spark = None
    if config == "spark":
        import ibis
        from pyspark.sql import SparkSession

        master, folder = target.split("|")
        spark = (SparkSession.builder.master(master).appName("bench-omop")
                 .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
                 .config("spark.driver.bindAddress", "127.0.0.1")
                 .config("spark.driver.memory", os.environ.get("BENCH_SPARK_DRIVER_MEMORY", "3g"))
                 .config("spark.executor.memory", os.environ.get("BENCH_SPARK_EXECUTOR_MEMORY", "1g"))
                 .config("spark.executor.cores", "1")
                 .config("spark.cores.max", "2").config("spark.sql.session.timeZone", "UTC")
                 .config("spark.sql.shuffle.partitions", os.environ.get("BENCH_SPARK_SHUFFLE_PARTITIONS", "8"))
                 .config("spark.pyspark.python", sys.executable)
                 # pandas frames handed to a step travel inside the tasks (at 1 M persons 145 MB
                 # in the counting-process step, over Spark's default limit of 128 MB)
                 .config("spark.rpc.message.maxSize", os.environ.get("BENCH_SPARK_RPC_MAX_MB", "128"))
                 .getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        for name in OMOP_TABLES:
            f = Path(folder) / f"{name}.parquet"
            if f.exists():
                spark.read.parquet(str(f)).createOrReplaceTempView(name)
        con, schema, engine = ibis.pyspark.connect(spark), None, None
        engine = con
        times["connect"] = time.perf_counter() - t0
    else:
        con, schema = target, "cdm"
    lazy_mode = config in ("duckdb-lazy", "spark", "postgres")
    if lazy_mode:
        import ibis

        if isinstance(con, str):
            con = ibis.connect(con)
        if os.environ.get("BENCH_DUCKDB_MEMORY") and con.name == "duckdb":
            con.raw_sql(f"SET memory_limit = '{os.environ['BENCH_DUCKDB_MEMORY']}'")
        if config == "postgres":
            engine = con  # derivation inside PostgreSQL
            postmaster = postmaster_pid(con)

        def read():
            lazy = read_omop(con, cdm_schema=schema, lazy=True)
            small = {k: lazy[k].to_pandas() for k in ("patients", "events", "observation")}
            # sessions and dispensings stay in the database (Ibis tables); the rest is small
            return lazy, IOPData(patients=small["patients"], admissions=empty_table("admissions"),
                                 sessions=lazy["sessions"], medications=lazy["medications"],
                                 events=small["events"], observation=small["observation"])

        lazy, data = step("read_omop", read)
        episodes = step("episodes", lambda: build_episodes(data, mode="sessions", gap_days=30, engine=engine))
        eras = step("eras", lambda: medication_eras(lazy["medications"], engine=engine))
    else:
        data = step("read_omop", lambda: read_omop(con, cdm_schema=schema, validate=False))
        rows.update({k: len(getattr(data, k)) for k in ("sessions", "medications", "events")})
        episodes = step("episodes", lambda: build_episodes(data, mode="sessions", gap_days=30))
        eras = step("eras", lambda: medication_eras(data.medications))
    cp = step("counting_process", lambda: counting_process_frame(data, episodes=episodes, eras=eras, engine=engine))
    times["total"] = time.perf_counter() - t0
    cpu["total"] = cpu_seconds() - c0
    rows.update(episodes=len(episodes), eras=len(eras), counting_process=len(cp))
    if server:
        server["total"] = sum(server.values())
    out = {"config": config, "seconds": times, "cpu_seconds": cpu, "server_cpu_seconds": server, "rows": rows,
           "peak_rss_mb": peak_rss_mb(),
           "load_avg": os.getloadavg()[0],
           "episodes_sha": pd.util.hash_pandas_object(episodes.drop(columns=[], errors="ignore"), index=False).sum()
           .item()}
    if spark is not None:
        spark.stop()
    return out


def estimation(rows: int) -> dict:
    """Peak memory of the in-process estimators on a counting-process frame of ``rows`` rows
    (4 covariates, ~2.3 rows per episode, cluster-robust Cox and Kaplan-Meier)."""
    warnings.simplefilter("ignore")
    from iop_research.survival import fit_cox, fit_km

    base = peak_rss_mb()
    rng = np.random.default_rng(5)
    n_ep = int(rows / 2.3)
    ep = np.sort(rng.integers(0, n_ep, rows))
    length = rng.integers(1, 200, rows)
    stop = pd.Series(length).groupby(ep).cumsum().to_numpy()
    start = stop - length
    frame = pd.DataFrame({
        "episode_id": pd.array([f"E{i:08d}" for i in ep], dtype="string"), "start": start, "stop": stop,
        "event": (rng.random(rows) < 0.2).astype(np.int64), "on_mat": rng.random(rows) < 0.4,
        "age": rng.normal(38, 10, rows), "female": rng.random(rows) < 0.4, "severity": rng.normal(5, 2, rows),
    })
    frame_mb = frame.memory_usage(deep=True).sum() / 2**20
    t = time.perf_counter()
    fit_cox(frame, start_col="start", stop_col="stop", event_col="event",
            covariates=["on_mat", "age", "female", "severity"], cluster_col="episode_id", robust=True)
    cox_s = time.perf_counter() - t
    t = time.perf_counter()
    fit_km(frame.assign(time=frame["stop"]), duration_col="time", event_col="event", group_col="on_mat")
    km_s = time.perf_counter() - t
    peak = peak_rss_mb()
    return {"rows": rows, "frame_mb": frame_mb, "baseline_mb": base, "peak_rss_mb": peak, "cox_s": cox_s,
            "km_s": km_s, "rows_per_gb": rows / ((peak - base) / 1024)}


def run_child(config: str, target: str, repo: Path = REPO) -> dict:
    """Measure ``config`` in a fresh process, on the code of ``repo`` (this checkout by default)."""
    env = dict(os.environ, PYTHONPATH=str(repo), PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    script = Path(repo) / "benchmarks" / "bench_omop.py"
    # the child's stderr (its per-step lines, as they happen) goes to ours
    proc = subprocess.run([sys.executable, str(script), "--measure", config, "--target", target],
                          env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{config} failed (its stderr is above):\n{proc.stdout[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- Spark standalone
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_spark(work: Path):
    import pyspark

    home = Path(pyspark.__file__).parent
    spark_class = home / "bin" / "spark-class"
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    work.mkdir(parents=True, exist_ok=True)
    procs = []
    specs = [("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                         "--webui-port", str(_free_port())])]
    specs += [(f"worker{k}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                              "--memory", os.environ.get("BENCH_SPARK_WORKER_MEMORY", "1500m"), "--webui-port", str(_free_port()), "--work-dir",
                              str(work / f"w{k}"), url]) for k in (1, 2)]
    for name, args in specs:
        with open(work / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen(["bash", str(spark_class), *args], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + 180
    while (work / "master.log").read_text(errors="replace").count("Registering worker") < 2:
        if time.monotonic() > deadline:
            stop_spark(procs)
            raise RuntimeError("Spark standalone cluster did not start; see " + str(work))
        time.sleep(1)
    return url, procs


def stop_spark(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--postgres", help="PostgreSQL URL to load the CDM into and measure")
    ap.add_argument("--spark", action="store_true", help="also measure on a Spark standalone cluster")
    ap.add_argument("--skip", default="", help="comma-separated configurations to skip")
    ap.add_argument("--baseline", help="a checkout of other code (e.g. main) to measure duckdb-lazy on first, "
                                       "reported as configuration 'baseline' with the ratios to it")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the CDM generated by an earlier run (benchmarks/_work/omop_<n>/)")
    ap.add_argument("--prepare-only", action="store_true", help="generate and load the CDM, measure nothing")
    ap.add_argument("--postgres-loaded", action="store_true",
                    help="the CDM is already in the PostgreSQL database (schema cdm) of an earlier run: do not reload")
    ap.add_argument("--results", help="results file (default benchmarks/_work/omop_results_<n>.json)")
    ap.add_argument("--estimation-rows", default="",
                    help="comma-separated counting-process sizes for the in-process estimation memory check")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure == "estimation":
        print(json.dumps(estimation(int(args.target))))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.target)))
        return
    if args.estimation_rows:
        for rows in map(int, args.estimation_rows.split(",")):
            print(json.dumps(run_child("estimation", str(rows))), flush=True)
        if args.persons == 0:
            return
    folder = WORK / f"omop_{args.persons}"
    load = {"load_avg_before": os.getloadavg()[0]}
    db = folder / "omop.duckdb"  # not cdm.duckdb: DuckDB would find catalog and schema "cdm" ambiguous
    prepared = folder / "prepared.json"
    if args.reuse and prepared.exists() and db.exists():
        counts = json.loads(prepared.read_text())["rows"]
        print(f"reusing {folder}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
    else:
        t = time.perf_counter()
        counts = generate(args.persons, folder)
        load["generate_s"] = time.perf_counter() - t
        print(f"generated {args.persons:,} persons: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
              + f" in {load['generate_s']:.1f} s (peak {peak_rss_mb():,.0f} MiB)", flush=True)
        load["duckdb_load_s"] = load_duckdb(folder, db)
        print(f"DuckDB file loaded in {load['duckdb_load_s']:.1f} s ({db.stat().st_size / 2**20:,.0f} MiB)",
              flush=True)
        prepared.write_text(json.dumps({"rows": counts, "setup": load}, indent=1))
    if args.prepare_only:
        return
    skip = set(filter(None, args.skip.split(",")))
    results = []
    if args.baseline and "duckdb-lazy" not in skip:
        # the same configuration on other code (e.g. `git archive main | tar -x -C DIR`), in the
        # same run: on a shared machine the ratio of the two is steadier than either time
        results.append(run_child("duckdb-lazy", f"duckdb:///{db}", Path(args.baseline)))
        results[-1]["config"] = "baseline"
        print(json.dumps(results[-1]), flush=True)
    for config, target in (("duckdb", f"duckdb:///{db}"), ("duckdb-lazy", f"duckdb:///{db}")):
        if config not in skip:
            results.append(run_child(config, target))
            print(json.dumps(results[-1]), flush=True)
    if args.postgres and "postgres" not in skip:
        if not args.postgres_loaded:
            load["postgres_load_s"] = load_postgres(folder, args.postgres)
            print(f"PostgreSQL loaded in {load['postgres_load_s']:.1f} s", flush=True)
        results.append(run_child("postgres", args.postgres))
        print(json.dumps(results[-1]), flush=True)
    if args.spark and "spark" not in skip:
        url, procs = start_spark(folder / "spark")
        try:
            results.append(run_child("spark", f"{url}|{folder}"))
            print(json.dumps(results[-1]), flush=True)
        finally:
            stop_spark(procs)
    load["load_avg_after"] = os.getloadavg()[0]
    shas = {r["config"]: r["episodes_sha"] for r in results}
    print("episode tables identical across configurations:", len(set(shas.values())) == 1, shas)
    print(f"{'configuration':<14}{'read_omop':>10}{'episodes':>10}{'eras':>8}{'cp frame':>10}{'total s':>9}"
          f"{'peak MiB':>10}")
    for r in results:
        s = r["seconds"]
        print(f"{r['config']:<14}{s['read_omop']:>10.1f}{s['episodes']:>10.1f}{s['eras']:>8.1f}"
              f"{s['counting_process']:>10.1f}{s['total']:>9.1f}{r['peak_rss_mb']:>10,.0f}")
    print(f"load average before {load['load_avg_before']:.1f}, after {load['load_avg_after']:.1f} (2 cores)")
    base = next((r for r in results if r["config"] == "baseline"), None)
    if base is not None:
        for r in results:
            if r is not base and r["config"].startswith("duckdb"):
                r["ratio_to_baseline"] = {"wall": r["seconds"]["total"] / base["seconds"]["total"],
                                          "cpu": r["cpu_seconds"]["total"] / base["cpu_seconds"]["total"],
                                          "peak_memory": r["peak_rss_mb"] / base["peak_rss_mb"]}
                print(f"{r['config']} / baseline: wall {r['ratio_to_baseline']['wall']:.2f}, "
                      f"cpu {r['ratio_to_baseline']['cpu']:.2f}, peak memory "
                      f"{r['ratio_to_baseline']['peak_memory']:.2f}")
    out = Path(args.results) if args.results else WORK / f"omop_results_{args.persons}.json"
    out.write_text(json.dumps({"persons": args.persons, "rows": counts, "setup": load, "results": results},
                              indent=1))
    print(f"written {out}")
    if shutil.which("java") is None and args.spark:  # pragma: no cover
        print("note: java not found; Spark was not measured")


if __name__ == "__main__":
    main()
