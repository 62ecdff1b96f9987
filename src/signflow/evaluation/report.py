"""The report stage's library: one Markdown page with figures that renders on GitHub.

:func:`build_report` takes only already-loaded values (:class:`ReportInputs`),
so it is testable without files or a model; :func:`load_report_inputs` is the
one place that reads the pipeline's outputs and runs the model on the few
sample images of the probability charts. The report directory is built in a
temporary sibling and renamed at the end, so a failed run never leaves a
half-written report whose image links point nowhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signflow import markdown
from signflow.catalog import UNKNOWN_NAME, flatten
from signflow.config import SPLIT_NAMES
from signflow.data.arrays import load_split
from signflow.data.manifest import ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN
from signflow.evaluation import plots
from signflow.evaluation.metrics import CONFIDENCE_LEVEL, confusion_matrix_counts, wilson_interval
from signflow.evaluation.openset import POLICY_KEYS, THRESHOLD_KEY, decide
from signflow.evaluation.slices import OPEN_BIN, SliceRow, slice_rows
from signflow.evaluation.threshold import POLICIES, PolicyChoice, policy_points
from signflow.files import atomic_path
from signflow.markdown import MISSING, value_text
from signflow.model.inference import LoadedModel, predict_probs

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"
# Figures, by the file name the Markdown links to.
CONFUSION_PNG, HISTORY_PNG = "confusion.png", "training_curves.png"
MISCLASSIFIED_PNG, LEAST_CONFIDENT_PNG = "misclassified.png", "least_confident_correct.png"
SAMPLES_PNG, RELIABILITY_PNG, ROC_PNG = "sample_probabilities.png", "reliability.png", "roc.png"
PER_CLASS_PNG, THRESHOLD_PNG = "per_class_accuracy.png", "threshold_tradeoff.png"
# Section headings, in report order (tests check each one is present).
SECTIONS = (
    "Dataset", "Key parameters", "Metrics", "Per-class results", "Slices", "Confusion matrix", "Training curves",
    "Misclassified test images", "Least-confident correct predictions", "Sample predictions",
    "Calibration", "Open-set ROC", "Rejection threshold", "Classification report",
)
MAX_GRID_IMAGES = 24  # per image grid: enough to see a pattern, small enough to load fast
GRID_COLS = 6
SAMPLES_PER_CLASS = 2  # sample images per test label and per held-out class in the probability chart
# Images in the probability chart at most: with 43 classes, 2 each would make a 15000 px tall PNG;
# 16 (8 rows) still holds the four-class set-up's 2 per label and per held-out class.
MAX_SAMPLE_IMAGES = 16
# Dataset table: up to this many classes one column each; more (GTSRB's 43) get one row each.
MAX_LABEL_COLUMNS = 8
TOP_CONFUSED = 10  # rows of the "most confused pairs" table
SAMPLE_BATCH = 64  # the samples are few: one small batch
MAX_QUARANTINE_LISTED = 50  # longer lists stay in metrics/data.json
TEST_SPLIT = "test"
# params.yaml keys shown in "Key parameters", with what each decides.
KEY_PARAMS = (
    ("strategy", "how the pretrained model is adapted"),
    ("model.backbone", "feature extractor"),
    ("model.weights", "initial weights"),
    ("data.source", "where the images come from"),
    ("data.image_size", "input side (px)"),
    ("train.epochs", "maximum epochs"),
    ("train.lr", "head learning rate"),
    ("unknown.enabled", "trained \"unknown\" class"),
    ("unknown.heldout", "class ids never trained on (open-set test)"),
)
# evaluate.json keys shown in "Metrics": label and one-line meaning.
CLOSED_SET_METRICS = (
    ("test.accuracy", "accuracy", "share of test images (targets and trained unknown) given the right class"),
    ("test.balanced_accuracy", "balanced accuracy", "mean per-class recall: small classes count as much as big ones"),
    ("test.macro_f1", "macro F1", "mean F1 over classes"),
    ("test.log_loss", "log loss", "cross-entropy of the predicted probabilities (lower is better)"),
    ("test.ece", "ECE", "expected calibration error: gap between confidence and accuracy (lower is better)"),
    ("test.ece_uncalibrated", "ECE before calibration", "the same with the raw softmax (temperature 1)"),
    ("test.temperature", "temperature", "fitted on validation by train: probabilities are softmax(logits / T)"),
    ("test.n", "test images", "closed-set test images"),
    ("val.accuracy", "val accuracy", "the same accuracy on the validation split"),
)
# Shown only when the data has an official test set (data.gtsrb.official_test).
OFFICIAL_TEST_METRICS = (
    ("official_test.accuracy", "accuracy", "share of official test images of trained classes given the right class"),
    ("official_test.macro_f1", "macro F1", "mean F1 over classes"),
    ("official_test.n", "images", "official test images of trained classes"),
)
OPEN_SET_METRICS = (
    ("openset.auroc", "AUROC",
     "how well max softmax separates known signs from never-seen ones (1 perfect, 0.5 chance)"),
    ("openset.fpr_at_95_tpr", "FPR@95%TPR", "share of never-seen signs accepted when 95% of known ones are accepted"),
    ("openset.heldout_assigned_known", "held-out called known",
     "share of never-seen signs the model files under a known sign type"),
    ("openset.accuracy", "open-set accuracy",
     "accuracy when scores below the validation-chosen threshold mean \"unknown\""),
    ("openset.known_accuracy", "known-class accuracy",
     "target test images accepted with the right class at the threshold (rejected counts as wrong)"),
    ("openset.known_kept", "known-class kept",
     "target test images answered with a sign at the threshold, right or wrong (the rest: \"unknown\")"),
    ("openset.heldout_rejected", "held-out rejected", "never-seen test images ending up \"unknown\" at the threshold"),
    ("openset.threshold", "threshold",
     "rejection threshold on max softmax, chosen on validation only (see \"Rejection threshold\")"),
    ("openset.n_known", "known images", "target test images in the open-set evaluation"),
    ("openset.n_heldout", "held-out images", "never-seen test images"),
)


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, already loaded: build_report reads no files."""

    data_summary: Mapping[str, Any]  # metrics/data.json
    params: Mapping[str, Any]  # params.yaml
    metrics: Mapping[str, Any]  # metrics/evaluate.json
    per_class: pd.DataFrame
    predictions: pd.DataFrame  # rows aligned with test_frame
    test_frame: pd.DataFrame  # the test manifest
    test_images: np.ndarray  # (N, S, S, 3) uint8, aligned with test_frame
    history: pd.DataFrame
    train_summary: Mapping[str, Any]
    reliability: pd.DataFrame
    roc: pd.DataFrame
    tradeoff: pd.DataFrame  # metrics/threshold_tradeoff.csv: validation known kept vs held-out rejected
    report_text: str
    class_names: Sequence[str]  # the model's outputs, in index order
    sample_images: np.ndarray  # (M, S, S, 3) for the probability chart
    sample_probs: np.ndarray  # (M, K) softmax rows
    sample_titles: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class ReportPaths:
    """Where load_report_inputs reads each input (explicit: no layout assumed here)."""

    data_summary: Path
    train_summary: Path
    history: Path
    metrics: Path
    per_class: Path
    predictions: Path
    reliability: Path
    roc: Path
    tradeoff: Path
    report_text: Path
    dataset_dir: Path


