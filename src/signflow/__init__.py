"""signflow: a reproducible transfer-learning pipeline for traffic-sign classification."""

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
