"""Simulation study: target trial emulation by clone-censor-weight (designs.clone_censor_weight).

Question: does starting MOUD within ``grace`` days of IOP admission lower the risk of relapse of the
index opioid episode by day ``horizon``? Each replicate simulates a cohort (``simulate_cohort``) with the
effects written below, builds the analysis frame from the simulated *tables* (first episode of each
person whose primary substance is opioids; time zero = admission; MOUD start = first opioid-MOUD
dispensing; relapse = first relapse manifestation after the blanking days; censored at observation end,
which is the death day for those who die), and compares

* ``clone_censor_weight`` (deviation model on severity and psychiatric comorbidity, the confounders of
  MOUD initiation; percentile bootstrap) with
* the naive comparison: people who started within the grace period vs those who did not, Kaplan-Meier
  per group from admission, no cloning (immortal time, confounding by indication); Wald interval from
  Greenwood variances,

against the truth ``synth.strategy_risks`` (start / no_start, same effects, 400,000 episodes per arm).
Prints bias, SD, mean SE and coverage of the risk difference.

    PYTHONPATH=. python benchmarks/sim_ccw.py --quick          # the recorded figures
    PYTHONPATH=. python benchmarks/sim_ccw.py --reps 200 --n 6000 --boot 200 --grace 7
    PYTHONPATH=. python benchmarks/sim_ccw.py --quick --grace 30 --grace-weights regime   # regime weights in G
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from tqdm import tqdm

from iop_research.data.synth import simulate_cohort, strategy_risks
from iop_research.designs import clone_censor_weight
from iop_research.survival.km import fit_km

#: The simulator's effects for this study, written out so the figures do not move with the defaults.
EFFECTS = {
    "baseline_scale_days": 550.0, "baseline_shape": 0.85, "blanking_days": 7,
    "log_hr_in_treatment": float(np.log(0.6)), "log_hr_mat_opioid": float(np.log(0.5)),
    "log_hr_after_mat_stop": 0.0, "after_mat_stop_days": 28.0,
    "log_hr_severity_per_point": 0.08, "log_hr_psychiatric_comorbidity": 0.25,
    "mat_share_opioid": 0.5, "mat_logit_severity_per_point": 0.30, "mat_logit_comorbidity": 0.60,
    "mat_immediate_share": 0.5, "mat_duration_shape": 0.45, "mat_duration_scale_days": 220.0,
    "death_rate_per_year": 0.008, "log_hr_death_opioids": 0.9, "log_hr_death_age_per_10_years": 0.4,
    "loss_to_followup_share": 0.15, "loss_to_followup_mean_days": 730.0,
}
OPIOID_MOUD = ("buprenorphine", "methadone", "naltrexone_xr")
RELAPSE_EVENTS = ("self_report_use", "ed_visit", "overdose", "readmission")


def analysis_frame(data, blanking_days: int) -> pd.DataFrame:
    """One row per opioid index episode: pid, days, relapse, moud_day (NaN if none in follow-up), covariates."""
    adm = data.admissions.sort_values(["patient_id", "admit_date"], kind="stable")
    first = adm.drop_duplicates("patient_id")
    idx = first[first["primary_substance"] == "opioids"]
    f = pd.DataFrame({
        "pid": idx["patient_id"].to_numpy(), "admit": idx["admit_date"].to_numpy(),
        "severity": idx["severity_score"].to_numpy(dtype=float),
        "comorbid": idx["psychiatric_comorbidity"].to_numpy(dtype=float),
    })
    obs = data.observation.set_index("patient_id")["observation_end"]
    f["end"] = (f["pid"].map(obs).to_numpy() - f["admit"].to_numpy()) // np.timedelta64(1, "D")
    ev = data.events
    ev = ev[ev["patient_id"].isin(f["pid"])]
    qual = ev[((ev["event_type"] == "uds") & (ev["result"] == "positive")) | ev["event_type"].isin(RELAPSE_EVENTS)]
    q = qual.merge(f[["pid", "admit"]], left_on="patient_id", right_on="pid")
    q_day = (q["event_date"] - q["admit"]).dt.days
    q = q.assign(day=q_day)[q_day > blanking_days]
    rel = q.groupby("pid")["day"].min()
    f["relapse_day"] = f["pid"].map(rel)
    f["relapse"] = (f["relapse_day"].notna() & (f["relapse_day"] <= f["end"])).astype(float)
    f["days"] = np.where(f["relapse"] == 1, f["relapse_day"], f["end"]).astype(float)
    med = data.medications
    med = med[med["medication"].isin(OPIOID_MOUD) & med["patient_id"].isin(f["pid"])]
    m = med.merge(f[["pid", "admit"]], left_on="patient_id", right_on="pid")
    m_day = (m["dispense_date"] - m["admit"]).dt.days
    # the index episode's dispensings: from admission to the day before the person's next admission
    nxt = adm.groupby("patient_id")["admit_date"].nth(1)
    next_day = ((m["patient_id"].map(pd.Series(nxt.to_numpy(), index=adm.loc[nxt.index, "patient_id"]))
                 - m["admit"]).dt.days).fillna(np.inf)
    ok = (m_day >= 0) & (m_day < next_day)
    start = m[ok].assign(day=m_day[ok]).groupby("pid")["day"].min()
    f["moud_day"] = f["pid"].map(start).astype(float)
    f.loc[f["moud_day"] > f["days"], "moud_day"] = np.nan
    return f[f["days"] > 0][["pid", "days", "relapse", "moud_day", "severity", "comorbid"]].reset_index(drop=True)


def naive(f: pd.DataFrame, grace: int, horizon: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Initiators (start <= grace) vs the rest, KM from admission; RD and its Greenwood SE."""
    out = []
    for grp in (f["moud_day"] <= grace, ~(f["moud_day"] <= grace)):
        km = fit_km(f[grp.to_numpy()], duration_col="days", event_col="relapse").tidy
        row = km[km["time"] <= horizon].iloc[-1]
        out.append((1 - row["survival"], row["std_error"]))
    rd = out[0][0] - out[1][0]
    return rd, float(np.hypot(out[0][1], out[1][1]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the recorded settings (reps 200, n 5000, boot 100)")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--n", type=int, default=5000, help="people per simulated cohort (about 35%% opioid)")
    ap.add_argument("--boot", type=int, default=100, help="bootstrap replicates per CCW fit")
    ap.add_argument("--grace", type=int, default=30)
    ap.add_argument("--horizon", type=int, default=365)
    ap.add_argument("--deviation-time", default="linear", choices=("constant", "linear", "quadratic"))
    ap.add_argument("--grace-weights", default="natural", choices=("natural", "regime"),
                    help="clone_censor_weight(grace_weights=): weights of the start clones inside the grace period")
    ap.add_argument("--truth-n", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--out", default="", help="write the per-replicate estimates to this CSV")
    a = ap.parse_args(argv)
    if a.quick:
        a.reps, a.n, a.boot = 200, 5000, 100
    t0, c0 = time.perf_counter(), time.process_time()
    tr = strategy_risks(EFFECTS, grace_days=a.grace, horizon_days=[a.grace, a.horizon], n_patients=a.truth_n,
                        strategies=("natural", "start", "no_start"), seed=a.seed + 1)
    at_g = tr[tr["horizon_days"] == a.grace].set_index("strategy")["risk"]
    truth = tr[tr["horizon_days"] == a.horizon].set_index("strategy")
    rd_true = truth.loc["start", "risk"] - truth.loc["no_start", "risk"]
    # what CCW with weight 1 for "start" clones in the grace period targets (Maringe et al. 2020): the natural
    # course up to the end of the grace period, then the "start" regime's hazard: 1 - S_nat(G) S_start(h) / S_start(G)
    hybrid = 1 - (1 - at_g["natural"]) * (1 - truth.loc["start", "risk"]) / (1 - at_g["start"])
    rd_hybrid = hybrid - truth.loc["no_start", "risk"]
    rd_mc = float(np.hypot(truth.loc["start", "mc_se"], truth.loc["no_start", "mc_se"]))
    rng = np.random.default_rng(a.seed)
    rows = []
    for _ in tqdm(range(a.reps), desc="replicates"):
        data = simulate_cohort(a.n, seed=rng, effects=EFFECTS, progress=False)
        f = analysis_frame(data, EFFECTS["blanking_days"])
        res = clone_censor_weight(f, id_col="pid", time_col="days", event_col="relapse", treatment_time_col="moud_day",
                                  grace_days=a.grace, covariates=["severity", "comorbid"], horizon_days=a.horizon,
                                  n_bootstrap=a.boot, seed=rng, deviation_time=a.deviation_time, progress=False,
                                  grace_weights=a.grace_weights)
        g = res.glance.iloc[0]
        bse = float(res.extra["bootstrap"]["risk_difference"].std(ddof=1))
        nv, nv_se = naive(f, a.grace, a.horizon)
        rows.append({"n_index": len(f), "ccw": g["risk_difference"], "ccw_lo": g["rd_conf_low"],
                     "ccw_hi": g["rd_conf_high"], "ccw_se": bse, "risk_start": g["risk_start"],
                     "risk_no_start": g["risk_no_start"], "naive": nv, "naive_se": nv_se})
    r = pd.DataFrame(rows)
    if a.out:
        r.to_csv(a.out, index=False)
    print(f"truth: risk start {truth.loc['start', 'risk']:.4f}, no_start {truth.loc['no_start', 'risk']:.4f}, "
          f"natural {truth.loc['natural', 'risk']:.4f}; RD {rd_true:.4f} (MC SE {rd_mc:.4f}, "
          f"{a.truth_n:,} episodes per arm)")
    print(f"{a.reps} replicates; cohort n = {a.n} (mean {r['n_index'].mean():.0f} opioid index episodes); grace "
          f"{a.grace}, horizon {a.horizon}; bootstrap B = {a.boot}; deviation_time {a.deviation_time}; grace_weights "
          f"{a.grace_weights}; seed {a.seed}")
    print("| estimator | mean RD (truth) | bias | bias / SD | SD | mean SE | coverage |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    z = 1.959963984540054
    for name, est, se, lo, hi in (
        ("CCW, percentile bootstrap", r["ccw"], r["ccw_se"], r["ccw_lo"], r["ccw_hi"]),
        ("naive initiators vs not, Greenwood", r["naive"], r["naive_se"], r["naive"] - z * r["naive_se"],
         r["naive"] + z * r["naive_se"]),
    ):
        sd = est.std(ddof=1)
        cov = ((lo <= rd_true) & (rd_true <= hi)).mean()
        print(f"| {name} | {est.mean():.4f} ({rd_true:.4f}) | {est.mean() - rd_true:+.4f} | "
              f"{(est.mean() - rd_true) / sd:+.2f} | {sd:.4f} | {se.mean():.4f} | {cov:.3f} |")
    print(f"CCW arms: mean risk start {r['risk_start'].mean():.4f} (truth {truth.loc['start', 'risk']:.4f}), "
          f"no_start {r['risk_no_start'].mean():.4f} (truth {truth.loc['no_start', 'risk']:.4f})")
    if a.grace > EFFECTS["blanking_days"] and a.grace_weights == "natural":
        cov_h = ((r["ccw_lo"] <= rd_hybrid) & (rd_hybrid <= r["ccw_hi"])).mean()
        print(f"CCW vs the natural-course-in-grace target: risk start {hybrid:.4f}, RD {rd_hybrid:.4f}; bias "
              f"{r['ccw'].mean() - rd_hybrid:+.4f} ({(r['ccw'].mean() - rd_hybrid) / r['ccw'].std(ddof=1):+.2f} SD), "
              f"coverage {cov_h:.3f}")
    print(f"wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
