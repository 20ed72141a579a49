"""Write the data sets that tests/r/interval_aft.R reads (tests/golden/data/interval_*.csv).

Run from the repository root: ``.venv/bin/python tests/r/make_interval_data.py``.

interval_teds.csv
    IOP discharges of a synthetic TEDS-format file (``write_teds_d_like``, 30,000 rows,
    seed 20261127) read by ``read_teds_d``: ``lower``/``upper`` from LOS (exact 1-30 days,
    ranges above, ``upper`` empty = more than 365 days), covariates ``completed`` and
    ``dropped_out`` (discharge reason) and ``mat`` (METHUSE); rows with METHUSE missing
    are excluded (count printed).
interval_visits.csv
    600 patients whose relapse time (log-logistic, time ratio exp(0.5) for ``treat``)
    is seen only at urine screens every ~14 days (jittered) up to day 180: ``(lower,
    upper]`` between screens, ``lower`` 0 when positive at the first screen, right-censored
    after the last screen (``upper`` empty), and 10% exact self-reported days.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "tests" / "golden" / "data"


def make_teds() -> pd.DataFrame:
    from iop_research.datasets.teds import read_teds_d, write_teds_d_like

    with tempfile.TemporaryDirectory() as tmp:
        path = write_teds_d_like(Path(tmp) / "teds.csv", n_rows=30_000, seed=20261127)
        iop = read_teds_d(path)
    keep = iop["has_mat_plan"].notna()
    print(f"interval_teds: {int((~keep).sum())} IOP rows with METHUSE missing excluded")
    iop = iop[keep]
    upper = iop["los_days_upper"].replace(np.inf, np.nan)
    return pd.DataFrame({
        "lower": iop["los_days_lower"].astype(int),
        "upper": upper.astype("Int64"),
        "completed": (iop["discharge_reason"] == "completed").astype(int),
        "dropped_out": (iop["discharge_reason"] == "dropped_out").astype(int),
        "mat": iop["has_mat_plan"].astype(int),
    })


def make_visits(seed: int = 20261128, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    treat = rng.integers(0, 2, n)
    age = np.round(rng.normal(35, 9, n)).astype(int)
    w = rng.logistic(size=n)
    t = np.exp(3.6 + 0.5 * treat + 0.015 * (age - 35) + 0.7 * w)
    rows = []
    for i in range(n):
        if rng.random() < 0.10:
            day = max(1, int(np.ceil(t[i])))
            if day <= 180:
                rows.append((day, day, treat[i], age[i]))
                continue
        visits = np.cumsum(rng.integers(10, 19, 14))
        visits = visits[visits <= 180]
        after = visits[visits >= t[i]]
        if len(after) == 0:
            rows.append((int(visits[-1]), None, treat[i], age[i]))
        else:
            before = visits[visits < t[i]]
            rows.append((int(before[-1]) if len(before) else 0, int(after[0]), treat[i], age[i]))
    d = pd.DataFrame(rows, columns=["lower", "upper", "treat", "age"])
    d["upper"] = d["upper"].astype("Int64")
    return d


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    make_teds().to_csv(OUT / "interval_teds.csv", index=False)
    make_visits().to_csv(OUT / "interval_visits.csv", index=False)
