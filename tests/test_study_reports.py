"""Study report templates and the study file: every key acts, the templates run on any valid data.

The templates are executed in process (their code cells in order, the
``parameters`` cell overridden as papermill would) on a simulated cohort of 300
patients; ``tests/test_report.py`` runs them through papermill and Chromium.
What a report publishes is compared through its publishing channel: every
table (the displayed, suppressed strings), text and figure caption.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from iop_research.data.synth import simulate_cohort  # noqa: E402
from iop_research.exceptions import DataReadError, ModelSpecificationError  # noqa: E402
from iop_research.reports import study as st  # noqa: E402
from iop_research.reports.build import TEMPLATES_DIR  # noqa: E402
from template_runner import execute_template  # noqa: E402
from iop_research.reports.config import QUESTIONS, STUDY_KEYS, load_study  # noqa: E402

N_PATIENTS = 300


@pytest.fixture(scope="module")
def data300():
    return simulate_cohort(N_PATIENTS, seed=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, data300):
    return data300.write(tmp_path_factory.mktemp("s300") / "data", format="parquet")


@pytest.fixture(scope="module")
def data_missing_dir(tmp_path_factory, data300):
    """The same cohort with housing missing for every fourth admission."""
    from iop_research.data.io import IOPData

    adm = data300.admissions.copy()
    adm["housing"] = adm["housing"].astype(object)
    adm.loc[adm.index % 4 == 0, "housing"] = None
    d = IOPData(data300.patients, adm, data300.sessions, data300.medications, data300.events, data300.observation)
    return d.write(tmp_path_factory.mktemp("s300m") / "data", format="parquet")


def run_template(name: str, study: dict, data_path, out_dir: Path | None = None) -> dict:
    """Execute a template in process; return what it published, by display."""
    out = {}
    for p in execute_template(name, study, data_path, out_dir).published:
        body = p.table.to_csv(index=False) if p.table is not None else p.plain
        out[f"{p.kind}:{p.name}"] = body
    return out


# ----------------------------------------------------------------------------- every key acts
#: (key, template, base settings, changed settings, data). Each change must change that report.
KEY_CASES = [
    ("cohort.min_age", "01_cohort", {}, {"cohort": {"min_age": 40}}, "full"),
    ("cohort.max_age", "01_cohort", {}, {"cohort": {"max_age": 40}}, "full"),
    ("cohort.primary_substances", "03_relapse", {}, {"cohort": {"primary_substances": ["opioids", "alcohol"]}}, "full"),
    ("cohort.programs", "03_relapse", {}, {"cohort": {"programs": ["Site A", "Site B"]}}, "full"),
    ("cohort.admit_from", "01_cohort", {}, {"cohort": {"admit_from": "2020-01-01"}}, "full"),
    ("cohort.admit_to", "01_cohort", {}, {"cohort": {"admit_to": dt.date(2021, 12, 31)}}, "full"),
    ("cohort.first_episode_only", "01_cohort", {}, {"cohort": {"first_episode_only": True}}, "full"),
    ("cohort.min_followup_days", "01_cohort", {}, {"cohort": {"min_followup_days": 540}}, "full"),
    ("outcome.sources", "03_relapse", {}, {"outcome": {"sources": ["uds", "overdose"]}}, "full"),
    ("outcome.blanking_days", "03_relapse", {}, {"outcome": {"blanking_days": 30}}, "full"),
    ("outcome.max_followup_days", "03_relapse", {}, {"outcome": {"max_followup_days": 200}}, "full"),
    ("comparison.exposure", "04_modalities", {}, {"comparison": {"exposure": "modality_mix"}}, "full"),
    ("comparison.modality", "04_modalities", {}, {"comparison": {"modality": "individual"}}, "full"),
    ("comparison.window_days", "04_modalities", {}, {"comparison": {"window_days": 45}}, "full"),
    ("comparison.design", "04_modalities", {}, {"comparison": {"design": "time_varying"}}, "full"),
    ("comparison.reference", "04_modalities", {}, {"comparison": {"reference": "any"}}, "full"),
    ("comparison.groups", "04_modalities", {"comparison": {"exposure": "modality_mix"}},
     {"comparison": {"exposure": "modality_mix", "groups": ["individual+group+education"]}}, "full"),
    ("covariates.adjust", "03_relapse", {}, {"covariates": {"adjust": ["age", "sex", "program"]}}, "full"),
    ("missing.policy", "03_relapse", {}, {"missing": {"policy": "indicator"}}, "missing"),
    ("missing.m", "03_relapse", {"missing": {"policy": "multiple_imputation", "m": 3}},
     {"missing": {"policy": "multiple_imputation", "m": 4}}, "missing"),
    ("missing.seed", "03_relapse", {"missing": {"policy": "multiple_imputation", "m": 3}},
     {"missing": {"policy": "multiple_imputation", "m": 3, "seed": 7}}, "missing"),
    ("horizons.days", "03_relapse", {}, {"horizons": {"days": [30, 60]}}, "full"),
    ("landmarks.days", "05_mat", {}, {"landmarks": {"days": [14, 60]}}, "full"),
    ("mat.design", "05_mat", {}, {"mat": {"design": "ccw", "n_bootstrap": 10}}, "full"),
    ("mat.grace_days", "05_mat", {"mat": {"design": "ccw", "n_bootstrap": 10}},
     {"mat": {"design": "ccw", "n_bootstrap": 10, "grace_days": 14}}, "full"),
    ("mat.horizon_days", "05_mat", {"mat": {"design": "ccw", "n_bootstrap": 10}},
     {"mat": {"design": "ccw", "n_bootstrap": 10, "horizon_days": 120}}, "full"),
    ("mat.n_bootstrap", "05_mat", {"mat": {"design": "ccw", "n_bootstrap": 10}},
     {"mat": {"design": "ccw", "n_bootstrap": 12}}, "full"),
    ("mat.seed", "05_mat", {"mat": {"design": "ccw", "n_bootstrap": 10}},
     {"mat": {"design": "ccw", "n_bootstrap": 10, "seed": 1}}, "full"),
    ("privacy.min_cell_count", "01_cohort", {}, {"privacy": {"min_cell_count": 30}}, "full"),
    ("privacy.min_cell_count_override", "01_cohort", {"privacy": {"min_cell_count": 5}},
     {"privacy": {"min_cell_count": 3, "min_cell_count_override": "test: data-use agreement clause"}}, "full"),
    ("report.title", "01_cohort", {}, {"report": {"title": "Another study"}}, "full"),
]

#: Keys whose effect is checked by a dedicated test below (not by comparing two runs of one template).
KEYS_TESTED_ELSEWHERE = {
    "data.path": "test_data_path_selects_the_data",
    "data.mapping": "test_data_mapping_reads_an_extract",
    "data.omop": "tests/test_study_omop.py::test_omop_study_reads_the_cdm",
    "data.cdm_schema": "tests/test_study_omop.py::test_cdm_schema_selects_the_schema",
    "data.concept_sets": "tests/test_study_omop.py::test_concept_sets_file_changes_what_is_read",
    "report.questions": "test_questions_choose_the_reports",
    "report.formats": "test_formats_choose_the_files",
}
# the [screens] and [programmes] keys: tests/test_study_screens_programmes.py::test_changing_a_key_changes_its_report
KEYS_TESTED_ELSEWHERE.update({f"{s}.{k}": "tests/test_study_screens_programmes.py::test_changing_a_key_changes_its_report"
                              for s in ("screens", "programmes") for k in STUDY_KEYS[s]})


def test_every_study_key_has_a_test():
    all_keys = {f"{s}.{k}" for s, keys in STUDY_KEYS.items() for k in keys}
    covered = {c[0] for c in KEY_CASES} | set(KEYS_TESTED_ELSEWHERE)
    assert covered == all_keys, f"untested: {sorted(all_keys - covered)}; unknown: {sorted(covered - all_keys)}"


_BASELINES: dict = {}


@pytest.mark.slow
@pytest.mark.parametrize("key, template, base, changed, which", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_changing_a_key_changes_its_report(key, template, base, changed, which, data_dir, data_missing_dir):
    path = data_dir if which == "full" else data_missing_dir
    cache_key = (template, repr(base), which)
    if cache_key not in _BASELINES:
        _BASELINES[cache_key] = run_template(template, base, path)
    before = _BASELINES[cache_key]
    after = run_template(template, changed, path)
    assert template in [QUESTIONS[q] for q in QUESTIONS if key in {f"{s}.{k}" for s, keys in STUDY_KEYS.items()
                                                                 for k, spec in keys.items() if q in spec.used_by}]
    differing = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
    assert differing, f"{key}: changing it left every output of {template} unchanged"
    # the settings table of the report shows the changed key as set by the study file
    settings = after["table:settings_" + template.split("_", 1)[1]]
    assert f"{key}," in settings and "study file" in settings.split(f"{key},", 1)[1].splitlines()[0]


# ----------------------------------------------------------------------------- keys tested on their own
def test_data_path_selects_the_data(tmp_path, data_dir):
    other = simulate_cohort(150, seed=11).write(tmp_path / "other", format="parquet")
    a = st.prepare_study({"data": {"path": str(data_dir)}})
    b = st.prepare_study({"data": {"path": str(other)}})
    assert len(a.cohort_episodes["patient_id"].unique()) == N_PATIENTS
    assert len(b.cohort_episodes["patient_id"].unique()) == 150


def test_data_mapping_reads_an_extract(tmp_path):
    """[data] mapping: the study reads a clinic's extract through its mapping file (examples/ehr_extract)."""
    import shutil

    from tests.ehr_extract import write_ehr_extract

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "examples" / "ehr_extract" / "mapping.toml", tmp_path / "mapping.toml")
    _, simulated = write_ehr_extract(tmp_path / "extract")
    (tmp_path / "study.toml").write_text('[data]\nmapping = "mapping.toml"\n', encoding="utf-8")
    sd = st.prepare_study(load_study(tmp_path / "study.toml"))
    assert sd.data_label == "extract mapped by a mapping file"
    assert len(sd.cohort_episodes) == len(simulated.admissions)
    assert sd.cohort_episodes["program"].nunique() == simulated.admissions["program"].nunique()


