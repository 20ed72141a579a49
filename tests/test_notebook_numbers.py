"""The numbers notebook 07 (UIS and HELP) shows are R's.

Two layers: the package recomputes each estimate along the notebook's code path and is compared
with R's ``survival`` (golden JSON from ``tests/r/trials_uis_help.R`` and ``tests/r/nb07.R``);
and the committed notebook's printed outputs are searched for R's values at the printed
precision, so a notebook that drifted from the package (or was not re-run) fails here.

R calls (from the repository root)::

    Rscript --vanilla tests/r/trials_uis_help.R <datasets_dir> tests/golden/trials_uis_help.json
    Rscript --vanilla tests/r/nb07.R <datasets_dir> tests/golden/nb07.json
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, load_golden, requires_r, run_r_script

import iop_research as iop
from iop_research.datasets import load_help, load_uis
from iop_research.derive.frames import split_at
from iop_research.privacy import suppress_risk_table

TRIALS = load_golden("trials_uis_help")
NB07 = load_golden("nb07")
NOTEBOOK = REPO / "iop_research" / "reports" / "notebooks" / "07_published_trials.ipynb"

UIS_RISK_DAYS = [0, 180, 365, 545, 730]  # notebook 07 parameters
HELP_RISK_DAYS = [0, 60, 120, 180, 240]
UIS_COVARIATES = ["treat", "site", "age", "ndt", "iv", "race", "beck"]
UIS_TERMS = ["treat[T.long]", "site[T.B]", "age", "ndt", "iv[T.previous]", "iv[T.recent]",
             "race[T.non_white]", "beck"]
TV_COVARIATES = ["long_in_treatment", "long_after_exit", "in_treatment", "site", "age", "ndt", "iv",
                 "race", "beck"]
TV_TERMS = ["long_in_treatment", "long_after_exit", "in_treatment"] + UIS_TERMS[1:]
HELP_TERMS = ["treat[T.yes]", "substance[T.cocaine]", "substance[T.heroin]"]
# (golden case, data, group column, risk-table days)
KM_CASES = [("uis_treat", "uis", "treat", UIS_RISK_DAYS), ("uis_site", "uis", "site", UIS_RISK_DAYS),
            ("help_treat", "help", "treat", HELP_RISK_DAYS),
            ("help_substance", "help", "substance", HELP_RISK_DAYS)]


@pytest.fixture(scope="module")
def frames(uis_path, help_path):
    return {"uis": load_uis(uis_path), "help": load_help(help_path)}


@pytest.fixture(scope="module")
def fits(frames):
    """The notebook's models, fitted as in its cells."""
    uis, hlp = frames["uis"], frames["help"]
    phases = split_at(uis, id_col="episode_id", duration_col="time", event_col="event", cuts="los_days")
    in_treatment = (phases["stop"] <= phases["los_days"]).astype(int)
    phases = phases.assign(in_treatment=in_treatment, long_in_treatment=phases["treat_long"] * in_treatment,
                           long_after_exit=phases["treat_long"] * (1 - in_treatment))
    zero_time = hlp["time"] <= 0
    return {
        "phases": phases,
        "uis_main": iop.fit_cox(uis, duration_col="time", event_col="event", covariates=UIS_COVARIATES),
        "uis_phases": iop.fit_cox(phases, start_col="start", stop_col="stop", event_col="event",
                                  covariates=TV_COVARIATES),
        "help_positive": iop.fit_cox(hlp[~zero_time], duration_col="time", event_col="event",
                                     covariates=["treat", "substance"]),
        "help_all": iop.fit_cox(hlp, duration_col="time", event_col="event",
                                covariates=["treat", "substance"]),
    }


