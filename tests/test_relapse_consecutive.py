"""RelapseDefinition(uds_rule="consecutive_weeks"): the trial-style relapse (X:BOT: four consecutive weeks of use,
a missed screen counted as positive) selectable where every relapse outcome is defined. Hand-built cases, each
with the clause of the definition it exercises."""
from __future__ import annotations

import pandas as pd
import pytest

from iop_research.data.io import IOPData
from iop_research.derive.outcomes import RelapseDefinition, recurrent_relapses, relapse_outcomes
from iop_research.exceptions import IopError

ADMIT = pd.Timestamp("2022-01-03")  # a Monday; week k = days 7k..7k+6 from admission


def _data(screens, other=()):
    """One patient P1, one episode E1 admitted on ADMIT; ``screens`` = [(day, result)], ``other`` = [(day, type)]."""
    adm = pd.DataFrame({"episode_id": ["E1"], "patient_id": ["P1"], "admit_date": [ADMIT],
                        "discharge_date": [ADMIT + pd.Timedelta(days=120)], "discharge_reason": ["completed"]})
    rows = [("uds", d, r) for d, r in screens] + [(t, d, None) for d, t in other]
    ev = pd.DataFrame({"patient_id": ["P1"] * len(rows),
                       "event_date": [ADMIT + pd.Timedelta(days=d) for _, d, _ in rows],
                       "event_type": [t for t, _, _ in rows], "result": [r for _, _, r in rows],
                       "substance": [None] * len(rows)})
    obs = pd.DataFrame({"patient_id": ["P1"], "observation_end": [ADMIT + pd.Timedelta(days=365)]})
    return IOPData(pd.DataFrame(), adm, pd.DataFrame(), pd.DataFrame(), ev, obs), adm


def _weekly(results, first_week=1, weekday=2):
    """One screen per week from ``first_week`` on (day 7k + weekday), results in order ('' = no screen that week)."""
    return [(7 * (first_week + i) + weekday, r) for i, r in enumerate(results) if r]


TRIAL = RelapseDefinition(uds_rule="consecutive_weeks", uds_weeks=4)


def one(data, adm, definition):
    return relapse_outcomes(data, episodes=adm, definition=definition).iloc[0]


def test_run_of_four_positive_weeks_dated_at_its_first_week():
    # weeks 1-2 positive, week 3 negative (the run breaks), weeks 4-7 positive: relapse in week 4
    data, adm = _data(_weekly(["positive", "positive", "negative", "positive", "positive", "positive", "positive"]))
    r = one(data, adm, TRIAL)
    assert (r["event"], r["time"], r["event_source"]) == (1, 7 * 4 + 2, "uds")
    # the default rule: the first positive screen after the blanking days (week 1)
    r = one(data, adm, RelapseDefinition())
    assert (r["event"], r["time"]) == (1, 9)


def test_three_weeks_are_not_a_relapse():
    data, adm = _data(_weekly(["positive", "positive", "positive", "negative", "positive"]))
    r = one(data, adm, TRIAL)
    assert r["event"] == 0 and r["event_type"] == "censored"
    assert r["event"] == 0
    r3 = one(data, adm, RelapseDefinition(uds_rule="consecutive_weeks", uds_weeks=3))
    assert (r3["event"], r3["time"]) == (1, 9)


def test_any_positive_screen_makes_the_week_positive_and_the_first_positive_dates_it():
    # week 2 has a negative (day 14) then a positive (day 18) screen: positive week, dated day 18
    screens = [(14, "negative"), (18, "positive"), (23, "positive"), (30, "positive"), (37, "positive")]
    data, adm = _data(screens)
    r = one(data, adm, TRIAL)
    assert (r["event"], r["time"]) == (1, 18)


def test_a_week_without_a_result_breaks_the_run():
    # weeks 1, 2, (no screen in week 3), 4, 5, 6: no run of four
    data, adm = _data(_weekly(["positive", "positive", "", "positive", "positive", "positive"]))
    assert one(data, adm, TRIAL)["event"] == 0


