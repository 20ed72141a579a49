"""Tests of the publishing channel (iop_research.present.publish)."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from iop_research.exceptions import DataValidationError, PrivacyViolationError  # noqa: E402
from iop_research.present.publish import Publisher, parse_published  # noqa: E402
from iop_research.privacy.audit import audit_ledgers  # noqa: E402

K = 11


def test_threshold_below_5_is_refused_without_a_reason():
    for k in (1, 3, 4):
        with pytest.raises(PrivacyViolationError, match="min_cell_count_override"):
            Publisher(min_cell_count=k)
    with pytest.raises(PrivacyViolationError):
        Publisher(min_cell_count=3, min_cell_count_override="   ")
    pub = Publisher(min_cell_count=3, min_cell_count_override="DUA clause 4.2", show=False)
    t = pub.table(pd.DataFrame({"g": ["a", "b"], "n": [2, 40]}), caption="x", count_cols=["n"])
    assert t.table["n"].tolist() == ["<3", "40"]
    assert "DUA clause 4.2" in t.html
    Publisher(min_cell_count=5, show=False)  # 5 and above need no reason


def test_table_suppresses_with_margins_and_records_the_ledger():
    pub = Publisher(report="01_cohort", show=False)
    df = pd.DataFrame({"site": ["A", "B", "C", "All"], "n": [1, 11, 40, 52]})
    t = pub.table(df, caption="Patients by site", count_cols=["n"], total_row="All", name="sites")
    assert t.table["n"].tolist() == ["<11", "11", "*", "52"]
    led = pub.ledger
    assert set(led["status"]) == {"shown", "primary", "secondary"}
    assert led.loc[led["status"] != "shown", "value"].isna().all()
    assert pub.audit()["is_protected"].all()
    assert t.number == 1 and "Table 1. Patients by site" in t.html
    assert "Counts from 1 to 10 are shown as &lt;11" in t.html or "Counts from 1 to 10 are shown as <11" in t.html


def test_table_html_is_a_real_table_signed_and_verifiable():
    pub = Publisher(show=False)
    t = pub.table(pd.DataFrame({"group": ["x", "y"], "n": [30, 40]}), caption="c", count_cols=["n"],
                  footnotes=["N = 70 episodes."])
    assert "<table" in t.html and "N = 70 episodes." in t.html
    assert parse_published(t.html, t.plain) is not None
    assert parse_published(t.html.replace(">30<", ">31<"), t.plain) is None
    assert parse_published(t.html, t.plain + " ") is None


def test_percentages_of_hidden_counts_are_hidden():
    pub = Publisher(show=False)
    df = pd.DataFrame({"level": ["opioid", "alcohol", "other", "All"], "n": [5, 60, 35, 100],
                       "pct": [5.0, 60.0, 35.0, 100.0]})
    t = pub.table(df, caption="Substance", count_cols=["n"], pct_cols={"pct": "n"}, total_row="All")
    hidden_rows = [i for i, v in enumerate(t.table["n"]) if v in ("<11", "*")]
    assert hidden_rows and all(t.table["pct"].iloc[i] == "*" for i in hidden_rows)
    assert pub.audit()["is_protected"].all()


def test_a_percentage_never_reveals_a_hidden_count_through_a_published_denominator():
    pub = Publisher(show=False)
    n = pub.count(3571, label="episodes", key="n_episodes")
    deaths = pub.count(7, label="deaths", key="n_deaths")
    assert str(n) == "3,571" and str(deaths) == "<11"
    pct = pub.percent(7, 3571, label="death", key="n_deaths", denominator_key="n_episodes")
    assert str(pct) == "*"
    ok = pub.percent(450, 3571, label="relapse", denominator_key="n_episodes")
    assert str(ok) == "12.6%"
    assert pub.audit()["is_protected"].all()


def test_counts_across_tables_and_reports_cannot_be_differenced(tmp_path):
    first = Publisher(report="00_cohort", out_dir=tmp_path, show=False)
    first.count(3571, label="input episodes", key="n_episodes_input")
    second = Publisher(report="01_relapse", out_dir=tmp_path, show=False)
    att = pd.DataFrame({"step": ["analysed", "excluded", "input"], "episodes": [3569, 2, 3571]})
    t = second.table(att, caption="Attrition", count_cols=["episodes"], total_row="input",
                     keys={("input", "episodes"): "n_episodes_input"})
    assert t.table["episodes"].tolist()[1] == "<11"
    assert t.table["episodes"].tolist()[0] == "*"  # 3,569 next to 3,571 would give the 2 away
    res = audit_ledgers(sorted((tmp_path / "ledgers").glob("*.json")))
    assert res["is_protected"].all()
    saved = json.loads((tmp_path / "ledgers" / "01_relapse.json").read_text())
    assert all(e["value"] is None for e in saved["entries"] if e["status"] != "shown")


def test_text_takes_channel_numbers_only():
    pub = Publisher(show=False)
    with pytest.raises(PrivacyViolationError, match="raw numbers"):
        pub.text("{n} patients", n=3000)
    p = pub.text("Of {n} patients in {site}, {k} died; HR {hr}.", n=pub.count(3000, label="n"), site="Site A",
                 k=pub.count(4, label="deaths"), hr=pub.estimate(0.71, 0.55, 0.92))
    assert p.plain == "Of 3,000 patients in Site A, <11 died; HR 0.71 (0.55 to 0.92)."
    assert "&lt;11" in p.html
    with pytest.raises(DataValidationError, match="whole number"):
        pub.count(2.5, label="x")


def test_files_csv_docx_svg_png(tmp_path):
    import docx
    from PIL import Image

    pub = Publisher(out_dir=tmp_path, report="03_relapse", show=False)
    df = pd.DataFrame({"Characteristic": ["Episodes", "Male", "Female"], "Site A": [120, 115, 5],
                       "Site B": [80, 40, 40]})
    t = pub.table(df, caption="Baseline", count_cols=["Site A", "Site B"], total_row="Episodes",
                  name="table_one", docx=True)
    csv = (tmp_path / "tables" / "table_one.csv").read_text()
    assert "<11" in csv and ",5," not in csv and "115" not in csv  # 115 = 120 - 5 is hidden too
    doc = docx.Document(tmp_path / "tables" / "table_one.docx")
    assert doc.paragraphs[0].text == "Table 1. Baseline"
    assert [c.text for c in doc.tables[0].rows[2].cells][1] in ("<11", "*")
    fig, ax = plt.subplots(figsize=(3.5, 2.5))
    ax.plot([0, 30, 90], [1, 0.8, 0.6])
    ax.set_title("Kaplan-Meier")
    f = pub.figure(fig, caption="Time to relapse", name="km")
    assert not plt.fignum_exists(fig.number)  # closed: the backend cannot show it outside the channel
    assert "<svg" in f.html and "Figure 1. Time to relapse" in f.html and "Kaplan-Meier" in f.html
    with Image.open(tmp_path / "figures" / "km.png") as im:
        assert round(im.info["dpi"][0]) == 300
    assert (tmp_path / "figures" / "km.svg").read_text().lstrip().startswith("<?xml")
    assert {p.name for p in t.files} == {"table_one.csv", "table_one.docx"}
    assert not [p for p in tmp_path.rglob("*") if ".staging-" in p.name or p.name.endswith(".tmp")]


def test_names_are_safe_and_republishing_a_name_replaces_it():
    pub = Publisher(show=False)
    pub.table(pd.DataFrame({"g": ["a", "b", "All"], "n": [3, 40, 43]}), caption="a", name="t", total_row="All")
    pub.table(pd.DataFrame({"n": [50]}), caption="other", name="u")
    n_entries = len(pub.ledger)
    again = pub.table(pd.DataFrame({"g": ["a", "b", "All"], "n": [3, 40, 43]}), caption="a", name="t",
                      total_row="All")  # a notebook cell run twice
    assert again.number == 1 and len(pub.ledger) == n_entries
    assert [p.name for p in pub.published] == ["u", "t"]
    assert pub.audit()["is_protected"].all()
    with pytest.raises(DataValidationError, match="letters"):
        pub.table(pd.DataFrame({"n": [40]}), caption="b", name="../etc")
    fresh = Publisher(show=False)
    fresh.table(pd.DataFrame({"n": [40]}), caption="c", name="table_2")
    with pytest.raises(DataValidationError, match="already used"):
        fresh.table(pd.DataFrame({"n": [40]}), caption="d")  # its default name would be table_2 too


def test_estimates_table_formats_numbers_and_labels():
    pub = Publisher(show=False)
    est = pd.DataFrame({"Term": ["program[T.Site B]"], "HR": [0.7123], "p": [0.0004]})
    t = pub.table(est, caption="Cox model", kind="estimates", labels={"program[T.Site B]": "Site B vs A"})
    assert t.table.values.tolist() == [["Site B vs A", "0.71", "<0.001"]]
    assert "program[T" not in t.html


@pytest.mark.parametrize("seed", [1, 2])
def test_random_tables_through_the_channel_are_protected(seed):
    rng = np.random.default_rng(seed)
    body = rng.choice([0, 1, 4, 9, 12, 30, 80], size=(3, 2))
    df = pd.DataFrame(body, columns=["a", "b"]).assign(total=lambda d: d["a"] + d["b"])
    df.loc[len(df)] = df.sum()
    df.insert(0, "row", ["r0", "r1", "r2", "All"])
    pub = Publisher(show=False)
    t = pub.table(df, caption="x", count_cols=["a", "b", "total"], total_col="total", total_row="All")
    shown = t.table[["a", "b", "total"]].to_numpy()
    for v in shown.ravel():
        assert v in ("<11", "*") or int(v.replace(",", "")) == 0 or int(v.replace(",", "")) >= 11
    assert pub.audit()["is_protected"].all()


# ------------------------------------------------------------------ Kaplan-Meier with rounded counts
def _check_km_rounded(golden: dict, uis_path) -> None:
    from iop_research.survival.km import fit_km

    uis = pd.read_csv(uis_path).dropna(subset=["TIME", "CENSOR"])
    pub = Publisher(report="03_relapse", show=False)
    km = pub.km(fit_km(uis, duration_col="TIME", event_col="CENSOR", group_col="TREAT"))
    assert "rounded" in km.conventions["disclosure"] and km.method == "Kaplan-Meier (rounded counts)"
    for g, r in golden["strata"].items():
        t = km.tidy[km.tidy["group"].astype(str) == g]
        np.testing.assert_array_equal(t["time"].to_numpy(), r["time"])
        np.testing.assert_array_equal(t["n_at_risk"].to_numpy(), r["n_risk"])
        np.testing.assert_array_equal(t["n_events"].to_numpy(), r["n_event"])
        np.testing.assert_allclose(t["survival"].to_numpy(), r["surv"], rtol=1e-6)
        np.testing.assert_allclose(t["conf_low"].to_numpy(), r["lower"], rtol=1e-4)
        np.testing.assert_allclose(t["conf_high"].to_numpy(), r["upper"], rtol=1e-4)
        med = km.medians[km.medians["group"].astype(str) == g]["median"].iloc[0]
        assert (np.isnan(med) if r["median"] is None else med == r["median"])
    assert pub.audit(raise_on_failure=False)["is_protected"].all()


def test_km_rounded_counts_match_r(uis_path):
    """R (tests/r/km_rounded.R): ``survfit(Surv(TIME, CENSOR) ~ TREAT, data = uis)``, cumulative
    counts rounded with OpenSAFELY's ``roundmid_any(x, 11)``, S = cumprod(1 - d/n), Greenwood, log CI."""
    from conftest import load_golden

    _check_km_rounded(load_golden("km_rounded"), uis_path)


