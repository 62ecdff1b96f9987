"""Markdown pull-request report: what a branch changes in params, metrics and plots.

CI runs ``dvc repro`` on the pull request and then this module, which compares
the workspace (the reproduced PR) against the base branch with DVC's own diff
commands, so the numbers a reviewer sees are exactly what ``dvc metrics diff``
would show on their machine. Every command's failure is raised with its stderr:
an empty section must mean "no change", never "the command broke".
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from signflow.io import write_text

log = logging.getLogger(__name__)

DEFAULT_BASE = "main"
DEFAULT_OUT = Path("reports/pr.md")
# Folder whose git-tracked files are the pipeline's metrics and plots (dvc.yaml
# declares them there with `cache: false`, so git sees every change).
PLOTS_DIR = "metrics"
# Suffixes of plot data and images; `.json` in metrics/ are metrics files,
# already covered by `dvc metrics diff`.
PLOT_SUFFIXES = frozenset({".csv", ".tsv", ".png", ".jpg", ".jpeg", ".svg"})
PLOTS_DIFF_DOCS = "https://dvc.org/doc/command-reference/plots/diff"
TITLE = "## signflow pipeline report"
# A `--md` table is a header row plus a separator row; anything beyond is a change.
_MD_HEADER_ROWS = 2


class PrReportError(RuntimeError):
    """A command the report needs failed; the message names it and quotes its stderr."""


@dataclass(frozen=True)
class CommandResult:
    """Captured output of one command (stderr kept: DVC reports unreadable files there)."""

    stdout: str
    stderr: str


def command_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder first on PATH.

    Why: CI and `make` call `.venv/bin/signflow` without activating the venv, so
    a bare `dvc` (and the `python` in stage commands) must resolve to the venv's
    pinned copies, not whatever the runner has installed.
    """
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env


def run_command(argv: Sequence[str], cwd: Path) -> CommandResult:
    """Run ``argv`` in ``cwd``, capturing output; raise PrReportError naming it on failure."""
    env = command_env()
    shown = " ".join(argv)
    executable = shutil.which(argv[0], path=env["PATH"])
    if executable is None:
        raise PrReportError(f"`{shown}` failed: {argv[0]!r} not found on PATH ({env['PATH']})")
    log.debug("running %s in %s", shown, cwd)
    proc = subprocess.run(
        [executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        stderr = proc.stderr.strip() or "(no stderr)"
        raise PrReportError(f"`{shown}` failed in {cwd} (exit {proc.returncode}):\n{stderr}")
    return CommandResult(stdout=proc.stdout, stderr=proc.stderr)


def check_base(repo: Path, base: str) -> None:
    """Fail early, and readably, when ``base`` is not a commit in ``repo``.

    Why: in CI a shallow checkout or a typo in the base ref would otherwise
    surface as three separate DVC errors.
    """
    try:
        run_command(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], repo)
    except PrReportError as err:
        raise PrReportError(
            f"base revision {base!r} not found in {repo} "
            f"(in CI, check out with full history: fetch-depth: 0)\n{err}"
        ) from err


def is_empty_table(markdown: str) -> bool:
    """True when a `dvc ... diff --md` output has no data row (DVC prints only the header then)."""
    rows = [line for line in markdown.splitlines() if line.strip().startswith("|")]
    return len(rows) <= _MD_HEADER_ROWS


def diff_section(repo: Path, dvc: str, kind: str, base: str) -> str:
    """One section from `dvc <kind> diff <base> --md`: the table, or a "no changes" line.

    DVC exits 0 but warns on stderr when a file cannot be read in one revision;
    those warnings are quoted under the table so a "-" cell is explained.
    """
    result = run_command([dvc, kind, "diff", base, "--md"], repo)
    lines = [f"### {kind.capitalize()}", ""]
    if is_empty_table(result.stdout):
        lines.append(f"No changes in {kind} vs `{base}`.")
    else:
        lines.append(result.stdout.strip())
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    if warnings:
        lines += ["", f"> `dvc {kind} diff` warned:"] + [f"> {line}" for line in warnings]
    return "\n".join(lines)


def changed_plot_files(repo: Path, base: str, plots_dir: str = PLOTS_DIR) -> list[str]:
    """Plot files under ``plots_dir`` that differ between ``base`` and the workspace.

    Why git and not `dvc plots diff <base> --json`: that command does run
    offline for `cache: false` plots, but it renders *every* plot for both
    revisions (changed or not) and needs the DVC cache for cached image plots,
    which a CI runner without a remote lacks. `git diff --name-only` on the
    workspace (so freshly reproduced outputs count) plus untracked new files
    answers "which plots changed" directly. Limitation: plots kept in the DVC
    cache (not git) are not listed; their change shows in `dvc.lock` instead.
    """
    diff = run_command(["git", "diff", "--name-only", base, "--", plots_dir], repo).stdout
    new = run_command(["git", "ls-files", "--others", "--exclude-standard", "--", plots_dir], repo).stdout
    names = {line.strip() for line in (diff + new).splitlines() if line.strip()}
    return sorted(name for name in names if Path(name).suffix.lower() in PLOT_SUFFIXES)


def plots_section(repo: Path, base: str) -> str:
    """The changed plot files as a list, plus how to see them rendered (images included)."""
    changed = changed_plot_files(repo, base)
    lines = ["### Plots", ""]
    if changed:
        lines += [f"- `{name}`" for name in changed]
    else:
        lines.append(f"No changes in plot files vs `{base}`.")
    lines += [
        "",
        f"To compare the plots side by side (images too), run `dvc plots diff {base} --open` "
        f"locally ([docs]({PLOTS_DIFF_DOCS})).",
    ]
    return "\n".join(lines)


def build_pr_report(repo: Path, base: str = DEFAULT_BASE, dvc: str = "dvc") -> str:
    """Markdown comparing the workspace of ``repo`` with ``base``: params, metrics, plots."""
    repo = Path(repo)
    check_base(repo, base)
    sections = [
        TITLE,
        f"Workspace compared with `{base}`.",
        diff_section(repo, dvc, "params", base),
        diff_section(repo, dvc, "metrics", base),
        plots_section(repo, base),
    ]
    return "\n\n".join(sections) + "\n"


def write_pr_report(repo: Path, base: str, out: Path, dvc: str = "dvc") -> str:
    """Build the report and write it atomically to ``out``; return the markdown too."""
    markdown = build_pr_report(repo, base=base, dvc=dvc)
    write_text(out, markdown)
    log.info("wrote PR report vs %s to %s", base, out)
    return markdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `signflow pr-report` (the CLI registers the subcommand)."""
    parser.add_argument("--base", default=DEFAULT_BASE,
                        help="git revision to compare against, e.g. origin/main in CI (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="markdown file to write (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow pr-report`: write the report, print it; 1 on a failed command."""
    try:
        markdown = write_pr_report(Path.cwd(), args.base, args.out)
    except PrReportError as err:
        log.error("%s", err)
        return 1
    sys.stdout.write(markdown)
    return 0
