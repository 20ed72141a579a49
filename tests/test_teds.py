"""TEDS-D/TEDS-A readers and generators (iop_research.datasets.teds) against SAMHSA's code books.

The code-book tables live outside the repository, in the shared data directory
(``<repo>/../shared/datasets/teds-d-codebooks``, or ``$IOP_SHARED_DATASETS/teds-d-codebooks``); the tests that need them skip, saying
why, when it is absent. Nothing of them is copied into the package or the tests.
"""
from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iop_research.data.schema import DischargeReason, PrimarySubstance
from iop_research.datasets import _codebook as cb
from iop_research.datasets.teds import (
    read_teds_a,
    read_teds_d,
    teds_attrition,
    teds_missing,
    write_teds_a_like,
    write_teds_d_like,
)
from iop_research.datasets.teds_frequencies import FREQUENCIES
from iop_research.exceptions import DataReadError, DataValidationError
from conftest import RSCRIPT, SHARED_DATASETS, requires_r

REPO = Path(__file__).resolve().parents[1]


#: ``../shared/datasets/teds-d-codebooks`` (``IOP_SHARED_DATASETS`` overrides the datasets folder)
CODEBOOK_DIR = SHARED_DATASETS / "teds-d-codebooks"
if os.environ.get("CI") and not (CODEBOOK_DIR / "teds_d_harmonization.csv").exists():  # never skip in CI
    raise RuntimeError(f"TEDS-D code-book tables not found at {CODEBOOK_DIR}; CI must have ../shared beside the clone")
TABLE_FILES = {"2006-2014": "TEDS-D-2006-2014-post-manual.csv",
               "2015": "TEDS-D-2015-DS0001-info-codebook_codes_post_manual.csv",
               "2017": "TEDS-D-2017-DS0001-info-codebook_codes.csv",
               "2019": "TEDS-D-2019-DS0001-info-codebook_V1_codes.csv"}
needs_codebooks = pytest.mark.skipif(
    not (CODEBOOK_DIR / "teds_d_harmonization.csv").exists(),
    reason=f"TEDS-D code-book tables not found at {CODEBOOK_DIR}; set IOP_SHARED_DATASETS to the shared datasets folder")
#: Harmonisation-table field name of a column, where it differs.
HARM_FIELD = {"ETHNIC": "ETHNICITY"}


def _read_table(key: str) -> dict[str, dict[int, tuple[str, int]]]:
    """``{column: {code: (label, frequency)}}`` of one code-book table, with the 2015 extraction fixed.

    Corrections (each restores the table's own totals, checked below): a "missing" row printed
    with value 9 is -9; the 2015 RACE missing count "23,9" lost its last digits "44" to the
    percent column ("441.70%").
    """
    out: dict[str, dict[int, tuple[str, int]]] = {}
    with open(CODEBOOK_DIR / TABLE_FILES[key], encoding="utf-8-sig", newline="") as fh:
        for r in csv.DictReader(fh):
            if not re.fullmatch(r"-?\d+", r["Value"].strip()):
                continue  # headers, totals and non-numeric geography codes (CBSA, PMSA)
            code, label = int(r["Value"]), r["Label"]
            if code == 9 and "missing/unknown" in label.lower():
                code = -9
            freq = int(re.sub(r"\D", "", r["Frequency"]))
            if key == "2015" and r["code"] == "RACE" and code == -9:
                assert r["Frequency"] == "23,9" and r["Percent"] == "441.70%"
                freq = 23_944
            col = "SERVICES_D" if r["code"] == "SERVSETD" else r["code"]
            out.setdefault(col, {})[code] = (label, freq)
    return out


def _harmonisation() -> dict[tuple[str, str], dict[int, str]]:
    """``{(field, layout column): {code: harmonised label}}`` (blank cells left out)."""
    out: dict[tuple[str, str], dict[int, str]] = {}
    with open(CODEBOOK_DIR / "teds_d_harmonization.csv", encoding="utf-8-sig", newline="") as fh:
        for r in csv.DictReader(fh):
            if not re.fullmatch(r"-?\d+", r["code"].strip()):
                continue  # non-numeric geography codes
            for key in ("2006-2014", "2015", "2017", "2019"):
                if r[f"{key}_recode"].strip():
                    out.setdefault((r["field"], key), {})[int(r["code"])] = r[f"{key}_recode"]
    return out


def _system(key: str) -> str:
    return "2006-2014" if key == "2006-2014" else "2015+"


# ---------------------------------------------------------------------------
# 1. The package's code book equals the shared code-book tables
# ---------------------------------------------------------------------------


@needs_codebooks
@pytest.mark.parametrize("key", list(TABLE_FILES))
def test_codes_and_labels_equal_the_code_book_tables(key):
    table = _read_table(key)
    for col, var in cb.CODEBOOK.items():
        published = {c: v for c, v in table.get(col, {}).items() if c != cb.MISSING_CODE}
        ours = var.codes[_system(key)]
        if col == "SERVICES" and key in ("2006-2014", "2015"):
            assert col not in table  # not in these code books (TEDS-A uses the SERVICES_D codes)
            continue
        if col == "FREQ1_D" and key == "2006-2014":
            assert col not in table and ours == {}
            continue
        if col == "STFIPS":  # a code book lists the states that reported that year
            assert set(published) <= set(ours), key
        else:
            assert set(published) == set(ours), (key, col)
        if key in ("2006-2014", "2019"):  # labels as printed (case and spacing aside)
            for code, (label, _) in published.items():
                label = "None" if col == "SUB1" and code == 1 and label == "" else label
                assert cb.normalise_label(ours[code][1]) == cb.normalise_label(label), (key, col, code)


