"""Checkpoints that are old, of another format, of other data or that do not fit their backbone.

Pickled code and truncated files are already refused by tests/training/test_loop.py and tests/commands/test_predict.py
(see the README's Reliability table); here: what the stages must refuse or still accept.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from signflow.config import Config, from_mapping
from signflow.model.backbones import FeatureSpec, create_model
from signflow.model.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from signflow.model.inference import load_model, predict_logits

from .test_params import (
    assert_one_line_error,
    finish,
    real_params,
    snapshot,
    start_stage,
    tiny_project_dir,
)
from tiny_project import IMAGE_SIZE, shrink_params

OTHER_CLASSES = ["priority_road", "give_way", "keep_right", "no_entry", "unknown"]
OTHER_SIZE = 48
# Keys added to checkpoints after the first ones were written; an old file has none of them.
LATER_KEYS = ("temperature", "features", "num_classes", "dropout")


@pytest.fixture(scope="module")
def cfg() -> Config:
    """The tiny pipeline's config (as tests/tiny_project.py runs it): 32 px, simple_cnn, unknown on."""
    return from_mapping(Config, shrink_params(real_params()))


def _state(cfg: Config, class_names: list[str] | None = None, image_size: int | None = None) -> dict[str, Any]:
    """A checkpoint's content as the train stage writes it (plain features: loadable without ``features``)."""
    class_names = list(cfg.class_names if class_names is None else class_names)
    torch.manual_seed(0)
    model = create_model("simple_cnn", len(class_names), "none", 0.0, FeatureSpec())
    return {
        "model": model.state_dict(), "epoch": 0, "config": json.loads(json.dumps(cfg.to_dict())),
        "class_names": class_names, "num_classes": len(class_names), "backbone": "simple_cnn", "dropout": 0.0,
        "features": dataclasses.asdict(FeatureSpec()),
        "normalization": {"mean": list(model.normalization.mean), "std": list(model.normalization.std)},
        "image_size": cfg.data.image_size if image_size is None else image_size, "temperature": 1.7,
    }


def _images(n: int = 6, size: int = IMAGE_SIZE) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------ old checkpoints


# temperature alone: tests/model/test_calibration.py::
# test_calibrate_checkpoint_stores_the_temperature_that_predict_applies
@pytest.mark.parametrize("missing", [k for k in LATER_KEYS if k != "temperature"] + ["all"])
def test_checkpoint_without_later_keys_loads_with_defaults(tmp_path: Path, cfg: Config, missing: str) -> None:
    state = _state(cfg)
    save_checkpoint(tmp_path / "new.pt", state)
    dropped = LATER_KEYS if missing == "all" else (missing,)
    save_checkpoint(tmp_path / "old.pt", {k: v for k, v in state.items() if k not in dropped})

    new, old = load_model(tmp_path / "new.pt", expect=cfg), load_model(tmp_path / "old.pt", expect=cfg)
    assert old.temperature == (1.0 if "temperature" in dropped else 1.7)  # uncalibrated: raw probabilities
    assert old.class_names == cfg.class_names and old.image_size == cfg.data.image_size
    np.testing.assert_array_equal(predict_logits(old, _images()), predict_logits(new, _images()))


@pytest.mark.parametrize("version", [FORMAT_VERSION - 1, FORMAT_VERSION + 1, "2.0"])
def test_checkpoint_of_another_format_is_refused_saying_how_to_retrain(tmp_path: Path, cfg: Config, version) -> None:
    path = tmp_path / "best.pt"
    torch.save({**_state(cfg), "format": version}, path)  # save_checkpoint would stamp today's format
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and f"format {version!r}" in message and f"reads format {FORMAT_VERSION}" in message
    assert "dvc repro train" in message


def test_weights_that_do_not_fit_their_backbone_are_a_checkpoint_error(tmp_path: Path, cfg: Config) -> None:
    """Before: load_state_dict's multi-line RuntimeError, a traceback in evaluate/report/export."""
    state = _state(cfg)
    state["num_classes"] += 1  # the head in the file has one row fewer than the model it asks for
    save_checkpoint(tmp_path / "best.pt", state)
    with pytest.raises(CheckpointError, match=r"do not fit a simple_cnn with 6 classes.*dvc repro train"):
        load_model(tmp_path / "best.pt")
    assert load_checkpoint(tmp_path / "best.pt")["num_classes"] == 6  # the safe load itself is fine


# ------------------------------------------------------------------ a checkpoint of other data


@pytest.mark.parametrize(
    ("classes", "size", "needles"),
    [
        (OTHER_CLASSES, None, ["its classes", "keep_right", "'stop'"]),
        (None, OTHER_SIZE, [f"its image size {OTHER_SIZE} px is not data.image_size={IMAGE_SIZE}"]),
        (OTHER_CLASSES[:-1], OTHER_SIZE, ["its classes", "its image size"]),  # trained with unknown.enabled off
    ],
    ids=["class_list", "image_size", "both"],
)
def test_checkpoint_of_other_data_is_refused_naming_what_differs(
    tmp_path: Path, cfg: Config, classes: list[str] | None, size: int | None, needles: list[str]
) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, _state(cfg, classes, size))
    load_model(path)  # fine on its own (predict uses it so): only against this dataset is it wrong
    with pytest.raises(CheckpointError) as info:
        load_model(path, expect=cfg)
    message = str(info.value)
    for needle in [str(path), "does not fit this dataset", "dvc repro train", *needles]:
        assert needle in message, message


def test_checkpoint_of_this_data_passes(tmp_path: Path, cfg: Config) -> None:
    save_checkpoint(tmp_path / "best.pt", _state(cfg))
    assert load_model(tmp_path / "best.pt", expect=cfg).class_names == cfg.class_names


@pytest.mark.parametrize(
    "stage",
    ["evaluate", pytest.param("report", marks=pytest.mark.slow), pytest.param("export", marks=pytest.mark.slow)],
)
def test_stage_refuses_a_checkpoint_of_other_data_in_one_line(tmp_path: Path, cfg: Config, stage: str) -> None:
    """models/best.pt trained on other classes at another size: one line, nothing written, no traceback."""
    root = tiny_project_dir(tmp_path, shrink_params(real_params()), stage)
    best = root / "models" / "best.pt"
    best.parent.mkdir(exist_ok=True)
    save_checkpoint(best, _state(cfg, OTHER_CLASSES, OTHER_SIZE))
    before = snapshot(tmp_path)
    assert_one_line_error(*finish(start_stage(root, stage)), "models/best.pt does not fit this dataset",
                          "keep_right", f"data.image_size={IMAGE_SIZE}", "dvc repro train")
    assert snapshot(tmp_path) == before
