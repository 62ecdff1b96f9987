"""The report: every section, every linked figure a real PNG, edge cases (no mistakes, quarantine).

Inputs are built with the real functions on tiny data: a freshly built
simple_cnn at 32 px (untrained: its answers are arbitrary, which is fine for a
report), a handful of random images per role scored by ``evaluation.evaluate``,
and the files written in the evaluate stage's layout so ``load_report_inputs``
reads them back as the stage does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from signflow import plots
from signflow.checkpoint import save_checkpoint
from signflow.config import SPLIT_NAMES, UNKNOWN_NAME, EvaluateConfig, load_config, load_params
from signflow.data.arrays import write_split
from signflow.data.manifest import HELDOUT_LABEL_IDX, ROLE_HELDOUT, ROLE_UNKNOWN, to_frame
from signflow.data.records import RawRecord
from signflow.data.split import target_frame
from signflow.data.summary import summarize
from signflow.evaluation import evaluate, score_split
from signflow.experiment import HISTORY_COLUMNS, build_model, checkpoint_meta
from signflow.inference import load_model
from signflow.io import write_json, write_text
from signflow.report import (
    LEAST_CONFIDENT_PNG,
    MAX_QUARANTINE_LISTED,
    MISCLASSIFIED_PNG,
    REPORT_FILE,
    SECTIONS,
    ReportInputs,
    ReportPaths,
    build_report,
    load_report_inputs,
    render_markdown,
    select_samples,
)

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


def _split_frame(classes: dict[str, str], n_targets: int, heldout: bool) -> pd.DataFrame:
    parts = [target_frame([r for c in classes for r in _records(c, 1)], classes)]
    parts.append(to_frame([r for c in UNKNOWN_IDS for r in _records(c, 1)], UNKNOWN_NAME, n_targets, ROLE_UNKNOWN))
    if heldout:
        heldout = [r for c in HELDOUT_IDS for r in _records(c, 1)]
        parts.append(to_frame(heldout, UNKNOWN_NAME, HELDOUT_LABEL_IDX, ROLE_HELDOUT))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def project(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project in the pipeline's layout: params, dataset, model, every metrics file."""
    root = tmp_path_factory.mktemp("project")
    cfg = load_config(repo_root / "params.yaml")
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, backbone="simple_cnn", weights="none"),
        data=dataclasses.replace(cfg.data, image_size=IMAGE_SIZE),
        unknown=dataclasses.replace(cfg.unknown, enabled=True, heldout=HELDOUT_IDS),
    )
    (root / "params.yaml").write_text(json.dumps(cfg.to_dict()))  # JSON is YAML
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(root / "models/best.pt", {**checkpoint_meta(cfg, model), "model": model.state_dict(), "epoch": 0})
    loaded = load_model(root / "models/best.pt")

    rng = np.random.default_rng(0)
    n_targets = len(cfg.data.classes)
    frames = {name: _split_frame(cfg.data.classes, n_targets, heldout=name != "train") for name in SPLIT_NAMES}
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
    write_text(metrics / "classification_report.txt", result.report_text)
    history = pd.DataFrame(
        [[e, 1.5 - 0.3 * e, 0.4 + 0.1 * e, 1.6 - 0.2 * e, 0.35 + 0.1 * e, 1e-3, 0.1] for e in range(EPOCHS)],
        columns=HISTORY_COLUMNS,
    )
    history.to_csv(metrics / "train_history.csv", index=False)
    write_json(metrics / "train.json", {"best_epoch": EPOCHS - 1, "best_val_accuracy": 0.55, "best_val_loss": 1.2,
                                        "epochs_run": EPOCHS, "train_seconds": 1.0, "stopped_early": False})
    return root


@pytest.fixture(scope="module")
def inputs(project: Path) -> ReportInputs:
    metrics = project / "metrics"
    paths = ReportPaths(
        data_summary=metrics / "data.json", train_summary=metrics / "train.json", history=metrics / "train_history.csv",
        metrics=metrics / "evaluate.json", per_class=metrics / "per_class.csv", predictions=metrics / "predictions.csv",
        reliability=metrics / "reliability.csv", roc=metrics / "roc.csv",
        report_text=metrics / "classification_report.txt", dataset_dir=project / "data/dataset",
    )
    return load_report_inputs(paths, load_params(project / "params.yaml"), load_model(project / "models/best.pt"))


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


# ---------------------------------------------------------------------- stage


@pytest.mark.slow
def test_stage_writes_report_and_logs_to_mlflow(project: Path, repo_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(project, work)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MPLBACKEND": "Agg"}
    subprocess.run([sys.executable, str(repo_root / "stages/report.py")], cwd=work, env=env, check=True, timeout=300)
    report = work / "reports" / REPORT_FILE
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
