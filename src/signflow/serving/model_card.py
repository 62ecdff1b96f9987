"""The model card: what a shipped model is for, how good it is and where it fails, on one Markdown page.

Written with every export (``reports/model_card.md``) and logged with the
registered version, so whoever pulls ``models:/signflow/N`` reads what it
answers, its per-class accuracy with intervals, its calibration, how it treats
signs it never saw, its known limits and the command that traces it back to its
commit and data. Every figure is read from a file the pipeline already wrote
(the sidecar, ``metrics/``), none is recomputed from images.

:func:`signflow.serving.card_inputs.read_card_inputs` is the one place that
reads files; :func:`model_card_markdown` is pure (inputs in, text out), so it
is tested on constructed values; :func:`write_model_card` writes atomically.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from signflow.catalog import UNKNOWN_NAME, flatten
from signflow.config import SPLIT_NAMES, Config
from signflow.data.manifest import ROLE_HELDOUT
from signflow.evaluation.metrics import CONFIDENCE_LEVEL, wilson_interval
from signflow.files import write_text
from signflow.markdown import MISSING, table, value_text
from signflow.serving.card_inputs import CardInputs, SizeBin

log = logging.getLogger(__name__)

VERSION_DESCRIPTION_LIMIT = 5000  # MLflow's cap on a model version's description (its registry column)
# Section headings, in card order (tests check each one is present).
SECTIONS = (
    "Intended use", "Classes", "Training data", "Per-class accuracy", "Calibration", "Open-set behaviour",
    "Sign size", "Exported files", "Sim-to-real", "Known limits", "How to reproduce",
)
# GTSRB's classes are ids 0-42 (Stallkamp et al. 2012, "Man vs. computer"); the synthetic renderer draws the same 43.
GTSRB_CLASS_IDS = tuple(str(k) for k in range(43))
SOURCE_TEXT = {  # data.source -> what the images are (signflow.data.raw.DATA_SOURCES holds the names)
    "synthetic": "synthetic renders of GTSRB's sign types (signflow's procedural renderer), not real photos",
    "gtsrb": "real photos of German signs: the GTSRB training archive",
    "folder": "the images of a local folder (`data.folder.path`)",
}
GTSRB_SOURCES = ("synthetic", "gtsrb")  # sources whose class ids are GTSRB's
DATASET_CONTEXTS = ("train", "validation", "test")  # MLflow's dataset contexts (signflow.provenance)
SIM2REAL = "benchmarks/sim2real.py"
# sim2real.py's groups, in the order shown, with what each holds (its docstring).
SIM2REAL_GROUPS = (
    ("test", "real test tracks, never looked at while developing"),
    ("dev", "real train and validation tracks"),
    ("all", "every real image of the target classes"),
)
# The sidecar's "threshold_policy": its name and setting, then figures on validation (shown with these words).
POLICY_FIELDS = ("name", "setting", "param")
POLICY_FIGURES = {"val_known_kept": "known-class images kept", "val_heldout_rejected": "held-out images rejected"}


def write_model_card(path: Path | str, markdown: str) -> None:
    """Write the card atomically: an interrupted export never leaves half a card beside a whole model."""
    write_text(path, markdown)


# ------------------------------------------------------------------ formatting



def _mb(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"  # export.json keeps sizes to 2 decimals


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1%}"


def _interval(right: int, n: int) -> str:
    """"0.9833 (95% CI 0.9641-0.9925)": the share with its Wilson interval (evaluate's, for test.accuracy)."""
    if n == 0:
        return MISSING
    low, high = wilson_interval(right, n, CONFIDENCE_LEVEL)
    return f"{value_text(right / n)} ({CONFIDENCE_LEVEL:.0%} CI {value_text(low)}-{value_text(high)})"


def _share_interval(share: float | None, n: float | None) -> str:
    """A share written to 6 decimals (evaluate.json) with its interval: the count is exact below 500,000 images."""
    if share is None or not n:
        return value_text(share)
    return _interval(round(share * int(n)), int(n))


def _ids(ids: Sequence[str]) -> str:
    """Class ids with runs of consecutive numbers shortened: "0-11, 16, 18-31"; "none" for none."""
    parts: list[str] = []
    run: list[int] = []
    for class_id in ids:
        if class_id.isdigit() and run and int(class_id) == run[-1] + 1:
            run.append(int(class_id))
            continue
        parts += _run_text(run)
        run = [int(class_id)] if class_id.isdigit() else []
        if not class_id.isdigit():
            parts.append(class_id)
    parts += _run_text(run)
    return ", ".join(parts) if parts else "none"


def _run_text(run: Sequence[int]) -> list[str]:
    if not run:
        return []
    return [str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"]


def _class_ids(config: Config) -> dict[str, str]:
    """Class name -> its id in the data (data.classes), targets only."""
    return {name: class_id for class_id, name in config.data.classes.items()}


# ------------------------------------------------------------------ sections


def _title(inputs: CardInputs) -> str:
    registered = inputs.lineage.get("registered")
    name = f"`{registered}`" if registered else "not registered"
    return f"# Model card: {inputs.sidecar.get('backbone', MISSING)}, {inputs.config.strategy} strategy ({name})"


def _summary(inputs: CardInputs) -> str:
    m = inputs.metrics
    low, high = m.get("test.accuracy_ci_low"), m.get("test.accuracy_ci_high")
    interval = "" if low is None or high is None else f" ({CONFIDENCE_LEVEL:.0%} CI {_pct(low)}-{_pct(high)})"
    return (f"**Test accuracy {_pct(m.get('test.accuracy'))}{interval} on {value_text(m.get('test.n'))} images, "
            f"ECE {value_text(m.get('test.ece'))}, open-set AUROC {value_text(m.get('openset.auroc'))}**; "
            f"data: {SOURCE_TEXT.get(inputs.config.data.source, inputs.config.data.source)}.")


def _intended_use(inputs: CardInputs) -> str:
    s = inputs.sidecar
    targets = [n for n in s["class_names"] if n != s.get("unknown_class")]
    return "\n".join([
        f"Classifies one image of a traffic sign, cropped around the sign (RGB, resized to {s.get('image_size')} px "
        f"a side), as one of {len(targets)} sign types ({', '.join(targets)}) or \"{UNKNOWN_NAME}\". "
        "It answers \"unknown\" when its own unknown class wins or when its known-ness (the largest probability "
        f"among the known classes) is below the threshold {value_text(s.get('threshold'))}; `signflow predict` and "
        "`signflow.load_predictor` apply that rule.",
        "",
        "It does not find signs in a scene (no detector), and it is not validated for decisions without a "
        "human or another system checking them.",
    ])


def _classes(inputs: CardInputs) -> str:
    s = inputs.sidecar
    ids = _class_ids(inputs.config)
    targets = set(inputs.config.data.classes)
    fed = f"class ids {_ids([c for c in inputs.trained_class_ids if c not in targets])}"
    rows = [[k, name, "unknown (trained)" if name == s.get("unknown_class") else "target",
             fed if name == s.get("unknown_class") else ids.get(name, MISSING)]
            for k, name in enumerate(s["class_names"])]
    return table(["output", "class", "kind", "class id / sources"], rows)


def _training_data(inputs: CardInputs) -> str:
    cfg, summary = inputs.config, inputs.data_summary
    splits = summary.get("splits", {})
    names = [n for n in SPLIT_NAMES if n in splits] + sorted(set(splits) - set(SPLIT_NAMES))
    labels = list(inputs.sidecar["class_names"])
    rows = [[name, splits[name].get("images"), splits[name].get("tracks"),
             *(splits[name].get("per_label", {}).get(label, 0) for label in labels),
             splits[name].get("per_role", {}).get(ROLE_HELDOUT, 0)] for name in names]
    fractions = ", ".join(f"{name} {share:g}" for name, share in cfg.split.fractions.items())
    parts = [
        f"Source: `data.source: {cfg.data.source}`: {SOURCE_TEXT.get(cfg.data.source, cfg.data.source)}. "
        f"Split by {cfg.split.group_by} ({fractions}; seed {cfg.split.seed}): no {cfg.split.group_by} in two "
        f"splits ({value_text(summary.get('tracks_shared_between_splits'))} shared). "
        f"Quarantined images (unreadable or out of range, in no split): "
        f"{value_text(summary.get('quarantined', {}).get('count', 0))}.",
        table(["split", "images", "tracks", *labels, "held-out (never trained)"], rows, value_text),
        _hashes(inputs.lineage),
    ]
    return "\n\n".join(parts)


def _hashes(lineage: Mapping[str, Any]) -> str:
    datasets = lineage.get("datasets") or {}
    if not datasets:
        return "Data hashes: not recorded (the stages did not run under `dvc repro`)."
    rows = [[context, f"`{d.get('digest', MISSING)}`", d.get("source", MISSING), d.get("files") or MISSING]
            for context in DATASET_CONTEXTS + tuple(sorted(set(datasets) - set(DATASET_CONTEXTS)))
            if (d := datasets.get(context))]
    return ("Data hashes (DVC's hash of `data/dataset`, as `dvc.lock` records it; `dvc pull` at the commit below "
            "brings back these bytes):\n\n" + table(["split", "digest", "stored at", "files"], rows))


def _per_class(inputs: CardInputs) -> str:
    ids = _class_ids(inputs.config)
    rows = [[r.name, ids.get(r.name, "-"), r.images, r.right, _interval(r.right, r.images)] for r in inputs.per_class]
    return (f"Test images of each output class given that class (recall, the argmax answer, no rejection); "
            f"{CONFIDENCE_LEVEL:.0%} Wilson intervals, each on its own:\n\n"
            + table(["class", "class id", "test images", "right", "accuracy"], rows, value_text))


def _calibration(inputs: CardInputs) -> str:
    m = inputs.metrics
    return (f"Probabilities are softmax(logits / T), T = {value_text(inputs.sidecar.get('temperature'))} fitted on the "
            f"validation split (temperature scaling). Expected calibration error on the test split "
            f"({inputs.config.evaluate.ece_bins} confidence bins): {value_text(m.get('test.ece'))} calibrated, "
            f"{value_text(m.get('test.ece_uncalibrated'))} before. Log loss {value_text(m.get('test.log_loss'))}.")


def _threshold_policy(policy: Mapping[str, Any] | None) -> str:
    """The sidecar's ``threshold_policy`` (name, setting, validation figures) in a sentence; any key it adds shows."""
    if not policy:
        return "The threshold was chosen on the validation split (the sidecar records no policy)."
    setting = policy.get("setting", policy.get("param"))
    figures = flatten({k: v for k, v in policy.items() if k not in POLICY_FIELDS})
    order = [*(k for k in POLICY_FIGURES if k in figures), *sorted(set(figures) - set(POLICY_FIGURES))]
    shown = "; ".join(f"{POLICY_FIGURES.get(key, key)} {value_text(figures[key])}" for key in order)
    return (f"Threshold policy `{policy.get('name', MISSING)}` (setting {value_text(setting)}), applied on the "
            "validation split" + (f": {shown}." if shown else "."))


def _openset(inputs: CardInputs) -> str:
    m, heldout = inputs.metrics, list(inputs.config.unknown.heldout)
    n_known, n_heldout = m.get("openset.n_known"), m.get("openset.n_heldout")
    if not n_heldout:
        return ("Not measured: the test split holds no held-out sign type (`unknown.heldout` is empty). "
                + _threshold_policy(inputs.sidecar.get("threshold_policy")))
    rows = [
        ["held-out signs answered \"unknown\" (as served)",
         _share_interval(m.get("openset.heldout_rejected"), n_heldout)],
        ["held-out signs whose top class is a known sign (before the threshold)",
         _share_interval(m.get("openset.heldout_assigned_known"), n_heldout)],
        ["target signs accepted with the right class (as served)",
         _share_interval(m.get("openset.known_accuracy"), n_known)],
        ["open-set accuracy, targets and held-out (as served)",
         _share_interval(m.get("openset.accuracy"), (n_known or 0) + n_heldout)],
        ["AUROC, known vs held-out", value_text(m.get("openset.auroc"))],
        ["held-out accepted at 95% of targets accepted", value_text(m.get("openset.fpr_at_95_tpr"))],
        ["threshold", value_text(inputs.sidecar.get("threshold"))],
    ]
    return "\n\n".join([
        f"{value_text(n_heldout)} test images of sign types never trained on (held out: class ids {_ids(heldout)}) "
        f"against {value_text(n_known)} target test images; \"as served\" applies the threshold, "
        "as `signflow predict` does:",
        table(["measure", "value"], rows),
        _threshold_policy(inputs.sidecar.get("threshold_policy")),
    ])


def _sizes(inputs: CardInputs) -> str:
    shown = [b for b in inputs.test_sizes if b.images]
    total = sum(b.images for b in shown)
    if not total:
        return "No test image sizes recorded (metrics/data_tracks.csv has no test rows)."
    measured = any(b.scored is not None for b in shown)
    rows = [[f"{b.label} px", b.images, _pct(b.images / total),
             *([b.scored, _interval(b.right, b.scored) if b.scored else MISSING] if measured else [])] for b in shown]
    headers = ["shorter side", "test images", "share", *(["of the model's classes", "accuracy"] if measured else [])]
    how = ("accuracy: the images of the model's classes (targets and trained unknown, as test accuracy) given the "
           "right class (argmax)" if measured else
           "accuracy per size not computed (no predictions.csv with the test manifest)")
    return f"Test images by the shorter side of the original image; {how}.\n\n" + table(headers, rows, value_text)


def _exported(inputs: CardInputs) -> str:
    e = inputs.export_metrics
    files = (table(["file", "sha256"], [[f"`{name}`", f"`{digest}`"] for name, digest in inputs.model_files.items()])
             if inputs.model_files else "")
    checkpoint = inputs.sidecar.get("source_checkpoint") or {}
    machine = (inputs.sidecar.get("exported_on") or {}).get("cpu", MISSING)
    source = (f"Exported from `{checkpoint.get('path')}` (sha256 `{checkpoint.get('sha256')}`), ONNX opset "
              f"{value_text(inputs.sidecar.get('opset'))}, verified on {machine}.")
    if e is None:
        return "\n\n".join(p for p in [source, files, "Export metrics: not recorded (no metrics/export.json)."] if p)
    rows = [["PyTorch checkpoint", value_text(e.get("torch.test_accuracy")), "-", "-"],
            ["ONNX (float)", value_text(e.get("onnx.test_accuracy")), _mb(e.get("onnx.size_mb")),
             f"{value_text(e.get('onnx.mismatched_predictions'))} answers differ from PyTorch"]]
    if "int8.test_accuracy" not in e:
        int8 = "int8: not built (`export.quantize` off)."
    elif e.get("int8.refused"):
        int8 = (f"int8 ({e.get('int8.format')}): refused, not shipped: it loses "
                f"{value_text(-float(e.get('int8.accuracy_change_points', 0.0)))} test-accuracy points, more than "
                f"`export.max_int8_drop` ({value_text(inputs.config.export.max_int8_drop)}).")
    else:
        rows.append([f"ONNX int8 ({e.get('int8.format')})", value_text(e.get("int8.test_accuracy")),
                     _mb(e.get("int8.size_mb")), f"{value_text(e.get('int8.mismatched_vs_float'))} answers differ from "
                                                  "float"])
        int8 = ""
    parts = [source, files, table(["model", "test accuracy", "size (MB)", "agreement"], rows), int8]
    return "\n\n".join(p for p in parts if p)


def _sim2real(inputs: CardInputs) -> str:
    if inputs.config.data.source != "synthetic":
        return "Not applicable: trained on real images, not synthetic renders."
    result = inputs.sim2real
    if result is None:
        return f"Not measured for this model (`{SIM2REAL}` judges a synthetic-trained model on real GTSRB photos)."
    rows = []
    for key, meaning in SIM2REAL_GROUPS:
        group = result.get(key)
        if not group:
            continue
        n = int(group["n"])
        # sim2real.py rounds to 4 decimals: the count is exact below 5,000 images.
        rows.append([meaning, n, _interval(round(float(group["accuracy"]) * n), n),
                     _pct(group.get("rejected")), _pct(group.get("wrong_sign"))])
    return (f"`{SIM2REAL}`: real GTSRB photos of the target classes, answered as served "
            f"(threshold {value_text(result.get('threshold'))}):\n\n"
            + table(["real images", "images", "right sign", "rejected as unknown", "wrong sign"], rows, value_text))


def never_seen_ids(inputs: CardInputs) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Class ids never trained on: (in the data: held out or unknown-source without a train image, not in the data).

    For GTSRB-type sources the universe is GTSRB's 43 ids; for a folder, the folder's classes.
    """
    trained = set(inputs.trained_class_ids)
    in_data = tuple(c for c in inputs.data_class_ids if c not in trained)
    universe = GTSRB_CLASS_IDS if inputs.config.data.source in GTSRB_SOURCES else ()
    absent = tuple(c for c in universe if c not in trained and c not in inputs.data_class_ids)
    return in_data, absent


def _smallest_tested(inputs: CardInputs) -> SizeBin | None:
    return next((b for b in inputs.test_sizes if b.images), None)


def _lower_edge(label: str) -> str:
    """"24-31" or "128+" -> "24" / "128": the bin's smallest side in px."""
    return label.split("-")[0].rstrip("+")


def _limits(inputs: CardInputs) -> str:
    cfg = inputs.config
    in_data, absent = never_seen_ids(inputs)
    total = sum(b.images for b in inputs.test_sizes)
    lines = [
        f"- **Data**: {SOURCE_TEXT.get(cfg.data.source, cfg.data.source)}: every figure above is measured on such "
        "images" + (" (real photos: see Sim-to-real)." if cfg.data.source == "synthetic" else "."),
        "- **Classes never seen in training**: " + "; ".join(
            ([f"class ids {_ids(in_data)} (in the validation and test splits only: the open-set figures)"]
             if in_data else ["none of the data's classes"]) + ([f"{_ids(absent)} (in no split)"] if absent else []))
        + "; and every sign type outside this data (other countries' designs, supplementary plates alone). "
          "The model may call any of them a known sign: see Open-set behaviour.",
    ]
    smallest = _smallest_tested(inputs)
    if smallest is not None and total:
        accuracy = f", accuracy {_interval(smallest.right, smallest.scored)}" if smallest.scored else ""
        trained = (f" No training image is under {_lower_edge(inputs.smallest_trained)} px: smaller signs are "
                   "outside what was learnt." if inputs.smallest_trained else "")
        lines.append(f"- **Smallest signs**: {_pct(smallest.images / total)} of the test images are "
                     f"{smallest.label} px on their shorter side (the smallest size with images){accuracy}.{trained}")
    weakest = min(inputs.per_class, key=lambda r: r.right / r.images if r.images else math.inf, default=None)
    if weakest is not None and weakest.images:
        lines.append(f"- **Weakest class**: {weakest.name}, {_interval(weakest.right, weakest.images)}.")
    on = "synthetic validation images" if cfg.data.source == "synthetic" else "the validation split"
    lines.append(f"- **Threshold**: {value_text(inputs.sidecar.get('threshold'))}, chosen on {on}. Images less "
                 "confident than those (another camera, weather, country) are rejected more often; choose a "
                 "threshold on validation images of the new domain (`signflow predict --threshold`).")
    dirty = str(inputs.lineage.get("git_dirty", "")).lower()
    if dirty == "true":
        lines.append("- **Uncommitted changes**: the workspace differed from the commit below when this model "
                     "was built, so the commit alone does not rebuild it.")
    return "\n".join(lines)


def _reproduce(inputs: CardInputs) -> str:
    lineage = inputs.lineage
    facts = table(["what", "value"], [
        ["git commit", f"`{lineage.get('git_commit') or MISSING}`"],
        ["uncommitted changes", value_text(lineage.get("git_dirty"))],
        ["DVC experiment", f"`{lineage.get('dvc_experiment') or MISSING}`"],
        ["dvc.lock md5", f"`{lineage.get('dvc_lock_md5') or MISSING}`"],
        ["MLflow run", f"`{lineage.get('run_id') or MISSING}`"],
        ["registered version", f"`{lineage.get('registered') or MISSING}`"],
    ])
    registered, run_id = lineage.get("registered"), lineage.get("run_id")
    commands = []
    if registered:
        commands.append(f"signflow trace models:/{registered}   # where it came from: run, commit, data hashes")
    if run_id:
        commands.append(f"signflow trace {run_id} --restore DIR   # rebuild that state in a new clone, "
                        "check the model files byte for byte")
    if not commands:
        return (f"{facts}\n\nNo MLflow run recorded: check out the commit above, `dvc pull`, then `dvc repro`.")
    return facts + "\n\n```bash\n" + "\n".join(commands) + "\n```"


def model_card_markdown(inputs: CardInputs) -> str:
    """The card as Markdown: a title, a one-line verdict, then :data:`SECTIONS` in order."""
    body = {
        "Intended use": _intended_use(inputs),
        "Classes": _classes(inputs),
        "Training data": _training_data(inputs),
        "Per-class accuracy": _per_class(inputs),
        "Calibration": _calibration(inputs),
        "Open-set behaviour": _openset(inputs),
        "Sign size": _sizes(inputs),
        "Exported files": _exported(inputs),
        "Sim-to-real": _sim2real(inputs),
        "Known limits": _limits(inputs),
        "How to reproduce": _reproduce(inputs),
    }
    return "\n\n".join([_title(inputs), _summary(inputs), *(f"## {name}\n\n{body[name]}" for name in SECTIONS)]) + "\n"


def card_description(markdown: str, limit: int = VERSION_DESCRIPTION_LIMIT) -> str:
    """The card's title and headline (up to its first section), for the registered version's description.

    MLflow caps a version's description at :data:`VERSION_DESCRIPTION_LIMIT`
    characters; the whole card goes with the run as an artifact.
    """
    head = markdown.split("\n## ", 1)[0].strip()
    return head if len(head) <= limit else head[: limit - 1] + "…"
