"""The study file: one TOML file that *is* the study.

``iop-research report --params study.toml`` runs the study report templates
(``iop_research/reports/templates``) with the settings of this file. Every
key is either honoured by the templates that use it or refused: an unknown
section or key, a value of the wrong type or outside its allowed values is an
error that names the key and what is allowed. The settings applied (the
file's values over the documented defaults) are written to ``provenance.json``
and, per report, only the settings that report used are shown.

Example (``study.toml``)::

    [data]
    path = "/secure/site_extract"    # directory of contract tables (or: mapping = "mapping.toml",
                                     # or: omop = "postgresql://analyst@cdm-host/cdm" with
                                     # cdm_schema = "cdm" and concept_sets = "iop_concepts.json")

    [cohort]
    primary_substances = ["opioids", "alcohol"]
    min_age = 18
    admit_from = "2019-01-01"

    [outcome]
    sources = ["uds", "self_report_use", "overdose", "readmission"]
    blanking_days = 7
    max_followup_days = 365

    [comparison]
    exposure = "modality_any"        # modality_any | modality_dose | modality_mix
    modality = "family"
    window_days = 30
    design = "landmark"              # landmark | time_varying

    [covariates]
    adjust = ["age", "sex", "primary_substance", "severity_score", "housing"]

    [missing]
    policy = "complete_case"         # complete_case | indicator | multiple_imputation
    m = 20
    seed = 20261207

    [horizons]
    days = [90, 180, 365]

    [landmarks]
    days = [30, 60]

    [mat]
    design = "ccw"                   # landmark | ccw (adds an emulated target trial of starting MAT)
    grace_days = 30
    horizon_days = 180
    [screens]                        # weekly urine screens (question "screens")
    missed_rule = "positive"         # positive | missing | impute (with m, seed)
    model = "gee"                    # gee (with corstr) | glmm
    exposure = "mat"                 # mat | modality | none

    [programmes]                     # programmes compared fairly (question "programmes")
    outcome = "completion"           # completion | retention_90
    min_programmes = 3

    [privacy]
    min_cell_count = 11

    [report]
    questions = ["cohort", "relapse", "modalities", "screens", "programmes"]
    title = "Family therapy and relapse after IOP"
    formats = ["html", "csv", "docx"]

:data:`STUDY_KEYS` lists every key with its type, default, meaning and the
questions (report templates) that use it.
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from iop_research.exceptions import DataReadError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "read_study_config", "load_study", "StudyConfig", "StudyKey", "STUDY_KEYS", "QUESTIONS", "MODALITIES",
    "INTAKE_COVARIATES", "settings_used_by", "study_file_template",
]

#: The questions of a study, in report order, with the template that answers each.
QUESTIONS: dict[str, str] = {
    "cohort": "01_cohort",
    "retention": "02_retention",
    "relapse": "03_relapse",
    "modalities": "04_modalities",
    "mat": "05_mat",
    "recurrence": "06_recurrence",
    "screens": "07_screens",
    "programmes": "08_programmes",
}

#: Therapy modalities of the data contract (``sessions.modality``).
MODALITIES = ("individual", "group", "family", "education", "holistic")

#: Intake covariates a study may adjust for (columns of ``survival_frame``).
INTAKE_COVARIATES = (
    "program", "age", "sex", "referral_source", "primary_substance", "psychiatric_comorbidity",
    "prior_treatment_episodes", "severity_score", "housing", "employment", "admit_year",
)

_RELAPSE_SOURCES = ("uds", "self_report_use", "overdose", "ed_visit", "readmission")
_ALL_OUTCOME_Q = ("relapse", "modalities", "mat", "recurrence")
_MODEL_Q = ("retention", "relapse", "modalities", "mat", "recurrence", "screens")
_ALL_Q = tuple(QUESTIONS)


@dataclass(frozen=True)
class StudyKey:
    """One key of the study file.

    Attributes
    ----------
    kind : str
        ``"int"``, ``"number"``, ``"str"``, ``"bool"``, ``"date"``, ``"list[str]"`` or ``"list[int]"``.
    default : object
        Value applied when the file does not set the key (``None``: criterion not applied).
    help : str
        What the key does (written into ``init-study`` files and error messages).
    used_by : tuple of str
        Questions whose reports change with the key.
    choices : tuple, optional
        Allowed values (for lists: allowed elements).
    minimum : float, optional
        Smallest allowed value (for lists of ints: of each element).
    """

    kind: str
    default: Any
    help: str
    used_by: tuple[str, ...]
    choices: tuple | None = None
    minimum: float | None = None


#: Every section and key of the study file.
STUDY_KEYS: dict[str, dict[str, StudyKey]] = {
    "data": {
        "path": StudyKey("str", None, "directory (or file) of contract tables, relative to the study file; "
                         "omit for the bundled demo cohort", _ALL_Q),
        "mapping": StudyKey("str", None, "mapping file (TOML) that turns a clinic's extract into contract tables "
                            "(see iop-research map); instead of path", _ALL_Q),
        "omop": StudyKey("str", None, "URL of an OMOP CDM database read with iop_research.datasets.read_omop "
                         "(postgresql://user@host:port/db, or duckdb:///file.duckdb relative to the study file); "
                         "no password in the URL (use PGPASSWORD or ~/.pgpass); episodes come from sessions "
                         "(gap rule, 30 days); instead of path", _ALL_Q),
        "cdm_schema": StudyKey("str", None, "schema of the CDM tables (with omop; default: the database's search "
                               "path)", _ALL_Q),
        "concept_sets": StudyKey("str", None, "JSON concept-set file (OHDSI ATLAS export; roles as in "
                                 "iop_research.datasets.OMOP_ROLES) overriding the shipped defaults, relative to "
                                 "the study file (with omop)", _ALL_Q),
    },
    "cohort": {
        "min_age": StudyKey("number", None, "youngest age at admission included (years)", _ALL_Q, minimum=0),
        "max_age": StudyKey("number", None, "oldest age at admission included (years)", _ALL_Q, minimum=0),
        "primary_substances": StudyKey("list[str]", None, "primary substances included (None: all)", _ALL_Q),
        "programs": StudyKey("list[str]", None, "programmes (sites) included (None: all)", _ALL_Q),
        "admit_from": StudyKey("date", None, "first admission date included (YYYY-MM-DD)", _ALL_Q),
        "admit_to": StudyKey("date", None, "last admission date included (YYYY-MM-DD)", _ALL_Q),
        "first_episode_only": StudyKey("bool", False, "keep only each patient's first eligible episode", _ALL_Q),
        "min_followup_days": StudyKey("int", None, "minimum potential follow-up from admission (days)", _ALL_Q,
                                      minimum=0),
    },
    "outcome": {
        "sources": StudyKey("list[str]", ["uds", "self_report_use", "overdose", "readmission"],
                            "event types that count as relapse (uds only when positive)", _ALL_OUTCOME_Q,
                            choices=_RELAPSE_SOURCES),
        "blanking_days": StudyKey("int", 7, "events on days 0..blanking_days after admission are not relapses",
                                  _ALL_OUTCOME_Q, minimum=0),
        "max_followup_days": StudyKey("int", None, "administrative censoring this many days after the origin",
                                      _ALL_OUTCOME_Q, minimum=1),
    },
    "comparison": {
        "exposure": StudyKey("str", "modality_any",
                             "modality_any: any attended session of `modality` in the first window_days; "
                             "modality_dose: attended sessions of `modality` per week; "
                             "modality_mix: the combination of modalities attended in the first window_days",
                             ("modalities",), choices=("modality_any", "modality_dose", "modality_mix")),
        "modality": StudyKey("str", "family", "therapy modality compared (modality_any, modality_dose; screens: "
                             "[screens] exposure = \"modality\")", ("modalities", "screens"), choices=MODALITIES),
        "window_days": StudyKey("int", 30, "exposure window [0, window_days) after admission; also the landmark day "
                                "of the landmark design; screens: the window of [screens] exposure = \"modality\"",
                                ("modalities", "screens"), minimum=1),
        "design": StudyKey("str", None, "landmark (exposure fixed at day window_days, follow-up from then among those "
                           "still at risk) or time_varying (counting-process Cox); default: landmark, "
                           "time_varying for modality_dose", ("modalities",), choices=("landmark", "time_varying")),
        "reference": StudyKey("str", None, "reference group (modality_mix: a combination such as "
                              "\"group+individual\"; modality_any: \"none\" or \"any\"); default: the largest group "
                              "(modality_mix) or \"none\"", ("modalities",)),
        "groups": StudyKey("list[str]", None, "modality_mix: combinations kept as their own group (others pooled as "
                           "\"other combination\"); default: every combination with at least min_cell_count "
                           "episodes", ("modalities",)),
    },
    "covariates": {
        "adjust": StudyKey("list[str]", None, "intake covariates adjusted for in every model (default: all available: "
                           + ", ".join(INTAKE_COVARIATES[:-1]) + "); programmes: the case-mix model, without "
                           "the programme itself", _MODEL_Q + ("cohort", "programmes"),
                           choices=INTAKE_COVARIATES),
    },
    "missing": {
        "policy": StudyKey("str", "complete_case", "missing covariates: complete_case (drop, with an attrition row), "
                           "indicator (missing-indicator category) or multiple_imputation (chained equations, "
                           "Rubin's rules; not for the programmes question)", _MODEL_Q + ("programmes",),
                           choices=("complete_case", "indicator", "multiple_imputation")),
        "m": StudyKey("int", 20, "number of imputations (multiple_imputation)", _MODEL_Q, minimum=2),
        "seed": StudyKey("int", 20261207, "random seed of the imputations (multiple_imputation)", _MODEL_Q, minimum=0),
    },
    "horizons": {
        "days": StudyKey("list[int]", [90, 180, 365], "times (days) at which survival, cumulative incidence and "
                         "restricted mean survival are reported", ("retention", "relapse", "recurrence"), minimum=1),
    },
    "landmarks": {
        "days": StudyKey("list[int]", [30], "landmark days of the MAT landmark analysis (MAT started by day L)",
                         ("mat",), minimum=1),
    },
    "mat": {
        "design": StudyKey("str", "landmark", "landmark: the MAT report shows the time-varying and landmark analyses; "
                           "ccw: it also emulates a target trial of starting MAT within grace_days of admission versus "
                           "not, by clone-censor-weight (each patient's first eligible episode)", ("mat",),
                           choices=("landmark", "ccw")),
        "grace_days": StudyKey("int", 30, "ccw: grace period G (days): the strategy 'start MAT' allows a start on days "
                               "0..G after admission, 'no MAT' forbids it", ("mat",), minimum=0),
        "horizon_days": StudyKey("int", 180, "ccw: day (after admission) at which the risks of relapse are compared; "
                                 "later than grace_days", ("mat",), minimum=1),
        "n_bootstrap": StudyKey("int", 200, "ccw: bootstrap replicates of the confidence intervals (patients "
                                "resampled, everything refitted)", ("mat",), minimum=10),
        "seed": StudyKey("int", 20261207, "ccw: random seed of the bootstrap", ("mat",), minimum=0),
    },
    "screens": {
        "weeks": StudyKey("int", 12, "weeks of the urine-screen series from admission (week k: days 7k to 7k+6)",
                          ("screens",), minimum=2),
        "missed_rule": StudyKey("str", "positive", "a scheduled week without a screen (missed): positive (the usual "
                                "trial rule), missing (left out), or impute (multiple imputation of the missed weeks, "
                                "pooled with Rubin's rules)", ("screens",), choices=("positive", "missing", "impute")),
        "m": StudyKey("int", 20, "imputations of the missed weeks (missed_rule = \"impute\")", ("screens",), minimum=2),
        "seed": StudyKey("int", 20261207, "random seed of the imputations of missed weeks (missed_rule = \"impute\")",
                         ("screens",), minimum=0),
        "model": StudyKey("str", "gee", "model of weekly positivity: gee (population-average odds ratios, robust "
                          "SEs; geepack::geeglm) or glmm (episode random intercept, subject-specific odds ratios; "
                          "lme4::glmer)", ("screens",), choices=("gee", "glmm")),
        "corstr": StudyKey("str", "exchangeable", "working correlation of the GEE within an episode (model = \"gee\")",
                           ("screens",), choices=("exchangeable", "ar1", "independence")),
        "exposure": StudyKey("str", "mat", "group compared: mat (the episode overlaps a MAT era), modality (any "
                             "attended [comparison] modality session on days 0 to window_days - 1; only the weeks "
                             "from day window_days on are modelled) or none (time and covariates only)",
                             ("screens",), choices=("mat", "modality", "none")),
        "last_weeks": StudyKey("int", 4, "abstinence endpoint: every one of the last this many weeks of the series "
                               "negative", ("screens",), minimum=1),
    },
    "programmes": {
        "outcome": StudyKey("str", "completion", "outcome compared between programmes: completion (discharged as "
                            "completed, among episodes with a discharge) or retention_90 (still in treatment 90 days "
                            "after admission, among episodes with 90 days of follow-up or an earlier discharge)",
                            ("programmes",), choices=("completion", "retention_90")),
        "min_programmes": StudyKey("int", 3, "fewest programmes for a comparison (fewer: the report says so and "
                                   "fits nothing)", ("programmes",), minimum=2),
        "nagq": StudyKey("int", 1, "quadrature nodes of the random-intercept model (1: Laplace, as glmer's default; "
                         "up to 25: adaptive Gauss-Hermite)", ("programmes",), minimum=1),
    },
    "privacy": {
        "min_cell_count": StudyKey("int", 11, "counts below this are suppressed (primary and secondary)", _ALL_Q,
                                   minimum=1),
        "min_cell_count_override": StudyKey("str", None, "required reason when min_cell_count is below 5 "
                                            "(e.g. a data-use agreement clause)", _ALL_Q),
    },
    "report": {
        "questions": StudyKey("list[str]", None, "questions to answer (default: every question the data allow)",
                              _ALL_Q, choices=_ALL_Q),
        "title": StudyKey("str", None, "study title shown on every report and the index", _ALL_Q),
        "formats": StudyKey("list[str]", ["html", "csv", "docx"], "outputs besides HTML: csv (every table under "
                            "tables/), docx (Table 1 and model tables)", _ALL_Q, choices=("html", "csv", "docx")),
    },
}

_EXAMPLE = {"int": "30, without quotes", "number": "18 or 17.5", "str": '"text" in quotes',
            "bool": "true or false", "date": '"2021-01-31" (or a TOML date 2021-01-31)',
            "list[str]": '["a", "b"]', "list[int]": "[90, 180]"}


def settings_used_by(question: str) -> list[str]:
    """``section.key`` of every study-file key that changes the report of ``question``."""
    if question not in QUESTIONS:
        raise DataReadError(f"Unknown question {question!r}; the questions are {', '.join(QUESTIONS)}.")
    return [f"{s}.{k}" for s, keys in STUDY_KEYS.items() for k, spec in keys.items() if question in spec.used_by]


@dataclass(frozen=True)
class StudyConfig:
    """A validated study file.

    Attributes
    ----------
    settings : dict
        ``{section: {key: value}}`` for every key of :data:`STUDY_KEYS`: the
        file's value, else the default. Paths are absolute.
    given : frozenset of str
        ``"section.key"`` of the keys the file set.
    source : str or None
        The study file.
    """

    settings: Mapping[str, Mapping[str, Any]]
    given: frozenset = field(default_factory=frozenset)
    source: str | None = None

    def get(self, dotted: str) -> Any:
        """The applied value of ``"section.key"``."""
        section, key = dotted.split(".", 1)
        return self.settings[section][key]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (JSON- and papermill-friendly; dates as ISO strings)."""
        return {s: {k: (v.isoformat() if isinstance(v, _dt.date) else (list(v) if isinstance(v, (list, tuple)) else v))
                    for k, v in keys.items()} for s, keys in self.settings.items()}

    def given_dict(self) -> dict[str, dict[str, Any]]:
        """Only the keys the study file set, as :meth:`to_dict` (what the templates receive as ``study``)."""
        full = self.to_dict()
        out: dict[str, dict[str, Any]] = {}
        for dotted in sorted(self.given):
            section, key = dotted.split(".", 1)
            out.setdefault(section, {})[key] = full[section][key]
        return out

    def applied(self, question: str | None = None) -> dict[str, Any]:
        """``{"section.key": value}`` applied (for one question: the keys that act on its report)."""
        flat = {f"{s}.{k}": v for s, keys in self.to_dict().items() for k, v in keys.items()}
        if question is None:
            return flat
        return {k: flat[k] for k in settings_used_by(question)}