def test_missed_screen_counts_as_positive_only_under_the_trial_rule():
    weeks = ["positive", "missed", "positive", "positive"]
    data, adm = _data(_weekly(weeks))
    r = one(data, adm, TRIAL)  # uds_missed="positive" (X:BOT)
    assert (r["event"], r["time"]) == (1, 9)
    r = one(data, adm, RelapseDefinition(uds_rule="consecutive_weeks", uds_weeks=4, uds_missed="missing"))
    assert r["event"] == 0  # the missed week is no result and breaks the run
    # a missed screen alone is never a relapse under the default rule
    data, adm = _data(_weekly(["missed", "missed", "missed", "missed"]))
    assert one(data, adm, RelapseDefinition())["event"] == 0
    r = one(data, adm, TRIAL)  # four missed weeks = four positive weeks under the trial rule
    assert (r["event"], r["time"]) == (1, 9)


def test_screens_in_the_blanking_days_are_left_out():
    # intake positive on day 2 (week 0, blanking) then weeks 1-3 positive: three weeks after blanking, no run of 4
    data, adm = _data([(2, "positive")] + _weekly(["positive", "positive", "positive"]))
    assert one(data, adm, TRIAL)["event"] == 0


def test_other_sources_still_count_first():
    # the run starts in week 3 (day 23); self-reported use on day 12 comes first
    data, adm = _data(_weekly(["positive"] * 4, first_week=3), other=[(12, "self_report_use")])
    r = one(data, adm, TRIAL)
    assert (r["time"], r["event_source"]) == (12, "self_report_use")
    r = one(data, adm, RelapseDefinition(sources=("uds",), uds_rule="consecutive_weeks"))
    assert (r["time"], r["event_source"]) == (23, "uds")
    # a run is dated at its first week, so it can come before a source seen later (day 40)
    data, adm = _data(_weekly(["positive"] * 4, first_week=3), other=[(40, "self_report_use")])
    assert (one(data, adm, TRIAL)["time"], one(data, adm, TRIAL)["event_source"]) == (23, "uds")


def test_no_screens_at_all():
    data, adm = _data([], other=[(40, "overdose")])
    r = one(data, adm, RelapseDefinition(sources=("uds", "overdose"), uds_rule="consecutive_weeks"))
    assert (r["event"], r["time"], r["event_source"]) == (1, 40, "overdose")


def test_bad_settings_and_recurrent_relapses_refused():
    with pytest.raises(IopError, match="uds_rule"):
        RelapseDefinition(uds_rule="four_weeks")
    with pytest.raises(IopError, match="uds_weeks"):
        RelapseDefinition(uds_rule="consecutive_weeks", uds_weeks=0)
    with pytest.raises(IopError, match="uds_missed"):
        RelapseDefinition(uds_rule="consecutive_weeks", uds_missed="negative")
    data, adm = _data(_weekly(["positive"] * 4))
    with pytest.raises(IopError, match="first relapse only"):
        recurrent_relapses(data, episodes=adm, definition=TRIAL)


def test_agrees_with_consecutive_use_relapse_on_a_simulated_cohort():
    """On a simulated cohort whose only relapse source is uds, the run found here starts in the week that
    derive.consecutive_use_relapse finds on the weekly frame built with every week scheduled and weeks without
    any screen left without a result (both rules: a week without a result breaks a run)."""
    from iop_research.data.synth import simulate_cohort
    from iop_research.derive import build_episodes, consecutive_use_relapse, uds_weeks

    data = simulate_cohort(400, seed=11, effects={"missed_screen_share": 0.15})
    eps = build_episodes(data)
    d = RelapseDefinition(sources=("uds",), uds_rule="consecutive_weeks", uds_weeks=2, blanking_days=6,
                          max_followup_days=12 * 7 - 1)
    ours = relapse_outcomes(data, episodes=eps, definition=d)
    wk = uds_weeks(data, eps, weeks=12, missing="positive", scheduled="in_treatment")
    theirs = consecutive_use_relapse(wk[wk["week"] >= 1], weeks=2)
    both = ours.merge(theirs, on="episode_id", suffixes=("", "_w"))
    assert len(both) > 300
    assert (both["event"] == both["relapse"]).all()
    assert both["event"].sum() > 20
    hit = both[both["event"] == 1]
    assert ((hit["time"] // 7) == hit["week"]).all()
