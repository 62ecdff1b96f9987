"""What the model card is made of, read once from the files the pipeline already wrote.

The export stage calls :func:`read_card_inputs` with the paths of the sidecar
and ``metrics/`` files (:class:`CardPaths`); a required file that is missing is
a :class:`~signflow.data.manifest.DataError` naming the file and the stage that
writes it, an optional one is ``None`` in :class:`CardInputs`. Nothing is
recomputed from images; ``signflow.serving.model_card`` renders the result.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signflow.config import Config
from signflow.data.manifest import ROLE_HELDOUT, DataError, read_manifest
from signflow.data.summary import SIDE_BIN_EDGES, parse_track_table, side_bin_label, side_columns
from signflow.files import file_digest

log = logging.getLogger(__name__)

TRAIN_SPLIT, TEST_SPLIT = "train", "test"
THRESHOLD_MATCH = 1e-9  # a sim-to-real result is this model's when it used the sidecar's threshold


def id_order(class_id: str) -> tuple[int, str]:
    """Class ids in numeric order, names after them."""
    return (int(class_id), "") if class_id.isdigit() else (1 << 30, class_id)


@dataclass(frozen=True)
class ClassResult:
    """One output class on the test split: its images and how many the model gave that class (argmax)."""

    name: str
    images: int
    right: int


@dataclass(frozen=True)
class SizeBin:
    """Test images whose shorter side falls in one size bin of ``metrics/data_tracks.csv``."""

    label: str  # "24-31" (px), as signflow.data.summary.side_bin_label shows it
    images: int  # test images of every role
    scored: int | None = None  # closed-set test images in the bin (None: per-image sizes not read)
    right: int | None = None  # of them given the right class (argmax)


@dataclass(frozen=True)
class CardInputs:
    """Everything the card shows, already read: :func:`model_card_markdown` opens no file."""

    sidecar: Mapping[str, Any]  # models/onnx/model.json
    config: Config  # params.yaml
    data_summary: Mapping[str, Any]  # metrics/data.json
    metrics: Mapping[str, Any]  # metrics/evaluate.json
    per_class: tuple[ClassResult, ...]  # in the model's output order
    lineage: Mapping[str, Any]  # git, DVC and data hashes, the registered version (the export stage's)
    trained_class_ids: tuple[str, ...]  # class ids with training images (targets and "unknown" sources)
    data_class_ids: tuple[str, ...]  # class ids with images in any split
    test_sizes: tuple[SizeBin, ...]  # every size bin, smallest first
    smallest_trained: str | None  # the smallest size bin holding a training image
    model_files: Mapping[str, str]  # shipped file name -> sha256
    export_metrics: Mapping[str, Any] | None = None  # metrics/export.json
    sim2real: Mapping[str, Any] | None = None  # benchmarks/sim2real.py's JSON line, for this model


@dataclass(frozen=True)
class CardPaths:
    """Where :func:`read_card_inputs` reads each input (explicit: no layout assumed here); None: not read."""

    sidecar: Path
    data_summary: Path
    data_tracks: Path
    metrics: Path
    per_class: Path
    predictions: Path | None = None  # with test_manifest: accuracy per sign size
    test_manifest: Path | None = None
    export_metrics: Path | None = None
    sim2real: Path | None = None
    model_files: tuple[Path, ...] = ()  # hashed when present (an int8 copy may be refused)


# Which stage writes each required input: what the error tells the user to run.
PRODUCERS = {"sidecar": "export", "data_summary": "add_unknown", "data_tracks": "add_unknown",
             "metrics": "evaluate", "per_class": "evaluate"}


def _required(path: Path, field: str) -> None:
    if not path.is_file():
        raise DataError(f"{path} is missing: the model card needs it (run `dvc repro {PRODUCERS[field]}` first)")


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}): re-run the stage that writes it") \
            from err


def _optional_json(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    return _json(path)


def class_id_key(class_id: str) -> str:
    """A class id as params.yaml writes it: "00012" (a GTSRB folder) -> "12"; a folder name stays."""
    return str(int(class_id)) if class_id.isdigit() else class_id


def per_class_results(per_class: pd.DataFrame, class_names: Sequence[str], origin: Path) -> tuple[ClassResult, ...]:
    """``metrics/per_class.csv`` as counts in the model's output order; DataError when its classes differ."""
    found = [str(name) for name in per_class["class"]]
    if sorted(found) != sorted(class_names):
        raise DataError(f"{origin} lists {found}, the model {list(class_names)}: it is another model's "
                        "(run `dvc repro evaluate`)")
    rows = per_class.set_index(per_class["class"].astype(str))
    # evaluate writes recall to 6 decimals: recall * support rounds back to the exact count below 500,000 images.
    return tuple(ClassResult(name, int(rows.at[name, "support"]),
                             round(float(rows.at[name, "recall"]) * int(rows.at[name, "support"])))
                 for name in class_names)