@needs_codebooks
@pytest.mark.parametrize("key", list(TABLE_FILES))
def test_harmonised_vocabulary_equals_the_harmonisation_table(key):
    harm = _harmonisation()
    table = _read_table(key)
    for col, var in cb.CODEBOOK.items():
        field = HARM_FIELD.get(col, col)
        field = "SERVSETD" if col == "SERVICES_D" and ("SERVSETD", key) in harm else field
        labels = harm.get((field, key), {})
        for code, (value, _) in var.codes[_system(key)].items():
            if code not in table.get(col, {}):
                continue  # e.g. a state that did not report that year
            if col == "SUB1" and code == 1:
                assert code not in labels  # the harmonisation table leaves "None" blank
                continue
            assert cb.normalise_label(var.vocabulary[value]) == cb.normalise_label(labels[code]), (key, col, code)


@needs_codebooks
@pytest.mark.parametrize("key", list(TABLE_FILES))
def test_frequencies_equal_the_code_book_tables(key):
    table = _read_table(key)
    total = sum(f for _, f in table["DISYR"].values())
    assert FREQUENCIES[key].keys() <= table.keys()
    for col, freqs in FREQUENCIES[key].items():
        assert freqs == {c: f for c, (_, f) in table[col].items()}, (key, col)
        assert sum(freqs.values()) == total, (key, col)


# ---------------------------------------------------------------------------
# 2. Hand-made files: every mis-decoding of the old reader
# ---------------------------------------------------------------------------

HEADER = ("CASEID,DISYR,ADMYR,STFIPS,SERVICES,SERVICES_D,REASON,LOS,METHUSE,FREQ1,FREQ1_D,SUB1,"
          "NOPRIOR,PSYPROB,GENDER,AGE,RACE,ETHNIC,EXTRA")
HEADER_0614 = "CASEID,DISYR,STFIPS,SERVSETD,REASON,LOS,METHUSE,FREQ1,SUB1,NOPRIOR,PSYPROB,GENDER,AGE,RACE,ETHNIC"


def _hand_file(tmp_path, rows, header=HEADER, name="hand.csv", encoding="latin-1"):
    path = tmp_path / name
    path.write_bytes(("\n".join([header] + rows) + "\n").encode(encoding))
    return path


HAND_ROWS = [
    # CASEID DISYR ADMYR STFIPS SERV SERV_D REASON LOS METH FREQ1 FREQ1_D SUB1 NOPRIOR PSY GENDER AGE RACE ETHNIC EXTRA
    "11,2019,2019,6,6,6,1,12,1,3,1,5,0,1,2,5,5,4,caf\xe9",
    "12,2019,2018,36,7,6,2,33,2,2,-9,2,1,2,1,12,4,2,x",
    "13,2019,-9,72,6,6,4,37,-9,-9,3,1,-9,-9,-9,1,-9,-9,y",
    "14,2018,2018,1,7,7,1,5,2,1,1,4,1,2,1,3,5,4,z",
    "15,2019,2019,56,6,6,6,31,2,3,3,10,1,1,2,7,8,5,",
]

# CASEID DISYR STFIPS SERVSETD REASON LOS METHUSE FREQ1 SUB1 NOPRIOR PSYPROB GENDER AGE RACE ETHNIC
ROWS_0614 = [
    "1,2010,6,6,2,37,1,3,20,3,1,1,12,13,5",
    "2,2014,36,6,1,12,2,5,5,5,2,2,2,20,4",
    "3,2006,72,6,4,31,-9,4,2,0,-9,1,11,23,6",
    "4,2008,1,7,1,5,2,1,4,1,2,1,3,21,1",
    "5,2012,56,6,7,2,2,2,10,-9,1,2,7,1,3",
]


