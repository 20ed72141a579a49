"""Simulated programmes for the programme-comparison tests: sizes from 15 to 400 patients, case mix (age,
severity) that differs by programme, and programme effects drawn from N(0, sd^2) on the log-odds of completion."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit


def simulate_programmes(rng: np.random.Generator, *, sizes=(15, 20, 30, 40, 60, 80, 120, 150, 200, 250, 300, 400),
                        sd: float = 0.4) -> tuple[pd.DataFrame, pd.Series]:
    effects = pd.Series(rng.normal(0.0, sd, len(sizes)), index=[f"P{k:02d}" for k in range(len(sizes))])
    rows = []
    for (name, u), size in zip(effects.items(), sizes):
        shift = rng.normal(0.0, 0.5)  # programmes differ in case mix
        age = rng.normal(35.0 + 4.0 * shift, 9.0, size).round(0)
        severity = rng.binomial(1, expit(-0.5 + shift), size)
        p = expit(0.3 - 0.03 * (age - 35.0) - 0.8 * severity + u)
        rows.append(pd.DataFrame({"programme": name, "age": age, "severe": severity, "completed": rng.binomial(1, p),
                                  "p_true": p}))
    return pd.concat(rows, ignore_index=True), effects
