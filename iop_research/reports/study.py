"""A study, prepared for its report templates: data, cohort, outcome, exposures, adjusted models.

The study report templates (``iop_research/reports/templates``) stay thin:
parameters -> :func:`prepare_study` -> one question helper -> publish. Every
setting they use comes from the study file (:mod:`iop_research.reports.config`);
everything the data decide (how many programmes, which covariates vary, which
questions can be answered) is computed here from the data and explained in
words the templates publish, never assumed.

Conventions
-----------
- Time zero is admission; relapse follows :class:`~iop_research.derive.outcomes.RelapseDefinition`
  built from ``[outcome]``; death competes (censors in Cox models).
- Covariates come from the cohort's episodes (intake values), one row per
  episode (:attr:`StudyData.baseline`), and are joined by ``episode_id`` to
  every analysis frame. A covariate that is entirely missing or has a single
  level in the cohort cannot be adjusted for; it is left out of every model and
  the reason is returned (:attr:`StudyData.covariate_notes`), never silently.
- Missing covariate values follow ``[missing] policy`` (:func:`fit_adjusted`):
  complete case (the dropped episodes are counted), a missing-indicator
  category, or multiple imputation by chained equations pooled with Rubin's
  rules (imputed per episode, then joined to long frames).
- Exposures measured after time zero use an immortal-time-safe design
  (``[comparison] design``): a landmark at ``window_days`` (exposure fixed in
  ``[0, L)``, follow-up from ``L`` among those still at risk) or time-varying
  ``(start, stop]`` rows (R: ``coxph(Surv(start, stop, event) ~ ...)``).

References
----------
.. [1] Suissa S. Immortal time bias in pharmaco-epidemiology. Am J Epidemiol 2008;167:492-9.
.. [2] Dafni U. Landmark analysis at the 25-year landmark point. Circ Cardiovasc Qual Outcomes 2011;4:363-71.
.. [3] Rubin DB. Multiple Imputation for Nonresponse in Surveys. Wiley, 1987.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import ModelSpecificationError
from iop_research.reports.config import (
    INTAKE_COVARIATES, MODALITIES, QUESTIONS, StudyConfig, load_study, settings_used_by,
)

__all__ = [
    "StudyData", "AdjustedFit", "ModalityExposure", "prepare_study", "question_availability", "fit_adjusted",
    "term_labels", "VARIABLE_LABELS", "modality_exposure", "weekly_modality_dose", "applied_settings",
    "DEFAULT_MODALITY_EXPOSURE", "group_col", "by_group_text", "cohort_summary", "attrition_table",
    "table_one_frames", "table_one_notes", "los_figure", "retention_frame", "discharge_counts", "cif_figure",
    "cif_at_horizons", "gray_tests", "model_frame", "side_by_side", "model_notes", "forest_figure", "km_figure",
    "km_summary", "km_tests", "rmst_table", "exposure_counts", "mat_time_varying_frame", "mat_counts", "mat_landmarks",
    "mat_forest", "recurrence_frame", "relapses_per_patient", "mean_cumulative_relapses", "save_prepared", "record_summary", "quiet_engine", "hr_headline", "km_headline",
]

#: Human-readable names of the analysis variables (tables, forest plots).
VARIABLE_LABELS: dict[str, str] = {
    "program": "Programme", "age": "Age (years)", "sex": "Sex", "referral_source": "Referral",
    "primary_substance": "Primary substance", "psychiatric_comorbidity": "Psychiatric comorbidity",
    "prior_treatment_episodes": "Prior treatment episodes", "severity_score": "Severity score",
    "housing": "Housing", "employment": "Employment", "admit_year": "Year of admission",
    "exposure": "Exposure", "dose_per_week": "Sessions per week", "in_treatment": "In treatment",
    "on_mat": "On MAT", "mat_by_landmark": "MAT started by the landmark", "los_days": "Length of stay (days)",
}

#: The modality question's exposure when the study file does not define one.
DEFAULT_MODALITY_EXPOSURE = {"exposure": "modality_any", "modality": "family", "window_days": 30,
                             "design": "landmark"}

_CATEGORICAL = ("program", "sex", "referral_source", "primary_substance", "housing", "employment")


def _label_level(value: Any) -> str:
    text = str(value)
    if text in ("True", "False"):
        return "yes" if text == "True" else "no"
    return text.replace("_", " ")


def term_labels(terms: Sequence[str], *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Readable labels for model terms (``"program[T.Site B]"`` -> ``"Programme: Site B"``).

    Parameters
    ----------
    terms : sequence of str
        Term names as in a result's ``tidy["term"]``.
    extra : mapping, optional
        Variable labels that override :data:`VARIABLE_LABELS`; a key equal to a whole term
        (``"exposure[T.any]"``) labels that term as given.

    Returns
    -------
    dict
        ``{term: label}`` for every term.

    Examples
    --------
    >>> term_labels(["program[T.Site B]", "age", "housing[T.missing]"])
    {'program[T.Site B]': 'Programme: Site B', 'age': 'Age (years)', 'housing[T.missing]': 'Housing: missing'}
    """
    names = {**VARIABLE_LABELS, **dict(extra or {})}
    out = {}
    for term in terms:
        if extra and term in extra:
            out[term] = extra[term]
        elif "[T." in term and term.endswith("]"):
            var, level = term[:-1].split("[T.", 1)
            out[term] = f"{names.get(var, var.replace('_', ' '))}: {_label_level(level)}"
        else:
            out[term] = names.get(term, term.replace("_", " "))
    return out


@dataclass(frozen=True)
class AdjustedFit:
    """A model fitted under the study's missing-covariate policy.

    Attributes
    ----------
    result : Result
        The fit (pooled over imputations under multiple imputation).
    covariates : list of str
        Covariates in the model (indicator columns included).
    policy : str
    n_rows : int
        Rows of the frame the model used.
    n_episodes : int
        Episodes the model used.
    n_dropped : int
        Episodes dropped for missing covariates (complete case; else 0).
    method : str
        One sentence describing the handling, for a table footnote.
    """

    result: Any
    covariates: list
    policy: str
    n_rows: int
    n_episodes: int
    n_dropped: int
    method: str
    pooled: list = field(default_factory=list)


@dataclass
class StudyData:
    """Everything a report template needs, prepared once from the study file.

    Attributes
    ----------
    config : StudyConfig
    data : IOPData
        The validated contract tables.
    data_label : str
        Where the data came from (for the provenance; no path components of a
        patient's record).
    episodes : pandas.DataFrame
        All episodes (:func:`~iop_research.derive.episodes.build_episodes`).
    cohort_episodes : pandas.DataFrame
        Episodes meeting ``[cohort]`` (before outcome exclusions).
    baseline : pandas.DataFrame
        One row per cohort episode: ``episode_id, patient_id`` and the intake covariates.
    frame : pandas.DataFrame
        Time to relapse (``survival_frame``) of the cohort with the baseline covariates.
    attrition : Attrition
        Cohort criteria and outcome exclusions, in order.
    definition : RelapseDefinition
    covariates : list of str
        Covariates every model adjusts for (usable in this cohort).
    covariate_notes : list of str
        Why requested covariates were left out.
    availability : dict
        Per question, ``None`` if the data allow it, else the reason.
    questions : list of str
        Questions this study answers (requested, or every one the data allow).
    """

    config: StudyConfig
    data: Any
    data_label: str
    episodes: pd.DataFrame
    cohort_episodes: pd.DataFrame
    baseline: pd.DataFrame
    frame: pd.DataFrame
    attrition: Any
    definition: Any
    covariates: list
    covariate_notes: list
    availability: dict = field(default_factory=dict)
    questions: list = field(default_factory=list)

    @property
    def min_cell_count(self) -> int:
        """``[privacy] min_cell_count``."""
        return int(self.config.get("privacy.min_cell_count"))

    @property
    def horizons(self) -> list[int]:
        """``[horizons] days``."""
        return list(self.config.get("horizons.days"))

    @property
    def docx(self) -> bool:
        """Whether Table 1 and model tables are also written as Word files (``[report] formats``)."""
        return "docx" in self.config.get("report.formats")

    @property
    def title(self) -> str:
        """``[report] title``, or a title made from the questions."""
        return self.config.get("report.title") or "IOP outcomes study"

    @property
    def n_programs(self) -> int:
        """Programmes in the cohort."""
        return int(self.baseline["program"].nunique()) if "program" in self.baseline else 0

    def with_baseline(self, frame: pd.DataFrame, covariates: Sequence[str] | None = None) -> pd.DataFrame:
        """``frame`` joined (by ``episode_id``) with the baseline covariates (default: the model covariates)."""
        cols = list(self.covariates if covariates is None else covariates)
        cols = [c for c in cols if c not in frame.columns or c == "episode_id"]
        if not cols:
            return frame
        return frame.merge(self.baseline[["episode_id"] + cols], on="episode_id", how="left", validate="many_to_one")

    def publisher(self, report: str, *, out_dir: str | os.PathLike | None = None):
        """The publishing channel of one report (:class:`iop_research.present.publish.Publisher`)."""
        from iop_research.present.publish import Publisher

        kwargs = {}
        reason = self.config.get("privacy.min_cell_count_override")
        if reason is not None:
            kwargs["min_cell_count_override"] = reason
        return Publisher(min_cell_count=self.min_cell_count, out_dir=out_dir, report=report, **kwargs)

    def settings(self, question: str) -> pd.DataFrame:
        """The study-file settings that act on the report of ``question`` (see :func:`applied_settings`)."""
        return applied_settings(self.config, question)


def applied_settings(config: StudyConfig, question: str) -> pd.DataFrame:
    """The settings that act on one question's report, with whether the study file set them.

    Keys that cannot act under the chosen options are left out (e.g.
    ``comparison.groups`` unless the exposure is a modality mix), so a report
    never shows a parameter that did not act.

    Returns
    -------
    pandas.DataFrame
        ``setting, value, source`` (``"study file"`` or ``"default"``).
    """
    keys = settings_used_by(question)
    exposure = config.get("comparison.exposure")
    design = config.get("comparison.design")
    policy = config.get("missing.policy")
    skip = {"data.path", "data.mapping"}  # shown in the provenance, not as an analysis setting
    if exposure != "modality_mix":
        skip |= {"comparison.groups"}
    if exposure == "modality_dose":
        skip |= {"comparison.reference"}
    if exposure == "modality_mix":
        skip |= {"comparison.modality"}
    if exposure == "modality_dose" and design == "time_varying":
        skip |= {"comparison.window_days"}
    if policy != "multiple_imputation":
        skip |= {"missing.m", "missing.seed"}
    if config.get("privacy.min_cell_count_override") is None:
        skip |= {"privacy.min_cell_count_override"}
    if config.get("mat.design") != "ccw":
        skip |= {"mat.grace_days", "mat.horizon_days", "mat.n_bootstrap", "mat.seed"}
    if config.get("screens.missed_rule") != "impute":
        skip |= {"screens.m", "screens.seed"}
    if question == "screens":  # [comparison] modality and window_days act on it only through its modality exposure
        if config.get("screens.exposure") == "modality":
            skip -= {"comparison.modality", "comparison.window_days"}
        else:
            skip |= {"comparison.modality", "comparison.window_days"}
    if config.get("screens.model") != "gee":
        skip |= {"screens.corstr"}
    rows = []
    for key in keys:
        if key in skip:
            continue
        value = config.get(key)
        if key == "report.formats":
            continue  # output formats: listed in the provenance
        text = "all" if value is None and key in ("cohort.primary_substances", "cohort.programs") else (
            "not applied" if value is None else (", ".join(map(str, value)) if isinstance(value, list) else str(value)))
        rows.append({"setting": key, "value": text, "source": "study file" if key in config.given else "default"})
    return pd.DataFrame(rows, columns=["setting", "value", "source"])


def _read(config: StudyConfig, data_path, data) -> tuple[Any, str]:
    from iop_research.data.io import read_data
    from iop_research.datasets.loaders import load_demo

    if data is not None:
        return data, "data passed in"
    if data_path is None:
        data_path = config.get("data.path")
    if data_path is not None:
        return read_data(data_path, validate=True), "contract tables"
    mapping = config.get("data.mapping")
    if mapping is not None:
        from iop_research.data.mapping import map_extract

        mapped, _report = map_extract(mapping)
        return mapped, "extract mapped by a mapping file"
    omop = config.get("data.omop")
    if omop is not None:
        from iop_research.datasets.omop import omop_source, read_omop

        schema, sets = config.get("data.cdm_schema"), config.get("data.concept_sets")
        # person_id values are plain numbers, which the privacy gate cannot tell from counts
        return (read_omop(omop, cdm_schema=schema, concept_sets=sets, patient_id_prefix="person-"),
                omop_source(omop, cdm_schema=schema, concept_sets=sets))
    return load_demo(), "bundled demo cohort (simulated)"


def _baseline(episodes: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"episode_id": episodes["episode_id"].to_numpy(), "patient_id": episodes["patient_id"].to_numpy()})
    for col in INTAKE_COVARIATES:
        if col == "age":
            out["age"] = episodes["age_at_admit"].to_numpy(dtype=float)
        elif col == "admit_year":
            out["admit_year"] = pd.to_datetime(episodes["admit_date"]).dt.year.to_numpy()
        elif col in episodes.columns:
            s = episodes[col]
            if col in _CATEGORICAL or s.dtype == bool:
                vals = s.astype("object").where(s.notna(), None)
                out[col] = pd.Series([None if v is None else str(v) for v in vals], dtype="object")
            else:
                out[col] = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    if "psychiatric_comorbidity" in out:
        out["psychiatric_comorbidity"] = out["psychiatric_comorbidity"].map(
            {"True": "yes", "False": "no", "true": "yes", "false": "no", "1": "yes", "0": "no"}).where(
            out["psychiatric_comorbidity"].notna(), None)
    return out


def _usable_covariates(baseline: pd.DataFrame, requested: Sequence[str], explicit: bool) -> tuple[list, list]:
    usable, notes = [], []
    for col in requested:
        label = VARIABLE_LABELS.get(col, col)
        if col not in baseline.columns:
            notes.append(f"{label} is not in the data and is not adjusted for.")
            continue
        s = baseline[col]
        if s.notna().sum() == 0:
            notes.append(f"{label} is missing for every episode of the cohort and is not adjusted for.")
        elif s.dropna().nunique() < 2:
            notes.append(f"{label} takes a single value in the cohort and is not adjusted for.")
        else:
            usable.append(col)
    return usable, notes


def question_availability(study: "StudyData") -> dict[str, str | None]:
    """For each question, ``None`` if the cohort's data allow it, else the reason they do not."""
    frame, ce, data = study.frame, study.cohort_episodes, study.data
    out: dict[str, str | None] = {q: None for q in QUESTIONS}
    if len(ce) == 0:
        return {q: "the cohort is empty" for q in QUESTIONS}
    reasons = ce["discharge_reason"].dropna()
    if len(reasons) == 0:
        out["retention"] = "no episode of the cohort has a discharge reason"
    elif not (reasons == "dropped_out").any():
        out["retention"] = "no episode of the cohort ended by dropping out"
    n_events = int(frame["event"].sum()) if len(frame) else 0
    if n_events == 0:
        for q in ("relapse", "modalities", "mat", "recurrence"):
            out[q] = "no relapse is recorded in the cohort's follow-up"
        return out
    sessions = data.sessions
    if len(sessions) == 0 or "modality" not in sessions.columns or sessions["modality"].isna().all():
        out["modalities"] = "the data have no therapy sessions with a modality"
    else:
        cmp_ = study.config.settings["comparison"]
        if cmp_["exposure"] != "modality_mix":
            mod = cmp_["modality"]
            att = sessions["attended"].astype(bool) if "attended" in sessions.columns else True
            if not ((sessions["modality"] == mod) & att).any():
                out["modalities"] = f"no attended {mod} session is recorded"
    meds = data.medications
    if len(meds) == 0:
        out["mat"] = "the data have no MAT dispensings"
    else:
        has = ce["has_mat"].astype(bool) if "has_mat" in ce.columns else pd.Series(False, index=ce.index)
        if not has.any():
            out["mat"] = "no episode of the cohort overlaps a MAT era"
        elif has.all():
            out["mat"] = "every episode of the cohort overlaps a MAT era (no comparison group)"
    return out


