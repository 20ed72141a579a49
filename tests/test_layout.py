"""The package layout and its one-way import rules, read from the source with :mod:`ast`.

Layers, lowest first (imports flow downwards only)::

    exceptions, results, _validate, _design, _lazy,     shared at the top level
    _logistic
    data/                                                contract: schema, io, synth, deidentify
    derive/                                              engine, episodes, exposures, outcomes, frames, ...
    survival/, longitudinal/                             domain-free estimators
    designs/                                             IPTW, landmark, E-value, ...
    present/                                             tables, plots, publishing channel
    reports/                                             study file, build, gate, CLI

``privacy/`` and ``datasets/`` sit beside. The rules checked here are the ones the layout
promises in the README ("Layout"); each failure names the file, the line and the import.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "iop_research"
NOTEBOOKS = sorted(PACKAGE.rglob("*.ipynb"))

SUBPACKAGES = ("data", "datasets", "derive", "survival", "longitudinal", "designs", "present", "privacy", "reports")
#: Top-level private modules shared by every layer.
SHARED_PRIVATE = {"_validate", "_design", "_lazy", "_logistic"}

#: subpackage -> subpackages it must never import
FORBIDDEN = {
    "survival": {"data", "derive", "datasets", "designs", "present", "privacy", "reports", "longitudinal"},
    "longitudinal": {"data", "derive", "datasets", "designs", "present", "privacy", "reports", "survival"},
    "data": {"derive", "datasets", "survival", "longitudinal", "designs", "present", "privacy", "reports"},
    "derive": {"datasets", "survival", "longitudinal", "designs", "present", "privacy", "reports"},
    "designs": {"data", "derive", "datasets", "present", "privacy", "reports"},
    "privacy": {"derive", "datasets", "survival", "longitudinal", "designs", "present", "reports"},
    "present": {"reports"},
    "datasets": {"designs", "present", "privacy", "reports", "survival", "longitudinal"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else ""


def _dotted(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import of ``iop_research``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _dotted(path).split(".")
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "iop_research":
                    out.append((node.lineno, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "iop_research":
                out.append((node.lineno, module, [a.name for a in node.names]))
    return out


def _target_layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else ""


def test_layout_exists():
    for sub in ("data", "datasets", "derive", "survival", "designs", "present", "privacy", "reports"):
        assert (PACKAGE / sub / "__init__.py").is_file(), f"iop_research/{sub}/ is missing"
    for shared in ("exceptions.py", "results.py"):
        assert (PACKAGE / shared).is_file()
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in {
        "__init__.py", "__main__.py", "exceptions.py", "results.py", "_validate.py", "_design.py", "_lazy.py",
        "_logistic.py"})
    assert flat == [], f"modules left flat at the top of the package: {flat}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    layer = _layer(path)
    problems = []
    for line, module, names in _imports(path):
        target = _target_layer(module)
        # imported names may themselves be subpackages: `from iop_research import survival`
        targets = {target} | ({n for n in names if n in SUBPACKAGES} if module == "iop_research" else set())
        for t in targets - {""}:
            if t in FORBIDDEN.get(layer, set()):
                problems.append(f"line {line}: {layer}/ imports {module} ({t}/ is above it or beside it)")
            # `python -m iop_research` is the CLI's own entry point
            if t == "reports" and layer != "reports" and path.name != "__main__.py":
                problems.append(f"line {line}: only reports/ may import reports/ ({module})")
    assert not problems, f"{path.relative_to(PACKAGE.parent)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_across_modules(path):
    """No module imports a ``_private`` name or module from another subpackage.

    A private name is private to its subpackage (``../shared/style.md``): ``survival/competing.py``
    may use a helper of ``survival/cox.py``; ``designs/`` may not. The shared top-level private
    modules (``_validate``, ``_design``, ``_lazy``, ``_logistic``) are for every layer.
    """
    own = _dotted(path)
    own_pkg = own if path.name == "__init__.py" else own.rpartition(".")[0]
    problems = []
    for line, module, names in _imports(path):
        parts = module.split(".")
        for i, part in enumerate(parts[1:], start=1):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                if not (owner == "iop_research" and part in SHARED_PRIVATE) and owner != own_pkg:
                    problems.append(f"line {line}: private module {module} of {owner}")
        for name in names:
            if name.startswith("_") and not name.startswith("__"):
                target = f"{module}.{name}"
                is_module = (PACKAGE.parent / target.replace(".", "/")).with_suffix(".py").exists()
                same_subpackage = module == own_pkg or module.rpartition(".")[0] == own_pkg
                if not (same_subpackage and own_pkg != "iop_research") and not (
                        is_module and module == "iop_research" and name in SHARED_PRIVATE):
                    problems.append(f"line {line}: from {module} import {name}")
    assert not problems, f"{path.relative_to(PACKAGE.parent)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_notebooks_import_no_private_module(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        try:
            tree = ast.parse("\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for m in mods:
                if m.startswith("iop_research") and any(p.startswith("_") and not p.startswith("__") for p in m.split(".")):
                    problems.append(f"cell {i}: imports {m}")
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_rules_catch_a_planted_violation(tmp_path, monkeypatch):
    """The checks above can fail: a survival module importing derive/ and a private name is flagged."""
    fake = PACKAGE / "survival" / "km.py"
    src = "from iop_research.derive.frames import survival_frame\nfrom iop_research.designs.causal import _x\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: src if self == fake else Path.read_bytes(self).decode())
    with pytest.raises(AssertionError, match="survival/ imports iop_research.derive.frames"):
        test_imports_flow_one_way(fake)
    with pytest.raises(AssertionError, match="from iop_research.designs.causal import _x"):
        test_no_private_names_across_modules(fake)


#: builtin exceptions the package never raises itself: it raises IopError subclasses that also
#: subclass these, so ``except ValueError`` keeps working (AttributeError stays: it is the
#: attribute protocol of the lazy re-exports)
BUILTIN_EXCEPTIONS = {"Exception", "ValueError", "KeyError", "TypeError", "RuntimeError", "IndexError", "OSError",
                      "IOError", "LookupError", "ArithmeticError", "ZeroDivisionError", "FileNotFoundError",
                      "PermissionError", "NotImplementedError", "AssertionError"}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_exception_raised_is_an_iop_error(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name) and target.id in BUILTIN_EXCEPTIONS:
                bad.append(f"line {node.lineno}: raise {target.id}")
    assert not bad, f"{path.relative_to(PACKAGE.parent)} raises builtin exceptions (use an IopError subclass):\n" + \
        "\n".join(bad)


def test_package_exceptions_subclass_iop_error():
    import inspect

    from iop_research import exceptions

    classes = [c for _, c in inspect.getmembers(exceptions, inspect.isclass)
               if issubclass(c, Exception) and not issubclass(c, Warning) and c.__module__ == exceptions.__name__]
    assert len(classes) >= 8
    assert all(issubclass(c, exceptions.IopError) for c in classes)
