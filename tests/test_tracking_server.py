"""signflow against a real MLflow tracking server: logging, then a sweep on queue workers; an outage mid-training.

Each test starts ``signflow mlflow-server`` (``mlflow server`` with a SQLite
backend store and proxied artifacts) on a free loopback port and stops it; the
pipeline runs in a copy of the reproduced tiny project (the ``reproduced`` fixture),
so only the stages whose params a test changes run, and they log to the server.
"""

from __future__ import annotations

import csv
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

from signflow.commands.sweep import DEFAULT_OUT
from signflow.parallel import available_cores
from signflow.provenance import WORKSPACE
from signflow.sweep.runner import SUCCESS, experiment_states
from signflow.tracking import EXPERIMENT

from http_server import free_port
from project_copy import Project
from tiny_project import Reproduced, reproduced_copy

pytestmark = pytest.mark.slow

LOCALHOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
POLL_S = 0.05
QUEUE_TIMEOUT_S = 600.0
SWEEP_GRACE_S = 300.0  # beyond its own --timeout, for the sweep to write its table and exit
SWEEP_LRS = {"sweep-1": "0.01", "sweep-2": "0.003"}  # train.lr per point: both differ from the baseline's, both train
OUTAGE_EPOCHS = 40  # long enough to catch the run mid-training on any machine
RELOG_HINT = "signflow log-run"
# MLflow 3's server also starts its job runner (about ten huey consumer processes, 15 s of CPU per start) for
# GenAI jobs signflow never submits: off here, so three server starts do not starve the pipeline on 2 cores.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}




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
                                     env={**os.environ, **SERVER_ENV}, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    """The documented path: `dvc repro` (train, evaluate, report log to the server), commit, then two experiments
    on two queue workers, queued by `signflow sweep` (a `dvc exp run --queue -n` per point, `dvc queue start -j 2`).

    Up to the report stage, the last that logs to the run (export only registers the model: tests/serving/).
    The second half is also the sweep's end-to-end test (its options and refusals: tests/commands/test_sweep.py):
    one run of two queued experiments proves both, DVC, the server's runs and the sweep's table agreeing.
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
    sweep = _sweep(proj, "-S", f"train.lr={','.join(SWEEP_LRS.values())}", "--jobs", "2")
    assert sweep.returncode == 0, sweep.stderr[-3000:]

    # DVC: one experiment per point under the baseline, each with the params of its point.
    head = proj.run("git", "rev-parse", "HEAD").stdout.strip()
    states = experiment_states(json.loads(proj.dvc("exp", "show", "--json").stdout), head)
    assert set(states) == set(SWEEP_LRS), sorted(states)
    for name, lr in SWEEP_LRS.items():
        assert states[name].status == SUCCESS and states[name].params["train"]["lr"] == float(lr)

    # The server: one run per experiment, named after it (the train stage reads DVC_EXP_NAME), the cores shared.
    experiment = client.get_experiment_by_name(EXPERIMENT)
    # A plain `dvc repro` is the experiment "workspace" (signflow.provenance): only the sweep's runs here.
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.dvc_experiment != '' and tags.dvc_experiment != '{WORKSPACE}'")
    by_name = {r.info.run_name: r for r in runs}
    assert sorted(r.info.run_name for r in runs) == sorted(SWEEP_LRS), [r.info.run_name for r in runs]
    for name, lr in SWEEP_LRS.items():
        run = by_name[name]
        assert run.data.params["train.lr"] == lr and run.data.tags["dvc_experiment"] == name
        assert "best_val_accuracy" in run.data.metrics and "test.accuracy" in run.data.metrics
        assert run.info.status == "FINISHED"
        assert run.data.tags["torch_threads"] == str(max(1, available_cores() // 2))

    # The table: Markdown (printed and written) and CSV, one row per point with the swept column.
    markdown = (proj.root / DEFAULT_OUT).read_text()
    assert markdown in sweep.stdout
    header, _, *body = markdown.splitlines()
    assert header.startswith("| experiment | train.lr | test.accuracy |") and len(body) == len(SWEEP_LRS)
    table = list(csv.DictReader((proj.root / DEFAULT_OUT.with_suffix(".csv")).read_text().splitlines()))
    assert {row["experiment"]: float(row["train.lr"]) for row in table} == {
        name: float(lr) for name, lr in SWEEP_LRS.items()}
    assert all(row["status"] == SUCCESS and 0 <= float(row["test.accuracy"]) <= 1 for row in table)
    accuracies = [float(row["test.accuracy"]) for row in table]
    assert accuracies == sorted(accuracies, reverse=True)
    # The table lives outside the report stage's output: the stage stays up to date.
    assert proj.status("report") == {}


def _sweep(proj: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """`signflow sweep *args` in ``proj``; no queue worker outlives it."""
    command = [sys.executable, "-m", "signflow", "sweep", *args, "--timeout", str(QUEUE_TIMEOUT_S)]
    try:
        return subprocess.run(command, cwd=proj.root, env=proj.env, capture_output=True, text=True,
                              timeout=QUEUE_TIMEOUT_S + SWEEP_GRACE_S, check=False)
    except subprocess.TimeoutExpired as err:  # the sweep outlived its own --timeout: show where it was
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""
        queue = proj.dvc("queue", "status", check=False)
        pytest.fail(f"sweep still running after {QUEUE_TIMEOUT_S + SWEEP_GRACE_S:.0f} s:\n{stderr[-3000:]}\n"
                    f"{queue.stdout}{queue.stderr}")
    finally:
        proj.stop_queue()
