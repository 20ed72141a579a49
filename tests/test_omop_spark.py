"""read_omop and the pipeline on a Spark standalone cluster: byte-identical to DuckDB.

The test starts a Spark standalone cluster on the loopback interface (one master, two workers
of one core and 1 GB each, via the pyspark package's ``bin/spark-class``), writes a simulated
cohort as OMOP CDM parquet files (``write_omop`` into DuckDB, then one parquet file per table),
and runs this file as a script in a separate Python process (its own JVM, so no local-mode
SparkSession of another test module is reused): the driver registers the parquet tables as
Spark views, calls ``read_omop`` on the Ibis PySpark backend (the contract tables, compared
with DuckDB's reading of the same files), then runs episodes (gap rule), MAT eras, relapse
outcomes and the counting-process frame with ``engine=`` that backend on an IOPData whose
sessions and dispensings are ``read_omop(lazy=True)``'s unexecuted Spark expressions (they never
leave Spark). Every table must be byte-identical (SHA-256 of ``to_csv()``, as
``tests/test_determinism.py``) to the same steps on DuckDB. Marked ``spark`` and ``slow``: about
3 minutes on an idle 2-core machine, up to 9 under heavy load.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

N_PATIENTS = 30
SEED = 23
STEPS = ("patients", "sessions", "medications", "events", "observation",
         "episodes", "eras", "outcomes", "counting_process")


def fingerprint(df: pd.DataFrame) -> str:
    return hashlib.sha256(df.to_csv().encode("utf-8")).hexdigest()


def derived(data, engine=None, lazy=None, timings=None) -> dict[str, pd.DataFrame]:
    """The contract tables read and the steps derived from them on ``engine`` (seconds per
    step into ``timings`` when given). With ``lazy`` (read_omop's unexecuted tables) the
    sessions and dispensings stay in the CDM's engine: the steps read them from there."""
    from iop_research.data.io import IOPData
    from iop_research.derive.episodes import build_episodes
    from iop_research.derive.exposures import medication_eras
    from iop_research.derive.frames import counting_process_frame
    from iop_research.derive.outcomes import relapse_outcomes

    timings = {} if timings is None else timings
    out = {name: getattr(data, name) for name in ("patients", "sessions", "medications", "events", "observation")}
    if lazy is not None:
        data = IOPData(patients=data.patients, admissions=data.admissions, sessions=lazy["sessions"],
                       medications=lazy["medications"], events=data.events, observation=data.observation)

    def step(name, fn):
        t0 = time.perf_counter()
        out[name] = fn()
        timings[name] = time.perf_counter() - t0

    step("episodes", lambda: build_episodes(data, mode="sessions", gap_days=30, engine=engine))
    step("eras", lambda: medication_eras(data.medications, engine=engine))
    step("outcomes", lambda: relapse_outcomes(data, episodes=out["episodes"], engine=engine))
    step("counting_process", lambda: counting_process_frame(data, episodes=out["episodes"], eras=out["eras"],
                                                            engine=engine))
    return out


# --------------------------------------------------------------------------- driver (subprocess)
def _driver(master: str, parquet_dir: str, out_path: str) -> None:
    import ibis
    from pyspark.sql import SparkSession

    from iop_research.datasets.omop import OMOP_TABLES, read_omop

    spark = (
        SparkSession.builder.master(master).appName("iop-research-omop-test")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", "1g").config("spark.executor.memory", "512m")
        .config("spark.executor.cores", "1").config("spark.cores.max", "2")
        .config("spark.sql.session.timeZone", "UTC").config("spark.sql.shuffle.partitions", "4")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    for name in OMOP_TABLES:
        spark.read.parquet(str(Path(parquet_dir) / f"{name}.parquet")).createOrReplaceTempView(name)
    con = ibis.pyspark.connect(spark)
    t0 = time.perf_counter()
    data = read_omop(con, patient_id_col="person_source_value")
    timings = {"read_omop": time.perf_counter() - t0}
    lazy = read_omop(con, patient_id_col="person_source_value", lazy=True)
    out = derived(data, engine=con, lazy=lazy, timings=timings)
    executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
    with open(out_path, "wb") as fh:
        pickle.dump({"frames": out, "master": spark.sparkContext.master, "executors": executors,
                     "seconds": timings}, fh)
    spark.stop()


if __name__ == "__main__":  # pragma: no cover - run by the test in its own process
    _driver(*sys.argv[1:4])
    sys.exit(0)


# --------------------------------------------------------------------------- the test
pytestmark = [
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*fetch_arrow_table.*:DeprecationWarning"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """``spark://127.0.0.1:<port>``: a master and two workers (1 core, 1 GB each) on loopback."""
    pyspark = pytest.importorskip("pyspark")
    if shutil.which("java") is None:  # pragma: no cover - CI has Java 17
        pytest.skip("Java is needed for Spark")
    home = Path(pyspark.__file__).parent
    spark_class = home / "bin" / "spark-class"
    if not spark_class.exists():  # pragma: no cover
        pytest.skip(f"{spark_class} not found in the pyspark package")
    work = tmp_path_factory.mktemp("spark-standalone")
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_WORKER_DIR=str(work / "work"),
               PYSPARK_PYTHON=sys.executable, SPARK_NO_DAEMONIZE="1")
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = []

    def launch(name, *args):
        with open(work / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            procs.append(subprocess.Popen(["bash", str(spark_class), *args], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))

    launch("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
           "--webui-port", str(_free_port()))
    for k in (1, 2):
        launch(f"worker{k}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
               "--memory", "1g", "--webui-port", str(_free_port()), "--work-dir", str(work / f"w{k}"), url)
    deadline = time.monotonic() + 180
    try:
        while True:
            text = (work / "master.log").read_text(errors="replace") if (work / "master.log").exists() else ""
            if text.count("Registering worker") >= 2:
                break
            dead = [p.args for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f.read_text(errors="replace")[-2000:] for f in sorted(work.glob("*.log")))
                pytest.fail(f"Spark standalone cluster did not start (exited: {dead}):\n{logs}")
            time.sleep(1)
        yield url
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def omop_parquet(tmp_path_factory):
    import ibis

    from iop_research.data.synth import simulate_cohort
    from iop_research.datasets.omop import OMOP_TABLES, write_omop

    folder = tmp_path_factory.mktemp("omop-parquet")
    con = ibis.duckdb.connect()
    write_omop(simulate_cohort(N_PATIENTS, seed=SEED, progress=False), con, cdm_schema="cdm")
    for name in OMOP_TABLES:
        con.table(name, database="cdm").to_parquet(folder / f"{name}.parquet")
    return folder


@pytest.fixture(scope="module")
def duckdb_results(omop_parquet):
    """The same parquet files read with DuckDB, steps on DuckDB."""
    import ibis

    from iop_research.datasets.omop import OMOP_TABLES, read_omop

    con = ibis.duckdb.connect()
    for name in OMOP_TABLES:
        con.read_parquet(omop_parquet / f"{name}.parquet", table_name=name)
    data = read_omop(con, patient_id_col="person_source_value")
    return derived(data)


@pytest.fixture(scope="module")
def spark_results(standalone_cluster, omop_parquet, tmp_path_factory):
    out = tmp_path_factory.mktemp("spark-out") / "results.pkl"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARK_LOCAL_IP="127.0.0.1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-W", "ignore", __file__, standalone_cluster, str(omop_parquet), str(out)],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        pytest.fail(f"Spark driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    with open(out, "rb") as fh:
        return pickle.load(fh)


def test_driver_ran_on_the_standalone_cluster(spark_results, standalone_cluster):
    print("seconds on Spark standalone:", spark_results["seconds"])
    assert spark_results["master"] == standalone_cluster
    assert spark_results["executors"] == 2


@pytest.mark.parametrize("step", STEPS)
def test_spark_standalone_byte_identical_to_duckdb(spark_results, duckdb_results, step):
    a, b = duckdb_results[step], spark_results["frames"][step]
    assert len(a) > 0
    assert fingerprint(a) == fingerprint(b), f"{step}: DuckDB and Spark differ"
