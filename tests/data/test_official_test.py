"""The official GTSRB test set: fetched from a loopback mirror of small archives built here, packed into
the raw shards, decoded as its own split, and scored by the evaluate stage as ``official_test.*``.

The archives copy the official layouts: ``GTSRB_Final_Test_Images.zip`` holds
``GTSRB/Final_Test/Images/NNNNN.ppm`` and a label-less ``GT-final_test.test.csv``;
``GTSRB_Final_Test_GT.zip`` holds ``GT-final_test.csv`` with the classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from signflow.config import OFFICIAL_TEST_SPLIT, DataConfig, SplitConfig, UnknownConfig, from_mapping
from signflow.data.arrays import load_split
from signflow.data.fetch import DownloadError
from signflow.data.images import crop_and_resize, read_rgb
from signflow.data.manifest import HELDOUT_LABEL_IDX, ROLE_HELDOUT, ROLE_TARGET, ROLE_UNKNOWN
from signflow.data.raw import materialise
from signflow.data.records import INDEX_FILE, OFFICIAL_TEST_FILE, QUARANTINE_FILE, read_records
from signflow.data.split import split_targets
from signflow.data.unknown import build_dataset

from http_server import LoopbackServer
from tiny_project import tiny_copy

HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
CLASSES = (1, 2, 3, 4)
SIDE = 24
TRACKS, FRAMES = 3, 3
TEST_PER_CLASS = 4
TEST_DIR = "GTSRB/Final_Test/Images"


def _image(class_id: int, variant: int) -> np.ndarray:
    """A flat colour per class with a little per-image noise: learnable, and distinct bytes."""
    rng = np.random.default_rng([class_id, variant])
    base = np.array([(class_id * 67) % 256, (class_id * 131) % 256, (class_id * 29) % 256], dtype=np.int16)
    return np.clip(base + rng.integers(-12, 12, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _zip(tree: Path, archive: Path) -> str:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*")):
            zf.write(path, path.relative_to(tree).as_posix())
    return hashlib.md5(archive.read_bytes()).hexdigest()


def build_mirror(root: Path, *, corrupt_test_image: bool = False, missing_test_image: bool = False) -> dict[str, str]:
    """The three official archives in ``root/served``; returns their md5 sums by file name."""
    served = root / "served"
    served.mkdir(parents=True)
    train = root / "train_tree"
    for class_id in CLASSES:
        class_dir = train / "GTSRB" / "Training" / f"{class_id:05d}"
        rows = []
        for track in range(TRACKS):
            for frame in range(FRAMES):
                name = f"{track:05d}_{frame:05d}.ppm"
                _write(class_dir / name, _image(class_id, track * 10 + frame))
                rows.append(f"{name};{SIDE};{SIDE};1;1;{SIDE - 1};{SIDE - 1};{class_id}")
        (class_dir / f"GT-{class_id:05d}.csv").write_text("\r\n".join([HEADER, *rows]) + "\r\n")
    test = root / "test_tree"
    gt_rows, unlabelled = [], []
    for i, class_id in enumerate(c for c in CLASSES for _ in range(TEST_PER_CLASS)):
        name = f"{i:05d}.ppm"
        _write(test / TEST_DIR / name, _image(class_id, 1000 + i))
        gt_rows.append(f"{name};{SIDE};{SIDE};1;1;{SIDE - 1};{SIDE - 1};{class_id}")
        unlabelled.append(f"{name};{SIDE};{SIDE};1;1;{SIDE - 1};{SIDE - 1}")
    if corrupt_test_image:
        (test / TEST_DIR / "00000.ppm").write_bytes(b"P6\n24 24\n255\n" + b"\x00" * 10)  # truncated
    if missing_test_image:
        (test / TEST_DIR / "00001.ppm").unlink()
    (test / TEST_DIR / "GT-final_test.test.csv").write_text("\n".join([HEADER.rsplit(";", 1)[0], *unlabelled]))
    gt = root / "gt_tree"
    gt.mkdir()
    (gt / "GT-final_test.csv").write_text("\n".join([HEADER, *gt_rows]) + "\n")
    names = ("GTSRB-Training_fixed.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip")
    return {name: _zip(tree, served / name) for name, tree in zip(names, (train, test, gt), strict=True)}


def gtsrb_config(urls: dict[str, str], md5s: dict[str, str], **overrides: object) -> DataConfig:
    gtsrb = {
        "url": urls["GTSRB-Training_fixed.zip"], "md5": md5s["GTSRB-Training_fixed.zip"], "official_test": True,
        "test_images_url": urls["GTSRB_Final_Test_Images.zip"], "test_images_md5": md5s["GTSRB_Final_Test_Images.zip"],
        "test_gt_url": urls["GTSRB_Final_Test_GT.zip"], "test_gt_md5": md5s["GTSRB_Final_Test_GT.zip"],
    }
    gtsrb.update(overrides)
    mapping = {"source": "gtsrb", "classes": {"1": "one", "2": "two"}, "image_size": 16, "decode_workers": 1,
               "gtsrb": gtsrb}
    return from_mapping(DataConfig, mapping, "data")


def test_official_test_set_comes_from_the_mirror_into_the_shards(tmp_path: Path) -> None:
    md5s = build_mirror(tmp_path, corrupt_test_image=True, missing_test_image=True)
    with LoopbackServer(tmp_path / "served") as server:
        cfg = gtsrb_config({name: server.url(name) for name in md5s}, md5s)
        training, bad = materialise(cfg, tmp_path / "raw", tmp_path / "cache")
        assert sorted(path for path, _ in server.state.requests) == sorted(f"/{name}" for name in md5s)
    raw = tmp_path / "raw"
    assert read_records(raw / INDEX_FILE) == training and len(training) == len(CLASSES) * TRACKS * FRAMES
    official = read_records(raw / OFFICIAL_TEST_FILE)
    # 16 ground-truth rows: one image missing from the archive (logged), one truncated (quarantined).
    assert len(official) == len(CLASSES) * TEST_PER_CLASS - 2
    assert list(bad["path"]) == [f"official_test/{TEST_DIR}/00000.ppm"]
    assert pd.read_csv(raw / QUARANTINE_FILE)["path"].tolist() == list(bad["path"])
    assert all(r.path.startswith(f"official_test/{TEST_DIR}/") for r in official)
    assert [r.class_id for r in official] == [str(c) for c in CLASSES for _ in range(TEST_PER_CLASS)][2:]
    assert len({r.track for r in official}) == len(official)  # single frames: each image its own track
    # Training and official test images of a class share its shard, told apart by their paths.
    for record in [*training, *official]:
        with zipfile.ZipFile(raw / record.shard) as zf:
            assert record.path in zf.namelist()
    assert not {r.path for r in training} & {r.path for r in official}


def test_official_test_is_decoded_as_its_own_split_with_the_training_roles(tmp_path: Path) -> None:
    md5s = build_mirror(tmp_path)
    served = tmp_path / "served"
    cfg = gtsrb_config({name: str(served / name) for name in md5s}, md5s)  # a local mirror needs no server
    training, _ = materialise(cfg, tmp_path / "raw", tmp_path / "cache")
    official = read_records(tmp_path / "raw" / OFFICIAL_TEST_FILE)
    split = from_mapping(SplitConfig, {"train": 0.34, "val": 0.33, "test": 0.33}, "split")
    unknown = from_mapping(UnknownConfig, {"enabled": True, "heldout": ["4"], "max_images": 100}, "unknown")
    targets = split_targets(training, cfg.classes, split.fractions, split.seed)
    out = tmp_path / "dataset"
    frames = build_dataset(training, targets, tmp_path / "raw", out, cfg, split, unknown, official)

    frame, images = load_split(out, OFFICIAL_TEST_SPLIT)
    assert len(frame) == len(frames[OFFICIAL_TEST_SPLIT]) == len(official)  # classes 1, 2 target; 3 unknown; 4 held out
    roles = dict(zip(frame["class_id"], zip(frame["role"], frame["label_idx"], strict=True), strict=True))
    assert roles == {"1": (ROLE_TARGET, 0), "2": (ROLE_TARGET, 1), "3": (ROLE_UNKNOWN, 2),
                     "4": (ROLE_HELDOUT, HELDOUT_LABEL_IDX)}
    with zipfile.ZipFile(tmp_path / "raw" / frame["shard"][0]) as zf:
        (tmp_path / "one.ppm").write_bytes(zf.read(frame["path"][0]))
    assert np.array_equal(images[0], crop_and_resize(read_rgb(tmp_path / "one.ppm"), cfg.image_size))

    without = build_dataset(training, targets, tmp_path / "raw", tmp_path / "plain", cfg, split, unknown)
    assert OFFICIAL_TEST_SPLIT not in without and not (tmp_path / "plain" / f"{OFFICIAL_TEST_SPLIT}.npy").exists()


def test_bad_ground_truth_archive_fails_and_leaves_no_raw_dir(tmp_path: Path) -> None:
    md5s = build_mirror(tmp_path)
    served = tmp_path / "served"
    cfg = gtsrb_config({name: str(served / name) for name in md5s}, md5s, test_gt_md5="0" * 32)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        materialise(cfg, tmp_path / "raw", tmp_path / "cache")
    assert not (tmp_path / "raw").exists()


@pytest.mark.slow
def test_evaluate_stage_reports_the_official_test_accuracy(tmp_path: Path, repo_root: Path) -> None:
    """The pipeline on the mirror up to the report: evaluate.json gains official_test.*, the data summary lists it."""
    md5s = build_mirror(tmp_path / "mirror")
    served = tmp_path / "mirror" / "served"
    proj = tiny_copy(repo_root, tmp_path, strategy="scratch", epochs=2)
    params = proj.params()
    params["data"].update(source="gtsrb", classes={1: "one", 2: "two", 3: "three", 4: "four"})
    mirror = gtsrb_config({name: str(served / name) for name in md5s}, md5s).gtsrb
    params["data"]["gtsrb"].update(dataclasses.asdict(mirror))
    params["unknown"].update(enabled=False, heldout=[])
    params["split"].update(train=0.34, val=0.33, test=0.33)
    proj.set_params(params)
    proj.dvc("repro", "report")  # not export: it reads the train and test splits only (stages/export.py)

    metrics = json.loads((proj.root / "metrics" / "evaluate.json").read_text())
    assert metrics["official_test.n"] == len(CLASSES) * TEST_PER_CLASS
    assert 0.0 <= metrics["official_test.accuracy"] <= 1.0
    predictions = pd.read_csv(proj.root / "metrics" / "predictions.csv")
    assert len(predictions) == metrics["test.n"]  # per-image predictions stay those of the track-grouped test split
    summary = json.loads((proj.root / "metrics" / "data.json").read_text())
    assert summary["splits"][OFFICIAL_TEST_SPLIT]["images"] == len(CLASSES) * TEST_PER_CLASS
