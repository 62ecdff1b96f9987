"""End to end: `dvc repro export` on the tiny project when the int8 copy loses too much.

An optional artifact never fails the pipeline: with ``export.max_int8_drop`` at
its lowest (int8 would have to gain more than 100 points) the int8 copy is
always refused, and the stage must still finish, ship and register the verified
float model, record the refusal with its figures in one warning line and in
``metrics/export.json``, and leave ``dvc status`` clean. The project is a copy of
the reproduced tiny project (the ``reproduced`` fixture): only ``export`` re-runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from serving.mlflow_serve import tracking_at

from signflow.data.arrays import load_split
from signflow.serving.export import INT8_FORMAT
from signflow.serving.predictor import load_predictor

from project_copy import Project, stages_run
from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

REFUSE_ALWAYS = -100.0  # the lowest export.max_int8_drop: int8 would have to gain more than 100 points
REGISTRY_NAME = "signflow"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Project:
    proj = reproduced_copy(reproduced, tmp_path_factory.mktemp("export-refused"))
    params = proj.params()
    params["export"]["max_int8_drop"] = REFUSE_ALWAYS
    proj.set_params(params)
    return proj


@pytest.fixture(scope="module")
def repro(project: Project) -> subprocess.CompletedProcess[str]:
    return project.dvc("repro", "export")  # fails the test unless it exits 0


def test_refused_int8_ships_the_float_model_and_records_the_refusal(
    project: Project, repro: subprocess.CompletedProcess[str],
) -> None:
    ran = [name for name in stages_run(repro.stdout) if name not in project.always_run()]
    assert ran == ["export"], repro.stdout  # the one stage whose params changed
    warnings = [line for line in (repro.stdout + repro.stderr).splitlines() if "int8 refused" in line]
    assert len(warnings) == 1 and f"export.max_int8_drop = {REFUSE_ALWAYS:g}" in warnings[0], warnings
    root = project.root
    assert {p.name for p in (root / "models" / "onnx").iterdir()} == {"model.onnx", "model.json"}
    metrics = json.loads((root / "metrics" / "export.json").read_text())
    assert metrics["int8.refused"] == 1 and metrics["int8.format"] == INT8_FORMAT
    assert {"int8.test_accuracy", "int8.accuracy_change_points", "int8.size_mb"} <= set(metrics)
    assert metrics["onnx.mismatched_predictions"] == 0  # the float model was verified as always
    assert metrics["machine.cpu"] and metrics["machine.onnxruntime"]
    timings = json.loads((root / "metrics" / "timings" / "export.json").read_text())
    assert "int8.images_per_second" not in timings
    assert project.status("export") == {}  # the refusal is a result, not a stale stage


def test_consumers_use_the_float_model(
    project: Project, repro: subprocess.CompletedProcess[str], tmp_path: Path,
) -> None:
    _, arrays = load_split(project.root / "data" / "dataset", "test")
    images = np.asarray(arrays[:2])
    files = []
    for index, image in enumerate(images):  # PNG: lossless, the files decode to exactly these arrays
        files.append(tmp_path / f"{index}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    expected = load_predictor(project.root / "models" / "onnx" / "model.onnx").predict_images(images)
    # signflow predict --backend onnx: its default model is the float one.
    out = project.run("python", "-m", "signflow", "predict", "--backend", "onnx", "--json", "--threshold", "0",
                      *map(str, files))
    names = json.loads((project.root / "models" / "onnx" / "model.json").read_text())["class_names"]
    assert [r["prediction"] for r in json.loads(out.stdout)] == [names[i] for i in expected.argmax(1)]
    # The registry: the build registered version 1, this run version 2: the float model.
    uri = project.env["MLFLOW_TRACKING_URI"]
    versions = MlflowClient(tracking_uri=uri).search_model_versions(f"name = '{REGISTRY_NAME}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    with tracking_at(uri):
        model = mlflow.pyfunc.load_model(f"models:/{REGISTRY_NAME}/2")
        rows = model.predict(pd.DataFrame({"image": list(images)}), params={"threshold": 0.0})
    registered = [[row[name] for name in names] for row in rows["probabilities"]]
    np.testing.assert_allclose(np.asarray(registered), expected, atol=1e-6)
