"""`signflow sweep`: a grid of `dvc exp run` experiments, queued, waited for, and tabled.

Why not just `dvc exp run --queue -S strategy=linear,full`: DVC queues every
point of such a grid blindly. A typo (`strategy=foo`) then fails in each
experiment after minutes of work, and points that make no sense (a `linear`
head on `simple_cnn`, which has no pretrained weights) waste a worker. Here
every point is first applied to an in-memory copy of ``params.yaml`` and
validated with ``load_config``, points that make no sense are skipped with the
reason, and only then is anything queued: one named experiment per point
(`<prefix>-<index>`), run by `dvc queue start -j N`. The results come from
`dvc exp show --json` (the same numbers `dvc exp show` prints) as one table,
Markdown and CSV, where skipped and failed points stay listed with why.

Grid syntax is DVC's: `-S key=v1,v2` (values are YAML-like scalars parsed as
DVC's Hydra grammar does: `true` is a bool, `0.001` and `1e-3` floats, `'a,b'`
a quoted string, `[1,2]` a list) and/or `--grid FILE.yaml` (dotted key -> list
of values). The product's order is stable: keys in the order given (`-S` first,
then the file's), the last key varying fastest.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import itertools
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from tqdm import tqdm

from signflow import paths
from signflow.catalog import BACKBONE_ENTRIES, STRATEGIES
from signflow.config import Config, ConfigError, load_config, load_params
from signflow.files import write_text
from signflow.logs import setup_logging
from signflow.review.report import command_env

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # some queued experiment failed or did not finish in time
EXIT_ERROR = 2  # nothing ran: bad grid, invalid point, or a dvc command failed

DEFAULT_PREFIX = "sweep"
# Not under reports/: that folder is the `report` stage's DVC output, so a file
# written there makes `dvc status` list the stage as changed and the next
# `dvc repro` deletes it.
DEFAULT_OUT = Path("sweeps/sweep.md")
DEFAULT_SORT = "test.accuracy"
DEFAULT_JOBS = 1
POLL_SECONDS = 5.0  # between `dvc exp show --json` calls while waiting
# Every dvc/git call is bounded, so a wedged one cannot outlast --timeout: a poll that hangs (DVC's
# `exp show` has blocked beside running queue workers, treeverse/dvc#8762) is killed and counts as a
# failed poll; other calls (queueing, starting workers, reading a log) get a generous bound.
POLL_CALL_SECONDS = 120.0
TOOL_CALL_SECONDS = 600.0
MAX_POLL_FAILURES = 5  # consecutive failed polls (e.g. a git lock held by a worker) before giving up
FALLBACK_TAIL_LINES = 3  # log lines kept as a failed point's error when no exception line is found
MAX_TAIL_LINES = 8  # cap on the lines kept from the last exception line onwards
MAX_PREFIX_LENGTH = 40
FLOAT_DIGITS = 4  # metric precision in the Markdown table (the CSV keeps full precision)

# A git-ref-safe experiment name prefix: DVC stores experiments as refs/exps/.../<name>.
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
KEY_PATTERN = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)*")
# Scalars as Hydra (DVC's -S parser) reads them; anything else is a string.
INT_PATTERN = re.compile(r"[+-]?(0|[1-9][0-9]*)")
FLOAT_PATTERN = re.compile(r"[+-]?((\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+[eE][+-]?\d+|inf|nan)", re.IGNORECASE)
NULL_WORD, TRUE_WORD, FALSE_WORD = "null", "true", "false"
# A string that needs no quotes on the DVC command line.
PLAIN_STRING = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")
SWEEP_FUNCTION = re.compile(r"(choice|range|interval|sort|shuffle|tag|glob)\(.*\)")
DICT_KEY = re.compile(r"[A-Za-z0-9_]([\w\-./ ]*[\w\-./])?")
# A traceback's last line, or a stage's one-line user error (signflow.logs.error_line).
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*:|signflow: error: )")
OPENERS, CLOSERS, QUOTES = "[{(", "]})", "'\""

# Table columns after the name and the swept params: (column, metrics file, key in it).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("test.accuracy", paths.EVALUATE_METRICS.as_posix(), "test.accuracy"),
    ("test.macro_f1", paths.EVALUATE_METRICS.as_posix(), "test.macro_f1"),
    ("openset.auroc", paths.EVALUATE_METRICS.as_posix(), "openset.auroc"),
    ("train_seconds", paths.TRAIN_TIMINGS.as_posix(), "train_seconds"),  # a timings file: see paths.TIMINGS_DIR
)
NAME_COLUMN, STATUS_COLUMN, NOTE_COLUMN = "experiment", "status", "note"

# Point states: DVC's executor states (`dvc exp show --json`) plus ours.
SUCCESS, FAILED, QUEUED, RUNNING = "success", "failed", "queued", "running"
SKIPPED, PLANNED, MISSING = "skipped", "planned", "missing"
FINISHED_STATES = frozenset({SUCCESS, FAILED})

Grid = dict[str, list[Any]]  # dotted params key -> its values, in the order given


class SweepError(RuntimeError):
    """The sweep cannot run as asked; the one-line message says what to fix."""


# ------------------------------------------------------------------ grid parsing


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside quotes and brackets: `a,'b,c',[1,2]` -> a | 'b,c' | [1,2]."""
    items, current, depth, quote = [], [], 0, ""
    escaped = False  # inside quotes, the previous character was an unpaired backslash
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in QUOTES:
            quote = char
        elif char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote or depth:
        raise SweepError(f"unbalanced quotes or brackets in {text!r}")
    items.append("".join(current))
    return items


