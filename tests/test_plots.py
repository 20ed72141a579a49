"""Tests of publication figures (iop_research.present.plots): what the Axes hold, not pixels."""
from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from iop_research.present import plots  # noqa: E402
from iop_research.exceptions import DataValidationError  # noqa: E402
from iop_research.privacy import suppress_risk_table  # noqa: E402
from iop_research.present.tables import los_summary, smooth_curve  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _km() -> pd.DataFrame:
    """Two groups by hand; group 'b' falls below 11 at risk at day 40."""
    a = pd.DataFrame(
        {
            "group": "a",
            "time": [10.0, 20.0, 30.0, 40.0, 50.0],
            "n_at_risk": [100, 80, 60, 40, 20],
            "n_events": [10, 10, 10, 10, 5],
            "n_censored": [10, 10, 10, 10, 15],
            "survival": [0.9, 0.7875, 0.6563, 0.4922, 0.3691],
        }
    )
    b = pd.DataFrame(
        {
            "group": "b",
            "time": [15.0, 25.0, 40.0, 45.0],
            "n_at_risk": [50, 30, 9, 4],
            "n_events": [10, 10, 5, 4],
            "n_censored": [10, 11, 0, 0],
            "survival": [0.8, 0.5333, 0.2370, 0.0],
        }
    )
    km = pd.concat([a, b], ignore_index=True)
    km["std_error"] = 0.05
    km["conf_low"] = (km["survival"] - 0.1).clip(0, 1)
    km["conf_high"] = (km["survival"] + 0.1).clip(0, 1)
    return km


def _curves(ax):
    return [ln for ln in ax.get_lines() if ln.get_gid() == "curve"]


def test_pyplot_not_imported_on_package_import():
    code = "import sys, iop_research.present.plots, iop_research.present.tables, iop_research.privacy; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plot_km_curves_cut_and_risk_table():
    km = _km()
    before = km.copy()
    ax = plots.plot_km(km, times=[0, 20, 40], labels={"a": "MAT", "b": "No MAT"})
    pd.testing.assert_frame_equal(km, before)
    curves = _curves(ax)
    assert [c.get_label() for c in curves] == ["MAT", "No MAT"]
    # group b is cut at day 25: last time with >= 11 at risk
    xb = curves[1].get_xdata()
    assert max(xb) == 25.0
    assert max(curves[0].get_xdata()) == 50.0
    # both start at (0, 1)
    assert curves[0].get_xdata()[0] == 0 and curves[0].get_ydata()[0] == 1.0
    # the cut is said in the caption, not in notes inside the axes
    assert not [t for t in ax.texts if t.get_gid() == "cut_note"]
    assert plots.figure_caption(ax) == (
        "Kaplan-Meier estimates with confidence bands; tick marks show censored follow-up. Curves end at the last "
        "day with at least 11 patients at risk (No MAT: day 25); the time axis ends at day 50.")
    # numbers at risk: a 100, 80, 40; b 50, 30, <11
    counts = [t.get_text() for t in ax.texts if t.get_gid() == "risk_count"]
    assert counts == ["100", "80", "40", "50", "30", "<11"]
    assert [t.get_text() for t in ax.texts if t.get_gid() == "risk_label"] == ["MAT", "No MAT"]
    assert list(ax.get_xticks()) == [0, 20, 40]
    # CI bands (one per group) and censor marks (one per group, only before the cut)
    assert len(ax.collections) == 2
    censor = [ln for ln in ax.get_lines() if ln.get_gid() == "censor"]
    assert len(censor) == 2
    assert max(censor[1].get_xdata()) <= 25.0
    # greyscale: distinct line styles
    assert curves[0].get_linestyle() != curves[1].get_linestyle()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["MAT", "No MAT"]


def test_plot_km_options_and_given_axes():
    fig, ax0 = plt.subplots()
    ax = plots.plot_km(_km(), ax=ax0, risk_table=False, conf_int=False, censor_marks=False)
    assert ax is ax0
    assert len(ax.collections) == 0
    assert not [t for t in ax.texts if t.get_gid() == "risk_count"]
    assert not [ln for ln in ax.get_lines() if ln.get_gid() == "censor"]
    assert len(_curves(ax)) == 2


def test_plot_km_accepts_precomputed_risk_table_and_hides_tiny_groups():
    km = _km()
    rt = suppress_risk_table(km, times=[0, 30])
    ax = plots.plot_km(km, risk_table=rt, times=[0, 30])
    assert [t.get_text() for t in ax.texts if t.get_gid() == "risk_count"] == ["100", "60", "50", "<11"]
    tiny = km[km["group"] == "b"].assign(n_at_risk=[8, 6, 4, 2], group="c")
    ax2 = plots.plot_km(pd.concat([km[km.group == "a"], tiny]), risk_table=False)
    assert [c.get_label() for c in _curves(ax2)] == ["a"]
    assert "Not shown (fewer than 11 at risk from the start): c." in plots.figure_caption(ax2)


