"""Cohort selection: declarative inclusion/exclusion criteria with an attrition table.

Every row that a pipeline step removes is counted, with its reason, in one
attrition table (design rule: never drop rows silently). :class:`Attrition`
is the accumulator that the steps share: :func:`select_cohort` records its
criteria in it, and so do :func:`iop_research.derive.outcomes.relapse_outcomes`
(episodes without follow-up after the origin) and
:func:`iop_research.derive.frames.landmark_frame` (episodes not at risk at the
landmark). Other steps (e.g. sessions that fall outside every episode) record
their own table's chain with :meth:`Attrition.start` / :meth:`Attrition.record`.

Attrition table
---------------
One row per step, per table chain, in the order recorded::

    table, step, reason, rows_removed, patients_removed, rows_remaining, patients_remaining

The first row of each chain is the input (``step == "input"``, nothing removed).
Within a chain, ``rows_remaining`` of a row equals ``rows_remaining`` of the
previous row minus ``rows_removed``, so the counts always add up to the input.
``patients_removed`` counts patients who had rows before the step and have none
after it (a patient who loses one of two episodes is not removed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from iop_research.exceptions import ModelSpecificationError, format_ids
from iop_research.data.schema import Col

__all__ = ["Attrition", "CohortDefinition", "select_cohort", "ATTRITION_COLUMNS"]

#: Fixed columns of an attrition table.
ATTRITION_COLUMNS = (
    "table",
    "step",
    "reason",
    "rows_removed",
    "patients_removed",
    "rows_remaining",
    "patients_remaining",
)


class Attrition:
    """Accumulator of the rows each pipeline step removes, by table chain.

    This is the one deliberately mutable object of the pipeline: steps that
    remove rows take ``attrition=None`` and, when given an ``Attrition``,
    append one record per reason. Inputs (data frames) are never mutated.

    Parameters
    ----------
    patient_col : str, default "patient_id"
        Column holding the person identifier in the recorded frames.

    See Also
    --------
    select_cohort : records one step per inclusion criterion.

    References
    ----------
    .. [1] von Elm E, et al. The Strengthening the Reporting of Observational
       Studies in Epidemiology (STROBE) statement. Lancet 2007;370:1453-7
       (item 13: numbers at each stage, reasons for non-participation).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"episode_id": ["E1", "E2", "E3"], "patient_id": ["P1", "P1", "P2"],
    ...                    "age": [30, 17, 45]})
    >>> att = Attrition()
    >>> att.start(df, table="episodes")
    >>> kept = att.exclude(df, df["age"] < 18, step="min_age", reason="age < 18", table="episodes")
    >>> att.to_frame()[["step", "rows_removed", "patients_removed", "rows_remaining"]]
          step  rows_removed  patients_removed  rows_remaining
    0    input             0                 0               3
    1  min_age             1                 0               2
    """

    def __init__(self, *, patient_col: str = Col.patient_id):
        self.patient_col = patient_col
        self._records: list[dict] = []
        self._state: dict[str, tuple[int, set]] = {}

    # -- chains ---------------------------------------------------------------
    def has_table(self, table: str) -> bool:
        """Whether a chain for ``table`` has been started."""
        return table in self._state

    def start(self, frame: pd.DataFrame, *, table: str = "episodes", reason: str = "input rows") -> None:
        """Start the chain of ``table`` with ``frame`` as its input (first row, nothing removed).

        Raises
        ------
        ModelSpecificationError
            If the chain was already started, or ``frame`` lacks the patient column.
        """
        if table in self._state:
            raise ModelSpecificationError(
                f"Attrition: the chain of table {table!r} was already started. Record further "
                "steps with exclude()/record(), or use another table name."
            )
        patients = self._patients(frame, table)
        self._state[table] = (len(frame), patients)
        self._records.append(
            dict(table=table, step="input", reason=reason, rows_removed=0, patients_removed=0,
                 rows_remaining=len(frame), patients_remaining=len(patients))
        )

    def exclude(self, frame: pd.DataFrame, mask, *, step: str, reason: str,
                table: str = "episodes") -> pd.DataFrame:
        """Remove the rows of ``frame`` where ``mask`` is True, record them, return the rest.

        ``frame`` must be the rows remaining in the chain (the chain is started
        with it when not yet started).

        Parameters
        ----------
        frame : pandas.DataFrame
            Rows remaining before the step.
        mask : array-like of bool
            True for rows to remove. Missing values raise, so that nothing is
            dropped (or kept) by accident.
        step, reason : str
            Short step name and a human-readable reason.
        table : str, default "episodes"

        Returns
        -------
        pandas.DataFrame
            ``frame`` without the removed rows (a new frame; index kept).

        Raises
        ------
        ModelSpecificationError
            If ``mask`` has missing values or the wrong length, or ``frame`` has
            a different number of rows than the chain holds.
        """
        mask = pd.Series(mask, index=frame.index) if not isinstance(mask, pd.Series) else mask
        if len(mask) != len(frame):
            raise ModelSpecificationError(
                f"Attrition.exclude({step!r}): mask has {len(mask)} values for {len(frame)} rows."
            )
        if mask.isna().any():
            raise ModelSpecificationError(
                f"Attrition.exclude({step!r}): mask has missing values; decide explicitly whether "
                "rows with missing values are removed (fillna(True/False))."
            )
        mask = mask.astype(bool).to_numpy()
        if table not in self._state:
            self.start(frame, table=table)
        n_before, _ = self._state[table]
        if n_before != len(frame):
            raise ModelSpecificationError(
                f"Attrition.exclude({step!r}): the chain of table {table!r} holds {n_before} rows "
                f"but the frame has {len(frame)}. Pass the rows remaining after the previous step."
            )
        kept = frame.loc[~mask].copy()
        self.record(kept, step=step, reason=reason, table=table)
        return kept

    def record(self, remaining: pd.DataFrame, *, step: str, reason: str, table: str = "episodes") -> None:
        """Record a step from the frame of rows that remain after it.

        Raises
        ------
        ModelSpecificationError
            If the chain was not started, or ``remaining`` has more rows than the chain.
        """
        if table not in self._state:
            raise ModelSpecificationError(
                f"Attrition.record({step!r}): start the chain of table {table!r} first "
                "with Attrition.start(input_frame, table=...)."
            )
        n_before, pats_before = self._state[table]
        pats_after = self._patients(remaining, table)
        if len(remaining) > n_before:
            raise ModelSpecificationError(
                f"Attrition.record({step!r}): {len(remaining)} rows remain but only {n_before} "
                f"were in the chain of table {table!r}; a step may only remove rows."
            )
        self._state[table] = (len(remaining), pats_after)
        self._records.append(
            dict(table=table, step=step, reason=reason, rows_removed=n_before - len(remaining),
                 patients_removed=len(pats_before - pats_after), rows_remaining=len(remaining),
                 patients_remaining=len(pats_after))
        )

    def extend(self, other: "Attrition") -> None:
        """Append the records of ``other`` (chains of tables not yet held here)."""
        for table in other._state:
            if table in self._state:
                raise ModelSpecificationError(
                    f"Attrition.extend: both accumulators hold a chain for table {table!r}."
                )
        self._records.extend(dict(r) for r in other._records)
        self._state.update({k: (n, set(p)) for k, (n, p) in other._state.items()})

    def to_frame(self) -> pd.DataFrame:
        """The attrition table (columns :data:`ATTRITION_COLUMNS`), one row per record."""
        out = pd.DataFrame(self._records, columns=list(ATTRITION_COLUMNS))
        for col in ATTRITION_COLUMNS[3:]:
            out[col] = out[col].astype("int64")
        return out

    def __repr__(self) -> str:
        return f"Attrition({len(self._records)} records, tables={list(self._state)})"

    def _patients(self, frame: pd.DataFrame, table: str) -> set:
        if self.patient_col not in frame.columns:
            raise ModelSpecificationError(
                f"Attrition: table {table!r} has no column {self.patient_col!r}; pass "
                "Attrition(patient_col=...) naming the person identifier."
            )
        return set(frame[self.patient_col].dropna().unique().tolist())


@dataclass(frozen=True)
class CohortDefinition:
    """Declarative inclusion criteria (``None`` = criterion not applied).

    Criteria are applied in this order, each one recorded as a step of the
    attrition table: ``min_age``, ``max_age``, ``primary_substances``,
    ``programs``, ``admit_from``, ``admit_to``, ``first_episode_only``,
    ``min_followup_days``.

    Parameters
    ----------
    min_age, max_age : float, optional
        Inclusive bounds on age at admission, years. Age is the ``age`` column
        when present, else admission year minus ``birth_year``.
    primary_substances : sequence of str, optional
        Keep episodes whose ``primary_substance`` is one of these.
    programs : sequence of str, optional
        Keep episodes of these programmes (``program``).
    admit_from, admit_to : date-like, optional
        Inclusive bounds on ``admit_date``.
    first_episode_only : bool, default False
        Keep each patient's earliest episode among the rows remaining at this
        step (first *eligible* episode); ties on ``admit_date`` broken by
        ``episode_id``.
    min_followup_days : float, optional
        Keep episodes with at least this much *potential* follow-up (days from
        the origin to the end of observation, column ``followup_days`` from
        :func:`iop_research.derive.outcomes.relapse_outcomes`; or
        ``observation_end - admit_date``). Potential, not observed, follow-up is
        used so that early events do not remove episodes (which would bias
        survival estimates).
    """

    min_age: float | None = None
    max_age: float | None = None
    primary_substances: Sequence[str] | None = None
    programs: Sequence[str] | None = None
    admit_from: object = None
    admit_to: object = None
    first_episode_only: bool = False
    min_followup_days: float | None = None


def _age(frame: pd.DataFrame) -> pd.Series:
    if "age" in frame.columns:
        return frame["age"]
    if Col.birth_year in frame.columns and Col.admit_date in frame.columns:
        return pd.to_datetime(frame[Col.admit_date]).dt.year - frame[Col.birth_year]
    raise ModelSpecificationError(
        "select_cohort: an age criterion needs an 'age' column, or 'birth_year' and "
        "'admit_date'. Use survival_frame(...) (which adds age) or merge patients first."
    )


def _need(frame: pd.DataFrame, col: str, criterion: str) -> pd.Series:
    if col not in frame.columns:
        raise ModelSpecificationError(
            f"select_cohort: criterion {criterion} needs column {col!r}, which the frame lacks "
            f"(columns: {format_ids(frame.columns, 12)}). "
            + (f"Merge it from build_episodes(...) first, e.g. frame.merge(episodes[['episode_id', '{col}']], "
               "on='episode_id')." if col == Col.admit_date else "Pass episodes or a survival_frame, which carry it.")
        )
    return frame[col]


def _followup(frame: pd.DataFrame) -> pd.Series:
    if "followup_days" in frame.columns:
        return frame["followup_days"]
    if Col.observation_end in frame.columns and Col.admit_date in frame.columns:
        return (pd.to_datetime(frame[Col.observation_end]) - pd.to_datetime(frame[Col.admit_date])).dt.days
    raise ModelSpecificationError(
        "select_cohort: min_followup_days needs a 'followup_days' column (relapse_outcomes / "
        "survival_frame add it) or 'observation_end' and 'admit_date'."
    )


def select_cohort(frame_or_episodes: pd.DataFrame, definition: CohortDefinition, *,
                  attrition: Attrition | None = None, table: str = "episodes"
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply inclusion criteria, recording every removed row with its reason.

    Parameters
    ----------
    frame_or_episodes : pandas.DataFrame
        One row per episode (episodes, or a frame from :mod:`iop_research.derive.frames`)
        with ``episode_id`` and ``patient_id`` and the columns the criteria need.
    definition : CohortDefinition
    attrition : Attrition, optional
        Accumulator to continue (e.g. one that already holds the outcomes
        exclusions); a new one is used when omitted. The chain ``table`` is
        started with the input when it has not been started.
    table : str, default "episodes"
        Name of the chain in the attrition table.

    Returns
    -------
    cohort : pandas.DataFrame
        The rows kept (index reset), same columns as the input.
    attrition : pandas.DataFrame
        Columns ``table, step, reason, rows_removed, patients_removed,
        rows_remaining, patients_remaining``; first row of the chain = input.

    Raises
    ------
    ModelSpecificationError
        If a criterion needs a column the frame lacks, or ``min_age > max_age``.

    References
    ----------
    .. [1] von Elm E, et al. STROBE statement. Lancet 2007;370:1453-7.

    Examples
    --------
    >>> import pandas as pd
    >>> eps = pd.DataFrame({"episode_id": ["E1", "E2", "E3", "E4"],
    ...                     "patient_id": ["P1", "P1", "P2", "P3"],
    ...                     "admit_date": pd.to_datetime(["2020-01-01", "2020-06-01", "2020-02-01", "2020-03-01"]),
    ...                     "age": [30, 30, 17, 50], "primary_substance": ["opioids"] * 3 + ["alcohol"]})
    >>> cohort, att = select_cohort(eps, CohortDefinition(min_age=18, primary_substances=["opioids"],
    ...                                                   first_episode_only=True))
    >>> cohort["episode_id"].tolist()
    ['E1']
    >>> att[["step", "rows_removed", "rows_remaining", "patients_remaining"]]
                     step  rows_removed  rows_remaining  patients_remaining
    0               input             0               4                   3
    1             min_age             1               3                   2
    2  primary_substances             1               2                   1
    3  first_episode_only             1               1                   1
    """
    d = definition
    if d.min_age is not None and d.max_age is not None and d.min_age > d.max_age:
        raise ModelSpecificationError(
            f"CohortDefinition: min_age={d.min_age} is above max_age={d.max_age}; swap them."
        )
    for col in (Col.episode_id, Col.patient_id):
        _need(frame_or_episodes, col, "(identifiers)")
    att = attrition if attrition is not None else Attrition()
    cur = frame_or_episodes.copy()
    if not att.has_table(table):
        att.start(cur, table=table)

    def step(name, reason, drop):
        nonlocal cur
        drop = pd.Series(drop, index=cur.index)
        # a missing value cannot show that a row is eligible: it is excluded, and counted
        cur = att.exclude(cur, drop.fillna(True).astype(bool), step=name, reason=reason, table=table)

    if d.min_age is not None:
        age = _age(cur)
        step("min_age", f"age at admission below {d.min_age} or missing", ~(age >= d.min_age))
    if d.max_age is not None:
        age = _age(cur)
        step("max_age", f"age at admission above {d.max_age} or missing", ~(age <= d.max_age))
    if d.primary_substances is not None:
        vals = list(d.primary_substances)
        s = _need(cur, Col.primary_substance, "primary_substances")
        step("primary_substances", f"primary substance not in {vals}", ~s.isin(vals))
    if d.programs is not None:
        vals = list(d.programs)
        s = _need(cur, Col.program, "programs")
        step("programs", f"program not in {vals}", ~s.isin(vals))
    if d.admit_from is not None:
        s = pd.to_datetime(_need(cur, Col.admit_date, "admit_from"))
        lo = pd.Timestamp(d.admit_from)
        step("admit_from", f"admitted before {lo.date()}", ~(s >= lo))
    if d.admit_to is not None:
        s = pd.to_datetime(_need(cur, Col.admit_date, "admit_to"))
        hi = pd.Timestamp(d.admit_to)
        step("admit_to", f"admitted after {hi.date()}", ~(s <= hi))
    if d.first_episode_only:
        s = pd.to_datetime(_need(cur, Col.admit_date, "first_episode_only"))
        order = (cur.assign(_adm=s).sort_values([Col.patient_id, "_adm", Col.episode_id]))
        first_idx = order.drop_duplicates(Col.patient_id, keep="first").index
        step("first_episode_only", "not the patient's first eligible episode", ~cur.index.isin(first_idx))
    if d.min_followup_days is not None:
        fu = _followup(cur)
        step("min_followup_days", f"potential follow-up below {d.min_followup_days} days or unknown",
             ~(fu >= d.min_followup_days))
    out = cur.reset_index(drop=True)
    table_df = att.to_frame()
    return out, table_df.loc[table_df["table"] == table].reset_index(drop=True)
