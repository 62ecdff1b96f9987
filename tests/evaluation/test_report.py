"""The report: every section, every linked figure a real PNG, edge cases (no mistakes, quarantine).

Inputs are built with the real functions on tiny data: a freshly built
simple_cnn at 32 px (untrained: its answers are arbitrary, which is fine for a
report), a handful of random images per role scored by ``evaluation.evaluate``,
and the files written in the evaluate stage's layout so ``load_report_inputs``
reads them back as the stage does. The stage itself: as the tiny project's `dvc repro` ran it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from signflow import paths
from signflow.catalog import UNKNOWN_NAME
from signflow.commands import preset as presets
from signflow.config import SPLIT_NAMES, Config, DataConfig, EvaluateConfig, load_config, load_params
from signflow.data.arrays import write_split
from signflow.data.manifest import HELDOUT_LABEL_IDX, ROLE_HELDOUT, ROLE_UNKNOWN, to_frame
from signflow.data.records import RawRecord
from signflow.data.split import target_frame
from signflow.data.summary import summarize
from signflow.evaluation import plots
from signflow.evaluation.evaluate import evaluate, score_split
from signflow.evaluation.report import (
    CONFUSION_PNG,
    LEAST_CONFIDENT_PNG,
    MAX_QUARANTINE_LISTED,
    MAX_SAMPLE_IMAGES,
    MISCLASSIFIED_PNG,
    PER_CLASS_PNG,
    REPORT_FILE,
    SECTIONS,
    TOP_CONFUSED,
    ReportInputs,
    ReportPaths,
    build_report,
    confused_pairs,
    display_names,
    load_report_inputs,
    render_markdown,
    select_samples,
    with_interval,
)
from signflow.files import write_json, write_text
from signflow.model.checkpoint import save_checkpoint
from signflow.model.inference import load_model
from signflow.training.stage import HISTORY_COLUMNS, build_model, checkpoint_meta

from tiny_project import Reproduced

IMAGE_SIZE = 32
FRAMES = 3  # images per track
UNKNOWN_IDS, HELDOUT_IDS = ("1", "2"), ("15", "32")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 1000  # a real chart, not an empty canvas
MIN_PNG_SIDE = 100
EPOCHS = 3
LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
QUARANTINED = [{"path": "12/00009_00000.ppm", "class_id": "12", "reason": "image too small (4x4)"}]


# ------------------------------------------------------------------ fixtures


def _records(class_id: str, tracks: int) -> list[RawRecord]:
    return [RawRecord(f"{class_id}/{t:05d}_{f:05d}.ppm", class_id, f"{t:05d}", IMAGE_SIZE, IMAGE_SIZE)
            for t in range(tracks) for f in range(FRAMES)]


def _split_frame(classes: dict[str, str], n_targets: int, heldout: bool, unknown: bool = True) -> pd.DataFrame:
    parts = [target_frame([r for c in classes for r in _records(c, 1)], classes)]
    if unknown:
        unknown_records = [r for c in UNKNOWN_IDS for r in _records(c, 1)]
        parts.append(to_frame(unknown_records, UNKNOWN_NAME, n_targets, ROLE_UNKNOWN))
    if heldout:
        heldout = [r for c in HELDOUT_IDS for r in _records(c, 1)]
        parts.append(to_frame(heldout, UNKNOWN_NAME, HELDOUT_LABEL_IDX, ROLE_HELDOUT))
    return pd.concat(parts, ignore_index=True)


def _tiny_config(repo_root: Path, **data_changes: Any) -> Config:
    """The repository's config shrunk for tests: simple_cnn, no pretrained weights, 32 px."""
    cfg = load_config(repo_root / "params.yaml")
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, backbone="simple_cnn", weights="none"),
        data=dataclasses.replace(cfg.data, image_size=IMAGE_SIZE, **data_changes),
    )


