"""The documentation site builds with `mkdocs build --strict`, and a broken link fails that build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BUILD_TIMEOUT = 300


def mkdocs_build(root: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` in ``root``. Never ``-q``: it hides the warnings that strict turns into errors."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip(f"no mkdocs beside {sys.executable}: install the docs extra (make install)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about its successor, not a build warning
    return subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(site_dir)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)


def test_site_builds_strict(repo_root: Path, tmp_path: Path) -> None:
    proc = mkdocs_build(repo_root, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    # mkdocstrings rendered the docstrings, not just the page's own text
    assert "predict_images" in api and "load_predictor" in api


@pytest.mark.parametrize("link", ["[the page](missing-page.md)", "[a heading](data.md#no-such-heading)"])
def test_broken_link_fails(repo_root: Path, tmp_path: Path, link: str) -> None:
    root = tmp_path / "copy"
    shutil.copytree(repo_root / "docs", root / "docs")
    config = (repo_root / "mkdocs.yml").read_text()
    assert "paths: [src]" in config
    # the copy reads the API docstrings from the real tree
    (root / "mkdocs.yml").write_text(config.replace("paths: [src]", f"paths: [{repo_root / 'src'}]"))
    with (root / "docs" / "index.md").open("a") as page:
        page.write(f"\nSee {link}.\n")
    proc = mkdocs_build(root, tmp_path / "site")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    target = link.split("(")[1].rstrip(")")
    assert f"'index.md' contains a link '{target}'" in proc.stderr, proc.stderr


def test_readme_links_resolve(repo_root: Path) -> None:
    """The README is not part of the site: its relative links (to docs/ pages, as GitHub shows them) are
    checked here, the anchor against the page's headings as mkdocs spells them."""
    text = (repo_root / "README.md").read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        page = repo_root / path
        if not page.exists():
            broken.append(target)
        elif anchor and anchor not in {_slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}:
            broken.append(target)
    assert not broken, f"README.md links to missing pages or headings: {broken}"


def _slug(heading: str) -> str:
    """A heading's anchor as mkdocs' toc extension makes it (its own slugify, on the text without backticks)."""
    from markdown.extensions.toc import slugify  # the docs extra's Markdown, which mkdocs renders with

    return slugify(heading.replace("`", ""), "-")
