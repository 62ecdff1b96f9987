"""Training: the one loop for every backbone and strategy, and the train stage around it.

- ``loop``: ``fit`` (set-up, ``train_one_epoch``, early stopping, best/last
  checkpoints, exact resume) and the feeders (augmented images, or cached
  frozen-backbone features for ``linear``);
- ``stage``: the train stage's work: the model from the config, the resume
  fingerprint, the MLflow run, calibration, ``metrics/train.json``;
- ``distributed``: torchrun + DDP (process group, the rank helpers ``loop`` calls).

Importing this package imports nothing.
"""
