"""Write the bad-input corpus: one directory per case, each a small malformed input.

Run from the repository root::

    .venv/bin/python tests/bad_inputs/make_corpus.py

Every case starts from one valid tiny base (``_base/``: the six contract tables,
a TEDS-D-format file, UIS- and HELP-format files with made-up values, a study
configuration) and breaks one thing. Each case directory holds the input and
``case.json``: ``reader`` (which reader to call), ``target`` (the input,
relative to the case directory), ``description``, ``error`` (expected package
exception class) and ``expect`` (fragments the message must contain: table or
file, column, offending ids or rows). ``tests/test_bad_inputs.py`` runs them;
``make_readme.py`` writes ``README.md`` from a run. Output is deterministic:
re-running rewrites identical bytes.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- base
BASE: dict[str, list[dict[str, str]]] = {
    "patients": [
        dict(patient_id="P001", birth_year="1980", sex="female", race="white", ethnicity="not_hispanic"),
        dict(patient_id="P002", birth_year="1975", sex="male", race="black", ethnicity="hispanic"),
        dict(patient_id="P003", birth_year="1990", sex="male", race="", ethnicity=""),
    ],
    "admissions": [
        dict(episode_id="E01", patient_id="P001", program="Site A", admit_date="2021-01-04",
             discharge_date="2021-02-26", discharge_reason="completed", referral_source="self",
             primary_substance="opioids", psychiatric_comorbidity="false", prior_treatment_episodes="1",
             severity_score="4.5", housing="stable", employment="employed"),
        dict(episode_id="E02", patient_id="P001", program="Site A", admit_date="2021-06-01",
             discharge_date="2021-07-15", discharge_reason="dropped_out", referral_source="healthcare",
             primary_substance="opioids", psychiatric_comorbidity="true", prior_treatment_episodes="2",
             severity_score="6.0", housing="unstable", employment="unemployed"),
        dict(episode_id="E03", patient_id="P002", program="Site B", admit_date="2021-03-01",
             discharge_date="2021-04-30", discharge_reason="completed", referral_source="criminal_justice",
             primary_substance="alcohol", psychiatric_comorbidity="false", prior_treatment_episodes="0",
             severity_score="3.0", housing="stable", employment="employed"),
        dict(episode_id="E04", patient_id="P003", program="Site B", admit_date="2021-05-03",
             discharge_date="", discharge_reason="", referral_source="self",
             primary_substance="stimulants", psychiatric_comorbidity="true", prior_treatment_episodes="0",
             severity_score="", housing="homeless", employment=""),
    ],
    "sessions": [
        dict(patient_id="P001", episode_id="E01", session_date="2021-01-05", modality="group", minutes="180", attended="true"),
        dict(patient_id="P001", episode_id="E01", session_date="2021-01-07", modality="individual", minutes="60", attended="true"),
        dict(patient_id="P001", episode_id="E02", session_date="2021-06-02", modality="group", minutes="180", attended="false"),
        dict(patient_id="P002", episode_id="E03", session_date="2021-03-02", modality="family", minutes="90", attended="true"),
        dict(patient_id="P003", episode_id="E04", session_date="2021-05-04", modality="education", minutes="120", attended="true"),
        dict(patient_id="P003", episode_id="", session_date="2021-05-06", modality="holistic", minutes="60", attended="true"),
    ],
    "medications": [
        dict(patient_id="P001", medication="buprenorphine", dispense_date="2021-01-05", days_supply="14", dose_mg="16"),
        dict(patient_id="P001", medication="buprenorphine", dispense_date="2021-01-19", days_supply="14", dose_mg="16"),
        dict(patient_id="P002", medication="acamprosate", dispense_date="2021-03-02", days_supply="30", dose_mg=""),
    ],
    "events": [
        dict(patient_id="P001", event_date="2021-03-20", event_type="uds", result="positive", substance="opioids"),
        dict(patient_id="P002", event_date="2021-05-15", event_type="self_report_use", result="", substance="alcohol"),
        dict(patient_id="P003", event_date="2021-06-10", event_type="uds", result="negative", substance=""),
    ],
    "observation": [
        dict(patient_id="P001", observation_end="2021-12-31"),
        dict(patient_id="P002", observation_end="2021-12-31"),
        dict(patient_id="P003", observation_end="2021-12-31"),
    ],
}

UIS_HEADER = ["rownames", "ID", "AGE", "BECK", "HC", "IV", "NDT", "RACE", "TREAT", "SITE", "LEN.T", "TIME", "CENSOR"]
UIS_ROWS = [  # made-up values in the UIS layout (not rows of the study)
    ["1", "1", "30", "10", "1", "2", "2", "0", "0", "0", "80", "120", "1"],
    ["2", "2", "41", "22", "4", "3", "5", "1", "1", "1", "150", "400", "0"],
    ["3", "3", "27", "5", "2", "1", "0", "0", "1", "0", "60", "75", "1"],
]
HELP_HEADER = ["rownames", "id", "treat", "substance", "daysanysub", "anysubstatus", "age", "female", "racegrp",
               "homeless", "cesd", "mcs", "pcs", "i1", "pss_fr", "satreat"]
HELP_ROWS = [  # made-up values in the HELP layout
    ["1", "1", "yes", "alcohol", "30", "1", "35", "0", "white", "housed", "20", "40.5", "50.1", "10", "5", "no"],
    ["2", "2", "no", "heroin", "200", "0", "44", "1", "black", "homeless", "35", "30.2", "45.0", "0", "8", "yes"],
    ["3", "3", "yes", "cocaine", "12", "1", "29", "0", "hispanic", "housed", "15", "28.0", "55.3", "4", "2", "no"],
]
STUDY = """[cohort]
primary_substances = ["opioids", "alcohol"]
first_episode_only = false

