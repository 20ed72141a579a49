"""Public-data loaders (iop_research.datasets): UIS, HELP, TEDS-D re-export."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from iop_research.datasets import loaders as datasets
from iop_research.datasets import load_help, load_uis, loader_attrition, uis_treatment_phases
from iop_research.exceptions import DataReadError, DataValidationError


def test_load_uis(uis_path):
    uis = load_uis(uis_path)
    raw = pd.read_csv(uis_path)
    assert len(uis) == 575 == len(raw)
    assert uis.columns[:6].tolist() == ["episode_id", "site", "treat", "treat_long", "los_days", "time"]
    assert uis["event"].sum() == raw["CENSOR"].sum() == 464
    assert (uis["los_days"].to_numpy() == raw["LEN.T"].to_numpy()).all()
    assert list(uis["treat"].cat.categories) == ["short", "long"]
    assert (uis["treat"].eq("long").astype(int) == uis["treat_long"]).all()
    assert list(uis["iv"].cat.categories) == ["never", "previous", "recent"]
    assert uis["site"].value_counts()["A"] == (raw["SITE"] == 0).sum()
    assert uis["race"].eq("non_white").sum() == raw["RACE"].sum()
    assert uis["episode_id"].is_unique
    assert loader_attrition(uis)["n_excluded"].tolist() == [0, 0]


def test_load_uis_counts_incomplete_rows(uis_path, tmp_path):
    raw = pd.read_csv(uis_path)
    raw.loc[[3, 10], "BECK"] = np.nan
    f = tmp_path / "uis.csv"
    raw.to_csv(f, index=False)
    uis = load_uis(f)
    att = loader_attrition(uis)
    assert len(uis) == 573 and att["n_excluded"].tolist() == [0, 2]
    assert att["n_remaining"].iloc[-1] == 573


def test_load_help(help_path):
    hlp = load_help(help_path)
    raw = pd.read_csv(help_path)
    att = loader_attrition(hlp)
    n_missing = int((raw["anysubstatus"].isna() | raw["daysanysub"].isna()).sum())
    assert n_missing == 209 and att["n_excluded"].iloc[-1] == n_missing
    assert len(hlp) == len(raw) - n_missing == att["n_remaining"].iloc[-1]
    assert set(hlp["event"]) == {0, 1} and hlp["time"].notna().all()
    assert list(hlp["substance"].cat.categories) == ["alcohol", "cocaine", "heroin"]
    assert (hlp["treat_linkage"] == hlp["treat"].eq("yes").astype(int)).all()


def test_download_branch_uses_cache_once(uis_path, help_path, tmp_path, monkeypatch):
    calls = []
    sources = {datasets.UIS_URL: uis_path, datasets.HELP_URL: help_path}

    def fake_download(url, dest):
        calls.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sources[url], dest)

    monkeypatch.setenv("IOP_RESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "_download", fake_download)
    a = load_uis()
    b = load_uis()
    h = load_help()
    assert calls == [datasets.UIS_URL, datasets.HELP_URL]
    assert (tmp_path / "cache" / "iop-research" / "rdatasets" / "uis.csv").exists()
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 575 and len(h) == 244


def test_download_failure_is_a_read_error(tmp_path, monkeypatch):
    def broken(url, dest):
        raise OSError("no network")

    monkeypatch.setenv("IOP_RESEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(datasets, "_download", broken)
    with pytest.raises(DataReadError, match="pass\\s+its path"):
        load_help()


def test_malformed_files(uis_path, help_path, tmp_path):
    raw = pd.read_csv(uis_path)
    f = tmp_path / "bad.csv"
    raw.drop(columns=["LEN.T", "CENSOR"]).to_csv(f, index=False)
    with pytest.raises(DataValidationError, match="LEN.T, CENSOR"):
        load_uis(f)
    bad = raw.astype({"AGE": object})
    bad.loc[4, "AGE"] = "forty"
    bad.to_csv(f, index=False)
    with pytest.raises(DataValidationError, match="AGE.*'forty'.*line\\(s\\) 6"):
        load_uis(f)
    raw.assign(IV=raw["IV"].replace({3: 7})).to_csv(f, index=False)
    with pytest.raises(DataValidationError, match="IV"):
        load_uis(f)
    raw.to_csv(f, index=False, sep=";")
    with pytest.raises(DataValidationError, match="comma-separated"):
        load_uis(f)
    with pytest.raises(DataReadError, match="not found"):
        load_uis(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataReadError, match="is empty.*Download it again"):
        load_uis(tmp_path / "empty.csv")
    hraw = pd.read_csv(help_path)
    hraw.assign(anysubstatus=hraw["anysubstatus"].replace({1: 2})).to_csv(f, index=False)
    with pytest.raises(DataValidationError, match="anysubstatus"):
        load_help(f)
    hraw.assign(treat=hraw["treat"].replace({"yes": "YES"})).to_csv(f, index=False)
    with pytest.raises(DataValidationError, match="treat"):
        load_help(f)


def test_treatment_phases_tile_follow_up(uis_path):
    uis = load_uis(uis_path)
    ph = uis_treatment_phases(uis)
    assert list(uis.columns[:3]) == ["episode_id", "site", "treat"]  # input untouched
    span = (ph["stop"] - ph["start"]).groupby(ph["episode_id"]).sum()
    assert (span.loc[uis["episode_id"]].to_numpy() == uis["time"].to_numpy()).all()
    assert ph["event"].sum() == uis["event"].sum()
    assert (ph["stop"] > ph["start"]).all()
    n_after = int((uis["time"] > uis["los_days"]).sum())
    assert len(ph) == len(uis) + n_after and ph["in_treatment"].eq(0).sum() == n_after
    with pytest.raises(DataValidationError):
        uis_treatment_phases(uis.drop(columns="los_days"))


def test_teds_reader_is_exported():
    assert datasets.read_teds_d.__module__ == "iop_research.datasets.teds"
    with pytest.raises(DataValidationError):
        loader_attrition(pd.DataFrame())


# ---------------------------------------------------------------------------
# Notebook 07 analyses on the loaders' frames, against R
# (Rscript --vanilla tests/r/trials_uis_help.R <datasets_dir> tests/golden/trials_uis_help.json)
# ---------------------------------------------------------------------------

from conftest import load_golden, requires_r, run_r_script  # noqa: E402

from iop_research.survival.cox import fit_cox  # noqa: E402
from iop_research.survival.km import fit_km, logrank_test  # noqa: E402

GOLDEN = load_golden("trials_uis_help")


@pytest.fixture(scope="module")
def frames(uis_path, help_path):
    return {"uis": load_uis(uis_path), "help": load_help(help_path)}


def test_row_counts_match_r(frames):
    assert len(frames["uis"]) == GOLDEN["uis_rows"]
    assert len(frames["help"]) == GOLDEN["help_rows"]
    assert loader_attrition(frames["help"])["n_excluded"].iloc[-1] == GOLDEN["help_excluded"]
    assert len(uis_treatment_phases(frames["uis"])) == GOLDEN["uis_tv_rows"]


@pytest.mark.parametrize("case,data,group", [("uis_treat", "uis", "treat"), ("uis_site", "uis", "site"),
                                             ("help_treat", "help", "treat"),
                                             ("help_substance", "help", "substance")])
def test_km_medians_match_survfit(frames, case, data, group):
    """survfit(Surv(TIME, CENSOR) ~ TREAT) etc.: medians and log-transform 95% CIs."""
    r = GOLDEN["km"][case]
    med = fit_km(frames[data], duration_col="time", event_col="event", group_col=group).extra["medians"]
    np.testing.assert_allclose(med["median"], r["median"], rtol=1e-6)
    np.testing.assert_allclose(med["conf_low"], r["conf_low"], rtol=1e-6)
    np.testing.assert_allclose(med["conf_high"], r["conf_high"], rtol=1e-6)


@pytest.mark.parametrize("case,data,group", [("uis_treat", "uis", "treat"), ("uis_site", "uis", "site"),
                                             ("help_treat", "help", "treat"),
                                             ("help_substance", "help", "substance")])
def test_logrank_matches_survdiff(frames, case, data, group):
    """survdiff(Surv(TIME, CENSOR) ~ TREAT) etc."""
    r = GOLDEN["logrank"][case]
    res = logrank_test(frames[data], duration_col="time", event_col="event", group_col=group)
    np.testing.assert_allclose(res.glance["statistic"].iloc[0], r["chisq"], rtol=1e-6)
    assert res.glance["df"].iloc[0] == r["df"]


def test_uis_cox_matches_coxph(frames):
    """coxph(Surv(TIME, CENSOR) ~ TREAT + SITE + AGE + NDT + factor(IV) + RACE + BECK, ties = "efron")."""
    r = GOLDEN["cox"]["uis_main"]
    fit = fit_cox(frames["uis"], duration_col="time", event_col="event",
                  covariates=["treat", "site", "age", "ndt", "iv", "race", "beck"])
    assert fit.tidy["term"].tolist() == ["treat[T.long]", "site[T.B]", "age", "ndt", "iv[T.previous]",
                                         "iv[T.recent]", "race[T.non_white]", "beck"]
    np.testing.assert_allclose(fit.tidy["estimate"], r["estimate"], rtol=1e-6)
    np.testing.assert_allclose(fit.tidy["std_error"], r["std_error"], rtol=1e-4)
    np.testing.assert_allclose(fit.glance["loglik"].iloc[0], r["loglik"][1], rtol=1e-9)


def test_uis_treatment_length_in_and_after_treatment(frames):
    """coxph(Surv(start, stop, event) ~ TREAT + in_treatment + TREAT:in_treatment + SITE + AGE + NDT
    + factor(IV) + RACE + BECK) on the (0, LEN.T], (LEN.T, TIME] split."""
    r = GOLDEN["cox"]["uis_in_treatment"]
    ph = uis_treatment_phases(frames["uis"])
    ph = ph.assign(treat_x_in_treatment=ph["treat_long"] * ph["in_treatment"])
    fit = fit_cox(ph, start_col="start", stop_col="stop", event_col="event",
                  covariates=["treat_long", "in_treatment", "site", "age", "ndt", "iv", "race", "beck",
                              "treat_x_in_treatment"])
    np.testing.assert_allclose(fit.tidy["estimate"], r["estimate"], rtol=1e-6)
    np.testing.assert_allclose(fit.tidy["std_error"], r["std_error"], rtol=1e-4)
    # long planned stay: no benefit after exit, lower hazard while in treatment (HLM section 7.3)
    est = fit.tidy.set_index("term")["estimate"]
    assert est["treat_x_in_treatment"] < 0 and est["in_treatment"] < 0


def test_help_cox_matches_coxph(frames):
    """coxph(Surv(daysanysub, anysubstatus) ~ treat + substance, data = d[d$daysanysub > 0, ], ties = "efron").

    fit_cox needs durations > 0; R also fits the 11 subjects with daysanysub == 0 (``help_main``).
    """
    r = GOLDEN["cox"]["help_positive"]
    hlp = frames["help"]
    assert int((hlp["time"] == 0).sum()) == GOLDEN["help_zero_time"] == 11
    fit = fit_cox(hlp[hlp["time"] > 0], duration_col="time", event_col="event", covariates=["treat", "substance"])
    np.testing.assert_allclose(fit.tidy["estimate"], r["estimate"], rtol=1e-6)
    np.testing.assert_allclose(fit.tidy["std_error"], r["std_error"], rtol=1e-4)
    assert fit.glance["n"].iloc[0] == r["n"] and fit.glance["n_events"].iloc[0] == r["nevent"]


@requires_r
def test_trials_r_script_reproduces_golden(tmp_path):
    """Rscript --vanilla tests/r/trials_uis_help.R <datasets_dir> <out_json> gives the committed JSON."""
    live = run_r_script("trials_uis_help", tmp_path / "trials.json")
    for name, case in GOLDEN["cox"].items():
        np.testing.assert_allclose(live["cox"][name]["estimate"], case["estimate"], rtol=1e-6)
    for name, case in GOLDEN["km"].items():
        np.testing.assert_allclose(live["km"][name]["median"], case["median"], rtol=1e-6)
