"""Reproducible HTML reports from the numbered notebooks.

``build_reports`` executes every notebook with papermill (parameters injected
into the cell tagged ``parameters``), exports each to self-contained HTML with
nbconvert (figures embedded as data URIs), prepends a provenance block and a
table of contents, and writes an ``index.html`` linking them.

Writes are atomic: everything is built in a staging directory and moved into
place only when every notebook has run; a failure raises :class:`ReportError`
naming the notebook and the cell, and leaves the output directory untouched.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .exceptions import ReportError

__all__ = ["build_reports", "data_fingerprint", "provenance", "DEFAULT_NOTEBOOKS_DIR", "ReportOutcome"]

#: Notebooks shipped with the source tree (``notebooks/`` beside the package).
DEFAULT_NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@dataclass(frozen=True)
class ReportOutcome:
    """What :func:`build_reports` wrote."""

    index: Path
    reports: tuple[Path, ...]
    provenance: Mapping[str, Any]
    seconds: float


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
    from .datasets import demo_path  # local import: keeps import light

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


def provenance(*, data: str | os.PathLike | None, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance record shown at the top of every report.

    Contains the package version, git commit, data fingerprint, parameters and
    the versions of Python, pandas, lifelines, statsmodels and R/survival.
    """
    import lifelines
    import pandas
    import statsmodels

    from . import __version__

    return {
        "iop_research": __version__,
        "git_commit": _git_commit(Path(__file__).resolve().parents[1]),
        "data": "bundled demo cohort (data/demo)" if data is None else str(data),
        "data_fingerprint": data_fingerprint(data),
        "parameters": dict(parameters),
        "python": platform.python_version(),
        "pandas": pandas.__version__,
        "lifelines": lifelines.__version__,
        "statsmodels": statsmodels.__version__,
        "r": _r_versions(),
    }


def _provenance_html(prov: Mapping[str, Any], seconds: float | None) -> str:
    rows = []
    for k, v in prov.items():
        val = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
        rows.append(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td><code>{html.escape(val)}</code></td></tr>")
    if seconds is not None:
        rows.append(f"<tr><th style='text-align:left'>run_time</th><td>{seconds:.1f} s</td></tr>")
    return (
        "<details class='iop-provenance' open><summary><b>Provenance</b></summary>"
        f"<table>{''.join(rows)}</table></details>"
    )


_HEADING = re.compile(r"^(#{1,3})\s+(.*)$", re.M)


def _toc_markdown(nb) -> str:
    items = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for m in _HEADING.finditer(cell.source):
            level, title = len(m.group(1)), m.group(2).strip()
            anchor = re.sub(r"[^\w\- ]", "", title).strip().replace(" ", "-")
            items.append(f"{'  ' * (level - 1)}- [{title}](#{anchor})")
    return "**Contents**\n\n" + "\n".join(items) if items else ""


def _cell_of_error(nb) -> tuple[int | None, str]:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return i, f"{out.get('ename')}: {out.get('evalue')} (cell starts: {first_line[:80]!r})"
    return None, "unknown error"


def _export_html(nb, *, no_input: bool, title: str) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = no_input
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
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
                return title, summary[:160]
    return fallback, ""


def build_reports(
    *,
    out_dir: str | os.PathLike = "reports",
    data: str | os.PathLike | None = None,
    parameters: Mapping[str, Any] | None = None,
    notebooks: Iterable[str | os.PathLike] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    no_input: bool = False,
    kernel_name: str = "python3",
    gate: Callable[[str, str], None] | None = None,
    progress: bool = True,
) -> ReportOutcome:
    """Execute the notebooks and write self-contained HTML reports.

    Parameters
    ----------
    out_dir : path-like, default "reports"
        Where ``index.html`` and one ``<notebook>.html`` per notebook are written.
    data : path-like, optional
        Data directory passed to each notebook as parameter ``data_path``
        (``None``: the bundled demo cohort).
    parameters : mapping, optional
        Further papermill parameters (e.g. ``min_cell_count``, cohort or
        outcome settings); notebooks ignore names they do not declare.
    notebooks : iterable of paths, optional
        Which notebooks to run (default: every ``NN_*.ipynb`` in ``notebooks_dir``).
    notebooks_dir : path-like, optional
        Default :data:`DEFAULT_NOTEBOOKS_DIR`.
    no_input : bool, default False
        Hide code cells in the HTML.
    kernel_name : str, default "python3"
    gate : callable(notebook_name, html) -> None, optional
        Called on every produced HTML before anything is written; raise to stop
        the build (the privacy gate plugs in here).
    progress : bool, default True
        Show a tqdm progress bar over notebooks.

    Returns
    -------
    ReportOutcome

    Raises
    ------
    ReportError
        A notebook failed (names the notebook and the cell) or the gate refused
        a report; nothing is written in that case.
    """
    import nbformat
    import papermill as pm
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else DEFAULT_NOTEBOOKS_DIR
    paths = [Path(p) for p in notebooks] if notebooks is not None else sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise ReportError(f"No notebooks found in {nb_dir} (expected files named NN_name.ipynb).")
    params = {"data_path": None if data is None else str(Path(data).resolve())}
    params.update(dict(parameters or {}))
    prov = provenance(data=data, parameters=params)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".iop-report-", dir=out.parent))
    try:
        entries = []
        bar = tqdm(paths, desc="notebooks", unit="nb", disable=not progress)
        for path in bar:
            bar.set_postfix_str(path.stem)
            executed = stage / path.name
            try:
                pm.execute_notebook(
                    str(path), str(executed), parameters=params, cwd=str(path.parent),
                    kernel_name=kernel_name, progress_bar=False, log_output=False, report_mode=no_input,
                )
            except pm.PapermillExecutionError as exc:
                raise ReportError(
                    f"Notebook {path.name} failed in cell {exc.exec_count} ({exc.ename}: {exc.evalue}). "
                    "No report was written. Fix the cell (run the notebook in JupyterLab to see the traceback) "
                    "and build again."
                ) from exc
            except Exception as exc:  # kernel died, bad parameters, unreadable notebook
                nb_partial = nbformat.read(executed, as_version=4) if executed.exists() else None
                where = _cell_of_error(nb_partial) if nb_partial is not None else (None, str(exc))
                raise ReportError(
                    f"Notebook {path.name} could not be executed (cell {where[0]}: {where[1]}). "
                    "No report was written."
                ) from exc
            nb = nbformat.read(executed, as_version=4)
            title, summary = _title_and_summary(nb, path.stem)
            toc = _toc_markdown(nb)
            head = [nbformat.v4.new_markdown_cell(_provenance_html(prov, None))]
            if toc:
                head.append(nbformat.v4.new_markdown_cell(toc))
            nb.cells = head + nb.cells
            body = _export_html(nb, no_input=no_input, title=title)
            if gate is not None:
                gate(path.name, body)
            html_path = stage / f"{path.stem}.html"
            html_path.write_text(body, encoding="utf-8")
            executed.unlink()
            entries.append((html_path.name, title, summary))
        seconds = time.perf_counter() - t0
        (stage / "index.html").write_text(_index_html(entries, _provenance_html(prov, seconds)), encoding="utf-8")
        (stage / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        # move into place only now: a failure above leaves out_dir untouched
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for f in sorted(stage.iterdir()):
            os.replace(f, out / f.name)
            written.append(out / f.name)
        return ReportOutcome(
            index=out / "index.html",
            reports=tuple(p for p in written if p.suffix == ".html" and p.name != "index.html"),
            provenance=prov,
            seconds=seconds,
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _utc_now() -> str:  # pragma: no cover - used only for CLI messages
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
