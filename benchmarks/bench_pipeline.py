"""Benchmark of the data-preparation pipeline at claims scale.

Generates (fast, vectorised numpy) about 10 million sessions and 1 million MAT dispensings
for about 300,000 patients, writes them as Parquet under ``benchmarks/_work/`` (git-ignored),
and times each pipeline step on DuckDB, with the process's peak resident memory after each
step (``resource.getrusage(...).ru_maxrss``; DuckDB runs in process, so it is included).

Sections are plain functions registered in ``STEPS`` (name -> callable(context) -> dict of
figures). ``counting_process`` calls the public
:func:`iop_research.derive.frames.counting_process_frame` on the episodes and eras of the two steps
before it, with generated events (about 2 per patient), one observation cut-off and a
patients table (the whole function: relapse outcomes, interval splitting, baseline
covariates). The summary line adds episodes + eras + counting process and checks the
targets of the issue (under 60 s, peak memory under 6 GB, at least 10x the pandas baseline);
the load average before and after the run is printed with it, as other jobs on the machine
slow every step down.

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
import os
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
OBSERVATION_END = np.datetime64("2024-12-31", "D")
EVENT_TYPES = np.array(["uds", "self_report_use", "aftercare_contact", "overdose", "death"])
EVENT_P = np.array([0.70, 0.10, 0.17, 0.02, 0.01])


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
    # outcomes for the counting-process frame: about 2 dated events per patient in the 3 years
    # after entry (urine drug screens, a quarter positive; self-reported use; aftercare
    # contacts; a few deaths), one observation cut-off for everyone, birth year and sex
    n_ev = 2 * n_patients
    ep_ = rng.integers(0, n_patients, n_ev)
    etype = EVENT_TYPES[np.searchsorted(np.cumsum(EVENT_P), rng.random(n_ev) * EVENT_P.sum(), side="right")]
    result = np.where(etype == "uds", np.where(rng.random(n_ev) < 0.25, "positive", "negative"), None)
    events = pa.table({
        "patient_id": _ids("P", ep_),
        "event_date": pa.array(DAY0 + (entry[ep_] + rng.integers(0, 3 * 365, n_ev)).astype("timedelta64[D]"),
                               type=pa.date32()),
        "event_type": pa.array(etype),
        "result": pa.array(result, type=pa.string()),
        "substance": pa.nulls(n_ev, type=pa.string()),
    })
    observation = pa.table({
        "patient_id": _ids("P", np.arange(n_patients)),
        "observation_end": pa.array(np.full(n_patients, OBSERVATION_END), type=pa.date32()),
    })
    patients = pa.table({
        "patient_id": _ids("P", np.arange(n_patients)),
        "birth_year": pa.array(rng.integers(1950, 2005, n_patients)),
        "sex": pa.array(np.array(["female", "male"])[rng.integers(0, 2, n_patients)]),
    })
    tables = {"sessions": sessions, "medications": meds, "events": events, "observation": observation,
              "patients": patients}
    paths = {}
    for name, table in tables.items():
        paths[name] = WORK / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return paths


# --------------------------------------------------------------------------- steps
def step_episodes(ctx: dict) -> dict:
    from iop_research.derive.episodes import build_episodes

    t = time.perf_counter()
    ep = build_episodes(ctx["paths"]["sessions"], mode="sessions", gap_days=30)
    secs = time.perf_counter() - t
    ctx["episodes"] = ep
    att = pd.DataFrame(ep.attrs["attrition"])
    return {"seconds": secs, "episodes": len(ep), "sessions_unassigned": int(att.rows_removed.sum())}


def step_eras(ctx: dict) -> dict:
    from iop_research.derive.exposures import medication_eras

    t = time.perf_counter()
    eras = medication_eras(ctx["paths"]["medications"], grace_days=30)
    secs = time.perf_counter() - t
    ctx["eras"] = eras
    return {"seconds": secs, "eras": len(eras)}


def step_counting_process(ctx: dict) -> dict:
    """The public ``counting_process_frame`` on the episodes and eras of the steps before.

    Its input is an IOPData of the generated events, observation and patients (read from
    Parquet into pandas outside the timing); the call itself computes relapse outcomes
    (first positive UDS / self-reported use / overdose / readmission after a 7-day blanking
    period, death competing), splits every episode's follow-up at era starts and ends,
    discharge and first aftercare contact, and adds the baseline covariates.
    """
    import pyarrow.parquet as pq

    from iop_research.derive.frames import counting_process_frame
    from iop_research.data.io import IOPData

    if "episodes" not in ctx or "eras" not in ctx:
        raise SystemExit("the counting_process step needs the episodes and eras steps before it")
    tables = {name: pq.read_table(ctx["paths"][name]).to_pandas() for name in ("events", "observation", "patients")}
    for name, col in (("events", "event_date"), ("observation", "observation_end")):
        tables[name][col] = pd.to_datetime(tables[name][col])
    empty = pd.DataFrame()
    data = IOPData(patients=tables["patients"], admissions=empty, sessions=empty, medications=empty,
                   events=tables["events"], observation=tables["observation"])
    t = time.perf_counter()
    cp = counting_process_frame(data, episodes=ctx["episodes"], eras=ctx["eras"])
    secs = time.perf_counter() - t
    return {"seconds": secs, "rows": len(cp), "episodes": int(cp["episode_id"].nunique()),
            "events": int(cp["event"].sum())}


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
    "counting_process": step_counting_process,
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
    load0 = os.getloadavg()
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
    core = [n for n in ("episodes", "eras", "counting_process") if n in results]
    total = sum(results[n]["seconds"] for n in core)
    if core:
        print(f"total {' + '.join(core)}: {total:.1f} s (target < 60 s); peak RSS {peak_rss_mb():,.0f} MiB "
              f"(target < 6,144 MiB)")
    if "episodes" in results and "pandas_baseline" in results:
        base = results["pandas_baseline"]["seconds_extrapolated"]
        ratio = base / results["episodes"]["seconds"]
        print(f"speed ratio: pandas groupby-apply gap rule (extrapolated from "
              f"{results['pandas_baseline']['patients_subsample']:,} patients) / DuckDB build_episodes "
              f"(all measures) = {ratio:.1f}x (target >= 10x); / {' + '.join(core)} = {base / total:.1f}x")
    print(f"load average (1, 5, 15 min): before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
