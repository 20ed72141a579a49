"""Tests of iop_research.data.mapping: an EHR-like extract (tests/ehr_extract.py) mapped onto the
data contract by the committed example mapping (examples/ehr_extract/mapping.toml); the mapping
report; errors of mapping files; and the validation messages the mapping path relies on
(offending vocabulary values listed, no follow-on cross-table errors from a bad date format).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ehr_extract import CANCELLED, extract_date, mrn, write_ehr_extract
from iop_research.data.io import read_data
from iop_research.data.mapping import (
    DROPPED_COLUMNS,
    UNMAPPED_COLUMNS,
    MappingError,
    map_extract,
    mapping_template,
    read_mapping,
)
from iop_research.data.schema import TABLES, find_problems
from iop_research.exceptions import DataValidationError, IopError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ehr_extract" / "mapping.toml"


@pytest.fixture(scope="module")
def extract(tmp_path_factory):
    """The example layout: mapping.toml next to extract/ (300 simulated patients, seed 12)."""
    root = tmp_path_factory.mktemp("ehr")
    _, data = write_ehr_extract(root / "extract", n_patients=300, seed=12)
    shutil.copy(EXAMPLE, root / "mapping.toml")
    return root, data


@pytest.fixture(scope="module")
def mapped(extract, tmp_path_factory):
    root, data = extract
    out = tmp_path_factory.mktemp("mapped")
    result, report = map_extract(root / "mapping.toml", out)
    return out, result, report, data


def _copy(extract, tmp_path) -> Path:
    root, _ = extract
    shutil.copytree(root / "extract", tmp_path / "extract")
    shutil.copy(root / "mapping.toml", tmp_path / "mapping.toml")
    return tmp_path


def _edit(path: Path, fn) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


# ----------------------------------------------------------------------------- the example extract


def test_example_mapping_recovers_the_simulated_tables(mapped):
    """Every table except observation equals the simulator's (ids translated back from MRNs)."""
    _, result, report, data = mapped
    assert report.is_valid
    back = {mrn(data.patients["patient_id"])[i]: pid for i, pid in enumerate(data.patients["patient_id"])}
    for table in ("patients", "admissions", "sessions", "medications", "events"):
        got = result.tables()[table].copy()
        want = data.tables()[table].reset_index(drop=True)
        got["patient_id"] = got["patient_id"].map(back)
        if "episode_id" in got:
            got["episode_id"] = got["episode_id"].str.replace("ENC", "E", regex=False)
        pd.testing.assert_frame_equal(got[list(want.columns)], want, check_dtype=False, obj=table)
    # the extract has no follow-up table: observation ends at the extract date for everyone
    assert (result.observation["observation_end"] == extract_date(data)).all()
    assert len(result.observation) == len(data.patients)


def test_written_tables_pass_read_data(mapped):
    out, result, _, _ = mapped
    again = read_data(out)
    for table in TABLES:
        pd.testing.assert_frame_equal(again.tables()[table], result.tables()[table], check_dtype=False)
    assert (out / "mapping_report.md").is_file() and (out / "mapping_dropped.csv").is_file()


def test_report_lists_dropped_rows_and_unused_columns(mapped, extract):
    out, _, report, data = mapped
    root, _ = extract
    visits = pd.read_csv(root / "extract" / "visits.csv", dtype=str, keep_default_na=False)
    n_cancelled = int((visits["ApptStatus"] == CANCELLED).sum())
    assert n_cancelled > 0
    assert tuple(report.dropped.columns) == DROPPED_COLUMNS
    row = report.dropped.set_index("table").loc["sessions"]
    assert row["n_rows"] == n_cancelled and CANCELLED in row["reason"]
    first_line = int(np.flatnonzero(visits["ApptStatus"] == CANCELLED)[0]) + 2
    assert row["source_lines"].startswith(str(first_line))
    assert report.sources.set_index("table").loc["sessions", "rows_written"] == len(data.sessions)
    unused = set(map(tuple, report.unused_columns.to_numpy()))
    assert ("patients", "ZipCode") in unused and ("sessions", "VisitID") in unused
    assert report.unmapped.empty
    text = (out / "mapping_report.md").read_text(encoding="utf-8")
    assert "satisfy the data contract" in text and f"| sessions | attended = '{CANCELLED}' (drop_rows) | {n_cancelled} |" in text
    origins = report.origins.set_index(["table", "column"])["origin"]
    assert origins[("sessions", "modality")] == "source column 'ServiceCode'"
    assert origins[("observation", "observation_end")].startswith("constant 'extract_date 2023-12-31'")


# ----------------------------------------------------------------------------- unmapped values


