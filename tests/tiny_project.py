"""The tiny pipeline the end-to-end tests run: the real stages on a few dozen 32 px synthetic images.

Shared by every test that needs a trained project (DVC remotes, the MLflow
server, queued experiments, sweeps): seconds per `dvc repro`, same code paths.
"""

from __future__ import annotations

from typing import Any

IMAGE_SIZE = 32


def shrink_params(params: dict[str, Any], *, strategy: str = "linear", epochs: int = 1) -> dict[str, Any]:
    """``params`` (the real params.yaml) made tiny: 3 tracks x 3 frames per class, simple_cnn, no weights."""
    params["strategy"] = strategy
    params["data"].update(source="synthetic", image_size=IMAGE_SIZE, decode_workers=1)
    params["data"]["synthetic"].update(tracks_per_class=3, frames_per_track=3)
    # With 3 tracks per class, these fractions give each split one whole track.
    params["split"].update(train=0.4, val=0.3, test=0.3)
    params["unknown"].update(max_images=12, heldout_max_images=6)
    params["model"].update(backbone="simple_cnn", weights="none")
    params["train"].update(epochs=epochs, batch_size=16, threads=1, device="cpu", feature_views=1)
    params["evaluate"].update(batch_size=16)
    return params
