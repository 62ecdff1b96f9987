"""The model card: built from small pipeline files written here, its figures checked against direct computations."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from signflow.config import Config, from_mapping
from signflow.data.manifest import MANIFEST_COLUMNS, ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN, DataError, to_frame
from signflow.data.records import RawRecord
from signflow.data.summary import summarize, track_table, write_track_table
from signflow.evaluation.metrics import CONFIDENCE_LEVEL, wilson_interval
from signflow.files import write_json
from signflow.serving.card_inputs import PRODUCERS, CardPaths, read_card_inputs
from signflow.serving.model_card import SECTIONS, model_card_markdown, never_seen_ids, write_model_card

PARAMS = {"data": {"source": "synthetic", "classes": {"13": "give_way", "14": "stop"}},
          "unknown": {"enabled": True, "heldout": ["15"]}}
CLASS_NAMES = ["give_way", "stop", "unknown"]
THRESHOLD = 0.4
DIGEST = "0123456789abcdef0123456789abcdef.dir"
RUN_ID = "a1b2c3d4e5f6"
LINEAGE = {
    "git_commit": "deadbeef" * 5, "git_dirty": "false", "dvc_experiment": "exp-tiny", "dvc_lock_md5": "f" * 32,
    "datasets": {split: {"digest": DIGEST, "source": f"s3://bucket/files/md5/{split}"}
                 for split in ("train", "validation", "test")},
    "registered": "signflow/7", "run_id": RUN_ID,
}
OPENSET = {"openset.n_known": 20, "openset.n_heldout": 5, "openset.heldout_rejected": 0.8,
           "openset.heldout_assigned_known": 0.2, "openset.known_accuracy": 0.9, "openset.accuracy": 0.88,
           "openset.auroc": 0.9375, "openset.fpr_at_95_tpr": 0.4, "openset.threshold": THRESHOLD}

# Test images: (class id, label, role, shorter side in px, prediction). The small ones are missed more often.
TEST_ROWS = (
    [("13", "give_way", ROLE_TARGET, 20, "stop"), ("13", "give_way", ROLE_TARGET, 20, "give_way")]
    + [("13", "give_way", ROLE_TARGET, 40, "give_way")] * 8
    + [("14", "stop", ROLE_TARGET, 20, "give_way"), ("14", "stop", ROLE_TARGET, 20, "unknown")]
    + [("14", "stop", ROLE_TARGET, 50, "stop")] * 7 + [("14", "stop", ROLE_TARGET, 50, "give_way")]
    + [("2", "unknown", ROLE_UNKNOWN, 30, "unknown")] * 3 + [("2", "unknown", ROLE_UNKNOWN, 30, "stop")]
    + [("15", "unknown", ROLE_HELDOUT, 20, "unknown")] * 4 + [("15", "unknown", ROLE_HELDOUT, 60, "stop")]
)
# Training and validation images: (class id, label, role), all 30 px or more: none in the smallest bin.
TRAIN_ROWS = [("13", "give_way", ROLE_TARGET), ("14", "stop", ROLE_TARGET), ("1", "unknown", ROLE_UNKNOWN)]
VAL_ROWS = TRAIN_ROWS + [("2", "unknown", ROLE_UNKNOWN), ("15", "unknown", ROLE_HELDOUT)]


def _frame(rows: list[tuple[str, str, str, int]], split: str) -> pd.DataFrame:
    """A manifest, one track per image, named like GTSRB's (class folder, track, frame)."""
    parts = []
    for k, (class_id, label, role, side) in enumerate(rows):
        record = RawRecord(path=f"{int(class_id):05d}/{k:05d}_{split}.png", class_id=class_id, track=f"{k:05d}",
                           width=side, height=side + 3)
        idx = -1 if role == ROLE_HELDOUT else CLASS_NAMES.index(label)
        parts.append(to_frame([record], label, idx, role))
    return pd.concat(parts, ignore_index=True)[MANIFEST_COLUMNS]