def test_questions_choose_the_reports(data300):
    sd = st.prepare_study({"report": {"questions": ["relapse", "cohort"]}}, data=data300)
    assert sd.questions == ["cohort", "relapse"]
    every = st.prepare_study({}, data=data300)
    assert every.questions == list(QUESTIONS)


def test_formats_choose_the_files(tmp_path, data_dir):
    with_docx = tmp_path / "a"
    without = tmp_path / "b"
    run_template("02_retention", {}, data_dir, out_dir=with_docx)
    run_template("02_retention", {"report": {"formats": ["html", "csv"]}}, data_dir, out_dir=without)
    assert sorted(p.name for p in (with_docx / "tables").glob("*.docx"))
    assert not list((without / "tables").glob("*.docx"))
    assert sorted(p.name for p in (without / "tables").glob("*.csv")) == sorted(
        p.name for p in (with_docx / "tables").glob("*.csv"))


# ----------------------------------------------------------------------------- any valid data
def _variant(data300, kind):
    from iop_research.data.io import IOPData

    adm = data300.admissions.copy()
    if kind == "one_site":
        adm["program"] = "Only site"
    elif kind == "empty_covariates":
        adm["housing"] = pd.Series([None] * len(adm), dtype=object)
        adm["employment"] = pd.Series([None] * len(adm), dtype=object)
    elif kind == "single_referral":
        adm["referral_source"] = "self"
    return IOPData(data300.patients, adm, data300.sessions, data300.medications, data300.events, data300.observation)