def test_plot_km_missing_columns():
    with pytest.raises(DataValidationError, match="survival"):
        plots.plot_km(pd.DataFrame({"group": ["a"], "time": [1.0], "n_at_risk": [20]}))


def _cif() -> pd.DataFrame:
    rows = []
    for g, n0 in [("mat", 60), ("no_mat", 50)]:
        for cause in ["relapse", "death"]:
            for i, t in enumerate([10.0, 20.0, 30.0]):
                rows.append(
                    {
                        "group": g,
                        "cause": cause,
                        "time": t,
                        "n_at_risk": n0 - 20 * i,
                        "n_events": 3,
                        "cumulative_incidence": (0.1 if cause == "relapse" else 0.02) * (i + 1),
                        "std_error": 0.02,
                        "conf_low": 0.0,
                        "conf_high": 0.5,
                    }
                )
    return pd.DataFrame(rows)


def test_plot_cif_lines_per_group_and_cause():
    ax = plots.plot_cif(_cif(), times=[0, 10, 20])
    curves = _curves(ax)
    assert [c.get_label() for c in curves] == ["mat: relapse", "mat: death", "no_mat: relapse", "no_mat: death"]
    # colour by group, style by cause
    assert curves[0].get_color() == curves[1].get_color() != curves[2].get_color()
    assert curves[0].get_linestyle() == curves[2].get_linestyle() != curves[1].get_linestyle()
    # no_mat has 10 at risk at day 30 -> curve stops at 20; starts at 0
    assert max(curves[2].get_xdata()) == 20.0 and curves[2].get_ydata()[0] == 0.0
    assert [t.get_text() for t in ax.texts if t.get_gid() == "risk_count"] == ["60", "60", "40", "50", "50", "30"]
    ax2 = plots.plot_cif(_cif(), cause="relapse", risk_table=False)
    assert len(_curves(ax2)) == 2
    with pytest.raises(DataValidationError, match="cause"):
        plots.plot_cif(_cif(), cause="overdose")


def test_plot_forest():
    tidy = pd.DataFrame(
        {
            "term": ["mat", "age", "female"],
            "estimate": np.log([0.5, 1.01, 1.2]),
            "hazard_ratio": [0.5, 1.01, 1.2],
            "hr_conf_low": [0.34, 1.0, 0.9],
            "hr_conf_high": [0.74, 1.02, 1.6],
        }
    )
    ax = plots.plot_forest(tidy, labels={"mat": "MAT"})
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["female", "age", "MAT"]
    est = [ln for ln in ax.get_lines() if ln.get_gid() == "estimate"][0]
    assert list(est.get_xdata()) == [0.5, 1.01, 1.2]
    assert list(est.get_ydata()) == [2.0, 1.0, 0.0]  # first term on top
    ref = [ln for ln in ax.get_lines() if ln.get_gid() == "reference"][0]
    assert list(ref.get_xdata()) == [1.0, 1.0]
    assert [t.get_text() for t in ax.texts if t.get_gid() == "hr_text"][0] == "0.50 (0.34, 0.74)"
    ax.figure.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "1" in ticks and "0.5" in ticks  # readable ratios, not 10^0
    ci = [c for c in ax.collections if c.get_gid() == "ci"][0]
    assert len(ci.get_segments()) == 3
    with pytest.raises(DataValidationError, match="positive"):
        plots.plot_forest(tidy.assign(hazard_ratio=tidy["estimate"]))


def test_plot_love():
    bal = pd.DataFrame(
        {
            "covariate": ["age", "sex", "substance", "substance"],
            "level": [np.nan, "female", "opioids", "alcohol"],
            "smd_unweighted": [0.05, -0.30, 0.20, -0.12],
            "smd_weighted": [0.01, 0.02, -0.03, 0.04],
        }
    )
    ax = plots.plot_love(bal)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["age", "substance: alcohol", "substance: opioids", "sex: female"]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_label() in ("Unweighted", "Weighted")}
    assert list(lines["Unweighted"].get_xdata()) == [0.05, 0.12, 0.20, 0.30]
    assert list(lines["Weighted"].get_xdata()) == [0.01, 0.04, 0.03, 0.02]
    thr = [ln for ln in ax.get_lines() if ln.get_gid() == "threshold"]
    assert len(thr) == 1 and list(thr[0].get_xdata()) == [0.1, 0.1]
    ax2 = plots.plot_love(bal, absolute=False, threshold=0.2)
    assert len([ln for ln in ax2.get_lines() if ln.get_gid() == "threshold"]) == 2


