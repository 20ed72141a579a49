"""Write the simulated data sets that tests/r/cox_sim.R reads (tests/golden/data/cox_*.csv).

Run from the repository root: ``.venv/bin/python tests/r/make_cox_data.py``.

cox_recurrent.csv
    Andersen-Gill data: 250 patients followed 60-400 days, recurrent relapses with a
    patient frailty (so the cluster-robust variance differs from the naive one), a
    MAT switch-on day splitting follow-up into (start, stop] rows, whole-day times (ties).
cox_edge.csv
    Right-censored data with tied event and censoring times, three strata of which one
    ("C") has no events, and integer case weights including zeros.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"


def make_recurrent(seed: int = 20261127) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, 251):
        x1 = int(rng.integers(0, 2))
        x2 = round(float(rng.normal()), 3)
        grp = ["a", "b", "c"][int(rng.integers(0, 3))]
        frail = rng.gamma(2.0, 0.5)
        fu = int(rng.integers(60, 401))
        mat_day = int(rng.integers(1, fu)) if rng.random() < 0.6 else None
        base = 0.004 * frail * np.exp(0.5 * x1 - 0.3 * x2 + {"a": 0.0, "b": 0.4, "c": -0.2}[grp])
        # event days on a daily grid (ties across patients)
        t = 0
        events = []
        while True:
            mat_now = mat_day is not None and t >= mat_day
            rate = base * (np.exp(-0.6) if mat_now else 1.0)
            t = t + max(1, int(np.ceil(rng.exponential(1 / rate))))
            if t > fu:
                break
            events.append(t)
        cuts = sorted(set(events + ([mat_day] if mat_day else []) + [fu]))
        start = 0
        for c in cuts:
            if c <= start:
                continue
            mat = int(mat_day is not None and start >= mat_day)
            rows.append((pid, start, c, int(c in events), x1, x2, grp, mat))
            start = c
    return pd.DataFrame(rows, columns=["id", "start", "stop", "event", "x1", "x2", "grp", "mat"])


def make_edge(seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 90
    stratum = np.repeat(["A", "B", "C"], 30)
    x = rng.normal(size=n).round(2)
    z = rng.integers(0, 2, n)
    time = rng.integers(1, 9, n)  # few distinct times: heavy ties
    event = (rng.random(n) < 0.6).astype(int)
    event[stratum == "C"] = 0  # a stratum without events
    w = rng.integers(0, 4, n)  # zero weights included
    w[:3] = [1, 2, 3]
    return pd.DataFrame({"time": time, "event": event, "x": x, "z": z, "stratum": stratum, "w": w})


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_recurrent().to_csv(OUT / "cox_recurrent.csv", index=False)
    make_edge().to_csv(OUT / "cox_edge.csv", index=False)


if __name__ == "__main__":
    main()
