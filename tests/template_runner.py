"""Execute a study-report template in process (no kernel), shared by the report tests."""
from __future__ import annotations

from pathlib import Path

import nbformat

from iop_research.reports.build import TEMPLATES_DIR


def execute_template(name: str, study: dict, data_path, out_dir: Path | None = None):
    """Run template ``name`` with the study settings ``study`` on ``data_path`` (None: the demo), publishing
    into ``out_dir``; return its :class:`~iop_research.present.publish.Publisher` (``.published``)."""
    nb = nbformat.read(TEMPLATES_DIR / f"{name}.ipynb", as_version=4)
    ns: dict = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exec(compile(cell.source, f"{name}.ipynb", "exec"), ns)  # noqa: S102 - our own template
        if "parameters" in cell.metadata.get("tags", []):
            ns.update(study=study, data_path=None if data_path is None else str(data_path),
                      out_dir=None if out_dir is None else str(out_dir))
    import matplotlib.pyplot as plt

    plt.close("all")
    return ns["pub"]
