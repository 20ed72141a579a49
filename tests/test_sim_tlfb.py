"""The simulator's opt-in Timeline Followback series (SimulationEffects.tlfb_share): off by default, valid
against the contract, and consistent with the simulated relapse times (TLFB endpoints agree with the truth)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.data.synth import simulate_cohort
from iop_research.derive.repeated import tlfb_endpoints
from iop_research.exceptions import IopError, ModelSpecificationError

EFF = {"tlfb_share": 1.0, "tlfb_days": 120}


@pytest.fixture(scope="module")
def sim():
    return simulate_cohort(1500, seed=21, effects=EFF)


def test_off_by_default_and_other_tables_unchanged(sim):
    plain = simulate_cohort(1500, seed=21)
    assert plain.use_days is None
    for name, df in plain.tables().items():
        pd.testing.assert_frame_equal(df, sim.tables()[name], obj=name)
    pd.testing.assert_frame_equal(plain.truth.episodes, sim.truth.episodes)


def test_series_is_valid_and_covers_the_alcohol_episodes(sim):
    sim.validate()
    u = sim.use_days
    assert (u["substance"] == "alcohol").all()
    alc = sim.admissions[sim.admissions["primary_substance"] == "alcohol"]
    assert set(u["patient_id"]) <= set(alc["patient_id"])
    assert len(set(u["patient_id"])) > 0.9 * alc["patient_id"].nunique()
    assert (u.loc[~u["used"], "drinks"] == 0).all() and (u.loc[u["used"], "drinks"] >= 1).all()


def test_endpoints_agree_with_the_simulated_relapse(sim):
    """Every day before the latent relapse day ceil(t) is abstinent and day ceil(t) is a drinking day, so the
    first drinking day is ceil(t) and the time to the first heavy day is at least the relapse time. (Episodes
    followed by a readmission within the window are left out: their window also holds the next episode's days,
    as tlfb_endpoints counts days from admission.)"""
    adm = sim.admissions.sort_values(["patient_id", "admit_date"])
    gap = (adm.groupby("patient_id")["admit_date"].shift(-1) - adm["admit_date"]).dt.days
    eps = adm[(adm["primary_substance"] == "alcohol") & ~(gap < 120)][["episode_id", "patient_id", "admit_date"]]
    out = tlfb_endpoints(sim, eps, days=120).set_index("episode_id")
    out = out[out["days_recorded"] > 0]
    relapse = np.ceil(sim.truth.episodes.set_index("episode_id").loc[out.index, "relapse_day"])
    heavy = out["heavy_event"] == 1
    assert heavy.sum() > 20
    assert (out.loc[heavy, "first_heavy_day"] >= relapse[heavy]).all()
    # episodes whose recorded window ends before the relapse: all days abstinent, no heavy day
    before = relapse >= out["days_recorded"]
    assert before.sum() > 100
    assert (out.loc[before, "percent_days_abstinent"] == 100).all() and (out.loc[before, "heavy_event"] == 0).all()
    assert (out.loc[~before, "percent_days_abstinent"] < 100).all()
    # first drinking day = ceil(relapse time), day by day
    u = sim.use_days.merge(eps, on="patient_id")
    u["day"] = (u["use_date"] - u["admit_date"]).dt.days
    u = u[(u["day"] >= 0) & (u["day"] < 120) & u["episode_id"].isin(out.index)]
    first_use = u[u["used"]].groupby("episode_id")["day"].min()
    np.testing.assert_array_equal(first_use.to_numpy(), relapse[first_use.index].to_numpy())
    # heavy days by the sex-specific NIAAA thresholds: 4 drinks is a heavy day for women only, so women's
    # non-heavy days have at most 3 drinks and men's at most 4
    sex = sim.patients.set_index("patient_id")["sex"]
    drank = u[u["used"]].assign(sex=lambda x: x["patient_id"].map(sex))
    w, m = drank[drank["sex"] == "female"], drank[drank["sex"] == "male"]
    assert (w["drinks"] == 4).any() and (m["drinks"] == 4).any() and (m["drinks"] == 5).any()
    share_heavy_w = (w["drinks"] >= 4).mean()
    share_heavy_m = (m["drinks"] >= 5).mean()
    assert abs(share_heavy_w - 0.5) < 0.1 and abs(share_heavy_m - 0.5) < 0.1  # tlfb_heavy_share


def test_share_and_window():
    d = simulate_cohort(800, seed=3, effects={"tlfb_share": 0.5, "tlfb_days": 30})
    per_patient = d.use_days.groupby("patient_id").size()
    assert per_patient.max() <= 30 * d.admissions.groupby("patient_id").size().max()
    alc = d.admissions.loc[d.admissions["primary_substance"] == "alcohol", "patient_id"].nunique()
    assert 0.3 * alc < d.use_days["patient_id"].nunique() < 0.75 * alc


@pytest.mark.parametrize("bad", [{"tlfb_share": 1.5}, {"tlfb_days": 0}, {"tlfb_heavy_share": -0.1},
                                 {"tlfb_use_after_relapse": True}])
def test_bad_parameters(bad):
    with pytest.raises(ModelSpecificationError, match=next(iter(bad))) as info:
        simulate_cohort(10, seed=1, effects=bad)
    assert isinstance(info.value, IopError)
