"""Write the simulated data sets that tests/r/km_sim.R reads.

Run from the repository root: ``.venv/bin/python tests/r/make_km_data.py``.
Writes (committed, small):

tests/golden/data/km_sim.csv
    400 IOP episodes, time to relapse in whole days (many ties), ``event`` 1 = relapse,
    0 = censored; ``arm`` (a/b/c, relapse hazard lower in b and c), ``site`` (s1/s2, a
    stratum with its own baseline hazard), ``w`` integer case weights 0-3 (zeros included),
    ``wf`` non-integer case weights (3 decimals), ``entry`` delayed-entry day (0 for most,
    ``0 <= entry < days``; half-days for some, so entries fall between event days).
tests/golden/data/km_edge.csv
    Small edge cases, one ``case`` label each: ``all_censored``, ``one_event``, ``ties``
    (events and censorings tied on the same days), ``zero_weight`` (zero-weight rows,
    including the last time and an event), ``group_no_events`` (arm b has no events),
    ``time_zero`` (events and censoring at day 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"


def make_sim(seed: int = 20261127) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 400
    arm = rng.choice(["a", "b", "c"], n, p=[0.4, 0.3, 0.3])
    site = rng.choice(["s1", "s2"], n)
    rate = 1 / 120 * np.exp(np.select([arm == "b", arm == "c"], [-0.3, -0.6], 0.0) + np.where(site == "s2", 0.4, 0.0))
    t_event = rng.exponential(1 / rate)
    t_cens = rng.uniform(30, 400, n)
    days = np.maximum(1, np.ceil(np.minimum(t_event, t_cens) / 3) * 3).astype(int)  # 3-day grid: ties
    event = (t_event <= t_cens).astype(int)
    w = rng.choice([0, 1, 2, 3], n, p=[0.1, 0.5, 0.25, 0.15])
    wf = np.round(rng.uniform(0.2, 3.0, n), 3)
    delayed = rng.random(n) < 0.4
    entry = np.where(delayed, np.floor(rng.uniform(0, days)), 0.0)
    entry = np.where(delayed & (rng.random(n) < 0.3), entry + 0.5, entry)
    entry = np.minimum(entry, days - 0.5)
    return pd.DataFrame(
        {"id": np.arange(1, n + 1), "days": days, "event": event, "arm": arm, "site": site,
         "w": w, "wf": wf, "entry": entry}
    )


def make_edge() -> pd.DataFrame:
    rows = []

    def add(case, days, event, arm, w=None):
        w = [1] * len(days) if w is None else w
        rows.extend(zip([case] * len(days), days, event, arm, w))

    add("all_censored", [3, 5, 5, 8, 10, 12], [0] * 6, list("ababab"))
    add("one_event", [3, 5, 5, 8, 10, 12], [0, 0, 1, 0, 0, 0], list("ababab"))
    add("ties", [2, 2, 2, 4, 4, 4, 4, 6, 6, 9, 9, 9], [1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0], list("abababababab"))
    add("zero_weight", [1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 9], [0, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0],
        list("aabbaabbaab"), [1, 2, 1, 1, 3, 1, 0, 2, 1, 1, 0])
    add("group_no_events", [2, 3, 4, 6, 7, 8, 9, 11], [1, 0, 1, 0, 1, 0, 0, 0], list("abababab"))
    add("time_zero", [0, 0, 0, 1, 2, 3, 3, 5], [1, 0, 1, 1, 0, 1, 1, 0], list("abababab"))
    return pd.DataFrame(rows, columns=["case", "days", "event", "arm", "w"])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_sim().to_csv(OUT / "km_sim.csv", index=False)
    make_edge().to_csv(OUT / "km_edge.csv", index=False)


if __name__ == "__main__":
    main()
