"""Time fit_km and logrank_test on 1 million rows against lifelines, in one run.

Run from the repository root: ``.venv/bin/python benchmarks/bench_km.py [n_rows]``.
Prints wall-clock seconds of each call (one run each, no loop: the machine is shared),
ours and lifelines alternating in the same process, the load average before and after,
the lifelines / ours ratio, and the largest differences between the two results.
lifelines fits one curve per call and compares two samples, so its times include
splitting the frame by arm (our calls do that, and the validation, themselves).
Data: two arms, exponential relapse times in days rounded to 0.01 (about 10^5 distinct
times, many ties), uniform censoring; seeded.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pandas as pd


def make_data(n: int, seed: int = 2026) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, n)
    t = rng.exponential(np.where(arm == 1, 150.0, 110.0))
    c = rng.uniform(0, 400, n)
    return pd.DataFrame({"days": np.round(np.minimum(t, c), 2), "event": (t <= c).astype(int), "arm": arm})


def _clock(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(n: int = 1_000_000) -> None:
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test as ll_logrank

    from iop_research.survival.km import fit_km, logrank_test

    df = make_data(n)
    load_before = "/".join(f"{v:.1f}" for v in os.getloadavg())
    ours_km, t_ours_km = _clock(lambda: fit_km(df, duration_col="days", event_col="event", group_col="arm"))

    def ll_fit_km():
        fits = []
        for arm in (0, 1):
            sub = df[df["arm"] == arm]
            fits.append(KaplanMeierFitter().fit(sub["days"], sub["event"]))
        return fits

    (ll_km, _), t_ll_km_total = _clock(ll_fit_km)
    ours_lr, t_ours_lr = _clock(lambda: logrank_test(df, duration_col="days", event_col="event", group_col="arm"))

    def ll_lr_fn():
        a, b = df[df["arm"] == 0], df[df["arm"] == 1]
        return ll_logrank(a["days"], b["days"], event_observed_A=a["event"], event_observed_B=b["event"])

    ll_lr, t_ll_lr = _clock(ll_lr_fn)
    load_after = "/".join(f"{v:.1f}" for v in os.getloadavg())

    part = ours_km.tidy[ours_km.tidy["group"] == 0]
    mine = part["survival"].to_numpy()
    theirs = ll_km.survival_function_.iloc[:, 0].reindex(part["time"].to_numpy()).to_numpy()
    print(f"rows: {n:,}; distinct times arm 0: {len(mine):,}")
    print(f"fit_km (2 groups)      ours {t_ours_km:6.2f} s   lifelines KaplanMeierFitter x2 {t_ll_km_total:6.2f} s"
          f"   ratio lifelines/ours {t_ll_km_total / t_ours_km:5.1f}")
    print(f"logrank_test (2 groups) ours {t_ours_lr:6.2f} s   lifelines logrank_test       {t_ll_lr:6.2f} s"
          f"   ratio lifelines/ours {t_ll_lr / t_ours_lr:5.1f}")
    print(f"max |S_ours - S_lifelines| = {np.max(np.abs(mine - theirs)):.2e}")
    print(f"chi-square ours {ours_lr.glance['statistic'].iloc[0]:.6f}  lifelines {ll_lr.test_statistic:.6f}")
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
