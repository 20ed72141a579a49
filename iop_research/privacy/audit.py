"""Audit of published counts: how far can a reader narrow each suppressed count?

Everything a report publishes is written into a :class:`Ledger`: each count
with its key, whether it was shown (and its value) or hidden (and with which
marker), and the linear relations between counts that a reader knows (table
margins, attrition arithmetic, "N episodes of M patients", percentages with
their denominators, a count shown in two places under one key). The auditor
takes the reader's side: it computes, for each hidden small count, the
smallest and largest value consistent with everything published, by mixed
integer linear programming (SciPy's HiGHS :func:`scipy.optimize.milp`) [1]_.

The reader's knowledge
----------------------
* a shown count is known exactly;
* a primary cell (shown as ``"<11"``) lies in ``1 .. min_cell_count - 1``;
* a secondary cell (``"*"``) is not small: it is ``0`` or at least
  ``min_cell_count`` (the rule is published in the footnote, so the reader
  knows a ``"*"`` is not a ``"<11"``);
* a count that was never published (e.g. a denominator used only in a
  percentage) is any non-negative whole number;
* a *sensitive* count was never published either, but may be small (e.g. the
  number of relapses between two days of a risk table whose counts were
  rounded): the reader knows nothing about it beyond the relations;
* every relation in the ledger holds.

Protection rule
---------------
A primary cell is protected when everything published together still allows
every value its marker allows, ``1 .. min_cell_count - 1``, except values that
the markers alone already rule out (e.g. two ``"<11"`` cells that sum to a
``"<11"`` total cannot each be 10): the *baseline* range is the range when
every count in the cell's relations is replaced by its marker. This is the
protection interval of τ-ARGUS and sdcTable [2]_ [3]_ with upper and lower
protection levels set so that the published table tells the reader no more
than ``"<11"`` does. The rule needs only what was published, so a ledger
saved next to a report holds nothing that the report does not show.

A sensitive count is protected when what was published either leaves every
value ``1 .. min_cell_count - 1`` possible (its feasible range reaches ``1``
or below and ``min_cell_count - 1`` or above), or shows it is not small (at
least ``min_cell_count``, or exactly 0). The rule does not use the true value
(which the ledger does not hold), so it is conservative: a range such as
``3 .. 25`` fails even when the true count is 20.

References
----------
.. [1] Huangfu Q, Hall JAJ (2018). Parallelizing the dual revised simplex
   method. *Mathematical Programming Computation* 10:119-142 (HiGHS).
.. [2] Hundepool A, Domingo-Ferrer J, Franconi L, et al. (2012). *Statistical
   Disclosure Control*, section 5.2 (sensitivity rules, protection levels,
   the attacker's problem). Wiley.
.. [3] Meindl B (2023). sdcTable: Methods for Statistical Disclosure Control
   in Tabular Data. R package (``protectTable``, ``attack``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from iop_research.exceptions import DataValidationError, IopError, ModelSpecificationError, PrivacyViolationError, format_ids
from iop_research.privacy.suppression import check_min_cell_count

__all__ = [
    "STATUSES",
    "Relation",
    "Ledger",
    "AuditError",
    "audit_cells",
    "audit_ledger",
    "audit_ledgers",
    "audit_table",
    "connected_primaries",
]

#: Publication status of a count in a ledger.
STATUSES: tuple[str, ...] = ("shown", "primary", "secondary", "unpublished", "sensitive")

#: Statuses the auditor protects.
TARGET_STATUSES: tuple[str, ...] = ("primary", "sensitive")

_ENTRY_COLUMNS = ["key", "value", "status", "report", "table", "row", "column"]


class AuditError(IopError, RuntimeError):
    """The auditor could not solve a reader's problem (infeasible ledger or solver failure)."""