def test_2015_layout_hand_file_maps_every_field(tmp_path):
    df = read_teds_d(_hand_file(tmp_path, HAND_ROWS), include_admission_setting=True)
    assert df["episode_id"].tolist() == ["11", "12", "13", "15"]
    first = df.iloc[0]
    assert first["state"] == "CA" and first["discharge_reason"] == "completed" and first["teds_layout"] == "2015-2019"
    assert first["los_code"] == "12" and first["los_days_lower"] == 12 and first["los_days_upper"] == 12
    assert bool(first["has_mat_plan"]) is True
    assert first["use_frequency_admission"] == "daily" and first["use_frequency_discharge"] == "none"
    assert first["primary_substance_teds"] == "heroin" and first["primary_substance"] == "opioids"
    assert first["prior_treatment"] == "none" and first["prior_treatment_episodes"] == 0
    assert bool(first["psychiatric_comorbidity"]) is True
    assert first["sex"] == "female" and first["age_group"] == "25-29" and first["race"] == "white"
    assert first["ethnicity"] == "not_hispanic" and first["admission_setting"] == "intensive_outpatient"
    second = df.iloc[1]
    assert second["state"] == "NY" and second["los_code"] == "61-90"
    assert (second["los_days_lower"], second["los_days_upper"]) == (60.0, 90.0)
    assert pd.isna(second["use_frequency_discharge"])
    assert second["sex"] == "male" and second["age_group"] == "55+" and second["admission_year"] == 2018
    third = df.iloc[2]
    assert third["state"] == "PR" and third["los_code"] == ">365"
    assert third["los_days_lower"] == 365 and math.isinf(third["los_days_upper"])
    for col in ("admission_year", "has_mat_plan", "use_frequency_admission", "prior_treatment",
                "prior_treatment_episodes", "psychiatric_comorbidity", "sex", "race", "ethnicity"):
        assert pd.isna(third[col]), col
    assert third["primary_substance_teds"] == "none" and pd.isna(third["primary_substance"])
    assert df.iloc[3]["discharge_reason"] == "death" and df.iloc[3]["ethnicity"] == "hispanic"
    assert df.iloc[3]["ethnicity_detail"] == "hispanic_not_specified"
    assert df["discharge_reason"].dtype == pd.CategoricalDtype(DischargeReason.values())
    assert list(df["primary_substance"].cat.categories) == PrimarySubstance.values()
    assert df["age_group"].cat.ordered and df["los_code"].cat.ordered
    att = teds_attrition(df)
    assert att["n_remaining"].tolist() == [5, 5, 4] and att["n_excluded"].tolist() == [0, 0, 1]
    miss = teds_missing(df).set_index("column")["n_missing"]
    assert miss["sex"] == 1 and miss["use_frequency_admission"] == 1 and miss["episode_id"] == 0


def test_noprior_is_binary_from_2015(tmp_path):
    """Old reader: NOPRIOR 1 in 2019 read as a count of one prior episode."""
    df = read_teds_d(_hand_file(tmp_path, HAND_ROWS))
    second = df.iloc[1]
    assert second["prior_treatment"] == "one_or_more" and pd.isna(second["prior_treatment_episodes"])
    bad = [HAND_ROWS[0].replace(",5,0,1,2,5,5,4,", ",5,3,1,2,5,5,4,")]  # NOPRIOR 3 is no 2015+ code
    with pytest.raises(DataValidationError, match=r"NOPRIOR: value\(s\) 3 outside the 2015\+ code book"):
        read_teds_d(_hand_file(tmp_path, bad, name="bad.csv"))


def test_2006_2014_file_loads_and_decodes_with_its_own_codes(tmp_path):
    """Old reader: the file did not load (FREQ1_D required); made optional, AGE 12 read 65+,
    ETHNIC 4/5 swapped, FREQ1 3-5 wrong or rejected, SUB1 20 rejected, RACE 13/20/21/23 rejected."""
    df = read_teds_d(_hand_file(tmp_path, ROWS_0614, header=HEADER_0614))
    assert df["episode_id"].tolist() == ["1", "2", "3", "5"]
    assert (df["teds_layout"] == "2006-2014").all()
    assert df["age_group"].tolist() == ["55+", "12-14", "50-54", "30-34"]
    assert df["ethnicity_detail"].tolist() == ["not_hispanic", "cuban_or_other_specific", "hispanic_not_specified",
                                               "cuban_or_other_specific"]
    assert df["ethnicity"].tolist() == ["not_hispanic", "hispanic", "hispanic", "hispanic"]
    assert df["use_frequency_admission"].tolist() == ["some", "daily", "some", "some"]
    assert df["primary_substance_teds"].tolist() == ["other", "heroin", "alcohol", "methamphetamine"]
    assert df["race"].tolist() == ["asian", "other", "native_hawaiian_pacific_islander", "alaska_native"]
    assert df["prior_treatment_episodes"].tolist()[:3] == [3, 5, 0] and pd.isna(df["prior_treatment_episodes"].iloc[3])
    assert df["prior_treatment"].tolist()[:3] == ["one_or_more", "one_or_more", "none"]
    assert df["discharge_reason"].tolist() == ["dropped_out", "completed", "transferred", "other"]
    assert df["use_frequency_discharge"].isna().all() and df["admission_year"].isna().all()
    assert df.attrs["teds_source"]["renamed_columns"] == {"SERVSETD": "SERVICES_D"}
    assert set(df.attrs["teds_source"]["absent_columns"]) == {"ADMYR", "FREQ1_D", "SERVICES"}


@pytest.mark.parametrize("column,value,replace", [
    ("AGE", "1", (",1,12,13,5", ",1,1,13,5")),        # AGE 1 (12-14 from 2015) is no 2006-2014 code
    ("SUB1", "19", (",3,20,3,", ",3,19,3,")),         # SUB1 "Other" is 20 in 2006-2014
    ("RACE", "6", (",12,13,5", ",12,6,5")),           # RACE 6 (Asian from 2015) is 13 in 2006-2014
    ("FREQ1", "6", (",1,3,20,", ",1,6,20,")),
])
def test_value_outside_its_years_code_book_names_column_value_line_and_caseid(tmp_path, column, value, replace):
    rows = [ROWS_0614[0].replace(*replace)] + ROWS_0614[1:]
    with pytest.raises(DataValidationError) as err:
        read_teds_d(_hand_file(tmp_path, rows, header=HEADER_0614))
    msg = str(err.value)
    assert f"{column}: value(s) {value} outside the 2006-2014 code book" in msg
    assert "line 2 (CASEID 1, DISYR 2010)" in msg
    assert err.value.problems["column"].tolist() == [column]


