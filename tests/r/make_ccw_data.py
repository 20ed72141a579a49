"""Write the data sets that tests/r/ccw.R reads (clone-censor-weight golden values).

Run from the repository root: ``.venv/bin/python tests/r/make_ccw_data.py``.
Writes (committed, small, simulated):

tests/golden/data/ccw_persons.csv
    300 simulated IOP admissions plus 9 hand-made edge cases (ids 9001-9009), one row per
    person: ``id``, ``days`` (whole days to relapse or censoring, > 0), ``relapse`` (1/0),
    ``moud_day`` (day MOUD started, empty = never during follow-up), ``age``, ``sex`` (f/m).
    Edge cases: start on day 0; event on the start day; follow-up ending inside the grace
    period without a start; start on the last grace day; start after the grace period;
    censored on the start day; event on the last grace day without a start; event after
    the horizon; event on day 1.
tests/golden/data/ccw_deviation.csv
    Person-days at risk of starting within the grace period: ``id, day, started``.
tests/golden/data/ccw_clones.csv
    Clone rows of both strategies ``id, strategy, start, stop, event`` (``(start, stop]``).
tests/golden/data/ccw_tv.csv, ccw_sustained_tv.csv
    Time-varying covariates of the deviation model as counting-process rows ``id, start,
    stop, uds_pos, craving`` tiling each person's follow-up ``(0, min(days, 40)]`` in intervals of
    1-10 days (``uds_pos`` 0/1, more often 1 in the interval holding the change day;
    ``craving`` a score); separate random stream, so the persons files do not change.
tests/golden/data/ccw_sustained_persons.csv, ccw_sustained_deviation.csv, ccw_sustained_clones.csv
    The same for ``sustained_treatment``: another simulated cohort (seed + 1) whose
    ``stop_day`` is the day treatment stopped; strategies "stop" (stop on a day <= STOP_GRACE
    = 14) and "sustain" (no stop on days <= SUSTAIN = 30).

The two derived files are built here by plain per-person loops that spell the conventions
of ``iop_research.designs.ccw`` out independently of the package (GRACE = 21 days,
HORIZON = 120 days):

* "start": a person who started on a day <= GRACE follows the strategy to the end of
  follow-up (truncated at HORIZON); otherwise the clone is censored at GRACE (after an
  event on that day), or ends earlier with the person's own outcome.
* "no_start": censored on the start day if it is <= GRACE (after an event on that day);
  one row per day during the grace period (the weights change daily), one row after it.
* deviation rows: days 0..min(GRACE, days, moud_day), started = 1 on ``moud_day``.

For the sustained strategies the arm that requires the change ("stop") uses STOP_GRACE and
the arm that forbids it ("sustain") uses SUSTAIN; deviation rows run to max(STOP_GRACE, SUSTAIN).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"
GRACE = 21
HORIZON = 120
STOP_GRACE = 14
SUSTAIN = 30


def make_persons(seed: int = 20261207) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 300
    age = np.round(rng.normal(35, 10, n)).clip(18, 70)
    male = rng.random(n) < 0.6
    h = 1 / (1 + np.exp(-(-3.0 + 0.04 * (age - 35) + 0.5 * male)))
    ta = np.full(n, np.nan)
    for d in range(GRACE + 15):
        s = np.isnan(ta) & (rng.random(n) < h)
        ta[s] = d
    lam = 0.006 * np.exp(0.03 * (age - 35) - 0.2 * male) * np.where(np.nan_to_num(ta, nan=99) <= GRACE, 0.7, 1.0)
    ev_day = np.ceil(rng.exponential(1 / lam))
    cens = rng.integers(10, 200, n)
    days = np.maximum(np.minimum(ev_day, cens), 1)
    relapse = (ev_day <= cens).astype(int)
    ta = np.where(ta <= days, ta, np.nan)
    d = pd.DataFrame({"id": np.arange(1, n + 1), "days": days.astype(int), "relapse": relapse, "moud_day": ta,
                      "age": age, "sex": np.where(male, "m", "f")})
    edge = pd.DataFrame(
        [
            (9001, 50, 1, 0.0, 30.0, "f"),  # start on day 0
            (9002, 5, 1, 5.0, 41.0, "m"),  # event on the start day
            (9003, 10, 0, np.nan, 28.0, "m"),  # follow-up ends inside the grace period
            (9004, 100, 1, float(GRACE), 52.0, "f"),  # start on the last grace day
            (9005, 150, 0, 40.0, 33.0, "m"),  # start after the grace period
            (9006, 7, 0, 7.0, 25.0, "f"),  # censored on the start day
            (9007, GRACE, 1, np.nan, 45.0, "m"),  # event on the last grace day, no start
            (9008, 200, 1, 3.0, 38.0, "m"),  # event after the horizon
            (9009, 1, 1, np.nan, 60.0, "f"),  # event on day 1
        ],
        columns=d.columns,
    )
    return pd.concat([d, edge], ignore_index=True)


def deviation_rows(p: pd.DataFrame, window: int = GRACE, col: str = "moud_day") -> pd.DataFrame:
    out = []
    for r in p.itertuples(index=False):
        ta = getattr(r, col)
        last = min(window, r.days, ta if not math.isnan(ta) else math.inf)
        for day in range(int(last) + 1):
            out.append((r.id, day, int(day == ta)))
    return pd.DataFrame(out, columns=["id", "day", "started"])


def clone_rows(p: pd.DataFrame, g_event: int = GRACE, g_free: int = GRACE, labels=("start", "no_start"),
               col: str = "moud_day", event_col: str = "relapse") -> pd.DataFrame:
    """labels[0]: the strategy requiring the change by g_event; labels[1]: forbidding it until g_free."""
    event_arm, free_arm = [], []
    for r in p.itertuples(index=False):
        y = min(r.days, HORIZON)
        e = getattr(r, event_col) if r.days <= HORIZON else 0
        ta = getattr(r, col)
        # strategy labels[0] ("start" / "stop")
        changed = not math.isnan(ta) and ta <= g_event
        if y <= g_event:
            event_arm.append((r.id, labels[0], 0, y, e))
        elif changed:
            event_arm += [(r.id, labels[0], 0, g_event, 0), (r.id, labels[0], g_event, y, e)]
        else:
            event_arm.append((r.id, labels[0], 0, g_event, 0))  # deviates: censored at the end of its window
        # strategy labels[1] ("no_start" / "sustain")
        c = ta if (not math.isnan(ta) and ta <= g_free) else math.inf
        end = min(y, c)
        ev = e if y <= c else 0
        for d in range(1, int(min(end, g_free)) + 1):
            free_arm.append((r.id, labels[1], d - 1, d, ev if d == end else 0))
        if end > g_free:
            free_arm.append((r.id, labels[1], g_free, int(end), ev))
    return pd.DataFrame(event_arm + free_arm, columns=["id", "strategy", "start", "stop", "event"])


def make_tv(p: pd.DataFrame, col: str, seed: int) -> pd.DataFrame:
    """Counting-process rows tiling (0, min(days, 40)] of every person; uds_pos leans to 1 around the change day."""
    rng = np.random.default_rng(seed)
    out = []
    for r in p.itertuples(index=False):
        ta = getattr(r, col)
        start = 0
        end = min(r.days, 40)  # the deviation days lie within 0..30
        while start < end:
            stop = int(min(end, start + rng.integers(1, 11)))
            holds_change = not math.isnan(ta) and start < max(ta, 1) <= stop
            uds = int(rng.random() < (0.7 if holds_change else 0.25))
            out.append((r.id, start, stop, uds, round(float(rng.normal(3 + uds, 1)), 3)))
            start = stop
    return pd.DataFrame(out, columns=["id", "start", "stop", "uds_pos", "craving"])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    p = make_persons()
    p.to_csv(OUT / "ccw_persons.csv", index=False)
    deviation_rows(p).to_csv(OUT / "ccw_deviation.csv", index=False)
    clone_rows(p).to_csv(OUT / "ccw_clones.csv", index=False)
    make_tv(p, "moud_day", 20261209).to_csv(OUT / "ccw_tv.csv", index=False)
    q = make_persons(seed=20261208).rename(columns={"moud_day": "stop_day", "relapse": "overdose"})
    q.to_csv(OUT / "ccw_sustained_persons.csv", index=False)
    deviation_rows(q, max(STOP_GRACE, SUSTAIN), "stop_day").to_csv(OUT / "ccw_sustained_deviation.csv", index=False)
    clone_rows(q, STOP_GRACE, SUSTAIN, ("stop", "sustain"), "stop_day", "overdose").to_csv(
        OUT / "ccw_sustained_clones.csv", index=False)
    make_tv(q, "stop_day", 20261210).to_csv(OUT / "ccw_sustained_tv.csv", index=False)


if __name__ == "__main__":
    main()
