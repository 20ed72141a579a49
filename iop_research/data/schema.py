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

import functools
import warnings
from collections.abc import Mapping
from enum import Enum
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, UnknownNameError

__all__ = [
    "TEXT_DTYPE",
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
    "VOCABULARIES",
    "ValueRange",
    "COLUMN_RANGES",
    "UNIQUE_COLUMNS",
    "ROW_KEY",
    "REQUIRED_TABLES",
    "OPTIONAL_TABLES",
    "PROBLEM_COLUMNS",
    "column_kinds",
    "empty_table",
    "table_schema",
    "coerce_tables",
    "find_problems",
    "validate_tables",
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
    """Result of an event that has one (urine drug screens); ``missed``: scheduled but not done."""

    positive = "positive"
    negative = "negative"
    missed = "missed"


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
    # use_days (optional, Timeline Followback)
    use_date = "use_date"
    used = "used"
    drinks = "drinks"


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
        (Col.result, "category:UdsResult", True, "positive/negative for uds, missed for a scheduled screen not done; empty otherwise."),
        (Col.substance, "str", True, "Substance detected or reported, if known."),
    ],
    "observation": [
        (Col.patient_id, "id", False, "Person, unique in the table; must exist in patients."),
        (Col.observation_end, "date", False, "Last date with complete data (end of follow-up)."),
    ],
    # optional (OPTIONAL_TABLES): absent unless the study has Timeline Followback data
    "use_days": [
        (Col.patient_id, "id", False, "Person; must exist in patients."),
        (Col.use_date, "date", False, "Calendar day recorded by the Timeline Followback interview."),
        (Col.substance, "str", True, "Substance the row is about (e.g. alcohol); empty when not recorded."),
        (Col.used, "bool", False, "Whether the substance was used that day (False = abstinent day)."),
        (Col.drinks, "float", True, "Standard drinks that day (alcohol), if recorded; 0 on a day not used."),
    ],
}

#: Tables of the contract that a study may leave out altogether (``IOPData.<table>`` is then None and
#: ``read_data`` reads them only when their file exists): ``use_days``, a Timeline Followback series, one row
#: per patient, day and substance recorded (days without a row are not recorded, never assumed abstinent).
OPTIONAL_TABLES: tuple[str, ...] = ("use_days",)

#: ASAM level 2.1 minimum weekly hours of service.
ASAM_21_MIN_HOURS_ADULT = 9.0
ASAM_21_MIN_HOURS_ADOLESCENT = 6.0


# ---------------------------------------------------------------------------
# Validation rules. TABLE_COLUMNS above is the single source of truth for
# column names, kinds and nullability; the constants below add value ranges,
# uniqueness and the key used to name offending rows in error messages.
# ---------------------------------------------------------------------------

#: Vocabulary name used in ``TABLE_COLUMNS`` kinds (``"category:<name>"``) -> enum class.
VOCABULARIES: dict[str, type[_Vocab]] = {
    "Sex": Sex,
    "DischargeReason": DischargeReason,
    "ReferralSource": ReferralSource,
    "PrimarySubstance": PrimarySubstance,
    "Housing": Housing,
    "Employment": Employment,
    "Modality": Modality,
    "Medication": Medication,
    "EventType": EventType,
    "UdsResult": UdsResult,
}


class ValueRange(NamedTuple):
    """Allowed values of a numeric column.

    ``low <= x <= high`` (``low < x`` when ``low_inclusive`` is False); ``None``
    leaves that side unbounded. Missing values are not range-checked (see the
    column's nullability instead).
    """

    low: float | None
    high: float | None
    low_inclusive: bool = True

    def describe(self) -> str:
        """Human-readable form, e.g. ``'between 1 and 600'`` or ``'> 0'``."""
        if self.low is not None and self.high is not None:
            return f"between {self.low} and {self.high}"
        if self.low is not None:
            return f"{'>=' if self.low_inclusive else '>'} {self.low}"
        return f"<= {self.high}"


#: Table -> column -> allowed range (inclusive unless stated).
COLUMN_RANGES: dict[str, dict[str, ValueRange]] = {
    "patients": {Col.birth_year: ValueRange(1900, 2020)},
    "admissions": {
        Col.prior_treatment_episodes: ValueRange(0, None),
        Col.severity_score: ValueRange(0, 10),
    },
    "sessions": {Col.minutes: ValueRange(1, 600)},
    "medications": {
        Col.days_supply: ValueRange(1, 365),
        Col.dose_mg: ValueRange(0, None, low_inclusive=False),
    },
    "use_days": {Col.drinks: ValueRange(0, None)},
}

#: Table -> columns whose values must be unique in that table.
UNIQUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": (Col.patient_id,),
    "admissions": (Col.episode_id,),
    "observation": (Col.patient_id,),
}

#: Table -> identifier column used to name offending rows in error messages.
ROW_KEY: dict[str, str] = {
    "patients": Col.patient_id,
    "admissions": Col.episode_id,
    "sessions": Col.patient_id,
    "medications": Col.patient_id,
    "events": Col.patient_id,
    "observation": Col.patient_id,
    "use_days": Col.patient_id,
}

#: Tables that :func:`iop_research.data.io.read_data` requires as files; the others
#: (admissions, medications, events) may be absent and are then empty.
REQUIRED_TABLES: tuple[str, ...] = ("patients", "sessions", "observation")

#: Columns of the problems table carried by :class:`DataValidationError`.
PROBLEM_COLUMNS: tuple[str, ...] = ("table", "column", "check", "n_failures", "examples", "fix")

#: Canonical dtype of text columns: pandas' own default for text, ``str`` from pandas 3
#: (missing values NaN), ``object`` holding Python ``str`` before (missing values None).
TEXT_DTYPE: Any = "str" if int(pd.__version__.split(".")[0]) >= 3 else object

_CANONICAL_DTYPE: dict[str, Any] = {
    "id": TEXT_DTYPE,
    "str": TEXT_DTYPE,
    "category": TEXT_DTYPE,
    "date": "datetime64[ns]",
    "int": "int64",
    "float": "float64",
    "bool": bool,
}

_KIND_TEXT: dict[str, str] = {
    "id": "strings (identifiers are text, e.g. 'P0001')",
    "str": "strings",
    "category": "strings from the vocabulary",
    "date": "datetime64 calendar days (no time zone)",
    "int": "integers",
    "float": "numbers",
    "bool": "booleans (True/False)",
}

_EXAMPLE_LIMIT = 5