def test_same_code_means_different_things_by_year(tmp_path):
    """One file, two code systems: AGE 12 and ETHNIC 4 decoded by each row's DISYR."""
    header = "CASEID,DISYR,STFIPS,SERVICES_D,REASON,LOS,METHUSE,FREQ1,SUB1,NOPRIOR,PSYPROB,GENDER,AGE,RACE,ETHNIC"
    rows = ["1,2014,6,6,1,5,2,1,2,0,2,1,11,5,4", "2,2015,6,6,1,5,2,1,2,0,2,1,11,5,4"]
    df = read_teds_d(_hand_file(tmp_path, rows, header=header))
    assert df["age_group"].tolist() == ["50-54", "55+"]
    assert df["ethnicity"].tolist() == ["hispanic", "not_hispanic"]
    assert df["teds_layout"].tolist() == ["2006-2014", "2015-2019"]
    assert df.attrs["teds_source"]["layouts"] == ["2006-2014", "2015-2019"]


def test_labelled_file_more_than_a_year_and_one_or_more(tmp_path):
    """Old reader: LOS 37 labelled "More than a year" and NOPRIOR's text were rejected."""
    rows = [('1,2021,2021,California,"Ambulatory, intensive outpatient","Ambulatory, intensive outpatient",'
             'Treatment completed,More than a year,Yes,Daily use,No use in the past month,Heroin,'
             'One or more prior treatment episodes,No,Female,65 years and older,White,'
             'Not of Hispanic or Latino origin,x')]
    df = read_teds_d(_hand_file(tmp_path, rows), include_admission_setting=True)
    row = df.iloc[0]
    assert row["los_code"] == ">365" and row["prior_treatment"] == "one_or_more" and row["age_group"] == "55+"
    assert row["teds_layout"] == "2020+" and row["ethnicity"] == "not_hispanic"
    assert "LOS" in df.attrs["teds_source"]["labelled_columns"]


def test_admission_setting_absent_before_2017(tmp_path):
    """Old reader: SERVSETA taken as the 2006-2014 name of SERVICES (in no code book)."""
    header = HEADER_0614 + ",SERVSETA"
    rows = [r + ",6" for r in ROWS_0614]
    with pytest.raises(DataValidationError, match="2017 and later code books only"):
        read_teds_d(_hand_file(tmp_path, rows, header=header), include_admission_setting=True)
    assert "admission_setting" not in read_teds_d(_hand_file(tmp_path, rows, header=header, name="b.csv")).columns


def test_los_convention_contract_moves_outpatient_stays_one_day(tmp_path):
    path = _hand_file(tmp_path, HAND_ROWS)
    teds = read_teds_d(path, iop_only=False)
    contract = read_teds_d(path, iop_only=False, los_convention="contract")
    assert teds.attrs["teds_source"]["los_convention"] == "teds"
    # every row is outpatient (SERVICES_D 6 or 7): exact d -> max(d - 1, 1), range (a, b] -> (a - 1, b - 1]
    assert contract["los_days_lower"].tolist() == [11.0, 59.0, 364.0, 4.0, 29.0]
    assert contract["los_days_upper"].tolist()[:2] == [11.0, 89.0] and math.isinf(contract["los_days_upper"].iloc[2])
    inpatient = _hand_file(tmp_path, [HAND_ROWS[0].replace(",6,6,1,12,", ",6,4,1,12,")], name="inpatient.csv")
    assert read_teds_d(inpatient, iop_only=False, los_convention="contract")["los_days_lower"].tolist() == [12.0]
    with pytest.raises(DataValidationError, match="los_convention"):
        read_teds_d(path, los_convention="hcup")


# ---------------------------------------------------------------------------
# 3. Generated files of each layout
# ---------------------------------------------------------------------------

N_GEN = 100_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("teds_layouts")
    return {
        "2006-2014": write_teds_d_like(d / "d_2006_2014.csv", n_rows=N_GEN, layout="2006-2014", seed=11),
        "2015-2019": write_teds_d_like(d / "d_2019.csv", n_rows=N_GEN, layout="2015-2019", seed=12),
        "2020+": write_teds_d_like(d / "d_2021.csv", n_rows=N_GEN, layout="2020+", seed=13),
    }


TABLE_OF = {"2006-2014": "2006-2014", "2015-2019": "2019", "2020+": "2019"}


