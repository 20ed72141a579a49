"""Coverage of adjusted survival curves (designs.adjusted_survival) against a known truth.

Simulation: two confounders (age z-score ``age``, severe use ``severe`` ~ Bernoulli(0.4)), a
baseline exposure ``mat`` with P(mat = 1) = expit(-0.3 + 0.8 age + 0.6 severe), and a Weibull
proportional-hazards time to relapse (shape 0.8, scale 150 days, log-HR -0.5 for MAT,
0.4 per SD of age, 0.7 for severe), censored at Uniform(120, 400) days. The counterfactual
survival ``S_a(t) = E[exp(-(t/150)^0.8 exp(-0.5 a + 0.4 age + 0.7 severe))]`` is computed by
Gauss-Hermite quadrature over age and the exact mixture over severe, so the truth is exact.

Each replicate draws a cohort, runs ``adjusted_survival`` (influence-function intervals by
default, ``--ci bootstrap`` for the percentile bootstrap) and records
whether each 95% interval covers the truth, for S_0, S_1 and S_1 - S_0 at 90 and 180 days and
the RMST difference at 180 days.

Usage (repository root)::

    PYTHONPATH=. python benchmarks/sim_adjusted.py [--reps 200] [--n 400] [--ci analytic|bootstrap]
        [--boot 200] [--methods g-computation iptw] [--seed S] [--log benchmarks/_work/run.csv]
    PYTHONPATH=. python benchmarks/sim_adjusted.py --summarize benchmarks/_work/run.csv

``--log`` appends each finished replicate to a CSV, so a long run can be summarised (and
stopped) at any point with ``--summarize``. The figures in ``benchmarks/README.md`` were made
this way.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from iop_research.designs.adjusted import adjusted_survival

SHAPE, SCALE = 0.8, 150.0
B_MAT, B_AGE, B_SEV = -0.5, 0.4, 0.7
TIMES = (90.0, 180.0)
TAU = 180.0
#: Columns of run()'s rows and of the --log CSV (no header).
LOG_COLUMNS = ("replicate", "method", "quantity", "time", "estimate", "std_error", "conf_low", "conf_high")


def simulate(n: int, rng: np.random.Generator) -> pd.DataFrame:
    age = rng.normal(size=n)
    severe = rng.binomial(1, 0.4, n)
    mat = rng.binomial(1, 1 / (1 + np.exp(-(-0.3 + 0.8 * age + 0.6 * severe))))
    lp = B_MAT * mat + B_AGE * age + B_SEV * severe
    t = SCALE * (rng.exponential(size=n) / np.exp(lp)) ** (1 / SHAPE)
    c = rng.uniform(120, 400, n)
    return pd.DataFrame(
        {"age": age, "severe": severe, "mat": mat, "days": np.minimum(t, c), "relapse": (t <= c).astype(int)}
    )


def true_survival(a: int, t: np.ndarray) -> np.ndarray:
    """S_a(t) by Gauss-Hermite quadrature (age ~ N(0, 1)) and the Bernoulli(0.4) mixture."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    h0 = (np.asarray(t, dtype=float) / SCALE) ** SHAPE
    out = np.zeros(len(h0))
    for sev, p in ((0, 0.6), (1, 0.4)):
        risk = np.exp(B_MAT * a + B_AGE * x + B_SEV * sev)
        out += p * (w[:, None] * np.exp(-np.outer(risk, h0))).sum(axis=0)
    return out


def true_rmst(a: int, tau: float) -> float:
    grid = np.linspace(0, tau, 4001)
    s = true_survival(a, grid)
    return float(np.sum((s[1:] + s[:-1]) / 2 * np.diff(grid)))


def truths() -> dict:
    """(quantity, time) -> true value."""
    tt = np.array(TIMES)
    truth = {("S0", t): v for t, v in zip(TIMES, true_survival(0, tt))}
    truth.update({("S1", t): v for t, v in zip(TIMES, true_survival(1, tt))})
    truth.update({("diff", t): truth[("S1", t)] - truth[("S0", t)] for t in TIMES})
    truth[("rmst_diff", TAU)] = true_rmst(1, TAU) - true_rmst(0, TAU)
    return truth