class _ColumnSpec(NamedTuple):
    name: str
    kind: str  # id, str, category, date, int, float, bool
    vocab: type[_Vocab] | None
    nullable: bool
    meaning: str


def _column_specs(table: str) -> list[_ColumnSpec]:
    specs = []
    for name, kind, nullable, meaning in TABLE_COLUMNS[table]:
        vocab = None
        if kind.startswith("category:"):
            vocab = VOCABULARIES[kind.split(":", 1)[1]]
            kind = "category"
        specs.append(_ColumnSpec(name, kind, vocab, nullable, meaning))
    return specs


def column_kinds(table: str) -> dict[str, str]:
    """Column -> kind (``id, str, category, date, int, float, bool``) of a contract table.

    Examples
    --------
    >>> column_kinds("observation")
    {'patient_id': 'id', 'observation_end': 'date'}
    """
    return {spec.name: spec.kind for spec in _column_specs(table)}


def empty_table(table: str) -> pd.DataFrame:
    """A zero-row table with the contract's columns, in order, and canonical dtypes.

    Canonical dtypes: ids, strings and vocabularies :data:`TEXT_DTYPE` (``str`` on
    pandas 3, ``object`` holding Python ``str`` on pandas 2.2),
    dates ``datetime64[ns]`` at midnight, ints ``int64``, floats ``float64``,
    booleans ``bool``.

    Parameters
    ----------
    table : str
        One of :data:`TABLES`.

    Returns
    -------
    pandas.DataFrame
        No rows; the columns of ``TABLE_COLUMNS[table]``.

    Examples
    --------
    >>> empty_table("medications").dtypes.astype(str).to_dict()  # doctest: +SKIP
    {'patient_id': 'str', 'medication': 'str', 'dispense_date': 'datetime64[ns]', 'days_supply': 'int64', 'dose_mg': 'float64'}
    >>> list(empty_table("medications").columns)
    ['patient_id', 'medication', 'dispense_date', 'days_supply', 'dose_mg']
    """
    if table not in TABLE_COLUMNS:
        raise UnknownNameError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    return pd.DataFrame(
        {spec.name: pd.Series([], dtype=_CANONICAL_DTYPE[spec.kind]) for spec in _column_specs(table)}
    )


# ----------------------------------------------------------------------------
# dtype predicates (vectorised; used as pandera checks)
# ----------------------------------------------------------------------------


def _is_stringlike(values: Any) -> bool:
    return pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")


def _kind_ok(s: pd.Series, kind: str) -> bool:
    """Whether the dtype of ``s`` is acceptable for a contract column of ``kind``."""
    dt = s.dtype
    if kind == "date":
        return pd.api.types.is_datetime64_dtype(dt)  # False for tz-aware dtypes
    if kind == "bool":
        return pd.api.types.is_bool_dtype(dt)
    if kind == "int":
        return pd.api.types.is_integer_dtype(dt) and not pd.api.types.is_bool_dtype(dt)
    if kind == "float":
        return pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)
    # id, str, category
    if isinstance(dt, pd.CategoricalDtype):
        return _is_stringlike(dt.categories)
    if dt == object or isinstance(dt, pd.StringDtype):
        return _is_stringlike(s)
    return False


def _is_whole_day(s: pd.Series) -> pd.Series:
    return s.isna() | (s == s.dt.normalize())


def _is_finite(s: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(s.to_numpy(dtype="float64", na_value=np.nan)), index=s.index) | s.isna()


def _wrong_type_rows(s: pd.Series, kind: str) -> np.ndarray:
    """Positions of the values that make ``s`` fail the dtype check (error path only)."""
    notna = s.notna().to_numpy()
    if kind in ("id", "str", "category") and s.dtype == object:
        bad = notna & ~s.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        return np.flatnonzero(bad)
    rows = np.flatnonzero(notna)
    return rows if len(rows) else np.arange(len(s))


@functools.lru_cache(maxsize=None)
def table_schema(table: str):
    """The pandera ``DataFrameSchema`` of one contract table, generated from ``TABLE_COLUMNS``.

    Per column, in this order: a dtype check (kind of ``TABLE_COLUMNS``), for
    dates a whole-day check, for floats a finiteness check, for vocabularies
    an ``isin`` check, for ranged
    columns (:data:`COLUMN_RANGES`) a range check; plus nullability and
    uniqueness (:data:`UNIQUE_COLUMNS`). Extra columns are allowed
    (``strict=False``); contract columns are required.

    Parameters
    ----------
    table : str
        One of :data:`TABLES`.

    Returns
    -------
    pandera.api.pandas.container.DataFrameSchema

    Examples
    --------
    >>> sorted(table_schema("observation").columns)
    ['observation_end', 'patient_id']
    """
    import pandera.pandas as pa

    columns = {}
    for spec in _column_specs(table):
        checks = [pa.Check(functools.partial(_kind_ok, kind=spec.kind), name=f"dtype_{spec.kind}")]
        for rule, _fix in _value_rules(table, spec)[1:]:
            if rule == "whole_day":
                checks.append(pa.Check(_is_whole_day, name="whole_day"))
            elif rule == "allowed_values":
                checks.append(pa.Check.isin(spec.vocab.values()))
            elif rule == "finite":
                checks.append(pa.Check(_is_finite, name="finite"))
            else:  # range
                rng = COLUMN_RANGES[table][spec.name]
                if rng.low is not None and rng.high is not None:
                    checks.append(pa.Check.in_range(rng.low, rng.high, include_min=rng.low_inclusive))
                elif rng.low is not None:
                    checks.append(pa.Check.ge(rng.low) if rng.low_inclusive else pa.Check.gt(rng.low))
                else:
                    checks.append(pa.Check.le(rng.high))
        columns[spec.name] = pa.Column(
            None,
            checks=checks,
            nullable=spec.nullable,
            unique=spec.name in UNIQUE_COLUMNS.get(table, ()),
            required=True,
            description=spec.meaning,
        )
    return pa.DataFrameSchema(columns, strict=False, name=table)