def _check_value(section: str, key: str, spec: StudyKey, value: Any) -> tuple[Any, str | None]:
    """(normalised value, problem or None)."""
    where = f"[{section}] {key} = {value!r}"
    kind = spec.kind
    bad_type = f"{where} should be of type {kind}; write e.g. {_EXAMPLE[kind]}"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, bad_type
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, bad_type
    elif kind == "str":
        if not isinstance(value, str) or not value.strip():
            return None, bad_type
    elif kind == "bool":
        if not isinstance(value, bool):
            return None, bad_type
    elif kind == "date":
        if isinstance(value, _dt.datetime):
            value = value.date()
        elif isinstance(value, str):
            try:
                value = _dt.date.fromisoformat(value)
            except ValueError:
                return None, f"{where} is not a date; write it as YYYY-MM-DD, e.g. \"2021-01-31\""
        elif not isinstance(value, _dt.date):
            return None, bad_type
    elif kind in ("list[str]", "list[int]"):
        elem = str if kind == "list[str]" else int
        if (not isinstance(value, list) or not value
                or any(isinstance(v, bool) or not isinstance(v, elem) for v in value)):
            return None, f"{where} should be a non-empty {kind}; write e.g. {_EXAMPLE[kind]}"
        if len(set(value)) != len(value):
            return None, f"{where} repeats a value; list each once"
        if spec.choices is not None:
            bad = [v for v in value if v not in spec.choices]
            if bad:
                return None, f"{where}: {bad} not allowed (allowed: {', '.join(map(str, spec.choices))})"
        if spec.minimum is not None and any(v < spec.minimum for v in value):
            return None, f"{where}: every value must be at least {spec.minimum:g}"
        if kind == "list[int]":
            value = sorted(value)
        return list(value), None
    if spec.choices is not None and value not in spec.choices:
        return None, f"{where} is not allowed (allowed: {', '.join(map(str, spec.choices))})"
    if spec.minimum is not None and value < spec.minimum:
        return None, f"{where} must be at least {spec.minimum:g}"
    return value, None


