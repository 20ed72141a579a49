"""Tests of reading and writing the canonical tables (iop_research.data.io)."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iop_research.exceptions import DataReadError, DataValidationError
from iop_research.data.io import FORMATS, DataWriteError, IOPData, read_data
from iop_research.data.schema import TABLES, empty_table

from tiny_study import valid_tables


def valid_data(**extra_cols) -> IOPData:
    t = valid_tables()
    t["admissions"] = t["admissions"].assign(
        audit_score=[12, 30, 7],  # extra intake fields: an int and a text column
        intake_note=["first, with comma", None, 'quoted "x"'],
    )
    return IOPData(**t)


def assert_data_equal(got: IOPData, want: IOPData) -> None:
    """Equal values in canonical dtypes (on pandas 3 frames built in memory hold dates in
    microseconds; ``read_data`` returns the contract's ``datetime64[ns]``)."""
    want = want.coerce()
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name), check_exact=True)


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_each_format(tmp_path, fmt):
    data = valid_data()
    out = data.write(tmp_path / "study", format=fmt)
    assert out == tmp_path / "study"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.{fmt}" for t in TABLES)
    back = read_data(out)
    assert_data_equal(back, data)
    assert back.truth is None


def test_round_trip_mixed_formats_and_optional_tables(tmp_path):
    data = valid_data()
    data.write(tmp_path / "a", format="parquet")
    data.write(tmp_path / "b", format="csv.gz")
    d = tmp_path / "mixed"
    d.mkdir()
    for name, src in [("patients", "a/patients.parquet"), ("sessions", "b/sessions.csv.gz"),
                      ("observation", "a/observation.parquet")]:
        (d / Path(src).name).write_bytes((tmp_path / src).read_bytes())
    back = read_data(d, validate=False)
    pd.testing.assert_frame_equal(back.sessions, data.sessions)
    pd.testing.assert_frame_equal(back.patients, data.patients)
    for name in ("admissions", "medications", "events"):
        pd.testing.assert_frame_equal(getattr(back, name), empty_table(name))
    # sessions carry episode_ids that now have no admission: validation says so
    with pytest.raises(DataValidationError, match=r"sessions\.episode_id \[known_episode\]"):
        back.validate()


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dose=st.lists(st.floats(min_value=1e-300, max_value=1e6, allow_nan=False), min_size=2, max_size=2),
    severity=st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=3, max_size=3),
)
def test_floats_round_trip_exactly(tmp_path_factory, dose, severity):
    t = valid_tables()
    t["medications"] = t["medications"].assign(dose_mg=dose)
    t["admissions"] = t["admissions"].assign(severity_score=severity)
    data = IOPData(**t)
    for fmt in ("csv", "csv.gz"):
        back = read_data(data.write(tmp_path_factory.mktemp(fmt.replace(".", "_")), format=fmt))
        np.testing.assert_array_equal(back.medications["dose_mg"].to_numpy(), np.array(dose))
        np.testing.assert_array_equal(back.admissions["severity_score"].to_numpy(), np.array(severity))


def test_csv_layout(tmp_path):
    valid_data().write(tmp_path, format="csv")
    raw = (tmp_path / "admissions.csv").read_bytes()
    assert b"\r" not in raw
    lines = raw.decode("utf-8").split("\n")
    assert lines[0] == ("episode_id,patient_id,program,admit_date,discharge_date,discharge_reason,"
                        "referral_source,primary_substance,psychiatric_comorbidity,prior_treatment_episodes,"
                        "severity_score,housing,employment,audit_score,intake_note")
    assert lines[1] == ("E1,P1,north,2024-01-02,2024-02-15,completed,self,opioids,true,0,4.5,stable,employed,12,"
                        '"first, with comma"')
    assert lines[2].startswith("E2,P1,north,2024-04-01,,,healthcare,opioids,false,1,6.0,,unemployed,30,")
    assert lines[-1] == ""


def test_csv_gz_is_byte_deterministic(tmp_path):
    data = valid_data()
    a = data.write(tmp_path / "a", format="csv.gz")
    b = IOPData(**{k: v.copy() for k, v in data.tables().items()}).write(tmp_path / "b", format="csv.gz")
    for name in TABLES:
        raw_a = (a / f"{name}.csv.gz").read_bytes()
        assert raw_a == (b / f"{name}.csv.gz").read_bytes()
        assert raw_a[4:8] == b"\x00\x00\x00\x00"  # gzip mtime field
        assert f"{name}.csv".encode() in raw_a[:40]  # fixed inner file name
        assert gzip.decompress(raw_a) == _plain_csv(data, name, tmp_path)