def _unquote(text: str) -> str:
    r"""The string inside quotes, undoing Hydra's escapes (`\'` and a doubled backslash before a quote)."""
    quote, body = text[0], text[1:-1]
    return re.sub(r"(\\+)(" + quote + "|$)", lambda m: "\\" * (len(m[1]) // 2) + m[2], body)


def parse_value(text: str) -> Any:
    """One value as DVC's `-S` (Hydra) parses it: bool, null, int, float, quoted string, list or plain string."""
    text = text.strip()
    if not text:
        raise SweepError("empty value; quote it ('') for an empty string")
    lowered = text.lower()
    if lowered in (TRUE_WORD, FALSE_WORD):
        return lowered == TRUE_WORD
    if lowered == NULL_WORD:
        return None
    if INT_PATTERN.fullmatch(text):
        return int(text)
    if FLOAT_PATTERN.fullmatch(text):
        return float(text)
    if len(text) >= 2 and text[0] in QUOTES and text[-1] == text[0]:
        return _unquote(text)
    if text[0] == "[" and text[-1] == "]":
        inner = text[1:-1].strip()
        return [parse_value(item) for item in _split_top_level(inner)] if inner else []
    if SWEEP_FUNCTION.fullmatch(text):
        raise SweepError(f"{text!r}: Hydra sweep functions (choice, range, ...) are not supported; list the values")
    if text[0] in OPENERS:
        raise SweepError(f"{text!r}: only scalars and [lists] on the command line; put mappings in --grid FILE.yaml")
    return text


def parse_assignment(text: str) -> tuple[str, list[Any]]:
    """`key=v1,v2` -> (key, [v1, v2])."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not KEY_PATTERN.fullmatch(key):
        raise SweepError(f"-S {text!r}: expected a dotted params key=value[,value...], e.g. train.lr=0.01,0.001")
    try:
        return key, [parse_value(item) for item in _split_top_level(values)]
    except SweepError as err:
        raise SweepError(f"-S {text!r}: {err}") from None


def _unique_values(key: str, values: Sequence[Any], where: str) -> list[Any]:
    if not values:
        raise SweepError(f"{where}: {key} has no values")
    seen: set[str] = set()
    for value in values:
        shown = format_value(value)  # True and 1 compare equal in Python; their spellings do not
        if shown in seen:
            raise SweepError(f"{where}: {key} lists the value {shown} twice")
        seen.add(shown)
    return list(values)


def parse_assignments(texts: Iterable[str]) -> Grid:
    """Repeated `-S key=v1,v2` options -> grid; a key given twice is an error."""
    grid: Grid = {}
    for text in texts:
        key, values = parse_assignment(text)
        if key in grid:
            raise SweepError(f"-S {key} is given twice; list all its values in one -S {key}=v1,v2")
        grid[key] = _unique_values(key, values, "-S")
    return grid


class _GridLoader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` as a string; read it as a float like DVC's -S does."""


_GridLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def parse_grid_text(text: str, where: str = "grid") -> Grid:
    """A YAML mapping of dotted key -> list of values (a single value is a one-value axis)."""
    try:
        loaded = yaml.load(text, Loader=_GridLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as err:
        raise SweepError(f"{where}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(loaded, Mapping) or not loaded:
        raise SweepError(f"{where}: expected a mapping of dotted params keys to lists of values")
    grid: Grid = {}
    for key, values in loaded.items():
        key = str(key)
        if not KEY_PATTERN.fullmatch(key) or isinstance(values, Mapping):
            raise SweepError(f"{where}: {key!r} must be a dotted params key with a list of values (train.lr: [0.01])")
        grid[key] = _unique_values(key, values if isinstance(values, list) else [values], where)
    return grid


def load_grid_file(path: Path) -> Grid:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SweepError(f"--grid {path}: cannot read it ({err.strerror})") from None
    return parse_grid_text(text, where=str(path))


def merge_grids(*grids: Mapping[str, list[Any]]) -> Grid:
    """One grid from several, keys in order; a key in two of them is an error."""
    merged: Grid = {}
    for grid in grids:
        for key, values in grid.items():
            if key in merged:
                raise SweepError(f"{key} is given both with -S and in --grid; give it once")
            merged[key] = list(values)
    return merged


# ------------------------------------------------------------------ formatting for DVC


def _quote(text: str) -> str:
    """Single-quoted for Hydra: backslashes before a quote (or the end) doubled, quotes escaped."""
    body = re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), text)
    return f"'{body}'"


def _format_key(key: Any) -> str:
    """A mapping key for Hydra: unquoted (it accepts no quotes there); int-like keys come back as ints."""
    text = str(key)
    if not DICT_KEY.fullmatch(text) or text.lower() in (TRUE_WORD, FALSE_WORD, NULL_WORD):
        raise SweepError(f"mapping key {text!r} cannot be passed to dvc exp run -S; use letters, digits, _-./ ")
    return text


def format_value(value: Any) -> str:
    """``value`` spelled so that DVC's `-S key=<spelling>` reads back exactly ``value``."""
    if isinstance(value, bool):
        return TRUE_WORD if value else FALSE_WORD
    if value is None:
        return NULL_WORD
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        plain = PLAIN_STRING.fullmatch(value) and parse_value(value) == value
        return value if plain else _quote(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_format_key(k)}:{format_value(v)}" for k, v in value.items()) + "}"
    raise SweepError(f"cannot pass a {type(value).__name__} value ({value!r}) to dvc exp run -S")


# ------------------------------------------------------------------ points


@dataclass(frozen=True)
class Point:
    """One combination of the grid: its experiment name and the params it overrides."""

    index: int  # 1-based position in the product
    name: str
    overrides: dict[str, Any]
    skip_reason: str | None = None

    @property
    def label(self) -> str:
        return " ".join(f"{key}={format_value(value)}" for key, value in self.overrides.items())

    def set_args(self) -> list[str]:
        """`-S key=value` arguments for `dvc exp run`."""
        return [arg for key, value in self.overrides.items() for arg in ("-S", f"{key}={format_value(value)}")]


def check_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.fullmatch(prefix) or len(prefix) > MAX_PREFIX_LENGTH:
        raise SweepError(
            f"--prefix {prefix!r}: use letters, digits, '-' and '_' (starting with a letter or digit), "
            f"at most {MAX_PREFIX_LENGTH} characters"
        )
    return prefix


def expand(grid: Mapping[str, Sequence[Any]], prefix: str = DEFAULT_PREFIX) -> list[Point]:
    """The Cartesian product in a stable order (last key fastest), named `<prefix>-<index>`."""
    if not grid:
        raise SweepError("empty grid: give -S key=v1,v2 and/or --grid FILE.yaml")
    check_prefix(prefix)
    keys = list(grid)
    return [
        Point(index, f"{prefix}-{index}", dict(zip(keys, combo, strict=True)))
        for index, combo in enumerate(itertools.product(*(grid[key] for key in keys)), start=1)
    ]


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``params`` with dotted keys set; like DVC, only keys that exist may be set."""
    result = copy.deepcopy(dict(params))
    for key, value in overrides.items():
        node: Any = result
        parts = key.split(".")
        for depth, part in enumerate(parts):
            match = next((k for k in node if str(k) == part), None) if isinstance(node, dict) else None
            if match is None:
                raise SweepError(f"params.yaml has no key {key!r} (dvc exp run -S can only set existing keys)")
            if depth == len(parts) - 1:
                node[match] = copy.deepcopy(value)
            else:
                node = node[match]
    return result


def validate_params(params: Mapping[str, Any], workdir: Path) -> Config:
    """``load_config`` on ``params`` written to ``workdir/params.yaml``: the exact check every stage runs."""
    path = workdir / paths.PARAMS.name
    path.write_text(yaml.safe_dump(dict(params), sort_keys=False))
    return load_config(path)


def _pretrained_strategy_without_weights(cfg: Config) -> str | None:
    if STRATEGIES[cfg.strategy].pretrained and not BACKBONE_ENTRIES[cfg.model.backbone].pretrained:
        return (f"strategy {cfg.strategy} needs pretrained weights but backbone {cfg.model.backbone} "
                "has none (use strategy=scratch)")
    return None


def _pretrained_strategy_on_random_backbone(cfg: Config) -> str | None:
    spec = STRATEGIES[cfg.strategy]
    if spec.pretrained and cfg.model.weights == "none":
        what = "a frozen random backbone" if spec.frozen_backbone else "a random backbone"
        return f"strategy {cfg.strategy} with model.weights=none adapts {what} (use strategy=scratch)"
    return None


# Points that validate but make no sense; each rule returns why, or None. First match wins.
SKIP_RULES: tuple[Callable[[Config], str | None], ...] = (
    _pretrained_strategy_without_weights,
    _pretrained_strategy_on_random_backbone,
)


def skip_reason(cfg: Config) -> str | None:
    return next((reason for rule in SKIP_RULES if (reason := rule(cfg)) is not None), None)


def plan_points(
    params: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], prefix: str = DEFAULT_PREFIX
) -> list[Point]:
    """Expand the grid and check every point before anything is queued: invalid -> error, senseless -> skipped."""
    points = expand(grid, prefix)
    planned = []
    with tempfile.TemporaryDirectory(prefix="signflow-sweep-") as workdir:
        for point in points:
            try:
                applied = apply_overrides(params, point.overrides)
                cfg = validate_params(applied, Path(workdir))
            except (ConfigError, SweepError) as err:
                raise SweepError(f"{point.name} ({point.label}): {err}") from None
            reason = skip_reason(cfg)
            if reason:
                log.info("skipping %s (%s): %s", point.name, point.label, reason)
            elif applied == params:
                log.info("%s has the workspace's params: DVC reuses the baseline's results (no training run)",
                         point.name)
            planned.append(Point(point.index, point.name, point.overrides, reason))
    if not any(point.skip_reason is None for point in planned):
        raise SweepError(f"all {len(planned)} points are skipped (first: {planned[0].skip_reason}); change the grid")
    return planned


# ------------------------------------------------------------------ reading `dvc exp show --json`


@dataclass(frozen=True)
class ExperimentState:
    """One experiment of the baseline as `dvc exp show --json` lists it."""

    status: str  # queued | running | success | failed
    metrics: dict[str, Any]  # metrics file -> its flat data
    params: dict[str, Any]  # params.yaml's data


def baseline_entry(show: Sequence[Mapping[str, Any]], baseline: str) -> Mapping[str, Any]:
    entry = next((item for item in show if item.get("rev") == baseline), None)
    if entry is None:
        raise SweepError(f"baseline commit {baseline[:7]} not in `dvc exp show --json`; is HEAD a commit?")
    return entry


def _group_status(group: Mapping[str, Any], rev: Mapping[str, Any]) -> str:
    executor = group.get("executor")
    if executor and executor.get("state"):
        return str(executor["state"])
    return FAILED if rev.get("error") else SUCCESS  # a finished experiment whose queue task was cleaned up


def _file_data(files: Mapping[str, Any] | None) -> dict[str, Any]:
    return {path: dict(entry.get("data") or {}) for path, entry in (files or {}).items() if isinstance(entry, Mapping)}


def experiment_states(show: Sequence[Mapping[str, Any]], baseline: str) -> dict[str, ExperimentState]:
    """name -> state of the experiments under ``baseline``: `[rev == baseline].experiments[*]`.

    Each group: {"name", "executor": {"state", ...} | null, "revs": [{"name", "error", "data": {"params":
    {"params.yaml": {"data"}}, "metrics": {"metrics/evaluate.json": {"data"}, ...}}}]}.
    """
    states = {}
    for group in baseline_entry(show, baseline).get("experiments") or []:
        revs = group.get("revs") or [{}]
        rev = revs[0]
        name = group.get("name") or rev.get("name")
        data = rev.get("data") or {}
        params = _file_data(data.get("params")).get(paths.PARAMS.as_posix(), {})
        states[name] = ExperimentState(_group_status(group, rev), _file_data(data.get("metrics")), params)
    return states


# ------------------------------------------------------------------ results table


def columns_for(grid_keys: Sequence[str]) -> list[str]:
    return [NAME_COLUMN, *grid_keys, *(column for column, _, _ in METRICS), STATUS_COLUMN, NOTE_COLUMN]


def build_rows(
    points: Sequence[Point], states: Mapping[str, ExperimentState], errors: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per point: its params, metrics (successful experiments only), status and note.

    A failed experiment's metrics files are the baseline's (copied into its commit), so they are not shown.
    """
    errors = errors or {}
    rows = []
    for point in points:
        row: dict[str, Any] = {NAME_COLUMN: point.name, **point.overrides}
        state = None if point.skip_reason else states.get(point.name)
        status = SKIPPED if point.skip_reason else (state.status if state else MISSING)
        for column, file, key in METRICS:
            row[column] = state.metrics.get(file, {}).get(key) if state and status == SUCCESS else None
        row[STATUS_COLUMN] = status
        row[NOTE_COLUMN] = point.skip_reason or errors.get(point.name, "")
        rows.append(row)
    return rows


def _sortable(value: Any) -> tuple[int, Any]:
    """Numbers before text, so a column mixing them still sorts."""
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def check_sort_column(column: str, columns: Sequence[str]) -> None:
    if column not in columns:
        raise SweepError(f"--sort-by {column!r}: not a column; choose one of {', '.join(columns)}")


def sort_rows(rows: Sequence[Mapping[str, Any]], column: str, descending: bool = True) -> list[dict[str, Any]]:
    """Rows sorted by ``column``; rows without a value (skipped, failed) last, in their grid order."""
    if rows:
        check_sort_column(column, list(rows[0]))
    present = [dict(row) for row in rows if row.get(column) is not None]
    missing = [dict(row) for row in rows if row.get(column) is None]
    return sorted(present, key=lambda row: _sortable(row[column]), reverse=descending) + missing


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and column in {name for name, _, _ in METRICS}:
        return f"{value:.{FLOAT_DIGITS}f}"
    text = value if column in (NAME_COLUMN, STATUS_COLUMN, NOTE_COLUMN) else format_value(value)
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(column, row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _csv_cell(row.get(column)) for column in columns})
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        return "" if value is None else format_value(value)
    return value