def _counts(rows: list[tuple[str, str, str, int, str]], keep: Any) -> tuple[int, int]:
    """(right, images) over the rows ``keep`` selects, argmax right: the direct computation the card must match."""
    chosen = [r for r in rows if keep(r)]
    return sum(r[1] == r[4] for r in chosen), len(chosen)


def _ci(right: int, n: int) -> str:
    low, high = wilson_interval(right, n, CONFIDENCE_LEVEL)
    return f"{right / n:.4f} ({CONFIDENCE_LEVEL:.0%} CI {low:.4f}-{high:.4f})"


@pytest.fixture()
def project(tmp_path: Path) -> CardPaths:
    """Every file the card reads, as the pipeline writes them, for a 2-class model with "unknown"."""
    frames = {
        "train": _frame([(*row, 30 + 4 * k) for k, row in enumerate(TRAIN_ROWS * 2)], "train"),
        "val": _frame([(*row, 36) for row in VAL_ROWS], "val"),
        "test": _frame([row[:4] for row in TEST_ROWS], "test"),
    }
    metrics, onnx = tmp_path / "metrics", tmp_path / "models" / "onnx"
    write_json(metrics / "data.json", summarize(frames, pd.DataFrame(columns=["path", "class_id", "reason"])))
    write_track_table(metrics / "data_tracks.csv", track_table(frames))
    (tmp_path / "data").mkdir()
    frames["test"].to_csv(tmp_path / "data" / "test.csv", index=False)
    predictions = frames["test"].assign(prediction=[r[4] for r in TEST_ROWS], confidence=0.9, known_score=0.9,
                                        decision=[r[4] for r in TEST_ROWS])
    predictions[["path", "label", "prediction", "confidence", "known_score", "decision", "role"]].to_csv(
        metrics / "predictions.csv", index=False)
    per_class = []
    for name in CLASS_NAMES:
        right, n = _counts(TEST_ROWS, lambda r, name=name: r[1] == name and r[2] != ROLE_HELDOUT)
        per_class.append({"class": name, "precision": 0.5, "recall": round(right / n, 6), "f1": 0.5, "support": n})
    pd.DataFrame(per_class).to_csv(metrics / "per_class.csv", index=False)
    right, n = _counts(TEST_ROWS, lambda r: r[2] != ROLE_HELDOUT)
    low, high = wilson_interval(right, n)
    write_json(metrics / "evaluate.json", {"test.accuracy": round(right / n, 6), "test.accuracy_ci_low": low,
                                           "test.accuracy_ci_high": high, "test.n": n, "test.ece": 0.031,
                                           "test.ece_uncalibrated": 0.12, "test.log_loss": 0.4, **OPENSET})
    write_json(metrics / "export.json", {"torch.test_accuracy": 0.8, "onnx.test_accuracy": 0.8,
                                         "onnx.mismatched_predictions": 0, "onnx.size_mb": 1.25,
                                         "int8.test_accuracy": 0.8, "int8.refused": 0, "int8.size_mb": 0.4,
                                         "int8.format": "QDQ U8S8", "int8.mismatched_vs_float": 1,
                                         "int8.accuracy_change_points": 0.0})
    write_json(onnx / "model.json", {"class_names": CLASS_NAMES, "unknown_class": "unknown", "image_size": 32,
                                     "threshold": THRESHOLD, "temperature": 0.8, "backbone": "simple_cnn",
                                     "opset": 18, "source_checkpoint": {"path": "models/best.pt", "sha256": "c" * 64},
                                     "exported_on": {"cpu": "x86_64: avx2"}})
    (onnx / "model.onnx").write_bytes(b"not really onnx, but hashed all the same")
    return CardPaths(sidecar=onnx / "model.json", data_summary=metrics / "data.json",
                     data_tracks=metrics / "data_tracks.csv", metrics=metrics / "evaluate.json",
                     per_class=metrics / "per_class.csv", predictions=metrics / "predictions.csv",
                     test_manifest=tmp_path / "data" / "test.csv", export_metrics=metrics / "export.json",
                     sim2real=metrics / "sim2real.json",
                     model_files=(onnx / "model.onnx", onnx / "model.int8.onnx"))


