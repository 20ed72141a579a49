"""Lazy re-exports for the package facade and its subpackages.

A subpackage's ``__init__`` names the public objects it promises and the module
that defines each; they are imported on first access, so ``import
iop_research.survival`` starts no engine and loads no plotting library.
"""
from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable, Callable, list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for *package*.

    Parameters
    ----------
    package : str
        The importing package's ``__name__``.
    exports : dict of str to str
        Public name -> module that defines it: relative to *package* (``"km"``) or
        absolute (``"iop_research.data.deidentify"``).
    """
    names = sorted(exports)

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = module if module.startswith("iop_research.") else f"{package}.{module}"
        return getattr(import_module(target), name)

    def __dir__():
        return names

    return __getattr__, __dir__, names
