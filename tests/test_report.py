"""Report builder: parallel execution, failure naming, identical rebuilds, rendering in Chromium,
provenance, privacy gate.

The module builds the reports of ALL notebooks once (``built`` fixture) and
every rendering and provenance check reads that build; the other tests run
tiny planted notebooks or a subset (00 and 03) to keep the suite short.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest

from iop_research.exceptions import PrivacyViolationError, ReportError
from iop_research.reports.build import DEFAULT_NOTEBOOKS_DIR, build_reports, data_fingerprint, notebook_fingerprints

from browser import IMAGES_JS, LINKS_JS, PUBLISHED_JS, TABLES_JS, Chromium, find_chromium

ALL_NOTEBOOKS = sorted(DEFAULT_NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
SUBSET = [DEFAULT_NOTEBOOKS_DIR / "00_demo_cohort.ipynb", DEFAULT_NOTEBOOKS_DIR / "03_time_to_relapse.ipynb"]
PROVENANCE_KEYS = ("iop_research", "git_commit", "data_fingerprint", "parameters", "python", "statsmodels", "r",
                   "run_time")


def _notebook(cells: list[tuple[str, str]], title: str = "# Planted notebook") -> nbformat.NotebookNode:
    """A small notebook: a title, a tagged parameters cell, then the given (kind, source) cells."""
    params = nbformat.v4.new_code_cell("data_path = None\nmin_cell_count = 11")
    params.metadata["tags"] = ["parameters"]
    body = [nbformat.v4.new_markdown_cell(title), params]
    for kind, src in cells:
        body.append(nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src))
    nb = nbformat.v4.new_notebook(cells=body)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _write(nb: nbformat.NotebookNode, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# one build of every notebook, shared by the module
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``build_reports`` on the demo data for every notebook present, 2 workers, default privacy gate."""
    out = tmp_path_factory.mktemp("reports") / "reports"
    t0 = time.perf_counter()
    outcome = build_reports(out_dir=out, notebooks=ALL_NOTEBOOKS, progress=False)
    return outcome, time.perf_counter() - t0


def test_build_writes_one_report_per_notebook_in_order(built):
    outcome, _ = built
    assert [p.name for p in outcome.reports] == [f"{p.stem}.html" for p in ALL_NOTEBOOKS]
    out = outcome.index.parent
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in outcome.reports] + ["index.html", "provenance.json", "fingerprints.json"])
    index = outcome.index.read_text(encoding="utf-8")
    positions = [index.index(f"href='{p.name}'") for p in outcome.reports]
    assert positions == sorted(positions)  # the index keeps the notebooks' order despite parallel runs
    # no staging directory left beside the output
    assert not list(out.parent.glob(".iop-report-*"))


def test_build_is_parallel_and_records_run_times(built):
    """With 2 workers (the default on 2+ CPUs) the wall time is below the sum of the notebooks' run times."""
    outcome, wall = built
    record = json.loads((outcome.index.parent / "provenance.json").read_text())
    runs = [v["run_seconds"] for v in record["notebooks"].values()]
    assert set(record["notebooks"]) == {p.name for p in ALL_NOTEBOOKS}
    assert all(r > 0 for r in runs)
    assert record["max_workers"] == min(2, os.cpu_count() or 1)
    if record["max_workers"] >= 2 and len(runs) >= 3:
        assert wall < sum(runs), (wall, runs)  # executions overlapped


