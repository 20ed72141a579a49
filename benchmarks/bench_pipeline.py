"""Benchmark of the data-preparation pipeline at claims scale.

Generates (fast, vectorised numpy) about 10 million sessions and 1 million MAT dispensings
for about 300,000 patients, writes them as Parquet under ``benchmarks/_work/`` (git-ignored),
and times each pipeline step on DuckDB, with the process's peak resident memory after each
step (``resource.getrusage(...).ru_maxrss``; DuckDB runs in process, so it is included).

Sections are plain functions registered in ``STEPS`` (name -> callable(context) -> dict of
figures); a later step (e.g. the counting-process frame) adds a function and one entry.

Run from the repository root::

    .venv/bin/python benchmarks/bench_pipeline.py                  # full size
    .venv/bin/python benchmarks/bench_pipeline.py --patients 20000  # quick look

The pandas baseline is the idiomatic ``groupby(...).apply`` with a per-patient Python
function for the gap rule alone (less work than ``build_episodes``, which also computes
attendance, ASAM weeks, modality mix and attrition); it runs on a random subsample of
patients and its time is extrapolated linearly in the number of patients (stated in the
output).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "_work"
sys.path.insert(0, str(REPO))

MODALITIES = np.array(["individual", "group", "family", "education", "holistic"])
MEDICATIONS = np.array(["methadone", "buprenorphine", "naltrexone_xr", "naltrexone_oral", "acamprosate"])
DAY0 = np.datetime64("2018-01-01", "D")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _ids(prefix: str, idx: np.ndarray):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(pa.array(idx), pa.string()), "")


def make_data(n_patients: int, n_sessions: int, n_dispensings: int, seed: int) -> dict[str, Path]:
    """Write sessions.parquet and medications.parquet; return their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    WORK.mkdir(parents=True, exist_ok=True)
    # sessions: patients get a share of the rows; consecutive session days are 1-4 days apart,
    # with a 2% chance of a 40-150 day break (a new episode under a 30-day gap rule)
    weights = rng.gamma(2.0, 1.0, n_patients)
    counts = rng.multinomial(n_sessions, weights / weights.sum())
    pid = np.repeat(np.arange(n_patients), counts)
    step = np.where(rng.random(n_sessions) < 0.02, rng.integers(40, 151, n_sessions), rng.integers(1, 5, n_sessions))
    first = np.zeros(n_sessions, dtype=bool)
    starts = np.cumsum(counts) - counts
    first[starts[counts > 0]] = True
    step[first] = 0
    cum = np.cumsum(step)
    offset = np.repeat(cum[starts] , counts)
    entry = rng.integers(0, 5 * 365, n_patients)
    day = entry[pid] + cum - offset
    sessions = pa.table({
        "patient_id": _ids("P", pid),
        "session_date": pa.array(DAY0 + day.astype("timedelta64[D]"), type=pa.date32()),
        "modality": pa.array(MODALITIES[rng.integers(0, 5, n_sessions)]),
        "minutes": pa.array(rng.choice(np.array([60, 90, 180]), n_sessions)),
        "attended": pa.array(rng.random(n_sessions) < 0.85),
    })
    # dispensings: a third of the patients on one medication, refills mostly on time
    on = rng.choice(n_patients, n_patients // 3, replace=False)
    dcounts = rng.multinomial(n_dispensings, np.full(on.size, 1.0 / on.size))
    dp = np.repeat(on, dcounts)
    med = MEDICATIONS[rng.integers(0, MEDICATIONS.size, on.size)]
    dmed = np.repeat(med, dcounts)
    supply = np.select([dmed == "methadone", dmed == "buprenorphine", dmed == "naltrexone_xr"],
                       [rng.choice(np.array([1, 1, 1, 7]), dp.size), rng.choice(np.array([7, 14, 30]), dp.size),
                        np.ones(dp.size, dtype=np.int64)], 30)
    gap = np.where(rng.random(dp.size) < 0.1, rng.integers(3, 60, dp.size), 0)
    dstarts = np.cumsum(dcounts) - dcounts
    step = np.roll(np.where(dmed == "naltrexone_xr", 28, supply), 1) + gap
    dfirst = np.zeros(dp.size, dtype=bool)
    dfirst[dstarts[dcounts > 0]] = True
    step[dfirst] = 0
    dcum = np.cumsum(step)
    dday = entry[dp] + dcum - np.repeat(dcum[dstarts], dcounts)
    meds = pa.table({
        "patient_id": _ids("P", dp),
        "medication": pa.array(dmed),
        "dispense_date": pa.array(DAY0 + dday.astype("timedelta64[D]"), type=pa.date32()),
        "days_supply": pa.array(supply.astype(np.int64)),
    })
    paths = {"sessions": WORK / "sessions.parquet", "medications": WORK / "medications.parquet"}
    pq.write_table(sessions, paths["sessions"])
    pq.write_table(meds, paths["medications"])
    return paths


# --------------------------------------------------------------------------- steps
def step_episodes(ctx: dict) -> dict:
    from iop_research.episodes import build_episodes

    t = time.perf_counter()
    ep = build_episodes(ctx["paths"]["sessions"], mode="sessions", gap_days=30)
    secs = time.perf_counter() - t
    ctx["episodes"] = ep
    att = pd.DataFrame(ep.attrs["attrition"])
    return {"seconds": secs, "episodes": len(ep), "sessions_unassigned": int(att.rows_removed.sum())}


def step_eras(ctx: dict) -> dict:
    from iop_research.exposures import medication_eras

    t = time.perf_counter()
    eras = medication_eras(ctx["paths"]["medications"], grace_days=30)
    secs = time.perf_counter() - t
    return {"seconds": secs, "eras": len(eras)}


def _pandas_gap_episodes(g: pd.DataFrame, gap_days: int) -> pd.DataFrame:
    """Idiomatic per-patient gap rule, as people write it with groupby-apply."""
    d = g.loc[g["attended"], "session_date"].drop_duplicates().sort_values()
    n = (d.diff().dt.days > gap_days).cumsum().to_numpy() + 1
    return pd.DataFrame({"admit_date": d.groupby(n).min(), "discharge_date": d.groupby(n).max()})


def step_pandas_baseline(ctx: dict) -> dict:
    """groupby-apply on a subsample of patients, extrapolated linearly to all patients."""
    import pyarrow.parquet as pq

    s = pq.read_table(ctx["paths"]["sessions"], columns=["patient_id", "session_date", "attended"]).to_pandas()
    s["session_date"] = pd.to_datetime(s["session_date"])
    pids = s["patient_id"].unique()
    rng = np.random.default_rng(ctx["seed"])
    k = min(ctx["baseline_patients"], pids.size)
    sub = s[s["patient_id"].isin(rng.choice(pids, k, replace=False))]
    t = time.perf_counter()
    out = sub.groupby("patient_id")[["session_date", "attended"]].apply(_pandas_gap_episodes, gap_days=30)
    secs = time.perf_counter() - t
    scale = pids.size / k
    ep = ctx.get("episodes")
    same = None
    if ep is not None:  # the subsample's episodes agree with the engine's
        mine = ep[ep.patient_id.isin(sub.patient_id.unique())]
        same = len(mine) == len(out) and sorted(mine.admit_date) == sorted(out.admit_date)
    return {"seconds_subsample": secs, "patients_subsample": int(k), "seconds_extrapolated": secs * scale,
            "episodes_subsample": len(out), "agrees_with_engine": same}


STEPS = {
    "episodes": step_episodes,
    "eras": step_eras,
    "pandas_baseline": step_pandas_baseline,
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=300_000)
    ap.add_argument("--sessions", type=int, default=10_000_000)
    ap.add_argument("--dispensings", type=int, default=1_000_000)
    ap.add_argument("--baseline-patients", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps to run")
    args = ap.parse_args(argv)
    scale = args.patients / 300_000
    n_sessions = args.sessions if args.patients == 300_000 else int(args.sessions * scale)
    n_disp = args.dispensings if args.patients == 300_000 else int(args.dispensings * scale)
    t = time.perf_counter()
    paths = make_data(args.patients, n_sessions, n_disp, args.seed)
    print(f"data: {args.patients:,} patients, {n_sessions:,} sessions, {n_disp:,} dispensings "
          f"generated in {time.perf_counter() - t:.1f} s; peak RSS {peak_rss_mb():,.0f} MiB", flush=True)
    ctx = {"paths": paths, "seed": args.seed, "baseline_patients": args.baseline_patients}
    results = {}
    for name in args.steps.split(","):
        res = STEPS[name](ctx)
        res["peak_rss_mib"] = peak_rss_mb()
        results[name] = res
        print(f"{name}: " + ", ".join(f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in res.items()), flush=True)
    if "episodes" in results and "pandas_baseline" in results:
        ratio = results["pandas_baseline"]["seconds_extrapolated"] / results["episodes"]["seconds"]
        print(f"speed ratio: pandas groupby-apply gap rule (extrapolated from "
              f"{results['pandas_baseline']['patients_subsample']:,} patients) / DuckDB build_episodes "
              f"(all measures) = {ratio:.1f}x")


if __name__ == "__main__":
    main()
