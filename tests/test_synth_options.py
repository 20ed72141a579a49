"""Opt-in simulator features (issue 16 point 5): programme effects on completion with a recorded truth.
(Missed screens: tests/test_repeated.py.) Default cohorts draw nothing extra: tests/test_datasets_demo.py."""
from __future__ import annotations

import numpy as np
import pytest

from iop_research.data.synth import simulate_cohort
from iop_research.exceptions import ModelSpecificationError


def test_programme_effects_move_completion_and_are_recorded():
    sim = simulate_cohort(6000, seed=3, n_programs=20, effects={"programme_completion_sd": 0.5})
    u = sim.truth.params["programme_completion_effects"]
    assert len(u) == 20 and 0.2 < np.std(list(u.values())) < 0.9
    a = sim.admissions.dropna(subset=["discharge_reason"])
    rate = (a["discharge_reason"] == "completed").groupby(a["program"]).mean().reindex(list(u))
    logit = np.log(rate / (1 - rate))
    # the completion logit moves with the programme effect, about one for one
    slope = np.polyfit(list(u.values()), logit.to_numpy(), 1)[0]
    assert 0.7 < slope < 1.3
    assert "programme_completion_effects" not in simulate_cohort(50, seed=3).truth.params


def test_negative_sd_is_refused():
    with pytest.raises(ModelSpecificationError, match="programme_completion_sd"):
        simulate_cohort(10, seed=1, effects={"programme_completion_sd": -0.1})