def test_provenance_block_in_every_report(built):
    outcome, _ = built
    demo_fp = data_fingerprint(None)
    for report in outcome.reports:
        text = report.read_text(encoding="utf-8")
        block = re.search(r"<details class=[\"']iop-provenance[\"'].*?</details>", text, re.S)
        assert block is not None, report.name
        rows = dict(re.findall(r"<th style=[\"']text-align:left[\"']>([^<]+)</th><td>(.*?)</td>", block.group(0), re.S))
        for key in PROVENANCE_KEYS:
            assert key in rows and rows[key].strip(), (report.name, key)
        assert demo_fp in rows["data_fingerprint"]
        assert re.search(r"[0-9a-f]{40}", rows["git_commit"]) or "not a git checkout" in rows["git_commit"]
        assert "min_cell_count" in rows["parameters"] and "data_path" in rows["parameters"]
        assert re.fullmatch(r"\d+\.\d s", rows["run_time"])
        assert f"{Path(report).stem}.ipynb" in rows["notebook"]


def test_fingerprints_file_matches_outcome(built):
    outcome, _ = built
    on_disk = json.loads((outcome.index.parent / "fingerprints.json").read_text())
    assert on_disk == json.loads(json.dumps(outcome.fingerprints))
    for name, fp in on_disk.items():
        assert fp["tables_fingerprint"].startswith("sha256:") and fp["outputs_fingerprint"].startswith("sha256:")
        assert fp["cells"], name  # every notebook shows some text output


def test_rebuild_gives_identical_fingerprints(tmp_path):
    """Two builds of notebooks 00 and 03, back to back on the same data, show the same numbers
    (fingerprints.json byte for byte)."""
    first = build_reports(out_dir=tmp_path / "first", notebooks=SUBSET, progress=False, gate=False)
    second = build_reports(out_dir=tmp_path / "second", notebooks=SUBSET, progress=False, gate=False)
    for nb in SUBSET:
        a, b = first.fingerprints[nb.name], second.fingerprints[nb.name]
        changed = sorted((k for k in set(a["cells"]) | set(b["cells"]) if a["cells"].get(k) != b["cells"].get(k)),
                         key=int)
        if changed:
            cells = nbformat.read(nb, as_version=4).cells
            shown = [f"cell {k} ({cells[int(k)].source.strip().splitlines()[0][:60]!r})" for k in changed]
            pytest.fail(f"{nb.name}: outputs changed between builds in {', '.join(shown)}")
        assert a["tables_fingerprint"] == b["tables_fingerprint"]
        assert a["outputs_fingerprint"] == b["outputs_fingerprint"]
        assert a["n_tables"] == b["n_tables"] > 0
    assert (tmp_path / "first" / "fingerprints.json").read_bytes() == (tmp_path / "second" / "fingerprints.json").read_bytes()


def test_fingerprint_sees_a_changed_number():
    nb = _notebook([("code", "x")])
    nb.cells[2].outputs = [nbformat.v4.new_output("execute_result", data={"text/html": "<table><td>41</td></table>",
                                                                          "text/plain": "41"}, execution_count=1)]
    a = notebook_fingerprints(nb)
    nb.cells[2].outputs[0]["data"]["text/html"] = "<table><td>42</td></table>"
    b = notebook_fingerprints(nb)
    assert a["n_tables"] == 1
    assert a["tables_fingerprint"] != b["tables_fingerprint"]
    assert a["cells"]["2"] != b["cells"]["2"]
    # memory addresses and images do not count
    nb.cells[2].outputs.append(nbformat.v4.new_output("display_data", data={"image/png": "AAAA",
                                                                          "text/plain": "<Figure at 0x7f00aa11bb22>"}))
    c = notebook_fingerprints(nb)
    nb.cells[2].outputs[1]["data"] = {"image/png": "BBBB", "text/plain": "<Figure at 0x7fffff000000>"}
    assert notebook_fingerprints(nb) == c


