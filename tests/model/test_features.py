"""Pooled frozen-backbone features of decoded arrays: the model's own forward_features, batched and row-picked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from signflow.model.backbones import FeatureSpec, create_model
from signflow.model.features import pooled_features
from signflow.model.transforms import eval_transform


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)


def test_features_equal_forward_features_in_batches_and_rows(images: np.ndarray) -> None:
    torch.manual_seed(0)
    model = create_model("simple_cnn", 3, "none", features=FeatureSpec(pooled_blocks=1))
    model.train()  # pooled_features must switch to eval: batch-norm statistics, not the batch's
    features = pooled_features(model, images, batch_size=3, channels_last=False)
    with torch.inference_mode():
        expected = model.eval().forward_features(eval_transform(torch.from_numpy(images), model.normalization))
    assert features.shape == (7, model.num_features) and features.dtype == np.float32
    assert np.allclose(features, expected.numpy(), atol=1e-5)
    rows = np.array([5, 0, 3])
    assert np.allclose(pooled_features(model, images, 2, rows, channels_last=False), features[rows], atol=1e-5)
    assert np.allclose(pooled_features(model, images, 4, channels_last=True), features, atol=1e-4)
    assert pooled_features(model, images, 4, np.array([], dtype=np.int64)).shape == (0, model.num_features)


def test_bad_inputs_fail(images: np.ndarray) -> None:
    model = create_model("simple_cnn", 3, "none")
    with pytest.raises(ValueError, match="expected"):
        pooled_features(model, images[..., 0], 4)
    with pytest.raises(ValueError, match="batch_size"):
        pooled_features(model, images, 0)
