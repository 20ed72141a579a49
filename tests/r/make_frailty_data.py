"""Write the simulated clustered time-to-relapse data that tests/r/frailty.R reads
(tests/golden/data/frailty_programmes.csv).

Run from the repository root: ``/work/main/.venv/bin/python tests/r/make_frailty_data.py``.

frailty_programmes.csv
    40 programmes (``program`` P01..P40) of 8-30 patients each; a shared gamma frailty per programme
    (mean 1, variance TRUE_THETA) multiplies a Weibull hazard with covariates ``mat`` (0/1, log hazard
    ratio TRUE_LOG_HR), ``age`` (per year 0.015) and ``sex`` (f/m, 0.2); administrative censoring at day
    365 and random loss to follow-up; times in whole days, so there are tied event times (Efron vs Breslow
    differ). ``region`` (4 levels, a coarsening of the programme) gives a clustering with few groups
    (R's non-sparse frailty computation).

frailty_recurrent.csv
    Repeated relapses: 250 patients followed for up to a year after discharge, relapses from a Poisson process
    whose rate is multiplied by a patient gamma frailty (variance TRUE_THETA); counting-process rows
    ``(start, stop]`` between relapses (``relapse`` = 1 at a relapse, 0 for the censored last row), whole
    days, with ``mat`` and ``age`` covariates.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"
TRUE_THETA = 0.5
TRUE_LOG_HR = -0.5


def make_programmes(n_programs: int = 40, seed: int = 20261207, theta: float = TRUE_THETA,
                    log_hr: float = TRUE_LOG_HR) -> pd.DataFrame:
    """One row per patient: days, relapse (1 = relapse, 0 = censored), covariates, programme, region."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_programs):
        z = rng.gamma(1.0 / theta, theta) if theta > 0 else 1.0
        region = "NESW"[k % 4]
        for _ in range(int(rng.integers(8, 31))):
            mat = int(rng.random() < 0.5)
            age = int(rng.integers(18, 65))
            sex = "m" if rng.random() < 0.6 else "f"
            lp = log_hr * mat + 0.015 * (age - 40) + 0.2 * (sex == "m")
            # Weibull shape 0.8, scale so that about half relapse within a year
            t = (rng.exponential() / (0.012 * z * np.exp(lp))) ** (1 / 0.8)
            c = min(365.0, rng.uniform(30, 900))
            days = max(1, int(np.ceil(min(t, c))))
            rows.append((f"P{k + 1:02d}", region, mat, age, sex, days, int(t <= c)))
    return pd.DataFrame(rows, columns=["program", "region", "mat", "age", "sex", "days", "relapse"])


def make_recurrent(n_patients: int = 250, seed: int = 20261208, theta: float = TRUE_THETA) -> pd.DataFrame:
    """Counting-process rows (start, stop] of repeated relapses per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, n_patients + 1):
        z = rng.gamma(1.0 / theta, theta)
        mat = int(rng.random() < 0.5)
        age = int(rng.integers(18, 65))
        rate = 0.004 * z * np.exp(-0.6 * mat + 0.01 * (age - 40))
        end = int(rng.integers(90, 366))
        start, t = 0, 0.0
        while True:
            t += rng.exponential(1.0 / rate)
            day = int(np.ceil(t))
            if day >= end:
                rows.append((pid, mat, age, start, end, 0))
                break
            if day <= start:  # two relapses on one day count once
                continue
            rows.append((pid, mat, age, start, day, 1))
            start = day
    return pd.DataFrame(rows, columns=["id", "mat", "age", "start", "stop", "relapse"])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_programmes().to_csv(OUT / "frailty_programmes.csv", index=False)
    make_recurrent().to_csv(OUT / "frailty_recurrent.csv", index=False)


if __name__ == "__main__":
    main()