def _gof_pvalue(observed: dict[int, int], expected_p: dict[int, float]) -> float:
    """Chi-square goodness of fit, categories with expected count < 5 pooled."""
    n = sum(observed.values())
    codes = sorted(expected_p, key=lambda c: expected_p[c])
    obs, exp, o_acc, e_acc = [], [], 0, 0.0
    for c in codes:
        o_acc += observed.get(c, 0)
        e_acc += n * expected_p[c]
        if e_acc >= 5:
            obs.append(o_acc)
            exp.append(e_acc)
            o_acc, e_acc = 0, 0.0
    if e_acc and exp:
        obs[-1] += o_acc
        exp[-1] += e_acc
    assert sum(observed.get(c, 0) for c in expected_p) == n, "a code outside the code book was generated"
    return float(stats.chisquare(obs, exp).pvalue) if len(obs) > 1 else 1.0


@pytest.mark.parametrize("layout", cb.LAYOUTS)
def test_generated_marginals_match_the_code_book(generated, layout):
    """Chi-square goodness of fit of every generated column against its published frequencies
    (p > 1e-4 for each of the ~30 columns; seeded, so the outcome is fixed)."""
    raw = pd.read_csv(generated[layout], encoding="latin-1", dtype=str, keep_default_na=False)
    table = TABLE_OF[layout]
    assert len(raw) == N_GEN and raw["CASEID"].is_unique
    if layout == "2006-2014":
        assert "SERVSETD" in raw and "FREQ1_D" not in raw and "SERVICES" not in raw
        raw = raw.rename(columns={"SERVSETD": "SERVICES_D"})
    else:
        assert {"SERVICES", "SERVICES_D", "FREQ1_D"} <= set(raw.columns)
    labelled = layout == "2020+"
    checked = 0
    for col, freqs in FREQUENCIES[table].items():
        if col not in raw or col in ("DISYR",):
            continue
        values = raw[col]
        if labelled and col in cb.CODEBOOK:
            back = {cb.normalise_label(lab): code for code, (_, lab) in cb.CODEBOOK[col].codes["2015+"].items()}
            back[cb.normalise_label("Missing/unknown/not collected/invalid")] = -9
            lookup = {t: int(t) if re.fullmatch(r"-?\d+", t) else back[cb.normalise_label(t)] for t in values.unique()}
            codes = values.map(lookup)
        else:
            codes = values.astype(int)
        total = sum(freqs.values())
        p = _gof_pvalue(codes.value_counts().to_dict(), {c: f / total for c, f in freqs.items()})
        assert p > 1e-4, (layout, col, p)
        checked += 1
    assert checked >= 25
    if layout == "2006-2014":  # years in proportion to the published DISYR counts
        total = sum(FREQUENCIES[table]["DISYR"].values())
        p = _gof_pvalue(raw["DISYR"].astype(int).value_counts().to_dict(),
                        {c: f / total for c, f in FREQUENCIES[table]["DISYR"].items()})
        assert p > 1e-4


@needs_codebooks
@pytest.mark.parametrize("layout", cb.LAYOUTS)
def test_decoded_distribution_matches_published_counts(generated, layout):
    """The reader and the code book agree on what each code means: decoded REASON, LOS, SERVICES_D
    and SUB1 shares of a generated file against the code book's counts grouped by the
    harmonisation table's label (read here from the shared tables), each within 4 SE."""
    key = TABLE_OF[layout]
    table, harm = _read_table(key), _harmonisation()
    frame = read_teds_d(generated[layout], iop_only=False)
    n = len(frame)
    for col, out in (("REASON", "discharge_reason"), ("LOS", "los_code"), ("SERVICES_D", "discharge_setting"),
                     ("SUB1", "primary_substance_teds")):
        field = "SERVSETD" if col == "SERVICES_D" and ("SERVSETD", key) in harm else col
        labels = harm[(field, key)]
        total = sum(f for _, f in table[col].values())
        expected: dict[str, float] = {}
        for code, (_, f) in table[col].items():
            if code == cb.MISSING_CODE:
                name = "<missing>"
            else:
                name = cb.normalise_label(labels.get(code, "None"))  # SUB1 1 is blank in the harmonisation
            expected[name] = expected.get(name, 0.0) + f / total
        vocab = {v: cb.normalise_label(lab) for v, lab in cb.CODEBOOK[col].vocabulary.items()}
        decoded = frame[out].astype(object).map(lambda v, vocab=vocab: "<missing>" if pd.isna(v) else vocab[v])
        observed = decoded.value_counts(normalize=True).to_dict()
        assert set(observed) <= set(expected), (layout, col, set(observed) - set(expected))
        for name, p in expected.items():
            se = math.sqrt(p * (1 - p) / n)
            assert abs(observed.get(name, 0.0) - p) < 4 * se + 1e-12, (layout, col, name, observed.get(name), p)


@pytest.mark.parametrize("layout,iop_share,freq1d_missing,methuse_missing", [
    ("2006-2014", 0.124, None, 0.042), ("2015-2019", 0.137, 0.312, 0.104)])