def _value_rules(table: str, spec: _ColumnSpec) -> list[tuple[str, str]]:
    """(check name, fix) of the column's checks, in the order of :func:`table_schema`."""
    rules = [
        (
            "dtype",
            f"Store {spec.name} as {_KIND_TEXT[spec.kind]}. Files read with read_data are converted "
            "automatically; convert in-memory frames with IOPData.coerce() or schema.coerce_tables().",
        )
    ]
    if spec.kind == "date":
        rules.append(("whole_day", f"{spec.name} holds calendar days: drop the time of day (Series.dt.normalize())."))
    if spec.kind == "float":
        rules.append(("finite", f"{spec.name} must be a finite number: replace inf/-inf with the real value, "
                                "or leave it missing where the column allows it."))
    if spec.vocab is not None:
        rules.append(
            (
                "allowed_values",
                f"Use one of {', '.join(spec.vocab.values())} (see data/README.md); map source codes "
                "onto the vocabulary before loading.",
            )
        )
    rng = COLUMN_RANGES.get(table, {}).get(spec.name)
    if rng is not None:
        rules.append(
            (f"range({rng.describe()})", f"{spec.name} must be {rng.describe()}; correct the source rows or remove them explicitly.")
        )
    return rules


# ----------------------------------------------------------------------------
# Problem collection
# ----------------------------------------------------------------------------


class _Problems:
    """Accumulates problems; remembers unusable columns and rows that failed parsing."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.bad_columns: set[tuple[str, str]] = set()  # absent or wrong dtype
        self.parse_failures: dict[tuple[str, str], np.ndarray] = {}

    def add(self, table: str, column: str, check: str, fix: str, *, df: pd.DataFrame | None = None,
            rows: np.ndarray | None = None, n_failures: int | None = None, examples: str | None = None) -> None:
        rows = np.asarray(rows if rows is not None else [], dtype=np.int64)
        if n_failures is None:
            n_failures = len(rows)
        if n_failures == 0:
            return
        if examples is None:
            examples = _examples(df, table, rows)
        self.rows.append(
            {"table": table, "column": column, "check": check, "n_failures": int(n_failures),
             "examples": examples, "fix": fix}
        )

    def frame(self) -> pd.DataFrame:
        if not self.rows:
            return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "n_failures" else object) for c in PROBLEM_COLUMNS})
        return pd.DataFrame(self.rows, columns=list(PROBLEM_COLUMNS))


def _head(values: Any, limit: int = _EXAMPLE_LIMIT) -> str:
    vals = [str(v) for v in values]
    return ", ".join(vals[:limit]) + (", ..." if len(vals) > limit else "")


def _examples(df: pd.DataFrame | None, table: str, rows: np.ndarray) -> str:
    """'patient_id P1, P2; rows 0, 4' for the offending rows (0-based positions)."""
    if len(rows) == 0:
        return ""
    parts = []
    key = ROW_KEY.get(table)
    if df is not None and key in df.columns:
        ids = df[key].iloc[rows[:1000]].dropna()
        if len(ids):
            uniq = pd.unique(ids.astype(str).to_numpy())
            text = _head(uniq[: _EXAMPLE_LIMIT + 1])
            if len(uniq) <= _EXAMPLE_LIMIT and len(rows) > 1000:  # later rows may name other ids
                text += ", ..."
            parts.append(f"{key} {text}")
    parts.append(f"rows {_head(rows[: _EXAMPLE_LIMIT + 1])}")
    return "; ".join(parts)


def _run_schema(table: str, df: pd.DataFrame, acc: _Problems) -> None:
    """Column-level checks with pandera (lazy), translated into problems."""
    import pandera.pandas as pa

    schema = table_schema(table)
    try:
        with warnings.catch_warnings():
            # pandera's own failure-case consolidation trips a pandas FutureWarning
            # (concat with all-NA entries); not ours to fix, and harmless.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"pandera(\.|$)")
            schema.validate(df, lazy=True, inplace=True)
        return
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
    specs = {spec.name: spec for spec in _column_specs(table)}

    # missing columns first: nothing else is checked for them
    missing = fc.loc[fc["check"] == "column_in_dataframe", "failure_case"].astype(str).tolist()
    for col in missing:
        acc.bad_columns.add((table, col))
        near = [str(c) for c in df.columns if str(c).strip().lower() == col]
        acc.add(table, col, "column_present",
                f"Add the required column {col} ({specs[col].meaning}) to the {table} table"
                + (f", e.g. by renaming {near[0]!r}" if near else "") + "; see data/README.md.",
                n_failures=len(df), examples="column absent" + (f"; found {near[0]!r}" if near else ""))
    col_fc = fc[fc["column"].notna() & (fc["check"] != "column_in_dataframe")]
    # dtype failures: later value checks of that column are meaningless
    for col, spec in specs.items():
        if col in missing or col not in df.columns:
            continue
        if not _kind_ok(df[col], spec.kind):
            acc.bad_columns.add((table, col))
            rows = _wrong_type_rows(df[col], spec.kind)
            acc.add(table, col, f"dtype({spec.kind})",
                    f"Found dtype {df[col].dtype}. " + _value_rules(table, spec)[0][1], df=df, rows=rows)
    for (col, check), grp in col_fc.groupby(["column", "check"], sort=False, dropna=False):
        spec = specs.get(col)
        if spec is None or (table, col) in acc.bad_columns:
            continue
        idx = grp["index"].dropna()
        rows = np.sort(np.unique(idx.to_numpy(dtype=np.int64))) if len(idx) else np.array([], dtype=np.int64)
        if check == "not_nullable":
            skip = acc.parse_failures.get((table, col))
            if skip is not None:
                rows = np.setdiff1d(rows, skip)
            acc.add(table, col, "not_null",
                    f"Fill the empty {col} values, or remove those rows explicitly before validating.", df=df, rows=rows)
        elif check == "field_uniqueness":
            acc.add(table, col, "unique",
                    f"{col} must be unique in {table}: remove or merge the duplicate rows.", df=df, rows=rows)
        else:
            numbers = grp["check_number"].dropna().astype(int).unique()
            rules = _value_rules(table, spec)
            for number in numbers:
                if number == 0 or number >= len(rules):
                    continue  # dtype handled above
                name, fix = rules[number]
                if name == "allowed_values" and len(rows):
                    fix = _allowed_values_fix(spec, df[col].iloc[rows])
                if len(rows):
                    acc.add(table, col, name, fix, df=df, rows=rows)
                else:  # the check itself failed to run
                    acc.add(table, col, name, fix, n_failures=len(df), examples="check could not run on this column")


def _allowed_values_fix(spec: _ColumnSpec, offending: pd.Series) -> str:
    """The fix of an ``allowed_values`` problem, naming the offending values with their row counts."""
    counts = offending.astype(object).map(str).value_counts(sort=True)
    shown = ", ".join(f"{value!r} ({n:,} row{'s' if n != 1 else ''})" for value, n in counts.iloc[:10].items())
    more = f", and {len(counts) - 10} more value(s)" if len(counts) > 10 else ""
    return (f"Found {len(counts)} value(s) outside the vocabulary: {shown}{more}. Use one of "
            f"{', '.join(spec.vocab.values())} (see data/README.md); map source codes onto the vocabulary "
            "before loading (a mapping file's values.<column> table does this: iop-research map).")


# ----------------------------------------------------------------------------
# Cross-column and cross-table checks (vectorised pandas)
# ----------------------------------------------------------------------------


def _validation_frame(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Shallow copy for validation: 0..n-1 RangeIndex (failure indexes are row positions),
    and text contract columns as categoricals (missing-value, vocabulary and id look-ups
    then work on integer codes, which keeps millions of rows fast)."""
    out = df.copy(deep=False)
    out.index = pd.RangeIndex(len(out))
    for spec in _column_specs(table):
        if spec.kind in ("id", "str", "category") and spec.name in out.columns:
            s = out[spec.name]
            if s.dtype == object and _is_stringlike(s):
                codes, uniques = pd.factorize(s)  # unsorted categories: no sort of the uniques
                out[spec.name] = pd.Series(pd.Categorical.from_codes(codes, categories=uniques), index=out.index)
    return out