def _plain_csv(data, name, tmp_path):
    d = tmp_path / "plain"
    if not d.exists():
        data.write(d, format="csv")
    return (d / f"{name}.csv").read_bytes()


def test_write_overwrites_same_format_refuses_ambiguity(tmp_path):
    data = valid_data()
    data.write(tmp_path, format="csv")
    data.write(tmp_path, format="csv")  # same format: replaced
    with pytest.raises(DataWriteError, match=r"patients\.csv exists"):
        data.write(tmp_path, format="parquet")
    with pytest.raises(DataWriteError, match="Unknown format 'xlsx'"):
        data.write(tmp_path / "x", format="xlsx")
    assert not (tmp_path / "patients.parquet").exists()


def test_write_does_not_mutate(tmp_path):
    data = valid_data()
    before = {k: v.copy() for k, v in data.tables().items()}
    data.write(tmp_path, format="csv")
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(data, name), before[name])


def test_read_required_only_and_header_only_files(tmp_path):
    valid_data().write(tmp_path, format="csv")
    for name in ("admissions", "medications"):
        (tmp_path / f"{name}.csv").unlink()
    (tmp_path / "events.csv").write_text("patient_id,event_date,event_type,result,substance\n")
    (tmp_path / "sessions.csv").write_text(
        (tmp_path / "sessions.csv").read_text().replace(",E1,", ",,").replace(",E2,", ",,").replace(",E3,", ",,")
    )
    data = read_data(tmp_path)
    for name in ("admissions", "medications", "events"):
        pd.testing.assert_frame_equal(getattr(data, name), empty_table(name))
    assert len(data.sessions) == 5


def test_parse_failures_are_not_counted_again_as_missing(tmp_path):
    valid_data().write(tmp_path, format="csv")
    _edit(tmp_path, "sessions", 3, "minutes", "ninety")
    _edit(tmp_path, "sessions", 4, "minutes", "")
    with pytest.raises(DataValidationError) as info:
        read_data(tmp_path)
    p = info.value.problems.set_index("check")
    assert p.loc["parse(int)", "examples"] == "patient_id P2; rows 3"
    assert p.loc["not_null", "examples"] == "patient_id P2; rows 4"
    assert "'ninety'" in p.loc["parse(int)", "fix"]


def test_validate_false_skips_contract_checks_but_not_parse_errors(tmp_path):
    valid_data().write(tmp_path, format="csv")
    _edit(tmp_path, "sessions", 4, "modality", "yoga")
    data = read_data(tmp_path, validate=False)
    assert data.sessions["modality"].iloc[4] == "yoga"
    _edit(tmp_path, "sessions", 0, "session_date", "03/01/2024")
    with pytest.raises(DataValidationError, match=r"sessions\.session_date \[parse\(date\)\]"):
        read_data(tmp_path, validate=False)


def test_not_a_directory_and_two_formats(tmp_path):
    with pytest.raises(DataReadError, match="is not a directory"):
        read_data(tmp_path / "nowhere")
    valid_data().write(tmp_path, format="csv")
    valid_data().events.to_parquet(tmp_path / "events.parquet", index=False)
    with pytest.raises(DataReadError, match=r"2 files for table events \(events\.csv, events\.parquet\)"):
        read_data(tmp_path)


# ------------------------------------------------------- malformed input files


def _edit(d: Path, table: str, row: int, col: str, value: str) -> None:
    f = d / f"{table}.csv"
    df = pd.read_csv(f, dtype=str, keep_default_na=False)
    df.loc[row, col] = value
    df.to_csv(f, index=False, lineterminator="\n")


def edit(table, row, col, value):
    return lambda d: _edit(d, table, row, col, value)


def drop_column(table, col):
    def f(d):
        path = d / f"{table}.csv"
        pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=col).to_csv(
            path, index=False, lineterminator="\n")
    return f


def duplicate_row(table, row):
    def f(d):
        path = d / f"{table}.csv"
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        pd.concat([df, df.iloc[[row]]]).to_csv(path, index=False, lineterminator="\n")
    return f