@dataclass(frozen=True)
class Relation:
    """A linear relation a reader knows: ``lower <= sum(coef * count) <= upper``.

    Attributes
    ----------
    coefs : tuple of (str, float)
        Count key and its coefficient.
    lower, upper : float
        Bounds; equal for an equality (a margin: ``parts - total = 0``).
    source : str
        Where it was published (``"03_relapse/table_1: row total"``).
    """

    coefs: tuple[tuple[str, float], ...]
    lower: float
    upper: float
    source: str = ""

    def to_dict(self) -> dict:
        return {"coefs": [[k, c] for k, c in self.coefs], "lower": self.lower, "upper": self.upper,
                "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Relation":
        return cls(tuple((str(k), float(c)) for k, c in d["coefs"]), float(d["lower"]), float(d["upper"]),
                   str(d.get("source", "")))


class Ledger:
    """Every count a report published, and the relations between them.

    Parameters
    ----------
    min_cell_count : int, default 11
        Threshold of the small-cell rule the report applied.

    Notes
    -----
    A key names one quantity. Publishing the same key twice (e.g. the number
    of patients in Table 1 and in the attrition table) tells the auditor that
    the two numbers are one; keys without a ``"/"`` are study-wide and join
    ledgers of different reports in :func:`audit_ledgers`. The ledger stores
    only what was published: values of shown counts and the markers of hidden
    ones, never a hidden value.

    Examples
    --------
    >>> led = Ledger(min_cell_count=11)
    >>> led.add_count("a", value=None, status="primary")
    >>> led.add_count("b", value=None, status="secondary")
    >>> led.add_count("total", value=52, status="shown")
    >>> led.add_sum(["a", "b"], "total")
    >>> audit_ledger(led)[["key", "lower", "upper", "is_protected"]].values.tolist()
    [['a', 1, 10, True]]
    """

    def __init__(self, *, min_cell_count: int = 11):
        self.min_cell_count = check_min_cell_count(min_cell_count)
        self._entries: list[dict] = []
        self._relations: list[Relation] = []

    # -- building -----------------------------------------------------------
    def add_count(self, key: str, *, value, status: str, report: str = "", table: str = "", row="",
                  column="") -> None:
        """Record one published count.

        Parameters
        ----------
        key : str
            Quantity key.
        value : int or None
            The published value; None unless ``status == "shown"``.
        status : {"shown", "primary", "secondary", "unpublished", "sensitive"}
        report, table, row, column : str
            Where it was published (for messages).
        """
        if status not in STATUSES:
            raise ModelSpecificationError(f"status must be one of {STATUSES}, got {status!r}.")
        if status == "shown":
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise ModelSpecificationError(f"count {key!r} is shown but has no value.")
            value = int(value)
        else:
            value = None
        self._entries.append({"key": str(key), "value": value, "status": status, "report": str(report),
                              "table": str(table), "row": str(row), "column": str(column)})

    def add_relation(self, coefs: Mapping[str, float], *, lower: float, upper: float | None = None,
                     source: str = "") -> None:
        """Record ``lower <= sum(coefs[key] * count[key]) <= upper`` (``upper`` defaults to ``lower``)."""
        upper = lower if upper is None else upper
        if not coefs:
            return
        self._relations.append(Relation(tuple((str(k), float(c)) for k, c in coefs.items()), float(lower),
                                        float(upper), source))

    def add_sum(self, parts: Sequence[str], total: str, *, source: str = "") -> None:
        """Record ``sum(parts) == total`` (a margin)."""
        coefs: dict[str, float] = {}
        for p in parts:
            coefs[p] = coefs.get(p, 0.0) + 1.0
        coefs[total] = coefs.get(total, 0.0) - 1.0
        self.add_relation(coefs, lower=0.0, source=source)

    def add_percentage(self, count: str, denominator: str, *, percent: float, digits: int,
                       source: str = "") -> None:
        """Record that ``100 * count / denominator`` rounds to ``percent`` at ``digits`` decimals."""
        half = 0.5 * 10.0 ** (-digits)
        lo, hi = (percent - half) / 100.0, (percent + half) / 100.0
        for coef_den, lower, upper in ((-max(lo, 0.0), 0.0, math.inf), (-hi, -math.inf, 0.0)):
            coefs: dict[str, float] = {count: 1.0}
            coefs[denominator] = coefs.get(denominator, 0.0) + coef_den
            self.add_relation(coefs, lower=lower, upper=upper, source=source)

    def extend(self, other: "Ledger") -> None:
        """Add another ledger's counts and relations (same threshold required)."""
        if other.min_cell_count != self.min_cell_count:
            raise PrivacyViolationError(
                f"Ledgers use different min_cell_count ({self.min_cell_count} and {other.min_cell_count}); "
                f"a study's reports must share one threshold. Rebuild the reports with one [privacy] setting."
            )
        self._entries.extend(dict(e) for e in other._entries)
        self._relations.extend(other._relations)

    def copy(self) -> "Ledger":
        out = Ledger(min_cell_count=self.min_cell_count)
        out.extend(self)
        return out

    # -- reading ------------------------------------------------------------
    @property
    def entries(self) -> pd.DataFrame:
        """One row per published count: ``key, value, status, report, table, row, column``."""
        df = pd.DataFrame(self._entries, columns=_ENTRY_COLUMNS)
        df["value"] = pd.array([e["value"] for e in self._entries], dtype="Int64")
        return df

    @property
    def relations(self) -> list[Relation]:
        return list(self._relations)

    def relations_frame(self) -> pd.DataFrame:
        """One row per relation: ``source, terms, lower, upper``."""
        return pd.DataFrame(
            [{"source": r.source, "terms": " + ".join(f"{c:g}*{k}" for k, c in r.coefs), "lower": r.lower,
              "upper": r.upper} for r in self._relations],
            columns=["source", "terms", "lower", "upper"],
        )

    def view(self) -> dict[str, tuple[str, int | None]]:
        """The reader's view: key -> (status, value), merged over repeated keys.

        Raises
        ------
        PrivacyViolationError
            One key was shown with two different values.
        """
        rank = {"shown": 0, "primary": 1, "secondary": 2, "sensitive": 3, "unpublished": 4}
        out: dict[str, tuple[str, int | None]] = {}
        for e in self._entries:
            k, st, v = e["key"], e["status"], e["value"]
            if k in out:
                ost, ov = out[k]
                if st == "shown" and ost == "shown" and ov != v:
                    raise PrivacyViolationError(
                        f"Count {k!r} was published as {ov} and as {v} ({e['report']}/{e['table']}). "
                        f"Give different quantities different keys."
                    )
                if rank[st] < rank[ost]:
                    out[k] = (st, v)
            else:
                out[k] = (st, v)
        for r in self._relations:
            for k, _ in r.coefs:
                out.setdefault(k, ("unpublished", None))
        return out

    # -- persistence --------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": "iop-research-ledger/1", "min_cell_count": self.min_cell_count,
                "entries": [dict(e) for e in self._entries],
                "relations": [r.to_dict() for r in self._relations]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Ledger":
        if d.get("format") != "iop-research-ledger/1":
            raise DataValidationError(f"Not an iop-research ledger (format {d.get('format')!r}).")
        led = cls(min_cell_count=int(d["min_cell_count"]))
        for e in d["entries"]:
            led.add_count(e["key"], value=e["value"], status=e["status"], report=e.get("report", ""),
                          table=e.get("table", ""), row=e.get("row", ""), column=e.get("column", ""))
        led._relations = [Relation.from_dict(r) for r in d["relations"]]
        return led

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the ledger as JSON (atomically: a temporary file and one rename)."""
        from iop_research.data.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "Ledger":
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Ledger({len(self._entries)} counts, {len(self._relations)} relations, k={self.min_cell_count})"


# ---------------------------------------------------------------------------
# the reader's problem
# ---------------------------------------------------------------------------

class _Problem:
    """Relations over hidden counts, with shown counts moved to the bounds."""

    def __init__(self, view: Mapping[str, tuple[str, int | None]], relations: Sequence[Relation], k: int,
                 *, as_markers: bool = False):
        self.k = k
        self.view = view
        hidden = [key for key, (st, _) in view.items() if as_markers or st != "shown"]
        self.index = {key: i for i, key in enumerate(hidden)}
        self.keys = hidden
        self.rows: list[tuple[dict[int, float], float, float]] = []
        self.rel_keys = [tuple(key for key, _ in r.coefs) for r in relations]
        scale = 0.0
        for r in relations:
            const = 0.0
            coefs: dict[int, float] = {}
            for key, c in r.coefs:
                st, v = view[key]
                if key in self.index:
                    coefs[self.index[key]] = coefs.get(self.index[key], 0.0) + c
                else:
                    const += c * float(v)
            coefs = {i: c for i, c in coefs.items() if c != 0.0}
            lo, hi = r.lower - const, r.upper - const
            scale = max(scale, abs(const) if math.isfinite(const) else 0.0,
                        *(abs(b) for b in (lo, hi) if math.isfinite(b)))  # counts bounded by a relation alone
            if not coefs:
                if lo > 1e-6 * max(1.0, abs(const)) or hi < -1e-6 * max(1.0, abs(const)):
                    raise AuditError(f"Published counts contradict the relation {r.source!r}: "
                                     f"{' + '.join(f'{c:g}*{k}' for k, c in r.coefs)} outside [{r.lower}, {r.upper}].")
                continue
            self.rows.append((coefs, lo, hi))
        shown_max = max([float(v) for st, v in view.values() if st == "shown"] + [0.0])
        # upper bound of a count the relations do not bound; kept far below 1/integrality-tolerance
        # (at least 1e5: with every count of a table hidden nothing bounds them, and a true total of 18 once
        # made a problem with the bound 4k infeasible)
        self.big = float(max(4 * k, 2 * max(scale, shown_max) + 4 * k, 1e5))
        if self.big > 5e5:
            self.big = 5e5 if max(scale, shown_max) < 2.5e5 else float(2 * max(scale, shown_max) + 4 * k)
        # union-find over hidden counts linked by a relation
        parent = list(range(len(hidden)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for coefs, _, _ in self.rows:
            ids = list(coefs)
            for j in ids[1:]:
                a, b = find(ids[0]), find(j)
                if a != b:
                    parent[a] = b
        self.comp = [find(i) for i in range(len(hidden))]

    def _kind(self, i: int) -> str:
        st, v = self.view[self.keys[i]]
        if st == "shown":  # as a marker: its value class
            return "primary" if v is not None and 1 <= v < self.k else "secondary"
        return st

    def solve(self, target: str, sign: float) -> tuple[int, dict[str, int]]:
        """Minimum (``sign=1``) or maximum (``sign=-1``) of ``target`` and a solution attaining it.

        The solution (a *witness*) holds the component's hidden counts and the
        shown counts of every relation that touches them.
        """
        t = self.index[target]
        members = [i for i in range(len(self.keys)) if self.comp[i] == self.comp[t]]
        local = {g: j for j, g in enumerate(members)}
        rows = [r for r in self.rows if next(iter(r[0])) in local]
        kinds = [self._kind(g) for g in members]
        n = len(members)
        sec = [j for j, kd in enumerate(kinds) if kd == "secondary"]
        m = len(sec)
        nv = n + m
        lb = np.zeros(nv)
        ub = np.full(nv, self.big)
        for j, kd in enumerate(kinds):
            if kd == "primary":
                lb[j], ub[j] = 1.0, self.k - 1.0
        ub[n:] = 1.0
        r_i, c_i, vals, lo, hi = [], [], [], [], []
        for ri, (coefs, rlo, rhi) in enumerate(rows):
            for g, c in coefs.items():
                r_i.append(ri)
                c_i.append(local[g])
                vals.append(c)
            lo.append(rlo)
            hi.append(rhi)
        nr = len(rows)
        for s, j in enumerate(sec):  # x_j = 0 or k <= x_j <= big: x_j - k*b >= 0, x_j - big*b <= 0
            r_i += [nr, nr, nr + 1, nr + 1]
            c_i += [j, n + s, j, n + s]
            vals += [1.0, -float(self.k), 1.0, -self.big]
            lo += [0.0, -np.inf]
            hi += [np.inf, 0.0]
            nr += 2
        cons = []
        if nr:
            a = coo_array((vals, (r_i, c_i)), shape=(nr, nv)).tocsr()
            cons = [LinearConstraint(a, np.array(lo), np.array(hi))]
        c = np.zeros(nv)
        c[local[t]] = sign
        res = milp(c, constraints=cons, integrality=np.ones(nv), bounds=Bounds(lb, ub), options={"presolve": True})
        if res.status != 0 or res.x is None:
            raise AuditError(
                f"The reader's problem for {target!r} could not be solved ({res.message}). The published "
                f"counts may contradict each other: check the ledger's relations."
            )
        x = np.round(res.x)
        xs = x[sec]
        if np.any((xs > 0) & (xs < self.k)):  # the solver used the integrality tolerance of a big-M row
            raise AuditError(f"Solver returned a non-admissible secondary value for {target!r}; "
                             f"the counts are too large for the big-M bound {self.big:g}.")
        witness = {self.keys[g]: int(x[local[g]]) for g in members}
        for key in self.touching(members):
            witness.setdefault(key, int(self.view[key][1]))
        return int(round(sign * res.fun)), witness

    def touching(self, members: Sequence[int]) -> set[str]:
        """Shown keys of the relations that involve the hidden counts ``members``."""
        mem = {self.keys[g] for g in members}
        out: set[str] = set()
        for keys in self.rel_keys:
            if any(k in mem for k in keys):
                out.update(k for k in keys if self.view[k][0] == "shown" and k not in self.index)
        return out

    def range_of(self, target: str) -> tuple[int, int]:
        """Smallest and largest value of ``target`` consistent with the problem."""
        return self.solve(target, 1.0)[0], self.solve(target, -1.0)[0]


class Reader:
    """The reader's problem, kept between changes of the view, with a cache of solutions.

    A solution found once (a *witness*: values of every count of a component
    that satisfy all relations and markers) stays a solution when more counts
    are hidden, and when a hidden count is shown again with the value the
    witness gives it; so most checks of the suppression search need no solver.

    Parameters
    ----------
    view : mapping of str to (status, value)
    relations : sequence of Relation
    min_cell_count : int
    """

    def __init__(self, view: Mapping[str, tuple[str, int | None]], relations: Sequence[Relation],
                 min_cell_count: int):
        self.k = check_min_cell_count(min_cell_count)
        self.view = dict(view)
        for r in relations:
            for key, _ in r.coefs:
                self.view.setdefault(key, ("unpublished", None))
        self.relations = list(relations)
        self.rel_keys = [tuple(k for k, _ in r.coefs) for r in self.relations]
        self._prob: _Problem | None = None
        self._base: dict[str, tuple[int, int]] = {}
        self.witnesses: list[dict[str, int]] = []
        self.n_solves = 0

    def set(self, key: str, status: str, value: int | None = None) -> None:
        """Change the status of one count (``"shown"`` needs its value)."""
        self.view[key] = (status, value if status == "shown" else None)
        self._prob = None

    def _problem(self) -> _Problem:
        if self._prob is None:
            self._prob = _Problem(self.view, self.relations, self.k)
        return self._prob

    def _needed_keys(self, target: str) -> set[str]:
        prob = self._problem()
        t = prob.index[target]
        comp = prob.comp[t]
        members = {prob.keys[i] for i in range(len(prob.keys)) if prob.comp[i] == comp}
        need = set(members)
        for keys in self.rel_keys:
            if any(k in members for k in keys):
                need.update(keys)
        return need

    def _valid(self, w: Mapping[str, int], need: set[str]) -> bool:
        for key in need:
            if key not in w:
                return False
            st, v = self.view[key]
            if st == "shown" and w[key] != v:
                return False
        return True

    def required(self, target: str) -> tuple[int, int]:
        """The protection interval of ``target`` (``1 .. k-1`` within the baseline)."""
        if target not in self._base:
            base = _Problem(self.view, self.relations, self.k, as_markers=True)
            self.n_solves += 2
            self._base[target] = base.range_of(target)
        b_lo, b_hi = self._base[target]
        return max(1, b_lo), min(self.k - 1, b_hi)

    def bounds(self, target: str, *, exact: bool = False) -> tuple[int, int, bool]:
        """``(lower, upper, is_protected)`` of a primary (or sensitive) count.

        With ``exact=False`` the solver is skipped where cached solutions
        already show the count reaching both ends of its protection interval
        (``lower``/``upper`` are then those ends, not the extremes).
        """
        need = self._needed_keys(target)
        valid = [w for w in self.witnesses if self._valid(w, need)]
        lo_seen = min((w[target] for w in valid), default=None)
        hi_seen = max((w[target] for w in valid), default=None)
        prob = self._problem()
        if self.view[target][0] == "sensitive":
            return self._sensitive_bounds(target, prob, lo_seen, hi_seen, exact)
        req_lo, req_hi = 1, self.k - 1
        lo = hi = None
        if exact or lo_seen is None or lo_seen > req_lo:
            lo, w = prob.solve(target, 1.0)
            self.n_solves += 1
            self.witnesses.append(w)
        else:
            lo = lo_seen
        if exact or hi_seen is None or hi_seen < req_hi:
            hi, w = prob.solve(target, -1.0)
            self.n_solves += 1
            self.witnesses.append(w)
        else:
            hi = hi_seen
        if lo > req_lo or hi < req_hi:
            req_lo, req_hi = self.required(target)
        return lo, hi, bool(lo <= req_lo and hi >= req_hi)

    def _sensitive_bounds(self, target: str, prob: "_Problem", lo_seen, hi_seen, exact: bool
                          ) -> tuple[int, int, bool]:
        """A sensitive count: protected when its range covers ``1 .. k-1`` or shows it is 0 or not small."""
        if not exact and lo_seen is not None and lo_seen <= 1 and hi_seen >= self.k - 1:
            return lo_seen, hi_seen, True
        lo, w = prob.solve(target, 1.0)
        self.witnesses.append(w)
        hi, w = prob.solve(target, -1.0)
        self.witnesses.append(w)
        self.n_solves += 2
        return lo, hi, bool(hi == 0 or lo >= self.k or (lo <= 1 and hi >= self.k - 1))

    def targets(self) -> list[str]:
        return [key for key, (st, _) in self.view.items() if st in TARGET_STATUSES]

    def first_failing(self, order: Sequence[str] = (), skip: Iterable[str] = ()) -> str | None:
        """The first unprotected primary count (``order`` first, ``skip`` ignored), or None."""
        seen = set(skip)
        for key in [*order, *self.targets()]:
            if key in seen or self.view.get(key, ("",))[0] not in TARGET_STATUSES:
                continue
            seen.add(key)
            if not self.bounds(key)[2]:
                return key
        return None


def connected_primaries(view: Mapping[str, tuple[str, int | None]], relations: Sequence[Relation],
                        keys: Iterable[str]) -> list[str]:
    """Primary (and sensitive) keys linked to ``keys`` through relations over hidden counts (the only
    ones a new publication about ``keys`` can narrow)."""
    adj: dict[str, set[str]] = {}
    for r in relations:
        ks = [k for k, _ in r.coefs]
        for k in ks:
            adj.setdefault(k, set()).update(ks)
    seen = set(keys)
    stack = list(seen)
    while stack:
        cur = stack.pop()
        for nb in adj.get(cur, ()):
            if nb not in seen and view.get(nb, ("unpublished", None))[0] != "shown":
                seen.add(nb)
                stack.append(nb)
            elif nb not in seen:
                seen.add(nb)  # shown: a constant, it does not link further
    return [k for k in seen if view.get(k, ("", None))[0] in TARGET_STATUSES]


def audit_cells(view: Mapping[str, tuple[str, int | None]], relations: Sequence[Relation], *,
                min_cell_count: int = 11, targets: Iterable[str] | None = None) -> pd.DataFrame:
    """Feasible range of each hidden small count given the reader's view.

    Parameters
    ----------
    view : mapping of str to (status, value)
        The reader's view (see :meth:`Ledger.view`).
    relations : sequence of Relation
    min_cell_count : int, default 11
    targets : iterable of str, optional
        Keys to audit; default every primary and sensitive key.

    Returns
    -------
    pandas.DataFrame
        ``key, lower, upper, required_lower, required_upper, is_protected``.
    """
    k = check_min_cell_count(min_cell_count)
    if targets is None:
        targets = [key for key, (st, _) in view.items() if st in TARGET_STATUSES]
    targets = list(targets)
    rows = []
    if targets:
        reader = Reader(view, relations, k)
        for key in targets:
            lo, hi, ok = reader.bounds(key, exact=True)
            if reader.view[key][0] == "sensitive":
                rows.append({"key": key, "lower": lo, "upper": hi, "required_lower": 1, "required_upper": k - 1,
                             "is_protected": ok})
                continue
            req_lo, req_hi = reader.required(key) if not ok else (1, k - 1)
            if ok and (lo > 1 or hi < k - 1):
                req_lo, req_hi = reader.required(key)
            rows.append({"key": key, "lower": lo, "upper": hi, "required_lower": req_lo,
                         "required_upper": req_hi, "is_protected": ok})
    return pd.DataFrame(rows, columns=["key", "lower", "upper", "required_lower", "required_upper",
                                       "is_protected"])


def audit_ledger(ledger: Ledger, *, raise_on_failure: bool = False) -> pd.DataFrame:
    """Audit every hidden small count of a ledger against everything it publishes.

    Parameters
    ----------
    ledger : Ledger
    raise_on_failure : bool, default False
        Raise :class:`~iop_research.exceptions.PrivacyViolationError` when a
        count is not protected.

    Returns
    -------
    pandas.DataFrame
        One row per primary (and sensitive) key: ``key, report, table, row, column, lower,
        upper, required_lower, required_upper, is_protected``. ``lower`` and
        ``upper`` bound what a reader can work out; the count is protected
        when they reach the required range.

    Examples
    --------
    A row ``[1, 11, 40]`` with its total 52: hiding 1 and 11 is not enough,
    because ``"*"`` is known to be 0 or at least 11.

    >>> led = Ledger()
    >>> for key, st, v in [("a", "primary", None), ("b", "secondary", None), ("c", "shown", 40),
    ...                    ("t", "shown", 52)]:
    ...     led.add_count(key, value=v, status=st)
    >>> led.add_sum(["a", "b", "c"], "t")
    >>> audit_ledger(led)[["lower", "upper", "is_protected"]].values.tolist()
    [[1, 1, False]]
    """
    view = ledger.view()
    res = audit_cells(view, ledger.relations, min_cell_count=ledger.min_cell_count)
    where = ledger.entries.drop_duplicates("key").set_index("key")[["report", "table", "row", "column"]]
    res = res.join(where, on="key")
    res = res[["key", "report", "table", "row", "column", "lower", "upper", "required_lower", "required_upper",
               "is_protected"]].reset_index(drop=True)
    if raise_on_failure and not res["is_protected"].all():
        bad = res.loc[~res["is_protected"]]
        raise PrivacyViolationError(
            f"{len(bad)} suppressed count(s) can be narrowed by combining published numbers: "
            f"{format_ids(bad['report'] + '/' + bad['table'] + ' ' + bad['row'] + ':' + bad['column'])}. "
            f"Publish them through one Publisher (which adds complementary suppression) or publish fewer totals."
        )
    return res


def audit_ledgers(ledgers: Iterable[Ledger | str | os.PathLike], *, raise_on_failure: bool = False) -> pd.DataFrame:
    """Audit the ledgers of several reports together (a study's reports).

    Parameters
    ----------
    ledgers : iterable of Ledger or path
        Ledgers or JSON files written by :meth:`Ledger.to_json`.
    raise_on_failure : bool, default False

    Returns
    -------
    pandas.DataFrame
        As :func:`audit_ledger`, over the union.
    """
    items = [lg if isinstance(lg, Ledger) else Ledger.from_json(lg) for lg in ledgers]
    if not items:
        return audit_ledger(Ledger(), raise_on_failure=raise_on_failure)
    merged = Ledger(min_cell_count=items[0].min_cell_count)
    for lg in items:
        merged.extend(lg)
    return audit_ledger(merged, raise_on_failure=raise_on_failure)


def audit_table(table: pd.DataFrame, *, raise_on_failure: bool = False) -> pd.DataFrame:
    """Audit a table returned by :func:`~iop_research.privacy.suppress_small_cells`.

    Uses the ledger that suppression stored in ``attrs["suppressed"]`` (the
    shown counts, the markers and the margins readers know).

    Parameters
    ----------
    table : pandas.DataFrame
    raise_on_failure : bool, default False

    Returns
    -------
    pandas.DataFrame
        As :func:`audit_ledger`.

    Raises
    ------
    DataValidationError
        The table carries no suppression record.
    """
    m = table.attrs.get("suppressed")
    led = getattr(m, "ledger", None)
    if led is None:
        raise DataValidationError(
            "audit_table: the table carries no suppression ledger. Pass the output of "
            "privacy.suppress_small_cells(...) (or audit a Publisher's ledger with audit_ledger)."
        )
    return audit_ledger(led, raise_on_failure=raise_on_failure)