[outcome]
blanking_days = 7
max_followup_days = 365

[privacy]
min_cell_count = 11
"""


def _csv_text(rows: list[dict[str, str]], header: list[str] | None = None, sep: str = ",") -> str:
    header = header if header is not None else (list(rows[0]) if rows else [])
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r.get(h, "") for h in header])
    return buf.getvalue()


def _rows_text(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def _base_tables() -> dict[str, list[dict[str, str]]]:
    return {t: [dict(r) for r in rows] for t, rows in BASE.items()}


def _header(table: str) -> list[str]:
    return list(BASE[table][0])


def write_tables(directory: Path, tables: dict[str, list[dict[str, str]] | str | bytes | None],
                 headers: dict[str, list[str]] | None = None) -> None:
    """Write contract tables; a str/bytes value is written verbatim, None omits the file."""
    directory.mkdir(parents=True, exist_ok=True)
    for table, rows in tables.items():
        if rows is None:
            continue
        if isinstance(rows, bytes):
            (directory / f"{table}.csv").write_bytes(rows)
        elif isinstance(rows, str):
            (directory / f"{table}.csv").write_bytes(rows.encode("utf-8"))
        else:
            head = (headers or {}).get(table, _header(table))
            (directory / f"{table}.csv").write_bytes(_csv_text(rows, head).encode("utf-8"))


# ----------------------------------------------------------------------------- cases
CASES: list[dict] = []


def case(name, *, reader, description, error, expect, target="data"):
    def deco(fn):
        CASES.append(dict(name=name, reader=reader, description=description, error=error, expect=expect,
                          target=target, build=fn))
        return fn
    return deco


def data_case(name, description, error, expect):
    """A contract-tables case: the function mutates a copy of the base tables."""
    return case(name, reader="read_data", description=description, error=error, expect=expect)


def _set(tables, table, i, **values):
    tables[table][i].update(values)
    return tables


@data_case("missing_required_file", "sessions.csv is absent (a required table)", "DataReadError",
           ["sessions"])
def _(t, d):
    t["sessions"] = None
    write_tables(d, t)


@data_case("missing_column", "admissions.csv lacks the admit_date column", "DataValidationError",
           ["admissions", "admit_date"])
def _(t, d):
    head = [h for h in _header("admissions") if h != "admit_date"]
    write_tables(d, t, headers={"admissions": head})


@data_case("misspelled_column", "admissions.csv has admision_date instead of admit_date (extra + missing column)",
           "DataValidationError", ["admissions", "admit_date"])
def _(t, d):
    for r in t["admissions"]:
        r["admision_date"] = r.pop("admit_date")
    write_tables(d, t, headers={"admissions": list(t["admissions"][0])})


@data_case("duplicate_column", "patients.csv header names sex twice", "DataReadError", ["patients", "sex"])
def _(t, d):
    t["patients"] = ("patient_id,birth_year,sex,race,ethnicity,sex\n"
                     "P001,1980,female,white,not_hispanic,female\nP002,1975,male,black,hispanic,male\n"
                     "P003,1990,male,,,male\n")
    write_tables(d, t)


@data_case("minutes_not_a_number", "sessions.minutes holds the text 'sixty'", "DataValidationError",
           ["sessions", "minutes", "P001"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 1, minutes="sixty"))


@data_case("birth_year_fractional", "patients.birth_year is 1980.5", "DataValidationError",
           ["patients", "birth_year", "P001"])
def _(t, d):
    write_tables(d, _set(t, "patients", 0, birth_year="1980.5"))


@data_case("attended_not_boolean", "sessions.attended is 'maybe'", "DataValidationError",
           ["sessions", "attended", "P002"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 3, attended="maybe"))


@data_case("unparseable_date", "admissions.admit_date is 'last spring'", "DataValidationError",
           ["admissions", "admit_date", "E02"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 1, admit_date="last spring"))


@data_case("impossible_date", "events.event_date is 2021-02-30", "DataValidationError",
           ["events", "event_date", "P001"])
def _(t, d):
    write_tables(d, _set(t, "events", 0, event_date="2021-02-30"))


@data_case("month_13", "medications.dispense_date is 2021-13-05", "DataValidationError",
           ["medications", "dispense_date", "P001"])
def _(t, d):
    write_tables(d, _set(t, "medications", 0, dispense_date="2021-13-05"))


@data_case("us_date_format", "observation.observation_end written 12/31/2021", "DataValidationError",
           ["observation", "observation_end", "P002"])
def _(t, d):
    write_tables(d, _set(t, "observation", 1, observation_end="12/31/2021"))


@data_case("datetime_with_time", "sessions.session_date carries a time of day", "DataValidationError",
           ["sessions", "session_date", "P001"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 0, session_date="2021-01-05 14:30:00"))


@data_case("discharge_before_admission", "E03 is discharged before it was admitted", "DataValidationError",
           ["admissions", "discharge_date", "E03"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 2, discharge_date="2021-02-01"))


@data_case("overlapping_episodes", "E02 starts before E01 of the same patient ends", "DataValidationError",
           ["admissions", "E02"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 1, admit_date="2021-02-01"))


@data_case("duplicate_patient_id", "patients lists P002 twice", "DataValidationError",
           ["patients", "patient_id", "P002"])
def _(t, d):
    t["patients"][2]["patient_id"] = "P002"
    t["patients"].append(dict(patient_id="P003", birth_year="1990", sex="male", race="", ethnicity=""))
    write_tables(d, t)


@data_case("duplicate_episode_id", "admissions lists E03 twice", "DataValidationError",
           ["admissions", "episode_id", "E03"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 3, episode_id="E03"))


@data_case("duplicate_observation", "observation has two rows for P001", "DataValidationError",
           ["observation", "patient_id", "P001"])
def _(t, d):
    t["observation"].append(dict(patient_id="P001", observation_end="2022-06-30"))
    write_tables(d, t)


@data_case("negative_days_supply", "medications.days_supply is -14", "DataValidationError",
           ["medications", "days_supply", "P001"])
def _(t, d):
    write_tables(d, _set(t, "medications", 1, days_supply="-14"))


@data_case("zero_days_supply", "medications.days_supply is 0", "DataValidationError",
           ["medications", "days_supply", "P002"])
def _(t, d):
    write_tables(d, _set(t, "medications", 2, days_supply="0"))


@data_case("sessions_unknown_patient", "a session of P999, who is not in patients", "DataValidationError",
           ["sessions", "P999"])
def _(t, d):
    t["sessions"].append(dict(patient_id="P999", episode_id="", session_date="2021-05-04", modality="group",
                              minutes="60", attended="true"))
    write_tables(d, t)


@data_case("sessions_unknown_episode", "a session names episode E99, which is not in admissions",
           "DataValidationError", ["sessions", "episode_id", "P003", "rows 4"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 4, episode_id="E99"))


@data_case("medications_unknown_patient", "a dispensing to P404, who is not in patients", "DataValidationError",
           ["medications", "P404"])
def _(t, d):
    t["medications"].append(dict(patient_id="P404", medication="methadone", dispense_date="2021-03-03",
                                 days_supply="1", dose_mg="60"))
    write_tables(d, t)


@data_case("events_unknown_patient", "an event of P777, who is not in patients", "DataValidationError",
           ["events", "P777"])
def _(t, d):
    t["events"].append(dict(patient_id="P777", event_date="2021-04-01", event_type="overdose", result="",
                            substance=""))
    write_tables(d, t)


@data_case("admissions_unknown_patient", "admission E04 belongs to P404, who is not in patients",
           "DataValidationError", ["admissions", "patient_id", "E04"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 3, patient_id="P404"))


@data_case("observation_missing_patient", "no observation row for P003", "DataValidationError",
           ["observation", "P003"])
def _(t, d):
    t["observation"] = t["observation"][:2]
    write_tables(d, t)


@data_case("unknown_modality", "sessions.modality is 'equine' (not in the vocabulary)", "DataValidationError",
           ["sessions", "modality", "P001", "rows 2"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 2, modality="equine"))


@data_case("unknown_medication", "medications.medication is 'suboxone' (a brand, not a contract value)",
           "DataValidationError", ["medications", "medication", "P001", "rows 0"])
def _(t, d):
    write_tables(d, _set(t, "medications", 0, medication="suboxone"))


@data_case("unknown_event_type", "events.event_type is 'relapse'", "DataValidationError",
           ["events", "event_type", "P002", "rows 1"])
def _(t, d):
    write_tables(d, _set(t, "events", 1, event_type="relapse"))


@data_case("unknown_discharge_reason", "admissions.discharge_reason is TEDS code '2' instead of a label",
           "DataValidationError", ["admissions", "discharge_reason", "E02"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 1, discharge_reason="2"))


@data_case("unknown_sex", "patients.sex is 'F'", "DataValidationError", ["patients", "sex", "P001"])
def _(t, d):
    write_tables(d, _set(t, "patients", 0, sex="F"))


@data_case("reason_without_discharge", "E04 has a discharge_reason but no discharge_date", "DataValidationError",
           ["admissions", "discharge_reason", "E04"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 3, discharge_reason="completed"))


@data_case("empty_file", "patients.csv has zero bytes", "DataReadError", ["patients"])
def _(t, d):
    t["patients"] = b""
    write_tables(d, t)


@data_case("header_only_patients", "patients.csv has a header but no rows, while sessions name patients",
           "DataValidationError", ["sessions", "P001"])
def _(t, d):
    t["patients"] = []
    write_tables(d, t)


@data_case("non_utf8_bytes", "patients.csv is Latin-1 (a byte 0xe9 in race)", "DataReadError",
           ["patients", "0xe9"])
def _(t, d):
    t["patients"] = _csv_text(_set(t, "patients", 1, race="métis")["patients"]).encode("latin-1")
    write_tables(d, t)


@data_case("semicolon_delimiter", "events.csv is separated by semicolons", "DataReadError",
           ["events", "semicolon"])
def _(t, d):
    t["events"] = _csv_text(t["events"], _header("events"), sep=";")
    write_tables(d, t)


@data_case("tab_delimiter", "medications.csv is separated by tabs", "DataReadError", ["medications", "tab"])
def _(t, d):
    t["medications"] = _csv_text(t["medications"], _header("medications"), sep="\t")
    write_tables(d, t)


@data_case("truncated_file", "sessions.csv is cut off in the middle of its last row", "DataReadError",
           ["sessions", "truncated"])
def _(t, d):
    text = _csv_text(t["sessions"], _header("sessions"))
    t["sessions"] = text[: len(text) - 20]
    write_tables(d, t)


@data_case("truncated_gzip", "sessions.csv.gz is cut off (damaged gzip stream)", "DataReadError",
           ["sessions.csv.gz"])
def _(t, d):
    blob = gzip.compress(_csv_text(t["sessions"], _header("sessions")).encode(), mtime=0)
    t["sessions"] = None
    write_tables(d, t)
    (d / "sessions.csv.gz").write_bytes(blob[: len(blob) // 2])


@data_case("unbalanced_quote", "a quoted program name in admissions.csv never closes", "DataReadError",
           ["admissions"])
def _(t, d):
    text = _csv_text(t["admissions"], _header("admissions"))
    t["admissions"] = text.replace("Site B", '"Site B', 1)
    write_tables(d, t)


@data_case("row_with_extra_fields", "a row of events.csv has two more fields than the header", "DataReadError",
           ["events"])
def _(t, d):
    text = _csv_text(t["events"], _header("events"))
    lines = text.split("\n")
    lines[2] = lines[2] + ",x,y"
    t["events"] = "\n".join(lines)
    write_tables(d, t)


@data_case("not_parquet", "patients.parquet holds CSV text, not Parquet", "DataReadError",
           ["patients.parquet"])
def _(t, d):
    text = _csv_text(t["patients"], _header("patients"))
    t["patients"] = None
    write_tables(d, t)
    (d / "patients.parquet").write_text(text)


@data_case("two_formats_one_table", "both events.csv and events.csv.gz exist", "DataReadError",
           ["events.csv", "events.csv.gz"])
def _(t, d):
    write_tables(d, t)
    (d / "events.csv.gz").write_bytes(gzip.compress((d / "events.csv").read_bytes(), mtime=0))


@data_case("nan_in_patient_key", "a session without patient_id", "DataValidationError",
           ["sessions", "patient_id"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 2, patient_id=""))


@data_case("nan_in_episode_key", "an admission without episode_id", "DataValidationError",
           ["admissions", "episode_id", "P003"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 3, episode_id=""))


@data_case("nan_string_in_key", "patients.patient_id is the text 'NaN'", "DataValidationError",
           ["NaN"])
def _(t, d):
    t = _set(t, "patients", 2, patient_id="NaN")
    write_tables(d, t)


@data_case("absurd_minutes", "a session of 10,000 minutes", "DataValidationError", ["sessions", "minutes", "P003"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 5, minutes="10000"))


@data_case("absurd_birth_year", "patients.birth_year is 1850", "DataValidationError",
           ["patients", "birth_year", "P002"])
def _(t, d):
    write_tables(d, _set(t, "patients", 1, birth_year="1850"))


@data_case("severity_out_of_range", "admissions.severity_score is 11 on a 0-10 scale", "DataValidationError",
           ["admissions", "severity_score", "E01"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 0, severity_score="11"))


@data_case("negative_prior_episodes", "admissions.prior_treatment_episodes is -1", "DataValidationError",
           ["admissions", "prior_treatment_episodes", "E03"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 2, prior_treatment_episodes="-1"))


@data_case("event_after_observation_end", "an event dated after the patient's observation_end",
           "DataValidationError", ["events", "observation_end", "P002"])
def _(t, d):
    write_tables(d, _set(t, "events", 1, event_date="2022-05-15"))


# -- other readers --------------------------------------------------------------------
#: A tiny TEDS-D-format file: made-up rows (first written by teds.write_teds_d_like, then frozen here so
#: that the corpus does not change when the generator does); rows 2-4 are IOP (SERVICES_D 6). NOPRIOR is
#: binary (0 none, 1 one or more) from 2015: the first generator's counts 2 and 5 were set to 1.
TEDS_LINES = [
    "ADMYR,CASEID,DISYR,STFIPS,EDUC,MARSTAT,SERVICES,SERVICES_D,REASON,EMPLOY,EMPLOY_D,LOS,PSOURCE,NOPRIOR,"
    "ARRESTS,METHUSE,PSYPROB,GENDER,VET,LIVARAG,DAYWAIT,AGE,RACE,ETHNIC,SUB1,SUB2,ROUTE1,FREQ1,FREQ1_D,FRSTUSE1,"
    "IDU,REGION,DIVISION",
    "2019,201900000001,2019,39,3,-9,2,2,1,3,-9,15,2,0,-9,2,-9,2,2,-9,2,8,5,4,4,11,4,3,-9,2,1,1,5",
    "2019,201900000011,2019,26,4,1,7,6,2,3,3,30,1,0,0,2,1,1,2,3,-9,7,5,4,13,2,1,3,1,5,0,3,7",
    "2019,201900000024,2019,72,3,1,6,6,2,3,4,13,3,0,0,2,1,2,-9,2,-9,7,2,4,7,2,1,1,1,6,1,2,9",
    "2019,201900000031,2019,40,-9,4,6,6,2,4,3,31,1,1,0,2,-9,1,2,-9,2,3,8,4,17,10,-9,2,3,2,-9,1,1",
    "2018,201900000002,2019,30,5,1,4,4,1,3,3,33,1,1,0,2,-9,1,2,2,2,4,5,1,2,5,3,-9,1,2,1,2,9",
    "2019,201900000003,2019,41,4,1,7,7,2,3,-9,30,7,1,0,2,2,1,2,3,0,7,5,4,5,10,3,1,2,6,1,3,3",
]


def _teds_base(path: Path) -> list[str]:
    path.write_text("\n".join(TEDS_LINES) + "\n", encoding="latin-1")
    return list(TEDS_LINES)


def teds_case(name, description, error, expect):
    return case(name, reader="read_teds_d", description=description, error=error, expect=expect,
                target="teds.csv")


def _teds_edit(d: Path, edit) -> None:
    tmp = d / "teds.csv"
    lines = _teds_base(tmp)
    header = lines[0].split(",")
    rows = [ln.split(",") for ln in lines[1:]]
    header, rows = edit(header, rows)
    tmp.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n", encoding="latin-1")


def _teds_set(col, value, row=0):
    def edit(header, rows):
        j = header.index(col)
        iop = [i for i, r in enumerate(rows) if r[header.index("SERVICES_D")] == "6"]
        rows[iop[row]][j] = value
        return header, rows
    return edit


@teds_case("teds_missing_column", "the TEDS-D file lacks the REASON column", "DataValidationError", ["REASON"])
def _(t, d):
    def edit(header, rows):
        j = header.index("REASON")
        return header[:j] + header[j + 1:], [r[:j] + r[j + 1:] for r in rows]
    _teds_edit(d, edit)


@teds_case("teds_unknown_code", "REASON = 9, not a TEDS-D code", "DataValidationError", ["REASON", "9"])
def _(t, d):
    _teds_edit(d, _teds_set("REASON", "9"))


@teds_case("teds_text_in_numeric", "LOS holds the text 'abc'", "DataValidationError", ["LOS", "abc", "line 3"])
def _(t, d):
    _teds_edit(d, _teds_set("LOS", "abc"))


@teds_case("teds_semicolon", "the TEDS-D file is separated by semicolons", "DataReadError", ["teds.csv"])
def _(t, d):
    _teds_edit(d, lambda h, rows: ([";".join(h)], [[";".join(r)] for r in rows]))


@teds_case("teds_empty", "the TEDS-D file has zero bytes", "DataReadError", ["teds.csv"])
def _(t, d):
    (d / "teds.csv").write_bytes(b"")


def uis_case(name, description, error, expect):
    return case(name, reader="load_uis", description=description, error=error, expect=expect, target="uis.csv")


@uis_case("uis_missing_column", "the UIS file lacks TIME", "DataValidationError", ["UIS", "TIME"])
def _(t, d):
    j = UIS_HEADER.index("TIME")
    (d / "uis.csv").write_text(_rows_text(UIS_HEADER[:j] + UIS_HEADER[j + 1:], [r[:j] + r[j + 1:] for r in UIS_ROWS]))


@uis_case("uis_text_in_numeric", "UIS AGE holds 'forty'", "DataValidationError", ["UIS", "AGE", "forty"])
def _(t, d):
    rows = [list(r) for r in UIS_ROWS]
    rows[1][2] = "forty"
    (d / "uis.csv").write_text(_rows_text(UIS_HEADER, rows))


@uis_case("uis_unknown_code", "UIS HC = 7 (codes are 1-4)", "DataValidationError", ["UIS", "HC", "7"])
def _(t, d):
    rows = [list(r) for r in UIS_ROWS]
    rows[0][4] = "7"
    (d / "uis.csv").write_text(_rows_text(UIS_HEADER, rows))


@uis_case("uis_empty", "the UIS file has zero bytes", "DataReadError", ["UIS", "uis.csv"])
def _(t, d):
    (d / "uis.csv").write_bytes(b"")


def help_case(name, description, error, expect):
    return case(name, reader="load_help", description=description, error=error, expect=expect, target="help.csv")


@help_case("help_missing_column", "the HELP file lacks daysanysub", "DataValidationError", ["HELP", "daysanysub"])
def _(t, d):
    j = HELP_HEADER.index("daysanysub")
    (d / "help.csv").write_text(_rows_text(HELP_HEADER[:j] + HELP_HEADER[j + 1:],
                                           [r[:j] + r[j + 1:] for r in HELP_ROWS]))


@help_case("help_bad_status", "HELP anysubstatus = 2", "DataValidationError", ["HELP", "anysubstatus", "2"])
def _(t, d):
    rows = [list(r) for r in HELP_ROWS]
    rows[1][5] = "2"
    (d / "help.csv").write_text(_rows_text(HELP_HEADER, rows))


@help_case("help_unknown_substance", "HELP substance = 'meth' (not alcohol/cocaine/heroin)", "DataValidationError",
           ["HELP", "substance", "meth"])
def _(t, d):
    rows = [list(r) for r in HELP_ROWS]
    rows[2][3] = "meth"
    (d / "help.csv").write_text(_rows_text(HELP_HEADER, rows))


def config_case(name, description, expect):
    return case(name, reader="read_study_config", description=description, error="DataReadError", expect=expect,
                target="study.toml")


@config_case("config_unknown_key", "[outcome] blanking_day (typo for blanking_days)", ["blanking_day", "outcome"])
def _(t, d):
    (d / "study.toml").write_text(STUDY.replace("blanking_days", "blanking_day"))


@config_case("config_wrong_type", "[privacy] min_cell_count = \"eleven\"", ["min_cell_count", "int"])
def _(t, d):
    (d / "study.toml").write_text(STUDY.replace("min_cell_count = 11", 'min_cell_count = "eleven"'))


@config_case("config_unknown_section", "a [plots] section the study format does not have", ["plots"])
def _(t, d):
    (d / "study.toml").write_text(STUDY + "\n[plots]\ndpi = 300\n")


@config_case("config_invalid_toml", "an unclosed list in study.toml", ["study.toml", "TOML"])
def _(t, d):
    (d / "study.toml").write_text(STUDY.replace('"alcohol"]', '"alcohol"'))


@config_case("config_missing_file", "the configuration file does not exist", ["study.toml", "does not exist"])
def _(t, d):
    d.mkdir(parents=True, exist_ok=True)


# -- issue 13: inputs that were silently accepted and changed results ------------------------
@data_case("duplicate_session_rows", "a session row appears twice (it would count twice)", "DataValidationError",
           ["sessions", "duplicate", "P001"])
def _(t, d):
    t["sessions"].append(dict(t["sessions"][0]))
    write_tables(d, t)


@data_case("admission_before_birth", "E03 is admitted in 1907, before P002 was born (an age of -68)",
           "DataValidationError", ["admissions", "admit_date", "E03", "birth"])
def _(t, d):
    write_tables(d, _set(t, "admissions", 2, admit_date="1907-03-01"))


@data_case("event_decades_after_observation_end", "an event in 2051, thirty years after observation_end",
           "DataValidationError", ["events", "observation_end", "P003"])
def _(t, d):
    write_tables(d, _set(t, "events", 2, event_date="2051-06-10"))


@data_case("non_iso_date", "events.event_date written 2021-6-10 (not zero-padded)", "DataValidationError",
           ["events", "event_date", "2021-6-10", "YYYY-MM-DD"])
def _(t, d):
    write_tables(d, _set(t, "events", 2, event_date="2021-6-10"))


@data_case("unicode_digits", "sessions.minutes written in Arabic-Indic digits (\u0661\u0662\u0660)",
           "DataValidationError", ["sessions", "minutes", "\u0661\u0662\u0660", "0-9"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 4, minutes="\u0661\u0662\u0660"))


@data_case("exponent_in_integer", "sessions.minutes written 1.2e2", "DataValidationError",
           ["sessions", "minutes", "1.2e2", "exponent"])
def _(t, d):
    write_tables(d, _set(t, "sessions", 4, minutes="1.2e2"))


@data_case("short_row", "a row of medications.csv lacks its last (optional) field", "DataReadError",
           ["medications.csv", "fewer fields", "lines 4"])
def _(t, d):
    text = _csv_text(t["medications"], _header("medications"))
    lines = text.split("\n")
    lines[3] = lines[3].rsplit(",", 1)[0]  # P002's empty dose_mg without its comma
    t["medications"] = "\n".join(lines)
    write_tables(d, t)


# ----------------------------------------------------------------------------- main
def write_base(directory: Path) -> None:
    """The valid base every case starts from."""
    write_tables(directory / "data", _base_tables())
    (directory / "uis.csv").write_text(_rows_text(UIS_HEADER, UIS_ROWS))
    (directory / "help.csv").write_text(_rows_text(HELP_HEADER, HELP_ROWS))
    (directory / "study.toml").write_text(STUDY)
    _teds_base(directory / "teds.csv")


def main(root: Path = HERE) -> list[str]:
    for old in root.iterdir():
        if old.is_dir() and (old / "case.json").exists() or old.name == "_base":
            shutil.rmtree(old)
    write_base(root / "_base")
    names = []
    for i, c in enumerate(CASES, start=1):
        name = f"{i:02d}_{c['name']}"
        d = root / name
        d.mkdir(parents=True)
        target = d / c["target"]
        if c["reader"] == "read_data":
            c["build"](_base_tables(), target)
        else:
            c["build"](None, d)
        meta = {k: c[k] for k in ("reader", "target", "description", "error", "expect")}
        (d / "case.json").write_text(json.dumps(meta, indent=2) + "\n")
        names.append(name)
    return names


if __name__ == "__main__":
    made = main()
    print(f"wrote {len(made)} cases and _base/ in {HERE}")
