"""``iop-research`` command line: validate exit codes, simulate, report (notebook 00 only, to stay short)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from iop_research.reports.cli import main
from iop_research.datasets import demo_path
from iop_research.reports.build import DEFAULT_NOTEBOOKS_DIR, data_fingerprint
from iop_research.data.schema import TABLE_COLUMNS

NB00 = DEFAULT_NOTEBOOKS_DIR / "00_demo_cohort.ipynb"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script (``python -m iop_research.reports.cli`` when it is not installed)."""
    script = Path(sys.executable).with_name("iop-research")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "iop_research.reports.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    """A small simulated cohort written by ``iop-research simulate`` (CSV, seed 7, 1500 patients)."""
    out = tmp_path_factory.mktemp("sim") / "cohort"
    assert main(["simulate", "--n-patients", "1500", "--seed", "7", "--out", str(out), "--format", "csv"]) == 0
    return out


def _leaky_notebook(path: Path) -> Path:
    params = nbformat.v4.new_code_cell("data_path = None\nmin_cell_count = 11")
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Leaky"), params,
        nbformat.v4.new_code_cell("print('first patient:', 'P000001')"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# -- simulate --------------------------------------------------------------------------------
def test_simulate_writes_the_six_tables(simulated, tmp_path, capsys):
    assert sorted(p.name for p in simulated.iterdir()) == sorted(f"{t}.csv" for t in TABLE_COLUMNS)
    for table, columns in TABLE_COLUMNS.items():
        header = pd.read_csv(simulated / f"{table}.csv", nrows=0).columns
        assert {c[0] for c in columns} <= set(header), table
    assert len(pd.read_csv(simulated / "patients.csv")) == 1500
    # same seed, same bytes
    again = tmp_path / "again"
    capsys.readouterr()
    assert main(["simulate", "--n-patients", "1500", "--seed", "7", "--out", str(again), "--format", "csv"]) == 0
    assert "patients 1,500" in capsys.readouterr().out
    for f in simulated.iterdir():
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name


# -- validate --------------------------------------------------------------------------------
def test_validate_demo_dir_exits_0():
    res = _cli("validate", str(demo_path()))
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout and "patients 3,000" in res.stdout


def test_validate_invalid_dir_exits_1(simulated, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(simulated, bad)
    patients = pd.read_csv(bad / "patients.csv", dtype=str, keep_default_na=False)
    pd.concat([patients, patients.iloc[[0]]]).to_csv(bad / "patients.csv", index=False)
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "breaks the data contract" in err and "patient_id" in err and "P000001" in err


def test_validate_unreadable_dir_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "Could not read" in err and "patients" in err
    assert main(["validate", str(tmp_path / "does-not-exist")]) == 2


# -- report ----------------------------------------------------------------------------------
def test_report_one_notebook(tmp_path):
    """``iop-research report --notebooks notebooks/00_demo_cohort.ipynb --out <tmp>`` from the repository root."""
    out = tmp_path / "reports"
    res = _cli("report", "--notebooks", "iop_research/reports/notebooks/00_demo_cohort.ipynb", "--out", str(out), "--quiet",
               cwd=DEFAULT_NOTEBOOKS_DIR.parents[2])
    assert res.returncode == 0, res.stderr
    assert "Wrote 1 reports" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "00_demo_cohort.html", "fingerprints.json", "index.html", "provenance.json"]
    record = json.loads((out / "provenance.json").read_text())
    assert record["data_fingerprint"] == data_fingerprint(None)
    assert record["notebooks"]["00_demo_cohort.ipynb"]["parameters"]["min_cell_count"] == 11
    assert "Passed unknown parameter" not in res.stderr and "Unable to parse line" not in res.stderr


def test_report_params_and_data_reach_the_notebook(simulated, tmp_path):
    """``--params study.toml`` (min_cell_count = 5) and ``--data DIR`` show in the provenance block."""
    study = tmp_path / "study.toml"
    study.write_text("[report]\nmin_cell_count = 5\n", encoding="utf-8")
    out = tmp_path / "reports"
    rc = main(["report", "--notebooks", str(NB00), "--out", str(out), "--params", str(study),
               "--data", str(simulated), "--quiet"])
    assert rc == 0
    record = json.loads((out / "provenance.json").read_text())
    assert record["parameters"]["min_cell_count"] == 5
    assert record["parameters"]["data_path"] == str(simulated.resolve())
    assert record["data_fingerprint"] == data_fingerprint(simulated) != data_fingerprint(None)
    assert record["notebooks"]["00_demo_cohort.ipynb"]["parameters"]["min_cell_count"] == 5
    html = (out / "00_demo_cohort.html").read_text(encoding="utf-8")
    assert data_fingerprint(simulated) in html and data_fingerprint(None) not in html
    assert "&quot;min_cell_count&quot;: 5" in html or '"min_cell_count": 5' in html
    # the notebook really read the simulated cohort (1,500 patients), not the demo (3,000)
    assert "1,500" in html or "1500" in html


def test_report_failing_notebook_exits_1_and_names_the_cell(tmp_path, capsys):
    params = nbformat.v4.new_code_cell("data_path = None\nmin_cell_count = 11")
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Broken"), params,
                                         nbformat.v4.new_code_cell("import no_such_module_xyz")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb" / "09_broken.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    out = tmp_path / "reports"
    out.mkdir()
    (out / "keep.txt").write_text("untouched", encoding="utf-8")
    assert main(["report", "--notebooks", str(path), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "iop-research report failed: Notebook 09_broken.ipynb failed in cell 2" in err
    assert "'import no_such_module_xyz'" in err and "ModuleNotFoundError" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text(encoding="utf-8") == "untouched"


def test_report_privacy_violation_exits_1(tmp_path, capsys):
    leak = _leaky_notebook(tmp_path / "nb" / "09_leak.ipynb")
    out = tmp_path / "reports"
    assert main(["report", "--notebooks", str(leak), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "iop-research report failed: Report 09_leak.ipynb would disclose" in err
    assert "identifier 'P000001'" in err
    assert not out.exists()


def test_report_bad_study_config_exits_1(tmp_path, capsys):
    study = tmp_path / "study.toml"
    study.write_text("[report]\nmin_cell_cout = 5\n", encoding="utf-8")
    assert main(["report", "--params", str(study), "--out", str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'min_cell_cout'" in err
    assert not (tmp_path / "r").exists()
