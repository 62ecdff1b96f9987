"""The tiny pipeline the end-to-end tests run: the real stages on a few dozen 32 px synthetic images.

Shared by every test that needs a trained project (DVC remotes, the MLflow
server, queued experiments, sweeps): seconds per `dvc repro`, same code paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from project_copy import Project, copy_project

IMAGE_SIZE = 32


def shrink_params(
    params: dict[str, Any], *, strategy: str = "linear", epochs: int = 1, backbone: str = "simple_cnn",
    weights: str = "none",
) -> dict[str, Any]:
    """``params`` (the real params.yaml) made tiny: 3 tracks x 3 frames per class, simple_cnn, no weights."""
    params["strategy"] = strategy
    params["data"].update(source="synthetic", image_size=IMAGE_SIZE, decode_workers=1)
    params["data"]["synthetic"].update(tracks_per_class=3, frames_per_track=3)
    # With 3 tracks per class, these fractions give each split one whole track.
    params["split"].update(train=0.4, val=0.3, test=0.3)
    params["unknown"].update(max_images=12, heldout_max_images=6)
    params["model"].update(backbone=backbone, weights=weights)
    params["model"]["linear"]["input_size"] = 0  # no upsampling: seconds matter here; pooled stages stay on
    params["train"].update(epochs=epochs, batch_size=16, threads=1, device="cpu", feature_views=1)
    params["evaluate"].update(batch_size=16)
    # About 12 test images from a one-epoch model: one int8 flip is 8 points, so the int8 gate
    # (tests/serving/test_export.py) is off here; the ONNX-vs-PyTorch check stays strict.
    params["export"].update(calibration_images=16, benchmark_images=8, max_int8_drop=100.0)
    return params


def tiny_copy(
    repo_root: Path, base: Path, *, tracking_uri: str | None = None, drop_env: Iterable[str] = (), **shrink: Any
) -> Project:
    """A project copy under ``base`` with tiny params and its own MLflow store (sqlite in ``base``)."""
    uri = tracking_uri or f"sqlite:///{base / 'mlflow.db'}"
    proj = copy_project(repo_root, base, extra_env={"MLFLOW_TRACKING_URI": uri}, drop_env=["DVC_EXP_NAME", *drop_env])
    proj.set_params(shrink_params(proj.params(), **shrink))
    return proj
