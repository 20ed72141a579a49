"""Write the simulated patient-week data that tests/r/glmm_slopes.R reads (tests/golden/data/glmm_slopes.csv).

Run from the repository root: ``/work/main/.venv/bin/python tests/r/make_glmm_slopes_data.py``.

glmm_slopes.csv
    240 patients followed 8 weeks (``week`` 0..7; about 10% of weeks dropped at random), with ``mat`` (0/1),
    ``female`` (0/1), ``age`` (decades, centred); a correlated random intercept and week slope per patient
    (intercept sd 1.0, slope sd 0.25, correlation -0.4 on the log odds; sd 2.0 and 0.5, correlation 0.3 for
    the gaussian ``craving``), ``positive`` (0/1, logit), ``craving`` (gaussian, residual sd 1.5) and
    ``drinks`` (Poisson, log link, the binomial random effects scaled by 0.5).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"


def make_slopes(seed: int = 2026, n_patients: int = 240, n_weeks: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(1, n_patients + 1), n_weeks)
    week = np.tile(np.arange(n_weeks), n_patients)
    mat = rng.binomial(1, 0.5, n_patients)
    female = rng.binomial(1, 0.4, n_patients)
    age = np.round(rng.normal(0.0, 1.0, n_patients), 2)

    def draw(sd0, sd1, rho):
        cov = np.array([[sd0**2, rho * sd0 * sd1], [rho * sd0 * sd1, sd1**2]])
        return rng.multivariate_normal(np.zeros(2), cov, n_patients)

    b = draw(1.0, 0.25, -0.4)
    c = draw(2.0, 0.5, 0.3)
    i = pid - 1
    eta = 0.3 - 0.8 * mat[i] + 0.2 * female[i] + 0.15 * age[i] - 0.12 * week + b[i, 0] + b[i, 1] * week
    positive = (rng.random(len(pid)) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    craving = 5.0 - 1.0 * mat[i] + 0.3 * age[i] - 0.2 * week + c[i, 0] + c[i, 1] * week + rng.normal(0, 1.5, len(pid))
    lam = np.exp(0.5 - 0.4 * mat[i] + 0.1 * age[i] - 0.05 * week + 0.5 * (b[i, 0] + b[i, 1] * week))
    drinks = rng.poisson(lam)
    d = pd.DataFrame({"id": pid, "week": week, "mat": mat[i], "female": female[i], "age": age[i],
                      "positive": positive, "craving": np.round(craving, 3), "drinks": drinks})
    keep = rng.random(len(d)) > 0.1
    return d[keep].reset_index(drop=True)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    make_slopes().to_csv(OUT / "glmm_slopes.csv", index=False)
