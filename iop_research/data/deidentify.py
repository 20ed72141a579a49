"""De-identified export of the canonical tables: keyed id hashes, per-patient date shifts with no
common anchor, capped ages, only contract columns.

:func:`deidentify` (re-exported as ``iop_research.privacy.deidentify``) turns an
:class:`~iop_research.data.io.IOPData` into one that can leave the analysis
environment for methods work. The export passes ``validate``.

Conventions
-----------
Identifiers
    ``patient_id`` and ``episode_id`` (every table) become ``"p"``/``"e"`` and
    the first 20 hex digits of ``HMAC-SHA256(key=salt, kind + 0x1f + value)``
    [3]_. The salt is the user's secret, never stored in the output; it must
    carry real entropy (:func:`check_salt`: at least 16 characters, 8 distinct,
    an estimated 50 bits, not a repeated or sequential pattern, not only
    digits): ``secrets.token_hex(16)`` is the way to make one.
Dates
    Every date of one patient moves by the same whole number of days ``s``,
    uniform on ``-max_shift_days .. -1`` and ``1 .. max_shift_days`` [1]_. A
    shift alone leaves a common anchor: most patients share the data cut-off
    as ``observation_end``, so ``s = observation_end' - cut-off`` would give
    every date back. Therefore a patient whose ``observation_end`` is a
    *common date* (held by at least 11 patients) also has their follow-up
    cut short by ``t`` days, uniform on ``0 .. truncate_max_days`` (never past
    their last admission): ``observation_end' = observation_end - t + s``;
    sessions, dispensings and events after the new end are dropped, and a
    discharge after it becomes "still enrolled" (all counted in
    ``attrs["deidentify"]["rows_truncated"]``). A reader who knows the cut-off,
    the study start and both maxima can then only guess ``s`` within
    ``truncate_max_days + 1`` values: a share of about
    ``(2 M + T) / (2 M (T + 1))`` of those patients' dates (``M`` the maximum
    shift, ``T`` the maximum cut; 0.7% with the defaults 365 and 180) is
    recovered by the best guess. Intervals within the follow-up kept (lengths of stay, days to
    events, dispensing gaps) are unchanged.
Randomness
    Shifts and truncations come from the operating system's entropy
    (``secrets``) by default. A ``seed`` makes the export reproducible and is
    unsafe for release (whoever learns or guesses the seed, e.g. a date-shaped
    one, recomputes every shift): it needs ``unsafe_reproducible=True``.
Birth year
    Shifted by as many years as the patient's latest date moved across a
    year boundary (so age at the latest date is unchanged), then capped:
    when that age is above 89, ``birth_year`` is set to the *cap year*,
    ``year(latest date) - 90``, so that no age above 90 can be derived from
    any exported date and an age of 90 reads "90 or older" (HIPAA Safe Harbor
    [2]_). A patient without any dated row is capped against the latest date
    of the extract.
Columns
    Only contract columns are exported. Every other column (free text,
    numeric MRNs, ZIP codes, categorical notes) is dropped unless named in
    ``keep_cols``; contract columns named in ``drop_cols`` (e.g. ``program``
    to hide site names) are dropped too. Dropped columns are listed in each
    table's ``attrs["deidentify"]["dropped_columns"]``.
Simulator truth
    ``truth`` is set to None (it holds the source ids and latent dates).

References
----------
.. [1] Hripcsak G, Mirhaji P, Low AF, Malin BA. Preserving temporal relations
   in clinical data while maintaining privacy. JAMIA 2016;23:1040-5.
.. [2] U.S. Department of Health and Human Services (2012). Guidance
   Regarding Methods for De-identification of Protected Health Information in
   Accordance with the HIPAA Privacy Rule, section 2.2.
.. [3] Krawczyk H, Bellare M, Canetti R (1997). HMAC: Keyed-Hashing for
   Message Authentication. RFC 2104.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd

from iop_research.exceptions import DataValidationError, ModelSpecificationError, format_ids
from iop_research.data.schema import TABLE_COLUMNS, Col, column_kinds

__all__ = ["deidentify", "hash_identifier", "check_salt", "MIN_SALT_LENGTH", "MIN_SALT_BITS", "AGE_CAP_YEARS",
           "COMMON_DATE_MIN_PATIENTS"]

#: Shortest salt accepted by :func:`deidentify` (characters).
MIN_SALT_LENGTH = 16
#: Smallest estimated entropy of a salt (bits): length times the per-character Shannon entropy.
MIN_SALT_BITS = 50
#: An ``observation_end`` held by at least this many patients is a common date (a possible anchor).
COMMON_DATE_MIN_PATIENTS = 11
#: Ages above 89 are collapsed to this age ("90 or older").
AGE_CAP_YEARS = 90
_HEX_DIGITS = 20


def hash_identifier(values, *, salt: str, kind: str) -> np.ndarray:
    """Keyed (HMAC-SHA256) pseudonyms of identifier values.

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
    >>> hash_identifier(["P1", None], salt="9f1c2ab7e04d5c38", kind="patient")[1] is None
    True
    """
    prefix = {"patient": "p", "episode": "e"}[kind]
    arr = pd.Series(values, dtype=object)
    codes, uniques = pd.factorize(arr, use_na_sentinel=True)
    key = salt.encode("utf-8")
    dom = kind.encode() + b"\x1f"
    hashed = np.array(
        [prefix + hmac.new(key, dom + str(v).encode("utf-8"), hashlib.sha256).hexdigest()[:_HEX_DIGITS]
         for v in uniques] + [None],
        dtype=object,
    )
    if len(set(hashed[:-1].tolist())) != len(uniques):  # pragma: no cover - 80-bit collision
        raise ModelSpecificationError("deidentify: two identifiers hash alike; use another salt.")
    return hashed[np.where(codes < 0, len(uniques), codes)]


def check_salt(salt) -> None:
    """Refuse salts without real entropy.

    A salt is accepted when it is a string of at least :data:`MIN_SALT_LENGTH`
    characters with at least 8 distinct characters, an estimated entropy
    (length times per-character Shannon entropy) of at least
    :data:`MIN_SALT_BITS` bits, not only digits (dates, phone numbers), and
    not a repetition of a shorter string, a run of consecutive characters or
    a common password pattern.

    Raises
    ------
    ModelSpecificationError
        Saying why, and how to make a good salt (``secrets.token_hex(16)``).

    Examples
    --------
    >>> check_salt("9f1c2ab7e04d5c38")
    >>> check_salt("aaaaaaaaaaaaaaaaaaaa")
    Traceback (most recent call last):
    ...
    iop_research.exceptions.ModelSpecificationError: deidentify got a trivial salt (only 1 distinct characters); ...
    """
    how = ("Generate one with secrets.token_hex(16), keep it outside the exported data, and reuse it to export "
           "later extracts consistently.")
    if not isinstance(salt, str) or len(salt) < MIN_SALT_LENGTH:
        got = "an empty salt" if not salt else f"a salt of {len(salt) if isinstance(salt, str) else '?'} characters"
        raise ModelSpecificationError(
            f"deidentify got {got}; a salt of at least {MIN_SALT_LENGTH} characters is required so the hashed ids "
            f"cannot be reversed by hashing candidate ids. {how}"
        )
    counts = Counter(salt)
    bits = -len(salt) * sum(c / len(salt) * math.log2(c / len(salt)) for c in counts.values())
    reason = None
    if len(counts) < 8:
        reason = f"only {len(counts)} distinct characters"
    elif salt.strip().isdigit() or "".join(salt.split()).replace("-", "").replace("/", "").isdigit():
        reason = "only digits (dates and numbers are guessed first)"
    elif any(salt == salt[:n] * (len(salt) // n) + salt[:len(salt) % n] for n in range(1, len(salt) // 2 + 1)):
        reason = "a repeated pattern"
    elif sum(abs(ord(b) - ord(a)) == 1 for a, b in zip(salt, salt[1:])) >= 0.6 * (len(salt) - 1):
        reason = "a run of consecutive characters"
    elif any(w in salt.lower() for w in ("password", "passwort", "qwerty", "letmein", "123456", "abcdef",
                                         "changeme", "iloveyou", "admin")):
        reason = "a common password pattern"
    elif bits < MIN_SALT_BITS:
        reason = f"an estimated {bits:.0f} bits of entropy (at least {MIN_SALT_BITS} needed)"
    if reason is not None:
        raise ModelSpecificationError(f"deidentify got a trivial salt ({reason}); ids hashed with it could be "
                                      f"linked back by trying candidate salts. {how}")


def _check_args(data, salt, max_shift_days):
    from iop_research.data.io import IOPData

    if not isinstance(data, IOPData):
        raise ModelSpecificationError(
            f"deidentify expects an IOPData (read_data(...) or load_demo()), got {type(data).__name__}."
        )
    check_salt(salt)
    if isinstance(max_shift_days, bool) or not isinstance(max_shift_days, (int, np.integer)) or max_shift_days < 1:
        raise ModelSpecificationError(
            f"max_shift_days must be a positive whole number of days, got {max_shift_days!r} (default 365)."
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


def _dropped_cols(table: str, df: pd.DataFrame, keep: set[str], drop: set[str]) -> list[str]:
    contract = {c[0] for c in TABLE_COLUMNS[table]}
    return [c for c in df.columns if c in drop or (c not in contract and c not in keep)]


def deidentify(
    data,
    *,
    salt: str,
    seed: int | np.random.Generator | None = None,
    unsafe_reproducible: bool = False,
    max_shift_days: int = 365,
    truncate_max_days: int = 180,
    keep_cols: Sequence[str] | None = None,
    drop_cols: Sequence[str] | None = None,
    free_text_cols: Sequence[str] | None = None,
):
    """A de-identified copy of the tables: keyed id hashes, shifted dates with no common anchor, capped ages,
    contract columns only.

    Parameters
    ----------
    data : IOPData
        Tables with canonical dtypes (dates as ``datetime64``; see
        :meth:`~iop_research.data.io.IOPData.coerce`).
    salt : str
        Secret with real entropy (see :func:`check_salt`), supplied by the
        user and never written to the output. The same salt gives the same
        pseudonyms across extracts (so they can be linked by whoever holds it).
    seed : int or numpy.random.Generator, optional
        Default None: shifts and truncations from the operating system's
        entropy. A seed makes the export reproducible and is unsafe for
        release; it needs ``unsafe_reproducible=True``.
    unsafe_reproducible : bool, default False
        Allow ``seed`` (and ``truncate_max_days`` below 30), for tests and
        methods work that never leaves the analysis environment.
    max_shift_days : int, default 365
        Largest date shift in days, either direction (a wide shift costs the
        analyses nothing and narrows what the edges of its range give away).
    truncate_max_days : int, default 180
        Largest cut of the follow-up of patients whose ``observation_end`` is
        a common date. About ``1 / (truncate_max_days + 1)`` of their dates
        can be guessed by a reader who knows the cut-off date.
    keep_cols : sequence of str, optional
        Non-contract columns to keep (wherever they occur); every other
        non-contract column is dropped. Kept ``datetime64`` columns of tables
        with ``patient_id`` are shifted with the patient.
    drop_cols : sequence of str, optional
        Contract columns to drop as well (e.g. ``["program"]``).
    free_text_cols : sequence of str, optional
        Older name of ``drop_cols`` (both are honoured).

    Returns
    -------
    IOPData
        New tables (inputs unchanged); rows in the same order except rows
        after a truncated follow-up; ``truth`` None. Each table's
        ``attrs["deidentify"]`` is ``{"dropped_columns": [...],
        "rows_truncated": n, "discharges_truncated": n, "max_shift_days": ...,
        "truncate_max_days": ..., "age_cap_years": 90, "reproducible": bool}``
        (never the salt, the shifts or the seed).

    Raises
    ------
    ModelSpecificationError
        ``data`` is not an IOPData; trivial salt; a seed without
        ``unsafe_reproducible``; bad ``max_shift_days``/``truncate_max_days``.
    DataValidationError
        Missing ``patient_id`` values in a table with dates, or dates stored as text.

    Notes
    -----
    The conventions (hash, shift, truncation, birth-year cap, columns) are in
    the module docstring. There is no R counterpart.

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
    >>> out = deidentify(IOPData(**t), salt="9f1c2ab7e04d5c38e1a0")
    >>> out.patients.columns.tolist(), out.patients.attrs["deidentify"]["dropped_columns"]
    (['patient_id', 'birth_year', 'sex', 'race', 'ethnicity'], ['notes'])
    >>> int(out.observation.observation_end.dt.year.iloc[0] - out.patients.birth_year.iloc[0])
    90
    """
    _check_args(data, salt, max_shift_days)
    if isinstance(truncate_max_days, bool) or not isinstance(truncate_max_days, (int, np.integer)) \
            or truncate_max_days < 0:
        raise ModelSpecificationError(
            f"truncate_max_days must be a whole number of days >= 0, got {truncate_max_days!r} (default 180).")
    if seed is not None and not unsafe_reproducible:
        raise ModelSpecificationError(
            "deidentify: a seed makes the date shifts recomputable by anyone who learns or guesses it (a "
            "date-shaped seed is found in seconds), so it is not used for exports that leave the analysis "
            "environment. Omit seed (shifts then come from the operating system's entropy), or pass "
            "unsafe_reproducible=True for tests and internal methods work."
        )
    if truncate_max_days < 30 and not unsafe_reproducible:
        raise ModelSpecificationError(
            f"truncate_max_days = {truncate_max_days} lets a reader who knows the data cut-off recover about "
            f"1 in {truncate_max_days + 1} patients' dates. Use at least 30 (default 180), or "
            "unsafe_reproducible=True for internal work."
        )
    if seed is None:
        rng = np.random.default_rng(secrets.randbits(128))
    else:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    keep = set(keep_cols or ())
    drop = set(drop_cols or ()) | set(free_text_cols or ())
    tables = data._all_tables()  # the six tables and the optional ones present (use_days)

    # one shift and one truncation per patient, in sorted id order
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
    cut_draw = pd.Series(rng.integers(0, int(truncate_max_days) + 1, size=len(order)).astype("int64"),
                         index=pd.Index(order, dtype=object))

    # truncation of follow-up that ends on a common date (the data cut-off)
    obs = tables["observation"]
    new_end = pd.Series(dtype="datetime64[ns]")
    if len(obs) and Col.observation_end in obs.columns \
            and pd.api.types.is_datetime64_any_dtype(obs[Col.observation_end].dtype):
        ends = obs.assign(_pid=obs[Col.patient_id].astype(str)).dropna(subset=[Col.observation_end])
        ends = ends.groupby("_pid")[Col.observation_end].max()
        per_date = ends.value_counts()
        common = ends.map(per_date) >= COMMON_DATE_MIN_PATIENTS
        adm = tables["admissions"]
        last_admit = (adm.assign(_pid=adm[Col.patient_id].astype(str)).groupby("_pid")[Col.admit_date].max()
                      if len(adm) else pd.Series(dtype="datetime64[ns]"))
        room = (ends - last_admit.reindex(ends.index)).dt.days.fillna(int(truncate_max_days)).clip(lower=0)
        cut = np.minimum(cut_draw.reindex(ends.index).to_numpy(), room.to_numpy().astype("int64"))
        cut = np.where(common.to_numpy(), cut, 0)
        new_end = ends - pd.to_timedelta(cut, unit="D")

    out: dict[str, pd.DataFrame] = {}
    latest: list[pd.DataFrame] = []
    event_cols = {"sessions": Col.session_date, "medications": Col.dispense_date, "events": Col.event_date,
                  "use_days": Col.use_date}
    for name in tables:
        df = tables[name]
        dropped = _dropped_cols(name, df, keep, drop)
        new = df.drop(columns=dropped)
        truncated = discharges = 0
        if Col.patient_id in new.columns and len(new_end):
            pid0 = new[Col.patient_id].astype(str)
            end = pd.to_datetime(new_end.reindex(pid0.to_numpy()).to_numpy())
            if name in event_cols and event_cols[name] in new.columns:
                after = (new[event_cols[name]].to_numpy() > end) & ~pd.isna(end)
                after = np.asarray(after, dtype=bool) & new[event_cols[name]].notna().to_numpy()
                truncated = int(after.sum())
                new = new.loc[~after]
                df = df.loc[~after]
            elif name == "observation":
                new = new.copy()
                new[Col.observation_end] = pd.Series(end, index=new.index).astype(new[Col.observation_end].dtype)
            elif name == "admissions" and Col.discharge_date in new.columns:
                late = new[Col.discharge_date].notna().to_numpy() & (new[Col.discharge_date].to_numpy() > end) \
                    & ~pd.isna(end)
                discharges = int(late.sum())
                if discharges:
                    new = new.copy()
                    new.loc[late, Col.discharge_date] = pd.NaT
                    if Col.discharge_reason in new.columns:
                        new.loc[late, Col.discharge_reason] = None
        date_cols = _date_cols(name, new)
        if Col.patient_id in new.columns:
            raw = new[Col.patient_id].astype(object)
            pid = raw.where(raw.isna(), raw.astype(str))
            days = shift.reindex(pid.to_numpy()).fillna(0).to_numpy(dtype="int64")
            offset = pd.to_timedelta(days, unit="D")
            for col in date_cols:
                if not pd.api.types.is_datetime64_any_dtype(new[col].dtype):
                    continue  # an all-missing column of another dtype: nothing to shift
                before = new[col]
                new[col] = (new[col] + offset).astype(new[col].dtype)
                latest.append(pd.DataFrame({"pid": pid.to_numpy(), "new": new[col].to_numpy(),
                                            "old": before.to_numpy()}).dropna())
            new[Col.patient_id] = hash_identifier(new[Col.patient_id], salt=salt, kind="patient")
        if Col.episode_id in new.columns:
            new[Col.episode_id] = hash_identifier(new[Col.episode_id], salt=salt, kind="episode")
        new.attrs = {"deidentify": {"dropped_columns": dropped, "rows_truncated": truncated,
                                    "discharges_truncated": discharges, "max_shift_days": int(max_shift_days),
                                    "truncate_max_days": int(truncate_max_days), "age_cap_years": AGE_CAP_YEARS,
                                    "reproducible": seed is not None}}
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
    from iop_research.data.schema import TEXT_DTYPE, column_kinds

    if TEXT_DTYPE is not object:  # pandas 3: text columns in the canonical str dtype, as read_data gives
        for name, df in out.items():
            text = [c for c, kind in column_kinds(name).items()
                    if kind in ("id", "str", "category") and c in df.columns and df[c].dtype == object]
            if text:
                attrs = df.attrs
                df = df.astype({c: TEXT_DTYPE for c in text})
                df.attrs = attrs
                out[name] = df
    return IOPData(**out, truth=None)
