"""Simulated landmark data with informative switching, for the per-protocol IPCW tests and studies.

Exposure at the landmark L (e.g. on MAT at day 30) is randomised; after L, a covariate ``u``
(e.g. instability) raises both the daily hazard of relapse and the daily hazard of switching
exposure (stopping MAT, or starting it); staying on the exposure at L lowers relapse by ``beta``
(log hazard). Censoring at the switch is therefore informative about relapse through ``u``.
Whole days throughout; follow-up to day ``L + horizon``.

``u_bound``: None (default) draws u from N(0, 1). Then, when ``gamma_switch > gamma_event``, the
censoring weights have an infinite second moment among the people at risk (the probability of not
having switched by day d falls like exp(-c e^{gamma_switch u} d), faster than the chance of being
event-free), so the IPCW estimator has no finite variance and no standard error can cover at the
nominal rate (``benchmarks/README.md``). A number b draws u from N(0, 1) truncated to [-b, b] (a
bounded instability score): the weights are then bounded and their variance finite.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def simulate_landmark(rng: np.random.Generator, n: int, *, beta: float = np.log(0.6), landmark: int = 30,
                      horizon: int = 180, switching: bool = True, gamma_event: float = 0.7,
                      gamma_switch: float = 0.9, u_bound: float | None = None) -> pd.DataFrame:
    if u_bound is None:
        u = rng.normal(size=n)
    else:  # inverse CDF of the truncated normal (its own draws; the default stream is unchanged)
        lo = stats.norm.cdf(-u_bound)
        u = stats.norm.ppf(rng.uniform(lo, 1.0 - lo, size=n))
    age = rng.normal(35.0, 9.0, size=n).round(0)
    a = rng.binomial(1, 0.5, size=n)
    h_event = 0.004 * np.exp(beta * a + gamma_event * u)  # daily hazard while on the exposure at L
    h_switch = np.where(a == 1, 0.006, 0.004) * np.exp(gamma_switch * u) if switching else np.zeros(n)
    t_event = np.ceil(rng.exponential(1.0 / h_event))
    t_switch = np.ceil(rng.exponential(1.0 / np.where(h_switch > 0, h_switch, 1e-300)))
    # after a switch the hazard is the other arm's: exposure effect reversed from the switch day on
    after = t_event > t_switch
    extra = np.ceil(rng.exponential(1.0 / (0.004 * np.exp(beta * (1 - a) + gamma_event * u))))
    t_event = np.where(after, t_switch + extra, t_event)
    t_admin = float(horizon)
    time = np.minimum(t_event, t_admin)
    event = (t_event <= t_admin).astype(int)
    switch = np.where(t_switch < time, t_switch, np.where((t_switch == time), t_switch, np.nan))
    return pd.DataFrame({
        "pid": np.arange(n), "days": time + landmark, "event": event, "on_mat_at_l": a,
        "switch_day": switch + landmark, "u": u.round(3), "age": age,
    })
