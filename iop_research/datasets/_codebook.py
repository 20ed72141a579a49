"""Code books of the TEDS-D public-use files, by layout, onto one harmonised vocabulary.

SAMHSA has published TEDS-D in three layouts:

``"2006-2014"``
    the concatenated 2006-2014 file: setting at discharge in ``SERVSETD``, no setting at
    admission, no ``FREQ1_D``; ``AGE`` codes 2-12 (12 = 55 and over), ``RACE`` codes 1-5, 13,
    20, 21, 23, ``ETHNIC`` 1-6 (4 = other specific Hispanic, 5 = not Hispanic), ``FREQ1`` in
    five levels, ``SUB1`` "Other" = 20, ``NOPRIOR`` a count 0-5 (5 = five or more).
``"2015-2019"``
    single-year files: ``SERVICES_D``, ``FREQ1_D``; ``AGE`` 1-12 (11 = 55-64, 12 = 65 and
    older), ``RACE`` 1-9, ``ETHNIC`` 1-5 (4 = not Hispanic, 5 = Hispanic, origin not
    specified), ``FREQ1`` in three levels, ``SUB1`` "Other" = 19, ``NOPRIOR`` binary (0 none,
    1 one or more). ``SERVICES`` (setting at admission) is in the 2017 and 2019 code books,
    not in 2015's.
``"2020+"``
    the codes of 2015-2019; the 2021 file ships the value labels as text (latin-1).

Two *code systems* follow: ``"2006-2014"`` for discharge years up to 2014 and ``"2015+"``
from 2015 on (:func:`code_system`). Each :class:`Variable` maps every code of each system
to a value of one harmonised vocabulary (``Variable.vocabulary``: value -> harmonised label)
and keeps the code book's own label of the code (what a labelled file holds). The
harmonised vocabulary is that of the TEDS-D harmonisation table that accompanies the code
book tables (for instance ``AGE`` 55-64 and 65+ become "55 years and older", the 2006-2014
``FREQ1`` levels 2-4 become "Some use", ``SUB1`` 19 and 20 become "Other").
``tests/test_teds.py`` checks every code, label and harmonised meaning here against the
code book tables and the harmonisation table (read from the shared data directory at test
time; nothing of them is copied here).

Deviation, stated: ``STFIPS`` accepts every state FIPS code in every year (a code book lists
only the states that reported that year).

References
----------
.. [1] SAMHSA, Center for Behavioral Health Statistics and Quality. Treatment Episode Data
   Set: Discharges (TEDS-D) 2006-2014 concatenated public-use file, codebook.
.. [2] SAMHSA. TEDS-D 2015, 2017 and 2019 public-use files, codebooks.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["ALIASES", "CODEBOOK", "CODE_SYSTEMS", "ID_COLUMNS", "LAYOUTS", "LOS_BOUNDS", "MISSING_CODE",
           "MISSING_LABELS", "OPTIONAL_COLUMNS", "REQUIRED_COLUMNS", "SUB1_TO_PRIMARY", "Variable",
           "code_system", "frequency_table", "layout_of_year", "normalise_label"]

#: Code for missing / unknown / not collected / invalid in every coded TEDS-D column.
MISSING_CODE = -9

#: Texts that a labelled file uses for ``-9`` (compared after :func:`normalise_label`).
MISSING_LABELS = (
    "missing/unknown/not collected/invalid",
    "missing",
    "unknown",
    "not collected",
    "invalid",
    "-9",
    "",
)

#: The layouts SAMHSA has published, oldest first.
LAYOUTS = ("2006-2014", "2015-2019", "2020+")

#: Code systems: the codes of discharge years up to 2014, and from 2015 on.
CODE_SYSTEMS = ("2006-2014", "2015+")

#: Old column name -> current name. ``SERVSETD`` is the 2006-2014 name of ``SERVICES_D``;
#: ``SEX`` is the 2023 name of ``GENDER``. (``SERVSETA`` is in no code book and is not read.)
ALIASES: dict[str, str] = {
    "SERVSETD": "SERVICES_D",
    "SEX": "GENDER",
}


def code_system(year: int) -> str:
    """Code system of discharge (or admission) year ``year``: ``"2006-2014"`` or ``"2015+"``.

    Examples
    --------
    >>> code_system(2014), code_system(2021)
    ('2006-2014', '2015+')
    """
    return CODE_SYSTEMS[0] if int(year) <= 2014 else CODE_SYSTEMS[1]


def layout_of_year(year: int) -> str:
    """Published layout of a file of discharge year ``year``.

    Examples
    --------
    >>> [layout_of_year(y) for y in (2010, 2017, 2021)]
    ['2006-2014', '2015-2019', '2020+']
    """
    year = int(year)
    return LAYOUTS[0] if year <= 2014 else LAYOUTS[1] if year <= 2019 else LAYOUTS[2]


def frequency_table(year: int) -> str:
    """Key of :data:`iop_research.datasets.teds_frequencies.FREQUENCIES` that describes ``year``.

    The 2006-2014 code book for 2006-2014; then the nearest published single-year code book
    at or before ``year`` (2015, 2017, 2019; 2019 for 2020 and later, whose codes are the same).
    """
    year = int(year)
    if year <= 2014:
        return "2006-2014"
    return "2015" if year <= 2016 else "2017" if year <= 2018 else "2019"


def normalise_label(text: str) -> str:
    """Lower-case, trim and collapse blanks, so that label matching ignores case and spacing.

    Examples
    --------
    >>> normalise_label("  Treatment   COMPLETED ")
    'treatment completed'
    """
    return " ".join(str(text).split()).lower()


class Variable(NamedTuple):
    """One decoded TEDS-D variable.

    ``output``: column of :func:`iop_research.datasets.read_teds_d`'s frame;
    ``vocabulary``: harmonised value -> harmonised label, in display order;
    ``codes``: code system -> ``{code: (harmonised value, code book label)}``;
    ``meaning``: what the variable records.
    """

    output: str
    vocabulary: dict[str, str]
    codes: dict[str, dict[int, tuple[str, str]]]
    meaning: str


def _same(codes: dict[int, tuple[str, str]]) -> dict[str, dict[int, tuple[str, str]]]:
    return {system: codes for system in CODE_SYSTEMS}


_SETTING_VOCAB = {
    "detox_hospital": "Detox, 24-hour, hospital inpatient",
    "detox_residential": "Detox, 24-hour, free-standing residential",
    "rehab_hospital": "Rehab/residential, hospital (non-detox)",
    "rehab_short_term": "Rehab/residential, short term (30 days or fewer)",
    "rehab_long_term": "Rehab/residential, long term (more than 30 days)",
    "intensive_outpatient": "Ambulatory, intensive outpatient",
    "outpatient": "Ambulatory, non-intensive outpatient",
    "detox_ambulatory": "Ambulatory, detoxification",
}
_SETTING = {i + 1: (v, lab) for i, (v, lab) in enumerate(_SETTING_VOCAB.items())}
_SETTING_0614 = {
    1: ("detox_hospital", "Detox, 24 hr, hospital inpatient"),
    2: ("detox_residential", "Detox, 24 hr, free-standing residential"),
    3: ("rehab_hospital", "Rehab/res, hospital (non-detox)"),
    4: ("rehab_short_term", "Rehab/res, short term (30 days or fewer)"),
    5: ("rehab_long_term", "Rehab/res, long term (more than 30 days)"),
    6: ("intensive_outpatient", "Ambulatory, intensive outpatient"),
    7: ("outpatient", "Ambulatory, non-intensive outpatient"),
    8: ("detox_ambulatory", "Ambulatory, detoxification"),
}

_STATES = {
    1: ("AL", "Alabama"), 2: ("AK", "Alaska"), 4: ("AZ", "Arizona"), 5: ("AR", "Arkansas"),
    6: ("CA", "California"), 8: ("CO", "Colorado"), 9: ("CT", "Connecticut"), 10: ("DE", "Delaware"),
    11: ("DC", "District of Columbia"), 12: ("FL", "Florida"), 13: ("GA", "Georgia"), 15: ("HI", "Hawaii"),
    16: ("ID", "Idaho"), 17: ("IL", "Illinois"), 18: ("IN", "Indiana"), 19: ("IA", "Iowa"),
    20: ("KS", "Kansas"), 21: ("KY", "Kentucky"), 22: ("LA", "Louisiana"), 23: ("ME", "Maine"),
    24: ("MD", "Maryland"), 25: ("MA", "Massachusetts"), 26: ("MI", "Michigan"), 27: ("MN", "Minnesota"),
    28: ("MS", "Mississippi"), 29: ("MO", "Missouri"), 30: ("MT", "Montana"), 31: ("NE", "Nebraska"),
    32: ("NV", "Nevada"), 33: ("NH", "New Hampshire"), 34: ("NJ", "New Jersey"), 35: ("NM", "New Mexico"),
    36: ("NY", "New York"), 37: ("NC", "North Carolina"), 38: ("ND", "North Dakota"), 39: ("OH", "Ohio"),
    40: ("OK", "Oklahoma"), 41: ("OR", "Oregon"), 42: ("PA", "Pennsylvania"), 44: ("RI", "Rhode Island"),
    45: ("SC", "South Carolina"), 46: ("SD", "South Dakota"), 47: ("TN", "Tennessee"), 48: ("TX", "Texas"),
    49: ("UT", "Utah"), 50: ("VT", "Vermont"), 51: ("VA", "Virginia"), 53: ("WA", "Washington"),
    54: ("WV", "West Virginia"), 55: ("WI", "Wisconsin"), 56: ("WY", "Wyoming"), 72: ("PR", "Puerto Rico"),
}

_LOS_VOCAB = {str(d): str(d) for d in range(1, 31)}
_LOS_VOCAB.update({"31-45": "31 to 45 days", "46-60": "46 to 60 days", "61-90": "61 to 90 days",
                   "91-120": "91 to 120 days", "121-180": "121 to 180 days", "181-365": "181 to 365 days",
                   ">365": "More than a year"})
_LOS = {i + 1: (v, lab) for i, (v, lab) in enumerate(_LOS_VOCAB.items())}

#: LOS code -> (lower, upper) in whole days, as R's ``Surv(lower, upper, type="interval2")``:
#: the stay lasted more than ``lower`` and at most ``upper`` days; exact days have
#: ``lower == upper``; ``upper`` is ``inf`` for code 37 (more than a year: right-censored).
#: Days are TEDS's: admission to last contact, plus one for outpatient settings.
LOS_BOUNDS: dict[int, tuple[float, float]] = {d: (float(d), float(d)) for d in range(1, 31)}
LOS_BOUNDS.update({
    31: (30.0, 45.0),
    32: (45.0, 60.0),
    33: (60.0, 90.0),
    34: (90.0, 120.0),
    35: (120.0, 180.0),
    36: (180.0, 365.0),
    37: (365.0, float("inf")),
})

_FREQ_VOCAB = {"none": "No use in the past month", "some": "Some use", "daily": "Daily use"}
_FREQ = {1: ("none", "No use in the past month"), 2: ("some", "Some use"), 3: ("daily", "Daily use")}
_FREQ_0614 = {
    1: ("none", "No use in the past month"),
    2: ("some", "1-3 times in the past month"),
    3: ("some", "1-2 times in the past week"),
    4: ("some", "3-6 times in the past week"),
    5: ("daily", "Daily"),
}

_SUB_VOCAB = {
    "none": "None",
    "alcohol": "Alcohol",
    "cocaine_crack": "Cocaine/crack",
    "marijuana": "Marijuana/hashish",
    "heroin": "Heroin",
    "methadone_nonrx": "Non-prescription methadone",
    "other_opiates": "Other opiates and synthetics",
    "pcp": "PCP",
    "hallucinogens": "Hallucinogens",
    "methamphetamine": "Methamphetamine/speed",
    "other_amphetamines": "Other amphetamines",
    "other_stimulants": "Other stimulants",
    "benzodiazepines": "Benzodiazepines",
    "other_tranquilizers": "Other tranquilizers",
    "barbiturates": "Barbiturates",
    "other_sedatives": "Other sedatives or hypnotics",
    "inhalants": "Inhalants",
    "otc": "Over-the-counter medications",
    "other": "Other",
}
_SUB_2019_LABELS = ["None", "Alcohol", "Cocaine/crack", "Marijuana/hashish", "Heroin",
                    "Non-prescription methadone", "Other opiates and synthetics", "PCP", "Hallucinogens",
                    "Methamphetamine/speed", "Other amphetamines", "Other stimulants", "Benzodiazepines",
                    "Other tranquilizers", "Barbiturates", "Other sedatives or hypnotics", "Inhalants",
                    "Over-the-counter medications", "Other drugs"]
_SUB = {i + 1: (v, lab) for i, (v, lab) in enumerate(zip(_SUB_VOCAB, _SUB_2019_LABELS))}
_SUB_0614 = {
    1: ("none", "None"), 2: ("alcohol", "Alcohol"), 3: ("cocaine_crack", "Cocaine/crack"),
    4: ("marijuana", "Marijuana/hashish"), 5: ("heroin", "Heroin"),
    6: ("methadone_nonrx", "Non-prescription methadone"), 7: ("other_opiates", "Other opiates and synthetics"),
    8: ("pcp", "PCP"), 9: ("hallucinogens", "Other hallucinogens"), 10: ("methamphetamine", "Methamphetamine"),
    11: ("other_amphetamines", "Other amphetamines"), 12: ("other_stimulants", "Other stimulants"),
    13: ("benzodiazepines", "Benzodiazepines"),
    14: ("other_tranquilizers", "Other non-benzodiazepine tranquilizers"),
    15: ("barbiturates", "Barbiturates"), 16: ("other_sedatives", "Other non-barbiturate sedatives or hypnotics"),
    17: ("inhalants", "Inhalants"), 18: ("otc", "Over-the-counter medications"), 20: ("other", "Other"),
}

#: Harmonised ``SUB1`` value -> :class:`iop_research.data.schema.PrimarySubstance` value
#: (``None``: no substance).
SUB1_TO_PRIMARY: dict[str, str | None] = {
    "none": None, "alcohol": "alcohol", "cocaine_crack": "stimulants", "marijuana": "cannabis",
    "heroin": "opioids", "methadone_nonrx": "opioids", "other_opiates": "opioids", "pcp": "other",
    "hallucinogens": "other", "methamphetamine": "stimulants", "other_amphetamines": "stimulants",
    "other_stimulants": "stimulants", "benzodiazepines": "sedatives", "other_tranquilizers": "sedatives",
    "barbiturates": "sedatives", "other_sedatives": "sedatives", "inhalants": "other", "otc": "other",
    "other": "other",
}

_AGE_GROUPS = ["12-14", "15-17", "18-20", "21-24", "25-29", "30-34", "35-39", "40-44", "45-49", "50-54"]
_AGE_VOCAB = {g: f"{g} years" for g in _AGE_GROUPS}
_AGE_VOCAB["55+"] = "55 years and older"
_AGE = {i + 1: (g, f"{g} years") for i, g in enumerate(_AGE_GROUPS)}
_AGE.update({11: ("55+", "55-64 years"), 12: ("55+", "65 years and older")})
_AGE_0614 = {i + 2: (g, g) for i, g in enumerate(_AGE_GROUPS)}
_AGE_0614[12] = ("55+", "55 and over")

_RACE_VOCAB = {
    "alaska_native": "Alaska Native (Aleut, Eskimo, Indian)",
    "american_indian": "American Indian (other than Alaska Native)",
    "asian_pacific_islander": "Asian or Pacific Islander",
    "black": "Black or African American",
    "white": "White",
    "asian": "Asian",
    "other": "Other single race",
    "two_or_more": "Two or more races",
    "native_hawaiian_pacific_islander": "Native Hawaiian or Other Pacific Islander",
}
_RACE = {i + 1: (v, lab) for i, (v, lab) in enumerate(_RACE_VOCAB.items())}
_RACE_0614 = {1: _RACE[1], 2: _RACE[2], 3: _RACE[3], 4: _RACE[4], 5: _RACE[5], 13: _RACE[6], 20: _RACE[7],
              21: _RACE[8], 23: _RACE[9]}

_ETHNIC_VOCAB = {
    "puerto_rican": "Puerto Rican",
    "mexican": "Mexican",
    "cuban_or_other_specific": "Cuban or other specific Hispanic",
    "not_hispanic": "Not of Hispanic or Latino origin",
    "hispanic_not_specified": "Hispanic or Latino, specific origin not specified",
}
_ETHNIC = {i + 1: (v, lab) for i, (v, lab) in enumerate(_ETHNIC_VOCAB.items())}
_ETHNIC_0614 = {
    1: ("puerto_rican", "Puerto Rican"),
    2: ("mexican", "Mexican"),
    3: ("cuban_or_other_specific", "Cuban"),
    4: ("cuban_or_other_specific", "Other specific Hispanic"),
    5: ("not_hispanic", "Not of Hispanic origin"),
    6: ("hispanic_not_specified", "Hispanic, specific origin not specified"),
}

_PRIOR_VOCAB = {"none": "No prior treatment episodes", "one_or_more": "One or more prior treatment episodes"}
_PRIOR = {0: ("none", "No prior treatment episodes"), 1: ("one_or_more", "One or more prior treatment episodes")}
_PRIOR_0614 = {0: ("none", "No prior treatment episode")}
_PRIOR_0614.update({k: ("one_or_more", f"{k} prior treatment episodes") for k in range(1, 5)})
_PRIOR_0614[5] = ("one_or_more", "5 or more prior treatment episodes")

_YES_NO_VOCAB = {"yes": "Yes", "no": "No"}
_YES_NO = {1: ("yes", "Yes"), 2: ("no", "No")}

#: TEDS-D column (current name) -> :class:`Variable`.
CODEBOOK: dict[str, Variable] = {
    "STFIPS": Variable("state", {v: lab for v, lab in _STATES.values()}, _same(_STATES),
                       "Census state FIPS code -> USPS state abbreviation"),
    # TEDS-D has SERVICES from the 2017 code book on; TEDS-A in every year, with the codes of SERVICES_D
    "SERVICES": Variable("admission_setting", _SETTING_VOCAB, {"2006-2014": _SETTING_0614, "2015+": _SETTING},
                         "Type of treatment service/setting at admission (TEDS-D: 2017 code book on)"),
    "SERVICES_D": Variable("discharge_setting", _SETTING_VOCAB, {"2006-2014": _SETTING_0614, "2015+": _SETTING},
                           "Type of treatment service/setting at discharge (SERVSETD in 2006-2014)"),
    "REASON": Variable("discharge_reason", {
        "completed": "Treatment completed",
        "dropped_out": "Dropped out of treatment",
        "terminated": "Terminated by facility",
        "transferred": "Transferred to another treatment program or facility",
        "incarcerated": "Incarcerated",
        "death": "Death",
        "other": "Other",
    }, {
        "2006-2014": {1: ("completed", "Treatment completed"), 2: ("dropped_out", "Left against professional advice"),
                      3: ("terminated", "Terminated by facility"),
                      4: ("transferred", "Transferred to another treatment program or facility"),
                      5: ("incarcerated", "Incarcerated"), 6: ("death", "Death"), 7: ("other", "Other")},
        "2015+": {1: ("completed", "Treatment completed"), 2: ("dropped_out", "Dropped out of treatment"),
                  3: ("terminated", "Terminated by facility"),
                  4: ("transferred", "Transferred to another treatment program or facility"),
                  5: ("incarcerated", "Incarcerated"), 6: ("death", "Death"), 7: ("other", "Other")},
    }, "Reason for discharge (schema.DischargeReason values)"),
    "LOS": Variable("los_code", _LOS_VOCAB, _same(_LOS),
                    "Length of stay, admission to last contact (+1 day for outpatient): 1-30 days, 31-37 ranges"),
    "METHUSE": Variable("has_mat_plan", _YES_NO_VOCAB, _same(_YES_NO),
                        "Medication-assisted opioid therapy planned (methadone/buprenorphine/naltrexone)"),
    "FREQ1": Variable("use_frequency_admission", _FREQ_VOCAB, {"2006-2014": _FREQ_0614, "2015+": _FREQ},
                      "Frequency of use of the primary substance at admission (five levels in 2006-2014)"),
    "FREQ1_D": Variable("use_frequency_discharge", _FREQ_VOCAB, {"2006-2014": {}, "2015+": _FREQ},
                        "Frequency of use of the primary substance at discharge (2015 on)"),
    "SUB1": Variable("primary_substance_teds", _SUB_VOCAB, {"2006-2014": _SUB_0614, "2015+": _SUB},
                     "Primary substance at admission (TEDS categories)"),
    "NOPRIOR": Variable("prior_treatment", _PRIOR_VOCAB, {"2006-2014": _PRIOR_0614, "2015+": _PRIOR},
                        "Previous treatment episodes: a count 0-5 (5 = five or more) in 2006-2014, "
                        "none / one or more from 2015"),
    "PSYPROB": Variable("psychiatric_comorbidity", _YES_NO_VOCAB, _same(_YES_NO),
                        "Co-occurring mental and substance use disorders"),
    "GENDER": Variable("sex", {"male": "Male", "female": "Female"}, _same({1: ("male", "Male"), 2: ("female", "Female")}),
                       "Sex (schema.Sex values)"),
    "AGE": Variable("age_group", _AGE_VOCAB, {"2006-2014": _AGE_0614, "2015+": _AGE},
                    "Age at admission, grouped (55+ harmonised: 55-64 and 65+ from 2015)"),
    "RACE": Variable("race", _RACE_VOCAB, {"2006-2014": _RACE_0614, "2015+": _RACE}, "Race"),
    "ETHNIC": Variable("ethnicity_detail", _ETHNIC_VOCAB, {"2006-2014": _ETHNIC_0614, "2015+": _ETHNIC},
                       "Hispanic or Latino origin"),
}

#: Numeric identifier/year columns (not coded; read as integers).
ID_COLUMNS = ("CASEID", "DISYR", "ADMYR")

#: Columns :func:`iop_research.datasets.read_teds_d` needs in every layout (current names).
REQUIRED_COLUMNS = ("CASEID", "DISYR", "STFIPS", "SERVICES_D", "REASON", "LOS", "METHUSE", "FREQ1",
                    "SUB1", "NOPRIOR", "PSYPROB", "GENDER", "AGE", "RACE", "ETHNIC")

#: Columns read when present: ``FREQ1_D`` (2015 on), ``SERVICES`` (2017 code book on), ``ADMYR``.
OPTIONAL_COLUMNS = ("ADMYR", "FREQ1_D", "SERVICES")
