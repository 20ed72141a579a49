"""Bundled and public datasets.

The demo cohort
---------------
``data/demo/`` in the source tree holds a simulated cohort made by
``iop-research simulate`` with :data:`DEMO_SEED` and :data:`DEMO_N_PATIENTS`
(see ``data/demo/README.md``). :func:`load_demo` reads it from any working
directory; where the package is installed without its source tree, the same
cohort is regenerated deterministically into a user cache.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["load_demo", "demo_truth", "demo_path", "DEMO_SEED", "DEMO_N_PATIENTS", "DEMO_FORMAT"]

#: Seed of the committed demo cohort.
DEMO_SEED = 20261127
#: Number of patients in the committed demo cohort.
DEMO_N_PATIENTS = 3000
#: File format of the committed demo cohort (deterministic gzip-compressed CSV).
DEMO_FORMAT = "csv.gz"

_SOURCE_DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def _cache_dir() -> Path:
    base = os.environ.get("IOP_RESEARCH_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iop-research"


def demo_path() -> Path:
    """Directory of the demo cohort: the source tree's ``data/demo`` or the user cache."""
    if (_SOURCE_DEMO / f"patients.{DEMO_FORMAT}").exists():
        return _SOURCE_DEMO
    return _cache_dir() / f"demo-{DEMO_SEED}-{DEMO_N_PATIENTS}"


def load_demo(*, validate: bool = True):
    """Load the demo cohort (simulated; no real patient) as a validated :class:`IOPData`.

    Parameters
    ----------
    validate : bool, default True
        Validate against the data contract on load.

    Returns
    -------
    IOPData
        The six tables (``truth`` is None; :func:`demo_truth` gives the
        simulator's truth for the demo cohort).

    Examples
    --------
    >>> from iop_research import load_demo
    >>> demo = load_demo()
    >>> sorted(demo.tables())[:3]
    ['admissions', 'events', 'medications']
    """
    from .io import read_data

    path = demo_path()
    if not (path / f"patients.{DEMO_FORMAT}").exists():
        from .synth import simulate_cohort

        data = simulate_cohort(DEMO_N_PATIENTS, seed=DEMO_SEED)
        data.write(path, format=DEMO_FORMAT)
    return read_data(path, validate=validate)


def demo_truth():
    """The simulator's ``truth`` for the demo cohort (re-simulated from the recorded seed).

    Returns
    -------
    object
        ``simulate_cohort(DEMO_N_PATIENTS, seed=DEMO_SEED).truth``.
    """
    from .synth import simulate_cohort

    return simulate_cohort(DEMO_N_PATIENTS, seed=DEMO_SEED, progress=False).truth
