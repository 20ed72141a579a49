"""Study configuration files (TOML) -> notebook parameters."""
from __future__ import annotations

import pytest

from iop_research.reports.config import read_study_config
from iop_research.exceptions import DataReadError


def _write(tmp_path, text):
    p = tmp_path / "study.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_reads_all_sections_into_flat_parameters(tmp_path):
    (tmp_path / "extract").mkdir()
    p = _write(tmp_path, """
[data]
path = "extract"
[cohort]
primary_substances = ["opioids"]
first_episode_only = true
[outcome]
blanking_days = 14
[analysis]
landmark_days = 60
[report]
min_cell_count = 5
""")
    params = read_study_config(p)
    assert params == {
        "data_path": str((tmp_path / "extract").resolve()),
        "cohort_primary_substances": ["opioids"],
        "cohort_first_episode_only": True,
        "outcome_blanking_days": 14,
        "analysis_landmark_days": 60,
        "min_cell_count": 5,
    }


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[cohrt]\nmin_age = 18\n", "unknown section [cohrt]"),
        ("[outcome]\nblanking = 7\n", "unknown key 'blanking' in [outcome]"),
        ("[report]\nmin_cell_count = \"eleven\"\n", "min_cell_count = 'eleven' should be of type int"),
        ("[report]\nmin_cell_count = true\n", "should be of type int"),
        ("[report\nmin_cell_count = 11\n", "is not valid TOML"),
    ],
)
def test_bad_configuration_is_refused_with_the_key_named(tmp_path, text, fragment):
    with pytest.raises(DataReadError) as err:
        read_study_config(_write(tmp_path, text))
    assert fragment in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataReadError, match="does not exist"):
        read_study_config(tmp_path / "nope.toml")
