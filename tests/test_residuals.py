"""Tests of iop_research.survival.residuals against R survival 3.5 ``residuals.coxph``.

Golden values: ``tests/golden/resid_cox.json`` from ``tests/r/resid_cox.R`` (UIS, HELP from the
shared datasets; simulated ``cox_recurrent.csv``). R call: ``residuals(fit, type = ty)`` for every
type, ``weighted = TRUE`` for score, ``collapse = id`` for the clustered fits. Matrices are stored
for every 5th row (file size). Tolerances: 1e-6 relative (absolute 1e-9 near zero).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import GOLDEN_DIR, load_golden, requires_r, run_r_script
from uis_cox import UIS_COV, read_uis, split_at_los
from iop_research.exceptions import ModelSpecificationError
from iop_research.survival.cox import fit_cox
from iop_research.survival.residuals import cox_residuals

RTOL = 1e-6
ATOL = 1e-9
MATRIX_TYPES = ("score", "dfbeta", "dfbetas", "schoenfeld", "scaledsch")


@pytest.fixture(scope="module")
def uis(uis_path) -> pd.DataFrame:
    return read_uis(uis_path)


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("resid_cox")




def fits(uis, help_path):
    tv = split_at_los(uis)
    help_df = pd.read_csv(help_path).dropna(subset=["anysubstatus", "daysanysub"]).query("daysanysub > 0")
    rec = pd.read_csv(GOLDEN_DIR / "data" / "cox_recurrent.csv")
    kw = dict(duration_col="TIME", event_col="CENSOR")
    return {
        "uis_efron": (fit_cox(uis, covariates=UIS_COV, **kw), uis["cl"].to_numpy()),
        "uis_strata": (fit_cox(uis, covariates=[c for c in UIS_COV if c != "SITE"], strata_col="SITE", **kw), None),
        "uis_weights": (fit_cox(uis, covariates=UIS_COV, weights_col="w_frac", **kw), None),
        "uis_tv": (
            fit_cox(tv, start_col="start", stop_col="stop", event_col="event", covariates=["TREAT", "intreat"] + UIS_COV[1:]),
            tv["ID"].to_numpy(),
        ),
        "help": (
            fit_cox(help_df, duration_col="daysanysub", event_col="anysubstatus",
                    covariates=["treat", "substance", "age", "female"]),
            None,
        ),
        "recurrent": (
            fit_cox(rec, start_col="start", stop_col="stop", event_col="event", covariates=["x1", "x2", "grp", "mat"],
                    cluster_col="id"),
            True,
        ),
        "recurrent_breslow": (
            fit_cox(rec, start_col="start", stop_col="stop", event_col="event", covariates=["x1", "x2", "grp", "mat"],
                    ties="breslow"),
            None,
        ),
    }


def values(df: pd.DataFrame, names) -> np.ndarray:
    return df[list(names)].to_numpy() if len(names) > 1 else df[names[0]].to_numpy()


@pytest.fixture(scope="module")
def all_fits(uis, help_path):
    return fits(uis, help_path)


@pytest.mark.parametrize(
    "case", ["uis_efron", "uis_strata", "uis_weights", "uis_tv", "help", "recurrent", "recurrent_breslow"]
)
def test_residuals_match_r(all_fits, golden, case):
    """R: residuals(coxph(...), type = ty) for ty in martingale, deviance, score, schoenfeld, scaledsch,
    dfbeta, dfbetas (resid_cox.R)."""
    fit, collapse = all_fits[case]
    r = golden[case]
    names = list(fit.model.columns)
    for ty in ("martingale", "deviance"):
        np.testing.assert_allclose(cox_residuals(fit, type=ty)["residual"], r[ty], rtol=RTOL, atol=ATOL)
    for ty in MATRIX_TYPES:
        mine = cox_residuals(fit, type=ty)
        want = np.asarray(r[ty], dtype=float)
        got = mine[names].to_numpy()[::5]
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=RTOL, atol=ATOL, err_msg=ty)
    sch = cox_residuals(fit, type="schoenfeld")
    np.testing.assert_allclose(sch["time"], r["schoenfeld_time"], rtol=0)
    sw = cox_residuals(fit, type="score", weighted=True)[names].to_numpy()[::5]
    np.testing.assert_allclose(sw.reshape(np.shape(r["score_weighted"])), r["score_weighted"], rtol=RTOL, atol=ATOL)
    if collapse is not None:
        for ty in ("martingale", "deviance", "score", "dfbeta", "dfbetas"):
            mine = cox_residuals(fit, type=ty, collapse=collapse)
            want = np.asarray(r[f"{ty}_collapsed"], dtype=float)
            got = mine["residual"].to_numpy() if ty in ("martingale", "deviance") else mine[names].to_numpy()[::5]
            np.testing.assert_allclose(got.reshape(want.shape), want, rtol=RTOL, atol=ATOL, err_msg=ty)


@requires_r
def test_r_golden_reproduces_live(tmp_path, golden):
    """Re-run tests/r/resid_cox.R and compare with the committed golden file."""
    live = run_r_script("resid_cox", tmp_path / "resid_cox.json")
    for case in ("uis_efron", "uis_tv", "recurrent"):
        for ty in ("martingale", "dfbeta", "scaledsch"):
            np.testing.assert_allclose(live[case][ty], golden[case][ty], rtol=1e-12)


def test_residual_properties_and_errors(all_fits):
    fit, _ = all_fits["uis_efron"]
    m = cox_residuals(fit, type="martingale")
    assert abs(m["residual"].sum()) < 1e-8  # martingale residuals sum to 0
    assert (m["residual"] <= 1).all()
    sc = cox_residuals(fit, type="score")
    np.testing.assert_allclose(sc[list(fit.model.columns)].sum(), 0, atol=1e-6)  # score at the MLE is 0
    assert list(m.columns) == ["row", "residual"]
    col = cox_residuals(fit, type="martingale", collapse=np.zeros(len(m)))
    assert len(col) == 1 and abs(col["residual"].iloc[0]) < 1e-8
    with pytest.raises(ModelSpecificationError, match="type"):
        cox_residuals(fit, type="pearson")
    with pytest.raises(ModelSpecificationError, match="cluster_col"):
        cox_residuals(fit, type="martingale", collapse=True)
    with pytest.raises(ModelSpecificationError, match="length"):
        cox_residuals(fit, type="score", collapse=[1, 2])
    with pytest.raises(ModelSpecificationError, match="Schoenfeld"):
        cox_residuals(fit, type="schoenfeld", collapse=np.zeros(len(m)))
    with pytest.raises(ModelSpecificationError):
        cox_residuals(object(), type="martingale")
    rec, _ = all_fits["recurrent"]
    by_id = cox_residuals(rec, type="dfbeta", collapse=True)
    assert by_id["cluster"].is_monotonic_increasing


def test_functional_form_and_influence_plots(all_fits, uis):
    """Plots draw the residuals they are given (Agg backend; check the Axes, not pixels)."""
    import matplotlib.pyplot as plt

    from iop_research.present.diagnostics import plot_functional_form, plot_influence
    from iop_research.present.tables import smooth_curve

    fit = fit_cox(uis, duration_col="TIME", event_col="CENSOR", covariates=["TREAT", "SITE", "BECK"])
    m = cox_residuals(fit, type="martingale")
    d = uis.assign(residual=m["residual"].to_numpy())
    sm = smooth_curve(d["AGE"], d["residual"])
    ax = plot_functional_form(d, x_col="AGE", smooth=sm)
    pts = [ln for ln in ax.get_lines() if ln.get_gid() == "residuals"][0]
    np.testing.assert_allclose(pts.get_ydata(), d["residual"])
    smooth = [ln for ln in ax.get_lines() if ln.get_gid() == "smooth"][0]
    np.testing.assert_allclose(smooth.get_xdata(), sm["x"])
    plt.close(ax.figure)
    dfb = cox_residuals(all_fits["uis_efron"][0], type="dfbeta")
    ax = plot_influence(dfb, term="AGE", n_label=3)
    labels = [t.get_text() for t in ax.texts if t.get_gid() == "influential"]
    top = dfb.loc[dfb["AGE"].abs().sort_values(ascending=False).index[:3], "row"].astype(str).tolist()
    assert labels == top
    plt.close(ax.figure)
