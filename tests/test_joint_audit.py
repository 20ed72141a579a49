"""Joint audit of everything the study reports publish (issue 13, "Done when").

The study-report templates (every question of the study file) are run (in process, their code cells in order
with the ``parameters`` cell overridden, as papermill would) on the bundled
demo cohort and on a simulated 250-patient cohort, each report publishing
through its channel into one folder, so that every report is suppressed
against the ledgers of the reports before it. Then every ledger is audited
together (:func:`iop_research.privacy.audit.audit_ledgers`, HiGHS MILP): no
suppressed count, and no sensitive count (relapses and exits between the days
of a rounded risk table), can be narrowed below the protection interval using
everything the reports publish together.

The audit must be able to fail: a planted leak (a published count that
differences out a suppressed Table 1 cell) is caught, and the channel itself
hides that count when it publishes it knowing the study's ledgers. The
numbers-at-risk attack (at risk 168 -> 167 and 99.4% relapse-free: one
relapse) is mounted on the exact counts, which the auditor pins to 1, and on
the rounded curve that :meth:`Publisher.km` publishes, which it cannot narrow.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from iop_research.data.synth import simulate_cohort  # noqa: E402
from iop_research.present.publish import Publisher  # noqa: E402
from iop_research.privacy import suppress_risk_table  # noqa: E402
from iop_research.privacy.audit import Ledger, audit_ledger, audit_ledgers  # noqa: E402
from iop_research.privacy.rounding import round_mid  # noqa: E402
from iop_research.reports import study as st  # noqa: E402
from template_runner import execute_template  # noqa: E402
from iop_research.reports.config import QUESTIONS  # noqa: E402
from iop_research.survival.km import fit_km  # noqa: E402

K = 11


def _run_template(name: str, data_path, out_dir: Path) -> None:
    """Execute a study-report template in process, publishing into ``out_dir``."""
    execute_template(name, {}, data_path, out_dir)


class Built:
    def __init__(self, data_path, out_dir: Path):
        self.data_path = data_path
        self.out_dir = out_dir
        self.ledgers = sorted((out_dir / "ledgers").glob("*.json"))
        self.audit = audit_ledgers(self.ledgers)


def _build(tmp_path_factory, which: str) -> Built:
    root = tmp_path_factory.mktemp(f"joint_{which}")
    data_path = None if which == "demo" else simulate_cohort(250, seed=13).write(root / "data", format="parquet")
    out = root / "reports"
    for name in QUESTIONS.values():
        _run_template(name, data_path, out)
    return Built(data_path, out)


@pytest.fixture(scope="module", params=["demo", "sim250"])
def built(request, tmp_path_factory):
    return _build(tmp_path_factory, request.param)


# ------------------------------------------------------------------ everything together
@pytest.mark.slow
def test_every_report_wrote_a_ledger_and_all_counts_are_protected_together(built):
    assert sorted(p.stem for p in built.ledgers) == sorted(QUESTIONS.values())
    res = built.audit
    assert len(res) > 0
    # the study reports hide small counts (Table 1, attrition) and publish rounded KM counts
    assert res["key"].str.startswith("01_cohort/table_1/").any()
    assert res["key"].str.contains("/km_counts/").any()
    bad = res.loc[~res["is_protected"], ["key", "lower", "upper"]]
    assert bad.empty, f"narrowed below the protection interval:\n{bad.to_string()}"
    prim = res[~res["key"].str.contains("/km_counts/")]
    full = (prim["lower"] <= 1) & (prim["upper"] >= K - 1)
    # Tables with a row total of two parts (07_screens, 08_programmes): when the total and both parts show "<11",
    # the markers alone tell that each part is at least 1, so the total is at least 2 and a part at most 9. Only
    # there may a count's range be narrower than 1..10, and never narrower than the markers force (the auditor's
    # required range).
    forced = prim[~full]
    assert forced["table"].isin(["abstinence_final_weeks", "programme_counts", "screens_by_week"]).all(), \
        forced[["key", "lower", "upper"]].to_string()
    assert ((forced["lower"] <= forced["required_lower"]) & (forced["upper"] >= forced["required_upper"])).all()
    sens = res[res["key"].str.contains("/km_counts/")]
    assert ((sens["upper"] == 0) | (sens["lower"] >= K) | ((sens["lower"] <= 1) & (sens["upper"] >= K - 1))).all()


def _table_one_primary(built: Built):
    """A primary Table 1 cell with its true value, and its column's total (key and value)."""
    sd = st.prepare_study({}, data_path=built.data_path)
    counts, _, groups, _ = st.table_one_frames(sd)
    res = built.audit
    cells = res[(res["table"] == "table_1") & res["key"].str.startswith("01_cohort/table_1/")]
    assert len(cells), "no suppressed Table 1 cell to plant a leak against"
    cell = cells.iloc[0]
    value = int(counts.loc[counts["Characteristic"] == cell["row"], cell["column"]].iloc[0])
    total = int(counts.loc[counts["Characteristic"] == "Episodes", cell["column"]].iloc[0])
    total_key = f"01_cohort/table_1/0:Episodes/{cell['column']}"
    assert 1 <= value < K
    return cell["key"], value, total_key, total


