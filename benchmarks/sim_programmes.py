"""Simulation studies of programme comparisons: the random-effect SD (``--study sd``) and the hierarchical
risk-standardised rates (``--study rates``).

``--study sd``: each replicate simulates a cohort with ``simulate_cohort(effects={"programme_completion_sd": SD})``
(programme effects drawn from N(0, SD^2) on the log-odds of completion), fits ``completed ~ severity_score +
step_down + homeless + employed + (1 | program)`` by Laplace and records whether the profile-likelihood interval
of the random-intercept SD covers SD.

``--study rates``: ``programme_rates(method="hierarchical")`` (CMS: random programme intercepts, predicted /
expected x overall rate), with ``--interval posterior`` (the default: draws from the model's approximate
posterior) or ``--interval bootstrap`` (CMS's bootstrap of programmes). Each replicate draws 12 programmes of 15 to 400 patients whose
case mix (age, severity) differs, programme effects ``u_j ~ N(0, SD^2)`` on the log-odds of completion, and
outcomes from ``logit P = 0.3 - 0.03 (age - 35) - 0.8 severe + u_j``. The truth of programme j is its exact
standardised ratio over its own patients, ``sum_i expit(x_i beta + u_j) / sum_i expit(x_i beta)`` (the true
model, the average programme u = 0), and its true rate that ratio times the cohort's overall rate (held fixed in
the estimate too, as CMS does). Recorded: coverage of the bootstrap intervals, and shrinkage, the mean
``|ratio - 1|`` of the smallest programmes (15-40 patients) for the truth, the hierarchical estimate and the
indirect O/E, with each estimator's root mean squared error against the truth. (This study uses its own logistic
simulator, not ``simulate_cohort``, whose completion model is a multinomial logit of latent covariates: there the
true standardised ratio is not a function of the observed case mix alone.)

    PYTHONPATH=. python benchmarks/sim_programmes.py --study sd --reps 100 [--patients 3000 --programmes 20 --sd 0.4]
    PYTHONPATH=. python benchmarks/sim_programmes.py --study rates --reps 100 --boot 1000 [--sd 0.4] [--interval bootstrap]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.special import expit
from tqdm import tqdm

from iop_research.data.synth import simulate_cohort
from iop_research.longitudinal import fit_glmm, programme_rates

SIZES = (15, 20, 30, 40, 60, 80, 120, 150, 200, 250, 300, 400)


def simulate_rates_cohort(rng: np.random.Generator, sd: float) -> tuple[pd.DataFrame, pd.Series]:
    """12 programmes with differing case mix; returns the patients and each programme's true standardised ratio."""
    effects = rng.normal(0.0, sd, len(SIZES))
    rows, truth = [], {}
    for k, (u, size) in enumerate(zip(effects, SIZES)):
        name = f"P{k:02d}"
        shift = rng.normal(0.0, 0.5)
        age = rng.normal(35.0 + 4.0 * shift, 9.0, size).round(0)
        severe = rng.binomial(1, expit(-0.5 + shift), size)
        eta = 0.3 - 0.03 * (age - 35.0) - 0.8 * severe
        truth[name] = expit(eta + u).sum() / expit(eta).sum()
        rows.append(pd.DataFrame({"programme": name, "age": age, "severe": severe,
                                  "completed": rng.binomial(1, expit(eta + u))}))
    return pd.concat(rows, ignore_index=True), pd.Series(truth)


def study_rates(a) -> None:
    rng = np.random.default_rng(a.seed)
    kw = dict(programme_col="programme", outcome_col="completed", covariates=["age", "severe"])
    cover = cover_rate = total = failed = 0
    cover_small = n_small = 0
    small = {"truth": [], "hier": [], "oe": []}
    err = {"hier": [], "oe": []}
    for k in tqdm(range(a.reps), desc="replicates"):
        d, truth = simulate_rates_cohort(rng, a.sd)
        res = programme_rates(d, method="hierarchical", n_boot=a.boot, seed=a.seed + k, interval=a.interval, **kw)
        t = res.tidy.set_index("programme")
        oe = programme_rates(d, **kw).tidy.set_index("programme")["oe_ratio"]
        tr = truth[t.index]
        inside = (t["pe_conf_low"] <= tr) & (tr <= t["pe_conf_high"])
        cover += int(inside.sum())
        cover_small += int(inside[t["n"] <= 40].sum())
        n_small += int((t["n"] <= 40).sum())
        overall = res.glance["overall_rate"].iloc[0]
        cover_rate += int(((t["conf_low"] <= tr * overall) & (tr * overall <= t["conf_high"])).sum())
        total += len(t)
        failed += int(res.glance["n_boot_failed"].iloc[0])
        is_small = t["n"].to_numpy() <= 40
        small["truth"] += list(np.abs(tr.to_numpy()[is_small] - 1))
        small["hier"] += list(np.abs(t["pe_ratio"].to_numpy()[is_small] - 1))
        small["oe"] += list(np.abs(oe[t.index].to_numpy()[is_small] - 1))
        err["hier"] += list(t["pe_ratio"].to_numpy() - tr.to_numpy())
        err["oe"] += list(oe[t.index].to_numpy() - tr.to_numpy())
    rmse = {m: float(np.sqrt(np.mean(np.square(v)))) for m, v in err.items()}
    what = "posterior draws" if a.interval == "posterior" else "bootstrap refits"
    print(f"{a.reps} replicates x 12 programmes (15-400 patients), SD {a.sd}, {a.interval} intervals, {a.boot} "
          f"{what} each ({failed} failed): coverage of the true standardised ratio {cover / total:.3f}, of the true rate "
          f"{cover_rate / total:.3f} ({total} programme-replicates); programmes of 15-40 patients "
          f"{cover_small / n_small:.3f}, of 60-400 {(cover - cover_small) / (total - n_small):.3f}")
    print(f"programmes of 15-40 patients, mean |ratio - 1|: truth {np.mean(small['truth']):.3f}, hierarchical "
          f"{np.mean(small['hier']):.3f}, indirect O/E {np.mean(small['oe']):.3f}; RMSE against the truth (all "
          f"programmes): hierarchical {rmse['hier']:.3f}, O/E {rmse['oe']:.3f}")


def study_sd(a) -> None:
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", choices=("sd", "rates"), default="sd")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--patients", type=int, default=3000, help="--study sd")
    ap.add_argument("--programmes", type=int, default=20, help="--study sd")
    ap.add_argument("--boot", type=int, default=1000, help="--study rates: draws or bootstrap refits per replicate")
    ap.add_argument("--interval", choices=("posterior", "bootstrap"), default="posterior",
                    help="--study rates: programme_rates(interval=...)")
    ap.add_argument("--sd", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=1000, help="first seed; replicate k uses seed + k")
    a = ap.parse_args(argv)
    t0, c0 = time.perf_counter(), time.process_time()
    (study_rates if a.study == "rates" else study_sd)(a)
    print(f"wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s")


if __name__ == "__main__":
    main()
