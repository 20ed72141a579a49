"""Simulation study: per-protocol landmark Cox, unweighted vs IPCW (landmark_analysis(switch_col=...)).

Data: tests/ipcw_sim.py (exposure at the landmark randomised; a covariate u raises relapse and switching).
Truth: the Cox HR in a 200,000-person cohort where nobody switches. Prints bias, SD, mean SE and coverage
of the unweighted per-protocol fit (robust SE), the IPCW fit with the robust SE (weights treated as known)
and the IPCW fit with ``ci="bootstrap"`` (people resampled, switching models, weights and Cox refitted;
bootstrap-SE Wald interval).

    PYTHONPATH=. python benchmarks/sim_ipcw.py --quick     # the recorded figures (200 reps, n 400, B 50)
    PYTHONPATH=. python benchmarks/sim_ipcw.py --reps 200 --n 400 --boot 200 [--gamma-event 0.7 --gamma-switch 0.9]
    PYTHONPATH=. python benchmarks/sim_ipcw.py --reps 200 --n 1000 --boot 0 --u-bound 2   # bounded confounder
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ipcw_sim import simulate_landmark  # noqa: E402

from iop_research.designs.causal import landmark_analysis  # noqa: E402
from iop_research.survival.cox import fit_cox  # noqa: E402

KW = dict(landmark_days=30, duration_col="days", event_col="event", exposure_col="on_mat_at_l", cluster_col="pid")


Z = 1.959963984540054


def cohort_truth(rng: np.random.Generator, sim: dict) -> float:
    """Cox log HR in a 200,000-person cohort where nobody switches (the per-protocol estimand)."""
    big = simulate_landmark(rng, 200_000, switching=False, **sim)
    return fit_cox(big.assign(t=big["days"] - 30), duration_col="t", event_col="event",
                   covariates=["on_mat_at_l"]).tidy["estimate"].iloc[0]


def summarise(res: pd.DataFrame, truth: float) -> None:
    """Print bias, SD, mean SE and Wald coverage (estimate +- 1.96 SE) of each estimator in ``res``."""
    names = [c[: -len("_estimate")] for c in res.columns if c.endswith("_estimate")]
    print("| estimator | mean estimate | bias | bias / SD | bias / mean SE | SD | mean SE | coverage |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    covs = {}
    for name in names:
        est, se = res[f"{name}_estimate"].to_numpy(), res[f"{name}_std_error"].to_numpy()
        covs[name] = cov = np.abs(est - truth) <= Z * se
        sd = est.std(ddof=1)
        print(f"| {name} | {est.mean():.4f} | {est.mean() - truth:+.4f} | {(est.mean() - truth) / sd:+.2f} | "
              f"{(est.mean() - truth) / se.mean():+.2f} | {sd:.4f} | {se.mean():.4f} | {cov.mean():.3f} |")
    print(f"Monte Carlo SE of the mean estimate: {res[f'{names[-1]}_estimate'].std(ddof=1) / np.sqrt(len(res)):.4f}; "
          f"of a coverage of 0.95: {np.sqrt(0.95 * 0.05 / len(res)):.3f}")
    # where the intervals miss: the replicates whose largest weight is in the top fifth
    w = res["max_weight"].to_numpy()
    top = w > np.quantile(w, 0.8)
    print(f"maximum weight per replicate: median {np.median(w):.1f}, 90th percentile {np.quantile(w, 0.9):.1f}, "
          f"largest {w.max():.0f}")
    for name, cov in covs.items():
        print(f"coverage of {name}: {cov[top].mean():.3f} in the replicates with the top-fifth maximum weight, "
              f"{cov[~top].mean():.3f} in the rest")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=20261208)
    ap.add_argument("--gamma-event", type=float, default=0.7)
    ap.add_argument("--gamma-switch", type=float, default=0.9)
    ap.add_argument("--u-bound", type=float, default=None,
                    help="truncate u to [-b, b] (bounded weights, finite variance); default: u normal, unbounded")
    ap.add_argument("--unstabilized", action="store_true", help="IPCW without the numerator model (stabilized=False)")
    ap.add_argument("--boot", type=int, default=50, help="bootstrap replicates per IPCW fit (0: no bootstrap)")
    ap.add_argument("--truth-cohorts", type=int, default=4,
                    help="further 200,000-person no-switch cohorts (own stream) averaged into the truth")
    ap.add_argument("--quick", action="store_true", help="the recorded settings: reps 200, n 400, boot 50")
    ap.add_argument("--out", default="", help="write per-replicate estimates, SEs and the maximum weight to this CSV")
    ap.add_argument("--rescore", default="",
                    help="summarise a CSV written by --out against the truth of these settings (no replicates run)")
    a = ap.parse_args(argv)
    if a.quick:
        a.reps, a.n, a.boot = 200, 400, 50
    sim = dict(gamma_event=a.gamma_event, gamma_switch=a.gamma_switch, u_bound=a.u_bound)
    rng = np.random.default_rng(a.seed)
    boot_rng = np.random.default_rng([a.seed, 1])  # own stream: the data are those of runs without bootstrap
    t0, c0 = time.perf_counter(), time.process_time()
    # the first truth cohort comes from the replicates' stream (as in the first recorded runs), the others
    # from their own stream, so adding cohorts leaves the replicates unchanged
    truths = [cohort_truth(rng, sim)]
    truth_rng = np.random.default_rng([a.seed, 2])
    truths += [cohort_truth(truth_rng, sim) for _ in range(a.truth_cohorts)]
    truth = float(np.mean(truths))
    truth_se = float(np.std(truths, ddof=1) / np.sqrt(len(truths))) if len(truths) > 1 else float("nan")
    if a.rescore:
        res = pd.read_csv(a.rescore)
    else:
        out = {"unweighted, robust SE": [], "IPCW, robust SE (weights as known)": []}
        if a.boot:
            out[f"IPCW, bootstrap SE (B = {a.boot})"] = []
        max_w = []
        for _ in tqdm(range(a.reps), desc="replicates"):
            d = simulate_landmark(rng, a.n, **sim)
            r = landmark_analysis(d, switch_col="switch_day", censoring_covariates=[], **KW).tidy.iloc[0]
            out["unweighted, robust SE"].append((r["estimate"], r["std_error"]))
            if a.boot:
                fit = landmark_analysis(d, switch_col="switch_day", censoring_covariates=["u", "age"], stabilized=not a.unstabilized, ci="bootstrap",
                                        n_bootstrap=a.boot, seed=boot_rng, **KW)
                rb = fit.tidy.iloc[0]
                out[f"IPCW, bootstrap SE (B = {a.boot})"].append((rb["estimate"], rb["std_error"]))
            else:
                fit = landmark_analysis(d, switch_col="switch_day", censoring_covariates=["u", "age"], stabilized=not a.unstabilized, **KW)
            r = fit.model.tidy.iloc[0]
            max_w.append(fit.glance["max_weight"].iloc[0])
            out["IPCW, robust SE (weights as known)"].append((r["estimate"], r["std_error"]))
        cols = {f"{k}_{q}": np.array(v, dtype=float)[:, j] for k, v in out.items()
                for j, q in enumerate(("estimate", "std_error"))}
        res = pd.DataFrame({**cols, "max_weight": np.array(max_w, dtype=float)})
        if a.out:
            res.to_csv(a.out, index=False)
    print(f"truth log HR {truth:.4f} (mean of {len(truths)} cohorts of 200,000, Monte Carlo SE {truth_se:.4f}; "
          f"first cohort {truths[0]:.4f}); n = {a.n}; {len(res)} replicates; gamma_event {a.gamma_event}, "
          f"gamma_switch {a.gamma_switch}; u bound {a.u_bound}; bootstrap B = {a.boot}; seed {a.seed}"
          f"{'; unstabilised weights' if a.unstabilized else ''}")
    summarise(res, truth)
    print(f"wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
