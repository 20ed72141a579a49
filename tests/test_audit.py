"""Tests of the disclosure auditor and of audited secondary suppression
(iop_research.privacy.audit, iop_research.privacy.secondary).

The reader's knowledge: shown counts, "<k" = 1..k-1, "*" = 0 or >= k, the relations
(margins, attrition arithmetic, percentages with their denominators). A primary count is
protected when that knowledge still allows every value 1..k-1 that the markers alone allow.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from iop_research.exceptions import DataValidationError, PrivacyViolationError
from iop_research.privacy import suppress_small_cells
from iop_research.privacy.audit import Ledger, Relation, audit_cells, audit_ledger, audit_ledgers, audit_table
from iop_research.privacy.secondary import protect_cells
from iop_research.privacy.suppression import protect_greedy

K = 11


def _row_ledger(values, statuses, total):
    led = Ledger(min_cell_count=K)
    keys = [f"x{i}" for i in range(len(values))]
    for key, v, st_ in zip(keys, values, statuses):
        led.add_count(key, value=v if st_ == "shown" else None, status=st_)
    led.add_count("total", value=total, status="shown")
    led.add_sum(keys, "total")
    return led


# ---------------------------------------------------------------- the cases of the issue

def test_issue_row_1_11_40_old_pattern_gives_back_1_and_new_pattern_holds():
    # old complementary suppression hid 1 and 11 and showed 40 and the total 52
    old = audit_ledger(_row_ledger([1, 11, 40], ["primary", "secondary", "shown"], 52))
    assert old[["lower", "upper"]].values.tolist() == [[1, 1]]  # 1 + "*" = 12, "*" >= 11
    assert not old["is_protected"].any()
    t = pd.DataFrame({"n": [1, 11, 40, 52]}, index=["a", "b", "c", "total"])
    out = suppress_small_cells(t, col_total_row="total")
    res = audit_table(out)
    assert res["is_protected"].all() and res[["lower", "upper"]].values.tolist() == [[1, 10]]
    assert out["n"].isna().sum() >= 2


def test_issue_tie_5_11_11_40_old_pattern_narrows_5_and_new_pattern_holds():
    old = audit_ledger(_row_ledger([5, 11, 11, 40], ["primary", "secondary", "shown", "shown"], 67))
    assert old["upper"].iloc[0] == 5 and not old["is_protected"].any()
    t = pd.DataFrame({"n": [5, 11, 11, 40, 67]}, index=["a", "b", "c", "d", "total"])
    out = suppress_small_cells(t, col_total_row="total")
    assert audit_table(out)["is_protected"].all()


def _margins(body: np.ndarray) -> np.ndarray:
    r, c = body.shape
    full = np.zeros((r + 1, c + 1), dtype=np.int64)
    full[:r, :c] = body
    full[:r, c] = body.sum(axis=1)
    full[r, :c] = body.sum(axis=0)
    full[r, c] = body.sum()
    return full


def test_issue_3x5_with_margins_old_pattern_gives_back_primary_cells_new_pattern_holds():
    body = np.array([[1, 1, 45, 12, 45], [3, 8, 4, 15, 2], [20, 20, 12, 30, 45]])
    full = _margins(body)
    rr, cc = full.shape
    idx = np.arange(rr * cc).reshape(rr, cc)
    lines = [idx[i] for i in range(rr)] + [idx[:, j] for j in range(cc)]
    is_total = np.zeros((rr, cc), bool)
    is_total[:, -1] = True
    is_total[-1, :] = True
    hidden, primary = protect_greedy(full.ravel().astype(float), lines, k=K, is_total=is_total.ravel())
    led = Ledger(min_cell_count=K)
    for i in range(rr):
        for j in range(cc):
            st_ = "primary" if primary[idx[i, j]] else ("secondary" if hidden[idx[i, j]] else "shown")
            led.add_count(f"{i},{j}", value=int(full[i, j]) if st_ == "shown" else None, status=st_)
    for i in range(rr):
        led.add_sum([f"{i},{j}" for j in range(cc - 1)], f"{i},{cc - 1}")
    for j in range(cc):
        led.add_sum([f"{i},{j}" for i in range(rr - 1)], f"{rr - 1},{j}")
    old = audit_ledger(led)
    exact = old.loc[old["lower"] == old["upper"], "key"].tolist()
    assert len(exact) >= 3  # primary cells given back exactly (the greedy sweep's pattern)
    cols = [f"c{j}" for j in range(5)] + ["total"]
    t = pd.DataFrame(full, columns=cols, index=["r0", "r1", "r2", "total"])
    out = suppress_small_cells(t, row_total_col="total", col_total_row="total")
    res = audit_table(out)
    assert len(res) == int(((body >= 1) & (body < K)).sum())
    assert res["is_protected"].all()
    assert (res["lower"] == 1).all() and (res["upper"] == K - 1).all()


def test_issue_percentage_of_a_suppressed_count_pins_it():
    # "death 0.2%" of 3,571 episodes with the death count shown as "<11"
    led = Ledger(min_cell_count=K)
    led.add_count("deaths", value=None, status="primary")
    led.add_count("episodes", value=3571, status="shown")
    led.add_percentage("deaths", "episodes", percent=0.2, digits=1)
    res = audit_ledger(led)
    assert res[["lower", "upper"]].values.tolist() == [[6, 8]]
    assert not res["is_protected"].any()


def test_issue_differencing_across_reports_is_found_by_audit_ledgers(tmp_path):
    # report 00: 3,571 episodes in the input; report 01: 3,569 analysed and "<11" excluded
    a = Ledger(min_cell_count=K)
    a.add_count("n_episodes_input", value=3571, status="shown", report="00_cohort")
    b = Ledger(min_cell_count=K)
    b.add_count("n_episodes_analysed", value=3569, status="shown", report="01_relapse")
    b.add_count("n_excluded", value=None, status="primary", report="01_relapse")
    b.add_sum(["n_episodes_analysed", "n_excluded"], "n_episodes_input")
    assert audit_ledger(b)["is_protected"].all()  # alone, report 01 gives nothing away
    a.to_json(tmp_path / "00.json")
    b.to_json(tmp_path / "01.json")
    res = audit_ledgers([tmp_path / "00.json", tmp_path / "01.json"])
    assert res[["key", "lower", "upper", "is_protected"]].values.tolist() == [["n_excluded", 2, 2, False]]
    with pytest.raises(PrivacyViolationError, match="n_excluded|01_relapse"):
        audit_ledgers([a, b], raise_on_failure=True)


def test_secondary_suppression_knows_earlier_publications():
    # with the input total published before, hiding the excluded count alone is not enough
    published = {"n_in": ("shown", 3571)}
    rel = [Relation((("n_kept", 1.0), ("n_excl", 1.0), ("n_in", -1.0)), 0.0, 0.0)]
    hidden, primary = protect_cells({"n_kept": 3569, "n_excl": 2}, rel, published=published)
    assert hidden == {"n_kept", "n_excl"} and primary == {"n_excl"}
    with pytest.raises(PrivacyViolationError, match="n_excl"):
        protect_cells({"n_excl": 2}, rel, published={**published, "n_kept": ("shown", 3569)})


# ---------------------------------------------------------------- auditor mechanics

def test_baseline_markers_alone_limit_the_requirement():
    # two "<11" cells summing to a "<11" total: neither can be 10, and that is not a leak
    led = Ledger(min_cell_count=K)
    for key in ("a", "b", "t"):
        led.add_count(key, value=None, status="primary")
    led.add_sum(["a", "b"], "t")
    res = audit_ledger(led)
    assert res["is_protected"].all()
    assert res.set_index("key").loc["a", "upper"] == 9 and res.set_index("key").loc["a", "required_upper"] == 9


def test_ledger_json_holds_no_hidden_value(tmp_path):
    t = pd.DataFrame({"n": [3, 11, 40, 54]}, index=["a", "b", "c", "total"])
    out = suppress_small_cells(t, col_total_row="total")
    led = out.attrs["suppressed"].ledger
    path = tmp_path / "l.json"
    led.to_json(path)
    text = path.read_text()
    d = json.loads(text)
    values = [e["value"] for e in d["entries"] if e["status"] != "shown"]
    assert values and all(v is None for v in values)
    assert Ledger.from_json(path).view() == led.view()
    assert audit_ledgers([path])["is_protected"].all()


def test_conflicting_publications_and_bad_ledgers_are_errors():
    led = Ledger()
    led.add_count("n", value=10 + 40, status="shown")
    led.add_count("n", value=51, status="shown")
    with pytest.raises(PrivacyViolationError, match="published as 50 and as 51"):
        led.view()
    with pytest.raises(DataValidationError, match="ledger"):
        Ledger.from_dict({"format": "something else"})
    with pytest.raises(DataValidationError, match="no suppression ledger"):
        audit_table(pd.DataFrame({"n": [1]}))
    with pytest.raises(PrivacyViolationError, match="min_cell_count"):
        Ledger(min_cell_count=11).extend(Ledger(min_cell_count=5))


def test_audit_cells_matches_brute_force_on_small_problems():
    # enumerate every assignment a reader could consider and compare with the MILP range
    rng = np.random.default_rng(7)
    for _ in range(6):
        vals = rng.choice([0, 1, 3, 7, 11, 14, 25], size=(2, 2))
        full = _margins(vals)
        hidden = {(0, 0), (0, 1), (1, 0), (1, 1)}
        view, rel = {}, []
        for i in range(3):
            for j in range(3):
                v = int(full[i, j])
                if (i, j) in hidden:
                    view[f"{i}{j}"] = ("primary", None) if 1 <= v < K else ("secondary", None)
                else:
                    view[f"{i}{j}"] = ("shown", v)
        for i in range(3):
            rel.append(Relation(((f"{i}0", 1.0), (f"{i}1", 1.0), (f"{i}2", -1.0)), 0.0, 0.0))
            rel.append(Relation(((f"0{i}", 1.0), (f"1{i}", 1.0), (f"2{i}", -1.0)), 0.0, 0.0))
        res = audit_cells(view, rel, min_cell_count=K).set_index("key")
        n = int(full[2, 2])
        feasible = []
        for a in range(n + 1):  # 2x2 inner table with known margins: one free parameter
            x = np.array([[a, full[0, 2] - a], [full[2, 0] - a, 0]])
            x[1, 1] = full[1, 2] - x[1, 0]
            if (x < 0).any():
                continue
            ok = True
            for (i, j) in hidden:
                st_ = view[f"{i}{j}"][0]
                if st_ == "primary" and not (1 <= x[i, j] < K):
                    ok = False
                if st_ == "secondary" and 0 < x[i, j] < K:
                    ok = False
            if ok:
                feasible.append(x)
        for key in res.index:
            i, j = int(key[0]), int(key[1])
            brute = [x[i, j] for x in feasible]
            assert res.loc[key, "lower"] == min(brute) and res.loc[key, "upper"] == max(brute)


# ---------------------------------------------------------------- properties

def _nd_relations(shape):
    """Keys and margin relations of an n-D table with a total slot at the end of every axis."""
    full = tuple(s + 1 for s in shape)
    keys = {ix: "_".join(map(str, ix)) for ix in np.ndindex(*full)}
    rels = []
    for axis in range(len(shape)):
        for ix in np.ndindex(*full):
            if ix[axis] != shape[axis]:
                continue
            parts = [keys[ix[:axis] + (m,) + ix[axis + 1:]] for m in range(shape[axis])]
            rels.append(Relation(tuple((p, 1.0) for p in parts) + ((keys[ix], -1.0),), 0.0, 0.0))
    return keys, rels


def _nd_with_margins(body: np.ndarray) -> np.ndarray:
    full = np.zeros(tuple(s + 1 for s in body.shape), dtype=np.int64)
    full[tuple(slice(0, s) for s in body.shape)] = body
    for ix in np.ndindex(*full.shape):
        sl = tuple(slice(0, body.shape[a]) if ix[a] == body.shape[a] else ix[a] for a in range(body.ndim))
        full[ix] = body[sl].sum()
    return full


cell = st.one_of(st.sampled_from([0, 1, 5, 10, 11, 11, 12]), st.integers(0, 60))


@settings(max_examples=10, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(2, 3)), elements=cell))
def test_property_2d_with_margins_ties_and_zeros_are_protected(body):
    full = _nd_with_margins(body)
    keys, rels = _nd_relations(body.shape)
    values = {keys[ix]: int(full[ix]) for ix in np.ndindex(*full.shape)}
    hidden, primary = protect_cells(values, rels, min_cell_count=K)
    assert primary == {k for k, v in values.items() if 1 <= v < K}
    view = {k: (("primary", None) if k in primary else ("secondary", None)) if k in hidden else ("shown", v)
            for k, v in values.items()}
    res = audit_cells(view, rels, min_cell_count=K)
    assert res["is_protected"].all()


@settings(max_examples=6, deadline=None)
@given(arrays(np.int64, st.just((2, 2, 2)), elements=cell))
def test_property_3d_with_all_margins_is_protected(body):
    full = _nd_with_margins(body)
    keys, rels = _nd_relations(body.shape)
    values = {keys[ix]: int(full[ix]) for ix in np.ndindex(*full.shape)}
    hidden, primary = protect_cells(values, rels, min_cell_count=K)
    view = {k: (("primary", None) if k in primary else ("secondary", None)) if k in hidden else ("shown", v)
            for k, v in values.items()}
    res = audit_cells(view, rels, min_cell_count=K)
    assert res["is_protected"].all()
    shown = np.array([view[keys[ix]][0] == "shown" for ix in np.ndindex(*full.shape)])
    vals = np.array([values[keys[ix]] for ix in np.ndindex(*full.shape)])
    assert not np.any(shown & (vals >= 1) & (vals < K))


def test_3d_table_fixed_example_protected_and_minimal():
    body = np.array([[[1, 20], [30, 12]], [[14, 2], [40, 0]]])
    full = _nd_with_margins(body)
    keys, rels = _nd_relations(body.shape)
    values = {keys[ix]: int(full[ix]) for ix in np.ndindex(*full.shape)}
    hidden, primary = protect_cells(values, rels, min_cell_count=K)
    assert primary == {"0_0_0", "1_0_1", "1_2_1"}  # 1_2_1: the margin 2 + 0 is small too
    view = {k: (("primary", None) if k in primary else ("secondary", None)) if k in hidden else ("shown", v)
            for k, v in values.items()}
    assert audit_cells(view, rels, min_cell_count=K)["is_protected"].all()
    # and the pattern is minimal: showing any one secondary cell again breaks protection
    for c in hidden - primary:
        v2 = dict(view)
        v2[c] = ("shown", values[c])
        assert not audit_cells(v2, rels, min_cell_count=K)["is_protected"].all()


# ---------------------------------------------------------------- sensitive counts (never shown, maybe small)

def test_sensitive_count_is_protected_only_when_its_range_covers_the_small_values_or_rules_them_out():
    def one(lo, hi):
        led = Ledger(min_cell_count=K)
        led.add_count("x", value=None, status="sensitive")
        led.add_relation({"x": 1.0}, lower=lo, upper=hi)
        return audit_ledger(led).iloc[0]

    for lo, hi, ok in [(0, 10, True), (1, 21, True), (0, 0, True), (12, 32, True), (11, 11, True),
                       (0, 5, False), (1, 1, False), (3, 25, False), (2, 22, False), (5, 15, False)]:
        r = one(lo, hi)
        assert (r["lower"], r["upper"], bool(r["is_protected"])) == (lo, hi, ok), (lo, hi)


def test_sensitive_count_narrowed_by_differencing_two_shown_counts():
    led = Ledger(min_cell_count=K)
    led.add_count("at_risk_0", value=168, status="shown")
    led.add_count("at_risk_90", value=167, status="shown")
    led.add_count("left", value=None, status="sensitive")
    led.add_sum(["at_risk_90", "left"], "at_risk_0")
    r = audit_ledger(led).iloc[0]
    assert (r["lower"], r["upper"], r["is_protected"]) == (1, 1, False)
    # a shown count is never a target, even when a sensitive entry names it elsewhere
    led.add_count("at_risk_90", value=None, status="sensitive")
    assert audit_ledger(led)["key"].tolist() == ["left"]


def test_counts_bounded_by_relations_alone_are_not_cut_by_the_big_m_bound():
    # no shown count at all: the solver's upper bound must still admit 5,000
    led = Ledger(min_cell_count=K)
    led.add_count("total", value=None, status="unpublished")
    led.add_count("part", value=None, status="sensitive")
    led.add_relation({"total": 1.0}, lower=5000, upper=5010)
    led.add_relation({"total": 1.0, "part": -1.0}, lower=4995, upper=5005)
    r = audit_ledger(led).iloc[0]
    assert (r["lower"], r["upper"]) == (0, 15)


# ---------------------------------------------------------------- Table 1 and attrition are audited

def test_table_one_hides_what_the_greedy_sweep_gave_away():
    from iop_research.present.tables import table_one

    # one group, levels 1 / 11 / 40: the greedy sweep hid 1 and 11 and showed 40 with n = 52,
    # so "*" = 11 (>= 11) gave back the 1
    df = pd.DataFrame({"g": ["a"] * 52, "x": ["p"] * 1 + ["q"] * 11 + ["r"] * 40})
    t1 = table_one(df, group_col="g", categorical=["x"], overall=False)
    res = audit_table(t1)
    assert len(res) == 1 and res["is_protected"].all()
    assert res[["lower", "upper"]].values.tolist() == [[1, K - 1]]
    cnt = t1.loc[t1["variable"] == "x", "count"]
    assert cnt.isna().sum() >= 2 and not ((cnt >= 1) & (cnt < K)).fillna(False).any()
    # the old pattern fails the same audit
    old = _row_ledger([1, 11, 40], ["primary", "secondary", "shown"], 52)
    assert not audit_ledger(old)["is_protected"].any()


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=20, max_size=90),
       st.lists(st.sampled_from(["x", "y", "z", None]), min_size=90, max_size=90))
def test_property_table_one_is_protected_by_the_audit(groups, levels):
    from iop_research.present.tables import table_one

    df = pd.DataFrame({"g": groups, "v": levels[:len(groups)]})
    t1 = table_one(df, group_col="g", categorical=["v"])
    res = audit_table(t1)
    assert res["is_protected"].all()
    for c in ("n", "missing", "count"):
        shown = t1[c].dropna().astype(int)
        assert not ((shown >= 1) & (shown < K)).any()
    # percentages of hidden counts, or with a hidden group size, are hidden
    assert t1.loc[t1["count"].isna() & (t1["kind"] == "categorical"), "percent"].isna().all()


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=5), st.integers(0, 300))
def test_property_attrition_is_protected_by_the_audit(steps, extra):
    from iop_research.present.tables import suppress_attrition

    removed = [0] + [r for r, _ in steps]
    premoved = [0] + [min(p, r) for r, p in steps]
    a = pd.DataFrame({"step": [f"s{i}" for i in range(len(removed))], "rows_removed": removed,
                      "patients_removed": premoved,
                      "rows_remaining": list(sum(removed) + extra + 20 - np.cumsum(removed)),
                      "patients_remaining": list(sum(premoved) + extra + 15 - np.cumsum(premoved))})
    s = suppress_attrition(a)
    assert audit_table(s)["is_protected"].all()
    shown = s[["rows_removed", "patients_removed", "rows_remaining", "patients_remaining"]].to_numpy(
        dtype=float, na_value=np.nan)
    assert not np.any((shown >= 1) & (shown < K))