def test_km_rounded_counts_live_r(tmp_path, uis_path):
    from conftest import RSCRIPT, run_r_script

    if RSCRIPT is None:
        pytest.skip("Rscript not installed (CI installs it)")
    _check_km_rounded(run_r_script("km_rounded", tmp_path / "km_rounded.json"), uis_path)


def test_km_publishes_no_count_the_rounded_counts_do_not_show():
    from iop_research.privacy.rounding import rounding_bounds
    from iop_research.survival.km import fit_km

    rng = np.random.default_rng(4)
    f = pd.DataFrame({"time": np.round(rng.exponential(200, 300)) + 1, "event": rng.uniform(size=300) < 0.6,
                      "site": rng.choice(["A", "B"], 300)})
    raw = fit_km(f, duration_col="time", event_col="event", group_col="site", times=[30, 90, 180])
    pub = Publisher(report="r", show=False)
    km = pub.km(raw)
    # every published number at risk is the rounded total minus rounded exits: a step of a multiple of 11 after the first
    for g, t in km.tidy.groupby("group"):
        steps = -np.diff(np.r_[t["n_at_risk"].to_numpy(), 0])
        exits = (t["n_events"] + t["n_censored"]).to_numpy()
        np.testing.assert_array_equal(steps, exits)
        cum = np.cumsum(t["n_events"].to_numpy())
        assert set(cum[cum > 0] % K) == {K - K // 2}  # 6, 17, 28, ...: rounded cumulative relapses
    assert list(km.at_times["time"].unique()) == [30.0, 90.0, 180.0]
    led = pub.ledger
    assert set(led.loc[led["table"] == "km_counts", "status"]) == {"unpublished", "sensitive"}
    assert led["value"].isna().all()
    res = pub.audit(raise_on_failure=False)
    assert len(res) == 2 * 4 * 3 and res["is_protected"].all()  # groups x days (0 and 3) x counts
    assert rounding_bounds(6, K) == (1, K)
    with pytest.raises(DataValidationError):
        pub.km(raw.tidy)
