"""TEDS-D reader and TEDS-format generator (iop_research.datasets.teds)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from iop_research.datasets import _codebook as cb
from iop_research.exceptions import DataReadError, DataValidationError
from iop_research.data.schema import DischargeReason, PrimarySubstance
from iop_research.datasets.teds import read_teds_d, teds_attrition, teds_missing, write_teds_d_like

HEADER = ("CASEID,DISYR,ADMYR,STFIPS,SERVICES,SERVICES_D,REASON,LOS,METHUSE,FREQ1,FREQ1_D,SUB1,"
          "NOPRIOR,PSYPROB,GENDER,AGE,RACE,ETHNIC,EXTRA")


def _hand_file(tmp_path, rows, header=HEADER, name="hand.csv", encoding="latin-1"):
    path = tmp_path / name
    path.write_bytes(("\n".join([header] + rows) + "\n").encode(encoding))
    return path


HAND_ROWS = [
    # CASEID DISYR ADMYR STFIPS SERV SERV_D REASON LOS METH FREQ1 FREQ1_D SUB1 NOPRIOR PSY GENDER AGE RACE ETHNIC EXTRA
    "11,2019,2019,6,6,6,1,12,1,3,1,5,0,1,2,5,5,4,caf\xe9",
    "12,2019,2018,36,7,6,2,33,2,2,-9,2,5,2,1,12,4,2,x",
    "13,2019,-9,72,6,6,4,37,-9,-9,3,1,-9,-9,-9,1,-9,-9,y",
    "14,2018,2018,1,7,7,1,5,2,1,1,4,1,2,1,3,5,4,z",
    "15,2019,2019,56,6,6,6,31,2,3,3,10,2,1,2,7,8,5,",
]


@pytest.fixture(scope="module")
def coded_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("teds")
    return write_teds_d_like(d / "coded.csv", n_rows=60_000, years=(2018, 2019), seed=11)


@pytest.fixture(scope="module")
def coded(coded_file):
    return read_teds_d(coded_file)


def test_hand_file_maps_every_field(tmp_path):
    df = read_teds_d(_hand_file(tmp_path, HAND_ROWS), include_admission_setting=True)
    assert df["episode_id"].tolist() == ["11", "12", "13", "15"]
    first = df.iloc[0]
    assert first["state"] == "CA" and first["discharge_reason"] == "completed"
    assert first["los_code"] == "12" and first["los_days_lower"] == 12 and first["los_days_upper"] == 12
    assert bool(first["has_mat_plan"]) is True
    assert first["use_frequency_admission"] == "daily" and first["use_frequency_discharge"] == "none"
    assert first["primary_substance_teds"] == "heroin" and first["primary_substance"] == "opioids"
    assert first["prior_treatment_episodes"] == 0 and bool(first["psychiatric_comorbidity"]) is True
    assert first["sex"] == "female" and first["age_group"] == "25-29" and first["race"] == "white"
    assert first["ethnicity"] == "not_hispanic" and first["admission_setting"] == "intensive_outpatient"
    second = df.iloc[1]
    assert second["state"] == "NY" and second["los_code"] == "61-90"
    assert (second["los_days_lower"], second["los_days_upper"]) == (60.0, 90.0)
    assert pd.isna(second["use_frequency_discharge"]) and second["prior_treatment_episodes"] == 5
    assert second["sex"] == "male" and second["age_group"] == "65+" and second["admission_year"] == 2018
    third = df.iloc[2]
    assert third["state"] == "PR" and third["los_code"] == ">365"
    assert third["los_days_lower"] == 365 and math.isinf(third["los_days_upper"])
    for col in ("admission_year", "has_mat_plan", "use_frequency_admission", "prior_treatment_episodes",
                "psychiatric_comorbidity", "sex", "race", "ethnicity"):
        assert pd.isna(third[col]), col
    # SUB1 = 1 (none) has a TEDS label but no schema primary substance
    assert third["primary_substance_teds"] == "none" and pd.isna(third["primary_substance"])
    assert df.iloc[3]["discharge_reason"] == "death" and df.iloc[3]["ethnicity"] == "hispanic"
    assert df["discharge_reason"].dtype == pd.CategoricalDtype(DischargeReason.values())
    assert list(df["primary_substance"].cat.categories) == PrimarySubstance.values()
    assert df["age_group"].cat.ordered and df["los_code"].cat.ordered
    att = teds_attrition(df)
    assert att["n_remaining"].tolist() == [5, 5, 4] and att["n_excluded"].tolist() == [0, 0, 1]
    miss = teds_missing(df).set_index("column")["n_missing"]
    assert miss["sex"] == 1 and miss["use_frequency_admission"] == 1 and miss["episode_id"] == 0


def test_los_bounds_cover_every_code():
    for code in cb.CODEBOOK["LOS"].codes:
        lo, hi = cb.LOS_BOUNDS[code]
        assert lo <= hi
        if code <= 30:
            assert lo == hi == code
    assert [cb.LOS_BOUNDS[c] for c in (31, 36)] == [(30.0, 45.0), (180.0, 365.0)]


def test_generator_magnitudes(coded_file, coded):
    att = teds_attrition(coded)
    n_file = att["n_remaining"].iloc[0]
    assert n_file == 60_000
    assert 0.09 < len(coded) / n_file < 0.11  # IOP about 10% of discharges
    share = coded["discharge_reason"].value_counts(normalize=True)
    assert abs(share["completed"] - 0.38) < 0.02 and abs(share["dropped_out"] - 0.23) < 0.02
    assert abs(share["terminated"] - 0.14) < 0.02 and abs(share["transferred"] - 0.18) < 0.02
    assert 0.12 < coded["has_mat_plan"].mean() < 0.20
    codes = coded["los_code"].cat.codes
    assert coded["los_code"].cat.categories[int(codes.median())] == "31-45"  # median about 41 days
    comp = coded.loc[coded["discharge_reason"] == "completed", "los_days_upper"].median()
    drop = coded.loc[coded["discharge_reason"] == "dropped_out", "los_days_upper"].median()
    assert comp > drop
    assert coded["episode_id"].is_unique
    assert 0 < coded["psychiatric_comorbidity"].isna().mean() < 0.2  # -9 sprinkled


def test_generator_is_seeded(tmp_path):
    a = write_teds_d_like(tmp_path / "a.csv", n_rows=300, seed=5, chunk_rows=100)
    b = write_teds_d_like(tmp_path / "b.csv", n_rows=300, seed=np.random.default_rng(5), chunk_rows=100)
    c = write_teds_d_like(tmp_path / "c.csv", n_rows=300, seed=6)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert len(a.read_text(encoding="latin-1").splitlines()) == 301


@pytest.mark.parametrize("variant", [dict(labelled=True), dict(servsetd=True), dict(sex_column=True),
                                     dict(labelled=True, servsetd=True, sex_column=True)])
def test_year_layouts_read_to_the_same_frame(tmp_path, variant):
    base = write_teds_d_like(tmp_path / "base.csv", n_rows=4000, seed=2, years=(2020, 2021))
    other = write_teds_d_like(tmp_path / "other.csv", n_rows=4000, seed=2, years=(2020, 2021), **variant)
    a, b = read_teds_d(base), read_teds_d(other)
    pd.testing.assert_frame_equal(a, b)
    src = b.attrs["teds_source"]
    if variant.get("labelled"):
        assert "REASON" in src["labelled_columns"] and "LOS" in src["labelled_columns"]
        assert '"Treatment completed"' in other.read_text(encoding="latin-1")
    if variant.get("servsetd"):
        assert src["renamed_columns"]["SERVSETD"] == "SERVICES_D"
    if variant.get("sex_column"):
        assert src["renamed_columns"]["SEX"] == "GENDER"


def test_years_and_all_settings(coded_file, coded):
    only = read_teds_d(coded_file, years=[2019])
    assert set(only["discharge_year"]) == {2019}
    assert len(only) == (coded["discharge_year"] == 2019).sum()
    att = teds_attrition(only)
    assert att["n_excluded"].iloc[1] > 0 and att["reason"].iloc[1] == "DISYR not in years"
    everything = read_teds_d(coded_file, iop_only=False)
    assert len(everything) == 60_000
    assert set(everything["discharge_setting"].dropna()) > {"intensive_outpatient", "outpatient"}
    assert (everything["discharge_setting"] == "intensive_outpatient").sum() == len(coded)


def test_labels_ignore_case_and_spacing(tmp_path):
    rows = ["1,2019,2019,Alabama,6,6,\"  treatment   COMPLETED \",\"31 to 45 days\",yes,daily use,"
            "no use in the past month,heroin,one prior treatment episode,no,male,25-29 years,white,"
            "mexican,x"]
    header = HEADER.replace("SERVICES,", "SERVICES,", 1)
    df = read_teds_d(_hand_file(tmp_path, rows, header=header))
    assert df["discharge_reason"].iloc[0] == "completed" and df["los_code"].iloc[0] == "31-45"
    assert df["state"].iloc[0] == "AL" and df["ethnicity"].iloc[0] == "hispanic"


def test_unknown_code_is_reported_not_guessed(tmp_path):
    rows = HAND_ROWS + ["16,2019,2019,6,6,6,8,12,1,3,1,5,0,1,2,5,5,4,w"]
    with pytest.raises(DataValidationError) as err:
        read_teds_d(_hand_file(tmp_path, rows))
    msg = str(err.value)
    assert "REASON" in msg and "8" in msg and "line 7" in msg and "CASEID 16" in msg
    assert err.value.problems["column"].tolist() == ["REASON"]


def test_unknown_label_is_reported(tmp_path):
    rows = ["1,2019,2019,Alabama,6,6,Graduated,12 days,Yes,Daily use,Daily use,Heroin,"
            "No prior treatment episodes,No,Male,25-29 years,White,Mexican,x"]
    with pytest.raises(DataValidationError, match="REASON.*'Graduated'"):
        read_teds_d(_hand_file(tmp_path, rows))


def test_unknown_state_code(tmp_path):
    rows = ["1,2019,2019,3,6,6,1,12,1,3,1,5,0,1,2,5,5,4,x"]
    with pytest.raises(DataValidationError, match="STFIPS"):
        read_teds_d(_hand_file(tmp_path, rows))


def test_missing_columns_are_listed(tmp_path):
    header = HEADER.replace("REASON,", "").replace(",SERVICES_D", "")
    rows = ["11,2019,2019,6,6,12,1,3,1,5,0,1,2,5,5,4,x"]
    with pytest.raises(DataValidationError) as err:
        read_teds_d(_hand_file(tmp_path, rows, header=header))
    assert "SERVICES_D (or SERVSETD)" in str(err.value) and "REASON" in str(err.value)
    with pytest.raises(DataValidationError, match="SERVICES"):
        read_teds_d(_hand_file(tmp_path, HAND_ROWS, header=HEADER.replace("SERVICES,", "OTHER,", 1)),
                    include_admission_setting=True)


def test_wrong_delimiter(tmp_path):
    path = _hand_file(tmp_path, [r.replace(",", ";") for r in HAND_ROWS], header=HEADER.replace(",", ";"))
    with pytest.raises(DataReadError, match="';'-delimited"):
        read_teds_d(path)


def test_non_numeric_value_in_numeric_column(tmp_path):
    rows = HAND_ROWS + ["17,20x9,2019,6,6,6,1,12,1,3,1,5,0,1,2,5,5,4,w"]
    with pytest.raises(DataReadError, match="DISYR"):
        read_teds_d(_hand_file(tmp_path, rows))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataReadError, match="not found"):
        read_teds_d(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataReadError, match="empty"):
        read_teds_d(tmp_path / "empty.csv")
    with pytest.raises(DataReadError, match="engine"):
        read_teds_d(tmp_path / "empty.csv", engine="spark")


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(DataValidationError):
        write_teds_d_like(tmp_path / "x.csv", n_rows=0, seed=1)
    with pytest.raises(DataValidationError):
        write_teds_d_like(tmp_path / "x.csv", n_rows=5, years=(), seed=1)


def test_attrs_missing_raise():
    with pytest.raises(DataValidationError):
        teds_attrition(pd.DataFrame())
    with pytest.raises(DataValidationError):
        teds_missing(pd.DataFrame())


def test_reader_agrees_with_plain_pandas_mapping(coded_file, coded):
    """Independent path: pandas.read_csv + codebook dictionaries give the same IOP frame."""
    raw = pd.read_csv(coded_file, encoding="latin-1")
    iop = raw[raw["SERVICES_D"] == 6].reset_index(drop=True)
    assert iop["CASEID"].astype(str).tolist() == coded["episode_id"].tolist()
    for col, out in (("REASON", "discharge_reason"), ("STFIPS", "state"), ("SUB1", "primary_substance_teds"),
                     ("AGE", "age_group"), ("RACE", "race"), ("FREQ1_D", "use_frequency_discharge")):
        expect = iop[col].map({k: v for k, (v, _) in cb.CODEBOOK[col].codes.items()})
        assert expect.fillna("<NA>").tolist() == coded[out].astype(object).fillna("<NA>").tolist(), col
    lo = iop["LOS"].map({k: v[0] for k, v in cb.LOS_BOUNDS.items()})
    hi = iop["LOS"].map({k: v[1] for k, v in cb.LOS_BOUNDS.items()})
    np.testing.assert_array_equal(lo.to_numpy(), coded["los_days_lower"].to_numpy())
    np.testing.assert_array_equal(hi.to_numpy(), coded["los_days_upper"].to_numpy())
    mat = iop["METHUSE"].map({1: True, 2: False})
    assert mat.isna().sum() == coded["has_mat_plan"].isna().sum()
    assert (mat.dropna().to_numpy() == coded["has_mat_plan"].dropna().to_numpy()).all()


def test_text_after_the_sampled_rows_is_mapped_or_reported(tmp_path):
    good = "17,2019,2019,6,6,6,1,12,1,3,1,5,0,1,2,5,5,4,w"
    late_label = "18,2019,2019,6,6,6,Dropped out of treatment,12,1,3,1,5,0,1,2,5,5,4,w"
    df = read_teds_d(_hand_file(tmp_path, [good] * 2500 + [late_label], name="late.csv"))
    assert df["discharge_reason"].iloc[-1] == "dropped_out" and len(df) == 2501
    assert df.attrs["teds_source"]["labelled_columns"] == ["REASON"]
    late_junk = late_label.replace("Dropped out of treatment", "done")
    with pytest.raises(DataValidationError, match="line 2502 \\(CASEID 18\\): 'done'"):
        read_teds_d(_hand_file(tmp_path, [good] * 2500 + [late_junk], name="junk.csv"))


def test_quoted_header_bom_and_empty_selection(tmp_path):
    header = "\ufeff" + ",".join(f'"{c}"' for c in HEADER.split(","))
    path = tmp_path / "bom.csv"
    path.write_bytes(("\n".join([header] + HAND_ROWS[:2]) + "\n").encode("utf-8"))
    df = read_teds_d(path)
    assert df["episode_id"].tolist() == ["11", "12"]
    none = read_teds_d(path, years=[2030])
    assert len(none) == 0 and list(none.columns) == list(df.columns)
    assert teds_attrition(none)["n_excluded"].tolist() == [0, 2, 0]


def test_same_columns_without_admyr(tmp_path):
    header = HEADER.replace("ADMYR,", "")
    rows = [",".join(r.split(",")[:2] + r.split(",")[3:]) for r in HAND_ROWS]
    df = read_teds_d(_hand_file(tmp_path, rows, header=header))
    full = read_teds_d(_hand_file(tmp_path, HAND_ROWS, name="full.csv"))
    assert list(df.columns) == list(full.columns)
    assert df["admission_year"].isna().all() and str(df["admission_year"].dtype) == "Int16"
    pd.testing.assert_frame_equal(df.drop(columns="admission_year"), full.drop(columns="admission_year"))
