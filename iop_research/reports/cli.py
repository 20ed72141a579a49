"""Command line: ``iop-research simulate | validate | map | init-study | report``.

Exit status
-----------
0  success
1  the input breaks the data contract (``validate``, ``map``), the study file is invalid, or a
   report failed (a notebook raised, or the privacy gate stopped it)
2  usage error: unknown option, a missing or absurd argument (``--n-patients -5``,
   ``--jobs 0``, ``--out`` naming a file), an unknown ``--notebooks`` name
3  an input cannot be read: the data directory, study file or mapping file is missing, is
   not what it should be, or a file in it is empty, damaged or not UTF-8
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path

from iop_research.exceptions import IopError

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "EXIT_UNREADABLE"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3

#: Largest simulated cohort the command line accepts (use the Python API beyond this).
MAX_SIMULATED_PATIENTS = 10_000_000
#: Largest number of notebooks run at once.
MAX_JOBS = 64

_EPILOG = """exit status: 0 success; 1 contract problems, invalid study file or report failure;
2 usage error; 3 unreadable input (data directory, study or mapping file)."""


# ----------------------------------------------------------------------------- argument types


class _Help(argparse.HelpFormatter):
    """Help text with the default appended where there is one worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "default" not in text):
            text += " (default: %(default)s)"
        return text


def _int_between(low: int, high: int | None, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low:,} and {high:,}" if high is not None else f"at least {low:,}"
            raise argparse.ArgumentTypeError(f"{what} must be {bound}, got {value:,}")
        return value
    parse.__name__ = what  # argparse names the type in its messages
    return parse


def _out_dir(text: str) -> Path:
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; give a directory (it is created if needed)")
    return p


def _existing_file(text: str) -> Path:
    return Path(text)  # existence is checked by the command (exit 3, not a usage error)


# ----------------------------------------------------------------------------- commands


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _cmd_simulate(args) -> int:
    from iop_research.data.synth import simulate_cohort

    data = simulate_cohort(args.n_patients, seed=args.seed)
    out = data.write(args.out, format=args.format)
    counts = ", ".join(f"{k} {len(v):,}" for k, v in data.tables().items())
    print(f"Wrote simulated cohort (seed {args.seed}, {args.n_patients:,} patients) to {out}: {counts}")
    return EXIT_OK


def _cmd_validate(args) -> int:
    from iop_research.data.io import read_data
    from iop_research.exceptions import DataReadError, DataValidationError

    try:
        data = read_data(args.path, validate=True, tolerance_days=args.tolerance_days)
    except DataReadError as exc:
        _err(f"Could not read {args.path}:\n{exc}")
        return EXIT_UNREADABLE
    except DataValidationError as exc:
        _err(f"{args.path} breaks the data contract:\n{exc}")
        return EXIT_PROBLEMS
    counts = ", ".join(f"{k} {len(v):,}" for k, v in data.tables().items())
    print(f"{args.path}: valid ({counts})")
    return EXIT_OK


def _cmd_map(args) -> int:
    from iop_research.data.mapping import MappingError, map_extract
    from iop_research.exceptions import DataReadError

    if not args.mapping.is_file():
        what = "is not a file" if args.mapping.exists() else "does not exist"
        _err(f"Mapping file {args.mapping} {what}. `iop-research init-study DIR` writes one to start from.")
        return EXIT_UNREADABLE
    try:
        data, report = map_extract(args.mapping, args.out, format=args.format)
    except DataReadError as exc:
        _err(f"Could not read the extract:\n{exc}")
        return EXIT_UNREADABLE
    except MappingError as exc:
        where = f"\nThe mapping report is in {args.out / 'mapping_report.md'}." if exc.report is not None else ""
        _err(f"iop-research map failed: {exc}{where}")
        return EXIT_PROBLEMS
    counts = ", ".join(f"{k} {len(v):,}" for k, v in data.tables().items())
    print(f"Mapped {args.mapping} to {args.out}: {counts}. {len(report.unmapped)} source value(s) not mapped, "
          f"{int(report.dropped['n_rows'].sum()):,} row(s) dropped; see {args.out / 'mapping_report.md'}.")
    return EXIT_OK


