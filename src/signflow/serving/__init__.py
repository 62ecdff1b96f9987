"""Prediction for users, and the model that ships.

- ``predictor``: ``Predictor`` and ``load_predictor`` (a .pt checkpoint in
  PyTorch, or an exported .onnx model in onnxruntime without torch);
- ``batch``: decode and classify many files or arrays, a block at a time;
- ``export``: the export stage's work: ONNX verified against PyTorch, int8;
- ``mlflow_model``: the MLflow model the export stage registers, answering what
  ``signflow predict --json`` answers (threshold and top_k as request params);
- ``model_card``: ``reports/model_card.md``, written and logged with every export, from
  ``card_inputs`` (the sidecar and ``metrics/`` files it is made of, read once).

``predictor`` and ``batch`` import nothing heavy (no torch, pandas or yaml):
a ``signflow[predict]`` install runs them. Importing this package imports nothing.
"""
