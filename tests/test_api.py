"""The public API: every promised name resolves, importing the package is cheap."""
from __future__ import annotations

import subprocess
import sys

import iop_research


def test_every_public_name_resolves():
    missing = [name for name in iop_research.__all__ if getattr(iop_research, name, None) is None]
    assert missing == []
    assert "fit_cox" in dir(iop_research)


def test_unknown_attribute_raises_attribute_error():
    try:
        iop_research.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_starts_no_engine_and_no_pyplot():
    code = ("import sys, iop_research; "
            "print(any(m in sys.modules for m in ('duckdb', 'pyspark', 'matplotlib.pyplot', 'lifelines')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