def _unknown_codes(extract, tmp_path, unmapped: str | None):
    root = _copy(extract, tmp_path)
    _edit(root / "extract" / "visits.csv",
          lambda d: d.assign(ServiceCode=d["ServiceCode"].where(d.index % 97 != 5, "IOP-Yoga")))
    _edit(root / "extract" / "encounters.csv",
          lambda d: d.assign(PsychDx=d["PsychDx"].where(d.index % 50 != 3, "Unk")))
    visits = pd.read_csv(root / "extract" / "visits.csv", dtype=str)
    # rows dropped as cancelled are not counted as unmapped
    n_yoga = int(((visits["ServiceCode"] == "IOP-Yoga") & (visits["ApptStatus"] != CANCELLED)).sum())
    if unmapped:
        text = (root / "mapping.toml").read_text().replace('unmapped = "keep"', f'unmapped = "{unmapped}"')
        (root / "mapping.toml").write_text(text)
    return root, n_yoga


def test_unmapped_codes_are_listed_with_counts_and_validation_names_them(extract, tmp_path):
    root, n_yoga = _unknown_codes(extract, tmp_path, None)
    with pytest.raises(MappingError) as info:
        map_extract(root / "mapping.toml", tmp_path / "out")
    err = info.value
    assert isinstance(err, IopError) and isinstance(err, ValueError)
    un = err.report.unmapped
    assert tuple(un.columns) == UNMAPPED_COLUMNS
    yoga = un[(un["table"] == "sessions") & (un["value"] == "IOP-Yoga")].iloc[0]
    assert yoga["n_rows"] == n_yoga and yoga["column"] == "modality" and yoga["source_column"] == "ServiceCode"
    assert yoga["action"] == "kept"
    assert ((un["column"] == "psychiatric_comorbidity") & (un["value"] == "Unk")).any()
    # the contract check names the offending value and its count
    msg = str(err)
    assert f"'IOP-Yoga' ({n_yoga:,} rows)" in msg and "sessions.modality [allowed_values]" in msg
    # the report is written even though the mapping failed; the tables are not
    assert (tmp_path / "out" / "mapping_report.md").is_file() and (tmp_path / "out" / "mapping_problems.csv").is_file()
    assert not (tmp_path / "out" / "sessions.csv").exists()


def test_unmapped_drop_removes_the_rows_and_says_why(extract, tmp_path):
    root, n_yoga = _unknown_codes(extract, tmp_path, "drop")
    _edit(root / "extract" / "encounters.csv", lambda d: d.assign(PsychDx=d["PsychDx"].replace("Unk", "N")))
    data, report = map_extract(root / "mapping.toml")
    reasons = report.dropped.set_index("reason")["n_rows"]
    assert reasons["modality = 'IOP-Yoga' not in the value map (unmapped = \"drop\")"] == n_yoga
    assert (report.unmapped["action"] == "rows dropped").all()
    original = pd.read_csv(root / "extract" / "visits.csv", dtype=str)
    assert len(data.sessions) == len(original) - n_yoga - int((original["ApptStatus"] == CANCELLED).sum())


def test_unmapped_missing_blanks_a_nullable_column(extract, tmp_path):
    root = _copy(extract, tmp_path)
    _edit(root / "extract" / "encounters.csv",
          lambda d: d.assign(HousingStatus=d["HousingStatus"].where(d.index % 10 != 0, "Shelter")))
    text = (root / "mapping.toml").read_text().replace('unmapped = "keep"', 'unmapped = "missing"')
    (root / "mapping.toml").write_text(text)
    data, report = map_extract(root / "mapping.toml")
    n = int((pd.read_csv(root / "extract" / "encounters.csv", dtype=str)["HousingStatus"] == "Shelter").sum())
    row = report.unmapped.iloc[0]
    assert (row["value"], row["n_rows"], row["action"]) == ("Shelter", n, "set missing")
    assert data.admissions["housing"].isna().sum() >= n


# ----------------------------------------------------------------------------- dates


def test_bad_date_format_is_reported_alone(extract, tmp_path):
    """European dates in a US-format extract: the unparsed values are listed and nothing else
    (no spurious discharge/overlap/observation problems)."""
    root = _copy(extract, tmp_path)

    def european(d):
        dates = pd.to_datetime(d["DischargeDt"], format="%m/%d/%Y")
        return d.assign(DischargeDt=dates.dt.strftime("%d.%m.%Y").fillna(""))
    _edit(root / "extract" / "encounters.csv", european)
    with pytest.raises(MappingError) as info:
        map_extract(root / "mapping.toml")
    msg = str(info.value)
    assert "admissions.discharge_date" in msg and "not dates in %m/%d/%Y or %Y-%m-%d" in msg
    assert "overlap" not in msg and "reason_iff" not in msg and "data contract" not in msg
    un = info.value.report.unmapped
    assert set(un["column"]) == {"discharge_date"} and un["action"].str.startswith("unparsed").all()
    # adding the format fixes it
    text = (root / "mapping.toml").read_text().replace('date_formats = ["%m/%d/%Y"]',
                                                        'date_formats = ["%m/%d/%Y", "%d.%m.%Y"]')
    (root / "mapping.toml").write_text(text)
    data, report = map_extract(root / "mapping.toml")
    assert report.is_valid and data.admissions["discharge_date"].notna().any()


