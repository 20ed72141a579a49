"""A real wheel (not the editable install) works from any directory.

The wheel is built from the repository with ``pip wheel --no-deps`` and unpacked with
``pip install --no-deps --target``; the test then runs Python in an empty directory with only
that copy of ``iop_research`` importable (it comes first on ``sys.path``; the dependencies are the
test environment's). From there: ``load_demo()`` reads the shipped demo cohort (no
re-simulation: the cache directory stays empty), the pipeline and every public estimator run,
and ``python -m iop_research report`` finds its notebooks and writes a report.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("iop_research-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("iop_research/datasets/demo/patients.csv.gz", "iop_research/reports/notebooks/00_demo_cohort.ipynb",
                   "iop_research/py.typed", "iop_research/reports/notebooks/sanitize.cfg"):
        assert needed in names, f"{needed} is not in the wheel"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    site = tmp_path_factory.mktemp("site")
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    return site


def _run(site: Path, cwd: Path, args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "IOP_RESEARCH_CACHE": str(cwd / "cache"),
           "PYTHONWARNINGS": "error::DeprecationWarning:iop_research"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_pipeline_and_estimators_from_another_directory(wheel_site, tmp_path):
    script = textwrap.dedent("""
        import json, pathlib
        import iop_research as iop
        data = iop.load_demo()
        ep = iop.build_episodes(data)
        frame = iop.survival_frame(data, episodes=ep)
        km = iop.fit_km(frame, duration_col="time", event_col="event")
        lr = iop.logrank_test(frame, duration_col="time", event_col="event", group_col="sex")
        cox = iop.fit_cox(frame, duration_col="time", event_col="event", covariates=["age", "prior_treatment_episodes"])
        cif = iop.cumulative_incidence(frame, duration_col="time", event_col="status")
        out = {"file": iop.__file__, "episodes": len(ep), "km_rows": len(km.tidy), "cox_terms": len(cox.tidy),
               "lr_p": float(lr.glance["p_value"].iloc[0]), "cif_rows": len(cif.tidy),
               "cache_empty": not any(pathlib.Path("cache").rglob("*"))}
        print(json.dumps(out))
    """)
    res = _run(wheel_site, tmp_path, ["-c", script])
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(wheel_site)), out["file"]
    assert out["episodes"] == 3582 and out["km_rows"] > 10 and out["cox_terms"] == 2 and out["cif_rows"] > 10
    assert out["cache_empty"], "load_demo() wrote to the cache: it re-simulated instead of reading the shipped cohort"


def test_wheel_report_finds_its_notebooks(wheel_site, tmp_path):
    res = _run(wheel_site, tmp_path, ["-m", "iop_research", "report", "--notebooks", "00_demo_cohort.ipynb",
                                      "--out", "out", "--quiet", "--jobs", "1"])
    if res.returncode != 0 and "do not exist" in res.stderr:  # names only once `report --list` exists
        path = wheel_site / "iop_research" / "reports" / "notebooks" / "00_demo_cohort.ipynb"
        res = _run(wheel_site, tmp_path, ["-m", "iop_research", "report", "--notebooks", str(path),
                                          "--out", "out", "--quiet", "--jobs", "1"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "out" / "00_demo_cohort.html").is_file()
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record  # provenance written beside the report
