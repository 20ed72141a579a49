"""Exceptions and warnings raised by iop_research.

Every package exception subclasses :class:`IopError` and a builtin, so that
``except ValueError`` in user code keeps working. Messages say what is wrong,
where (table, column, first offending ids) and how to fix it.
"""
from __future__ import annotations

__all__ = [
    "UnknownNameError",
    "ArgumentTypeError",
    "IopError",
    "DataValidationError",
    "DataReadError",
    "EpisodeOverlapError",
    "ConvergenceError",
    "ModelSpecificationError",
    "EstimatorInputError",
    "ReadOnlyResultError",
    "ReportError",
    "PrivacyViolationError",
    "IopWarning",
    "format_ids",
]


class IopError(Exception):
    """Base class of every exception raised by iop_research."""


class DataValidationError(IopError, ValueError):
    """Input tables break the data contract.

    Attributes
    ----------
    problems : pandas.DataFrame
        One row per problem: ``table, column, check, n_failures, examples, fix``.
    """

    def __init__(self, message: str, problems=None):
        super().__init__(message)
        self.problems = problems


class DataReadError(IopError, ValueError):
    """A file could not be read (missing, empty, truncated, wrong delimiter or encoding)."""


class EpisodeOverlapError(DataValidationError):
    """Two episodes of one patient overlap in time."""


class ConvergenceError(IopError, RuntimeError):
    """An iterative estimator did not converge."""


class ModelSpecificationError(IopError, ValueError):
    """A model cannot be fitted as specified (bad columns, singular design, bad weights)."""


class EstimatorInputError(DataValidationError, ModelSpecificationError):
    """A column handed to an estimator is unusable: absent, missing values, negative times, ...

    Raised by every estimator (``survival`` and ``designs``) through one parser,
    :mod:`iop_research._validate`, so the same fault gives the same class and the same
    message shape everywhere: ``"<function>: column '<name>' (<role>) has <n> <problem>
    (rows: <first row labels>). <how to fix>"``. It is a :class:`DataValidationError`
    (the data break the estimator's input contract) and a
    :class:`ModelSpecificationError` (the model cannot be fitted as specified), so
    handlers written for either keep working.

    Attributes
    ----------
    func : str
        The estimator that refused the input, e.g. ``"fit_cox"``.
    column : str or None
        The offending column (None when the frame itself is unusable).
    check : str
        What failed: ``"not_a_frame"``, ``"empty"``, ``"missing_column"``, ``"dtype"``,
        ``"missing"``, ``"negative"``, ``"not_binary"``, ``"interval"``, ``"zero_time"``.
    n_rows : int
        Number of offending rows (0 for frame- or column-level faults).
    rows : list
        Index labels of the first offending rows (at most 5).
    """

    def __init__(self, message: str, *, func: str = "", column=None, check: str = "", n_rows: int = 0,
                 rows=None):
        super().__init__(message)
        self.func = func
        self.column = column
        self.check = check
        self.n_rows = int(n_rows)
        self.rows = list(rows or [])


class ReadOnlyResultError(IopError, TypeError):
    """An attempt to modify a result's ``tidy``/``glance``/``extra`` table in place.

    Result tables are frozen so that what a notebook prints is what the estimator
    returned; take ``result.tidy.copy()`` to get a frame you may change.
    """


class ReportError(IopError, RuntimeError):
    """A report could not be built; nothing was written."""


class PrivacyViolationError(IopError, ValueError):
    """Output would disclose identifiers, full dates or small cells."""


class IopWarning(UserWarning):
    """Base class of every warning issued by iop_research (use ``stacklevel=2``)."""


def format_ids(values, limit: int = 5) -> str:
    """Render the first ``limit`` values of an iterable for an error message.

    Examples
    --------
    >>> format_ids(["E1", "E2", "E3", "E4", "E5", "E6", "E7"])
    'E1, E2, E3, E4, E5, ... (7 in all)'
    """
    vals = [str(v) for v in values]
    head = ", ".join(vals[:limit])
    if len(vals) > limit:
        return f"{head}, ... ({len(vals)} in all)"
    return head


class UnknownNameError(IopError, KeyError):
    """An unknown table, column or vocabulary name (``except KeyError`` still works)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class ArgumentTypeError(IopError, TypeError):
    """An argument of the wrong type (``except TypeError`` still works)."""