@pytest.mark.slow
def test_a_planted_total_that_differences_out_a_suppressed_cell_is_caught(built):
    key, value, total_key, total = _table_one_primary(built)
    leak = Ledger(min_cell_count=K)
    leak.add_count("99_leak/text/others", value=total - value, status="shown", report="99_leak", table="text")
    leak.add_sum(["99_leak/text/others", key], total_key, source="99_leak: everyone but one category")
    res = audit_ledgers([*built.ledgers, leak])
    row = res.set_index("key").loc[key]
    assert not row["is_protected"] and row["lower"] == row["upper"] == value
    failing = res.loc[~res["is_protected"], "key"]
    assert failing.str.startswith("01_cohort/table_1/").all()  # the leak and the Table 1 cells it unravels


@pytest.mark.slow
def test_the_channel_hides_that_total_when_it_knows_the_study_ledgers(built, tmp_path):
    key, value, total_key, total = _table_one_primary(built)
    shutil.copytree(built.out_dir / "ledgers", tmp_path / "ledgers")
    pub = Publisher(out_dir=tmp_path, report="99_leak", show=False)
    pub.relate(["99_leak/text/others", key], total_key, source="everyone but one category")
    text = pub.count(total - value, key="99_leak/text/others")
    assert str(text) == "*"
    assert audit_ledgers(sorted((tmp_path / "ledgers").glob("*.json")))["is_protected"].all()


# ------------------------------------------------------------------ numbers at risk
def _attack_cohort() -> pd.DataFrame:
    """168 episodes, one relapse on day 30, nobody else leaves the risk set before day 100."""
    rng = np.random.default_rng(20261207)
    n = 168
    time = np.r_[30.0, np.round(rng.uniform(100, 400, n - 1))]
    event = np.r_[1, (rng.uniform(size=n - 1) < 0.4).astype(int)]
    return pd.DataFrame({"time": time, "event": event})


def test_numbers_at_risk_attack_on_exact_counts_pins_one_relapse():
    """The exact risk table and KM estimate (what the templates published before) give away 1."""
    f = _attack_cohort()
    km = fit_km(f, duration_col="time", event_col="event", times=[90])
    rt = suppress_risk_table(km.tidy, times=[0, 90], min_cell_count=K, include=("n_at_risk",))
    at0, at90 = (int(v) for v in rt["n_at_risk"])
    assert (at0, at90) == (168, 167)
    surv = round(100 * float(km.at_times["survival"].iloc[0]), 1)
    assert surv == 99.4
    led = Ledger(min_cell_count=K)
    led.add_count("at_risk/0", value=at0, status="shown")
    led.add_count("at_risk/90", value=at90, status="shown")
    led.add_count("exits/0-90", value=None, status="sensitive")
    led.add_count("relapses/0-90", value=None, status="sensitive")
    led.add_sum(["at_risk/90", "exits/0-90"], "at_risk/0")
    led.add_percentage("relapses/0-90", "at_risk/0", percent=round(100 - surv, 1), digits=1)
    led.add_relation({"exits/0-90": 1.0, "relapses/0-90": -1.0}, lower=0.0, upper=np.inf)
    res = audit_ledger(led).set_index("key")
    assert res.loc["exits/0-90", ["lower", "upper"]].tolist() == [1, 1]
    assert res.loc["relapses/0-90", ["lower", "upper"]].tolist() == [1, 1]
    assert not res["is_protected"].any()


def test_numbers_at_risk_attack_on_the_rounded_curve_narrows_nothing():
    f = _attack_cohort()
    pub = Publisher(report="03_relapse", show=False)
    n_txt = pub.count(len(f), label="episodes followed")
    e_txt = pub.count(int(f["event"].sum()), label="relapses")
    km = pub.km(fit_km(f, duration_col="time", event_col="event", times=[90, 180, 365]), n_key=n_txt,
                events_key=e_txt)
    rt = suppress_risk_table(km.tidy, times=[0, 90], min_cell_count=K, include=("n_at_risk",))
    at0, at90 = (int(v) for v in rt["n_at_risk"])
    assert at0 - at90 == round_mid([1], K)[0] == K - K // 2  # one relapse shows as a rounded step ...
    surv = float(km.at_times["survival"].iloc[0])
    assert surv == pytest.approx(1 - (at0 - at90) / at0)  # ... and the estimate says no more than the counts
    assert km.at_times["n_at_risk"].iloc[0] == at90
    res = pub.audit(raise_on_failure=False).set_index("key")
    row = res.loc["03_relapse/km_counts/all/relapses/0-90"]
    assert row["lower"] <= 1 and row["upper"] >= K - 1 and row["is_protected"]
    assert res.loc["03_relapse/km_counts/all/censored/0-90", ["lower", "upper"]].tolist() == [0, 0]
    assert res["is_protected"].all()
    # the ledger holds the rounded counts' intervals, never a true count
    led = pub.ledger
    assert led.loc[led["table"] == "km_counts", "value"].isna().all()


def test_a_rounding_unit_below_the_threshold_is_caught_by_the_audit():
    f = _attack_cohort()
    pub = Publisher(report="03_relapse", show=False)
    pub.km(fit_km(f, duration_col="time", event_col="event", times=[90]), rounding=3)
    res = pub.audit(raise_on_failure=False).set_index("key")
    assert not res.loc["03_relapse/km_counts/all/relapses/0-90", "is_protected"]
