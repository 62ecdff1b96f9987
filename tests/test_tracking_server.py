"""signflow against a real MLflow tracking server: logging, then queued workers; an outage mid-training.

Each test starts ``signflow mlflow-server`` (``mlflow server`` with a SQLite
backend store and proxied artifacts) on a free loopback port and stops it; the
pipeline runs in a copy of the reproduced tiny project (the ``reproduced`` fixture),
so only the stages whose params a test changes run, and they log to the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from signflow.parallel import available_cores
from signflow.tracking import EXPERIMENT

from http_server import free_port
from project_copy import Project
from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

LOCALHOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
POLL_S = 0.05
QUEUE_TIMEOUT_S = 600.0
OUTAGE_EPOCHS = 40  # long enough to catch the run mid-training on any machine
RELOG_HINT = "signflow log-run"




class Server:
    """``signflow mlflow-server`` in its own process group, restartable on the same port and store."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.uri = f"http://{LOCALHOST}:{self.port}"
        self.args = ["--port", str(self.port), "--workers", "1",
                     "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                     "--artifacts-destination", str(root / "artifacts")]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "signflow", "mlflow-server", *self.args],
                                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"mlflow server did not answer on {self.uri} within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole group: signflow, mlflow, its workers
            self.proc.wait()
        self.proc = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "server")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _run_id(proj: Project) -> str:
    return json.loads((proj.root / "models" / "run.json").read_text())["run_id"]


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_server_outage_mid_training_then_log_run_completes_the_same_run(
    server: Server, tmp_path: Path, reproduced: Reproduced
) -> None:
    proj = reproduced_copy(reproduced, tmp_path, tracking_uri=server.uri, strategy="scratch", epochs=OUTAGE_EPOCHS)
    params = proj.params()
    params["train"]["patience"] = 0  # every epoch runs: the outage lands mid-training
    proj.set_params(params)
    (proj.root / "models" / "run.json").unlink()  # the build's run, in another store: wait for this one's
    client = MlflowClient(tracking_uri=server.uri)
    stage = subprocess.Popen(["dvc", "repro", "train"], cwd=proj.root, env=proj.env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = _wait_for_first_epoch(proj, client, stage)
        os.killpg(stage.pid, signal.SIGSTOP)  # hold training while the server goes down
        server.stop()
        os.killpg(stage.pid, signal.SIGCONT)
        out, err = stage.communicate(timeout=QUEUE_TIMEOUT_S)
    finally:
        if stage.poll() is None:
            os.killpg(stage.pid, signal.SIGKILL)
    assert stage.returncode == 0, out + err
    warnings = [line for line in err.splitlines() if "tracking is off for this stage" in line]
    assert len(warnings) == 1 and RELOG_HINT in warnings[0], err
    summary = json.loads((proj.root / "metrics" / "train.json").read_text())
    assert summary["epochs_run"] == OUTAGE_EPOCHS  # local metrics are complete

    server.start()
    partial = _steps(client, run_id, "val_loss")
    assert 1 <= len(partial) < OUTAGE_EPOCHS
    proj.run(sys.executable, "-m", "signflow", "log-run")
    run = client.get_run(run_id)
    assert _run_id(proj) == run_id and run.info.status == "FINISHED"
    assert _steps(client, run_id, "val_loss") == list(range(OUTAGE_EPOCHS))  # complete, no step twice
    assert run.data.metrics["best_val_accuracy"] == summary["best_val_accuracy"]
    assert "best.pt" in {Path(a.path).name for a in client.list_artifacts(run_id, "model")}
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]


def _wait_for_first_epoch(proj: Project, client: MlflowClient, stage: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    run_file = proj.root / "models" / "run.json"
    while time.monotonic() < deadline and stage.poll() is None:
        if run_file.exists():
            run_id = json.loads(run_file.read_text()).get("run_id")
            if run_id and client.get_metric_history(run_id, "val_loss"):
                return run_id
        time.sleep(POLL_S)
    pytest.fail(f"no epoch reached the server before training ended (exit {stage.poll()})")


def test_pipeline_logs_to_the_server_then_two_queue_workers_log_one_named_run_each(
    server: Server, tmp_path: Path, reproduced: Reproduced
) -> None:
    """The documented path: `dvc repro` (train, evaluate, report log to the server), commit, queue two experiments.

    Up to the report stage, the last that logs to the run (export only registers the model: tests/serving/).
    """
    proj = reproduced_copy(reproduced, tmp_path, tracking_uri=server.uri, strategy="scratch", epochs=2)
    params = proj.params()
    params["train"]["threads"] = 0  # each queue worker takes its share of the cores
    proj.set_params(params)
    repro = proj.dvc("repro", "report")
    assert "Running stage 'add_unknown'" not in repro.stdout  # the copy's data stages are up to date
    client = MlflowClient(tracking_uri=server.uri)
    run = client.get_run(_run_id(proj))
    assert run.info.status == "FINISHED" and run.info.run_name == "simple_cnn-scratch"
    assert run.data.params["strategy"] == "scratch" and run.data.params["train.epochs"] == "2"
    assert _steps(client, run.info.run_id, "val_loss") == [0, 1]
    assert "test.accuracy" in run.data.metrics  # evaluate logged into the same run
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train_history.csv", "model", "evaluate", "report"} <= paths
    # Artifacts go through the server (proxied), and come back byte for byte.
    local = Path(client.download_artifacts(run.info.run_id, "train_history.csv", str(tmp_path)))
    assert local.read_bytes() == (proj.root / "metrics" / "train_history.csv").read_bytes()
    assert (tmp_path / "server" / "artifacts").is_dir() and any((tmp_path / "server" / "artifacts").rglob("best.pt"))

    proj.run("git", "add", "-A")
    proj.run("git", "commit", "-q", "-m", "baseline")
    names = {"q-lr-high": "0.01", "q-lr-low": "0.003"}  # both differ from the baseline: both train
    for name, lr in names.items():
        proj.dvc("exp", "run", "--queue", "-n", name, "-S", f"train.lr={lr}", "evaluate")  # what is asserted
    try:
        proj.start_queue(2)
        _wait_for_queue(proj, set(names))
    finally:
        proj.stop_queue()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.dvc_experiment != ''")
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(r.info.run_name for r in runs) == sorted(names), [r.info.run_name for r in runs]
    for name, lr in names.items():
        run = by_name[name]
        assert run.data.params["train.lr"] == lr and run.data.tags["dvc_experiment"] == name
        assert "best_val_accuracy" in run.data.metrics and "test.accuracy" in run.data.metrics
        assert run.info.status == "FINISHED"
        assert run.data.tags["torch_threads"] == str(max(1, available_cores() // 2))


def _wait_for_queue(proj: Project, names: set[str]) -> None:
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = proj.dvc("queue", "status").stdout
        done = {line.split()[1] for line in status.splitlines()[1:] if len(line.split()) > 2
                and line.split()[1] in names and ("Success" in line or "Failed" in line)}
        if done == names:
            failed = [line for line in status.splitlines() if "Failed" in line]
            assert not failed, "\n".join(failed + [proj.dvc("queue", "logs", n, check=False).stdout for n in names])
            return
        time.sleep(1.0)
    pytest.fail(f"queue did not finish within {QUEUE_TIMEOUT_S:.0f} s:\n{proj.dvc('queue', 'status').stdout}")