@pytest.mark.parametrize("kind", ["one_site", "empty_covariates", "single_referral"])
def test_prepare_study_adapts_to_the_data_and_says_so(data300, kind):
    sd = st.prepare_study({}, data=_variant(data300, kind))
    if kind == "one_site":
        assert "program" not in sd.covariates and st.group_col(sd) is None
        assert any("Programme takes a single value" in n for n in sd.covariate_notes)
    elif kind == "empty_covariates":
        assert "housing" not in sd.covariates and "employment" not in sd.covariates
        assert any("Housing is missing for every episode" in n for n in sd.covariate_notes)
    else:
        assert "referral_source" not in sd.covariates
    assert sd.questions == list(QUESTIONS)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["one_site", "empty_covariates", "single_referral", "n150"])
def test_every_template_runs_on_awkward_data(tmp_path, data300, kind):
    data = simulate_cohort(150, seed=8) if kind == "n150" else _variant(data300, kind)
    path = data.write(tmp_path / "d", format="parquet")
    for name in QUESTIONS.values():
        out = run_template(name, {}, path)
        assert any(k.startswith("table:") for k in out)
        text = " ".join(out.values())
        assert "simulat" not in text.lower() and "true hazard ratio" not in text.lower()


def test_templates_are_thin_and_tagged():
    for name in QUESTIONS.values():
        nb = nbformat.read(TEMPLATES_DIR / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), name
        for c in code:
            assert not any(line.lstrip().startswith(("def ", "class ")) for line in c.source.splitlines()), name
            assert "print(" not in c.source and ".to_string(" not in c.source and "display(" not in c.source, name
        assert not any(c.get("outputs") for c in code), f"{name} is committed with outputs"