# ---------------------------------------------------------------------------------------------
# failure naming and atomic writes
# ---------------------------------------------------------------------------------------------
def test_failing_cell_is_named_and_out_dir_untouched(tmp_path):
    nb_dir = tmp_path / "notebooks"
    _write(_notebook([("code", "print('fine')")], "# OK notebook"), nb_dir / "00_ok.ipynb")
    _write(_notebook([("code", "x = 1"), ("markdown", "## Then it breaks"),
                      ("code", "\n# the next line fails\ny = x / 0\nprint(y)")]), nb_dir / "01_broken.ipynb")
    out = tmp_path / "reports"
    out.mkdir()
    (out / "index.html").write_text("previous build", encoding="utf-8")
    before = _snapshot(out)
    with pytest.raises(ReportError) as info:
        build_reports(out_dir=out, notebooks_dir=nb_dir, progress=False, gate=False)
    msg = str(info.value)
    assert "01_broken.ipynb" in msg
    assert "cell 4" in msg  # position in the file: title, parameters, x = 1, markdown, failing cell
    assert "'# the next line fails'" in msg
    assert "ZeroDivisionError" in msg
    assert "No report was written" in msg
    assert "00_ok" not in msg
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notebooks", "reports"]  # no staging dir left


def test_two_failures_name_the_first_and_list_the_other(tmp_path):
    """Both notebooks start at once (2 workers); the message describes the first in order and names the other."""
    nb_dir = tmp_path / "notebooks"
    _write(_notebook([("code", "import time\ntime.sleep(1)\nraise KeyError('late')")]), nb_dir / "00_late.ipynb")
    _write(_notebook([("code", "raise RuntimeError('early')")]), nb_dir / "01_early.ipynb")
    with pytest.raises(ReportError) as info:
        build_reports(out_dir=tmp_path / "r", notebooks_dir=nb_dir, progress=False, gate=False, max_workers=2)
    msg = str(info.value)
    assert msg.startswith("Notebook 00_late.ipynb failed in cell 2")
    assert "KeyError" in msg and "(Also failed: 01_early.ipynb.)" in msg
    assert not (tmp_path / "r").exists()


def test_missing_notebook_is_reported_before_running(tmp_path):
    with pytest.raises(ReportError, match="do not exist: .*nope.ipynb"):
        build_reports(out_dir=tmp_path / "r", notebooks=[tmp_path / "nope.ipynb"], progress=False, gate=False)
    assert not (tmp_path / "r").exists()


def test_bad_max_workers(tmp_path):
    with pytest.raises(ReportError, match="max_workers must be a positive integer"):
        build_reports(out_dir=tmp_path / "r", notebooks=SUBSET, max_workers=0, progress=False, gate=False)


# ---------------------------------------------------------------------------------------------
# privacy gate hook
# ---------------------------------------------------------------------------------------------
def test_default_gate_refuses_a_patient_id_and_writes_nothing(tmp_path):
    leak = _write(_notebook([("code", "print('first patient: P000001')")], "# Leaky"), tmp_path / "nb" / "07_leak.ipynb")
    out = tmp_path / "reports"
    with pytest.raises(PrivacyViolationError) as info:
        build_reports(out_dir=out, notebooks=[leak], progress=False)
    msg = str(info.value)
    assert "07_leak.ipynb" in msg and "identifier 'P000001'" in msg and "nothing was written" in msg
    assert not out.exists()
    # gate=False (builder tests only) lets it through; a custom gate is called with name and HTML
    seen = []
    build_reports(out_dir=out, notebooks=[leak], progress=False, gate=lambda name, body: seen.append((name, body)))
    assert seen[0][0] == "07_leak.ipynb" and "P000001" in seen[0][1]
    assert (out / "07_leak.html").exists()


def test_default_gate_uses_min_cell_count_parameter(tmp_path):
    cells = [("code", "print('threshold in the kernel:', min_cell_count)"),
             ("code", "import pandas as pd\npd.DataFrame({'site': ['A', 'B'], 'n': [7, 40]})")]
    nb = _write(_notebook(cells, "# Small cells"), tmp_path / "nb" / "08_cells.ipynb")
    with pytest.raises(PrivacyViolationError, match="small_cell '7'"):
        build_reports(out_dir=tmp_path / "r11", notebooks=[nb], progress=False)
    outcome = build_reports(out_dir=tmp_path / "r5", notebooks=[nb], progress=False, parameters={"min_cell_count": 5})
    assert outcome.provenance["parameters"]["min_cell_count"] == 5
    assert "threshold in the kernel: 5" in outcome.reports[0].read_text(encoding="utf-8")  # reached the kernel


