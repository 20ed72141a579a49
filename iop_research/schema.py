"""The data contract: canonical IOP tables, their columns and controlled vocabularies.

Column names used anywhere in the package come from the classes here
(``Col.patient_id``), never from string literals scattered through the code.
The data dictionary for users is ``data/README.md``; it documents the same
tables, columns and vocabularies.

Tables
------
patients      one row per person
admissions    one row per IOP episode (recorded admissions)
sessions      one row per scheduled therapy session
medications   one row per MAT dispensing / administration
events        dated events: urine drug screens, self-reported use, overdose,
              ED visit, readmission, death, aftercare contact
observation   one row per person: last date with complete data
"""
from __future__ import annotations

from enum import Enum

__all__ = [
    "Col",
    "Modality",
    "DischargeReason",
    "ReferralSource",
    "PrimarySubstance",
    "Medication",
    "MedicationClass",
    "EventType",
    "UdsResult",
    "Sex",
    "Housing",
    "Employment",
    "TABLES",
    "TABLE_COLUMNS",
    "MEDICATION_CLASS",
    "ASAM_21_MIN_HOURS_ADULT",
    "ASAM_21_MIN_HOURS_ADOLESCENT",
]


class _Vocab(str, Enum):
    """A controlled vocabulary whose members compare equal to their string values."""

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value

    @classmethod
    def values(cls) -> list[str]:
        """All allowed values, in declaration order."""
        return [m.value for m in cls]


class Modality(_Vocab):
    """Therapy modality of a session."""

    individual = "individual"  #: one-to-one psychotherapy / counselling
    group = "group"  #: group therapy (process, skills, CBT groups)
    family = "family"  #: family or couples therapy
    education = "education"  #: psycho-educational classes (triggers, cravings, relapse prevention)
    holistic = "holistic"  #: yoga, meditation, art or music therapy


class DischargeReason(_Vocab):
    """Reason an episode ended (TEDS-D ``REASON`` categories)."""

    completed = "completed"  #: treatment completed (TEDS-D 1)
    dropped_out = "dropped_out"  #: left against professional advice (TEDS-D 2)
    terminated = "terminated"  #: terminated by the facility (TEDS-D 3)
    transferred = "transferred"  #: transferred to another programme or level of care (TEDS-D 4)
    incarcerated = "incarcerated"  #: incarcerated (TEDS-D 5)
    death = "death"  #: died (TEDS-D 6)
    other = "other"  #: other (TEDS-D 7)


class ReferralSource(_Vocab):
    """Referral path into IOP."""

    self = "self"  #: self or family referral
    residential_step_down = "residential_step_down"  #: step-down from residential / inpatient care
    healthcare = "healthcare"  #: physician, hospital, other health-care provider
    criminal_justice = "criminal_justice"  #: court, probation, drug court, DUI programme
    community = "community"  #: community or social-service agency, school, employer
    other = "other"  #: any other source


class PrimarySubstance(_Vocab):
    """Primary substance at admission."""

    alcohol = "alcohol"
    opioids = "opioids"  #: heroin, fentanyl, prescription opioids
    stimulants = "stimulants"  #: cocaine, methamphetamine, other stimulants
    cannabis = "cannabis"
    sedatives = "sedatives"  #: benzodiazepines, other sedatives/hypnotics
    other = "other"


class Medication(_Vocab):
    """Dispensed medication (formulation matters for days covered)."""

    methadone = "methadone"  #: OTP dispensing, one row per dose day or take-home batch
    buprenorphine = "buprenorphine"  #: prescription, typically 7-30 days' supply
    naltrexone_oral = "naltrexone_oral"  #: oral naltrexone, prescription
    naltrexone_xr = "naltrexone_xr"  #: extended-release injection, covers about 28 days
    acamprosate = "acamprosate"  #: alcohol use disorder
    disulfiram = "disulfiram"  #: alcohol use disorder


class MedicationClass(_Vocab):
    """Medication class used to build exposure eras (formulations of one drug join)."""

    methadone = "methadone"
    buprenorphine = "buprenorphine"
    naltrexone = "naltrexone"
    acamprosate = "acamprosate"
    disulfiram = "disulfiram"


#: Medication -> class used for eras.
MEDICATION_CLASS: dict[str, str] = {
    Medication.methadone.value: MedicationClass.methadone.value,
    Medication.buprenorphine.value: MedicationClass.buprenorphine.value,
    Medication.naltrexone_oral.value: MedicationClass.naltrexone.value,
    Medication.naltrexone_xr.value: MedicationClass.naltrexone.value,
    Medication.acamprosate.value: MedicationClass.acamprosate.value,
    Medication.disulfiram.value: MedicationClass.disulfiram.value,
}


class EventType(_Vocab):
    """Type of a dated event."""

    uds = "uds"  #: urine drug screen; ``result`` is positive/negative
    self_report_use = "self_report_use"  #: patient reports use
    overdose = "overdose"  #: non-fatal overdose
    ed_visit = "ed_visit"  #: substance-related emergency-department visit
    readmission = "readmission"  #: readmission to any SUD treatment for substance use
    death = "death"  #: death from any cause (competing event for relapse)
    aftercare_contact = "aftercare_contact"  #: alumni / aftercare contact after discharge


class UdsResult(_Vocab):
    """Result of an event that has one (urine drug screens)."""

    positive = "positive"
    negative = "negative"