def _cross_checks(s: dict[str, dict[str, Any]], given: frozenset | set = frozenset()) -> list[str]:
    problems = []
    d = s["data"]
    sources = [k for k in ("path", "mapping", "omop") if d[k] is not None]
    if len(sources) > 1:
        problems.append(f"[data] sets {'both ' if len(sources) == 2 else ''}{' and '.join(sources)}; give one: path for contract tables, mapping for an "
                        "extract, omop for an OMOP CDM database")
    for key in ("cdm_schema", "concept_sets"):
        if d[key] is not None and d["omop"] is None:
            problems.append(f"[data] {key} applies only to an OMOP CDM; add omop = \"<database URL>\" or remove it")
    if d["omop"] is not None:
        problems += _omop_url_problems(d["omop"])
    c = s["cohort"]
    if c["min_age"] is not None and c["max_age"] is not None and c["min_age"] > c["max_age"]:
        problems.append(f"[cohort] min_age = {c['min_age']} is above max_age = {c['max_age']}")
    if c["admit_from"] is not None and c["admit_to"] is not None and c["admit_from"] > c["admit_to"]:
        problems.append(f"[cohort] admit_from = {c['admit_from']} is after admit_to = {c['admit_to']}")
    cmp_ = s["comparison"]
    if cmp_["exposure"] == "modality_mix" and cmp_["design"] == "time_varying":
        problems.append("[comparison] design = \"time_varying\" does not apply to exposure = \"modality_mix\" (a "
                        "combination is known only at the end of the window); use design = \"landmark\"")
    if cmp_["groups"] is not None and cmp_["exposure"] != "modality_mix":
        problems.append("[comparison] groups applies only to exposure = \"modality_mix\"; remove it")
    if cmp_["reference"] is not None:
        if cmp_["exposure"] == "modality_dose":
            problems.append("[comparison] reference does not apply to exposure = \"modality_dose\" (a dose per week "
                            "has no reference group); remove it")
        elif cmp_["exposure"] == "modality_any" and cmp_["reference"] not in ("none", "any"):
            problems.append(f"[comparison] reference = {cmp_['reference']!r}: with modality_any the groups are "
                            "\"none\" and \"any\"")
    if cmp_["design"] is None:
        cmp_["design"] = "time_varying" if cmp_["exposure"] == "modality_dose" else "landmark"
    m = s["mat"]
    if m["design"] != "ccw":
        extra = [k for k in ("grace_days", "horizon_days", "n_bootstrap", "seed") if f"mat.{k}" in given]
        if extra:
            problems.append(f"[mat] {', '.join(extra)} appl{'ies' if len(extra) == 1 else 'y'} only to design = "
                            "\"ccw\"; add design = \"ccw\" or remove them")
    else:
        if m["horizon_days"] <= m["grace_days"]:
            problems.append(f"[mat] horizon_days = {m['horizon_days']} must be later than grace_days = "
                            f"{m['grace_days']} (the strategies differ only after the grace period)")
        mf = s["outcome"]["max_followup_days"]
        if mf is not None and m["horizon_days"] > mf:
            problems.append(f"[mat] horizon_days = {m['horizon_days']} is after [outcome] max_followup_days = {mf}; "
                            "nobody is followed that long. Use a horizon within the follow-up")
        if s["missing"]["policy"] == "multiple_imputation":
            problems.append("[mat] design = \"ccw\" handles missing covariates by complete case or a missing "
                            "indicator, not by multiple imputation (the bootstrap would have to be repeated per "
                            "imputation); set [missing] policy = \"complete_case\" or \"indicator\", or use "
                            "design = \"landmark\"")
    p = s["privacy"]
    if p["min_cell_count"] < 5 and p["min_cell_count_override"] is None:
        problems.append(f"[privacy] min_cell_count = {p['min_cell_count']} is below 5; small counts of "
                        "substance-use records identify people. Use 5 or more, or add min_cell_count_override = "
                        "\"<the reason, e.g. the data-use agreement clause>\"")
    if p["min_cell_count_override"] is not None and p["min_cell_count"] >= 5:
        problems.append("[privacy] min_cell_count_override is set but min_cell_count is 5 or more; remove the override")
    if "html" not in s["report"]["formats"]:
        problems.append("[report] formats must include \"html\" (the reports themselves)")
    return problems


