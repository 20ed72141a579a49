"""Exceptions and warnings raised by iop_research.

Every package exception subclasses :class:`IopError` and a builtin, so that
``except ValueError`` in user code keeps working. Messages say what is wrong,
where (table, column, first offending ids) and how to fix it.
"""
from __future__ import annotations

__all__ = [
    "IopError",
    "DataValidationError",
    "DataReadError",
    "EpisodeOverlapError",
    "ConvergenceError",
    "ModelSpecificationError",
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
