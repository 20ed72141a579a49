"""Write tests/golden/data/post_stop.csv: counting-process rows of opioid episodes of a small
simulated cohort with a post-MAT-stop risk window (HR 2 for 28 days), for tests/r/post_stop.R.

Run from the repository root: ``.venv/bin/python tests/r/make_post_stop_data.py``.
"""
from __future__ import annotations

import math
from pathlib import Path

import iop_research as iop

OUT = Path(__file__).resolve().parents[1] / "golden" / "data" / "post_stop.csv"


def main() -> None:
    data = iop.simulate_cohort(800, seed=5, effects={"log_hr_after_mat_stop": math.log(2.0)}, progress=False)
    cp = iop.counting_process_frame(data, covariates=["primary_substance", "severity_score"])
    cp = cp[cp["primary_substance"] == "opioids"]
    cols = ["episode_id", "patient_id", "start", "stop", "event", "on_mat", "severity_score"]
    cp[cols].to_csv(OUT, index=False)


if __name__ == "__main__":
    main()
