"""Command-line interface: ``iop-research simulate | validate | report``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_simulate(args) -> int:
    from iop_research.data.synth import simulate_cohort

    data = simulate_cohort(args.n_patients, seed=args.seed)
    out = data.write(args.out, format=args.format)
    counts = ", ".join(f"{k} {len(v):,}" for k, v in data.tables().items())
    print(f"Wrote simulated cohort (seed {args.seed}, {args.n_patients:,} patients) to {out}: {counts}")
    return 0


def _cmd_validate(args) -> int:
    from iop_research.exceptions import DataReadError, DataValidationError
    from iop_research.data.io import read_data

    try:
        data = read_data(args.path, validate=True)
    except DataReadError as exc:
        print(f"Could not read {args.path}:\n{exc}", file=sys.stderr)
        return 2
    except DataValidationError as exc:
        print(f"{args.path} breaks the data contract:\n{exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{k} {len(v):,}" for k, v in data.tables().items())
    print(f"{args.path}: valid ({counts})")
    return 0


def _cmd_report(args) -> int:
    from iop_research.exceptions import IopError
    from iop_research.reports.build import build_reports

    try:
        params = {}
        if args.params is not None:
            from iop_research.reports.config import read_study_config

            params = read_study_config(args.params)
        data = args.data if args.data is not None else params.pop("data_path", None)
        params.pop("data_path", None)
        outcome = build_reports(
            out_dir=args.out, data=data, parameters=params, no_input=args.no_input,
            notebooks=args.notebooks or None, max_workers=args.jobs, progress=not args.quiet,
        )
    except IopError as exc:
        print(f"iop-research report failed: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote {len(outcome.reports)} reports and {outcome.index} in {outcome.seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from iop_research.datasets.loaders import DEMO_FORMAT, DEMO_N_PATIENTS, DEMO_SEED

    p = argparse.ArgumentParser(prog="iop-research", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a simulated IOP cohort (one file per table)")
    s.add_argument("--n-patients", type=int, default=DEMO_N_PATIENTS)
    s.add_argument("--seed", type=int, default=DEMO_SEED)
    s.add_argument("--out", type=Path, required=True, help="output directory")
    s.add_argument("--format", choices=["csv", "csv.gz", "parquet"], default=DEMO_FORMAT)
    s.set_defaults(func=_cmd_simulate)

    v = sub.add_parser("validate", help="check a data directory against the data contract")
    v.add_argument("path", type=Path)
    v.set_defaults(func=_cmd_validate)

    r = sub.add_parser("report", help="execute the notebooks and write HTML reports")
    r.add_argument("--data", type=Path, default=None, help="data directory (default: the demo cohort)")
    r.add_argument("--params", type=Path, default=None, help="study configuration file (TOML)")
    r.add_argument("--out", type=Path, default=Path("reports"))
    r.add_argument("--no-input", action="store_true", help="hide code cells")
    r.add_argument("--notebooks", nargs="*", type=Path, help="only these notebooks")
    r.add_argument("--jobs", "-j", type=int, default=None,
                   help="notebooks executed at once (default: min(2, number of CPUs))")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_report)
    return p


def main(argv=None) -> int:
    """Entry point of the ``iop-research`` command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
