"""The MAT report's adjusted relapse-free curves (templates/05_mat.ipynb, helpers at the end of
reports/study.py): published only through the channel, with suppressed counts, and working on small
and odd data (150 patients, one site, missing covariates, no MAT-exposed episodes).

The template is executed in process (code cells in order, the ``parameters`` cell overridden as
papermill would), as in ``tests/test_study_reports.py``; what it published is read back from its
publisher. The numbers are recomputed independently with
:func:`iop_research.designs.adjusted.adjusted_survival` on the landmark frame.
"""
from __future__ import annotations

import matplotlib
import nbformat
import numpy as np
import pytest

matplotlib.use("Agg")

from iop_research.data.io import IOPData  # noqa: E402
from iop_research.data.synth import simulate_cohort  # noqa: E402
from iop_research.derive.frames import landmark_frame  # noqa: E402
from iop_research.designs.adjusted import adjusted_survival  # noqa: E402
from iop_research.reports import study as st  # noqa: E402
from iop_research.reports.build import TEMPLATES_DIR  # noqa: E402


def run_mat_template(study: dict, data_path) -> dict:
    """Execute 05_mat in process; return {kind:name: Published} of what it published."""
    nb = nbformat.read(TEMPLATES_DIR / "05_mat.ipynb", as_version=4)
    ns: dict = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exec(compile(cell.source, "05_mat.ipynb", "exec"), ns)  # noqa: S102 - our own template
        if "parameters" in cell.metadata.get("tags", []):
            ns.update(study=study, data_path=str(data_path), out_dir=None)
    import matplotlib.pyplot as plt

    plt.close("all")
    return {f"{p.kind}:{p.name}": p for p in ns["pub"].published}


def _with(data, **tables):
    parts = {k: getattr(data, k) for k in ("patients", "admissions", "sessions", "medications", "events",
                                           "observation")}
    parts.update(tables)
    return IOPData(*(parts[k] for k in ("patients", "admissions", "sessions", "medications", "events",
                                        "observation")))


@pytest.fixture(scope="module")
def data300():
    return simulate_cohort(300, seed=3)


@pytest.fixture(scope="module")
def small_odd(tmp_path_factory):
    """150 patients, one site, housing missing for every third admission."""
    d = simulate_cohort(150, seed=11, n_programs=1)
    adm = d.admissions.copy()
    adm["housing"] = adm["housing"].astype(object)
    adm.loc[adm.index % 3 == 0, "housing"] = None
    return _with(d, admissions=adm)


def _landmark(sd, L):
    return sd.with_baseline(landmark_frame(sd.data, landmark_days=L, definition=sd.definition,
                                           episodes=sd.cohort_episodes, covariates=None, engine=st.quiet_engine()))


