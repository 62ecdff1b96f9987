"""Markdown pull-request report: what a branch changes in params, metrics and plots.

CI runs ``dvc repro`` on the pull request and then this module, which compares
the workspace (the reproduced PR) against the base branch with DVC's own diff
commands, so the numbers a reviewer sees are exactly what ``dvc metrics diff``
would show on their machine. Every command's failure is raised with its stderr
(``signflow.processes.CommandError``): an empty section must mean "no change",
never "the command broke".

Timings (every file under ``metrics/timings/``, ``signflow.paths.TIMINGS_DIR``)
change with the runner and its load, not with the pull request: their rows
leave the metrics table for a section of their own, so a PR that changes
nothing else shows no metrics diff. Each changed plot data file is drawn, base
beside head, to a PNG (``signflow.review.plots``) that the markdown links.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from signflow import paths
from signflow.files import write_text
from signflow.markdown import relative_link
from signflow.processes import CommandError, Result, run
from signflow.review.decision import decide
from signflow.review.gate import GateResult

if TYPE_CHECKING:  # pandas and matplotlib are imported only when a picture is drawn
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_BASE = "main"
DEFAULT_OUT = Path("reports/pr.md")
# The PNGs the report links (relative to the markdown): base beside head per changed plot file.
# A folder of their own: each report removes the PNGs a previous one left there.
DEFAULT_IMAGES_DIR = Path("reports/pr")
# Folder whose git-tracked files are the pipeline's metrics and plots (dvc.yaml
# declares them there with `cache: false`, so git sees every change).
PLOTS_DIR = "metrics"
# Suffixes of plot data and images; `.json` in metrics/ are metrics files,
# already covered by `dvc metrics diff`.
PLOT_SUFFIXES = frozenset({".csv", ".tsv", ".png", ".jpg", ".jpeg", ".svg"})
# Files the review's own sections cover: the per-track data summary (the data section), not a plot.
NOT_PLOTS = frozenset({paths.DATA_TRACKS.as_posix()})
DATA_SUFFIXES = {".csv": ",", ".tsv": "\t"}  # plot data drawn base vs head, and its separator
# Files under this folder are timings (a pattern: every stage's timings file, present or future).
TIMINGS_DIR = paths.TIMINGS_DIR.as_posix()
TIMINGS_TITLE = "### Timings: not part of the review"
TIMINGS_NOTE = (f"Speeds and durations (`{TIMINGS_DIR}/`) change with the runner and its load, not with the code: "
                "shown for information, left out of the metrics diff above.")
HEAD_LABEL = "workspace"  # what is compared with the base: the reproduced pull request
PLOTS_DIFF_DOCS = "https://dvc.org/doc/command-reference/plots/diff"
TITLE = "## signflow pipeline report"
# A `--md` table is a header row plus a separator row; anything beyond is a change.
_MD_HEADER_ROWS = 2
# Bound on each git/dvc call: `dvc metrics diff` on a large project takes seconds; a hung one must not hang CI.
COMMAND_SECONDS = 600.0


class PrReportError(RuntimeError):
    """The report cannot be built as asked (a base ref that is not a commit); the message says what to do."""


def run_command(argv: Sequence[str], cwd: Path) -> Result:
    """``argv`` run in ``cwd`` by the one runner, with the report's bound; CommandError naming it on failure."""
    return run(argv, cwd, timeout=COMMAND_SECONDS)


def check_base(repo: Path, base: str) -> None:
    """Fail early, and readably, when ``base`` is not a commit in ``repo``.

    Why: in CI a shallow checkout or a typo in the base ref would otherwise
    surface as three separate DVC errors.
    """
    try:
        run_command(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], repo)
    except CommandError as err:
        raise PrReportError(
            f"base revision {base!r} not found in {repo} "
            f"(in CI, check out with full history: fetch-depth: 0): {err}"
        ) from err


def is_empty_table(markdown: str) -> bool:
    """True when a `dvc ... diff --md` output has no data row (DVC prints only the header then)."""
    rows = [line for line in markdown.splitlines() if line.strip().startswith("|")]
    return len(rows) <= _MD_HEADER_ROWS


