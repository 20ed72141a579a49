"""The simulator's opt-in time-varying confounder affected by treatment (SimulationEffects.confounder_weeks):
MOUD lowers it, it raises MOUD initiation, and it raises the relapse hazard, as documented."""
from __future__ import annotations

import math

import numpy as np
import pytest

import iop_research as iop

_ON = {"confounder_weeks": 12}


@pytest.fixture(scope="module")
def confounded():
    return iop.simulate_cohort(3000, seed=41, effects=_ON, progress=False)


def _logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood logistic regression (Newton-Raphson): coefficients and standard errors."""
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-x @ beta))
        info = x.T @ (x * (p * (1 - p))[:, None])
        step = np.linalg.solve(info, x.T @ (y - p))
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta, np.sqrt(np.diag(np.linalg.inv(info)))


def test_default_cohort_has_no_confounder():
    data = iop.simulate_cohort(50, seed=3, progress=False)
    assert data.truth.effects.confounder_weeks == 0
    assert data.truth.confounder.empty
    assert list(data.truth.confounder.columns) == ["episode_id", "patient_id", "week", "day", "value", "on_mat",
                                                   "moud_started_by_confounder"]


def test_confounder_transition_model_is_recovered(confounded):
    """logit P(L_w) = b0 + b_prev L_{w-1} + b_moud A_w + b_sev (severity - 5): MOUD lowers L."""
    c = confounded.truth.confounder.sort_values(["episode_id", "week"]).reset_index(drop=True)
    sev = confounded.admissions.set_index("episode_id")["severity_score"]
    prev = c.groupby("episode_id")["value"].shift(1, fill_value=False).to_numpy(dtype=float)
    x = np.column_stack([np.ones(len(c)), prev, c["on_mat"].to_numpy(dtype=float),
                         c["episode_id"].map(sev).to_numpy() - 5.0])
    beta, se = _logistic(x, c["value"].to_numpy(dtype=float))
    eff = confounded.truth.effects
    truth = np.array([eff.confounder_logit_baseline, eff.confounder_logit_previous, eff.confounder_logit_moud,
                      eff.confounder_logit_severity_per_point])
    assert np.all(np.abs(beta - truth) < 4 * se), (beta, se, truth)
    assert beta[2] < -0.8  # on MOUD, L is markedly less likely


def test_confounder_starts_moud_only_in_weeks_when_present(confounded):
    c = confounded.truth.confounder
    started = c[c["moud_started_by_confounder"]]
    assert len(started) > 100
    assert started["value"].all()
    # eligible weeks: opioid episodes not on MAT from the baseline draw, L = 1, not started before
    adm = confounded.admissions.set_index("episode_id")
    base_mat = confounded.truth.episodes.set_index("episode_id")["mat_medication"]
    start_week = started.set_index("episode_id")["week"]
    opi = c["episode_id"].map(adm["primary_substance"]).eq("opioids")
    not_before = c["week"] <= c["episode_id"].map(start_week).fillna(np.inf)
    # episodes started by L have a medication in truth; eligible = those with none, or started by L
    eligible_ep = base_mat.isna() | base_mat.index.isin(start_week.index)
    elig = opi & c["episode_id"].map(eligible_ep) & not_before & c["value"]
    n, k = int(elig.sum()), len(started)
    p = confounded.truth.effects.confounder_moud_start_probability
    assert abs(k - n * p) < 4 * math.sqrt(n * p * (1 - p)), (k, n)
    # the courses it starts are real: dispensings in the medications table for some of them
    started_mat = confounded.truth.mat_intervals[confounded.truth.mat_intervals["episode_id"].isin(start_week.index)]
    assert started_mat["episode_id"].nunique() > 0.9 * len(start_week)
    own = started_mat[started_mat["start_day"] > 0]  # day-0 intervals are supplies carried over from before
    starts = own.groupby("episode_id")["start_day"].min()
    w = start_week[starts.index]
    assert ((starts > 7 * w) & (starts < 7 * w + 7)).all()


def test_confounder_raises_the_relapse_hazard():
    """Same seed, confounder effect on relapse switched off: the first episodes share L and MAT, and
    their Exp(1) draws, so relapse comes earlier exactly where L = 1 before the relapse."""
    on = iop.simulate_cohort(1500, seed=42, effects=_ON, progress=False)
    off = iop.simulate_cohort(1500, seed=42, effects={**_ON, "log_hr_confounder": 0.0}, progress=False)
    first_on = on.truth.episodes.groupby("patient_id").head(1).set_index("patient_id")
    first_off = off.truth.episodes.groupby("patient_id").head(1).set_index("patient_id")
    t_on, t_off = first_on["relapse_day"], first_off["relapse_day"][first_on.index]
    c = on.truth.confounder
    c = c[c["episode_id"].isin(first_on["episode_id"])]
    # days with L = 1 after the blanking period and before the (effect-free) relapse
    blank = on.truth.effects.blanking_days
    pid_t_off = c["patient_id"].map(t_off)
    exposed = c["value"] & (c["day"] + 7 > blank) & (c["day"] < pid_t_off)
    exposed_pid = set(c.loc[exposed, "patient_id"])
    is_exposed = first_on.index.isin(list(exposed_pid))
    assert is_exposed.sum() > 200
    np.testing.assert_allclose(t_on[~is_exposed].to_numpy(), t_off[~is_exposed].to_numpy(), rtol=1e-9)
    assert np.all(t_on[is_exposed].to_numpy() < t_off[is_exposed].to_numpy() * (1 - 1e-9))
