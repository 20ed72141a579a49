"""Tests of iop_research._validate: the one parser of every estimator's input columns.

Each fault raises :class:`~iop_research.exceptions.EstimatorInputError` (a ``DataValidationError``
and a ``ModelSpecificationError``, hence a ``ValueError`` and an ``IopError``) whose message has
one shape: ``"<func>: column '<col>' (<role>) has <n> <problem> (rows: <labels>). <fix>"``, and
whose attributes name the column, the check, the count and the first rows.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from iop_research import _validate as v
from iop_research.exceptions import (
    DataValidationError,
    EstimatorInputError,
    IopError,
    ModelSpecificationError,
)

SHAPE = re.compile(r"^f: column '(?P<col>[^']+)' \((?P<role>[^)]+)\) has (?P<n>\d+) (?P<problem>.+?) "
                   r"\(rows: (?P<rows>[^)]*(?:\(\d+ in all\))?)\)\. (?P<fix>[A-Z].+)$")


@pytest.fixture
def df():
    return pd.DataFrame(
        {
            "t": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "e": [1, 0, 1, 1, 0, 1],
            "w": [1.0, 0.5, 2.0, 1.0, 1.0, 0.0],
            "g": ["b", "a", "b", "c", "a", "b"],
            "start": [0.0, 0.0, 1.0, 2.0, 0.0, 3.0],
            "cause": [0, 1, 2, 1, 0, 2],
        },
        index=[10, 11, 12, 13, 14, 15],
    )


def _raises(fn, *args, **kwargs) -> EstimatorInputError:
    with pytest.raises(EstimatorInputError) as info:
        fn(*args, **kwargs)
    exc = info.value
    assert isinstance(exc, DataValidationError) and isinstance(exc, ModelSpecificationError)
    assert isinstance(exc, ValueError) and isinstance(exc, IopError)
    return exc


@pytest.mark.parametrize(
    "change, call, check, role, problem",
    [
        ({"t": [1.0, np.nan, 3.0, np.inf, 5.0, 6.0]}, lambda d: v.duration_column(d, "t", func="f"),
         "missing", "duration", "missing or infinite value(s)"),
        ({"t": [1.0, -2.0, 3.0, -4.0, 5.0, 6.0]}, lambda d: v.duration_column(d, "t", func="f"),
         "negative", "duration", "negative value(s)"),
        ({"e": [1, 2, 1, 3, 0, 1]}, lambda d: v.event_indicator(d, "e", func="f"),
         "not_binary", "event", "value(s) other than 0/1 (it must hold only 0/1 or bool)"),
        ({"e": [1, np.nan, 1, np.nan, 0, 1]}, lambda d: v.event_indicator(d, "e", func="f"),
         "missing", "event", "missing value(s)"),
        ({"w": [1.0, -1.0, 1.0, -0.5, 1.0, 1.0]}, lambda d: v.weights_column(d, "w", func="f"),
         "negative", "case weights", "negative value(s)"),
        ({"w": [1.0, np.nan, 1.0, np.nan, 1.0, 1.0]}, lambda d: v.weights_column(d, "w", func="f"),
         "missing", "case weights", "missing or infinite value(s)"),
        ({"g": ["b", None, "b", None, "a", "b"]}, lambda d: v.label_codes(d, "g", func="f"),
         "missing", "group", "missing value(s)"),
        ({"g": ["b", None, "b", None, "a", "b"]}, lambda d: v.strata_codes(d, "g", func="f"),
         "missing", "strata", "missing value(s)"),
        ({"g": ["b", None, "b", None, "a", "b"]}, lambda d: v.cluster_codes(d, "g", func="f"),
         "missing", "cluster", "missing value(s)"),
        ({"cause": [0, None, 2, None, 0, 2]}, lambda d: v.event_codes(d, "cause", func="f"),
         "missing", "event", "missing value(s)"),
        ({"t": [1.0, np.nan, 3.0, np.nan, 5.0, 6.0]}, lambda d: v.complete_column(d, "t", func="f"),
         "missing", "covariate", "missing or infinite value(s)"),
        ({"e": [1, 2, 1, 5, 0, 1]}, lambda d: v.binary_column(d, "e", func="f"),
         "not_binary", "treatment", "value(s) other than 0/1 (it must be coded 0 (control) / 1 (treated) or boolean)"),
    ],
)
def test_one_message_shape(df, change, call, check, role, problem):
    exc = _raises(call, df.assign(**change))
    m = SHAPE.match(str(exc))
    assert m, str(exc)
    col = next(iter(change))
    assert m["col"] == col and m["role"] == role and m["n"] == "2" and m["problem"] == problem
    assert m["rows"] == "11, 13"
    assert exc.func == "f" and exc.column == col and exc.check == check and exc.n_rows == 2 and exc.rows == [11, 13]


def test_rows_are_elided_after_five(df):
    d = pd.DataFrame({"t": -np.arange(1.0, 9.0)})
    exc = _raises(v.duration_column, d, "t", func="f")
    assert "(rows: 0, 1, 2, 3, 4, ... (8 in all))" in str(exc)
    assert exc.rows == [0, 1, 2, 3, 4] and exc.n_rows == 8


def test_frame_checks(df):
    exc = _raises(v.require_frame, df.to_dict(), "f", {"duration_col": "t"})
    assert exc.check == "not_a_frame" and str(exc).startswith("f: expected a pandas DataFrame, got dict.")
    exc = _raises(v.require_frame, df, "f", {"duration_col": "time", "event_col": "e", "group_col": None,
                                             "covariates": ["t", "age"]})
    assert exc.check == "missing_column" and exc.column == "time"
    assert str(exc).startswith("f: column(s) not found in the data frame: duration_col='time', covariates='age'. ")
    exc = _raises(v.require_frame, df.iloc[:0], "f", {"duration_col": "t"})
    assert exc.check == "empty"
    v.require_frame(df.iloc[:0], "f", {"duration_col": "t"}, allow_empty=True)


def test_dtype_faults(df):
    exc = _raises(v.duration_column, df.assign(t=["1", "2", "3", "4", "5", "6"]), "t", func="f")
    assert exc.check == "dtype" and "column 't' (duration) must be numeric, found dtype" in str(exc)
    exc = _raises(v.event_indicator, df.assign(e=["y", "n", "y", "y", "n", "y"]), "e", func="f")
    assert exc.check == "dtype" and "must hold only 0/1 or bool" in str(exc)
    exc = _raises(v.binary_column, df.assign(e=["y", "n", "y", "y", "n", "y"]), "e", func="f")
    assert exc.check == "dtype" and "coded 0 (control) / 1" in str(exc)


def test_intervals(df):
    exc = _raises(v.start_stop, df.assign(start=[0.0, 2.0, 1.0, 5.0, 0.0, 3.0]), "start", "t", func="f")
    assert exc.check == "interval" and exc.rows == [11, 13]
    assert str(exc).startswith("f: columns 'start'/'t' (interval) have 2 row(s) with t <= start (rows: 11, 13). ")
    exc = _raises(v.entry_column, df.assign(start=[0.0, 2.0, 1.0, 5.0, 0.0, 3.0]), "start",
                  df["t"].to_numpy(), func="f", duration_col="t")
    assert exc.check == "interval" and "with t <= start (rows: 11, 13)" in str(exc)
    d = pd.DataFrame({"lo": [0.0, 5.0, 3.0], "hi": [2.0, 4.0, np.nan]})
    exc = _raises(v.interval_bounds, d, "lo", "hi", func="f")
    assert exc.check == "interval" and "1 row(s) with hi < lo (rows: 1)" in str(exc)
    lo, hi = v.interval_bounds(d.assign(hi=[2.0, 5.0, np.nan]), "lo", "hi", func="f")
    assert np.isinf(hi[2]) and lo.tolist() == [0.0, 5.0, 3.0]
    exc = _raises(v.interval_bounds, d.assign(lo=[0.0, -1.0, 3.0]), "lo", "hi", func="f")
    assert exc.check == "negative" and "column 'lo' (lower bound) has 1 negative value(s) (rows: 1)" in str(exc)


def test_values_parsed(df):
    assert v.event_indicator(df.assign(e=df["e"].astype(bool)), "e", func="f").tolist() == [1, 0, 1, 1, 0, 1]
    assert v.duration_column(df.assign(t=0.0), "t", func="f").tolist() == [0.0] * 6  # 0 allowed, as Surv
    codes, levels = v.label_codes(df, "g", func="f")
    assert levels == ["a", "b", "c"] and codes.tolist() == [1, 0, 1, 2, 0, 1]
    cat = df.assign(g=pd.Categorical(df["g"], categories=["c", "x", "b", "a"]))
    codes, levels = v.label_codes(cat, "g", func="f")  # categorical order, unused dropped (R factor())
    assert levels == ["c", "b", "a"] and codes.tolist() == [1, 2, 1, 0, 2, 1]
    vals, is_cens, causes = v.event_codes(df, "cause", func="f")
    assert causes == [1, 2] and is_cens.tolist() == [True, False, False, False, True, False]
    assert v.cluster_codes(df, "g", func="f").tolist() == [0, 1, 0, 2, 1, 0]
    strata = v.strata_codes(df.assign(h=[1, 1, 2, 2, 1, 1]), ["g", "h"], func="f")
    assert strata.tolist() == [1, 0, 2, 3, 0, 1]  # sorted combinations (a,1) (b,1) (b,2) (c,2)
    assert v.binary_column(df, "e", func="f").tolist() == [1, 0, 1, 1, 0, 1]


def test_binary_column_needs_both_values(df):
    with pytest.raises(ModelSpecificationError, match="needs rows with 0 and with 1"):
        v.binary_column(df.assign(e=1), "e", func="f")


@pytest.mark.parametrize("bad", [0, 1, 95, -0.5, "0.95", None, True])
def test_conf_level(bad):
    with pytest.raises(ModelSpecificationError, match="conf_level must be a number strictly between 0 and 1"):
        v.check_conf_level(bad, "f")
    assert v.check_conf_level(0.9, "f") == 0.9


def test_input_never_modified(df):
    before = df.copy()
    v.duration_column(df, "t", func="f")
    v.label_codes(df, "g", func="f")
    v.event_codes(df, "cause", func="f")
    v.weights_column(df, "w", func="f")
    pd.testing.assert_frame_equal(df, before)
