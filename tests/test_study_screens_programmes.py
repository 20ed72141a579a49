"""Study questions "screens" (07_screens) and "programmes" (08_programmes): built, checked, attacked.

Each report is built through :func:`iop_research.reports.build.build_reports` (papermill, the pattern
gate on, the ledgers audited together) on the bundled demo cohort and on a 150-patient simulated
cohort with missed screens, at one site and at four; a hostile reader then reads every CSV the
builds wrote. The helpers behind the templates are checked against direct computations (the
estimators themselves are checked against R in tests/test_gee.py, tests/test_glmm.py and
tests/test_programmes.py), every new study-file key is shown to act, and settings that cannot act
together are refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from iop_research.data.synth import simulate_cohort  # noqa: E402
from iop_research.exceptions import DataReadError  # noqa: E402
from iop_research.reports import study as st  # noqa: E402
from iop_research.reports.config import QUESTIONS, STUDY_KEYS, load_study  # noqa: E402
from tests.test_study_reports import run_template  # noqa: E402

K = 11
QUESTIONS_HERE = ["screens", "programmes"]
#: Count columns of the two reports' tables (the Publisher's count_cols), by table.
COUNT_COLS = {
    "screens_by_week": ["weeks with a result", "positive", "negative"],
    "abstinence": ["episodes"],
    "abstinence_final_weeks": ["episodes with the final weeks", "abstinent", "not abstinent"],
    "programme_counts": ["episodes", "completed", "not completed", "retained 90 days", "not retained"],
}
#: (total column, part columns) of each table's rows.
ROW_SUMS = {
    "screens_by_week": ("weeks with a result", ["positive", "negative"]),
    "abstinence_final_weeks": ("episodes with the final weeks", ["abstinent", "not abstinent"]),
    "programme_counts": ("episodes", None),
}


def _sim(n_programs: int):
    return simulate_cohort(150, seed=5, n_programs=n_programs, effects={"missed_screen_share": 0.12})


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sp_data")
    # programmes that differ beyond case mix (a between-programme SD away from 0), for the keys of the GLMM fit
    varied = simulate_cohort(150, seed=5, n_programs=4,
                             effects={"missed_screen_share": 0.12, "programme_completion_sd": 0.8})
    return {"one_site": _sim(1).write(root / "one", format="parquet"),
            "four_sites": _sim(4).write(root / "four", format="parquet"),
            "varied_sites": varied.write(root / "varied", format="parquet")}


@pytest.fixture(scope="module")
def builds(tmp_path_factory, data_dirs):
    """Both reports built with the default gate on three cohorts (shared by the build tests)."""
    from iop_research.reports.build import build_reports

    out = {}
    for which, data in (("demo", None), ("one_site", data_dirs["one_site"]), ("four_sites", data_dirs["four_sites"])):
        dest = tmp_path_factory.mktemp(f"sp_{which}") / "reports"
        params = {"data_path": None if data is None else str(data), "study": {"report": {"questions": QUESTIONS_HERE}}}
        outcome = build_reports(out_dir=dest, data=data, parameters=params, progress=False)  # gate=None: the gate is on
        out[which] = (outcome, dest)
    return out


def _html_text(path: Path) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8")))


def _int(v) -> int | None:
    s = str(v).replace(",", "").strip()
    return int(s) if s.isdigit() else None


# ----------------------------------------------------------------------------- built reports
@pytest.mark.slow
@pytest.mark.parametrize("which", ["demo", "one_site", "four_sites"])
def test_both_reports_build_with_the_gate_on_and_audit_clean(builds, which):
    outcome, dest = builds[which]
    assert [p.name for p in outcome.reports] == ["07_screens.html", "08_programmes.html"]
    record = json.loads((dest / "provenance.json").read_text())
    assert record["study"]["questions"] == QUESTIONS_HERE
    assert record["study"]["ledger_audit"].endswith("all protected")
    screens = _html_text(dest / "07_screens.html")
    progs = _html_text(dest / "08_programmes.html")
    # the rule is stated before any number, the caveats are written out
    assert screens.index("Missed-screen rule: a week in treatment without a urine screen counts as a positive week") \
        < screens.index("Table 1.")
    assert "bracket the truth" in screens and "missing at random" in screens
    assert "Small programmes shrink toward the mean" in progs and "covers only what was measured" in progs
    index = (dest / "index.html").read_text(encoding="utf-8")
    assert "Weekly urine screens" in index or "urine screens" in index
    if which == "demo":
        assert "No scheduled week was missed" in screens  # the demo records no missed screen
    else:
        assert "scheduled weeks had no screen (missed)" in screens
    if which == "one_site":
        assert "the cohort has a single programme (Site A), so there is no other programme to compare it with" in progs
        assert not (dest / "tables" / "programme_counts.csv").exists()
    else:
        assert "Between-programme SD of the log-odds of completion, beyond case mix" in progs
        assert "profile-likelihood 95% CI" in progs
        rates = pd.read_csv(dest / "tables" / "programme_rates.csv", dtype=str)
        assert len(rates) == (4 if which == "four_sites" else 4)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["demo", "one_site", "four_sites"])
def test_a_hostile_reader_finds_no_count_below_the_threshold(builds, which):
    """Every count cell of every CSV is hidden, 0 or at least 11, and no hidden cell is the difference of
    shown cells of its row (row total minus the other parts)."""
    _, dest = builds[which]
    seen = 0
    for csv in sorted((dest / "tables").glob("*.csv")):
        t = pd.read_csv(csv, dtype=str, keep_default_na=False)
        cols = [c for c in COUNT_COLS.get(csv.stem, []) if c in t.columns]
        for c in cols:
            for v in t[c]:
                n = _int(v)
                assert v in ("<11", "*") or (n is not None and (n == 0 or n >= K)), (csv.name, c, v)
                seen += 1
        if csv.stem in ROW_SUMS:
            total, parts = ROW_SUMS[csv.stem]
            parts = parts or [c for c in cols if c != total]
            for _, row in t.iterrows():
                vals = {c: _int(row[c]) for c in [total, *parts]}
                unknown = [c for c in parts if vals[c] is None]
                if vals[total] is not None and len(unknown) == 1:
                    derived = vals[total] - sum(vals[c] for c in parts if vals[c] is not None)
                    assert derived == 0 or derived >= K, (csv.name, row.to_dict(), derived)
        # column totals: the last row is the total of the others where the table has one
        if csv.stem in ("abstinence_final_weeks", "programme_counts"):
            body, last = t.iloc[:-1], t.iloc[-1]
            for c in cols:
                known = [_int(v) for v in body[c]]
                if _int(last[c]) is not None and sum(v is None for v in known) == 1:
                    derived = _int(last[c]) - sum(v for v in known if v is not None)
                    assert derived == 0 or derived >= K, (csv.name, c, derived)
    assert seen > 0


@pytest.mark.slow
def test_figures_leave_out_small_programmes_and_say_so(builds):
    _, dest = builds["four_sites"]
    counts = pd.read_csv(dest / "tables" / "programme_counts.csv", dtype=str)
    rates = pd.read_csv(dest / "tables" / "programme_rates.csv", dtype=str)
    hidden = set(counts.loc[counts.iloc[:, 1:4].apply(lambda s: s.isin(["<11", "*"])).any(axis=1), "programme"])
    assert hidden, "the 150-patient, four-site cohort has programmes with small counts"
    blank = set(rates.loc[rates["risk-standardised rate (%)"] == "hidden (small counts)", "programme"])
    assert blank == hidden - {"all programmes"}
    progs = _html_text(dest / "08_programmes.html")
    k = len(blank)
    assert (f"{k} programme{'s are' if k != 1 else ' is'} not drawn" in progs) or "No programme is drawn" in progs


# ----------------------------------------------------------------------------- helpers, in process
@pytest.fixture(scope="module")
def sd4(data_dirs):
    return st.prepare_study({}, data_path=str(data_dirs["four_sites"]))


def test_weekly_counts_are_the_weeks_frame_counted(sd4):
    from iop_research.derive import uds_weeks

    sdat = st.screens_data(sd4)
    w = uds_weeks(sd4.data, sd4.cohort_episodes, weeks=12, missing="positive")
    bw = st.screens_by_week(sdat).set_index("week")
    for k in (0, 3, 7):
        g = w[(w["week"] == k) & w["positive"].notna()]
        assert bw.loc[k, "weeks with a result"] == len(g)
        assert bw.loc[k, "positive"] == int(g["positive"].sum())
        assert bw.loc[k, "negative"] == int((g["positive"] == 0).sum())
        assert np.isclose(bw.loc[k, "% positive"], 100 * g["positive"].mean())
    assert sdat.n_missed == int(w["missed"].sum()) > 0 and sdat.n_scheduled == int(w["scheduled"].sum())


def test_the_missed_rules_bracket_and_mi_lies_between(data_dirs):
    """Per week, with D screened weeks, P positive and M missed: missed = missing gives P / D, missed = positive
    (P + M) / (D + M), and every imputation (P + I) / (D + M) with 0 <= I <= M."""
    path = str(data_dirs["four_sites"])
    pos = st.screens_data(st.prepare_study({}, data_path=path))
    miss = st.screens_data(st.prepare_study({"screens": {"missed_rule": "missing"}}, data_path=path))
    imp = st.screens_data(st.prepare_study({"screens": {"missed_rule": "impute", "m": 4, "seed": 3}}, data_path=path))
    assert len(imp.imputed) == 4 and not pos.imputed and not miss.imputed
    w = miss.weeks
    for k in range(1, 8):
        wk = w[w["week"] == k]
        d_, p_, m_ = int(wk["positive"].notna().sum()), int(wk["positive"].sum()), int(wk["missed"].sum())
        lo, hi = p_ / (d_ + m_), (p_ + m_) / (d_ + m_)
        a = st.screens_by_week(pos).set_index("week")
        assert np.isclose(a.loc[k, "% positive"], 100 * hi)
        b = st.screens_by_week(miss).set_index("week")
        assert np.isclose(b.loc[k, "% positive"], 100 * p_ / d_)
        for f in imp.imputed:
            fk = f[(f["week"] == k) & (f["scheduled"] | (f["n_screens"] > 0))]
            share = fk["positive"].mean()
            assert lo - 1e-12 <= share <= hi + 1e-12
            # observed weeks are unchanged by the imputation
            obs = fk.merge(wk[wk["positive"].notna()][["episode_id", "positive"]], on="episode_id", suffixes=("", "_o"))
            assert (obs["positive"] == obs["positive_o"]).all()


def test_the_screens_model_is_the_gee_of_the_frame(sd4):
    from iop_research.longitudinal import fit_gee

    sdat = st.screens_data(sd4)
    sm = st.screens_model(sd4, sdat)
    assert sm.fit is not None and sm.model == "gee"
    d = sdat.weeks[(sdat.weeks["week"] >= 1) & sdat.weeks["positive"].notna()]
    d = sd4.with_baseline(d.reset_index(drop=True))
    covs = [c for c in sm.fit.covariates if c != "exposure"]
    kept = d.dropna(subset=covs)
    direct = fit_gee(kept, formula="positive ~ " + " + ".join(["week", "exposure", *covs]), id_col="episode_id",
                     corstr="exchangeable", time_col="week")
    if not kept.equals(d):
        assert sm.fit.n_dropped > 0
    mf = st.screens_model_frame(sm, sdat)
    ref = direct.tidy[direct.tidy["term"] != "(Intercept)"]
    # pooled sparse levels change the design; compare the terms the two fits share
    same = [t for t in ref["term"] if t in set(sm.fit.result.tidy["term"])]
    assert "week" in same and "exposure" in same
    mine = sm.fit.result.tidy.set_index("term").loc[same, "estimate"]
    if list(sm.fit.covariates) == ["exposure", *covs] and not sm.fit.pooled:
        assert np.allclose(mine.to_numpy(), ref.set_index("term").loc[same, "estimate"].to_numpy(), atol=1e-8)
    week_row = mf[mf["Term"] == "Week since admission (per week)"].iloc[0]
    b = float(sm.fit.result.tidy.set_index("term").loc["week", "estimate"])
    assert np.isclose(week_row["OR"], np.exp(b))
    assert mf["Term"].str.contains("MAT during the episode").any()


def test_abstinence_counts_by_group_add_up(sd4):
    sdat = st.screens_data(sd4)
    ends, counts = st.screens_endpoints(sd4, sdat)
    assert list(ends["group"]) == sdat.groups + ["all episodes"]
    assert ends["episodes"].iloc[:-1].sum() == ends["episodes"].iloc[-1] == sdat.weeks["episode_id"].nunique()
    c = counts.set_index("group")
    assert (c["abstinent"] + c["not abstinent"] == c["episodes with the final weeks"]).all()
    assert c.iloc[:-1].sum()["abstinent"] == c.loc["all episodes", "abstinent"]


def test_programme_rates_and_sd_are_the_estimators_on_the_frame(sd4):
    from iop_research.longitudinal import programme_rates

    pc = st.programme_comparison(sd4)
    assert pc.reason is None and "program" not in pc.covariates
    direct = programme_rates(pc.frame, programme_col="program", outcome_col="y", covariates=pc.covariates)
    assert np.allclose(pc.rates.tidy["rate_standardized"], direct.tidy["rate_standardized"])
    ce = sd4.cohort_episodes
    closed = ce[ce["discharge_reason"].notna()]
    assert len(pc.frame) + pc.n_dropped == len(closed) and pc.n_excluded == len(ce) - len(closed)
    assert pc.frame["y"].sum() == (closed.loc[closed["episode_id"].isin(pc.frame["episode_id"]), "discharge_reason"]
                                   == "completed").sum()
    g = pc.glmm.glance.iloc[0]
    assert g["re_sd_conf_low"] <= g["re_sd"] <= g["re_sd_conf_high"]
    counts = st.programme_counts(pc, "completion")
    assert counts["episodes"].iloc[-1] == counts["episodes"].iloc[:-1].sum() == len(pc.frame)
    table = st.programme_rates_table(pc, {"Site C"})
    row = table[table["programme"] == "Site C"].iloc[0]
    assert (row.iloc[1:] == "hidden (small counts)").all()
    other = table[table["programme"] == "Site B"].iloc[0]
    assert np.isclose(float(other["risk-standardised rate (%)"]),
                      100 * direct.tidy.set_index("programme").loc["Site B", "rate_standardized"])


def test_retention_90_counts_days_in_treatment(sd4):
    sd = st.prepare_study({"programmes": {"outcome": "retention_90"}}, data=sd4.data)
    pc = st.programme_comparison(sd)
    ce = sd.cohort_episodes.set_index("episode_id")
    obs = sd.data.observation.set_index("patient_id")["observation_end"]
    for eid, y in pc.frame.set_index("episode_id")["y"].items():
        e = ce.loc[eid]
        day90 = pd.Timestamp(e["admit_date"]) + pd.Timedelta(days=90)
        if pd.notna(e["discharge_date"]):
            assert y == int(pd.Timestamp(e["discharge_date"]) >= day90)
        else:
            assert pd.Timestamp(obs.loc[e["patient_id"]]) >= day90 and y == 1
    assert pc.n_excluded + len(pc.frame) + pc.n_dropped == len(ce)


def test_programme_names_are_labels_to_the_gate():
    """A programme named by a number is a label; a small count beside it is still caught."""
    from iop_research.present.publish import Publisher
    from iop_research.reports.gate import scan_report_html

    pub = Publisher(report="t", show=False)
    shown = pub.table(pd.DataFrame({"programme": ["7", "3", "all programmes"], "episodes": [50, 40, 90],
                                    "completed": [20, 15, 35]}), caption="Programmes.", total_row="all programmes",
                      count_cols=["episodes", "completed"], name="programme_counts")
    assert scan_report_html(shown.html, notebook="08_programmes") == []
    raw = ("<table><thead><tr><th>programme</th><th>episodes</th></tr></thead>"
           "<tbody><tr><td>7</td><td>7</td></tr></tbody></table>")
    hits = scan_report_html(raw, notebook="08_programmes")
    assert [(v.rule, v.text) for v in hits] == [("small_cell", "7")] and "column 'episodes'" in hits[0].where


# ----------------------------------------------------------------------------- the study file
def test_new_questions_and_keys_are_in_the_study_file():
    assert QUESTIONS["screens"] == "07_screens" and QUESTIONS["programmes"] == "08_programmes"
    cfg = load_study(settings={"report": {"questions": ["programmes", "screens"]}})
    assert cfg.get("screens.missed_rule") == "positive" and cfg.get("programmes.outcome") == "completion"
    for section in ("screens", "programmes"):
        for key, spec in STUDY_KEYS[section].items():
            assert spec.used_by == (section,), key
    shown = set(st.applied_settings(cfg, "screens")["setting"])
    assert {"screens.missed_rule", "screens.model", "screens.corstr", "covariates.adjust"} <= shown
    assert "screens.m" not in shown and "screens.seed" not in shown  # act only under missed_rule = "impute"
    shown = set(st.applied_settings(load_study(settings={"screens": {"model": "glmm"}}), "screens")["setting"])
    assert "screens.corstr" not in shown and "comparison.modality" not in shown
    cfg = load_study(settings={"screens": {"exposure": "modality"}, "comparison": {"exposure": "modality_mix"}})
    shown = set(st.applied_settings(cfg, "screens")["setting"])
    assert {"comparison.modality", "comparison.window_days"} <= shown and "comparison.exposure" not in shown


@pytest.mark.parametrize("settings, fragment", [
    ({"screens": {"missed_rule": "sometimes"}}, "not allowed (allowed: positive, missing, impute)"),
    ({"screens": {"m": 5}}, "[screens] m applies only to missed_rule = \"impute\""),
    ({"screens": {"seed": 5, "missed_rule": "missing"}}, "[screens] seed applies only"),
    ({"screens": {"model": "glmm", "corstr": "ar1"}}, "does not apply to model = \"glmm\""),
    ({"screens": {"missed_rule": "impute"}, "missing": {"policy": "multiple_imputation"}}, "would nest two imputations"),
    ({"programmes": {"nagq": 30}}, "[programmes] nagq = 30 must be at most 25"),
    ({"programmes": {"min_programmes": 1}}, "must be at least 2"),
    ({"programmes": {"outcome": "relapse"}}, "allowed: completion, retention_90"),
    ({"report": {"questions": ["programmes"]}, "missing": {"policy": "multiple_imputation"}},
     "does not support [missing] policy = \"multiple_imputation\""),
    ({"screens": {"weeks": 1}}, "must be at least 2"),
])
def test_settings_that_cannot_act_are_refused(settings, fragment):
    with pytest.raises(DataReadError) as err:
        load_study(settings=settings)
    assert fragment in str(err.value)


#: (key, template, base settings, changed settings). Each change must change that report.
KEY_CASES = [
    ("screens.weeks", "07_screens", {}, {"screens": {"weeks": 8}}),
    ("screens.missed_rule", "07_screens", {}, {"screens": {"missed_rule": "missing"}}),
    ("screens.m", "07_screens", {"screens": {"missed_rule": "impute", "m": 3}}, {"screens": {"missed_rule": "impute", "m": 4}}),
    ("screens.seed", "07_screens", {"screens": {"missed_rule": "impute", "m": 3}},
     {"screens": {"missed_rule": "impute", "m": 3, "seed": 7}}),
    ("screens.model", "07_screens", {}, {"screens": {"model": "glmm"}}),
    ("screens.corstr", "07_screens", {}, {"screens": {"corstr": "ar1"}}),
    ("screens.exposure", "07_screens", {}, {"screens": {"exposure": "none"}}),
    ("screens.last_weeks", "07_screens", {}, {"screens": {"last_weeks": 2}}),
    ("programmes.outcome", "08_programmes", {}, {"programmes": {"outcome": "retention_90"}}),
    ("programmes.min_programmes", "08_programmes", {}, {"programmes": {"min_programmes": 5}}),
    # quadrature changes nothing where the between-programme SD is estimated at 0 (the four_sites cohort): a
    # cohort whose programmes differ
    ("programmes.nagq", "08_programmes", {}, {"programmes": {"nagq": 5}}, "varied_sites"),
]
_BASE: dict = {}


def test_every_new_key_has_a_case():
    new = {f"{s}.{k}" for s in ("screens", "programmes") for k in STUDY_KEYS[s]}
    assert {c[0] for c in KEY_CASES} == new


@pytest.mark.slow
@pytest.mark.parametrize("key, template, base, changed, cohort", [(*c, "four_sites")[:5] for c in KEY_CASES],
                         ids=[c[0] for c in KEY_CASES])
def test_changing_a_key_changes_its_report(key, template, base, changed, cohort, data_dirs):
    path = data_dirs[cohort]
    cache = (template, repr(base), cohort)
    if cache not in _BASE:
        _BASE[cache] = run_template(template, base, path)
    before, after = _BASE[cache], run_template(template, changed, path)
    differing = [k for k in set(before) | set(after) if before.get(k) != after.get(k) and not k.startswith("table:settings")]
    assert differing, f"{key}: changing it left every output of {template} unchanged"
    settings = after["table:settings_" + template.split("_", 1)[1]]
    assert f"{key}," in settings and "study file" in settings.split(f"{key},", 1)[1].splitlines()[0]


@pytest.mark.slow
def test_policy_and_covariates_act_on_both_reports(data_dirs):
    """[missing] policy (indicator vs complete case) and [covariates] adjust change both reports."""
    from iop_research.data.io import IOPData, read_data

    d = read_data(data_dirs["four_sites"])
    adm = d.admissions.copy()
    adm["housing"] = adm["housing"].astype(object)
    adm.loc[adm.index % 4 == 0, "housing"] = None
    holed = IOPData(d.patients, adm, d.sessions, d.medications, d.events, d.observation)
    sd_cc = st.prepare_study({}, data=holed)
    sd_ind = st.prepare_study({"missing": {"policy": "indicator"}}, data=holed)
    sd_cov = st.prepare_study({"covariates": {"adjust": ["age", "sex"]}}, data=holed)
    pc_cc, pc_ind, pc_cov = (st.programme_comparison(s) for s in (sd_cc, sd_ind, sd_cov))
    assert pc_cc.n_dropped > 0 and pc_ind.n_dropped == 0 and len(pc_ind.frame) > len(pc_cc.frame)
    assert any("missing indicator" in n for n in pc_ind.notes)
    assert pc_cov.covariates == ["age", "sex"]
    m_cc, m_ind, m_cov = (st.screens_model(s, st.screens_data(s)) for s in (sd_cc, sd_ind, sd_cov))
    assert m_cc.fit.n_dropped > 0 and m_ind.fit.n_dropped == 0
    assert m_cov.fit.covariates == ["exposure", "age", "sex"]


def test_multiple_imputation_leaves_programmes_out_with_the_reason(sd4):
    sd = st.prepare_study({"missing": {"policy": "multiple_imputation", "m": 2}}, data=sd4.data)
    assert "programmes" not in sd.questions and "screens" in sd.questions
    assert "does not support [missing] policy" in sd.availability["programmes"]
    pc = st.programme_comparison(sd)
    assert pc.rates is None and "not supported" in pc.reason


@pytest.mark.r
@pytest.mark.skipif(__import__("shutil").which("Rscript") is None, reason="Rscript not installed (CI installs it)")
def test_the_report_models_equal_r_on_the_report_frames(sd4, tmp_path):
    """The screens GEE (geepack::geeglm) and the programmes GLMM with the profile CI of its SD
    (lme4::glmer, confint(method = "profile")) refitted in R on the frames the reports used."""
    import subprocess

    sd = st.prepare_study({"covariates": {"adjust": ["age", "severity_score"]}}, data=sd4.data)
    sdat = st.screens_data(sd)
    sm = st.screens_model(sd, sdat)
    pc = st.programme_comparison(sd)
    assert sm.fit is not None and pc.glmm is not None and sm.fit.n_dropped == 0 and not sm.fit.pooled
    d = sd.with_baseline(sdat.weeks[(sdat.weeks["week"] >= 1) & sdat.weeks["positive"].notna()].reset_index(drop=True))
    d[["episode_id", "week", "positive", "exposure", "age", "severity_score"]].to_csv(tmp_path / "screens.csv", index=False)
    pc.frame[["program", "y", "age", "severity_score"]].to_csv(tmp_path / "programmes.csv", index=False)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["Rscript", "--vanilla", str(root / "tests" / "r" / "report_screens_programmes.R"),
                           str(tmp_path), str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "r.json").read_text())
    gee = sm.fit.result.tidy
    assert r["gee"]["term"][1:] == ["week", "exposure", "age", "severity_score"] == gee["term"].tolist()[1:]
    np.testing.assert_allclose(gee["estimate"], r["gee"]["estimate"], atol=1e-4)
    np.testing.assert_allclose(gee["std_error"], r["gee"]["std_error"], atol=1e-4)
    glmm, g = pc.glmm.tidy, pc.glmm.glance.iloc[0]
    np.testing.assert_allclose(glmm["estimate"], r["glmm"]["estimate"], atol=1e-4)
    np.testing.assert_allclose(glmm["std_error"], r["glmm"]["std_error"], atol=1e-3)
    assert abs(g["re_sd"] - r["glmm"]["re_sd"]) < 1e-3
    # profile limits: lme4 interpolates a spline through its profile; the SD is 0 at the boundary
    assert abs(g["re_sd_conf_low"] - r["glmm"]["re_sd_conf_low"]) < 1e-2
    assert abs(g["re_sd_conf_high"] - r["glmm"]["re_sd_conf_high"]) < 1e-2


@pytest.mark.slow
def test_no_screens_give_a_sentence_not_a_failure(sd4, tmp_path):
    from iop_research.data.io import IOPData

    d = sd4.data
    ev = d.events[d.events["event_type"].astype(str) != "uds"].reset_index(drop=True)
    path = IOPData(d.patients, d.admissions, d.sessions, d.medications, ev, d.observation).write(tmp_path / "d",
                                                                                                  format="parquet")
    sd = st.prepare_study({"outcome": {"sources": ["self_report_use", "overdose", "readmission"]}}, data_path=str(path))
    assert st.screens_data(sd).reason.startswith("the cohort's episodes have no urine screen")
    out = run_template("07_screens", {"outcome": {"sources": ["self_report_use", "overdose", "readmission"]}}, path)
    texts = [v for k, v in out.items() if k.startswith("text:")]
    assert any(t.startswith("No weekly screen series can be analysed: the cohort's episodes have no urine screen")
               for t in texts)
    assert "table:settings_screens" in out and "table:screens_by_week" not in out


def test_the_modality_exposure_uses_the_comparison_modality_and_window(sd4):
    base = {"screens": {"exposure": "modality"}}
    a = st.screens_data(st.prepare_study(base, data=sd4.data))
    b = st.screens_data(st.prepare_study({**base, "comparison": {"modality": "individual", "window_days": 14}},
                                         data=sd4.data))
    assert a.groups == ["no family therapy session on days 0-29", "any family therapy session on days 0-29"]
    assert a.first_week == 5 and b.first_week == 2
    assert b.groups[1].startswith("any individual") and b.groups[1].endswith("days 0-13")
    assert not a.weeks["exposure"].equals(b.weeks["exposure"])
