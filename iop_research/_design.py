"""One design-matrix builder for every regression in the package (formulaic).

Used by :func:`~iop_research.survival.cox.fit_cox`, the competing-risks models
(:func:`~iop_research.survival.competing.fit_fine_gray`,
:func:`~iop_research.survival.competing.fit_cause_specific`), the interval-censored AFT
model (:func:`~iop_research.survival.interval.fit_interval_aft`) and the IPTW propensity
model (:func:`~iop_research.designs.causal.iptw`), so a covariate gets the same coding,
the same term name and the same label everywhere.

Conventions
-----------
* Covariates are given as a list of column names or as a right-hand-side formula
  (formulaic syntax, an optional ``"... ~"`` prefix is ignored): ``["age", "sex"]`` is the
  formula ``"age + sex"``.
* Numeric columns enter as they are. Object, string, category and **bool** columns are
  categorical: treatment (dummy) coding against the first level, where levels are the
  Categorical's categories in their order (unused categories dropped) and otherwise the
  sorted distinct values (``False < True``), as R's ``factor()``. A categorical with one
  level is an error.
* Term names follow formulaic: ``age``, ``sex[T.m]``, ``psychiatric_comorbidity[T.True]``,
  ``treat:in_treatment``. ``C(sex)`` in a formula is named ``sex[T.m]`` too (the ``C()``
  wrapper and any contrast argument are dropped from names), so a covariate has one name
  whichever way it was requested. R would name these ``sexm`` and ``psychiatric_comorbidityTRUE``.
* Every term carries a readable label for tables and plots:
  ``psychiatric_comorbidity[T.True]`` -> ``"Psychiatric comorbidity: yes"``,
  ``program[T.Site B]`` -> ``"Program: Site B"``, ``age`` -> ``"Age"``,
  ``treat:in_treatment`` -> ``"Treat x In treatment"``.
* The intercept is built and dropped (Cox and Fine-Gray have none; the AFT model adds its
  own ``(Intercept)``), so categoricals always get reduced (reference) coding.
* Missing values in any variable used are an error naming the column and rows; rows are
  never dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from iop_research._validate import complete_column, require_frame
from iop_research.exceptions import EstimatorInputError, ModelSpecificationError, format_ids

__all__ = ["Design", "build_design", "term_label", "term_name", "check_identifiable", "is_categorical"]

# C(var) or C(var, contrasts...) followed by a level, an interaction or the end: -> var
_C_WRAPPER = re.compile(r"C\(\s*(`[^`]+`|[A-Za-z_][\w.]*)\s*(?:,.*?)?\)(?=\[|:|$)")
_FACTOR = re.compile(r"^(?P<var>.+?)\[(?:T\.)?(?P<level>.*)\]$")


@dataclass(frozen=True)
class Design:
    """A numeric design matrix with names, labels and term assignment.

    Attributes
    ----------
    matrix : numpy.ndarray
        ``n x p`` float matrix, no intercept column, rows in the frame's order.
    terms : tuple of str
        Column names (``age``, ``sex[T.m]``, ``treat:in_treatment``).
    labels : tuple of str
        Readable label of each column (``"Sex: m"``).
    assign : mapping of str to tuple of int
        Model term -> its column positions (a categorical is one term with one column per
        non-reference level; used for joint tests such as ``ph_test``'s).
    variables : tuple of str
        Data columns the design uses.
    formula : str
        The right-hand side that was evaluated.
    model_spec : formulaic.ModelSpec or None
        How formulaic built the matrix (levels of each categorical, transforms), to build the
        same columns for new data; None for numeric-only covariate lists (the columns are the data).
    """

    matrix: np.ndarray
    terms: tuple
    labels: tuple
    assign: Mapping[str, tuple] = field(default_factory=dict)
    variables: tuple = ()
    formula: str = ""
    model_spec: Any = None

    @property
    def label_map(self) -> dict[str, str]:
        """Term -> label."""
        return dict(zip(self.terms, self.labels))


def is_categorical(s: pd.Series) -> bool:
    """Object, string, category and bool columns are categorical."""
    dt = s.dtype
    return (
        isinstance(dt, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(dt)
        or pd.api.types.is_object_dtype(dt)
        or pd.api.types.is_string_dtype(dt)
    )


def _as_categorical(s: pd.Series) -> pd.Categorical:
    """Levels as R's factor(): a Categorical's categories (unused dropped), else the sorted values."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.remove_unused_categories().array
    try:
        codes, uniques = pd.factorize(s, sort=True)
    except TypeError:  # values of mixed types: sort by their text
        codes, uniques = pd.factorize(s.astype(str), sort=True)
    return pd.Categorical.from_codes(codes, categories=uniques)


def term_name(name: str) -> str:
    """The package's name of a formulaic design column: ``C(x)[T.b]`` -> ``x[T.b]``, no backticks."""
    out = _C_WRAPPER.sub(lambda m: m.group(1), name)
    return out.replace("`", "")


def _humanise_variable(var: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w ]*", var):
        return var  # an expression such as I(age ** 2) or np.log(days): keep as written
    words = var.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else var


_LEVEL_WORDS = {"True": "yes", "False": "no"}


def term_label(term: str) -> str:
    """Readable label of a design column name.

    Examples
    --------
    >>> term_label("psychiatric_comorbidity[T.True]")
    'Psychiatric comorbidity: yes'
    >>> term_label("program[T.Site B]")
    'Program: Site B'
    >>> term_label("treat:in_treatment")
    'Treat x In treatment'
    """
    if term in ("(Intercept)", "Intercept", "Log(scale)"):
        return term
    parts = []
    for factor in term.split(":"):
        m = _FACTOR.match(factor)
        if m:
            level = m.group("level")
            parts.append(f"{_humanise_variable(m.group('var'))}: {_LEVEL_WORDS.get(level, level)}")
        else:
            parts.append(_humanise_variable(factor))
    return " x ".join(parts)


def _quote(col: str) -> str:
    return col if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", col) else f"`{col}`"


def _required_variables(rhs: str, df: pd.DataFrame, func: str) -> list[str]:
    from formulaic import Formula

    try:
        needed = Formula(rhs).required_variables
    except Exception as exc:
        raise ModelSpecificationError(
            f"{func}: formula {rhs!r} cannot be parsed ({type(exc).__name__}: {str(exc).splitlines()[0]}). Check "
            "the syntax (formulaic, e.g. 'treat + C(site) + age')."
        ) from exc
    names = {str(v) for v in needed}
    cols = [c for c in df.columns if str(c) in names]
    unknown = sorted(n for n in names if n not in {str(c) for c in df.columns} and n not in ("np", "C", "I", "Q"))
    if unknown:
        raise EstimatorInputError(
            f"{func}: formula {rhs!r} uses column(s) not found in the data frame: {format_ids(unknown)}. Available "
            f"columns: {format_ids([str(c) for c in df.columns], limit=12)}. Fix the formula (names are "
            "case-sensitive; quote names with spaces in backticks).",
            func=func, column=unknown[0], check="missing_column",
        )
    return cols


def build_design(
    df: pd.DataFrame,
    *,
    covariates: Sequence[str] | None = None,
    formula: str | None = None,
    func: str,
    allow_empty: bool = False,
) -> Design:
    """Build the design matrix of a covariate list or a right-hand-side formula.

    Parameters
    ----------
    df : pandas.DataFrame
        The analysis frame. Not modified.
    covariates : sequence of str, optional
        Column names; the same as the formula ``"a + b + ..."``.
    formula : str, optional
        Right-hand side in formulaic syntax (``"treat + C(site) + age"``, ``"treat * in_treatment"``,
        ``"age + I(age ** 2)"``); anything before a ``"~"`` is ignored.
    func : str
        Name of the calling estimator (starts every message).
    allow_empty : bool, default False
        Accept no covariates at all (``covariates=()``), giving an ``n x 0`` matrix.

    Returns
    -------
    Design

    Raises
    ------
    ModelSpecificationError
        Both or neither of ``covariates``/``formula``; an unparsable formula; a categorical
        with a single level; no terms.
    EstimatorInputError
        Unknown columns; missing or infinite values (named with their first rows); a column
        type that is neither numeric nor categorical.
    """
    if (covariates is None) == (formula is None):
        if covariates is None and allow_empty:
            covariates = ()
        else:
            raise ModelSpecificationError(
                f"{func}: give exactly one of covariates=[...] (column names) or formula='...' (right-hand side, "
                "e.g. 'age + C(substance)')."
            )
    if formula is not None:
        if not isinstance(formula, str) or not formula.strip():
            raise ModelSpecificationError(f"{func}: formula must be a non-empty string, got {formula!r}.")
        rhs = formula.split("~", 1)[1] if "~" in formula else formula
        require_frame(df, func, {})
        variables = _required_variables(rhs, df, func)
    else:
        if isinstance(covariates, str):
            if covariates in getattr(df, "columns", ()):
                covariates = [covariates]
            else:
                raise ModelSpecificationError(
                    f"{func}: covariates must be a list of column names, got the string {covariates!r}. "
                    "Pass covariates=[...] or formula=..."
                )
        if not isinstance(covariates, (list, tuple, pd.Index, np.ndarray, pd.Series)):
            raise ModelSpecificationError(
                f"{func}: covariates must be a list of column names, got {covariates!r}. Pass covariates=[...] or "
                "formula=..."
            )
        covariates = list(covariates)
        require_frame(df, func, {"covariates": covariates})
        if not covariates:
            if allow_empty:
                return Design(np.zeros((len(df), 0)), (), (), {}, (), "")
            raise ModelSpecificationError(f"{func}: covariates is empty; name at least one column (or pass formula=).")
        dup = sorted({c for c in covariates if covariates.count(c) > 1}, key=str)
        if dup:
            raise ModelSpecificationError(f"{func}: covariate(s) {format_ids(dup)} are listed twice; list each once.")
        rhs = " + ".join(_quote(str(c)) for c in covariates)
        variables = covariates

    if formula is None and all(
        pd.api.types.is_numeric_dtype(df[c].dtype) and not is_categorical(df[c]) for c in variables
    ):
        # numeric columns only: the design is the columns themselves (what formulaic would build, without
        # its per-call overhead on millions of counting-process rows; test_design checks both agree)
        x = np.column_stack([
            np.asarray(complete_column(df, c, func=func, role="covariate").to_numpy(dtype=float, na_value=np.nan))
            for c in variables
        ])
        names = [str(c) for c in variables]
        return Design(x, tuple(names), tuple(term_label(t) for t in names), {t: (j,) for j, t in enumerate(names)},
                      tuple(names), rhs)

    data = {}
    for col in variables:
        s = complete_column(df, col, func=func, role="covariate")
        if is_categorical(s):
            cat = _as_categorical(s)
            levels = cat.categories.tolist()
            if len(levels) < 2:
                raise ModelSpecificationError(
                    f"{func}: covariate {col!r} has a single level ({format_ids(levels)}); its effect cannot be "
                    "estimated. Remove it from the covariates or check the cohort filter."
                )
            data[col] = cat
        elif pd.api.types.is_numeric_dtype(s.dtype):
            data[col] = s.to_numpy() if isinstance(s.dtype, np.dtype) else s.to_numpy(dtype=float)
        else:
            raise EstimatorInputError(
                f"{func}: column {col!r} (covariate) has dtype {s.dtype}, which is neither numeric nor categorical. "
                "Convert it (e.g. dates to days since the origin) before fitting.",
                func=func, column=col, check="dtype",
            )
    frame = pd.DataFrame(data, index=df.index)

    from formulaic import model_matrix

    try:
        with np.errstate(all="ignore"):  # log(0) etc. give inf, reported below with the rows
            mm = model_matrix(rhs, frame, na_action="ignore", output="numpy")
    except Exception as exc:
        raise ModelSpecificationError(
            f"{func}: formula {rhs!r} could not be evaluated on the data ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Check the column names and the syntax "
            "(formulaic, e.g. 'treat + C(site) + age')."
        ) from exc
    raw_names = [str(c) for c in mm.model_spec.column_names]
    keep = [i for i, nm in enumerate(raw_names) if nm != "Intercept"]
    x = np.asarray(mm, dtype=float)[:, keep]
    names = [term_name(raw_names[i]) for i in keep]
    remap = {old: new for new, old in enumerate(keep)}
    assign: dict[str, tuple] = {}
    for term, idx in mm.model_spec.term_indices.items():
        tname = term_name(str(term))
        if tname == "1":
            continue
        cols = tuple(remap[i] for i in idx if i in remap)
        if cols:
            assign[tname] = cols
    if x.shape[1] == 0:
        if allow_empty:
            return Design(np.zeros((len(df), 0)), (), (), {}, tuple(variables), rhs)
        raise ModelSpecificationError(f"{func}: formula {rhs!r} has no covariate terms; add at least one.")
    bad = ~np.isfinite(x)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        rows = bad[:, j]
        n = int(rows.sum())
        raise EstimatorInputError(
            f"{func}: column {names[j]!r} (covariate term) has {n} missing or infinite value(s) "
            f"(rows: {format_ids(df.index[rows].tolist())}). Fix the transform (e.g. log of 0) or drop these rows "
            "explicitly before fitting.",
            func=func, column=names[j], check="missing", n_rows=n, rows=df.index[rows].tolist()[:5],
        )
    return Design(
        matrix=x,
        terms=tuple(names),
        labels=tuple(term_label(t) for t in names),
        assign=assign,
        variables=tuple(str(v) for v in variables),
        formula=rhs,
        model_spec=mm.model_spec,
    )


def check_identifiable(x: np.ndarray, terms: Sequence[str], *, func: str) -> None:
    """Raise if a design column is constant or a linear combination of earlier ones.

    Regression models here have no intercept column (Cox, Fine-Gray) or add their own
    (AFT, logistic), so a constant column is not identifiable either way.

    Raises
    ------
    ModelSpecificationError
        Naming the constant terms, or the first collinear term and the terms it depends on.
    """
    if x.shape[1] == 0:
        return
    xc = x - x.mean(axis=0)
    ss = np.einsum("ij,ij->j", xc, xc)
    scale = np.einsum("ij,ij->j", x, x)
    const = ss <= 1e-12 * np.maximum(scale, 1.0)
    if const.any():
        raise ModelSpecificationError(
            f"{func}: covariate term(s) {format_ids([terms[j] for j in np.flatnonzero(const)])} are constant in the "
            "data used for the fit; their effect cannot be estimated. Remove them."
        )
    sd = np.sqrt(ss)
    corr = (xc.T @ xc) / np.outer(sd, sd)
    kept: list[int] = []
    for j in range(len(terms)):
        if kept:
            a = corr[np.ix_(kept, kept)]
            b = corr[kept, j]
            resid = corr[j, j] - b @ np.linalg.solve(a, b)
        else:
            resid = corr[j, j]
        if resid < 1e-9:
            raise ModelSpecificationError(
                f"{func}: singular design: term {terms[j]!r} is a linear combination of "
                f"{format_ids([terms[k] for k in kept]) or 'a constant'} (collinear terms). "
                "Drop one of the collinear terms or merge categories."
            )
        kept.append(j)