def test_generator_has_real_missingness_iop_share_and_binary_noprior(generated, layout, iop_share, freq1d_missing,
                                                                     methuse_missing):
    """Old generator: NOPRIOR 0-5 in 2015+, FREQ1_D 12% and METHUSE 3% missing, IOP 10%."""
    everything = read_teds_d(generated[layout], iop_only=False)
    se = math.sqrt(0.25 / N_GEN)
    assert abs((everything["discharge_setting"] == "intensive_outpatient").mean() - iop_share) < 4 * se + 5e-4
    assert abs(everything["has_mat_plan"].isna().mean() - methuse_missing) < 4 * se + 5e-4
    raw = pd.read_csv(generated[layout], encoding="latin-1", usecols=lambda c: c in ("NOPRIOR", "FREQ1_D"))
    if freq1d_missing is None:
        assert "FREQ1_D" not in raw and set(raw["NOPRIOR"]) == {-9, 0, 1, 2, 3, 4, 5}
    else:
        assert set(raw["NOPRIOR"]) == {-9, 0, 1}
        assert abs((raw["FREQ1_D"] == -9).mean() - freq1d_missing) < 4 * se + 5e-4
    iop = everything[everything["discharge_setting"] == "intensive_outpatient"]
    share = iop["discharge_reason"].value_counts(normalize=True)
    assert abs(share["completed"] - 0.38) < 0.02 and abs(share["dropped_out"] - 0.23) < 0.02
    codes = iop["los_code"].cat.codes

    def median(mask):
        c = codes[mask & (codes >= 0)]
        return int(c.median())
    assert median(iop["discharge_reason"] == "completed") > median(iop["discharge_reason"] == "dropped_out")
    mat = iop["has_mat_plan"].fillna(False).to_numpy(dtype=bool)
    assert median(mat & iop["has_mat_plan"].notna().to_numpy()) > median(~mat & iop["has_mat_plan"].notna().to_numpy())


def test_generator_is_seeded(tmp_path):
    a = write_teds_d_like(tmp_path / "a.csv", n_rows=300, seed=5, chunk_rows=100)
    b = write_teds_d_like(tmp_path / "b.csv", n_rows=300, seed=np.random.default_rng(5), chunk_rows=100)
    c = write_teds_d_like(tmp_path / "c.csv", n_rows=300, seed=6)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert len(a.read_text(encoding="latin-1").splitlines()) == 301


def test_labelled_and_coded_2021_read_to_the_same_frame(tmp_path):
    coded = write_teds_d_like(tmp_path / "coded.csv", n_rows=4000, layout="2020+", labelled=False, seed=2)
    lab = write_teds_d_like(tmp_path / "lab.csv", n_rows=4000, layout="2020+", seed=2, sex_column=True)
    a, b = read_teds_d(coded, include_admission_setting=True), read_teds_d(lab, include_admission_setting=True)
    pd.testing.assert_frame_equal(a, b)
    assert ',"Treatment completed",' in lab.read_text(encoding="latin-1")
    assert b.attrs["teds_source"]["renamed_columns"] == {"SEX": "GENDER"}


def test_years_and_all_settings(generated):
    path = generated["2006-2014"]
    iop = read_teds_d(path)
    only = read_teds_d(path, years=[2010])
    assert set(only["discharge_year"]) == {2010}
    assert len(only) == (iop["discharge_year"] == 2010).sum()
    att = teds_attrition(only)
    assert att["n_excluded"].iloc[1] > 0 and att["reason"].iloc[1] == "year not in years"
    everything = read_teds_d(path, iop_only=False)
    assert len(everything) == N_GEN
    assert (everything["discharge_setting"] == "intensive_outpatient").sum() == len(iop)


def test_reader_agrees_with_plain_pandas_mapping(generated):
    """Independent path: pandas.read_csv + the code book's dictionaries give the same IOP frame."""
    raw = pd.read_csv(generated["2015-2019"], encoding="latin-1")
    coded = read_teds_d(generated["2015-2019"])
    iop = raw[raw["SERVICES_D"] == 6].reset_index(drop=True)
    assert iop["CASEID"].astype(str).tolist() == coded["episode_id"].tolist()
    for col, out in (("REASON", "discharge_reason"), ("STFIPS", "state"), ("SUB1", "primary_substance_teds"),
                     ("AGE", "age_group"), ("RACE", "race"), ("FREQ1_D", "use_frequency_discharge"),
                     ("NOPRIOR", "prior_treatment")):
        expect = iop[col].map({k: v for k, (v, _) in cb.CODEBOOK[col].codes["2015+"].items()})
        assert expect.fillna("<NA>").tolist() == coded[out].astype(object).fillna("<NA>").tolist(), col
    lo = iop["LOS"].map({k: v[0] for k, v in cb.LOS_BOUNDS.items()})
    np.testing.assert_array_equal(lo.to_numpy(), coded["los_days_lower"].to_numpy())


# ---------------------------------------------------------------------------
# 4. File formats: SAS, Stata, SPSS and the zip give the CSV's episodes
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("teds_formats")
    return {layout: write_teds_d_like(d / f"s_{layout[:4]}.csv", n_rows=6000, layout=layout, seed=21)
            for layout in cb.LAYOUTS}


def _write_stat(csv_path: Path, suffix: str) -> Path:
    import pyreadstat

    df = pd.read_csv(csv_path, encoding="latin-1", keep_default_na=False)  # SUB1 label "None" is text
    target = csv_path.with_suffix(suffix)
    if suffix == ".dta":
        pyreadstat.write_dta(df, target)
    elif suffix == ".sav":
        pyreadstat.write_sav(df, target)
    elif suffix == ".xpt":
        pyreadstat.write_xport(df, target, file_format_version=8, table_name="TEDSD")
    return target


