"""The MAT study report with ``[mat] design = "ccw"``: the emulated target trial of starting MAT.

The report is built with :func:`iop_research.reports.build.build_reports` (papermill, the default
pattern gate on every HTML report, the joint audit of the study's ledgers) on the bundled demo cohort
and on a simulated 150-patient cohort, where the arms get small; the six study templates are also run
together in process and every ledger audited jointly (as ``tests/test_joint_audit.py`` does with the
default settings). The helpers of :mod:`iop_research.reports.study` are checked on their own: counts that
add up, the clone-censor-weight result equal to a direct call, and the reasons a reader sees when no
trial can be emulated.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from iop_research.data.synth import simulate_cohort  # noqa: E402
from iop_research.designs.ccw import clone_censor_weight  # noqa: E402
from iop_research.exceptions import DataReadError  # noqa: E402
from iop_research.privacy.audit import audit_ledgers  # noqa: E402
from iop_research.reports import study as st  # noqa: E402
from iop_research.reports.build import build_reports  # noqa: E402
from template_runner import execute_template  # noqa: E402
from iop_research.reports.config import QUESTIONS, load_study  # noqa: E402

K = 11
CCW = {"mat": {"design": "ccw", "n_bootstrap": 20, "seed": 5}}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return simulate_cohort(150, seed=13).write(tmp_path_factory.mktemp("s150") / "data", format="parquet")


@pytest.fixture(scope="module")
def small_study(small_dir):
    return st.prepare_study(CCW, data_path=small_dir)


@pytest.fixture(scope="module")
def small_trial(small_study):
    return st.mat_target_trial(small_study)


# ----------------------------------------------------------------------------- study file
@pytest.mark.parametrize("settings, match", [
    ({"mat": {"grace_days": 14}}, r"\[mat\] grace_days applies only to design = \"ccw\""),
    ({"mat": {"design": "ccw", "grace_days": 30, "horizon_days": 30}}, "must be later than grace_days"),
    ({"mat": {"design": "ccw", "horizon_days": 400}, "outcome": {"max_followup_days": 365}},
     "after \\[outcome\\] max_followup_days"),
    ({"mat": {"design": "ccw"}, "missing": {"policy": "multiple_imputation"}}, "not by multiple imputation"),
    ({"mat": {"design": "iptw"}}, "is not allowed"),
    ({"mat": {"design": "ccw", "n_bootstrap": 5}}, "at least 10"),
])
def test_study_file_refuses_what_the_trial_cannot_honour(settings, match):
    with pytest.raises(DataReadError, match=match):
        load_study(settings=settings)


def test_settings_table_lists_the_trial_keys_only_for_ccw():
    landmark = st.applied_settings(load_study(settings={}), "mat")["setting"].tolist()
    ccw = st.applied_settings(load_study(settings=CCW), "mat")
    assert "mat.design" in landmark and "mat.grace_days" not in landmark
    assert {"mat.design", "mat.grace_days", "mat.horizon_days", "mat.n_bootstrap", "mat.seed"} <= set(ccw["setting"])
    assert ccw.set_index("setting").loc["mat.n_bootstrap", "source"] == "study file"


# ----------------------------------------------------------------------------- helpers
def test_trial_counts_add_up_and_equal_a_direct_call(small_study, small_trial):
    tr = small_trial
    assert tr.reason is None and tr.result is not None
    n_first = small_study.frame.loc[small_study.frame["time"] > 0, "patient_id"].nunique()
    assert tr.n_followed == int((small_study.frame["time"] > 0).sum())
    assert tr.n_followed - tr.n_later_episode == n_first
    assert tr.n_eligible == n_first - tr.n_prevalent
    gl = tr.result.glance.iloc[0]
    assert gl["n"] == tr.n_eligible - tr.n_dropped and gl["n_bootstrap"] == 20 and gl["grace_days"] == 30
    arms = tr.result.arms.set_index("strategy")
    # 'no MAT' clones are censored at their start within the grace period, except a start on the day of a relapse
    assert arms.loc["no_start", "n_artificially_censored"] <= tr.n_started
    # the design call is clone_censor_weight on the eligible episodes: same risks from a direct call
    clones = tr.result.clones
    f = small_study.frame.set_index("episode_id").loc[clones["id"].unique()].reset_index()
    assert len(f) == tr.n_eligible - tr.n_dropped
    eligibility, keys = st.mat_trial_eligibility(tr)
    n = eligibility.set_index("episodes")["n"]
    assert n["episodes followed from admission"] == n["not the patient's first episode"] + n["on MAT at admission"] \
        + n["eligible"]
    assert keys[("eligible", "n")] == "05_mat/ccw/eligible"
    est = st.mat_trial_estimates(tr).set_index("measure")
    assert est.loc["risk difference (percentage points)", "estimate"] == pytest.approx(100 * gl["risk_difference"])
    lo, hi = est.iloc[0][["95% CI low", "95% CI high"]]
    assert lo <= est.iloc[0]["estimate"] <= hi
    protocol = st.mat_trial_protocol(small_study, tr)
    assert protocol["component"].tolist() == ["Eligibility", "Treatment strategies", "Assignment", "Time zero",
                                              "Outcome", "Follow-up", "Causal contrast", "Analysis"]
    assert "30 days" in protocol.set_index("component").loc["Treatment strategies", "target trial"]


def test_trial_result_equals_clone_censor_weight_on_the_same_frame(small_study, small_trial):
    """Rebuild the eligible frame by hand (first episode per patient, MAT start = first era start on or after
    admission) and call clone_censor_weight with the covariates and time-varying rows the helper used."""
    tr = small_trial
    dev = tr.result.deviation_model
    ids = tr.result.clones["id"].unique()
    f = small_study.frame.set_index("episode_id").loc[ids].reset_index()
    start, prevalent = st._mat_start_days(small_study, f)
    assert not prevalent.any()
    f = f.assign(mat_day=np.where(start <= f["time"], start, np.nan))
    tv = None
    if tr.tv_covariates:
        long = st.mat_time_varying_frame(small_study)
        tv = long[long["episode_id"].isin(ids) & (long["start"] < tr.grace_days)][["episode_id", "start", "stop",
                                                                                   "in_treatment"]]
    direct = clone_censor_weight(f, id_col="episode_id", time_col="time", event_col="event",
                                 treatment_time_col="mat_day", grace_days=tr.grace_days, covariates=tr.covariates,
                                 horizon_days=tr.horizon_days, n_bootstrap=20, seed=5, tv_frame=tv,
                                 tv_covariates=tr.tv_covariates, progress=False)
    pd.testing.assert_frame_equal(pd.DataFrame(direct.glance), pd.DataFrame(tr.result.glance))
    assert dev["term"].tolist() == direct.deviation_model["term"].tolist()


def test_small_cohort_keeps_the_model_within_its_starts(small_trial):
    """150 patients: few MAT starts, so the model of starting keeps one parameter per 10 starts and says so."""
    tr = small_trial
    k = len(tr.result.deviation_model) - 2  # intercept and day
    assert k <= max(1, min(tr.n_started, tr.n_eligible - tr.n_started) // 10)
    assert any("at most one parameter per 10 episodes" in n for n in tr.notes)


def test_no_trial_reasons(small_study, monkeypatch):
    late = st.prepare_study({"mat": {"design": "ccw", "grace_days": 0, "n_bootstrap": 10}},
                            data=small_study.data)
    tr = st.mat_target_trial(late)
    if tr.n_started == 0:
        assert tr.result is None and "not observed" in tr.reason
    # nobody relapsing by the horizon
    monkeypatch.setattr(small_study, "frame", small_study.frame.assign(event=0))
    tr = st.mat_target_trial(small_study)
    assert tr.result is None and tr.reason.startswith("no eligible episode relapsed by day")


# ----------------------------------------------------------------------------- reports
def _run_template(name: str, study: dict, data_path, out_dir: Path) -> dict:
    return {f"{p.kind}:{p.name}": p for p in execute_template(name, study, data_path, out_dir).published}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["demo", "small"])
def test_all_templates_with_ccw_pass_the_joint_audit(which, small_dir, tmp_path):
    data_path = None if which == "demo" else small_dir
    out = tmp_path / "reports"
    published = {}
    for name in QUESTIONS.values():
        published[name] = _run_template(name, CCW, data_path, out)
    mat = published["05_mat"]
    for key in ("table:mat_trial_protocol", "table:mat_trial_eligibility", "table:mat_trial_arms",
                "table:mat_trial_estimates", "figure:mat_trial_curves"):
        assert key in mat, key
    res = audit_ledgers(sorted((out / "ledgers").glob("*.json")))
    bad = res.loc[~res["is_protected"], ["key", "lower", "upper"]]
    assert bad.empty, f"narrowed below the protection interval:\n{bad.to_string()}"
    assert res["key"].str.startswith("05_mat/mat_trial_counts/").any()
    ledger = (out / "ledgers" / "05_mat.json").read_text(encoding="utf-8")
    assert "05_mat/ccw/eligible" in ledger and "05_mat/ccw/relapses/start" in ledger
    # no count cell of the trial's tables shows a small number
    for key in ("table:mat_trial_eligibility", "table:mat_trial_arms"):
        t = mat[key].table
        for col in t.columns[1:]:
            for cell in t[col]:
                m = re.fullmatch(r"[\d,]+", str(cell))
                assert m is None or int(str(cell).replace(",", "")) == 0 or int(str(cell).replace(",", "")) >= K, \
                    (key, col, cell)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["demo", "small"])
def test_mat_report_with_ccw_builds_through_the_gate(which, small_dir, tmp_path):
    """build_reports with the default privacy gate (pattern gate on the HTML) and the joint ledger audit."""
    data = None if which == "demo" else str(small_dir)
    study = {**CCW, "report": {"questions": ["mat"]}}
    outcome = build_reports(out_dir=tmp_path / "reports", data=data, parameters={"study": study}, progress=False)
    out = outcome.index.parent
    assert [p.name for p in outcome.reports] == ["05_mat.html"]
    record = json.loads((out / "provenance.json").read_text())
    assert record["study"]["ledger_audit"].endswith("all protected")
    body = (out / "05_mat.html").read_text(encoding="utf-8")
    for text in ("Protocol of the target trial", "Risk of relapse by day 180 per strategy", "Weighted relapse-free"):
        assert text in body
    assert "[T." not in body and "clone_censor_weight(" not in body
    assert (out / "figures" / "mat_trial_curves.svg").is_file()
    est = pd.read_csv(out / "tables" / "mat_trial_estimates.csv")
    assert est.shape[0] == 5 and est["estimate"].notna().all()


@pytest.mark.slow
def test_curves_withheld_when_no_rounding_protects_them(tmp_path):
    """One programme, 110 patients, a 30-day grace period: the 'start' arm has so few relapses that, beside its
    total in the arms table, no rounding unit protects the counts between the figure's days. The curves and
    their counts are withdrawn with a sentence, and the study builds (before, the joint audit refused the whole
    build and no report was written)."""
    data = simulate_cohort(110, seed=1, n_programs=1).write(tmp_path / "data", format="parquet")
    study = {"mat": {"design": "ccw", "grace_days": 30, "horizon_days": 180, "n_bootstrap": 20, "seed": 5},
             "report": {"questions": ["mat"]}}
    pub = execute_template("05_mat", study, data, tmp_path / "inproc")
    names = {p.name for p in pub.published}
    assert "mat_trial_arms" in names and "mat_trial_estimates" in names
    assert "mat_trial_curves" not in names and "mat_trial_counts" not in names
    assert not pub.ledger["key"].astype(str).str.startswith("05_mat/mat_trial_counts/").any()
    assert any("curves of the emulated trial are not shown" in (p.plain or "") for p in pub.published)
    assert pub.audit(raise_on_failure=False)["is_protected"].all()
    outcome = build_reports(out_dir=tmp_path / "reports", data=str(data), parameters={"study": study}, progress=False)
    body = (outcome.index.parent / "05_mat.html").read_text(encoding="utf-8")
    assert "curves of the emulated trial are not shown" in body and "Risk of relapse by day 180 per strategy" in body
