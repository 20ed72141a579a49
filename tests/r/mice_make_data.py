"""Write the data set that tests/r/mice_cox.R imputes (tests/golden/data/mice_cox.csv).

Run from the repository root: ``.venv/bin/python tests/r/mice_make_data.py``.

mice_cox.csv
    300 simulated IOP episodes (the size of a small clinic extract): follow-up ``time``
    (days, whole days, administrative censoring at 365 plus random loss), ``event``
    (relapse), complete covariates ``age`` and ``mat`` (0/1), and three covariates missing at
    random (the probability of missingness depends on the observed age, MAT and event):
    ``severity`` (numeric 0-10, ~25% missing), ``housing`` (stable/unstable/homeless, ~20%),
    ``employed`` (yes/no, ~15%). True log hazard ratios: age 0.02/year, severity 0.15,
    housing unstable 0.3 and homeless 0.6 (vs stable), employed -0.4, mat -0.5.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"


def make_mice_cox(n: int = 300, seed: int = 20261207) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(38, 11, n).clip(18, 75))
    mat = (rng.random(n) < 0.4).astype(int)
    u = rng.random(n)
    housing = np.where(u < 0.6, "stable", np.where(u < 0.85, "unstable", "homeless"))
    h_eff = np.select([housing == "unstable", housing == "homeless"], [0.3, 0.6], 0.0)
    severity = np.round((3 + 0.04 * (age - 38) + 1.5 * (housing != "stable") + rng.normal(0, 1.8, n)).clip(0, 10), 1)
    p_emp = 1 / (1 + np.exp(-(0.5 - 0.25 * (severity - 4) - 0.8 * (housing == "homeless"))))
    employed = np.where(rng.random(n) < p_emp, "yes", "no")
    lp = 0.02 * (age - 38) + 0.15 * (severity - 4) + h_eff - 0.4 * (employed == "yes") - 0.5 * mat
    # log-logistic-like early hazard: Weibull shape 0.7, median ~200 days at lp = 0
    t_event = (rng.exponential(1, n) / np.exp(lp)) ** (1 / 0.7) * 260
    t_cens = np.minimum(rng.uniform(60, 600, n), 365)
    time = np.ceil(np.minimum(t_event, t_cens)).astype(int)
    event = (t_event <= t_cens).astype(int)
    df = pd.DataFrame({"id": np.arange(1, n + 1), "time": time, "event": event, "age": age.astype(int),
                       "mat": mat, "severity": severity, "housing": housing, "employed": employed})
    # missing at random given observed age, mat and event
    def logistic(x):
        return 1 / (1 + np.exp(-x))
    miss_sev = rng.random(n) < logistic(-1.3 + 0.03 * (age - 38) + 0.6 * event)
    miss_hou = rng.random(n) < logistic(-1.6 + 0.5 * mat + 0.4 * event)
    miss_emp = rng.random(n) < logistic(-1.9 - 0.03 * (age - 38) + 0.5 * event)
    df["severity"] = df["severity"].mask(miss_sev)
    df["housing"] = df["housing"].mask(miss_hou)
    df["employed"] = df["employed"].mask(miss_emp)
    return df


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    make_mice_cox().to_csv(OUT / "mice_cox.csv", index=False)