def is_timing(path: str, timings_dir: str = TIMINGS_DIR) -> bool:
    """True for a file under ``timings_dir`` (any stage's timings, whatever its name)."""
    return path.startswith(timings_dir.rstrip("/") + "/")


def split_table(markdown: str, apart: Callable[[str], bool]) -> tuple[str, str]:
    """A `dvc ... diff --md` table as two tables: rows whose path (first cell) is not ``apart``, and those that are.

    Each keeps DVC's header; a table without rows is "". DVC repeats the path
    on every row, so a row alone says which file it belongs to.
    """
    lines = [line.strip() for line in markdown.splitlines() if line.strip().startswith("|")]
    header, rows = lines[:_MD_HEADER_ROWS], lines[_MD_HEADER_ROWS:]
    moved = [row for row in rows if apart(row.strip("|").split("|")[0].strip())]
    kept = [row for row in rows if row not in moved]
    return ("\n".join(header + kept) if kept else ""), ("\n".join(header + moved) if moved else "")


def _section(title: str, what: str, base: str, table: str, command: str = "", warnings: Sequence[str] = ()) -> str:
    """A report section: the table, or a "no changes" line; DVC's warnings quoted under it."""
    lines = [title, "", table or f"No changes in {what} vs `{base}`."]
    if warnings:
        lines += ["", f"> `{command}` warned:"] + [f"> {line}" for line in warnings]
    return "\n".join(lines)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def diff_section(repo: Path, dvc: str, kind: str, base: str) -> str:
    """One section from `dvc <kind> diff <base> --md`: the table, or a "no changes" line.

    DVC exits 0 but warns on stderr when a file cannot be read in one revision;
    those warnings are quoted under the table so a "-" cell is explained.
    """
    result = run_command([dvc, kind, "diff", base, "--md"], repo)
    table = "" if is_empty_table(result.stdout) else result.stdout.strip()
    return _section(f"### {kind.capitalize()}", kind, base, table, f"dvc {kind} diff", _warnings(result.stderr))


def metrics_sections(
    repo: Path, dvc: str, base: str, timings_dir: str = TIMINGS_DIR, changed_timing_files: Sequence[str] = ()
) -> tuple[str, str]:
    """The metrics section and the timings section, from one `dvc metrics diff <base> --md`.

    Rows of files under ``timings_dir`` (and DVC's warnings naming them) go to
    the timings section, listed with ``changed_timing_files`` (their CSVs).
    """
    result = run_command([dvc, "metrics", "diff", base, "--md"], repo)
    command = "dvc metrics diff"
    review, timings = split_table(result.stdout, lambda path: is_timing(path, timings_dir))
    warnings = _warnings(result.stderr)
    timing_warnings = [line for line in warnings if timings_dir in line]
    review_warnings = [line for line in warnings if line not in timing_warnings]
    timings_section = _section(TIMINGS_TITLE, "timings", base, timings, command, timing_warnings)
    timings_section += "\n\n" + TIMINGS_NOTE
    if changed_timing_files:
        timings_section += " Changed timing files: " + ", ".join(f"`{name}`" for name in changed_timing_files) + "."
    return _section("### Metrics", "metrics", base, review, command, review_warnings), timings_section


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
    return sorted(name for name in names if Path(name).suffix.lower() in PLOT_SUFFIXES and name not in NOT_PLOTS)


def image_name(name: str) -> str:
    """The PNG file name for plot file ``name``: unique per path (``metrics/roc.csv`` -> ``metrics-roc_csv.png``)."""
    return name.replace("/", "-").replace(".", "_") + ".png"


def _read_frame(text: str, suffix: str) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(io.StringIO(text), sep=DATA_SUFFIXES[suffix])
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def draw_plot_change(repo: Path, base: str, name: str, base_files: set[str], out: Path) -> str | None:
    """Draw ``name`` at ``base`` (left) and in the workspace (right) to ``out``; the kind, or None if no picture."""
    import pandas as pd

    from signflow.review.plots import plot_comparison

    suffix = Path(name).suffix.lower()
    old = new = None  # None: no such file in that revision
    try:
        if name in base_files:
            old = _read_frame(run_command(["git", "show", f"{base}:{name}"], repo).stdout, suffix)
        if (repo / name).is_file():
            new = _read_frame((repo / name).read_text(), suffix)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        log.warning("%s: not readable as a table (%s): no picture", name, err)
        return None
    return plot_comparison(old, new, out, labels=(f"{name} @ {base}", f"{name} @ {HEAD_LABEL}"))