def prepare_study(study: Mapping[str, Any] | StudyConfig | None = None, *, data_path: str | os.PathLike | None = None,
                  data: Any = None, prepared: str | os.PathLike | None = None) -> StudyData:
    """Load, validate and prepare the data of a study.

    Parameters
    ----------
    study : mapping or StudyConfig, optional
        The study settings (``{section: {key: value}}``, as the templates'
        ``study`` parameter) or a loaded :class:`StudyConfig`; ``None``: defaults.
    data_path : path-like, optional
        Contract tables; overrides ``[data] path`` (the ``--data`` option).
    data : IOPData, optional
        Already loaded tables (tests, notebooks); overrides both.
    prepared : path-like, optional
        A pickle written by :func:`save_prepared` for the same settings (the
        report build prepares the study once for all its reports). Its settings
        must equal ``study``'s, else the study is prepared afresh.

    Returns
    -------
    StudyData

    Raises
    ------
    DataReadError
        Bad study settings, unreadable data.
    DataValidationError
        The data break the contract.
    ModelSpecificationError
        The study file asks for a question the data do not allow (the reason is named).
    """
    from iop_research.derive.cohorts import Attrition, CohortDefinition, select_cohort
    from iop_research.derive.episodes import build_episodes
    from iop_research.derive.frames import survival_frame
    from iop_research.derive.outcomes import RelapseDefinition

    config = study if isinstance(study, StudyConfig) else load_study(settings=study)
    if prepared is not None and data is None and os.path.isfile(prepared):
        import pickle

        with open(prepared, "rb") as fh:
            cached = pickle.load(fh)
        if isinstance(cached, StudyData) and cached.config.to_dict() == config.to_dict():
            cached.config = config
            return cached
    data, label = _read(config, data_path, data)
    # no admissions (an OMOP CDM, claims): episodes from attended sessions by the 30-day gap rule
    episodes = build_episodes(data, mode="admissions" if len(data.admissions) else "sessions", engine=quiet_engine())
    c = config.settings["cohort"]
    obs = data.observation[["patient_id", "observation_end"]]
    eps = episodes.assign(age=episodes["age_at_admit"]).merge(obs, on="patient_id", how="left", validate="many_to_one")
    definition_c = CohortDefinition(
        min_age=c["min_age"], max_age=c["max_age"], primary_substances=c["primary_substances"],
        programs=c["programs"], admit_from=None if c["admit_from"] is None else pd.Timestamp(c["admit_from"]),
        admit_to=None if c["admit_to"] is None else pd.Timestamp(c["admit_to"]),
        first_episode_only=c["first_episode_only"], min_followup_days=c["min_followup_days"],
    )
    attrition = Attrition()
    selected, _ = select_cohort(eps, definition_c, attrition=attrition)
    cohort_episodes = episodes[episodes["episode_id"].isin(selected["episode_id"])].reset_index(drop=True)
    o = config.settings["outcome"]
    definition = RelapseDefinition(sources=tuple(o["sources"]), blanking_days=o["blanking_days"],
                                   max_followup_days=o["max_followup_days"])
    baseline = _baseline(cohort_episodes)
    if len(cohort_episodes):
        frame = survival_frame(data, definition=definition, episodes=cohort_episodes, covariates=None,
                               attrition=attrition, engine=quiet_engine())
    else:
        frame = pd.DataFrame(columns=["episode_id", "patient_id", "time", "event", "status"])
    requested = config.get("covariates.adjust")
    explicit = requested is not None
    if requested is None:
        requested = [c_ for c_ in INTAKE_COVARIATES if c_ != "admit_year"]
    covariates, notes = _usable_covariates(baseline, requested, explicit)
    frame = frame.merge(baseline.drop(columns="patient_id"), on="episode_id", how="left", validate="one_to_one")
    sd = StudyData(config=config, data=data, data_label=label, episodes=episodes, cohort_episodes=cohort_episodes,
                   baseline=baseline, frame=frame, attrition=attrition, definition=definition,
                   covariates=covariates, covariate_notes=notes)
    sd.availability = question_availability(sd)
    if config.get("missing.policy") == "multiple_imputation":  # the study file refuses it when asked for by name
        sd.availability["programmes"] = ("the programme comparison's case-mix model does not support [missing] policy "
                                         "= \"multiple_imputation\" (use complete_case or indicator)")
    wanted = config.get("report.questions")
    if wanted is None:
        sd.questions = [q for q in QUESTIONS if sd.availability[q] is None]
    else:
        blocked = {q: sd.availability[q] for q in wanted if sd.availability[q] is not None}
        if blocked:
            raise ModelSpecificationError(
                "The study file asks for question(s) these data cannot answer: "
                + "; ".join(f"{q}: {why}" for q, why in blocked.items())
                + ". Remove them from [report] questions, or widen the cohort.")
        sd.questions = [q for q in QUESTIONS if q in wanted]
    return sd


def quiet_engine():
    """A fresh in-process DuckDB backend (Ibis) with its progress bar off.

    DuckDB draws a progress bar (on stderr, or as a widget in Jupyter) for
    queries that run longer than two seconds; in a study report that would be
    output outside the publishing channel. One backend per derivation call, so
    temporary tables do not accumulate.
    """
    import duckdb
    import ibis

    backend = ibis.duckdb.connect()
    try:
        backend.raw_sql("SET enable_progress_bar = false")
    except duckdb.Error:
        # in a Jupyter kernel without ipywidgets DuckDB refuses to touch the setting: it cannot
        # draw its (widget) progress bar there either, so nothing is shown
        pass
    return backend


# ----------------------------------------------------------------------------- models
def _episode_level(df: pd.DataFrame) -> bool:
    return df["episode_id"].is_unique


def fit_adjusted(study: StudyData, df: pd.DataFrame, *, fit: Callable[..., Any], exposure: Sequence[str] = (),
                 covariates: Sequence[str] | None = None, **fit_kwargs) -> AdjustedFit:
    """Fit ``fit(df, covariates=exposure + covariates, **fit_kwargs)`` under the study's missing-data policy.

    Parameters
    ----------
    study : StudyData
    df : pandas.DataFrame
        Analysis frame (one row per episode or per ``(start, stop]`` row) with
        ``episode_id`` and the covariates joined (:meth:`StudyData.with_baseline`).
    fit : callable
        An estimator taking ``covariates=`` (``fit_cox``, ``fit_fine_gray``, ...).
    exposure : sequence of str
        Exposure columns (never missing) entered first.
    covariates : sequence of str, optional
        Default ``study.covariates``.

    Returns
    -------
    AdjustedFit

    Notes
    -----
    ``multiple_imputation`` imputes the covariates per episode with
    :func:`iop_research.derive.impute.impute_chained` (``m`` and ``seed`` from
    ``[missing]``), joins each completed set to ``df``, fits each and pools with
    :func:`iop_research.derive.impute.pool_rubin` (Rubin's rules).
    """
    covs = list(study.covariates if covariates is None else covariates)
    covs = [c for c in covs if c in df.columns and c not in exposure]
    df, covs, pooled = _pool_sparse_levels(df, covs, fit_kwargs, study.min_cell_count)
    policy = study.config.get("missing.policy")
    n_eps = int(df["episode_id"].nunique())
    missing_any = bool(covs) and bool(df[covs].isna().any().any())
    if not missing_any:
        res = fit(df, covariates=list(exposure) + covs, **fit_kwargs)
        return AdjustedFit(res, list(exposure) + covs, policy, len(df), n_eps, 0,
                           "No adjustment covariate had missing values.", pooled)
    from iop_research.derive import impute

    if policy == "complete_case":
        kept, _row = impute.complete_case(df, covs)
        n_drop = n_eps - int(kept["episode_id"].nunique())
        res = fit(kept, covariates=list(exposure) + covs, **fit_kwargs)
        return AdjustedFit(res, list(exposure) + covs, policy, len(kept), n_eps - n_drop, n_drop,
                           "Complete-case analysis: episodes with a missing adjustment covariate were left out.", pooled)
    if policy == "indicator":
        filled, covs2 = impute.missing_indicator(df, covs)
        res = fit(filled, covariates=list(exposure) + list(covs2), **fit_kwargs)
        return AdjustedFit(res, list(exposure) + list(covs2), policy, len(filled), n_eps, 0,
                           "Missing covariate values entered the model as their own category (missing indicator).",
                           pooled)
    m, seed = int(study.config.get("missing.m")), int(study.config.get("missing.seed"))
    per_episode = df.drop_duplicates("episode_id")[["episode_id"] + covs].reset_index(drop=True)
    completed = impute.impute_chained(per_episode, covs, m=m, seed=seed)
    rest = df.drop(columns=covs)
    fits = [fit(rest.merge(c[["episode_id"] + covs], on="episode_id", how="left", validate="many_to_one"),
                covariates=list(exposure) + covs, **fit_kwargs) for c in completed]
    rubin = impute.pool_rubin(fits)
    return AdjustedFit(rubin, list(exposure) + covs, policy, len(df), n_eps, 0,
                       f"Missing covariate values were multiply imputed by chained equations (m = {m}, seed {seed}); "
                       "estimates pooled with Rubin's rules.", pooled)


POOLED_LEVEL = "other (pooled)"


def _pool_sparse_levels(df: pd.DataFrame, covs: list, fit_kwargs: Mapping[str, Any], min_n: int
                        ) -> tuple[pd.DataFrame, list, list]:
    """Pool levels of categorical covariates that cannot be estimated (or would show small counts).

    A level is sparse when fewer than ``min_n`` episodes have it, or when its
    episodes have no event or only events (a Cox model's likelihood is then
    monotone and the coefficient infinite). Sparse levels become
    ``"other (pooled)"``; if that level is itself sparse it joins the largest
    level; a covariate left with one level is dropped. Every change is returned
    as a sentence for the table footnotes.
    """
    event_col = fit_kwargs.get("event_col")
    if event_col is None or event_col not in df.columns:
        return df, covs, []
    cause = fit_kwargs.get("cause")
    is_event = (df[event_col] == cause) if cause is not None else (df[event_col] > 0)
    out, kept, notes = df, [], []
    for c in covs:
        s = df[c]
        if not (c in _CATEGORICAL or pd.api.types.is_object_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype)
                or pd.api.types.is_string_dtype(s)):
            kept.append(c)
            continue
        s = s.astype(object)
        ep = pd.DataFrame({"episode_id": df["episode_id"].to_numpy(), "level": s.to_numpy(),
                           "event": is_event.to_numpy()})
        per = ep.dropna(subset=["level"]).groupby("level").agg(
            n=("episode_id", "nunique"), events=("event", "sum"), rows=("event", "size"))
        sparse = per.index[(per["n"] < min_n) | (per["events"] == 0) | (per["events"] == per["n"])]
        if len(sparse) == 0:
            kept.append(c)
            continue
        label = VARIABLE_LABELS.get(c, c)
        new = s.where(~s.isin(list(sparse)), POOLED_LEVEL)
        pooled_mask = new == POOLED_LEVEL
        pooled_events = int(is_event[pooled_mask.to_numpy()].sum())
        pooled_n = int(df.loc[pooled_mask.to_numpy(), "episode_id"].nunique())
        levels = ", ".join(_label_level(v) for v in sparse)
        if pooled_n < min_n or pooled_events == 0 or pooled_events == pooled_n:
            largest = per["n"].drop(index=list(sparse), errors="ignore")
            if len(largest) == 0:
                notes.append(f"{label} was not adjusted for: no level has enough episodes with and without events.")
                continue
            target = largest.idxmax()
            new = new.where(~pooled_mask, target)
            notes.append(f"{label}: levels with few episodes or events ({levels}) were combined with "
                         f"{_label_level(target)}.")
        else:
            notes.append(f"{label}: levels with few episodes or events ({levels}) were pooled as \"{POOLED_LEVEL}\".")
        if new.dropna().nunique() < 2:
            notes[-1] = f"{label} was not adjusted for: after pooling levels with few episodes or events one level remains."
            continue
        if out is df:
            out = df.copy()
        out[c] = new.where(df[c].notna(), None)
        kept.append(c)
    return out, kept, notes


# ----------------------------------------------------------------------------- modality exposure
@dataclass(frozen=True)
class ModalityExposure:
    """The modality question's analysis frame.

    Attributes
    ----------
    frame : pandas.DataFrame
        Landmark frame (one row per episode at risk at the landmark; ``exposure``
        categorical, or ``dose_per_week``) or ``(start, stop]`` rows with
        ``exposure``/``dose_per_week`` and ``in_treatment``.
    exposure_cols : list of str
        Columns entered as the exposure.
    design : str
        ``"landmark"`` or ``"time_varying"``.
    description : str
        The exposure and design in one sentence (computed from the settings).
    reference : str or None
        Reference group.
    n_not_at_risk : int
        Episodes excluded because follow-up ended on or before the landmark (landmark design).
    is_default : bool
        Whether the study file left the exposure to its default.
    labels : dict
        Readable labels of the exposure's model terms, naming the exposure the study file
        defined (``{"exposure[T.any]": "Family therapy in the first 30 days"}``), for
        :func:`term_labels` ``extra`` (tables, forest plot, index line).
    """

    frame: pd.DataFrame
    exposure_cols: list
    design: str
    description: str
    reference: str | None
    n_not_at_risk: int
    is_default: bool
    labels: dict = field(default_factory=dict)


#: How a modality is named in labels ("Family therapy in the first 30 days").
_MODALITY_NAMES = {"individual": "individual therapy", "group": "group therapy", "family": "family therapy",
                  "education": "education classes", "holistic": "holistic therapies"}


def _modality_name(modality: str) -> str:
    return _MODALITY_NAMES.get(modality, f"{modality} sessions")


def _exposure_labels(exposure: str, modality: str, window: int, design: str, categories: Sequence[str] = ()
                     ) -> dict[str, str]:
    """Labels of the exposure terms of :func:`modality_exposure` (first category is the reference)."""
    name = _modality_name(modality)
    first = f"in the first {window} days"
    if exposure == "modality_dose":
        per_week = f"{name[:1].upper()}{name[1:]} sessions per week"
        return {"dose_per_week": f"{per_week} {first}" if design == "landmark" else f"{per_week} (previous week)",
                "in_treatment": VARIABLE_LABELS["in_treatment"]}
    if exposure == "modality_any":
        ref = categories[0] if categories else "none"
        if design == "time_varying":
            if ref == "none":
                return {"exposure[T.any]": f"{name[:1].upper()}{name[1:]} (from the first session, if before day {window})"}
            return {"exposure[T.none]": f"No {name} (before the first session, or none before day {window})"}
        if ref == "none":
            return {"exposure[T.any]": f"{name[:1].upper()}{name[1:]} {first}"}
        return {"exposure[T.none]": f"No {name} {first}"}
    ref = categories[0]
    return {f"exposure[T.{c}]": f"Modalities, first {window} days: {c} (vs. {ref})" for c in categories[1:]}


