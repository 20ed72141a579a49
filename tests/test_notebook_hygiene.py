"""Notebook hygiene: committed notebooks carry outputs from the demo or public data only.

For every committed notebook (``git ls-files '*.ipynb'``):

* the numbered demo notebooks (``notebooks/NN_name.ipynb``) may carry outputs, but
  every patient/episode id-like token in them must exist in the demo cohort, no
  output or source shows an absolute home path, and the data source parameter
  (``data_path`` and any other ``*_path`` parameter) is None (the demo cohort) or
  a path into the public datasets (``shared/datasets``) or ``data/demo``;
* every other notebook is stripped (no outputs, no execution counts), as the
  nbstripout hook of ``.pre-commit-config.yaml`` does;
* no code cell defines a function or class (reusable code belongs in the package).

The checks are plain functions, tested on planted violations below, so the file
fails when a check stops catching what it should.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_NOTEBOOK = re.compile(r"^(?:iop_research/reports/)?notebooks/[0-9][0-9]_[^/]*\.ipynb$")
#: Id-like tokens: the demo's P000123 / E0000123 and gap-rule P000123-S2, and similar codes.
ID_LIKE = re.compile(r"(?<![\w/.-])([PE]\d{4,}(?:-S\d+)?)(?![\w-])")
HOME_PATH = re.compile(r"(/home/[^/\s'\"]+|/Users/[^/\s'\"]+|/root/|[A-Za-z]:\\\\?Users\\\\?)")
DEF_OR_CLASS = re.compile(r"^\s*(?:async\s+def|def|class)\s+\w+", re.M)
ALLOWED_DATA = re.compile(r"(shared/datasets|data/demo|datasets/demo)")


def committed_notebooks() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO, capture_output=True, text=True,
                             timeout=30, check=True).stdout
        return sorted(line for line in out.splitlines() if line.strip())
    except (OSError, subprocess.SubprocessError):  # pragma: no cover - not a git checkout
        return sorted(p.relative_to(REPO).as_posix() for p in (REPO / "iop_research" / "reports" / "notebooks").rglob("*.ipynb"))


@lru_cache(maxsize=1)
def demo_ids() -> frozenset[str]:
    from iop_research.datasets import load_demo

    d = load_demo(validate=False)
    ids = set(d.patients["patient_id"]) | set(d.admissions["episode_id"])
    return frozenset(str(v) for v in ids)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _output_texts(cell) -> list[str]:
    texts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            t = out["text"]
            texts.append("".join(t) if isinstance(t, list) else t)
        for mime, val in (out.get("data") or {}).items():
            if mime.startswith("text/") or mime.endswith("json"):
                texts.append("".join(val) if isinstance(val, list) else json.dumps(val) if not isinstance(val, str)
                             else val)
        if out.get("output_type") == "error":
            texts.append("\n".join(out.get("traceback", [])))
    return texts


def check_notebook(nb: dict, path: str, ids: frozenset[str] | None = None) -> list[str]:
    """Every hygiene problem of one notebook, as messages naming cell and text."""
    problems = []
    is_demo = bool(DEMO_NOTEBOOK.match(path))
    for i, cell in enumerate(nb.get("cells", [])):
        src = _source(cell)
        if cell.get("cell_type") == "code":
            m = DEF_OR_CLASS.search(src)
            if m:
                problems.append(f"{path} cell {i}: defines {m.group(0).strip()!r}; move it into the package")
            tags = set((cell.get("metadata") or {}).get("tags", []))
            if tags & {"parameters", "injected-parameters"}:
                problems += _check_parameters(src, path, i)
            outs = _output_texts(cell)
            if not is_demo and (cell.get("outputs") or cell.get("execution_count") is not None):
                problems.append(f"{path} cell {i}: outputs in a notebook outside the demo set; strip them "
                                "(nbstripout, see .pre-commit-config.yaml)")
        else:
            outs = []
        for text in [src, *outs]:
            for m in HOME_PATH.finditer(text):
                problems.append(f"{path} cell {i}: absolute home path {m.group(0)!r}; use paths relative "
                                "to the repository or the data_path parameter")
        if ids is not None:
            unknown = sorted({t for text in outs for t in ID_LIKE.findall(text) if t not in ids})
            if unknown:
                problems.append(f"{path} cell {i}: id-like token(s) {', '.join(unknown[:5])} not in the demo "
                                "data: outputs must come from the demo or public datasets")
    return problems


def _check_parameters(src: str, path: str, i: int) -> list[str]:
    out = []
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return [f"{path} cell {i}: parameters cell is not valid Python"]
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if not isinstance(target, ast.Name) or not (target.id == "data_path" or target.id.endswith("_path")):
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                out.append(f"{path} cell {i}: {target.id} is computed; set it to None (demo) or a public dataset")
                continue
            if value is not None and not (isinstance(value, str) and ALLOWED_DATA.search(value)):
                out.append(f"{path} cell {i}: {target.id} = {value!r} is not the demo cohort (None, data/demo) or "
                           "the public datasets (shared/datasets)")
    return out


# ----------------------------------------------------------------------------- the repository
NOTEBOOKS = committed_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no notebook committed yet; the checks below still run on planted examples"))])
def test_committed_notebook_is_clean(path):
    nb = json.loads((REPO / path).read_text(encoding="utf-8"))
    problems = check_notebook(nb, path, ids=demo_ids() if DEMO_NOTEBOOK.match(path) else None)
    assert not problems, "\n".join(problems)


def test_precommit_strips_all_but_demo_notebooks():
    cfg = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = [h for r in cfg["repos"] for h in r["hooks"] if h["id"] == "nbstripout"]
    assert len(hooks) == 1
    exclude = re.compile(hooks[0]["exclude"])
    assert exclude.search("notebooks/01_cohort.ipynb") and exclude.search("notebooks/12_mat_landmark.ipynb")
    for path in ["notebooks/scratch.ipynb", "notebooks/drafts/01_x.ipynb", "analysis/01_real.ipynb",
                 "notebooks/1_x.ipynb"]:
        assert not exclude.search(path), path


# ----------------------------------------------------------------------------- the checks themselves
def _nb(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(src, outputs=(), tags=(), count=1):
    return {"cell_type": "code", "source": src, "metadata": {"tags": list(tags)}, "execution_count": count,
            "outputs": list(outputs)}


def _stream(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


IDS = frozenset({"P000001", "E0000001"})


def test_clean_demo_notebook_passes():
    nb = _nb(_code("data_path = None", tags=["parameters"]),
             _code("data = load_demo()", [_stream("P000001 E0000001 P000001-S1? no: 3000 patients\n")]),
             {"cell_type": "markdown", "source": "# Title", "metadata": {}})
    problems = check_notebook(nb, "notebooks/01_cohort.ipynb", ids=IDS | {"P000001-S1"})
    assert problems == []


def test_unknown_ids_in_outputs_are_caught():
    nb = _nb(_code("x", [_stream("episode E0000001 and patient P123456\n"),
                         {"output_type": "execute_result", "execution_count": 1,
                          "data": {"text/html": "<td>E7654321</td>", "text/plain": "x"}, "metadata": {}}]))
    (msg,) = check_notebook(nb, "notebooks/02_x.ipynb", ids=IDS)
    assert "cell 0" in msg and "E7654321, P123456" in msg


def test_home_paths_are_caught_in_sources_and_outputs():
    nb = _nb(_code("pd.read_csv('/home/alice/site_extract/patients.csv')"),
             _code("x", [_stream("saved to /Users/bob/out.csv\n")]),
             _code("x", [_stream("C:\\Users\\carol\\data\n")]))
    problems = check_notebook(nb, "notebooks/03_x.ipynb", ids=IDS)
    assert [p.split(":")[0] for p in problems] == ["notebooks/03_x.ipynb cell 0", "notebooks/03_x.ipynb cell 1",
                                                   "notebooks/03_x.ipynb cell 2"]


@pytest.mark.parametrize("value,ok", [
    ("None", True), ("'../shared/datasets/uis.csv'", True), ("'../data/demo'", True),
    ("'/secure/site_extract'", False), ("Path.home() / 'x'", False), ("'extract.csv'", False),
])
def test_data_source_parameter(value, ok):
    nb = _nb(_code(f"data_path = {value}\nmin_cell_count = 11", tags=["parameters"]))
    problems = check_notebook(nb, "notebooks/04_x.ipynb", ids=IDS)
    assert (problems == []) is ok
    injected = _nb(_code(f"uis_path = {value}", tags=["injected-parameters"]))
    assert (check_notebook(injected, "notebooks/04_x.ipynb", ids=IDS) == []) is ok


@pytest.mark.parametrize("src", ["def helper(x):\n    return x", "class Model:\n    pass",
                                 "x = 1\n  async def f():\n    pass"])
def test_def_and_class_are_caught(src):
    (msg,) = check_notebook(_nb(_code(src)), "notebooks/05_x.ipynb", ids=IDS)
    assert "move it into the package" in msg


def test_definition_words_inside_text_pass():
    nb = _nb(_code("print('define cohort'); defaults = 3  # class balance"))
    assert check_notebook(nb, "notebooks/06_x.ipynb", ids=IDS) == []


def test_outputs_outside_demo_set_are_caught():
    stripped = _nb(_code("x = 1", count=None))
    assert check_notebook(stripped, "notebooks/scratch.ipynb") == []
    run = _nb(_code("x", [_stream("1\n")]))
    (msg,) = check_notebook(run, "notebooks/scratch.ipynb")
    assert "nbstripout" in msg


def test_demo_ids_are_the_demo_cohort():
    ids = demo_ids()
    assert "P000001" in ids and "E0000001" in ids and len(ids) > 3000
