"""Lineage and promotion end to end: real `dvc exp run`s register versions, then trace, restore, promote.

One project (the tiny pipeline with enough test images for a verdict, as the review's
end-to-end test: efficientnet_lite0 ImageNet, the linear strategy, 20 tracks per class)
with a local DVC remote and a sqlite MLflow store. Three DVC experiments, each pushed:

- ``mediocre``: 2 epochs, registered as version 1;
- ``worse``: 1 epoch at a learning rate too small to learn anything, version 2;
- ``good``: 10 epochs, version 3.

The guards whose intervals are too wide on ~20 held-out test images (held-out
rejection, AUROC, ECE) are off here; accuracy and the per-class guard decide.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import yaml
from mlflow.tracking import MlflowClient
from serving.mlflow_serve import post_json, serve_model
from serving.test_mlflow_model import b64, split_threshold

from signflow.catalog import UNKNOWN_NAME
from signflow.data.arrays import load_split
from signflow.lineage.promotion import CHAMPION, PREVIOUS
from signflow.provenance import TAG_COMMIT, TAG_DATASET, TAG_EXPERIMENT
from signflow.serving.mlflow_model import IMAGE_COLUMN
from signflow.serving.predictor import load_predictor

from project_copy import Project
from tiny_project import tiny_copy

pytestmark = pytest.mark.slow

NAME = "signflow"
# Every key each time: `dvc exp run -S` changes the workspace's params, which the next experiment starts from.
EXPERIMENTS = {
    "mediocre": ("train.epochs=2", "train.lr=0.003"),
    "worse": ("train.epochs=1", "train.lr=1e-6"),
    "good": ("train.epochs=10", "train.lr=0.003"),
}
VERSIONS = {name: str(number) for number, name in enumerate(EXPERIMENTS, start=1)}


@pytest.fixture(scope="module")
def project(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Project:
    base = tmp_path_factory.mktemp("lineage")
    proj = tiny_copy(repo_root, base, backbone="efficientnet_lite0", weights="imagenet")
    params = proj.params()
    params["data"]["synthetic"].update(tracks_per_class=20, frames_per_track=4)
    params["split"].update(train=0.5, val=0.25, test=0.25)
    params["unknown"].update(max_images=40, heldout_max_images=40)
    params["train"].update(lr=0.003)
    params["review"]["guards"].update(heldout_rejected=None, auroc=None, max_ece=None)
    proj.set_params(params)
    proj.dvc("remote", "add", "-d", "local", str(base / "dvc-remote"))
    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-q", "-m", "tiny lineage project")
    for name, overrides in EXPERIMENTS.items():
        proj.dvc("exp", "run", "-n", name, *(arg for value in overrides for arg in ("-S", value)))
        proj.dvc("push")
    return proj


def client(proj: Project) -> MlflowClient:
    return MlflowClient(tracking_uri=proj.env["MLFLOW_TRACKING_URI"])


def dataset_hash(proj: Project) -> str:
    lock = yaml.safe_load((proj.root / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["add_unknown"]["outs"] if o["path"] == "data/dataset")


def signflow(proj: Project, *args: str) -> tuple[int, str, str]:
    proc = proj.run("signflow", *args, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_each_experiment_registers_a_version_whose_run_names_its_data(project: Project) -> None:
    mlflow = client(project)
    head = project.run("git", "rev-parse", "HEAD").stdout.strip()
    digest = dataset_hash(project)
    for name, number in VERSIONS.items():
        version = mlflow.get_model_version(NAME, number)
        assert version.tags[TAG_EXPERIMENT] == name and version.tags[TAG_COMMIT] == head
        assert version.tags[TAG_DATASET] == digest
        run = mlflow.get_run(version.run_id)
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"data/dataset:train", "data/dataset:val", "data/dataset:test"}
        assert {i.dataset.digest for i in inputs.values()} == {digest}  # dvc.lock's hash of data/dataset
        contexts = {t.value for i in inputs.values() for t in i.tags if t.key == "mlflow.data.context"}
        assert contexts == {"train", "validation", "test"}
        assert str(project.root.parent / "dvc-remote") in inputs["data/dataset:test"].dataset.source


def test_trace_prints_experiment_commit_data_and_params(project: Project) -> None:
    code, out, err = signflow(project, "trace", f"models:/{NAME}/{VERSIONS['good']}", "--base", "HEAD")
    assert code == 0, err
    head = project.run("git", "rev-parse", "HEAD").stdout.strip()
    assert f"experiment:   good (baseline {head})" in out and f"commit:       {head}" in out
    assert dataset_hash(project) in out
    assert "train.epochs: 1 -> 10" in out  # the committed params have 1 epoch (tiny_copy)
    assert "test.accuracy:" in out


def test_restore_rebuilds_the_registered_onnx_byte_for_byte(project: Project, tmp_path: Path) -> None:
    target = tmp_path / "restored"
    code, out, err = signflow(project, "trace", f"models:/{NAME}/{VERSIONS['mediocre']}", "--restore", str(target))
    assert code == 0, err
    assert "matches the registry byte for byte" in out and "model.onnx" in out
    params = yaml.safe_load((target / "params.yaml").read_text())
    assert params["train"]["epochs"] == 2  # the experiment, not the workspace's last one
    assert (target / "models" / "onnx" / "model.onnx").stat().st_size > 0


def test_promote_refuses_the_worse_accepts_the_better_forces_and_rolls_back(project: Project) -> None:
    mlflow = client(project)

    def aliases() -> dict[str, str]:
        return {k: str(v) for k, v in mlflow.get_registered_model(NAME).aliases.items()}

    assert signflow(project, "promote", VERSIONS["mediocre"])[0] == 0
    code, out, err = signflow(project, "promote", VERSIONS["worse"])
    assert code == 1 and "refused" in out and "**Gate: failed**" in out and "test.accuracy" in err
    assert aliases() == {CHAMPION: VERSIONS["mediocre"]}
    code, out, err = signflow(project, "promote", VERSIONS["good"])
    assert code == 0, err
    assert aliases() == {CHAMPION: VERSIONS["good"], PREVIOUS: VERSIONS["mediocre"]}
    assert signflow(project, "promote", VERSIONS["worse"], "--force")[0] == 2  # no reason given
    code, out, err = signflow(project, "promote", VERSIONS["worse"], "--force", "--reason", "demo needs it")
    assert code == 0, err
    records = [json.loads(v) for k, v in mlflow.get_model_version(NAME, VERSIONS["worse"]).tags.items()
               if k.startswith("promotion.")]
    assert {r["decision"] for r in records} == {"refused", "promoted with --force"}
    assert any(r["reason"] == "demo needs it" for r in records)
    code, out, err = signflow(project, "promote", PREVIOUS)  # roll back: good is better than worse
    assert code == 0, err
    assert aliases() == {CHAMPION: VERSIONS["good"], PREVIOUS: VERSIONS["worse"]}
    code, out, err = signflow(project, "trace", f"models:/{NAME}@{CHAMPION}", "--base", "HEAD")
    assert "promotion record:" in out and "(aliases: champion)" in out


def test_the_served_champion_answers_two_base64_jpegs_one_unknown_under_the_requested_threshold(
    project: Project, tmp_path: Path
) -> None:
    assert str(client(project).get_model_version_by_alias(NAME, CHAMPION).version) == VERSIONS["good"]
    _, images = load_split(project.root / "data" / "dataset", "test")
    jpegs = []
    for index, image in enumerate(images[:8]):
        jpegs.append(tmp_path / f"sign-{index}.jpg")
        cv2.imwrite(str(jpegs[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    # The workspace holds `good`'s outputs (the last experiment run): the champion's own files.
    records = load_predictor(project.root / "models" / "onnx" / "model.onnx", threshold=0.0).predict(jpegs)
    threshold, low, high = split_threshold(records)
    with serve_model(f"models:/{NAME}@{CHAMPION}", project.root, project.env) as url:
        status, answer = post_json(f"{url}/invocations", {
            "dataframe_split": {"columns": [IMAGE_COLUMN], "data": [[b64(jpegs[high])], [b64(jpegs[low])]]},
            "params": {"threshold": threshold}})
    assert status == 200, answer
    known, rejected = answer["predictions"]
    assert known["prediction"] == records[high]["prediction"] != UNKNOWN_NAME
    assert rejected["prediction"] == UNKNOWN_NAME and rejected["top_k"][0][0] == records[low]["top_k"][0][0]