def _cmd_init_study(args) -> int:
    from iop_research.data.mapping import mapping_template
    from iop_research.reports.config import study_file_template

    targets = {args.dir / "study.toml": study_file_template(), args.dir / "mapping.toml": mapping_template()}
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.force:
        _err(f"{', '.join(existing)} already exist(s); nothing was written. Pass --force to overwrite, or "
             "choose another directory.")
        return EXIT_USAGE
    args.dir.mkdir(parents=True, exist_ok=True)
    for path, text in targets.items():
        path.write_text(text, encoding="utf-8")
    print(f"Wrote {args.dir / 'study.toml'} and {args.dir / 'mapping.toml'}. Next: put your extract in "
          f"{args.dir / 'extract'}, edit mapping.toml, run `iop-research map {args.dir / 'mapping.toml'} "
          f"{args.dir / 'data'}`, set [data] path = \"data\" in study.toml, then "
          f"`iop-research report --params {args.dir / 'study.toml'} --out {args.dir / 'reports'}`.")
    return EXIT_OK


def _notebook_title(path: Path) -> str:
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # unreadable notebook: list it without a title
        return ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def _available(study: bool) -> list[tuple[str, str, Path]]:
    """(name, title, path) of the notebooks ``report`` runs: study templates or tutorials."""
    from iop_research.reports import build

    list_reports = getattr(build, "list_reports", None)
    templates_dir = Path(getattr(build, "TEMPLATES_DIR", Path(build.__file__).resolve().parent / "templates"))
    if list_reports is not None:
        entries = [(name, title, Path(path)) for name, title, path in list_reports()]
        chosen = [e for e in entries if (Path(e[2]).parent == templates_dir) == study]
        if chosen:
            return chosen
    folder = templates_dir if study else build.DEFAULT_NOTEBOOKS_DIR
    if not folder.is_dir():
        return []
    return [(p.stem, _notebook_title(p), p) for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))]


def _resolve_notebooks(values: list[str], study: bool) -> list[Path]:
    """Names as listed by ``report --list`` (``03_relapse``, ``03``, ``relapse``) or paths."""
    available = _available(study)
    out = []
    for value in values:
        p = Path(value)
        if p.suffix == ".ipynb" and p.is_file():
            out.append(p)
            continue
        key = value[:-6] if value.endswith(".ipynb") else value
        hits = [path for name, _t, path in available
                if key in (name, name.split("_", 1)[0], name.split("_", 1)[-1])]
        if len(hits) != 1:
            kind = "study report templates" if study else "tutorial notebooks"
            names = ", ".join(name for name, _t, _p in available)
            problem = "is neither a notebook file nor a name" if not hits else "matches several names"
            raise _UsageError(f"--notebooks {value!r} {problem} of the {kind} ({names}); see "
                              f"`iop-research report --list`{' --params ...' if study else ''}.")
        out.append(hits[0])
    return out


class _UsageError(IopError):
    pass


def _cmd_report_list(args) -> int:
    for study, heading in ((False, "Tutorials (iop-research report; demo data, teaching material)"),
                           (True, "Study report templates (iop-research report --params study.toml)")):
        entries = _available(study)
        print(heading + ":")
        if not entries:
            print("  (none installed)")
        for name, title, _path in entries:
            print(f"  {name:<28} {title}")
        print()
    print("Pass names (or paths to your own notebooks) to --notebooks; a number such as 03 also works.")
    return EXIT_OK