# ----------------------------------------------------------------- loading


def select_samples(
    frame: pd.DataFrame, per_class: int = SAMPLES_PER_CLASS, max_images: int = MAX_SAMPLE_IMAGES
) -> tuple[np.ndarray, list[str]]:
    """Row indices and titles: a few images per test label and per held-out class, ``max_images`` at most.

    Deterministic and spread out: rows evenly spaced through each group in
    manifest order (which follows tracks), so the picks are different physical
    signs rather than consecutive frames of one. Held-out images are grouped
    by their original class id, since they all share the label "unknown".
    With more groups than fit (43 GTSRB classes), one image per group, and
    groups evenly spaced through the class list when even that is too many.
    """
    frame = frame.reset_index(drop=True)
    heldout = frame["role"] == ROLE_HELDOUT
    groups: list[tuple[str, pd.Index]] = []
    for label, rows in frame[~heldout].groupby("label", sort=False).groups.items():
        groups.append((str(label), rows))
    for class_id, rows in frame[heldout].groupby("class_id", sort=False).groups.items():
        groups.append((f"never seen (class {class_id})", rows))
    if len(groups) * per_class > max_images:
        per_class = max(1, max_images // len(groups))
        keep = np.unique(np.linspace(0, len(groups) - 1, min(len(groups), max_images)).round().astype(int))
        groups = [groups[k] for k in keep]
    indices, titles = [], []
    for title, rows in groups:
        picks = np.unique(np.linspace(0, len(rows) - 1, min(per_class, len(rows))).round().astype(int))
        for pick in picks:
            row = rows[pick]
            indices.append(int(row))
            # "unknown" mixes many sign types: say which one this is.
            unknown = frame.at[row, "role"] == ROLE_UNKNOWN
            titles.append(f"unknown (class {frame.at[row, 'class_id']})" if unknown else title)
    return np.asarray(indices, dtype=int), titles


def load_report_inputs(
    paths: ReportPaths, params: Mapping[str, Any], loaded: LoadedModel, batch_size: int = SAMPLE_BATCH
) -> ReportInputs:
    """Read every stage output the report shows and score the sample images."""
    test_frame, test_images = load_split(paths.dataset_dir, TEST_SPLIT)
    sample_idx, sample_titles = select_samples(test_frame)
    sample_images = np.asarray(test_images[sample_idx])
    return ReportInputs(
        data_summary=json.loads(paths.data_summary.read_text()),
        params=params,
        metrics=json.loads(paths.metrics.read_text()),
        per_class=pd.read_csv(paths.per_class),
        predictions=pd.read_csv(paths.predictions, dtype={"path": str}),
        test_frame=test_frame,
        test_images=test_images,
        history=pd.read_csv(paths.history),
        train_summary=json.loads(paths.train_summary.read_text()),
        reliability=pd.read_csv(paths.reliability),
        roc=pd.read_csv(paths.roc),
        tradeoff=pd.read_csv(paths.tradeoff),
        report_text=paths.report_text.read_text(),
        class_names=list(loaded.class_names),
        sample_images=sample_images,
        sample_probs=predict_probs(loaded, sample_images, batch_size),
        sample_titles=sample_titles,
    )


# ------------------------------------------------------------- formatting



def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of report values (numbers to ``DIGITS`` decimals, ``MISSING`` for none)."""
    return markdown.table(headers, rows, value_text)


def _pct(value: Any) -> str:
    return MISSING if value is None else f"{value:.1%}"


# --------------------------------------------------------------- sections


def _verdict(inputs: ReportInputs) -> str:
    m = inputs.metrics
    auroc = m.get("openset.auroc")
    return (
        f"**Test accuracy {_pct(m.get('test.accuracy'))}{_pct_interval(m, 'test.accuracy')}, "
        f"macro F1 {value_text(m.get('test.macro_f1'))}, "
        f"open-set AUROC {value_text(auroc) if auroc is not None else 'n/a (no held-out images)'}** "
        f"on {value_text(m.get('test.n'))} closed-set test images and "
        f"{value_text(m.get('openset.n_heldout', 0))} never-seen ones."
    )


def _pct_interval(metrics: Mapping[str, Any], key: str) -> str:
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return "" if low is None or high is None else f" (95% CI {_pct(low)}-{_pct(high)})"


def _split_order(name: str) -> tuple[int, str]:
    # data.json sorts keys alphabetically; the report reads train, val, test.
    return (SPLIT_NAMES.index(name) if name in SPLIT_NAMES else len(SPLIT_NAMES), name)


def _split_tables(summary: Mapping[str, Any], class_names: Sequence[str], shown: Mapping[str, str]) -> list[str]:
    """Images per split and class: one column per class up to MAX_LABEL_COLUMNS, else a row per class."""
    splits = sorted(summary.get("splits", {}).items(), key=lambda item: _split_order(item[0]))
    labels = [n for n in class_names if n != UNKNOWN_NAME]
    roles = [(ROLE_UNKNOWN, "unknown (trained)"), (ROLE_HELDOUT, "held-out (never seen)")]
    if len(labels) <= MAX_LABEL_COLUMNS:
        headers = ["split", "images", "tracks", *(shown.get(n, n) for n in labels), *(h for _, h in roles)]
        return [md_table(headers, [
            [name, s["images"], s["tracks"], *(s["per_label"].get(label, 0) for label in labels),
             *(s["per_role"].get(role, 0) for role, _ in roles)]
            for name, s in splits
        ])]
    # 43 columns would not fit any page: the split totals, then the classes as rows.
    by_split = md_table(["split", "images", "tracks", "target signs", *(h for _, h in roles)], [
        [name, s["images"], s["tracks"], s["per_role"].get(ROLE_TARGET, 0),
         *(s["per_role"].get(role, 0) for role, _ in roles)]
        for name, s in splits
    ])
    by_class = md_table(["class", *(name for name, _ in splits)],
                        [[shown.get(label, label), *(s["per_label"].get(label, 0) for _, s in splits)]
                         for label in labels])
    return [by_split, f"Target images per class and split:\n\n{by_class}"]


def _dataset_section(summary: Mapping[str, Any], class_names: Sequence[str], shown: Mapping[str, str]) -> str:
    targets = summary.get("targets", {})
    parts = [
        *_split_tables(summary, class_names, shown),
        f"Target signs: {value_text(targets.get('images'))} images from {value_text(targets.get('tracks'))} tracks "
        f"(physical signs); tracks shared between splits: {value_text(summary.get('tracks_shared_between_splits'))} "
        "(0 means no sign is in two splits).",
        _quarantine(summary.get("quarantined", {})),
    ]
    return "\n\n".join(parts)


def _quarantine(quarantined: Mapping[str, Any]) -> str:
    count = quarantined.get("count", 0)
    if not count:
        return "Quarantined files: 0."
    files = list(quarantined.get("files", []))
    shown = [[f.get("path"), f.get("class_id"), f.get("reason")] for f in files[:MAX_QUARANTINE_LISTED]]
    more = len(files) - len(shown)
    rest = f"\n\n… and {more} more, listed in the data summary (metrics/data.json)." if more > 0 else ""
    return (f"Quarantined files: {count} (unreadable or out-of-range images, left out of every split):\n\n"
            f"{md_table(['path', 'class', 'reason'], shown)}{rest}")


def _params_section(params: Mapping[str, Any]) -> str:
    flat = flatten(params)
    return md_table(["parameter", "value", "what it sets"],
                    [[f"`{key}`", flat.get(key, MISSING), meaning] for key, meaning in KEY_PARAMS])


def with_interval(metrics: Mapping[str, Any], key: str) -> str:
    """An accuracy with its 95% interval when evaluate wrote one: "0.9700 (95% CI 0.9596-0.9778)"."""
    value, low, high = metrics.get(key), metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if value is None or low is None or high is None:
        return value_text(value)
    return f"{value_text(value)} (95% CI {value_text(low)}-{value_text(high)})"


def _metric_rows(metrics: Mapping[str, Any], spec: Sequence[tuple[str, str, str]]) -> list[list[Any]]:
    return [[label, with_interval(metrics, key), meaning] for key, label, meaning in spec]


def _metrics_section(metrics: Mapping[str, Any]) -> str:
    return "\n\n".join([
        "**Closed set** (test images of the classes the model was trained on):",
        md_table(["metric", "value", "meaning"], _metric_rows(metrics, CLOSED_SET_METRICS)),
        "**Open set** (target test images against held-out sign types never seen in training; "
        "score = max softmax over the known classes):",
        md_table(["metric", "value", "meaning"], _metric_rows(metrics, OPEN_SET_METRICS)),
        *(["**Official test set** (the source's own test images, e.g. GTSRB's 12,630; comparable with "
           "published results only for the same classes and image resolution):",
           md_table(["metric", "value", "meaning"], _metric_rows(metrics, OFFICIAL_TEST_METRICS))]
          if "official_test.accuracy" in metrics else []),
    ])


def _training_text(summary: Mapping[str, Any]) -> str:
    # No durations (metrics/timings/): the report changes when the results do, not when the machine is busier.
    stopped = " (stopped early)" if summary.get("stopped_early") else ""
    return (
        f"{value_text(summary.get('epochs_run'))} epochs run{stopped}; "
        f"best epoch {value_text(summary.get('best_epoch'))} "
        f"(val accuracy {value_text(summary.get('best_val_accuracy'))}, "
        f"val loss {value_text(summary.get('best_val_loss'))}) "
        "is the saved model."
    )


def display_names(test_frame: pd.DataFrame) -> dict[str, str]:
    """Class name -> how the report labels it: "14 stop" (class id, then name), from the test manifest.

    The ids come from the manifest (a declared input of the stage), not from
    params.yaml's data.classes, which the report stage does not depend on. A
    class without test images, ``unknown`` and folder classes named by their
    id keep their plain name.
    """
    targets = test_frame[test_frame["role"] == ROLE_TARGET].drop_duplicates("label")
    shown = {}
    for label, class_id in zip(targets["label"].astype(str), targets["class_id"].astype(str), strict=True):
        class_id = str(int(class_id)) if class_id.isdigit() else class_id  # "00012" -> "12"
        shown[label] = label if class_id == label else f"{class_id} {label}"
    return shown


def _per_class_section(inputs: ReportInputs, shown: Mapping[str, str]) -> str:
    per_class = inputs.per_class
    table = per_class.assign(**{"class": [shown.get(str(n), str(n)) for n in per_class["class"]]})
    rows = md_table(list(table.columns), list(table.itertuples(index=False)))
    return f"{rows}\n\n![per-class accuracy]({PER_CLASS_PNG})"


SLICES_INTRO = (
    "Test images by slice (`slice.*` in `metrics/evaluate.json`; `evaluate.slices` sets the size bins). "
    "Size: the original image's shorter side. Position: first, middle or last third of its track's test "
    "frames (later frames are nearer; tracks of 3 or more test images only). Images: the labelled ones "
    "(targets and trained \"unknown\"); accuracy: the share given the right class, with its 95% interval; "
    "rejected: the share of the slice's target images answered \"unknown\" at the threshold."
)


def slice_label(row: SliceRow) -> str:
    """How the report names a slice: "size 32-47 px", "size 96+ px", "position: first third", "source: gtsrb"."""
    if row.kind == "size":
        return f"size {row.name.replace(f'-{OPEN_BIN}', '+')} px"
    if row.kind == "position":
        return f"position: {row.name} third"
    return f"{row.kind}: {row.name}"


def slice_accuracy(row: SliceRow) -> str:
    """The slice's accuracy with its Wilson interval, recounted from ``n`` and the rounded rate: slices are small."""
    if row.accuracy is None or row.n <= 0:
        return value_text(row.accuracy)
    low, high = wilson_interval(min(row.n, round(row.accuracy * row.n)), row.n, CONFIDENCE_LEVEL)
    return f"{value_text(row.accuracy)} ({value_text(low)}-{value_text(high)})"


def slices_section(metrics: Mapping[str, Any]) -> str:
    """The "Slices" table: slice, images, accuracy (95% CI), rejected; a line saying why when there is none."""
    rows = slice_rows(metrics)
    if not rows:
        return ("No slices in `metrics/evaluate.json`: no test image has a recorded size or a track of 3 or more "
                "test frames, or an older evaluate stage wrote it.")
    table = md_table(["slice", "images", "accuracy (95% CI)", "rejected"],
                     [[slice_label(r), r.n, slice_accuracy(r), r.rejected] for r in rows])
    return f"{SLICES_INTRO}\n\n{table}"


def confused_pairs(labels: np.ndarray, predicted: np.ndarray, names: Sequence[str],
                   top: int = TOP_CONFUSED) -> list[list[Any]]:
    """The ``top`` most frequent (true, predicted) mistakes: true, predicted, images, share of the true class."""
    counts = confusion_matrix_counts(labels, predicted, len(names))
    totals = counts.sum(axis=1)  # test images per true class
    np.fill_diagonal(counts, 0)
    order = np.argsort(-counts, axis=None, kind="stable")[:top]
    rows = []
    for flat in order:
        actual, guess = np.unravel_index(flat, counts.shape)
        if counts[actual, guess] == 0:
            break
        rows.append([names[actual], names[guess], int(counts[actual, guess]),
                     _pct(counts[actual, guess] / totals[actual])])
    return rows


def _confused_text(inputs: ReportInputs, shown: Mapping[str, str]) -> str:
    _, labels, predicted = _closed_set(inputs)
    names = [shown.get(n, n) for n in inputs.class_names]
    rows = confused_pairs(labels, predicted, names)
    if not rows:
        return "No test image is misclassified: no confused pairs."
    wrong = labels != predicted
    n_pairs = len(set(zip(labels[wrong].tolist(), predicted[wrong].tolist(), strict=True)))
    return (f"Most confused pairs: the {len(rows)} most frequent of {n_pairs} (true, predicted) pairs "
            f"among {int(wrong.sum())} misclassified test images.\n\n"
            + md_table(["true class", "predicted as", "images", "share of the true class"], rows))


# ----------------------------------------------------------------- figures

# Per figure section: the PNG it links, its alt text, and how to read it.
FIGURES = {
    "Confusion matrix": (CONFUSION_PNG, "confusion matrix", "Closed-set test images; rows are the true class."),
    "Training curves": (HISTORY_PNG, "training curves", ""),
    "Misclassified test images": (MISCLASSIFIED_PNG, "misclassified test images", ""),
    "Least-confident correct predictions": (LEAST_CONFIDENT_PNG, "least-confident correct predictions", ""),
    "Sample predictions": (
        SAMPLES_PNG, "sample probabilities",
        "Probabilities for a few test images per class (one each for a spread of the classes when there are "
        f"many: {MAX_SAMPLE_IMAGES} images at most), including held-out sign types the model never saw "
        "(ideally: low bars for every known sign, or \"unknown\"). Under each title, the final answer (→) "
        "after the open-set threshold.",
    ),
    "Calibration": (
        RELIABILITY_PNG, "reliability diagram",
        "Reliability diagram: bars on the diagonal mean confidence matches accuracy; above it the model is right "
        "more often than it claims (underconfident, usual with label smoothing), below it overconfident.",
    ),
    "Open-set ROC": (ROC_PNG, "open-set ROC", ""),
    "Rejection threshold": (
        THRESHOLD_PNG, "threshold trade-off",
        "Every threshold trades known-class images kept (answered with a sign) against never-seen ones "
        "rejected (answered \"unknown\"); `evaluate.threshold.policy` chooses where, on validation. "
        "The star is the chosen policy; the other marks show where the other policies would put it.",
    ),
}
GRID_TITLE = "true / predicted (confidence)"


def _closed_set(inputs: ReportInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices, true and predicted class indices of the labelled test images."""
    frame, preds = inputs.test_frame.reset_index(drop=True), inputs.predictions.reset_index(drop=True)
    if len(frame) != len(preds) or not (frame["path"].astype(str) == preds["path"].astype(str)).all():
        raise ValueError("predictions are not aligned with the test manifest; re-run the evaluate stage")
    rows = np.flatnonzero((frame["label_idx"] >= 0).to_numpy())
    index = {name: k for k, name in enumerate(inputs.class_names)}
    return rows, frame["label_idx"].to_numpy()[rows], preds["prediction"].iloc[rows].map(index).to_numpy()


def _grid(inputs: ReportInputs, rows: np.ndarray, out: Path) -> None:
    p = inputs.predictions
    captions = [f"{p.at[r, 'label']} /\n{p.at[r, 'prediction']} ({p.at[r, 'confidence']:.2f})" for r in rows]
    images = np.asarray(inputs.test_images[rows]) if len(rows) else np.empty((0, 1, 1, 3), dtype=np.uint8)
    plots.plot_image_grid(images, captions, out, GRID_COLS, GRID_TITLE)


def _grids(inputs: ReportInputs, out_dir: Path, rows: np.ndarray, labels: np.ndarray,
           predicted: np.ndarray) -> dict[str, str]:
    """Misclassified (most confident first) and least-confident correct grids; a note for each."""
    confidence = inputs.predictions["confidence"].to_numpy()[rows]
    hit = labels == predicted
    wrong = rows[~hit][np.argsort(-confidence[~hit], kind="stable")]
    right = rows[hit][np.argsort(confidence[hit], kind="stable")]
    _grid(inputs, wrong[:MAX_GRID_IMAGES], out_dir / MISCLASSIFIED_PNG)
    _grid(inputs, right[:MAX_GRID_IMAGES], out_dir / LEAST_CONFIDENT_PNG)
    capped = f"; the {MAX_GRID_IMAGES} most confident mistakes are shown" if len(wrong) > MAX_GRID_IMAGES else ""
    return {
        "Misclassified test images": f"{len(wrong)} of {len(rows)} closed-set test images are misclassified{capped} "
                                     "(most confident mistakes first).",
        "Least-confident correct predictions":
            f"The {min(len(right), MAX_GRID_IMAGES)} correct predictions the model was least sure of "
            "(least sure first).",
    }


def threshold_text(metrics: Mapping[str, Any], tradeoff: pd.DataFrame) -> str:
    """The chosen policy, its threshold and shares on validation and test, then every policy's point."""
    name = metrics.get(POLICY_KEYS["name"])
    if name not in POLICIES:  # an evaluate.json from before the policies
        return f"Threshold {value_text(metrics.get(THRESHOLD_KEY))}; no policy recorded."
    val_rejected = metrics.get(POLICY_KEYS["val_heldout_rejected"])
    chosen = PolicyChoice(name, metrics.get(POLICY_KEYS["setting"]), metrics.get(THRESHOLD_KEY),
                          metrics.get(POLICY_KEYS["val_known_kept"]), val_rejected,
                          fallback=val_rejected is None and POLICIES[name].needs_heldout)
    rows = [[f"`{point.name}`{' (chosen)' if point.name == name else ''}", point.threshold,
             _pct(point.known_kept), _pct(point.heldout_rejected)] for point in policy_points(tradeoff)]
    return "\n\n".join([
        f"Policy `{name}`: {chosen.rule}, threshold {value_text(chosen.threshold)}. On validation it keeps "
        f"{_pct(chosen.known_kept)} of the known-class images and rejects {_pct(val_rejected)} of the held-out "
        f"ones; on test {_pct(metrics.get('openset.known_kept'))} and {_pct(metrics.get('openset.heldout_rejected'))}.",
        *([md_table(["policy (settings: params.yaml evaluate.threshold)", "threshold", "validation known kept",
                     "validation held-out rejected"], rows)] if rows else []),
    ])


def _sample_titles(inputs: ReportInputs) -> list[str]:
    """Each sample's title plus the final answer, decided as the evaluate stage decides it."""
    titles = list(inputs.sample_titles) or [""] * len(inputs.sample_images)
    answers = decide(inputs.sample_probs, inputs.class_names, inputs.metrics.get(THRESHOLD_KEY))
    return [f"{title}\n→ {answer}" for title, answer in zip(titles, answers, strict=True)] if answers else titles


def _draw_figures(inputs: ReportInputs, out_dir: Path) -> dict[str, str]:
    """Every PNG into ``out_dir``; returns notes (by section) that depend on the data."""
    m = inputs.metrics
    rows, labels, predicted = _closed_set(inputs)
    shown = display_names(inputs.test_frame)
    names = [shown.get(n, n) for n in inputs.class_names]
    plots.plot_confusion(labels, predicted, names, out_dir / CONFUSION_PNG)
    per_class = inputs.per_class
    plots.plot_per_class_recall([shown.get(str(n), str(n)) for n in per_class["class"]], per_class["recall"],
                                per_class["support"], out_dir / PER_CLASS_PNG)
    plots.plot_history(inputs.history, out_dir / HISTORY_PNG, inputs.train_summary.get("best_epoch"))
    plots.plot_probability_bars(inputs.sample_images, inputs.sample_probs, inputs.class_names,
                                _sample_titles(inputs), out_dir / SAMPLES_PNG, m.get(THRESHOLD_KEY))
    plots.plot_reliability(inputs.reliability, out_dir / RELIABILITY_PNG)
    plots.plot_roc(inputs.roc, m.get("openset.auroc"), out_dir / ROC_PNG)
    plots.plot_threshold_tradeoff(inputs.tradeoff, m.get(POLICY_KEYS["name"]), out_dir / THRESHOLD_PNG)
    return {
        **_grids(inputs, out_dir, rows, labels, predicted),
        "Training curves": _training_text(inputs.train_summary),
        "Calibration": (f"ECE {value_text(m.get('test.ece'))} after temperature scaling "
                        f"(T = {value_text(m.get('test.temperature'))} fitted on validation), "
                        f"{value_text(m.get('test.ece_uncalibrated'))} before."),
        "Open-set ROC": (f"AUROC {value_text(m.get('openset.auroc'))}, "
                         f"FPR@95%TPR {value_text(m.get('openset.fpr_at_95_tpr'))}."),
        "Rejection threshold": threshold_text(m, inputs.tradeoff),
    }


def _figure_section(name: str, note: str) -> str:
    png, alt, intro = FIGURES[name]
    text = " ".join(part for part in (intro, note) if part)
    return f"{text}\n\n![{alt}]({png})"  # relative link: renders on GitHub next to report.md


def render_markdown(inputs: ReportInputs, notes: Mapping[str, str]) -> str:
    """The report text; ``notes`` come from :func:`_draw_figures`."""
    shown = display_names(inputs.test_frame)
    body = {
        "Dataset": _dataset_section(inputs.data_summary, inputs.class_names, shown),
        "Key parameters": _params_section(inputs.params),
        "Metrics": _metrics_section(inputs.metrics),
        "Per-class results": _per_class_section(inputs, shown),
        "Slices": slices_section(inputs.metrics),
        **{name: _figure_section(name, notes.get(name, "")) for name in FIGURES},
        "Classification report": f"```\n{inputs.report_text.rstrip()}\n```",
    }
    body["Confusion matrix"] += "\n\n" + _confused_text(inputs, shown)
    flat = flatten(inputs.params)
    title = f"# signflow report: {value_text(flat.get('model.backbone'))}, {value_text(flat.get('strategy'))} strategy"
    return "\n\n".join([title, _verdict(inputs), *(f"## {name}\n\n{body[name]}" for name in SECTIONS)]) + "\n"


def build_report(inputs: ReportInputs, out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` and its PNGs, replacing ``out_dir`` atomically."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        notes = _draw_figures(inputs, tmp)
        (tmp / REPORT_FILE).write_text(render_markdown(inputs, notes))
    log.info("report written to %s", out_dir / REPORT_FILE)
    return out_dir / REPORT_FILE
