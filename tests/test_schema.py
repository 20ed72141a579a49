"""Tests of the data contract: pandera schemas, cross-table checks, coercion (iop_research.data.schema)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.exceptions import DataValidationError, IopError
from iop_research.data.io import IOPData
from iop_research.data.schema import (
    COLUMN_RANGES,
    PROBLEM_COLUMNS,
    TABLE_COLUMNS,
    TABLES,
    VOCABULARIES,
    Col,
    coerce_tables,
    column_kinds,
    empty_table,
    find_problems,
    table_schema,
    validate_tables,
)

from tiny_study import valid_tables


def _has(problems: pd.DataFrame, table: str, column: str, check: str) -> pd.Series:
    rows = problems[(problems.table == table) & (problems.column == column) & (problems.check == check)]
    assert len(rows) == 1, f"expected one {table}.{column} [{check}] problem, got:\n{problems.to_string()}"
    return rows.iloc[0]


# ---------------------------------------------------------------- valid input


def test_valid_fixture_has_no_problems():
    t = valid_tables()
    problems = find_problems(t)
    assert list(problems.columns) == list(PROBLEM_COLUMNS)
    assert problems.empty, problems.to_string()


def test_validate_returns_self_and_does_not_mutate():
    t = valid_tables()
    before = {k: v.copy() for k, v in t.items()}
    data = IOPData(**t)
    assert data.validate() is data
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(data, name), before[name])
        assert getattr(data, name) is t[name]


def test_empty_tables_are_valid_and_canonical():
    tables = {name: empty_table(name) for name in TABLES}
    assert find_problems(tables).empty
    for name in TABLES:
        assert list(tables[name].columns) == [c[0] for c in TABLE_COLUMNS[name]]
    with pytest.raises(KeyError, match="unknown table"):
        empty_table("visits")


def test_schemas_are_generated_from_table_columns():
    for name in TABLES:
        schema = table_schema(name)
        assert list(schema.columns) == [c[0] for c in TABLE_COLUMNS[name]]
        for col, kind, nullable, _ in TABLE_COLUMNS[name]:
            assert schema.columns[col].nullable is nullable
    assert table_schema("patients").columns["patient_id"].unique
    assert table_schema("admissions").columns["episode_id"].unique
    assert table_schema("observation").columns["patient_id"].unique
    assert not table_schema("sessions").columns["patient_id"].unique
    assert COLUMN_RANGES["sessions"]["minutes"].describe() == "between 1 and 600"
    assert column_kinds("sessions")["attended"] == "bool"


def test_extra_columns_categoricals_and_other_date_units_are_accepted():
    t = valid_tables()
    t["admissions"] = t["admissions"].assign(audit_score=[12, 30, 7], intake_note=["a", "b", None])
    t["sessions"] = t["sessions"].assign(modality=t["sessions"]["modality"].astype("category"))
    t["observation"] = t["observation"].assign(
        observation_end=t["observation"]["observation_end"].astype("datetime64[s]")
    )
    assert find_problems(t).empty


def test_sessions_only_data_is_not_checked_against_episodes():
    t = valid_tables()
    t["admissions"] = empty_table("admissions")
    t["sessions"] = t["sessions"].assign(episode_id=None)
    assert find_problems(t).empty


def test_tolerance_days_widens_episodes():
    t = valid_tables()
    t["sessions"].loc[4, "session_date"] = pd.Timestamp("2024-02-01")  # P2's E3 ends 2024-01-30
    assert _has(find_problems(t), "sessions", "session_date", "within_episode")["n_failures"] == 1
    assert find_problems(t, tolerance_days=2).empty


# ------------------------------------------------------- malformed, in memory


def _set(table, row, col, value):
    def mutate(t):
        t[table].loc[row, col] = value
    return mutate


def _replace(table, col, values):
    def mutate(t):
        t[table] = t[table].assign(**{col: values})
    return mutate


def _drop_col(table, col):
    def mutate(t):
        t[table] = t[table].drop(columns=col)
    return mutate


def _add_row(table, **values):
    def mutate(t):
        t[table] = pd.concat([t[table], pd.DataFrame([values]).astype(t[table].dtypes.to_dict())],
                             ignore_index=True)
    return mutate


def _drop_row(table, row):
    def mutate(t):
        t[table] = t[table].drop(index=row).reset_index(drop=True)
    return mutate


TS = pd.Timestamp

# (case id, mutation, table, column, check, ids that the message must name)
MALFORMED = [
    ("missing_column", _drop_col("sessions", "modality"), "sessions", "modality", "column_present", []),
    ("minutes_as_text", _replace("sessions", "minutes", ["180", "60", "90", "120", "60"]),
     "sessions", "minutes", "dtype(int)", ["P1"]),
    ("patient_id_as_int", _replace("patients", "patient_id", [1, 2, 3]),
     "patients", "patient_id", "dtype(id)", ["1", "2", "3"]),
    ("mixed_id_types", _replace("observation", "patient_id", ["P1", 2, "P3"]),
     "observation", "patient_id", "dtype(id)", ["rows 1"]),
    ("dates_as_text", _replace("observation", "observation_end", ["2024-06-30"] * 3),
     "observation", "observation_end", "dtype(date)", ["P1"]),
    ("time_of_day", _set("sessions", 0, "session_date", TS("2024-01-03 10:00")),
     "sessions", "session_date", "whole_day", ["P1"]),
    ("unknown_modality", _set("sessions", 4, "modality", "yoga"), "sessions", "modality", "allowed_values", ["P2"]),
    ("unknown_medication", _set("medications", 0, "medication", "suboxone"),
     "medications", "medication", "allowed_values", ["P1"]),
    ("unknown_sex", _set("patients", 1, "sex", "M"), "patients", "sex", "allowed_values", ["P2"]),
    ("unknown_result", _set("events", 0, "result", "pos"), "events", "result", "allowed_values", ["P1"]),
    ("negative_days_supply", _set("medications", 1, "days_supply", -5),
     "medications", "days_supply", "range(between 1 and 365)", ["P2"]),
    ("zero_minutes", _set("sessions", 0, "minutes", 0), "sessions", "minutes", "range(between 1 and 600)", ["P1"]),
    ("minutes_10000", _set("sessions", 3, "minutes", 10000),
     "sessions", "minutes", "range(between 1 and 600)", ["P2"]),
    ("zero_dose", _set("medications", 0, "dose_mg", 0.0), "medications", "dose_mg", "range(> 0)", ["P1"]),
    ("infinite_dose", _set("medications", 1, "dose_mg", np.inf), "medications", "dose_mg", "finite", ["P2"]),
    ("severity_11", _set("admissions", 0, "severity_score", 11.0),
     "admissions", "severity_score", "range(between 0 and 10)", ["E1"]),
    ("negative_prior_episodes", _set("admissions", 2, "prior_treatment_episodes", -1),
     "admissions", "prior_treatment_episodes", "range(>= 0)", ["E3"]),
    ("birth_year_1850", _set("patients", 2, "birth_year", 1850),
     "patients", "birth_year", "range(between 1900 and 2020)", ["P3"]),
    ("duplicate_patient_id", _set("patients", 2, "patient_id", "P2"), "patients", "patient_id", "unique", ["P2"]),
    ("duplicate_episode_id", _set("admissions", 1, "episode_id", "E1"), "admissions", "episode_id", "unique", ["E1"]),
    ("duplicate_observation", _set("observation", 2, "patient_id", "P1"),
     "observation", "patient_id", "unique", ["P1"]),
    ("nan_patient_id", _set("sessions", 3, "patient_id", np.nan), "sessions", "patient_id", "not_null", ["rows 3"]),
    ("missing_program", _set("admissions", 2, "program", None), "admissions", "program", "not_null", ["E3"]),
    ("discharge_before_admission", _set("admissions", 2, "discharge_date", TS("2024-01-05")),
     "admissions", "discharge_date", "discharge_not_before_admit", ["E3"]),
    ("reason_without_discharge", _set("admissions", 1, "discharge_reason", "completed"),
     "admissions", "discharge_reason", "reason_iff_discharge_date", ["E2"]),
    ("discharge_without_reason", _set("admissions", 0, "discharge_reason", None),
     "admissions", "discharge_reason", "reason_iff_discharge_date", ["E1"]),
    ("overlapping_episodes", _set("admissions", 1, "admit_date", TS("2024-02-10")),
     "admissions", "admit_date", "no_overlap", ["E2"]),
    ("admission_on_previous_discharge", _set("admissions", 1, "admit_date", TS("2024-02-15")),
     "admissions", "admit_date", "no_overlap", ["E2"]),
    ("admission_during_open_episode",
     _add_row("admissions", episode_id="E4", patient_id="P1", program="north", admit_date=TS("2024-05-01"),
              discharge_date=TS("2024-05-20"), discharge_reason="completed", referral_source="self",
              primary_substance="opioids", psychiatric_comorbidity=False, prior_treatment_episodes=2,
              severity_score=1.0, housing=None, employment=None),
     "admissions", "admit_date", "no_overlap", ["E4"]),
    ("session_of_unknown_patient", _set("sessions", 4, "patient_id", "P9"),
     "sessions", "patient_id", "known_patient", ["P9"]),
    ("dispensing_of_unknown_patient", _set("medications", 1, "patient_id", "P7"),
     "medications", "patient_id", "known_patient", ["P7"]),
    ("admission_of_unknown_patient", _set("admissions", 2, "patient_id", "P8"),
     "admissions", "patient_id", "known_patient", ["E3"]),
    ("patient_without_observation", _drop_row("observation", 2),
     "observation", "patient_id", "observation_for_every_patient", ["P3"]),
    ("session_outside_every_episode", _set("sessions", 4, "session_date", TS("2024-03-15")),
     "sessions", "session_date", "within_episode", ["P2"]),
    ("session_before_first_episode", _set("sessions", 1, "session_date", TS("2023-12-30")),
     "sessions", "session_date", "within_episode", ["P1"]),
    ("session_outside_its_episode", _set("sessions", 0, "session_date", TS("2024-03-01")),
     "sessions", "session_date", "within_episode", ["P1"]),
    ("session_episode_unknown", _set("sessions", 0, "episode_id", "E99"),
     "sessions", "episode_id", "known_episode", ["P1"]),
    ("session_episode_of_other_patient", _set("sessions", 3, "episode_id", "E1"),
     "sessions", "patient_id", "episode_patient_match", ["P2"]),
    ("event_after_observation_end", _set("events", 0, "event_date", TS("2024-07-15")),
     "events", "event_date", "not_after_observation_end", ["P1"]),
    ("dispensing_after_observation_end", _set("medications", 1, "dispense_date", TS("2024-05-02")),
     "medications", "dispense_date", "not_after_observation_end", ["P2"]),
    ("session_after_observation_end", _set("sessions", 2, "session_date", TS("2024-07-01")),
     "sessions", "session_date", "not_after_observation_end", ["P1"]),
    ("admission_after_observation_end", _set("admissions", 1, "admit_date", TS("2024-07-01")),
     "admissions", "admit_date", "not_after_observation_end", ["E2"]),
    ("uds_without_result", _set("events", 0, "result", None), "events", "result", "uds_has_result", ["P1"]),
]


@pytest.mark.parametrize(
    "mutate, table, column, check, ids", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_in_memory(mutate, table, column, check, ids):
    t = valid_tables()
    mutate(t)
    data = IOPData(**t)
    with pytest.raises(DataValidationError) as info:
        data.validate()
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, IopError)
    row = _has(err.problems, table, column, check)
    assert row["n_failures"] >= 1
    line = next(ln for ln in str(err).splitlines() if ln.startswith(f"- {table}.{column} [{check}]"))
    assert "Fix:" in line
    for ident in ids:
        assert ident in row["examples"]
        assert ident in line


def test_every_problem_is_reported_at_once():
    t = valid_tables()
    t["patients"].loc[2, "birth_year"] = 1850
    t["sessions"].loc[0, "minutes"] = 0
    t["sessions"].loc[4, "modality"] = "yoga"
    t["medications"].loc[0, "medication"] = "suboxone"
    t["admissions"].loc[2, "discharge_date"] = TS("2024-01-05")
    t["events"].loc[0, "event_date"] = TS("2024-07-15")
    t["observation"] = t["observation"].drop(columns="observation_end")
    with pytest.raises(DataValidationError) as info:
        validate_tables(t)
    problems = info.value.problems
    expected = {
        ("patients", "birth_year", "range(between 1900 and 2020)"),
        ("sessions", "minutes", "range(between 1 and 600)"),
        ("sessions", "modality", "allowed_values"),
        ("medications", "medication", "allowed_values"),
        ("admissions", "discharge_date", "discharge_not_before_admit"),
        ("observation", "observation_end", "column_present"),
        ("sessions", "session_date", "within_episode"),  # P2's sessions now lie after E3's discharge
    }
    assert expected <= set(zip(problems.table, problems.column, problems.check))
    message = str(info.value)
    assert message.startswith(f"{len(problems)} data-contract problem(s)")
    assert sum(ln.startswith("- ") for ln in message.splitlines()) == len(problems)
    # without observation_end, dates are not compared with it
    assert "not_after_observation_end" not in set(problems.check)


def test_wrong_dtype_suppresses_value_checks_of_that_column():
    t = valid_tables()
    t["sessions"] = t["sessions"].assign(minutes=["180", "x", "90", "0", "60"])
    problems = find_problems(t)
    assert list(problems.check) == ["dtype(int)"]
    assert problems.n_failures.iloc[0] == 5


def test_examples_list_at_most_five_ids():
    t = valid_tables()
    n = 12
    t["sessions"] = pd.DataFrame({
        "patient_id": [f"Q{i}" for i in range(n)], "episode_id": [None] * n,
        "session_date": pd.to_datetime(["2024-01-03"] * n), "modality": ["group"] * n,
        "minutes": [60] * n, "attended": [True] * n,
    })
    row = _has(find_problems(t), "sessions", "patient_id", "known_patient")
    assert row["n_failures"] == n
    assert row["examples"] == "patient_id Q0, Q1, Q2, Q3, Q4, ...; rows 0, 1, 2, 3, 4, ..."


def test_not_a_dataframe_is_a_problem():
    t = valid_tables()
    t["events"] = None
    row = _has(find_problems(t), "events", "", "is_dataframe")
    assert "NoneType" in row["examples"]


# ------------------------------------------------------------------- coercion


def _as_text(t):
    """Frames as read from CSV: every contract value as text, missing as NaN."""
    out = {}
    for name, df in t.items():
        cols = {}
        for col in df.columns:
            s = df[col]
            if pd.api.types.is_datetime64_dtype(s.dtype):
                cols[col] = s.dt.strftime("%Y-%m-%d").astype(object).where(s.notna(), np.nan)
            else:
                cols[col] = s.astype(object).map(str, na_action="ignore").where(s.notna(), np.nan)
        out[name] = pd.DataFrame(cols)
    return out


def test_coerce_text_tables_to_canonical_dtypes():
    t = valid_tables()
    text = _as_text(t)
    before = {k: v.copy() for k, v in text.items()}
    tables, problems = coerce_tables(text)
    assert problems.empty
    for name in TABLES:
        pd.testing.assert_frame_equal(tables[name], t[name])
        pd.testing.assert_frame_equal(text[name], before[name])  # input untouched
    assert find_problems(tables).empty


def test_coerce_reports_unparseable_values_with_rows():
    text = _as_text(valid_tables())
    text["admissions"].loc[2, "admit_date"] = "2024-13-45"
    text["admissions"].loc[0, "discharge_date"] = "15/02/2024"
    text["sessions"].loc[1, "attended"] = "yes"
    text["sessions"].loc[3, "minutes"] = "90.5"
    text["medications"].loc[1, "days_supply"] = "four weeks"
    text["medications"].loc[0, "dose_mg"] = "16mg"
    tables, problems = coerce_tables(text)
    got = {(p.table, p.column, p.check): p.examples for p in problems.itertuples()}
    assert got == {
        ("admissions", "admit_date", "parse(date)"): "episode_id E3; rows 2",
        ("admissions", "discharge_date", "parse(date)"): "episode_id E1; rows 0",
        ("sessions", "minutes", "parse(int)"): "patient_id P2; rows 3",
        ("sessions", "attended", "parse(bool)"): "patient_id P1; rows 1",
        ("medications", "days_supply", "parse(int)"): "patient_id P2; rows 1",
        ("medications", "dose_mg", "parse(float)"): "patient_id P1; rows 0",
    }
    assert "'four weeks'" in problems.set_index("column").loc["days_supply", "fix"]
    assert tables["sessions"]["minutes"].dtype == "Int64"
    assert tables["sessions"]["attended"].dtype == "boolean"
    assert tables["sessions"]["minutes"].isna().sum() == 1


def test_coerce_accepts_boolean_spellings_and_integral_floats():
    raw = {"sessions": pd.DataFrame({
        "patient_id": [1.0, 2.0, 3.0, 4.0], "episode_id": [np.nan] * 4,
        "session_date": ["2024-01-01", "2024-01-02", "", "2024-01-04"],
        "modality": ["group"] * 4, "minutes": [60.0, 90.0, 120.0, 30.0],
        "attended": ["TRUE", "false", "1", "0"],
    })}
    tables, problems = coerce_tables(raw)
    assert problems.empty
    s = tables["sessions"]
    assert s["patient_id"].tolist() == ["1", "2", "3", "4"]
    assert s["minutes"].dtype == "int64"
    assert s["attended"].tolist() == [True, False, True, False]
    assert s["session_date"].isna().tolist() == [False, False, True, False]  # blank = missing, not an error


def test_coerce_then_validate_does_not_double_count_parse_failures():
    text = _as_text(valid_tables())
    text["sessions"].loc[3, "minutes"] = "ninety"
    text["sessions"].loc[4, "minutes"] = np.nan
    tables, problems = coerce_tables(text)
    assert list(problems.check) == ["parse(int)"]
    with pytest.raises(DataValidationError) as info:
        IOPData(**text).coerce()
    assert "sessions.minutes [parse(int)]" in str(info.value)
    # validating the coerced frames alone sees both rows as missing
    problems = find_problems(tables)
    assert _has(problems, "sessions", "minutes", "not_null")["n_failures"] == 2


def test_vocabularies_cover_every_category_kind():
    kinds = {kind.split(":", 1)[1] for cols in TABLE_COLUMNS.values() for _, kind, _, _ in cols
             if kind.startswith("category:")}
    assert kinds == set(VOCABULARIES)
    assert Col.patient_id == "patient_id"


def test_tolerance_with_open_episode_without_observation_end():
    t = valid_tables()
    t["observation"] = t["observation"].iloc[[1, 2]].reset_index(drop=True)  # P1 (open episode E2) has none
    t["events"] = t["events"].iloc[[1, 2]].reset_index(drop=True)
    problems = find_problems(t, tolerance_days=3)
    assert set(problems.check) == {"observation_for_every_patient"}, problems.to_string()


def test_data_readme_documents_every_table_column_and_value():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text(encoding="utf-8")
    for table, cols in TABLE_COLUMNS.items():
        section = text.split(f"### `{table}`", 1)[1].split("\n### ", 1)[0]
        for col, kind, nullable, _ in cols:
            row = next(ln for ln in section.splitlines() if ln.startswith(f"| `{col}` |"))
            assert ("| yes |" in row) is nullable, row
            if kind.startswith("category:"):
                assert f"`{kind.split(':', 1)[1]}`" in row
    for name, vocab in VOCABULARIES.items():
        section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        for value in vocab.values():
            assert f"| `{value}` |" in section, (name, value)
    for check in ("column_present", "known_patient", "no_overlap", "within_episode", "uds_has_result"):
        assert f"| `{check}` |" in text


def test_duplicate_column_names_are_reported_not_crashing():
    t = valid_tables()
    t["sessions"] = pd.concat([t["sessions"], t["sessions"][["minutes"]]], axis=1)
    problems = find_problems(t)
    assert list(zip(problems.column, problems.check)) == [("minutes", "unique_column_name")]
    t["sessions"].iloc[0, 4] = 0  # first 'minutes': values of a duplicated column are not checked
    assert "range(between 1 and 600)" not in set(find_problems(t).check)


def test_string_and_nullable_dtypes_are_accepted():
    t = valid_tables()
    t["sessions"] = t["sessions"].astype({"patient_id": "string", "modality": "string"})
    t["patients"] = t["patients"].astype({"birth_year": "Int64"})
    assert find_problems(t).empty
    t["sessions"].loc[4, "modality"] = "yoga"
    assert _has(find_problems(t), "sessions", "modality", "allowed_values")["examples"] == "patient_id P2; rows 4"
