"""The lineage pieces on small real inputs: dvc.lock and DVC config files, an MLflow store, folders of files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from signflow.lineage.refs import ModelReferenceError, resolve
from signflow.lineage.restore import differences
from signflow.lineage.trace import changed_params, promotion_lines, source_uri
from signflow.provenance import (
    TAG_COMMIT,
    TAG_DATASET,
    TAG_DIRTY,
    TAG_EXPERIMENT,
    collect_lineage,
    split_files,
    storage_location,
)

DIGEST = "6cd24da272f2e6744ba826fe7c829b5d.dir"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with a DVC folder, a dvc.lock naming data/dataset, and the folder's listing in the cache."""
    git(tmp_path, "init", "-q")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("")
    lock = {"schema": "2.0", "stages": {"add_unknown": {"outs": [{"path": "data/dataset", "md5": DIGEST}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    listing = tmp_path / ".dvc" / "cache" / "files" / "md5" / DIGEST[:2] / DIGEST[2:]
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps([{"md5": "a" * 32, "relpath": "test.csv"}, {"md5": "b" * 32, "relpath": "test.npy"},
                                   {"md5": "c" * 32, "relpath": "train.npy"}]))
    git(tmp_path, "add", "dvc.lock", ".dvc/config")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "lock")
    return tmp_path


def test_lineage_names_commit_experiment_and_each_split_by_its_dvc_hash(repo: Path, monkeypatch) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-oaks")
    lineage = collect_lineage(repo, ("train", "test"))
    assert lineage.tags[TAG_COMMIT] == git(repo, "rev-parse", "HEAD")
    assert lineage.tags[TAG_EXPERIMENT] == "bushy-oaks" and lineage.tags[TAG_DATASET] == DIGEST
    assert lineage.tags[TAG_DIRTY] == "false"
    assert [(i.context, i.digest) for i in lineage.inputs] == [("train", DIGEST), ("test", DIGEST)]
    assert lineage.inputs[1].files == f"test.csv={'a' * 32} test.npy={'b' * 32}"
    assert lineage.inputs[0].source.endswith(f"/.dvc/cache/files/md5/{DIGEST[:2]}/{DIGEST[2:]}")


def test_only_changes_besides_what_dvc_writes_make_the_workspace_dirty(repo: Path) -> None:
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": {
        "cmd": "true", "metrics": [{"metrics/evaluate.json": {"cache": False}}], "outs": ["reports/pipeline"]}}}))
    for path in ("params.yaml", "metrics/evaluate.json", "reports/pipeline/report.md"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("1\n")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "files")
    for path in ("dvc.lock", "metrics/evaluate.json", "reports/pipeline/report.md"):  # what `dvc repro` rewrites
        (repo / path).write_text((repo / path).read_text() + "# rewritten\n")
    assert collect_lineage(repo, ("test",)).tags[TAG_DIRTY] == "false"
    (repo / "params.yaml").write_text("2\n")
    assert collect_lineage(repo, ("test",)).tags[TAG_DIRTY] == "true"


def test_source_is_the_default_remote_when_there_is_one(repo: Path) -> None:
    (repo / ".dvc" / "config").write_text("[core]\n    remote = store\n['remote \"store\"']\n    url = s3://bucket/dvc\n")
    assert storage_location(repo, DIGEST) == f"s3://bucket/dvc/files/md5/{DIGEST[:2]}/{DIGEST[2:]}"


def test_no_hash_in_dvc_lock_records_no_inputs(repo: Path) -> None:
    (repo / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {}}))
    assert collect_lineage(repo, ("train",)).inputs == ()
    assert split_files(repo / "missing", "train") == ""


def test_changed_params_lists_each_difference_of_a_params_key_as_text() -> None:
    logged = {"train.lr": "0.003", "train.epochs": "20", "strategy": "full", "train.new": "1", "model_file": "x"}
    base = {"train.lr": 0.003, "train.epochs": 20, "strategy": "linear", "train.seed": 0}
    assert changed_params(logged, base) == (
        ("strategy", "linear", "full"), ("train.new", "-", "1"), ("train.seed", "0", "-"))


def test_a_promotion_record_prints_as_a_line_and_its_figures() -> None:
    record = {"time": "T", "decision": "refused", "champion": "1", "gate": "failed", "by": "ann", "reason": None,
              "figures": {"test.accuracy": "-2.00 points [-3.00 points, -1.00 points], p 0.01: worse"}}
    assert promotion_lines(json.dumps(record)) == [
        "    T refused against version 1, gate failed by ann",
        "      test.accuracy: -2.00 points [-3.00 points, -1.00 points], p 0.01: worse"]
    assert source_uri('{"uri": "s3://b/files/md5/ab/cd.dir"}') == "s3://b/files/md5/ab/cd.dir"


def test_differences_name_every_file_that_does_not_match(tmp_path: Path) -> None:
    registered, restored = tmp_path / "registered", tmp_path / "restored"
    for folder in (registered, restored):
        folder.mkdir()
        (folder / "model.json").write_text("{}")
        (folder / "model.onnx").write_bytes(b"\x01\x02")
    assert differences(registered, restored)[0] == []
    (restored / "model.onnx").write_bytes(b"\x01\x03")
    (registered / "model.int8.onnx").write_bytes(b"\x00")
    problems, matching = differences(registered, restored)
    assert list(matching) == ["model.json"]
    assert problems[0] == "model.int8.onnx: only in the registry" and problems[1].startswith("model.onnx: sha256")


def test_references_resolve_to_the_run_and_version(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("signflow")
    run = client.create_run(experiment, tags={TAG_EXPERIMENT: "bushy-oaks"})
    client.create_registered_model("signflow")
    version = client.create_model_version("signflow", f"runs:/{run.info.run_id}/m", run.info.run_id)
    client.set_registered_model_alias("signflow", "champion", version.version)
    run_id = run.info.run_id
    for reference in ("models:/signflow/1", "models:/signflow@champion", "1", "champion", run_id, "bushy-oaks"):
        origin = resolve(client, reference, "signflow")
        assert origin.run.info.run_id == run_id and str(origin.version.version) == "1", reference
    for reference in ("models:/signflow/7", "models:/signflow@previous", "no-such-experiment"):
        with pytest.raises(ModelReferenceError):
            resolve(client, reference, "signflow")