def write_bytes(table, data, ext="csv"):
    def f(d):
        for other in ("csv", "csv.gz", "parquet"):
            (d / f"{table}.{other}").unlink(missing_ok=True)
        (d / f"{table}.{ext}").write_bytes(data(d) if callable(data) else data)
    return f


def transform_text(table, fn):
    def f(d):
        path = d / f"{table}.csv"
        path.write_bytes(fn(path.read_bytes()))
    return f


def truncated(table, ext):
    def f(d):
        valid_data().write(d / "src", format=ext)
        raw = (d / "src" / f"{table}.{ext}").read_bytes()
        write_bytes(table, raw[: len(raw) // 2], ext)(d)
    return f


V, R = DataValidationError, DataReadError

# (case id, edit of a valid CSV directory, exception, table, column, check, words the message must hold)
MALFORMED_FILES = [
    ("missing_column", drop_column("sessions", "modality"), V, "sessions", "modality", "column_present",
     ["column absent"]),
    ("bad_date_string", edit("admissions", 2, "admit_date", "2024-13-45"), V, "admissions", "admit_date",
     "parse(date)", ["E3", "'2024-13-45'"]),
    ("day_first_date", edit("admissions", 0, "discharge_date", "15/02/2024"), V, "admissions", "discharge_date",
     "parse(date)", ["E1"]),
    ("date_with_time", edit("sessions", 0, "session_date", "2024-01-03 10:00"), V, "sessions", "session_date",
     "parse(date)", ["P1", "rows 0"]),
    ("minutes_not_a_number", edit("sessions", 3, "minutes", "abc"), V, "sessions", "minutes", "parse(int)",
     ["P2", "rows 3"]),
    ("minutes_fraction", edit("sessions", 1, "minutes", "90.5"), V, "sessions", "minutes", "parse(int)", ["P1"]),
    ("attended_yes", edit("sessions", 2, "attended", "yes"), V, "sessions", "attended", "parse(bool)", ["P1"]),
    ("dose_text", edit("medications", 0, "dose_mg", "16mg"), V, "medications", "dose_mg", "parse(float)", ["P1"]),
    ("dose_nan_text", edit("medications", 0, "dose_mg", "nan"), V, "medications", "dose_mg", "parse(float)",
     ["P1", "'nan'"]),
    ("dose_infinite", edit("medications", 1, "dose_mg", "inf"), V, "medications", "dose_mg", "parse(float)",
     ["P2"]),
    ("unknown_modality", edit("sessions", 4, "modality", "yoga"), V, "sessions", "modality", "allowed_values",
     ["P2", "individual, group, family, education, holistic"]),
    ("unknown_medication", edit("medications", 0, "medication", "suboxone"), V, "medications", "medication",
     "allowed_values", ["P1"]),
    ("negative_days_supply", edit("medications", 1, "days_supply", "-5"), V, "medications", "days_supply",
     "range(between 1 and 365)", ["P2"]),
    ("zero_minutes", edit("sessions", 0, "minutes", "0"), V, "sessions", "minutes", "range(between 1 and 600)",
     ["P1"]),
    ("minutes_10000", edit("sessions", 3, "minutes", "10000"), V, "sessions", "minutes",
     "range(between 1 and 600)", ["P2"]),
    ("birth_year_1850", edit("patients", 2, "birth_year", "1850"), V, "patients", "birth_year",
     "range(between 1900 and 2020)", ["P3"]),
    ("duplicate_patient_id", duplicate_row("patients", 1), V, "patients", "patient_id", "unique", ["P2"]),
    ("duplicate_episode_id", edit("admissions", 1, "episode_id", "E1"), V, "admissions", "episode_id", "unique",
     ["E1"]),
    ("empty_patient_id", edit("sessions", 3, "patient_id", ""), V, "sessions", "patient_id", "not_null",
     ["rows 3"]),
    ("discharge_before_admission", edit("admissions", 2, "discharge_date", "2024-01-05"), V, "admissions",
     "discharge_date", "discharge_not_before_admit", ["E3"]),
    ("overlapping_episodes", edit("admissions", 1, "admit_date", "2024-02-10"), V, "admissions", "admit_date",
     "no_overlap", ["E2"]),
    ("session_of_unknown_patient", edit("sessions", 4, "patient_id", "P9"), V, "sessions", "patient_id",
     "known_patient", ["P9"]),
    ("session_outside_every_episode", edit("sessions", 4, "session_date", "2024-03-15"), V, "sessions",
     "session_date", "within_episode", ["P2"]),
    ("event_after_observation_end", edit("events", 0, "event_date", "2024-07-15"), V, "events", "event_date",
     "not_after_observation_end", ["P1"]),
    ("reason_without_discharge_date", edit("admissions", 1, "discharge_reason", "completed"), V, "admissions",
     "discharge_reason", "reason_iff_discharge_date", ["E2"]),
    ("uds_without_result", edit("events", 0, "result", ""), V, "events", "result", "uds_has_result", ["P1"]),
    ("empty_file", write_bytes("events", b""), R, "events", None, None, ["events.csv", "is empty"]),
    ("blank_file", write_bytes("patients", b"\n\n"), R, "patients", None, None, ["patients.csv", "is empty"]),
    ("semicolon_delimiter", transform_text("sessions", lambda b: b.replace(b",", b";")), R, "sessions", None,
     None, ["sessions.csv", "semicolons", "patient_id;episode_id"]),
    ("tab_delimiter", transform_text("observation", lambda b: b.replace(b",", b"\t")), R, "observation", None,
     None, ["observation.csv", "tabs"]),
    ("non_utf8_bytes", transform_text("patients", lambda b: b.replace(b"black", "bl\xe4ck".encode("latin-1"))),
     R, "patients", None, None, ["patients.csv", "not UTF-8", "0xe4", "line 4"]),
    ("truncated_csv", transform_text("sessions", lambda b: b[:-12]), R, "sessions", None, None,
     ["sessions.csv", "truncated", "last line (6)"]),
    ("extra_field", transform_text("events", lambda b: b.replace(b"death,,", b"death,,,x,y")), R, "events",
     None, None, ["events.csv", "cannot be parsed as CSV"]),
    ("duplicate_header", transform_text("observation", lambda b: b.replace(b"observation_end", b"patient_id", 1)),
     R, "observation", None, None, ["observation.csv", "duplicate column name(s) patient_id"]),
    ("truncated_csv_gz", truncated("admissions", "csv.gz"), R, "admissions", None, None,
     ["admissions.csv.gz", "damaged or truncated"]),
    ("truncated_parquet", truncated("medications", "parquet"), R, "medications", None, None,
     ["medications.parquet", "not a readable Parquet file"]),
    ("text_named_parquet", write_bytes("events", b"patient_id,event_date\n", "parquet"), R, "events", None,
     None, ["events.parquet", "not a readable Parquet file"]),
    ("missing_required_file", lambda d: (d / "sessions.csv").unlink(), R, "sessions", None, None,
     ["lacks the required table file(s) sessions"]),
]


@pytest.mark.parametrize(
    "damage, exc, table, column, check, words", [c[1:] for c in MALFORMED_FILES], ids=[c[0] for c in MALFORMED_FILES]
)
def test_malformed_files(tmp_path, damage, exc, table, column, check, words):
    valid_data().write(tmp_path, format="csv")
    read_data(tmp_path)  # valid before the damage
    damage(tmp_path)
    with pytest.raises(exc) as info:
        read_data(tmp_path)
    message = str(info.value)
    assert "Traceback" not in message
    for word in words:
        assert word in message
    if exc is DataValidationError:
        problems = info.value.problems
        hit = problems[(problems.table == table) & (problems.column == column) & (problems.check == check)]
        assert len(hit) == 1, problems.to_string()
        line = next(ln for ln in message.splitlines() if ln.startswith(f"- {table}.{column} [{check}]"))
        assert "Fix:" in line
        for word in words:
            if word.startswith(("P", "E", "rows")):
                assert word in line
    else:
        assert table in message
        assert any(k in message for k in ("Re-", "re-", "Add", "keep", "rename"))  # says how to fix


@pytest.mark.parametrize("damage", ["non_utf8_bytes", "extra_field", "truncated_csv_gz", "truncated_parquet"])
def test_read_errors_chain_the_library_exception(tmp_path, damage):
    valid_data().write(tmp_path, format="csv")
    dict((c[0], c[1]) for c in MALFORMED_FILES)[damage](tmp_path)
    with pytest.raises(DataReadError) as info:
        read_data(tmp_path)
    assert isinstance(info.value.__cause__, Exception)
    assert not isinstance(info.value.__cause__, DataReadError)


def test_several_file_problems_reported_together(tmp_path):
    valid_data().write(tmp_path, format="csv")
    _edit(tmp_path, "patients", 2, "birth_year", "1850")
    _edit(tmp_path, "sessions", 4, "modality", "yoga")
    _edit(tmp_path, "sessions", 0, "minutes", "x")
    _edit(tmp_path, "admissions", 2, "discharge_date", "2024-01-05")
    _edit(tmp_path, "events", 0, "event_date", "2024-07-15")
    with pytest.raises(DataValidationError) as info:
        read_data(tmp_path)
    got = set(zip(info.value.problems.table, info.value.problems.column, info.value.problems.check))
    assert {
        ("patients", "birth_year", "range(between 1900 and 2020)"),
        ("sessions", "modality", "allowed_values"),
        ("sessions", "minutes", "parse(int)"),
        ("admissions", "discharge_date", "discharge_not_before_admit"),
        ("events", "event_date", "not_after_observation_end"),
    } <= got
    assert str(info.value).count("\n- ") == len(info.value.problems)


def test_crlf_bom_and_na_text(tmp_path):
    valid_data().write(tmp_path, format="csv")
    for name in ("patients", "observation"):
        f = tmp_path / f"{name}.csv"
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes().replace(b"\n", b"\r\n"))
    data = read_data(tmp_path)
    pd.testing.assert_frame_equal(data.patients, valid_data().patients)
    _edit(tmp_path, "sessions", 1, "modality", "NA")  # only empty cells are missing
    with pytest.raises(DataValidationError) as info:
        read_data(tmp_path)
    assert list(info.value.problems.check) == ["allowed_values"]
    assert "patient_id P1; rows 1" in str(info.value)


def test_near_miss_header_is_named(tmp_path):
    valid_data().write(tmp_path, format="csv")
    f = tmp_path / "patients.csv"
    f.write_bytes(f.read_bytes().replace(b",birth_year,", b", Birth_Year,", 1))
    with pytest.raises(DataValidationError) as info:
        read_data(tmp_path)
    line = next(ln for ln in str(info.value).splitlines() if "patients.birth_year [column_present]" in ln)
    assert "found ' Birth_Year'" in line and "renaming" in line


def test_truncated_inside_quoted_field(tmp_path):
    valid_data().write(tmp_path, format="csv")
    f = tmp_path / "admissions.csv"
    raw = f.read_bytes()
    f.write_bytes(raw[: raw.rindex(b'"x"') + 1])  # cut inside the last row's quoted note
    with pytest.raises(DataReadError, match=r"admissions\.csv (looks truncated|cannot be parsed.*cut off)"):
        read_data(tmp_path)


_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from([",", '"', "\n", "\t", "'"]),
    min_size=1, max_size=12,
)