def draw_plot_changes(repo: Path, base: str, changed: Sequence[str], images_dir: Path) -> dict[str, Path]:
    """One PNG per changed plot data file that has a picture, in ``images_dir`` (its old PNGs removed)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    for stale in images_dir.glob("*.png"):
        stale.unlink()
    data = [name for name in changed if Path(name).suffix.lower() in DATA_SUFFIXES]
    if not data:
        return {}
    listed = run_command(["git", "ls-tree", "-r", "--name-only", base, "--", *data], repo).stdout
    base_files = {line.strip() for line in listed.splitlines() if line.strip()}
    images = {}
    for name in data:
        out = images_dir / image_name(name)
        if draw_plot_change(repo, base, name, base_files, out) is not None:
            images[name] = out
    return images


def plots_section(repo: Path, base: str, changed: Sequence[str] | None = None, images: dict[str, Path] | None = None,
                  markdown_dir: Path | None = None) -> str:
    """The changed plot files as a list, each with its base-vs-head picture when drawn, and the plots diff hint.

    ``changed`` defaults to :func:`changed_plot_files`; ``images`` (plot file ->
    PNG) are linked relative to ``markdown_dir``, where the markdown is written.
    """
    changed = changed_plot_files(repo, base) if changed is None else changed
    images = images or {}
    lines = ["### Plots", ""]
    for name in changed:
        lines.append(f"- `{name}`")
        if name in images:
            link = relative_link(images[name], markdown_dir)
            lines += ["", f"  ![{name}: `{base}` left, {HEAD_LABEL} right]({link})"]
    if not changed:
        lines.append(f"No changes in plot files vs `{base}`.")
    lines += [
        "",
        f"To compare the plots side by side (images too), run `dvc plots diff {base} --open` "
        f"locally ([docs]({PLOTS_DIFF_DOCS})).",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class PrReport:
    """The report's markdown and the gate's outcome (None when there were no predictions to compare)."""

    markdown: str
    gate: GateResult | None


def build_pr_report(repo: Path, base: str = DEFAULT_BASE, dvc: str = "dvc", images_dir: Path | None = None,
                    markdown_dir: Path | None = None) -> PrReport:
    """The report on the workspace of ``repo`` against ``base``: the verdicts and the gate, the images that
    flipped, the data diff, then the params, metrics and plots that changed, timings apart.

    With ``images_dir``, the flip gallery, the new images and each changed plot data
    file (base beside head) are drawn there and linked relative to ``markdown_dir``
    (default: the folder holding ``images_dir``, as ``reports/pr.md`` beside ``reports/pr/``).
    """
    repo = Path(repo)
    check_base(repo, base)
    changed = changed_plot_files(repo, base)
    timing_files = [name for name in changed if is_timing(name)]
    plots = [name for name in changed if not is_timing(name)]
    images = {}
    if images_dir is not None:
        images = draw_plot_changes(repo, base, plots, Path(images_dir))
        markdown_dir = Path(images_dir).parent if markdown_dir is None else markdown_dir
    decision = decide(repo, base, None if images_dir is None else Path(images_dir), markdown_dir or Path.cwd())
    params = diff_section(repo, dvc, "params", base)
    metrics, timings = metrics_sections(repo, dvc, base, changed_timing_files=timing_files)
    sections = [
        TITLE,
        f"Workspace compared with `{base}`.",
        *decision.sections,
        params,
        metrics,
        plots_section(repo, base, plots, images, markdown_dir),
        timings,
    ]
    return PrReport("\n\n".join(sections) + "\n", decision.gate)


def write_pr_report(repo: Path, base: str, out: Path, dvc: str = "dvc", images_dir: Path | None = None) -> PrReport:
    """Build the report (PNGs into ``images_dir``, if given) and write its markdown atomically to ``out``."""
    report = build_pr_report(repo, base=base, dvc=dvc, images_dir=images_dir, markdown_dir=Path(out).parent)
    write_text(out, report.markdown)
    log.info("wrote PR report vs %s to %s", base, out)
    return report