def _attended_sessions(study: StudyData) -> pd.DataFrame:
    """Attended sessions of cohort episodes with their day since admission (``episode_id, modality, day``).

    A session belongs to every episode of its patient whose ``[admit_date, discharge_date]``
    holds it (open episodes: no end); ``day`` is whole days since that admission. The join is
    on integer patient codes and dates are compared as nanoseconds (one conversion per
    column, not per joined row): millions of sessions join in seconds.
    """
    s = study.data.sessions
    ep = study.cohort_episodes
    ep_pid, patients = pd.factorize(ep["patient_id"])
    s_pid = pd.Index(patients).get_indexer(s["patient_id"])
    mine = s_pid >= 0
    if "attended" in s.columns:
        mine &= s["attended"].astype(bool).to_numpy()
    left = pd.DataFrame({"pid": s_pid[mine], "row": np.flatnonzero(mine)})
    j = left.merge(pd.DataFrame({"pid": ep_pid, "ep": np.arange(len(ep))}), on="pid", how="inner")
    row, epi = j["row"].to_numpy(), j["ep"].to_numpy()

    def _ns(col: pd.Series, missing: int) -> np.ndarray:
        v = pd.to_datetime(col).to_numpy("datetime64[ns]")
        return np.where(np.isnat(v), missing, v.view("int64"))

    session_ns = _ns(s["session_date"], np.iinfo("int64").min)[row]
    admit_ns = _ns(ep["admit_date"], np.iinfo("int64").max)[epi]
    end_ns = _ns(ep["discharge_date"], np.iinfo("int64").max)[epi]
    ok = (session_ns >= admit_ns) & (session_ns <= end_ns)
    codes, modalities = pd.factorize(s["modality"])
    return pd.DataFrame({"episode_id": ep["episode_id"].array.take(epi[ok]),
                         "modality": pd.Categorical.from_codes(codes[row[ok]], [str(m) for m in modalities]),
                         "day": (session_ns[ok] - admit_ns[ok]) // 86_400_000_000_000})


def weekly_modality_dose(study: StudyData, modality: str) -> pd.DataFrame:
    """Time-varying dose: ``(start, stop]`` weekly rows with the sessions of ``modality`` attended the week before.

    Follow-up of each episode (``study.frame``) is split at days 7, 14, ...
    while the episode is in treatment (up to one week after discharge); the row
    ``(7k, 7k+7]`` carries ``dose_per_week`` = attended sessions of ``modality``
    on days ``[7(k-1), 7k)`` (lagged by one week, so a session never counts
    towards an interval it may follow), 0 in the first week and after the last
    split. ``in_treatment`` is 1 while the row starts before the length of stay.

    Returns
    -------
    pandas.DataFrame
        ``episode_id, patient_id, start, stop, event, dose_per_week, in_treatment``.
    """
    f = study.frame[["episode_id", "patient_id", "time", "event"]].reset_index(drop=True)
    los = study.cohort_episodes.set_index("episode_id")["los_days"].reindex(f["episode_id"]).to_numpy(dtype=float)
    time = f["time"].to_numpy(dtype=float)
    last_cut = np.minimum(time, np.ceil((los + 7) / 7) * 7)
    n_full = np.maximum(np.ceil(last_cut / 7).astype(int), 1)
    n_rows = n_full + (time > n_full * 7).astype(int)
    idx = np.repeat(np.arange(len(f)), n_rows)
    k = np.arange(len(idx)) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    is_tail = k >= n_full[idx]
    start = np.where(is_tail, n_full[idx] * 7, k * 7).astype(float)
    stop = np.where(is_tail, time[idx], np.minimum(k * 7 + 7, time[idx]))
    keep = stop > start
    idx, k, start, stop, is_tail = idx[keep], k[keep], start[keep], stop[keep], is_tail[keep]
    last = np.r_[idx[1:] != idx[:-1], True]
    event = np.where(last, f["event"].to_numpy()[idx], 0)
    sess = _attended_sessions(study)
    sess = sess[sess["modality"] == modality]
    week = sess["day"].to_numpy() // 7
    counts = pd.Series(1, index=pd.MultiIndex.from_arrays([sess["episode_id"].to_numpy(), week])).groupby(level=[0, 1]).sum()
    eid = f["episode_id"].to_numpy()[idx]
    prev_week = np.where(is_tail, -1, k - 1)
    lookup = pd.MultiIndex.from_arrays([eid, prev_week])
    dose = counts.reindex(lookup).fillna(0).to_numpy(dtype=float, copy=True)
    dose[prev_week < 0] = 0.0
    return pd.DataFrame({"episode_id": eid, "patient_id": f["patient_id"].to_numpy()[idx], "start": start, "stop": stop,
                         "event": event.astype(int), "dose_per_week": dose,
                         "in_treatment": (start < los[idx]).astype(int)})


def _split_at_day(frame: pd.DataFrame, cut: pd.Series) -> pd.DataFrame:
    """Split one-row-per-episode follow-up at a per-episode day (``exposed`` = 1 after it)."""
    f = frame.reset_index(drop=True)
    c = cut.reindex(f["episode_id"]).to_numpy(dtype=float)
    t = f["time"].to_numpy(dtype=float)
    split = np.isfinite(c) & (c > 0) & (c < t)
    before = f.assign(start=0.0, stop=np.where(split, c, t), event=np.where(split, 0, f["event"]),
                      exposed=np.where(np.isfinite(c) & (c <= 0), 1, 0))
    after = f[split].assign(start=c[split], stop=t[split], exposed=1)
    out = pd.concat([before, after], ignore_index=True)
    return out.sort_values(["episode_id", "start"], kind="mergesort").reset_index(drop=True)


def modality_exposure(study: StudyData) -> ModalityExposure:
    """Build the modality comparison of ``[comparison]`` (see :data:`~iop_research.reports.config.STUDY_KEYS`).

    - ``modality_any`` + landmark: episodes still at risk on day ``L = window_days``;
      ``exposure`` = ``"any"`` if an attended session of ``modality`` fell on days
      ``[0, L)``, else ``"none"``; time from ``L``.
    - ``modality_any`` + time_varying: ``exposure`` switches from ``"none"`` to
      ``"any"`` on the day of the first attended session of ``modality``
      before day ``window_days``.
    - ``modality_dose`` + time_varying: :func:`weekly_modality_dose`; + landmark:
      mean attended sessions of ``modality`` per week over ``[0, L)``.
    - ``modality_mix`` + landmark: ``exposure`` = the combination of modalities
      attended on days ``[0, L)`` (e.g. ``"group+individual"``); combinations not in
      ``groups`` (default: those with fewer than ``min_cell_count`` episodes) are
      pooled as ``"other combination"``.

    Raises
    ------
    ModelSpecificationError
        A reference or group that does not occur, or an exposure with one group only.
    """
    from dataclasses import replace

    from iop_research.derive.outcomes import relapse_outcomes

    cmp_ = dict(study.config.settings["comparison"])
    is_default = not any(k.startswith("comparison.") for k in study.config.given)
    exposure, modality, window, design = cmp_["exposure"], cmp_["modality"], cmp_["window_days"], cmp_["design"]
    sessions = _attended_sessions(study)
    if design == "landmark":
        # the outcome part of derive.frames.landmark_frame (at risk on day L, clock reset): its MAT-era and
        # session columns are not used here, and deriving them from every session took most of this report
        lm = relapse_outcomes(study.data, definition=replace(study.definition, origin="landmark",
                                                             landmark_days=int(window)),
                              episodes=study.cohort_episodes, engine=quiet_engine())
        n_not = len(study.frame) - len(lm)
        lm = study.with_baseline(lm)
        early = sessions[sessions["day"] < window]
        if exposure == "modality_dose":
            n = early[early["modality"] == modality].groupby("episode_id").size()
            lm["dose_per_week"] = n.reindex(lm["episode_id"]).fillna(0).to_numpy(dtype=float) / (window / 7.0)
            desc = (f"Mean attended {modality} sessions per week over days 0-{window - 1} after admission, "
                    f"among episodes still at risk on day {window} (landmark design; follow-up from day {window}).")
            return ModalityExposure(lm, ["dose_per_week"], design, desc, None, n_not, is_default,
                                    _exposure_labels(exposure, modality, window, design))
        if exposure == "modality_any":
            has = early.loc[early["modality"] == modality, "episode_id"].unique()
            ref = cmp_["reference"] or "none"
            other = "any" if ref == "none" else "none"
            lm["exposure"] = pd.Categorical(np.where(lm["episode_id"].isin(has), "any", "none"), categories=[ref, other])
            desc = (f"Any attended {modality} session on days 0-{window - 1} after admission (\"any\") versus none "
                    f"(\"none\"), among episodes still at risk on day {window} (landmark design; follow-up from day "
                    f"{window}); reference: \"{ref}\".")
        else:
            present = early.groupby("episode_id")["modality"].agg(lambda m: set(m))
            order = {m: i for i, m in enumerate(MODALITIES)}
            combo = present.map(lambda s: "+".join(sorted(s, key=lambda m: (order.get(m, 99), m))))
            lab = combo.reindex(lm["episode_id"]).fillna("none").to_numpy()
            counts = pd.Series(lab).value_counts()
            groups = cmp_["groups"] or [g for g, n in counts.items() if n >= study.min_cell_count]
            unknown = [g for g in (cmp_["groups"] or []) if g not in counts.index]
            if unknown:
                raise ModelSpecificationError(
                    f"[comparison] groups {unknown} do not occur among the episodes at risk on day {window} "
                    f"(combinations present: {', '.join(sorted(counts.index))}). Correct the names.")
            lab = np.where(pd.Series(lab).isin(groups), lab, "other combination")
            counts = pd.Series(lab).value_counts()
            ref = cmp_["reference"] or str(counts.index[0])
            if ref not in counts.index:
                raise ModelSpecificationError(
                    f"[comparison] reference = {ref!r} is not a group of the modality mix (groups: "
                    f"{', '.join(counts.index)}). Use one of these.")
            cats = [ref] + sorted(g for g in counts.index if g != ref)
            lm["exposure"] = pd.Categorical(lab, categories=cats)
            desc = (f"Combination of modalities attended on days 0-{window - 1} after admission, among episodes still "
                    f"at risk on day {window} (landmark design; follow-up from day {window}); reference: \"{ref}\".")
        if lm["exposure"].nunique() < 2:
            raise ModelSpecificationError(
                f"The modality exposure has a single group among the {len(lm)} episodes at risk on day {window} "
                f"({lm['exposure'].iloc[0] if len(lm) else 'none'}); nothing to compare. Choose another modality, "
                "window or exposure in [comparison].")
        return ModalityExposure(lm, ["exposure"], design, desc, ref, n_not, is_default,
                                _exposure_labels(exposure, modality, window, design, list(lm["exposure"].cat.categories)))
    # time-varying
    if exposure == "modality_dose":
        long = study.with_baseline(weekly_modality_dose(study, modality))
        desc = (f"Attended {modality} sessions in the previous week (sessions per week), a time-varying exposure in "
                "a counting-process Cox model adjusted for being in treatment; follow-up from admission.")
        return ModalityExposure(long, ["dose_per_week", "in_treatment"], design, desc, None, 0, is_default,
                                _exposure_labels(exposure, modality, window, design))
    first = sessions[(sessions["modality"] == modality) & (sessions["day"] < window)].groupby("episode_id")["day"].min()
    long = _split_at_day(study.frame, first)
    ref = cmp_["reference"] or "none"
    other = "any" if ref == "none" else "none"
    long["exposure"] = pd.Categorical(np.where(long["exposed"] == 1, "any", "none"), categories=[ref, other])
    long = long.drop(columns=["exposed"])
    desc = (f"Exposure switches from \"none\" to \"any\" on the day of the first attended {modality} session before "
            f"day {window} (time-varying, counting-process Cox); follow-up from admission; reference: \"{ref}\".")
    if long["exposure"].nunique() < 2:
        raise ModelSpecificationError(f"No cohort episode had an attended {modality} session before day {window}; "
                                      "nothing to compare. Choose another modality or window in [comparison].")
    return ModalityExposure(long, ["exposure"], design, desc, ref, 0, is_default,
                            _exposure_labels(exposure, modality, window, design, [ref, other]))


# ----------------------------------------------------------------------------- per-question helpers
#: Figure sizes (inches) for a journal column (single: 3.5 in; double: 7.2 in).
COLUMN_WIDTH_IN = 3.5
DOUBLE_WIDTH_IN = 7.2


def group_col(study: StudyData) -> str | None:
    """``"program"`` when the cohort has several programmes, else ``None`` (one curve)."""
    return "program" if study.n_programs > 1 else None


def by_group_text(study: StudyData) -> str:
    """``" by programme"`` or ``""`` (for captions)."""
    return " by programme" if group_col(study) else ""


def cohort_summary(study: StudyData) -> dict[str, Any]:
    """Size and span of the cohort: ``n_episodes, n_patients, programs_text, first_year, last_year``."""
    ce = study.cohort_episodes
    years = pd.to_datetime(ce["admit_date"]).dt.year
    n_prog = study.n_programs
    return {"n_episodes": len(ce), "n_patients": int(ce["patient_id"].nunique()),
            "programs_text": "one programme" if n_prog == 1 else f"{_words(n_prog)} programmes",
            "first_year": str(int(years.min())) if len(ce) else "-", "last_year": str(int(years.max())) if len(ce) else "-"}


def _words(n: int) -> str:
    words = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
    return words[n] if 0 <= n < len(words) else f"{n:,}"


def attrition_table(study: StudyData) -> pd.DataFrame:
    """The attrition of the cohort and outcome steps (counts), in the order applied."""
    a = study.attrition.to_frame()
    a = a[a["table"] == "episodes"] if "table" in a else a
    return pd.DataFrame({
        "step": a["step"].astype(str).str.replace("_", " ").to_numpy(), "reason": a["reason"].astype(str).to_numpy(),
        "episodes removed": a["rows_removed"].astype(int).to_numpy(),
        "episodes remaining": a["rows_remaining"].astype(int).to_numpy(),
        "patients removed": a["patients_removed"].astype(int).to_numpy(),
        "patients remaining": a["patients_remaining"].astype(int).to_numpy()})


def table_one_frames(study: StudyData) -> tuple[pd.DataFrame, pd.DataFrame, list[str], dict[str, list[str]]]:
    """Table 1 as numbers: categorical counts per group, continuous summaries per group.

    Returns
    -------
    counts : pandas.DataFrame
        ``Characteristic``, then per group (programme, when several, and ``All
        episodes``) an integer count column; the first row ``Episodes`` holds the group
        sizes; then ``<Variable>: <level>`` rows (missing values as their own level).
    continuous : pandas.DataFrame
        ``Characteristic, Group, mean, sd, median, q1, q3`` (R ``quantile`` type 7);
        statistics of groups with fewer than ``min_cell_count`` values are left empty.
    groups : list of str
        The count columns of ``counts``.
    blocks : dict
        Per variable, the row labels of its levels (each block sums to ``Episodes``).
    """
    b = study.baseline
    gcol = group_col(study)
    groups = (sorted(b["program"].astype(str).unique()) if gcol else []) + ["All episodes"]
    masks = {g: (b["program"].astype(str) == g).to_numpy() for g in groups[:-1]}
    masks["All episodes"] = np.ones(len(b), dtype=bool)
    sizes = {g: int(m.sum()) for g, m in masks.items()}
    rows = [{"Characteristic": "Episodes", **sizes}]
    blocks: dict[str, list[str]] = {}
    for col in [c for c in ("sex", "primary_substance", "referral_source", "psychiatric_comorbidity", "housing",
                            "employment") if c in b.columns]:
        s = b[col].astype(object).where(b[col].notna(), "missing")
        levels = sorted(s.unique(), key=lambda v: (v == "missing", str(v)))
        label = VARIABLE_LABELS.get(col, col)
        blocks[label] = []
        for lv in levels:
            name = f"{label}: {_label_level(lv)}"
            blocks[label].append(name)
            hit = (s == lv).to_numpy()
            rows.append({"Characteristic": name, **{g: int((hit & m).sum()) for g, m in masks.items()}})
    counts = pd.DataFrame(rows, columns=["Characteristic"] + groups)
    los = study.cohort_episodes.set_index("episode_id")["los_days"].reindex(b["episode_id"]).to_numpy(dtype=float)
    cont = []
    values = {VARIABLE_LABELS.get(c, c): pd.to_numeric(b[c], errors="coerce").to_numpy(dtype=float)
              for c in ("age", "severity_score", "prior_treatment_episodes") if c in b.columns}
    values[VARIABLE_LABELS["los_days"]] = los
    for label, arr in values.items():
        for g, m in masks.items():
            v = pd.Series(arr[m]).dropna()
            ok = len(v) >= study.min_cell_count
            cont.append({"Characteristic": label, "Group": g, "mean": float(v.mean()) if ok else np.nan,
                         "sd": float(v.std(ddof=1)) if ok else np.nan, "median": float(v.median()) if ok else np.nan,
                         "q1": float(v.quantile(0.25)) if ok else np.nan, "q3": float(v.quantile(0.75)) if ok else np.nan})
    continuous = pd.DataFrame(cont, columns=["Characteristic", "Group", "mean", "sd", "median", "q1", "q3"]).round(1)
    return counts, continuous, groups, blocks


def table_one_notes(study: StudyData) -> list[str]:
    """Footnotes of Table 1: covariates not adjusted for and why."""
    return list(study.covariate_notes)


def los_figure(study: StudyData):
    """Cumulative share of episodes discharged by day, per discharge group, and its summary table.

    Returns (figure, table ``discharge, episodes, median, q1, q3``); groups with
    fewer than ``min_cell_count`` episodes are not drawn and their quartiles are left empty.
    """
    import matplotlib.pyplot as plt

    ce = study.cohort_episodes
    ended = ce[~ce["is_ongoing"].astype(bool)] if "is_ongoing" in ce else ce
    grp = np.where(ended["discharge_reason"] == "completed", "completed",
                   np.where(ended["discharge_reason"] == "dropped_out", "dropped out", "other discharge"))
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.8))
    rows = []
    for g in ["completed", "dropped out", "other discharge"]:
        v = np.sort(ended.loc[grp == g, "los_days"].to_numpy(dtype=float))
        ok = len(v) >= study.min_cell_count
        rows.append({"discharge": g, "episodes": len(v), "median": float(np.median(v)) if ok else np.nan,
                     "q1": float(np.quantile(v, 0.25)) if ok else np.nan, "q3": float(np.quantile(v, 0.75)) if ok else np.nan})
        if ok:
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=g)
    ax.set_xlabel("Days since admission")
    ax.set_ylabel("Share discharged")
    ax.set_ylim(0, 1)
    if ax.lines:
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig, pd.DataFrame(rows, columns=["discharge", "episodes", "median", "q1", "q3"])


def retention_frame(study: StudyData) -> pd.DataFrame:
    """Time in treatment with dropout (1), completion (2) and other discharges (3) competing (0 ongoing)."""
    from iop_research.derive.outcomes import retention_outcomes

    return retention_outcomes(study.cohort_episodes).merge(
        study.baseline[["episode_id"] + (["program"] if "program" in study.baseline else [])],
        on="episode_id", how="left", validate="one_to_one")


_CAUSES = {0: "still enrolled (censored)", 1: "dropped out", 2: "completed", 3: "other discharge"}


def discharge_counts(ret: pd.DataFrame) -> pd.DataFrame:
    """Episodes by how they ended (every status, zeros included)."""
    n = ret["status"].value_counts()
    return pd.DataFrame({"episode ended": [_CAUSES[k] for k in (1, 2, 3, 0)],
                         "episodes": [int(n.get(k, 0)) for k in (1, 2, 3, 0)]})


def cif_figure(study: StudyData, cif) -> Any:
    """Cumulative incidence of dropout and completion, side by side (double column)."""
    import matplotlib.pyplot as plt
    from iop_research.present.plots import plot_cif

    fig, axes = plt.subplots(1, 2, figsize=(DOUBLE_WIDTH_IN, 3.4), sharey=True)
    causes = set(cif.tidy["cause"].unique())
    for ax, cause, title in zip(axes, (1, 2), ("Dropout", "Completion")):
        if cause in causes:
            plot_cif(cif.tidy, cause=cause, ax=ax, min_cell_count=study.min_cell_count, risk_table=False,
                     labels={1: "dropped out", 2: "completed", 3: "other discharge"})
        ax.set_title(title)
    fig.tight_layout()
    return fig


