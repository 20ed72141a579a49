"""Secondary (complementary) suppression chosen with the auditor in the loop.

Hiding small counts is not enough when totals are published: a hidden count
can be worked out from the others. Secondary suppression hides further counts
so that no primary count can be narrowed below its protection interval (see
:mod:`iop_research.privacy.audit` for the reader's knowledge and the rule).

Method
------
The cells to hide are chosen to keep the suppressed total small, as in
sdcTable's and τ-ARGUS's optimal and hypercube methods [1]_ [2]_, by a
cost-driven search with exact checks:

1. hide the primary cells (``1 .. min_cell_count - 1``);
2. audit (MILP); while a primary cell is not protected, hide the cheapest
   published cell that protects it (tried in order of cost, each checked by
   the auditor, first the ``max_candidates`` cheapest, then the dearer ones);
   if no single cell does, hide the one that widens the cell's feasible range
   most per unit of cost;
3. prune: try to show each secondary cell again, most expensive first, and
   keep it shown when the audit still passes for every primary cell.

The result is protected by construction (the loop ends only when the auditor
passes) and locally minimal (no secondary cell can be shown again alone); it
is not guaranteed to be the global minimum of the cost, which is NP-hard [1]_.
The cost of a cell is its value plus one (so that zeros are not free), and
totals cost more than inner cells (they are hidden last).

References
----------
.. [1] Fischetti M, Salazar-González JJ (2001). Solving the cell suppression
   problem on tabular data with linear constraints. *Management Science*
   47(7):1008-1027.
.. [2] Hundepool A, et al. (2012). *Statistical Disclosure Control*, section
   5.3 (secondary cell suppression). Wiley.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from iop_research.exceptions import ModelSpecificationError, PrivacyViolationError
from iop_research.privacy.audit import Reader, Relation

__all__ = ["protect_cells"]


def protect_cells(
    values: Mapping[str, int | None],
    relations: Sequence[Relation],
    *,
    min_cell_count: int = 11,
    published: Mapping[str, tuple[str, int | None]] | None = None,
    cost: Mapping[str, float] | None = None,
    locked: Iterable[str] = (),
    complementary: bool = True,
    max_candidates: int = 12,
    on_unprotectable: str = "raise",
) -> tuple[set[str], set[str]]:
    """Choose which new counts to hide.

    Parameters
    ----------
    values : mapping of str to int or None
        True values of the counts about to be published, by key (None: not
        published, e.g. a missing cell; such keys stay unknown to readers).
    relations : sequence of Relation
        Relations readers know, over these keys and those of ``published``.
    min_cell_count : int, default 11
    published : mapping of str to (status, value), optional
        The reader's view of counts published before (a ledger's
        :meth:`~iop_research.privacy.audit.Ledger.view`); fixed.
    cost : mapping of str to float, optional
        Cost of hiding each key; default ``value + 1``.
    locked : iterable of str
        Keys that must stay shown (e.g. a grand total published elsewhere).
    complementary : bool, default True
        With False only primary cells are hidden (no audit).
    max_candidates : int, default 12
        Cells tried per step, cheapest first.
    on_unprotectable : {"raise", "hide"}, default "raise"
        What to do when hiding every related new count cannot protect a
        primary count (counts fixed by ``published`` or ``locked`` give it
        away): raise, or keep everything related hidden and go on (the
        auditor then reports the count as not protected).

    Returns
    -------
    (hidden, primary) : tuple of set of str
        Keys to hide, and the primary ones among them.

    Raises
    ------
    PrivacyViolationError
        A primary count cannot be protected by hiding new counts (what was
        published before already gives it away).

    Examples
    --------
    >>> from iop_research.privacy.audit import Relation
    >>> rel = [Relation((("a", 1.0), ("b", 1.0), ("c", 1.0), ("t", -1.0)), 0.0, 0.0)]
    >>> hidden, primary = protect_cells({"a": 1, "b": 11, "c": 40, "t": 52}, rel, cost={"t": 1e6})
    >>> sorted(hidden), sorted(primary)
    (['a', 'c'], ['a'])
    """
    k = int(min_cell_count)
    published = dict(published or {})
    locked = set(locked)
    primary = {key for key, v in values.items() if v is not None and 1 <= v < k}
    view: dict[str, tuple[str, int | None]] = dict(published)
    for key, v in values.items():
        if key in published and published[key][0] == "shown":
            continue  # already public: nothing to decide
        if v is None:
            view[key] = ("unpublished", None)
        else:
            view[key] = ("primary", None) if key in primary else ("shown", int(v))
    for r in relations:
        for key, _ in r.coefs:
            view.setdefault(key, ("unpublished", None))
    hidden = set(primary)
    if not complementary or not primary and not any(st in ("primary", "sensitive") for st, _ in published.values()):
        return hidden, primary
    related = {k for r in relations for k, _ in r.coefs}
    if not any(k in related for k in values):
        return hidden, primary  # nothing links the new counts to anything: markers alone say all
    costs = {key: (float(v) + 1.0 if v is not None else 0.0) for key, v in values.items()}
    costs.update(cost or {})
    hideable = {key for key, v in values.items()
                if v is not None and key not in primary and key not in locked
                and not (key in published and published[key][0] == "shown")}
    neighbours: dict[str, set[str]] = {}
    for r in relations:
        keys = [key for key, _ in r.coefs]
        for key in keys:
            neighbours.setdefault(key, set()).update(keys)

    if on_unprotectable not in ("raise", "hide"):
        raise ModelSpecificationError(f"on_unprotectable must be 'raise' or 'hide', got {on_unprotectable!r}.")
    reader = Reader(view, relations, k)
    added: list[str] = []
    gave_up: set[str] = set()
    f = reader.first_failing()
    while f is not None:
        # frontier: shown, hideable cells in a relation with f or with a hidden cell linked to f
        frontier: set[str] = set()
        seen, stack = {f}, [f]
        while stack:
            cur = stack.pop()
            for nb in neighbours.get(cur, ()):
                if nb in seen:
                    continue
                seen.add(nb)
                if reader.view[nb][0] == "shown":
                    if nb in hideable:
                        frontier.add(nb)
                else:
                    stack.append(nb)
        ordered = sorted(frontier, key=lambda c: (costs.get(c, 0.0), c))
        cands = ordered[:max_candidates]
        if not cands and on_unprotectable == "hide":
            gave_up.add(f)
            f = reader.first_failing(skip=gave_up)
            continue
        if not cands:
            raise PrivacyViolationError(
                f"The small count {f!r} can be worked out from counts published before, and hiding more new "
                f"counts cannot prevent it. Publish fewer totals, or publish this table without the "
                f"related totals."
            )
        lo0, hi0, _ = reader.bounds(f)
        chosen, best = None, None
        for c in cands:
            reader.set(c, "secondary")
            lo, hi, ok = reader.bounds(f)
            reader.set(c, "shown", int(values[c]))
            if ok:
                chosen = c
                break
            gain = ((hi - lo) - (hi0 - lo0)) / max(costs.get(c, 0.0), 1e-9)
            if best is None or gain > best[0]:
                best = (gain, c)
        if chosen is None:  # no cheap cell alone: is there a dearer one (e.g. a total) that is enough alone?
            for c in ordered[max_candidates:]:
                reader.set(c, "secondary")
                ok = reader.bounds(f)[2]
                reader.set(c, "shown", int(values[c]))
                if ok:
                    chosen = c
                    break
        if chosen is None:
            chosen = best[1] if best is not None and best[0] > 0 else cands[0]
        reader.set(chosen, "secondary")
        hidden.add(chosen)
        added.append(chosen)
        f = reader.first_failing(order=[f], skip=gave_up)
    # prune: show again what is not needed, most expensive first
    for c in sorted(added, key=lambda c: (-costs.get(c, 0.0), c)):
        if gave_up:
            break  # keep everything around a count that could not be protected
        reader.set(c, "shown", int(values[c]))
        if reader.first_failing() is not None:
            reader.set(c, "secondary")
        else:
            hidden.discard(c)
    return hidden, primary
