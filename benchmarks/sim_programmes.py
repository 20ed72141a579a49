"""Simulation study: the programme random-effect SD recovered by fit_glmm's profile interval.

Each replicate simulates a cohort with ``simulate_cohort(effects={"programme_completion_sd": SD})`` (programme
effects drawn from N(0, SD^2) on the log-odds of completion), fits ``completed ~ severity_score + step_down +
homeless + employed + (1 | program)`` by Laplace and records whether the profile-likelihood interval of the
random-intercept SD covers SD. (Risk-standardised rates: tests/test_programmes.py, slow.)

    PYTHONPATH=. python benchmarks/sim_programmes.py --reps 100 [--patients 3000 --programmes 20 --sd 0.4]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from iop_research.data.synth import simulate_cohort
from iop_research.longitudinal import fit_glmm


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--patients", type=int, default=3000)
    ap.add_argument("--programmes", type=int, default=20)
    ap.add_argument("--sd", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=1000, help="first seed; replicate k uses seed + k")
    a = ap.parse_args(argv)
    t0, c0 = time.perf_counter(), time.process_time()
    cover, est = 0, []
    for k in tqdm(range(a.reps), desc="replicates"):
        sim = simulate_cohort(a.patients, seed=a.seed + k, n_programs=a.programmes,
                              effects={"programme_completion_sd": a.sd}, progress=False)
        d = sim.admissions.dropna(subset=["discharge_reason", "severity_score"])
        d = d.assign(completed=(d["discharge_reason"] == "completed").astype(int),
                     step_down=(d["referral_source"] == "residential_step_down").astype(int),
                     homeless=(d["housing"] == "homeless").astype(int),
                     employed=(d["employment"] == "employed").astype(int))
        g = fit_glmm(d, formula="completed ~ severity_score + step_down + homeless + employed", group_col="program",
                     profile=True).glance.iloc[0]
        est.append(g["re_sd"])
        cover += int(g["re_sd_conf_low"] <= a.sd <= g["re_sd_conf_high"])
    est = np.asarray(est)
    print(f"{a.reps} replicates, {a.patients} patients, {a.programmes} programmes, SD {a.sd}: mean estimate "
          f"{est.mean():.3f} (median {np.median(est):.3f}), profile-interval coverage {cover / a.reps:.3f}")
    print(f"wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s")


if __name__ == "__main__":
    main()
