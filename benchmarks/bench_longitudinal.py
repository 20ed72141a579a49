"""Benchmark: GEE on 1 M patient-weeks and a GLMM on 200,000 patients in 500 programmes, against R in the same run.

Writes the data to ``benchmarks/_work/`` (git-ignored), then, each timed on its own:

* ``fit_gee`` (binomial, exchangeable and AR(1)) on 1,000,000 patient-weeks (100,000 patients x 10 weeks)
  and R ``geepack::geeglm`` on the same CSV;
* ``fit_glmm`` (binomial random programme intercept, Laplace and nAGQ = 7) on 200,000 patients in 500
  programmes and R ``lme4::glmer`` on the same CSV;
* ``fit_frailty`` (gamma frailty per programme, 200,000 patients in 500 programmes) and R ``coxph(... +
  frailty(prog))`` at its default settings (which may stop before the maximum; the issue's timing target is
  for GEE and GLMM).

Prints wall and CPU seconds of each fitting call, the load average, the ratio ours / R and the largest
difference of the estimates. ``--no-r`` skips R.

Usage: ``PYTHONPATH=. python benchmarks/bench_longitudinal.py [--no-r] [--only gee,glmm,frailty]``
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "_work"

R_GEE = """
suppressPackageStartupMessages(library(geepack))
d <- read.csv("{csv}")
for (cs in c("exchangeable", "ar1")) {{
  t <- system.time(f <- geeglm(y ~ week + mat + sev, id = pid, waves = week, data = d, family = binomial, corstr = cs))
  cat("R", cs, t[["elapsed"]], t[["user.self"]] + t[["sys.self"]], coef(f), "\\n")
}}
"""
R_GLMM = """
suppressPackageStartupMessages(library(lme4))
d <- read.csv("{csv}")
for (q in c(1, 7)) {{
  t <- system.time(f <- glmer(y ~ x1 + x2 + x3 + (1 | prog), data = d, family = binomial, nAGQ = q))
  cat("R", q, t[["elapsed"]], t[["user.self"]] + t[["sys.self"]], fixef(f), as.data.frame(VarCorr(f))$vcov[1], "\\n")
}}
"""
R_FRAILTY = """
suppressPackageStartupMessages(library(survival))
d <- read.csv("{csv}")
t <- system.time(f <- coxph(Surv(days, relapse) ~ x1 + x2 + frailty(prog, distribution = "gamma"), data = d))
h <- f$history[[1]]$history
cat("R default", t[["elapsed"]], t[["user.self"]] + t[["sys.self"]], f$coefficients, h[nrow(h), 1], "\\n")
"""


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _r(script: str) -> list[list[str]]:
    out = subprocess.run(["Rscript", "--vanilla", "-e", script], capture_output=True, text=True, check=True).stdout
    return [line.split() for line in out.splitlines() if line.startswith("R ")]


def gee(no_r: bool) -> None:
    from iop_research.longitudinal import fit_gee

    rng = np.random.default_rng(1)
    n, k = 100_000, 10
    pid = np.repeat(np.arange(n), k)
    week = np.tile(np.arange(1, k + 1), n)
    mat = np.repeat(rng.binomial(1, 0.4, n), k)
    sev = np.repeat(rng.normal(5, 2, n).round(1), k)
    b = np.repeat(rng.normal(0, 0.8, n), k)
    y = rng.random(n * k) < 1 / (1 + np.exp(-(-1.0 - 0.05 * week - 0.6 * mat + 0.1 * sev + b)))
    d = pd.DataFrame({"pid": pid, "week": week, "mat": mat, "sev": sev, "y": y.astype(int)})
    csv = WORK / "gee_1m.csv"
    d.to_csv(csv, index=False)
    ours = {}
    for cs in ("exchangeable", "ar1"):
        fit, wall, cpu = _timed(lambda: fit_gee(d, formula="y ~ week + mat + sev", id_col="pid", family="binomial",
                                                corstr=cs, time_col="week"))
        ours[cs] = fit.tidy["estimate"].to_numpy()
        print(f"ours GEE {cs}: {wall:.1f} s wall, {cpu:.1f} s CPU (1,000,000 patient-weeks)", flush=True)
    if not no_r:
        for row in _r(R_GEE.format(csv=csv)):
            cs, wall, cpu, est = row[1], float(row[2]), float(row[3]), np.array(row[4:], dtype=float)
            print(f"R geeglm {cs}: {wall:.1f} s wall, {cpu:.1f} s CPU; max |diff| of estimates "
                  f"{np.max(np.abs(est - ours['ar1' if cs == 'ar1' else 'exchangeable'])):.2e}", flush=True)


def glmm(no_r: bool) -> None:
    from iop_research.longitudinal import fit_glmm

    rng = np.random.default_rng(1)
    n, g = 200_000, 500
    prog = rng.integers(0, g, n)
    d = pd.DataFrame({"prog": prog, "x1": rng.normal(size=n), "x2": rng.binomial(1, 0.4, n), "x3": rng.normal(size=n)})
    eta = -0.5 + 0.3 * d["x1"] - 0.4 * d["x2"] + 0.1 * d["x3"] + rng.normal(0, 0.6, g)[prog]
    d["y"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    csv = WORK / "glmm_200k.csv"
    d.to_csv(csv, index=False)
    ours = {}
    for q in (1, 7):
        fit, wall, cpu = _timed(lambda: fit_glmm(d, formula="y ~ x1 + x2 + x3", group_col="prog", nagq=q))
        ours[q] = np.r_[fit.tidy["estimate"].to_numpy(), fit.glance["re_variance"].iloc[0]]
        print(f"ours GLMM nAGQ={q}: {wall:.1f} s wall, {cpu:.1f} s CPU (200,000 patients, 500 programmes)", flush=True)
    if not no_r:
        for row in _r(R_GLMM.format(csv=csv)):
            q, wall, cpu, est = int(row[1]), float(row[2]), float(row[3]), np.array(row[4:], dtype=float)
            print(f"R glmer nAGQ={q}: {wall:.1f} s wall, {cpu:.1f} s CPU; max |diff| (fixed effects, variance) "
                  f"{np.max(np.abs(est - ours[q])):.2e}", flush=True)


def frailty(no_r: bool) -> None:
    from iop_research.survival import fit_frailty

    rng = np.random.default_rng(2)
    n, g = 200_000, 500
    prog = rng.integers(0, g, n)
    z = rng.gamma(2.0, 0.5, g)[prog]
    x1, x2 = rng.binomial(1, 0.5, n), rng.normal(size=n)
    t = np.ceil(rng.exponential(300 / (z * np.exp(-0.4 * x1 + 0.2 * x2))))
    c = np.ceil(rng.uniform(30, 365, n))
    d = pd.DataFrame({"prog": prog, "x1": x1, "x2": x2, "days": np.minimum(t, c), "relapse": (t <= c).astype(int)})
    csv = WORK / "frailty_200k.csv"
    d.to_csv(csv, index=False)
    fit, wall, cpu = _timed(lambda: fit_frailty(d, duration_col="days", event_col="relapse", covariates=["x1", "x2"],
                                                cluster_col="prog"))
    print(f"ours frailty: {wall:.1f} s wall, {cpu:.1f} s CPU; theta {fit.glance['theta'].iloc[0]:.4f}", flush=True)
    if not no_r:
        for row in _r(R_FRAILTY.format(csv=csv)):
            print(f"R coxph frailty (default settings): {float(row[2]):.1f} s wall, {float(row[3]):.1f} s CPU; "
                  f"theta {float(row[-1]):.4f} (R stops its theta search early at default settings)", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-r", action="store_true")
    ap.add_argument("--only", default="gee,glmm,frailty")
    a = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}", flush=True)
    for name in a.only.split(","):
        {"gee": gee, "glmm": glmm, "frailty": frailty}[name](a.no_r)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
