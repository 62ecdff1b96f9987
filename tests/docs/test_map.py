"""The package map in the README and on the development page names every package and module under
src/signflow/, and the README's stage table names every stage of dvc.yaml: the maps cannot go stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

_ROW = re.compile(r"^\|\s*`([\w/]+/)`\s*\|(.*)\|\s*$")
_STAGE_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|")


def map_rows(text: str) -> dict[str, str]:
    """``{package path relative to src/signflow/ ("" for the root): its row's text}`` from the map table, the
    one whose header starts with ``| package |``."""
    rows: dict[str, str] = {}
    in_map = False
    for line in text.splitlines():
        if line.startswith("| package |"):
            in_map = True
        elif in_map and not line.startswith("|"):
            break
        elif in_map and (row := _ROW.match(line)):
            path = row.group(1).removeprefix("signflow/")
            rows[path] = row.group(2)
    return rows


def packages(src: Path) -> dict[str, list[str]]:
    """``{package path relative to src/signflow/ ("" for the root): its modules}``, ``__init__`` left out."""
    found = {}
    for init in sorted(src.rglob("__init__.py")):
        package = init.parent
        relative = "" if package == src else f"{package.relative_to(src).as_posix()}/"
        found[relative] = sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
    return found


def missing_from_map(text: str, src: Path) -> list[str]:
    rows = map_rows(text)
    missing = []
    for package, modules in packages(src).items():
        if package not in rows:
            missing.append(f"package `{package or 'signflow/'}` has no row")
            continue
        missing += [f"`{package}{module}`" for module in modules if f"`{module}`" not in rows[package]]
    stale = [f"row `{package}` names no package" for package in rows if package not in packages(src)]
    return missing + stale


@pytest.mark.parametrize("page", ["README.md", "docs/development.md"])
def test_map_names_every_package_and_module(repo_root: Path, page: str) -> None:
    missing = missing_from_map((repo_root / page).read_text(), repo_root / "src" / "signflow")
    assert not missing, f"{page}'s map (the `| package | modules |` table) misses: " + ", ".join(missing)


def test_readme_names_every_stage(repo_root: Path) -> None:
    stages = set(yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"])
    text = (repo_root / "README.md").read_text()
    table = text[text.index("| stage |"):]
    named = {m.group(1) for line in table.splitlines()[2:] if (m := _STAGE_ROW.match(line))}
    assert named == stages, f"README stage table: missing {sorted(stages - named)}, extra {sorted(named - stages)}"
    assert all((repo_root / "stages" / f"{stage}.py").is_file() for stage in stages)