def cif_at_horizons(study: StudyData, ret: pd.DataFrame) -> pd.DataFrame:
    """Cumulative incidence (%) of dropout and completion at the horizons, with 95% CI."""
    from iop_research.survival.competing import cumulative_incidence

    at = cumulative_incidence(ret, duration_col="time", event_col="status", group_col=group_col(study),
                              times=study.horizons).tidy
    at = at[at["cause"].isin([1, 2])]
    return pd.DataFrame({"group": at["group"].astype(str).to_numpy(), "cause": at["cause"].map(_CAUSES).to_numpy(),
                         "day": at["time"].astype(int).to_numpy(),
                         "cumulative incidence %": (100 * at["cumulative_incidence"]).round(1).to_numpy(),
                         "95% CI low": (100 * at["conf_low"]).round(1).to_numpy(),
                         "95% CI high": (100 * at["conf_high"]).round(1).to_numpy()})


def gray_tests(study: StudyData, ret: pd.DataFrame) -> pd.DataFrame:
    """Gray's test across programmes for each cause present (empty with one programme)."""
    from iop_research.survival.competing import gray_test

    cols = ["cause", "statistic", "df", "p"]
    if not group_col(study):
        return pd.DataFrame(columns=cols)
    rows = []
    for c in (1, 2, 3):
        if (ret["status"] == c).any():
            g = gray_test(ret, duration_col="time", event_col="status", group_col="program", cause=c).glance.iloc[0]
            rows.append({"cause": _CAUSES[c], "statistic": round(float(g["statistic"]), 2), "df": int(g["df"]),
                         "p": float(g["p_value"])})
    return pd.DataFrame(rows, columns=cols)


def model_frame(fit: AdjustedFit, *, terms: Sequence[str] | None = None,
                labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A model's hazard ratios as numbers with readable terms: ``Term, HR, 95% CI low, 95% CI high, p``.

    ``labels``: labels of particular terms or variables (``term_labels`` ``extra``), e.g.
    :attr:`ModalityExposure.labels`.
    """
    t = fit.result.tidy
    if terms is not None:
        t = t[t["term"].map(lambda x: any(x == c or x.startswith(c + "[") for c in terms))]
    labels = term_labels(t["term"].tolist(), extra=labels)
    return pd.DataFrame({"Term": t["term"].map(labels).to_numpy(), "HR": t["hazard_ratio"].round(2).to_numpy(),
                         "95% CI low": t["hr_conf_low"].round(2).to_numpy(),
                         "95% CI high": t["hr_conf_high"].round(2).to_numpy(), "p": t["p_value"].to_numpy()})


def side_by_side(fits: Mapping[str, AdjustedFit]) -> pd.DataFrame:
    """Several models' hazard ratios in one table (one column block per model)."""
    out = None
    for name, fit in fits.items():
        mf = model_frame(fit).rename(columns={"HR": f"{name}", "95% CI low": f"{name}: 95% CI low",
                                              "95% CI high": f"{name}: 95% CI high", "p": f"{name}: p"})
        out = mf if out is None else out.merge(mf, on="Term", how="left", sort=False)
    return out


def model_notes(study: StudyData, fit: AdjustedFit, pub) -> list[str]:
    """Footnotes of a model table: covariates, missing-data handling, episodes used.

    The numbers of episodes go through the publishing channel ``pub`` (suppressed when small).
    """
    covs = [VARIABLE_LABELS.get(c, c) for c in study.covariates]
    notes = [("Adjusted for: " + ", ".join(covs) + ".") if covs else "No adjustment covariate varies in this cohort.",
             fit.method]
    if fit.n_dropped:
        total = fit.n_dropped + fit.n_episodes
        notes.append(f"Episodes left out for missing covariates: {pub.count(fit.n_dropped, label='episodes dropped (complete case)')}"
                     f" of {pub.count(total, label='episodes before complete-case selection')}.")
    return notes + list(fit.pooled) + list(study.covariate_notes)


def forest_figure(fit: AdjustedFit, *, title: str, terms: Sequence[str] | None = None,
                  labels: Mapping[str, str] | None = None):
    """Forest plot of a model's hazard ratios with readable labels (``labels``: as :func:`model_frame`)."""
    import matplotlib.pyplot as plt
    from iop_research.present.plots import plot_forest

    import textwrap

    t = fit.result.tidy
    if terms is not None:
        t = t[t["term"].map(lambda x: any(x == c or x.startswith(c + "[") for c in terms))]
    shown = {k: textwrap.fill(v, 48) for k, v in term_labels(t["term"].tolist(), extra=labels).items()}
    n_lines = sum(v.count("\n") + 1 for v in shown.values())
    fig, ax = plt.subplots(figsize=(DOUBLE_WIDTH_IN, 0.9 + 0.28 * max(len(t), 0.6 * n_lines)))
    plot_forest(t, ax=ax, labels=shown)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def km_figure(study: StudyData, km):
    """Kaplan-Meier curves with a suppressed numbers-at-risk table, drawn to the last horizon."""
    import matplotlib.pyplot as plt
    from iop_research.present.plots import plot_km

    times = [0] + study.horizons
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN * 1.4, 3.6))
    plot_km(km.tidy, ax=ax, times=times, min_cell_count=study.min_cell_count, censor_marks=False)
    ax.set_xlim(0, max(times))
    fig.tight_layout()
    return fig


def km_summary(study: StudyData, km) -> pd.DataFrame:
    """Median time to relapse and relapse-free probability (%) at the horizons, per group, with 95% CI."""
    rows = []
    med = km.medians
    at = km.at_times if "at_times" in getattr(km, "extra", {}) else None
    for _, r in med.iterrows():
        rows.append({"group": str(r["group"]), "measure": "median days to relapse", "estimate": r["median"],
                     "95% CI low": r["conf_low"], "95% CI high": r["conf_high"]})
    if at is not None:
        for _, r in at.iterrows():
            rows.append({"group": str(r["group"]), "measure": f"relapse-free at day {int(r['time'])} (%)",
                         "estimate": round(100 * r["survival"], 1), "95% CI low": round(100 * r["conf_low"], 1),
                         "95% CI high": round(100 * r["conf_high"], 1)})
    return pd.DataFrame(rows, columns=["group", "measure", "estimate", "95% CI low", "95% CI high"])


def km_tests(study: StudyData, f: pd.DataFrame) -> pd.DataFrame:
    """Log-rank test across programmes (empty with one programme)."""
    from iop_research.survival.km import logrank_test

    cols = ["test", "statistic", "df", "p"]
    if not group_col(study):
        return pd.DataFrame(columns=cols)
    g = logrank_test(f, duration_col="time", event_col="event", group_col="program").glance.iloc[0]
    return pd.DataFrame([{"test": "log-rank", "statistic": round(float(g["statistic"]), 2), "df": int(g["df"]),
                          "p": float(g["p_value"])}], columns=cols)


def rmst_table(study: StudyData, f: pd.DataFrame) -> pd.DataFrame:
    """Restricted mean relapse-free days per group up to each horizon (horizons beyond follow-up left out, noted)."""
    from iop_research.survival.km import rmst

    g = group_col(study)
    limit = float(f.groupby(g)["time"].max().min()) if g else float(f["time"].max())
    rows, notes = [], []
    for tau in study.horizons:
        if tau > limit:
            notes.append(f"Day {tau} is beyond the follow-up of at least one group ({limit:.0f} days); "
                         "its restricted mean is not estimated.")
            continue
        t = rmst(f, duration_col="time", event_col="event", group_col=g, tau=tau).tidy
        for _, r in t.iterrows():
            if not str(r["term"]).startswith("rmst["):
                continue
            rows.append({"horizon (days)": tau, "group": str(r["term"])[5:-1], "RMST (days)": round(r["estimate"], 1),
                         "95% CI low": round(r["conf_low"], 1), "95% CI high": round(r["conf_high"], 1)})
    out = pd.DataFrame(rows, columns=["horizon (days)", "group", "RMST (days)", "95% CI low", "95% CI high"])
    out.attrs["notes"] = notes
    return out


def exposure_counts(study: StudyData, me: ModalityExposure) -> pd.DataFrame:
    """Episodes and relapses per exposure group (or, for a dose, per dose band)."""
    f = me.frame
    per_ep = f.groupby("episode_id", sort=False).agg(event=("event", "max"))
    if "exposure" in me.exposure_cols:
        if me.design == "landmark":
            grp = f.set_index("episode_id")["exposure"].astype(str)
        else:
            grp = f.groupby("episode_id")["exposure"].agg(lambda s: "any" if (s.astype(str) == "any").any() else "none")
        cats = [str(c) for c in f["exposure"].cat.categories]
        rows = [{"group": c, "episodes": int((grp == c).sum()), "relapses": int(per_ep["event"][grp[grp == c].index].sum())}
                for c in cats]
        return pd.DataFrame(rows, columns=["group", "episodes", "relapses"])
    dose = f.groupby("episode_id", sort=False)["dose_per_week"].max()
    band = pd.cut(dose, [-np.inf, 0, 1, 2, np.inf], labels=["0", "up to 1", "over 1 to 2", "over 2"])
    rows = [{"highest sessions per week": str(b), "episodes": int((band == b).sum()),
             "relapses": int(per_ep["event"][band.index[band == b]].sum())} for b in band.cat.categories]
    return pd.DataFrame(rows, columns=["highest sessions per week", "episodes", "relapses"])


def mat_time_varying_frame(study: StudyData) -> pd.DataFrame:
    """Counting-process rows of the cohort with ``on_mat`` and ``in_treatment`` and the baseline covariates."""
    from iop_research.derive.frames import counting_process_frame

    long = counting_process_frame(study.data, definition=study.definition, episodes=study.cohort_episodes,
                                  covariates=None, engine=quiet_engine())
    return study.with_baseline(long)


def mat_counts(study: StudyData) -> pd.DataFrame:
    """Episodes and relapses by any MAT era overlapping the episode."""
    has = study.cohort_episodes.set_index("episode_id")["has_mat"].astype(bool).reindex(study.frame["episode_id"]).to_numpy()
    ev = study.frame["event"].to_numpy()
    return pd.DataFrame({"group": ["any MAT during the episode", "no MAT"],
                         "episodes": [int(has.sum()), int((~has).sum())],
                         "relapses": [int(ev[has].sum()), int(ev[~has].sum())]})


def mat_landmarks(study: StudyData) -> pd.DataFrame:
    """Adjusted hazard ratio of MAT started by day L, one row per landmark of ``[landmarks] days``."""
    from iop_research.derive.frames import landmark_frame
    from iop_research.survival.cox import fit_cox

    rows, notes = [], []
    for L in study.config.get("landmarks.days"):
        lm = study.with_baseline(landmark_frame(study.data, landmark_days=L, definition=study.definition,
                                                episodes=study.cohort_episodes, covariates=None,
                                                engine=quiet_engine()))
        n_mat = int(lm["mat_by_landmark"].sum()) if len(lm) else 0
        if len(lm) == 0 or n_mat in (0, len(lm)) or lm["event"].sum() == 0:
            notes.append(f"Day {L}: no comparison possible (every or no episode at risk had started MAT, or no relapse).")
            continue
        fit = fit_adjusted(study, lm, fit=fit_cox, exposure=["mat_by_landmark"], duration_col="time", event_col="event",
                           cluster_col="patient_id")
        r = fit.result.tidy.iloc[0]
        rows.append({"landmark day": L, "episodes at risk": len(lm), "started MAT": n_mat,
                     "HR": round(float(r["hazard_ratio"]), 2), "95% CI low": round(float(r["hr_conf_low"]), 2),
                     "95% CI high": round(float(r["hr_conf_high"]), 2), "p": float(r["p_value"])})
        if fit.method not in notes:
            notes.append(fit.method)
    out = pd.DataFrame(rows, columns=["landmark day", "episodes at risk", "started MAT", "HR", "95% CI low",
                                      "95% CI high", "p"])
    out.attrs["notes"] = notes
    return out


def mat_forest(mat_tv: AdjustedFit, landmarks: pd.DataFrame):
    """Forest plot of MAT hazard ratios across designs."""
    import matplotlib.pyplot as plt
    from iop_research.present.plots import plot_forest

    r = mat_tv.result.tidy.iloc[0]
    rows = [{"term": "on MAT (time-varying)", "hazard_ratio": r["hazard_ratio"], "hr_conf_low": r["hr_conf_low"],
             "hr_conf_high": r["hr_conf_high"]}]
    rows += [{"term": f"started by day {int(x['landmark day'])} (landmark)", "hazard_ratio": x["HR"],
              "hr_conf_low": x["95% CI low"], "hr_conf_high": x["95% CI high"]} for _, x in landmarks.iterrows()]
    t = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(DOUBLE_WIDTH_IN, 0.9 + 0.3 * len(t)))
    plot_forest(t, ax=ax)
    fig.tight_layout()
    return fig


def recurrence_frame(study: StudyData) -> pd.DataFrame:
    """Risk intervals for recurrent relapse of the cohort's patients (``recurrent_relapses``)."""
    from iop_research.derive.outcomes import recurrent_relapses

    return recurrent_relapses(study.data, definition=study.definition, episodes=study.cohort_episodes,
                              engine=quiet_engine())


def relapses_per_patient(rec: pd.DataFrame) -> pd.DataFrame:
    """Patients by number of relapses (0, 1, 2, 3 or more)."""
    n = rec.groupby("patient_id")["event"].sum()
    band = pd.cut(n, [-1, 0, 1, 2, np.inf], labels=["0", "1", "2", "3 or more"])
    return pd.DataFrame({"relapses": list(band.cat.categories),
                         "patients": [int((band == b).sum()) for b in band.cat.categories]})


def mean_cumulative_relapses(study: StudyData, rec: pd.DataFrame):
    """Mean cumulative number of relapses per patient (Nelson-Aalen type) at the horizons, and its figure."""
    import matplotlib.pyplot as plt
    from iop_research.survival.km import fit_km

    at_risk = fit_km(rec, duration_col="stop", entry_col="start", event_col="event")
    t = at_risk.tidy
    mcf = (t["n_events"] / t["n_at_risk"]).cumsum().to_numpy()
    times = t["time"].to_numpy()
    rows = []
    for h in study.horizons:
        i = np.searchsorted(times, h, side="right") - 1
        rows.append({"day": h, "mean cumulative relapses": round(float(mcf[i]) if i >= 0 else 0.0, 3),
                     "patients at risk": int(t["n_at_risk"].to_numpy()[min(max(i + 1, 0), len(t) - 1)]) if len(t) else 0})
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.8))
    ok = t["n_at_risk"].to_numpy() >= study.min_cell_count
    last = times[ok].max() if ok.any() else 0
    ax.step(times[times <= last], mcf[times <= last], where="post")
    ax.set_xlim(0, last)
    ax.set_xlabel("Days since first admission")
    ax.set_ylabel("Mean cumulative relapses")
    fig.tight_layout()
    table = pd.DataFrame(rows, columns=["day", "mean cumulative relapses"])
    return table, fig


def save_prepared(study: StudyData, path: str | os.PathLike) -> str:
    """Pickle a prepared study for :func:`prepare_study` (``prepared=``); returns the path.

    The pickle holds patient-level data: it is written inside the build's
    private staging folder and deleted with it.
    """
    import pickle

    with open(path, "wb") as fh:
        pickle.dump(study, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return str(path)


def record_summary(pub, *, question: str, n: str, result: str) -> None:
    """Write the index line of a report: question, N and key estimate, as published strings.

    ``n`` and ``result`` must come from the publishing channel (``pub.count``,
    ``pub.estimate``, ``pub.percent``) or be plain words; they are written to
    ``<out_dir>/summaries/<report>.json`` for the study's ``index.html``.
    """
    import json

    if pub.out_dir is None:
        return
    d = pub.out_dir / "summaries"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{pub.report}.json").write_text(json.dumps({"question": question, "n": str(n), "result": str(result)}),
                                          encoding="utf-8")


def hr_headline(pub, fit: AdjustedFit, term_prefix: str, labels: Mapping[str, str] | None = None) -> str:
    """``"HR 0.58 (0.36 to 0.94) for Family therapy in the first 30 days"``: the first term of a model
    starting with ``term_prefix``, labelled by ``labels`` (as :func:`model_frame`) or :func:`term_labels`."""
    t = fit.result.tidy
    row = t[t["term"].map(lambda x: x == term_prefix or x.startswith(term_prefix + "["))].iloc[0]
    label = term_labels([row["term"]], extra=labels)[row["term"]]
    return f"HR {pub.estimate(float(row['hazard_ratio']), float(row['hr_conf_low']), float(row['hr_conf_high']))} for {label}"


def km_headline(pub, study: StudyData, km) -> str:
    """Relapse-free probability at the first horizon (all groups pooled are not re-estimated; first group shown)."""
    at = km.at_times
    if at is None or not len(at):
        return "see the report"
    parts = []
    for _, r in at[at["time"] == at["time"].min()].iterrows():
        parts.append(f"{r['group']}: {pub.estimate(100 * float(r['survival']), 100 * float(r['conf_low']), 100 * float(r['conf_high']), fmt='{:.0f}')}%")
    return f"relapse-free at day {int(at['time'].min())}: " + "; ".join(parts)


# ----------------------------------------------------------------------------- adjusted MAT curves
# (helpers of the MAT report's "Adjusted relapse-free curves" section; kept together at the end of the module)
__all__ += ["MatAdjustedCurves", "mat_adjusted_curves", "mat_adjusted_counts", "mat_adjusted_contrasts",
            "mat_adjusted_figure"]


