"""Benchmark: a full study report (every question) on a simulated cohort read from parquet.

Two runs, each in its own process tree (the report build starts one kernel per report):

* ``--n-patients 100000`` (default): ``simulate_cohort`` writes the cohort as parquet to
  ``benchmarks/_work/study_<n>/data`` (git-ignored; the simulation is not timed), then
  ``build_reports`` runs the study report templates of all six questions with a study
  file that asks for none (so every question the data allow runs, the modality question with
  its documented default exposure). Target: under 3 minutes and 8 GB.
* ``--demo``: the same study on the bundled demo cohort. Target: under 2 minutes.

Timed: the whole ``build_reports`` call (reading and preparing the study once, the six
notebooks two at a time, the publishing channel's suppression and audit, HTML export, the
privacy gate, the joint audit of every report's ledger). Peak memory is the largest
resident set of this process and its children (kernels), sampled every 0.5 s. CPU seconds
(user + system) of the build process and of the kernels it ran are recorded beside the wall
time: on a shared machine they depend much less on the load than the wall time does.

Usage: ``.venv/bin/python benchmarks/bench_study.py [--n-patients 100000] [--demo] [--jobs 2]``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "_work"
sys.path.insert(0, str(REPO))


def _rss_tree_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


class PeakMemory:
    """Samples the resident memory of this process tree in a thread."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_tree_bytes(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def run(data_dir: Path | None, out: Path, jobs: int, pattern_gate: bool = True) -> dict:
    from iop_research.reports.build import build_reports

    load_start = os.getloadavg()
    cpu0 = os.times()
    t0 = time.perf_counter()
    with PeakMemory() as mem:
        outcome = build_reports(out_dir=out, data=data_dir, parameters={"study": {}}, progress=False,
                                max_workers=jobs, gate=None if pattern_gate else False)
    seconds = time.perf_counter() - t0
    cpu1 = os.times()
    nb = outcome.provenance["notebooks"]
    return {"seconds": round(seconds, 1), "peak_rss_gib": round(mem.peak / 2**30, 2),
            # CPU of this process (study preparation, export, gate, audit) and of its finished children (kernels)
            "cpu_seconds": {"build_process": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
                            "kernels": round(cpu1.children_user + cpu1.children_system
                                             - cpu0.children_user - cpu0.children_system, 1)},
            "reports": [p.name for p in outcome.reports],
            "per_report_seconds": {k: v["run_seconds"] for k, v in nb.items()},
            "build_stage_seconds": outcome.provenance["study"].get("stage_seconds"),
            "ledger_audit": outcome.provenance["study"]["ledger_audit"],
            "load_average_start": load_start, "load_average_end": os.getloadavg()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-patients", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--demo", action="store_true", help="the bundled demo cohort instead of a simulated one")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-pattern-gate", action="store_true",
                    help="skip the pattern scan of the HTML (the channel allow-list still runs); for timing only")
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.demo:
        data_dir, label = None, "demo"
    else:
        from iop_research.data.synth import simulate_cohort

        data_dir = WORK / f"study_{args.n_patients}" / "data"
        if not (data_dir / "sessions.parquet").is_file():
            t = time.perf_counter()
            simulate_cohort(args.n_patients, seed=args.seed).write(data_dir, format="parquet")
            print(f"simulated {args.n_patients:,} patients in {time.perf_counter() - t:.1f} s (not timed)")
        label = f"{args.n_patients:,} simulated patients (parquet)"
    res = run(data_dir, WORK / f"study_report_{'demo' if args.demo else args.n_patients}", args.jobs,
              pattern_gate=not args.no_pattern_gate)
    print(json.dumps({"data": label, "pattern_gate": not args.no_pattern_gate, **res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
