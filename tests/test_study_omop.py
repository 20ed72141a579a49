"""A study on an OMOP CDM: ``[data] omop``, ``cdm_schema`` and ``concept_sets`` in the study file.

* Each key changes what the study reads (the meta-test ``test_every_study_key_has_a_test`` in
  ``tests/test_study_reports.py`` names these tests).
* Bad OMOP settings are refused with the key named (a password in the URL, two data sources,
  ``cdm_schema`` without ``omop``, a missing DuckDB or concept-set file).
* ``iop-research report --params study.toml`` runs the study reports against the PostgreSQL test
  cluster (``tests/conftest_pg.py``: fails rather than skips when ``CI`` is set) and the
  provenance names the OMOP source and fingerprints the tables read from it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ibis = pytest.importorskip("ibis")

from conftest_pg import pg_con, pg_url  # noqa: E402, F401  (fixtures)

from iop_research.data.synth import simulate_cohort  # noqa: E402
from iop_research.datasets.omop import omop_source, read_omop, write_omop  # noqa: E402
from iop_research.derive.episodes import build_episodes  # noqa: E402
from iop_research.exceptions import DataReadError  # noqa: E402
from iop_research.reports import study as st  # noqa: E402
from iop_research.reports.build import data_fingerprint, tables_fingerprint  # noqa: E402
from iop_research.reports.config import load_study  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*fetch_arrow_table.*:DeprecationWarning")

N_A, N_B = 120, 80


@pytest.fixture(scope="module")
def cohorts():
    return simulate_cohort(N_A, seed=21, progress=False), simulate_cohort(N_B, seed=22, progress=False)


@pytest.fixture(scope="module")
def cdm_file(tmp_path_factory, cohorts) -> Path:
    """A DuckDB file with two CDMs: schema ``site_a`` (120 patients) and ``site_b`` (80)."""
    folder = tmp_path_factory.mktemp("omop_study")
    path = folder / "omop.duckdb"
    con = ibis.duckdb.connect(str(path))
    write_omop(cohorts[0], con, cdm_schema="site_a")
    write_omop(cohorts[1], con, cdm_schema="site_b")
    con.disconnect()
    return path


def study_file(folder: Path, text: str) -> Path:
    path = folder / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- each key acts
def test_omop_study_reads_the_cdm(cdm_file):
    """[data] omop (a DuckDB file named relative to the study file): the study reads the CDM
    (patient ids ``person-<person_id>``: plain numbers would stop the privacy gate) and builds its
    episodes from the sessions by the gap rule (OMOP has no admissions)."""
    sd = st.prepare_study(load_study(study_file(cdm_file.parent, '[data]\nomop = "duckdb:///omop.duckdb"\n'
                                                'cdm_schema = "site_a"\n')))
    assert sd.data_label.startswith(f"OMOP CDM duckdb:///{cdm_file}, schema site_a")
    assert sd.data.admissions.empty and sd.data.patients["patient_id"].nunique() == N_A
    assert sd.data.patients["patient_id"].str.fullmatch(r"person-\d+").all()
    direct = build_episodes(read_omop(f"duckdb:///{cdm_file}", cdm_schema="site_a", patient_id_prefix="person-"),
                            mode="sessions")
    pd.testing.assert_frame_equal(sd.episodes, direct)
    assert len(sd.cohort_episodes) == len(direct) > N_A / 2
    demo = st.prepare_study({})
    assert len(demo.episodes) != len(sd.episodes) and "OMOP" not in demo.data_label


def test_cdm_schema_selects_the_schema(cdm_file):
    a = st.prepare_study({"data": {"omop": f"duckdb:///{cdm_file}", "cdm_schema": "site_a"}})
    b = st.prepare_study({"data": {"omop": f"duckdb:///{cdm_file}", "cdm_schema": "site_b"}})
    assert a.data.patients["patient_id"].nunique() == N_A
    assert b.data.patients["patient_id"].nunique() == N_B
    assert b.data_label.endswith("schema site_b, default concept sets")


def test_concept_sets_file_changes_what_is_read(cdm_file, tmp_path):
    """[data] concept_sets: an ATLAS-format file whose buprenorphine set names a concept the CDM
    does not hold: no buprenorphine dispensing is read, so fewer episodes start MAT."""
    sets = tmp_path / "iop_concepts.json"
    sets.write_text(json.dumps({"moud_buprenorphine": {"items": [
        {"concept": {"CONCEPT_ID": 999999001}, "isExcluded": False, "includeDescendants": False}]}}))
    base = {"omop": f"duckdb:///{cdm_file}", "cdm_schema": "site_a"}
    default = st.prepare_study({"data": base})
    narrowed = st.prepare_study(load_study(study_file(tmp_path, f'[data]\nomop = "{base["omop"]}"\n'
                                                      'cdm_schema = "site_a"\nconcept_sets = "iop_concepts.json"\n')))
    assert "buprenorphine" in set(default.data.medications["medication"])
    assert "buprenorphine" not in set(narrowed.data.medications["medication"])
    assert narrowed.episodes["has_mat"].sum() < default.episodes["has_mat"].sum()
    assert narrowed.data_label.endswith("concept sets iop_concepts.json")


# --------------------------------------------------------------------------- refused settings
@pytest.mark.parametrize("text, fragment", [
    ('[data]\nomop = "postgresql://analyst:s3cret@db:5432/cdm"\n', "holds a password"),
    ('[data]\nomop = "cdm-host/cdm"\n', "is not a database URL"),
    ('[data]\npath = "."\nomop = "postgresql://analyst@db/cdm"\n', "sets both path and omop; give one"),
    ('[data]\ncdm_schema = "cdm"\n', "cdm_schema applies only to an OMOP CDM"),
    ('[data]\nconcept_sets = "x.json"\n', "concept_sets applies only to an OMOP CDM"),
    ('[data]\nomop = "duckdb:///nowhere.duckdb"\n', "no DuckDB file at"),
    ('[data]\nomop = "postgresql://analyst@db/cdm"\nconcept_sets = "missing.json"\n',
     "concept_sets = 'missing.json' does not exist"),
    ('[data]\nomop = "postgresql://analyst@db/cdm"\ncdm_schema = 5\n', "cdm_schema"),
])
def test_bad_omop_settings_are_refused(tmp_path, text, fragment):
    with pytest.raises(DataReadError, match="study.toml") as err:
        load_study(study_file(tmp_path, text))
    assert fragment in str(err.value)


def test_omop_source_masks_a_password():
    label = omop_source("postgresql://analyst:s3cret@db:5432/cdm", cdm_schema="cdm", concept_sets="/x/sets.json")
    assert label == "OMOP CDM postgresql://analyst:***@db:5432/cdm, schema cdm, concept sets sets.json"


# --------------------------------------------------------------------------- end to end on PostgreSQL
def _cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("iop-research")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "iop_research.reports.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_study_report_on_postgres_end_to_end(pg_con, pg_url, tmp_path):  # noqa: F811
    """``iop-research report --params study.toml`` with ``[data] omop`` = the PostgreSQL test
    cluster and a concept-set file: the reports build from the CDM, and provenance.json names the
    OMOP source and fingerprints the tables read from it (not the bundled demo cohort)."""
    cohort = simulate_cohort(300, seed=3, progress=False)
    write_omop(cohort, pg_con, cdm_schema="study_cdm")
    (tmp_path / "concepts.json").write_text(json.dumps({"moud_naltrexone": {"items": [
        {"concept": {"CONCEPT_ID": 1714319}, "isExcluded": False, "includeDescendants": True}]}}))
    study = study_file(tmp_path, f'[data]\nomop = "{pg_url}"\ncdm_schema = "study_cdm"\n'
                                 'concept_sets = "concepts.json"\n\n[report]\nquestions = ["cohort", "relapse"]\n')
    out = tmp_path / "reports"
    res = _cli("report", "--params", str(study), "--out", str(out), "--quiet", "--jobs", "1")
    assert res.returncode == 0, res.stderr[-4000:]
    assert {"01_cohort.html", "03_relapse.html", "provenance.json"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "provenance.json").read_text())
    assert record["data"] == f"OMOP CDM {pg_url}, schema study_cdm, concept sets concepts.json"
    read = read_omop(pg_url, cdm_schema="study_cdm", concept_sets=tmp_path / "concepts.json",
                     patient_id_prefix="person-")
    assert record["data_fingerprint"] == tables_fingerprint(read) != data_fingerprint(None)
    assert "data.omop" in record["study"]["settings_from_study_file"]
    html = (out / "01_cohort.html").read_text(encoding="utf-8")
    n_episodes = len(build_episodes(read, mode="sessions"))
    assert f"{n_episodes:,}" in html
    assert "demo" not in html.split("data_fingerprint")[0].lower()
