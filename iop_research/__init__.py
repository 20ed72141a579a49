"""iop-research: outcomes research for intensive outpatient addiction treatment (IOP).

Only names listed in ``__all__`` are promised to stay.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("iop-research")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