@settings(max_examples=20, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(races=st.lists(st.one_of(st.none(), _TEXT), min_size=3, max_size=3),
       programs=st.lists(_TEXT, min_size=3, max_size=3), fmt=st.sampled_from(FORMATS))
def test_text_round_trips(tmp_path_factory, races, programs, fmt):
    """Any non-empty text in a text column of the contract (commas, quotes, line breaks,
    unicode, 'NA', '007') survives; extra columns are type-inferred instead (see write)."""
    t = valid_tables()
    t["admissions"] = t["admissions"].assign(program=programs)
    t["patients"] = t["patients"].assign(race=races)
    data = IOPData(**t)
    back = read_data(data.write(tmp_path_factory.mktemp("text"), format=fmt))
    want = data.coerce()  # an all-None column built in memory is object on pandas 3; read_data gives str
    pd.testing.assert_frame_equal(back.admissions, want.admissions)
    pd.testing.assert_frame_equal(back.patients, want.patients)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(cells=st.lists(st.one_of(st.integers(1, 600).map(str), st.sampled_from(["x", "1.5", "nan", "--", "7 min"])),
                      min_size=1, max_size=20))
def test_coerce_reports_exactly_the_unparseable_rows(cells):
    from iop_research.data.schema import coerce_tables

    n = len(cells)
    raw = {"sessions": pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "minutes": cells})}
    tables, problems = coerce_tables(raw)
    junk = [i for i, c in enumerate(cells) if not c.isdigit()]
    if junk:
        assert problems.n_failures.tolist() == [len(junk)]
        assert problems.examples.iloc[0].endswith("rows " + ", ".join(map(str, junk[:5])) + (", ..." if len(junk) > 5 else ""))
    else:
        assert problems.empty
    assert tables["sessions"]["minutes"].isna().sum() == len(junk)
    assert raw["sessions"]["minutes"].tolist() == cells  # input untouched