def test_mat_report_publishes_adjusted_curves(tmp_path, data300):
    path = data300.write(tmp_path / "d", format="parquet")
    out = run_mat_template({}, path)
    for key in ("table:mat_adjusted_groups", "table:mat_adjusted_contrasts", "figure:mat_adjusted_curves"):
        assert key in out, sorted(out)
    sd = st.prepare_study({}, data_path=str(path))
    L = int(sd.config.get("landmarks.days")[0])
    horizons = [h for h in sd.horizons if h > L]
    con = out["table:mat_adjusted_contrasts"].table
    assert con.iloc[:, 0].tolist() == [f"relapse-free to day {h} (%)" for h in horizons] + [
        f"mean relapse-free days, day {L} to {max(horizons)}"]
    # independent recomputation: adjusted_survival on the landmark frame with the study's covariates
    lm = _landmark(sd, L)
    adj = st.mat_adjusted_curves(sd)
    assert adj.landmark_day == L and adj.n_episodes == len(lm) and adj.n_mat == int(lm["mat_by_landmark"].sum())
    lm2, covs, _ = st._pool_sparse_levels(lm, [c for c in sd.covariates if c in lm], {"event_col": "event"},
                                          sd.min_cell_count)
    covs = [c for c in covs if lm2[c].dropna().nunique() > 1]
    assert sorted(covs) == sorted(adj.covariates)
    ref = adjusted_survival(lm2, exposure_col="mat_by_landmark", covariates=covs, duration_col="time",
                            event_col="event", times=[h - L for h in horizons], tau=max(horizons) - L,
                            cluster_col="patient_id")
    c = ref.extra["contrasts"]
    diff = 100 * c.loc[c["measure"] == "difference", "estimate"].to_numpy()
    shown = con["difference"].iloc[: len(horizons)].astype(float).to_numpy()
    np.testing.assert_allclose(shown, diff, atol=0.051)  # displayed to one decimal
    lo = 100 * c.loc[c["measure"] == "difference", "conf_low"].to_numpy()
    np.testing.assert_allclose(con["95% CI low"].iloc[: len(horizons)].astype(float).to_numpy(), lo, atol=0.051)
    # the footnotes state the method and the intervals
    html = out["table:mat_adjusted_contrasts"].html
    assert "G-computation" in html and "influence functions" in html
    # the counts table: MAT + no MAT = all; the MAT and total cells are the landmark table's
    g = out["table:mat_adjusted_groups"].table
    lmk = out["table:mat_landmarks"].table
    row = lmk[lmk.iloc[:, 0].astype(str) == str(L)].iloc[0]
    assert g.loc[g["group"] == f"MAT started by day {L}", "episodes"].iloc[0] == row["started MAT"]
    assert g.loc[g["group"] == "all episodes at risk", "episodes"].iloc[0] == row["episodes at risk"]


def test_small_odd_cohort_one_site_missing_covariates(tmp_path, small_odd):
    """150 patients at one site with housing missing: complete case by default (the count of episodes left out
    is published), programme is not adjusted for, every count below the threshold is suppressed."""
    path = small_odd.write(tmp_path / "d", format="parquet")
    out = run_mat_template({}, path)
    assert "table:mat_adjusted_contrasts" in out, [p.plain for p in out.values() if p.kind == "text"]
    assert "Complete-case analysis" in out["table:mat_adjusted_contrasts"].html
    texts = [p.plain for k, p in out.items() if p.kind == "text"]
    assert any(t.startswith("Episodes left out for a missing covariate") for t in texts)
    sd = st.prepare_study({}, data_path=str(path))
    adj = st.mat_adjusted_curves(sd)
    assert "program" not in adj.covariates and adj.n_dropped > 0
    assert adj.result.glance["n"].iloc[0] == adj.n_episodes - adj.n_dropped
    # all counts shown are at least the threshold (or suppressed)
    g = out["table:mat_adjusted_groups"].table
    for v in g[["episodes", "relapses"]].to_numpy().ravel():
        assert v in ("<11", "*") or int(str(v).replace(",", "")) >= 11 or int(str(v).replace(",", "")) == 0


