"""The network and what travels with it: everything training, evaluation and serving share.

- ``backbones``: the backbone registry (timm / torchvision / a small CNN), each
  built with a fresh head; ``create_model(name)`` fails with the valid names;
- ``strategies``: what each ``strategy`` freezes and trains, its parameter
  groups and learning rates (names and flags: ``signflow.catalog.STRATEGIES``);
- ``transforms``: augmentation and normalisation, built in one place;
- ``checkpoint``: the one save/load pair (weights only, no pickled code);
- ``calibration``: temperature scaling fitted on validation;
- ``inference``: load a checkpoint and run it on decoded arrays.

Importing this package imports nothing; torch comes with its modules.
"""
