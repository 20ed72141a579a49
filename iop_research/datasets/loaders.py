"""Bundled and public datasets.

The demo cohort
---------------
``iop_research/datasets/demo/`` (package data, so it ships in the wheel) holds a
simulated cohort made by ``iop-research simulate`` with :data:`DEMO_SEED` and
:data:`DEMO_N_PATIENTS` (see its ``README.md``). :func:`load_demo` reads it from
any working directory, with no re-simulation.

Public real-world data
----------------------
:func:`load_uis` (UMASS Aids Research Unit Impact Study, Hosmer, Lemeshow & May) and
:func:`load_help` (HELP randomised trial) read the Rdatasets CSVs from a path, or download
them once from the public Rdatasets site into the same user cache, and return one-row-per-
episode analysis frames with ``time`` and ``event`` (R's ``Surv(time, event)``).
:func:`read_teds_d` reads SAMHSA TEDS-D public-use files (see :mod:`iop_research.datasets.teds`).
Every loader records the rows it excluded, with the reason, in ``attrs["attrition"]``
(:func:`loader_attrition`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from iop_research.exceptions import DataReadError, DataValidationError, format_ids
from iop_research.datasets.teds import read_teds_d, teds_attrition, teds_missing, write_teds_d_like

__all__ = ["load_demo", "demo_truth", "demo_path", "DEMO_SEED", "DEMO_N_PATIENTS", "DEMO_FORMAT",
           "load_uis", "load_help", "uis_treatment_phases", "loader_attrition", "read_teds_d",
           "teds_attrition", "teds_missing", "write_teds_d_like", "UIS_URL", "HELP_URL"]

#: Public Rdatasets copy of the UIS data (R package quantreg).
UIS_URL = "https://vincentarelbundock.github.io/Rdatasets/csv/quantreg/uis.csv"
#: Public Rdatasets copy of the HELP trial data (R package mosaicData).
HELP_URL = "https://vincentarelbundock.github.io/Rdatasets/csv/mosaicData/HELPrct.csv"

#: Seed of the committed demo cohort.
DEMO_SEED = 20261127
#: Number of patients in the committed demo cohort.
DEMO_N_PATIENTS = 3000
#: File format of the committed demo cohort (deterministic gzip-compressed CSV).
DEMO_FORMAT = "csv.gz"

#: The demo cohort, shipped inside the package (package data), so a wheel works from any directory.
_DEMO_DIR = Path(__file__).resolve().parent / "demo"


def _cache_dir() -> Path:
    base = os.environ.get("IOP_RESEARCH_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iop-research"


def demo_path() -> Path:
    """Directory of the demo cohort shipped inside the package (``iop_research/datasets/demo``)."""
    return _DEMO_DIR


def load_demo(*, validate: bool = True):
    """Load the demo cohort (simulated; no real patient) as a validated :class:`IOPData`.

    Parameters
    ----------
    validate : bool, default True
        Validate against the data contract on load.

    Returns
    -------
    IOPData
        The six tables (``truth`` is None; :func:`demo_truth` gives the
        simulator's truth for the demo cohort).

    Examples
    --------
    >>> from iop_research import load_demo
    >>> demo = load_demo()
    >>> sorted(demo.tables())[:3]
    ['admissions', 'events', 'medications']
    """
    from iop_research.data.io import read_data

    path = demo_path()
    if not (path / f"patients.{DEMO_FORMAT}").exists():
        raise DataReadError(
            f"The demo cohort is missing from this installation ({path}). Reinstall iop-research, or "
            "rebuild it with `iop-research simulate --n-patients 3000 --seed 20261127 --out <that folder>`."
        )
    return read_data(path, validate=validate)


def demo_truth():
    """The simulator's ``truth`` for the demo cohort (re-simulated from the recorded seed).

    Returns
    -------
    object
        ``simulate_cohort(DEMO_N_PATIENTS, seed=DEMO_SEED).truth``.
    """
    from iop_research.data.synth import simulate_cohort

    return simulate_cohort(DEMO_N_PATIENTS, seed=DEMO_SEED, progress=False).truth


# ---------------------------------------------------------------------------
# UIS and HELP
# ---------------------------------------------------------------------------


def _download(url: str, dest: Path) -> None:  # pragma: no cover - network; tests monkeypatch it
    """Fetch ``url`` into ``dest`` atomically (temporary file, then rename)."""
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    os.close(fd)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
            shutil.copyfileobj(resp, fh)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _resolve(path, url: str, name: str) -> Path:
    if path is not None:
        return Path(path)
    dest = _cache_dir() / "rdatasets" / name
    if not dest.exists():
        try:
            _download(url, dest)
        except OSError as exc:
            raise DataReadError(
                f"Could not download {url} into {dest} ({exc}). Download the file by hand and pass "
                "its path, e.g. load_uis('uis.csv'), or set IOP_RESEARCH_CACHE to a folder holding "
                f"rdatasets/{name}.") from exc
    return dest


def _read_csv(path: Path, what: str, required: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise DataReadError(f"{what} file not found: {path}. Pass the path of the CSV (or None to "
                            "download it).") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataReadError(f"{what} file {path} is empty (no header, no rows). Download it again, or pass "
                            "None to fetch the Rdatasets copy into the cache.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataReadError(f"Could not read {what} file {path}: {exc}. Expected the Rdatasets CSV "
                            "(comma-separated, header row).") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1 and any(d in str(df.columns[0]) for d in ";\t|"):
            hint = " The file does not look comma-separated."
        raise DataValidationError(
            f"{what} file {path} lacks column(s) {', '.join(missing)} (found: "
            f"{format_ids(list(df.columns), 10)}).{hint} Use the Rdatasets CSV as published.",
            problems=pd.DataFrame([{"table": what, "column": c, "check": "column_present", "n_failures": 1,
                                    "examples": "", "fix": "add the column"} for c in missing]))
    return df


def _numeric(df: pd.DataFrame, cols: list[str], what: str, path: Path) -> pd.DataFrame:
    out = {}
    problems = []
    for c in cols:
        conv = pd.to_numeric(df[c], errors="coerce")
        bad = conv.isna() & df[c].notna()
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())
            problems.append(f"- {c}: {len(rows)} non-numeric value(s) "
                            f"{format_ids(df[c].iloc[rows].map(repr))} at CSV line(s) {format_ids(rows + 2)}")
        out[c] = conv
    if problems:
        raise DataValidationError(f"{what} file {path} has non-numeric values in numeric columns:\n"
                                  + "\n".join(problems) + "\nCorrect these cells (leave them empty if missing).")
    return df.assign(**out)


def _attrition(n_file: int, excluded: list[tuple[str, int, str]]) -> list[dict]:
    rows = [{"step": "rows in file", "n_remaining": n_file, "n_excluded": 0, "reason": ""}]
    n = n_file
    for step, k, reason in excluded:
        n -= k
        rows.append({"step": step, "n_remaining": n, "n_excluded": k, "reason": reason})
    return rows


def loader_attrition(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows read and excluded by :func:`load_uis`, :func:`load_help` or :func:`read_teds_d`.

    Parameters
    ----------
    frame : pandas.DataFrame
        A frame returned by one of the loaders (before ``attrs`` are dropped).

    Returns
    -------
    pandas.DataFrame
        Columns ``step, n_remaining, n_excluded, reason``.

    Raises
    ------
    DataValidationError
        When the frame carries no attrition.
    """
    rows = frame.attrs.get("attrition", frame.attrs.get("teds_attrition"))
    if rows is None:
        raise DataValidationError("This frame carries no loader attrition (attrs['attrition']); pass the "
                                  "frame returned by load_uis, load_help or read_teds_d.")
    return pd.DataFrame(rows, columns=["step", "n_remaining", "n_excluded", "reason"])


_UIS_COLUMNS = ["ID", "AGE", "BECK", "HC", "IV", "NDT", "RACE", "TREAT", "SITE", "LEN.T", "TIME", "CENSOR"]
_UIS_CODES = {
    "HC": ("hc", {1: "both", 2: "heroin_only", 3: "cocaine_only", 4: "neither"}),
    "IV": ("iv", {1: "never", 2: "previous", 3: "recent"}),
    "RACE": ("race", {0: "white", 1: "non_white"}),
    "TREAT": ("treat", {0: "short", 1: "long"}),
    "SITE": ("site", {0: "A", 1: "B"}),
}


def load_uis(path: str | Path | None = None) -> pd.DataFrame:
    """The UIS residential-treatment study as a one-row-per-episode analysis frame.

    UMASS AIDS Research Unit Impact Study (Hosmer, Lemeshow & May [1]_): drug users
    randomised to a short or long planned residential stay at two sites; outcome is time from
    admission to return to drug use. The file's ``CENSOR`` is, despite its name, the event
    indicator (1 = returned to drugs). Rows with a missing value in a used column are
    excluded and counted (the Rdatasets copy has none: 575 complete cases).

    Parameters
    ----------
    path : str or pathlib.Path, optional
        The Rdatasets ``uis.csv``. Default None: download :data:`UIS_URL` once into the user
        cache (``$IOP_RESEARCH_CACHE`` or ``~/.cache/iop-research/rdatasets/``).

    Returns
    -------
    pandas.DataFrame
        Columns ``episode_id`` (``ID`` as text), ``site`` (``"A"``/``"B"``, the cohort),
        ``treat`` (``"short"``/``"long"``), ``treat_long`` (0/1), ``los_days`` (``LEN.T``,
        days in treatment), ``time`` (``TIME``, days from admission to relapse or
        censoring), ``event`` (``CENSOR``: 1 relapse, 0 censored), ``age``, ``beck`` (Beck
        depression score), ``hc`` (heroin/cocaine use: both, heroin_only, cocaine_only,
        neither), ``iv`` (IV drug use: never, previous, recent), ``ndt`` (prior drug
        treatments), ``race`` (white, non_white), ``frac`` (compliance ``FRAC``). Categorical
        columns keep the codebook order (first level = reference). ``attrs["attrition"]``.

    Raises
    ------
    DataReadError
        File missing or unreadable, or the download failed.
    DataValidationError
        Columns missing (listed), non-numeric values (column and lines named), codes outside
        the codebook.

    References
    ----------
    .. [1] Hosmer, D. W., Lemeshow, S. & May, S. (2008). Applied Survival Analysis, 2nd ed.
       Wiley, section 1.3 and chapters 5-7.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "uis.csv"
    >>> _ = f.write_text("rownames,ID,AGE,BECK,HC,IV,NDT,RACE,TREAT,SITE,LEN.T,TIME,CENSOR\\n"
    ...                  "1,1,39,9,4,3,1,0,1,0,123,188,1\\n2,2,33,34,4,2,8,0,1,0,25,26,1\\n")
    >>> load_uis(f)[["episode_id", "treat", "site", "los_days", "time", "event", "iv"]]
      episode_id treat site  los_days  time  event        iv
    0          1  long    A       123   188      1    recent
    1          2  long    A        25    26      1  previous
    """
    path = _resolve(path, UIS_URL, "uis.csv")
    raw = _read_csv(path, "UIS", _UIS_COLUMNS)
    extra = ["FRAC"] if "FRAC" in raw.columns else []
    df = _numeric(raw, _UIS_COLUMNS + extra, "UIS", path)
    incomplete = df[_UIS_COLUMNS].isna().any(axis=1).to_numpy()
    df = df.loc[~incomplete].reset_index(drop=True)
    problems = []
    for col, (_, codes) in _UIS_CODES.items():
        bad = ~df[col].isin(list(codes))
        if bad.any():
            problems.append(f"- {col}: value(s) {format_ids(sorted(set(df.loc[bad, col])))} (ID "
                            f"{format_ids(df.loc[bad, 'ID'])}); allowed {sorted(codes)}")
    bad_ev = ~df["CENSOR"].isin([0, 1])
    if bad_ev.any():
        problems.append(f"- CENSOR: values other than 0/1 (ID {format_ids(df.loc[bad_ev, 'ID'])})")
    bad_t = (df["TIME"] <= 0) | (df["LEN.T"] < 0)
    if bad_t.any():
        problems.append(f"- TIME <= 0 or LEN.T < 0 (ID {format_ids(df.loc[bad_t, 'ID'])})")
    if problems:
        raise DataValidationError(f"UIS file {path} has values outside the codebook:\n" + "\n".join(problems)
                                  + "\nCorrect these cells, or use the Rdatasets CSV as published (codebook: "
                                  "Hosmer, Lemeshow & May, 2008, Table 1.3).")
    out = pd.DataFrame({"episode_id": df["ID"].astype(np.int64).astype(str)})

    def cat(col):
        name, codes = _UIS_CODES[col]
        return pd.Categorical(df[col].astype(int).map(codes), categories=list(codes.values()))

    out["site"] = cat("SITE")
    out["treat"] = cat("TREAT")
    out["treat_long"] = df["TREAT"].astype(np.int64)
    out["los_days"] = df["LEN.T"].astype(np.int64)
    out["time"] = df["TIME"].astype(np.int64)
    out["event"] = df["CENSOR"].astype(np.int64)
    out["age"] = df["AGE"].astype(np.int64)
    out["beck"] = df["BECK"].astype(float)
    out["hc"] = cat("HC")
    out["iv"] = cat("IV")
    out["ndt"] = df["NDT"].astype(np.int64)
    out["race"] = cat("RACE")
    if extra:
        out["frac"] = df["FRAC"].astype(float)
    out.attrs["attrition"] = _attrition(len(raw), [
        ("complete cases", int(incomplete.sum()), "missing value in " + ", ".join(_UIS_COLUMNS))])
    out.attrs["source"] = str(path)
    return out


def uis_treatment_phases(uis: pd.DataFrame) -> pd.DataFrame:
    """Split each UIS episode at treatment exit: ``(start, stop]`` rows with ``in_treatment``.

    Follow-up runs from admission (day 0) to ``time``; the first row covers the stay in
    treatment ``(0, min(los_days, time)]`` with ``in_treatment = 1``, the second, when the
    person was still followed after exit, ``(los_days, time]`` with ``in_treatment = 0``.
    The event sits on the last row. This is the time-varying "off treatment" covariate of
    Hosmer, Lemeshow & May [1]_ (section 7.3), as R's
    ``survSplit`` / ``tmerge(..., in_treatment = tdc(los_days))`` (our ``in_treatment`` is
    1 - their ``off``).

    Parameters
    ----------
    uis : pandas.DataFrame
        Output of :func:`load_uis` (columns ``episode_id, los_days, time, event``; others are
        carried). Not modified.

    Returns
    -------
    pandas.DataFrame
        ``episode_id, start, stop, event, in_treatment`` followed by the other columns.

    Raises
    ------
    DataValidationError
        Required columns missing.

    References
    ----------
    .. [1] Hosmer, D. W., Lemeshow, S. & May, S. (2008). Applied Survival Analysis, 2nd ed.
       Wiley, section 7.3.

    Examples
    --------
    >>> d = pd.DataFrame({"episode_id": ["1", "2"], "los_days": [123, 30], "time": [188, 26],
    ...                   "event": [1, 1]})
    >>> uis_treatment_phases(d)[["episode_id", "start", "stop", "event", "in_treatment"]]
      episode_id  start  stop  event  in_treatment
    0          1      0   123      0             1
    1          1    123   188      1             0
    2          2      0    26      1             1
    """
    need = ["episode_id", "los_days", "time", "event"]
    missing = [c for c in need if c not in uis.columns]
    if missing:
        raise DataValidationError(f"uis_treatment_phases: column(s) {', '.join(missing)} missing; pass "
                                  "the frame from load_uis.")
    los = uis["los_days"].to_numpy()
    t = uis["time"].to_numpy()
    ev = uis["event"].to_numpy()
    split = t > los
    first = uis.assign(start=0, stop=np.where(split, los, t), event=np.where(split, 0, ev), in_treatment=1)
    second = uis.loc[split].assign(start=los[split], stop=t[split], event=ev[split], in_treatment=0)
    out = pd.concat([first, second]).sort_index(kind="stable").reset_index(drop=True)
    front = ["episode_id", "start", "stop", "event", "in_treatment"]
    return out[front + [c for c in uis.columns if c not in front]]


_HELP_COLUMNS = ["id", "treat", "substance", "daysanysub", "anysubstatus", "age", "female", "racegrp",
                 "homeless", "cesd", "mcs", "pcs", "i1", "pss_fr", "satreat"]


def load_help(path: str | Path | None = None) -> pd.DataFrame:
    """The HELP trial as a one-row-per-detox-episode frame: time to first substance use.

    Health Evaluation and Linkage to Primary Care (Samet et al. [1]_): adults recruited from
    an inpatient detoxification unit, randomised to a linkage clinic (``treat``) or usual
    care. The outcome is days from detox to first use of any substance (``daysanysub``,
    ``anysubstatus``); subjects whose status or time is missing are excluded and counted
    in ``attrs["attrition"]`` (209 of 453 in the Rdatasets copy).

    Parameters
    ----------
    path : str or pathlib.Path, optional
        The Rdatasets ``HELPrct.csv``. Default None: download :data:`HELP_URL` once into the
        user cache.

    Returns
    -------
    pandas.DataFrame
        Columns ``episode_id`` (``id`` as text), ``treat`` (``"no"``/``"yes"``: linkage
        clinic), ``treat_linkage`` (0/1), ``substance`` (alcohol, cocaine, heroin), ``time``
        (``daysanysub``), ``event`` (``anysubstatus``: 1 used, 0 censored), ``age``,
        ``female`` (0/1), ``racegrp``, ``homeless`` (housed/homeless), ``cesd``, ``mcs``,
        ``pcs``, ``i1`` (drinks per day), ``pss_fr``, ``satreat`` (no/yes).
        ``attrs["attrition"]``.

    Raises
    ------
    DataReadError
        File missing or unreadable, or the download failed.
    DataValidationError
        Columns missing, non-numeric values in numeric columns, ``anysubstatus`` other
        than 0/1, negative times.

    References
    ----------
    .. [1] Samet, J. H., Larson, M. J., Horton, N. J., et al. (2003). Linking alcohol- and
       drug-dependent adults to primary medical care: a randomized controlled trial of a
       multi-disciplinary health intervention in a detoxification unit. Addiction 98(4), 509-516.
    """
    path = _resolve(path, HELP_URL, "HELPrct.csv")
    raw = _read_csv(path, "HELP", _HELP_COLUMNS)
    df = _numeric(raw, ["id", "daysanysub", "anysubstatus", "age", "female", "cesd", "mcs", "pcs", "i1",
                        "pss_fr"], "HELP", path)
    missing_outcome = (df["anysubstatus"].isna() | df["daysanysub"].isna()).to_numpy()
    df = df.loc[~missing_outcome].reset_index(drop=True)
    bad = ~df["anysubstatus"].isin([0, 1]) | (df["daysanysub"] < 0)
    if bad.any():
        raise DataValidationError(
            f"HELP file {path}: {int(bad.sum())} row(s) with anysubstatus not 0/1 or negative daysanysub "
            f"(id {format_ids(df.loc[bad, 'id'])}). Correct the source rows.")
    for col, allowed in (("treat", ["no", "yes"]), ("substance", ["alcohol", "cocaine", "heroin"])):
        off = ~df[col].isin(allowed)
        if off.any():
            raise DataValidationError(f"HELP file {path}: {col} must be one of {allowed}; found "
                                      f"{format_ids(sorted(set(df.loc[off, col].astype(str))))} "
                                      f"(id {format_ids(df.loc[off, 'id'])}). Correct the source rows, or "
                                      "recode them to these values before loading.")
    out = pd.DataFrame({
        "episode_id": df["id"].astype(np.int64).astype(str),
        "treat": pd.Categorical(df["treat"], categories=["no", "yes"]),
        "treat_linkage": (df["treat"] == "yes").astype(np.int64),
        "substance": pd.Categorical(df["substance"], categories=["alcohol", "cocaine", "heroin"]),
        "time": df["daysanysub"].astype(float),
        "event": df["anysubstatus"].astype(np.int64),
        "age": df["age"].astype(float),
        "female": df["female"].astype(float),
        "racegrp": pd.Categorical(df["racegrp"]),
        "homeless": pd.Categorical(df["homeless"]),
        "cesd": df["cesd"].astype(float),
        "mcs": df["mcs"].astype(float),
        "pcs": df["pcs"].astype(float),
        "i1": df["i1"].astype(float),
        "pss_fr": df["pss_fr"].astype(float),
        "satreat": pd.Categorical(df["satreat"]),
    })
    out.attrs["attrition"] = _attrition(len(raw), [
        ("time to first use known", int(missing_outcome.sum()), "anysubstatus or daysanysub missing")])
    out.attrs["source"] = str(path)
    return out
