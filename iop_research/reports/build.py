"""Reproducible HTML reports from the numbered notebooks.

``build_reports`` executes every notebook with papermill (parameters injected
into the cell tagged ``parameters``), exports each to self-contained HTML with
nbconvert (figures embedded as data URIs), prepends a provenance block and a
table of contents, and writes an ``index.html`` linking them.

- **Parallel**: notebooks run ``max_workers`` at a time (default
  ``min(2, os.cpu_count())``), each in its own kernel process, driven from
  worker threads; reports, index and progress keep the notebooks' order.
- **Atomic**: everything is built in a staging directory beside ``out_dir``
  and moved into place only when every notebook has run and passed the gate;
  a failure raises :class:`~iop_research.exceptions.ReportError` naming the
  notebook, the cell (position in the file and first line) and the exception,
  and leaves the output directory untouched.
- **Private by default**: the privacy gate
  (:func:`iop_research.reports.gate.make_privacy_gate`) checks every report for
  identifiers of the input data, full dates, ages over 89 and counts below
  ``min_cell_count`` before anything is written.
- **Study reports**: with a study (``parameters={"study": ...}``, as
  :func:`iop_research.reports.config.read_study_config` returns; the CLI's
  ``report --params study.toml``) the study report templates
  (:data:`TEMPLATES_DIR`) run instead of the tutorials: the study is prepared
  once (:func:`iop_research.reports.study.prepare_study`) and handed to the
  kernels; every output must come from the publishing channel
  (:class:`iop_research.present.publish.Publisher`, signed with a key of this
  build; checked by :func:`iop_research.reports.gate.check_channel_only`); the
  ledgers of all reports are audited together; tables are also written under
  ``tables/`` (CSV, Word), figures under ``figures/`` (SVG, 300-dpi PNG); the
  index summarises each question (N, key estimate with CI) and links its
  report; code is hidden unless ``show_code=True``.
- **Checkable rebuilds**: ``fingerprints.json`` holds, per notebook, hashes of
  its table and text outputs (:func:`notebook_fingerprints`); rebuilding with
  the same notebooks, data and parameters gives the same file.

References
----------
.. [1] papermill, parameterised notebook execution, https://papermill.readthedocs.io
.. [2] nbconvert ``HTMLExporter`` (lab template), https://nbconvert.readthedocs.io
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import copy
import html
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from iop_research.exceptions import IopError, ReportError

__all__ = [
    "build_reports", "data_fingerprint", "tables_fingerprint", "provenance", "notebook_fingerprints", "DEFAULT_NOTEBOOKS_DIR",
    "TEMPLATES_DIR", "ReportOutcome", "list_reports",
]

#: Tutorial notebooks shipped inside the package (package data), found from any working directory.
DEFAULT_NOTEBOOKS_DIR = Path(__file__).resolve().parent / "notebooks"
#: Study report templates (what ``iop-research report --params study.toml`` runs).
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def list_reports() -> list[tuple[str, str, Path]]:
    """``(name, title, path)`` of every tutorial and study report template, tutorials first.

    The title is the notebook's first markdown heading.
    """
    import nbformat

    out = []
    for folder in (DEFAULT_NOTEBOOKS_DIR, TEMPLATES_DIR):
        for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
            title, _ = _title_and_summary(nbformat.read(path, as_version=4), path.stem)
            out.append((path.stem, title, path))
    return out


@dataclass(frozen=True)
class ReportOutcome:
    """What :func:`build_reports` wrote.

    Attributes
    ----------
    index : Path
        ``index.html``.
    reports : tuple of Path
        One HTML file per notebook, in the notebooks' order.
    provenance : mapping
        The record written to ``provenance.json`` (shared provenance plus, per
        notebook, run time and fingerprints; total ``run_seconds``).
    seconds : float
        Wall time of the build.
    fingerprints : mapping
        Per notebook, :func:`notebook_fingerprints` (``fingerprints.json``).
    """

    index: Path
    reports: tuple[Path, ...]
    provenance: Mapping[str, Any]
    seconds: float
    fingerprints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def data_fingerprint(path: str | os.PathLike | None) -> str:
    """SHA-256 over the names and bytes of the input table files.

    Parameters
    ----------
    path : path-like or None
        A data directory (every regular file below it, sorted by relative path)
        or a single file. ``None`` means the bundled demo data.

    Returns
    -------
    str
        ``"sha256:<hex>"``.
    """
    from iop_research.datasets.loaders import demo_path  # local import: keeps import light

    root = Path(path) if path is not None else demo_path()
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        if rel.startswith(".") or rel.endswith(".md"):
            continue
        h.update(rel.encode())
        h.update(b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def _git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _r_versions() -> str:
    rscript = shutil.which("Rscript")
    if rscript is None:
        return "R not installed (R comparisons run in the test suite where R is installed)"
    try:
        out = subprocess.run(
            [rscript, "-e", 'cat(R.version.string, "| survival", format(packageVersion("survival")), '
                            '"| cmprsk", tryCatch(format(packageVersion("cmprsk")), error=function(e) "absent"))'],
            capture_output=True, text=True, timeout=60,
        )
        return out.stdout.strip() or out.stderr.strip()[:200]
    except (OSError, subprocess.SubprocessError) as exc:  # pragma: no cover
        return f"R check failed: {exc}"


def tables_fingerprint(data) -> str:
    """SHA-256 over the contract tables of an in-memory ``IOPData`` (names, columns and values).

    For data that exist only in memory, such as an extract mapped by a mapping file; a data
    directory is fingerprinted by its files (:func:`data_fingerprint`).
    """
    import pandas as pd

    h = hashlib.sha256()
    for name, df in data.tables().items():
        h.update(name.encode() + b"\0" + "\0".join(map(str, df.columns)).encode() + b"\0")
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return "sha256:" + h.hexdigest()


def provenance(*, data: str | os.PathLike | None, parameters: Mapping[str, Any],
               data_label: str | None = None, fingerprint: str | None = None) -> dict[str, Any]:
    """The provenance record shown at the top of every report.

    Contains the package version, git commit, data fingerprint, parameters and
    the versions of Python, the numerical libraries the estimators use and R/survival
    (when ``Rscript`` is installed). ``data_label`` and ``fingerprint`` describe data that
    did not come from a directory (a study's mapped extract); by default they are derived
    from ``data``.
    """
    import numpy
    import pandas
    import scipy
    import statsmodels

    from iop_research import __version__

    return {
        "iop_research": __version__,
        "git_commit": _git_commit(Path(__file__).resolve().parents[2]),
        "data": data_label or ("bundled demo cohort (iop_research/datasets/demo)" if data is None else str(data)),
        "data_fingerprint": fingerprint or data_fingerprint(data),
        "parameters": dict(parameters),
        "python": platform.python_version(),
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "statsmodels": statsmodels.__version__,
        "r": _r_versions(),
    }


#: Parameters the build passes to its own kernels (staging paths): never shown in a report.
_PRIVATE_PARAMETERS = ("out_dir", "prepared")
#: Study-file keys that name files: a report shows the file name, not the folders above it (a home folder names
#: its user).
_FILE_KEYS = ("path", "mapping", "concept_sets", "data_path")


def _public_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a report shows: without the build's staging paths, files by name only."""
    def clean(v, key=None):
        if isinstance(v, Mapping):
            return {k: clean(x, k) for k, x in v.items() if k not in _PRIVATE_PARAMETERS}
        if key in _FILE_KEYS and isinstance(v, str) and os.path.isabs(v):
            return Path(v).name
        return v

    return clean(params)


def _public_provenance(prov: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance as a report shows it: public parameters, the data source without the folders above it."""
    out = dict(prov)
    if "parameters" in out:
        out["parameters"] = _public_parameters(out["parameters"] or {})
    data = out.get("data")
    if isinstance(data, str) and os.path.isabs(data):
        out["data"] = Path(data).name
    return out


def _provenance_html(prov: Mapping[str, Any], seconds: float | None) -> str:
    rows = []
    for k, v in prov.items():
        val = json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else str(v)
        rows.append(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td><code>{html.escape(val)}</code></td></tr>")
    if seconds is not None:
        rows.append(f"<tr><th style='text-align:left'>run_time</th><td>{seconds:.1f} s</td></tr>")
    return (
        "<details class='iop-provenance' open><summary><b>Provenance</b></summary>"
        f"<table>{''.join(rows)}</table></details>"
    )


_HEADING = re.compile(r"^(#{1,3})\s+(.*?)\s*#*\s*$", re.M)
_MD_INLINE = (
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # links and images: keep the text
    (re.compile(r"`"), ""),
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),
    (re.compile(r"(?<!\w)\*(.+?)\*(?!\w)"), r"\1"),
)


def _heading_text(title: str) -> str:
    """The text of a markdown heading as rendered (inline markup removed)."""
    for pattern, repl in _MD_INLINE:
        title = pattern.sub(repl, title)
    return title.strip()


def _heading_id(text: str) -> str:
    """The ``id`` nbconvert gives a heading (``nbconvert.filters.strings._convert_header_id``)."""
    from urllib.parse import quote

    return quote(text.replace(" ", "-"), safe="?/:@!$&'()*+,;=")


def _toc_html(nb) -> str:
    """Table of contents (HTML) linking the notebook's level 1-3 headings by their nbconvert ids."""
    items = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        in_fence = False
        for line in cell.source.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                in_fence = not in_fence
            m = None if in_fence else _HEADING.match(line)
            if m is None:
                continue
            level, text = len(m.group(1)), _heading_text(m.group(2))
            if text:
                items.append(
                    f"<li style='margin-left:{1.5 * (level - 1):.1f}em'>"
                    f"<a href='#{html.escape(_heading_id(text), quote=True)}'>{html.escape(text)}</a></li>"
                )
    if not items:
        return ""
    return f"<nav class='iop-toc'><b>Contents</b><ul style='list-style:none;padding-left:0'>{''.join(items)}</ul></nav>"


def _export_html(nb, *, no_input: bool, title: str) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = no_input
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    # cell ids become HTML ids: nbformat draws them at random (8 hex digits, which can look like a date or an
    # episode id to the privacy gate) or a notebook author sets them; number them instead
    nb = copy.deepcopy(nb)
    for k, cell in enumerate(nb.cells):
        if "id" in cell:
            cell["id"] = f"c{k}"
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def _index_html(entries: list[tuple[str, str, str]], prov_html: str) -> str:
    links = "\n".join(
        f"<li><a href='{html.escape(href)}'>{html.escape(title)}</a> <small>{html.escape(desc)}</small></li>"
        for href, title, desc in entries
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>iop-research reports</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;}td,th{padding:2px 8px;}</style>"
        f"</head><body><h1>iop-research reports</h1><ol>{links}</ol>{prov_html}</body></html>\n"
    )


def _title_and_summary(nb, fallback: str) -> tuple[str, str]:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip()]
            if lines and lines[0].startswith("#"):
                title = lines[0].lstrip("#").strip()
                summary = next((ln for ln in lines[1:] if not ln.startswith("#")), "")
                return _heading_text(title), _heading_text(summary)[:160]
    return fallback, ""


