"""The same Ibis expressions on Spark (local mode) give the same frames as on DuckDB.

One local SparkSession (``local[2]``, started once for the module, ~10 s) serves every test.
Other data steps may add their own comparisons here with the ``spark_engine`` fixture.
"""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

pytestmark = [
    pytest.mark.spark,
    # PySpark leaves py4j result sockets for the garbage collector (ResourceWarning, raised
    # through pytest's unraisable-exception hook); not ours to fix.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # pragma: no cover - CI has Java 17
    pytest.skip("Java is needed for local PySpark", allow_module_level=True)


@pytest.fixture(scope="module")
def spark_engine():
    """The local Spark backend, shared by all tests of the module."""
    from iop_research.derive.engine import get_backend

    return get_backend("spark")


@pytest.fixture(scope="module")
def cohort():
    synth = pytest.importorskip("iop_research.data.synth")
    return synth.simulate_cohort(40, seed=7)


def normalise(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Sort by keys, reset the index and give every column an engine-independent dtype."""
    out = df.sort_values(keys, kind="stable").reset_index(drop=True).copy()
    for c in out.columns:
        s = out[c]
        if pd.api.types.is_bool_dtype(s):
            out[c] = s.astype(bool)
        elif pd.api.types.is_datetime64_any_dtype(s):
            out[c] = pd.to_datetime(s).astype("datetime64[ns]")
        elif pd.api.types.is_numeric_dtype(s):
            out[c] = pd.to_numeric(s).astype("float64")
        else:
            out[c] = s.astype(object).where(s.notna(), None)
    return out


@pytest.mark.parametrize("mode", ["admissions", "sessions"])
def test_build_episodes_spark_equals_duckdb(spark_engine, cohort, mode):
    from iop_research.derive.episodes import build_episodes

    duck = build_episodes(cohort, mode=mode, gap_days=30)
    spark = build_episodes(cohort, mode=mode, gap_days=30, engine=spark_engine)
    assert len(duck) > 25
    pd.testing.assert_frame_equal(normalise(spark, ["episode_id"]), normalise(duck, ["episode_id"]),
                                  check_exact=False, rtol=1e-12)
    assert spark.attrs["attrition"] == duck.attrs["attrition"]


def test_medication_eras_spark_equals_duckdb(spark_engine, cohort):
    from iop_research.derive.exposures import medication_eras

    keys = ["patient_id", "medication_class", "era_number"]
    duck = medication_eras(cohort.medications, grace_days=30)
    spark = medication_eras(cohort.medications, grace_days=30, engine="spark")
    assert len(duck) > 3
    pd.testing.assert_frame_equal(normalise(spark, keys), normalise(duck, keys))
    assert np.array_equal(spark.columns, duck.columns)


def test_frames_spark_equal_duckdb_from_real_eras(spark_engine, cohort):
    """survival_frame and counting_process_frame on Spark equal DuckDB, from the real pipeline's
    episodes (build_episodes) and MAT eras (medication_eras), both built once on DuckDB, so that
    only the frames' own expressions run on Spark."""
    from iop_research.derive.episodes import build_episodes
    from iop_research.derive.exposures import medication_eras
    from iop_research.derive.frames import counting_process_frame, survival_frame

    eps = build_episodes(cohort, gap_days=30)
    eras = medication_eras(cohort.medications, grace_days=30)
    assert len(eras) > 3
    out = {}
    for engine in (None, spark_engine):
        out[engine is None] = (
            survival_frame(cohort, episodes=eps, eras=eras, engine=engine),
            counting_process_frame(cohort, episodes=eps, eras=eras, engine=engine, cum_sessions=True, covariates=None),
        )
    (sf_d, cp_d), (sf_s, cp_s) = out[True], out[False]
    pd.testing.assert_frame_equal(sf_s, sf_d, check_dtype=False)
    pd.testing.assert_frame_equal(cp_s, cp_d, check_dtype=False)
    assert len(cp_d) > len(sf_d) and cp_d["on_mat"].sum() > 0