def write_results(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: Path) -> str:
    """Write ``out`` (Markdown) and the same rows as CSV beside it, atomically; return the Markdown."""
    markdown = markdown_table(rows, columns)
    write_text(out, markdown)
    write_text(out.with_suffix(".csv"), csv_text(rows, columns))
    log.info("wrote %s and %s", out, out.with_suffix(".csv"))
    return markdown


def log_tail(text: str) -> str:
    """A failed experiment's error: its log from the last exception line on (else its last lines), one line."""
    lines: list[str] = []
    for line in re.split(r"[\r\n]+", text):
        line = line.strip()
        if line and (not lines or lines[-1] != line):  # DVC prints its final ERROR line twice
            lines.append(line)
    starts = [i for i, line in enumerate(lines) if EXCEPTION_LINE.match(line)]
    tail = lines[starts[-1]:][:MAX_TAIL_LINES] if starts else lines[-FALLBACK_TAIL_LINES:]
    return " / ".join(tail)


# ------------------------------------------------------------------ running DVC


def run_tool(argv: Sequence[str], repo: Path, timeout: float = TOOL_CALL_SECONDS) -> str:
    """Run ``argv`` (dvc or git from this venv first) in ``repo``; its stdout, or a one-line SweepError.

    A command still running after ``timeout`` seconds is killed (DVC's locks note a dead holder and
    drop it) and reported as a SweepError.
    """
    env = command_env()
    executable = shutil.which(argv[0], path=env["PATH"])
    shown = " ".join(argv)
    if executable is None:
        raise SweepError(f"`{shown}`: {argv[0]} not found on PATH")
    log.debug("running %s", shown)
    # Files, not pipes: `dvc queue start` daemonises workers that inherit its output handles, and reading
    # a pipe to EOF would wait until those workers exit, i.e. until the whole queue has run.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.run([executable, *argv[1:]], cwd=repo, env=env, stdout=out, stderr=err,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise SweepError(f"`{shown}` did not finish within {timeout:.0f} s; killed it") from None
        stdout, stderr = (_read_all(handle) for handle in (out, err))
    if proc.returncode != 0:
        message = " ".join((stderr.strip() or stdout.strip() or "(no output)").split())
        raise SweepError(f"`{shown}` failed (exit {proc.returncode}): {message}")
    return stdout


