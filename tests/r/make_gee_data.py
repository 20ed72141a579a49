"""Write the simulated patient-week urine-screen data that tests/r/gee.R reads (tests/golden/data/gee_uds.csv).

Run from the repository root: ``/work/main/.venv/bin/python tests/r/make_gee_data.py``.

gee_uds.csv
    300 patients, each scheduled for 4-12 weekly urine screens (unequal cluster sizes), about
    15% of the scheduled weeks missed (the row is absent, so ``week`` has gaps), a patient-level
    random intercept (so screens of a patient are correlated) and a known treatment effect on
    the log odds of a positive screen: logit P(positive) = -0.4 + TRUE_LOG_OR * mat - 0.08 * week
    + 0.3 * female + 0.02 * (age - 35) + patient effect (normal, sd 1); ``site`` is a three-level
    categorical with no effect. ``craving`` is a continuous weekly score (gaussian model).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"
TRUE_LOG_OR = -0.7


def make_uds(n_patients: int = 300, seed: int = 20261207, true_log_or: float = TRUE_LOG_OR,
             max_weeks: int = 12, miss_prob: float = 0.15) -> pd.DataFrame:
    """One row per attended patient-week (missed weeks absent)."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, n_patients + 1):
        mat = int(rng.random() < 0.5)
        female = int(rng.random() < 0.4)
        age = int(rng.integers(19, 61))
        site = ["north", "south", "west"][int(rng.integers(0, 3))]
        b = rng.normal(0.0, 1.0)
        c = rng.normal(0.0, 1.5)
        n_weeks = int(rng.integers(4, max_weeks + 1))
        for week in range(1, n_weeks + 1):
            if rng.random() < miss_prob:
                continue
            eta = -0.4 + true_log_or * mat - 0.08 * week + 0.3 * female + 0.02 * (age - 35) + b
            positive = int(rng.random() < 1.0 / (1.0 + np.exp(-eta)))
            craving = round(5.0 - 0.8 * mat - 0.1 * week + 0.03 * (age - 35) + c + rng.normal(0.0, 1.0), 3)
            rows.append((pid, week, mat, female, age, site, positive, craving))
    return pd.DataFrame(rows, columns=["id", "week", "mat", "female", "age", "site", "positive", "craving"])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_uds().to_csv(OUT / "gee_uds.csv", index=False)


if __name__ == "__main__":
    main()