_INJECTED_TAGS = frozenset({"injected-parameters", "papermill-error-cell-tag"})
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,16}")


def _first_line(source: str) -> str:
    lines = [ln.strip() for ln in source.splitlines() if ln.strip()]
    return lines[0][:100] if lines else "(empty cell)"


def _cell_text_outputs(cell) -> list[tuple[str, str]]:
    """(kind, text) of a code cell's outputs; images, widgets and stderr are left out.

    Consecutive stdout chunks are joined: the kernel may deliver two ``print`` calls as one
    stream message or as two depending on timing, and the fingerprint must not see that.
    """
    texts: list[tuple[str, str]] = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            if out.get("name") != "stdout":
                continue
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            if texts and texts[-1][0] == "stdout":
                texts[-1] = ("stdout", texts[-1][1] + text)
            else:
                texts.append(("stdout", text))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            for mime in ("text/html", "text/plain"):
                if mime in data:
                    val = data[mime]
                    texts.append((mime, "".join(val) if isinstance(val, list) else val))
    return texts


def notebook_fingerprints(nb) -> dict[str, Any]:
    """Fingerprints of the numbers an executed notebook shows.

    Parameters
    ----------
    nb : nbformat.NotebookNode
        An executed notebook (as papermill returns it).

    Returns
    -------
    dict
        ``tables_fingerprint``: SHA-256 over every HTML table output (pandas
        DataFrames, result objects' ``_repr_html_``), with the index of its cell;
        ``outputs_fingerprint``: SHA-256 over every text output (``text/html``,
        ``text/plain``, stdout) of every code cell; ``n_tables``; and ``cells``:
        per cell index (as in the notebook file) with text outputs, its own
        SHA-256, so that a difference can be traced to a cell. The
        ``injected-parameters`` cell (which holds the data path), stderr, images
        and the provenance block are left out; memory addresses (``0x7f...``)
        are replaced by ``0xADDRESS`` as in ``notebooks/sanitize.cfg``.

    Examples
    --------
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    >>> nb.cells[0].outputs = [nbformat.v4.new_output(
    ...     "execute_result", data={"text/plain": "2"}, execution_count=1)]
    >>> fp = notebook_fingerprints(nb)
    >>> fp["n_tables"], fp["outputs_fingerprint"] == notebook_fingerprints(nb)["outputs_fingerprint"]
    (0, True)
    """
    h_tables, h_all = hashlib.sha256(), hashlib.sha256()
    cells: dict[str, str] = {}
    n_tables = 0
    original = 0
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if _INJECTED_TAGS & tags:
            continue
        idx, original = original, original + 1
        if cell.get("cell_type") != "code":
            continue
        texts = _cell_text_outputs(cell)
        if not texts:
            continue
        h_cell = hashlib.sha256()
        for kind, text in texts:
            text = _ADDRESS.sub("0xADDRESS", text)
            chunk = f"{idx}\0{kind}\0{text}\0".encode()
            h_cell.update(chunk)
            h_all.update(chunk)
            if kind == "text/html" and "<table" in text:
                h_tables.update(chunk)
                n_tables += 1
        cells[str(idx)] = "sha256:" + h_cell.hexdigest()
    return {
        "tables_fingerprint": "sha256:" + h_tables.hexdigest(),
        "outputs_fingerprint": "sha256:" + h_all.hexdigest(),
        "n_tables": n_tables,
        "cells": cells,
    }


