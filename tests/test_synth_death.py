"""The simulator's death model: MOUD lowers the death hazard by medication, and the hazard
is raised in the weeks after an opioid-agonist stop, as documented in SimulationEffects.

The check is independent of the simulator's own timeline code: each person's follow-up is
cut into calendar days from ``truth.mat_intervals`` (coverage and post-stop windows change
only at whole days), the expected number of deaths in each state is the person's baseline
rate (``truth.patients.death_rate_per_day``) times the exposure in that state, and the
observed / expected ratio estimates the state's hazard ratio (SE of its log ~ 1/sqrt(O)).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import iop_research as iop

# high mortality and much MAT so that a few thousand people give a few hundred deaths per state
_BASE = {"death_rate_per_year": 0.6, "mat_share_opioid": 0.95, "mat_share_alcohol": 0.9,
         "mat_duration_scale_days": 90.0, "mat_opioid_medication_shares": (0.4, 0.4, 0.2)}
_STATES = ("off", "methadone", "buprenorphine", "naltrexone", "early_methadone", "early_buprenorphine",
           "late_methadone", "late_buprenorphine")


def _expected_log_hr(eff) -> dict[str, float]:
    e1, e3 = eff.log_hr_death_after_mat_stop, eff.log_hr_death_after_mat_stop_weeks_3_4
    return {
        "off": 0.0,
        "methadone": eff.log_hr_death_methadone,
        "buprenorphine": eff.log_hr_death_buprenorphine,
        "naltrexone": eff.log_hr_death_naltrexone,
        "early_methadone": eff.log_hr_death_methadone + e1,
        "early_buprenorphine": eff.log_hr_death_buprenorphine + e1,
        "late_methadone": eff.log_hr_death_methadone + e3,
        "late_buprenorphine": eff.log_hr_death_buprenorphine + e3,
    }


def _observed_expected(data) -> pd.DataFrame:
    """Deaths and expected deaths (baseline rate x exposure) per state, from the truth tables."""
    tp = data.truth.patients.reset_index(drop=True)
    pid_index = pd.Series(np.arange(len(tp)), index=tp["patient_id"])
    start = pd.Timestamp(data.truth.params["start_date"])
    admit_day = pd.Series(((data.admissions["admit_date"] - start).dt.days).to_numpy(),
                          index=data.admissions["episode_id"])
    entry = tp["entry_day"].to_numpy().astype(np.int64)
    death = tp["death_day"].to_numpy(dtype=float)
    end = np.minimum(death, tp["observation_end_day"].to_numpy(dtype=float))
    died = death <= tp["observation_end_day"].to_numpy(dtype=float)
    n_days = (np.ceil(end).astype(np.int64) - entry).clip(1)
    owner = np.repeat(np.arange(len(tp)), n_days)
    first = np.cumsum(n_days) - n_days
    day = entry[owner] + np.arange(owner.size) - first[owner]
    exposure = np.clip(end[owner] - day, 0.0, 1.0)
    offset = first - entry  # row of (person p, calendar day d) = offset[p] + d

    mi = data.truth.mat_intervals
    p = pid_index[mi["patient_id"]].to_numpy()
    a = admit_day[mi["episode_id"]].to_numpy()
    s0 = np.maximum(a + mi["start_day"].to_numpy(), entry[p])
    s1 = np.minimum(a + mi["stop_day"].to_numpy(), entry[p] + n_days[p])
    med = mi["medication"].to_numpy()

    def paint(persons, lo, hi):
        """Per-row count of intervals [lo, hi) (calendar days) covering the row's day."""
        diff = np.zeros(owner.size + 1, dtype=np.int64)
        ok = hi > lo
        np.add.at(diff, offset[persons[ok]] + lo[ok], 1)
        np.add.at(diff, offset[persons[ok]] + hi[ok], -1)
        return np.cumsum(diff[:-1]) > 0

    any_mat = paint(p, s0, s1)
    cover = {name: paint(p[sel], s0[sel], s1[sel]) for name, sel in (
        ("methadone", med == "methadone"), ("buprenorphine", med == "buprenorphine"),
        ("naltrexone", np.isin(med, ["naltrexone_xr", "naltrexone_oral"])))}
    windows = {}
    for name in ("methadone", "buprenorphine"):
        c = cover[name]
        # stops: last covered day followed by an uncovered day of the same person
        stop_rows = np.flatnonzero(c[:-1] & ~c[1:] & (owner[:-1] == owner[1:])) + 1
        sp, sd = owner[stop_rows], day[stop_rows]
        lim = entry[sp] + n_days[sp]
        windows["early_" + name] = paint(sp, sd, np.minimum(sd + 14, lim))
        windows["late_" + name] = paint(sp, np.minimum(sd + 14, lim), np.minimum(sd + 28, lim))
    log_hr = _expected_log_hr(data.truth.effects)
    state = np.full(owner.size, "off", dtype=object)
    best = np.full(owner.size, -np.inf)
    for name, w in windows.items():  # off MAT: the largest open window
        better = w & ~any_mat & (log_hr[name] > best)
        state[better], best[better] = name, log_hr[name]
    for name in ("naltrexone", "buprenorphine", "methadone"):  # on MAT: methadone first
        state[cover[name]] = name
    state[any_mat & ~cover["methadone"] & ~cover["buprenorphine"] & ~cover["naltrexone"]] = "other_mat"
    rate = tp["death_rate_per_day"].to_numpy()[owner]
    death_row = offset[died] + np.floor(death[died]).astype(np.int64)
    frame = pd.DataFrame({"state": state, "expected": rate * exposure})
    frame["observed"] = 0
    frame.loc[death_row, "observed"] = 1
    return frame.groupby("state")[["observed", "expected"]].sum()