def test_read_data_bad_date_format_raises_no_follow_on_problems(mapped, tmp_path):
    """read_data on contract files whose discharge_date is partly in another format: the parse
    problem only, not 'discharge_reason without discharge_date' or 'overlapping episodes'."""
    out, _, _, _ = mapped
    shutil.copytree(out, tmp_path / "d")
    _edit(tmp_path / "d" / "admissions.csv", lambda d: d.assign(
        discharge_date=pd.to_datetime(d["discharge_date"]).dt.strftime("%m/%d/%Y").fillna("")))
    with pytest.raises(DataValidationError) as info:
        read_data(tmp_path / "d")
    checks = set(info.value.problems["check"])
    assert checks == {"parse(date)"}


def test_validate_lists_offending_vocabulary_values(mapped):
    _, result, _, _ = mapped
    tables = result.tables()
    s = tables["sessions"].copy()
    s.loc[s.index[:3], "modality"] = "IOP-Grp"
    s.loc[s.index[3], "modality"] = "yoga"
    tables["sessions"] = s
    problems = find_problems(tables)
    fix = problems.set_index("check").loc["allowed_values", "fix"]
    assert "'IOP-Grp' (3 rows), 'yoga' (1 row)" in fix and "Use one of individual, group" in fix


# ----------------------------------------------------------------------------- mapping-file errors


@pytest.mark.parametrize("text, expected", [
    ('[tables.patient]\nsource = "a.csv"\n', "unknown table [tables.patient]"),
    ('[tables.patients]\nsource = "a.csv"\ncolums = { patient_id = "MRN" }\n', "unknown key 'colums'"),
    ('[tables.patients]\nsource = "a.csv"\ncolumns = { patient = "MRN" }\n', "'patient' is not a column of the patients table"),
    ('[mapping]\nunmapped = "ignore"\n', "unmapped = 'ignore'"),
    ('[mapping]\ndate_formats = "%m/%d/%Y"\n', "date_formats must be a list"),
    ('[tables.observation]\nsource = "a.csv"\nderive = "patients"\n', "exactly one of source"),
    ('[tables.patients\n', "not valid TOML"),
    ('[tables.observation]\nderive = "patients"\ncolumns = { patient_id = "MRN" }\n', "it takes only constants"),
    ('[mapings]\n', "unknown section [mapings]"),
])
def test_mapping_file_errors_name_the_problem(tmp_path, text, expected):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(MappingError, match=None) as info:
        read_mapping(path)
    assert expected in str(info.value)


def test_missing_source_column_and_required_column(extract, tmp_path):
    root = _copy(extract, tmp_path)
    text = (root / "mapping.toml").read_text()
    (root / "bad1.toml").write_text(text.replace('birth_year = "BirthYr"', 'birth_year = "BirthYear"'))
    with pytest.raises(MappingError, match="'BirthYear', which demographics.csv does not have .*'BirthYr'"):
        map_extract(root / "bad1.toml")
    (root / "bad2.toml").write_text(text.replace('birth_year = "BirthYr", ', ''))
    with pytest.raises(MappingError, match="no source for the required column.*birth_year"):
        map_extract(root / "bad2.toml")
    (root / "bad3.toml").write_text(text.replace('source = "demographics.csv"', 'source = "demo.csv"'))
    with pytest.raises(MappingError, match="demo.csv does not exist"):
        map_extract(root / "bad3.toml")
    with pytest.raises(MappingError, match="does not exist"):
        map_extract(root / "nope.toml")


def test_parquet_source_and_template_parses(extract, tmp_path):
    root = _copy(extract, tmp_path)
    demo = pd.read_csv(root / "extract" / "demographics.csv", dtype=str, keep_default_na=False)
    demo["BirthYr"] = demo["BirthYr"].astype(int)  # native integers in Parquet
    demo.to_parquet(root / "extract" / "demographics.parquet", index=False)
    text = (root / "mapping.toml").read_text().replace('"demographics.csv"', '"demographics.parquet"')
    (root / "mapping.toml").write_text(text)
    data, report = map_extract(root / "mapping.toml")
    assert report.is_valid and data.patients["birth_year"].dtype == np.int64
    tpl = tmp_path / "template.toml"
    tpl.write_text(mapping_template())
    raw = read_mapping(tpl)
    assert set(raw["tables"]) >= {"patients", "sessions", "observation"}