@pytest.fixture()
def config() -> Config:
    return from_mapping(Config, PARAMS)


def _card(paths: CardPaths, config: Config, lineage: dict | None = None) -> str:
    return model_card_markdown(read_card_inputs(paths, config, LINEAGE if lineage is None else lineage))


def test_card_shows_classes_hashes_and_per_class_wilson_intervals(project: CardPaths, config: Config) -> None:
    card = _card(project, config)
    for section in SECTIONS:
        assert f"\n## {section}\n" in card
    for name in CLASS_NAMES:
        right, n = _counts(TEST_ROWS, lambda r, name=name: r[1] == name and r[2] != ROLE_HELDOUT)
        assert f"| {name} |" in card
        assert _ci(right, n) in card, name
    assert card.count(f"`{DIGEST}`") == 3  # train, validation, test
    assert hashlib.sha256(project.model_files[0].read_bytes()).hexdigest() in card
    assert "`model.int8.onnx`" not in card  # not on disk (refused, or never built): nothing to hash
    assert "T = 0.8000" in card and "ECE 0.0310" in card


def test_card_shows_open_set_figures_with_intervals(project: CardPaths, config: Config) -> None:
    openset = _card(project, config).split("## Open-set behaviour")[1].split("\n## ")[0]
    assert _ci(4, 5) in openset  # 0.8 of 5 held-out images rejected
    assert _ci(18, 20) in openset  # 0.9 of 20 targets right
    assert "AUROC, known vs held-out | 0.9375" in openset
    assert "class ids 15" in openset


def test_never_seen_classes_are_the_held_out_and_the_gtsrb_ones_absent_from_the_data(
        project: CardPaths, config: Config) -> None:
    inputs = read_card_inputs(project, config, LINEAGE)
    held_out, absent = never_seen_ids(inputs)
    assert held_out == ("2", "15")  # "2" feeds unknown but has no training image: never seen all the same
    assert set(absent) == {str(k) for k in range(43)} - {"1", "2", "13", "14", "15"}
    limits = model_card_markdown(inputs).split("## Known limits")[1]
    assert "class ids 2, 15 (in the validation and test splits only" in limits
    assert "0, 3-12, 16-42 (in no split)" in limits


def test_smallest_signs_share_and_accuracy(project: CardPaths, config: Config) -> None:
    limits = _card(project, config).split("## Known limits")[1]
    small = [r for r in TEST_ROWS if r[3] < 24]
    share = len(small) / len(TEST_ROWS)
    right, n = _counts(small, lambda r: r[2] != ROLE_HELDOUT)
    assert f"{share:.1%} of the test images are 0-23 px" in limits
    assert f"accuracy {_ci(right, n)}" in limits
    assert "No training image is under 24 px" in limits


def test_trace_commands_name_the_registered_version_and_the_run(project: CardPaths, config: Config) -> None:
    card = _card(project, config)
    assert "signflow trace models:/signflow/7" in card
    assert f"signflow trace {RUN_ID} --restore DIR" in card
    unregistered = _card(project, config, {**LINEAGE, "registered": None, "run_id": None})
    assert "signflow trace" not in unregistered and "No MLflow run recorded" in unregistered


def test_missing_optional_files_leave_a_line_saying_so(project: CardPaths, config: Config) -> None:
    bare = dataclasses.replace(project, export_metrics=project.export_metrics.with_name("absent.json"),
                               predictions=None, sim2real=None, model_files=())
    card = _card(bare, config, {})
    assert "Export metrics: not recorded" in card
    assert "accuracy per size not computed" in card
    assert "Sim-to-real\n\nNot measured for this model" in card
    assert "Data hashes: not recorded" in card