def test_plot_swimmer():
    spans = pd.DataFrame(
        {
            "patient": ["P1", "P1", "P1", "P2", "P3", "P3"],
            "start_day": [0, 2, 35, 0, 0, 10],
            "end_day": [60, 30, 60, 45, 90, 70],
            "kind": ["treatment", "buprenorphine", "buprenorphine", "treatment", "treatment", "methadone"],
        }
    )
    points = pd.DataFrame(
        {
            "patient": ["P1", "P1", "P2", "P2", "P3", "P3"],
            "day": [3, 7, 14, 30, 21, 80],
            "kind": ["group", "individual", "uds_negative", "uds_positive", "group", "relapse"],
        }
    )
    ax = plots.plot_swimmer(spans, points)
    gids = [p.get_gid() for p in ax.patches]
    assert gids.count("treatment") == 3 and gids.count("mat") == 3
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["1", "2", "3"]
    assert list(ax.get_yticks()) == [2.0, 1.0, 0.0]  # first patient in the top lane
    kinds = sorted(ln.get_label() for ln in ax.get_lines() if ln.get_gid() == "point")
    assert kinds == ["group", "individual", "relapse", "uds_negative", "uds_positive"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "buprenorphine" in legend and "methadone" in legend and "IOP episode" in legend
    # MAT bars of different medications differ in hatch (greyscale)
    mats = [p for p in ax.patches if p.get_gid() == "mat"]
    assert mats[0].get_hatch() != mats[-1].get_hatch()
    ax2 = plots.plot_swimmer(spans, relabel=False)
    assert "P1" in [t.get_text() for t in ax2.get_yticklabels()]


def test_plot_attrition_suppresses_small_counts():
    a = pd.DataFrame(
        {
            "step": ["All episodes", "Adults", "Opioid use disorder"],
            "reason": ["", "age < 18", "other primary substance"],
            "rows_removed": [0, 4, 300],
            "rows_remaining": [1000, 996, 696],
        }
    )
    ax = plots.plot_attrition(a)
    boxes = [t.get_text() for t in ax.texts if t.get_gid() == "step_box"]
    excl = [t.get_text() for t in ax.texts if t.get_gid() == "exclusion_box"]
    assert len(boxes) == 3 and len(excl) == 2
    assert boxes[0] == "All episodes\nepisodes: 1000"
    assert excl[0] == "Excluded: <11\nage < 18"
    assert "996" not in " ".join(boxes)  # complementary: 1000 - 996 would reveal 4
    assert not ax.axison


def test_plot_modality_heatmap_masks_small_cells():
    m = pd.DataFrame({"group": [6.0, 5.5, 4.0], "individual": [1.0, 0.8, 0.5]}, index=[1, 2, 3])
    n = pd.DataFrame({"group": [50, 40, 8], "individual": [50, 40, 30]}, index=[1, 2, 3])
    ax = plots.plot_modality_heatmap(m, counts=n)
    img = ax.images[0].get_array()
    assert img.shape == (2, 3)
    assert bool(img.mask[0, 2]) and not bool(img.mask[1, 2])
    texts = [t.get_text() for t in ax.texts]
    assert "<11" in texts and "6.0" in texts and "4.0" not in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]


def test_plot_los_from_summary():
    df = pd.DataFrame(
        {
            "los_days": list(range(1, 41)) + list(range(5, 25)) + [3, 4, 5],
            "discharge_reason": ["completed"] * 40 + ["dropped_out"] * 20 + ["died"] * 3,
        }
    )
    s = los_summary(df)
    ax = plots.plot_los(s)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0] == "completed\n(n=40)"
    assert ticks[1] == "died\n(n=<11)"
    medians = [ln for ln in ax.get_lines() if ln.get_color() == "black" and len(ln.get_xdata()) == 2]
    assert len(ax.patches) == 2  # 'died' box not drawn
    assert medians  # median lines drawn