@pytest.fixture(scope="module")
def death_cohort():
    return iop.simulate_cohort(6000, seed=91, effects=_BASE, progress=False)


def test_death_hazard_ratios_by_medication_and_after_stop_are_recovered(death_cohort):
    oe = _observed_expected(death_cohort)
    truth = _expected_log_hr(death_cohort.truth.effects)
    for name in _STATES:
        o, e = oe.loc[name, "observed"], oe.loc[name, "expected"]
        assert o >= 60, (name, o)
        z = (math.log(o / e) - truth[name]) * math.sqrt(o)
        assert abs(z) < 3.5, (name, o, e, o / e, math.exp(truth[name]))
    # weeks 1-2 after a stop: 9x the on-treatment rate of that medication
    for name in ("methadone", "buprenorphine"):
        ratio = (oe.loc["early_" + name, "observed"] / oe.loc["early_" + name, "expected"]) / (
            oe.loc[name, "observed"] / oe.loc[name, "expected"])
        assert 6.0 < ratio < 13.5, (name, ratio)
    # other MAT (acamprosate, disulfiram) has no death effect
    o, e = oe.loc["other_mat", "observed"], oe.loc["other_mat", "expected"]
    assert abs(math.log(o / e)) * math.sqrt(o) < 3.5


def test_death_effects_switched_off_give_equal_rates():
    off = {**_BASE, "log_hr_death_methadone": 0.0, "log_hr_death_buprenorphine": 0.0,
           "log_hr_death_after_mat_stop": 0.0, "log_hr_death_after_mat_stop_weeks_3_4": 0.0}
    oe = _observed_expected(iop.simulate_cohort(3000, seed=92, effects=off, progress=False))
    o, e = oe["observed"].sum(), oe["expected"].sum()
    assert abs(math.log(o / e)) * math.sqrt(o) < 3.5
    for name in ("methadone", "early_methadone"):
        o, e = oe.loc[name, "observed"], oe.loc[name, "expected"]
        assert abs(math.log(o / e)) * math.sqrt(o) < 3.5, (name, o, e)