def test_write_keeps_invalid_times_and_wraps_parquet_errors(tmp_path):
    t = valid_tables()
    t["sessions"].loc[0, "session_date"] = pd.Timestamp("2024-01-03 10:30")
    IOPData(**t).write(tmp_path / "c", format="csv")
    assert "2024-01-03 10:30:00" in (tmp_path / "c" / "sessions.csv").read_text()
    with pytest.raises(DataValidationError, match=r"sessions\.session_date \[parse\(date\)\]"):
        read_data(tmp_path / "c")  # not silently truncated to the day
    t = valid_tables()
    t["admissions"] = t["admissions"].assign(mixed=[1, "a", 2.5])
    with pytest.raises(DataWriteError, match="could not be written as Parquet") as info:
        IOPData(**t).write(tmp_path / "p", format="parquet")
    assert info.value.__cause__ is not None
    assert not (tmp_path / "p" / "admissions.parquet").exists()
    t["events"] = None
    with pytest.raises(DataWriteError, match="nothing was written"):
        IOPData(**t).write(tmp_path / "n", format="csv")
    assert not (tmp_path / "n").exists()


# ------------------------------------------------------------------ atomic writes (issue 13)


def _no_staging(root: Path) -> bool:
    return not [p for p in root.rglob("*") if ".staging-" in p.name or ".old-" in p.name or p.suffix == ".tmp"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("inside_other_files", [False, True])
def test_interrupted_write_leaves_previous_export_intact(tmp_path, monkeypatch, fmt, inside_other_files):
    from iop_research.data import io as iomod

    out = tmp_path / "export"
    old = valid_data()
    old.write(out, format=fmt)
    if inside_other_files:
        (out / "README.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    new = valid_data()
    new.patients = new.patients.assign(sex="female")
    calls = {"n": 0}
    real_csv, real_parquet = iomod._csv_frame, pd.DataFrame.to_parquet

    def failing_csv(table, df):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real_csv(table, df)

    def failing_parquet(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return real_parquet(self, *a, **k)

    monkeypatch.setattr(iomod, "_csv_frame", failing_csv)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing_parquet)
    with pytest.raises(DataWriteError, match="No space left on device") as info:
        new.write(out, format=fmt)
    assert isinstance(info.value, OSError) and info.value.__cause__ is not None
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export, whole
    assert _no_staging(tmp_path)
    monkeypatch.undo()
    new.write(out, format=fmt)  # and a successful write replaces every table at once
    assert set(read_data(out).patients["sex"]) == {"female"}
    assert (out / "README.txt").exists() is inside_other_files
    assert _no_staging(tmp_path)


def test_write_to_a_new_directory_is_one_rename_and_keeps_the_usual_mode(tmp_path):
    out = tmp_path / "a" / "b"
    valid_data().write(out, format="csv")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.csv" for t in TABLES)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert _no_staging(tmp_path)


def test_path_and_permission_errors_are_wrapped_before_writing(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataWriteError, match="is a file"):
        valid_data().write(tmp_path / "file", format="csv")
    with pytest.raises(DataWriteError, match="is a file"):
        valid_data().write(tmp_path / "file" / "sub", format="csv")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(DataWriteError, match="No permission") as info:
        valid_data().write(tmp_path / "new", format="csv")
    assert isinstance(info.value, OSError)
    assert not (tmp_path / "new").exists() and _no_staging(tmp_path)


def test_atomic_write_helpers(tmp_path):
    from iop_research.data.io import atomic_directory, atomic_write_text

    p = atomic_write_text(tmp_path / "d" / "x.txt", "hello\n")
    assert p.read_text() == "hello\n"
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "rep") as stage:
            (stage / "half.html").write_text("x")
            raise RuntimeError("kernel died")
    assert not (tmp_path / "rep").exists() and _no_staging(tmp_path)
    with atomic_directory(tmp_path / "rep") as stage:
        (stage / "index.html").write_text("v1")
    with atomic_directory(tmp_path / "rep", keep=lambda name: name == "notes.md") as stage:
        (stage / "index.html").write_text("v2")
    assert (tmp_path / "rep" / "index.html").read_text() == "v2" and _no_staging(tmp_path)