def test_plot_schoenfeld_with_smooth():
    rng = np.random.default_rng(3)
    res = pd.DataFrame({"time": np.sort(rng.uniform(1, 300, 40)), "mat": rng.normal(-0.5, 1, 40)})
    res["transformed_time"] = res["time"] / 300
    sm = smooth_curve(res["time"], res["mat"])
    ax = plots.plot_schoenfeld(res, "mat", smooth=sm, hline=-0.5)
    pts = [ln for ln in ax.get_lines() if ln.get_gid() == "residuals"][0]
    assert len(pts.get_xdata()) == 40
    smooth = [ln for ln in ax.get_lines() if ln.get_gid() == "smooth"][0]
    assert np.allclose(smooth.get_ydata(), sm["y"])
    assert [ln for ln in ax.get_lines() if ln.get_gid() == "hline"][0].get_ydata()[0] == -0.5
    ax2 = plots.plot_schoenfeld(res, "mat", time_col="transformed_time")
    assert ax2.get_xlabel() == "transformed_time"
    with pytest.raises(DataValidationError):
        plots.plot_schoenfeld(res, "nope")


def test_style_context_manager_restores():
    before = matplotlib.rcParams["axes.spines.top"]
    with plots.style():
        assert matplotlib.rcParams["axes.spines.top"] is False
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        assert [c.upper() for c in colors] == list(plots.OKABE_ITO)
    assert matplotlib.rcParams["axes.spines.top"] == before
    assert len(set(plots.LINESTYLES)) == len(plots.LINESTYLES) == len(plots.OKABE_ITO)


def test_plot_attrition_with_patient_counts():
    a = pd.DataFrame(
        {
            "step": ["All episodes", "First episode only"],
            "reason": ["", "not the first episode"],
            "rows_removed": [0, 200],
            "patients_removed": [0, 0],
            "rows_remaining": [1000, 800],
            "patients_remaining": [800, 800],
        }
    )
    ax = plots.plot_attrition(a)
    boxes = [t.get_text() for t in ax.texts if t.get_gid() == "step_box"]
    excl = [t.get_text() for t in ax.texts if t.get_gid() == "exclusion_box"]
    assert boxes == ["All episodes\nepisodes: 1000\npatients: 800", "First episode only\nepisodes: 800\npatients: 800"]
    assert excl == ["Excluded: 200 (0 patients)\nnot the first episode"]


def test_plot_attrition_chooses_a_chain():
    a = pd.DataFrame(
        {
            "table": ["sessions", "sessions", "episodes", "episodes"],
            "step": ["input", "outside episodes", "input", "adults"],
            "reason": ["", "no episode", "", "age < 18"],
            "rows_removed": [0, 30, 0, 3],
            "rows_remaining": [5000, 4970, 300, 297],
        }
    )
    with pytest.raises(DataValidationError, match="table="):
        plots.plot_attrition(a)
    ax = plots.plot_attrition(a, table="episodes")
    boxes = [t.get_text() for t in ax.texts if t.get_gid() == "step_box"]
    assert boxes == ["input\nepisodes: 300", "adults\nepisodes: *"]
    with pytest.raises(DataValidationError, match="no chain"):
        plots.plot_attrition(a, table="patients")


# -- issue 12: result objects, separate labels, privacy cut in the axis range -------------------------


def _km_result():
    from iop_research.survival.km import fit_km

    rng = np.random.default_rng(3)
    n = 120
    df = pd.DataFrame({"t": np.ceil(rng.exponential(150, n)), "mat": rng.random(n) < 0.5})
    df["e"] = rng.random(n) < 0.7
    return fit_km(df, duration_col="t", event_col="e", group_col="mat")


def test_plot_functions_accept_result_objects():
    from iop_research.survival.cox import fit_cox

    res = _km_result()
    ax1 = plots.plot_km(res, risk_table=False)
    ax2 = plots.plot_km(res.tidy, risk_table=False)
    for c1, c2 in zip(_curves(ax1), _curves(ax2)):
        np.testing.assert_array_equal(c1.get_xdata(), c2.get_xdata())
        np.testing.assert_array_equal(c1.get_ydata(), c2.get_ydata())
    assert plots.figure_caption(ax1) == plots.figure_caption(ax2)
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"t": rng.exponential(10, 80) + 0.1, "e": 1, "x": rng.normal(size=80)})
    cox = fit_cox(df, duration_col="t", event_col="e", covariates=["x"])
    ax3 = plots.plot_forest(cox)
    est = [ln for ln in ax3.get_lines() if ln.get_gid() == "estimate"][0]
    np.testing.assert_allclose(est.get_xdata(), cox.tidy["hazard_ratio"])
    with pytest.raises(DataValidationError, match="result object"):
        plots.plot_km([1, 2, 3])


