"""Benchmark: wall time of ``iop-research report`` on the demo data, parallel vs sequential.

Runs the command ``make report`` runs (``iop-research report --out <dir>``,
default ``--jobs`` = min(2, CPUs)) into a temporary directory, then, as the
baseline in the same session, the same build with ``--jobs 1`` (the same code
path executing one notebook at a time; chosen over ``jupyter nbconvert
--execute`` so that the only difference is the parallelism). Each build runs
in a fresh process; prints, per build, the wall time, the run time of every
notebook (from ``provenance.json``), the CPU seconds used by the build and its
kernels (``RUSAGE_CHILDREN``) and the 1-minute load average before and after
(the machine may be shared: CPU seconds / CPUs is the wall time an idle
machine could reach). Writes nothing into the repository.

Usage: ``.venv/bin/python benchmarks/bench_report.py [--notebooks NB ...] [--jobs N] [--no-baseline] [--json]``
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("iop-research")
    return [str(script)] if script.exists() else [sys.executable, "-m", "iop_research.reports.cli"]


def run_build(jobs: int | None, notebooks: list[str] | None) -> dict:
    """One ``iop-research report`` run in a temporary directory; returns its figures."""
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        out = Path(tmp) / "reports"
        cmd = _cli() + ["report", "--out", str(out), "--quiet"]
        if jobs is not None:
            cmd += ["--jobs", str(jobs)]
        if notebooks:
            cmd += ["--notebooks", *notebooks]
        load_before = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        load_after = os.getloadavg()[0]
        if proc.returncode != 0:
            raise SystemExit(f"build failed (jobs={jobs}):\n{proc.stderr[-3000:]}")
        record = json.loads((out / "provenance.json").read_text())
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "jobs": record["max_workers"],
        "wall_seconds": round(wall, 1),
        "build_seconds": record["run_seconds"],
        "cpu_seconds": round(cpu, 1),
        "load_before": round(load_before, 2),
        "load_after": round(load_after, 2),
        "notebooks": {k: v["run_seconds"] for k, v in record["notebooks"].items()},
    }


def _print(label: str, r: dict, n_cpu: int) -> None:
    print(f"{label}: jobs={r['jobs']}, wall {r['wall_seconds']:.1f} s (build {r['build_seconds']:.1f} s), "
          f"CPU {r['cpu_seconds']:.1f} s (idle-machine bound ~{r['cpu_seconds'] / n_cpu:.0f} s on {n_cpu} CPUs), "
          f"load average {r['load_before']:.1f} -> {r['load_after']:.1f}")
    for name, sec in r["notebooks"].items():
        print(f"    {name:<40s} {sec:6.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="*", default=None, help="only these notebooks (default: all)")
    parser.add_argument("--jobs", type=int, default=None, help="workers of the parallel build (default as make report)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the sequential (--jobs 1) baseline")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON as well")
    args = parser.parse_args(argv)
    n_cpu = os.cpu_count() or 1
    results = {"cpus": n_cpu}
    print(f"{n_cpu} CPUs; 1/5/15-minute load average at start: "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    results["parallel"] = par = run_build(args.jobs, args.notebooks)
    _print("parallel  ", par, n_cpu)
    if not args.no_baseline:
        results["sequential"] = seq = run_build(1, args.notebooks)
        _print("sequential", seq, n_cpu)
        print(f"speed-up {seq['wall_seconds'] / par['wall_seconds']:.2f}x")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