def _data_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a data directory (cheap checks before any notebook runs), or None."""
    from iop_research.data.io import FORMATS
    from iop_research.data.schema import REQUIRED_TABLES

    if not path.exists():
        return f"{path} does not exist."
    if not path.is_dir():
        return f"{path} is not a directory; --data expects a directory with one file per table."
    missing = [t for t in REQUIRED_TABLES if not any((path / f"{t}.{fmt}").is_file() for fmt in FORMATS)]
    if missing:
        return (f"{path} lacks the required table file(s) {', '.join(missing)} (.csv, .csv.gz or .parquet). "
                "For a clinic extract, map it first: iop-research map mapping.toml DIR.")
    return None


def _cmd_report(args) -> int:
    from iop_research.exceptions import DataReadError, IopError
    from iop_research.reports.build import build_reports

    if args.list:
        return _cmd_report_list(args)
    params: dict = {}
    if args.params is not None:
        from iop_research.reports.config import read_study_config

        if not args.params.is_file():
            what = "is not a file" if args.params.exists() else "does not exist"
            _err(f"Study file {args.params} {what}. `iop-research init-study DIR` writes one to start from.")
            return EXIT_UNREADABLE
        try:
            params = read_study_config(args.params)
        except IopError as exc:
            _err(f"iop-research report failed: {exc}")
            return EXIT_PROBLEMS
    data = args.data if args.data is not None else params.get("data_path")
    params.pop("data_path", None)
    if data is not None and args.data is not None:
        problem = _data_problem(Path(data))
        if problem:
            _err(f"Could not read the data: {problem}")
            return EXIT_UNREADABLE
    try:
        notebooks = _resolve_notebooks(args.notebooks, study="study" in params) if args.notebooks else None
    except _UsageError as exc:
        _err(f"iop-research report: error: {exc}")
        return EXIT_USAGE
    kwargs = dict(out_dir=args.out, data=data, parameters=params, notebooks=notebooks, max_workers=args.jobs,
                  progress=not args.quiet)
    accepted = inspect.signature(build_reports).parameters
    if "show_code" in accepted:
        kwargs["show_code"] = args.show_code
    else:  # builders before show_code: code shown unless hidden
        kwargs["no_input"] = not args.show_code
    try:
        outcome = build_reports(**kwargs)
    except DataReadError as exc:
        _err(f"Could not read the data:\n{exc}")
        return EXIT_UNREADABLE
    except IopError as exc:
        _err(f"iop-research report failed: {exc}")
        return EXIT_PROBLEMS
    print(f"Wrote {len(outcome.reports)} reports and {outcome.index} in {outcome.seconds:.1f} s")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def _version() -> str:
    from iop_research import __version__

    return f"iop-research {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from iop_research.datasets.loaders import DEMO_FORMAT, DEMO_N_PATIENTS, DEMO_SEED

    fmt = _Help
    p = argparse.ArgumentParser(
        prog="iop-research", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Outcomes research on intensive outpatient (IOP) addiction treatment: simulate or map data "
                    "onto the data contract, validate it, and build reports.", epilog=_EPILOG)
    p.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands (iop-research COMMAND --help for details)")

    s = sub.add_parser("simulate", help="write a simulated IOP cohort (one file per table)", formatter_class=fmt,
                       description="Write a simulated IOP cohort in the data contract's layout.", epilog=_EPILOG)
    s.add_argument("--n-patients", type=_int_between(1, MAX_SIMULATED_PATIENTS, "--n-patients"),
                   default=DEMO_N_PATIENTS, help="number of patients to simulate")
    s.add_argument("--seed", type=_int_between(0, 2**63 - 1, "--seed"), default=DEMO_SEED,
                   help="random seed (the same seed writes the same files)")
    s.add_argument("--out", type=_out_dir, required=True, help="output directory (created if needed)")
    s.add_argument("--format", choices=["csv", "csv.gz", "parquet"], default=DEMO_FORMAT,
                   help="file format of the tables")
    s.set_defaults(func=_cmd_simulate)

    v = sub.add_parser("validate", help="check a data directory against the data contract", formatter_class=fmt,
                       description="Read a data directory and list every data-contract problem at once.",
                       epilog=_EPILOG)
    v.add_argument("path", type=Path, help="directory with one file per table (csv, csv.gz or parquet)")
    v.add_argument("--tolerance-days", type=_int_between(0, 365, "--tolerance-days"), default=0,
                   help="days a session may lie outside its episode and still count as within it")
    v.set_defaults(func=_cmd_validate)

    m = sub.add_parser("map", help="map a clinic extract onto the data contract with a mapping file",
                       formatter_class=fmt, epilog=_EPILOG,
                       description="Apply a mapping file (TOML) to a clinic's extract: write the contract tables "
                                   "and a mapping report (mapping_report.md and CSV files) listing every source "
                                   "value not mapped and every row dropped.")
    m.add_argument("mapping", type=_existing_file, help="mapping file (TOML; `init-study` writes a commented one)")
    m.add_argument("out", type=_out_dir, help="output directory for the contract tables and the report")
    m.add_argument("--format", choices=["csv", "csv.gz", "parquet"], default="csv",
                   help="file format of the written tables")
    m.set_defaults(func=_cmd_map)

    i = sub.add_parser("init-study", help="write a commented study.toml and mapping.toml to start from",
                       formatter_class=fmt, epilog=_EPILOG,
                       description="Write DIR/study.toml (every study key, commented, with its default) and "
                                   "DIR/mapping.toml (a mapping file for a clinic extract).")
    i.add_argument("dir", type=_out_dir, help="directory to write the two files to (created if needed)")
    i.add_argument("--force", action="store_true", help="overwrite existing study.toml / mapping.toml")
    i.set_defaults(func=_cmd_init_study)

    r = sub.add_parser("report", help="execute the notebooks and write HTML reports", formatter_class=fmt,
                       epilog=_EPILOG,
                       description="Without --params: the tutorial notebooks on the demo data (or --data). With "
                                   "--params study.toml: the study report templates, as the study file says.")
    r.add_argument("--data", type=Path, default=None,
                   help="data directory in the contract's layout (default: [data] of the study file, else the "
                        "bundled demo cohort)")
    r.add_argument("--params", type=_existing_file, default=None,
                   help="study file (TOML): runs the study report templates with its settings")
    r.add_argument("--out", type=_out_dir, default=Path("reports"), help="output directory of the reports")
    r.add_argument("--show-code", action="store_true", help="show the code cells in the reports (hidden by default)")
    r.add_argument("--no-input", action="store_true",
                   help="hide the code cells (the default; kept for compatibility)")
    r.add_argument("--notebooks", nargs="+", metavar="NAME_OR_PATH",
                   help="only these notebooks: names as listed by --list (e.g. 03_relapse or 03), or paths to "
                        "your own .ipynb files")
    r.add_argument("--list", action="store_true", help="list the tutorial notebooks and study report templates "
                                                       "by name and exit")
    r.add_argument("--jobs", "-j", type=_int_between(1, MAX_JOBS, "--jobs"), default=None,
                   help="notebooks executed at once (default: min(2, number of CPUs))")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_report)
    return p


def main(argv=None) -> int:
    """Entry point of the ``iop-research`` command; returns the exit status (see module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "show_code", False) and getattr(args, "no_input", False):
        parser.print_usage(sys.stderr)
        _err("iop-research report: error: --show-code and --no-input contradict each other; pass one.")
        return EXIT_USAGE
    from iop_research.exceptions import IopError

    try:
        return int(args.func(args))
    except KeyboardInterrupt:  # pragma: no cover - interactive
        _err("interrupted")
        return 130
    except IopError as exc:  # e.g. DataWriteError: --out holds tables of another format
        _err(f"iop-research {args.command} failed: {exc}")
        return EXIT_PROBLEMS
    except BrokenPipeError:  # the reader of stdout went away (`iop-research report --list | head`): not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush cannot fail again
        except OSError:  # pragma: no cover
            pass
        return EXIT_OK
    except OSError as exc:  # e.g. permission denied writing --out
        where = f" ({exc.filename})" if exc.filename else ""
        _err(f"iop-research {args.command}: {exc.strerror or exc}{where}. Check the path and its permissions.")
        return EXIT_UNREADABLE if args.command == "validate" else EXIT_PROBLEMS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
