"""``signflow trace``: where a model came from, in the terms of git, DVC and MLflow.

Given a resolved reference (``signflow.lineage.refs``) it reads everything
back from the tracking server: the commit and whether the workspace was
clean, the DVC experiment and its baseline, the hash of ``dvc.lock``, each
split's DVC hash and where DVC keeps it, the params that differ from a base
revision's ``params.yaml`` (the team's main line), the test metrics, and the
version's aliases and promotion records. Nothing is recomputed: a trace shows
what was recorded when the model was made.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from signflow.lineage.refs import Origin
from signflow.provenance import (
    INPUT_FILES_TAG,
    TAG_BASELINE,
    TAG_COMMIT,
    TAG_DIRTY,
    TAG_EXPERIMENT,
    TAG_LOCK,
    TAG_REPOSITORY,
)

CONTEXT_TAG = "mlflow.data.context"
METRIC_PREFIXES = ("test.", "openset.", "official_test.", "onnx.test_accuracy", "int8.test_accuracy")
PROMOTION_TAG_PREFIX = "promotion."  # signflow.lineage.promotion's records on a version
MISSING = "-"


@dataclass(frozen=True)
class DataRecord:
    context: str
    name: str
    digest: str
    source: str
    files: str


@dataclass(frozen=True)
class Trace:
    """What the run and version recorded; :func:`trace_text` prints it."""

    label: str
    run_id: str
    run_name: str
    tags: dict[str, str]
    data: tuple[DataRecord, ...]
    changed_params: tuple[tuple[str, str, str], ...]  # key, base value, the run's value
    base: str
    metrics: dict[str, float]
    aliases: tuple[str, ...]
    promotions: tuple[tuple[str, str], ...]  # (tag, record), oldest first


def source_uri(source: str) -> str:
    """The location in a dataset's source, which MLflow stores as JSON (``{"uri": ...}``)."""
    try:
        parsed = json.loads(source)
    except ValueError:
        return source
    return str(parsed.get("uri", source)) if isinstance(parsed, dict) else source


def data_records(run: Any) -> tuple[DataRecord, ...]:
    """The run's dataset inputs (train, validation, test), as logged by the stages."""
    records = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in item.tags}
        records.append(DataRecord(tags.get(CONTEXT_TAG, MISSING), item.dataset.name, item.dataset.digest,
                                  source_uri(item.dataset.source), tags.get(INPUT_FILES_TAG, "")))
    return tuple(sorted(records, key=lambda r: r.name))


def changed_params(logged: Mapping[str, str], base: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The params.yaml keys whose logged value differs from the base revision's (as text, as MLflow keeps params).

    Only keys of params.yaml's sections: MLflow logs other params beside them
    (a pyfunc's ``model_config``), which no revision's params.yaml sets.
    """
    sections = {key.split(".")[0] for key in base}
    keys = sorted(set(base) | {key for key in logged if key.split(".")[0] in sections})
    return tuple((k, str(base.get(k, MISSING)), logged.get(k, MISSING)) for k in keys
                 if str(base.get(k, MISSING)) != logged.get(k, MISSING))


def build_trace(origin: Origin, base_params: Mapping[str, Any], base: str) -> Trace:
    """``origin``'s record against ``base_params`` (flattened params of the ``base`` revision)."""
    run, version = origin.run, origin.version
    tags = dict(run.data.tags)
    if version is not None:
        tags |= {k: v for k, v in version.tags.items() if not k.startswith(PROMOTION_TAG_PREFIX)}
    promotions = tuple(sorted((k, v) for k, v in (version.tags if version else {}).items()
                              if k.startswith(PROMOTION_TAG_PREFIX)))
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(METRIC_PREFIXES)}
    return Trace(
        label=origin.label, run_id=run.info.run_id, run_name=run.info.run_name or MISSING, tags=tags,
        data=data_records(run), changed_params=changed_params(run.data.params, base_params), base=base,
        metrics=dict(sorted(metrics.items())), aliases=tuple(getattr(version, "aliases", ()) or ()),
        promotions=promotions,
    )


def trace_text(trace: Trace) -> str:
    """The trace as the terminal shows it: one fact per line, data and params indented."""
    tag = trace.tags.get
    lines = [
        f"{trace.label}" + (f" (aliases: {', '.join(trace.aliases)})" if trace.aliases else ""),
        f"  run:          {trace.run_id} ({trace.run_name})",
        f"  commit:       {tag(TAG_COMMIT, MISSING)} (uncommitted changes: {tag(TAG_DIRTY, MISSING)})",
        f"  experiment:   {tag(TAG_EXPERIMENT, MISSING)} (baseline {tag(TAG_BASELINE, MISSING)})",
        f"  repository:   {tag(TAG_REPOSITORY, MISSING)}",
        f"  dvc.lock md5: {tag(TAG_LOCK, MISSING)}",
        "  data (DVC hash, where DVC keeps it):",
    ]
    lines += [f"    {d.context:<10} {d.name}  {d.digest}  {d.source}" + (f"\n{'':15}{d.files}" if d.files else "")
              for d in trace.data] or ["    none recorded"]
    lines.append(f"  params that differ from {trace.base}:")
    lines += [f"    {key}: {base} -> {value}" for key, base, value in trace.changed_params] or ["    none"]
    lines.append("  metrics:")
    lines += [f"    {key}: {value:.6g}" for key, value in trace.metrics.items()] or ["    none recorded"]
    if trace.promotions:
        lines.append("  promotion record:")
        lines += [line for _, value in trace.promotions for line in promotion_lines(value)]
    return "\n".join(lines)


def promotion_lines(value: str) -> list[str]:
    """One recorded decision (signflow.lineage.promotion's JSON): who, when, what, against what, the figures."""
    try:
        record = json.loads(value)
    except ValueError:
        return [f"    {value}"]
    against = f" against version {record['champion']}" if record.get("champion") else ""
    gate = f", gate {record['gate']}" if record.get("gate") else ""
    reason = f", reason: {record['reason']}" if record.get("reason") else ""
    lines = [f"    {record.get('time', MISSING)} {record.get('decision', MISSING)}{against}{gate}"
             f" by {record.get('by', MISSING)}{reason}"]
    lines += [f"      {metric}: {figure}" for metric, figure in (record.get("figures") or {}).items()]
    return lines
