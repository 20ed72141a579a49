"""Write tests/golden/data/adjusted_if.csv, the cohort that tests/r/adjusted_if.R reads.

Run from the repository root: ``.venv/bin/python tests/r/make_adjusted_data.py``.

adjusted_if.csv
    160 patients: age (z-score), severe (0/1), site (3 levels, categorical), MAT at baseline
    depending on age, severity and site; Weibull proportional-hazards time to relapse in days,
    censored at Uniform(60, 300) days. Times are kept to 3 decimals, so there are no ties
    (the analytic influence functions use the Breslow form, which equals Efron without ties).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"


def make_cohort(seed: int = 20261207, n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(size=n), 3)
    severe = rng.binomial(1, 0.4, n)
    site = rng.choice(["north", "south", "west"], n)
    site_eff = pd.Series(site).map({"north": 0.0, "south": 0.4, "west": -0.3}).to_numpy()
    mat = rng.binomial(1, 1 / (1 + np.exp(-(-0.3 + 0.8 * age + 0.6 * severe + site_eff))))
    lp = -0.5 * mat + 0.4 * age + 0.7 * severe + 0.5 * site_eff
    t = 150.0 * (rng.exponential(size=n) / np.exp(lp)) ** (1 / 0.8)
    c = rng.uniform(60, 300, n)
    days = np.round(np.minimum(t, c), 3)
    return pd.DataFrame({"age": age, "severe": severe, "site": site, "mat": mat, "days": days,
                         "relapse": (t <= c).astype(int)})


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    d = make_cohort()
    assert not d["days"].duplicated().any()
    d.to_csv(OUT / "adjusted_if.csv", index=False)
    print(f"wrote {OUT / 'adjusted_if.csv'}: {len(d)} rows, {int(d['relapse'].sum())} events, "
          f"{int(d['mat'].sum())} on MAT")