# ---------------------------------------------------------------------------------------------
# rendering in headless Chromium
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it for the rendering test")
    b = Chromium(exe, timeout=90)
    try:
        b.start()
        yield b
    finally:
        b.close()


def test_index_renders_and_links_resolve(built, browser):
    outcome, _ = built
    out = outcome.index.parent
    browser.navigate(outcome.index.resolve().as_uri())
    assert browser.evaluate("document.title") == "iop-research reports"
    links = browser.evaluate(LINKS_JS)
    hrefs = [ln["href"] for ln in links]
    assert hrefs == [p.name for p in outcome.reports]
    for ln in links:
        href = ln["href"]
        if ln["anchorOk"] is not None:
            assert ln["anchorOk"], href
        elif not re.match(r"^[a-z]+:", href):
            assert (out / href.split("#")[0]).is_file(), href
    assert browser.exceptions() == []


def test_every_report_renders(built, browser, tmp_path):
    outcome, _ = built
    problems = []
    for report in outcome.reports:
        browser.navigate(report.resolve().as_uri())
        name = report.stem + ".ipynb"
        if browser.evaluate("document.querySelectorAll('.jp-Cell').length") < 3:
            problems.append(f"{name}: no notebook cells rendered")
        for img in browser.evaluate(IMAGES_JS):
            if not img["src"].startswith("data:"):
                problems.append(f"{name}: image not embedded ({img['src']})")
            if img["width"] <= 0 or img["height"] <= 0:
                problems.append(f"{name}: image does not decode ({img['src']})")
            elif img["error"] is not None or img["variance"] is None or img["variance"] < 1.0:
                problems.append(f"{name}: blank image {img}")
        tables = browser.evaluate(TABLES_JS)
        n_tables = outcome.fingerprints[name]["n_tables"]
        if n_tables and not any(t["rows"] >= 2 and t["height"] > 0 for t in tables):
            problems.append(f"{name}: {n_tables} table outputs but no table rendered")
        if len(tables) < n_tables:
            problems.append(f"{name}: {len(tables)} tables rendered, {n_tables} in the outputs")
        for ln in browser.evaluate(LINKS_JS):
            if ln["anchorOk"] is False:
                problems.append(f"{name}: link {ln['href']} ({ln['text']!r}) has no target")
        toc = browser.evaluate("document.querySelectorAll('nav.iop-toc a').length")
        if browser.evaluate("document.querySelectorAll('h2').length") and not toc:
            problems.append(f"{name}: no table of contents")
    assert problems == []
    # one screenshot of the report with most figures, for a human look
    browser.navigate(outcome.reports[-1].resolve().as_uri())
    shot = browser.screenshot(tmp_path / "report.png", full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_relative_paths_and_working_directories(tmp_path, monkeypatch):
    """Relative notebook paths run in parallel; each kernel starts in its notebook's directory and the
    builder never changes the process's working directory (no os.chdir from worker threads)."""
    for sub in ("a", "b"):
        _write(_notebook([("code", "import os\nprint('kernel cwd:', os.path.basename(os.getcwd()))")], f"# In {sub}"),
               tmp_path / sub / f"0{ord(sub) - 97}_{sub}.ipynb")
    monkeypatch.chdir(tmp_path)
    outcome = build_reports(out_dir="out", notebooks=["a/00_a.ipynb", "b/01_b.ipynb"], progress=False, gate=False)
    assert Path.cwd() == tmp_path
    assert [p.name for p in outcome.reports] == ["00_a.html", "01_b.html"]
    assert "kernel cwd: a" in (tmp_path / "out" / "00_a.html").read_text(encoding="utf-8")
    assert "kernel cwd: b" in (tmp_path / "out" / "01_b.html").read_text(encoding="utf-8")


def test_fingerprint_ignores_how_stdout_was_chunked():
    """Two prints arrive as one stream message or two, depending on kernel timing: same fingerprint."""
    from iop_research.reports.build import notebook_fingerprints

    one = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1); print(2)")])
    two = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1); print(2)")])
    one.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n2\n")]
    two.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n"),
                            nbformat.v4.new_output("stream", name="stderr", text="noise\n"),
                            nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    assert notebook_fingerprints(one) == notebook_fingerprints(two)
    three = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1); print(3)")])
    three.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n3\n")]
    assert notebook_fingerprints(one)["outputs_fingerprint"] != notebook_fingerprints(three)["outputs_fingerprint"]


