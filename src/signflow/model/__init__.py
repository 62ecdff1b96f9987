"""signflow.model: the network: backbones, strategies, transforms, checkpoints, calibration, inference."""
