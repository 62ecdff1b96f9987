"""The audit assembled: every split loaded once (memory-mapped), each part run, one result; then its report.

:func:`run_audit` returns the flat metrics (``metrics/audit.json``) and the
tables; :func:`write_report` writes them with the gallery and a README into
one folder, replaced whole and atomically. Nothing here changes the data: the
user acts on the findings (``split.exclude``, ``split.group_by: hash``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from signflow import markdown
from signflow.audit.duplicates import (
    PAIR_COLUMNS,
    cross_split_pairs,
    duplicate_metrics,
    hash_images,
    leakage_warning,
    leaked_groups,
    split_pairs,
)
from signflow.audit.gallery import draw_pairs, draw_suspects
from signflow.audit.labels import COUNT_COLUMNS, SUSPECT_COLUMNS, LabelAudit, audit_labels, label_metrics, labelled
from signflow.audit.profile import ALL, MEASURES, QUANTILES, mean_brightness, profile_metrics, profile_table
from signflow.catalog import UNKNOWN_NAME
from signflow.config import SPLIT_NAMES, AuditConfig, Config
from signflow.data.arrays import load_split
from signflow.files import atomic_path
from signflow.model.backbones import FeatureSpec, create_model
from signflow.model.features import pooled_features

log = logging.getLogger(__name__)

README, PAIRS_CSV, SUSPECTS_CSV, COUNTS_CSV, PROFILE_CSV = (
    "README.md", "duplicates.csv", "suspects.csv", "label_counts.csv", "profile.csv")
PAIRS_PNG, SUSPECTS_PNG = "duplicates.png", "suspects.png"
DOCS_LINK = "../../docs/audit.md"  # from reports/audit/README.md, as GitHub renders it


@dataclass(frozen=True)
class AuditResult:
    """What the audit found; ``metrics`` are flat keys for ``metrics/audit.json``."""

    metrics: dict[str, float | int]
    pairs: pd.DataFrame  # cross-split near-duplicates, closest first (signflow.audit.duplicates)
    labels: LabelAudit
    profile: pd.DataFrame  # per split and class (signflow.audit.profile)
    splits: tuple[str, ...]
    hash_distance: int
    warning: str | None  # the leakage warning, when it applies


def run_audit(dataset_dir: Path, cfg: Config) -> AuditResult:
    """Audit the train/val/test splits of ``dataset_dir`` (manifests and decoded arrays) as ``cfg`` says."""
    audit, splits = cfg.audit, SPLIT_NAMES
    loaded = {name: load_split(Path(dataset_dir), name) for name in splits}
    frames = {name: frame.assign(split=name, row=np.arange(len(frame))) for name, (frame, _) in loaded.items()}
    images = {name: array for name, (_, array) in loaded.items()}
    classes = list(dict.fromkeys([*cfg.class_names, UNKNOWN_NAME]))  # held-out images are labelled unknown too

    start = time.perf_counter()
    hashes = {name: hash_images(images[name], audit.hash_size, audit.batch_size) for name in splits}
    pairs = cross_split_pairs(frames, hashes, audit.hash_distance)
    groups = leaked_groups(hashes, audit.hash_distance)
    log.info("near-duplicates: %d pair(s) across splits, %d cluster(s) spanning splits (%.1fs)",
             len(pairs), groups, time.perf_counter() - start)
    warning = leakage_warning(len(pairs), cfg.data.source, cfg.data.folder.track_pattern, cfg.split.group_by)
    if warning:
        log.warning(warning)

    measured = pd.concat([frames[n].assign(brightness=mean_brightness(images[n], audit.batch_size)) for n in splits])
    profile = profile_table(measured, splits, classes)

    labels = _check_labels(frames, images, cfg)
    metrics = {**duplicate_metrics(pairs, groups, splits, classes), **label_metrics(labels, splits, cfg.class_names),
               **profile_metrics(profile)}
    return AuditResult(metrics, pairs, labels, profile, tuple(splits), audit.hash_distance, warning)


def _check_labels(frames: Mapping[str, pd.DataFrame], images: Mapping[str, np.ndarray], cfg: Config) -> LabelAudit:
    """Frozen features of every labelled image (one pass, at the arrays' size), then the label check."""
    start = time.perf_counter()
    # The linear strategy's multi-scale features, without its upsampling: richer at no extra pass.
    model = create_model(cfg.model.backbone, 1, cfg.model.weights,
                         features=FeatureSpec(pooled_blocks=cfg.model.linear.pooled_blocks))
    rows = {name: labelled(frame) for name, frame in frames.items()}
    features = [pooled_features(model, images[name], cfg.audit.batch_size, part["row"].to_numpy(),
                                desc=f"features {name}") for name, part in rows.items()]
    log.info("label check: features of %d images from %s (%.1fs)", sum(len(f) for f in features),
             cfg.model.backbone, time.perf_counter() - start)
    start = time.perf_counter()
    result = audit_labels(pd.concat(rows.values(), ignore_index=True), np.concatenate(features),
                          cfg.class_names, list(frames), cfg.audit.folds, cfg.audit.logistic_c)
    log.info("label check: cross-validation and cleanlab (%.1fs)", time.perf_counter() - start)
    return result


def write_report(result: AuditResult, dataset_dir: Path, out_dir: Path, cfg: AuditConfig) -> Path:
    """``out_dir``: README.md, the two gallery PNGs and the CSVs, replacing the folder atomically."""
    _, images = zip(*(load_split(Path(dataset_dir), name) for name in result.splits), strict=True)
    arrays = dict(zip(result.splits, images, strict=True))
    shown_pairs = result.pairs.head(cfg.gallery_pairs)
    shown_suspects = result.labels.suspects.head(cfg.max_suspects)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        result.pairs.to_csv(tmp / PAIRS_CSV, index=False, columns=PAIR_COLUMNS)
        result.labels.suspects.to_csv(tmp / SUSPECTS_CSV, index=False, columns=SUSPECT_COLUMNS)
        result.labels.counts.to_csv(tmp / COUNTS_CSV, index=False, columns=COUNT_COLUMNS)
        result.profile.to_csv(tmp / PROFILE_CSV, index=False)
        draw_pairs(shown_pairs, arrays, tmp / PAIRS_PNG)
        draw_suspects(shown_suspects, arrays, tmp / SUSPECTS_PNG)
        (tmp / README).write_text(render_readme(result, shown_pairs, shown_suspects))
    log.info("audit report written to %s", Path(out_dir) / README)
    return Path(out_dir) / README


def _percent(count: int, total: int) -> str:
    return f"{count} ({count / total:.1%})" if total else str(count)


def render_readme(result: AuditResult, pairs: pd.DataFrame, suspects: pd.DataFrame) -> str:
    """The report's markdown: the counts first, then each part's tables and gallery."""
    m, checked = result.metrics, result.labels.images
    summary = markdown.table(["finding", "count"], [
        (f"near-duplicate image pairs across splits (pHashes at most {result.hash_distance} bits apart)",
         m["duplicates.total"]),
        ("clusters of near-duplicates spanning splits (leaked signs)", m["duplicates.groups"]),
        ("near-duplicate pairs whose two labels differ", m["duplicates.label_conflicts"]),
        ("suspect labels: the out-of-fold prediction of the image's track is another class",
         _percent(m["labels.suspects"], checked)),
        ("wrong labels estimated by confident learning", m.get("labels.estimated_errors", markdown.MISSING)),
    ])
    parts = [
        "# Data audit",
        "What the data holds, measured by the `audit` stage. The audit reports; it never changes the data. "
        f"How to read it and what to do: [docs/audit.md]({DOCS_LINK}).",
        summary,
    ]
    if result.warning:
        parts.append(f"> **Warning**: {result.warning}")
    parts += _duplicates_section(result, pairs) + _labels_section(result, suspects) + _profile_section(result)
    return "\n\n".join(parts) + "\n"


def _duplicates_section(result: AuditResult, shown: pd.DataFrame) -> list[str]:
    m = result.metrics
    counts = markdown.table(["splits", "pairs"], [(f"{a} - {b}", m[f"duplicates.{a}-{b}"])
                                                  for a, b in split_pairs(result.splits)])
    section = ["## Near-duplicates across splits", counts]
    if result.pairs.empty:
        return [*section, "No pair of images in two splits is that close."]
    rows = [(k + 1, r["distance"], r["split_a"], r["path_a"], r["class_a"], r["split_b"], r["path_b"], r["class_b"])
            for k, (_, r) in enumerate(shown.iterrows())]
    return [*section, f"The {len(shown)} closest of {len(result.pairs)} pairs (all in [{PAIRS_CSV}]({PAIRS_CSV})):",
            markdown.table(["#", "bits", "split", "path", "class", "split", "path", "class"], rows),
            f"![closest pairs across splits]({PAIRS_PNG})"]


def _labels_section(result: AuditResult, shown: pd.DataFrame) -> list[str]:
    audit = result.labels
    section = ["## Suspect labels"]
    if audit.skipped:
        return [*section, f"Not checked: {audit.skipped}."]
    section.append(f"Of {audit.images} labelled images, {len(audit.suspects)} have a label their track's out-of-fold "
                   f"prediction contradicts; confident learning estimates {audit.estimated_errors} wrong labels. "
                   "Review from the top: the first rows are the likely label errors, the later ones mostly hard "
                   "images the frozen-feature classifier gets wrong (its out-of-fold accuracy per image: "
                   f"{markdown.value_text(audit.accuracy)}).")
    flagged = audit.counts[audit.counts["images"] > 0]
    section.append(markdown.table(["split", "class", "suspects", "images"],
                                  flagged[["split", "class", "suspects", "images"]].itertuples(index=False)))
    if audit.suspects.empty:
        return [*section, "No label is suspect."]
    rows = [(k + 1, r["split"], r["path"], r["label"], r["suggested"], f"{r['suggested_probability']:.2f}",
             f"{r['label_probability']:.2f}") for k, (_, r) in enumerate(shown.iterrows())]
    return [*section,
            f"The {len(shown)} most suspect of {len(audit.suspects)} (all in [{SUSPECTS_CSV}]({SUSPECTS_CSV})), "
            "the lowest probability of the given label first:",
            markdown.table(["#", "split", "path", "given", "suggested", "p(suggested)", "p(given)"], rows),
            f"![suspect labels]({SUSPECTS_PNG})"]


def _profile_section(result: AuditResult) -> list[str]:
    overall = result.profile[result.profile["class"] == ALL]
    headers = ["split", "images"] + [f"{measure} {' / '.join(QUANTILES)}" for measure in MEASURES]
    rows = [(r["split"], int(r["n"]), *(" / ".join(f"{r[f'{m}_{q}']:g}" for q in QUANTILES) for m in MEASURES))
            for _, r in overall.iterrows()]
    return ["## Profile",
            "Original image width and height (px) and brightness (mean decoded pixel, 0-255), per split; "
            f"per class in [{PROFILE_CSV}]({PROFILE_CSV}).",
            markdown.table(headers, rows)]