class _QuietPapermill(logging.Filter):
    """Drops papermill's parameter-inference chatter.

    Notebooks ignore parameters they do not declare (a study configuration
    passes the same parameters to every notebook), and papermill cannot parse
    comments containing ``=`` in a parameters cell; neither is a problem.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Passed unknown parameter") or msg.startswith("Unable to parse line"))


@dataclass(frozen=True)
class _Built:
    name: str
    html_name: str
    title: str
    summary: str
    seconds: float
    fingerprints: Mapping[str, Any]
    parameters: Mapping[str, Any]


def _ipc_kernel_manager():
    """A kernel manager whose kernels talk over IPC sockets and are shut down without SIGINT.

    No TCP ports are opened, so ipykernel does not warn "Kernel is running over TCP
    without encryption" on stderr. The socket path is absolute because the kernel
    runs in the notebook's folder.

    jupyter_client's ``shutdown_kernel`` first interrupts the kernel (SIGINT to its
    process group, to stop a running cell), then asks it to shut down over the control
    channel. nbclient shuts the kernel down only after the last cell has finished, so
    the interrupt stops nothing; but if it lands while the kernel is still in a message
    handler (under load the last reply and the shutdown overlap), ipykernel logs
    "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." on stderr of a build
    that succeeded. Here the shutdown skips that interrupt: the kernel gets the
    shutdown request, and is killed if it has not exited within ``shutdown_wait_time``
    (so a kernel stuck in a cell still ends). An explicit ``interrupt_kernel`` call
    (nbclient's ``interrupt_on_timeout``) still sends SIGINT.
    """
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    class _IpcKernelManager(AsyncKernelManager):
        _shutting_down_quietly = False

        def __init__(self, **kw):
            kw.setdefault("transport", "ipc")
            os.makedirs(jupyter_runtime_dir(), exist_ok=True)
            kw.setdefault("ip", os.path.join(jupyter_runtime_dir(), f"iop-kernel-{uuid.uuid4().hex[:12]}-ipc"))
            super().__init__(**kw)

        async def _async_interrupt_kernel(self) -> None:
            if self._shutting_down_quietly:
                return
            await super()._async_interrupt_kernel()

        interrupt_kernel = _async_interrupt_kernel

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            self._shutting_down_quietly = True
            try:
                await super()._async_shutdown_kernel(now=now, restart=restart)
            finally:
                self._shutting_down_quietly = False

    return _IpcKernelManager


def _execute(pm, path: Path, *, params, kernel_name: str, no_input: bool, start_timeout: int):
    """papermill in this worker thread; closes the event loop jupyter_core opened for the thread.

    The kernel starts in the notebook's directory through nbclient's
    ``resources["metadata"]["path"]``, not papermill's ``cwd=`` (which calls
    ``os.chdir``: process-wide, so a race between worker threads).
    """
    import asyncio

    from jupyter_core.utils import ensure_event_loop

    path = path.resolve()
    try:
        return pm.execute_notebook(
            str(path), None, parameters=dict(params), kernel_name=kernel_name,
            progress_bar=False, log_output=False, report_mode=no_input, request_save_on_cell_execute=False,
            start_timeout=start_timeout, resources={"metadata": {"path": str(path.parent)}},
            kernel_manager_class=_ipc_kernel_manager(),
        )
    finally:
        loop = ensure_event_loop()  # the loop nbclient ran on in this thread
        if not loop.is_running():
            loop.close()
            asyncio.set_event_loop(None)


def _declared_parameters(nb) -> dict[str, Any]:
    """Names and default values assigned in the cell tagged ``parameters``.

    Literal values are returned as Python values, anything else as its source text.
    """
    import ast

    declared: dict[str, Any] = {}
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        try:
                            declared[target.id] = ast.literal_eval(node.value)
                        except (ValueError, SyntaxError, TypeError):
                            declared[target.id] = ast.unparse(node.value)
        break
    return declared


def _build_one(path: Path, *, stage: Path, params: Mapping[str, Any], kernel_name: str, no_input: bool,
               prov_future, gate_future, start_timeout: int, channel_only: bool = False,
               channel_key: bytes | None = None) -> _Built:
    """Execute, fingerprint, export, gate and stage one notebook (runs in a worker thread)."""
    import nbformat
    import papermill as pm

    t0 = time.perf_counter()
    try:
        nb = _execute(pm, path, params=params, kernel_name=kernel_name, no_input=no_input,
                      start_timeout=start_timeout)
    except pm.PapermillExecutionError as exc:
        # cell_index counts papermill's injected cells; report the position in the file
        try:
            written = nbformat.read(path, as_version=4)
            source = exc.source
            index = next((i for i, c in enumerate(written.cells) if c.source == source), None)
        except Exception:  # pragma: no cover - the notebook was readable a moment ago
            index = None
        where = f"cell {index}" if index is not None else f"cell [{exc.exec_count}]"
        raise ReportError(
            f"Notebook {path.name} failed in {where} (execution count {exc.exec_count}, "
            f"starting {_first_line(exc.source)!r}) with {exc.ename}: {exc.evalue}. "
            "No report was written. Fix that cell (run the notebook in JupyterLab to see the traceback) "
            "and build again."
        ) from exc
    except Exception as exc:  # kernel died or did not start, unreadable notebook, bad parameters
        raise ReportError(
            f"Notebook {path.name} could not be executed ({type(exc).__name__}: {exc}). No report was written. "
            "Check that the file is a valid notebook and that the kernel starts "
            "(jupyter kernelspec list) and build again."
        ) from exc
    seconds = time.perf_counter() - t0
    if channel_only:
        _check_channel_only(path.name, nb, channel_key)
    fps = notebook_fingerprints(nb)
    title, summary = _title_and_summary(nb, path.stem)
    toc = _toc_html(nb)
    prov = dict(prov_future.result())
    # the values the notebook ran with: its declared defaults, overridden by what was passed
    prov["parameters"] = {**_declared_parameters(nb), **dict(params)}
    prov["notebook"] = path.name
    prov["tables_fingerprint"] = fps["tables_fingerprint"]
    head = [nbformat.v4.new_markdown_cell(_provenance_html(_public_provenance(prov), seconds))]
    if toc:
        head.append(nbformat.v4.new_markdown_cell(toc))
    nb.cells = head + nb.cells
    try:
        body = _export_html(nb, no_input=no_input, title=title)
    except Exception as exc:
        raise ReportError(
            f"Notebook {path.name} ran but could not be exported to HTML ({type(exc).__name__}: {exc}). "
            "No report was written. Check its outputs (e.g. an unsupported widget) and build again."
        ) from exc
    gate = gate_future.result()
    if gate is not None:
        gate(path.name, body)
    html_name = f"{path.stem}.html"
    (stage / html_name).write_text(body, encoding="utf-8")
    return _Built(path.name, html_name, title, summary, seconds, fps, prov["parameters"])


def _check_channel_only(name: str, nb, key: bytes | None) -> None:
    """Study reports: every output must come from the publishing channel (the gate's allow-list)."""
    from iop_research.exceptions import PrivacyViolationError
    from iop_research.reports import gate as _gate

    check = getattr(_gate, "check_channel_only", None)
    if check is None:  # the allow-list arrives with the gate of issue 13; the pattern gate still runs
        return
    violations = list(check(nb, notebook=name, key=key))
    if violations:
        raise PrivacyViolationError(
            f"Study report {name}: {len(violations)} output(s) did not come from the publishing channel: "
            + "; ".join(str(v) for v in violations[:5])
            + ". Publish every table, figure and number through pub.table / pub.figure / pub.text. No report was written.")


_QUESTION_TITLES = {
    "cohort": "Cohort and attrition", "retention": "Retention and discharge reasons", "relapse": "Time to relapse",
    "modalities": "Therapy modalities", "mat": "MAT", "recurrence": "Recurrent relapse",
    "screens": "Weekly urine screens", "programmes": "Programmes compared",
}


def _finish_study(stage: Path, sd, results) -> dict[str, Any]:
    """Audit all reports' ledgers together, tidy the staging folder; the study part of provenance.json."""
    from iop_research.exceptions import PrivacyViolationError

    (stage / ".prepared.pkl").unlink(missing_ok=True)
    from iop_research.reports.config import QUESTIONS

    audit = "no ledgers written"
    ledgers = sorted((stage / "ledgers").glob("*.json")) if (stage / "ledgers").is_dir() else []
    written = {p.stem for p in ledgers}
    missing = [Path(b.html_name).stem for b in results
               if Path(b.html_name).stem in QUESTIONS.values() and Path(b.html_name).stem not in written]
    if missing:  # the joint audit covers every template report, or the build fails
        raise ReportError(f"Study report(s) {', '.join(missing)} wrote no ledger to {stage / 'ledgers'}, so the "
                          "study's published counts cannot be audited together. No report was written.")
    if ledgers:
        from iop_research.privacy.audit import audit_ledgers

        try:
            res = audit_ledgers(ledgers, raise_on_failure=False)
        except Exception as exc:  # a contradiction between reports is itself a finding
            raise PrivacyViolationError(f"The study's reports could not be audited together: {exc}. "
                                        "No report was written.") from exc
        bad = res[~res["is_protected"]] if "is_protected" in res else res.iloc[0:0]
        if len(bad):
            raise PrivacyViolationError(
                f"Read together, the study's reports narrow {len(bad)} suppressed count(s) below the protection "
                f"interval (e.g. {', '.join(map(str, bad.iloc[:3, 0]))}). No report was written.")
        audit = f"{len(res)} suppressed count(s) audited across {len(ledgers)} report(s): all protected"
    if "csv" not in sd.config.get("report.formats") and (stage / "tables").is_dir():
        for f in (stage / "tables").glob("*.csv"):
            f.unlink()
    return {
        "settings_applied": sd.config.applied(), "settings_from_study_file": sorted(sd.config.given),
        "questions": list(sd.questions),
        "questions_not_answered": {q: why for q, why in sd.availability.items() if why is not None},
        "data": sd.data_label, "ledger_audit": audit,
        "channel_gate": "applied" if _has_channel_gate() else "not available (pattern gate only)",
    }


def _has_channel_gate() -> bool:
    from iop_research.reports import gate as _gate

    return hasattr(_gate, "check_channel_only")


def _study_index_html(sd, stage: Path, results, prov_html: str) -> str:
    """The study's index: per question the N, the key estimate and a link to its report."""
    from iop_research.reports.config import QUESTIONS

    by_stem = {Path(b.html_name).stem: b for b in results}
    rows = []
    for q in QUESTIONS:
        stem = QUESTIONS[q]
        if stem in by_stem:
            summ = {}
            p = stage / "summaries" / f"{stem}.json"
            if p.is_file():
                summ = json.loads(p.read_text(encoding="utf-8"))
            b = by_stem[stem]
            rows.append(f"<tr><td><a href='{html.escape(b.html_name)}'>{html.escape(b.title)}</a></td>"
                        f"<td>{html.escape(summ.get('question', _QUESTION_TITLES[q]))}</td>"
                        f"<td>{html.escape(summ.get('n', ''))}</td><td>{html.escape(summ.get('result', ''))}</td></tr>")
        elif sd.availability.get(q):
            rows.append(f"<tr><td>{html.escape(_QUESTION_TITLES[q])}</td><td colspan='3'>not answered: "
                        f"{html.escape(sd.availability[q])}</td></tr>")
    shutil.rmtree(stage / "summaries", ignore_errors=True)
    files = []
    for sub, what in (("tables", "tables (CSV, Word)"), ("figures", "figures (SVG, PNG)")):
        if (stage / sub).is_dir() and any((stage / sub).iterdir()):
            files.append(f"<li><a href='{sub}/'>{sub}/</a>: {what}</li>")
    title = html.escape(sd.title)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;max-width:64em;margin:2em auto;}td,th{padding:4px 8px;text-align:left;"
        "vertical-align:top;}table.iop-index{border-collapse:collapse;}table.iop-index td,table.iop-index th"
        "{border-bottom:1px solid #ccc;}</style></head><body>"
        f"<h1>{title}</h1>"
        "<table class='iop-index'><thead><tr><th>Report</th><th>Question</th><th>N</th><th>Key result (95% CI)</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<ul>{''.join(files)}</ul>{prov_html}</body></html>\n"
    )


