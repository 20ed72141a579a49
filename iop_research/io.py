"""The IOPData container and reading/writing of the canonical tables.

``IOPData`` holds the six canonical tables of the data contract
(:mod:`iop_research.schema`) as pandas DataFrames.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .schema import TABLES

__all__ = ["IOPData"]


@dataclass
class IOPData:
    """The canonical IOP tables of one study.

    Attributes
    ----------
    patients, admissions, sessions, medications, events, observation : pandas.DataFrame
        The tables of the data contract (see ``data/README.md``).
    truth : dict or None
        On simulated data, the simulator's parameters and each patient's latent
        times (see :func:`iop_research.synth.simulate_cohort`); ``None`` otherwise.
    """

    patients: pd.DataFrame
    admissions: pd.DataFrame
    sessions: pd.DataFrame
    medications: pd.DataFrame
    events: pd.DataFrame
    observation: pd.DataFrame
    truth: Any = field(default=None, repr=False, compare=False)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The six tables by name, in contract order."""
        return {name: getattr(self, name) for name in TABLES}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={len(v):,}" for k, v in self.tables().items())
        return f"IOPData({counts}{', simulated' if self.truth is not None else ''})"

