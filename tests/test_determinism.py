"""Determinism: same inputs and parameters give byte-identical result tables.

Each result table is fingerprinted as the SHA-256 of ``DataFrame.to_csv()``
(index, column names, dtypes as rendered, float text and row order all count).
Two runs in one process must agree for every landed pipeline step and estimator;
the DuckDB and Spark engines must agree for the steps that run on both (marker
``spark``). Inputs are re-created for each run so that a step cannot lean on state
left by the previous one.
"""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from iop_research.derive.cohorts import Attrition, CohortDefinition, select_cohort
from iop_research.derive.episodes import build_episodes
from iop_research.derive.exposures import medication_eras, proportion_days_covered
from iop_research.derive.frames import counting_process_frame, landmark_frame, survival_frame
from iop_research.derive.outcomes import recurrent_relapses, relapse_outcomes
from iop_research.survival import fit_cox, fit_km
from iop_research.data.synth import simulate_cohort


def fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 of the CSV text of a frame (dtypes shown through their text form)."""
    return hashlib.sha256(df.to_csv().encode("utf-8")).hexdigest()


def _windows(ep: pd.DataFrame) -> pd.DataFrame:
    end = ep["discharge_date"].fillna(ep["admit_date"] + pd.to_timedelta(ep["los_days"], unit="D"))
    return ep.assign(discharge_date=end)[["episode_id", "patient_id", "admit_date", "discharge_date"]]


def run_pipeline(seed: int = 31, n: int = 150, engine=None) -> dict[str, pd.DataFrame]:
    """Every landed step, from simulation to fitted models, on fresh inputs."""
    data = simulate_cohort(n, seed=seed, progress=False)
    out: dict[str, pd.DataFrame] = {name: t for name, t in data.tables().items()}
    ep = build_episodes(data, engine=engine)
    out["episodes"] = ep
    out["episodes_attrition"] = pd.DataFrame(ep.attrs["attrition"])
    out["episodes_gap"] = build_episodes(data, mode="sessions", gap_days=30, engine=engine)
    out["eras"] = medication_eras(data.medications, engine=engine)
    out["pdc"] = proportion_days_covered(data.medications, _windows(ep), engine=engine)
    att = Attrition()
    out["outcomes"] = relapse_outcomes(data, episodes=ep, engine=engine, attrition=att)
    out["outcomes_attrition"] = att.to_frame()
    out["recurrent"] = recurrent_relapses(data, episodes=ep, engine=engine)
    out["survival_frame"] = survival_frame(data, episodes=ep, engine=engine)
    out["counting_process"] = counting_process_frame(data, episodes=ep, engine=engine)
    out["landmark"] = landmark_frame(data, landmark_days=30, episodes=ep, engine=engine)
    # survival_frame has no admit_date, which first_episode_only needs: take it from the episodes
    frame = out["survival_frame"].merge(ep[["episode_id", "admit_date"]], on="episode_id", how="left")
    cohort, cohort_att = select_cohort(frame, CohortDefinition(min_age=18, first_episode_only=True))
    out["cohort"], out["cohort_attrition"] = cohort, cohort_att
    km = fit_km(cohort, duration_col="time", event_col="event", group_col="psychiatric_comorbidity")
    out["km_tidy"], out["km_glance"] = km.tidy, km.glance
    cox = fit_cox(cohort, duration_col="time", event_col="event",
                  covariates=["psychiatric_comorbidity", "prior_treatment_episodes"])
    out["cox_tidy"], out["cox_glance"] = cox.tidy, cox.glance
    return out


@pytest.fixture(scope="module")
def two_runs():
    return run_pipeline(), run_pipeline()


def test_pipeline_covers_landed_steps(two_runs):
    first, _ = two_runs
    assert {"episodes", "eras", "pdc", "outcomes", "recurrent", "survival_frame", "counting_process", "landmark",
            "cohort", "km_tidy", "cox_tidy"} <= set(first)
    assert all(len(df) > 0 for df in first.values())


@pytest.mark.parametrize("name", [
    "patients", "admissions", "sessions", "medications", "events", "observation", "episodes",
    "episodes_attrition", "episodes_gap", "eras", "pdc", "outcomes", "outcomes_attrition", "recurrent",
    "survival_frame", "counting_process", "landmark", "cohort", "cohort_attrition", "km_tidy", "km_glance",
    "cox_tidy", "cox_glance",
])
def test_two_runs_byte_identical(two_runs, name):
    a, b = two_runs
    assert fingerprint(a[name]) == fingerprint(b[name]), f"{name} differs between two identical runs"


def test_fingerprint_sees_changes(two_runs):
    a, _ = two_runs
    ep = a["episodes"]
    assert fingerprint(ep) != fingerprint(ep.iloc[::-1])  # row order counts
    assert fingerprint(ep) != fingerprint(ep.assign(los_days=ep["los_days"].astype("float64")))  # dtype counts


def test_another_seed_differs(two_runs):
    other = simulate_cohort(150, seed=32, progress=False)
    assert fingerprint(other.sessions) != fingerprint(two_runs[0]["sessions"])


def test_written_files_byte_identical(tmp_path):
    for sub in ("a", "b"):
        simulate_cohort(40, seed=3, progress=False).write(tmp_path / sub, format="csv.gz")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in names)


def _shuffled(data, seed=0):
    rng = np.random.default_rng(seed)
    return type(data)(**{n: t.iloc[rng.permutation(len(t))].reset_index(drop=True)
                         for n, t in data.tables().items()})


def test_input_row_order_does_not_change_eras():
    data = simulate_cohort(80, seed=9, progress=False)
    assert fingerprint(medication_eras(data.medications)) == fingerprint(medication_eras(_shuffled(data).medications))


def test_input_row_order_does_not_change_episodes():
    """Episodes are sorted by patient, admission, id: shuffled input rows should give the same bytes."""
    data = simulate_cohort(80, seed=9, progress=False)
    assert fingerprint(build_episodes(data)) == fingerprint(build_episodes(_shuffled(data)))


# ----------------------------------------------------------------------------- Spark
SPARK_STEPS = ["episodes", "episodes_attrition", "episodes_gap", "eras", "pdc", "outcomes", "recurrent",
               "survival_frame", "counting_process", "landmark"]


@pytest.fixture(scope="module")
def spark_vs_duckdb():
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:  # pragma: no cover
        pytest.skip("Java is needed for local PySpark")
    from iop_research.derive.engine import get_backend

    spark = get_backend("spark")

    def steps(engine):
        data = simulate_cohort(60, seed=13, progress=False)
        ep = build_episodes(data, engine=engine)
        return {
            "episodes": ep,
            "episodes_attrition": pd.DataFrame(ep.attrs["attrition"]),
            "episodes_gap": build_episodes(data, mode="sessions", engine=engine),
            "eras": medication_eras(data.medications, engine=engine),
            "pdc": proportion_days_covered(data.medications, _windows(ep), engine=engine),
            "outcomes": relapse_outcomes(data, episodes=ep, engine=engine),
            "recurrent": recurrent_relapses(data, episodes=ep, engine=engine),
            "survival_frame": survival_frame(data, episodes=ep, engine=engine),
            "counting_process": counting_process_frame(data, episodes=ep, engine=engine),
            "landmark": landmark_frame(data, landmark_days=30, episodes=ep, engine=engine),
        }

    return steps("duckdb"), steps(spark)


def _first_difference(a: pd.DataFrame, b: pd.DataFrame) -> str:
    if list(a.columns) != list(b.columns):
        return f"columns {list(a.columns)} vs {list(b.columns)}"
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} rows"
    for c in a.columns:
        if str(a[c].dtype) != str(b[c].dtype):
            return f"column {c}: dtype {a[c].dtype} vs {b[c].dtype}"
        ta, tb = a[[c]].to_csv(), b[[c]].to_csv()
        if ta != tb:
            return f"column {c}: values differ"
    return "index or attrs"


@pytest.mark.spark
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("name", [
    n
    for n in SPARK_STEPS
])
def test_duckdb_and_spark_byte_identical(spark_vs_duckdb, name):
    duck, spark = spark_vs_duckdb
    a, b = duck[name], spark[name]
    assert fingerprint(a) == fingerprint(b), f"{name}: DuckDB and Spark differ ({_first_difference(a, b)})"
