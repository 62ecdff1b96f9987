"""Running a sweep's points on DVC's queue: queue them, start workers, wait with bounded polls, note failures.

Every dvc/git call goes through ``signflow.processes.run`` and is bounded, so a
wedged one cannot outlast ``--timeout``: a poll of `dvc exp show` that hangs (it
has blocked beside running queue workers, treeverse/dvc#8762) is killed and
counts as a failed poll; other calls (queueing, starting workers, reading a log)
get a generous bound. The experiments' states come from `dvc exp show --json`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from signflow import paths, processes
from signflow.processes import CommandError
from signflow.sweep.grid import Point, SweepError

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # between `dvc exp show --json` calls while waiting
POLL_CALL_SECONDS = 120.0  # bound on one poll
TOOL_CALL_SECONDS = 600.0  # bound on every other dvc call
MAX_POLL_FAILURES = 5  # consecutive failed polls (e.g. a git lock held by a worker) before giving up
FALLBACK_TAIL_LINES = 3  # log lines kept as a failed point's error when no exception line is found
MAX_TAIL_LINES = 8  # cap on the lines kept from the last exception line onwards
PIPELINE_FILE = "dvc.yaml"  # the stages an experiment may stop at (--stage)
# A traceback's last line, or a stage's one-line user error (signflow.logs.error_line).
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*:|signflow: error: )")

# Point states: DVC's executor states (`dvc exp show --json`) plus ours.
SUCCESS, FAILED, QUEUED, RUNNING = "success", "failed", "queued", "running"
SKIPPED, PLANNED, MISSING = "skipped", "planned", "missing"
FINISHED_STATES = frozenset({SUCCESS, FAILED})


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


def statuses(names: Sequence[str], states: Mapping[str, ExperimentState]) -> dict[str, str]:
    return {name: states[name].status if name in states else MISSING for name in names}


# ------------------------------------------------------------------ running DVC


def dvc(args: Sequence[str], repo: Path, timeout: float = TOOL_CALL_SECONDS) -> str:
    """``dvc <args>`` in ``repo`` (the venv's dvc first); its stdout, or CommandError."""
    return processes.run(["dvc", *args], repo, timeout=timeout).stdout


def exp_show(repo: Path, timeout: float = TOOL_CALL_SECONDS) -> list[dict[str, Any]]:
    """The experiments table. ``--no-fetch``: without it, every call git-fetches the refs of running
    experiments from their temporary workspaces under DVC's experiment lock, racing the workers; a
    finished experiment's refs and metrics are in the repository anyway, and that is all a sweep reads."""
    out = dvc(["exp", "show", "--json", "--no-fetch"], repo, timeout=timeout)
    try:
        return json.loads(out or "[]")
    except json.JSONDecodeError:
        raise SweepError(f"`dvc exp show --json` printed no JSON: {out[:200]!r}") from None


def baseline_commit(repo: Path) -> str:
    """HEAD: queued experiments start from the committed baseline (plus the workspace's changes)."""
    head = processes.git_head(repo)
    if head is None:
        raise SweepError(f"{repo} has no commit: commit the baseline (params.yaml, dvc.yaml, dvc.lock) first")
    return head


def check_names_free(points: Sequence[Point], states: Mapping[str, ExperimentState]) -> None:
    taken = [point.name for point in points if point.name in states]
    if taken:
        raise SweepError(
            f"experiment names already used on this commit: {', '.join(taken)}; "
            "pass another --prefix or remove them (dvc exp remove / dvc queue remove)"
        )


def check_stage(repo: Path, stage: str) -> str:
    """``stage`` when ``repo``'s dvc.yaml declares it (checked before anything is queued)."""
    try:
        stages = list((yaml.safe_load((repo / PIPELINE_FILE).read_text()) or {}).get("stages", {}))
    except (OSError, yaml.YAMLError) as err:
        raise SweepError(f"--stage {stage}: cannot read {PIPELINE_FILE} ({err})") from None
    if stage not in stages:
        raise SweepError(f"--stage {stage!r}: not a stage of {PIPELINE_FILE}; choose one of {', '.join(stages)}")
    return stage


def queue_points(points: Sequence[Point], repo: Path, stage: str | None = None) -> None:
    """`dvc exp run --queue` per point: the whole pipeline, or up to ``stage`` (and what it depends on)."""
    target = [stage] if stage else []
    for point in points:
        try:
            dvc(["exp", "run", "--queue", "-n", point.name, *point.set_args(), *target], repo)
        except CommandError as err:
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
            except (CommandError, SweepError) as err:  # e.g. a worker holds a git lock for a moment, or the poll hung
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


def failure_notes(names: Sequence[str], states: Mapping[str, ExperimentState], repo: Path) -> dict[str, str]:
    """name -> error for every failed or unfinished experiment: the tail of `dvc queue logs <name>`."""
    notes = {}
    for name, status in statuses(names, states).items():
        if status == FAILED:
            try:
                notes[name] = log_tail(dvc(["queue", "logs", name], repo)) or "failed (empty log)"
            except CommandError as err:
                notes[name] = str(err)
        elif status != SUCCESS:
            notes[name] = f"not finished ({status}); see `dvc queue status`"
    return notes


@dataclass(frozen=True)
class Outcome:
    """What the queue made of a sweep: each queued point's state, a note for each that did not succeed, and the
    baseline commit the experiments ran on."""

    states: dict[str, ExperimentState]
    notes: dict[str, str]
    baseline: str = ""


def run_points(
    repo: Path, points: Sequence[Point], jobs: int, timeout: float | None = None, stage: str | None = None
) -> Outcome:
    """Queue the points not skipped (after checking their names are free), each up to ``stage`` (default: the
    whole pipeline), start ``jobs`` workers, wait."""
    queued = [point for point in points if point.skip_reason is None]
    baseline = baseline_commit(repo)
    check_names_free(points, experiment_states(exp_show(repo), baseline))
    queue_points(queued, repo, stage)
    dvc(["queue", "start", "-j", str(jobs)], repo)
    names = [point.name for point in queued]
    states = wait_for(names, repo, baseline, timeout)
    return Outcome(states, failure_notes(names, states, repo), baseline)