def _screens_programmes_checks(s: dict[str, dict[str, Any]], given: set) -> list[str]:
    """Settings of [screens] and [programmes] that cannot act together."""
    problems = []
    sc = s["screens"]
    if sc["missed_rule"] != "impute":
        for key in ("m", "seed"):
            if f"screens.{key}" in given:
                problems.append(f"[screens] {key} applies only to missed_rule = \"impute\"; remove it or set "
                                "missed_rule = \"impute\"")
    if sc["model"] == "glmm" and "screens.corstr" in given:
        problems.append("[screens] corstr is the GEE's working correlation; it does not apply to model = \"glmm\" "
                        "(remove it)")
    if sc["missed_rule"] == "impute" and s["missing"]["policy"] == "multiple_imputation":
        problems.append("[screens] missed_rule = \"impute\" with [missing] policy = \"multiple_imputation\" would "
                        "nest two imputations, which this report does not pool; use policy = \"complete_case\" or "
                        "\"indicator\" for the covariates, or another missed_rule")
    if s["programmes"]["nagq"] > 25:
        problems.append(f"[programmes] nagq = {s['programmes']['nagq']} must be at most 25")
    wanted = s["report"]["questions"]
    if wanted is not None and "programmes" in wanted and s["missing"]["policy"] == "multiple_imputation":
        problems.append("[report] questions includes \"programmes\", whose case-mix model does not support "
                        "[missing] policy = \"multiple_imputation\"; use \"complete_case\" or \"indicator\", or "
                        "leave programmes out")
    return problems