def _codes_in(s: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of each value of ``s`` in the unique ``index``; -1 when missing or absent."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        where = index.get_indexer(s.cat.categories) if len(s.cat.categories) else np.array([], dtype=np.intp)
        return np.append(where, -1)[s.cat.codes.to_numpy()]
    # look up each distinct value once (millions of session rows hold a few thousand ids)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    where = index.get_indexer(pd.Index(uniques).astype(object)) if len(uniques) else np.array([], dtype=np.intp)
    return np.append(where, -1)[codes]


def _take(values: np.ndarray, codes: np.ndarray, fill: Any) -> np.ndarray:
    """``values[codes]`` with ``fill`` where the code is -1."""
    return np.append(values, np.array([fill], dtype=values.dtype))[codes]


def _unique_index(s: pd.Series) -> pd.Index:
    return pd.Index(pd.unique(s.dropna().astype(object).to_numpy()))


def _usable(frames: dict[str, pd.DataFrame], acc: _Problems, table: str, *cols: str) -> bool:
    """Whether cross-checks may use these columns: present, of the right dtype, and every value parsed
    (a column with unparsed values, e.g. dates in another format, would raise unrelated follow-on
    problems: discharge_reason without discharge_date, overlapping "open" episodes, ...)."""
    df = frames.get(table)
    return df is not None and all(
        c in df.columns and (table, c) not in acc.bad_columns and (table, c) not in acc.parse_failures for c in cols
    )


def _rows(mask: Any) -> np.ndarray:
    return np.flatnonzero(np.asarray(mask, dtype=bool))


_FAR_FUTURE = np.datetime64(pd.Timestamp.max.normalize().to_datetime64(), "ns")
_NAT = np.datetime64("NaT", "ns")


def _ns(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype="datetime64[ns]")


def _cross_checks(frames: dict[str, pd.DataFrame], acc: _Problems, tolerance_days: int) -> None:
    P, A, S = frames.get("patients"), frames.get("admissions"), frames.get("sessions")
    O = frames.get("observation")
    pid, eid = Col.patient_id, Col.episode_id

    # --- within admissions
    if _usable(frames, acc, "admissions", Col.admit_date, Col.discharge_date):
        bad = A[Col.discharge_date] < A[Col.admit_date]
        acc.add("admissions", Col.discharge_date, "discharge_not_before_admit",
                "discharge_date must be on or after admit_date: correct the dates in the source rows or "
                "drop the episodes explicitly.", df=A, rows=_rows(bad))
    if _usable(frames, acc, "admissions", Col.discharge_date, Col.discharge_reason):
        bad = A[Col.discharge_reason].isna().to_numpy() != A[Col.discharge_date].isna().to_numpy()
        acc.add("admissions", Col.discharge_reason, "reason_iff_discharge_date",
                "discharge_reason must be given exactly when discharge_date is: fill the missing one "
                "(use 'other' when the reason is unknown), or clear discharge_reason of open episodes.",
                df=A, rows=_rows(bad))
    # --- exact duplicate rows (a session, dispensing or event recorded twice counts twice)
    for table in ("sessions", "medications", "events"):
        df = frames.get(table)
        if isinstance(df, pd.DataFrame) and len(df):
            cols = [c[0] for c in TABLE_COLUMNS[table] if c[0] in df.columns]
            if cols and _usable(frames, acc, table, *cols):
                dup = df.duplicated(subset=cols, keep=False).to_numpy()
                if dup.any():
                    acc.add(table, cols[0], "duplicate_rows",
                            f"{table} rows are repeated exactly (every contract column equal), so each would count "
                            f"twice: remove the copies (e.g. df.drop_duplicates()) or, if they are separate "
                            f"records, make them distinguishable in the source.", df=df, rows=_rows(dup))
    # --- admissions before birth
    if _usable(frames, acc, "patients", pid, Col.birth_year) and _usable(frames, acc, "admissions", pid,
                                                                          Col.admit_date):
        born = pd.Series(P[Col.birth_year].to_numpy(), index=P[pid].astype(object)).groupby(level=0).first()
        by = born.reindex(A[pid].astype(object).to_numpy()).to_numpy(dtype="float64", na_value=np.nan)
        admit_year = pd.DatetimeIndex(_ns(A[Col.admit_date])).year.to_numpy(dtype="float64", na_value=np.nan)
        bad = admit_year < by  # NaN compares False
        acc.add("admissions", Col.admit_date, "not_before_birth",
                "admit_date lies before the patient's birth_year (a negative age): correct birth_year or the "
                "admission date in the source rows, or remove the episodes explicitly.", df=A, rows=_rows(bad))
    # --- within events
    if _usable(frames, acc, "events", Col.event_type, Col.result):
        E = frames["events"]
        bad = (E[Col.event_type] == EventType.uds.value).to_numpy() & E[Col.result].isna().to_numpy()
        acc.add("events", Col.result, "uds_has_result",
                "Every uds event needs result positive or negative: fill it from the lab record, or "
                "remove the screens without a result explicitly.", df=E, rows=_rows(bad))

    # --- unknown patients / patients without observation
    if _usable(frames, acc, "patients", pid):
        known = _unique_index(P[pid])
        for table in ("admissions", "sessions", "medications", "events", "observation"):
            if _usable(frames, acc, table, pid):
                ids = frames[table][pid]
                bad = ids.notna().to_numpy() & (_codes_in(ids, known) < 0)
                acc.add(table, pid, "known_patient",
                        f"Every {table} row must belong to a patient of the patients table: add the "
                        "missing patients, or remove these rows explicitly.", df=frames[table], rows=_rows(bad))
        if _usable(frames, acc, "observation", pid):
            rows = _rows(P[pid].notna().to_numpy() & (_codes_in(P[pid], _unique_index(O[pid])) < 0))
            if len(rows):
                acc.add("observation", pid, "observation_for_every_patient",
                        "Every patient needs one observation row (observation_end = last date with complete "
                        "data): add the rows for these patients.", n_failures=len(rows),
                        examples=f"patient_id {_head(P[pid].iloc[rows[:_EXAMPLE_LIMIT + 1]])} "
                                 f"(patients rows {_head(rows[:_EXAMPLE_LIMIT + 1])})")

    # --- dates after observation_end
    obs_end = None  # latest observation_end per patient (duplicates are reported elsewhere)
    if _usable(frames, acc, "observation", pid, Col.observation_end):
        o = pd.DataFrame({pid: O[pid].astype(object), "_end": _ns(O[Col.observation_end])}).dropna()
        obs_end = o.groupby(pid, sort=False)["_end"].max()
    if obs_end is not None:
        obs_values = obs_end.to_numpy(dtype="datetime64[ns]")
        for table, col in (
            ("admissions", Col.admit_date),
            ("admissions", Col.discharge_date),
            ("sessions", Col.session_date),
            ("medications", Col.dispense_date),
            ("events", Col.event_date),
        ):
            if _usable(frames, acc, table, pid, col):
                df = frames[table]
                end = _take(obs_values, _codes_in(df[pid], obs_end.index), _NAT)
                bad = _ns(df[col]) > end  # NaT compares False
                acc.add(table, col, "not_after_observation_end",
                        f"{col} lies after the patient's observation_end: extend observation_end to the last "
                        "date with complete data, or remove rows recorded after it explicitly.",
                        df=df, rows=_rows(bad))

    # --- session episode_ids must exist (also when admissions is empty)
    if _usable(frames, acc, "sessions", eid) and _usable(frames, acc, "admissions", eid):
        bad = S[eid].notna().to_numpy() & (_codes_in(S[eid], _unique_index(A[eid])) < 0)
        acc.add("sessions", eid, "known_episode",
                "A session's episode_id must exist in admissions: correct the id, or leave it empty so "
                "the episode is assigned by date (sessions-only data has no episode_ids).",
                df=S, rows=_rows(bad))

    # --- episodes: overlap, sessions within episodes
    if not _usable(frames, acc, "admissions", eid, pid, Col.admit_date, Col.discharge_date):
        return
    patients_of_eps = _unique_index(A[pid])
    ep = pd.DataFrame({
        eid: A[eid].astype(object).to_numpy(),
        "_pcode": _codes_in(A[pid], patients_of_eps),
        "_start": _ns(A[Col.admit_date]),
        "_dis": _ns(A[Col.discharge_date]),
        "_row": np.arange(len(A)),
    })
    end = ep["_dis"].to_numpy()
    if obs_end is not None:  # an open episode ends at observation_end
        obs_of_ep = _take(obs_end.to_numpy(dtype="datetime64[ns]"), _codes_in(A[pid], obs_end.index), _NAT)
        end = np.where(np.isnat(end), obs_of_ep, end)
    ep["_end"] = np.where(np.isnat(end), _FAR_FUTURE, end)
    ep_ok = ep[(ep["_pcode"] >= 0) & ep["_start"].notna()].sort_values(["_pcode", "_start", "_row"], kind="stable")
    if len(ep_ok):
        # an episode overlaps when it starts on or before the latest discharge of
        # the patient's earlier episodes (an open episode never ends)
        open_end = ep_ok["_dis"].fillna(pd.Timestamp(_FAR_FUTURE))
        prev_end = open_end.groupby(ep_ok["_pcode"], sort=False).cummax().groupby(ep_ok["_pcode"], sort=False).shift(1)
        bad = (ep_ok["_start"] <= prev_end).to_numpy()
        acc.add("admissions", Col.admit_date, "no_overlap",
                "Episodes of one patient must not overlap (admission on or before the previous episode's "
                "discharge, or while an earlier episode is still open): merge the episodes or correct "
                "their dates.", df=A, rows=np.sort(ep_ok["_row"].to_numpy()[bad]))

    if not _usable(frames, acc, "sessions", pid, eid, Col.session_date) or len(A) == 0:
        return  # sessions-only data: episodes are derived later from the gap rule
    tol = np.timedelta64(int(tolerance_days), "D")
    s_date = _ns(S[Col.session_date])
    s_pcode = _codes_in(S[pid], patients_of_eps)
    lookup = ep.drop_duplicates(eid, keep="first").dropna(subset=[eid]).set_index(eid)
    s_ecode = _codes_in(S[eid], lookup.index)
    outside_rows: list[np.ndarray] = []
    # sessions with a known episode_id: same patient, date within that episode
    rows_with = np.flatnonzero(s_ecode >= 0)
    if len(rows_with):
        ec = s_ecode[rows_with]
        mismatch = S[pid].notna().to_numpy()[rows_with] & (lookup["_pcode"].to_numpy()[ec] != s_pcode[rows_with])
        acc.add("sessions", pid, "episode_patient_match",
                "A session's patient_id must be the patient of its episode_id: correct one of the two.",
                df=S, rows=rows_with[mismatch])
        date = s_date[rows_with]
        outside = (date + tol < lookup["_start"].to_numpy()[ec]) | (date - tol > lookup["_end"].to_numpy()[ec])
        outside_rows.append(rows_with[outside & ~mismatch])
    # sessions without episode_id: within some episode of their patient
    rows_wo = np.flatnonzero(S[eid].isna().to_numpy() & S[pid].notna().to_numpy() & ~np.isnat(s_date))
    if len(rows_wo):
        has_ep = s_pcode[rows_wo] >= 0
        outside_rows.append(rows_wo[~has_ep])  # patient without any episode
        rows_wo = rows_wo[has_ep]
    if len(rows_wo) and len(ep_ok):
        left = pd.DataFrame({"_pcode": s_pcode[rows_wo], "_date": s_date[rows_wo], "_srow": rows_wo})
        left = left.sort_values("_date", kind="stable")
        right = pd.DataFrame({"_pcode": ep_ok["_pcode"].to_numpy(), "_start": ep_ok["_start"].to_numpy() - tol,
                              "_end": ep_ok["_end"].to_numpy()}).sort_values("_start", kind="stable")
        m = pd.merge_asof(left, right, left_on="_date", right_on="_start", by="_pcode", direction="backward")
        outside = m["_start"].isna().to_numpy() | (m["_date"].to_numpy() - tol > m["_end"].to_numpy())
        outside_rows.append(m["_srow"].to_numpy()[outside])
    if outside_rows:
        acc.add("sessions", Col.session_date, "within_episode",
                "Every session must fall within an episode of its patient (admit_date to discharge_date, or "
                "observation_end while the episode is open; within its own episode when episode_id is "
                "given): add the missing admission, correct the date or episode_id, or remove the session "
                "explicitly.", df=S, rows=np.sort(np.concatenate(outside_rows)))


# ----------------------------------------------------------------------------
# Coercion of CSV-read strings (and other near-miss dtypes) to canonical dtypes
# ----------------------------------------------------------------------------

_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}