@pytest.mark.parametrize("layout", cb.LAYOUTS)
@pytest.mark.parametrize("suffix", [".dta", ".sav", ".xpt"])
def test_sas_stata_spss_files_give_the_csv_episodes(small_files, layout, suffix):
    path = small_files[layout]
    expect = read_teds_d(path, iop_only=False)
    other = _write_stat(path, suffix)
    got = read_teds_d(other, iop_only=False, chunk_rows=1000)
    pd.testing.assert_frame_equal(got, expect)
    assert teds_attrition(got).equals(teds_attrition(expect))
    assert got.attrs["teds_source"]["format"] == {".dta": "stata", ".sav": "spss", ".xpt": "xport"}[suffix]
    iop = read_teds_d(other, years=None, chunk_rows=1700)
    pd.testing.assert_frame_equal(iop, read_teds_d(path))


@requires_r
def test_sas7bdat_written_by_r_haven(small_files, tmp_path):
    """R's haven::write_sas writes the .sas7bdat (pyreadstat cannot)."""
    path = small_files["2015-2019"]
    target = tmp_path / "teds.sas7bdat"
    script = (f'df <- read.csv("{path}"); suppressWarnings(haven::write_sas(df, "{target}"))')
    subprocess.run([RSCRIPT, "-e", script], check=True, capture_output=True)
    pd.testing.assert_frame_equal(read_teds_d(target, chunk_rows=2000), read_teds_d(path))


def test_zip_as_downloaded(small_files, tmp_path):
    path = small_files["2006-2014"]
    archive = tmp_path / "TEDS-D-2006-2014-DS0001-bndl-data-csv.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(path, arcname="tedsd_puf_2006_2014.csv")
        zf.writestr("TEDS-D-2006-2014-codebook.txt", "not data")
    got = read_teds_d(archive)
    pd.testing.assert_frame_equal(got, read_teds_d(path))
    assert got.attrs["teds_source"]["member"] == "tedsd_puf_2006_2014.csv"
    dta = _write_stat(path, ".dta")
    with zipfile.ZipFile(tmp_path / "stata.zip", "w") as zf:
        zf.write(dta, arcname="tedsd_puf.dta")
    pd.testing.assert_frame_equal(read_teds_d(tmp_path / "stata.zip"), read_teds_d(path))
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as zf:
        zf.write(path, arcname="a.csv")
        zf.write(path, arcname="b.csv")
    with pytest.raises(DataReadError, match="holds 2 data file"):
        read_teds_d(tmp_path / "two.zip")


def test_stata_value_outside_code_book_names_row_and_caseid(small_files, tmp_path):
    import pyreadstat

    df = pd.read_csv(small_files["2015-2019"], encoding="latin-1")
    df.loc[3, "AGE"] = 13
    df.loc[3, "SERVICES_D"] = 6
    pyreadstat.write_dta(df, tmp_path / "bad.dta")
    with pytest.raises(DataValidationError) as err:
        read_teds_d(tmp_path / "bad.dta", chunk_rows=500)
    assert f"row 4 (CASEID {df.loc[3, 'CASEID']}, DISYR 2019): 13" in str(err.value)
    assert "AGE: value(s) 13 outside the 2015+ code book" in str(err.value)


# ---------------------------------------------------------------------------
# 5. TEDS-A
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["2006-2014", "2015-2019"])
def test_teds_a_reader(tmp_path, layout):
    path = write_teds_a_like(tmp_path / "a.csv", n_rows=20_000, layout=layout, seed=4)
    header = path.read_text(encoding="latin-1").splitlines()[0].split(",")
    assert "ADMYR" in header and "SERVICES" in header and "REASON" not in header and "DISYR" not in header
    adm = read_teds_a(path)
    raw = pd.read_csv(path, encoding="latin-1")
    iop = raw[raw["SERVICES"] == 6].reset_index(drop=True)
    assert adm["episode_id"].tolist() == iop["CASEID"].astype(str).tolist()
    system = cb.code_system(int(iop["ADMYR"].iloc[0]))
    for col, out in (("AGE", "age_group"), ("SUB1", "primary_substance_teds"), ("NOPRIOR", "prior_treatment"),
                     ("ETHNIC", "ethnicity_detail")):
        expect = iop[col].map({k: v for k, (v, _) in cb.CODEBOOK[col].codes[system].items()})
        assert expect.fillna("<NA>").tolist() == adm[out].astype(object).fillna("<NA>").tolist(), col
    assert (adm["admission_setting"] == "intensive_outpatient").all()
    assert teds_attrition(adm)["step"].tolist()[-1] == "IOP (SERVICES == 6)"
    dta = _write_stat(path, ".dta")
    pd.testing.assert_frame_equal(read_teds_a(dta), adm)
    with pytest.raises(DataValidationError, match="ADMYR"):
        read_teds_a(write_teds_d_like(tmp_path / "d.csv", n_rows=50, seed=1))


# ---------------------------------------------------------------------------
# 6. Errors and edge cases
# ---------------------------------------------------------------------------


