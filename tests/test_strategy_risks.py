"""Tests of the simulator's strategy truths (iop_research.data.synth.strategy_risks)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.data.synth import STRATEGY_NAMES, simulate_cohort, strategy_risks
from iop_research.exceptions import IopError, ModelSpecificationError

# covariates do not move MAT initiation: the share starting within the grace period is one number
FLAT_MAT = {"mat_logit_severity_per_point": 0.0, "mat_logit_comorbidity": 0.0}


def _z(a: pd.Series, b: pd.Series) -> float:
    return float((a["risk"] - b["risk"]) / np.hypot(a["mc_se"], b["mc_se"]))


def test_columns_and_determinism():
    a = strategy_risks(n_patients=3000, seed=5, horizon_days=[180, 365])
    b = strategy_risks(n_patients=3000, seed=5, horizon_days=[180, 365])
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["strategy", "horizon_days", "risk", "mc_se", "n"]
    assert a["strategy"].tolist() == [s for s in STRATEGY_NAMES for _ in (180, 365)]
    assert (a.loc[a["strategy"] == "start", "n"] == 3000).all()
    # the sustain/stop population: starters without relapse before the start, the same for both arms
    sus = a.set_index(["strategy", "horizon_days"])["n"]
    assert sus[("sustain", 365)] == sus[("stop", 365)] < 3000
    # risks grow with the horizon
    wide = a.pivot(index="strategy", columns="horizon_days", values="risk")
    assert (wide[180] < wide[365]).all()
    c = strategy_risks(n_patients=3000, seed=6, strategies=("start",))
    assert c["risk"].iloc[0] != a.loc[(a["strategy"] == "start") & (a["horizon_days"] == 365), "risk"].iloc[0]


def test_strategy_everyone_follows_reproduces_natural_exactly():
    # every opioid episode starts MAT on days 0-3: "start within 30 days" is what nature does
    eff = {"mat_share_opioid": 1.0, "mat_immediate_share": 1.0}
    r = strategy_risks(eff, n_patients=4000, seed=3, strategies=("natural", "start")).set_index("strategy")
    assert r.loc["start", "risk"] == r.loc["natural", "risk"]
    # nobody starts: "do not start within 30 days" is what nature does
    r0 = strategy_risks({"mat_share_opioid": 0.0}, n_patients=4000, seed=3,
                        strategies=("natural", "no_start")).set_index("strategy")
    assert r0.loc["no_start", "risk"] == r0.loc["natural", "risk"]
    # a strategy nobody can follow under the natural law is refused (positivity)
    with pytest.raises(ModelSpecificationError, match="positivity"):
        strategy_risks({"mat_share_opioid": 0.0}, n_patients=200, seed=3, strategies=("start",))


def test_start_and_no_start_mix_to_natural():
    # with a constant probability pi of starting within G, natural = pi * start + (1 - pi) * no_start
    g = 30
    pi = 0.5 * (0.5 + 0.5 * (g - 3) / 57)  # P(on MAT) * P(start day <= 30 | on): days 0-3 or 4-60
    r = strategy_risks(FLAT_MAT, n_patients=60_000, seed=9, grace_days=g,
                       strategies=("natural", "start", "no_start")).set_index("strategy")
    mix = pi * r.loc["start", "risk"] + (1 - pi) * r.loc["no_start", "risk"]
    se = np.sqrt(r.loc["natural", "mc_se"] ** 2 + (pi * r.loc["start", "mc_se"]) ** 2
                 + ((1 - pi) * r.loc["no_start", "mc_se"]) ** 2)
    assert abs(mix - r.loc["natural", "risk"]) < 4 * se
    # and MAT lowers the risk: a real contrast, many MC SEs wide
    assert r.loc["no_start", "risk"] - r.loc["start", "risk"] > 10 * r.loc["start", "mc_se"]


def test_two_seeds_agree_within_mc_error():
    a = strategy_risks(n_patients=20_000, seed=1).set_index("strategy")
    b = strategy_risks(n_patients=20_000, seed=2).set_index("strategy")
    for s in STRATEGY_NAMES:
        assert abs(_z(a.loc[s], b.loc[s])) < 4, s
    # and the MC SE is the binomial one
    assert np.allclose(a["mc_se"], np.sqrt(a["risk"] * (1 - a["risk"]) / a["n"]))


def test_natural_matches_the_cohort():
    # the truth's population is the cohort's opioid index episodes: with no deaths and no loss to
    # follow-up the latent 1-year relapse share of a simulated cohort agrees with "natural"
    eff = {"death_rate_per_year": 0.0, "loss_to_followup_share": 0.0}
    data = simulate_cohort(12_000, seed=21, effects=eff, progress=False)
    te = data.truth.episodes
    adm = data.admissions.sort_values(["patient_id", "admit_date"])
    first = adm.drop_duplicates("patient_id")
    idx = te[te["episode_id"].isin(first.loc[first["primary_substance"] == "opioids", "episode_id"])]
    p = float((idx["relapse_day"] <= 365).mean())
    cohort = pd.Series({"risk": p, "mc_se": np.sqrt(p * (1 - p) / len(idx))})
    r = data.truth.strategy_risks(n_patients=40_000, seed=4, strategies=("natural",)).iloc[0]
    assert abs(_z(r, cohort)) < 4


def test_sustain_lowers_risk_against_stop():
    r = strategy_risks(n_patients=20_000, seed=8, strategies=("sustain", "stop")).set_index("strategy")
    assert r.loc["stop", "risk"] - r.loc["sustain", "risk"] > 10 * r.loc["stop", "mc_se"]
    # no MAT effect, no post-stop risk: the two arms share one truth
    null = strategy_risks({"log_hr_mat_opioid": 0.0, "log_hr_after_mat_stop": 0.0}, n_patients=20_000, seed=8,
                          strategies=("sustain", "stop")).set_index("strategy")
    assert abs(_z(null.loc["sustain"], null.loc["stop"])) < 4


@pytest.mark.parametrize("kwargs", [
    {"strategies": ("begin",)},
    {"grace_days": -1},
    {"horizon_days": 0},
    {"n_patients": 0},
    {"seed": 1.5},
    {"effects": {"no_such_effect": 1.0}},
])
def test_bad_arguments(kwargs):
    kwargs = {"n_patients": 100, **kwargs}
    effects = kwargs.pop("effects", None)
    with pytest.raises(IopError):
        strategy_risks(effects, **kwargs)


def test_refused_with_the_confounder():
    """The opt-in time-varying confounder starts MOUD by its own draws, which no strategy forces."""
    from iop_research.exceptions import IopError

    with pytest.raises(IopError, match="confounder_weeks"):
        strategy_risks({"confounder_weeks": 8}, n_patients=100)