def _present(s: pd.Series) -> np.ndarray:
    """Non-missing and, for text, non-blank values."""
    notna = s.notna().to_numpy(copy=True)
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        codes, uniques = pd.factorize(s)  # few distinct values in practice: test those only
        blank = np.array([isinstance(v, str) and not v.strip() for v in uniques], dtype=bool)
        notna &= ~np.append(blank, False)[codes]  # code -1 (missing) maps to the appended False
    return notna


def _none_for_missing(s: pd.Series) -> pd.Series:
    """Text column in :data:`TEXT_DTYPE`: on pandas 3 ``str`` (missing NaN); before, ``object``
    with every missing value as ``None`` (CSV readers give NaN, Parquet None)."""
    if TEXT_DTYPE is not object:
        return s.astype(TEXT_DTYPE)
    missing = s.isna()
    if not missing.any():
        return s
    return s.where(~missing, None)


def _is_str(s: pd.Series) -> np.ndarray:
    """Boolean array: which values are Python strings."""
    return np.fromiter((isinstance(v, str) for v in s.to_numpy(dtype=object)), dtype=bool, count=len(s))


def _coerce_series(s: pd.Series, kind: str) -> tuple[pd.Series, np.ndarray]:
    """Convert ``s`` to the canonical dtype of ``kind``; return it and the rows that failed."""
    none = np.array([], dtype=np.int64)
    dt = s.dtype
    if kind in ("id", "str", "category"):
        if isinstance(dt, pd.CategoricalDtype) or isinstance(dt, pd.StringDtype):
            s = s.astype(object).where(s.notna(), None)
            dt = s.dtype
        if dt == object:
            if _is_stringlike(s):
                return _none_for_missing(s), none
            def to_text(v: Any) -> Any:
                if isinstance(v, str):
                    return v
                if isinstance(v, (float, np.floating)) and float(v).is_integer():
                    return str(int(v))
                return str(v)
            return _none_for_missing(s.map(to_text, na_action="ignore")), none
        if pd.api.types.is_float_dtype(dt):
            vals = s.dropna()
            if (vals == np.floor(vals)).all():
                return _none_for_missing(s.astype("Int64").astype(object).map(str, na_action="ignore")), none
        if pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt):
            return _none_for_missing(s.astype(object).map(str, na_action="ignore")), none
        return s, none
    present = _present(s)
    if kind == "date":
        if pd.api.types.is_datetime64_dtype(dt):
            return (s if dt == np.dtype("datetime64[ns]") else s.astype("datetime64[ns]")), none
        if dt == object or isinstance(dt, pd.StringDtype):
            out = pd.to_datetime(s.where(present, None), format="%Y-%m-%d", errors="coerce")
            # strptime accepts 2022-1-5 and non-ASCII digits: only zero-padded ASCII YYYY-MM-DD is a date here
            is_text = _is_str(s)
            if is_text.any():
                iso = s.where(is_text, "").astype(str).str.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
                out = out.mask(is_text & ~iso.to_numpy(dtype=bool))
            out = out.astype("datetime64[ns]")  # pandas 3 infers microseconds from text
            return out, np.flatnonzero(present & out.isna().to_numpy())
        return s, none
    if kind in ("int", "float"):
        if pd.api.types.is_bool_dtype(dt):
            return s, none  # reported as a dtype problem
        failed = none
        if dt == object or isinstance(dt, pd.StringDtype):
            text = s.where(present, None)
            # Python's float() reads Unicode digits ('١٢٠') and exponents ('1.2e2'): a count written so is
            # a transcription problem, so only ASCII numerals (and, for floats, exponents) are numbers here
            pattern = r"\s*[+-]?[0-9]+(?:\.0*)?\s*" if kind == "int" else \
                r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*|\s*[+-]?(?:nan|inf|infinity)\s*"
            is_text = _is_str(text)
            ascii_bad = np.zeros(len(text), dtype=bool)
            if is_text.any():
                ok_form = text.where(is_text, "0").astype(str).str.fullmatch(pattern, case=False)
                ascii_bad = is_text & ~ok_form.to_numpy(dtype=bool)
                if ascii_bad.any():
                    text = text.mask(ascii_bad, None)
            try:  # exact Python float parsing; fast path when everything parses
                num = text.astype("float64")
            except (TypeError, ValueError):
                num = pd.to_numeric(text, errors="coerce").astype("float64")
                ok = np.flatnonzero(present & num.notna().to_numpy())
                num.iloc[ok] = text.iloc[ok].astype("float64").to_numpy()  # re-parse the good ones exactly
            if ascii_bad.any():
                num = num.mask(ascii_bad, np.inf)  # flagged as a parse failure below
            s = num
            dt = s.dtype
        elif not pd.api.types.is_numeric_dtype(dt):
            return s, none  # reported as a dtype problem
        vals = s.to_numpy(dtype="float64", na_value=np.nan)
        bad = ~np.isfinite(vals) & present  # unparseable text, 'nan' or 'inf' written as a value
        if kind == "int":
            bad |= np.isfinite(vals) & (vals != np.floor(np.where(np.isfinite(vals), vals, 0)))
        if bad.any():
            failed = np.flatnonzero(bad)
            vals = np.where(bad, np.nan, vals)
        if kind == "float":
            return pd.Series(vals, index=s.index, name=s.name), failed
        if pd.api.types.is_integer_dtype(dt) and not bad.any():
            return (s.astype("int64") if not s.isna().any() else s.astype("Int64")), failed
        out = pd.Series(vals, index=s.index, name=s.name)
        return (out.astype("Int64") if np.isnan(vals).any() else out.astype("int64")), failed
    if kind == "bool":
        if pd.api.types.is_bool_dtype(dt):
            return (s.astype(bool) if not s.isna().any() else s), none
        mapping: dict[Any, Any] = {}
        for value in pd.unique(s[present]):
            key = str(value).strip().lower()
            mapping[value] = _BOOL_TEXT.get(key, pd.NA)
        out = s.where(present, None).map(mapping)
        failed = np.flatnonzero(present & out.isna().to_numpy())
        if out.isna().any():
            return out.astype("boolean"), failed
        return out.astype(bool), failed
    raise UnknownNameError(f"unknown column kind {kind!r}")  # pragma: no cover - TABLE_COLUMNS is fixed


