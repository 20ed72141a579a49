"""Time read_teds_d on a ten-year, 15-million-row TEDS-format CSV; report peak memory.

Run from the repository root: ``.venv/bin/python benchmarks/bench_teds.py [n_rows] [--labelled N]``.

1. Writes a TEDS-D-format file of ``n_rows`` discharges (default 15,000,000; years
   2012-2021; seed 2026) to ``benchmarks/_work/`` (git-ignored), unless it already exists,
   and reports the generation time and file size.
2. Reads it with ``read_teds_d`` (IOP episodes only) in a fresh child process and reports
   wall-clock seconds and the child's peak resident memory (``ru_maxrss``), which
   includes DuckDB's buffers. Targets: < 90 s and < 6 GB.
3. With ``--labelled N``: the same for an N-row labelled (2021-style) file.

One run each (the machine is shared; no repetition loop).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
YEARS = tuple(range(2012, 2022))

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from iop_research.datasets.teds import read_teds_d, teds_attrition
t0 = time.perf_counter()
df = read_teds_d({path!r})
secs = time.perf_counter() - t0
att = teds_attrition(df)
print(json.dumps({{"seconds": secs, "rows_out": len(df), "rows_file": int(att["n_remaining"].iloc[0]),
                  "frame_mb": float(df.memory_usage(deep=True).sum() / 2**20),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""


def generate(path: Path, n_rows: int, labelled: bool) -> None:
    from iop_research.datasets.teds import write_teds_d_like

    if path.exists():
        print(f"using existing {path} ({path.stat().st_size / 2**30:.2f} GiB)")
        return
    t0 = time.perf_counter()
    write_teds_d_like(path, n_rows=n_rows, years=YEARS if not labelled else (2021,), seed=2026,
                      labelled=labelled)
    print(f"generated {n_rows:,} rows in {time.perf_counter() - t0:.1f} s -> {path} "
          f"({path.stat().st_size / 2**30:.2f} GiB)")


def read(path: Path) -> dict:
    code = _CHILD.format(root=str(ROOT), path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"read_teds_d: {out['seconds']:.1f} s, {out['rows_file']:,} rows in file -> {out['rows_out']:,} IOP "
          f"episodes, frame {out['frame_mb']:.0f} MB, peak RSS {out['peak_rss_gb']:.2f} GB")
    return out


def main(argv: list[str]) -> None:
    n_rows = int(argv[0]) if argv and not argv[0].startswith("--") else 15_000_000
    WORK.mkdir(parents=True, exist_ok=True)
    coded = WORK / f"teds_d_{n_rows}.csv"
    generate(coded, n_rows, labelled=False)
    res = read(coded)
    print(f"targets: time < 90 s {'met' if res['seconds'] < 90 else 'MISSED'}; "
          f"memory < 6 GB {'met' if res['peak_rss_gb'] < 6 else 'MISSED'}")
    if "--labelled" in argv:
        n_lab = int(argv[argv.index("--labelled") + 1])
        lab = WORK / f"teds_d_labelled_{n_lab}.csv"
        generate(lab, n_lab, labelled=True)
        read(lab)


if __name__ == "__main__":
    main(sys.argv[1:])
