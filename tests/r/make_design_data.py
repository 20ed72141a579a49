"""Write tests/golden/data/design.csv, read by tests/r/design.R (R model.matrix) and tests/test_design.py.

Run from the repository root: ``.venv/bin/python tests/r/make_design_data.py``.

60 synthetic rows (seed 20261207): ``age`` (numeric), ``sex`` (f/m), ``psych`` (True/False),
``program`` (Site A/B/C), ``severity`` (low/mid/high, an ordered scale whose first level is
not the first sorted one), ``site`` (numeric codes 1-3).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data" / "design.csv"


def make(seed: int = 20261207, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 70, n),
        "sex": rng.choice(["f", "m"], n),
        "psych": rng.random(n) < 0.4,
        "program": rng.choice(["Site A", "Site B", "Site C"], n),
        "severity": rng.choice(["low", "mid", "high"], n),
        "site": rng.integers(1, 4, n),
    })


if __name__ == "__main__":
    make().to_csv(OUT, index=False)
    print(f"wrote {OUT}")