@pytest.fixture(scope="module")
def shown_lines():
    """Whitespace-split lines of every printed output of the committed notebook 07."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    text = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append("".join(out["text"]))
            elif "text/plain" in out.get("data", {}):
                text.append("".join(out["data"]["text/plain"]))
    return [line.split() for line in "\n".join(text).splitlines()]


def _f4(x: float) -> str:
    return f"{x:.4f}"


# --------------------------------------------------------------------- package vs R
@pytest.mark.parametrize("case,data,group,days", KM_CASES)
def test_km_medians_and_numbers_at_risk(frames, case, data, group, days):
    """survfit(Surv(TIME, CENSOR) ~ TREAT) etc.: medians with log-CI; summary(fit, times=, extend=TRUE)."""
    km = iop.fit_km(frames[data], duration_col="time", event_col="event", group_col=group)
    r = TRIALS["km"][case]
    med = km.extra["medians"]
    np.testing.assert_allclose(med["median"], r["median"], rtol=1e-6)
    np.testing.assert_allclose(med[["conf_low", "conf_high"]].to_numpy().T, [r["conf_low"], r["conf_high"]],
                               rtol=1e-6)
    raw = suppress_risk_table(km.tidy, times=days, min_cell_count=1)  # nothing hidden
    rr = NB07["risk"][case]
    assert raw["time"].tolist() == rr["time"]
    assert raw["n_at_risk"].astype(int).tolist() == rr["n_at_risk"]
    assert raw["n_events"].astype(int).tolist() == rr["cum_events"]


@pytest.mark.parametrize("case,data,group", [c[:3] for c in KM_CASES])
def test_logrank(frames, case, data, group):
    """survdiff(Surv(TIME, CENSOR) ~ TREAT) etc.; p = pchisq(chisq, df, lower.tail = FALSE)."""
    r = NB07["logrank"][case]
    glance = iop.logrank_test(frames[data], duration_col="time", event_col="event", group_col=group).glance
    np.testing.assert_allclose(glance["statistic"].iloc[0], TRIALS["logrank"][case]["chisq"], rtol=1e-6)
    np.testing.assert_allclose(glance["p_value"].iloc[0], r["p_value"], rtol=1e-6)
    assert glance["df"].iloc[0] == r["df"]


@pytest.mark.parametrize("case,terms", [("uis_main", UIS_TERMS), ("uis_phases", TV_TERMS),
                                        ("help_positive", HELP_TERMS), ("help_all", HELP_TERMS)])
def test_cox_models(fits, case, terms):
    """coxph(..., ties = "efron") as quoted in tests/r/nb07.R: coefficients, SEs, HR limits, p, C."""
    r = NB07["cox"][case]
    fit = fits[case]
    assert fit.tidy["term"].tolist() == terms
    np.testing.assert_allclose(fit.tidy["estimate"], r["estimate"], rtol=1e-6)
    np.testing.assert_allclose(fit.tidy["std_error"], r["std_error"], rtol=1e-4)
    np.testing.assert_allclose(fit.tidy["hr_conf_low"], r["hr_conf_low"], rtol=1e-4)
    np.testing.assert_allclose(fit.tidy["hr_conf_high"], r["hr_conf_high"], rtol=1e-4)
    np.testing.assert_allclose(fit.tidy["p_value"], r["p_value"], rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(fit.glance["loglik"].iloc[0], r["loglik"][1], rtol=1e-9)
    np.testing.assert_allclose(fit.glance["concordance"].iloc[0], r["concordance"], rtol=1e-6)
    assert fit.glance["n"].iloc[0] == r["n"] and fit.glance["n_events"].iloc[0] == r["nevent"]


def test_cox_models_agree_with_trials_golden():
    """The shared cases of nb07.R equal trials_uis_help.R's (same data, same calls)."""
    for case, other in [("uis_main", "uis_main"), ("help_positive", "help_positive"), ("help_all", "help_main")]:
        np.testing.assert_allclose(NB07["cox"][case]["estimate"], TRIALS["cox"][other]["estimate"], rtol=1e-12)


def test_phase_model_is_a_reparametrisation(fits):
    """long_in_treatment = TREAT + TREAT:in_treatment and long_after_exit = TREAT of R's interaction model."""
    r = TRIALS["cox"]["uis_in_treatment"]
    coef = dict(zip(r["terms"], r["estimate"]))
    est = fits["uis_phases"].tidy.set_index("term")["estimate"]
    np.testing.assert_allclose(est["long_after_exit"], coef["TREAT"], rtol=1e-6)
    np.testing.assert_allclose(est["long_in_treatment"], coef["TREAT"] + coef["TREAT:in_treatment"], rtol=1e-6)
    phases = fits["phases"]
    assert len(phases) == NB07["uis_tv_rows"]
    assert int(phases.loc[phases["in_treatment"] == 1, "event"].sum()) == NB07["uis_tv_events_in_treatment"]