@pytest.fixture(scope="module")
def project(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project in the pipeline's layout: params, dataset, model, every metrics file."""
    # The four default classes whatever params.yaml holds now (`signflow preset gtsrb43` may have run).
    cfg = _tiny_config(repo_root, classes=DataConfig().classes)
    cfg = dataclasses.replace(cfg, unknown=dataclasses.replace(cfg.unknown, enabled=True, heldout=HELDOUT_IDS))
    return _build_project(tmp_path_factory.mktemp("project"), cfg)


@pytest.fixture(scope="module")
def gtsrb43_built(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportInputs, Path]:
    """The report of the full benchmark set-up (the gtsrb43 preset): 43 targets, no unknown, nothing held out."""
    preset = yaml.safe_load(presets.gtsrb43_text())
    cfg = _tiny_config(repo_root, classes={str(k): v for k, v in preset["data"]["classes"].items()})
    cfg = dataclasses.replace(cfg, unknown=dataclasses.replace(cfg.unknown, enabled=False, classes=(), heldout=()))
    inputs = _inputs(_build_project(tmp_path_factory.mktemp("gtsrb43"), cfg))
    return inputs, build_report(inputs, tmp_path_factory.mktemp("gtsrb43_out") / "reports")


def _build_project(root: Path, cfg: Config) -> Path:
    """Write params, a random-image dataset, an untrained model and every metrics file under ``root``."""
    (root / "params.yaml").write_text(json.dumps(cfg.to_dict()))  # JSON is YAML
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(root / "models/best.pt", {**checkpoint_meta(cfg, model), "model": model.state_dict(), "epoch": 0})
    loaded = load_model(root / "models/best.pt")

    rng = np.random.default_rng(0)
    n_targets = len(cfg.data.classes)
    frames = {name: _split_frame(cfg.data.classes, n_targets, heldout=name != "train" and bool(cfg.unknown.heldout),
                                 unknown=cfg.unknown.enabled)
              for name in SPLIT_NAMES}
    dataset = root / "data/dataset"
    scored = {}
    for name, frame in frames.items():
        images = rng.integers(0, 256, size=(len(frame), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        write_split(dataset, name, frame, images)
        scored[name] = score_split(loaded, frame, images, batch_size=8)
    result = evaluate(loaded, scored["val"], scored["test"], EvaluateConfig())

    metrics = root / "metrics"
    write_json(metrics / "data.json", summarize(frames, pd.DataFrame(QUARANTINED)))
    write_json(metrics / "evaluate.json", result.metrics)
    for attr in ("per_class", "predictions", "roc", "reliability"):
        getattr(result, attr).to_csv(metrics / f"{attr}.csv", index=False)
    result.tradeoff.to_csv(metrics / paths.THRESHOLD_TRADEOFF.name, index=False)
    write_text(metrics / "classification_report.txt", result.report_text)
    history = pd.DataFrame(
        [[e, 1.5 - 0.3 * e, 0.4 + 0.1 * e, 1.6 - 0.2 * e, 0.35 + 0.1 * e, 1e-3] for e in range(EPOCHS)],
        columns=HISTORY_COLUMNS,
    )
    history.to_csv(metrics / "train_history.csv", index=False)
    write_json(metrics / "train.json", {"best_epoch": EPOCHS - 1, "best_val_accuracy": 0.55, "best_val_loss": 1.2,
                                        "epochs_run": EPOCHS, "stopped_early": False})
    return root


def _inputs(project: Path) -> ReportInputs:
    metrics = project / "metrics"
    files = ReportPaths(
        data_summary=metrics / "data.json", train_summary=metrics / "train.json", history=metrics / "train_history.csv",
        metrics=metrics / "evaluate.json", per_class=metrics / "per_class.csv", predictions=metrics / "predictions.csv",
        reliability=metrics / "reliability.csv", roc=metrics / "roc.csv",
        tradeoff=metrics / paths.THRESHOLD_TRADEOFF.name,
        report_text=metrics / "classification_report.txt", dataset_dir=project / "data/dataset",
    )
    return load_report_inputs(files, load_params(project / "params.yaml"), load_model(project / "models/best.pt"))


@pytest.fixture(scope="module")
def inputs(project: Path) -> ReportInputs:
    return _inputs(project)


@pytest.fixture(scope="module")
def built(inputs: ReportInputs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(inputs, tmp_path_factory.mktemp("out") / "reports")


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > MIN_PNG_BYTES, path
    image = cv2.imread(str(path))
    assert image is not None and min(image.shape[:2]) >= MIN_PNG_SIDE, path


def _all_correct(inputs: ReportInputs) -> ReportInputs:
    predictions = inputs.predictions.copy()
    labelled = (inputs.test_frame["label_idx"] >= 0).to_numpy()
    predictions.loc[labelled, "prediction"] = predictions.loc[labelled, "label"]
    return dataclasses.replace(inputs, predictions=predictions)


# --------------------------------------------------------------------- report


def test_report_has_every_section_in_order(built: Path) -> None:
    text = built.read_text()
    assert built.name == REPORT_FILE
    assert text.startswith("# ")
    positions = [text.index(f"\n## {name}\n") for name in SECTIONS]
    assert positions == sorted(positions)
    assert "Test accuracy" in text.split("\n## ")[0]  # the verdict comes before the first section


def test_every_link_is_relative_and_a_valid_png(built: Path) -> None:
    links = LINK.findall(built.read_text())
    assert len(links) == len(set(links)) >= 7
    for link in links:
        assert not link.startswith(("/", "http")) and ".." not in link and "/" not in link
        _assert_png(built.parent / link)
    assert sorted(links) == sorted(p.name for p in built.parent.glob("*.png"))  # no orphans either


def test_threshold_section_names_the_chosen_policy_and_draws_the_trade_off(built: Path, inputs: ReportInputs) -> None:
    section = built.read_text().split("\n## Rejection threshold\n")[1].split("\n## ")[0]
    policy = inputs.metrics["openset.threshold_policy"]
    assert f"Policy `{policy}`: " in section and f"| `{policy}` (chosen) |" in section
    assert "![threshold trade-off](threshold_tradeoff.png)" in section
    _assert_png(built.parent / "threshold_tradeoff.png")


def test_quarantine_listed_when_present(built: Path) -> None:
    text = built.read_text()
    assert "Quarantined files: 1" in text
    assert QUARANTINED[0]["path"] in text and QUARANTINED[0]["reason"] in text


def test_classification_report_in_code_block(built: Path, inputs: ReportInputs) -> None:
    assert f"```\n{inputs.report_text.rstrip()}\n```" in built.read_text()


def test_zero_misclassified_no_quarantine_replacing_old_report(inputs: ReportInputs, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    summary = {**inputs.data_summary, "quarantined": {"count": 0}}
    report = build_report(dataclasses.replace(_all_correct(inputs), data_summary=summary), out)
    text = report.read_text()
    assert "0 of " in text and "misclassified" in text
    assert "Quarantined files: 0." in text
    _assert_png(out / MISCLASSIFIED_PNG)
    _assert_png(out / LEAST_CONFIDENT_PNG)
    assert not (out / "stale.png").exists()  # the directory is replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]  # no temporary left behind


def test_misaligned_predictions_fail_and_keep_previous(inputs: ReportInputs, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    (out / REPORT_FILE).write_text("previous report")
    shuffled = inputs.predictions.iloc[::-1].reset_index(drop=True)
    with pytest.raises(ValueError, match="not aligned"):
        build_report(dataclasses.replace(inputs, predictions=shuffled), out)
    assert (out / REPORT_FILE).read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]


def test_samples_cover_every_label_and_heldout_class(inputs: ReportInputs) -> None:
    idx, titles = select_samples(inputs.test_frame)
    again, _ = select_samples(inputs.test_frame)
    assert np.array_equal(idx, again)  # deterministic
    picked = inputs.test_frame.iloc[idx]
    assert set(picked["label"]) == set(inputs.test_frame["label"])
    assert set(picked.loc[picked["role"] == ROLE_HELDOUT, "class_id"]) == set(HELDOUT_IDS)
    assert any("never seen" in t for t in titles)
    assert inputs.sample_probs.shape == (len(idx), len(inputs.class_names))
    assert np.allclose(inputs.sample_probs.sum(axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------------- plots


def test_empty_inputs_still_give_a_figure(tmp_path: Path) -> None:
    plots.plot_image_grid(np.empty((0, 8, 8, 3), dtype=np.uint8), [], tmp_path / "grid.png", cols=4)
    plots.plot_roc(pd.DataFrame(columns=["fpr", "tpr", "threshold"]), None, tmp_path / "roc.png")
    no_images = np.empty((0, 8, 8, 3), dtype=np.uint8)
    plots.plot_probability_bars(no_images, np.empty((0, 2)), ["a", "b"], [], tmp_path / "p.png")
    for name in ("grid.png", "roc.png", "p.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_grid_rejects_caption_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="captions"):
        plots.plot_image_grid(np.zeros((2, 8, 8, 3), dtype=np.uint8), ["one"], tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def _png_shape(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image.shape[0], image.shape[1]


def test_confusion_figure_grows_with_classes_and_stays_dense(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    shapes = {}
    for n in (2, 4, plots.DENSE_CLASSES, plots.DENSE_CLASSES + 1, 20, 43):
        labels = np.repeat(np.arange(n), 5)
        preds = np.where(rng.random(len(labels)) < 0.3, rng.integers(0, n, len(labels)), labels)
        out = tmp_path / f"confusion_{n}.png"
        plots.plot_confusion(labels, preds, [f"{k} class_with_a_rather_long_name_{k}" for k in range(n)], out)
        shapes[n] = _png_shape(out)
        width, height = plots.confusion_figure_size(n)
        assert shapes[n] == pytest.approx((height * plots.DPI, width * plots.DPI), abs=1)  # drawn at its size
    for layout in ([n for n in shapes if n <= plots.DENSE_CLASSES], [n for n in shapes if n > plots.DENSE_CLASSES]):
        heights = [shapes[n][0] for n in sorted(layout)]
        assert len(heights) >= 2 and heights == sorted(heights) and heights[0] < heights[-1]
    assert shapes[43][0] > shapes[4][0]
    # Past DENSE_CLASSES, one panel of small cells: narrower per class than two panels of big ones.
    assert shapes[43][1] / 43 < shapes[4][1] / 4


def test_per_class_chart_grows_with_classes(tmp_path: Path) -> None:
    heights = []
    for n in (4, 43):
        recall = np.linspace(0.2, 1.0, n)
        recall[0] = np.nan  # a class without test images
        plots.plot_per_class_recall([f"class {k}" for k in range(n)], recall, np.arange(n), tmp_path / f"{n}.png")
        heights.append(_png_shape(tmp_path / f"{n}.png")[0])
    assert heights[1] > heights[0]
    with pytest.raises(ValueError, match="names"):
        plots.plot_per_class_recall(["a"], [0.5, 0.5], [1, 1], tmp_path / "bad.png")


def test_long_labels_are_cut() -> None:
    name = "32 end_of_all_speed_and_passing_limits"
    assert len(plots.short_label(name)) == plots.MAX_LABEL_CHARS and plots.short_label(name).endswith("…")
    assert plots.short_label("14 stop") == "14 stop"


def test_confused_pairs_most_frequent_first() -> None:
    names = ["a", "b", "c"]
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([1, 1, 2, 0, 0, 1, 2, 2])
    rows = confused_pairs(labels, preds, names)
    assert [r[:3] for r in rows] == [["a", "b", 2], ["a", "c", 1], ["b", "a", 1]]
    assert rows[0][3] == "50.0%"  # 2 of a's 4 test images
    assert confused_pairs(labels, labels, names) == []
    assert len(confused_pairs(labels, preds, names, top=1)) == 1


def test_samples_are_capped_and_spread_with_many_classes() -> None:
    labels = [f"class_{k}" for k in range(43)]
    frame = pd.DataFrame({"label": np.repeat(labels, 3), "class_id": np.repeat(np.arange(43).astype(str), 3),
                          "role": "target"})
    idx, titles = select_samples(frame)
    assert 0 < len(idx) <= MAX_SAMPLE_IMAGES
    assert len(set(titles)) == len(titles)  # one image per class, each a different class
    assert titles[0] == labels[0] and titles[-1] == labels[-1]  # spread over the whole list


# ------------------------------------------------------------- 43 classes


def test_gtsrb43_report_is_readable(gtsrb43_built: tuple[ReportInputs, Path], built: Path) -> None:
    inputs, report = gtsrb43_built
    text = report.read_text()
    n_classes = len(inputs.class_names)
    assert n_classes == 43 and UNKNOWN_NAME not in inputs.class_names
    for link in LINK.findall(text):
        _assert_png(report.parent / link)
    # No table is as wide as the class list: the dataset table turns classes into rows.
    table_widths = [line.count("|") - 1 for line in text.splitlines() if line.startswith("|")]
    assert max(table_widths) < n_classes
    shown = display_names(inputs.test_frame)
    for name in inputs.class_names:
        assert text.count(f"| {shown[name]} |") >= 2  # a dataset row and a per-class row, "id name" each
    assert shown["stop"] == "14 stop"
    confused = text.split("Most confused pairs")[1].split("\n## ")[0]
    assert 0 < sum(line.startswith("| ") for line in confused.splitlines()) - 1 <= TOP_CONFUSED
    assert len(inputs.sample_images) <= MAX_SAMPLE_IMAGES
    # The figures grow with the class count, the confusion matrix as one dense panel.
    four, many = _png_shape(built.parent / CONFUSION_PNG), _png_shape(report.parent / CONFUSION_PNG)
    assert many[0] > four[0] and many[1] / n_classes < four[1] / 4
    assert _png_shape(report.parent / PER_CLASS_PNG)[0] > _png_shape(built.parent / PER_CLASS_PNG)[0]


def test_four_class_report_keeps_one_column_per_class(built: Path, inputs: ReportInputs) -> None:
    header = next(line for line in built.read_text().splitlines() if line.startswith("| split |"))
    shown = display_names(inputs.test_frame)
    assert all(f" {shown[n]} " in header for n in inputs.class_names if n != UNKNOWN_NAME)


# ---------------------------------------------------------------------- stage


@pytest.mark.slow
def test_stage_writes_report_and_logs_to_mlflow(reproduced: Reproduced) -> None:
    """The report stage as the tiny project's one `dvc repro` per pytest run ran it (read here, not changed)."""
    assert "Running stage 'report'" in reproduced.log
    work = reproduced.project.root
    report = work / paths.REPORTS_DIR / REPORT_FILE
    for link in LINK.findall(report.read_text()):
        _assert_png(report.parent / link)
    # A sqlite store keeps artifacts under ./mlruns beside the stage's working directory.
    assert list(work.glob(f"mlruns/*/*/artifacts/report/{REPORT_FILE}"))


# ------------------------------------------------------- text without figures


def test_long_quarantine_list_is_capped(inputs: ReportInputs) -> None:
    files = [{"path": f"12/{i:05d}.ppm", "class_id": "12", "reason": "unreadable"}
             for i in range(MAX_QUARANTINE_LISTED + 3)]
    summary = {**inputs.data_summary, "quarantined": {"count": len(files), "files": files}}
    text = render_markdown(dataclasses.replace(inputs, data_summary=summary), {})
    assert files[MAX_QUARANTINE_LISTED - 1]["path"] in text and files[-1]["path"] not in text
    assert "and 3 more" in text


def test_no_heldout_images_says_so(inputs: ReportInputs) -> None:
    metrics = {**inputs.metrics, "openset.auroc": None, "openset.fpr_at_95_tpr": None, "openset.n_heldout": 0}
    text = render_markdown(dataclasses.replace(inputs, metrics=metrics), {})
    assert "open-set AUROC n/a (no held-out images)" in text
    assert "| AUROC | n/a |" in text


def test_official_test_metrics_appear_only_when_scored(inputs: ReportInputs) -> None:
    assert "Official test set" not in render_markdown(inputs, {})
    metrics = {**inputs.metrics, "official_test.accuracy": 0.9871, "official_test.macro_f1": 0.98,
               "official_test.n": 12630}
    text = render_markdown(dataclasses.replace(inputs, metrics=metrics), {})
    section = text[text.index("**Official test set**"):]
    assert "| accuracy | 0.9871 |" in section and "| images | 12630 |" in section


def test_report_prints_no_timings(inputs: ReportInputs) -> None:
    """Timings live in metrics/timings/: a run that was only faster or slower gives the same report."""
    text = render_markdown(inputs, {})
    timed = dataclasses.replace(inputs, train_summary={**inputs.train_summary, "train_seconds": 123.4,
                                                       "images_per_second": 567.8},
                                history=inputs.history.assign(seconds=9.9))
    assert render_markdown(timed, {}) == text
    assert " s of training" not in text and "seconds" not in text


def test_accuracies_show_their_interval() -> None:
    metrics = {"test.accuracy": 0.97, "test.accuracy_ci_low": 0.9596, "test.accuracy_ci_high": 0.9778}
    assert with_interval(metrics, "test.accuracy") == "0.9700 (95% CI 0.9596-0.9778)"
    assert with_interval({"test.accuracy": 0.97}, "test.accuracy") == "0.9700"  # an older evaluate.json
    assert with_interval({}, "test.accuracy") == "n/a"
