"""End to end: a teammate's clone gets data, models and experiments from a DVC remote, with nothing to rerun.

Real servers and repositories only: the tiny pipeline
(``tiny_project.shrink_params``: a few dozen 32 px synthetic images, simple_cnn,
one epoch) as the one `dvc repro` per pytest run left it; each test works on its own copy of
that repository, pushes to a remote (a local folder, or S3 on a moto server on
127.0.0.1), clones it with git into a fresh folder and pulls there: the clone
must have every output, a clean ``dvc status`` and a no-op ``dvc repro`` (but the always-run fingerprint). One
test moves an experiment between two clones through a bare git origin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from signflow.cli import main
from signflow.commands.remote import RemoteError, configure_remote, default_storage
from signflow.model.checkpoint import load_checkpoint

from http_server import free_port
from project_copy import Project, copy_built, stages_run
from tiny_project import Reproduced, reproduced_copy

PULLED_OUTPUTS = ["data/raw", "data/dataset", "models/best.pt"]
RUNNING_STAGE = "Running stage"
LOCALHOST = "127.0.0.1"
BUCKET = "signflow-test"
# Dummy credentials moto accepts; distinctive so a leak into a tracked file is found by search.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "SIGNFLOWTESTKEYID0001",
    "AWS_SECRET_ACCESS_KEY": "signflow-test-secret-never-in-git",
    "AWS_DEFAULT_REGION": "us-east-1",
}
EXP_NAME = "full-exp"
EXP_BRANCH = "exp-full"
BRANCH = "main"


def commit_all(project: Project, message: str) -> None:
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", message)


def with_root(project: Project, root: Path, extra_env: dict[str, str] | None = None) -> Project:
    """A Project at ``root`` with ``project``'s environment, its stages importing ``root``'s sources."""
    return Project(root, {**project.env, "PYTHONPATH": str(root / "src"), **(extra_env or {})})


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, reproduced: Reproduced) -> Project:
    """The tiny project after a full ``dvc repro`` (every stage in dvc.lock), everything git holds committed."""
    project = reproduced_copy(reproduced, tmp_path_factory.mktemp("remote-baseline"), drop_env=S3_CREDENTIALS)
    commit_all(project, "baseline: tiny pipeline")
    return project


def fork(baseline: Project, base: Path, extra_env: dict[str, str] | None = None) -> Project:
    """A copy of the baseline repository (git history and DVC cache included) at ``base / "project"``."""
    base.mkdir()
    return copy_built(baseline, base, extra_env)


def clone(project: Project, source: str, root: Path) -> Project:
    """``git clone`` ``source`` into ``root``: a teammate's fresh checkout, empty DVC cache."""
    project.run("git", "clone", "-q", source, str(root))
    return with_root(project, root)


def assert_restored(project: Project) -> None:
    """Every output pulled, ``dvc status`` clean, ``dvc repro`` with nothing to run but the fingerprint."""
    for name in PULLED_OUTPUTS:
        assert (project.root / name).exists(), f"{name} missing after dvc pull"
    assert project.status() == {}
    repro = project.dvc("repro")
    log = repro.stdout + repro.stderr
    assert set(stages_run(log)) <= project.always_run(), log  # only the data source's fingerprint runs


@pytest.mark.slow
def test_local_folder_remote_round_trip(baseline: Project, tmp_path: Path) -> None:
    project = fork(baseline, tmp_path / "a")
    url = configure_remote(project.root, None)
    assert url == str(default_storage(project.root)) and Path(url).is_absolute()
    assert Path(url).parent == project.root.parent
    commit_all(project, "DVC remote: local folder")
    project.dvc("push")
    assert any(path.is_file() for path in Path(url).rglob("*")), f"dvc push wrote nothing to {url}"

    teammate = clone(project, str(project.root), tmp_path / "b")
    teammate.dvc("pull")
    assert_restored(teammate)


# ------------------------------------------------------------------ S3 (moto)




@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 holding an empty ``BUCKET``; its endpoint URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address=LOCALHOST, port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://{LOCALHOST}:{port}"
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def s3_env(tmp_path: Path) -> dict[str, str]:
    """Credentials only through the environment; no ~/.aws files or instance metadata consulted."""
    return {
        **S3_CREDENTIALS,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def tracked_files_containing(project: Project, secrets: list[str]) -> list[str]:
    names = project.run("git", "ls-files", "-z").stdout.split("\0")
    return [name for name in names if name and (project.root / name).is_file()
            and any(secret.encode() in (project.root / name).read_bytes() for secret in secrets)]


@pytest.mark.slow
def test_s3_remote_round_trip(baseline: Project, s3_endpoint: str, tmp_path: Path) -> None:
    project = fork(baseline, tmp_path / "a", extra_env=s3_env(tmp_path))
    url = f"s3://{BUCKET}/signflow"
    assert configure_remote(project.root, url, endpoint_url=s3_endpoint) == url
    commit_all(project, "DVC remote: S3")
    project.dvc("push")
    listed = s3_client(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix="signflow/")
    assert listed.get("KeyCount", 0) > 0, listed

    teammate = clone(project, str(project.root), tmp_path / "b")
    config = (teammate.root / ".dvc" / "config").read_text()
    assert url in config and s3_endpoint in config, config
    teammate.dvc("pull")
    assert_restored(teammate)
    secrets = [S3_CREDENTIALS["AWS_ACCESS_KEY_ID"], S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]]
    assert tracked_files_containing(teammate, secrets) == []
    assert not (teammate.root / ".dvc" / "config.local").exists()


