"""Codebook of the TEDS-D public-use file: every code the toolkit reads, with its label.

Source: SAMHSA, *Treatment Episode Data Set: Discharges (TEDS-D)* codebooks (2006-2023
public-use files). Codes are the same across years; what changes is the column name of
a few variables (``SERVSETD`` for ``SERVICES_D`` in 2006-2014, ``SERVSETA`` for
``SERVICES``, ``SEX`` for ``GENDER`` in 2023) and, in the 2021 file, text labels in
place of codes. ``-9`` means missing/unknown/not collected/invalid in every coded column.

Each entry of :data:`CODEBOOK` maps a TEDS-D column (its current name) to

``output``
    name of the column in the frame returned by :func:`iop_research.datasets.read_teds_d`;
``codes``
    ``{code: (value, label)}``: ``value`` is the toolkit's value (a schema vocabulary value
    where one exists) and ``label`` the codebook's text, which is also what a labelled
    (2021-style) file holds.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["CODEBOOK", "MISSING_CODE", "MISSING_LABELS", "ALIASES", "LOS_BOUNDS", "SUB1_TO_PRIMARY",
           "REQUIRED_COLUMNS", "ID_COLUMNS", "normalise_label"]

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

#: Old or alternative column name -> current name.
ALIASES: dict[str, str] = {
    "SERVSETD": "SERVICES_D",  # 2006-2014 files
    "SERVSETA": "SERVICES",  # 2006-2014 files
    "SEX": "GENDER",  # 2023 file
}


def normalise_label(text: str) -> str:
    """Lower-case, trim and collapse blanks, so that label matching ignores case and spacing.

    Examples
    --------
    >>> normalise_label("  Treatment   COMPLETED ")
    'treatment completed'
    """
    return " ".join(str(text).split()).lower()


class Entry(NamedTuple):
    """One codebook variable."""

    output: str
    codes: dict[int, tuple[str, str]]
    meaning: str


_SETTING = {
    1: ("detox_hospital", "Detox, 24-hour, hospital inpatient"),
    2: ("detox_residential", "Detox, 24-hour, free-standing residential"),
    3: ("rehab_hospital", "Rehab/residential, hospital (non-detox)"),
    4: ("rehab_short_term", "Rehab/residential, short term (30 days or fewer)"),
    5: ("rehab_long_term", "Rehab/residential, long term (more than 30 days)"),
    6: ("intensive_outpatient", "Ambulatory, intensive outpatient"),
    7: ("outpatient", "Ambulatory, non-intensive outpatient"),
    8: ("detox_ambulatory", "Ambulatory, detoxification"),
}

_FREQ = {
    1: ("none", "No use in the past month"),
    2: ("some", "Some use"),
    3: ("daily", "Daily use"),
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

_LOS = {d: (str(d), "1 day" if d == 1 else f"{d} days") for d in range(1, 31)}
_LOS.update({
    31: ("31-45", "31 to 45 days"),
    32: ("46-60", "46 to 60 days"),
    33: ("61-90", "61 to 90 days"),
    34: ("91-120", "91 to 120 days"),
    35: ("121-180", "121 to 180 days"),
    36: ("181-365", "181 to 365 days"),
    37: (">365", "More than 365 days"),
})

#: LOS code -> (lower, upper) in whole days, as R's ``Surv(lower, upper, type="interval2")``:
#: the stay lasted more than ``lower`` and at most ``upper`` days; exact days have
#: ``lower == upper``; ``upper`` is ``inf`` for code 37 (more than 365 days: right-censored).
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

_SUB = {
    1: ("none", "None"),
    2: ("alcohol", "Alcohol"),
    3: ("cocaine_crack", "Cocaine/crack"),
    4: ("marijuana", "Marijuana/hashish"),
    5: ("heroin", "Heroin"),
    6: ("methadone_nonrx", "Non-prescription methadone"),
    7: ("other_opiates", "Other opiates and synthetics"),
    8: ("pcp", "PCP"),
    9: ("hallucinogens", "Hallucinogens"),
    10: ("methamphetamine", "Methamphetamine/speed"),
    11: ("other_amphetamines", "Other amphetamines"),
    12: ("other_stimulants", "Other stimulants"),
    13: ("benzodiazepines", "Benzodiazepines"),
    14: ("other_tranquilizers", "Other tranquilizers"),
    15: ("barbiturates", "Barbiturates"),
    16: ("other_sedatives", "Other sedatives or hypnotics"),
    17: ("inhalants", "Inhalants"),
    18: ("otc", "Over-the-counter medications"),
    19: ("other", "Other drugs"),
}

#: SUB1 code -> :class:`iop_research.data.schema.PrimarySubstance` value (``None``: no substance).
SUB1_TO_PRIMARY: dict[int, str | None] = {
    1: None, 2: "alcohol", 3: "stimulants", 4: "cannabis", 5: "opioids", 6: "opioids",
    7: "opioids", 8: "other", 9: "other", 10: "stimulants", 11: "stimulants", 12: "stimulants",
    13: "sedatives", 14: "sedatives", 15: "sedatives", 16: "sedatives", 17: "other", 18: "other",
    19: "other",
}

_AGE = {
    1: ("12-14", "12-14 years"), 2: ("15-17", "15-17 years"), 3: ("18-20", "18-20 years"),
    4: ("21-24", "21-24 years"), 5: ("25-29", "25-29 years"), 6: ("30-34", "30-34 years"),
    7: ("35-39", "35-39 years"), 8: ("40-44", "40-44 years"), 9: ("45-49", "45-49 years"),
    10: ("50-54", "50-54 years"), 11: ("55-64", "55-64 years"), 12: ("65+", "65 years and older"),
}

_RACE = {
    1: ("alaska_native", "Alaska Native (Aleut, Eskimo, Indian)"),
    2: ("american_indian", "American Indian (other than Alaska Native)"),
    3: ("asian_pacific_islander", "Asian or Pacific Islander"),
    4: ("black", "Black or African American"),
    5: ("white", "White"),
    6: ("asian", "Asian"),
    7: ("other", "Other single race"),
    8: ("two_or_more", "Two or more races"),
    9: ("native_hawaiian_pacific_islander", "Native Hawaiian or Other Pacific Islander"),
}

_ETHNIC = {
    1: ("hispanic", "Puerto Rican"),
    2: ("hispanic", "Mexican"),
    3: ("hispanic", "Cuban or other specific Hispanic"),
    4: ("not_hispanic", "Not of Hispanic or Latino origin"),
    5: ("hispanic", "Hispanic or Latino, specific origin not specified"),
}

_NOPRIOR = {
    0: ("0", "No prior treatment episodes"),
    1: ("1", "One prior treatment episode"),
    2: ("2", "Two prior treatment episodes"),
    3: ("3", "Three prior treatment episodes"),
    4: ("4", "Four prior treatment episodes"),
    5: ("5", "Five or more prior treatment episodes"),
}

#: TEDS-D column (current name) -> :class:`Entry`.
CODEBOOK: dict[str, Entry] = {
    "STFIPS": Entry("state", _STATES, "Census state FIPS code -> USPS state abbreviation"),
    "SERVICES": Entry("admission_setting", _SETTING, "Type of treatment service/setting at admission"),
    "SERVICES_D": Entry("discharge_setting", _SETTING, "Type of treatment service/setting at discharge"),
    "REASON": Entry("discharge_reason", {
        1: ("completed", "Treatment completed"),
        2: ("dropped_out", "Dropped out of treatment"),
        3: ("terminated", "Terminated by facility"),
        4: ("transferred", "Transferred to another treatment program or facility"),
        5: ("incarcerated", "Incarcerated"),
        6: ("death", "Death"),
        7: ("other", "Other"),
    }, "Reason for discharge (schema.DischargeReason values)"),
    "LOS": Entry("los_code", _LOS, "Length of stay: 1-30 exact days, 31-37 ranges"),
    "METHUSE": Entry("has_mat_plan", {1: ("yes", "Yes"), 2: ("no", "No")},
                     "Medication-assisted opioid therapy planned (methadone/buprenorphine)"),
    "FREQ1": Entry("use_frequency_admission", _FREQ, "Frequency of use of the primary substance at admission"),
    "FREQ1_D": Entry("use_frequency_discharge", _FREQ, "Frequency of use of the primary substance at discharge"),
    "SUB1": Entry("primary_substance_teds", _SUB, "Primary substance at admission (TEDS categories)"),
    "NOPRIOR": Entry("prior_treatment_episodes", _NOPRIOR, "Previous substance use treatment episodes (5 = five or more)"),
    "PSYPROB": Entry("psychiatric_comorbidity", {1: ("yes", "Yes"), 2: ("no", "No")},
                     "Co-occurring mental and substance use disorders"),
    "GENDER": Entry("sex", {1: ("male", "Male"), 2: ("female", "Female")}, "Sex (schema.Sex values)"),
    "AGE": Entry("age_group", _AGE, "Age at admission, grouped"),
    "RACE": Entry("race", _RACE, "Race"),
    "ETHNIC": Entry("ethnicity", _ETHNIC, "Hispanic or Latino origin (collapsed to hispanic/not_hispanic)"),
}

#: Numeric identifier/year columns (not coded; read as integers).
ID_COLUMNS = ("CASEID", "DISYR", "ADMYR")

#: Columns :func:`iop_research.datasets.read_teds_d` needs (current names). ``ADMYR`` and
#: ``SERVICES`` are optional (``SERVICES`` is needed with ``include_admission_setting=True``).
REQUIRED_COLUMNS = ("CASEID", "DISYR", "STFIPS", "SERVICES_D", "REASON", "LOS", "METHUSE", "FREQ1",
                    "FREQ1_D", "SUB1", "NOPRIOR", "PSYPROB", "GENDER", "AGE", "RACE", "ETHNIC")