@pytest.mark.parametrize("policy", ["indicator", "multiple_imputation"])
def test_missing_covariate_policies(small_odd, policy):
    study = {"missing": {"policy": policy, "m": 3}} if policy == "multiple_imputation" else {"missing": {"policy": policy}}
    sd = st.prepare_study(study, data=small_odd)
    adj = st.mat_adjusted_curves(sd)
    assert adj.result is not None and adj.n_dropped == 0
    assert adj.result.glance["n"].iloc[0] == adj.n_episodes
    t = adj.result.tidy
    assert ((t["conf_low"] <= t["survival"]) & (t["survival"] <= t["conf_high"])).all()
    if policy == "indicator":
        assert "housing" in adj.covariates and "Missing covariate values entered the model" in " ".join(adj.notes)
    else:
        assert "pooled over 3 imputations" in adj.result.method
        # Rubin: the pooled difference is the mean of the imputations' differences, its SE at least their mean SE
        base = dict(exposure_col="mat_by_landmark", duration_col="time", event_col="event", cluster_col="patient_id")
        from iop_research.derive import impute

        lm = _landmark(sd, adj.landmark_day)
        lm, covs, _ = st._pool_sparse_levels(lm, [c for c in sd.covariates if c in lm], {"event_col": "event"},
                                             sd.min_cell_count)
        covs = [c for c in covs if lm[c].dropna().nunique() > 1]
        done = impute.impute_chained(lm[["episode_id"] + covs].reset_index(drop=True), covs, m=3,
                                     seed=int(sd.config.get("missing.seed")))
        tau = max(adj.horizons) - adj.landmark_day
        fits = [adjusted_survival(lm.drop(columns=covs).reset_index(drop=True).assign(**{c: x[c].to_numpy()
                                                                                          for c in covs}),
                                  covariates=covs, times=[tau], tau=tau, **base) for x in done]
        d = [f.extra["contrasts"].query("measure == 'difference'")["estimate"].iloc[0] for f in fits]
        se = [f.extra["contrasts"].query("measure == 'difference'")["std_error"].iloc[0] for f in fits]
        con = adj.result.extra["contrasts"]
        pooled = con[(con["measure"] == "difference") & (con["time"] == tau)].iloc[0]
        np.testing.assert_allclose(pooled["estimate"], np.mean(d), rtol=1e-10)
        assert pooled["std_error"] >= np.sqrt(np.mean(np.square(se))) - 1e-12


def test_no_mat_exposed_episodes_give_a_sentence(tmp_path, data300):
    """MAT dispensed only to patients of other sites than the cohort's: no episode of the cohort has started
    MAT by any landmark day, and the report says so in a sentence instead of failing."""
    adm = data300.admissions
    site_a = set(adm.loc[adm["program"] == "Site A", "patient_id"])
    meds = data300.medications[~data300.medications["patient_id"].isin(site_a)]
    path = _with(data300, medications=meds).write(tmp_path / "d", format="parquet")
    out = run_mat_template({"cohort": {"programs": ["Site A"]}}, path)
    assert "table:mat_adjusted_contrasts" not in out and "figure:mat_adjusted_curves" not in out
    texts = [p.plain for p in out.values() if p.kind == "text"]
    assert any("Adjusted relapse-free curves are not shown" in t and "no MAT group" in t for t in texts), texts


def test_reasons_for_no_curves(data300):
    sd = st.prepare_study({"horizons": {"days": [30, 60]}, "landmarks": {"days": [90]}}, data=data300)
    adj = st.mat_adjusted_curves(sd)
    assert adj.result is None and "no study horizon lies after" in adj.reason


def test_small_mat_group_is_suppressed_consistently(tmp_path, data300):
    """Few episodes on MAT by the landmark: their count is "<11" in the adjusted-curves table and in the
    landmark table (the same ledger cell), and the no-MAT count, which would reveal it from the shown total,
    is suppressed too; the figure's numbers at risk are suppressed as well."""
    meds = data300.medications
    few = sorted(meds["patient_id"].unique())[:6]
    path = _with(data300, medications=meds[meds["patient_id"].isin(few)]).write(tmp_path / "d", format="parquet")
    out = run_mat_template({"landmarks": {"days": [30]}}, path)
    assert "table:mat_adjusted_groups" in out, [p.plain for p in out.values() if p.kind == "text"]
    g = out["table:mat_adjusted_groups"].table.set_index("group")
    lmk = out["table:mat_landmarks"].table.iloc[0]
    assert g.loc["MAT started by day 30", "episodes"] == "<11" == lmk["started MAT"]
    assert g.loc["all episodes at risk", "episodes"] == lmk["episodes at risk"] != "*"
    assert g.loc["no MAT by day 30", "episodes"] == "*"
    svg = out["figure:mat_adjusted_curves"].html
    assert "&lt;11" in svg or "<11" in svg