def _omop_url_problems(url: str) -> list[str]:
    """What is wrong with an ``[data] omop`` URL (a password, no scheme)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.scheme or "://" not in url:
        return [f"[data] omop = {url!r} is not a database URL; write e.g. \"postgresql://analyst@host:5432/cdm\" "
                "or \"duckdb:///cdm.duckdb\""]
    try:
        password = parts.password
    except ValueError:  # a malformed port: left to the connection to report
        password = None
    if password:
        return ["[data] omop holds a password, and the study file's settings are written to provenance.json; "
                "remove it from the URL and give it to PostgreSQL through PGPASSWORD or ~/.pgpass"]
    return []


def _omop_location(url: str, base: Path | None = None) -> str:
    """``[data] omop`` with a relative DuckDB file made absolute against ``base`` (the study file's folder).

    ``duckdb:///cdm.duckdb`` names ``cdm.duckdb`` beside the study file; ``duckdb:////abs/cdm.duckdb``
    an absolute path. Other URLs are returned unchanged.
    """
    prefix = "duckdb:///"
    if not url.startswith(prefix) or url == "duckdb://" or url.startswith("duckdb:///:memory:"):
        return url
    path = Path(url[len(prefix):]).expanduser()
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    return prefix + str(path.resolve())


def load_study(path: str | os.PathLike | None = None, *, settings: Mapping[str, Mapping[str, Any]] | None = None
               ) -> StudyConfig:
    """Read and validate a study file (or a nested dict of the same shape).

    Parameters
    ----------
    path : path-like, optional
        TOML study file (see the module docstring). Relative ``[data]`` paths are
        taken relative to its folder.
    settings : mapping, optional
        ``{section: {key: value}}`` instead of a file (e.g. the ``study``
        parameter of a report template). ``None`` and no path: every default.

    Returns
    -------
    StudyConfig

    Raises
    ------
    DataReadError
        Missing or unparseable file; unknown sections or keys (listing the allowed
        ones); values of the wrong type or outside their allowed values; settings
        that contradict each other. Every problem is listed at once.

    Examples
    --------
    >>> cfg = load_study(settings={"outcome": {"max_followup_days": 365}})
    >>> cfg.get("outcome.max_followup_days"), cfg.get("outcome.blanking_days"), sorted(cfg.given)
    (365, 7, ['outcome.max_followup_days'])
    """
    base = None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise DataReadError(f"Study file {p} does not exist. Pass the path of a TOML file "
                                "(iop-research init-study DIR writes one to start from).")
        try:
            with open(p, "rb") as fh:
                raw = tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DataReadError(f"Study file {p} is not valid TOML: {exc}. Fix the syntax at that line.") from exc
        where, base = str(p), p.resolve().parent
    else:
        raw, where = dict(settings or {}), "study settings"
    resolved: dict[str, dict[str, Any]] = {s: {k: (list(spec.default) if isinstance(spec.default, list) else spec.default)
                                               for k, spec in keys.items()} for s, keys in STUDY_KEYS.items()}
    given, problems = set(), []
    for section, values in raw.items():
        if section not in STUDY_KEYS:
            problems.append(f"unknown section [{section}] (allowed: {', '.join(STUDY_KEYS)}); "
                            "rename it to one of these or remove it")
            continue
        if not isinstance(values, Mapping):
            problems.append(f"[{section}] must be a table of keys; write it as a [{section}] header followed by "
                            "key = value lines")
            continue
        for key, value in values.items():
            spec = STUDY_KEYS[section].get(key)
            if spec is None:
                problems.append(f"unknown key {key!r} in [{section}] (allowed: {', '.join(STUDY_KEYS[section])}); "
                                "correct its spelling or remove it")
                continue
            if value is None:  # only from a dict (TOML has no null): the default
                continue
            norm, problem = _check_value(section, key, spec, value)
            if problem:
                problems.append(problem)
            else:
                resolved[section][key] = norm
                given.add(f"{section}.{key}")
    if not problems:
        problems = _cross_checks(resolved, given) + _screens_programmes_checks(resolved, given)
    if problems:
        raise DataReadError(f"Study file {where} has {len(problems)} problem(s):\n- " + "\n- ".join(problems))
    omop = resolved["data"]["omop"]
    if omop is not None:
        resolved["data"]["omop"] = _omop_location(omop, base)
        if omop.startswith("duckdb:///") and not Path(resolved["data"]["omop"][len("duckdb:///"):]).exists() \
                and not omop.startswith("duckdb:///:memory:"):
            raise DataReadError(f"Study file {where}: [data] omop = {omop!r}: no DuckDB file at "
                                f"{resolved['data']['omop'][len('duckdb:///'):]}. Give a path relative to the study "
                                "file (duckdb:///cdm.duckdb) or an absolute one (duckdb:////data/cdm.duckdb).")
    for key in ("path", "mapping", "concept_sets"):
        value = resolved["data"][key]
        if value is not None:
            dp = Path(value).expanduser()
            if not dp.is_absolute():
                dp = (base if base is not None else Path.cwd()) / dp
            if not dp.exists():
                raise DataReadError(f"Study file {where}: [data] {key} = {value!r} does not exist ({dp}). "
                                    "Give a path relative to the study file or an absolute path.")
            resolved["data"][key] = str(dp.resolve())
    return StudyConfig(settings=resolved, given=frozenset(given), source=None if path is None else str(Path(path)))


def read_study_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a study file into the parameters of the study report templates.

    Parameters
    ----------
    path : path-like
        TOML study file (see the module docstring).

    Returns
    -------
    dict
        ``{"data_path": <[data] path or None>, "study": <StudyConfig.given_dict()>}``
        (the keys the file set; paths made absolute).
        :func:`iop_research.reports.build.build_reports` runs the study report
        templates when its ``parameters`` hold ``"study"``.

    Raises
    ------
    DataReadError
        As :func:`load_study`.
    """
    cfg = load_study(path)
    return {"data_path": cfg.get("data.path"), "study": cfg.given_dict()}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


_PLACEHOLDER = {"data.path": "data", "data.mapping": "mapping.toml",
                "data.omop": "postgresql://analyst@cdm-host:5432/cdm", "data.cdm_schema": "cdm",
                "data.concept_sets": "iop_concepts.json", "cohort.min_age": 18, "cohort.max_age": 89,
                "cohort.primary_substances": ["opioids"], "cohort.programs": ["Site A"],
                "cohort.admit_from": "2019-01-01", "cohort.admit_to": "2022-12-31", "cohort.min_followup_days": 90,
                "outcome.max_followup_days": 365, "comparison.design": "landmark", "comparison.reference": "none",
                "comparison.groups": ["group", "group+individual"], "covariates.adjust": ["age", "sex", "program"],
                "privacy.min_cell_count_override": "data-use agreement clause 4.2",
                "report.questions": list(QUESTIONS), "report.title": "My IOP study"}


def study_file_template() -> str:
    """A commented ``study.toml`` with every key of :data:`STUDY_KEYS`, all commented out.

    Uncomment and edit the keys the study needs; the file as written parses
    (every default applies) with :func:`read_study_config`.
    """
    lines = ["# iop-research study file: every key is optional; a commented key keeps the default shown.",
             "# Unknown keys are an error. Run: iop-research report --params study.toml --out reports", ""]
    for section, keys in STUDY_KEYS.items():
        lines.append(f"[{section}]")
        for key, spec in keys.items():
            used = ", ".join(spec.used_by)
            lines.append(f"# {spec.help} (type {spec.kind}; used by: {used})")
            if spec.choices is not None and spec.kind != "list[str]" or (spec.kind == "list[str]" and spec.choices):
                lines.append(f"#   allowed: {', '.join(map(str, spec.choices))}")
            value = spec.default if spec.default is not None else _PLACEHOLDER.get(f"{section}.{key}")
            lines.append(f"# {key} = {_toml_value(value)}" + ("" if spec.default is not None else "   (no default)"))
        lines.append("")
    return "\n".join(lines)
