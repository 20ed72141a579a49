"""Study configuration: one TOML file that runs the same study on other data.

Example (``study.toml``)::

    [data]
    path = "/secure/site_extract"   # directory of contract tables; omit for the demo cohort

    [cohort]
    primary_substances = ["opioids", "alcohol"]
    first_episode_only = false

    [outcome]
    blanking_days = 7
    max_followup_days = 365
    sources = ["uds", "self_report_use", "overdose", "readmission"]

    [analysis]
    landmark_days = 30
    rmst_tau_days = [90, 180]

    [report]
    min_cell_count = 11

Every key becomes a notebook parameter named ``<section>_<key>`` except
``data.path`` (``data_path``) and ``report.min_cell_count`` (``min_cell_count``).
Unknown sections or keys are an error, so that a typo cannot silently fall back
to a default.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from iop_research.exceptions import DataReadError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["read_study_config", "STUDY_KEYS"]

#: Allowed sections and keys with their expected types.
STUDY_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "data": {"path": str},
    "cohort": {
        "min_age": int, "max_age": int, "primary_substances": list, "programs": list,
        "admit_from": str, "admit_to": str, "first_episode_only": bool, "min_followup_days": int,
    },
    "outcome": {"blanking_days": int, "max_followup_days": int, "sources": list, "origin": str},
    "episodes": {"gap_days": int, "mode": str},
    "exposures": {"grace_days": int},
    "analysis": {"landmark_days": int, "rmst_tau_days": list},
    "report": {"min_cell_count": int},
}

_EXAMPLE = {int: "11, without quotes", str: '"text" in quotes', list: '["a", "b"]', bool: "true or false"}

_RENAMES = {("data", "path"): "data_path", ("report", "min_cell_count"): "min_cell_count"}


def read_study_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a study configuration file into notebook parameters.

    Parameters
    ----------
    path : path-like
        TOML file (see module docstring).

    Returns
    -------
    dict
        Flat papermill parameters, e.g. ``{"data_path": ..., "outcome_blanking_days": 7}``.

    Raises
    ------
    DataReadError
        Missing or unparseable file, unknown section/key, or a value of the wrong type.
    """
    p = Path(path)
    if not p.is_file():
        raise DataReadError(f"Study configuration {p} does not exist. Pass the path of a TOML file.")
    try:
        with open(p, "rb") as fh:
            raw = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataReadError(f"Study configuration {p} is not valid TOML: {exc}. Fix the syntax at that line.") from exc
    params: dict[str, Any] = {}
    problems = []
    for section, values in raw.items():
        if section not in STUDY_KEYS:
            problems.append(f"unknown section [{section}] (allowed: {', '.join(STUDY_KEYS)}); "
                            "rename it to one of these or remove it")
            continue
        if not isinstance(values, dict):
            problems.append(f"[{section}] must be a table of keys; write it as a [{section}] header followed by key = value lines")
            continue
        for key, value in values.items():
            expected = STUDY_KEYS[section].get(key)
            if expected is None:
                problems.append(f"unknown key {key!r} in [{section}] (allowed: {', '.join(STUDY_KEYS[section])}); "
                                "correct its spelling or remove it")
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                problems.append(f"[{section}] {key} = {value!r} should be of type {expected.__name__}; "
                                f"write a {expected.__name__} value (e.g. {_EXAMPLE[expected]})")
            else:
                params[_RENAMES.get((section, key), f"{section}_{key}")] = value
    if problems:
        raise DataReadError(f"Study configuration {p} has {len(problems)} problem(s):\n- " + "\n- ".join(problems))
    if "data_path" in params:
        dp = Path(params["data_path"])
        params["data_path"] = str(dp if dp.is_absolute() else (p.parent / dp).resolve())
    return params