# ----------------------------------------------------------------------------- building blocks
def test_term_labels_are_readable():
    labels = st.term_labels(["program[T.Site B]", "psychiatric_comorbidity[T.yes]", "exposure[T.any]", "dose_per_week"])
    assert labels == {"program[T.Site B]": "Programme: Site B", "psychiatric_comorbidity[T.yes]":
                      "Psychiatric comorbidity: yes", "exposure[T.any]": "Exposure: any",
                      "dose_per_week": "Sessions per week"}


def test_settings_shown_are_the_settings_that_act():
    cfg = load_study(settings={"comparison": {"exposure": "modality_dose"}})
    shown = set(st.applied_settings(cfg, "modalities")["setting"])
    assert "comparison.groups" not in shown and "comparison.reference" not in shown
    assert "comparison.window_days" not in shown  # time-varying dose: no window
    assert "missing.m" not in shown  # complete case: m does nothing
    assert "comparison.modality" in shown and "missing.policy" in shown
    assert set(st.applied_settings(cfg, "cohort")["setting"]).isdisjoint({"comparison.exposure", "horizons.days"})


def test_weekly_dose_counts_the_previous_week(data300):
    sd = st.prepare_study({}, data=data300)
    long = st.weekly_modality_dose(sd, "group")
    # rows tile each episode's follow-up (start, stop] exactly, the event only on the last row
    g = long.groupby("episode_id")
    first_start = g["start"].min()
    assert (first_start == 0).all()
    stops = g["stop"].max().reindex(sd.frame["episode_id"]).to_numpy()
    assert np.allclose(stops, sd.frame["time"].to_numpy())
    assert (g["event"].sum().reindex(sd.frame["episode_id"]).to_numpy() == sd.frame["event"].to_numpy()).all()
    contiguous = long["start"].to_numpy()[1:][long["episode_id"].to_numpy()[1:] == long["episode_id"].to_numpy()[:-1]]
    prev_stop = long["stop"].to_numpy()[:-1][long["episode_id"].to_numpy()[1:] == long["episode_id"].to_numpy()[:-1]]
    assert np.array_equal(contiguous, prev_stop)
    # the dose of week k is the count of attended group sessions on days [7(k-1), 7k): check one episode by hand
    eid = long.loc[long["dose_per_week"] > 0, "episode_id"].iloc[0]
    ep = sd.cohort_episodes.set_index("episode_id").loc[eid]
    s = data300.sessions
    s = s[(s["patient_id"] == ep["patient_id"]) & (s["modality"] == "group") & s["attended"].astype(bool)]
    days = (pd.to_datetime(s["session_date"]) - pd.Timestamp(ep["admit_date"])).dt.days
    days = days[(days >= 0) & (pd.to_datetime(s["session_date"]) <= pd.Timestamp(ep["discharge_date"]))]
    rows = long[long["episode_id"] == eid]
    for _, r in rows.iterrows():
        k = int(r["start"] // 7)
        if r["start"] % 7 == 0 and r["start"] < ep["los_days"] + 7 and k >= 1:
            assert r["dose_per_week"] == int(((days >= 7 * (k - 1)) & (days < 7 * k)).sum())
    assert rows["dose_per_week"].iloc[0] == 0


def test_landmark_exposure_excludes_early_events_and_uses_the_window(data300):
    sd = st.prepare_study({"comparison": {"window_days": 45}}, data=data300)
    me = st.modality_exposure(sd)
    assert me.design == "landmark" and me.reference == "none"
    assert me.n_not_at_risk == len(sd.frame) - len(me.frame) and me.n_not_at_risk > 0
    assert list(me.frame["exposure"].cat.categories) == ["none", "any"]
    assert "day 45" in me.description and "family" in me.description


def test_time_varying_exposure_switches_on_the_first_session(data300):
    sd = st.prepare_study({"comparison": {"design": "time_varying"}}, data=data300)
    me = st.modality_exposure(sd)
    f = me.frame
    switched = f.groupby("episode_id")["exposure"].agg(lambda s: list(s.astype(str)))
    assert all(v in (["none"], ["any"], ["none", "any"]) for v in switched)
    assert f.groupby("episode_id")["stop"].max().reindex(sd.frame["episode_id"]).to_numpy().tolist() == \
        sd.frame["time"].astype(float).tolist()


def test_a_requested_question_the_data_cannot_answer_is_an_error(data300):
    from iop_research.data.io import IOPData

    no_meds = IOPData(data300.patients, data300.admissions, data300.sessions, data300.medications.iloc[0:0],
                      data300.events, data300.observation)
    with pytest.raises(ModelSpecificationError, match="mat: the data have no MAT dispensings"):
        st.prepare_study({"report": {"questions": ["mat"]}}, data=no_meds)
    sd = st.prepare_study({}, data=no_meds)
    assert "mat" not in sd.questions and sd.availability["mat"] == "the data have no MAT dispensings"


def test_bad_comparison_settings_are_refused():
    with pytest.raises(DataReadError, match="does not apply to exposure = \"modality_mix\""):
        load_study(settings={"comparison": {"exposure": "modality_mix", "design": "time_varying"}})
    with pytest.raises(DataReadError, match="groups applies only"):
        load_study(settings={"comparison": {"groups": ["group"]}})


def test_list_reports_names_tutorials_and_templates():
    from iop_research.reports.build import DEFAULT_NOTEBOOKS_DIR, list_reports

    listed = list_reports()
    names = [n for n, _, _ in listed]
    assert names[-len(QUESTIONS):] == list(QUESTIONS.values())
    assert all(p.parent == DEFAULT_NOTEBOOKS_DIR for n, _, p in listed[:-len(QUESTIONS)])
    titles = dict((n, t) for n, t, _ in listed)
    assert titles["03_relapse"] == "Time to relapse" and titles["04_modalities"] == "Therapy modalities and relapse"