def test_help_zero_times_counted(frames):
    """sum(help$daysanysub == 0) in R: the rows the notebook's sensitivity HELP Cox model excludes (the main model keeps them, as R)."""
    assert int((frames["help"]["time"] <= 0).sum()) == NB07["help_zero_time"] == TRIALS["help_zero_time"]


# --------------------------------------------------------------------- notebook shows R's numbers
def _has_row(lines, tokens):
    return any(line[: len(tokens)] == tokens for line in lines)


@pytest.mark.parametrize("case", ["uis_main", "uis_phases", "help_positive", "help_all"])
def test_notebook_shows_r_cox_tables(shown_lines, case):
    r = NB07["cox"][case]
    terms = {"uis_main": UIS_TERMS, "uis_phases": TV_TERMS}.get(case, HELP_TERMS)
    for i, term in enumerate(terms):
        row = [term, _f4(r["estimate"][i]), _f4(r["std_error"][i]), _f4(np.exp(r["estimate"][i])),
               _f4(r["hr_conf_low"][i]), _f4(r["hr_conf_high"][i]), _f4(r["p_value"][i])]
        assert _has_row(shown_lines, row), f"notebook 07 does not show R's {case} row {row}"


@pytest.mark.parametrize("case", [c[0] for c in KM_CASES])
def test_notebook_shows_r_medians_and_logrank(shown_lines, case):
    r = TRIALS["km"][case]
    labels = {"uis_treat": ["short", "long"], "uis_site": ["A", "B"]}.get(case, r["strata"])
    for i, label in enumerate(labels):
        row = [label, f"{r['median'][i]:.1f}", f"{r['conf_low'][i]:.1f}", f"{r['conf_high'][i]:.1f}"]
        assert _has_row(shown_lines, row), f"notebook 07 does not show R's median row {row}"
    lr = NB07["logrank"][case]
    assert _has_row(shown_lines, [_f4(lr["chisq"]), str(lr["df"]), _f4(lr["p_value"])])


@pytest.mark.parametrize("case", [c[0] for c in KM_CASES])
def test_notebook_risk_tables_are_r_counts_or_suppressed(shown_lines, case):
    """Each shown count is R's; hidden ones ('<11' or '*') are where suppression applies."""
    rr = NB07["risk"][case]
    labels = {"0": "short", "1": "long"} if case == "uis_treat" else {"0": "A", "1": "B"} if case == "uis_site" else {}
    for stratum, t, n, e in zip(rr["strata"], rr["time"], rr["n_at_risk"], rr["cum_events"]):
        label = labels.get(stratum, stratum)
        match = [line for line in shown_lines if line[:2] == [label, f"{t:.1f}"] and len(line) == 4]
        assert match, f"no risk-table row for {label} at day {t}"
        shown_n, shown_e = match[0][2], match[0][3]
        assert shown_n == str(n) or (shown_n in {"<11", "*"} and (n < 11 or shown_e in {"<11", "*"}))
        assert shown_e == str(e) or shown_e in {"<11", "*"}
        if 0 < n < 11:
            assert shown_n == "<11"


@requires_r
def test_nb07_r_script_reproduces_golden(tmp_path):
    """Rscript --vanilla tests/r/nb07.R <datasets_dir> <out_json> gives the committed JSON."""
    live = run_r_script("nb07", tmp_path / "nb07.json")
    for case, r in NB07["cox"].items():
        np.testing.assert_allclose(live["cox"][case]["estimate"], r["estimate"], rtol=1e-6)
        np.testing.assert_allclose(live["cox"][case]["std_error"], r["std_error"], rtol=1e-4)
    for case, r in NB07["logrank"].items():
        np.testing.assert_allclose(live["logrank"][case]["chisq"], r["chisq"], rtol=1e-6)
    for case, r in NB07["risk"].items():
        assert live["risk"][case]["n_at_risk"] == r["n_at_risk"]
        assert live["risk"][case]["cum_events"] == r["cum_events"]
