"""Write the simulated competing-risks data sets that tests/r/cr_sim.R reads.

Run from the repository root: ``.venv/bin/python tests/r/make_cr_data.py``.
Writes (committed, small):

tests/golden/data/cr_sim.csv
    IOP retention, 300 episodes at three programmes. ``days`` is the whole-day length of
    stay (ties are common), ``status`` 0 = still enrolled at the cut-off (censored),
    1 = dropped out, 2 = completed, 3 = transferred (rare cause, about 15 events).
    Covariates ``age_c`` (age minus 35, years), ``female`` (0/1), ``mat`` (0/1), ``program``
    (A/B/C).
tests/golden/data/cr_edge.csv
    40 episodes in two arms: cause 2 never occurs in arm ``b``; causes 1 and 2 and
    censoring tie at the same days.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"


def make_sim(seed: int = 20261127) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 300
    program = rng.choice(["A", "B", "C"], n, p=[0.4, 0.35, 0.25])
    female = rng.integers(0, 2, n)
    mat = rng.binomial(1, 0.45, n)
    age_c = np.round(rng.normal(0, 9, n), 1)
    lin_drop = -0.5 * mat + 0.02 * age_c + np.where(program == "B", 0.4, 0.0)
    t_drop = rng.weibull(0.9, n) * 70 * np.exp(-lin_drop / 0.9)
    t_comp = rng.normal(55, 12, n) * np.exp(0.1 * female) + np.where(program == "C", 10, 0)
    t_trans = rng.exponential(900, n)
    t_cens = rng.uniform(20, 120, n)
    times = np.column_stack([t_cens, t_drop, t_comp, t_trans])
    status = times.argmin(axis=1)
    days = np.maximum(1, np.ceil(times.min(axis=1))).astype(int)
    return pd.DataFrame(
        {"id": np.arange(1, n + 1), "days": days, "status": status, "program": program,
         "age_c": age_c, "female": female, "mat": mat}
    )


def make_edge() -> pd.DataFrame:
    days_a = [3, 3, 3, 5, 5, 7, 8, 8, 8, 10, 12, 12, 14, 15, 15, 17, 20, 20, 22, 25]
    stat_a = [1, 2, 0, 1, 2, 1, 2, 1, 0, 2, 1, 1, 0, 2, 1, 0, 1, 2, 0, 1]
    days_b = [2, 3, 3, 4, 6, 6, 8, 8, 9, 11, 12, 13, 13, 16, 18, 19, 21, 24, 26, 30]
    stat_b = [1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 0]
    return pd.DataFrame(
        {"id": np.arange(1, 41), "days": days_a + days_b, "status": stat_a + stat_b,
         "arm": ["a"] * 20 + ["b"] * 20}
    )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_sim().to_csv(OUT / "cr_sim.csv", index=False)
    make_edge().to_csv(OUT / "cr_edge.csv", index=False)


if __name__ == "__main__":
    main()