class Sex(_Vocab):
    """Sex recorded at intake."""

    female = "female"
    male = "male"
    unknown = "unknown"


class Housing(_Vocab):
    """Housing status at intake."""

    stable = "stable"
    unstable = "unstable"  #: temporary, doubled-up, recovery residence
    homeless = "homeless"


class Employment(_Vocab):
    """Employment status at intake."""

    employed = "employed"
    unemployed = "unemployed"
    not_in_labor_force = "not_in_labor_force"


class Col:
    """Canonical column names (one name per concept everywhere in the package)."""

    # identifiers
    patient_id = "patient_id"
    episode_id = "episode_id"
    # patients
    birth_year = "birth_year"
    sex = "sex"
    race = "race"
    ethnicity = "ethnicity"
    # admissions
    program = "program"
    admit_date = "admit_date"
    discharge_date = "discharge_date"
    discharge_reason = "discharge_reason"
    referral_source = "referral_source"
    primary_substance = "primary_substance"
    psychiatric_comorbidity = "psychiatric_comorbidity"
    prior_treatment_episodes = "prior_treatment_episodes"
    severity_score = "severity_score"
    housing = "housing"
    employment = "employment"
    # sessions
    session_date = "session_date"
    modality = "modality"
    minutes = "minutes"
    attended = "attended"
    # medications
    medication = "medication"
    dispense_date = "dispense_date"
    days_supply = "days_supply"
    dose_mg = "dose_mg"
    # events
    event_date = "event_date"
    event_type = "event_type"
    result = "result"
    substance = "substance"
    # observation
    observation_end = "observation_end"


TABLES: tuple[str, ...] = (
    "patients",
    "admissions",
    "sessions",
    "medications",
    "events",
    "observation",
)

#: Table -> ordered columns: (name, kind, nullable, meaning). ``kind`` is one of
#: "id", "date", "int", "float", "bool", "category:<Vocab>", "str".
TABLE_COLUMNS: dict[str, list[tuple[str, str, bool, str]]] = {
    "patients": [
        (Col.patient_id, "id", False, "Person identifier, unique in the table."),
        (Col.birth_year, "int", False, "Year of birth (1900-2020)."),
        (Col.sex, "category:Sex", False, "Sex recorded at intake."),
        (Col.race, "str", True, "Race as recorded (free category, e.g. white, black, asian, other)."),
        (Col.ethnicity, "str", True, "Ethnicity as recorded (hispanic, not_hispanic, unknown)."),
    ],
    "admissions": [
        (Col.episode_id, "id", False, "Episode identifier, unique in the table."),
        (Col.patient_id, "id", False, "Person; must exist in patients."),
        (Col.program, "str", False, "Programme (site) that delivered the episode."),
        (Col.admit_date, "date", False, "Admission date (day 0 of the episode)."),
        (Col.discharge_date, "date", True, "Discharge date; empty while still enrolled. Not before admit_date."),
        (Col.discharge_reason, "category:DischargeReason", True, "Why the episode ended; empty exactly when discharge_date is empty."),
        (Col.referral_source, "category:ReferralSource", False, "Referral path into IOP."),
        (Col.primary_substance, "category:PrimarySubstance", False, "Primary substance at admission."),
        (Col.psychiatric_comorbidity, "bool", False, "Co-occurring psychiatric disorder at intake."),
        (Col.prior_treatment_episodes, "int", False, "Number of prior SUD treatment episodes (>= 0)."),
        (Col.severity_score, "float", True, "Intake severity score, 0-10 (higher is more severe)."),
        (Col.housing, "category:Housing", True, "Housing status at intake."),
        (Col.employment, "category:Employment", True, "Employment status at intake."),
    ],
    "sessions": [
        (Col.patient_id, "id", False, "Person; must exist in patients."),
        (Col.episode_id, "id", True, "Episode; optional, assigned by date when empty."),
        (Col.session_date, "date", False, "Date of the scheduled session."),
        (Col.modality, "category:Modality", False, "Therapy modality."),
        (Col.minutes, "int", False, "Scheduled length in minutes (1-600)."),
        (Col.attended, "bool", False, "Whether the patient attended (False = no-show)."),
    ],
    "medications": [
        (Col.patient_id, "id", False, "Person; must exist in patients."),
        (Col.medication, "category:Medication", False, "Medication and formulation."),
        (Col.dispense_date, "date", False, "Dispensing or administration date."),
        (Col.days_supply, "int", False, "Days covered by this dispensing (1-365)."),
        (Col.dose_mg, "float", True, "Daily dose in mg, if known."),
    ],
    "events": [
        (Col.patient_id, "id", False, "Person; must exist in patients."),
        (Col.event_date, "date", False, "Date of the event."),
        (Col.event_type, "category:EventType", False, "What happened."),
        (Col.result, "category:UdsResult", True, "positive/negative for uds; empty otherwise."),
        (Col.substance, "str", True, "Substance detected or reported, if known."),
    ],
    "observation": [
        (Col.patient_id, "id", False, "Person, unique in the table; must exist in patients."),
        (Col.observation_end, "date", False, "Last date with complete data (end of follow-up)."),
    ],
}

#: ASAM level 2.1 minimum weekly hours of service.
ASAM_21_MIN_HOURS_ADULT = 9.0
ASAM_21_MIN_HOURS_ADOLESCENT = 6.0
