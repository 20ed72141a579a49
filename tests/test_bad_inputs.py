"""Bad-input corpus: every malformed input gets one package exception naming what, where and how to fix.

The corpus lives in ``tests/bad_inputs/`` (made by ``make_corpus.py`` from a valid
tiny base; ``README.md`` lists each case with its message, written by
``make_readme.py`` from :func:`run_case`). Each case runs on a copy in a
temporary directory, with the working directory and the download cache there,
so that any file a reader writes would be seen.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from iop_research import exceptions
from iop_research.exceptions import IopError

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.json").is_file())

#: Words that start a piece of advice in a message ("how to fix").
FIX = re.compile(
    r"(?:\bfix\b|(?:^|[.:;!?)]\s+|\n\s*-?\s*|\(|, or |; )(?:Fix|Re-export|Re-save|Re-download|Add|Remove|Rename|"
    r"Correct|Use|Pass|Check|Keep|Repair|Drop|Delete|Replace|Convert|Write|Give|Set|Make|Leave|Fill|Save|"
    r"Export|Recode|Map|Split|Generate|Close|Move|Put|Choose|Decide|Edit|Download)\b)",
    re.I,
)

#: Cases whose reader gives a poor message today: name -> reason (the lead fixes the reader).
XFAIL: dict[str, str] = {}  # every case gets a clear message; add an entry (with the reader and why) to mark one


def _reader(name: str):
    if name == "read_data":
        from iop_research.data.io import read_data
        return read_data
    if name == "read_teds_d":
        from iop_research.datasets.teds import read_teds_d
        return read_teds_d
    if name == "load_uis":
        from iop_research.datasets import load_uis
        return load_uis
    if name == "load_help":
        from iop_research.datasets import load_help
        return load_help
    if name == "read_study_config":
        from iop_research.reports.config import read_study_config
        return read_study_config
    raise KeyError(name)


def _snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_case(case_dir: Path, work: Path, monkeypatch=None) -> dict:
    """Run one case on a copy under ``work``; return what happened.

    Returns
    -------
    dict
        ``meta`` (case.json), ``exc`` (the exception or None), ``result`` (the
        return value when nothing was raised), ``changed`` (files added or
        modified under ``work``).
    """
    meta = json.loads((case_dir / "case.json").read_text())
    copy = work / "case"
    shutil.copytree(case_dir, copy)
    before = _snapshot(work)
    exc = result = None
    try:
        result = _reader(meta["reader"])(copy / meta["target"])
    except Exception as err:  # noqa: BLE001 - we report whatever is raised
        exc = err
    after = _snapshot(work)
    changed = sorted(k for k in after if before.get(k) != after[k])
    return dict(meta=meta, exc=exc, result=result, changed=changed)


def message_problems(meta: dict, exc: BaseException | None) -> list[str]:
    """Why an outcome is not acceptable (empty list = acceptable)."""
    if exc is None:
        return ["no exception raised"]
    out = []
    if not isinstance(exc, IopError):
        out.append(f"raw {type(exc).__module__}.{type(exc).__name__}, not an IopError")
    expected = getattr(exceptions, meta["error"], None)
    if expected is None:
        from iop_research.data.io import DataWriteError  # noqa: F401 - only other package error class
    if expected is not None and not isinstance(exc, expected):
        out.append(f"{type(exc).__name__} instead of {meta['error']}")
    msg = str(exc)
    for piece in meta["expect"]:
        if piece.lower() not in msg.lower():
            out.append(f"message does not name {piece!r}")
    if not FIX.search(msg):
        out.append("message gives no fix")
    if "Traceback" in msg:
        out.append("message holds a traceback")
    return out


def test_corpus_is_large_and_covers_every_reader():
    readers = {json.loads((CORPUS / c / "case.json").read_text())["reader"] for c in CASES}
    assert len(CASES) >= 40
    assert readers == {"read_data", "read_teds_d", "load_uis", "load_help", "read_study_config"}


def test_base_is_valid(tmp_path, monkeypatch):
    """Each case breaks one thing of a base that every reader accepts."""
    monkeypatch.chdir(tmp_path)
    base = CORPUS / "_base"
    data = _reader("read_data")(base / "data")
    assert len(data.patients) == 3 and len(data.admissions) == 4
    assert len(_reader("read_teds_d")(base / "teds.csv")) >= 1
    assert len(_reader("load_uis")(base / "uis.csv")) == 3
    assert len(_reader("load_help")(base / "help.csv")) == 3
    assert _reader("read_study_config")(base / "study.toml")["study"]["privacy"]["min_cell_count"] == 11


def test_corpus_is_reproducible(tmp_path):
    """make_corpus.py rewrites the committed files byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names = mod.main(tmp_path)
    assert names == CASES
    for name in [*CASES, "_base"]:
        assert _snapshot(tmp_path / name) == _snapshot(CORPUS / name), (
            f"{name} differs from what make_corpus.py writes now (a changed base or generator, e.g. "
            "teds.write_teds_d_like): run make_corpus.py and make_readme.py, review and commit")


def test_readme_lists_every_case():
    text = (CORPUS / "README.md").read_text()
    missing = [c for c in CASES if f"`{c}`" not in text]
    assert not missing


@pytest.mark.parametrize("name", [
    pytest.param(c, marks=pytest.mark.xfail(reason=XFAIL[c], strict=False)) if c in XFAIL else c for c in CASES
])
def test_bad_input(name, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("IOP_RESEARCH_CACHE", str(work / "cache"))
    out = run_case(CORPUS / name, work)
    problems = message_problems(out["meta"], out["exc"])
    assert not problems, f"{name}: {problems}\nmessage: {out['exc']!s}"
    assert out["changed"] == [], f"{name}: the reader wrote {out['changed']}"