@dataclass(frozen=True)
class MatAdjustedCurves:
    """Covariate-adjusted relapse-free curves by MAT started by a landmark day.

    Attributes
    ----------
    result : Result or None
        :func:`~iop_research.designs.adjusted.adjusted_survival` (g-computation, influence-function
        intervals clustered by patient) on the episodes at risk on the landmark day; pooled over
        imputations (Rubin's rules) under multiple imputation. None when no comparison is possible.
    landmark_day : int or None
        Day L (from ``[landmarks] days``): MAT started by day L versus not; follow-up from L.
    horizons : list of int
        Study horizons (days since admission) after L, at which the contrasts are reported.
    reason : str or None
        Why there are no curves (a sentence for the report), else None.
    n_episodes, n_mat, n_relapses, n_relapses_mat : int
        Episodes at risk on day L, of them with MAT started by L, and their relapses.
    n_dropped : int
        Episodes left out for missing covariates (complete case).
    covariates : list of str
        Adjustment covariates of the outcome model.
    notes : list of str
        Method sentences for the table footnotes.
    """

    result: Any
    landmark_day: int | None
    horizons: list
    reason: str | None = None
    n_episodes: int = 0
    n_mat: int = 0
    n_relapses: int = 0
    n_relapses_mat: int = 0
    n_dropped: int = 0
    covariates: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _rubin_pool(estimates: np.ndarray, ses: np.ndarray) -> tuple[float, float]:
    """Rubin's rules for one scalar: pooled estimate and total SE (within + (1 + 1/m) between)."""
    m = len(estimates)
    qbar = float(np.mean(estimates))
    between = float(np.var(estimates, ddof=1)) if m > 1 else 0.0
    return qbar, float(np.sqrt(np.mean(np.square(ses)) + (1 + 1 / m) * between))


def _pool_adjusted(results: list) -> Any:
    """One adjusted_survival-like Result from fits on m imputed data sets (Rubin's rules).

    Survival is pooled on the log(-log) scale, ratios on the log scale, differences and RMST as
    they are; intervals are normal (``1.96`` SE) on those scales.
    """
    from scipy import stats as _st

    from iop_research.results import Result

    z = float(_st.norm.ppf(0.975))
    first = results[0]
    tidy = first.tidy.copy()
    for i in range(len(tidy)):
        s = np.array([r.tidy["survival"].iloc[i] for r in results], dtype=float)
        se = np.array([r.tidy["std_error"].iloc[i] for r in results], dtype=float)
        if np.all((s > 0) & (s < 1)):
            eta = np.log(-np.log(s))
            q, t = _rubin_pool(eta, se / (s * -np.log(s)))
            est = float(np.exp(-np.exp(q)))
            tidy.loc[tidy.index[i], ["survival", "std_error", "conf_low", "conf_high"]] = [
                est, t * est * -np.log(est), float(np.exp(-np.exp(q + z * t))), float(np.exp(-np.exp(q - z * t)))]
        else:
            tidy.loc[tidy.index[i], ["survival", "std_error", "conf_low", "conf_high"]] = [float(s.mean()), 0.0,
                                                                                         float(s.mean()),
                                                                                         float(s.mean())]

    def pool_table(name, est_col):
        out = first.extra[name].copy()
        for i in range(len(out)):
            e = np.array([r.extra[name][est_col].iloc[i] for r in results], dtype=float)
            se = np.array([r.extra[name]["std_error"].iloc[i] for r in results], dtype=float)
            if name == "contrasts" and out["measure"].iloc[i] == "ratio":
                q, t = _rubin_pool(np.log(e), se / e)
                vals = [float(np.exp(q)), float(np.exp(q)) * t, float(np.exp(q - z * t)), float(np.exp(q + z * t))]
            else:
                q, t = _rubin_pool(e, se)
                vals = [q, t, q - z * t, q + z * t]
            out.loc[out.index[i], [est_col, "std_error", "conf_low", "conf_high"]] = vals
        return out

    curve = first.extra["curve"].copy()
    curve["survival"] = np.mean([r.extra["curve"]["survival"].to_numpy(dtype=float) for r in results], axis=0)
    return Result(
        method=first.method + f", pooled over {len(results)} imputations (Rubin's rules)",
        tidy=tidy, glance=first.glance, model=None,
        extra={"contrasts": pool_table("contrasts", "estimate"), "rmst": pool_table("rmst", "rmst"), "curve": curve,
               "risk_table": first.extra["risk_table"]},
        conventions={**dict(first.conventions), "imputation": "Rubin's rules; survival on the log(-log) scale, "
                     "ratios on the log scale"},
    )


def mat_adjusted_curves(study: StudyData, *, landmark_day: int | None = None) -> MatAdjustedCurves:
    """Adjusted relapse-free curves for MAT started by a landmark day versus not (g-computation).

    Parameters
    ----------
    study : StudyData
    landmark_day : int, optional
        Day L. Default: the first day of ``[landmarks] days`` at which some but not all episodes
        at risk had started MAT and some relapsed.

    Returns
    -------
    MatAdjustedCurves
        ``result`` None with a ``reason`` when no comparison is possible (no episode at risk,
        no or only MAT-exposed episodes, no relapse, no horizon after L, a model that cannot be
        fitted): the report prints the sentence instead of the section.

    Notes
    -----
    Cohort: episodes still at risk on day L (:func:`~iop_research.derive.frames.landmark_frame`),
    follow-up from L, exposure ``mat_by_landmark``. Outcome model: Cox on the exposure and the
    study's covariates (constant ones dropped, sparse categorical levels pooled as in
    :func:`fit_adjusted`), averaged over these episodes with the exposure set to each level
    (:func:`~iop_research.designs.adjusted.adjusted_survival`, influence-function intervals summed
    within patients). Missing covariates follow ``[missing] policy``: complete case, missing
    indicator, or multiple imputation pooled with Rubin's rules.
    """
    from iop_research.derive.frames import landmark_frame
    from iop_research.designs.adjusted import adjusted_survival
    from iop_research.exceptions import IopError

    days = [int(landmark_day)] if landmark_day is not None else [int(d) for d in study.config.get("landmarks.days")]
    if not days:
        return MatAdjustedCurves(None, None, [], reason="no landmark day is set in the study file ([landmarks] days).")
    chosen, lm, why = None, None, None
    for L in days:
        frame = study.with_baseline(landmark_frame(study.data, landmark_days=L, definition=study.definition,
                                                   episodes=study.cohort_episodes, covariates=None,
                                                   engine=quiet_engine()))
        n_mat = int(frame["mat_by_landmark"].sum()) if len(frame) else 0
        if len(frame) == 0:
            why = why or f"no episode was still at risk of relapse on day {L}."
        elif n_mat == 0:
            why = why or f"no episode at risk on day {L} had started MAT, so there is no MAT group to compare."
        elif n_mat == len(frame):
            why = why or f"every episode at risk on day {L} had started MAT, so there is no comparison group."
        elif int(frame["event"].sum()) == 0:
            why = why or f"no episode at risk on day {L} relapsed afterwards."
        else:
            chosen, lm = L, frame
            break
    if chosen is None:
        return MatAdjustedCurves(None, days[0], [], reason=why)
    L = chosen
    horizons = [int(h) for h in study.horizons if h > L]
    base = dict(n_episodes=len(lm), n_mat=int(lm["mat_by_landmark"].sum()), n_relapses=int(lm["event"].sum()),
                n_relapses_mat=int(lm.loc[lm["mat_by_landmark"] == 1, "event"].sum()))
    if not horizons:
        return MatAdjustedCurves(None, L, [], reason=f"no study horizon lies after the landmark day {L}.", **base)
    notes = []
    covs = [c for c in study.covariates if c in lm.columns and c != "mat_by_landmark"]
    lm, covs, pooled_notes = _pool_sparse_levels(lm, covs, {"event_col": "event"}, study.min_cell_count)
    notes += pooled_notes
    constant = [c for c in covs if lm[c].dropna().nunique() < 2]
    if constant:
        notes.append("Not adjusted for (one value among these episodes): "
                     + ", ".join(VARIABLE_LABELS.get(c, c) for c in constant) + ".")
        covs = [c for c in covs if c not in constant]
    tau = max(horizons) - L
    times = sorted(set(np.linspace(0, tau, 25).round().astype(int).tolist()) | {h - L for h in horizons})
    kw = dict(exposure_col="mat_by_landmark", duration_col="time", event_col="event", times=times, tau=tau,
              cluster_col="patient_id", method="g-computation")
    policy = study.config.get("missing.policy")
    n_dropped = 0
    try:
        if not covs or not lm[covs].isna().any().any():
            res = adjusted_survival(lm, covariates=covs, **kw)
            notes.append("No adjustment covariate had missing values.")
        elif policy == "complete_case":
            kept = lm.dropna(subset=covs)
            n_dropped = len(lm) - len(kept)
            if kept["mat_by_landmark"].nunique() < 2 or kept["event"].sum() == 0:
                return MatAdjustedCurves(None, L, horizons, reason="after leaving out episodes with missing covariates "
                                         "no comparison is possible.", n_dropped=n_dropped, covariates=covs, **base)
            flat = [c for c in covs if kept[c].nunique() < 2]
            if flat:
                notes.append("Not adjusted for (one value among the complete cases): "
                             + ", ".join(VARIABLE_LABELS.get(c, c) for c in flat) + ".")
                covs = [c for c in covs if c not in flat]
            res = adjusted_survival(kept.reset_index(drop=True), covariates=covs, **kw)
            notes.append("Complete-case analysis: episodes with a missing adjustment covariate were left out.")
        elif policy == "indicator":
            from iop_research.derive import impute

            filled, covs = impute.missing_indicator(lm, covs)
            res = adjusted_survival(filled, covariates=list(covs), **kw)
            notes.append("Missing covariate values entered the model as their own category (missing indicator).")
        else:
            from iop_research.derive import impute

            m, seed = int(study.config.get("missing.m")), int(study.config.get("missing.seed"))
            completed = impute.impute_chained(lm[["episode_id"] + covs].reset_index(drop=True), covs, m=m, seed=seed)
            rest = lm.drop(columns=covs).reset_index(drop=True)
            fits = [adjusted_survival(rest.assign(**{c: done[c].to_numpy() for c in covs}), covariates=covs, **kw)
                    for done in completed]
            res = _pool_adjusted(fits)
            notes.append(f"Missing covariate values were multiply imputed by chained equations (m = {m}, seed {seed}); "
                         "curves and contrasts pooled with Rubin's rules.")
    except IopError as exc:
        return MatAdjustedCurves(None, L, horizons, reason="the adjusted outcome model could not be fitted on these "
                                 f"episodes ({type(exc).__name__}).", n_dropped=n_dropped, covariates=covs, **base)
    notes.insert(0, f"G-computation: Cox model of relapse after day {L} on MAT started by day {L} and "
                 + (", ".join(VARIABLE_LABELS.get(c, c) for c in covs) if covs else "no covariate")
                 + "; each episode's predicted curve with MAT set to yes and to no, averaged over the episodes at risk "
                 "on day " + f"{L}. 95% intervals from influence functions (outcome model, baseline hazard and the "
                 "averaging, clustered by patient); survival on the log(-log) scale.")
    return MatAdjustedCurves(res, L, horizons, None, n_dropped=n_dropped, covariates=list(covs), notes=notes, **base)


def mat_adjusted_counts(adj: MatAdjustedCurves, pub=None, landmarks: pd.DataFrame | None = None
                        ) -> tuple[pd.DataFrame, dict]:
    """Episodes at risk on the landmark day and their relapses, by MAT started by then (with a total row).

    Returns the table and the ``keys`` for :meth:`Publisher.table`: when ``landmarks`` (the
    landmark table of :func:`mat_landmarks`, published as ``mat_landmarks``) has the same day,
    the MAT and total episode cells are that table's cells, so suppression is consistent across
    the two tables.
    """
    L = adj.landmark_day
    rows = [f"MAT started by day {L}", f"no MAT by day {L}", "all episodes at risk"]
    df = pd.DataFrame({"group": rows,
                       "episodes": [adj.n_mat, adj.n_episodes - adj.n_mat, adj.n_episodes],
                       "relapses": [adj.n_relapses_mat, adj.n_relapses - adj.n_relapses_mat, adj.n_relapses]})
    keys: dict = {}
    if pub is not None and landmarks is not None and len(landmarks):
        hit = np.flatnonzero(landmarks["landmark day"].to_numpy() == L)
        if hit.size:
            i = int(hit[0])
            stem = f"{pub.report}/mat_landmarks/{i}:{landmarks['landmark day'].iloc[i]}"
            keys = {(rows[0], "episodes"): f"{stem}/started MAT", (rows[2], "episodes"): f"{stem}/episodes at risk"}
    return df, keys


def mat_adjusted_contrasts(adj: MatAdjustedCurves) -> pd.DataFrame:
    """Adjusted relapse-free % with MAT and without at each horizon, their difference (percentage points,
    95% CI), and the difference in restricted mean relapse-free days from L to the last horizon."""
    res, L = adj.result, adj.landmark_day
    t, con, rm = res.tidy, res.extra["contrasts"], res.extra["rmst"].set_index("exposure")
    rows = []
    for h in adj.horizons:
        s = {a: float(t.loc[(t["exposure"] == a) & (t["time"] == h - L), "survival"].iloc[0]) for a in (0, 1)}
        c = con[(con["measure"] == "difference") & (con["time"] == h - L)].iloc[0]
        rows.append({"measure": f"relapse-free to day {h} (%)", "MAT": 100 * s[1], "no MAT": 100 * s[0],
                     "difference": 100 * float(c["estimate"]), "95% CI low": 100 * float(c["conf_low"]),
                     "95% CI high": 100 * float(c["conf_high"])})
    c = con[con["measure"] == "rmst_difference"].iloc[0]
    rows.append({"measure": f"mean relapse-free days, day {L} to {max(adj.horizons)}", "MAT": float(rm.loc[1, "rmst"]),
                 "no MAT": float(rm.loc[0, "rmst"]), "difference": float(c["estimate"]),
                 "95% CI low": float(c["conf_low"]), "95% CI high": float(c["conf_high"])})
    return pd.DataFrame(rows, columns=["measure", "MAT", "no MAT", "difference", "95% CI low", "95% CI high"])


def mat_adjusted_figure(study: StudyData, adj: MatAdjustedCurves):
    """Adjusted relapse-free curves with 95% bands and a suppressed risk table (days after the landmark)."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    from iop_research.present.diagnostics import plot_adjusted_survival

    L = adj.landmark_day
    tau = max(adj.horizons) - L
    ticks = sorted({0} | {h - L for h in adj.horizons})
    res = adj.result
    # the plot notes where a curve stops for small numbers at risk: only within the plotted range
    # (each group's rows to the first time after tau, which gives the number at risk at tau)
    rt = res.extra["risk_table"]
    after = rt[rt["time"] > tau].groupby("group")["time"].min()
    limit = rt["group"].map(after).fillna(tau).to_numpy(dtype=float)
    shown = SimpleNamespace(tidy=res.tidy, extra={**dict(res.extra), "risk_table": rt[rt["time"].to_numpy() <= limit]})
    fig, ax = plt.subplots(figsize=(DOUBLE_WIDTH_IN, 3.6))
    plot_adjusted_survival(shown, ax=ax, times=ticks, min_cell_count=study.min_cell_count,
                           labels={1: f"MAT started by day {L}", 0: f"no MAT by day {L}"},
                           xlabel=f"Days after day {L}", ylabel="Adjusted probability without relapse")
    ax.set_xlim(0, tau)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- emulated target trial of MAT
# (helpers of the MAT report's "Emulated target trial" section, [mat] design = "ccw")
__all__ += ["MatTargetTrial", "mat_design", "mat_target_trial", "mat_trial_protocol", "mat_trial_eligibility",
            "mat_trial_arms", "publish_mat_trial_eligibility", "mat_trial_estimates", "mat_trial_days", "mat_trial_counts", "mat_trial_figure",
            "rounding_unit"]


@dataclass(frozen=True)
class MatTargetTrial:
    """An emulated target trial of starting MAT within a grace period of admission (clone-censor-weight).

    Attributes
    ----------
    result : CcwResult or None
        :func:`~iop_research.designs.ccw.clone_censor_weight` on the eligible episodes; None when no
        trial can be emulated (``reason`` says why).
    reason : str or None
        Why there is no result (a sentence for the report), else None.
    grace_days, horizon_days, n_bootstrap, seed : int
        ``[mat]`` settings.
    n_followed : int
        Cohort episodes with follow-up after admission (the outcome frame).
    n_later_episode : int
        Of them, not the patient's first such episode (not eligible: one trial entry per patient).
    n_prevalent : int
        Of the patients' first episodes, on MAT at admission (a MAT era started before admission and
        covers the admission day): not eligible (prevalent users).
    n_eligible : int
        Eligible episodes (one per patient).
    n_started : int
        Eligible episodes whose MAT started on days ``0..grace_days`` after admission.
    n_dropped : int
        Eligible episodes left out for a missing covariate (complete case).
    covariates, tv_covariates : list of str
        Baseline and time-varying covariates of the model of starting MAT.
    notes : list of str
        Method sentences for the table footnotes.
    """

    result: Any
    reason: str | None
    grace_days: int
    horizon_days: int
    n_bootstrap: int
    seed: int
    n_followed: int = 0
    n_later_episode: int = 0
    n_prevalent: int = 0
    n_eligible: int = 0
    n_started: int = 0
    n_dropped: int = 0
    covariates: list = field(default_factory=list)
    tv_covariates: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def mat_design(study: StudyData) -> str:
    """``[mat] design``: ``"landmark"`` or ``"ccw"``."""
    return str(study.config.get("mat.design"))


def _mat_start_days(study: StudyData, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per episode of ``frame``: day (since admission) the first MAT era starting on or after admission
    began (NaN: none), and whether a MAT era that started before admission covers the admission day."""
    from iop_research.derive.exposures import medication_eras

    n = len(frame)
    start = np.full(n, np.nan)
    prevalent = np.zeros(n, dtype=bool)
    meds = study.data.medications
    if meds is None or len(meds) == 0:
        return start, prevalent
    eras = medication_eras(meds, engine=quiet_engine())
    if len(eras) == 0:
        return start, prevalent
    admit = study.cohort_episodes.set_index("episode_id")["admit_date"]
    ep = pd.DataFrame({"row": np.arange(n), "patient_id": frame["patient_id"].to_numpy(),
                       "admit": pd.to_datetime(admit.reindex(frame["episode_id"]).to_numpy())})
    e = pd.DataFrame({"patient_id": eras["patient_id"].to_numpy(), "s": pd.to_datetime(eras["era_start"]).to_numpy(),
                      "e": pd.to_datetime(eras["era_end"]).to_numpy()})
    j = ep.merge(e, on="patient_id")
    s_day = (j["s"] - j["admit"]).dt.days.to_numpy()
    e_day = (j["e"] - j["admit"]).dt.days.to_numpy()
    prev_rows = j.loc[(s_day < 0) & (e_day >= 0), "row"].to_numpy()
    prevalent[prev_rows] = True
    later = j.loc[s_day >= 0].assign(day=s_day[s_day >= 0]).groupby("row")["day"].min()
    start[later.index.to_numpy()] = later.to_numpy(dtype=float)
    return start, prevalent


