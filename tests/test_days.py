"""Tests of iop_research.derive.days: the one date -> day-number conversion (issue 11, point 5)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from iop_research.derive.days import EPOCH, date_from_day, day_number
from iop_research.exceptions import DataValidationError


def test_scalar_and_array_agree_with_pandas():
    dates = pd.DatetimeIndex([pd.Timestamp(x) for x in ["1969-12-31", "1970-01-01", "2024-02-29 23:59", "2026-11-27"]])
    expected = [(d.normalize() - EPOCH).days for d in dates]
    assert expected == [-1, 0, 19782, 20784]
    assert [day_number(d) for d in dates] == expected
    np.testing.assert_array_equal(day_number(dates), np.array(expected, dtype=float))
    np.testing.assert_array_equal(day_number(pd.Series(dates), missing=-7), np.array(expected))
    assert day_number("2024-02-29") == 19782


def test_missing_dates():
    out = day_number(pd.Series([pd.Timestamp("2024-01-01"), pd.NaT]))
    assert out[0] == 19723 and np.isnan(out[1])
    assert day_number([None, "2024-01-01"], missing=10**9).tolist() == [10**9, 19723]
    with pytest.raises(DataValidationError, match="missing date"):
        day_number(None)
    assert day_number(pd.NaT, missing=-1) == -1


def test_round_trip():
    days = np.array([-400, 0, 19723, 25000])
    back = date_from_day(days)
    np.testing.assert_array_equal(day_number(back, missing=0), days)
    assert date_from_day(19723) == pd.Timestamp("2024-01-01")


def test_engine_expression_equals_pandas():
    """The same conversion inside an Ibis (DuckDB) expression gives the same day numbers."""
    ibis = pytest.importorskip("ibis")
    from iop_research.derive.engine import collect, get_backend, as_table

    dates = pd.DatetimeIndex([pd.Timestamp(x) for x in ["1969-12-31", "2024-02-29 23:59", "2026-11-27"]])
    t = as_table(get_backend(None), pd.DataFrame({"d": dates}), "days_test")
    got = collect(t.select(n=day_number(t.d), back=date_from_day(day_number(t.d))))
    np.testing.assert_array_equal(got["n"].to_numpy(), day_number(dates, missing=0))
    np.testing.assert_array_equal(pd.to_datetime(got["back"]).to_numpy(), dates.normalize().to_numpy())
    assert isinstance(day_number(t.d), ibis.expr.types.Value)


def test_derive_steps_use_the_one_helper():
    """No other date -> day-number conversion is left in derive/ (the four copies are gone)."""
    import inspect

    from iop_research.derive import episodes, exposures, frames, outcomes

    for mod in (episodes, exposures, frames, outcomes):
        src = inspect.getsource(mod)
        assert "1970-01-01" not in src, mod.__name__
        assert "epoch_days()" not in src, mod.__name__
    assert not hasattr(frames, "_fallback_eras") and not hasattr(outcomes, "_admission_episodes")
