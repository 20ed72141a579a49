"""Write the demo cohort's weekly urine screens that tests/r/glmm.R reads (tests/golden/data/glmm_demo_weeks.csv).

Run from the repository root: ``PYTHONPATH=. /work/main/.venv/bin/python tests/r/make_glmm_demo_data.py``.

glmm_demo_weeks.csv
    The bundled demo cohort (``iop_research.load_demo()``), episodes by ``build_episodes``, the patient-week
    frame of ``derive.repeated.uds_weeks`` (12 weeks from admission, a missed scheduled screen counted
    positive; unscheduled weeks without a screen, not observed, are left out), restricted to the first
    N_EPISODES episodes (sorted by id) to keep the file small; with the
    episode covariates ``has_mat`` (0/1), ``age`` (at admission), ``sex``, ``substance`` (primary substance)
    and the ``program``. Used for a random intercept per episode and one per programme.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "golden" / "data"
N_EPISODES = 800


def make_demo_weeks(n_episodes: int = N_EPISODES) -> pd.DataFrame:
    import iop_research as iop
    from iop_research.derive.repeated import uds_weeks

    demo = iop.load_demo()
    eps = iop.build_episodes(demo).sort_values("episode_id").head(n_episodes)
    weeks = uds_weeks(demo, eps, weeks=12, missing="positive")
    cov = eps[["episode_id", "program", "has_mat", "age_at_admit", "sex", "primary_substance"]].rename(
        columns={"age_at_admit": "age", "primary_substance": "substance"})
    weeks = weeks[weeks["positive"].notna()]  # weeks after discharge without a screen are not observed
    out = weeks[["episode_id", "week", "positive"]].merge(cov, on="episode_id", how="left", validate="many_to_one")
    out["has_mat"] = out["has_mat"].astype(int)
    out["positive"] = out["positive"].astype(int)
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    make_demo_weeks().to_csv(OUT / "glmm_demo_weeks.csv", index=False)


if __name__ == "__main__":
    main()