def _bin_totals(tracks: pd.DataFrame, split: str) -> pd.Series:
    """Images per size-bin column of ``split`` in the track table."""
    return tracks.loc[tracks["split"] == split, side_columns()].astype(np.int64).sum()


def _sides_and_correct(predictions: pd.DataFrame, manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """Per closed-set test image (as test.accuracy counts): its shorter side and whether the argmax is right.

    None, with a warning, when predictions.csv and the manifest do not list the same images (a stale file).
    """
    if predictions["path"].duplicated().any() or set(predictions["path"]) != set(manifest["path"]):
        log.warning("predictions.csv and the test manifest list different images: no accuracy per sign size")
        return None
    joined = predictions.merge(manifest[["path", "width", "height"]], on="path")
    joined = joined[joined["role"] != ROLE_HELDOUT]
    sides = np.minimum(joined["width"].to_numpy(np.int64), joined["height"].to_numpy(np.int64))
    return sides, (joined["prediction"] == joined["label"]).to_numpy()


def size_results(tracks: pd.DataFrame, predictions: pd.DataFrame | None,
                 manifest: pd.DataFrame | None) -> tuple[SizeBin, ...]:
    """Test images per size bin; with predictions and the test manifest, closed-set accuracy per bin too."""
    totals = _bin_totals(tracks, TEST_SPLIT)
    per_image = None if predictions is None or manifest is None else _sides_and_correct(predictions, manifest)
    scored = right = None
    if per_image is not None:
        sides, correct = per_image
        index = np.searchsorted(SIDE_BIN_EDGES, sides, side="right") - 1  # signflow.data.summary's bins
        scored = np.bincount(index, minlength=len(SIDE_BIN_EDGES))
        right = np.bincount(index, weights=correct, minlength=len(SIDE_BIN_EDGES)).astype(np.int64)
    return tuple(SizeBin(side_bin_label(column), int(totals[column]),
                         None if scored is None else int(scored[k]), None if right is None else int(right[k]))
                 for k, column in enumerate(side_columns()))


def _smallest_bin(tracks: pd.DataFrame, split: str) -> str | None:
    totals = _bin_totals(tracks, split)
    return next((side_bin_label(column) for column in side_columns() if totals[column] > 0), None)


def _sim2real_for(result: Mapping[str, Any] | None, threshold: float, origin: Path | None) -> Mapping[str, Any] | None:
    """``result`` when it judged this model (its threshold is the sidecar's), else None with a warning."""
    if result is None:
        return None
    measured = result.get("threshold")
    if measured is None or not math.isclose(float(measured), threshold, rel_tol=0.0, abs_tol=THRESHOLD_MATCH):
        log.warning("%s is for threshold %s, this model's is %s: another model's result, left out of the card",
                    origin, measured, threshold)
        return None
    return result


def _per_image_sizes(paths: CardPaths) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """predictions.csv and the test manifest when both exist (accuracy per sign size), else (None, None)."""
    if not all(p is not None and p.is_file() for p in (paths.predictions, paths.test_manifest)):
        return None, None
    return (pd.read_csv(paths.predictions, dtype={"path": str, "label": str, "prediction": str}),
            read_manifest(paths.test_manifest))


def read_card_inputs(paths: CardPaths, config: Config, lineage: Mapping[str, Any]) -> CardInputs:
    """Read what the card shows; DataError naming a required file that is missing or unreadable.

    Required: the sidecar, metrics/data.json, data_tracks.csv, evaluate.json and
    per_class.csv. Optional (a line says what is missing): the export metrics,
    predictions with the test manifest (accuracy per sign size), a sim-to-real result.
    """
    for field in PRODUCERS:
        _required(getattr(paths, field), field)
    sidecar = _json(paths.sidecar)
    tracks = parse_track_table(paths.data_tracks.read_text())
    trained = tracks.loc[tracks["split"] == TRAIN_SPLIT, "class_id"]
    return CardInputs(
        sidecar=sidecar,
        config=config,
        data_summary=_json(paths.data_summary),
        metrics=_json(paths.metrics),
        per_class=per_class_results(pd.read_csv(paths.per_class), sidecar["class_names"], paths.per_class),
        lineage=lineage,
        trained_class_ids=tuple(sorted({class_id_key(c) for c in trained}, key=id_order)),
        data_class_ids=tuple(sorted({class_id_key(c) for c in tracks["class_id"]}, key=id_order)),
        test_sizes=size_results(tracks, *_per_image_sizes(paths)),
        smallest_trained=_smallest_bin(tracks, TRAIN_SPLIT),
        model_files={p.name: file_digest(p, "sha256") for p in paths.model_files if p.is_file()},
        export_metrics=_optional_json(paths.export_metrics),
        sim2real=_sim2real_for(_optional_json(paths.sim2real), float(sidecar["threshold"]), paths.sim2real),
    )


