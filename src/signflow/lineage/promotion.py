"""``signflow promote``: a registered version becomes ``champion`` only when the evidence says so.

The candidate is judged against the current champion exactly as a pull
request is judged against its base (``signflow.review``): both versions' test
predictions (the evaluate stage's ``predictions.csv``, logged with each run)
are joined image by image, compared with the paired tests, and checked
against ``review.guards``. Different test images cannot be paired, so they
refuse the promotion too. The champion it replaces keeps the alias
``previous``; rolling back is promoting ``previous``, judged the same way.
``force`` overrides a refusal and needs a reason. Every decision, refusal
included, is recorded on the versions (a ``promotion.<time>`` tag: who, when,
against which version, the verdict and the figures) and the full verdict goes
to the candidate's run as ``promotion/<time>.md``.
"""

from __future__ import annotations

import getpass
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signflow.config import ReviewConfig
from signflow.lineage.trace import PROMOTION_TAG_PREFIX
from signflow.processes import GIT_SECONDS, CommandError, run
from signflow.review.compare import Review, compare_predictions, read_predictions
from signflow.review.gate import GateResult, check_gate
from signflow.review.verdict import signed, verdict_section

log = logging.getLogger(__name__)

CHAMPION, PREVIOUS = "champion", "previous"
PREDICTIONS_ARTIFACT = "evaluate/predictions.csv"  # logged by the evaluate stage (signflow.paths.PREDICTIONS)
RECORD_FOLDER = "promotion"
PROMOTED, FORCED, REFUSED, FIRST = "promoted", "promoted with --force", "refused", "first champion"
NOT_PAIRED = ("the candidate and the champion were tested on different images, so they cannot be compared "
              "image by image (the data or the split changed); re-evaluate both on one test set, or --force")


class PromotionError(ValueError):
    """A promotion that cannot be decided: no such version, already champion, --force without a reason."""


@dataclass(frozen=True)
class Decision:
    """What ``promote`` decided and why."""

    outcome: str  # PROMOTED | FORCED | REFUSED | FIRST
    candidate: str  # version number
    champion: str | None  # the champion it was judged against (None: there was none)
    gate: GateResult | None
    review: Review | None
    record: dict[str, Any]  # what the promotion.<time> tag holds
    markdown: str

    @property
    def promoted(self) -> bool:
        return self.outcome != REFUSED


def who() -> str:
    """The person deciding: git's user.name <user.email> where set, else the login name."""
    parts = []
    for key in ("user.name", "user.email"):
        try:
            value = run(["git", "config", key], Path.cwd(), timeout=GIT_SECONDS, check=False).stdout.strip()
        except CommandError:
            value = ""
        parts.append(value)
    name, email = parts
    return f"{name} <{email}>" if name and email else name or getpass.getuser()


def run_predictions(client: Any, run_id: str, label: str) -> Any:
    """The test predictions the evaluate stage logged with ``run_id``, as the review reads them."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="signflow-promote-") as tmp:
        try:
            path = client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, tmp)
        except (MlflowException, OSError) as err:
            raise PromotionError(f"{label} has no {PREDICTIONS_ARTIFACT} in run {run_id} (was it evaluated?): "
                                 f"{str(err).splitlines()[0]}") from None
        return read_predictions(Path(path).read_text(), f"{label} ({PREDICTIONS_ARTIFACT})")


def champion_version(client: Any, name: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def figures(review: Review) -> dict[str, str]:
    """Each metric's difference and interval (and p where there is one), compact, for the record."""
    out = {}
    for c in review.metrics:
        p_value = "" if c.p_value is None else f", p {c.p_value:.3g}"
        out[c.metric] = (f"{signed(c.metric, c.difference)} [{signed(c.metric, c.low)}, "
                         f"{signed(c.metric, c.high)}]{p_value}: {c.verdict}")
    return out


def judge(client: Any, candidate: Any, champion: Any, cfg: ReviewConfig, ece_bins: int) -> tuple[Review, GateResult]:
    """The review of candidate (head) against champion (base) and its gate; unpaired images fail it."""
    base = run_predictions(client, champion.run_id, f"champion version {champion.version}")
    head = run_predictions(client, candidate.run_id, f"candidate version {candidate.version}")
    review = compare_predictions(base, head, cfg, ece_bins)
    gate = check_gate(review, cfg.guards)
    if not review.paired:
        gate = GateResult((NOT_PAIRED, *gate.failures), gate.checked)
    return review, gate


def decide(
    client: Any, name: str, candidate: Any, cfg: ReviewConfig, ece_bins: int, *, force: bool, reason: str | None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Decision:
    """Judge ``candidate`` (a ModelVersion of ``name``) against the champion, move the aliases, record it all."""
    if force and not (reason and reason.strip()):
        raise PromotionError("--force needs --reason TEXT: the override is recorded with its reason")
    champion = champion_version(client, name)
    if champion is not None and str(champion.version) == str(candidate.version):
        raise PromotionError(f"version {candidate.version} of {name!r} is already the champion")
    review = gate = None
    if champion is None:
        outcome = FIRST
    else:
        review, gate = judge(client, candidate, champion, cfg, ece_bins)
        outcome = PROMOTED if gate.passed else FORCED if force else REFUSED
    time = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {
        "time": time, "by": who(), "decision": outcome, "candidate": str(candidate.version),
        "champion": str(champion.version) if champion else None,
        "gate": None if gate is None else ("passed" if gate.passed else "failed"),
        "failures": list(gate.failures) if gate else [], "figures": figures(review) if review else {},
        "reason": reason,
    }
    markdown = promotion_markdown(name, record, review, gate, cfg.confidence)
    _record(client, name, candidate, champion, record, markdown)
    if outcome != REFUSED:
        _move_aliases(client, name, candidate, champion)
    return Decision(outcome, record["candidate"], record["champion"], gate, review, record, markdown)


def _move_aliases(client: Any, name: str, candidate: Any, champion: Any | None) -> None:
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
    elif PREVIOUS in (client.get_registered_model(name).aliases or {}):
        client.delete_registered_model_alias(name, PREVIOUS)
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    log.info("%s: champion = version %s%s", name, candidate.version,
             f", previous = version {champion.version}" if champion is not None else "")


def _record(client: Any, name: str, candidate: Any, champion: Any | None, record: dict, markdown: str) -> None:
    """The decision on the candidate (and, when it is replaced, on the champion), the verdict on the run."""
    key = f"{PROMOTION_TAG_PREFIX}{record['time']}"
    client.set_model_version_tag(name, candidate.version, key, json.dumps(record))
    if champion is not None and record["decision"] != REFUSED:
        client.set_model_version_tag(name, champion.version, key, json.dumps(
            {"time": record["time"], "by": record["by"], "decision": f"replaced by version {candidate.version}",
             "reason": record["reason"]}))
    client.log_text(candidate.run_id, markdown, f"{RECORD_FOLDER}/{record['time'].replace(':', '')}.md")


def promotion_markdown(name: str, record: dict, review: Review | None, gate: GateResult | None,
                       confidence: float) -> str:
    """The decision as markdown: header lines, then the review's verdict table (head = candidate)."""
    lines = [
        f"## {name} version {record['candidate']}: {record['decision']}",
        "",
        f"- when: {record['time']}; by: {record['by']}",
        f"- against: {'champion version ' + record['champion'] if record['champion'] else 'no champion yet'}",
    ]
    if record["reason"]:
        lines.append(f"- reason: {record['reason']}")
    if review is not None:
        lines += ["", "Head is the candidate, base the champion.", "",
                  verdict_section(review, gate, confidence)]
    return "\n".join(lines) + "\n"
