"""``environment.yml`` (conda) lists the same packages as ``pyproject.toml`` (pip)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
#: pip name -> conda-forge name, where they differ
CONDA_NAME = {"duckdb": "python-duckdb", "great-tables": "great_tables", "ibis-framework": None}
#: pip extras of ibis-framework -> conda-forge packages
IBIS_EXTRAS = {"duckdb": "ibis-duckdb", "postgres": "ibis-postgres", "pyspark": "ibis-pyspark"}


def _name(req: str) -> tuple[str, list[str]]:
    m = re.match(r"\s*([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", req)
    return m.group(1).lower(), [e.strip() for e in (m.group(2) or "").split(",") if e.strip()]


def _expected(reqs: list[str]) -> set[str]:
    out = set()
    for req in reqs:
        name, extras = _name(req)
        conda = CONDA_NAME.get(name, name)
        if conda:
            out.add(conda)
        if name == "ibis-framework":
            out |= {IBIS_EXTRAS[e] for e in extras}
    return out


def _conda() -> set[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))
    return {_name(d)[0] for d in env["dependencies"] if isinstance(d, str)}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    expected = _expected(project["dependencies"] + extras["test"] + extras["lab"])
    conda = _conda() - {"python", "pip", "openjdk"}
    assert sorted(expected - conda) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(conda - expected) == [], "in environment.yml but not in pyproject.toml"


def test_lifelines_is_not_a_runtime_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = {_name(r)[0] for r in project["dependencies"]}
    assert "lifelines" not in runtime and "lifelines" not in _conda()
    assert any(_name(r)[0] == "lifelines" for r in project["optional-dependencies"]["crosscheck"])
