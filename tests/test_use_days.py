"""The optional use_days table (Timeline Followback): contract checks, read/write, IOPData, tlfb_endpoints(data),
and mapping it from an extract."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from ehr_extract import write_ehr_extract
from iop_research.data.io import IOPData, read_data
from iop_research.data.mapping import map_extract
from iop_research.data.schema import OPTIONAL_TABLES, TABLE_COLUMNS, TABLES, column_kinds, empty_table, find_problems
from iop_research.derive import build_episodes
from iop_research.derive.repeated import tlfb_endpoints
from iop_research.exceptions import DataValidationError, IopError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ehr_extract" / "mapping.toml"


def _tables() -> dict[str, pd.DataFrame]:
    t = {n: empty_table(n) for n in TABLES}
    t["patients"] = pd.DataFrame({"patient_id": ["P1", "P2"], "birth_year": [1980, 1975], "sex": ["female", "male"],
                                  "race": [None, None], "ethnicity": [None, None]})
    t["admissions"] = pd.DataFrame({
        "episode_id": ["E1", "E2"], "patient_id": ["P1", "P2"], "program": ["A", "A"],
        "admit_date": pd.to_datetime(["2024-01-01", "2024-01-05"]), "discharge_date": pd.NaT,
        "discharge_reason": [None, None], "referral_source": ["self", "self"],
        "primary_substance": ["alcohol", "alcohol"], "psychiatric_comorbidity": [False, False],
        "prior_treatment_episodes": [0, 1], "severity_score": [5.0, 6.0], "housing": [None, None],
        "employment": [None, None]})
    t["admissions"]["discharge_date"] = t["admissions"]["discharge_date"].astype("datetime64[ns]")
    t["observation"] = pd.DataFrame({"patient_id": ["P1", "P2"],
                                     "observation_end": pd.to_datetime(["2024-06-30", "2024-06-30"])})
    return t


def _use_days() -> pd.DataFrame:
    # P1 (female): abstinent days 0-2, 3 drinks on day 3, 4 drinks (heavy for women) on day 4
    # P2 (male): 4 drinks on day 1 (not heavy for men), 6 on day 2 (heavy); day 3 not recorded
    return pd.DataFrame({
        "patient_id": ["P1"] * 5 + ["P2"] * 3,
        "use_date": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05",
                                    "2024-01-05", "2024-01-06", "2024-01-07"]),
        "substance": "alcohol",
        "used": [False, False, False, True, True, False, True, True],
        "drinks": [0.0, 0.0, 0.0, 3.0, 4.0, 0.0, 4.0, 6.0],
    })


def test_contract_lists_use_days_as_optional():
    assert OPTIONAL_TABLES == ("use_days",) and "use_days" not in TABLES
    assert [c[0] for c in TABLE_COLUMNS["use_days"]] == ["patient_id", "use_date", "substance", "used", "drinks"]
    assert column_kinds("use_days") == {"patient_id": "id", "use_date": "date", "substance": "str", "used": "bool",
                                        "drinks": "float"}
    assert len(empty_table("use_days")) == 0


def test_valid_data_with_and_without_use_days():
    t = _tables()
    IOPData(**t).validate()
    d = IOPData(**t, use_days=_use_days()).validate()
    assert len(d.use_days) == 8 and "use_days=8" in repr(d)


@pytest.mark.parametrize("fault, column, check, rows", [
    (lambda u: u.assign(patient_id=u["patient_id"].where(u.index != 2, "P9")), "patient_id", "known_patient", "2"),
    (lambda u: u.assign(drinks=u["drinks"].where(u.index != 6, -1.0)), "drinks", "range(>= 0)", "6"),
    (lambda u: u.assign(drinks=u["drinks"].where(u.index != 0, 2.0)), "drinks", "no_drinks_when_not_used", "0"),
    (lambda u: pd.concat([u, u.iloc[[1]]], ignore_index=True), "use_date", "one_row_per_day", "1, 8"),
    (lambda u: u.assign(used=u["used"].astype("boolean").where(u.index != 4, pd.NA)), "used", "not_null", "4"),
    (lambda u: u.drop(columns="used"), "used", "column_present", None),
    (lambda u: u.assign(use_date=u["use_date"].where(u.index != 7, pd.Timestamp("2024-07-02"))), "use_date",
     "not_after_observation_end", "7"),
])
def test_problems_name_table_column_rows_and_fix(fault, column, check, rows):
    u = fault(_use_days())
    problems = IOPData(**_tables(), use_days=u).find_problems()
    hit = problems[(problems["table"] == "use_days") & (problems["column"] == column)]
    assert check in hit["check"].tolist(), problems
    row = hit[hit["check"] == check].iloc[0]
    if rows is not None:
        assert f"rows {rows}" in row["examples"]
    assert row["fix"]
    with pytest.raises(DataValidationError, match="use_days") as info:
        IOPData(**_tables(), use_days=u).validate()
    assert isinstance(info.value, IopError)


def test_find_problems_function_checks_use_days_when_given():
    t = _tables()
    bad = _use_days().assign(patient_id="P9")
    assert "known_patient" in find_problems({**t, "use_days": bad})["check"].tolist()
    assert find_problems(t).empty


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_write_and_read_round_trip(tmp_path, fmt):
    d = IOPData(**_tables(), use_days=_use_days())
    d.write(tmp_path / "out", format=fmt)
    assert (tmp_path / "out" / f"use_days.{fmt}").is_file()
    back = read_data(tmp_path / "out")
    pd.testing.assert_frame_equal(back.use_days, d.use_days, check_dtype=False)
    assert back.use_days["use_date"].dtype == "datetime64[ns]" and back.use_days["used"].dtype == bool
    # without the table: not written, read back as None
    IOPData(**_tables()).write(tmp_path / "none", format=fmt)
    assert not any(p.name.startswith("use_days") for p in (tmp_path / "none").iterdir())
    assert read_data(tmp_path / "none").use_days is None


def test_read_reports_unparsed_use_days_values(tmp_path):
    IOPData(**_tables(), use_days=_use_days()).write(tmp_path)
    text = (tmp_path / "use_days.csv").read_text().replace("2024-01-03", "03/01/2024")
    (tmp_path / "use_days.csv").write_text(text)
    with pytest.raises(DataValidationError, match="use_days") as info:
        read_data(tmp_path)
    assert "parse(date)" in info.value.problems["check"].tolist()


def test_coerce_carries_use_days():
    u = _use_days().assign(use_date=lambda x: x["use_date"].dt.strftime("%Y-%m-%d"), used=lambda x: x["used"].map(
        {True: "true", False: "false"}))
    d = IOPData(**_tables(), use_days=u).coerce()
    assert d.use_days["use_date"].dtype == "datetime64[ns]" and d.use_days["used"].dtype == bool


def test_tlfb_endpoints_reads_the_table_from_data():
    t = _tables()
    data = IOPData(**t, use_days=_use_days())
    eps = t["admissions"][["episode_id", "patient_id", "admit_date"]]
    from_data = tlfb_endpoints(data, eps, days=30)
    from_frame = tlfb_endpoints(data.use_days, eps, days=30, sex=data.patients)
    pd.testing.assert_frame_equal(from_data, from_frame)
    r = from_data.set_index("episode_id")
    # P1: 5 days recorded, 3 abstinent; first heavy day (4 drinks, a woman) on day 4
    assert r.loc["E1", "days_recorded"] == 5 and r.loc["E1", "percent_days_abstinent"] == pytest.approx(60.0)
    assert r.loc["E1", "first_heavy_day"] == 4 and r.loc["E1", "heavy_event"] == 1
    # P2: 4 drinks is not heavy for a man; 6 drinks on day 2 is
    assert r.loc["E2", "heavy_days"] == 1 and r.loc["E2", "first_heavy_day"] == 2
    with pytest.raises(DataValidationError, match="no use_days table"):
        tlfb_endpoints(IOPData(**t), eps)


def test_mapping_a_use_days_section(tmp_path):
    root = tmp_path
    _, data = write_ehr_extract(root / "extract", n_patients=60, seed=4)
    eps = build_episodes(data)
    first = eps.sort_values("admit_date").groupby("patient_id").head(1).head(5)
    rows = []
    for _, e in first.iterrows():
        for k in range(3):
            day = (e["admit_date"] + pd.Timedelta(days=k)).strftime("%m/%d/%Y")
            rows.append({"MRN": e["patient_id"].replace("P", "MRN"), "TLFBDate": day,
                         "Drug": "alcohol", "AnyUse": "Y" if k == 2 else "N", "StdDrinks": 5 if k == 2 else 0})
    pd.DataFrame(rows).to_csv(root / "extract" / "tlfb.csv", index=False)
    text = EXAMPLE.read_text() + (
        '\n[tables.use_days]\nsource = "tlfb.csv"\n'
        'columns = { patient_id = "MRN", use_date = "TLFBDate", substance = "Drug", used = "AnyUse", '
        'drinks = "StdDrinks" }\n')
    (root / "mapping.toml").write_text(text)
    mapped, report = map_extract(root / "mapping.toml", root / "out")
    assert mapped.use_days is not None and len(mapped.use_days) == 15
    assert mapped.use_days["used"].sum() == 5 and mapped.use_days["drinks"].max() == 5.0
    assert "use_days" in report.sources["table"].tolist()
    back = read_data(root / "out")
    assert len(back.use_days) == 15
    # without the section, the mapped data has no use_days
    shutil.copy(EXAMPLE, root / "mapping.toml")
    assert map_extract(root / "mapping.toml")[0].use_days is None