def test_labels_ignore_case_and_spacing(tmp_path):
    rows = [("1,2019,2019,Alabama,6,6,\"  treatment   COMPLETED \",\"31 to 45 days\",yes,daily use,"
             "no use in the past month,heroin,no prior treatment episodes,no,male,25-29 years,white,"
             "mexican,x")]
    df = read_teds_d(_hand_file(tmp_path, rows))
    assert df["discharge_reason"].iloc[0] == "completed" and df["los_code"].iloc[0] == "31-45"
    assert df["state"].iloc[0] == "AL" and df["ethnicity"].iloc[0] == "hispanic"


def test_unknown_code_is_reported_not_guessed(tmp_path):
    rows = HAND_ROWS + ["16,2019,2019,6,6,6,8,12,1,3,1,5,0,1,2,5,5,4,w"]
    with pytest.raises(DataValidationError) as err:
        read_teds_d(_hand_file(tmp_path, rows))
    msg = str(err.value)
    assert "REASON: value(s) 8" in msg and "line 7 (CASEID 16, DISYR 2019): '8'" in msg
    assert err.value.problems["column"].tolist() == ["REASON"]


def test_unknown_label_is_reported(tmp_path):
    rows = [("1,2019,2019,Alabama,6,6,Graduated,12,Yes,Daily use,Daily use,Heroin,"
             "No prior treatment episodes,No,Male,25-29 years,White,Mexican,x")]
    with pytest.raises(DataValidationError, match="REASON: value\\(s\\) Graduated.*'Graduated'"):
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


def test_wrong_delimiter_suffix_and_engine(tmp_path):
    path = _hand_file(tmp_path, [r.replace(",", ";") for r in HAND_ROWS], header=HEADER.replace(",", ";"))
    with pytest.raises(DataReadError, match="';'-delimited"):
        read_teds_d(path)
    with pytest.raises(DataReadError, match="suffix"):
        read_teds_d(tmp_path / "teds.parquet")
    with pytest.raises(DataReadError, match="engine"):
        read_teds_d(_hand_file(tmp_path, HAND_ROWS, name="ok.csv"), engine="spark")


def test_engine_session_is_reused(tmp_path):
    from iop_research.derive.engine import get_backend

    backend = get_backend("duckdb")
    path = _hand_file(tmp_path, HAND_ROWS)
    pd.testing.assert_frame_equal(read_teds_d(path, engine=backend), read_teds_d(path))
    assert not [t for t in backend.con.execute("SHOW TABLES").fetchall() if t[0].startswith("_iop_teds")]


def test_non_numeric_value_in_numeric_column(tmp_path):
    rows = HAND_ROWS + ["17,20x9,2019,6,6,6,1,12,1,3,1,5,0,1,2,5,5,4,w"]
    with pytest.raises(DataReadError, match="DISYR"):
        read_teds_d(_hand_file(tmp_path, rows))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataReadError, match="not found"):
        read_teds_d(tmp_path / "nope.csv")
    with pytest.raises(DataReadError, match="not found"):
        read_teds_d(tmp_path / "nope.dta")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataReadError, match="empty"):
        read_teds_d(tmp_path / "empty.csv")


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(DataValidationError):
        write_teds_d_like(tmp_path / "x.csv", n_rows=0, seed=1)
    with pytest.raises(DataValidationError):
        write_teds_d_like(tmp_path / "x.csv", n_rows=5, years=(), seed=1)
    with pytest.raises(DataValidationError, match="layout"):
        write_teds_d_like(tmp_path / "x.csv", n_rows=5, layout="2010s", seed=1)
    with pytest.raises(DataValidationError, match=r"\[2015\] do not belong to the 2006-2014 layout"):
        write_teds_d_like(tmp_path / "x.csv", n_rows=5, layout="2006-2014", years=(2014, 2015), seed=1)


def test_attrs_missing_raise():
    with pytest.raises(DataValidationError):
        teds_attrition(pd.DataFrame())
    with pytest.raises(DataValidationError):
        teds_missing(pd.DataFrame())


def test_text_after_the_sampled_rows_is_mapped_or_reported(tmp_path):
    good = "17,2019,2019,6,6,6,1,12,1,3,1,5,0,1,2,5,5,4,w"
    late_label = "18,2019,2019,6,6,6,Dropped out of treatment,12,1,3,1,5,0,1,2,5,5,4,w"
    df = read_teds_d(_hand_file(tmp_path, [good] * 2500 + [late_label], name="late.csv"))
    assert df["discharge_reason"].iloc[-1] == "dropped_out" and len(df) == 2501
    assert df.attrs["teds_source"]["labelled_columns"] == ["REASON"]
    late_junk = late_label.replace("Dropped out of treatment", "done")
    with pytest.raises(DataValidationError, match="line 2502 \\(CASEID 18, DISYR 2019\\): 'done'"):
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


def test_los_bounds_cover_every_code():
    for code in cb.CODEBOOK["LOS"].codes["2015+"]:
        lo, hi = cb.LOS_BOUNDS[code]
        assert lo <= hi
        if code <= 30:
            assert lo == hi == code
    assert cb.CODEBOOK["LOS"].codes["2015+"][37] == (">365", "More than a year")
