"""Benchmark: time and memory of ``simulate_cohort`` for 10,000 and 100,000 patients.

Each size runs in a fresh Python process so that its peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the
interpreter and imported libraries, about 150 MB) belongs to that run alone.
Prints seconds, peak memory and rows per table.

Usage: ``.venv/bin/python benchmarks/bench_synth.py [n_patients ...] [--seed 1]``
(default sizes 10000 100000).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time
from iop_research.data.synth import simulate_cohort
n, seed = int(sys.argv[1]), int(sys.argv[2])
t = time.perf_counter()
data = simulate_cohort(n, seed=seed, progress=False)
seconds = time.perf_counter() - t
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"n": n, "seconds": seconds, "peak_mb": peak_mb,
                  "rows": {k: len(v) for k, v in data.tables().items()}}))
"""


def run(n: int, seed: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(seed)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for n in args.sizes:
        r = run(n, args.seed)
        rows = ", ".join(f"{k}={v:,}" for k, v in r["rows"].items())
        total = sum(r["rows"].values())
        print(f"n_patients={n:>7,}: {r['seconds']:6.1f} s, peak RSS {r['peak_mb']:7.0f} MB, "
              f"{total:,} rows ({rows})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
