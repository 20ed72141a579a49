"""Benchmark: counting-process Cox with cluster-robust SE, fit_cox vs R coxph (and lifelines).

Writes about 2.3 million ``(start, stop]`` rows (1 million IOP episodes, each with a MAT
on/off switch; covariates ``mat`` (time-varying), ``group_therapy``, ``age`` in years with
two decimals (continuous, so about as many distinct linear predictors as patients, as in
real data; ``--integer-age`` gives whole years); cluster = ``patient_id``; whole-day times,
so heavy ties) to ``benchmarks/_work/cox_bench.csv`` (git-ignored), then in the same run,
each in a fresh process one after the other,

* ``iop_research.survival.cox.fit_cox(..., cluster_col="patient_id")`` (Efron, robust SE,
  concordance and its standard error, i.e. everything ``coxph`` computes),
* R ``coxph(Surv(start, stop, event) ~ mat + group_therapy + age + cluster(patient_id))``
  via ``Rscript`` on the same CSV,
* lifelines ``CoxTimeVaryingFitter`` in a subprocess with a 120 s limit (skipped beyond),

and prints, for each, the time of the fitting call and of the whole process (start-up,
reading the CSV, fitting), both as wall time and as CPU time (user + system; on a shared
machine the wall time depends on the other jobs, the CPU time much less), the load average, the largest differences from
R (coefficients, robust SEs, concordance and its SE) and the time ratios ours / R.

Usage: ``.venv/bin/python benchmarks/bench_cox.py [--n-episodes 1000000] [--seed 1] [--integer-age]
[--no-r] [--no-lifelines]``
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "_work"
sys.path.insert(0, str(REPO))

BETA = {"mat": -0.5, "group_therapy": 0.3, "age": 0.01}


def simulate(n_episodes: int, seed: int | np.random.Generator, *, integer_age: bool = False) -> pd.DataFrame:
    """Episodes with a MAT on/off switch, piecewise-exponential relapse, rows (start, stop]."""
    rng = np.random.default_rng(seed)
    n = n_episodes
    patient = rng.integers(0, int(n * 0.7), n)
    age = rng.integers(18, 71, n) if integer_age else rng.uniform(18, 71, n).round(2)
    group = rng.integers(0, 2, n)
    fu = rng.integers(30, 366, n).astype(float)
    on = rng.integers(1, 61, n).astype(float)
    off = on + rng.integers(14, 181, n)
    h_off = 0.004 * np.exp(BETA["group_therapy"] * group + BETA["age"] * (age - 40))
    h_on = h_off * np.exp(BETA["mat"])
    e = rng.exponential(1.0, n)
    c1 = on * h_off
    c2 = c1 + (off - on) * h_on
    t = np.where(e <= c1, e / h_off, np.where(e <= c2, on + (e - c1) / h_on, off + (e - c2) / h_off))
    t = np.ceil(t)  # whole days: ties
    event = t <= fu
    end = np.where(event, t, fu)
    starts = np.stack([np.zeros(n), on, off], axis=1)
    stops = np.stack([on, off, np.full(n, np.inf)], axis=1)
    stops = np.minimum(stops, end[:, None])
    keep = starts < stops
    ep_idx = np.repeat(np.arange(n), 3).reshape(n, 3)[keep]
    df = pd.DataFrame(
        {
            "patient_id": patient[ep_idx],
            "episode_id": ep_idx,
            "start": starts[keep],
            "stop": stops[keep],
            "mat": np.tile([0, 1, 0], n).reshape(n, 3)[keep],
            "group_therapy": group[ep_idx],
            "age": age[ep_idx],
        }
    )
    df["event"] = (event[ep_idx] & (df["stop"].to_numpy() == end[ep_idx])).astype(int)
    return df


OURS_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import pandas as pd
    from iop_research.survival.cox import fit_cox
    d = pd.read_csv(sys.argv[1])
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit_cox(d, start_col="start", stop_col="stop", event_col="event",
                  covariates=["mat", "group_therapy", "age"], cluster_col="patient_id")
    g = res.glance.iloc[0]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": seconds, "cpu": cpu, "coef": res.tidy["estimate"].tolist(), "se": res.tidy["std_error"].tolist(),
                      "naive_se": res.tidy["naive_std_error"].tolist(), "concordance": float(g["concordance"]),
                      "concordance_se": float(g["concordance_se"]), "iterations": int(g["iterations"])}))
    """
)

