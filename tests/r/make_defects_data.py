"""Write the data sets that tests/r/defects.R reads (tests/golden/data/defects_*.csv).

Issue 11, point 8: estimator defects that a holdout comparison with R found. Run from the
repository root: ``.venv/bin/python tests/r/make_defects_data.py``.

defects_right.csv
    120 subjects, right-censored whole-day times (ties), three numeric covariates, a
    categorical ``grp`` (a/b/c), a fractional case weight ``wf`` (an IPT-like weight), a
    competing-risks status ``cr`` (0 censored, 1 relapse, 2 other), and cluster ids with 2
    (``cl2``, fewer clusters than coefficients) and 3 (``cl3``, as many as coefficients) levels.
defects_counting.csv
    ``(start, stop]`` rows: 150 subjects split at a treatment switch day, whole-day times,
    two strata, a fractional weight ``wf``, a continuous covariate ``x`` (many distinct
    linear predictors, for the blocked concordance path) and cluster ids ``id`` and ``cl2``
    (2 clusters).
defects_censored.csv
    Four rows, every one censored (log-rank with no events).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"


def make_right(seed: int = 20261207) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 120
    x1 = rng.integers(0, 2, n)
    x2 = rng.normal(size=n).round(2)
    x3 = rng.integers(18, 60, n)
    grp = rng.choice(["a", "b", "c"], n)
    lin = 0.6 * x1 - 0.4 * x2 + 0.02 * (x3 - 40) + np.where(grp == "b", 0.5, np.where(grp == "c", -0.3, 0.0))
    t = np.ceil(rng.exponential(60 * np.exp(-lin)))
    c = rng.integers(20, 200, n)
    time = np.minimum(t, c)
    event = (t <= c).astype(int)
    cause = np.where(event == 1, np.where(rng.random(n) < 0.7, 1, 2), 0)
    return pd.DataFrame(
        {
            "time": time,
            "event": event,
            "cr": cause,
            "x1": x1,
            "x2": x2,
            "x3": x3,
            "grp": grp,
            "wf": (0.4 + rng.random(n) * 2).round(3),
            "cl2": rng.integers(1, 3, n),
            "cl3": rng.integers(1, 4, n),
        }
    )


def make_counting(seed: int = 20261208) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, 151):
        x = round(float(rng.normal()), 4)
        s = int(rng.integers(0, 2))
        fu = int(rng.integers(20, 150))
        switch = int(rng.integers(1, fu)) if rng.random() < 0.6 else None
        base = 0.012 * np.exp(0.5 * x)
        t_off = np.ceil(rng.exponential(1 / base))
        t_on = np.ceil(rng.exponential(1 / (base * np.exp(-0.7))))
        if switch is None or t_off <= switch:
            t = t_off
        else:
            t = switch + t_on
        end = min(t, fu)
        ev = int(t <= fu)
        cuts = [0] + ([switch] if switch is not None and switch < end else []) + [end]
        for a, b in zip(cuts[:-1], cuts[1:]):
            rows.append((pid, a, b, int(ev and b == end), int(switch is not None and a >= switch), x, s))
    df = pd.DataFrame(rows, columns=["id", "start", "stop", "event", "treat", "x", "s"])
    df["wf"] = (0.5 + (df["id"] % 7) / 5).round(3)
    df["cl2"] = 1 + df["id"] % 2
    return df


def make_censored() -> pd.DataFrame:
    return pd.DataFrame({"t": [1, 2, 3, 4], "e": [0, 0, 0, 0], "g": [1, 2, 1, 2]})


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_right().to_csv(OUT / "defects_right.csv", index=False)
    make_counting().to_csv(OUT / "defects_counting.csv", index=False)
    make_censored().to_csv(OUT / "defects_censored.csv", index=False)


if __name__ == "__main__":
    main()
