"""Which project modules a script really runs: the static import closure.

A DVC stage must be re-run when any code it executes changes, and only then.
``import_closure`` follows every ``import`` of the package from a script, in
function bodies too (signflow imports heavy modules lazily), through the
modules it reaches, by parsing the source (``ast``), so nothing is executed.
Imports under ``if TYPE_CHECKING:`` are skipped: they never run. The package
``__init__`` files on the way count, since importing a submodule runs them.

The closure serves twice: a test checks each stage's ``dvc.yaml`` deps cover
exactly it, and the train stage's resume fingerprint hashes exactly it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import signflow

PACKAGE = "signflow"
PACKAGE_DIR = Path(signflow.__file__).resolve().parent


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The source file of a dotted module name of the package, or None if it is not one."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, package_dir: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(package_dir.parent)
    except ValueError:
        return None  # a script outside the package (stages/*.py)
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, at any depth."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _runtime_imports_of(child))
            continue
        yield from _runtime_imports_of(node)


def _runtime_imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _runtime_imports(node)


def _imported_modules(node: ast.Import | ast.ImportFrom, current: str | None) -> Iterator[str]:
    """Dotted names an import statement may load: the module and, for ``from``, each name as a submodule."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        anchor = (current or "").split(".")[: -node.level] if current else []
        base = ".".join([*anchor, *([base] if base else [])])
    yield base
    yield from (f"{base}.{alias.name}" for alias in node.names)


def _with_parents(module: str) -> Iterator[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a submodule runs every package on the way."""
    parts = module.split(".")
    yield from (".".join(parts[: i + 1]) for i in range(len(parts)))


def direct_imports(path: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The package source files ``path`` itself can import (its own import statements only), sorted."""
    path = Path(path).resolve()
    current = _module_name(path, package_dir)
    if path.name == "__init__.py" and current:
        current = f"{current}.__init__"  # relative imports in a package resolve against the package
    found = set()
    for node in _runtime_imports(ast.parse(path.read_text(), filename=str(path))):
        for name in _imported_modules(node, current):
            for module in _with_parents(name):
                file = module_file(module, package_dir)
                if file is not None and file != path:
                    found.add(file)
    return sorted(found)


def import_closure(script: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """``script`` and every package source file it can import, directly or not, sorted."""
    seen: set[Path] = set()
    todo = [Path(script).resolve()]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(direct_imports(path, package_dir))
    return sorted(seen)