def _read_all(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read()


def exp_show(repo: Path, timeout: float = TOOL_CALL_SECONDS) -> list[dict[str, Any]]:
    """The experiments table. ``--no-fetch``: without it, every call git-fetches the refs of running
    experiments from their temporary workspaces under DVC's experiment lock, racing the workers; a
    finished experiment's refs and metrics are in the repository anyway, and that is all a sweep reads."""
    out = run_tool(["dvc", "exp", "show", "--json", "--no-fetch"], repo, timeout=timeout)
    try:
        return json.loads(out or "[]")
    except json.JSONDecodeError:
        raise SweepError(f"`dvc exp show --json` printed no JSON: {out[:200]!r}") from None


def baseline_commit(repo: Path) -> str:
    """HEAD: queued experiments start from the committed baseline (plus the workspace's changes)."""
    try:
        return run_tool(["git", "rev-parse", "--verify", "HEAD"], repo).strip()
    except SweepError:
        raise SweepError(f"{repo} has no commit: commit the baseline (params.yaml, dvc.yaml, dvc.lock) first") from None


def check_names_free(points: Sequence[Point], states: Mapping[str, ExperimentState]) -> None:
    taken = [point.name for point in points if point.name in states]
    if taken:
        raise SweepError(
            f"experiment names already used on this commit: {', '.join(taken)}; "
            "pass another --prefix or remove them (dvc exp remove / dvc queue remove)"
        )


def queue_points(points: Sequence[Point], repo: Path) -> None:
    for point in points:
        try:
            run_tool(["dvc", "exp", "run", "--queue", "-n", point.name, *point.set_args()], repo)
        except SweepError as err:
            raise SweepError(f"{err} (already queued: remove with `dvc queue remove --queued`)") from None
        log.info("queued %s: %s", point.name, point.label)


def wait_for(names: Sequence[str], repo: Path, baseline: str, timeout: float | None) -> dict[str, ExperimentState]:
    """Poll `dvc exp show --json` until every named experiment succeeded or failed, or ``timeout`` (s) passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    states: dict[str, ExperimentState] = {}
    failures = 0
    with tqdm(total=len(names), desc="sweep", unit="exp") as bar:
        while True:
            try:
                states, failures = experiment_states(exp_show(repo, timeout=POLL_CALL_SECONDS), baseline), 0
            except SweepError as err:  # e.g. a worker holds a git lock for a moment, or the poll hung
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise
                log.warning("polling failed (%d/%d), retrying: %s", failures, MAX_POLL_FAILURES, err)
            status = statuses(names, states)
            bar.set_postfix(running=list(status.values()).count(RUNNING), refresh=False)
            bar.update(sum(state in FINISHED_STATES for state in status.values()) - bar.n)  # redraws per mininterval
            unfinished = [name for name, state in status.items() if state not in FINISHED_STATES]
            if not unfinished:
                return states
            if deadline is not None and time.monotonic() >= deadline:
                log.error("timed out after %.0f s; unfinished: %s (see `dvc queue status`)", timeout, unfinished)
                return states
            time.sleep(POLL_SECONDS)


def statuses(names: Sequence[str], states: Mapping[str, ExperimentState]) -> dict[str, str]:
    return {name: states[name].status if name in states else MISSING for name in names}


def failure_notes(names: Sequence[str], states: Mapping[str, ExperimentState], repo: Path) -> dict[str, str]:
    """name -> error for every failed or unfinished experiment: the tail of `dvc queue logs <name>`."""
    notes = {}
    for name, status in statuses(names, states).items():
        if status == FAILED:
            try:
                notes[name] = log_tail(run_tool(["dvc", "queue", "logs", name], repo)) or "failed (empty log)"
            except SweepError as err:
                notes[name] = str(err)
        elif status != SUCCESS:
            notes[name] = f"not finished ({status}); see `dvc queue status`"
    return notes


# ------------------------------------------------------------------ the command


@dataclass(frozen=True)
class SweepResult:
    rows: list[dict[str, Any]]
    columns: list[str]
    all_succeeded: bool


def read_grid(assignments: Sequence[str], grid_file: Path | None) -> Grid:
    return merge_grids(parse_assignments(assignments), load_grid_file(grid_file) if grid_file else {})


def run_sweep(
    repo: Path, grid: Grid, prefix: str = DEFAULT_PREFIX, jobs: int = DEFAULT_JOBS, timeout: float | None = None
) -> SweepResult:
    """Validate, queue, start, wait; the unsorted rows of every point."""
    points = plan_points(load_params(repo / paths.PARAMS), grid, prefix)
    queued = [point for point in points if point.skip_reason is None]
    baseline = baseline_commit(repo)
    check_names_free(points, experiment_states(exp_show(repo), baseline))
    queue_points(queued, repo)
    run_tool(["dvc", "queue", "start", "-j", str(jobs)], repo)
    names = [point.name for point in queued]
    states = wait_for(names, repo, baseline, timeout)
    rows = build_rows(points, states, failure_notes(names, states, repo))
    all_succeeded = all(row[STATUS_COLUMN] in (SUCCESS, SKIPPED) for row in rows)
    return SweepResult(rows, columns_for(list(grid)), all_succeeded)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `signflow sweep` (the CLI registers the subcommand)."""
    parser.add_argument("-S", "--set-param", dest="set_params", action="append", default=[], metavar="KEY=V1,V2",
                        help="a grid axis in dvc exp run's syntax, e.g. -S strategy=linear,full (repeatable)")
    parser.add_argument("--grid", type=Path, metavar="FILE.yaml",
                        help="YAML mapping of dotted params key -> list of values (merged with -S)")
    parser.add_argument("--jobs", "-j", type=_positive_int, default=DEFAULT_JOBS,
                        help="experiments run in parallel by `dvc queue start -j` (default: %(default)s)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help="experiment names are <prefix>-<index> (default: %(default)s)")
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help="stop waiting after this long; unfinished points count as failed (default: no limit)")
    parser.add_argument("--sort-by", default=DEFAULT_SORT,
                        help="table column to sort by, missing values last (default: %(default)s)")
    parser.add_argument("--ascending", action="store_true", help="sort ascending (default: descending)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="Markdown table to write; the CSV goes beside it (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the grid and print the planned points; queue nothing, write nothing")


def _dry_run(args: argparse.Namespace, grid: Grid) -> int:
    points = plan_points(load_params(Path.cwd() / paths.PARAMS), grid, args.prefix)
    states = {p.name: ExperimentState(PLANNED, {}, {}) for p in points if p.skip_reason is None}
    print(markdown_table(build_rows(points, states), columns_for(list(grid))), end="")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Entry for `signflow sweep`: 0 when every queued point succeeded, 1 if any failed, 2 if nothing ran."""
    try:
        grid = read_grid(args.set_params, args.grid)
        check_sort_column(args.sort_by, columns_for(list(grid)))
        if args.dry_run:
            return _dry_run(args, grid)
        result = run_sweep(Path.cwd(), grid, args.prefix, args.jobs, args.timeout)
        rows = sort_rows(result.rows, args.sort_by, descending=not args.ascending)
    except SweepError as err:
        log.error("sweep: %s", err)
        return EXIT_ERROR
    sys.stdout.write(write_results(rows, result.columns, args.out))
    return EXIT_OK if result.all_succeeded else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signflow sweep", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -c "from signflow.commands.sweep import main; ..."`), same as `signflow sweep`."""
    args = build_parser().parse_args(argv)
    setup_logging()
    return run(args)
