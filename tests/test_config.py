"""The study file (TOML): every key honoured or refused; settings applied listed."""
from __future__ import annotations

import datetime as dt

import pytest

from iop_research.exceptions import DataReadError
from iop_research.reports.config import (
    QUESTIONS, STUDY_KEYS, load_study, read_study_config, settings_used_by, study_file_template,
)


def _write(tmp_path, text):
    p = tmp_path / "study.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_reads_sections_into_the_study_parameter(tmp_path):
    (tmp_path / "extract").mkdir()
    p = _write(tmp_path, """
[data]
path = "extract"
[cohort]
primary_substances = ["opioids"]
first_episode_only = true
admit_from = 2020-01-01
[outcome]
blanking_days = 14
[comparison]
exposure = "modality_dose"
modality = "group"
[landmarks]
days = [60, 30]
[privacy]
min_cell_count = 5
""")
    params = read_study_config(p)
    assert params == {
        "data_path": str((tmp_path / "extract").resolve()),
        "study": {
            "data": {"path": str((tmp_path / "extract").resolve())},
            "cohort": {"primary_substances": ["opioids"], "first_episode_only": True, "admit_from": "2020-01-01"},
            "outcome": {"blanking_days": 14},
            "comparison": {"exposure": "modality_dose", "modality": "group"},
            "landmarks": {"days": [30, 60]},
            "privacy": {"min_cell_count": 5},
        },
    }
    cfg = load_study(settings=params["study"])
    # defaults fill the rest; the design follows from the exposure
    assert cfg.get("comparison.design") == "time_varying"
    assert cfg.get("outcome.max_followup_days") is None and cfg.get("horizons.days") == [90, 180, 365]
    assert cfg.get("cohort.admit_from") == dt.date(2020, 1, 1)
    assert "outcome.blanking_days" in cfg.given and "outcome.sources" not in cfg.given
    assert cfg.applied()["landmarks.days"] == [30, 60]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[cohrt]\nmin_age = 18\n", "unknown section [cohrt] (allowed: data, cohort, outcome, comparison"),
        ("[outcome]\nblanking = 7\n", "unknown key 'blanking' in [outcome] (allowed: sources, blanking_days, max_followup_days)"),
        ("[analysis]\nlandmark_days = 30\n", "unknown section [analysis]"),
        ("[privacy]\nmin_cell_count = \"eleven\"\n", "min_cell_count = 'eleven' should be of type int"),
        ("[privacy]\nmin_cell_count = true\n", "should be of type int"),
        ("[privacy]\nmin_cell_count = 11\n[report\n", "is not valid TOML"),
        ("[privacy]\nmin_cell_count = 3\n", "is below 5"),
        ("[privacy]\nmin_cell_count = 11\nmin_cell_count_override = \"dua\"\n", "remove the override"),
        ("[outcome]\nsources = [\"uds\", \"phone_call\"]\n", "['phone_call'] not allowed (allowed: uds, self_report_use"),
        ("[outcome]\nsources = []\n", "should be a non-empty list[str]"),
        ("[outcome]\nblanking_days = -1\n", "must be at least 0"),
        ("[outcome]\nmax_followup_days = 0\n", "must be at least 1"),
        ("[comparison]\nexposure = \"modality_sum\"\n", "is not allowed (allowed: modality_any, modality_dose, modality_mix)"),
        ("[comparison]\nmodality = \"yoga\"\n", "is not allowed (allowed: individual, group, family"),
        ("[comparison]\ndesign = \"iptw\"\n", "is not allowed (allowed: landmark, time_varying)"),
        ("[comparison]\nwindow_days = 0\n", "must be at least 1"),
        ("[comparison]\nexposure = \"modality_dose\"\nreference = \"none\"\n", "reference does not apply"),
        ("[comparison]\nreference = \"family\"\n", "the groups are \"none\" and \"any\""),
        ("[comparison]\ngroups = [\"group\"]\n", "groups applies only to exposure = \"modality_mix\""),
        ("[comparison]\nexposure = \"modality_mix\"\ndesign = \"time_varying\"\n", "use design = \"landmark\""),
        ("[covariates]\nadjust = [\"age\", \"zip\"]\n", "['zip'] not allowed"),
        ("[missing]\npolicy = \"mean\"\n", "allowed: complete_case, indicator, multiple_imputation"),
        ("[missing]\nm = 1\n", "must be at least 2"),
        ("[horizons]\ndays = [90, 0]\n", "every value must be at least 1"),
        ("[horizons]\ndays = [90, 90]\n", "repeats a value"),
        ("[landmarks]\ndays = [\"30\"]\n", "should be a non-empty list[int]"),
        ("[cohort]\nmin_age = 60\nmax_age = 20\n", "min_age = 60 is above max_age = 20"),
        ("[cohort]\nadmit_from = \"2021-31-01\"\n", "is not a date; write it as YYYY-MM-DD"),
        ("[cohort]\nadmit_from = 2022-01-01\nadmit_to = 2021-01-01\n", "is after admit_to"),
        ("[report]\nquestions = [\"cohort\", \"costs\"]\n", "['costs'] not allowed (allowed: cohort, retention"),
        ("[report]\nformats = [\"csv\"]\n", "formats must include \"html\""),
        ("[data]\npath = \"nowhere\"\n", "[data] path = 'nowhere' does not exist"),
        ("[data]\npath = \".\"\nmapping = \".\"\n", "sets both path and mapping"),
    ],
)
def test_bad_study_file_is_refused_with_the_key_named(tmp_path, text, fragment):
    with pytest.raises(DataReadError) as err:
        read_study_config(_write(tmp_path, text))
    assert fragment in str(err.value)


def test_all_problems_are_listed_at_once(tmp_path):
    with pytest.raises(DataReadError) as err:
        read_study_config(_write(tmp_path, "[outcome]\nblanking = 7\nmax_followup_days = -3\n[cohrt]\n"))
    msg = str(err.value)
    assert "3 problem(s)" in msg and "blanking" in msg and "max_followup_days" in msg and "[cohrt]" in msg


def test_missing_file(tmp_path):
    with pytest.raises(DataReadError, match="does not exist"):
        read_study_config(tmp_path / "nope.toml")


def test_override_allows_a_low_threshold(tmp_path):
    cfg = load_study(_write(tmp_path, "[privacy]\nmin_cell_count = 3\nmin_cell_count_override = \"DUA 4.2\"\n"))
    assert cfg.get("privacy.min_cell_count") == 3


def test_template_lists_every_key_and_parses(tmp_path):
    text = study_file_template()
    for section, keys in STUDY_KEYS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"# {key} = " in text
    assert read_study_config(_write(tmp_path, text)) == {"data_path": None, "study": {}}
    # uncommenting a documented line gives a valid file
    lines = text.replace("# blanking_days = 7", "blanking_days = 10")
    assert read_study_config(_write(tmp_path, lines))["study"] == {"outcome": {"blanking_days": 10}}


def test_every_key_acts_on_some_question():
    for section, keys in STUDY_KEYS.items():
        for key, spec in keys.items():
            assert spec.used_by and set(spec.used_by) <= set(QUESTIONS), f"{section}.{key}"
    assert "comparison.modality" in settings_used_by("modalities")
    assert "comparison.modality" not in settings_used_by("relapse")
    with pytest.raises(DataReadError, match="Unknown question"):
        settings_used_by("costs")
