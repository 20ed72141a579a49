"""Data from a known marginal structural Cox model with treatment-confounder feedback (Havercroft & Didelez 2012).

Weekly intervals k = 0..K-1. A latent U ~ Uniform(0, 1) ("how unwell": a large U means an early relapse) sets each
person's relapse time through the marginal model: T is the first t with S(t | treatment history) <= U, where
S(t | a) = exp(-sum over weeks of exp(g0 + g1 a_k)), so the counterfactual hazard under any fixed treatment
history is exactly exp(g0 + g1 a(t)): the MSM's log hazard ratio is g1.
A positive screen L_k depends on U and on the previous week's treatment (treatment lowers it); treatment A_k
depends on L_k and on A_{k-1}. L is a confounder affected by earlier treatment: adjusting for it in a
time-varying Cox model is biased, and so is leaving it out.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit


def simulate_msm(rng: np.random.Generator, n: int, *, g0: float = np.log(0.06), g1: float = np.log(0.5),
                 weeks: int = 12) -> pd.DataFrame:
    u = rng.uniform(size=n)
    target = -np.log(u)  # relapse when the cumulative hazard passes -log U
    cum = np.zeros(n)
    a_prev = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    rows = []
    for k in range(weeks):
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        screen = rng.binomial(1, expit(-2.0 + 3.0 * u[idx] - 1.2 * a_prev[idx]))
        a = rng.binomial(1, expit(-1.5 + 1.5 * screen + 2.5 * a_prev[idx]))
        h = np.exp(g0 + g1 * a)
        need = target[idx] - cum[idx]
        event = need <= h
        stop = np.where(event, k + need / h, k + 1.0)
        rows.append(pd.DataFrame({"pid": idx, "start": float(k), "stop": stop, "event": event.astype(int),
                                  "on_mat": a, "positive_screen": screen, "mat_last_week": a_prev[idx].astype(int)}))
        cum[idx] += h
        alive[idx[event]] = False
        a_prev[idx] = a
    return pd.concat(rows, ignore_index=True).sort_values(["pid", "start"], ignore_index=True)