def test_plot_love_takes_the_balance_table_of_a_result():
    from iop_research.results import Result

    bal = pd.DataFrame({"covariate": ["age", "sex"], "level": [None, "female"],
                        "smd_unweighted": [0.3, -0.15], "smd_weighted": [0.02, 0.01]})
    res = Result(method="IPTW", tidy=pd.DataFrame({"term": ["x"]}), glance=pd.DataFrame(), extra={"balance": bal})
    a = plots.plot_love(res)
    b = plots.plot_love(bal)
    assert [t.get_text() for t in a.get_yticklabels()] == [t.get_text() for t in b.get_yticklabels()]


def test_plot_cif_labels_groups_and_causes_separately():
    """Group True and cause 1 are different things even though True == 1 in Python."""
    from iop_research.survival.competing import cumulative_incidence

    rng = np.random.default_rng(5)
    n = 300
    df = pd.DataFrame({"t": np.ceil(rng.exponential(60, n)), "cause": rng.integers(0, 3, n),
                       "mat": rng.random(n) < 0.5})
    cif = cumulative_incidence(df, duration_col="t", event_col="cause", group_col="mat")
    ax = plots.plot_cif(cif, risk_table=False, group_labels={True: "MAT", False: "no MAT"},
                        cause_labels={1: "relapse", 2: "death"})
    labels = sorted(c.get_label() for c in _curves(ax))
    assert labels == ["MAT: death", "MAT: relapse", "no MAT: death", "no MAT: relapse"]
    # the old single mapping no longer renames cause 1 after group True
    ax2 = plots.plot_cif(cif, risk_table=False, labels={True: "MAT", False: "no MAT"})
    assert sorted(c.get_label() for c in _curves(ax2)) == ["MAT: 1", "MAT: 2", "no MAT: 1", "no MAT: 2"]
    assert plots.figure_caption(ax).startswith("Cumulative incidence of relapse, death with confidence bands")


def test_km_cut_for_privacy_shows_in_the_axis_range_and_caption():
    """A curve cut where fewer than min_cell_count remain: the axis ends at the last day drawn, no
    tick or number at risk lies beyond it, and the caption says where the curves end."""
    res = _km_result()
    tidy = res.tidy
    k = 20
    ax = plots.plot_km(res, min_cell_count=k, times=[0, 100, 200, 300, 400, 500, 600])
    last_ok = {g: float(d.loc[d["n_at_risk"] >= k, "time"].max()) for g, d in tidy.groupby("group")}
    for g, curve in zip(pd.unique(tidy["group"]), _curves(ax)):
        assert max(curve.get_xdata()) == last_ok[g]
    axis_end = max(last_ok.values())
    assert ax.get_xlim()[1] == pytest.approx(axis_end * 1.02)
    assert max(ax.get_xticks()) <= axis_end and max(tidy["time"]) > axis_end * 1.02
    counts = [t for t in ax.texts if t.get_gid() == "risk_count"]
    assert counts and all(t.xy[0] <= axis_end for t in counts)
    caption = plots.figure_caption(ax)
    assert f"at least {k} patients at risk" in caption
    for g, day in last_ok.items():
        assert f"{g}: day {day:g}" in caption
    assert not [t for t in ax.texts if t.get_gid() == "cut_note"]
    # without a cut, the axis covers all times and the caption has no cut sentence
    ax2 = plots.plot_km(res, min_cell_count=1, risk_table=False)
    assert ax2.get_xlim()[1] >= max(tidy["time"]) and "Curves end" not in plots.figure_caption(ax2)


def test_schoenfeld_and_attrition_accept_their_objects():
    from iop_research.derive.cohorts import Attrition
    from iop_research.survival.cox import fit_cox, ph_test

    rng = np.random.default_rng(6)
    df = pd.DataFrame({"t": rng.exponential(10, 120) + 0.1, "e": rng.random(120) < 0.8, "x": rng.normal(size=120),
                       "patient_id": [f"P{i}" for i in range(120)]})
    zph = ph_test(fit_cox(df, duration_col="t", event_col="e", covariates=["x"]))
    a = plots.plot_schoenfeld(zph, "x")
    b = plots.plot_schoenfeld(zph.extra["residuals"], "x")
    np.testing.assert_array_equal(a.get_lines()[0].get_xydata(), b.get_lines()[0].get_xydata())
    with pytest.raises(DataValidationError, match="ph_test"):
        plots.plot_schoenfeld(fit_cox(df, duration_col="t", event_col="e", covariates=["x"]), "x")
    att = Attrition()
    att.start(df, table="episodes")
    att.exclude(df, df["x"] > 1.5, step="x_cap", reason="x > 1.5", table="episodes")
    ax1 = plots.plot_attrition(att)
    ax2 = plots.plot_attrition(att.to_frame())
    assert [t.get_text() for t in ax1.texts] == [t.get_text() for t in ax2.texts]