# ---------------------------------------------------------------------------------------------
# a study report (study file -> templates -> publishing channel), rendered in Chromium
# ---------------------------------------------------------------------------------------------
STUDY_QUESTIONS = ["cohort", "relapse", "modalities"]


@pytest.fixture(scope="module")
def study_built(tmp_path_factory):
    """A study on a simulated 300-patient cohort: three questions, a study file with a title and a cap."""
    from iop_research.data.synth import simulate_cohort
    from iop_research.reports.config import read_study_config

    root = tmp_path_factory.mktemp("study")
    simulate_cohort(300, seed=3).write(root / "data", format="parquet")
    (root / "study.toml").write_text(
        '[data]\npath = "data"\n[outcome]\nmax_followup_days = 540\n'
        '[comparison]\nexposure = "modality_dose"\nmodality = "group"\ndesign = "time_varying"\n'
        f'[report]\ntitle = "Family therapy and relapse"\nquestions = {json.dumps(STUDY_QUESTIONS)}\n',
        encoding="utf-8")
    params = read_study_config(root / "study.toml")
    data = params.pop("data_path")
    return build_reports(out_dir=root / "reports", data=data, parameters=params, progress=False)


def test_study_build_writes_reports_tables_figures_and_provenance(study_built):
    from docx import Document
    from PIL import Image

    out = study_built.index.parent
    assert [p.name for p in study_built.reports] == ["01_cohort.html", "03_relapse.html", "04_modalities.html"]
    assert not list(out.parent.glob(".iop-report-*")) and not (out / ".prepared.pkl").exists()
    record = json.loads((out / "provenance.json").read_text())
    study = record["study"]
    assert study["questions"] == STUDY_QUESTIONS
    assert study["settings_applied"]["outcome.max_followup_days"] == 540
    assert study["settings_from_study_file"] == ["comparison.design", "comparison.exposure", "comparison.modality",
                                                 "data.path", "outcome.max_followup_days", "report.questions",
                                                 "report.title"]
    assert study["ledger_audit"].endswith("all protected")
    assert (out / "fingerprints.json").is_file()
    csvs = sorted(p.name for p in (out / "tables").glob("*.csv"))
    assert {"table_1.csv", "attrition.csv", "cox.csv", "modality_cox.csv", "km_summary.csv"} <= set(csvs)
    t1 = Document(out / "tables" / "table_1.docx")
    assert t1.tables and len(t1.tables[0].rows) > 5
    assert any("Table" in p.text for p in t1.paragraphs) or t1.tables[0].cell(0, 0).text
    for stem in ("km", "cox_forest", "modality_forest"):
        assert (out / "figures" / f"{stem}.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
        with Image.open(out / "figures" / f"{stem}.png") as im:
            dpi = im.info.get("dpi", (0, 0))
            assert round(dpi[0]) == 300, (stem, dpi)
            assert im.size[0] <= 7.5 * 300, (stem, im.size)  # at most a double journal column wide
    for report in study_built.reports:
        body = report.read_text(encoding="utf-8")
        assert "prepare_study" not in body, f"{report.name}: code shown without --show-code"
        # the build's staging folder and the absolute location of the data are not published
        assert ".iop-report-" not in body and ".prepared.pkl" not in body, report.name
        assert str(out.parent) not in body, f"{report.name}: a local folder is shown"
        assert "[T." not in body, f"{report.name}: patsy term names"
        assert "True hazard ratio" not in body and "3,000 patients" not in body


def test_study_report_renders_figures_captions_tables_and_links(study_built, browser):
    out = study_built.index.parent
    browser.navigate(study_built.index.resolve().as_uri())
    assert browser.evaluate("document.title") == "Family therapy and relapse"
    links = browser.evaluate(LINKS_JS)
    hrefs = [ln["href"] for ln in links]
    assert [h for h in hrefs if h.endswith(".html")] == [p.name for p in study_built.reports]
    assert {"tables/", "figures/"} <= set(hrefs)
    for h in hrefs:
        assert (out / h).exists(), h
    rows = browser.evaluate("Array.from(document.querySelectorAll('table.iop-index tbody tr')).map("
                            "r => Array.from(r.cells).map(c => c.textContent.trim()))")
    assert len(rows) == len(STUDY_QUESTIONS)
    assert all(r[2] and r[3] for r in rows), rows  # N and key result for each question
    assert re.search(r"HR \d+\.\d\d \(\d+\.\d\d to \d+\.\d\d\)", rows[2][3]), rows[2]
    # the key result names the exposure the study file defined, not the model's variable ("Exposure: any")
    assert rows[2][3].endswith(" for Group therapy sessions per week (previous week)"), rows[2]
    problems = []
    for report in study_built.reports:
        browser.navigate(report.resolve().as_uri())
        got = browser.evaluate(PUBLISHED_JS)
        name = report.name
        if got["code"]:
            problems.append(f"{name}: {got['code']} code cells shown")
        if got["pre"]:
            problems.append(f"{name}: monospace text output {got['pre'][:1]}")
        caps = [t["caption"] for t in got["tables"]]
        if [c.split(".")[0] for c in caps] != [f"Table {i}" for i in range(1, len(caps) + 1)]:
            problems.append(f"{name}: table captions not numbered 1..n: {caps}")
        for t in got["tables"]:
            if t["rows"] < 1 or t["height"] <= 0 or t["monospace"]:
                problems.append(f"{name}: table {t['caption']!r} not rendered as a table")
        figs = got["figures"]
        if report.stem != "01_cohort" and not figs:
            problems.append(f"{name}: no figure")
        for i, f in enumerate(figs, 1):
            if not (f["caption"] or "").startswith(f"Figure {i}. "):
                problems.append(f"{name}: figure {i} caption {f['caption']!r}")
            if f["width"] <= 50 or f["height"] <= 50 or f["marks"] < 10:
                problems.append(f"{name}: figure {i} not drawn ({f})")
        if not got["texts"]:
            problems.append(f"{name}: no text published")
        for ln in browser.evaluate(LINKS_JS):
            if ln["anchorOk"] is False:
                problems.append(f"{name}: link {ln['href']} has no target")
    assert problems == []
    browser.navigate(study_built.reports[1].resolve().as_uri())
    notes = [n for t in browser.evaluate(PUBLISHED_JS)["tables"] for n in t["notes"]]
    assert any(n.startswith("Adjusted for:") for n in notes), notes
    assert browser.exceptions() == []


def test_modality_labels_name_the_exposure_the_study_defined():
    """Every [comparison] exposure's model terms get a label naming the modality and the window,
    in the model table, the forest plot and the index line (they read "Exposure: any" before)."""
    import iop_research as iop
    from iop_research.data.synth import simulate_cohort
    from iop_research.present.publish import Publisher
    from iop_research.reports import study as st

    data = simulate_cohort(300, seed=3)
    cases = [
        ({}, "Family therapy in the first 30 days"),
        ({"reference": "any", "window_days": 45}, "No family therapy in the first 45 days"),
        ({"design": "time_varying"}, "Family therapy (from the first session, if before day 30)"),
        ({"exposure": "modality_dose", "modality": "group"}, "Group therapy sessions per week (previous week)"),
        ({"exposure": "modality_dose", "design": "landmark", "window_days": 28},
         "Family therapy sessions per week in the first 28 days"),
        ({"exposure": "modality_mix"}, "Modalities, first 30 days: "),
    ]
    pub = Publisher(min_cell_count=11, out_dir=None, report="04_modalities")
    for comparison, expected in cases:
        sd = st.prepare_study({"comparison": comparison}, data=data)
        me = st.modality_exposure(sd)
        kw = dict(duration_col="time") if me.design == "landmark" else dict(start_col="start", stop_col="stop")
        fit = st.fit_adjusted(sd, me.frame, fit=iop.fit_cox, exposure=me.exposure_cols, event_col="event",
                              cluster_col="patient_id", **kw)
        shown = st.model_frame(fit, terms=me.exposure_cols, labels=me.labels)["Term"].tolist()
        assert shown and all(not t.startswith(("Exposure", "Sessions per week")) and "[T." not in t for t in shown), \
            (comparison, shown)
        assert shown[0].startswith(expected), (comparison, shown)
        headline = st.hr_headline(pub, fit, me.exposure_cols[0], labels=me.labels)
        assert headline.endswith(" for " + shown[0]), (comparison, headline)
        fig = st.forest_figure(fit, title="t", terms=me.exposure_cols, labels=me.labels)  # no tight-layout warning
        assert [t.get_text().replace("\n", " ") for t in fig.axes[0].get_yticklabels()][::-1] == shown, comparison
        if comparison.get("exposure") == "modality_mix":
            assert all(t.endswith(f"(vs. {me.reference})") for t in shown), shown
    # other models keep their labels: labels= only overrides the terms it names
    assert st.term_labels(["exposure[T.any]", "age"], extra={"exposure[T.any]": "X"}) == {"exposure[T.any]": "X",
                                                                                         "age": "Age (years)"}


def test_build_writes_nothing_but_progress_to_stderr(tmp_path, capfd):
    """A successful build's stderr holds the progress bar only (issue 12, point 6).

    jupyter_client's shutdown used to interrupt each kernel (SIGINT) before asking it to
    stop; when the signal landed while the kernel was still in a message handler, ipykernel
    logged "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." on stderr, depending on
    timing. The planted notebook makes any SIGINT at shutdown visible every time (it installs
    a handler that writes to the kernel's stderr, also as the handler ipykernel restores
    after each cell), so the test does not depend on that race.
    """
    report_sigint = ("import os, signal\n"
                     "on_sigint = lambda signum, frame: os.write(2, b'SIGINT reached the kernel\\n')\n"
                     "signal.signal(signal.SIGINT, on_sigint)\n"
                     "get_ipython().kernel.saved_sigint_handler = on_sigint")
    paths = [_write(_notebook([("code", report_sigint), ("code", f"print({i})")], title=f"# Notebook {i}"),
                    tmp_path / "nb" / f"{i:02d}_quiet.ipynb") for i in range(2)]
    capfd.readouterr()
    outcome = build_reports(out_dir=tmp_path / "out", notebooks=paths, progress=True, gate=False, max_workers=2)
    assert [p.name for p in outcome.reports] == ["00_quiet.html", "01_quiet.html"]
    err = capfd.readouterr().err
    assert "notebooks:" in err  # the progress bar is captured here (the kernels write to the same stderr)
    other = [line for line in re.split(r"[\r\n]+", err) if line.strip() and not line.startswith("notebooks:")]
    assert other == []
