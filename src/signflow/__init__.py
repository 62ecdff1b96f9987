"""signflow: a reproducible transfer-learning pipeline for traffic-sign classification.

Where things live (each package's ``__init__`` maps its modules):

- the import-light base, here: ``catalog`` (names of classes, backbones,
  strategies), ``config`` (typed, validated params.yaml), ``paths``, ``logs``,
  ``files`` (atomic writes), ``parallel``, ``runtime`` (seeds, threads,
  devices), ``tracking`` (MLflow runs), ``processes`` (dvc/git subprocesses),
  ``markdown`` (tables), ``codegraph`` (stage deps), ``cli`` (the command registry);
- ``data/``: download, split, add_unknown: from archives to decoded arrays;
- ``model/``: backbones, strategies, transforms, checkpoints, calibration, inference;
- ``training/``: the loop, the train stage, distributed training;
- ``evaluation/``: metrics, everything open-set, the evaluate and report stages;
- ``serving/``: ``Predictor``, batch prediction, ONNX export;
- ``review/``: the pull-request report; ``sweep/``: experiment grids on the DVC queue;
- ``commands/``: one module per ``signflow`` subcommand.

Layers: commands over serving, training, evaluation, review and sweep; those
over model; model over data; everything over the base. No import runs back up.
"""

import importlib

__version__ = "0.1.0"

# Public names imported on first use, so `import signflow` (run by every stage and
# `signflow --help`) stays free of numpy, OpenCV and onnxruntime. importlib, not an
# import statement: signflow.codegraph follows import statements, even inside
# functions, and would count the prediction modules as deps of every DVC stage.
_LAZY = {"load_predictor": "signflow.serving.predictor"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
