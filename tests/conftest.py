"""Shared fixtures: paths to the public datasets, R golden values, live R runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
R_DIR = TESTS / "r"
GOLDEN_DIR = TESTS / "golden"
SHARED_DATASETS = Path(os.environ.get("IOP_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))
RSCRIPT = shutil.which("Rscript")

requires_r = pytest.mark.skipif(RSCRIPT is None, reason="Rscript not installed (CI installs it)")


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """``../shared/datasets`` (override with IOP_SHARED_DATASETS). Fails, not skips, when absent."""
    if not (SHARED_DATASETS / "uis.csv").exists():
        pytest.fail(f"public datasets not found at {SHARED_DATASETS}; set IOP_SHARED_DATASETS")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def uis_path(datasets_dir) -> Path:
    return datasets_dir / "uis.csv"


@pytest.fixture(scope="session")
def help_path(datasets_dir) -> Path:
    return datasets_dir / "helprct.csv"


@pytest.fixture(scope="module")
def help_cc(help_path):
    """HELP rows with a known time-to-use outcome, treat01 and homeless01 (the sample of tests/r/help_cc.R)."""
    h = pd.read_csv(help_path)
    h = h[h["daysanysub"].notna() & h["anysubstatus"].notna()]
    return h.assign(treat01=(h["treat"] == "yes").astype(int), homeless01=(h["homeless"] == "homeless").astype(int))


def load_golden(name: str) -> dict:
    """Committed R output ``tests/golden/<name>.json``."""
    with open(GOLDEN_DIR / f"{name}.json", encoding="utf-8") as fh:
        return json.load(fh)


def run_r_script(name: str, out_json: Path) -> dict:
    """Run ``tests/r/<name>.R`` live with its output redirected to ``out_json``.

    Scripts take two arguments: the datasets directory and the output path, and run
    with the repository root as working directory.
    """
    if RSCRIPT is None:  # pragma: no cover - guarded by requires_r
        pytest.skip("Rscript not installed")
    proc = subprocess.run(
        [RSCRIPT, "--vanilla", str(R_DIR / f"{name}.R"), str(SHARED_DATASETS), str(out_json)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise AssertionError(f"R script {name}.R failed:\n{proc.stderr[-3000:]}")
    with open(out_json, encoding="utf-8") as fh:
        return json.load(fh)