def summarize(res: pd.DataFrame) -> pd.DataFrame:
    """Coverage (and its Monte Carlo SE), bias, empirical SD of the estimates, mean reported SE and mean CI
    width per method x quantity x time."""
    res = res.copy()
    truth = truths()
    res["truth"] = [truth[(q, t)] for q, t in zip(res["quantity"], res["time"])]
    res["covered"] = (res["conf_low"] <= res["truth"]) & (res["truth"] <= res["conf_high"])
    res["width"] = res["conf_high"] - res["conf_low"]
    out = (
        res.groupby(["method", "quantity", "time"])
        .agg(replicates=("covered", "size"), coverage=("covered", "mean"), truth=("truth", "first"),
             mean_estimate=("estimate", "mean"), empirical_sd=("estimate", "std"), mean_se=("std_error", "mean"),
             mean_ci_width=("width", "mean"))
        .reset_index()
    )
    out["bias"] = out["mean_estimate"] - out["truth"]
    out["coverage_mc_se"] = np.sqrt(out["coverage"] * (1 - out["coverage"]) / out["replicates"])
    return out


def run(
    *, n_reps: int, n: int, n_boot: int = 0, seed: int, methods=("g-computation", "iptw"), ci: str = "analytic",
    progress=None,
) -> pd.DataFrame:
    """One row per replicate x method x quantity: estimate, conf_low, conf_high, truth, covered.

    ``progress``, if given, is called with the rows of each finished replicate.
    """
    rng = np.random.default_rng(seed)
    truth = truths()
    rows = []
    for r in range(n_reps):
        d = simulate(n, rng)
        for method in methods:
            res = adjusted_survival(
                d, exposure_col="mat", covariates=["age", "severe"], duration_col="days", event_col="relapse",
                times=list(TIMES), tau=TAU, method=method, ci=ci, n_boot=n_boot, seed=rng,
            )
            tid = res.tidy
            for a in (0, 1):
                for t in TIMES:
                    row = tid[(tid["exposure"] == a) & (tid["time"] == t)].iloc[0]
                    rows.append((r, method, f"S{a}", t, row["survival"], row["std_error"], row["conf_low"],
                                 row["conf_high"]))
            con = res.extra["contrasts"]
            for t in TIMES:
                row = con[(con["measure"] == "difference") & (con["time"] == t)].iloc[0]
                rows.append((r, method, "diff", t, row["estimate"], row["std_error"], row["conf_low"], row["conf_high"]))
            row = con[con["measure"] == "rmst_difference"].iloc[0]
            rows.append((r, method, "rmst_diff", TAU, row["estimate"], row["std_error"], row["conf_low"], row["conf_high"]))
        if progress is not None:
            progress([x for x in rows if x[0] == r])
    out = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    out["truth"] = [truth[(q, t)] for q, t in zip(out["quantity"], out["time"])]
    out["covered"] = (out["conf_low"] <= out["truth"]) & (out["truth"] <= out["conf_high"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--ci", choices=["analytic", "bootstrap"], default="analytic")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap samples (--ci bootstrap only)")
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--methods", nargs="+", default=["g-computation", "iptw"])
    ap.add_argument("--log", default=None, help="CSV to which each replicate's rows are appended")
    ap.add_argument("--summarize", nargs="+", default=None, help="only summarise these --log CSVs")
    args = ap.parse_args()
    cols = list(LOG_COLUMNS)
    if args.summarize:
        logs = pd.concat([pd.read_csv(f, header=None, names=cols) for f in args.summarize], ignore_index=True)
        print(summarize(logs).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        return
    t0 = time.time()

    def log(rows):
        if args.log:
            pd.DataFrame(rows).to_csv(args.log, mode="a", header=False, index=False)

    res = run(n_reps=args.reps, n=args.n, n_boot=args.boot, seed=args.seed, methods=tuple(args.methods), ci=args.ci,
              progress=log)
    how = f"{args.boot} bootstrap samples" if args.ci == "bootstrap" else "influence-function intervals"
    print(f"{args.reps} replicates, n={args.n}, {how}, {time.time() - t0:.0f} s")
    print(summarize(res).to_string(index=False, float_format=lambda v: f"{v:.4f}"))

if __name__ == "__main__":
    main()