def mat_target_trial(study: StudyData) -> MatTargetTrial:
    """Emulate the target trial "start MAT within ``grace_days`` of IOP admission" vs "do not" (``[mat]``).

    Returns
    -------
    MatTargetTrial
        ``result`` None with a ``reason`` when no trial can be emulated (nobody eligible, nobody or
        everybody starting MAT within the grace period, no relapse by the horizon, a model that
        cannot be fitted): the report prints the sentence instead of the section.

    Notes
    -----
    Eligible: each patient's first cohort episode with follow-up after admission, not on MAT at
    admission (no MAT era that started before admission covers the admission day). Time zero:
    admission. MAT start: the first day of a MAT era (:func:`~iop_research.derive.exposures.medication_eras`)
    on or after admission, if within follow-up. Outcome: relapse as defined by ``[outcome]``,
    follow-up to the horizon. The model of starting MAT uses the study's covariates (baseline;
    sparse levels pooled, constant ones dropped, missing values as ``[missing] policy``) and, when
    it varies, being in IOP treatment on each day as a time-varying covariate
    (:func:`mat_time_varying_frame`). Analysis: :func:`~iop_research.designs.ccw.clone_censor_weight`
    with ``[mat]`` grace_days, horizon_days, n_bootstrap and seed.
    """
    from iop_research.designs.ccw import clone_censor_weight
    from iop_research.exceptions import IopError

    cfg = study.config
    g, h = int(cfg.get("mat.grace_days")), int(cfg.get("mat.horizon_days"))
    b, seed = int(cfg.get("mat.n_bootstrap")), int(cfg.get("mat.seed"))
    base = dict(grace_days=g, horizon_days=h, n_bootstrap=b, seed=seed)
    f = study.frame
    f = f[f["time"] > 0]
    n_followed = len(f)
    if n_followed == 0:
        return MatTargetTrial(None, "no episode of the cohort has follow-up after admission.", **base)
    admit = pd.to_datetime(study.cohort_episodes.set_index("episode_id")["admit_date"].reindex(f["episode_id"]))
    order = np.lexsort((f["episode_id"].astype(str).to_numpy(), admit.to_numpy(), f["patient_id"].astype(str).to_numpy()))
    f = f.iloc[order]
    first = ~f["patient_id"].duplicated().to_numpy()
    n_later = int((~first).sum())
    f = f[first].reset_index(drop=True)
    start, prevalent = _mat_start_days(study, f)
    counts = dict(n_followed=n_followed, n_later_episode=n_later, n_prevalent=int(prevalent.sum()))
    f = f[~prevalent].reset_index(drop=True)
    start = start[~prevalent]
    time = f["time"].to_numpy(dtype=float)
    start = np.where(start <= time, start, np.nan)
    f = f.assign(mat_day=start, started=(start <= g).astype(int))
    counts.update(n_eligible=len(f), n_started=int(f["started"].sum()))
    if len(f) == 0:
        return MatTargetTrial(None, "no episode is eligible (every patient was on MAT at admission).", **base, **counts)
    if counts["n_started"] == 0:
        return MatTargetTrial(None, f"no eligible episode started MAT within {g} days of admission, so the strategy "
                              "'start MAT' is not observed.", **base, **counts)
    if counts["n_started"] == len(f):
        return MatTargetTrial(None, f"every eligible episode started MAT within {g} days of admission, so the strategy "
                              "'no MAT' is not observed.", **base, **counts)
    if int(((f["time"] <= h) & (f["event"] == 1)).sum()) == 0:
        return MatTargetTrial(None, f"no eligible episode relapsed by day {h}.", **base, **counts)
    notes = []
    covs = [c for c in study.covariates if c in f.columns]
    f, covs, pooled = _pool_sparse_levels(f, covs, {"event_col": "started"}, study.min_cell_count)
    notes += [n.replace("few episodes or events", "few episodes or MAT starts") for n in pooled]
    constant = [c for c in covs if f[c].dropna().nunique() < 2]
    if constant:
        notes.append("Not in the model of starting MAT (one value among the eligible episodes): "
                     + ", ".join(VARIABLE_LABELS.get(c, c) for c in constant) + ".")
        covs = [c for c in covs if c not in constant]
    # one model parameter per 10 MAT starts (or non-starts, if fewer): the first covariates of the adjustment
    # set that fit; the model of a few starts on many covariates separates in bootstrap samples
    n_start = int(f["started"].sum())
    limit = max(1, min(n_start, len(f) - n_start) // 10)
    kept, used = [], 0
    for c in covs:
        k = 1 if pd.api.types.is_numeric_dtype(f[c]) and not pd.api.types.is_bool_dtype(f[c]) else max(
            1, int(f[c].dropna().nunique()) - 1)
        if used + k <= limit:
            kept.append(c)
            used += k
    if len(kept) < len(covs):
        notes.append(f"The model of starting MAT has at most one parameter per 10 episodes starting MAT (or not, if "
                     f"fewer) within {g} days; left out, in the order of the adjustment set: "
                     + ", ".join(VARIABLE_LABELS.get(c, c) for c in covs if c not in kept) + ".")
        covs = kept
    n_dropped = 0
    if covs and f[covs].isna().any().any():
        if cfg.get("missing.policy") == "indicator":
            from iop_research.derive import impute

            f, covs = impute.missing_indicator(f, covs)
            covs = list(covs)
            notes.append("Missing covariate values entered the model of starting MAT as their own category "
                         "(missing indicator).")
        else:
            kept = f.dropna(subset=covs).reset_index(drop=True)
            n_dropped = len(f) - len(kept)
            f = kept
            notes.append("Complete-case analysis: eligible episodes with a missing covariate were left out.")
            if f["started"].nunique() < 2:
                return MatTargetTrial(None, "after leaving out episodes with missing covariates one strategy is not "
                                      "observed.", **base, **counts, n_dropped=n_dropped, covariates=covs)
            flat = [c for c in covs if f[c].nunique() < 2]
            covs = [c for c in covs if c not in flat]
    if used + 1 > limit:
        notes.append("Being in treatment (time-varying) is not in the model of starting MAT: the model has at most one "
                     f"parameter per 10 episodes starting MAT (or not, if fewer) within {g} days.")
    tv_frame, tv_covs = None, []
    long = mat_time_varying_frame(study)
    long = long[long["episode_id"].isin(f["episode_id"]) & (long["start"] < g)]
    if long["in_treatment"].nunique() > 1 and used + 1 <= limit:
        tv_frame = long[["episode_id", "start", "stop", "in_treatment"]]
        tv_covs = ["in_treatment"]
    try:
        res = clone_censor_weight(f, id_col="episode_id", time_col="time", event_col="event",
                                  treatment_time_col="mat_day", grace_days=g, covariates=covs, horizon_days=h,
                                  n_bootstrap=b, seed=seed, progress=False, tv_frame=tv_frame,
                                  tv_covariates=tv_covs)
    except IopError as exc:
        return MatTargetTrial(None, f"the emulated trial could not be fitted on these episodes ({type(exc).__name__}).",
                              **base, **counts, n_dropped=n_dropped, covariates=covs)
    c = res.clones
    few = [lab for s_, lab in (("start", "start MAT"), ("no_start", "no MAT"))
           if int(((c["strategy"].astype(str) == s_) & (c["start"] < h) & (c["stop"] >= h)).sum()) < study.min_cell_count]
    if few:
        notes.append(f"Fewer than {study.min_cell_count} clones of {' and of '.join(few)} were at risk on day {h}: "
                     "the risk rests on few episodes (see the width of its interval).")
    notes.insert(0, f"Clone-censor-weight: every eligible episode is cloned into both strategies at admission; a clone "
                 f"is censored when its episode deviates (a MAT start on days 0..{g} for 'no MAT'; no start by day {g} "
                 "for 'start MAT'); the remaining clones are weighted by the inverse probability of not deviating, "
                 "from a pooled logistic model of starting MAT per day on "
                 + ", ".join([VARIABLE_LABELS.get(c, c) for c in covs] + ["in treatment (time-varying)"] * bool(tv_covs)
                             + ["day"]) + ".")
    notes.insert(1, f"Weighted Kaplan-Meier risks of relapse by day {h}; 95% percentile bootstrap intervals from {b} "
                 f"replicates (episodes resampled, one per patient, every step refitted; seed {seed}).")
    return MatTargetTrial(res, None, **base, **counts, n_dropped=n_dropped, covariates=list(covs),
                          tv_covariates=tv_covs, notes=notes)


def mat_trial_protocol(study: StudyData, trial: MatTargetTrial) -> pd.DataFrame:
    """The protocol of the target trial and of its emulation (Hernan & Robins 2016), as text."""
    g, h = trial.grace_days, trial.horizon_days
    o = study.config.settings["outcome"]
    covs = ", ".join(VARIABLE_LABELS.get(c, c).lower() for c in trial.covariates) or "no baseline covariate"
    rows = [
        ("Eligibility", "People admitted to IOP, not on MAT at admission",
         "Each patient's first cohort episode with follow-up after admission, without a MAT era covering the "
         "admission day that started before it"),
        ("Treatment strategies", f"(1) start MAT within {g} days of admission; (2) do not start MAT within {g} days",
         f"The same; MAT start = first day of a MAT era on or after admission (grace period 0..{g} days)"
         + (f". Within the grace period the 'start' arm follows the natural course (weight 1), so its risk is that of "
            f"the natural course to day {g} and of starting after it; relapses counted before day {g} are not yet "
            "those of the strategy" if g > o["blanking_days"] else "")),
        ("Assignment", "Random, at admission",
         "Every episode is cloned into both strategies at admission; clones are censored when they deviate and "
         f"weighted by the inverse probability of not deviating given {covs}"
         + (" and being in treatment (time-varying)" if trial.tv_covariates else "")),
        ("Time zero", "Admission (eligibility met, strategy assigned)", "Admission (day 0)"),
        ("Outcome", "Relapse", f"Relapse from {', '.join(o['sources'])} after day {o['blanking_days']}; death and the "
         "end of follow-up censor"),
        ("Follow-up", f"From admission to relapse, loss to follow-up or day {h}", f"The same, truncated at day {h}"),
        ("Causal contrast", "Per-protocol effect", "Per-protocol effect (observational analogue)"),
        ("Analysis", f"Risks of relapse by day {h} per strategy, their difference and ratio",
         f"Weighted Kaplan-Meier per strategy; percentile bootstrap intervals ({trial.n_bootstrap} replicates, "
         f"seed {trial.seed})"),
    ]
    return pd.DataFrame(rows, columns=["component", "target trial", "emulation"])


def mat_trial_eligibility(trial: MatTargetTrial, report: str = "05_mat") -> tuple[pd.DataFrame, dict]:
    """Episodes followed, not eligible (later episodes, on MAT at admission), eligible, analysed, and of
    those starting MAT within the grace period; with the ``keys`` for :meth:`Publisher.table`."""
    analysed = trial.n_eligible - trial.n_dropped
    rows = [("episodes followed from admission", trial.n_followed),
            ("not the patient's first episode", trial.n_later_episode),
            ("on MAT at admission", trial.n_prevalent),
            ("eligible", trial.n_eligible)]
    if trial.n_dropped:
        rows += [("left out: missing covariate", trial.n_dropped), ("analysed", analysed)]
    df = pd.DataFrame(rows, columns=["episodes", "n"])
    keys = {(label, "n"): f"{report}/ccw/{_ELIGIBILITY_KEYS[label]}" for label, _ in rows}
    return df, keys


_ELIGIBILITY_KEYS = {"episodes followed from admission": "followed", "not the patient's first episode": "later_episode",
                     "on MAT at admission": "prevalent", "eligible": "eligible",
                     "left out: missing covariate": "dropped", "analysed": "analysed"}


def publish_mat_trial_eligibility(pub, trial: MatTargetTrial):
    """Publish :func:`mat_trial_eligibility` with its sums declared first (followed = later episodes + on MAT
    at admission + eligible; eligible = left out + analysed), so a small count cannot be worked out from the
    others (the channel hides what would give it away)."""
    df, keys = mat_trial_eligibility(trial, pub.report)
    k = {lab: key for (lab, _), key in keys.items()}
    pub.relate([k["not the patient's first episode"], k["on MAT at admission"], k["eligible"]],
               k["episodes followed from admission"], source="trial eligibility")
    if trial.n_dropped:
        pub.relate([k["left out: missing covariate"], k["analysed"]], k["eligible"], source="trial eligibility")
    return pub.table(df, caption="Episodes of the emulated trial: followed from admission, not eligible (a later episode "
                     "of the same patient; on MAT at admission) and eligible.", kind="counts", count_cols=["n"],
                     keys=keys, name="mat_trial_eligibility")


def mat_trial_arms(trial: MatTargetTrial, report: str = "05_mat") -> tuple[pd.DataFrame, dict]:
    """Per strategy: clones (every analysed episode), artificially censored clones, relapses counted by
    the horizon (a relapse before any deviation counts in both arms); with the ``keys`` linking the
    clones to the analysed episodes."""
    arms = trial.result.arms.set_index("strategy")
    labels = {"start": f"start MAT within {trial.grace_days} days", "no_start": f"no MAT within {trial.grace_days} days"}
    total = f"{report}/ccw/analysed" if trial.n_dropped else f"{report}/ccw/eligible"
    rows, keys = [], {}
    for s in ("start", "no_start"):
        rows.append({"strategy": labels[s], "clones": int(arms.loc[s, "n_clones"]),
                     "censored at deviation": int(arms.loc[s, "n_artificially_censored"]),
                     f"relapses by day {trial.horizon_days}": int(arms.loc[s, "n_events"])})
        keys[(labels[s], "clones")] = total
        keys[(labels[s], f"relapses by day {trial.horizon_days}")] = f"{report}/ccw/relapses/{s}"
    return pd.DataFrame(rows), keys


def mat_trial_estimates(trial: MatTargetTrial) -> pd.DataFrame:
    """Risks of relapse by the horizon per strategy (%), risk difference (percentage points) and risk ratio,
    with percentile bootstrap intervals; the pooled-logistic hazard ratio."""
    res = trial.result
    gl, boot = res.glance.iloc[0], res.bootstrap
    lvl = float(gl["conf_level"])
    a = (1 - lvl) / 2

    def q(col):
        v = boot[col].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        return (float(np.quantile(v, a)), float(np.quantile(v, 1 - a))) if len(v) else (np.nan, np.nan)

    g, h = trial.grace_days, trial.horizon_days
    hr = res.hazard_ratio.iloc[0]
    rows = [
        {"measure": f"risk of relapse by day {h}, start MAT within {g} days (%)", "estimate": 100 * gl["risk_start"],
         "95% CI low": 100 * q("risk_start")[0], "95% CI high": 100 * q("risk_start")[1]},
        {"measure": f"risk of relapse by day {h}, no MAT within {g} days (%)", "estimate": 100 * gl["risk_no_start"],
         "95% CI low": 100 * q("risk_no_start")[0], "95% CI high": 100 * q("risk_no_start")[1]},
        {"measure": "risk difference (percentage points)", "estimate": 100 * gl["risk_difference"],
         "95% CI low": 100 * gl["rd_conf_low"], "95% CI high": 100 * gl["rd_conf_high"]},
        {"measure": "risk ratio", "estimate": gl["risk_ratio"], "95% CI low": gl["rr_conf_low"],
         "95% CI high": gl["rr_conf_high"]},
        {"measure": "hazard ratio (weighted pooled logistic)", "estimate": hr["hazard_ratio"],
         "95% CI low": hr["hr_conf_low"], "95% CI high": hr["hr_conf_high"]},
    ]
    return pd.DataFrame(rows, columns=["measure", "estimate", "95% CI low", "95% CI high"])


def _trial_days(trial: MatTargetTrial) -> list[int]:
    h, g = trial.horizon_days, trial.grace_days
    step = max(1, int(round(h / 6 / 10.0)) * 10) if h >= 60 else max(1, h // 4)
    return sorted({0, g, h} | set(range(0, h + 1, step)))


def mat_trial_days(trial: MatTargetTrial) -> list[int]:
    """Days of the numbers at risk and x ticks of the trial's figure: 0, the grace period, the horizon and
    round days between."""
    return _trial_days(trial)


def mat_trial_counts(pub, trial: MatTargetTrial):
    """Publish the unweighted counts behind the trial's curves: rounded, with their ledger.

    The clones of each strategy (one row per clone with follow-up: from admission to its last day,
    relapse or censoring, artificial censoring included) form an unweighted Kaplan-Meier table whose
    numbers at risk are counts; :meth:`Publisher.km` rounds the cumulative relapses and censorings
    (midpoint) and records, as sensitive counts, those between the figure's days. The relapses per
    strategy of :func:`mat_trial_arms` (keys ``<report>/ccw/relapses/<strategy>``) are declared equal
    to the curves' totals, so the audit sees both. Returns the rounded result (numbers at risk for the
    figure), or None when no rounding unit protects those counts (few relapses in an arm whose total is
    published exactly): the counts are then withdrawn and the report shows no curves.
    """
    from iop_research.survival.km import fit_km

    c = trial.result.clones
    one = c.groupby(["strategy", "id"], observed=True).agg(time=("stop", "max"), event=("event", "max")).reset_index()
    one["group"] = pd.Categorical(one["strategy"].astype(str), categories=["start", "no_start"])
    km = fit_km(one, duration_col="time", event_col="event", group_col="group", times=_trial_days(trial))
    name = "mat_trial_counts"
    source = "clones' relapses = the strategy's curve"
    for s_ in ("start", "no_start"):
        pub.relate([f"{pub.report}/{name}/{s_}/events/total"], f"{pub.report}/ccw/relapses/{s_}", source=source)
    counts = pub.km(km, name=name, times=_trial_days(trial))
    audit = pub.audit(raise_on_failure=False)
    mine = audit["key"].astype(str).str.startswith(f"{pub.report}/{name}/")
    if not audit.loc[mine, "is_protected"].all():
        pub.withdraw(name, sources=[source])
        return None
    return counts


def rounding_unit(counts) -> int:
    """The rounding unit of a result of :meth:`Publisher.km` (from its ``conventions["disclosure"]``)."""
    import re

    m = re.search(r"multiple of (\d+)", str(counts.conventions.get("disclosure", "")))
    if m is None:
        raise ModelSpecificationError("rounding_unit: not a result of Publisher.km (no rounding recorded).")
    return int(m.group(1))


def mat_trial_figure(study: StudyData, trial: MatTargetTrial, counts):
    """Weighted relapse-free curves per strategy with bootstrap bands, and the numbers at risk of the
    rounded counts ``counts`` (:func:`mat_trial_counts`), suppressed below ``min_cell_count``; a curve
    stops where its rounded number at risk falls below ``min_cell_count``."""
    import matplotlib.pyplot as plt
    from iop_research.present.plots import plot_km
    from iop_research.privacy import suppress_risk_table

    days = _trial_days(trial)
    rt = counts.tidy
    tidy = trial.result.tidy.rename(columns={"strategy": "group"}).copy()
    at_risk = np.zeros(len(tidy), dtype=np.int64)
    for s_ in ("start", "no_start"):
        m = (tidy["group"] == s_).to_numpy()
        r = rt[rt["group"].astype(str) == s_].sort_values("time")
        t, n = r["time"].to_numpy(dtype=float), r["n_at_risk"].to_numpy()
        # number at risk on day x: of the first table time >= x (none left after the last)
        i = np.searchsorted(t, tidy.loc[m, "time"].to_numpy(dtype=float), side="left")
        at_risk[m] = np.where(i < len(t), n[np.minimum(i, len(t) - 1)], 0)
    tidy["n_at_risk"] = at_risk
    risk = suppress_risk_table(rt.assign(group=rt["group"].astype(str)), times=days,
                               min_cell_count=study.min_cell_count, include=("n_at_risk",))
    labels = {"start": f"start MAT within {trial.grace_days} days", "no_start": f"no MAT within {trial.grace_days} days"}
    fig, ax = plt.subplots(figsize=(DOUBLE_WIDTH_IN, 3.8))
    plot_km(tidy, ax=ax, risk_table=risk, censor_marks=False, min_cell_count=study.min_cell_count, times=days,
            labels=labels, xlabel="Days since admission", ylabel="Probability without relapse (weighted)")
    ax.axvline(trial.grace_days, color="0.6", linewidth=0.8, linestyle=":")
    fig.subplots_adjust(bottom=0.32, left=0.22)
    return fig


# ----------------------------------------------------------------------------- weekly urine screens
# (helpers of the screens report, 07_screens; kept together at the end of the module)
__all__ += ["ScreensData", "screens_data", "screens_rule_text", "screens_by_week", "screens_imputed_by_week",
            "screens_figure", "ScreensModel",
            "screens_model", "screens_model_frame", "screens_endpoints"]

_SCREEN_GROUPS = {"mat": ("MAT during the episode", "no MAT during the episode")}


@dataclass
class ScreensData:
    """The weekly screen series of a study (``[screens]``).

    Attributes
    ----------
    weeks : pandas.DataFrame
        :func:`~iop_research.derive.repeated.uds_weeks` of the cohort's episodes under the rule
        (``missing="positive"``, or ``"missing"`` for the rules missing and impute), with
        ``group`` (the compared group, or ``"all episodes"``) and ``exposure`` (0/1, or absent).
    rule : str
        ``[screens] missed_rule``.
    imputed : list of pandas.DataFrame
        The ``m`` imputed frames (rule impute; else empty).
    groups : list of str
        Group labels, the reference first (one label without a comparison).
    first_week : int
        First week modelled: 1 (the intake week reflects use before treatment) or, for the
        modality exposure, the first week starting on or after ``window_days``.
    n_screens, n_missed, n_scheduled : int
        Weeks with a screen, scheduled weeks missed, scheduled weeks (all built weeks of the series).
    reason : str or None
        Why there is nothing to analyse (no screen in the series), else None.
    notes : list of str
        Sentences for the report (e.g. a comparison left out because one group is empty).
    """

    weeks: pd.DataFrame
    rule: str
    imputed: list
    groups: list
    first_week: int
    n_screens: int = 0
    n_missed: int = 0
    n_scheduled: int = 0
    reason: str | None = None
    notes: list = field(default_factory=list)


def screens_rule_text(rule: str, *, m: int | None = None, seed: int | None = None) -> str:
    """The missed-screen rule in words (the first sentence of the screens report)."""
    if rule == "positive":
        return ("Missed-screen rule: a week in treatment without a urine screen counts as a positive week "
                "(\"missed = positive\", the usual trial rule). It assumes a missed screen hides use; where patients "
                "miss screens for other reasons it overstates use.")
    if rule == "missing":
        return ("Missed-screen rule: a week in treatment without a urine screen is left out (\"missed = missing\"). "
                "It assumes missed weeks are like the screened weeks of the same patients; where a missed screen "
                "hides use it understates use.")
    return (f"Missed-screen rule: each week in treatment without a urine screen is multiply imputed (m = {m}, seed "
            f"{seed}) from the week number, the results of the neighbouring weeks and the compared group, and the "
            "estimates are pooled with Rubin's rules. It assumes the missed result is random given these "
            "predictors (missing at random); use that depends on more than they capture is not recovered.")


def screens_data(study: StudyData) -> ScreensData:
    """Build the weekly screen series of ``[screens]`` (see :class:`ScreensData`)."""
    from iop_research.derive.repeated import impute_missed_weeks, uds_weeks

    sc = study.config.settings["screens"]
    rule, n_weeks, exposure = sc["missed_rule"], int(sc["weeks"]), sc["exposure"]
    empty = pd.DataFrame(columns=["episode_id", "patient_id", "week", "n_screens", "scheduled", "missed", "positive",
                                  "group"])
    if len(study.cohort_episodes) == 0:
        return ScreensData(empty, rule, [], ["all episodes"], 1, reason="the cohort is empty.")
    w = uds_weeks(study.data, study.cohort_episodes, weeks=n_weeks,
                  missing="positive" if rule == "positive" else "missing")
    w.attrs.pop("attrition", None)  # a DataFrame in attrs makes pandas compare frames on every concat
    first_week, notes = 1, []
    groups = ["all episodes"]
    if exposure == "mat":
        has = study.cohort_episodes.set_index("episode_id")["has_mat"].astype(bool) \
            if "has_mat" in study.cohort_episodes.columns else pd.Series(False, index=study.cohort_episodes["episode_id"])
        x = w["episode_id"].map(has).fillna(False).astype(bool).to_numpy()
        yes, no = _SCREEN_GROUPS["mat"]
        w["exposure"] = x.astype(int)
        w["group"] = np.where(x, yes, no)
        groups = [no, yes]
    elif exposure == "modality":
        window, modality = int(study.config.get("comparison.window_days")), study.config.get("comparison.modality")
        first_week = max(1, -(-window // 7))
        ses = _attended_sessions(study)
        has = set(ses.loc[(ses["modality"] == modality) & (ses["day"] < window), "episode_id"])
        x = w["episode_id"].isin(has).to_numpy()
        yes, no = (f"any {_modality_name(modality)} session on days 0-{window - 1}",
                   f"no {_modality_name(modality)} session on days 0-{window - 1}")
        w["exposure"] = x.astype(int)
        w["group"] = np.where(x, yes, no)
        groups = [no, yes]
        notes.append(f"The groups are fixed by day {window} (the exposure window), so the model uses the weeks from "
                     f"week {first_week} (day {7 * first_week}) on, when every episode's group is known.")
    else:
        w["group"] = groups[0]
    if "exposure" in w.columns:
        present = [g for g in groups if (w["group"] == g).any()]
        if len(present) < 2:
            notes.append("Only one group (" + (present[0] if present else "none") + ") has weeks in the series, so "
                         "the groups are not compared.")
            w = w.drop(columns="exposure")
            w["group"] = "all episodes"
            groups = ["all episodes"]
    sched = w["scheduled"].to_numpy(dtype=bool)
    n_screens = int((w["n_screens"] > 0).sum())
    n_missed = int(w["missed"].sum())
    out = ScreensData(w, rule, [], groups, first_week, n_screens=n_screens, n_missed=n_missed,
                      n_scheduled=int(sched.sum()), notes=notes)
    if n_screens == 0:
        out.reason = "the cohort's episodes have no urine screen in the first " + f"{n_weeks} weeks."
        return out
    if rule == "impute" and n_missed:
        cov = None
        if "exposure" in w.columns:
            cov = w.drop_duplicates("episode_id")[["episode_id", "exposure"]]
        out.imputed = impute_missed_weeks(w[list(w.columns.drop(["group"] + (["exposure"] if cov is not None else [])))],
                                          m=int(sc["m"]), seed=int(sc["seed"]), covariates=cov)
    return out


def screens_by_week(sdat: ScreensData) -> pd.DataFrame:
    """Per week: weeks with a result, positive weeks (under the rule) and, for rule impute, the pooled % positive.

    ``weeks with a result``: episodes screened that week (plus, under missed = positive, those
    that missed a scheduled screen); ``positive`` and ``negative``: those positive and negative;
    ``% positive``: positive over weeks with a result. Under impute the counts are the
    screened weeks and the ``% positive (missed imputed)`` column is the mean over imputations.
    """
    w = sdat.weeks
    res = w[w["positive"].notna()]
    out = pd.DataFrame({"week": np.arange(int(w["week"].max()) + 1 if len(w) else 0)})
    out["weeks with a result"] = res.groupby("week").size().reindex(out["week"]).fillna(0).astype(int).to_numpy()
    out["positive"] = res.groupby("week")["positive"].sum().reindex(out["week"]).fillna(0).astype(int).to_numpy()
    out["negative"] = out["weeks with a result"] - out["positive"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["% positive"] = 100.0 * out["positive"] / out["weeks with a result"]
    return out[out["weeks with a result"] > 0].reset_index(drop=True)


def screens_imputed_by_week(sdat: ScreensData, by_week_published: pd.DataFrame) -> pd.DataFrame:
    """Rule impute: % positive among scheduled and screened weeks, missed weeks imputed (mean over imputations).

    Only for the weeks whose observed % positive was published (``by_week_published``: the displayed
    strings of the :func:`screens_by_week` table); elsewhere the estimate is left out, since with the
    week's published counts it would narrow a hidden one.
    """
    shares = [f[f["scheduled"] | (f["n_screens"] > 0)].groupby("week")["positive"].mean() for f in sdat.imputed]
    est = 100 * pd.concat(shares, axis=1).mean(axis=1)
    t = by_week_published
    ok = pd.to_numeric(t["% positive"].astype(str), errors="coerce").notna().to_numpy()
    weeks = t["week"].astype(str).str.replace(",", "").astype(int).to_numpy()
    return pd.DataFrame({"week": weeks[ok], "% positive (missed imputed)": est.reindex(weeks[ok]).to_numpy()})


def screens_figure(study: StudyData, by_week_published: pd.DataFrame, imputed_published: pd.DataFrame | None = None):
    """Share of positive weeks by week since admission, as published (weeks whose % was hidden are not drawn)."""
    import matplotlib.pyplot as plt

    from iop_research.present import plots

    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN * 1.6, 3.2))
    series = [(by_week_published, "% positive", "screened weeks" if imputed_published is not None else "positive")]
    if imputed_published is not None:
        series.append((imputed_published, "% positive (missed imputed)", "missed weeks imputed"))
    cols = [c for _, c, _ in series]
    for k, (t, col, label) in enumerate(series):
        vals = pd.to_numeric(t[col].astype(str).str.rstrip("%"), errors="coerce")
        shown = vals.notna().to_numpy()
        wk = t["week"].astype(str).str.replace(",", "").astype(int).to_numpy()
        ax.plot(wk[shown], vals.to_numpy()[shown], marker=plots.MARKERS[k], color=plots.OKABE_ITO[k], label=label)
    ax.set_xlabel("Week since admission")
    ax.set_ylabel("Positive weeks (%)")
    ax.set_ylim(bottom=0)
    if len(cols) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@dataclass
class ScreensModel:
    """A model of weekly positivity (``[screens] model``), with the frame it used."""

    fit: AdjustedFit | None
    model: str
    n_weeks: int
    n_episodes: int
    reason: str | None = None
    description: str = ""


def _screens_fit(kind: str, corstr: str, nagq: int, imputed: list):
    """``fit(df, covariates=...)`` for :func:`fit_adjusted`: GEE or GLMM of ``positive`` (pooled over imputed weeks)."""
    from iop_research.derive.impute import pool_rubin
    from iop_research.longitudinal import fit_gee, fit_glmm

    def one(df, covariates):
        formula = "positive ~ " + " + ".join(["week", *covariates])
        if kind == "gee":
            return fit_gee(df, formula=formula, id_col="episode_id", corstr=corstr, time_col="week")
        return fit_glmm(df, formula=formula, group_col="episode_id", nagq=nagq)

    def fit(df, *, covariates, event_col=None):
        if not imputed:
            return one(df, covariates)
        key = ["episode_id", "week"]
        fits = []
        for f in imputed:
            d = df.drop(columns="positive").merge(f[key + ["positive"]], on=key, how="left", validate="one_to_one")
            fits.append(one(d, covariates))
        return pool_rubin(fits)

    return fit


def screens_model(study: StudyData, sdat: ScreensData) -> ScreensModel:
    """GEE (or GLMM) of a positive week on week, the compared group and the study's covariates."""
    from iop_research.exceptions import IopError

    sc = study.config.settings["screens"]
    kind, corstr = sc["model"], sc["corstr"]
    w = sdat.weeks
    d = w[(w["week"] >= sdat.first_week) & (w["positive"].notna() | w["missed"])]
    if not sdat.imputed:
        d = d[d["positive"].notna()]
    d = study.with_baseline(d.reset_index(drop=True))
    n_eps = int(d["episode_id"].nunique())
    if len(d) == 0 or d["positive"].dropna().nunique() < 2:
        return ScreensModel(None, kind, len(d), n_eps, reason="the modelled weeks are all negative or all positive "
                            "(or there are none), so there is nothing to model.")
    exposure = ["exposure"] if "exposure" in d.columns else []
    if kind == "gee":
        desc = (f"GEE logistic model of a positive week on the week number{', the group' if exposure else ''} and the "
                f"intake covariates, {corstr} working correlation within an episode, robust (sandwich) standard errors "
                "(R: geepack::geeglm). Odds ratios are population-average.")
    else:
        desc = (f"Logistic mixed model of a positive week on the week number{', the group' if exposure else ''} and "
                "the intake covariates with a random intercept per episode (Laplace approximation; R: lme4::glmer). "
                "Odds ratios are subject-specific (conditional on the episode), larger in size than population-average "
                "ones.")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # separation: reported below, not as a warning
            fit = fit_adjusted(study, d, fit=_screens_fit(kind, corstr, 1, sdat.imputed), exposure=exposure,
                               event_col="positive")
    except IopError as exc:
        return ScreensModel(None, kind, len(d), n_eps, reason=f"the model could not be fitted ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]})", description=desc)
    bad = _unstable_terms(fit.result.tidy)
    if bad:
        return ScreensModel(None, kind, len(d), n_eps, description=desc,
                            reason="its coefficients are not estimable in these data (a positive week (nearly) always "
                            "or never within a level: " + ", ".join(bad) + "); leave the covariate out in "
                            "[covariates] adjust or widen the cohort.")
    return ScreensModel(fit, kind, fit.n_rows, fit.n_episodes, description=desc)


def screens_model_frame(sm: ScreensModel, sdat: ScreensData) -> pd.DataFrame:
    """Odds ratios of the screens model: ``Term, OR, 95% CI low, 95% CI high, p`` (intercept left out)."""
    t = sm.fit.result.tidy
    t = t[t["term"] != "(Intercept)"]
    extra = {"week": "Week since admission (per week)"}
    if len(sdat.groups) == 2:
        extra["exposure"] = f"{sdat.groups[1]} (vs {sdat.groups[0]})"
    labels = term_labels(t["term"].tolist(), extra=extra)
    return pd.DataFrame({"Term": t["term"].map(labels).to_numpy(), "OR": np.exp(t["estimate"].to_numpy(dtype=float)),
                         "95% CI low": np.exp(t["conf_low"].to_numpy(dtype=float)),
                         "95% CI high": np.exp(t["conf_high"].to_numpy(dtype=float)),
                         "p": t["p_value"].to_numpy(dtype=float)})


def screens_endpoints(study: StudyData, sdat: ScreensData) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Abstinence endpoints by group, each table with an ``all episodes`` row (the last row).

    Returns
    -------
    (endpoints, counts)
        ``endpoints``: ``group, episodes, mean % negative weeks, median longest negative run (weeks)``
        and, for rule impute, ``% abstinent in the final weeks`` (means over the imputations).
        ``counts`` (rules positive and missing; None for impute): ``group, episodes with the final
        weeks, abstinent, not abstinent, % abstinent`` (abstinent: every one of the last
        ``[screens] last_weeks`` weeks of the episode's series negative).
    """
    from iop_research.derive.repeated import abstinence_endpoints

    last = int(study.config.get("screens.last_weeks"))
    frames = sdat.imputed or [sdat.weeks]
    group = sdat.weeks.drop_duplicates("episode_id").set_index("episode_id")["group"]
    ends = [abstinence_endpoints(f, last_weeks=last).assign(group=lambda e: e["episode_id"].map(group)) for f in frames]
    labels = list(sdat.groups) if len(sdat.groups) > 1 else []
    rows, counts = [], []
    for g in labels + ["all episodes"]:
        sel = [e if g == "all episodes" else e[e["group"] == g] for e in ends]
        e0 = sel[0]
        row = {"group": g, "episodes": int(len(e0)),
               "mean % negative weeks": float(np.mean([100 * s["share_negative"].mean() for s in sel])),
               "median longest negative run (weeks)": float(np.mean([s["longest_negative_run"].median() for s in sel]))}
        if sdat.imputed:
            # a mean of exact fractions can give away a small count (15/16 = 93.75%): shown only when, in every
            # imputation, the abstinent and the not abstinent episodes are each 0 or at least min_cell_count
            k_ = [(int((s["abstinent_last_weeks"] == 1).sum()), int((s["abstinent_last_weeks"] == 0).sum())) for s in sel]
            safe = all(a == 0 or a >= study.min_cell_count for pair in k_ for a in pair) and all(sum(p) for p in k_)
            row["% abstinent in the final weeks"] = (
                float(np.mean([100 * s["abstinent_last_weeks"].mean() for s in sel])) if safe else "hidden (small counts)")
        rows.append(row)
        n_final = int(e0["abstinent_last_weeks"].notna().sum())
        k = int((e0["abstinent_last_weeks"] == 1).sum())
        counts.append({"group": g, "episodes with the final weeks": n_final, "abstinent": k,
                       "not abstinent": n_final - k, "% abstinent": 100.0 * k / n_final if n_final else np.nan})
    return pd.DataFrame(rows), (None if sdat.imputed else pd.DataFrame(counts))


# ----------------------------------------------------------------------------- programmes compared fairly
# (helpers of the programmes report, 08_programmes; kept together at the end of the module)
__all__ += ["ProgrammeComparison", "programme_comparison", "programme_outcome_text", "programme_counts",
            "programme_hidden", "programme_rates_table", "programme_figures", "programme_glmm_frame"]

_PROGRAMME_OUTCOMES = {
    "completion": ("completed", "not completed", "completion",
                   "completed treatment (discharge reason \"completed\"), among episodes with a discharge"),
    "retention_90": ("retained 90 days", "not retained", "retention to day 90",
                     "still in treatment 90 days after admission (discharged on day 90 or later, or open and observed "
                     "to day 90), among episodes with 90 days of follow-up or an earlier discharge"),
}


@dataclass
class ProgrammeComparison:
    """Programmes compared on ``[programmes] outcome`` with the study's case mix.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per episode: ``episode_id, program, y`` (0/1) and the case-mix covariates (after the
        missing-covariate policy).
    covariates : list of str
        Case-mix covariates of the models (never the programme).
    rates : Result or None
        :func:`~iop_research.longitudinal.programme_rates`.
    glmm : Result or None
        :func:`~iop_research.longitudinal.fit_glmm` with a random programme intercept (profile interval of its SD).
    reason : str or None
        Why programmes are not compared (one programme, fewer than ``min_programmes``, ...).
    n_excluded, n_dropped : int
        Episodes without the outcome (e.g. still open), episodes dropped for missing covariates.
    notes : list of str
    """

    frame: pd.DataFrame
    covariates: list
    rates: Any = None
    glmm: Any = None
    reason: str | None = None
    glmm_reason: str | None = None
    n_excluded: int = 0
    n_dropped: int = 0
    notes: list = field(default_factory=list)


def programme_outcome_text(outcome: str, *, short: bool = False) -> str:
    """What the compared outcome is, in words (``short``: its name, e.g. ``"completion"``)."""
    return _PROGRAMME_OUTCOMES[outcome][2 if short else 3]


def _programme_outcome(study: StudyData, outcome: str) -> pd.DataFrame:
    ce = study.cohort_episodes
    if outcome == "completion":
        has = ce["discharge_reason"].notna()
        return pd.DataFrame({"episode_id": ce.loc[has, "episode_id"].to_numpy(), "program": ce.loc[has, "program"].astype(str).to_numpy(),
                             "y": (ce.loc[has, "discharge_reason"] == "completed").astype(int).to_numpy()})
    obs = study.data.observation.drop_duplicates("patient_id").set_index("patient_id")["observation_end"]
    admit = pd.to_datetime(ce["admit_date"])
    day90 = admit + pd.Timedelta(days=90)
    dis = pd.to_datetime(ce["discharge_date"])
    end = pd.to_datetime(ce["patient_id"].map(obs))
    retained = (dis.notna() & (dis >= day90)) | (dis.isna() & (end >= day90))
    known = dis.notna() | (end >= day90)
    return pd.DataFrame({"episode_id": ce.loc[known, "episode_id"].to_numpy(),
                         "program": ce.loc[known, "program"].astype(str).to_numpy(),
                         "y": retained[known].astype(int).to_numpy()})


def programme_comparison(study: StudyData) -> ProgrammeComparison:
    """Risk-standardised rates per programme and a random-intercept GLMM (``[programmes]``).

    The case mix is the study's covariates without the programme (``[covariates] adjust``); missing
    values follow ``[missing] policy`` (complete case or missing indicator; multiple imputation is
    refused by the study file for this question). Sparse levels of categorical covariates are pooled
    as in :func:`fit_adjusted`. Expected counts come from a logistic case-mix model without the
    programme (indirect standardisation, :func:`~iop_research.longitudinal.programme_rates`); the
    between-programme SD from ``glmer(y ~ case mix + (1 | program))`` with its profile-likelihood interval.
    """
    from iop_research.derive import impute
    from iop_research.exceptions import IopError
    from iop_research.longitudinal import fit_glmm, programme_rates

    pc = study.config.settings["programmes"]
    outcome = pc["outcome"]
    y = _programme_outcome(study, outcome)
    n_excluded = len(study.cohort_episodes) - len(y)
    covs = [c for c in study.covariates if c != "program"]
    d = y.merge(study.baseline[["episode_id"] + covs], on="episode_id", how="left", validate="one_to_one")
    out = ProgrammeComparison(d, covs, n_excluded=n_excluded)
    k = d["program"].nunique()
    if len(d) == 0:
        out.reason = "no episode of the cohort has the outcome recorded."
        return out
    if k < int(pc["min_programmes"]):
        names = ", ".join(sorted(d["program"].unique()))
        if k == 1:
            out.reason = (f"the cohort has a single programme ({names}), so there is no other programme to compare it "
                          "with.")
        else:
            out.reason = (f"the cohort has {_words(k)} programmes ({names}), fewer than the {pc['min_programmes']} "
                          "the study requires for a comparison ([programmes] min_programmes).")
        return out
    if d["y"].nunique() < 2:
        out.reason = "every episode has the same outcome, so there is nothing to compare."
        return out
    d, covs, pooled = _pool_sparse_levels(d, covs, {"event_col": "y"}, study.min_cell_count)
    out.notes += pooled
    policy = study.config.get("missing.policy")
    if policy == "multiple_imputation":
        out.reason = ("[missing] policy = \"multiple_imputation\" is not supported for the programme comparison; use "
                      "complete_case or indicator.")
        return out
    if covs and d[covs].isna().any().any():
        if policy == "complete_case":
            kept = d.dropna(subset=covs)
            out.n_dropped = len(d) - len(kept)
            d = kept.reset_index(drop=True)
            out.notes.append("Complete-case analysis: episodes with a missing case-mix covariate were left out.")
        else:
            d, covs = impute.missing_indicator(d, covs)
            covs = list(covs)
            out.notes.append("Missing case-mix values entered the models as their own category (missing indicator).")
    flat = [c for c in covs if d[c].dropna().nunique() < 2]
    if flat:
        out.notes.append("Not in the case-mix model (one value among these episodes): "
                         + ", ".join(VARIABLE_LABELS.get(c, c) for c in flat) + ".")
        covs = [c for c in covs if c not in flat]
    out.frame, out.covariates = d, covs
    try:
        out.rates = programme_rates(d, programme_col="program", outcome_col="y", covariates=covs)
    except IopError as exc:
        out.reason = f"the case-mix model could not be fitted ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})."
        return out
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # separation: reported below, not as a warning
            glmm = fit_glmm(d, formula="y ~ " + (" + ".join(covs) if covs else "1"), group_col="program",
                            nagq=int(pc["nagq"]), profile=True)
    except IopError as exc:
        out.glmm_reason = (f"the random-intercept model could not be fitted ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}).")
        return out
    bad = _unstable_terms(glmm.tidy)
    if bad:
        out.glmm_reason = ("the random-intercept model's case-mix coefficients are not estimable in these data (an "
                           "outcome (nearly) all or none within a level: " + ", ".join(bad) + "); leave the covariate "
                           "out in [covariates] adjust or widen the cohort.")
    else:
        out.glmm = glmm
    return out


def _unstable_terms(tidy: pd.DataFrame, limit: float = 10.0) -> list[str]:
    """Readable names of terms whose estimate or interval is not finite or beyond ``limit`` on the log-odds scale."""
    cols = [c for c in ("estimate", "std_error", "conf_low", "conf_high") if c in tidy.columns]
    v = tidy[cols].to_numpy(dtype=float)
    bad = ~np.isfinite(v).all(axis=1) | (np.abs(tidy["estimate"].to_numpy(dtype=float)) > limit)
    terms = tidy.loc[bad & (tidy["term"] != "(Intercept)").to_numpy(), "term"].tolist()
    return list(term_labels(terms).values())


def programme_counts(pc: ProgrammeComparison, outcome: str) -> pd.DataFrame:
    """Episodes, outcome and its complement per programme, with an ``all programmes`` row (counts and crude %)."""
    yes, no, what, _ = _PROGRAMME_OUTCOMES[outcome]
    g = pc.frame.groupby("program")["y"].agg(["size", "sum"])
    rows = pd.DataFrame({"programme": g.index.astype(str), "episodes": g["size"].astype(int).to_numpy(),
                         yes: g["sum"].astype(int).to_numpy()})
    rows.loc[len(rows)] = ["all programmes", int(rows["episodes"].sum()), int(rows[yes].sum())]
    rows[no] = rows["episodes"] - rows[yes]
    rows[f"% {yes}"] = 100.0 * rows[yes] / rows["episodes"]
    return rows


def programme_hidden(published_counts: pd.DataFrame) -> set:
    """Programmes with a count hidden in the published counts table (their estimates would give the count away)."""
    counts = [c for c in published_counts.columns if c != "programme" and not c.startswith("%")]
    hid = published_counts[counts].astype(str).apply(lambda s: s.str.startswith("<") | (s == "*")).any(axis=1)
    return set(published_counts.loc[hid.to_numpy(), "programme"].astype(str)) - {"all programmes"}


def programme_rates_table(pc: ProgrammeComparison, hidden: set) -> pd.DataFrame:
    """Risk-standardised rates (%) with 95% intervals and O/E per programme; programmes in ``hidden`` blanked."""
    t = pc.rates.tidy
    out = pd.DataFrame({"programme": t["programme"].astype(str).to_numpy(), "observed / expected": t["oe_ratio"].to_numpy(),
                        "crude rate (%)": 100 * t["rate_crude"].to_numpy(),
                        "risk-standardised rate (%)": 100 * t["rate_standardized"].to_numpy(),
                        "95% CI low": 100 * t["conf_low"].to_numpy(),
                        "95% CI high": 100 * np.minimum(t["conf_high"].to_numpy(), 1.0),
                        "outside 99.8% funnel limits": t["flag"].replace("", "no").to_numpy()})
    out = out.astype({c: object for c in out.columns if c != "programme"})
    hide = out["programme"].isin(hidden).to_numpy()
    for c in out.columns[1:]:
        out.loc[hide, c] = "hidden (small counts)"
    return out


def programme_figures(study: StudyData, pc: ProgrammeComparison, hidden: set, outcome: str):
    """Funnel and caterpillar plots of the programmes whose counts were all published; (figure, caption).

    The figure is None when no programme can be drawn (the caption then says why).
    """
    import matplotlib.pyplot as plt

    from iop_research.present.programmes import drawable_programmes, plot_caterpillar, plot_funnel

    t = pc.rates.tidy
    drawable, n_small = drawable_programmes(t, study.min_cell_count)
    shown = drawable[~drawable["programme"].astype(str).isin(hidden)]
    n_left = len(t) - len(shown)
    what = _PROGRAMME_OUTCOMES[outcome][2]
    if len(shown) == 0:
        return None, (f"No programme is drawn: every programme has a small (below {study.min_cell_count}) or hidden "
                      "count, which a point on a funnel or caterpillar plot would give away.")
    fig, axes = plt.subplots(1, 2, figsize=(DOUBLE_WIDTH_IN, max(3.2, 0.28 * len(shown) + 1.4)))
    if len(shown):
        plot_funnel(shown, ax=axes[0], min_cell_count=study.min_cell_count, ylabel=f"Observed / expected ({what})")
        plot_caterpillar(shown, ax=axes[1], min_cell_count=study.min_cell_count,
                         xlabel=f"Risk-standardised {what} (95% CI)")
    fig.tight_layout()
    caption = (f"Left: funnel plot of observed over expected {what} against the expected count, with 95% (dashed) and "
               "99.8% (dotted) limits under no programme effect. Right: risk-standardised rates with 95% intervals, "
               "sorted; dashed line: the rate of the programmes shown.")
    if n_left:
        caption += (f" {n_left} programme{'s are' if n_left != 1 else ' is'} not drawn because a count of "
                    f"{'their' if n_left != 1 else 'its'} episodes is small (below {study.min_cell_count}) or hidden.")
    return fig, caption


def programme_glmm_frame(pc: ProgrammeComparison) -> pd.DataFrame:
    """Case-mix odds ratios of the random-intercept model: ``Term, OR, 95% CI low, 95% CI high, p``."""
    t = pc.glmm.tidy
    t = t[t["term"] != "(Intercept)"]
    labels = term_labels(t["term"].tolist())
    return pd.DataFrame({"Term": t["term"].map(labels).to_numpy(), "OR": t["odds_ratio"].to_numpy(dtype=float),
                         "95% CI low": t["or_conf_low"].to_numpy(dtype=float),
                         "95% CI high": t["or_conf_high"].to_numpy(dtype=float),
                         "p": t["p_value"].to_numpy(dtype=float)})
