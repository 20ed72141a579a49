"""OMOP Common Data Model: read a CDM database into the data contract, write a cohort as one.

:func:`read_omop` points the toolkit at an OMOP CDM (v5.3/v5.4) database (PostgreSQL,
DuckDB, Spark or any Ibis backend) and builds the six contract tables *inside the
database* as Ibis expressions; only the finished contract tables come to pandas (or
none at all with ``lazy=True``). :func:`write_omop` writes an :class:`IOPData` (e.g. the
simulator's cohort) as CDM tables with the small vocabulary subset it needs, so every
test and the demo can run against a real database.

Concept sets
------------
Which concepts mean what is a mapping from a *role* to concept ids. Defaults ship as
package data (``iop_research/datasets/concept_sets/*.json``), one OHDSI ATLAS
concept-set expression per role, each with its vocabulary and codes. Items with a
``CONCEPT_ID`` are used as given; items without one are resolved by
``VOCABULARY_ID`` + ``CONCEPT_CODE`` in the database's own ``concept`` table.
``includeDescendants`` expands through ``concept_ancestor`` when the table exists
and, for classification codes (ICD-10-CM, which OMOP keeps non-standard and outside
``concept_ancestor``), to every code that starts with the given code;
``isExcluded`` items are removed after expansion; ``includeMapped`` is not
supported (the roles match source and standard concept columns instead).

Roles (:data:`OMOP_ROLES`)
    sessions
        ``iop_session`` (HCPCS H0015, S9480; revenue codes 0905, 0906),
        ``session_individual`` (CPT 90832/90834/90837, HCPCS H0004),
        ``session_group`` (CPT 90853, HCPCS H0005), ``session_family`` (CPT 90846/90847),
        ``session_education`` (HCPCS H2027), ``session_holistic`` (local concept).
    medications
        ``moud_buprenorphine`` (RxNorm 1819, concept 1133201),
        ``moud_methadone`` (RxNorm 6813, concept 1103640),
        ``moud_naltrexone`` (RxNorm 7243, concept 1714319), ``aud_acamprosate``
        (concept 19043959), ``aud_disulfiram`` (concept 735850), ``route_intramuscular``
        (concept 4302612: naltrexone by this route is ``naltrexone_xr``).
    urine drug screens
        ``uds_opioids`` (LOINC 19295-5), ``uds_stimulants`` (19359-9, 19343-3),
        ``uds_cannabis`` (18282-4), ``uds_sedatives`` (14316-4), ``uds_alcohol``
        (5644-0, concept 3010109), ``uds_other`` (19659-2); results ``uds_positive``
        (concept 9191, LOINC LA6576-8) and ``uds_negative`` (concept 9189, LA6577-6).
    diagnoses
        ``oud`` (ICD-10-CM F11), ``aud`` (F10), ``cannabis_ud`` (F12), ``sedative_ud``
        (F13), ``stimulant_ud`` (F14, F15), ``other_sud`` (F16, F18, F19);
        ``overdose_opioids`` (T40.0-T40.4, T40.6), ``overdose_stimulants`` (T40.5,
        T43.6), ``overdose_cannabis`` (T40.7), ``overdose_sedatives`` (T42.4),
        ``overdose_alcohol`` (T51.0), ``overdose_other`` (T40.8, T40.9).
    encounters
        ``ed_visit`` (visit concepts 9203, 262), ``readmission`` (HCPCS H0008-H0011,
        H0018, H0019), ``self_report_use`` and ``aftercare_contact`` (local concepts).

Mapping to the contract
-----------------------
patients
    ``person``: ``patient_id`` = ``person_id`` as text (or ``person_source_value`` with
    ``patient_id_col="person_source_value"``), ``birth_year`` = ``year_of_birth``, ``sex``
    from ``gender_concept_id`` (8507 male, 8532 female, otherwise unknown), ``race`` from
    ``race_concept_id`` (8527 white, 8516 black, 8515 asian, 8522 other; otherwise
    ``race_source_value``), ``ethnicity`` from ``ethnicity_concept_id`` (38003563 hispanic,
    38003564 not_hispanic; otherwise ``ethnicity_source_value``).
observation
    latest ``observation_period_end_date`` of the person, cut at ``observation_end``
    (a data cut-off date) when given.
sessions
    one row per ``procedure_occurrence`` row in a session role and per
    ``visit_occurrence`` row in ``iop_session`` that has no such procedure;
    ``attended`` is always True (OMOP records delivered services, not no-shows);
    ``modality`` from the session_* role (``default_modality`` for ``iop_session``);
    ``minutes`` from ``procedure_end_datetime - procedure_datetime`` (visits: end - start
    datetime) when both are present and positive, else ``default_session_minutes``.
medications
    ``drug_exposure`` rows in a medication role; ``dispense_date`` =
    ``drug_exposure_start_date``; ``days_supply`` = ``days_supply`` or, when missing,
    ``drug_exposure_end_date - start + 1`` (at least 1).
events
    ``uds`` from ``measurement``; ``overdose`` from ``condition_occurrence``; ``ed_visit``
    from ``visit_occurrence`` joined to a diagnosis on the same visit; ``readmission``
    and ``aftercare_contact`` from ``procedure_occurrence``; ``self_report_use`` from
    ``observation``; ``death`` from ``death``. The substance of a positive screen is its
    uds_<substance> role; of an overdose its overdose_<substance> role; of an ED visit
    or readmission the first substance-use diagnosis (in the order oud, aud,
    stimulant_ud, cannabis_ud, sedative_ud, other_sud) on the same visit.
admissions
    empty: OMOP has no IOP admission with a discharge reason, so episodes come from
    sessions with the gap rule (``build_episodes(data, mode="sessions")``).

What OMOP cannot carry (lost on a round trip :func:`write_omop` -> :func:`read_omop`)
    the admissions table (programme, discharge reason, referral source, primary
    substance, intake assessment: comorbidity, prior episodes, severity, housing,
    employment), episode ids of sessions, no-show sessions (``attended`` False),
    ``dose_mg`` (it needs ``drug_strength`` and unit quantities), the substance of a
    negative screen, and missed screens (``result = "missed"``, a scheduled screen not done):
    the CDM's ``measurement`` table records tests that were performed ("if there is no result,
    it is assumed that the lab test was conducted but the result was not captured", CDM v5.4
    table description), so a screen that was never collected is not a measurement, and writing
    one with ``value_as_concept_id`` 0 would read back as a screen without a result.
    :func:`write_omop` leaves missed screens out (like no-show sessions); studies that need the
    schedule keep it outside OMOP. Everything else round-trips exactly (see the tests).

Scale
-----
``read_omop(..., lazy=True)`` keeps sessions and dispensings in the database (DuckDB,
PostgreSQL, Spark); only one row per person (patients, observation) and the events come to
pandas, and episodes, eras and the counting-process frame are built in the database (pass the
CDM's connection as ``engine=`` to keep the steps that start from pandas frames there too).
At 1 M persons (71 M session rows) in a DuckDB file this took 71 s (108 CPU seconds) and 6.8 GB
on an idle 2-core machine, with DuckDB's memory limit set on the connection
(``con.raw_sql("SET memory_limit='5GB'")``; without it DuckDB sizes its hash tables to the
machine). On PostgreSQL 15 the same 1 M persons took 850 s (495 s of server CPU) and give the same
tables; the client then needs about 12 GB, because the 2.4 M-row episode table comes back through
the driver row by row. On a Spark standalone cluster (two 1-core workers) they took 535-600 s; the
steps that start from pandas frames ship them inside Spark tasks, so raise
``spark.rpc.message.maxSize`` (e.g. to 1024 MB) on your session beyond a few hundred thousand
persons (at 1 M a task was 145 MB, over the 128 MB default; the local session this package
creates sets 1024). The estimators then run in
process on the derived frames: about 1 million counting-process rows per GB of memory
(``benchmarks/README.md``, section "OMOP CDM"), i.e. about 1 million persons per 5 GB.

References
----------
.. [1] OHDSI. OMOP Common Data Model v5.4, https://ohdsi.github.io/CommonDataModel/
.. [2] OHDSI. The Book of OHDSI, ch. 10 "Defining Cohorts" (concept sets, descendants).
.. [3] CMS. HCPCS Level II codes H0004-H0019, H0015, H2027, S9480; NUBC revenue codes 0905-0906.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iop_research.data.io import IOPData
from iop_research.data.schema import (
    Col,
    EventType,
    Medication,
    Modality,
    UdsResult,
    empty_table,
)
from iop_research.exceptions import DataReadError, IopError

__all__ = [
    "OMOP_ROLES",
    "OMOP_TABLES",
    "ConceptSetError",
    "load_concept_sets",
    "omop_source",
    "read_omop",
    "resolve_concept_sets",
    "write_omop",
]


class ConceptSetError(IopError, ValueError):
    """A concept-set argument or file is malformed, or names an unknown role."""


#: Substances of the contract, in the order used to pick the substance of a visit.
_SUBSTANCE_ROLES: tuple[tuple[str, str], ...] = (
    ("oud", "opioids"),
    ("aud", "alcohol"),
    ("stimulant_ud", "stimulants"),
    ("cannabis_ud", "cannabis"),
    ("sedative_ud", "sedatives"),
    ("other_sud", "other"),
)
_SUBSTANCES = tuple(s for _, s in _SUBSTANCE_ROLES)
_MODALITY_ROLES = {f"session_{m.value}": m.value for m in Modality}
_MEDICATION_ROLES = {
    "moud_buprenorphine": Medication.buprenorphine.value,
    "moud_methadone": Medication.methadone.value,
    "moud_naltrexone": Medication.naltrexone_oral.value,
    "aud_acamprosate": Medication.acamprosate.value,
    "aud_disulfiram": Medication.disulfiram.value,
}
_UDS_ROLES = {f"uds_{s}": s for s in _SUBSTANCES}
_OVERDOSE_ROLES = {f"overdose_{s}": s for s in _SUBSTANCES}

#: Every role read_omop understands, with what it means.
OMOP_ROLES: dict[str, str] = {
    "iop_session": "IOP day/session (procedure or visit); modality = default_modality",
    **{r: f"therapy session of modality {m}" for r, m in _MODALITY_ROLES.items()},
    **{r: f"dispensing of {m.split('_')[0]}" for r, m in _MEDICATION_ROLES.items()},
    "route_intramuscular": "route that makes naltrexone the extended-release injection",
    **{r: f"urine drug screen for {s}" for r, s in _UDS_ROLES.items()},
    "uds_positive": "screen result value concept: positive",
    "uds_negative": "screen result value concept: negative",
    **{r: f"substance-use-disorder diagnosis: {s}" for r, s in _SUBSTANCE_ROLES},
    **{r: f"overdose / poisoning: {s}" for r, s in _OVERDOSE_ROLES.items()},
    "ed_visit": "emergency visit concept (counts with a same-visit SUD or overdose diagnosis)",
    "readmission": "residential / inpatient SUD treatment or detoxification procedure",
    "self_report_use": "observation concept for self-reported use (value_as_string = substance)",
    "aftercare_contact": "aftercare / alumni contact procedure",
}

#: CDM tables read_omop reads (those marked optional may be absent).
OMOP_TABLES: dict[str, bool] = {
    "person": True,
    "observation_period": True,
    "procedure_occurrence": False,
    "visit_occurrence": False,
    "drug_exposure": False,
    "measurement": False,
    "condition_occurrence": False,
    "observation": False,
    "death": False,
    "concept": False,
    "concept_ancestor": False,
}

_GENDER = {8507: "male", 8532: "female"}
_RACE = {8527: "white", 8516: "black", 8515: "asian", 8522: "other"}
_ETHNICITY = {38003563: "hispanic", 38003564: "not_hispanic"}
_LOCAL_CONCEPT_BASE = 2_000_000_000  # OMOP's range for site-local concepts
_CLASSIFICATION_VOCABS = ("ICD10CM", "ICD10", "ICD9CM")
_TYPE_EHR = 32817
_DEATH_TYPE = 32817


# --------------------------------------------------------------------------- concept sets
def _default_files() -> list[Any]:
    folder = resources.files("iop_research.datasets").joinpath("concept_sets")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)


def _expression_items(expr: Any, role: str, where: str) -> list[dict]:
    """Items of an ATLAS concept-set expression, a list of ids, or a list of items."""
    if isinstance(expr, Mapping) and "expression" in expr:
        expr = expr["expression"]
    if isinstance(expr, Mapping) and "items" in expr:
        expr = expr["items"]
    if not isinstance(expr, (list, tuple)):
        raise ConceptSetError(
            f"{where}: role {role!r} must be an ATLAS concept-set expression ({{'items': [...]}}), "
            f"a list of concept ids or a list of items; got {type(expr).__name__}."
        )
    items = []
    for k, it in enumerate(expr):
        if isinstance(it, (int, np.integer)) and not isinstance(it, bool):
            items.append({"concept": {"CONCEPT_ID": int(it)}, "includeDescendants": False, "isExcluded": False})
            continue
        if not isinstance(it, Mapping) or not isinstance(it.get("concept"), Mapping):
            raise ConceptSetError(
                f"{where}: role {role!r}, item {k}: expected {{'concept': {{'CONCEPT_ID': ...}}, "
                f"'includeDescendants': ..., 'isExcluded': ...}} or an integer concept id, got {it!r}."
            )
        c = it["concept"]
        if c.get("CONCEPT_ID") is None and not (c.get("VOCABULARY_ID") and c.get("CONCEPT_CODE")):
            raise ConceptSetError(
                f"{where}: role {role!r}, item {k} has neither CONCEPT_ID nor VOCABULARY_ID + CONCEPT_CODE. "
                "Give one of them."
            )
        items.append(dict(it))
    return items


def load_concept_sets(source: Any = None) -> dict[str, list[dict]]:
    """Concept sets by role: the shipped defaults, updated with ``source``.

    Parameters
    ----------
    source : mapping, str or Path, optional
        Roles to add or replace. A mapping ``role -> expression`` where an expression is an
        OHDSI ATLAS concept-set expression (``{"items": [...]}``, as ATLAS exports it), a
        list of such items or a list of concept ids; or the path of a JSON file holding
        such a mapping (optionally under a ``"roles"`` key), or of one ATLAS export whose
        ``"name"`` is a role. Roles not given keep their defaults.

    Returns
    -------
    dict of str to list of dict
        Role -> ATLAS items (``concept``, ``includeDescendants``, ``isExcluded``).

    Raises
    ------
    ConceptSetError
        Unknown role, malformed expression, unreadable file.

    Examples
    --------
    >>> sets = load_concept_sets({"moud_methadone": [1103640]})
    >>> sets["moud_methadone"][0]["concept"]["CONCEPT_ID"]
    1103640
    >>> sorted(sets)[:3]
    ['aftercare_contact', 'aud', 'aud_acamprosate']
    """
    sets: dict[str, list[dict]] = {}
    for f in _default_files():
        doc = json.loads(f.read_text(encoding="utf-8"))
        for role, spec in doc["roles"].items():
            sets[role] = _expression_items(spec, role, f"concept_sets/{f.name}")
    if source is None:
        return sets
    where = "concept_sets"
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = str(path)
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConceptSetError(
                f"Could not read the concept-set file {path}: {exc}. Pass a JSON file mapping roles to "
                "ATLAS concept-set expressions."
            ) from exc
        if isinstance(source, Mapping) and "name" in source and ("items" in source or "expression" in source):
            source = {source["name"]: source}
        elif isinstance(source, Mapping) and isinstance(source.get("roles"), Mapping):
            source = source["roles"]
    if not isinstance(source, Mapping):
        raise ConceptSetError(f"{where}: expected a mapping of role to concept set, got {type(source).__name__}.")
    unknown = [r for r in source if r not in OMOP_ROLES]
    if unknown:
        raise ConceptSetError(
            f"{where}: unknown role(s) {', '.join(map(repr, unknown))}. Known roles: {', '.join(OMOP_ROLES)}."
        )
    for role, expr in source.items():
        sets[role] = _expression_items(expr, role, where)
    return sets


def _has_table(con, name: str, schema: str | None) -> bool:
    """Whether the table exists (by opening it: ``list_tables`` of ibis 12 fails on DuckDB 2)."""
    try:
        _table(con, name, schema)
    except Exception:  # noqa: BLE001 - each backend raises its own "not found"
        return False
    return True


class _CachedTables:
    """A backend whose ``table()`` answers (and failures) are remembered for one read: every
    lookup is a schema query, and read_omop asks for each CDM table several times."""

    def __init__(self, con):
        self._con = con
        self._seen: dict = {}

    def table(self, name, database=None):
        key = (name, database)
        if key not in self._seen:
            try:
                self._seen[key] = self._con.table(name, database=database) if database else self._con.table(name)
            except Exception as exc:  # noqa: BLE001 - remembered and re-raised
                self._seen[key] = exc
        hit = self._seen[key]
        if isinstance(hit, Exception):
            raise hit
        return hit

    def __getattr__(self, attr):
        return getattr(self._con, attr)


def _table(con, name: str, schema: str | None):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
        return con.table(name, database=schema) if schema else con.table(name)


def _execute(expr) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
        return expr.to_pandas()


def resolve_concept_sets(con, *, cdm_schema: str | None = None, concept_sets: Any = None,
                         vocabulary_schema: str | None = None) -> dict[str, list[int]]:
    """Concept ids of every role, resolved and expanded in the database.

    Parameters
    ----------
    con : ibis backend or str
        See :func:`read_omop`.
    cdm_schema : str, optional
        Schema of the CDM tables (``None``: the connection's default).
    concept_sets : see :func:`load_concept_sets`
    vocabulary_schema : str, optional
        Schema of ``concept`` / ``concept_ancestor`` (default: ``cdm_schema``).

    Returns
    -------
    dict of str to list of int
        Role -> sorted concept ids (only small vocabulary queries are executed).

    Raises
    ------
    ConceptSetError
        When an item has no ``CONCEPT_ID`` and the database has no ``concept`` table.
    """
    opened = isinstance(con, (str, Path))
    con = _connect(con)
    try:
        return _resolve(con, cdm_schema, concept_sets, vocabulary_schema)
    finally:
        if opened:
            con.disconnect()


def _resolve(con, cdm_schema, concept_sets, vocabulary_schema) -> dict[str, list[int]]:
    vs = vocabulary_schema if vocabulary_schema is not None else cdm_schema
    sets = load_concept_sets(concept_sets)
    has_concept = _has_table(con, "concept", vs)
    has_ancestor = _has_table(con, "concept_ancestor", vs)
    by_code = sorted({(it["concept"]["VOCABULARY_ID"], str(it["concept"]["CONCEPT_CODE"]))
                      for items in sets.values() for it in items if it["concept"].get("CONCEPT_ID") is None})
    prefixes = sorted({(it["concept"]["VOCABULARY_ID"], str(it["concept"]["CONCEPT_CODE"]))
                       for items in sets.values() for it in items
                       if it.get("includeDescendants") and it["concept"].get("VOCABULARY_ID") in _CLASSIFICATION_VOCABS})
    code_ids: dict[tuple[str, str], list[int]] = {}
    prefix_ids: dict[tuple[str, str], list[int]] = {}
    if (by_code or prefixes) and not has_concept:
        missing = ", ".join(f"{v} {c}" for v, c in by_code[:5])
        raise ConceptSetError(
            f"Concept-set items without CONCEPT_ID ({missing}, ...) need the vocabulary table "
            f"'concept' in schema {vs!r}, which does not exist. Load the OMOP vocabulary there, pass "
            "vocabulary_schema=, or give CONCEPT_IDs in concept_sets."
        )
    if has_concept and (by_code or prefixes):
        c = _table(con, "concept", vs)
        vocabs = sorted({v for v, _ in by_code} | {v for v, _ in prefixes})
        conds = [(c.vocabulary_id == v) & c.concept_code.isin([code for vv, code in by_code if vv == v])
                 for v in {v for v, _ in by_code}]
        conds += [(c.vocabulary_id == v) & c.concept_code.startswith(code) for v, code in prefixes]
        cond = conds[0]
        for extra in conds[1:]:
            cond = cond | extra
        found = _execute(c.filter(c.vocabulary_id.isin(vocabs) & cond)
                         .select(c.concept_id, c.vocabulary_id, c.concept_code))
        for row in found.itertuples(index=False):
            key = (row.vocabulary_id, str(row.concept_code))
            code_ids.setdefault(key, []).append(int(row.concept_id))
            for v, p in prefixes:
                if v == row.vocabulary_id and str(row.concept_code).startswith(p):
                    prefix_ids.setdefault((v, p), []).append(int(row.concept_id))
    def base_ids(it) -> list[int]:
        c = it["concept"]
        key = (c.get("VOCABULARY_ID"), str(c.get("CONCEPT_CODE")))
        ids = [int(c["CONCEPT_ID"])] if c.get("CONCEPT_ID") is not None else code_ids.get(key, [])
        return ids + (prefix_ids.get(key, []) if it.get("includeDescendants") else [])

    # one query for the descendants of every item that asks for them
    roots = sorted({i for items in sets.values() for it in items if it.get("includeDescendants")
                    for i in base_ids(it)})
    below: dict[int, list[int]] = {}
    if has_ancestor and roots:
        ca = _table(con, "concept_ancestor", vs)
        pairs = _execute(ca.filter(ca.ancestor_concept_id.isin(roots))
                         .select(ca.ancestor_concept_id, ca.descendant_concept_id).distinct())
        for a, d in zip(pairs["ancestor_concept_id"], pairs["descendant_concept_id"]):
            below.setdefault(int(a), []).append(int(d))
    out: dict[str, list[int]] = {}
    for role, items in sets.items():
        include: set[int] = set()
        exclude: set[int] = set()
        for it in items:
            ids = base_ids(it)
            if it.get("includeDescendants"):
                ids = ids + [d for i in ids for d in below.get(i, [])]
            (exclude if it.get("isExcluded") else include).update(ids)
        out[role] = sorted(include - exclude)
    return out


# --------------------------------------------------------------------------- connection
def _connect(con):
    import ibis

    if isinstance(con, (str, Path)):
        url = str(con)
        try:
            return ibis.connect(url)
        except Exception as exc:
            raise DataReadError(
                f"Could not connect to {url!r}: {exc}. Use an Ibis backend or a URL such as "
                "'postgresql://user@host:5432/db' or 'duckdb:///path/to/cdm.duckdb'."
            ) from exc
    if hasattr(con, "table") and hasattr(con, "list_tables"):
        return con
    raise DataReadError(
        f"con must be an Ibis backend or a database URL, got {type(con).__name__}."
    )


def _require_tables(con, schema):
    missing = [t for t, req in OMOP_TABLES.items() if req and not _has_table(con, t, schema)]
    if missing:
        raise DataReadError(
            f"OMOP CDM table(s) {', '.join(missing)} not found in schema {schema!r}. Pass the schema that "
            "holds the CDM tables as cdm_schema= (e.g. 'cdm')."
        )


# --------------------------------------------------------------------------- readers
def _pid(t, patient_id_col: str):
    return t[patient_id_col].cast("string")


def _date(col):
    return col.cast("date")


def _cases(col, mapping: Mapping[Any, Any], default):
    """``col`` mapped through ``mapping`` (value -> result) as a CASE expression."""
    import ibis

    branches = [(col == k, v) for k, v in mapping.items()]
    if not branches:
        return ibis.literal(default) if default is not None else ibis.null("string")
    return ibis.cases(*branches, else_=default)


def _in_role(col, ids: list[int]):
    import ibis

    return col.isin(ids) if ids else ibis.literal(False)


def _role_case(col, roles: Mapping[str, str], ids: Mapping[str, list[int]], default=None):
    """The label of the first role whose ids contain ``col``."""
    import ibis

    branches = [(col.isin(ids[r]), label) for r, label in roles.items() if ids.get(r)]
    if not branches:
        return ibis.literal(default, type="string") if default is not None else ibis.null("string")
    return ibis.cases(*branches, else_=ibis.literal(default, type="string") if default is not None
                      else ibis.null("string"))


def _person_map(person, patient_id_col):
    """person_id -> patient_id (only when patient ids come from another person column)."""
    return person.select(person.person_id, **{Col.patient_id: _pid(person, patient_id_col)})


def _with_patient_id(t, pmap, patient_id_col):
    if patient_id_col == "person_id":
        return t.mutate(**{Col.patient_id: t.person_id.cast("string")})
    j = t.inner_join(pmap, t.person_id == pmap.person_id)
    return j


def _minutes(start, end, default_minutes: int):
    import ibis

    mins = ((end.epoch_seconds() - start.epoch_seconds()) / 60).round().cast("int64")
    return ibis.cases((start.notnull() & end.notnull() & (mins > 0), mins), else_=default_minutes)


def _sessions_expr(con, schema, ids, person_map, patient_id_col, default_modality, default_minutes):
    import ibis

    parts = []
    session_roles = ["iop_session", *_MODALITY_ROLES]
    all_ids = sorted({i for r in session_roles for i in ids.get(r, [])})
    if _has_table(con, "procedure_occurrence", schema) and all_ids:
        po = _table(con, "procedure_occurrence", schema)
        src = po.procedure_source_concept_id if "procedure_source_concept_id" in po.columns else None
        cond = po.procedure_concept_id.isin(all_ids)
        if src is not None:
            cond = cond | src.isin(all_ids)
        p = po.filter(cond)
        concept = p.procedure_concept_id
        if src is not None:
            concept = ibis.cases((p.procedure_concept_id.isin(all_ids), p.procedure_concept_id),
                                 else_=p.procedure_source_concept_id)
        if "procedure_end_datetime" in p.columns and "procedure_datetime" in p.columns:
            minutes = _minutes(p.procedure_datetime.cast("timestamp"), p.procedure_end_datetime.cast("timestamp"),
                               default_minutes)
        else:
            minutes = ibis.literal(default_minutes, type="int64")
        p = p.select(
            p.person_id,
            **{Col.session_date: _date(p.procedure_date),
               Col.modality: _role_case(concept, _MODALITY_ROLES, ids, default_modality),
               Col.minutes: minutes.cast("int64")},
        )
        parts.append(("procedure", p))
    iop_ids = ids.get("iop_session", [])
    if _has_table(con, "visit_occurrence", schema) and iop_ids:
        vo = _table(con, "visit_occurrence", schema)
        cond = vo.visit_concept_id.isin(iop_ids)
        if "visit_source_concept_id" in vo.columns:
            cond = cond | vo.visit_source_concept_id.isin(iop_ids)
        v = vo.filter(cond)
        if parts and "visit_occurrence_id" in _table(con, "procedure_occurrence", schema).columns:
            po = _table(con, "procedure_occurrence", schema)
            linked = po.filter(po.procedure_concept_id.isin(all_ids) & po.visit_occurrence_id.notnull()) \
                .select(linked_visit=po.visit_occurrence_id).distinct()
            v = v.anti_join(linked, v.visit_occurrence_id == linked.linked_visit)
        if "visit_start_datetime" in v.columns and "visit_end_datetime" in v.columns:
            minutes = _minutes(v.visit_start_datetime.cast("timestamp"), v.visit_end_datetime.cast("timestamp"),
                               default_minutes)
        else:
            minutes = ibis.literal(default_minutes, type="int64")
        v = v.select(
            v.person_id,
            **{Col.session_date: _date(v.visit_start_date),
               Col.modality: ibis.literal(default_modality, type="string"),
               Col.minutes: minutes.cast("int64")},
        )
        parts.append(("visit", v))
    if not parts:
        return None
    s = parts[0][1]
    for _, extra in parts[1:]:
        s = s.union(extra, distinct=False)
    s = _with_patient_id(s, person_map, patient_id_col)
    return s.select(
        Col.patient_id,
        **{Col.episode_id: ibis.null("string"),
           Col.session_date: s[Col.session_date],
           Col.modality: s[Col.modality],
           Col.minutes: s[Col.minutes],
           Col.attended: ibis.literal(True)},
    )


def _medications_expr(con, schema, ids, person_map, patient_id_col):
    import ibis

    if not _has_table(con, "drug_exposure", schema):
        return None
    med_ids = sorted({i for r in _MEDICATION_ROLES for i in ids.get(r, [])})
    if not med_ids:
        return None
    de = _table(con, "drug_exposure", schema)
    d = de.filter(de.drug_concept_id.isin(med_ids))
    med = _role_case(d.drug_concept_id, _MEDICATION_ROLES, ids)
    route_ids = ids.get("route_intramuscular", [])
    if route_ids and "route_concept_id" in d.columns:
        med = ibis.cases(((med == Medication.naltrexone_oral.value) & d.route_concept_id.isin(route_ids),
                          Medication.naltrexone_xr.value), else_=med)
    start = _date(d.drug_exposure_start_date)
    from_end = (_date(d.drug_exposure_end_date).epoch_days() - start.epoch_days() + 1) \
        if "drug_exposure_end_date" in d.columns else ibis.null("int64")
    supply = ibis.coalesce(d.days_supply.cast("int64"), from_end.cast("int64"))
    supply = ibis.cases((supply < 1, 1), else_=supply)
    d = d.select(d.person_id, med=med, start=start, supply=supply)
    d = _with_patient_id(d, person_map, patient_id_col)
    return d.select(
        Col.patient_id,
        **{Col.medication: d.med, Col.dispense_date: d.start, Col.days_supply: d.supply.cast("int64"),
           Col.dose_mg: ibis.null("float64")},
    )


def _event(t, date, etype, result=None, substance=None):
    import ibis

    return t.select(
        t.person_id,
        **{Col.event_date: _date(date),
           Col.event_type: ibis.literal(etype, type="string"),
           Col.result: result if result is not None else ibis.null("string"),
           Col.substance: substance if substance is not None else ibis.null("string")},
    )


def _visit_substance(con, schema, ids):
    """visit_occurrence_id -> substance of its first SUD diagnosis (or None when none)."""
    import ibis

    if not _has_table(con, "condition_occurrence", schema):
        return None
    co = _table(con, "condition_occurrence", schema)
    roles = dict(_SUBSTANCE_ROLES)
    sud_ids = sorted({i for r in (*roles, *_OVERDOSE_ROLES) for i in ids.get(r, [])})
    if not sud_ids or "visit_occurrence_id" not in co.columns:
        return None
    rank_of = {s: k for k, s in enumerate(_SUBSTANCES)}
    has_src = "condition_source_concept_id" in co.columns
    cond = co.condition_concept_id.isin(sud_ids)
    if has_src:
        cond = cond | co.condition_source_concept_id.isin(sud_ids)
    c = co.filter(cond & co.visit_occurrence_id.notnull())
    concept = c.condition_concept_id
    if has_src:
        concept = ibis.cases((c.condition_concept_id.isin(sud_ids), c.condition_concept_id),
                             else_=c.condition_source_concept_id)
    sub = _role_case(concept, {**roles, **_OVERDOSE_ROLES}, ids)
    c = c.select(vid=c.visit_occurrence_id, sub=sub)
    c = c.mutate(rank=_cases(c["sub"], rank_of, len(rank_of)))
    best = c.group_by("vid").aggregate(rank=c["rank"].min())
    firsts = c.inner_join(best, [c.vid == best.vid, c["rank"] == best["rank"]]).select("vid", "sub").distinct()
    return firsts


def _events_expr(con, schema, ids, person_map, patient_id_col):
    import ibis

    parts = []
    # urine drug screens
    uds_ids = sorted({i for r in _UDS_ROLES for i in ids.get(r, [])})
    if uds_ids and _has_table(con, "measurement", schema):
        m = _table(con, "measurement", schema)
        m = m.filter(m.measurement_concept_id.isin(uds_ids))
        pos = _in_role(m.value_as_concept_id, ids.get("uds_positive", []))
        neg = _in_role(m.value_as_concept_id, ids.get("uds_negative", []))
        num = m.value_as_number.cast("float64")
        high = m.range_high.cast("float64") if "range_high" in m.columns else ibis.null("float64")
        num_pos = ibis.cases((high.notnull(), num > high), else_=num > 0)
        result = ibis.cases((pos, UdsResult.positive.value), (neg, UdsResult.negative.value),
                            (num.notnull() & num_pos, UdsResult.positive.value),
                            (num.notnull(), UdsResult.negative.value),
                            else_=ibis.null("string"))
        substance = ibis.cases((result == UdsResult.positive.value,
                                _role_case(m.measurement_concept_id, _UDS_ROLES, ids)), else_=ibis.null("string"))
        parts.append(_event(m, m.measurement_date, EventType.uds.value, result, substance))
    # overdoses
    od_ids = sorted({i for r in _OVERDOSE_ROLES for i in ids.get(r, [])})
    if od_ids and _has_table(con, "condition_occurrence", schema):
        co = _table(con, "condition_occurrence", schema)
        cond = co.condition_concept_id.isin(od_ids)
        has_src = "condition_source_concept_id" in co.columns
        if has_src:
            cond = cond | co.condition_source_concept_id.isin(od_ids)
        c = co.filter(cond)
        concept = ibis.cases((c.condition_concept_id.isin(od_ids), c.condition_concept_id),
                             else_=c.condition_source_concept_id) if has_src else c.condition_concept_id
        parts.append(_event(c, c.condition_start_date, EventType.overdose.value,
                            substance=_role_case(concept, _OVERDOSE_ROLES, ids)))
    visit_sub = _visit_substance(con, schema, ids)
    # ED visits with a substance-use or overdose diagnosis on the same visit
    if ids.get("ed_visit") and visit_sub is not None and _has_table(con, "visit_occurrence", schema):
        vo = _table(con, "visit_occurrence", schema)
        v = vo.filter(vo.visit_concept_id.isin(ids["ed_visit"]))
        v = v.inner_join(visit_sub, v.visit_occurrence_id == visit_sub.vid)
        parts.append(_event(v, v.visit_start_date, EventType.ed_visit.value, substance=v["sub"]))
    # readmissions and aftercare contacts (procedures)
    if _has_table(con, "procedure_occurrence", schema):
        po = _table(con, "procedure_occurrence", schema)
        if ids.get("readmission"):
            r = po.filter(po.procedure_concept_id.isin(ids["readmission"]))
            if visit_sub is not None and "visit_occurrence_id" in r.columns:
                r = r.left_join(visit_sub, r.visit_occurrence_id == visit_sub.vid)
                sub = r["sub"]
            else:
                sub = None
            parts.append(_event(r, r.procedure_date, EventType.readmission.value, substance=sub))
        if ids.get("aftercare_contact"):
            a = po.filter(po.procedure_concept_id.isin(ids["aftercare_contact"]))
            parts.append(_event(a, a.procedure_date, EventType.aftercare_contact.value))
    # self-reported use (observation table)
    if ids.get("self_report_use") and _has_table(con, "observation", schema):
        ob = _table(con, "observation", schema)
        o = ob.filter(ob.observation_concept_id.isin(ids["self_report_use"]))
        sub = ibis.cases((o.value_as_string.isin(list(_SUBSTANCES)), o.value_as_string),
                         else_=ibis.null("string")) if "value_as_string" in o.columns else None
        parts.append(_event(o, o.observation_date, EventType.self_report_use.value, substance=sub))
    # deaths
    if _has_table(con, "death", schema):
        d = _table(con, "death", schema)
        parts.append(_event(d, d.death_date, EventType.death.value))
    if not parts:
        return None
    e = parts[0]
    for extra in parts[1:]:
        e = e.union(extra, distinct=False)
    e = _with_patient_id(e, person_map, patient_id_col)
    return e.select(Col.patient_id, Col.event_date, Col.event_type, Col.result, Col.substance)


def _patients_expr(person, patient_id_col):
    import ibis

    race_src = person.race_source_value.cast("string") if "race_source_value" in person.columns \
        else ibis.null("string")
    eth_src = person.ethnicity_source_value.cast("string") if "ethnicity_source_value" in person.columns \
        else ibis.null("string")
    return person.select(
        **{Col.patient_id: _pid(person, patient_id_col),
           Col.birth_year: person.year_of_birth.cast("int64"),
           Col.sex: _cases(person.gender_concept_id, _GENDER, "unknown"),
           Col.race: _cases(person.race_concept_id, _RACE, race_src),
           Col.ethnicity: _cases(person.ethnicity_concept_id, _ETHNICITY, eth_src)},
    )


def _observation_expr(con, schema, person_map, patient_id_col, observation_end):
    import ibis

    op = _table(con, "observation_period", schema)
    o = op.group_by("person_id").aggregate(end=_date(op.observation_period_end_date).max())
    end = o.end
    if observation_end is not None:
        cut = pd.Timestamp(observation_end).date()
        end = ibis.cases((end > ibis.date(cut), ibis.date(cut)), else_=end)
    o = o.select(o.person_id, end=end)
    o = _with_patient_id(o, person_map, patient_id_col)
    return o.select(Col.patient_id, **{Col.observation_end: o.end})


def _finish(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Contract dtypes, rows in a deterministic order (databases return rows in any order)."""
    out = df.copy()
    for name, kind, _nullable, _meaning in _columns(table):
        if name not in out.columns:
            continue
        s = out[name]
        if kind == "date":
            out[name] = pd.to_datetime(s).astype("datetime64[ns]")
        elif kind == "int":
            out[name] = pd.to_numeric(s).astype("int64")
        elif kind == "float":
            out[name] = pd.to_numeric(s).astype("float64")
        elif kind == "bool":
            out[name] = s.astype(bool)
        else:
            out[name] = pd.Series(s.astype(object).where(s.notna(), None).to_numpy(), index=s.index, dtype=object)
    keys = [c for c in _SORT_KEYS[table] if c in out.columns]
    out = out.sort_values(keys, kind="stable", na_position="first").reset_index(drop=True) if len(out) else out
    return out[[c for c, *_ in _columns(table)]]


def _columns(table):
    from iop_research.data.schema import TABLE_COLUMNS

    return TABLE_COLUMNS[table]


_SORT_KEYS = {
    "patients": [Col.patient_id],
    "sessions": [Col.patient_id, Col.session_date, Col.modality, Col.minutes],
    "medications": [Col.patient_id, Col.dispense_date, Col.medication, Col.days_supply],
    "events": [Col.patient_id, Col.event_date, Col.event_type, Col.result, Col.substance],
    "observation": [Col.patient_id],
}


def read_omop(
    con,
    *,
    cdm_schema: str | None = None,
    concept_sets: Any = None,
    observation_end: Any = None,
    vocabulary_schema: str | None = None,
    patient_id_col: str = "person_id",
    patient_id_prefix: str = "",
    default_modality: str = Modality.group.value,
    default_session_minutes: int = 180,
    lazy: bool = False,
    validate: bool = True,
):
    """Read an OMOP CDM database into the data contract, building the tables in the database.

    Parameters
    ----------
    con : ibis backend or str
        An Ibis backend (DuckDB, PostgreSQL, PySpark, ...) or a URL
        (``"postgresql://user@host:port/db"``, ``"duckdb:///path/cdm.duckdb"``).
    cdm_schema : str, optional
        Schema holding the CDM tables (``None``: the connection's default search path).
    concept_sets : mapping, str or Path, optional
        Roles to override (see :func:`load_concept_sets`; :data:`OMOP_ROLES` lists them), e.g. a
        JSON file exported from ATLAS. Other roles keep the shipped defaults.
    observation_end : date-like, optional
        Data cut-off: each person's ``observation_end`` is the end of their latest
        observation period or this date, whichever is earlier, and sessions, dispensings
        and events dated after it are not read (a query window, applied in the database).
    vocabulary_schema : str, optional
        Schema of ``concept`` / ``concept_ancestor`` (default: ``cdm_schema``).
    patient_id_col : {"person_id", "person_source_value"}, default "person_id"
        ``person`` column whose text becomes ``patient_id``.
    patient_id_prefix : str, default ""
        Text put before every ``patient_id`` (e.g. ``"person-"``, so person 17 is
        ``person-17``). ``person_id`` values are plain numbers, which the report privacy gate
        (:func:`iop_research.reports.gate.make_privacy_gate`) refuses as identifiers because
        they cannot be told apart from counts and days; the study reports read with a prefix.
    default_modality : str, default "group"
        Modality of sessions found only through ``iop_session`` (per-diem codes carry none).
    default_session_minutes : int, default 180
        Minutes of a session without start and end times (a 3-hour IOP day).
    lazy : bool, default False
        Return a dict of the contract tables (``patients, sessions, medications, events,
        observation``) as unexecuted Ibis expressions on ``con`` instead of an
        :class:`IOPData`. The large tables can then stay in the database: an ``IOPData``
        whose ``sessions`` and ``medications`` are these expressions and whose other tables
        are their ``.to_pandas()`` runs ``build_episodes``, ``medication_eras`` and
        ``counting_process_frame`` inside the CDM's engine (DuckDB, PostgreSQL, Spark).
        Nothing is validated.
    validate : bool, default True
        Validate the result against the data contract (raises on problems).

    Returns
    -------
    IOPData
        ``patients, admissions (empty), sessions, medications, events, observation`` with
        contract dtypes, rows sorted by patient and date; or, with ``lazy=True``, a dict of
        Ibis tables with the same names and columns (admissions omitted).

    Notes
    -----
    DuckDB: a database file named like the schema (``cdm.duckdb`` holding schema ``cdm``)
    makes ``cdm`` ambiguous (catalog or schema); name the file otherwise or pass
    ``cdm_schema=("cdm", "cdm")``.

    Raises
    ------
    DataReadError
        Unreachable database, missing ``person`` / ``observation_period``.
    ConceptSetError
        Malformed or unknown concept sets.
    DataValidationError
        The result breaks the data contract (with ``validate=True``).

    See Also
    --------
    write_omop : the inverse, for simulated cohorts.
    iop_research.derive.episodes.build_episodes : episodes with ``mode="sessions"``.

    Only small vocabulary queries (concept ids of the roles) and the finished contract
    tables are executed; every join and filter on clinical tables runs in the database.
    The module docstring lists how each contract column is built and what OMOP cannot carry.

    References
    ----------
    .. [1] OHDSI. OMOP Common Data Model v5.4, https://ohdsi.github.io/CommonDataModel/

    Examples
    --------
    >>> import ibis
    >>> from iop_research.data.synth import simulate_cohort
    >>> con = ibis.duckdb.connect()
    >>> write_omop(simulate_cohort(20, seed=1, progress=False), con, cdm_schema="cdm")
    >>> data = read_omop(con, cdm_schema="cdm", patient_id_col="person_source_value")
    >>> len(data.patients), len(data.admissions)
    (20, 0)
    """
    opened = isinstance(con, (str, Path))
    con = _connect(con)
    try:
        return _read(con, cdm_schema=cdm_schema, concept_sets=concept_sets, observation_end=observation_end,
                     vocabulary_schema=vocabulary_schema, patient_id_col=patient_id_col,
                     patient_id_prefix=patient_id_prefix,
                     default_modality=default_modality, default_session_minutes=default_session_minutes,
                     lazy=lazy, validate=validate)
    finally:
        if opened and not lazy:
            con.disconnect()


def omop_source(url: str, *, cdm_schema: str | None = None, concept_sets: Any = None) -> str:
    """One line naming an OMOP CDM source, for provenance (a password in the URL is masked).

    Parameters
    ----------
    url : str
        Database URL as given to :func:`read_omop`.
    cdm_schema : str, optional
        Schema of the CDM tables.
    concept_sets : str or Path, optional
        Concept-set file (its name is shown; ``None``: the shipped defaults).

    Returns
    -------
    str

    Examples
    --------
    >>> omop_source("postgresql://analyst:secret@db:5432/cdm", cdm_schema="cdm5")
    'OMOP CDM postgresql://analyst:***@db:5432/cdm, schema cdm5, default concept sets'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(url))
    try:
        password = parts.password
    except ValueError:
        password = None
    if password:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    sets = "default concept sets" if concept_sets is None else (
        f"concept sets {Path(concept_sets).name}" if isinstance(concept_sets, (str, Path)) else "concept sets given")
    schema = f", schema {cdm_schema}" if cdm_schema else ""
    return f"OMOP CDM {url}{schema}, {sets}"


def _read(con, *, cdm_schema, concept_sets, observation_end, vocabulary_schema, patient_id_col,
          patient_id_prefix, default_modality, default_session_minutes, lazy, validate):
    import ibis

    con = _CachedTables(con)
    if patient_id_col not in ("person_id", "person_source_value"):
        raise DataReadError(f"patient_id_col must be 'person_id' or 'person_source_value', got {patient_id_col!r}.")
    if default_modality not in Modality.values():
        raise DataReadError(f"default_modality must be one of {Modality.values()}, got {default_modality!r}.")
    _require_tables(con, cdm_schema)
    ids = resolve_concept_sets(con, cdm_schema=cdm_schema, concept_sets=concept_sets,
                               vocabulary_schema=vocabulary_schema)
    person = _table(con, "person", cdm_schema)
    pmap = _person_map(person, patient_id_col)
    exprs = {
        "patients": _patients_expr(person, patient_id_col),
        "sessions": _sessions_expr(con, cdm_schema, ids, pmap, patient_id_col, default_modality,
                                   int(default_session_minutes)),
        "medications": _medications_expr(con, cdm_schema, ids, pmap, patient_id_col),
        "events": _events_expr(con, cdm_schema, ids, pmap, patient_id_col),
        "observation": _observation_expr(con, cdm_schema, pmap, patient_id_col, observation_end),
    }
    if observation_end is not None:  # a data cut-off: nothing dated after it is read
        cut = ibis.date(pd.Timestamp(observation_end).date())
        for name, col in (("sessions", Col.session_date), ("medications", Col.dispense_date),
                          ("events", Col.event_date)):
            if exprs[name] is not None:
                exprs[name] = exprs[name].filter(exprs[name][col] <= cut)
    if not isinstance(patient_id_prefix, str):
        raise DataReadError(f"patient_id_prefix must be text, got {patient_id_prefix!r}.")
    if patient_id_prefix:
        exprs = {k: None if e is None else e.mutate(**{Col.patient_id: patient_id_prefix + e[Col.patient_id]})
                 for k, e in exprs.items()}
    if lazy:
        return {k: v for k, v in exprs.items() if v is not None}
    tables = {}
    for name, expr in exprs.items():
        df = empty_table(name) if expr is None else _execute(expr)
        tables[name] = _finish(name, df)
    tables["admissions"] = empty_table("admissions")
    data = IOPData(**tables).coerce()  # canonical dtypes (pandas 3: str text, datetime64[ns] dates)
    if validate:
        data.validate()
    return data


# --------------------------------------------------------------------------- writer
def _vocabulary(sets: Mapping[str, list[dict]]) -> tuple[pd.DataFrame, dict[tuple[str, str], int]]:
    """The concept rows write_omop needs; ids of codes without a CONCEPT_ID are local."""
    rows = {}
    for role in sorted(sets):
        for it in sets[role]:
            c = it["concept"]
            key = (c.get("VOCABULARY_ID"), str(c.get("CONCEPT_CODE")))
            rows.setdefault(key, c)
    # codes write_omop writes that a prefix item covers (ICD-10-CM billable codes)
    for code in _WRITE_CODES.values():
        rows.setdefault(("ICD10CM", code), {"VOCABULARY_ID": "ICD10CM", "CONCEPT_CODE": code, "CONCEPT_ID": None,
                                            "CONCEPT_NAME": f"ICD-10-CM {code}", "DOMAIN_ID": "Condition"})
    rows.setdefault(("iop_research", "NALTREXONE_XR"), {
        "VOCABULARY_ID": "iop_research", "CONCEPT_CODE": "NALTREXONE_XR", "CONCEPT_ID": None,
        "CONCEPT_NAME": "naltrexone extended-release injectable suspension (local clinical drug)", "DOMAIN_ID": "Drug"})
    ids: dict[tuple[str, str], int] = {}
    local = _LOCAL_CONCEPT_BASE
    out = []
    for key in sorted(rows, key=lambda k: (str(k[0]), k[1])):
        c = rows[key]
        if c.get("CONCEPT_ID") is not None:
            cid = int(c["CONCEPT_ID"])
        else:
            local += 1
            cid = local
        ids[key] = cid
        out.append({"concept_id": cid, "concept_name": str(c.get("CONCEPT_NAME") or key[1]),
                    "domain_id": str(c.get("DOMAIN_ID") or ""), "vocabulary_id": str(key[0]),
                    "concept_class_id": str(c.get("CONCEPT_CLASS_ID") or ""),
                    "standard_concept": None if key[0] in _CLASSIFICATION_VOCABS else "S",
                    "concept_code": key[1]})
    concept = pd.DataFrame(out)
    concept["valid_start_date"] = pd.Timestamp("1970-01-01")
    concept["valid_end_date"] = pd.Timestamp("2099-12-31")
    concept["invalid_reason"] = pd.array([None] * len(concept), dtype="string")
    concept["standard_concept"] = pd.array(concept["standard_concept"], dtype="string")
    return concept, ids


#: Substance -> ICD-10-CM code write_omop writes (dependence, uncomplicated / poisoning, accidental).
_WRITE_CODES = {
    "dx_opioids": "F11.20", "dx_alcohol": "F10.20", "dx_stimulants": "F14.20", "dx_cannabis": "F12.20",
    "dx_sedatives": "F13.20", "dx_other": "F19.20",
    "od_opioids": "T40.2X1A", "od_alcohol": "T51.0X1A", "od_stimulants": "T40.5X1A",
    "od_cannabis": "T40.7X1A", "od_sedatives": "T42.4X1A", "od_other": "T40.901A",
}
_WRITE_PROCEDURE = {
    Modality.individual.value: ("CPT4", "90834"),
    Modality.group.value: ("CPT4", "90853"),
    Modality.family.value: ("CPT4", "90847"),
    Modality.education.value: ("HCPCS", "H2027"),
    Modality.holistic.value: ("iop_research", "HOLISTIC"),
}
_WRITE_UDS = {
    None: ("LOINC", "19295-5"), "opioids": ("LOINC", "19295-5"), "stimulants": ("LOINC", "19359-9"),
    "cannabis": ("LOINC", "18282-4"), "sedatives": ("LOINC", "14316-4"), "alcohol": ("LOINC", "5644-0"),
    "other": ("LOINC", "19659-2"),
}
_WRITE_DRUG = {
    Medication.buprenorphine.value: ("RxNorm", "1819"),
    Medication.methadone.value: ("RxNorm", "6813"),
    Medication.naltrexone_oral.value: ("RxNorm", "7243"),
    Medication.naltrexone_xr.value: ("iop_research", "NALTREXONE_XR"),
    Medication.acamprosate.value: ("RxNorm", "82819"),
    Medication.disulfiram.value: ("RxNorm", "3554"),
}


def _ancestors(concept: pd.DataFrame, ids: Mapping[tuple[str, str], int]) -> pd.DataFrame:
    """Self rows for standard concepts plus naltrexone -> the local extended-release drug."""
    std = concept.loc[concept["standard_concept"].eq("S"), "concept_id"].astype("int64")
    rows = pd.DataFrame({"ancestor_concept_id": std.to_numpy(), "descendant_concept_id": std.to_numpy(),
                         "min_levels_of_separation": 0, "max_levels_of_separation": 0})
    xr = pd.DataFrame({"ancestor_concept_id": [ids[("RxNorm", "7243")]],
                       "descendant_concept_id": [ids[("iop_research", "NALTREXONE_XR")]],
                       "min_levels_of_separation": [1], "max_levels_of_separation": [1]})
    return pd.concat([rows, xr], ignore_index=True)


def _ts(dates: pd.Series, minutes_after: pd.Series | int = 0) -> pd.Series:
    base = pd.to_datetime(dates).astype("datetime64[ns]") + pd.Timedelta(hours=9)
    return base + pd.to_timedelta(minutes_after, unit="m")


def _omop_frames(data: IOPData) -> dict[str, pd.DataFrame]:
    sets = load_concept_sets()
    concept, ids = _vocabulary(sets)
    pats = data.patients.reset_index(drop=True)
    person_id = pd.Series(np.arange(1, len(pats) + 1, dtype="int64"), index=pats[Col.patient_id].astype(str))
    rev_race = {v: k for k, v in _RACE.items()}
    rev_eth = {v: k for k, v in _ETHNICITY.items()}
    rev_sex = {v: k for k, v in _GENDER.items()}

    def pid(s):
        out = s.astype(str).map(person_id)
        if out.isna().any():
            bad = s[out.isna()].astype(str).unique()[:5]
            raise DataReadError(f"write_omop: patient_id(s) {', '.join(bad)} are not in patients; "
                                "validate the data first (data.validate()).")
        return out.astype("int64").to_numpy()

    def concept_of(key):
        return ids[key]

    def text(s):
        return pd.array(s.astype(object).where(s.notna(), None), dtype="string")

    race = pats[Col.race].map(rev_race)
    eth = pats[Col.ethnicity].map(rev_eth)
    person = pd.DataFrame({
        "person_id": person_id.to_numpy(),
        "gender_concept_id": pats[Col.sex].map(rev_sex).fillna(0).astype("int64").to_numpy(),
        "year_of_birth": pats[Col.birth_year].astype("int64").to_numpy(),
        "race_concept_id": race.fillna(0).astype("int64").to_numpy(),
        "ethnicity_concept_id": eth.fillna(0).astype("int64").to_numpy(),
        "person_source_value": pats[Col.patient_id].astype(str).to_numpy(),
        "race_source_value": text(pats[Col.race].where(race.isna())),
        "ethnicity_source_value": text(pats[Col.ethnicity].where(eth.isna())),
    })
    obs = data.observation
    first = pd.concat([
        data.sessions[[Col.patient_id]].assign(d=data.sessions[Col.session_date]),
        data.admissions[[Col.patient_id]].assign(d=data.admissions[Col.admit_date]),
        data.events[[Col.patient_id]].assign(d=data.events[Col.event_date]),
        data.medications[[Col.patient_id]].assign(d=data.medications[Col.dispense_date]),
    ]).groupby(Col.patient_id)["d"].min()
    start = obs[Col.patient_id].map(first).fillna(obs[Col.observation_end])
    observation_period = pd.DataFrame({
        "observation_period_id": np.arange(1, len(obs) + 1, dtype="int64"),
        "person_id": pid(obs[Col.patient_id]),
        "observation_period_start_date": pd.to_datetime(start).dt.normalize().astype("datetime64[ns]").to_numpy(),
        "observation_period_end_date": pd.to_datetime(obs[Col.observation_end]).astype("datetime64[ns]").to_numpy(),
        "period_type_concept_id": _TYPE_EHR,
    })
    # sessions: one procedure per attended session (no-shows are not recorded in OMOP)
    ses = data.sessions.loc[data.sessions[Col.attended].astype(bool)].reset_index(drop=True)
    proc_concept = ses[Col.modality].map({m: concept_of(k) for m, k in _WRITE_PROCEDURE.items()})
    sessions_po = pd.DataFrame({
        "person_id": pid(ses[Col.patient_id]),
        "procedure_concept_id": proc_concept.astype("int64").to_numpy(),
        "procedure_date": pd.to_datetime(ses[Col.session_date]).astype("datetime64[ns]").to_numpy(),
        "procedure_datetime": _ts(ses[Col.session_date]).to_numpy(),
        "procedure_end_datetime": _ts(ses[Col.session_date], ses[Col.minutes].astype("int64")).to_numpy(),
        "visit_occurrence_id": pd.array([pd.NA] * len(ses), dtype="Int64"),
    })
    ev = data.events.reset_index(drop=True)
    etype = ev[Col.event_type].astype(str)
    # visits for ED visits and readmissions, each with a same-visit diagnosis of its substance
    vis_ev = ev.loc[etype.isin([EventType.ed_visit.value, EventType.readmission.value])].reset_index(drop=True)
    visit_ids = np.arange(1, len(vis_ev) + 1, dtype="int64")
    is_ed = vis_ev[Col.event_type].eq(EventType.ed_visit.value).to_numpy()
    visit = pd.DataFrame({
        "visit_occurrence_id": visit_ids,
        "person_id": pid(vis_ev[Col.patient_id]),
        "visit_concept_id": np.where(is_ed, 9203, 9201).astype("int64"),
        "visit_start_date": pd.to_datetime(vis_ev[Col.event_date]).astype("datetime64[ns]").to_numpy(),
        "visit_end_date": pd.to_datetime(vis_ev[Col.event_date]).astype("datetime64[ns]").to_numpy(),
        "visit_start_datetime": _ts(vis_ev[Col.event_date]).to_numpy(),
        "visit_end_datetime": _ts(vis_ev[Col.event_date], 60).to_numpy(),
        "visit_type_concept_id": _TYPE_EHR,
        "visit_source_concept_id": 0,
    })
    ed_no_sub = is_ed & vis_ev[Col.substance].isna().to_numpy()
    if ed_no_sub.any():
        raise DataReadError(
            f"write_omop: {int(ed_no_sub.sum())} ed_visit event(s) without a substance; OMOP carries a "
            "substance-related ED visit as a visit with a same-visit diagnosis. Set their substance."
        )
    has_dx = vis_ev[Col.substance].notna().to_numpy()
    dx_code = vis_ev[Col.substance].map(lambda s: _WRITE_CODES.get(f"dx_{s}") if isinstance(s, str) else None)
    dx_rows = pd.DataFrame({
        "person_id": pid(vis_ev[Col.patient_id])[has_dx],
        "condition_concept_id": 0,
        "condition_source_concept_id": dx_code[has_dx].map(lambda c: concept_of(("ICD10CM", c))).astype("int64").to_numpy(),
        "condition_start_date": visit["visit_start_date"].to_numpy()[has_dx],
        "visit_occurrence_id": visit_ids[has_dx],
    })
    readm = ~is_ed
    readm_po = pd.DataFrame({
        "person_id": pid(vis_ev[Col.patient_id])[readm],
        "procedure_concept_id": concept_of(("HCPCS", "H0018")),
        "procedure_date": visit["visit_start_date"].to_numpy()[readm],
        "procedure_datetime": visit["visit_start_datetime"].to_numpy()[readm],
        "procedure_end_datetime": visit["visit_start_datetime"].to_numpy()[readm],
        "visit_occurrence_id": pd.array(visit_ids[readm], dtype="Int64"),
    })
    after = ev.loc[etype.eq(EventType.aftercare_contact.value)]
    after_po = pd.DataFrame({
        "person_id": pid(after[Col.patient_id]),
        "procedure_concept_id": concept_of(("iop_research", "AFTERCARE")),
        "procedure_date": pd.to_datetime(after[Col.event_date]).astype("datetime64[ns]").to_numpy(),
        "procedure_datetime": _ts(after[Col.event_date]).to_numpy(),
        "procedure_end_datetime": _ts(after[Col.event_date]).to_numpy(),
        "visit_occurrence_id": pd.array([pd.NA] * len(after), dtype="Int64"),
    })
    po = pd.concat([sessions_po, readm_po, after_po], ignore_index=True)
    po.insert(0, "procedure_occurrence_id", np.arange(1, len(po) + 1, dtype="int64"))
    po["procedure_type_concept_id"] = _TYPE_EHR
    po["procedure_source_concept_id"] = 0
    # overdoses
    od = ev.loc[etype.eq(EventType.overdose.value)]
    od_code = od[Col.substance].map(lambda s: _WRITE_CODES.get(f"od_{s if isinstance(s, str) else 'other'}"))
    od_rows = pd.DataFrame({
        "person_id": pid(od[Col.patient_id]),
        "condition_concept_id": 0,
        "condition_source_concept_id": od_code.map(lambda c: concept_of(("ICD10CM", c))).astype("int64").to_numpy(),
        "condition_start_date": pd.to_datetime(od[Col.event_date]).astype("datetime64[ns]").to_numpy(),
        "visit_occurrence_id": pd.array([pd.NA] * len(od), dtype="Int64"),
    })
    co = pd.concat([dx_rows.astype({"visit_occurrence_id": "Int64"}), od_rows], ignore_index=True)
    co.insert(0, "condition_occurrence_id", np.arange(1, len(co) + 1, dtype="int64"))
    co["condition_type_concept_id"] = _TYPE_EHR
    # urine drug screens
    # screens done (positive / negative); a missed screen is not a measurement (module docstring)
    uds = ev.loc[etype.eq(EventType.uds.value) & ev[Col.result].isin([UdsResult.positive.value,
                                                                      UdsResult.negative.value])]
    uds_sub = uds[Col.substance].where(uds[Col.result].eq(UdsResult.positive.value))
    uds_key = uds_sub.map(lambda s: _WRITE_UDS[s if isinstance(s, str) else None])
    res = uds[Col.result].map({UdsResult.positive.value: 9191, UdsResult.negative.value: 9189})
    measurement = pd.DataFrame({
        "measurement_id": np.arange(1, len(uds) + 1, dtype="int64"),
        "person_id": pid(uds[Col.patient_id]),
        "measurement_concept_id": uds_key.map(concept_of).astype("int64").to_numpy(),
        "measurement_date": pd.to_datetime(uds[Col.event_date]).astype("datetime64[ns]").to_numpy(),
        "measurement_type_concept_id": _TYPE_EHR,
        "value_as_number": np.full(len(uds), np.nan),
        "value_as_concept_id": res.fillna(0).astype("int64").to_numpy(),
        "range_high": np.full(len(uds), np.nan),
    })
    # self-reported use
    sr = ev.loc[etype.eq(EventType.self_report_use.value)]
    observation = pd.DataFrame({
        "observation_id": np.arange(1, len(sr) + 1, dtype="int64"),
        "person_id": pid(sr[Col.patient_id]),
        "observation_concept_id": concept_of(("iop_research", "SELF_REPORT_USE")),
        "observation_date": pd.to_datetime(sr[Col.event_date]).astype("datetime64[ns]").to_numpy(),
        "observation_type_concept_id": _TYPE_EHR,
        "value_as_string": text(sr[Col.substance]),
    })
    dead = ev.loc[etype.eq(EventType.death.value)]
    death = pd.DataFrame({
        "person_id": pid(dead[Col.patient_id]),
        "death_date": pd.to_datetime(dead[Col.event_date]).astype("datetime64[ns]").to_numpy(),
        "death_type_concept_id": _DEATH_TYPE,
    })
    med = data.medications.reset_index(drop=True)
    disp = pd.to_datetime(med[Col.dispense_date]).astype("datetime64[ns]")
    supply = med[Col.days_supply].astype("int64")
    drug_exposure = pd.DataFrame({
        "drug_exposure_id": np.arange(1, len(med) + 1, dtype="int64"),
        "person_id": pid(med[Col.patient_id]),
        "drug_concept_id": med[Col.medication].map(lambda m: concept_of(_WRITE_DRUG[m])).astype("int64").to_numpy(),
        "drug_exposure_start_date": disp.to_numpy(),
        "drug_exposure_end_date": (disp + pd.to_timedelta(supply - 1, unit="D")).to_numpy(),
        "drug_type_concept_id": _TYPE_EHR,
        "days_supply": supply.to_numpy(),
        "quantity": np.full(len(med), np.nan),
        "route_concept_id": np.where(med[Col.medication].eq(Medication.naltrexone_xr.value), 4302612, 4132161)
        .astype("int64"),
    })
    return {
        "person": person, "observation_period": observation_period, "visit_occurrence": visit,
        "procedure_occurrence": po, "condition_occurrence": co, "measurement": measurement,
        "observation": observation, "death": death, "drug_exposure": drug_exposure,
        "concept": concept, "concept_ancestor": _ancestors(concept, ids),
    }


def write_omop(data: IOPData, con, *, cdm_schema: str | None = None, overwrite: bool = True) -> None:
    """Write an :class:`IOPData` as OMOP CDM tables (with the vocabulary subset it uses).

    Tables written: ``person, observation_period, visit_occurrence, procedure_occurrence,
    condition_occurrence, measurement, observation, death, drug_exposure, concept,
    concept_ancestor`` (CDM v5.4 column names; only the columns :func:`read_omop` and a
    reader of the CDM need). Sessions become procedures (CPT 90834 individual, 90853
    group, 90847 family, HCPCS H2027 education, a local concept for holistic) with start
    and end datetimes; ED visits and readmissions become visits with a same-visit
    diagnosis of their substance (ICD-10-CM F1x.20); overdoses become diagnoses
    (T40.2X1A, T51.0X1A, ...); screens become LOINC measurements with value concept
    9191/9189; self-reported use becomes an ``observation`` row; naltrexone_xr becomes a
    local clinical drug below naltrexone in ``concept_ancestor`` with route 4302612.
    Concepts without a verified Athena id get local ids from 2,000,000,001 on.

    Parameters
    ----------
    data : IOPData
        Validated tables (e.g. :func:`iop_research.data.synth.simulate_cohort`).
    con : ibis backend or str
        Target database (see :func:`read_omop`).
    cdm_schema : str, optional
        Schema to write into (created when missing).
    overwrite : bool, default True
        Replace existing tables of the same names.

    Raises
    ------
    DataReadError
        Unreachable database; rows whose patient is not in ``patients``; substance-less ED visits.

    Notes
    -----
    Not written (OMOP cannot carry them): admissions, session episode ids, no-shows,
    ``dose_mg``, the substance of negative screens, missed screens (``result = "missed"``: not a
    performed measurement); see the module docstring.
    """
    if not isinstance(data, IOPData):
        raise DataReadError(f"write_omop: data must be an IOPData, got {type(data).__name__}.")
    frames = _omop_frames(data)
    opened = isinstance(con, (str, Path))
    con = _connect(con)
    try:
        _write(con, frames, cdm_schema, overwrite)
    finally:
        if opened:
            con.disconnect()


def _write(con, frames, cdm_schema, overwrite) -> None:
    if cdm_schema:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            con.create_database(cdm_schema, force=True)  # IF NOT EXISTS
    for name, df in frames.items():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
            if cdm_schema:
                con.create_table(name, df, database=cdm_schema, overwrite=overwrite)
            else:
                con.create_table(name, df, overwrite=overwrite)
