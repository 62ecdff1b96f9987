"""The packages layer cleanly: imports only run downwards, and the sibling packages form no cycle.

Layers, top to bottom: ``commands``; ``serving``, ``training``, ``evaluation``,
``review``, ``sweep``, ``lineage``, ``audit``; ``model``; ``data``; the import-light base (the root
modules). Read statically (``signflow.codegraph``), function-level imports included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from signflow.codegraph import PACKAGE_DIR, direct_imports

LAYERS = {"commands": 4, "serving": 3, "training": 3, "evaluation": 3, "review": 3, "sweep": 3, "lineage": 3,
          "audit": 3, "model": 2, "data": 1}
BASE = 0


def _package(path: Path, root: Path = PACKAGE_DIR) -> str:
    """The top-level package of a source file ("" for a root module)."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else ""


def _layer(path: Path, root: Path = PACKAGE_DIR) -> int:
    return LAYERS.get(_package(path, root), BASE)


def upward_imports(source: Path, root: Path = PACKAGE_DIR) -> list[str]:
    """What ``source`` imports from a higher layer (a package's ``__init__`` on the way does not count)."""
    return [p.relative_to(root).as_posix() for p in direct_imports(source, root)
            if _layer(p, root) > _layer(source, root) and p.name != "__init__.py"]


SOURCES = sorted(PACKAGE_DIR.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    packages = {_package(p) for p in SOURCES} - {""}
    assert packages == set(LAYERS), f"add the new package to LAYERS: {packages ^ set(LAYERS)}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.relative_to(PACKAGE_DIR).as_posix())
def test_imports_run_downwards(source: Path) -> None:
    upward = upward_imports(source)
    assert not upward, f"{source.relative_to(PACKAGE_DIR)} imports from a higher layer: {upward}"


def test_sibling_packages_form_no_cycle() -> None:
    edges: dict[str, set[str]] = {name: set() for name in LAYERS}
    for source in SOURCES:
        for target in direct_imports(source):
            a, b = _package(source), _package(target)
            if a and b and a != b:
                edges[a].add(b)

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges[start])

    cycles = sorted(name for name in edges if reaches(name, name))
    assert not cycles, f"packages import each other in a cycle: {cycles} ({ {k: sorted(v) for k, v in edges.items()} })"


def test_a_planted_upward_import_is_found(tmp_path: Path) -> None:
    """The check above can fail: a model module importing serving is reported."""
    package = tmp_path / "signflow"
    (package / "model").mkdir(parents=True)
    (package / "serving").mkdir()
    for init in (package / "__init__.py", package / "model" / "__init__.py", package / "serving" / "__init__.py"):
        init.write_text("")
    (package / "serving" / "predictor.py").write_text("X = 1\n")
    bad = package / "model" / "inference.py"
    bad.write_text("def f():\n    from signflow.serving.predictor import X\n    return X\n")
    assert upward_imports(bad, package) == ["serving/predictor.py"]
    assert upward_imports(package / "serving" / "predictor.py", package) == []