def _default_gate(data: str | os.PathLike | None, min_cell_count: int):
    from iop_research.reports.gate import make_privacy_gate
    from iop_research.datasets.loaders import demo_path
    from iop_research.data.io import read_data

    root = Path(data) if data is not None else demo_path()
    return make_privacy_gate(read_data(root, validate=False), min_cell_count=min_cell_count)


def build_reports(
    *,
    out_dir: str | os.PathLike = "reports",
    data: str | os.PathLike | None = None,
    parameters: Mapping[str, Any] | None = None,
    notebooks: Iterable[str | os.PathLike] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    no_input: bool = False,
    kernel_name: str = "python3",
    gate: Callable[[str, str], None] | bool | None = None,
    progress: bool = True,
    max_workers: int | None = None,
    start_timeout: int = 180,
    show_code: bool | None = None,
) -> ReportOutcome:
    """Execute the notebooks and write self-contained HTML reports.

    Notebooks run in parallel, each in its own kernel (``max_workers`` at a
    time); reports, the index and the progress bar keep the notebooks' order.

    Parameters
    ----------
    out_dir : path-like, default "reports"
        Where ``index.html``, one ``<notebook>.html`` per notebook,
        ``provenance.json`` and ``fingerprints.json`` are written.
    data : path-like, optional
        Data directory passed to each notebook as parameter ``data_path``
        (``None``: the bundled demo cohort).
    parameters : mapping, optional
        Further papermill parameters; notebooks ignore names they do not
        declare. With ``"study"`` (the settings of a study file, as
        :func:`iop_research.reports.config.read_study_config` returns) the
        build is a **study report**: the study report templates
        (:data:`TEMPLATES_DIR`) of the questions the study asks (or every
        question the data allow) run; every table, figure and number comes from
        the publishing channel (tables as CSV under ``tables/``, Word files,
        figures as SVG and 300-dpi PNG under ``figures/``); ``index.html``
        summarises each question (N, key estimate) and links its report; the
        channel's ledgers of all reports are audited together.
    notebooks : iterable of paths, optional
        Which notebooks to run (default: every ``NN_*.ipynb`` in ``notebooks_dir``).
    notebooks_dir : path-like, optional
        Default :data:`DEFAULT_NOTEBOOKS_DIR`.
    no_input : bool, default False
        Hide code cells in the HTML (kept for compatibility; see ``show_code``).
    show_code : bool, optional
        Show the code cells. Default: hidden in study reports (``parameters``
        holding ``"study"``), shown in tutorials unless ``no_input``.
    kernel_name : str, default "python3"
    gate : callable(notebook_name, html) -> None, True, False or None, default None
        Called on every produced HTML before anything is written; raises to
        stop the build. ``None`` or ``True``: the privacy gate
        (:func:`iop_research.reports.gate.make_privacy_gate`) built from the
        ``patient_id`` / ``episode_id`` values of ``data`` and the
        ``min_cell_count`` parameter (default 11). ``False``: no gate (for
        tests of the builder only; never for real data).
    progress : bool, default True
        Show a tqdm progress bar over notebooks (advances as each finishes).
    max_workers : int, optional
        Notebooks executed at once (default ``min(2, os.cpu_count())``; each
        runs in its own kernel process). ``1`` runs them one after another.
    start_timeout : int, default 180
        Seconds to wait for a kernel to start (a busy machine can be slow).

    Returns
    -------
    ReportOutcome
        ``fingerprints`` maps each notebook to :func:`notebook_fingerprints`
        (also written to ``fingerprints.json``); two builds with the same
        notebooks, data and parameters give the same fingerprints.

    Raises
    ------
    ReportError
        A notebook failed (names the notebook, the cell's position in the
        file, its first line and the exception) or could not be exported;
        nothing is written in that case. When several notebooks fail, the
        first in order is described and the others are named.
    PrivacyViolationError
        The gate refused a report (names the notebook, cell and rule);
        nothing is written.
    DataReadError
        The default gate could not read ``data``.

    See Also
    --------
    iop_research.reports.gate.make_privacy_gate : the default gate.
    notebook_fingerprints : what ``fingerprints.json`` holds.

    References
    ----------
    .. [1] papermill (parameterised notebook execution),
       https://papermill.readthedocs.io; nbconvert ``HTMLExporter`` (lab template).
    """
    import nbformat  # noqa: F401  (fail early with a clear ImportError)
    import papermill  # noqa: F401
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    parameters = dict(parameters or {})
    study_mode = "study" in parameters
    prepared_study = None
    if study_mode:
        from iop_research.reports.config import QUESTIONS, load_study
        from iop_research.reports.study import prepare_study

        config = load_study(settings=parameters["study"])
        if data is None and config.get("data.path") is not None:
            data = config.get("data.path")
        parameters["study"] = config.given_dict()
        t_prepare = time.perf_counter()
        prepared_study = prepare_study(config, data_path=data)
        stage_seconds = {"prepare_study": time.perf_counter() - t_prepare}
        nb_dir = Path(notebooks_dir) if notebooks_dir is not None else TEMPLATES_DIR
        if notebooks is None:
            notebooks = [nb_dir / f"{QUESTIONS[q]}.ipynb" for q in prepared_study.questions]
        else:
            notebooks = [p if Path(p).is_file() else nb_dir / f"{Path(p).stem}.ipynb" for p in notebooks]
        if show_code is None:
            show_code = False
        parameters.setdefault("min_cell_count", config.get("privacy.min_cell_count"))
    if show_code is not None:
        no_input = not show_code
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else (TEMPLATES_DIR if study_mode else DEFAULT_NOTEBOOKS_DIR)
    paths = [Path(p) for p in notebooks] if notebooks is not None else sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise ReportError(f"No notebooks found in {nb_dir} (expected files named NN_name.ipynb).")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ReportError(
            f"{len(missing)} notebook(s) do not exist: {', '.join(missing[:5])}. "
            "Pass paths of existing .ipynb files (relative to the current directory)."
        )
    dupes = sorted({p.stem for p in paths if sum(q.stem == p.stem for q in paths) > 1})
    if dupes:
        raise ReportError(f"Notebooks with the same name would overwrite each other's report: {', '.join(dupes)}. "
                          "Rename one of them.")
    if max_workers is None:
        max_workers = min(2, os.cpu_count() or 1)
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ReportError(f"max_workers must be a positive integer, got {max_workers!r}. Use 1 to run one at a time.")
    params = {"data_path": None if data is None else str(Path(data).resolve())}
    params.update(parameters)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # absolute: the kernels run in the notebooks' folder and write tables, figures and ledgers here
    stage = Path(tempfile.mkdtemp(prefix=".iop-report-", dir=out.parent.resolve()))
    kernel_params = dict(params)
    channel_key = None
    saved_key = None
    if study_mode:
        import secrets

        from iop_research.present.publish import PUBLISH_KEY_ENV

        # the kernels (children of this process) sign channel output with a key only this build knows
        from iop_research.reports.study import save_prepared

        kernel_params.pop("min_cell_count", None)  # the templates read it from the study settings
        kernel_params["out_dir"] = str(stage)
        try:
            t_save = time.perf_counter()
            kernel_params["prepared"] = save_prepared(prepared_study, stage / ".prepared.pkl")
            stage_seconds["save_prepared"] = time.perf_counter() - t_save
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise ReportError(f"Could not write the prepared study to the staging folder {stage}: {exc}. "
                              "Check free space and permissions beside the output folder.") from exc
        channel_key = secrets.token_bytes(32)
        saved_key = os.environ.get(PUBLISH_KEY_ENV)
        os.environ[PUBLISH_KEY_ENV] = channel_key.hex()
    futures: dict = {}
    quiet = _QuietPapermill()
    pm_loggers = [logging.getLogger(name) for name in ("papermill", "papermill.translators")]
    for lg in pm_loggers:
        lg.addFilter(quiet)
    # provenance (git, R) and the gate (reads the data) are prepared while the kernels run
    helpers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="iop-report-prep")
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(paths)), thread_name_prefix="iop-report")
    try:
        prov_kw = {}
        mapping = prepared_study.config.get("data.mapping") if study_mode else None
        if study_mode and data is None and (mapping is not None or prepared_study.config.get("data.omop") is not None):
            # the data are the extract as mapped, or an OMOP CDM read from its database, not a directory:
            # say so, and fingerprint what was analysed
            prov_kw = {"data_label": prepared_study.data_label + (f" ({Path(mapping).name})" if mapping else ""),
                       "fingerprint": tables_fingerprint(prepared_study.data)}
        prov_future = helpers.submit(provenance, data=data, parameters=params, **prov_kw)
        if (gate is None or gate is True) and study_mode:
            from iop_research.reports.gate import make_privacy_gate

            gate_future = helpers.submit(
                make_privacy_gate, prepared_study.data, min_cell_count=prepared_study.min_cell_count,
                min_cell_count_override=prepared_study.config.get("privacy.min_cell_count_override"))
        elif gate is None or gate is True:
            gate_future = helpers.submit(_default_gate, data, params.get("min_cell_count", 11))
        else:
            gate_future = helpers.submit(lambda: gate or None)
        futures = {
            pool.submit(_build_one, p, stage=stage, params=kernel_params, kernel_name=kernel_name, no_input=no_input,
                        prov_future=prov_future, gate_future=gate_future, start_timeout=start_timeout,
                        channel_only=study_mode, channel_key=channel_key): i
            for i, p in enumerate(paths)
        }
        built: dict[int, _Built] = {}
        failed: dict[int, BaseException] = {}
        with tqdm(total=len(paths), desc="notebooks", unit="nb", disable=not progress) as bar:
            for fut in as_completed(futures):
                i = futures[fut]
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    failed[i] = exc
                    for other in futures:  # stop what has not started; running kernels finish
                        other.cancel()
                    bar.set_postfix_str(f"{paths[i].stem} failed")
                else:
                    built[i] = fut.result()
                    bar.set_postfix_str(paths[i].stem)
                bar.update(1)
        if failed:
            first = min(failed)
            exc = failed[first]
            others = [paths[j].name for j in sorted(failed) if j != first]
            if others:
                msg = f"{exc} (Also failed: {', '.join(others)}.)"
                raise type(exc)(msg) if isinstance(exc, IopError) else ReportError(msg) from exc
            if isinstance(exc, IopError):
                raise exc
            raise ReportError(f"Building the report of {paths[first].name} failed: {exc}. No report was written.") from exc
        prov = prov_future.result()
        results = [built[i] for i in range(len(paths))]
        seconds = time.perf_counter() - t0
        entries = [(b.html_name, b.title, b.summary) for b in results]
        fingerprints = {b.name: dict(b.fingerprints) for b in results}
        record = dict(prov)
        for b in results:  # what each notebook ran with, without the build's private paths
            for key in ("out_dir", "prepared"):
                b.parameters.pop(key, None)
        if study_mode:
            t_finish = time.perf_counter()
            record["study"] = _finish_study(stage, prepared_study, results)
            stage_seconds["finish_study"] = time.perf_counter() - t_finish
            # where the time went: preparing the study once, pickling it for the kernels, the joint audit
            record["study"]["stage_seconds"] = {k: round(v, 1) for k, v in stage_seconds.items()}
            record["parameters"] = {k: v for k, v in params.items() if k != "min_cell_count"}
        record["notebooks"] = {
            b.name: {"report": b.html_name, "run_seconds": round(b.seconds, 1), "parameters": dict(b.parameters),
                     "tables_fingerprint": b.fingerprints["tables_fingerprint"],
                     "outputs_fingerprint": b.fingerprints["outputs_fingerprint"]}
            for b in results
        }
        record["run_seconds"] = round(seconds, 1)
        record["max_workers"] = max_workers
        shown = _public_provenance(prov)
        index_html = (_study_index_html(prepared_study, stage, results, _provenance_html(shown, seconds)) if study_mode
                      else _index_html(entries, _provenance_html(shown, seconds)))
        (stage / "index.html").write_text(index_html, encoding="utf-8")
        (stage / "provenance.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n",
                                               encoding="utf-8")
        (stage / "fingerprints.json").write_text(json.dumps(fingerprints, indent=2, sort_keys=True) + "\n",
                                                 encoding="utf-8")
        # move into place only now: a failure above leaves out_dir untouched
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for f in sorted(stage.iterdir()):
            target = out / f.name
            if f.is_dir() and target.is_dir():
                shutil.rmtree(target)
            os.replace(f, target)
            written.append(target)
        return ReportOutcome(
            index=out / "index.html",
            reports=tuple(out / b.html_name for b in results),
            provenance=record,
            seconds=seconds,
            fingerprints=fingerprints,
        )
    finally:
        for fut in futures:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        helpers.shutdown(wait=True, cancel_futures=True)
        for lg in pm_loggers:
            lg.removeFilter(quiet)
        shutil.rmtree(stage, ignore_errors=True)
        if study_mode:
            from iop_research.present.publish import PUBLISH_KEY_ENV

            if saved_key is None:
                os.environ.pop(PUBLISH_KEY_ENV, None)
            else:
                os.environ[PUBLISH_KEY_ENV] = saved_key


def _utc_now() -> str:  # pragma: no cover - used only for CLI messages
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