def test_int8_absent_or_refused_is_said(project: CardPaths, config: Config) -> None:
    figures = json.loads(project.export_metrics.read_text())
    write_json(project.export_metrics, {k: v for k, v in figures.items() if not k.startswith("int8.")})
    assert "int8: not built" in _card(project, config)
    write_json(project.export_metrics, {**figures, "int8.refused": 1, "int8.accuracy_change_points": -1.25})
    assert "refused, not shipped: it loses 1.2500 test-accuracy points" in _card(project, config)


@pytest.mark.parametrize("field", sorted(PRODUCERS))
def test_missing_required_file_is_named(project: CardPaths, config: Config, field: str) -> None:
    missing = getattr(project, field)
    missing.unlink()
    with pytest.raises(DataError, match=rf"{missing.name} is missing.*dvc repro {PRODUCERS[field]}"):
        read_card_inputs(project, config, LINEAGE)


def test_per_class_of_another_model_is_refused(project: CardPaths, config: Config) -> None:
    frame = pd.read_csv(project.per_class).assign(**{"class": ["a", "b", "c"]})
    frame.to_csv(project.per_class, index=False)
    with pytest.raises(DataError, match="per_class.csv lists"):
        read_card_inputs(project, config, LINEAGE)


def _sim2real(threshold: float) -> dict:
    group = {"n": 389, "accuracy": 0.9974, "rejected": 0.0026, "wrong_sign": 0.0, "per_class": {}}
    return {"benchmark": "sim2real", "model": "models/best.pt", "threshold": threshold, "test": group}


def test_sim2real_of_this_model_is_shown(project: CardPaths, config: Config) -> None:
    write_json(project.sim2real, _sim2real(THRESHOLD))
    section = _card(project, config).split("## Sim-to-real")[1].split("\n## ")[0]
    assert _ci(388, 389) in section  # 0.9974 of 389


def test_sim2real_of_another_model_is_left_out(project: CardPaths, config: Config,
                                               caplog: pytest.LogCaptureFixture) -> None:
    write_json(project.sim2real, _sim2real(THRESHOLD / 2))
    with caplog.at_level(logging.WARNING, logger="signflow.serving.model_card"):
        card = _card(project, config)
    assert "Not measured for this model" in card
    assert "another model's result" in caplog.text


def test_threshold_policy_is_shown_when_the_sidecar_records_it(project: CardPaths, config: Config) -> None:
    assert "the sidecar records no policy" in _card(project, config)
    sidecar = json.loads(project.sidecar.read_text())
    write_json(project.sidecar, {**sidecar, "threshold_policy": None})  # a threshold given by hand
    assert "the sidecar records no policy" in _card(project, config)
    policy = {"name": "known_kept", "setting": 0.995, "val_known_kept": 0.9951, "val_heldout_rejected": 0.71}
    write_json(project.sidecar, {**sidecar, "threshold_policy": policy})
    card = _card(project, config)
    assert "Threshold policy `known_kept` (setting 0.9950)" in card
    assert "known-class images kept 0.9951; held-out images rejected 0.7100" in card


def test_real_photos_need_no_sim_to_real(project: CardPaths, config: Config) -> None:
    real = dataclasses.replace(config, data=dataclasses.replace(config.data, source="gtsrb"))
    assert "Not applicable: trained on real images" in _card(project, real)


def test_write_model_card_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "model_card.md"
    write_model_card(path, "old\n")
    write_model_card(path, "# new card\n")
    assert path.read_text() == "# new card\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model_card.md"]  # no temporary left beside it


def test_stale_predictions_give_no_accuracy_per_size(project: CardPaths, config: Config,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    predictions = pd.read_csv(project.predictions)
    predictions.iloc[:-1].to_csv(project.predictions, index=False)  # one test image fewer than the manifest
    with caplog.at_level(logging.WARNING, logger="signflow.serving.model_card"):
        card = _card(project, config)
    assert "accuracy per size not computed" in card
    assert "list different images" in caplog.text
