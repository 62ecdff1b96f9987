"""End to end: the tiny project's `dvc repro` exported and registered the model; here it is through MLflow.

A real sqlite tracking store, the real ``models:/`` URI and a real
``mlflow models serve`` process on loopback: each must give the same classes
as ``signflow predict`` on the same image files.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from signflow.data.arrays import load_split

from .mlflow_serve import serve_model, tracking_at
from project_copy import Project
from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

REGISTRY_NAME = "signflow"
N_IMAGES = 6
EXPERIMENT_NAME = "exp-registry"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Project:
    # Committed before its `dvc repro`: the registered version is tagged with HEAD. The copy keeps the store.
    return reproduced_copy(reproduced, tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def images(project: Project, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    """Test-split images as PNG files (lossless: the files decode to exactly these arrays)."""
    _, arrays = load_split(project.root / "data" / "dataset", "test")
    arrays = np.asarray(arrays[:N_IMAGES])
    folder = tmp_path_factory.mktemp("images")
    files = []
    for index, image in enumerate(arrays):
        path = folder / f"sign {index}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        files.append(path)
    return files, arrays


def _predicted_by_cli(project: Project, files: list[Path], model: str) -> list[str]:
    out = project.run("python", "-m", "signflow", "predict", "--json", "--threshold", "0", "--model", model,
                      *map(str, files))
    return [record["prediction"] for record in json.loads(out.stdout)]


def _class_names(project: Project) -> list[str]:
    return json.loads((project.root / "models" / "onnx" / "model.json").read_text())["class_names"]


def test_export_stage_verifies_and_registers_the_model(project: Project) -> None:
    metrics = json.loads((project.root / "metrics" / "export.json").read_text())
    assert metrics["onnx.mismatched_predictions"] == 0 and metrics["onnx.max_prob_diff"] < 1e-4
    assert {p.name for p in (project.root / "models" / "onnx").iterdir()} == {
        "model.onnx", "model.json", "model.int8.onnx", "model.int8.json"}
    timings = json.loads((project.root / "metrics" / "timings" / "export.json").read_text())
    assert timings["onnx.images_per_second"] > 0
    client = MlflowClient(tracking_uri=project.env["MLFLOW_TRACKING_URI"])
    version = client.get_model_version(REGISTRY_NAME, "1")
    head = project.run("git", "rev-parse", "HEAD").stdout.strip()
    assert version.tags["dvc_experiment"] == "workspace" and version.tags["git_commit"] == head
    assert version.description.startswith("# Model card")  # the card's headline; the whole card is with the run
    run_id = json.loads((project.root / "models" / "run.json").read_text())["run_id"]
    assert version.run_id == run_id  # the train stage's run: params, metrics and model in one place
    card = client.download_artifacts(run_id, "model_card.md", str(project.root.parent))
    assert Path(card).read_text() == (project.root / "reports" / "model_card.md").read_text()


def test_registry_model_predicts_like_signflow_predict(project: Project, images: tuple[list[Path], np.ndarray]) -> None:
    files, arrays = images
    with tracking_at(project.env["MLFLOW_TRACKING_URI"]):
        model = mlflow.pyfunc.load_model(f"models:/{REGISTRY_NAME}/1")
        answer = model.predict(pd.DataFrame({"image": list(arrays)}), params={"threshold": 0.0})
    from_registry = list(answer["prediction"])
    assert from_registry == _predicted_by_cli(project, files, "models/best.pt")
    assert from_registry == _predicted_by_cli(project, files, "models/onnx/model.onnx")




@pytest.fixture
def served_model(project: Project) -> Iterator[str]:
    """``mlflow models serve`` of version 1 on a free loopback port; its base URL."""
    with serve_model(f"models:/{REGISTRY_NAME}/1", project.root, project.env) as url:
        yield url


def test_served_model_answers_a_post_of_two_images_with_the_same_classes(
    project: Project, images: tuple[list[Path], np.ndarray], served_model: str
) -> None:
    files, arrays = images
    body = json.dumps({"inputs": arrays[:2].tolist()}).encode()
    request = urllib.request.Request(f"{served_model}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    rows = answer["predictions"]
    assert all(set(row["probabilities"]) == set(_class_names(project)) for row in rows)
    assert [max(row["probabilities"], key=row["probabilities"].get) for row in rows] == _predicted_by_cli(
        project, files[:2], "models/best.pt")


def test_dvc_experiment_registers_a_new_version_tagged_with_its_name(project: Project) -> None:
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "with dvc.lock")
    run = project.dvc("exp", "run", "-n", EXPERIMENT_NAME, "-S", "export.calibration_images=17", "export")
    assert "Running stage 'export'" in run.stdout and "Running stage 'train'" not in run.stdout
    client = MlflowClient(tracking_uri=project.env["MLFLOW_TRACKING_URI"])
    latest = max(client.search_model_versions(f"name='{REGISTRY_NAME}'"), key=lambda v: int(v.version))
    assert int(latest.version) == 2 and latest.tags["dvc_experiment"] == EXPERIMENT_NAME
