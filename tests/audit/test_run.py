"""The audit assembled on a small decoded dataset: metrics, the leakage warning, and the report folder."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.builders import ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN, manifest, reencoded, smooth_images, write_dataset
from signflow.audit.duplicates import PAIR_COLUMNS
from signflow.audit.labels import SUSPECT_COLUMNS
from signflow.audit.run import COUNTS_CSV, PAIRS_CSV, PROFILE_CSV, README, SUSPECTS_CSV, run_audit, write_report
from signflow.config import AuditConfig, Config, DataConfig, FolderConfig, ModelConfig

NAMES = ["alpha", "beta", "unknown"]


def _config(source: str = "folder", track_pattern: str = "") -> Config:
    data = replace(DataConfig(), classes={"1": "alpha", "2": "beta"}, source=source,
                   folder=FolderConfig(path="photos", track_pattern=track_pattern))
    model = replace(ModelConfig(), backbone="simple_cnn", weights="none")  # seconds: the wiring is under test
    return replace(Config(), data=data, model=model, audit=AuditConfig(batch_size=8, max_suspects=5, gallery_pairs=3))


def _split(images: np.ndarray, prefix: str, heldout: int = 0) -> pd.DataFrame:
    n = len(images)
    labels = [NAMES[k % 3] for k in range(n)]
    roles = [ROLE_UNKNOWN if lab == "unknown" else ROLE_TARGET for lab in labels]
    for k in range(heldout):
        labels[-1 - k], roles[-1 - k] = "unknown", ROLE_HELDOUT
    return manifest([f"{prefix}/{k}.png" for k in range(n)], labels, NAMES, [f"{prefix}{k // 2}" for k in range(n)],
                    roles, sizes=[20 + k for k in range(n)])


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """30 train images; val holds a re-encoded copy of train image 3 (an "alpha"), test two held-out images."""
    train = smooth_images(30, seed=0)
    val = np.concatenate([smooth_images(8, seed=1), reencoded(train[3])[None]])
    test = smooth_images(9, seed=2)
    frames = {"train": _split(train, "tr"), "val": _split(val, "va"), "test": _split(test, "te", heldout=2)}
    frames["val"].loc[8, ["label", "class_id", "label_idx", "role"]] = ["alpha", "alpha", 0, ROLE_TARGET]
    return write_dataset(tmp_path / "dataset", {n: (frames[n], im) for n, im in
                                                (("train", train), ("val", val), ("test", test))})


def test_run_audit_finds_the_planted_pair_and_warns_for_a_folder_without_tracks(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        result = run_audit(dataset, _config())
    m = result.metrics
    assert (m["duplicates.total"], m["duplicates.train-val"], m["duplicates.train-test"]) == (1, 1, 0)
    assert m["duplicates.groups"] == 1 and m["duplicates.class.alpha"] == 1 and m["duplicates.label_conflicts"] == 0
    pair = result.pairs.iloc[0]
    assert (pair["path_a"], pair["path_b"]) == ("tr/3.png", "va/8.png")
    assert result.warning and "data.folder.track_pattern" in result.warning
    assert any(r.levelname == "WARNING" and "split.group_by: hash" in r.message for r in caplog.records)
    assert m["labels.images"] == 30 + 9 + 7  # the held-out role has no label to check
    assert m["profile.train.n"] == 30 and m["profile.test.width.p50"] == pytest.approx(24.0)
    assert all(isinstance(v, (int, float)) and v == v for v in m.values())


def test_no_warning_with_a_track_pattern(dataset: Path) -> None:
    assert run_audit(dataset, _config(track_pattern=r"^(\d+)_")).warning is None


def test_write_report_replaces_the_folder_with_readme_figures_and_tables(dataset: Path, tmp_path: Path) -> None:
    cfg = _config()
    result = run_audit(dataset, cfg)
    out = tmp_path / "reports" / "audit"
    out.mkdir(parents=True)
    (out / "stale.png").write_bytes(b"from an older run")
    readme = write_report(result, dataset, out, cfg.audit)

    assert readme == out / README and not (out / "stale.png").exists()
    text = readme.read_text()
    for link in re.findall(r"\]\(([^)]+)\)", text):
        if not link.startswith("../"):
            assert (out / link).is_file(), f"README links {link}, which is not in {out}"
    assert "**Warning**" in text and "| train - val | 1 |" in text and "tr/3.png" in text
    assert list(pd.read_csv(out / PAIRS_CSV).columns) == PAIR_COLUMNS
    suspects = pd.read_csv(out / SUSPECTS_CSV)
    assert list(suspects.columns) == SUSPECT_COLUMNS and len(suspects) == result.metrics["labels.suspects"]
    shown = min(cfg.audit.max_suspects, len(suspects))
    assert text.count("| train |") + text.count("| val |") + text.count("| test |") >= shown
    assert pd.read_csv(out / COUNTS_CSV)["images"].sum() == result.metrics["labels.images"]
    assert set(pd.read_csv(out / PROFILE_CSV)["split"]) == {"train", "val", "test"}
    json.dumps(result.metrics, allow_nan=False)  # metrics/audit.json must be valid JSON