_PARSE_TEXT = {
    "date": "dates written as YYYY-MM-DD (zero-padded, e.g. 2022-01-05)",
    "int": "whole numbers written with the digits 0-9 (no exponent, no other scripts' digits)",
    "float": "numbers written with the digits 0-9",
    "bool": "true/false or 1/0",
}


def _coerce_into(tables: Mapping[str, pd.DataFrame], acc: _Problems) -> dict[str, pd.DataFrame]:
    out: dict[str, pd.DataFrame] = {}
    for table in TABLES + tuple(t for t in OPTIONAL_TABLES if tables.get(t) is not None):
        df = tables.get(table)
        if not isinstance(df, pd.DataFrame):
            out[table] = df
            continue
        new_cols = {}
        for spec in _column_specs(table):
            if spec.name not in df.columns:
                continue
            converted, failed = _coerce_series(df[spec.name], spec.kind)
            new_cols[spec.name] = converted
            if len(failed):
                acc.parse_failures[(table, spec.name)] = failed
                shown = _head(df[spec.name].iloc[failed[: _EXAMPLE_LIMIT + 1]].map(repr))
                acc.add(table, spec.name, f"parse({spec.kind})",
                        f"{spec.name} must hold {_PARSE_TEXT[spec.kind]}; found {shown}. Correct these values "
                        "in the source file (leave the cell empty for a missing value where the column allows it).",
                        df=df, rows=failed)
        if new_cols:
            df = df.assign(**new_cols)
        out[table] = df
    return out


