"""De-identified export of the canonical tables: salted id hashes, per-patient date shifts.

:func:`deidentify` (re-exported as ``iop_research.privacy.deidentify``) turns an
:class:`~iop_research.data.io.IOPData` into one that can leave the analysis
environment for methods work, while every interval the analyses use is
unchanged.

Conventions
-----------
Identifiers
    ``patient_id`` and ``episode_id`` (every table) become the first 20 hex
    digits of ``SHA-256(salt + 0x1f + kind + 0x1f + value)`` with kind
    ``patient`` or ``episode``, prefixed ``p``/``e``. The salt is the user's
    secret: it is never stored in the output (not in a column, not in
    ``attrs``); without it the hashes cannot be linked back to the source ids
    (a dictionary attack would need the salt). Salts shorter than
    :data:`MIN_SALT_LENGTH` characters are refused.
Dates
    Every date of one patient moves by the same whole number of days (drawn
    once per patient from ``seed``, uniform on ``-max_shift_days .. -1`` and
    ``1 .. max_shift_days``; never 0), so lengths of stay, days from admission
    to events, dispensing gaps, session days and the observation end relative
    to admission are unchanged, while calendar dates no longer match records
    elsewhere [1]_. Contract date columns and extra ``datetime64`` columns of
    tables with ``patient_id`` are shifted.
Birth year
    Shifted by as many years as the patient's latest date moved across a
    year boundary (so age at the latest date is unchanged), then capped:
    when that age is above 89, ``birth_year`` is set to the *cap year*,
    ``year(latest date) - 90``, so that no age above 90 can be derived and
    an age of 90 reads "90 or older" (HIPAA Safe Harbor [2]_). A patient
    without any dated row is capped against the latest date of the extract
    (birth year unshifted otherwise). Ages at
    earlier dates may differ by one year from the source, as for any
    date-shifted data.
Free text
    Columns outside the data contract with text (object or string dtype),
    e.g. ``notes``, are dropped, and so are the columns named in
    ``free_text_cols``. Dropped columns are listed in each table's
    ``attrs["deidentify"]["dropped_columns"]``. Contract text columns
    (``program``, ``race``, ``ethnicity``, ``substance``) are kept.
Simulator truth
    ``truth`` is set to None (it holds the source ids and latent dates).

References
----------
.. [1] Hripcsak G, Mirhaji P, Low AF, Malin BA. Preserving temporal relations
   in clinical data while maintaining privacy. JAMIA 2016;23:1040-5.
.. [2] U.S. Department of Health and Human Services (2012). Guidance
   Regarding Methods for De-identification of Protected Health Information in
   Accordance with the HIPAA Privacy Rule, section 2.2.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids
from iop_research.data.schema import TABLE_COLUMNS, TABLES, Col, column_kinds

__all__ = ["deidentify", "hash_identifier", "MIN_SALT_LENGTH", "AGE_CAP_YEARS"]

#: Shortest salt accepted by :func:`deidentify` (characters).
MIN_SALT_LENGTH = 16
#: Ages above 89 are collapsed to this age ("90 or older").
AGE_CAP_YEARS = 90
_HEX_DIGITS = 20


def hash_identifier(values, *, salt: str, kind: str) -> np.ndarray:
    """Salted SHA-256 pseudonyms of identifier values.

    Parameters
    ----------
    values : array-like
        Identifiers (converted to ``str``); missing values stay missing.
    salt : str
        Secret salt (see :func:`deidentify`).
    kind : {"patient", "episode"}
        Domain separator, so equal patient and episode ids hash differently.

    Returns
    -------
    numpy.ndarray of object
        ``"p"``/``"e"`` followed by 20 hex digits (80 bits), None where missing.

    Examples
    --------
    >>> hash_identifier(["P1", None], salt="a-long-secret-salt", kind="patient")[1] is None
    True
    """
    prefix = {"patient": "p", "episode": "e"}[kind]
    arr = pd.Series(values, dtype=object)
    codes, uniques = pd.factorize(arr, use_na_sentinel=True)
    key = salt.encode("utf-8") + b"\x1f" + kind.encode() + b"\x1f"
    hashed = np.array(
        [prefix + hashlib.sha256(key + str(v).encode("utf-8")).hexdigest()[:_HEX_DIGITS] for v in uniques] + [None],
        dtype=object,
    )
    if len(set(hashed[:-1].tolist())) != len(uniques):  # pragma: no cover - 80-bit collision
        raise ModelSpecificationError("deidentify: two identifiers hash alike; use another salt.")
    return hashed[np.where(codes < 0, len(uniques), codes)]


def _check_args(data, salt, max_shift_days):
    from iop_research.data.io import IOPData

    if not isinstance(data, IOPData):
        raise ModelSpecificationError(
            f"deidentify expects an IOPData (read_data(...) or load_demo()), got {type(data).__name__}."
        )
    if not isinstance(salt, str) or len(salt) < MIN_SALT_LENGTH:
        got = "an empty salt" if not salt else f"a salt of {len(salt) if isinstance(salt, str) else '?'} characters"
        raise ModelSpecificationError(
            f"deidentify got {got}; a salt of at least {MIN_SALT_LENGTH} characters is required so the hashed ids "
            "cannot be reversed by hashing candidate ids. Generate one with secrets.token_hex(16), keep it "
            "outside the exported data, and reuse it to export later extracts consistently."
        )
    if isinstance(max_shift_days, bool) or not isinstance(max_shift_days, (int, np.integer)) or max_shift_days < 1:
        raise ModelSpecificationError(
            f"max_shift_days must be a positive whole number of days, got {max_shift_days!r} (default 180)."
        )


def _date_cols(table: str, df: pd.DataFrame) -> list[str]:
    kinds = column_kinds(table)
    cols = []
    for col in df.columns:
        if kinds.get(col) == "date":
            if not (pd.api.types.is_datetime64_dtype(df[col].dtype) or df[col].isna().all()):
                raise DataValidationError(
                    f"deidentify: {table}.{col} holds {df[col].dtype} values, not dates. Convert the tables "
                    "first with IOPData.coerce() (or read them with read_data)."
                )
            cols.append(col)
        elif col not in kinds and pd.api.types.is_datetime64_any_dtype(df[col].dtype):
            cols.append(col)
    return cols


def _free_text(table: str, df: pd.DataFrame, named: set[str]) -> list[str]:
    contract = {c[0] for c in TABLE_COLUMNS[table]}
    out = []
    for col in df.columns:
        if col in named:
            out.append(col)
        elif col not in contract and (df[col].dtype == object or pd.api.types.is_string_dtype(df[col].dtype)):
            out.append(col)
    return out


def deidentify(
    data,
    *,
    salt: str,
    seed: int | np.random.Generator,
    max_shift_days: int = 180,
    free_text_cols: Sequence[str] | None = None,
):
    """A de-identified copy of the tables: hashed ids, per-patient date shifts, capped ages, no free text.

    Parameters
    ----------
    data : IOPData
        Tables with canonical dtypes (dates as ``datetime64``; see
        :meth:`~iop_research.data.io.IOPData.coerce`).
    salt : str
        Secret of at least :data:`MIN_SALT_LENGTH` characters, supplied by the
        user and never written to the output. The same salt gives the same
        pseudonyms across extracts (so they can be linked by whoever holds it).
    seed : int or numpy.random.Generator
        Source of the per-patient date shifts (drawn for the patients in
        sorted id order, so row order does not matter).
    max_shift_days : int, default 180
        Largest shift in days, either direction.
    free_text_cols : sequence of str, optional
        Further columns to drop wherever they occur (contract columns
        included, e.g. ``["program"]`` to hide site names). Non-contract text
        columns are always dropped.

    Returns
    -------
    IOPData
        New tables (inputs unchanged), same columns (minus dropped ones) and
        rows in the same order; ``truth`` None. Each table's
        ``attrs["deidentify"]`` is ``{"dropped_columns": [...],
        "max_shift_days": ..., "age_cap_years": 90}`` (never the salt).

    Raises
    ------
    ModelSpecificationError
        ``data`` is not an IOPData; empty or short salt; bad ``max_shift_days``.
    DataValidationError
        Missing ``patient_id`` values in a table with dates (their rows could
        not be shifted consistently), or dates stored as text.

    Notes
    -----
    The conventions (hash, shift, birth-year cap, free text) are in the
    module docstring. There is no R counterpart; the shift is the
    patient-level date offset of [1]_.

    References
    ----------
    .. [1] Hripcsak G, et al. Preserving temporal relations in clinical data
       while maintaining privacy. JAMIA 2016;23:1040-5.
    .. [2] HHS (2012). HIPAA Safe Harbor guidance, section 2.2.

    Examples
    --------
    >>> import pandas as pd
    >>> from iop_research.data.io import IOPData
    >>> from iop_research.data.schema import empty_table
    >>> t = {n: empty_table(n) for n in ["patients", "admissions", "sessions", "medications", "events", "observation"]}
    >>> t["patients"] = pd.DataFrame({"patient_id": ["P1"], "birth_year": [1925], "sex": ["male"],
    ...                               "race": [None], "ethnicity": [None], "notes": ["lives on Elm St"]})
    >>> t["observation"] = pd.DataFrame({"patient_id": ["P1"], "observation_end": pd.to_datetime(["2021-06-30"])})
    >>> out = deidentify(IOPData(**t), salt="correct horse battery staple", seed=1)
    >>> out.patients.columns.tolist(), out.patients.attrs["deidentify"]["dropped_columns"]
    (['patient_id', 'birth_year', 'sex', 'race', 'ethnicity'], ['notes'])
    >>> int(out.observation.observation_end.dt.year.iloc[0] - out.patients.birth_year.iloc[0])
    90
    """
    _check_args(data, salt, max_shift_days)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    named = set(free_text_cols or ())
    tables = data.tables()

    # one shift per patient, in sorted id order
    ids: set[str] = set()
    for name, df in tables.items():
        if Col.patient_id in df.columns:
            missing = df[Col.patient_id].isna()
            if missing.any() and _date_cols(name, df):
                raise DataValidationError(
                    f"deidentify: {name} has {int(missing.sum())} row(s) without patient_id (rows "
                    f"{format_ids(np.flatnonzero(missing.to_numpy()))}), so their dates cannot be shifted with "
                    "the patient's. Fill or remove those rows (IOPData.validate() lists them)."
                )
            ids.update(df[Col.patient_id].dropna().astype(str).unique().tolist())
    order = sorted(ids)
    size = rng.integers(1, int(max_shift_days) + 1, size=len(order))
    sign = np.where(rng.random(len(order)) < 0.5, -1, 1)
    shift = pd.Series((size * sign).astype("int64"), index=pd.Index(order, dtype=object))

    out: dict[str, pd.DataFrame] = {}
    latest: list[pd.DataFrame] = []
    for name in TABLES:
        df = tables[name]
        drop = _free_text(name, df, named)
        new = df.drop(columns=drop)
        date_cols = _date_cols(name, new)
        if Col.patient_id in new.columns:
            raw = new[Col.patient_id].astype(object)
            pid = raw.where(raw.isna(), raw.astype(str))
            days = shift.reindex(pid.to_numpy()).fillna(0).to_numpy(dtype="int64")
            offset = pd.to_timedelta(days, unit="D")
            for col in date_cols:
                if not pd.api.types.is_datetime64_any_dtype(new[col].dtype):
                    continue  # an all-missing column of another dtype: nothing to shift
                new[col] = (new[col] + offset).astype(new[col].dtype)
                latest.append(pd.DataFrame({"pid": pid.to_numpy(), "new": new[col].to_numpy(),
                                            "old": df[col].to_numpy()}).dropna())
            new[Col.patient_id] = hash_identifier(new[Col.patient_id], salt=salt, kind="patient")
        if Col.episode_id in new.columns:
            new[Col.episode_id] = hash_identifier(new[Col.episode_id], salt=salt, kind="episode")
        new.attrs = {"deidentify": {"dropped_columns": drop, "max_shift_days": int(max_shift_days),
                                    "age_cap_years": AGE_CAP_YEARS}}
        out[name] = new

    # birth year: keep age at the latest date, then cap ages above 89
    pats = out["patients"]
    if len(pats) and Col.birth_year in pats.columns:
        by_src = tables["patients"][Col.patient_id].astype(str).to_numpy()
        birth = pats[Col.birth_year]
        if latest:
            allv = pd.concat(latest, ignore_index=True)
            last = allv.sort_values("new").groupby("pid").tail(1).set_index("pid")
            year_old = last["old"].dt.year.reindex(by_src).to_numpy(dtype=float)
            year_new = last["new"].dt.year.reindex(by_src).to_numpy(dtype=float)
        else:
            year_old = year_new = np.full(len(pats), np.nan)
        has = ~np.isnan(year_new) & birth.notna().to_numpy()
        b = birth.to_numpy(dtype=float, na_value=np.nan).copy()
        b[has] = b[has] + (year_new[has] - year_old[has])
        # patients without any date: cap against the latest date of the whole extract
        ref = year_new.copy()
        if latest and np.isnan(ref).any():
            ref[np.isnan(ref)] = float(pd.concat(latest, ignore_index=True)["new"].max().year)
        over = ~np.isnan(ref) & ~np.isnan(b) & ((ref - b) > AGE_CAP_YEARS - 1)
        b[over] = ref[over] - AGE_CAP_YEARS
        if pd.api.types.is_integer_dtype(birth.dtype) and not np.isnan(b).any():
            new_birth = pd.Series(b.astype(birth.dtype), index=birth.index)
        else:
            new_birth = pd.Series(b, index=birth.index).astype(birth.dtype if birth.dtype != object else "float64")
        pats = pats.copy()
        pats[Col.birth_year] = new_birth
        pats.attrs = out["patients"].attrs
        out["patients"] = pats

    from iop_research.data.io import IOPData

    return IOPData(**out, truth=None)