# ------------------------------------------------------------------ experiments across machines


def find_experiment(shown: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The ``dvc exp show --json`` entry named ``name``, searched through every baseline's experiments."""
    for entry in shown:
        for group in entry.get("experiments") or []:
            for rev in group["revs"]:
                if rev.get("name") == name:
                    return rev
    return None


@pytest.mark.slow
def test_experiment_moves_through_git_origin_and_remote(baseline: Project, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    project = fork(baseline, tmp_path / "a")
    project.run("git", "init", "-q", "--bare", f"--initial-branch={BRANCH}", str(origin))
    configure_remote(project.root, None)
    commit_all(project, "DVC remote: local folder")
    project.run("git", "branch", "-M", BRANCH)
    project.run("git", "remote", "add", "origin", str(origin))
    project.dvc("push")
    project.run("git", "push", "-q", "-u", "origin", BRANCH)
    project.dvc("exp", "run", "-n", EXP_NAME, "-S", "strategy=full")
    project.dvc("exp", "push", "origin", EXP_NAME)  # the exp ref to git, its outputs to the DVC remote

    teammate = clone(project, str(origin), tmp_path / "b")
    teammate.dvc("pull")
    teammate.dvc("exp", "pull", "origin", EXP_NAME)
    experiment = find_experiment(json.loads(teammate.dvc("exp", "show", "--json").stdout), EXP_NAME)
    assert experiment is not None, teammate.dvc("exp", "list", "--all-commits").stdout
    assert experiment["data"]["params"]["params.yaml"]["data"]["strategy"] == "full"
    assert experiment["data"]["metrics"]["metrics/train.json"]["data"]["epochs_run"] == 1

    restored = [teammate.dvc("exp", "apply", EXP_NAME), teammate.dvc("checkout")]
    for proc in restored:
        assert RUNNING_STAGE not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert teammate.params()["strategy"] == "full"
    assert load_checkpoint(teammate.root / "models" / "best.pt")["strategy"] == "full"
    assert teammate.status() == {}
    teammate.dvc("exp", "branch", EXP_NAME, EXP_BRANCH)  # a git branch to open a pull request from
    assert yaml.safe_load(teammate.run("git", "show", f"{EXP_BRANCH}:params.yaml").stdout)["strategy"] == "full"

    shard = sorted((teammate.root / "data" / "raw" / "shards").glob("*.zip"))[0]  # a raw image, as a user has one
    with zipfile.ZipFile(shard) as zf:
        member = zf.namelist()[0]
        image = tmp_path / Path(member).name
        image.write_bytes(zf.read(member))
    predicted = teammate.run("python", "-m", "signflow", "predict", str(image), "--model", "models/best.pt",
                             "--json", "--threshold", "0")
    results = json.loads(predicted.stdout)
    assert len(results) == 1 and "error" not in results[0], results
    assert results[0]["path"].endswith(image.name) and results[0]["prediction"]


def test_remote_refuses_an_endpoint_without_s3(tmp_path: Path) -> None:
    """A user error is one line naming what to do, before any dvc command runs."""
    (tmp_path / ".dvc").mkdir()
    with pytest.raises(RemoteError, match="--endpoint-url needs an s3://"):
        configure_remote(tmp_path, "/some/folder", endpoint_url="http://127.0.0.1:9000")
    with pytest.raises(RemoteError, match="not a DVC project"):
        configure_remote(tmp_path / "missing", None)


def test_remote_command_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["remote", "s3://bucket/path", "--endpoint-url", "http://127.0.0.1:9000", "--root", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("signflow: error:") and "dvc init" in captured.err


@pytest.mark.slow
def test_python_entry_point_prints_the_remote(tmp_path: Path) -> None:
    root, storage = tmp_path / "project", tmp_path / "elsewhere"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=root, check=True)
    code = "import sys; from signflow.cli import main; sys.exit(main(['remote', *sys.argv[1:]]))"
    proc = subprocess.run([sys.executable, "-c", code, str(storage), "--name", "team", "--root", str(root)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"team: {storage}"
    assert storage.is_dir()
    config = (root / ".dvc" / "config").read_text()
    assert "remote = team" in config and f"url = {storage}" in config, config