def coerce_tables(tables: Mapping[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Convert contract columns to their canonical dtypes, reporting values that do not parse.

    Dates are parsed with the explicit format ``%Y-%m-%d`` (datetime columns are
    cast to ``datetime64[ns]``); booleans from ``true/false/1/0`` (any case);
    integers and floats from text (floats exactly, via Python's ``float``); ids
    and vocabularies become Python strings (integral floats lose their ``.0``).
    Blank text is treated as missing; missing text values are ``None``. Unparseable values become missing and are
    reported, with their rows, in the returned problems table, never as a
    traceback. Integer and boolean columns that end up with missing values use
    pandas' nullable ``Int64``/``boolean`` so that validation reports them as
    missing rather than as a wrong dtype. Extra columns are left untouched.
    Inputs are not modified.

    Parameters
    ----------
    tables : mapping of str to pandas.DataFrame
        Tables by name (:data:`TABLES`); absent names are skipped.

    Returns
    -------
    tables : dict of str to pandas.DataFrame
        New frames with converted contract columns.
    problems : pandas.DataFrame
        Columns ``table, column, check, n_failures, examples, fix``; check is
        ``parse(<kind>)``. Empty when everything parsed.

    Examples
    --------
    >>> raw = {"observation": pd.DataFrame({"patient_id": ["P1", "P2"],
    ...                                     "observation_end": ["2024-01-31", "31/01/2024"]})}
    >>> tables, problems = coerce_tables(raw)
    >>> tables["observation"]["observation_end"].dtype
    dtype('<M8[ns]')
    >>> problems[["table", "column", "check", "n_failures", "examples"]].to_dict("records")
    [{'table': 'observation', 'column': 'observation_end', 'check': 'parse(date)', 'n_failures': 1, 'examples': 'patient_id P2; rows 1'}]
    """
    acc = _Problems()
    out = _coerce_into(tables, acc)
    return {k: v for k, v in out.items() if k in tables}, acc.frame()


# ----------------------------------------------------------------------------
# Public validation entry points
# ----------------------------------------------------------------------------


def _find_into(tables: Mapping[str, Any], acc: _Problems, tolerance_days: int) -> None:
    frames: dict[str, pd.DataFrame] = {}
    for table in TABLES:
        df = tables.get(table)
        if not isinstance(df, pd.DataFrame):
            acc.add(table, "", "is_dataframe",
                    f"Provide the {table} table as a pandas DataFrame (an empty one from "
                    f"schema.empty_table({table!r}) if there is no data).",
                    n_failures=1, examples=f"got {type(df).__name__}")
            for spec in _column_specs(table):
                acc.bad_columns.add((table, spec.name))
            continue
        dupes = df.columns[df.columns.duplicated()].unique()
        if len(dupes):
            for col in dupes:
                acc.bad_columns.add((table, col))
                acc.add(table, str(col), "unique_column_name",
                        f"The {table} table has {int((df.columns == col).sum())} columns named {col!r}: "
                        "rename or drop the extra ones.", n_failures=len(df), examples="duplicate column")
            df = df.loc[:, ~df.columns.duplicated()]
        frames[table] = _validation_frame(table, df)
        _run_schema(table, frames[table], acc)
    for table in OPTIONAL_TABLES:  # checked only when present
        df = tables.get(table)
        if df is None:
            continue
        if not isinstance(df, pd.DataFrame):
            acc.add(table, "", "is_dataframe",
                    f"Provide the optional {table} table as a pandas DataFrame, or None when the study has none.",
                    n_failures=1, examples=f"got {type(df).__name__}")
            continue
        frames[table] = _validation_frame(table, df.loc[:, ~df.columns.duplicated()])
        _run_schema(table, frames[table], acc)
    _cross_checks(frames, acc, tolerance_days)
    _use_days_checks(frames, acc)


def _use_days_checks(frames: dict[str, pd.DataFrame], acc: _Problems) -> None:
    """Cross-checks of the optional use_days table: known patients, one row per patient, day and substance,
    no drinks on a day marked not used, not after observation_end."""
    U, P, O = frames.get("use_days"), frames.get("patients"), frames.get("observation")
    pid = Col.patient_id
    if U is None:
        return
    if _usable(frames, acc, "patients", pid) and _usable(frames, acc, "use_days", pid):
        bad = U[pid].notna().to_numpy() & (_codes_in(U[pid], _unique_index(P[pid])) < 0)
        acc.add("use_days", pid, "known_patient",
                "Every use_days row must belong to a patient of the patients table: add the missing patients, "
                "or remove these rows explicitly.", df=U, rows=_rows(bad))
    key = [pid, Col.use_date, Col.substance]
    if len(U) and _usable(frames, acc, "use_days", *key):
        dup = U[key].astype(object).duplicated(keep=False).to_numpy()
        acc.add("use_days", Col.use_date, "one_row_per_day",
                "use_days holds one row per patient, day and substance: merge the repeated days (a day is used "
                "if any row says so; drinks are the day's total) or remove the copies.", df=U, rows=_rows(dup))
    if len(U) and _usable(frames, acc, "use_days", Col.used, Col.drinks):
        bad = (U[Col.drinks].fillna(0).to_numpy(dtype=float) > 0) & ~U[Col.used].fillna(True).to_numpy(dtype=bool)
        acc.add("use_days", Col.drinks, "no_drinks_when_not_used",
                "drinks is above 0 on a day marked used = False: correct used to True, or drinks to 0.",
                df=U, rows=_rows(bad))
    if len(U) and _usable(frames, acc, "observation", pid, Col.observation_end) and _usable(
            frames, acc, "use_days", pid, Col.use_date):
        end = O.assign(_p=O[pid].astype(object)).groupby("_p", sort=False)[Col.observation_end].max()
        after = _ns(U[Col.use_date]) > _take(end.to_numpy(dtype="datetime64[ns]"), _codes_in(U[pid], end.index), _NAT)
        acc.add("use_days", Col.use_date, "not_after_observation_end",
                "use_date lies after the patient's observation_end: extend observation_end, or remove the days "
                "recorded after it explicitly.", df=U, rows=_rows(after))


def find_problems(tables: Mapping[str, pd.DataFrame], *, tolerance_days: int = 0) -> pd.DataFrame:
    """Every data-contract problem of the six tables, at once.

    Column checks (pandera schemas from :func:`table_schema`): required
    columns present, dtype, missing values, uniqueness, vocabulary, ranges,
    whole-day dates. Cross-column and cross-table checks (vectorised pandas):
    ``discharge_reason`` given exactly when ``discharge_date`` is; discharge
    not before admission; uds events have a result; every patient_id of
    admissions/sessions/medications/events/observation exists in patients;
    every patient has an observation row; admission, discharge, session,
    dispensing and event dates not after the patient's ``observation_end``;
    episodes of one patient do not overlap (an admission on or before the
    latest earlier discharge, or during an open episode); session episode_ids
    exist in admissions and belong to the same patient; every session lies
    within an episode of its patient (its own episode when ``episode_id`` is
    given), from ``admit_date`` to ``discharge_date`` or, while open, to
    ``observation_end``. When admissions is empty (sessions-only data whose
    episodes are derived later with the gap rule) session dates are not
    checked against episodes, and sessions must not carry episode_ids. Checks on a column that is absent or of the wrong dtype
    are skipped (that problem is reported instead).

    Parameters
    ----------
    tables : mapping of str to pandas.DataFrame
        The six tables by name (:data:`TABLES`).
    tolerance_days : int, default 0
        Days a session may lie before admission or after discharge and still
        count as within the episode.

    Returns
    -------
    pandas.DataFrame
        One row per problem: ``table, column, check, n_failures`` (rows
        affected), ``examples`` (up to five ids of :data:`ROW_KEY` and 0-based
        row positions; CSV line = row + 2), ``fix``. Empty when valid.

    See Also
    --------
    validate_tables : raise instead of returning the problems.
    iop_research.data.io.IOPData.validate : the same on an IOPData.

    References
    ----------
    .. [1] pandera: statistical data validation for pandas, lazy validation
       (``DataFrameSchema.validate(lazy=True)``), https://pandera.readthedocs.io
    .. [2] The data contract, ``data/README.md`` in the source tree.

    Examples
    --------
    >>> tables = {name: empty_table(name) for name in TABLES}
    >>> find_problems(tables).empty
    True
    >>> tables["patients"] = pd.DataFrame({"patient_id": ["P1", "P1"], "birth_year": [1980, 1850],
    ...                                    "sex": ["female", "male"], "race": [None, None],
    ...                                    "ethnicity": [None, None]})
    >>> find_problems(tables)[["table", "column", "check", "examples"]].to_dict("records")[:2]
    [{'table': 'patients', 'column': 'patient_id', 'check': 'unique', 'examples': 'patient_id P1; rows 0, 1'}, {'table': 'patients', 'column': 'birth_year', 'check': 'range(between 1900 and 2020)', 'examples': 'patient_id P1; rows 1'}]
    """
    acc = _Problems()
    _find_into(tables, acc, tolerance_days)
    return acc.frame()


def _error(problems: pd.DataFrame) -> DataValidationError:
    tables = sorted(set(problems["table"]), key=(TABLES + OPTIONAL_TABLES).index)
    lines = [
        f"{len(problems)} data-contract problem(s) in table(s) {', '.join(tables)}; all are listed "
        "below (rows are 0-based positions in each table; in a CSV file, line = row + 2):"
    ]
    for p in problems.itertuples(index=False):
        where = f"{p.table}.{p.column}" if p.column else p.table
        lines.append(f"- {where} [{p.check}]: {p.n_failures:,} row(s) ({p.examples}). Fix: {p.fix}")
    lines.append("See data/README.md for the data contract.")
    return DataValidationError("\n".join(lines), problems=problems)


def validate_tables(tables: Mapping[str, pd.DataFrame], *, tolerance_days: int = 0) -> None:
    """Raise one :class:`DataValidationError` listing every problem of :func:`find_problems`.

    Parameters
    ----------
    tables : mapping of str to pandas.DataFrame
        The six tables by name.
    tolerance_days : int, default 0
        See :func:`find_problems`.

    Raises
    ------
    DataValidationError
        When any problem is found; ``.problems`` holds the problems table.

    Examples
    --------
    >>> tables = {name: empty_table(name) for name in TABLES}
    >>> tables["observation"] = pd.DataFrame({"patient_id": ["P9"],
    ...                                       "observation_end": pd.to_datetime(["2024-01-31"])})
    >>> try:
    ...     validate_tables(tables)
    ... except DataValidationError as err:
    ...     print(err.problems[["table", "column", "check", "examples"]].to_string(index=False))
    ... # doctest: +NORMALIZE_WHITESPACE
          table     column         check              examples
    observation patient_id known_patient patient_id P9; rows 0
    """
    problems = find_problems(tables, tolerance_days=tolerance_days)
    if len(problems):
        raise _error(problems)
