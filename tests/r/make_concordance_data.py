"""Write tests/golden/data/concordance_sim.csv: simulated follow-up with tied times and risks.

Usage (repository root): python tests/r/make_concordance_data.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(20261207)
n = 400
x = rng.normal(size=n)
grp = rng.integers(0, 3, n)
t_event = rng.exponential(120 * np.exp(-0.7 * x))
t_cens = rng.uniform(20, 400, n)
days = np.ceil(np.minimum(t_event, t_cens))
df = pd.DataFrame(
    {
        "days": days.astype(int),
        "event": (t_event <= t_cens).astype(int),
        "risk": np.round(x + rng.normal(scale=0.8, size=n), 1),  # rounded: tied risks
        "site": np.array(["A", "B", "C"])[grp],
        "w": 0.5 + rng.integers(0, 4, n) / 4,
        "patient": rng.integers(0, 150, n),
    }
)
out = Path(__file__).resolve().parents[1] / "golden" / "data" / "concordance_sim.csv"
df.to_csv(out, index=False)
print(out, len(df), int(df["event"].sum()))
