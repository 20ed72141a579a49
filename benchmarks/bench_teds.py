"""Time read_teds_d on a 15-million-row TEDS-D CSV and a 1.5-million-row Stata file; report peak memory.

Run from the repository root:
``.venv/bin/python benchmarks/bench_teds.py [n_rows] [--stata N] [--labelled N] [--baseline]``.

1. Writes a TEDS-D file of the 2006-2014 layout (the concatenated file SAMHSA publishes has
   14.5 million rows; default 15,000,000 rows; seed 2026) to ``benchmarks/_work/``
   (git-ignored), unless it already exists, and reports the generation time and file size.
2. Reads it with ``read_teds_d`` (IOP episodes only) in a fresh child process and reports
   wall-clock seconds, the child's CPU seconds (user + system, all threads: what the read
   costs whatever else runs on the machine) and its peak resident memory (``ru_maxrss``),
   which includes DuckDB's buffers. Targets: < 90 s and < 6 GB.
3. ``--stata N`` (default 1,500,000): writes an N-row 2019-layout file as Stata ``.dta`` (a CSV
   from ``write_teds_d_like`` converted with ``pyreadstat.write_dta``) and reads it the same
   way. Target: < 120 s.
4. ``--labelled N`` (default 1,500,000): the same for an N-row 2021 labelled CSV.
5. ``--baseline``: after each read, the plain-pandas route in a fresh child for comparison
   (``pandas.read_csv`` of the same columns as int16, or ``pandas.read_stata``, then the IOP
   filter; no decoding, no checks), with its time and peak memory.

One run each (the machine is shared; no repetition loop).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from iop_research.datasets.teds import read_teds_d, teds_attrition
t0 = time.perf_counter()
df = read_teds_d({path!r})
secs = time.perf_counter() - t0
att = teds_attrition(df)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": secs, "rows_out": len(df), "rows_file": int(att["n_remaining"].iloc[0]),
                  "frame_mb": float(df.memory_usage(deep=True).sum() / 2**20),
                  "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 2**20}}))
"""


def generate(path: Path, n_rows: int, layout: str) -> None:
    from iop_research.datasets.teds import write_teds_d_like

    if path.exists():
        print(f"using existing {path} ({path.stat().st_size / 2**30:.2f} GiB)")
        return
    t0 = time.perf_counter()
    write_teds_d_like(path, n_rows=n_rows, layout=layout, seed=2026)
    print(f"generated {n_rows:,} rows ({layout} layout) in {time.perf_counter() - t0:.1f} s -> {path} "
          f"({path.stat().st_size / 2**30:.2f} GiB)")


def to_stata(csv_path: Path, dta_path: Path) -> None:
    import pandas as pd
    import pyreadstat

    if dta_path.exists():
        print(f"using existing {dta_path} ({dta_path.stat().st_size / 2**30:.2f} GiB)")
        return
    t0 = time.perf_counter()
    pyreadstat.write_dta(pd.read_csv(csv_path, encoding="latin-1"), dta_path)
    print(f"wrote {dta_path} in {time.perf_counter() - t0:.1f} s ({dta_path.stat().st_size / 2**30:.2f} GiB)")


_BASELINE = r"""
import json, resource, sys, time
import pandas as pd
path = {path!r}
cols = ["CASEID", "DISYR", "STFIPS", {setting!r}, "REASON", "LOS", "METHUSE", "FREQ1", "SUB1", "NOPRIOR",
        "PSYPROB", "GENDER", "AGE", "RACE", "ETHNIC"]
t0 = time.perf_counter()
if path.endswith(".dta"):
    df = pd.read_stata(path, columns=cols, convert_categoricals=False)
else:
    df = pd.read_csv(path, usecols=cols, encoding="latin-1", dtype={{c: "int16" for c in cols[2:]}})
df = df[df[{setting!r}] == 6]
secs = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"seconds": secs, "rows_out": len(df), "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_rss_gb": usage.ru_maxrss / 2**20}}))
"""


def baseline(path: Path, setting: str) -> dict:
    code = _BASELINE.format(path=str(path), setting=setting)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  baseline pandas ({path.name}): {out['seconds']:.1f} s, {out['rows_out']:,} IOP rows, "
          f"CPU {out['cpu_seconds']:.1f} s, peak RSS {out['peak_rss_gb']:.2f} GB (load average {os.getloadavg()[0]:.1f})")
    return out


def read(path: Path) -> dict:
    code = _CHILD.format(root=str(ROOT), path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"read_teds_d({path.name}): {out['seconds']:.1f} s, {out['rows_file']:,} rows in file -> "
          f"{out['rows_out']:,} IOP episodes, frame {out['frame_mb']:.0f} MB, CPU {out['cpu_seconds']:.1f} s, "
          f"peak RSS {out['peak_rss_gb']:.2f} GB "
          f"(load average {os.getloadavg()[0]:.1f})")
    return out


def _option(argv: list[str], name: str, default: int) -> int | None:
    if name not in argv:
        return None
    i = argv.index(name)
    return int(argv[i + 1]) if i + 1 < len(argv) and not argv[i + 1].startswith("--") else default


def main(argv: list[str]) -> None:
    n_rows = int(argv[0]) if argv and not argv[0].startswith("--") else 15_000_000
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"load average at start {os.getloadavg()[0]:.1f}")
    if n_rows > 0:
        coded = WORK / f"teds_d_2006_2014_{n_rows}.csv"
        generate(coded, n_rows, "2006-2014")
        res = read(coded)
        if "--baseline" in argv:
            baseline(coded, "SERVSETD")
        print(f"targets: time < 90 s {'met' if res['seconds'] < 90 else 'MISSED'}; "
              f"memory < 6 GB {'met' if res['peak_rss_gb'] < 6 else 'MISSED'}")
    n_stata = _option(argv, "--stata", 1_500_000)
    if n_stata:
        csv_2019 = WORK / f"teds_d_2019_{n_stata}.csv"
        generate(csv_2019, n_stata, "2015-2019")
        dta = csv_2019.with_suffix(".dta")
        to_stata(csv_2019, dta)
        res = read(dta)
        if "--baseline" in argv:
            baseline(dta, "SERVICES_D")
        print(f"target: Stata time < 120 s {'met' if res['seconds'] < 120 else 'MISSED'}")
        read(csv_2019)
    n_lab = _option(argv, "--labelled", 1_500_000)
    if n_lab:
        lab = WORK / f"teds_d_2021_labelled_{n_lab}.csv"
        generate(lab, n_lab, "2020+")
        read(lab)


if __name__ == "__main__":
    main(sys.argv[1:])
