"""Marginal rates of the synthetic cohort next to the design brief's targets.

Usage: ``python benchmarks/synth_marginals.py [n_patients] [seed]`` (defaults
50000 and 20260101). Prints one line per rate with the target and the
accepted band, and exits with status 1 if any rate is outside its band.
"""
from __future__ import annotations

import sys
import time

from iop_research.data.synth import _MARGINAL_TARGETS, _marginal_rates, simulate_cohort


def main(argv: list[str]) -> int:
    n = int(argv[1]) if len(argv) > 1 else 50_000
    seed = int(argv[2]) if len(argv) > 2 else 20260101
    t = time.perf_counter()
    data = simulate_cohort(n, seed=seed, progress=False)
    elapsed = time.perf_counter() - t
    print(f"simulate_cohort({n}, seed={seed}): {elapsed:.1f} s; {data!r}")
    rates = _marginal_rates(data)
    failed = []
    print(f"{'rate':32s} {'value':>8s} {'target':>8s}  band")
    for name, (target, low, high) in _MARGINAL_TARGETS.items():
        value = rates[name]
        ok = low <= value <= high
        if not ok:
            failed.append(name)
        print(f"{name:32s} {value:8.3f} {target:8.3f}  [{low:g}, {high:g}] {'ok' if ok else 'OUT OF BAND'}")
    if failed:
        print(f"{len(failed)} rate(s) outside their band: {', '.join(failed)}")
        return 1
    print("all rates within their bands")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