R_SCRIPT = textwrap.dedent(
    """
    suppressPackageStartupMessages(library(survival))
    args <- commandArgs(trailingOnly = TRUE)
    d <- read.csv(args[1])
    st <- system.time(fit <- coxph(Surv(start, stop, event) ~ mat + group_therapy + age + cluster(patient_id),
                                   data = d))
    tm <- st[["elapsed"]]
    cpu <- st[["user.self"]] + st[["sys.self"]]
    cat(sprintf('{"seconds": %.4f, "cpu": %.4f, "coef": [%s], "se": [%s], "concordance": %.12f, "concordance_se": %.12g}',
        tm, cpu, paste(sprintf("%.12g", coef(fit)), collapse = ","),
        paste(sprintf("%.12g", sqrt(diag(fit$var))), collapse = ","), fit$concordance[["concordance"]],
        fit$concordance[["std"]]), file = args[2])
    """
)

LIFELINES_SCRIPT = textwrap.dedent(
    """
    import sys, time, json, pandas as pd
    from lifelines import CoxTimeVaryingFitter
    d = pd.read_csv(sys.argv[1])
    t0 = time.perf_counter()
    CoxTimeVaryingFitter().fit(d[["patient_id", "start", "stop", "event", "mat", "group_therapy", "age"]],
                               id_col="patient_id", start_col="start", stop_col="stop", event_col="event")
    print(json.dumps({"seconds": time.perf_counter() - t0}))
    """
)


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _run(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a process; return it, its wall time and its CPU time (user + system)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, **kw)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-episodes", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=20261127)
    ap.add_argument("--integer-age", action="store_true")
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--no-lifelines", action="store_true")
    args = ap.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    csv = WORK / "cox_bench.csv"
    df = simulate(args.n_episodes, args.seed, integer_age=args.integer_age)
    df.to_csv(csv, index=False)
    print(f"rows={len(df):,} episodes={args.n_episodes:,} events={int(df['event'].sum()):,} "
          f"patients={df['patient_id'].nunique():,} distinct event days={df.loc[df.event == 1, 'stop'].nunique()} "
          f"distinct ages={df['age'].nunique():,}")
    del df

    print(f"load average (1/5/15 min) before: {_load()}")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out, wall_py, cpu_py = _run([sys.executable, "-c", OURS_SCRIPT, str(csv)], capture_output=True, text=True,
                                check=True, env=env)
    py = json.loads(out.stdout)
    print(f"fit_cox: fit {py['seconds']:.2f} s wall, {py['cpu']:.2f} s CPU (whole process {wall_py:.2f} s wall, "
          f"{cpu_py:.2f} s CPU), iterations={py['iterations']}, "
          f"coef={np.round(py['coef'], 5).tolist()}, robust se={np.round(py['se'], 5).tolist()}, "
          f"concordance={py['concordance']:.6f} (se {py['concordance_se']:.3g})  [load {_load()}]")

    if not args.no_r:
        rfile = WORK / "bench_cox.R"
        rfile.write_text(R_SCRIPT)
        rout = WORK / "bench_cox_r.json"
        _, wall_r, cpu_r = _run(["Rscript", "--vanilla", str(rfile), str(csv), str(rout)], check=True)
        r = json.loads(rout.read_text())
        rel = np.max(np.abs(np.array(py["coef"]) / np.array(r["coef"]) - 1))
        rel_se = np.max(np.abs(np.array(py["se"]) / np.array(r["se"]) - 1))
        print(f"R coxph: fit {r['seconds']:.2f} s wall, {r['cpu']:.2f} s CPU (whole process {wall_r:.2f} s wall, "
              f"{cpu_r:.2f} s CPU)  [load {_load()}]")
        print(f"max relative difference from R: coef {rel:.2e}, robust SE {rel_se:.2e}; concordance "
              f"{abs(py['concordance'] - r['concordance']):.2e} (absolute), concordance se "
              f"{abs(py['concordance_se'] / r['concordance_se'] - 1):.2e} (relative)")
        print(f"time ratio fit_cox / coxph: fit {py['seconds'] / r['seconds']:.3f} wall, "
              f"{py['cpu'] / r['cpu']:.3f} CPU; whole process {wall_py / wall_r:.3f} wall, {cpu_py / cpu_r:.3f} CPU "
              "(target <= 0.2; on a loaded machine the CPU ratios are the stable ones)")

    if not args.no_lifelines:
        try:
            out = subprocess.run([sys.executable, "-c", LIFELINES_SCRIPT, str(csv)], capture_output=True,
                                 text=True, timeout=120, check=True)
            print(f"lifelines CoxTimeVaryingFitter: {json.loads(out.stdout)['seconds']:.2f} s")
        except subprocess.TimeoutExpired:
            print("lifelines CoxTimeVaryingFitter: skipped, did not finish within 120 s")
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
