"""Tests of small-cell suppression (iop_research.privacy)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import load_golden, requires_r, run_r_script
from iop_research.exceptions import DataValidationError, PrivacyViolationError
from iop_research.privacy import (
    DEFAULT_MIN_CELL_COUNT,
    audit_table,
    SuppressionMask,
    check_no_small_cells,
    format_suppressed,
    suppress_risk_table,
    suppress_small_cells,
    suppression_mask,
)

K = DEFAULT_MIN_CELL_COUNT


def _unknown(out: pd.DataFrame, cols) -> np.ndarray:
    return out[list(cols)].isna().to_numpy()


def test_default_threshold_is_cms_11():
    assert DEFAULT_MIN_CELL_COUNT == 11


def test_primary_and_complementary_by_hand():
    t = pd.DataFrame({"site": ["A", "B", "C"], "completed": [5, 40, 30], "dropped": [20, 25, 12]})
    before = t.copy()
    out = suppress_small_cells(t)
    pd.testing.assert_frame_equal(t, before)  # input not mutated
    # hiding row C (the cheaper rectangle) would leave dropped[C] in 8..17, i.e. 11..17 for a reader who
    # knows "*" is 0 or >= 11, and so completed[A] in 4..10: row B is hidden instead
    assert out["completed"].isna().tolist() == [True, True, False]
    assert out["dropped"].isna().tolist() == [True, True, False]
    assert out.loc[2, "completed"] == 30 and out.loc[2, "dropped"] == 12
    m = out.attrs["suppressed"]
    assert isinstance(m, SuppressionMask)
    assert m.primary["completed"].tolist() == [True, False, False]
    assert m.n_hidden == 4
    assert m.any() and m["completed"].tolist() == [True, True, False]
    assert m.shape == t.shape and list(m.columns) == list(t.columns)
    assert m.to_numpy().sum() == 4 and m.to_frame().equals(suppression_mask(out))
    assert format_suppressed(out)["completed"].tolist() == ["<11", "*", "30"]
    assert audit_table(out)["is_protected"].all()
    assert str(out["completed"].dtype) == "Int64"


def test_zero_is_shown_and_not_a_small_cell():
    t = pd.DataFrame({"a": [0, 50, 60], "b": [30, 0, 44]})
    out = suppress_small_cells(t)
    assert not suppression_mask(out).to_numpy().any()
    assert out["a"].tolist() == [0, 50, 60]


def test_without_complementary_only_small_cells_hidden():
    t = pd.DataFrame({"a": [3, 50, 60], "b": [30, 10, 44]})
    out = suppress_small_cells(t, complementary=False)
    assert out.isna().to_numpy().sum() == 2
    assert out["a"].isna().tolist() == [True, False, False]
    assert out["b"].isna().tolist() == [False, True, False]


def test_min_cell_count_is_respected():
    t = pd.DataFrame({"n": [5, 100, 200]})
    assert suppress_small_cells(t, min_cell_count=5, complementary=False)["n"].notna().all()
    assert suppress_small_cells(t, min_cell_count=6, complementary=False)["n"].isna().tolist() == [True, False, False]
    out = suppress_small_cells(t, min_cell_count=6)
    assert format_suppressed(out)["n"].tolist()[0] == "<6"


def test_percentages_of_hidden_counts_are_hidden():
    t = pd.DataFrame({"level": ["x", "y", "z"], "n": [3, 50, 60], "pct": [2.7, 44.2, 53.1]})
    out = suppress_small_cells(t, pct_cols={"pct": "n"})
    assert out["pct"].isna().tolist() == [True, True, False]
    assert out.loc[2, "pct"] == pytest.approx(53.1)
    assert format_suppressed(out)["pct"].tolist() == ["*", "*", "53.1"]


def test_explicit_totals_small_total_hidden_and_totals_protected():
    t = pd.DataFrame(
        {"a": [4, 30, 34], "b": [2, 50, 52], "total": [6, 80, 86]}, index=["r1", "r2", "total"]
    )
    out = suppress_small_cells(t, row_total_col="total", col_total_row="total")
    # the row total 6 is itself small
    assert pd.isna(out.loc["r1", "total"])
    assert out.attrs["suppressed"].primary.loc["r1", "total"]
    # every line (row incl. its total, column incl. its total) has 0 or >= 2 unknowns
    u = out[["a", "b", "total"]].isna().to_numpy()
    assert all(u[i].sum() != 1 for i in range(3))
    assert all(u[:, j].sum() != 1 for j in range(3))


def test_known_totals_none_means_no_complementary_lines():
    t = pd.DataFrame({"a": [3, 50, 60], "b": [30, 20, 44]})
    out = suppress_small_cells(t, known_totals="none")
    assert out.isna().to_numpy().sum() == 1


def test_concat_of_suppressed_tables_works():
    a = suppress_small_cells(pd.DataFrame({"n": [3, 50, 60]}))
    b = suppress_small_cells(pd.DataFrame({"n": [3, 50, 60]}))
    both = pd.concat([a, b.copy()])
    assert len(both) == 6
    assert a.attrs["suppressed"] == b.attrs["suppressed"]


def test_non_count_values_are_rejected_with_rows_named():
    t = pd.DataFrame({"n": [3.5, 50, -1]}, index=["p", "q", "r"])
    with pytest.raises(DataValidationError, match=r"'n'.*p, r"):
        suppress_small_cells(t, count_cols=["n"])
    with pytest.raises(DataValidationError, match="not found"):
        suppress_small_cells(t, count_cols=["missing"])
    with pytest.raises(ValueError, match="min_cell_count"):
        suppress_small_cells(pd.DataFrame({"n": [1]}), min_cell_count=0)


def test_missing_counts_stay_missing_and_are_not_published():
    t = pd.DataFrame({"a": pd.array([None, 50, 60], dtype="Int64"), "b": [3, 20, 44]})
    out = suppress_small_cells(t)
    assert pd.isna(out.loc[0, "a"])
    assert not suppression_mask(out).loc[0, "a"]  # not hidden by us
    assert format_suppressed(out, missing="NA")["a"].tolist()[0] == "NA"
    # a line with a missing cell has no known total; column b's does, so b[0] = 3 is protected within b:
    # by hiding another cell of b or by withholding b's total (the ledger says which)
    led = out.attrs["suppressed"].ledger.entries
    b_total_withheld = (led["table"] == "(known total)") & (led["status"] != "shown")
    assert pd.isna(out.loc[0, "b"]) and (out["b"].isna().sum() >= 2 or b_total_withheld.any())
    assert audit_table(out)["is_protected"].all()


def test_check_no_small_cells_names_cells_not_values():
    t = pd.DataFrame({"n": [4, 20, 7], "m": [11, 12, 13]}, index=["opioids", "alcohol", "cannabis"])
    with pytest.raises(PrivacyViolationError) as exc:
        check_no_small_cells(t, name="Table 2")
    msg = str(exc.value)
    assert "Table 2" in msg and "'n'" in msg and "opioids, cannabis" in msg and "2 count(s)" in msg
    assert "'m'" not in msg and " 4" not in msg
    check_no_small_cells(suppress_small_cells(t))
    check_no_small_cells(format_suppressed(suppress_small_cells(t)))


def test_check_no_small_cells_on_formatted_strings():
    s = pd.DataFrame({"g1": ["12 (4.0)", "<11", "0 (0.0)"], "g2": ["9 (3.1)", "40 (20.0)", "*"]})
    with pytest.raises(PrivacyViolationError, match="'g2'"):
        check_no_small_cells(s)
    check_no_small_cells(s[["g1"]])


def test_suppress_risk_table_by_hand():
    km = pd.DataFrame(
        {
            "group": ["a"] * 3 + ["b"] * 2,
            "time": [5.0, 10.0, 20.0, 3.0, 30.0],
            "n_at_risk": [40, 30, 8, 100, 60],
            "n_events": [10, 2, 8, 40, 5],
            "n_censored": [0, 20, 0, 0, 55],
        }
    )
    rt = suppress_risk_table(km, times=[0, 10, 25])
    assert list(rt.columns) == ["group", "time", "n_at_risk", "n_events"]
    a = rt[rt["group"] == "a"]
    assert a["n_at_risk"].tolist()[:2] == [40, 30]
    assert a["n_at_risk"].tolist()[2] == 0  # nobody left after day 20
    assert a["n_events"].tolist() == [0, 12, 20]
    b = rt[rt["group"] == "b"]
    assert b["n_at_risk"].tolist() == [100, 60, 60]
    assert b["n_events"].tolist() == [0, 40, 40]
    rt2 = suppress_risk_table(km, times=[20])
    assert rt2["n_at_risk"].isna().tolist() == [True, False]
    assert format_suppressed(rt2)["n_at_risk"].tolist() == ["<11", "60"]


def test_suppress_risk_table_complementary_when_all_columns_shown():
    km = pd.DataFrame(
        {"group": ["a"] * 2, "time": [5.0, 10.0], "n_at_risk": [100, 60], "n_events": [3, 30], "n_censored": [37, 30]}
    )
    rt = suppress_risk_table(km, times=[6], include=("n_at_risk", "n_events", "n_censored"))
    # 3 events by day 6 are hidden; at-risk + events + censored = 100 so one more is hidden
    row = rt.iloc[0]
    assert pd.isna(row["n_events"])
    assert int(pd.isna(row["n_at_risk"])) + int(pd.isna(row["n_censored"])) == 1


def test_suppress_risk_table_bad_columns():
    with pytest.raises(DataValidationError, match="lacks columns"):
        suppress_risk_table(pd.DataFrame({"time": [1.0]}), times=[0])


# ---------------------------------------------------------------- properties

count_values = st.one_of(st.integers(0, 15), st.integers(0, 400))


def _assert_safe(out: pd.DataFrame, mat: np.ndarray, cols, k: int) -> None:
    shown = out[cols].to_numpy(dtype=float, na_value=np.nan)
    # never shows a count in 1..k-1, shown cells are the input values, every small cell is hidden
    assert not np.any((shown >= 1) & (shown < k))
    keep = ~np.isnan(shown)
    assert np.array_equal(shown[keep], mat[keep].astype(float))
    assert np.all(np.isnan(shown[(mat >= 1) & (mat < k)]))
    # and no hidden small count can be narrowed by a reader (MILP audit) from the table and the totals
    # that may be published with it
    assert audit_table(out)["is_protected"].all()


@settings(max_examples=15, deadline=None)
@given(
    arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 4)), elements=count_values),
    st.integers(2, 15),
)
def test_property_no_small_cell_and_no_narrowable_cell(mat, k):
    cols = [f"c{j}" for j in range(mat.shape[1])]
    out = suppress_small_cells(pd.DataFrame(mat, columns=cols), min_cell_count=k)
    _assert_safe(out, mat, cols, k)


def test_known_totals_are_protected_too_and_the_ledger_says_which_to_withhold():
    out = suppress_small_cells(pd.DataFrame({"a": [2], "b": [2]}), min_cell_count=3)
    assert out.isna().all().all()
    led = out.attrs["suppressed"].ledger.entries
    assert led.loc[led["table"] == "(known total)", "status"].tolist() == ["secondary"]  # do not show the 4
    assert audit_table(out)["is_protected"].all()
    # a crosstab whose small column total would follow from the others (death 0.2% of the demo)
    t = pd.DataFrame({"completed": [444, 324, 249, 247], "death": [3, 2, 2, 0], "other": [42, 42, 29, 29]},
                     index=["A", "B", "C", "D"])
    out = suppress_small_cells(t)
    res = audit_table(out)
    assert res["is_protected"].all()
    shown = out.notna().to_numpy().sum()
    assert shown >= 4  # not everything hidden
    led = out.attrs["suppressed"].ledger.entries
    assert (led.loc[led["table"] == "(known total)", "status"] != "shown").any()


@settings(max_examples=12, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 3)), elements=count_values))
def test_property_with_explicit_margins(mat):
    r, c = mat.shape
    full = np.zeros((r + 1, c + 1), dtype=np.int64)
    full[:r, :c] = mat
    full[:r, c] = mat.sum(axis=1)
    full[r, :c] = mat.sum(axis=0)
    full[r, c] = mat.sum()
    cols = [f"c{j}" for j in range(c)] + ["total"]
    t = pd.DataFrame(full, columns=cols, index=[f"r{i}" for i in range(r)] + ["total"])
    out = suppress_small_cells(t, row_total_col="total", col_total_row="total")
    shown = out[cols].to_numpy(dtype=float, na_value=np.nan)
    assert not np.any((shown >= 1) & (shown < K))
    # explicit margins can always be hidden, so every primary cell is protected
    assert audit_table(out)["is_protected"].all()
    u = np.isnan(shown)
    assert not np.any(u.sum(axis=1) == 1) and not np.any(u.sum(axis=0) == 1)


# ---------------------------------------------------------------- against R survival


def _risk_inputs(golden: dict):
    rows = []
    for g, d in golden["strata"].items():
        for t, r, e, c in zip(d["time"], d["n_risk"], d["n_event"], d["n_censor"]):
            rows.append({"group": g, "time": t, "n_at_risk": r, "n_events": e, "n_censored": c})
    return pd.DataFrame(rows)


def _check_risk_against_r(golden: dict) -> None:
    km = _risk_inputs(golden)
    times = golden["strata"]["0"]["at_times"]["time"]
    rt = suppress_risk_table(km, times=times, min_cell_count=1, include=("n_at_risk", "n_events", "n_censored"))
    for g, d in golden["strata"].items():
        mine = rt[rt["group"] == g]
        assert mine["time"].tolist() == d["at_times"]["time"]
        assert mine["n_at_risk"].astype(int).tolist() == d["at_times"]["n_risk"]
        assert mine["n_events"].astype(int).tolist() == d["at_times"]["cum_n_event"]
        assert mine["n_censored"].astype(int).tolist() == d["at_times"]["cum_n_censor"]


def test_risk_table_matches_r_summary_survfit():
    """Numbers at risk and cumulative events/censorings equal R's.

    R: ``Rscript --vanilla tests/r/risk_table.R <datasets_dir> <out_json>``, i.e.
    ``summary(survfit(Surv(TIME, CENSOR) ~ TREAT, data = uis), times = ..., extend = TRUE)``
    with ``cumsum`` of ``n.event`` and ``n.censor``.
    """
    golden = load_golden("risk_table")
    _check_risk_against_r(golden)
    # and with suppression: R's 4 and 2 at risk on day 700 print as <11
    rt = suppress_risk_table(_risk_inputs(golden), times=[700])
    assert format_suppressed(rt)["n_at_risk"].tolist() == ["<11", "<11"]


@requires_r
def test_risk_table_live_r(tmp_path, datasets_dir):
    """Re-run ``Rscript --vanilla tests/r/risk_table.R <datasets_dir> <out_json>`` and compare."""
    live = run_r_script("risk_table", tmp_path / "risk_table.json")
    committed = load_golden("risk_table")
    assert live["strata"] == committed["strata"]
    _check_risk_against_r(live)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), min_size=1, max_size=6), st.integers(0, 500))
def test_property_attrition_never_leaks(steps, extra):
    from iop_research.present.tables import suppress_attrition

    total = sum(r for r, _ in steps) + extra + 1
    pat_total = sum(p for _, p in steps) + extra + 1
    removed = [0] + [r for r, _ in steps]
    premoved = [0] + [p for _, p in steps]
    a = pd.DataFrame(
        {
            "step": [f"s{i}" for i in range(len(removed))],
            "rows_removed": removed,
            "patients_removed": premoved,
            "rows_remaining": list(total - np.cumsum(removed)),
            "patients_remaining": list(pat_total - np.cumsum(premoved)),
        }
    )
    s = suppress_attrition(a)
    vals = s[["rows_removed", "patients_removed", "rows_remaining", "patients_remaining"]].to_numpy(dtype=float, na_value=np.nan)
    assert not np.any((vals >= 1) & (vals < K))
    for rem, left in [("rows_removed", "rows_remaining"), ("patients_removed", "patients_remaining")]:
        for i in range(1, len(s)):
            unknown = int(pd.isna(s.loc[i, rem])) + int(pd.isna(s.loc[i, left])) + int(pd.isna(s.loc[i - 1, left]))
            assert unknown != 1


def test_protect_lines_audits_hand_built_tables_like_attrition():
    from iop_research.privacy import protect_lines
    from iop_research.privacy.audit import audit_ledger

    # attrition: removed_i + remaining_i = remaining_{i-1}
    removed = [0, 2, 40, 7]
    remaining = [3571, 3569, 3529, 3522]
    vals = np.array([v for pair in zip(removed, remaining) for v in pair], dtype=float)
    idx = np.arange(vals.size).reshape(4, 2)
    lines = [np.array([idx[i, 0], idx[i, 1], idx[i - 1, 1]]) for i in range(1, 4)]
    is_total = np.zeros(vals.size, bool)
    is_total[idx[:, 1]] = True
    locked = np.zeros(vals.size, bool)
    locked[idx[0, 1]] = True  # the input count is published elsewhere
    hidden, primary, led = protect_lines(vals, lines, is_total=is_total, locked=locked)
    assert primary[idx[1, 0]] and primary[idx[3, 0]] and not hidden[idx[0, 1]]
    assert not ((vals >= 1) & (vals < K) & ~hidden).any()
    assert audit_ledger(led)["is_protected"].all()


# ------------------------------------------------------------------ rounded survival counts
def test_round_mid_and_bounds_invert_each_other():
    from iop_research.privacy.rounding import round_mid, rounding_bounds

    c = np.arange(0, 200)
    for m in (5, 6, 11, 20):
        r = round_mid(c, m)
        lo_hi = np.array([rounding_bounds(int(v), m) for v in r])
        assert ((lo_hi[:, 0] <= c) & (c <= lo_hi[:, 1])).all()
        assert ((lo_hi[:, 1] - lo_hi[:, 0] == m - 1) | (c == 0)).all()
    with pytest.raises(DataValidationError):
        round_mid([1.5], 11)
    with pytest.raises(ValueError):
        round_mid([1], 0)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=K, max_size=40), st.lists(st.integers(1, 400), min_size=K, max_size=40),
       st.lists(st.integers(1, 400), min_size=1, max_size=4, unique=True))
def test_property_rounded_curve_gives_no_small_count_between_published_days(event_days, censor_days, days):
    """Whatever the data, relapses and censorings between any two published days of a rounded curve
    can be narrowed no further than 0..10, 1..21 or above 11 (the audit of Publisher.km's ledger),
    even with the exact totals published next to the curve (the rounding unit grows when needed).

    Totals of relapses and of censorings are at least 11: a small total published as "<11" next to
    the curve already bounds every count inside it, which the value-free rule for sensitive counts
    does not discount (the audit then fails and the report is not built)."""
    from iop_research.present.publish import Publisher
    from iop_research.survival.km import fit_km

    f = pd.DataFrame({"time": [float(t) for t in event_days + censor_days],
                      "event": [1] * len(event_days) + [0] * len(censor_days)})
    pub = Publisher(report="r", show=False)
    pub.count(len(f), label="n")
    pub.count(int(f["event"].sum()), label="events")
    pub.km(fit_km(f, duration_col="time", event_col="event", times=sorted(days)), n_key="r/text/n",
           events_key="r/text/events")
    res = pub.audit(raise_on_failure=False)
    km = res[res["table"] == "km_counts"]
    assert len(km) == 3 * (len(days) + 1)
    assert res["is_protected"].all(), res.loc[~res["is_protected"]].to_string()
